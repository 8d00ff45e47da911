/* layer_table.c — the layer kinds the plan can run, one row each.
 *
 * A kind is csrc/step/layer_<kind>.c defining `const fg_layer_ops
 * fg_layer_<kind>_ops` plus its row below; its code is 1 + the row's
 * position (0 is no kind) and the Python side finds it by the ops' name
 * (fg_layer_kind_name), so rows may be appended but not reordered within a
 * build's lifetime — nothing persists the codes. */
#include "step_internal.h"

#define FG_LAYER_KINDS(X) \
    X(dense)              \
    X(activation)         \
    X(dropout)            \
    X(layernorm)          \
    X(batchnorm)          \
    X(merge)              \
    X(concat)             \
    X(reshape)            \
    X(conv2d)             \
    X(pool2d)             \
    X(gpool)              \
    X(depthwise2d)        \
    X(sepconv2d)          \
    X(conv2dt)            \
    X(pad2d)              \
    X(upsample2d)         \
    X(sdropout)

#define FG_DECLARE_KIND(k) extern const fg_layer_ops fg_layer_##k##_ops;
FG_LAYER_KINDS(FG_DECLARE_KIND)

#define FG_ROW(k) &fg_layer_##k##_ops,
static const fg_layer_ops *const table[] = {NULL, FG_LAYER_KINDS(FG_ROW)};

#define N_KINDS ((int)(sizeof table / sizeof table[0]))

int fg_layer_kind_count(void) { return N_KINDS; }

const fg_layer_ops *fg_layer_ops_of(int kind) { return kind > 0 && kind < N_KINDS ? table[kind] : NULL; }

const char *fg_layer_kind_name(int kind) {
    const fg_layer_ops *ops = fg_layer_ops_of(kind);
    return ops ? ops->name : NULL;
}
