/* step.c — the compiled training step / inference path (see fg_step.h).
 *
 * Compiled once (not per ISA): everything heavy is a call into the
 * dispatched GEMM (csrc/gemm) and element-wise / loss / optimizer kernels
 * (csrc/kernels); this file only sequences them, gathers batches and owns
 * the workspaces. Data flow of one training step on `rows` rows:
 *
 *   gather x[perm[..]] -> X0 (skipped when the rows are consecutive)
 *   forward   layer l: act[l] = f_l(in[l])      (dense: fused GEMM + bias + act;
 *                                                pre[l] keeps x@w+b when the
 *                                                backward needs it: gelu, softmax)
 *   loss      fused loss kernel: batch loss, dlogits -> g0
 *   backward  layer l (reverse): dz = act'(dy) in place, dW = in[l]^T dz and
 *             db = colsum(dz) straight into the flat gradient buffer,
 *             dx = dz W^T into the other ping-pong buffer (not for the first
 *             layer with parameters)
 *   regularizer gradients, frozen layers zeroed, clipping, optimizer kernel.
 *
 * Reproducibility: the kernels give the same bits for any thread count, the
 * gather is a copy, and the only reductions done here (regularization
 * penalty, correct counts) are serial.
 */
#include "fg_step.h"

#include "gemm/fg_gemm.h"
#include "kernels/fg_activation.h"
#include "kernels/fg_loss.h"
#include "kernels/fg_norm.h"
#include "kernels/fg_optim.h"
#include "kernels/fg_random.h"
#include "kernels/fg_reduce.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if !defined(_WIN32)
#include <time.h>
#endif
#if FG_HAVE_OPENMP
#include <omp.h>
#endif

/* rows per inference chunk: a 784-128-10 MLP chunk keeps its activations in
 * L2; chunks are the unit of parallel work in fg_net_predict */
#define FG_PREDICT_ROWS 256

/* thread policy of training (see pick_threads): probe length and period bounds, in batches */
#define FG_POLICY_PROBE 2
#define FG_POLICY_PERIOD 64
#define FG_POLICY_PERIOD_MAX 256

#define TRY(expr)                         \
    do {                                  \
        int st_ = (expr);                 \
        if (st_ != FG_OK) return st_;     \
    } while (0)

struct fg_net {
    int n_layers;
    fg_layer_desc *layers;
    int64_t in0;           /* per-sample input width */
    int64_t out_last;      /* per-sample output width of the last layer */
    int64_t maxw;          /* widest per-sample activation, input included */
    int first_param;       /* first layer with parameters: layers before it need no gradient */
    float *params, *grads; /* the model's flat buffers (not owned) */
    int64_t n_params;
    int loss;              /* FG_LOSS_* or 0 */
    int acc_kind;          /* FG_ACC_* */
    int acc_unweighted;    /* 1: accuracy ignores the sample weights (Keras `metrics=`) */
    float *cap_out;        /* output capture (fg_net_capture_outputs): buffer, capacity in rows */
    int64_t cap_rows;
    float acc_thr;         /* FG_ACC_BINARY threshold on the raw output */
    int all_trainable;     /* no frozen layer: one optimizer call over the whole buffer */
    int has_opt;
    fg_optim_desc opt;
    /* training / evaluation workspace, for up to `cap` rows */
    int64_t cap;
    float *xg;             /* cap x in0: the gathered batch */
    float **act;           /* per layer: cap x out (NULL for layers that pass their input on) */
    float **pre;           /* per layer: cap x out pre-activation (dense gelu / softmax);
                              layer norm: its row statistics, mean [0, cap) and rstd [cap, 2 cap);
                              batch norm: mean / rstd of the batch (training) or the
                              scale / shift from the moving statistics, out floats each */
    uint8_t **mask;        /* per layer: cap x out dropout keep flags */
    const float **in_ptr;  /* per layer, this step: its input */
    const float **out_ptr; /* per layer, this step: its output */
    float *g0, *g1;        /* cap x maxw gradient ping-pong buffers */
    int64_t *lbl;          /* cap labels */
    float *tgt;            /* cap x out_last targets */
    float *sw;             /* cap sample weights */
    /* inference workspace: pnt threads x 3 buffers of FG_PREDICT_ROWS x maxw */
    int pnt;
    float *pws;
    int busy;
    /* thread policy (see pick_threads) */
    int adaptive;
    int64_t pol_batch;     /* training batches since the current probe started */
    int64_t pol_period;    /* batches between probes: 64, doubled (to 256) while the winner stays */
    double pol_best[2];    /* fastest seconds per row seen in this probe: [0] nthreads, [1] one thread */
    int pol_single;        /* decision of the last probe */
    double pol_chosen;     /* seconds per row of the chosen setting in the last probe */
};

/* ------------------------------------------------------------------ memory */
static void *fg_alloc(size_t bytes) {
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    bytes = (bytes + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    return p;
}

static void free_train_ws(fg_net *n) {
    free(n->xg);
    n->xg = NULL;
    for (int l = 0; l < n->n_layers; l++) {
        free(n->act[l]);
        free(n->pre[l]);
        free(n->mask[l]);
        n->act[l] = n->pre[l] = NULL;
        n->mask[l] = NULL;
    }
    free(n->g0);
    free(n->g1);
    free(n->lbl);
    free(n->tgt);
    free(n->sw);
    n->g0 = n->g1 = n->tgt = n->sw = NULL;
    n->lbl = NULL;
    n->cap = 0;
}

static int is_softmax(int act) { return act == FG_ACT_SOFTMAX || act == FG_ACT_LOG_SOFTMAX; }

/* A layer's parameter arrays in the flat buffers: [w_off, w_off + w_count)
 * (dense kernel / norm gamma) and [b_off, b_off + b_count) (bias / beta);
 * a count of 0 means the array does not exist. */
static int is_norm(const fg_layer_desc *L) {
    return L->kind == FG_LAYER_LAYERNORM || L->kind == FG_LAYER_BATCHNORM;
}
static int64_t w_count(const fg_layer_desc *L) {
    if (L->kind == FG_LAYER_DENSE) return L->in * L->out;
    if (is_norm(L) && L->w_off >= 0) return L->out;
    return 0;
}
static int64_t b_count(const fg_layer_desc *L) {
    return (L->kind == FG_LAYER_DENSE || is_norm(L)) && L->b_off >= 0 ? L->out : 0;
}
static int has_params(const fg_layer_desc *L) { return w_count(L) + b_count(L) > 0; }
static int is_gelu(int act) { return act == FG_ACT_GELU || act == FG_ACT_GELU_TANH; }

/* does layer l write its own output buffer (or pass its input on)? */
static int writes_output(const fg_layer_desc *L) {
    if (L->kind == FG_LAYER_DENSE || is_norm(L)) return 1;
    if (L->kind == FG_LAYER_ACTIVATION) return L->act != FG_ACT_LINEAR;
    return L->rate > 0.0f; /* dropout */
}

/* Workspace for `rows` rows (grow-only: the training batch size, then the
 * smaller last batch and evaluation batches reuse it). */
static int ensure_train_ws(fg_net *n, int64_t rows) {
    if (rows <= n->cap) return FG_OK;
    free_train_ws(n);
    size_t f = sizeof(float);
    n->xg = fg_alloc((size_t)rows * (size_t)n->in0 * f);
    n->g0 = fg_alloc((size_t)rows * (size_t)n->maxw * f);
    n->g1 = fg_alloc((size_t)rows * (size_t)n->maxw * f);
    n->lbl = fg_alloc((size_t)rows * sizeof(int64_t));
    n->tgt = fg_alloc((size_t)rows * (size_t)n->out_last * f);
    n->sw = fg_alloc((size_t)rows * f);
    int ok = n->xg && n->g0 && n->g1 && n->lbl && n->tgt && n->sw;
    for (int l = 0; ok && l < n->n_layers; l++) {
        const fg_layer_desc *L = &n->layers[l];
        size_t cnt = (size_t)rows * (size_t)L->out;
        if (writes_output(L)) ok = (n->act[l] = fg_alloc(cnt * f)) != NULL;
        if (ok && L->kind == FG_LAYER_DENSE && (is_gelu(L->act) || is_softmax(L->act)))
            ok = (n->pre[l] = fg_alloc(cnt * f)) != NULL;
        if (ok && L->kind == FG_LAYER_LAYERNORM) ok = (n->pre[l] = fg_alloc(2 * (size_t)rows * f)) != NULL;
        if (ok && L->kind == FG_LAYER_BATCHNORM) ok = (n->pre[l] = fg_alloc(2 * (size_t)L->out * f)) != NULL;
        if (ok && L->kind == FG_LAYER_DROPOUT && L->rate > 0.0f) ok = (n->mask[l] = fg_alloc(cnt)) != NULL;
    }
    if (!ok) {
        free_train_ws(n);
        return FG_ERR_NOMEM;
    }
    n->cap = rows;
    return FG_OK;
}

static int ensure_predict_ws(fg_net *n, int nt) {
    if (nt <= n->pnt) return FG_OK;
    free(n->pws);
    n->pnt = 0;
    n->pws = fg_alloc((size_t)nt * 3 * FG_PREDICT_ROWS * (size_t)n->maxw * sizeof(float));
    if (!n->pws) return FG_ERR_NOMEM;
    n->pnt = nt;
    return FG_OK;
}

/* ------------------------------------------------------------------ create */
static int check_act(int act, int allow_softmax) {
    if (act >= FG_ACT_LINEAR && act <= FG_ACT_GELU_TANH) return 1;
    return allow_softmax && is_softmax(act);
}

int fg_net_create(fg_net **out, const fg_layer_desc *layers, int n_layers, int64_t in_features,
                  float *params, float *grads, int64_t n_params, int loss, const fg_optim_desc *opt) {
    if (!out) return FG_ERR_ARG;
    *out = NULL;
    if (n_layers <= 0 || !layers || in_features <= 0 || n_params < 0 || (n_params > 0 && !params))
        return FG_ERR_ARG;
    if (loss < 0 || loss > FG_LOSS_MSE) return FG_ERR_ARG;
    if (loss && (!opt || !grads)) return FG_ERR_ARG;
    int64_t width = in_features, maxw = in_features;
    int first_param = -1;
    for (int l = 0; l < n_layers; l++) {
        const fg_layer_desc *L = &layers[l];
        if (L->in != width || L->out <= 0) return FG_ERR_ARG;
        if (!check_act(L->act, 1)) return FG_ERR_ARG;
        if (L->out_act != FG_ACT_NONE && L->out_act != FG_ACT_SIGMOID && L->out_act != FG_ACT_SOFTMAX)
            return FG_ERR_ARG;
        if (L->out_act != FG_ACT_NONE && l != n_layers - 1) return FG_ERR_ARG;
        switch (L->kind) {
        case FG_LAYER_DENSE:
            if (L->w_off < 0 || L->w_off + L->in * L->out > n_params) return FG_ERR_ARG;
            if (L->b_off >= 0 && L->b_off + L->out > n_params) return FG_ERR_ARG;
            if (first_param < 0) first_param = l;
            break;
        case FG_LAYER_ACTIVATION:
            if (L->out != L->in) return FG_ERR_ARG;
            break;
        case FG_LAYER_DROPOUT:
            if (L->out != L->in || !(L->rate >= 0.0f && L->rate < 1.0f)) return FG_ERR_ARG;
            break;
        case FG_LAYER_BATCHNORM:
        case FG_LAYER_LAYERNORM:
            if (L->out != L->in || !(L->eps > 0.0f) || L->act != FG_ACT_LINEAR) return FG_ERR_ARG;
            if (L->w_off >= 0 && L->w_off + L->out > n_params) return FG_ERR_ARG;
            if (L->b_off >= 0 && L->b_off + L->out > n_params) return FG_ERR_ARG;
            if (L->kind == FG_LAYER_BATCHNORM &&
                (!L->moving_mean || !L->moving_var || !(L->bn_momentum >= 0.0f && L->bn_momentum <= 1.0f)))
                return FG_ERR_ARG;
            if (first_param < 0 && has_params(L)) first_param = l;
            break;
        default:
            return FG_ERR_ARG;
        }
        width = L->out;
        if (width > maxw) maxw = width;
    }
    if (loss && first_param < 0) return FG_ERR_ARG; /* nothing to train */
    if (opt) {
        if (opt->kind < FG_OPT_SGD || opt->kind > FG_OPT_ADAGRAD) return FG_ERR_ARG;
        if (loss) {
            int need1 = opt->kind != FG_OPT_SGD || opt->momentum != 0.0f;
            int need2 = opt->kind == FG_OPT_ADAM || (opt->kind == FG_OPT_RMSPROP && opt->momentum != 0.0f);
            int need3 = opt->kind == FG_OPT_RMSPROP && opt->centered;
            if ((need1 && !opt->s1) || (need2 && !opt->s2) || (need3 && !opt->s3)) return FG_ERR_ARG;
        }
    }
    fg_net *n = (fg_net *)calloc(1, sizeof *n);
    if (!n) return FG_ERR_NOMEM;
    n->layers = (fg_layer_desc *)malloc((size_t)n_layers * sizeof *n->layers);
    n->act = (float **)calloc((size_t)n_layers, sizeof(float *));
    n->pre = (float **)calloc((size_t)n_layers, sizeof(float *));
    n->mask = (uint8_t **)calloc((size_t)n_layers, sizeof(uint8_t *));
    n->in_ptr = (const float **)calloc((size_t)n_layers, sizeof(float *));
    n->out_ptr = (const float **)calloc((size_t)n_layers, sizeof(float *));
    if (!n->layers || !n->act || !n->pre || !n->mask || !n->in_ptr || !n->out_ptr) {
        fg_net_free(n);
        return FG_ERR_NOMEM;
    }
    memcpy(n->layers, layers, (size_t)n_layers * sizeof *layers);
    n->n_layers = n_layers;
    n->in0 = in_features;
    n->out_last = width;
    n->maxw = maxw;
    n->first_param = first_param;
    n->params = params;
    n->grads = grads;
    n->n_params = n_params;
    n->loss = loss;
    n->adaptive = 1;
    n->all_trainable = 1;
    for (int l = 0; l < n_layers; l++)
        if (has_params(&layers[l]) && !layers[l].trainable) n->all_trainable = 0;
    if (opt) {
        n->opt = *opt;
        n->has_opt = 1;
    }
    *out = n;
    return FG_OK;
}

void fg_net_free(fg_net *n) {
    if (!n) return;
    if (n->act) free_train_ws(n);
    free(n->act);
    free(n->pre);
    free(n->mask);
    free(n->in_ptr);
    free(n->out_ptr);
    free(n->layers);
    free(n->pws);
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
    n->adaptive = on != 0;
    n->pol_batch = 0;
    n->pol_period = FG_POLICY_PERIOD;
    n->pol_single = 0;
    return FG_OK;
}

int fg_net_set_accuracy(fg_net *n, int kind, float threshold) {
    if (!n || kind < FG_ACC_NONE || kind > FG_ACC_BINARY) return FG_ERR_ARG;
    if (kind == FG_ACC_SPARSE && n->loss != FG_LOSS_SPARSE_SOFTMAX_XENT) return FG_ERR_ARG;
    if ((kind == FG_ACC_CATEGORICAL || kind == FG_ACC_BINARY) && n->loss == FG_LOSS_SPARSE_SOFTMAX_XENT)
        return FG_ERR_ARG;
    n->acc_kind = kind;
    n->acc_thr = threshold;
    return FG_OK;
}

int fg_net_capture_outputs(fg_net *n, float *out, int64_t capacity_rows) {
    if (!n || capacity_rows < 0 || (out && capacity_rows == 0)) return FG_ERR_ARG;
    n->cap_out = out;
    n->cap_rows = out ? capacity_rows : 0;
    return FG_OK;
}

int fg_net_set_accuracy_weighted(fg_net *n, int weighted) {
    if (!n) return FG_ERR_ARG;
    n->acc_unweighted = weighted == 0;
    return FG_OK;
}

int64_t fg_net_workspace_bytes(const fg_net *n) {
    if (!n) return 0;
    int64_t b = 0, cap = n->cap;
    if (cap) {
        b += cap * (n->in0 + 2 * n->maxw + n->out_last + 1) * 4 + cap * 8;
        for (int l = 0; l < n->n_layers; l++) {
            int64_t c = cap * n->layers[l].out;
            if (n->act[l]) b += 4 * c;
            int k = n->layers[l].kind;
            if (n->pre[l]) b += 4 * (k == FG_LAYER_LAYERNORM ? 2 * cap : k == FG_LAYER_BATCHNORM ? 2 * n->layers[l].out : c);
            if (n->mask[l]) b += c;
        }
    }
    b += (int64_t)n->pnt * 3 * FG_PREDICT_ROWS * n->maxw * 4;
    return b;
}

/* ------------------------------------------------------------------ busy flag */
static int acquire(fg_net *n) { return __atomic_exchange_n(&n->busy, 1, __ATOMIC_ACQUIRE) == 0; }
static void release(fg_net *n) { __atomic_store_n(&n->busy, 0, __ATOMIC_RELEASE); }

/* ------------------------------------------------------------------ forward */
/* Batch normalisation, (rows, c) -> dst. train: batch statistics (mean, rstd
 * into st[0:c], st[c:2c], kept for the backward) and the moving statistics
 * updated; else y = x * scale + shift with scale / shift (into st) from the
 * moving statistics. Both in float32 with the Python layer's operations in
 * its order (the library is compiled without FP contraction), so the state
 * and the outputs are the same bits as on the Python path. */
static int batchnorm_forward(const fg_layer_desc *L, const float *src, int64_t rows, float *dst, float *st,
                             int train, const float *gamma, const float *beta, int nt) {
    const int64_t c = L->out;
    float *mm = L->moving_mean, *mv = L->moving_var;
    const float mom = L->bn_momentum, rest = L->bn_rest, eps = L->eps;
    if (train) {
        float *mean = st, *rstd = st + c;
        TRY(fg_batchnorm_forward(dst, mean, rstd, src, gamma, beta, rows, c, eps, nt));
        for (int64_t j = 0; j < c; j++) {
            float t = mean[j] * rest;
            mm[j] = mm[j] * mom + t;
            float v = rstd[j] * rstd[j];
            v = 1.0f / v - eps; /* the batch variance, recovered from rstd = 1/sqrt(var + eps) */
            v = v < 0.0f ? 0.0f : v;
            v = v * rest;
            mv[j] = mv[j] * mom + v;
        }
        return FG_OK;
    }
    float *scale = st, *shift = st + c;
    for (int64_t j = 0; j < c; j++) {
        float sc = sqrtf(mv[j] + eps);
        sc = (gamma ? gamma[j] : 1.0f) / sc;
        scale[j] = sc;
        shift[j] = (beta ? beta[j] : 0.0f) - mm[j] * sc;
    }
    for (int64_t i = 0; i < rows; i++) {
        const float *x = src + i * c;
        float *y = dst + i * c;
        for (int64_t j = 0; j < c; j++) y[j] = x[j] * scale[j] + shift[j];
    }
    return FG_OK;
}

/* One layer on `rows` rows. src: (rows, L->in); dst: (rows, L->out) buffer the
 * layer may write; pre: buffer for the pre-activation (kept for the backward
 * in training; scratch in inference); mask: dropout keep flags. *res: where
 * the output is (dst, or src for a layer that passes its input on). */
static int layer_forward(const fg_net *n, const fg_layer_desc *L, const float *src, int64_t rows,
                         float *dst, float *pre, uint8_t *mask, int training, uint64_t drop_offset,
                         const float **res, int nt) {
    int64_t cnt = rows * L->out;
    *res = dst;
    switch (L->kind) {
    case FG_LAYER_DENSE: {
        const float *W = n->params + L->w_off;
        const float *b = L->b_off >= 0 ? n->params + L->b_off : NULL;
        if (is_softmax(L->act)) {
            TRY(fg_dense_forward(pre, L->out, NULL, 0, src, L->in, W, L->out, b, rows, L->out, L->in,
                                 FG_ACT_LINEAR, nt));
            return fg_softmax_forward(dst, pre, rows, L->out, L->act == FG_ACT_LOG_SOFTMAX, nt);
        }
        float *z = (training && is_gelu(L->act)) ? pre : NULL;
        return fg_dense_forward(dst, L->out, z, L->out, src, L->in, W, L->out, b, rows, L->out, L->in,
                                L->act, nt);
    }
    case FG_LAYER_ACTIVATION:
        if (L->act == FG_ACT_LINEAR) {
            *res = src;
            return FG_OK;
        }
        if (is_softmax(L->act)) return fg_softmax_forward(dst, src, rows, L->out, L->act == FG_ACT_LOG_SOFTMAX, nt);
        return fg_act_forward(dst, src, cnt, L->act, nt);
    case FG_LAYER_LAYERNORM: {
        /* statistics kept for the backward in training only (pre is then the
         * layer's 2 x cap buffer; in inference it is scratch and unused) */
        const float *g = L->w_off >= 0 ? n->params + L->w_off : NULL;
        const float *b = L->b_off >= 0 ? n->params + L->b_off : NULL;
        float *mean = training ? pre : NULL, *rstd = training ? pre + n->cap : NULL;
        return fg_layernorm_forward(dst, mean, rstd, src, g, b, rows, L->out, L->eps, nt);
    }
    case FG_LAYER_BATCHNORM:
        return batchnorm_forward(L, src, rows, dst, pre, training && L->trainable,
                                 L->w_off >= 0 ? n->params + L->w_off : NULL,
                                 L->b_off >= 0 ? n->params + L->b_off : NULL, nt);
    default: /* dropout */
        if (!training || L->rate <= 0.0f) {
            *res = src;
            return FG_OK;
        }
        return fg_dropout_forward(dst, mask, src, cnt, L->rate, L->seed, drop_offset, nt);
    }
}

/* ------------------------------------------------------------------ batches */
typedef struct {
    const float *x;      /* the batch input (rows, in0) */
    const int64_t *lbl;  /* sparse labels, or NULL */
    const float *tgt;    /* dense targets (rows, out_last), or NULL */
    const float *sw;     /* sample weights, or NULL */
} fg_batch;

/* Rows p0 .. p0+rows-1 of the permutation (identity when perm is NULL):
 * copied into the workspace, or pointed at directly when consecutive. */
static int gather(fg_net *n, fg_batch *bt, const int64_t *perm, int64_t p0, int64_t rows, const float *x,
                  int64_t x_rows, const void *y, int y_kind, const float *sw, int nt) {
    int64_t first = perm ? perm[p0] : p0;
    int consecutive = 1;
    for (int64_t i = 0; i < rows; i++) {
        int64_t idx = perm ? perm[p0 + i] : p0 + i;
        if (idx < 0 || idx >= x_rows) return FG_ERR_ARG;
        if (idx != first + i) consecutive = 0;
    }
    const int64_t d = n->in0, c = n->out_last;
    if (consecutive) {
        bt->x = x + first * d;
        bt->sw = sw ? sw + first : NULL;
    } else {
        float *xg = n->xg;
        int t = fg_threads_for(rows * d, (int64_t)1 << 16, nt);
        if (t <= 1) {
            for (int64_t i = 0; i < rows; i++) memcpy(xg + i * d, x + perm[p0 + i] * d, (size_t)d * sizeof(float));
        } else {
#if FG_HAVE_OPENMP
#pragma omp parallel for num_threads(t) schedule(static)
#endif
            for (int64_t i = 0; i < rows; i++) memcpy(xg + i * d, x + perm[p0 + i] * d, (size_t)d * sizeof(float));
        }
        bt->x = xg;
        if (sw) {
            for (int64_t i = 0; i < rows; i++) n->sw[i] = sw[perm[p0 + i]];
            bt->sw = n->sw;
        } else {
            bt->sw = NULL;
        }
    }
    bt->lbl = NULL;
    bt->tgt = NULL;
    if (n->loss == FG_LOSS_SPARSE_SOFTMAX_XENT) {
        int64_t *lbl = n->lbl;
        if (y_kind == FG_TARGET_INT64) {
            const int64_t *yy = (const int64_t *)y;
            if (consecutive) {
                bt->lbl = yy + first;
                return FG_OK;
            }
            for (int64_t i = 0; i < rows; i++) lbl[i] = yy[perm[p0 + i]];
        } else if (y_kind == FG_TARGET_INT32) {
            const int32_t *yy = (const int32_t *)y;
            for (int64_t i = 0; i < rows; i++) lbl[i] = yy[perm ? perm[p0 + i] : p0 + i];
        } else {
            return FG_ERR_ARG;
        }
        bt->lbl = lbl;
    } else {
        if (y_kind != FG_TARGET_FLOAT32) return FG_ERR_ARG;
        const float *yy = (const float *)y;
        if (consecutive) {
            bt->tgt = yy + first * c;
        } else {
            for (int64_t i = 0; i < rows; i++) memcpy(n->tgt + i * c, yy + perm[p0 + i] * c, (size_t)c * sizeof(float));
            bt->tgt = n->tgt;
        }
    }
    return FG_OK;
}

/* first index of the maximum of a row (NaN never wins, like a > comparison) */
static int64_t row_argmax(const float *r, int64_t c) {
    int64_t best = 0;
    for (int64_t j = 1; j < c; j++)
        if (r[j] > r[best]) best = j;
    return best;
}

/* Fused loss on the logits: mean loss of the batch, and (dlog != NULL) the
 * gradient of the mean loss into dlog. */
static int loss_forward(const fg_net *n, const fg_batch *bt, const float *logits, int64_t rows, float *dlog,
                        double *loss, int nt) {
    const int64_t c = n->out_last;
    double s = 0.0;
    switch (n->loss) {
    case FG_LOSS_SPARSE_SOFTMAX_XENT:
        TRY(fg_sparse_softmax_xent(&s, dlog, NULL, logits, bt->lbl, bt->sw, rows, c, (float)(1.0 / (double)rows), nt));
        *loss = s / (double)rows;
        break;
    case FG_LOSS_SOFTMAX_XENT:
        TRY(fg_softmax_xent(&s, dlog, logits, bt->tgt, bt->sw, rows, c, (float)(1.0 / (double)rows), nt));
        *loss = s / (double)rows;
        break;
    case FG_LOSS_SIGMOID_BCE: {
        double rc = (double)rows * (double)c;
        TRY(fg_sigmoid_bce(&s, dlog, logits, bt->tgt, bt->sw, rows, c, (float)(1.0 / rc), nt));
        *loss = s / rc;
        break;
    }
    case FG_LOSS_MSE: {
        double rc = (double)rows * (double)c;
        TRY(fg_mse(&s, dlog, logits, bt->tgt, bt->sw, rows, c, (float)(1.0 / rc), nt));
        *loss = s / rc;
        break;
    }
    default:
        return FG_ERR_ARG;
    }
    return FG_OK;
}

/* Accuracy of the batch: *acc = sum_i w_i acc_i, *wsum = sum_i w_i (serial, fixed order);
 * w_i = 1 when there are no sample weights or the accuracy is unweighted. */
static void accuracy(const fg_net *n, const fg_batch *bt, const float *out, int64_t rows, double *acc,
                     double *wsum) {
    const int64_t c = n->out_last;
    const float *sw = n->acc_unweighted ? NULL : bt->sw;
    double a = 0.0, w = 0.0;
    for (int64_t i = 0; i < rows; i++) {
        const float *r = out + i * c;
        double v = 0.0, wi = sw ? (double)sw[i] : 1.0;
        switch (n->acc_kind) {
        case FG_ACC_SPARSE:
            v = row_argmax(r, c) == bt->lbl[i];
            break;
        case FG_ACC_CATEGORICAL:
            v = row_argmax(r, c) == row_argmax(bt->tgt + i * c, c);
            break;
        case FG_ACC_BINARY: {
            int64_t k = 0;
            const float *t = bt->tgt + i * c;
            for (int64_t j = 0; j < c; j++) k += (r[j] > n->acc_thr) == (t[j] > 0.5f);
            v = (double)k / (double)c;
            break;
        }
        default:
            break;
        }
        a += v * wi;
        w += wi;
    }
    *acc = a;
    *wsum = w;
}

/* Forward through every layer; leaves in_ptr/out_ptr set; returns the logits. */
static int net_forward(fg_net *n, const float *x, int64_t rows, int training, uint64_t *drop_offsets,
                       const float **logits, int nt) {
    const float *src = x;
    for (int l = 0; l < n->n_layers; l++) {
        const fg_layer_desc *L = &n->layers[l];
        const float *res;
        uint64_t off = drop_offsets ? drop_offsets[l] : 0;
        n->in_ptr[l] = src;
        TRY(layer_forward(n, L, src, rows, n->act[l], n->pre[l], n->mask[l], training, off, &res, nt));
        if (training && L->kind == FG_LAYER_DROPOUT && L->rate > 0.0f && drop_offsets)
            drop_offsets[l] += (uint64_t)(rows * L->out);
        n->out_ptr[l] = res;
        src = res;
    }
    *logits = src;
    return FG_OK;
}

/* Backward from the gradient in g0; parameter gradients into n->grads. */
static int net_backward(fg_net *n, int64_t rows, int nt) {
    float *buf[2] = {n->g0, n->g1};
    int cur = 0; /* dy lives in buf[cur] */
    for (int l = n->n_layers - 1; l >= n->first_param; l--) {
        const fg_layer_desc *L = &n->layers[l];
        int64_t cnt = rows * L->out;
        float *dy = buf[cur];
        if (L->kind == FG_LAYER_DENSE) {
            float *dz = dy;
            if (is_softmax(L->act)) {
                dz = buf[cur ^ 1];
                TRY(fg_softmax_backward(dz, dy, n->out_ptr[l], rows, L->out, L->act == FG_ACT_LOG_SOFTMAX, nt));
            } else if (L->act != FG_ACT_LINEAR) {
                const float *ref = is_gelu(L->act) ? n->pre[l] : n->out_ptr[l];
                TRY(fg_act_backward(dz, dy, ref, cnt, L->act, nt));
            }
            float *gw = n->grads + L->w_off;
            float *gb = L->b_off >= 0 ? n->grads + L->b_off : NULL;
            if (L->trainable) {
                TRY(fg_gemm(gw, L->out, n->in_ptr[l], L->in, dz, L->out, L->in, L->out, rows, 1, 0, 1.0f, 0.0f, nt));
                if (gb) TRY(fg_sum_rows(gb, dz, rows, L->out, nt));
            } else {
                memset(gw, 0, (size_t)(L->in * L->out) * sizeof(float));
                if (gb) memset(gb, 0, (size_t)L->out * sizeof(float));
            }
            if (l > n->first_param) {
                int o = dz == buf[cur] ? cur ^ 1 : cur;
                TRY(fg_gemm(buf[o], L->in, dz, L->out, n->params + L->w_off, L->out, rows, L->in, L->out, 0, 1,
                            1.0f, 0.0f, nt));
                cur = o;
            }
        } else if (L->kind == FG_LAYER_ACTIVATION) {
            if (is_softmax(L->act)) {
                TRY(fg_softmax_backward(buf[cur ^ 1], dy, n->out_ptr[l], rows, L->out, L->act == FG_ACT_LOG_SOFTMAX,
                                        nt));
                cur ^= 1;
            } else if (L->act != FG_ACT_LINEAR) {
                const float *ref = is_gelu(L->act) ? n->in_ptr[l] : n->out_ptr[l];
                TRY(fg_act_backward(dy, dy, ref, cnt, L->act, nt));
            }
        } else if (L->kind == FG_LAYER_LAYERNORM) {
            float *gg = w_count(L) ? n->grads + L->w_off : NULL;
            float *gb = b_count(L) ? n->grads + L->b_off : NULL;
            if (!L->trainable) { /* frozen: gradients zero, dx still flows */
                if (gg) memset(gg, 0, (size_t)w_count(L) * sizeof(float));
                if (gb) memset(gb, 0, (size_t)b_count(L) * sizeof(float));
                gg = gb = NULL;
            }
            const float *g = L->w_off >= 0 ? n->params + L->w_off : NULL;
            TRY(fg_layernorm_backward(dy, gg, gb, dy, n->in_ptr[l], g, n->pre[l], n->pre[l] + n->cap, rows,
                                      L->out, nt));
        } else if (L->kind == FG_LAYER_BATCHNORM) {
            const int64_t c = L->out;
            float *gg = w_count(L) ? n->grads + L->w_off : NULL;
            float *gb = b_count(L) ? n->grads + L->b_off : NULL;
            if (!L->trainable) { /* inference-mode forward: dx = dy * scale, gradients zero */
                if (gg) memset(gg, 0, (size_t)c * sizeof(float));
                if (gb) memset(gb, 0, (size_t)c * sizeof(float));
                const float *scale = n->pre[l];
                for (int64_t i = 0; i < rows; i++)
                    for (int64_t j = 0; j < c; j++) dy[i * c + j] *= scale[j];
            } else {
                const float *g = L->w_off >= 0 ? n->params + L->w_off : NULL;
                TRY(fg_batchnorm_backward(dy, gg, gb, dy, n->in_ptr[l], g, n->pre[l], n->pre[l] + c, rows, c, nt));
            }
        } else if (L->rate > 0.0f) {
            TRY(fg_dropout_backward(dy, dy, n->mask[l], cnt, L->rate, nt));
        }
    }
    return FG_OK;
}

/* l1 sum|w| + l2 sum w^2 (double, serial: same bits for any thread count);
 * with g != NULL also g += 2 l2 w, then g += l1 sign(w) (the Python path's order) */
static double regularize(const float *w, float *g, int64_t cnt, float l1, float l2) {
    double s1 = 0.0, s2 = 0.0;
    const float c2 = 2.0f * l2;
    for (int64_t i = 0; i < cnt; i++) {
        double v = (double)w[i];
        s1 += fabs(v);
        s2 += v * v;
    }
    if (g) {
        if (l2 != 0.0f)
            for (int64_t i = 0; i < cnt; i++) g[i] += w[i] * c2;
        if (l1 != 0.0f)
            for (int64_t i = 0; i < cnt; i++) {
                float sg = w[i] > 0.0f ? 1.0f : (w[i] < 0.0f ? -1.0f : 0.0f);
                g[i] += sg * l1;
            }
    }
    return (double)l1 * s1 + (double)l2 * s2;
}

/* Regularization penalty of the current parameters (gradients added when add_grad). */
static double net_regularize(fg_net *n, int add_grad) {
    double pen = 0.0;
    for (int l = 0; l < n->n_layers; l++) {
        const fg_layer_desc *L = &n->layers[l];
        if (!has_params(L) || !L->trainable) continue; /* the Python path skips frozen ones */
        int g = add_grad;
        if (w_count(L) && (L->l1_w != 0.0f || L->l2_w != 0.0f))
            pen += regularize(n->params + L->w_off, g ? n->grads + L->w_off : NULL, w_count(L), L->l1_w, L->l2_w);
        if (b_count(L) && (L->l1_b != 0.0f || L->l2_b != 0.0f))
            pen += regularize(n->params + L->b_off, g ? n->grads + L->b_off : NULL, b_count(L), L->l1_b, L->l2_b);
    }
    return pen;
}

static int clip_norm(float *g, int64_t cnt, float max_norm, int nt) {
    double ss;
    TRY(fg_sumsq(&ss, g, cnt, nt));
    double norm = sqrt(ss);
    if (norm > (double)max_norm) return fg_scale(g, cnt, (float)((double)max_norm / norm), nt);
    return FG_OK;
}

static int net_clip(fg_net *n, int nt) {
    const fg_optim_desc *o = &n->opt;
    if (o->clipnorm > 0.0f) {
        for (int l = 0; l < n->n_layers; l++) {
            const fg_layer_desc *L = &n->layers[l];
            if (!has_params(L) || !L->trainable) continue;
            if (w_count(L)) TRY(clip_norm(n->grads + L->w_off, w_count(L), o->clipnorm, nt));
            if (b_count(L)) TRY(clip_norm(n->grads + L->b_off, b_count(L), o->clipnorm, nt));
        }
    }
    if (o->global_clipnorm > 0.0f) TRY(clip_norm(n->grads, n->n_params, o->global_clipnorm, nt));
    if (o->clipvalue > 0.0f) TRY(fg_clip_value(n->grads, n->n_params, -o->clipvalue, o->clipvalue, nt));
    return FG_OK;
}

/* optimizer kernel over [lo, lo + cnt) of the flat buffers */
static int update_range(fg_net *n, int64_t lo, int64_t cnt, float lr, int64_t step, int nt) {
    const fg_optim_desc *o = &n->opt;
    float *p = n->params + lo, *g = n->grads + lo;
    float *s1 = o->s1 ? o->s1 + lo : NULL, *s2 = o->s2 ? o->s2 + lo : NULL, *s3 = o->s3 ? o->s3 + lo : NULL;
    switch (o->kind) {
    case FG_OPT_SGD:
        return fg_sgd_update(p, o->momentum != 0.0f ? s1 : NULL, g, cnt, lr, o->momentum, o->nesterov,
                             o->weight_decay, o->decoupled, nt);
    case FG_OPT_ADAM:
        return fg_adam_update(p, s1, s2, g, cnt, lr, o->beta1, o->beta2, o->eps, step, o->weight_decay,
                              o->decoupled, nt);
    case FG_OPT_RMSPROP:
        return fg_rmsprop_update(p, s1, o->momentum != 0.0f ? s2 : NULL, o->centered ? s3 : NULL, g, cnt, lr,
                                 o->rho, o->momentum, o->eps, o->centered, o->weight_decay, o->decoupled, nt);
    case FG_OPT_ADAGRAD:
        return fg_adagrad_update(p, s1, g, cnt, lr, o->eps, o->weight_decay, o->decoupled, nt);
    default:
        return FG_ERR_ARG;
    }
}

/* One optimizer step: the whole buffer, or (frozen layers present) only the
 * trainable layers' ranges, as the Python path's segments do. */
static int net_update(fg_net *n, float lr, int64_t step, int nt) {
    if (n->all_trainable) return update_range(n, 0, n->n_params, lr, step, nt);
    for (int l = 0; l < n->n_layers; l++) {
        const fg_layer_desc *L = &n->layers[l];
        if (!has_params(L) || !L->trainable) continue;
        if (w_count(L)) TRY(update_range(n, L->w_off, w_count(L), lr, step, nt));
        if (b_count(L)) TRY(update_range(n, L->b_off, b_count(L), lr, step, nt));
    }
    return FG_OK;
}

static int check_batches(const fg_net *n, const float *x, const void *y, int64_t n_perm, int64_t start_batch,
                         int64_t n_batches, int64_t batch_size) {
    if (!x || !y || n_perm <= 0 || batch_size <= 0 || start_batch < 0 || n_batches < 0) return FG_ERR_ARG;
    int64_t total = (n_perm + batch_size - 1) / batch_size;
    if (start_batch + n_batches > total) return FG_ERR_ARG;
    return FG_OK;
}

/* ------------------------------------------------------------------ thread policy
 * Every kernel gives the same bits for any thread count, so a step may run on
 * whichever count is faster *now*. On a quiet machine that is nthreads; on a
 * shared, oversubscribed one (CI, two cores and several busy processes) every
 * OpenMP fork/join waits for a descheduled worker and one thread can be many
 * times faster. So at the start of every period the step times
 * FG_POLICY_PROBE batches on nthreads and FG_POLICY_PROBE on one thread
 * (fastest seconds per row of each) and runs the rest of the period on the
 * winner; the period doubles (64 .. 256 batches) while the winner stays the
 * same, and a batch three times slower than the probe said starts a new probe
 * at once (the load changed). Only wall-clock speed depends on this, never
 * the results. */

static double now_s(void) {
#if defined(_WIN32)
    return 0.0;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#endif
}

/* threads for the next batch; *probe: which probe slot it times (-1: none) */
static int pick_threads(fg_net *n, int nt, int *probe) {
    *probe = -1;
#if defined(_WIN32)
    return nt;
#else
    if (nt <= 1 || !n->adaptive) return nt;
    if (n->pol_period <= 0) n->pol_period = FG_POLICY_PERIOD;
    if (n->pol_batch >= n->pol_period) n->pol_batch = 0; /* a new probe */
    int64_t k = n->pol_batch;
    if (k == 0) n->pol_best[0] = n->pol_best[1] = INFINITY;
    if (k < 2 * FG_POLICY_PROBE) {
        *probe = k < FG_POLICY_PROBE ? 0 : 1;
        return *probe ? 1 : nt;
    }
    if (k == 2 * FG_POLICY_PROBE) {
        int single = n->pol_best[1] < n->pol_best[0];
        if (single == n->pol_single)
            n->pol_period = n->pol_period * 2 < FG_POLICY_PERIOD_MAX ? n->pol_period * 2 : FG_POLICY_PERIOD_MAX;
        else
            n->pol_period = FG_POLICY_PERIOD;
        n->pol_single = single;
        n->pol_chosen = n->pol_best[single];
    }
    return n->pol_single ? 1 : nt;
#endif
}

static void record_batch(fg_net *n, int probe, double seconds, int64_t rows) {
    double per = seconds / (double)rows;
    if (probe >= 0) {
        if (per < n->pol_best[probe]) n->pol_best[probe] = per;
    } else if (n->adaptive && n->pol_batch > 2 * FG_POLICY_PROBE && per > 3.0 * n->pol_chosen) {
        n->pol_batch = n->pol_period; /* much slower than measured: probe again next batch */
        return;
    }
    n->pol_batch++;
}

static int run_batches(fg_net *n, int train, int64_t *n_done, double *stats, const float *x, int64_t x_rows,
                       const void *y, int y_kind, const float *sw, const int64_t *perm, int64_t n_perm,
                       int64_t start_batch, int64_t n_batches, int64_t batch_size, const float *lr,
                       int64_t iteration0, uint64_t *drop_offsets, int nt) {
    if (n_done) *n_done = 0;
    if (!n->loss || (train && (!n->has_opt || !lr || !n->grads))) return FG_ERR_ARG;
    TRY(check_batches(n, x, y, n_perm, start_batch, n_batches, batch_size));
    if (n->cap_out) { /* rows this call will produce */
        int64_t first = start_batch * batch_size, last = (start_batch + n_batches) * batch_size;
        if ((last < n_perm ? last : n_perm) - first > n->cap_rows) return FG_ERR_ARG;
    }
    TRY(ensure_train_ws(n, batch_size < n_perm ? batch_size : n_perm));
    int64_t cap_pos = 0;
    unsigned fs = fg_fpstate_enter();
    int st = FG_OK;
    for (int64_t b = 0; b < n_batches; b++) {
        int64_t p0 = (start_batch + b) * batch_size;
        int64_t rows = n_perm - p0 < batch_size ? n_perm - p0 : batch_size;
        fg_batch bt;
        const float *logits;
        double loss = 0.0, acc = 0.0, wsum = 0.0;
        int probe = -1, nt_all = nt;
        nt = train ? pick_threads(n, nt_all, &probe) : nt_all;
        double t0 = now_s();
        st = gather(n, &bt, perm, p0, rows, x, x_rows, y, y_kind, sw, nt);
        if (st) break;
        st = net_forward(n, bt.x, rows, train, train ? drop_offsets : NULL, &logits, nt);
        if (st) break;
        st = loss_forward(n, &bt, logits, rows, train ? n->g0 : NULL, &loss, nt);
        if (st) break;
        loss += net_regularize(n, 0);
        if (train && !isfinite(loss)) { /* the Python path raises before backward: step not applied */
            st = FG_ERR_NONFINITE;
            if (stats) stats[b * FG_STAT_COUNT + FG_STAT_LOSS] = loss;
            break;
        }
        if (n->acc_kind != FG_ACC_NONE) accuracy(n, &bt, logits, rows, &acc, &wsum);
        if (n->cap_out) {
            memcpy(n->cap_out + cap_pos * n->out_last, logits, (size_t)(rows * n->out_last) * sizeof(float));
            cap_pos += rows;
        }
        if (train) {
            st = net_backward(n, rows, nt);
            if (st) break;
            net_regularize(n, 1);
            st = net_clip(n, nt);
            if (st) break;
            st = net_update(n, lr[b], iteration0 + b + 1, nt);
            if (st) break;
        }
        if (train) record_batch(n, probe, now_s() - t0, rows);
        nt = nt_all;
        if (stats) {
            double *r = stats + b * FG_STAT_COUNT;
            r[FG_STAT_LOSS] = loss;
            r[FG_STAT_ACC] = acc;
            r[FG_STAT_WEIGHT] = wsum;
            r[FG_STAT_ROWS] = (double)rows;
        }
        if (n_done) *n_done = b + 1;
    }
    fg_fpstate_leave(fs);
    return st;
}

int fg_net_train_chunk(fg_net *n, int64_t *n_done, double *stats, const float *x, int64_t x_rows,
                       const void *y, int y_kind, const float *sample_weight, const int64_t *perm,
                       int64_t n_perm, int64_t start_batch, int64_t n_batches, int64_t batch_size,
                       const float *lr, int64_t iteration0, uint64_t *drop_offsets, int nthreads) {
    if (!n) return FG_ERR_ARG;
    if (!acquire(n)) return FG_ERR_BUSY;
    int st = run_batches(n, 1, n_done, stats, x, x_rows, y, y_kind, sample_weight, perm, n_perm, start_batch,
                         n_batches, batch_size, lr, iteration0, drop_offsets, nthreads);
    release(n);
    return st;
}

int fg_net_evaluate(fg_net *n, int64_t *n_done, double *stats, const float *x, int64_t x_rows,
                    const void *y, int y_kind, const float *sample_weight, const int64_t *perm,
                    int64_t n_perm, int64_t start_batch, int64_t n_batches, int64_t batch_size,
                    int nthreads) {
    if (!n) return FG_ERR_ARG;
    if (!acquire(n)) return FG_ERR_BUSY;
    int st = run_batches(n, 0, n_done, stats, x, x_rows, y, y_kind, sample_weight, perm, n_perm, start_batch,
                         n_batches, batch_size, NULL, 0, NULL, nthreads);
    release(n);
    return st;
}

/* ------------------------------------------------------------------ inference */
/* Forward of `rows` (<= FG_PREDICT_ROWS) rows through the three buffers of ws. */
static int predict_rows(const fg_net *n, float *ws, float *out, const float *x, int64_t rows, int nt) {
    const int64_t stride = FG_PREDICT_ROWS * n->maxw;
    float *buf[3] = {ws, ws + stride, ws + 2 * stride};
    const float *src = x;
    int which = 0;
    /* the input is validated here, chunk by chunk while it is being read
     * anyway, instead of by a separate pass in Python (FG_ERR_NONFINITE: the
     * caller re-checks and names the first bad element) */
    int ok = 1;
    TRY(fg_all_finite(&ok, x, rows * n->in0, 1));
    if (!ok) return FG_ERR_NONFINITE;
    for (int l = 0; l < n->n_layers; l++) {
        const fg_layer_desc *L = &n->layers[l];
        int last = l == n->n_layers - 1;
        float *dst = (last && L->out_act == FG_ACT_NONE) ? out : buf[which];
        const float *res;
        TRY(layer_forward(n, L, src, rows, dst, buf[2], NULL, 0, 0, &res, nt));
        if (res == buf[which]) which ^= 1;
        src = res;
        if (L->out_act != FG_ACT_NONE) {
            float *d2 = last ? out : buf[which];
            if (L->out_act == FG_ACT_SOFTMAX)
                TRY(fg_softmax_forward(d2, src, rows, L->out, 0, nt));
            else
                TRY(fg_act_forward(d2, src, rows * L->out, L->out_act, nt));
            if (d2 == buf[which]) which ^= 1;
            src = d2;
        }
    }
    if (src != out) memcpy(out, src, (size_t)(rows * n->out_last) * sizeof(float));
    return FG_OK;
}

int fg_net_predict(fg_net *n, float *out, const float *x, int64_t rows, int nthreads) {
    if (!n || rows < 0 || (rows > 0 && (!out || !x))) return FG_ERR_ARG;
    if (rows == 0) return FG_OK;
    if (!acquire(n)) return FG_ERR_BUSY;
    const int64_t R = FG_PREDICT_ROWS;
    int64_t chunks = (rows + R - 1) / R;
    /* parallel over chunks once every thread gets two; otherwise chunk by
     * chunk with the kernels' own threads (same bits either way) */
    int nt = fg_threads_for(chunks, 2, nthreads);
    int st = ensure_predict_ws(n, nt);
    if (st) {
        release(n);
        return st;
    }
    const int64_t din = n->in0, dout = n->out_last;
    if (nt <= 1) {
        unsigned fs = fg_fpstate_enter();
        for (int64_t c = 0; c < chunks && st == FG_OK; c++) {
            int64_t r0 = c * R, rc = rows - r0 < R ? rows - r0 : R;
            st = predict_rows(n, n->pws, out + r0 * dout, x + r0 * din, rc, nthreads);
        }
        fg_fpstate_leave(fs);
    } else {
#if FG_HAVE_OPENMP
#pragma omp parallel num_threads(nt)
        {
            int t = omp_get_thread_num(), T = omp_get_num_threads();
            float *ws = n->pws + (size_t)t * 3 * R * (size_t)n->maxw;
            unsigned fs = fg_fpstate_enter();
            for (int64_t c = t; c < chunks; c += T) {
                int64_t r0 = c * R, rc = rows - r0 < R ? rows - r0 : R;
                int s = predict_rows(n, ws, out + r0 * dout, x + r0 * din, rc, 1);
                if (s != FG_OK) {
#pragma omp atomic write
                    st = s;
                }
            }
            fg_fpstate_leave(fs);
        }
#endif
    }
    release(n);
    return st;
}
