/* desc.c — building a node description by field name.
 *
 * Bindings set fields through these setters rather than by mirroring
 * fg_node_desc field by field, so a hyper-parameter a kind needs is added
 * here and in its layer's lower(), nowhere else. */
#include "step_internal.h"

#include <stddef.h>
#include <string.h>

enum { F_INT = 1, F_I64, F_U64, F_FLOAT, F_ARRAY };

static const struct field {
    const char *name;
    int type;
    size_t off;
} fields[] = {
    {"kind", F_INT, offsetof(fg_node_desc, kind)},
    {"n_in", F_INT, offsetof(fg_node_desc, n_in)},
    {"in_off", F_INT, offsetof(fg_node_desc, in_off)},
    {"act", F_INT, offsetof(fg_node_desc, act)},
    {"act_has_param", F_INT, offsetof(fg_node_desc, act_has_param)},
    {"act_alpha", F_FLOAT, offsetof(fg_node_desc, act_param.alpha)},
    {"act_max_value", F_FLOAT, offsetof(fg_node_desc, act_param.max_value)},
    {"act_threshold", F_FLOAT, offsetof(fg_node_desc, act_param.threshold)},
    {"out_act", F_INT, offsetof(fg_node_desc, out_act)},
    {"trainable", F_INT, offsetof(fg_node_desc, trainable)},
    {"op", F_INT, offsetof(fg_node_desc, op)},
    {"axis", F_INT, offsetof(fg_node_desc, axis)},
    {"stream", F_INT, offsetof(fg_node_desc, stream)},
    {"w_off", F_I64, offsetof(fg_node_desc, w_off)},
    {"b_off", F_I64, offsetof(fg_node_desc, b_off)},
    {"seed", F_U64, offsetof(fg_node_desc, seed)},
    {"l1_w", F_FLOAT, offsetof(fg_node_desc, l1_w)},
    {"l2_w", F_FLOAT, offsetof(fg_node_desc, l2_w)},
    {"l1_b", F_FLOAT, offsetof(fg_node_desc, l1_b)},
    {"l2_b", F_FLOAT, offsetof(fg_node_desc, l2_b)},
    {"rate", F_FLOAT, offsetof(fg_node_desc, rate)},
    {"eps", F_FLOAT, offsetof(fg_node_desc, eps)},
    {"bn_momentum", F_FLOAT, offsetof(fg_node_desc, bn_momentum)},
    {"bn_rest", F_FLOAT, offsetof(fg_node_desc, bn_rest)},
    {"moving_mean", F_ARRAY, offsetof(fg_node_desc, moving_mean)},
    {"moving_var", F_ARRAY, offsetof(fg_node_desc, moving_var)},
    {"kh", F_I64, offsetof(fg_node_desc, kh)},
    {"kw", F_I64, offsetof(fg_node_desc, kw)},
    {"sh", F_I64, offsetof(fg_node_desc, sh)},
    {"sw", F_I64, offsetof(fg_node_desc, sw)},
    {"dh", F_I64, offsetof(fg_node_desc, dh)},
    {"dw", F_I64, offsetof(fg_node_desc, dw)},
    {"pt", F_I64, offsetof(fg_node_desc, pt)},
    {"pl", F_I64, offsetof(fg_node_desc, pl)},
    {"groups", F_INT, offsetof(fg_node_desc, groups)},
    {"multiplier", F_INT, offsetof(fg_node_desc, multiplier)},
    {"w2_off", F_I64, offsetof(fg_node_desc, w2_off)},
    {"l1_w2", F_FLOAT, offsetof(fg_node_desc, l1_w2)},
    {"l2_w2", F_FLOAT, offsetof(fg_node_desc, l2_w2)},
};

static const struct field *find(const char *name) {
    if (!name) return NULL;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (strcmp(fields[i].name, name) == 0) return &fields[i];
    return NULL;
}

void fg_node_desc_init(fg_node_desc *d) {
    memset(d, 0, sizeof *d);
    d->act = FG_ACT_LINEAR;
    d->out_act = FG_ACT_NONE;
    d->trainable = 1;
    d->stream = -1;
    d->w_off = d->b_off = d->w2_off = -1;
}

int fg_node_desc_field_type(const char *name) {
    const struct field *f = find(name);
    if (!f) return 0;
    return f->type == F_FLOAT ? 2 : f->type == F_ARRAY ? 3 : 1;
}

int fg_node_desc_set_int(fg_node_desc *d, const char *name, int64_t v) {
    const struct field *f = find(name);
    if (!d || !f) return FG_ERR_ARG;
    char *p = (char *)d + f->off;
    switch (f->type) {
    case F_INT:
        if (v < -2147483647 - 1 || v > 2147483647) return FG_ERR_ARG;
        *(int *)p = (int)v;
        return FG_OK;
    case F_I64:
        *(int64_t *)p = v;
        return FG_OK;
    case F_U64:
        if (v < 0) return FG_ERR_ARG;
        *(uint64_t *)p = (uint64_t)v;
        return FG_OK;
    default:
        return FG_ERR_ARG;
    }
}

int fg_node_desc_set_float(fg_node_desc *d, const char *name, double v) {
    const struct field *f = find(name);
    if (!d || !f || f->type != F_FLOAT) return FG_ERR_ARG;
    *(float *)((char *)d + f->off) = (float)v;
    return FG_OK;
}

int fg_node_desc_set_array(fg_node_desc *d, const char *name, float *data, int64_t len) {
    const struct field *f = find(name);
    if (!d || !f || f->type != F_ARRAY || len < 0) return FG_ERR_ARG;
    *(float **)((char *)d + f->off) = data;
    /* both moving arrays must have one length; a mismatch fails the kind's check */
    d->moving_len = (d->moving_len == 0 || d->moving_len == len) ? len : -1;
    return FG_OK;
}

int fg_node_desc_set_shape(fg_node_desc *d, int rank, const int64_t *dims) {
    if (!d || rank < 1 || rank > FG_MAX_RANK || !dims) return FG_ERR_ARG;
    return fg_shape_set(&d->out, rank, dims);
}

int fg_shape_set(fg_shape *s, int rank, const int64_t *dims) {
    if (!s || rank < 1 || rank > FG_MAX_RANK || !dims) return FG_ERR_ARG;
    memset(s, 0, sizeof *s);
    s->rank = rank;
    for (int i = 0; i < rank; i++) {
        if (dims[i] <= 0) return FG_ERR_ARG;
        s->dim[i] = dims[i];
    }
    return FG_OK;
}
