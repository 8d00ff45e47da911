/* net.c — the plan: validate a model graph, own its workspaces, and walk it.
 *
 * Compiled once (not per ISA): everything heavy is a call into the layer
 * kinds (layer_<kind>.c, looked up in layer_table.c by kind code), which call
 * the dispatched GEMM and element-wise kernels. This file knows no kind; it
 * decides where every tensor lives and in which order things run:
 *
 *   gather     batch.c: the rows of every input / target (no copy when consecutive)
 *   forward    node i in order: val[out] = kind.forward(val[in...]) into the
 *              node's own output buffer, or val[in0] for a node that passes
 *              its input on (linear activation, dropout outside training, reshape)
 *   loss       loss.c: per output, loss and gradient -> grad[output slot]
 *   backward   node i in reverse, when its output slot has a gradient:
 *              kind.backward(dy = grad[out]) -> dx[j] for the inputs that need
 *              one (the first input's written over dy when the kind allows),
 *              parameter gradients into the flat buffer (the first node of a
 *              shared layer) or into scratch added afterwards (the others);
 *              frozen nodes' parameter gradients zeroed. grad[in_j] takes the
 *              first dx as is and adds later ones in float32.
 *   update     update.c: regularizers, clipping, optimizer.
 *
 * Gradient storage moves, never copies: grad[s] points at the buffer of its
 * first contribution (a node's dx buffer, or its dy buffer when written in
 * place, or an output's loss buffer), and every buffer is the gradient of at
 * most one live slot, so adding into it or overwriting it in place is safe.
 *
 * Inference runs n->prows-row chunks (FG_PREDICT_ROWS, fewer for wide nets) through a per-thread pool of
 * buffers assigned once at create time by liveness (a chain alternates two);
 * an output no activation follows is written straight into the caller's array.
 *
 * Reproducibility: the kernels give the same bits for any thread count, the
 * gather is a copy, fan-in sums run in a fixed order, and the reductions done
 * here (penalty, correct counts) are serial.
 */
#include "step_internal.h"

#include "kernels/fg_activation.h"
#include "kernels/fg_reduce.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if FG_HAVE_OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------------------ memory */
void *fg_step_alloc(size_t bytes) {
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    bytes = (bytes + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    return p;
}

static int passes_on(const fg_node *N, int training) {
    return N->ops->passthrough && N->ops->passthrough(&N->d, training);
}

static int writes_dx_over_dy(const fg_node *N) {
    return N->ops->dx_inplace && N->in_size[0] == N->out_size && N->ops->dx_inplace(&N->d);
}

static int64_t node_ws_bytes(const fg_node *N, int64_t rows) {
    return N->ops->workspace ? N->ops->workspace(&N->d, N->in_shape, N->n_in, rows) : 0;
}

static int64_t train_ws_bytes(const fg_net *n, int64_t cap);

static void free_train_ws(fg_net *n) {
    for (int j = 0; j < n->n_inputs; j++) {
        free(n->xg[j]);
        n->xg[j] = NULL;
    }
    for (int k = 0; k < n->n_outputs; k++) {
        fg_output *o = &n->outs[k];
        free(o->g);
        free(o->lbl);
        free(o->tgt);
        free(o->sw);
        o->g = o->tgt = o->sw = NULL;
        o->lbl = NULL;
    }
    for (int i = 0; i < n->n_nodes; i++) {
        fg_node *N = &n->nodes[i];
        free(N->y);
        free(N->ws);
        N->y = NULL;
        N->ws = NULL;
        for (int j = 0; N->dx && j < N->n_in; j++) {
            free(N->dx[j]);
            N->dx[j] = NULL;
        }
    }
    n->cap = 0;
}

/* does input j of node N get a dx buffer of its own? */
static int needs_dx_buffer(const fg_net *n, const fg_node *N, int j) {
    return N->backward && n->need[N->in[j]] && !(j == 0 && writes_dx_over_dy(N));
}

/* Workspace for `rows` rows (grow-only: the training batch size, then the
 * smaller last batch and evaluation batches reuse it). */
static int ensure_train_ws(fg_net *n, int64_t rows) {
    if (rows <= n->cap) return FG_OK;
    free_train_ws(n);
    const size_t f = sizeof(float), r = (size_t)rows;
    int ok = 1;
    for (int j = 0; ok && j < n->n_inputs; j++) ok = (n->xg[j] = fg_step_alloc(r * (size_t)n->slot_size[j] * f)) != NULL;
    for (int k = 0; ok && k < n->n_outputs; k++) {
        fg_output *o = &n->outs[k];
        o->g = fg_step_alloc(r * (size_t)o->size * f);
        o->lbl = fg_step_alloc(r * sizeof(int64_t));
        o->tgt = fg_step_alloc(r * (size_t)o->size * f);
        o->sw = fg_step_alloc(r * f);
        ok = o->g && o->lbl && o->tgt && o->sw;
    }
    for (int i = 0; ok && i < n->n_nodes; i++) {
        fg_node *N = &n->nodes[i];
        if (!passes_on(N, 1) || !passes_on(N, 0)) ok = (N->y = fg_step_alloc(r * (size_t)N->out_size * f)) != NULL;
        int64_t wb = node_ws_bytes(N, rows);
        if (ok && wb > 0) ok = (N->ws = fg_step_alloc((size_t)wb)) != NULL;
        for (int j = 0; ok && j < N->n_in; j++)
            if (needs_dx_buffer(n, N, j)) ok = (N->dx[j] = fg_step_alloc(r * (size_t)N->in_size[j] * f)) != NULL;
    }
    if (!ok) {
        free_train_ws(n);
        return FG_ERR_NOMEM;
    }
    n->cap = rows;
    return FG_OK;
}

static int64_t train_ws_bytes(const fg_net *n, int64_t cap) {
    if (!cap) return 0;
    int64_t b = 0;
    for (int j = 0; j < n->n_inputs; j++) b += cap * n->slot_size[j] * 4;
    for (int k = 0; k < n->n_outputs; k++) b += cap * (2 * n->outs[k].size * 4 + 8 + 4);
    for (int i = 0; i < n->n_nodes; i++) {
        const fg_node *N = &n->nodes[i];
        if (N->y) b += cap * N->out_size * 4;
        if (N->ws) b += node_ws_bytes(N, cap);
        for (int j = 0; j < N->n_in; j++)
            if (N->dx[j]) b += cap * N->in_size[j] * 4;
    }
    return b;
}

/* per thread: the pool buffers, then the largest node workspace (floats, 64-byte multiples) */
/* per thread: the pool buffers, then the largest node workspace (floats, 64-byte
 * multiples); and per thread a slot-pointer array (n_slots + max_in entries) */
static int ensure_predict_ws(fg_net *n, int nt) {
    if (nt <= n->pnt) return FG_OK;
    free(n->pws);
    free(n->pval);
    n->pnt = 0;
    int64_t scratch = (n->pscratch_bytes + 63) / 64 * 16;
    n->pws_stride = (int64_t)n->pbufs * n->prows * ((n->max_size + 15) / 16 * 16) + scratch;
    if (n->pws_stride == 0) n->pws_stride = 16;
    n->pws = fg_step_alloc((size_t)nt * (size_t)n->pws_stride * sizeof(float));
    n->pval = (const float **)malloc((size_t)nt * (size_t)(n->n_slots + n->max_in) * sizeof(float *));
    if (!n->pws || !n->pval) {
        free(n->pws);
        free(n->pval);
        n->pws = NULL;
        n->pval = NULL;
        return FG_ERR_NOMEM;
    }
    n->pnt = nt;
    return FG_OK;
}

/* ------------------------------------------------------------------ create */
static int check_shape(const fg_shape *s) {
    if (s->rank < 1 || s->rank > FG_MAX_RANK) return 0;
    for (int i = 0; i < s->rank; i++)
        if (s->dim[i] <= 0) return 0;
    return 1;
}

static int check_opt(const fg_optim_desc *opt, int training) {
    if (opt->kind < FG_OPT_SGD || opt->kind >= FG_OPT_COUNT) return 0;
    if (!training) return 1;
    int need1 = opt->kind != FG_OPT_SGD || opt->momentum != 0.0f;
    int need2 = opt->kind == FG_OPT_ADAM || (opt->kind == FG_OPT_RMSPROP && opt->momentum != 0.0f) ||
                (opt->kind >= FG_OPT_NADAM && opt->kind != FG_OPT_LION);
    int need3 = (opt->kind == FG_OPT_RMSPROP && opt->centered) || opt->kind == FG_OPT_AMSGRAD;
    return !((need1 && !opt->s1) || (need2 && !opt->s2) || (need3 && !opt->s3));
}

/* output k whose slot is s, or -1 */
static int output_of(const fg_net *n, int s) {
    for (int k = 0; k < n->n_outputs; k++)
        if (n->outs[k].slot == s) return k;
    return -1;
}

/* Parameter arrays: collect the unique ones (node order), check that arrays of
 * different layers do not overlap, and pick which node of a shared layer
 * writes its gradient (the highest-index one) and how much scratch the others need. */
static int plan_params(fg_net *n, int *bad_node) {
    int cap = 0;
    for (int i = 0; i < n->n_nodes; i++) cap += n->nodes[i].n_par;
    n->arrays = (fg_param_array *)calloc((size_t)(cap ? cap : 1), sizeof *n->arrays);
    n->array_trainable = (int *)calloc((size_t)(cap ? cap : 1), sizeof(int));
    n->array_dead = (int *)calloc((size_t)(cap ? cap : 1), sizeof(int));
    if (!n->arrays || !n->array_trainable || !n->array_dead) return FG_ERR_NOMEM;
    n->all_trainable = 1;
    for (int i = 0; i < n->n_nodes; i++) {
        const fg_node *N = &n->nodes[i];
        for (int k = 0; k < N->n_par; k++) {
            const fg_param_array *p = &N->par[k];
            if (p->count == 0) continue;
            int a = 0;
            for (; a < n->n_arrays; a++) {
                const fg_param_array *q = &n->arrays[a];
                if (q->off == p->off && q->count == p->count) break;           /* a shared layer's */
                if (p->off < q->off + q->count && q->off < p->off + p->count) {
                    *bad_node = i;
                    return FG_ERR_ARG;
                }
            }
            if (a < n->n_arrays) {
                if (n->array_trainable[a] != (N->d.trainable != 0)) {
                    *bad_node = i;
                    return FG_ERR_ARG;
                }
                continue;
            }
            n->arrays[n->n_arrays] = *p;
            n->array_trainable[n->n_arrays] = N->d.trainable != 0;
            n->array_dead[n->n_arrays] = 1;
            if (!N->d.trainable) n->all_trainable = 0;
            n->n_arrays++;
        }
    }
    /* the first node of each array met walking backward writes it; arrays no
     * running node reaches are zeroed each step */
    int64_t scratch = 0;
    for (int i = n->n_nodes - 1; i >= 0; i--) {
        fg_node *N = &n->nodes[i];
        if (!N->backward) continue;
        int64_t total = 0, seen = 0, have = 0;
        for (int k = 0; k < N->n_par; k++) {
            if (N->par[k].count == 0) continue;
            have++;
            total += N->par[k].count;
            for (int m = i + 1; m < n->n_nodes && !seen; m++)
                for (int q = 0; n->nodes[m].backward && q < n->nodes[m].n_par; q++)
                    if (n->nodes[m].par[q].count && n->nodes[m].par[q].off == N->par[k].off) seen = 1;
            for (int a = 0; a < n->n_arrays; a++)
                if (n->arrays[a].off == N->par[k].off) n->array_dead[a] = 0;
        }
        N->pwrite = !seen;
        if (have && seen && N->d.trainable && total > scratch) scratch = total;
    }
    for (int a = 0; a < n->n_arrays; a++) n->any_dead |= n->array_dead[a];
    if (scratch > 0) {
        n->pscratch = (float *)fg_step_alloc((size_t)scratch * sizeof(float));
        if (!n->pscratch) return FG_ERR_NOMEM;
    }
    n->pscratch_len = scratch;
    return FG_OK;
}

/* Inference buffers by liveness: node i's output takes a free pool buffer
 * (or the caller's output array), and buffers whose last reader ran are freed. */
static int plan_inference(fg_net *n) {
    int *root = (int *)malloc((size_t)n->n_slots * sizeof(int));      /* slot -> buffer (-1: none) */
    int *last = (int *)malloc((size_t)(n->n_nodes + 1) * sizeof(int)); /* buffer -> last reader */
    int *busy = (int *)calloc((size_t)(n->n_nodes + 1), sizeof(int));
    if (!root || !last || !busy) {
        free(root), free(last), free(busy);
        return FG_ERR_NOMEM;
    }
    const int forever = n->n_nodes;
    int nbuf = 0;
    int64_t scratch = 0;
    for (int s = 0; s < n->n_slots; s++) root[s] = -1;
    for (int i = 0; i < n->n_nodes; i++) {
        fg_node *N = &n->nodes[i];
        const int out = n->n_inputs + i;
        const int k = output_of(n, out);
        const int lu = k >= 0 ? forever : n->last_use[out];
        N->pbuf = -1;
        N->pout = -1;
        if (passes_on(N, 0)) {
            int b = root[N->in[0]];
            root[out] = b;
            if (b >= 0 && lu > last[b]) last[b] = lu;
        } else if (k >= 0 && N->d.out_act == FG_ACT_NONE) {
            N->pout = k;
        } else {
            int b = 0;
            while (b < nbuf && busy[b]) b++;
            if (b == nbuf) nbuf++;
            busy[b] = 1;
            last[b] = lu;
            root[out] = b;
            N->pbuf = b;
        }
        int64_t wb = node_ws_bytes(N, n->prows);
        if (wb > scratch) scratch = wb;
        for (int b = 0; b < nbuf; b++)
            if (busy[b] && last[b] <= i) busy[b] = 0;
    }
    n->pbufs = nbuf;
    n->pscratch_bytes = scratch;
    free(root), free(last), free(busy);
    return FG_OK;
}

static int build(fg_net *n, int *bad_node, const fg_graph_desc *g, const fg_loss_desc *losses) {
    n->n_inputs = g->n_inputs;
    n->n_nodes = g->n_nodes;
    n->n_outputs = g->n_outputs;
    n->n_slots = g->n_inputs + g->n_nodes;
    n->n_streams = g->n_streams;
    const int S = n->n_slots;
    n->nodes = (fg_node *)calloc((size_t)n->n_nodes, sizeof *n->nodes);
    n->outs = (fg_output *)calloc((size_t)n->n_outputs, sizeof *n->outs);
    n->shapes = (fg_shape *)calloc((size_t)S, sizeof *n->shapes);
    n->slot_size = (int64_t *)calloc((size_t)S, sizeof(int64_t));
    n->need = (int *)calloc((size_t)S, sizeof(int));
    n->last_use = (int *)calloc((size_t)S, sizeof(int));
    n->in_slots = (int *)calloc((size_t)(g->n_in_slots ? g->n_in_slots : 1), sizeof(int));
    n->in_shapes = (const fg_shape **)calloc((size_t)(g->n_in_slots ? g->n_in_slots : 1), sizeof(fg_shape *));
    n->in_sizes = (int64_t *)calloc((size_t)(g->n_in_slots ? g->n_in_slots : 1), sizeof(int64_t));
    n->val = (const float **)calloc((size_t)S, sizeof(float *));
    n->grad = (float **)calloc((size_t)S, sizeof(float *));
    n->xg = (float **)calloc((size_t)n->n_inputs, sizeof(float *));
    n->bx = (const float **)calloc((size_t)n->n_inputs, sizeof(float *));
    n->blbl = (const int64_t **)calloc((size_t)n->n_outputs, sizeof(int64_t *));
    n->btgt = (const float **)calloc((size_t)n->n_outputs, sizeof(float *));
    n->bsw = (const float **)calloc((size_t)n->n_outputs, sizeof(float *));
    if (!n->nodes || !n->outs || !n->shapes || !n->slot_size || !n->need || !n->last_use || !n->in_slots ||
        !n->in_shapes || !n->in_sizes || !n->val || !n->grad || !n->xg || !n->bx || !n->blbl || !n->btgt || !n->bsw)
        return FG_ERR_NOMEM;
    if (g->n_in_slots) memcpy(n->in_slots, g->in_slots, (size_t)g->n_in_slots * sizeof(int));
    for (int j = 0; j < n->n_inputs; j++) {
        if (!check_shape(&g->inputs[j])) return FG_ERR_ARG;
        n->shapes[j] = g->inputs[j];
        n->slot_size[j] = fg_shape_size(&n->shapes[j]);
    }
    for (int s = 0; s < S; s++) n->last_use[s] = -1;
    n->max_in = 1;
    for (int i = 0; i < n->n_nodes; i++) {
        const fg_node_desc *d = &g->nodes[i];
        fg_node *N = &n->nodes[i];
        const int out = n->n_inputs + i;
        *bad_node = i;
        N->d = *d;
        N->ops = fg_layer_ops_of(d->kind);
        if (!N->ops || !check_shape(&d->out) || d->n_in < 1 || d->in_off < 0 || d->in_off > g->n_in_slots ||
            d->n_in > g->n_in_slots - d->in_off)
            return FG_ERR_ARG;
        if (d->out_act != FG_ACT_NONE && d->out_act != FG_ACT_SIGMOID && d->out_act != FG_ACT_SOFTMAX)
            return FG_ERR_ARG;
        if (d->stream < -1 || d->stream >= n->n_streams) return FG_ERR_ARG;
        N->n_in = d->n_in;
        N->in = n->in_slots + d->in_off;
        N->in_shape = n->in_shapes + d->in_off;
        N->in_size = n->in_sizes + d->in_off;
        for (int j = 0; j < N->n_in; j++) {
            int s = N->in[j];
            if (s < 0 || s >= out) return FG_ERR_ARG; /* an earlier slot: topological order */
            N->in_shape[j] = &n->shapes[s];
            N->in_size[j] = n->slot_size[s];
            n->last_use[s] = i;
        }
        if (N->n_in > n->max_in) n->max_in = N->n_in;
        n->shapes[out] = d->out;
        n->slot_size[out] = N->out_size = fg_shape_size(&d->out);
        if (N->ops->check(d, N->in_shape, N->n_in, n->n_params) != FG_OK) return FG_ERR_ARG;
        N->n_par = N->ops->params ? N->ops->params(d, N->in_shape, N->n_in, N->par) : 0;
        if (N->n_par < 0 || N->n_par > FG_MAX_PARAM_ARRAYS) return FG_ERR_ARG;
        N->dx = (float **)calloc((size_t)N->n_in, sizeof(float *));
        if (!N->dx) return FG_ERR_NOMEM;
        if (N->out_size > n->max_size) n->max_size = N->out_size;
    }
    *bad_node = -1;
    n->prows = FG_PREDICT_ROWS;
    if (n->max_size > 0 && n->max_size * FG_PREDICT_ROWS > FG_PREDICT_FLOATS) {
        int64_t r = FG_PREDICT_FLOATS / n->max_size / 16 * 16;
        n->prows = r < 16 ? 16 : r;
    }
    n->xs = (const float **)calloc((size_t)n->max_in, sizeof(float *));
    n->dxs = (float **)calloc((size_t)n->max_in, sizeof(float *));
    n->per_out = (double *)calloc((size_t)n->n_outputs, sizeof(double));
    if (!n->xs || !n->dxs || !n->per_out) return FG_ERR_NOMEM;
    for (int k = 0; k < n->n_outputs; k++) {
        int s = g->outputs[k];
        if (s < n->n_inputs || s >= S || output_of(n, s) >= 0) return FG_ERR_ARG;
        fg_output *o = &n->outs[k];
        o->slot = s;
        o->size = n->slot_size[s];
        if (losses) {
            o->loss = losses[k];
            if (o->loss.kind < 0 || o->loss.kind >= FG_LOSS_COUNT || !isfinite(o->loss.weight)) return FG_ERR_ARG;
            /* row-wise losses over a per-sample rank > 1 output would need per-row weights */
            if ((o->loss.kind == FG_LOSS_KLD || o->loss.kind == FG_LOSS_CATHINGE ||
                 o->loss.kind == FG_LOSS_COSINE) && n->shapes[s].rank != 1)
                return FG_ERR_ARG;
            if (o->loss.kind == FG_LOSS_HUBER && !(o->loss.param > 0.0f)) return FG_ERR_ARG;
            n->n_losses += o->loss.kind != FG_LOSS_NONE;
        }
    }
    for (int i = 0; i < n->n_nodes; i++) {
        const fg_node *N = &n->nodes[i];
        if (N->d.out_act != FG_ACT_NONE && output_of(n, n->n_inputs + i) < 0) {
            *bad_node = i;
            return FG_ERR_ARG;
        }
    }
    /* which slots need a gradient (their producer or an ancestor has parameters) */
    for (int i = 0; i < n->n_nodes; i++) {
        fg_node *N = &n->nodes[i];
        int need = 0;
        for (int k = 0; k < N->n_par; k++) need |= N->par[k].count > 0;
        for (int j = 0; j < N->n_in; j++) need |= n->need[N->in[j]];
        n->need[n->n_inputs + i] = need;
    }
    /* which ones a loss reaches; a node runs backward when its output is both */
    int *live = (int *)calloc((size_t)S, sizeof(int));
    if (!live) return FG_ERR_NOMEM;
    for (int k = 0; k < n->n_outputs; k++)
        if (n->outs[k].loss.kind != FG_LOSS_NONE) live[n->outs[k].slot] = 1;
    for (int i = n->n_nodes - 1; i >= 0; i--) {
        fg_node *N = &n->nodes[i];
        const int out = n->n_inputs + i;
        if (live[out])
            for (int j = 0; j < N->n_in; j++) live[N->in[j]] = 1;
        N->backward = live[out] && n->need[out];
    }
    free(live);
    FG_TRY(plan_params(n, bad_node));
    return plan_inference(n);
}

int fg_net_create(fg_net **out, int *bad_node, const fg_graph_desc *g, float *params, float *grads,
                  int64_t n_params, const fg_loss_desc *losses, const fg_optim_desc *opt) {
    int bad_ = -1;
    if (!bad_node) bad_node = &bad_;
    *bad_node = -1;
    if (!out) return FG_ERR_ARG;
    *out = NULL;
    if (!g || g->n_inputs < 1 || !g->inputs || g->n_nodes < 1 || !g->nodes || g->n_outputs < 1 || !g->outputs ||
        g->n_in_slots < 0 || (g->n_in_slots > 0 && !g->in_slots) || g->n_streams < 0 || n_params < 0 ||
        (n_params > 0 && !params))
        return FG_ERR_ARG;
    if (losses && (!opt || !grads)) return FG_ERR_ARG;
    if (opt && !check_opt(opt, losses != NULL)) return FG_ERR_ARG;
    fg_net *n = (fg_net *)calloc(1, sizeof *n);
    if (!n) return FG_ERR_NOMEM;
    n->params = params;
    n->grads = grads;
    n->n_params = n_params;
    n->training = losses != NULL;
    int st = build(n, bad_node, g, losses);
    if (st == FG_OK && n->training && (n->n_arrays == 0 || n->n_losses == 0)) st = FG_ERR_ARG; /* nothing to train */
    if (st != FG_OK) {
        fg_net_free(n);
        return st;
    }
    if (opt) {
        n->opt = *opt;
        n->has_opt = 1;
        if (opt->own_arrays_only) n->all_trainable = 0; /* per array: the buffer is shared */
    }
    fg_policy_reset(&n->policy, 1);
    *out = n;
    return FG_OK;
}

void fg_net_free(fg_net *n) {
    if (!n) return;
    if (n->nodes) {
        if (n->xg && n->outs) free_train_ws(n);
        for (int i = 0; i < n->n_nodes; i++) free(n->nodes[i].dx);
    }
    free(n->nodes);
    free(n->outs);
    free(n->shapes);
    free(n->slot_size);
    free(n->need);
    free(n->last_use);
    free(n->in_slots);
    free(n->in_shapes);
    free(n->in_sizes);
    free(n->val);
    free(n->grad);
    free(n->xg);
    free(n->bx);
    free(n->blbl);
    free(n->btgt);
    free(n->bsw);
    free(n->arrays);
    free(n->array_trainable);
    free(n->array_dead);
    free(n->pscratch);
    free(n->xs);
    free(n->dxs);
    free(n->per_out);
    free(n->pws);
    free(n->pval);
    free(n);
}

int fg_net_rebind(fg_net *n, float *params, float *grads, float *s1, float *s2, float *s3) {
    if (!n) return FG_ERR_ARG;
    if (params) n->params = params;
    if (grads) n->grads = grads;
    if (s1) n->opt.s1 = s1;
    if (s2) n->opt.s2 = s2;
    if (s3) n->opt.s3 = s3;
    return FG_OK;
}

int fg_net_set_adaptive_threads(fg_net *n, int on) {
    if (!n) return FG_ERR_ARG;
    fg_policy_reset(&n->policy, on);
    return FG_OK;
}

int fg_net_set_accuracy(fg_net *n, int kind, float threshold) {
    if (!n || kind < FG_ACC_NONE || kind > FG_ACC_BINARY) return FG_ERR_ARG;
    if (kind != FG_ACC_NONE) {
        if (n->n_outputs != 1 || !n->training) return FG_ERR_ARG;
        int sparse = n->outs[0].loss.kind == FG_LOSS_SPARSE_SOFTMAX_XENT;
        if ((kind == FG_ACC_SPARSE) != sparse) return FG_ERR_ARG;
    }
    n->acc_kind = kind;
    n->acc_thr = threshold;
    return FG_OK;
}

int fg_net_set_accuracy_weighted(fg_net *n, int weighted) {
    if (!n) return FG_ERR_ARG;
    n->acc_unweighted = weighted == 0;
    return FG_OK;
}

int fg_net_capture_outputs(fg_net *n, int output, float *out, int64_t capacity_rows) {
    if (!n || output < 0 || output >= n->n_outputs || capacity_rows < 0 || (out && capacity_rows == 0))
        return FG_ERR_ARG;
    n->outs[output].cap_out = out;
    n->outs[output].cap_rows = out ? capacity_rows : 0;
    return FG_OK;
}

int fg_net_stat_width(const fg_net *n) { return n ? FG_STAT_COUNT + n->n_outputs : 0; }

int64_t fg_net_workspace_bytes(const fg_net *n) {
    if (!n) return 0;
    return train_ws_bytes(n, n->cap) + (int64_t)n->pnt * n->pws_stride * 4;
}

/* ------------------------------------------------------------------ busy flag */
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h> /* Microsoft's cl has no __atomic builtins; int and long are both 32-bit there */
static int acquire(fg_net *n) { return _InterlockedExchange((volatile long *)&n->busy, 1) == 0; }
static void release(fg_net *n) { _InterlockedExchange((volatile long *)&n->busy, 0); }
#else
static int acquire(fg_net *n) { return __atomic_exchange_n(&n->busy, 1, __ATOMIC_ACQUIRE) == 0; }
static void release(fg_net *n) { __atomic_store_n(&n->busy, 0, __ATOMIC_RELEASE); }
#endif

/* ------------------------------------------------------------------ the walk */
static fg_node_io node_io(const fg_net *n, const fg_node *N, int64_t rows, void *ws, int64_t ws_rows, int nt) {
    fg_node_io io = {&N->d, N->n_in, N->in_shape, N->in_size, N->out_size, rows, n->params, ws, ws_rows, nt, NULL};
    return io;
}

/* n->val[] of every node output for this batch (n->val of the inputs set by the caller) */
static int net_forward(fg_net *n, int64_t rows, int training, uint64_t *streams, int nt) {
    const float **xs = n->xs;
    for (int i = 0; i < n->n_nodes; i++) {
        fg_node *N = &n->nodes[i];
        const int out = n->n_inputs + i;
        if (passes_on(N, training)) {
            n->val[out] = n->val[N->in[0]];
            continue;
        }
        for (int j = 0; j < N->n_in; j++) xs[j] = n->val[N->in[j]];
        fg_node_io io = node_io(n, N, rows, N->ws, n->cap, nt);
        uint64_t *stream = (N->d.stream >= 0 && streams) ? &streams[N->d.stream] : NULL;
        FG_TRY(N->ops->forward(&io, N->y, xs, training, stream));
        n->val[out] = N->y;
    }
    return FG_OK;
}

/* grad[s] += g over cnt floats (the fan-in sum, float32, fixed order) */
static void add_into(float *acc, const float *g, int64_t cnt) {
    for (int64_t e = 0; e < cnt; e++) acc[e] = acc[e] + g[e];
}

/* Backward from the outputs' loss gradients; parameter gradients into n->grads. */
static int net_backward(fg_net *n, int64_t rows, int nt) {
    for (int s = 0; s < n->n_slots; s++) n->grad[s] = NULL;
    for (int k = 0; k < n->n_outputs; k++)
        if (n->outs[k].loss.kind != FG_LOSS_NONE) n->grad[n->outs[k].slot] = n->outs[k].g;
    float **dx = n->dxs;
    const float **xs = n->xs;
    for (int i = n->n_nodes - 1; i >= 0; i--) {
        fg_node *N = &n->nodes[i];
        const int out = n->n_inputs + i;
        float *dy = n->grad[out];
        if (!N->backward || !dy) continue;
        const int inplace = writes_dx_over_dy(N);
        float *gp[FG_MAX_PARAM_ARRAYS] = {NULL};
        int64_t soff = 0;
        for (int k = 0; k < N->n_par; k++) {
            const fg_param_array *p = &N->par[k];
            if (p->count == 0 || !N->d.trainable) continue;
            if (N->pwrite) {
                gp[k] = n->grads + p->off;
            } else {
                gp[k] = n->pscratch + soff;
                soff += p->count;
            }
        }
        for (int j = 0; j < N->n_in; j++) {
            const int s = N->in[j];
            xs[j] = n->val[s];
            dx[j] = !n->need[s] ? NULL : (j == 0 && inplace) ? dy : N->dx[j];
        }
        fg_node_io io = node_io(n, N, rows, N->ws, n->cap, nt);
        FG_TRY(N->ops->backward(&io, dx, dy, xs, n->val[out], gp));
        /* parameter gradients: frozen -> zero; a shared layer's later node -> added */
        soff = 0;
        for (int k = 0; k < N->n_par; k++) {
            const fg_param_array *p = &N->par[k];
            if (p->count == 0) continue;
            if (!N->d.trainable) {
                memset(n->grads + p->off, 0, (size_t)p->count * sizeof(float));
            } else if (!N->pwrite) {
                add_into(n->grads + p->off, n->pscratch + soff, p->count);
                soff += p->count;
            }
        }
        /* fan-in: the first contribution is taken as is, later ones added */
        for (int j = 0; j < N->n_in; j++) {
            if (!dx[j]) continue;
            const int s = N->in[j];
            if (!n->grad[s])
                n->grad[s] = dx[j];
            else
                add_into(n->grad[s], dx[j], rows * N->in_size[j]);
        }
    }
    if (n->any_dead) /* parameters no loss reaches: zero gradient */
        for (int a = 0; a < n->n_arrays; a++)
            if (n->array_dead[a]) memset(n->grads + n->arrays[a].off, 0, (size_t)n->arrays[a].count * sizeof(float));
    return FG_OK;
}

static int check_batches(const fg_net *n, const float *const *x, const void *const *y, const int *y_kind,
                         int64_t n_perm, int64_t start_batch, int64_t n_batches, int64_t batch_size) {
    if (!x || !y || !y_kind || n_perm <= 0 || batch_size <= 0 || start_batch < 0 || n_batches < 0) return FG_ERR_ARG;
    for (int j = 0; j < n->n_inputs; j++)
        if (!x[j]) return FG_ERR_ARG;
    for (int k = 0; k < n->n_outputs; k++) {
        if (n->outs[k].loss.kind == FG_LOSS_NONE) continue;
        if (!y[k]) return FG_ERR_ARG;
        int sparse = n->outs[k].loss.kind == FG_LOSS_SPARSE_SOFTMAX_XENT;
        if (sparse ? (y_kind[k] != FG_TARGET_INT32 && y_kind[k] != FG_TARGET_INT64) : y_kind[k] != FG_TARGET_FLOAT32)
            return FG_ERR_ARG;
    }
    int64_t total = (n_perm + batch_size - 1) / batch_size;
    if (start_batch + n_batches > total) return FG_ERR_ARG;
    return FG_OK;
}

static int run_batches(fg_net *n, int train, int64_t *n_done, double *stats, const float *const *x, int64_t x_rows,
                       const void *const *y, const int *y_kind, const float *const *sw, const int64_t *perm,
                       int64_t n_perm, int64_t start_batch, int64_t n_batches, int64_t batch_size, const float *lr,
                       int64_t iteration0, uint64_t *streams, int nt) {
    if (n_done) *n_done = 0;
    /* train: 0 evaluate, 1 training steps, 2 gradient only (fg_net_train_grad) */
    if (!n->training || (train && (!n->has_opt || !n->grads)) || (train == 1 && !lr)) return FG_ERR_ARG;
    if (train && n->n_streams > 0 && !streams) return FG_ERR_ARG;
    FG_TRY(check_batches(n, x, y, y_kind, n_perm, start_batch, n_batches, batch_size));
    const int64_t first = start_batch * batch_size, last = (start_batch + n_batches) * batch_size;
    for (int k = 0; k < n->n_outputs; k++) /* rows this call will capture */
        if (n->outs[k].cap_out && (last < n_perm ? last : n_perm) - first > n->outs[k].cap_rows) return FG_ERR_ARG;
    FG_TRY(ensure_train_ws(n, batch_size < n_perm ? batch_size : n_perm));
    const int width = fg_net_stat_width(n);
    int64_t cap_pos = 0;
    unsigned fs = fg_fpstate_enter();
    int st = FG_OK;
    double *per_out = n->per_out;
    for (int64_t b = 0; b < n_batches; b++) {
        int64_t p0 = (start_batch + b) * batch_size;
        int64_t rows = n_perm - p0 < batch_size ? n_perm - p0 : batch_size;
        double loss = 0.0, acc = 0.0, wsum = 0.0;
        double *row = stats ? stats + b * width : NULL;
        int probe = -1;
        int bnt = train ? fg_policy_pick(&n->policy, nt, &probe) : nt;
        double t0 = fg_policy_now();
        st = fg_gather(n, perm, p0, rows, x, x_rows, y, y_kind, sw, bnt);
        if (st) break;
        for (int j = 0; j < n->n_inputs; j++) n->val[j] = n->bx[j];
        st = net_forward(n, rows, train, train ? streams : NULL, bnt);
        if (st) break;
        st = fg_losses_forward(n, rows, train, &loss, per_out, bnt);
        if (st) break;
        loss += fg_net_regularize(n, 0);
        if (row)
            for (int k = 0; k < n->n_outputs; k++) row[FG_STAT_COUNT + k] = per_out[k];
        if (train && !isfinite(loss)) { /* the Python path raises before backward: step not applied */
            st = FG_ERR_NONFINITE;
            if (row) row[FG_STAT_LOSS] = loss;
            break;
        }
        if (n->acc_kind != FG_ACC_NONE) fg_accuracy(n, rows, &acc, &wsum);
        for (int k = 0; k < n->n_outputs; k++) {
            fg_output *o = &n->outs[k];
            if (o->cap_out)
                memcpy(o->cap_out + cap_pos * o->size, n->val[o->slot], (size_t)(rows * o->size) * sizeof(float));
        }
        cap_pos += rows;
        if (train) {
            st = net_backward(n, rows, bnt);
            if (st) break;
            if (train == 1) { /* train == 2: the caller reduces the gradients, then fg_net_apply_update */
                fg_net_regularize(n, 1);
                st = fg_net_clip(n, bnt);
                if (st) break;
                st = fg_net_update(n, lr[b], iteration0 + b + 1, bnt);
                if (st) break;
            }
            fg_policy_record(&n->policy, probe, fg_policy_now() - t0, rows);
        }
        if (row) {
            row[FG_STAT_LOSS] = loss;
            row[FG_STAT_ACC] = acc;
            row[FG_STAT_WEIGHT] = wsum;
            row[FG_STAT_ROWS] = (double)rows;
        }
        if (n_done) *n_done = b + 1;
    }
    fg_fpstate_leave(fs);
    return st;
}

int fg_net_train_chunk(fg_net *n, int64_t *n_done, double *stats, const float *const *x, int64_t x_rows,
                       const void *const *y, const int *y_kind, const float *const *sample_weight,
                       const int64_t *perm, int64_t n_perm, int64_t start_batch, int64_t n_batches,
                       int64_t batch_size, const float *lr, int64_t iteration0, uint64_t *drop_offsets,
                       int nthreads) {
    if (!n) return FG_ERR_ARG;
    if (!acquire(n)) return FG_ERR_BUSY;
    int st = run_batches(n, 1, n_done, stats, x, x_rows, y, y_kind, sample_weight, perm, n_perm, start_batch,
                         n_batches, batch_size, lr, iteration0, drop_offsets, nthreads);
    release(n);
    return st;
}

int fg_net_train_grad(fg_net *n, double *stats, const float *const *x, int64_t x_rows, const void *const *y,
                      const int *y_kind, const float *const *sample_weight, const int64_t *perm, int64_t n_perm,
                      int64_t start_batch, int64_t batch_size, float grad_scale, uint64_t *drop_offsets,
                      int nthreads) {
    if (!n || !(grad_scale > 0.0f) || !isfinite(grad_scale)) return FG_ERR_ARG;
    if (!acquire(n)) return FG_ERR_BUSY;
    n->grad_scale = grad_scale;
    int st = run_batches(n, 2, NULL, stats, x, x_rows, y, y_kind, sample_weight, perm, n_perm, start_batch, 1,
                         batch_size, NULL, 0, drop_offsets, nthreads);
    release(n);
    return st;
}

int fg_net_apply_update(fg_net *n, float lr, int64_t iteration, int nthreads) {
    if (!n || !n->training || !n->has_opt || !n->grads || !(lr >= 0.0f) || iteration < 1) return FG_ERR_ARG;
    if (!acquire(n)) return FG_ERR_BUSY;
    unsigned fs = fg_fpstate_enter();
    fg_net_regularize(n, 1);
    int st = fg_net_clip(n, nthreads);
    if (st == FG_OK) st = fg_net_update(n, lr, iteration, nthreads);
    fg_fpstate_leave(fs);
    release(n);
    return st;
}

int fg_net_evaluate(fg_net *n, int64_t *n_done, double *stats, const float *const *x, int64_t x_rows,
                    const void *const *y, const int *y_kind, const float *const *sample_weight,
                    const int64_t *perm, int64_t n_perm, int64_t start_batch, int64_t n_batches,
                    int64_t batch_size, int nthreads) {
    if (!n) return FG_ERR_ARG;
    if (!acquire(n)) return FG_ERR_BUSY;
    int st = run_batches(n, 0, n_done, stats, x, x_rows, y, y_kind, sample_weight, perm, n_perm, start_batch,
                         n_batches, batch_size, NULL, 0, NULL, nthreads);
    release(n);
    return st;
}

/* ------------------------------------------------------------------ inference */
/* One chunk of `rows` (<= n->prows) rows starting at row r0, through the
 * thread's region ws (pool buffers, then scratch); val: the thread's slot pointers. */
static int predict_rows(const fg_net *n, float *ws, const float **val, float *const *out, const float *const *x,
                        int64_t r0, int64_t rows, int nt) {
    const int64_t bstride = n->prows * ((n->max_size + 15) / 16 * 16);
    void *scratch = ws + (int64_t)n->pbufs * bstride;
    const float **xs = val + n->n_slots;
    /* the inputs are validated here, chunk by chunk while they are read anyway,
     * instead of by a separate pass in Python (FG_ERR_NONFINITE: the caller
     * re-checks and names the first bad element) */
    for (int j = 0; j < n->n_inputs; j++) {
        int ok = 1;
        val[j] = x[j] + r0 * n->slot_size[j];
        FG_TRY(fg_all_finite(&ok, val[j], rows * n->slot_size[j], 1));
        if (!ok) return FG_ERR_NONFINITE;
    }
    for (int i = 0; i < n->n_nodes; i++) {
        const fg_node *N = &n->nodes[i];
        const int s = n->n_inputs + i;
        if (passes_on(N, 0)) {
            val[s] = val[N->in[0]];
            continue;
        }
        float *dst = N->pout >= 0 ? out[N->pout] + r0 * N->out_size : ws + (int64_t)N->pbuf * bstride;
        for (int j = 0; j < N->n_in; j++) xs[j] = val[N->in[j]];
        fg_node_io io = node_io(n, N, rows, scratch, n->prows, nt);
        io.packed = N->ipack;
        FG_TRY(N->ops->forward(&io, dst, xs, 0, NULL));
        val[s] = dst;
    }
    for (int k = 0; k < n->n_outputs; k++) {
        const fg_output *o = &n->outs[k];
        const fg_node *N = &n->nodes[o->slot - n->n_inputs];
        float *dst = out[k] + r0 * o->size;
        const float *src = val[o->slot];
        if (N->d.out_act == FG_ACT_SOFTMAX) {
            const int64_t c = o->size;
            FG_TRY(fg_softmax_forward(dst, src, rows, c, 0, nt));
        } else if (N->d.out_act != FG_ACT_NONE) {
            FG_TRY(fg_act_forward(dst, src, rows * o->size, N->d.out_act, nt));
        } else if (src != dst) {
            memcpy(dst, src, (size_t)(rows * o->size) * sizeof(float));
        }
    }
    return FG_OK;
}

/* infer_pack of every node that has one (several chunks: derived parameter data once per
 * call, e.g. Dense kernels packed for the GEMM); FASTGRAD_INFER_PACK=0 turns it off */
static void infer_unpack(fg_net *n) {
    for (int i = 0; i < n->n_nodes; i++) {
        fg_node *N = &n->nodes[i];
        if (N->ipack && N->ops->infer_free) N->ops->infer_free(N->ipack);
        N->ipack = NULL;
    }
}

static int infer_pack(fg_net *n, int nthreads) {
    const char *e = getenv("FASTGRAD_INFER_PACK");
    if (e && e[0] == '0' && e[1] == 0) return FG_OK;
    for (int i = 0; i < n->n_nodes; i++) {
        fg_node *N = &n->nodes[i];
        N->ipack = NULL;
        if (!N->ops->infer_pack || passes_on(N, 0)) continue;
        fg_node_io io = node_io(n, N, n->prows, NULL, n->prows, nthreads);
        int st = N->ops->infer_pack(&io, &N->ipack);
        if (st != FG_OK) {
            N->ipack = NULL;
            infer_unpack(n);
            return st;
        }
    }
    return FG_OK;
}

int fg_net_predict(fg_net *n, float *const *out, const float *const *x, int64_t rows, int nthreads) {
    if (!n || rows < 0 || (rows > 0 && (!out || !x))) return FG_ERR_ARG;
    if (rows == 0) return FG_OK;
    for (int j = 0; j < n->n_inputs; j++)
        if (!x[j]) return FG_ERR_ARG;
    for (int k = 0; k < n->n_outputs; k++)
        if (!out[k]) return FG_ERR_ARG;
    if (!acquire(n)) return FG_ERR_BUSY;
    const int64_t R = n->prows;
    int64_t chunks = (rows + R - 1) / R;
    /* parallel over chunks once every thread gets two; otherwise chunk by
     * chunk with the kernels' own threads (same bits either way) */
    int nt = fg_threads_for(chunks, 2, nthreads);
    int st = ensure_predict_ws(n, nt);
    const int64_t vstride = n->n_slots + n->max_in;
    if (st == FG_OK && chunks > 1) st = infer_pack(n, nthreads);
    if (st) {
        release(n);
        return st;
    }
    if (nt <= 1) {
        unsigned fs = fg_fpstate_enter();
        for (int64_t c = 0; c < chunks && st == FG_OK; c++) {
            int64_t r0 = c * R, rc = rows - r0 < R ? rows - r0 : R;
            st = predict_rows(n, n->pws, n->pval, out, x, r0, rc, nthreads);
        }
        fg_fpstate_leave(fs);
    } else {
#if FG_HAVE_OPENMP
#pragma omp parallel num_threads(nt)
        {
            int t = omp_get_thread_num(), T = omp_get_num_threads();
            float *ws = n->pws + (size_t)t * (size_t)n->pws_stride;
            const float **val = n->pval + (size_t)t * (size_t)vstride;
            unsigned fs = fg_fpstate_enter();
            for (int64_t c = t; c < chunks; c += T) {
                int64_t r0 = c * R, rc = rows - r0 < R ? rows - r0 : R;
                int s = predict_rows(n, ws, val, out, x, r0, rc, 1);
                if (s != FG_OK) {
#pragma omp atomic write
                    st = s;
                }
            }
            fg_fpstate_leave(fs);
        }
#endif
    }
    infer_unpack(n);
    release(n);
    return st;
}
