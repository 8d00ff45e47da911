/* step_internal.h — what the files of csrc/step share: the layer-kind table
 * interface (each layer_<kind>.c fills one fg_layer_ops), the net's runtime
 * state, and small helpers. Not installed; bindings use fg_step.h only.
 *
 * A kind sees its node through fg_node_io: the descriptor, its inputs'
 * per-sample shapes and sizes, the flat parameters and its own workspace.
 * net.c owns every buffer and decides where outputs and input gradients go;
 * a kind only computes. */
#ifndef FG_STEP_INTERNAL_H
#define FG_STEP_INTERNAL_H

#include "fg_step.h"

#define FG_TRY(expr)                      \
    do {                                  \
        int st_ = (expr);                 \
        if (st_ != FG_OK) return st_;     \
    } while (0)

/* parameter arrays a node may have (dense: kernel, bias; norms: gamma, beta;
 * separable conv: depthwise kernel, pointwise kernel, bias) */
#define FG_MAX_PARAM_ARRAYS 3

typedef struct fg_param_array {
    int64_t off, count;   /* [off, off + count) in the flat buffers */
    float l1, l2;         /* regularizer */
} fg_param_array;

typedef struct fg_node_io {
    const fg_node_desc *d;
    int n_in;
    const fg_shape *const *in_shape; /* per input: its per-sample shape */
    const int64_t *in_size;          /* per input: per-sample floats */
    int64_t out_size;                /* per-sample floats of the output */
    int64_t rows;                    /* rows of this call */
    const float *params;             /* the flat parameter buffer */
    void *ws;                        /* the node's workspace (layout: the kind's) */
    int64_t ws_rows;                 /* rows the workspace was sized for */
    int nt;                          /* thread budget */
    const void *packed;              /* inference: the kind's infer_pack state (NULL: none) */
} fg_node_io;

typedef struct fg_layer_ops {
    const char *name; /* the kind's name, as fastgrad's lowering spells it */
    /* Validate the node against its inputs' shapes and the parameter count: FG_OK / FG_ERR_ARG.
     * net.c has already checked the slots, the output shape and that out_act is valid. */
    int (*check)(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t n_params);
    /* Its parameter arrays (at most FG_MAX_PARAM_ARRAYS) into p; returns how many (NULL: none). */
    int (*params)(const fg_node_desc *d, const fg_shape *const *in, int n_in, fg_param_array *p);
    /* Bytes of workspace for `rows` rows: kept from forward to backward in training, scratch
     * in inference (NULL: none). */
    int64_t (*workspace)(const fg_node_desc *d, const fg_shape *const *in, int n_in, int64_t rows);
    /* 1: the output is the first input's data (no buffer, no forward call) in this mode (NULL: never). */
    int (*passthrough)(const fg_node_desc *d, int training);
    /* 1: backward may write the first input's gradient over dy (dx[0] == dy) (NULL: never). */
    int (*dx_inplace)(const fg_node_desc *d);
    /* y (rows x out_size) from x[j] (rows x in_size[j]). training: keep in io->ws what the
     * backward needs, update state, advance *stream (dropout); else inference (the workspace
     * is scratch). */
    int (*forward)(const fg_node_io *io, float *y, const float *const *x, int training, uint64_t *stream);
    /* From dy (may be overwritten) and the forward's x / y: dx[j] (NULL: not wanted; dx[0] may
     * be dy, see dx_inplace; the others never overlap dy or each other), and the gradient of
     * parameter array k into gp[k] (NULL: frozen, not wanted). */
    int (*backward)(const fg_node_io *io, float *const *dx, float *dy, const float *const *x, const float *y,
                    float *const *gp);
    /* Inference only, optional: data derived from the parameters once per fg_net_predict call
     * that runs more than one chunk (Dense: its kernel packed for the GEMM), instead of once per
     * chunk. *state (NULL: nothing) is handed to forward as io->packed (training == 0) from any
     * thread, read-only, then released with infer_free. The outputs must be the same bits as
     * without it (FASTGRAD_INFER_PACK=0 turns the hook off). io->rows is the chunk size. */
    int (*infer_pack)(const fg_node_io *io, void **state);
    void (*infer_free)(void *state);
} fg_layer_ops;

/* The table (layer_table.c): the kind with code k, NULL for none. */
const fg_layer_ops *fg_layer_ops_of(int kind);

/* ---- activations the step runs: every element-wise FG_ACT_* code (fg_common.h,
 * with the parameters it takes by name) and the row softmax / log-softmax */
static inline int fg_step_is_softmax(int act) { return act == FG_ACT_SOFTMAX || act == FG_ACT_LOG_SOFTMAX; }
static inline int fg_step_act_valid(int act) { return fg_act_valid(act) || fg_step_is_softmax(act); }
/* fg_act_backward's `ref` is the forward input for these, the forward output for the others */
static inline int fg_step_act_needs_input(int act) {
    return !fg_step_is_softmax(act) && fg_act_backward_needs_input(act);
}

/* ---- shapes */
static inline int64_t fg_shape_size(const fg_shape *s) {
    int64_t n = 1;
    for (int i = 0; i < s->rank; i++) n *= s->dim[i];
    return n;
}
static inline int fg_shape_equal(const fg_shape *a, const fg_shape *b) {
    if (a->rank != b->rank) return 0;
    for (int i = 0; i < a->rank; i++)
        if (a->dim[i] != b->dim[i]) return 0;
    return 1;
}
/* An image-shaped per-sample shape: (h, w, c), or a sequence (l, c) read as h = 1 (the
 * 1-D layers run on the 2-D kinds at height 1); 0 for any other rank. */
static inline int fg_shape_hwc(const fg_shape *s, int64_t *h, int64_t *w, int64_t *c) {
    if (s->rank == 3) {
        *h = s->dim[0], *w = s->dim[1], *c = s->dim[2];
        return 1;
    }
    if (s->rank == 2) {
        *h = 1, *w = s->dim[0], *c = s->dim[1];
        return 1;
    }
    return 0;
}
/* [off, off + count) inside [0, n) */
static inline int fg_range_ok(int64_t off, int64_t count, int64_t n) {
    return off >= 0 && count >= 0 && off <= n && count <= n - off;
}

/* ---- memory: 64-byte aligned (posix_memalign), released with free() */
void *fg_step_alloc(size_t bytes);

/* ---- batch gathering (batch.c) */
typedef struct fg_batch {
    const float *const *x;  /* per input: the batch (rows, size) */
    const int64_t **lbl;    /* per output: sparse labels, or NULL */
    const float **tgt;      /* per output: dense targets (rows, size), or NULL */
    const float **sw;       /* per output: sample weights, or NULL */
} fg_batch;

/* ---- thread policy (policy.c) */
typedef struct fg_policy {
    int adaptive;
    int64_t batch;     /* training batches since the current probe started */
    int64_t period;    /* batches between probes */
    double best[2];    /* fastest seconds per row seen in this probe: [0] nthreads, [1] one thread */
    int single;        /* decision of the last probe */
    double chosen;     /* seconds per row of the chosen setting in the last probe */
} fg_policy;

void fg_policy_reset(fg_policy *p, int adaptive);
/* threads for the next training batch; *probe: which probe slot it times (-1: none) */
int fg_policy_pick(fg_policy *p, int nthreads, int *probe);
void fg_policy_record(fg_policy *p, int probe, double seconds, int64_t rows);
double fg_policy_now(void);

/* ---- the net */
typedef struct fg_node {
    fg_node_desc d;
    const fg_layer_ops *ops;
    int n_in;
    const int *in;               /* input slots */
    const fg_shape **in_shape;   /* per input */
    int64_t *in_size;            /* per input */
    int64_t out_size;
    int n_par;
    fg_param_array par[FG_MAX_PARAM_ARRAYS];
    int pwrite;      /* 1: first of its layer in backward, writes the parameter gradient;
                        0: computes it into scratch and adds it */
    int backward;    /* 1: its output slot gets a gradient (it or an ancestor has parameters) */
    /* training workspace */
    float *y;        /* cap x out_size (NULL: passes its input on in training) */
    void *ws;
    float **dx;      /* per input: cap x in_size (NULL: not needed, or written over dy) */
    /* inference */
    int pbuf;        /* predict: pool buffer holding its output (-1: none) */
    void *ipack;     /* predict: infer_pack state during one fg_net_predict call (NULL: none) */
    int pout;        /* predict: model output it writes directly (-1: none) */
} fg_node;

typedef struct fg_output {
    int slot;
    int64_t size;           /* per-sample floats */
    fg_loss_desc loss;
    float *g;               /* cap x size: the loss gradient */
    int64_t *lbl;           /* cap labels */
    float *tgt;             /* cap x size targets */
    float *sw;              /* cap sample weights */
    float *cap_out;         /* output capture: buffer, capacity in rows */
    int64_t cap_rows;
} fg_output;

struct fg_net {
    int n_inputs, n_nodes, n_outputs, n_slots, n_streams;
    fg_node *nodes;
    fg_output *outs;
    fg_shape *shapes;          /* per slot */
    int64_t *slot_size;        /* per slot: per-sample floats */
    int *need;                 /* per slot: its gradient is needed */
    int *last_use;             /* per slot: highest node index reading it (-1: none) */
    int *in_slots;             /* flat copy */
    const fg_shape **in_shapes;/* flat, parallel to in_slots */
    int64_t *in_sizes;         /* flat, parallel to in_slots */
    int64_t max_size;          /* widest node output */
    int64_t prows;             /* inference chunk rows (fg_predict_rows) */
    int max_in;                /* most inputs of a node */
    const float **xs;          /* max_in: a node's inputs, this call */
    float **dxs;               /* max_in: a node's input gradients, this call */
    double *per_out;           /* n_outputs: this batch's losses */
    float grad_scale;          /* fg_net_train_grad: factor on the loss gradients (train == 2 only) */
    float *params, *grads;     /* the model's flat buffers (not owned) */
    int64_t n_params;
    int training;              /* losses given */
    int has_opt;
    fg_optim_desc opt;
    /* unique parameter arrays, in node order (regularizers, clipping, partial updates) */
    int n_arrays;
    fg_param_array *arrays;
    int *array_trainable;
    int *array_dead;           /* no node that runs backward has it: its gradient is zero */
    int any_dead;
    int n_losses;              /* outputs with a loss */
    int all_trainable;         /* no frozen array: one optimizer call over the whole buffer */
    float *pscratch;           /* shared layers: parameter gradients of later nodes */
    int64_t pscratch_len;
    /* accuracy on output 0 (single-output models) */
    int acc_kind, acc_unweighted;
    float acc_thr;
    /* per step: slot values and gradients */
    const float **val;         /* per slot */
    float **grad;              /* per slot */
    /* training / evaluation workspace, for up to `cap` rows */
    int64_t cap;
    float **xg;                /* per input: cap x size, the gathered batch */
    const float **bx;          /* per input: this batch */
    const int64_t **blbl;      /* per output: this batch's labels / targets / weights */
    const float **btgt, **bsw;
    /* inference: per thread, pbufs pool buffers of FG_PREDICT_ROWS x max_size + scratch */
    int pbufs;
    int64_t pscratch_bytes;    /* largest inference workspace of a node */
    int pnt;
    float *pws;
    int64_t pws_stride;        /* floats per thread */
    const float **pval;        /* per thread: n_slots + max_in slot / input pointers */
    int busy;
    fg_policy policy;
};

/* rows per inference chunk: a 784-128-10 MLP chunk keeps its activations in
 * L2; chunks are the unit of parallel work in fg_net_predict */
#define FG_PREDICT_ROWS 256
/* Inference chunks hold FG_PREDICT_ROWS rows, fewer when the widest node
 * output would make a chunk's activations exceed FG_PREDICT_FLOATS floats
 * (conv nets: 28x28x6 per sample is 4.7k floats): a smaller chunk keeps a
 * layer's input and output in L2 between layers. Multiples of 16, >= 16. */
#define FG_PREDICT_FLOATS (1 << 17)

/* batch.c: rows p0 .. p0+rows-1 of the permutation (identity when perm is NULL) into
 * n->bx / blbl / btgt / bsw: copied into the workspace, or pointed at when consecutive. */
int fg_gather(fg_net *n, const int64_t *perm, int64_t p0, int64_t rows, const float *const *x,
              int64_t x_rows, const void *const *y, const int *y_kind, const float *const *sw, int nt);

/* loss.c */
int fg_losses_forward(fg_net *n, int64_t rows, int train, double *total, double *per_output, int nt);
void fg_accuracy(const fg_net *n, int64_t rows, double *acc, double *wsum);

/* update.c */
double fg_net_regularize(fg_net *n, int add_grad);
int fg_net_clip(fg_net *n, int nt);
int fg_net_update(fg_net *n, float lr, int64_t step, int nt);

#endif /* FG_STEP_INTERNAL_H */
