/* fg_step.h — the compiled training step and inference path of a model graph.
 *
 * A model is described once as plain data: its inputs (per-sample shapes),
 * its nodes in topological order (one fg_node_desc each: layer kind, input
 * slots, per-sample output shape, activation, parameter offsets,
 * hyper-parameters), its output slots, one loss per output and the
 * optimizer. Slots name tensors: 0 .. n_inputs-1 are the model inputs, node i
 * writes slot n_inputs + i. fastgrad.engine.compiled builds the description
 * from the layers' lower(); fg_net_create() validates it (each kind checks
 * its own node), copies it, keeps pointers to the model's flat parameter /
 * gradient buffers and optimizer state (the caller keeps them alive and at
 * fixed addresses) and owns the workspaces, allocated on the first call for a
 * batch size and reused afterwards.
 *
 * fg_net_train_chunk() runs n_batches consecutive training steps in one call:
 * per batch, gather the rows perm[b*bs .. ] of every input / target (no copy
 * when they are consecutive), forward through the nodes, one fused loss +
 * gradient per output, backward in reverse node order (fan-out gradients
 * summed, shared layers' parameter gradients accumulated) straight into the
 * flat gradient buffer, regularizer gradients, frozen-layer zeroing,
 * clipping, and one optimizer kernel over the flat buffers.
 * fg_net_predict() runs the forward pass (with the output activations fused
 * losses had taken over) on fixed row chunks, in parallel over chunks.
 *
 * Numerics (the same as the Python executor's, so both give the same bits):
 * total loss = sum_k weight_k * loss_k (double, k order, from 0.0) + the
 * regularization penalty; each output's gradient is scaled by
 * float32(weight_k) when weight_k != 1; a slot's gradient is its first
 * contribution (a model output's loss gradient, else the consumer with the
 * highest node index) plus each later one in float32, consumers in
 * descending node index; a shared layer's parameter gradient is written by
 * its highest-index node and each other node's is added in float32.
 *
 * Every kernel used is bitwise reproducible for any thread count, and the
 * chunking here depends only on the sizes, so every call gives the same bits
 * for any nthreads. A net is not re-entrant: one call at a time (a second
 * concurrent call returns FG_ERR_BUSY instead of racing on the workspaces).
 */
#ifndef FG_STEP_H
#define FG_STEP_H

#include "fg_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FG_ERR_BUSY 7 /* the net is in use by another call */

/* activation codes beyond FG_ACT_* (fg_common.h): row-wise softmax, and "none" */
enum { FG_ACT_SOFTMAX = 100, FG_ACT_LOG_SOFTMAX = 101, FG_ACT_NONE = -1 };

/* Layer kinds: a kind's code is 1 + its row in the layer table
 * (csrc/step/layer_table.c), where each kind implemented by
 * csrc/step/layer_<kind>.c has one row; bindings look the codes up by name
 * (fg_layer_kind_name), so no number table exists anywhere else. */
/* Codes run 1 .. fg_layer_kind_count() - 1. */
int fg_layer_kind_count(void);

enum {
    FG_MERGE_ADD = 1,      /* x0 + x1 + ... (left to right) */
    FG_MERGE_SUBTRACT = 2, /* x0 - x1 (two inputs) */
    FG_MERGE_MULTIPLY = 3, /* x0 * x1 * ... */
    FG_MERGE_AVERAGE = 4,  /* (x0 + x1 + ...) / n */
    FG_MERGE_MAXIMUM = 5,  /* element-wise maximum (NaN propagates) */
    FG_MERGE_MINIMUM = 6,
    FG_MERGE_COUNT = 7
};

/* loss of one output (logits when a cross-entropy took over the output
 * activation). Reported per batch as Keras "sum_over_batch_size". */
enum {
    FG_LOSS_NONE = 0,                /* an output without a loss (no gradient from it) */
    FG_LOSS_SPARSE_SOFTMAX_XENT = 1, /* integer labels; loss_sum / rows */
    FG_LOSS_SOFTMAX_XENT = 2,        /* dense target rows; loss_sum / rows */
    FG_LOSS_SIGMOID_BCE = 3,         /* from logits; loss_sum / (rows * cols) */
    FG_LOSS_MSE = 4,                 /* loss_sum / (rows * cols) */
    /* csrc/lossopt's fg_pointwise_loss kinds (FG_PLOSS_* = code - 4): mean over the
     * per-sample values (loss_sum / (rows * cols)), or row-wise (KLD, categorical
     * hinge, cosine: loss_sum / rows; only for outputs of per-sample rank 1) */
    FG_LOSS_MAE = 5, FG_LOSS_MAPE = 6, FG_LOSS_MSLE = 7, FG_LOSS_HUBER = 8, FG_LOSS_LOGCOSH = 9,
    FG_LOSS_POISSON = 10, FG_LOSS_HINGE = 11, FG_LOSS_SQHINGE = 12, FG_LOSS_KLD = 13,
    FG_LOSS_CATHINGE = 14, FG_LOSS_COSINE = 15,
    FG_LOSS_COUNT = 16
};

enum { FG_OPT_SGD = 1, FG_OPT_ADAM = 2, FG_OPT_RMSPROP = 3, FG_OPT_ADAGRAD = 4,
       /* csrc/lossopt's fg_optx_update kinds */
       FG_OPT_NADAM = 5, FG_OPT_ADAMAX = 6, FG_OPT_ADADELTA = 7, FG_OPT_FTRL = 8, FG_OPT_LION = 9,
       FG_OPT_AMSGRAD = 10, FG_OPT_COUNT = 11 };

/* dtype of a dataset's targets */
enum { FG_TARGET_INT32 = 1, FG_TARGET_INT64 = 2, FG_TARGET_FLOAT32 = 3 };

#define FG_MAX_RANK 8

typedef struct fg_shape {
    int rank;                  /* 1 .. FG_MAX_RANK */
    int64_t dim[FG_MAX_RANK];  /* per-sample dims (no batch axis), each > 0 */
} fg_shape;

/* One node: a call of a layer. Built with fg_node_desc_init + fg_node_desc_set_*
 * (which name the fields, so bindings need not mirror the struct). */
typedef struct fg_node_desc {
    int kind;             /* a layer kind code (see fg_layer_kind_name) */
    int n_in, in_off;     /* input slots: fg_graph_desc.in_slots[in_off .. in_off + n_in) */
    fg_shape out;         /* per-sample output shape */
    int act;              /* activation run in training (FG_ACT_* or FG_ACT_SOFTMAX / _LOG_SOFTMAX) */
    int act_has_param;    /* activation kind: 1 = act_param applies (else the by-name defaults) */
    fg_act_param act_param; /* leaky_relu / relu_general slope or elu alpha, max_value, threshold */
    int out_act;          /* applied after `act` by predict only, on a model output: the activation
                             a fused loss took over (FG_ACT_SIGMOID or FG_ACT_SOFTMAX), else FG_ACT_NONE */
    int trainable;        /* 0: its parameters' gradients are zeroed after backward (frozen) */
    int op;               /* merge: FG_MERGE_* */
    int axis;             /* concat: the per-sample axis (0 .. rank-1) */
    int stream;           /* dropout: index of its stream position in drop_offsets; nodes of one
                             shared layer share it */
    int64_t w_off, b_off; /* offsets (floats) in the flat buffers of the first parameter array
                             (dense kernel in x out, norm gamma) and the second (bias / beta);
                             -1: absent */
    float l1_w, l2_w;     /* first array's regularizer: penalty l1 sum|w| + l2 sum w^2 */
    float l1_b, l2_b;     /* second array's regularizer */
    float rate;           /* dropout rate in [0, 1) */
    uint64_t seed;        /* dropout stream seed */
    float eps;            /* normalisation epsilon (> 0) */
    float bn_momentum, bn_rest;       /* batch norm: moving = moving * momentum + batch * rest */
    float *moving_mean, *moving_var;  /* batch norm state (not owned) */
    int64_t moving_len;               /* floats in each moving array */
    /* convolution / pooling window (conv2d, pool2d kinds; a 1-D layer has kh = sh = dh = 1,
       pt = 0): kernel or pool size, strides, dilation, top / left padding, groups */
    int64_t kh, kw, sh, sw, dh, dw, pt, pl;
    int groups;
    int multiplier;       /* depthwise / separable conv: depth multiplier (output channels per input
                             channel of the depthwise step) */
    int64_t w2_off;       /* offset of a second kernel (separable conv: the pointwise kernel); -1: absent */
    float l1_w2, l2_w2;   /* its regularizer */
} fg_node_desc;

/* Defaults: no inputs, no parameters (offsets w_off, b_off, w2_off -1), linear, out_act none, trainable, stream -1. */
void fg_node_desc_init(fg_node_desc *d);
/* Set a field by name: integer fields (kind, act, act_has_param, out_act, trainable, op, axis,
 * stream, w_off, b_off, seed), float fields (act_alpha, act_max_value, act_threshold, l1_w,
 * l2_w, l1_b, l2_b, rate, eps, bn_momentum, bn_rest) and arrays (moving_mean, moving_var, with
 * their length). FG_ERR_ARG: unknown name or wrong type. */
int fg_node_desc_set_int(fg_node_desc *d, const char *name, int64_t value);
int fg_node_desc_set_float(fg_node_desc *d, const char *name, double value);
int fg_node_desc_set_array(fg_node_desc *d, const char *name, float *data, int64_t len);
/* The type of field `name`: 1 integer, 2 float, 3 array, 0 no such field (bindings route
 * values by it). The inputs (n_in, in_off) are integer fields; the output shape has its own
 * setter. */
int fg_node_desc_field_type(const char *name);
int fg_node_desc_set_shape(fg_node_desc *d, int rank, const int64_t *dims);
/* s = (dims[0], ..., dims[rank-1]); FG_ERR_ARG unless 1 <= rank <= FG_MAX_RANK, dims > 0 */
int fg_shape_set(fg_shape *s, int rank, const int64_t *dims);
/* The kind's name ("dense", ...) for kind code k, NULL for none. */
const char *fg_layer_kind_name(int kind);

typedef struct fg_graph_desc {
    int n_inputs;
    const fg_shape *inputs;    /* per-sample shape of each model input */
    int n_nodes;
    const fg_node_desc *nodes; /* topological order: inputs are earlier slots */
    int n_in_slots;
    const int *in_slots;       /* the nodes' input slots, flat */
    int n_outputs;
    const int *outputs;        /* output slots (distinct node outputs) */
    int n_streams;             /* entries of drop_offsets */
} fg_graph_desc;

typedef struct fg_loss_desc {
    int kind;       /* FG_LOSS_* (FG_LOSS_NONE: the output has no loss; training needs one) */
    double weight;  /* loss weight (1.0: none) */
    float param;    /* the loss's hyper-parameter (Huber's delta), else unused */
} fg_loss_desc;

typedef struct fg_optim_desc {
    int kind;                 /* FG_OPT_* */
    int nesterov, centered, decoupled;
    float momentum, beta1, beta2, rho, eps, weight_decay;
    float lr_power, l1, l2, l2_shrinkage, beta; /* Ftrl */
    float clipnorm;           /* > 0: clip each parameter array's gradient to this L2 norm */
    float global_clipnorm;    /* > 0: clip the whole flat gradient to this L2 norm */
    float clipvalue;          /* > 0: clamp every gradient element to [-clipvalue, clipvalue] */
    int own_arrays_only;      /* 1: update only this net's parameter arrays, never the whole
                                 buffer (the model's weights live in a larger buffer that
                                 other models' arrays share: a sub-model) */
    /* state buffers (n_params floats each, or NULL):
     *   SGD: s1 velocity (NULL iff momentum == 0);  Adam: s1 m, s2 v;
     *   RMSprop: s1 ms, s2 mom (NULL iff momentum == 0), s3 mg (NULL iff !centered);
     *   Adagrad: s1 accumulator;  Nadam: s1 m, s2 v;  Adamax: s1 m, s2 u;
     *   Adadelta: s1 acc_grad, s2 acc_delta;  Ftrl: s1 accumulator, s2 linear;  Lion: s1 m;
     *   Adam with amsgrad: s1 m, s2 v, s3 v_hat */
    float *s1, *s2, *s3;
} fg_optim_desc;

typedef struct fg_net fg_net;

/* Copy the description and validate it (FG_ERR_ARG): slots, shapes, each node
 * against its kind's check (offsets within n_params, shapes, hyper-parameters).
 * *bad_node (may be NULL): the node that failed its check, -1 for anything else.
 * losses: n_outputs entries, or NULL for inference only; opt may be NULL then. */
int fg_net_create(fg_net **net, int *bad_node, const fg_graph_desc *g, float *params, float *grads,
                  int64_t n_params, const fg_loss_desc *losses, const fg_optim_desc *opt);
void fg_net_free(fg_net *net);
/* Point the net at new buffers (after the model reallocated them); NULL keeps the old. */
int fg_net_rebind(fg_net *net, float *params, float *grads, float *s1, float *s2, float *s3);

/* Accuracy computed alongside the loss (one metric, Keras semantics, on the
 * raw output of a single-output model: logits when its activation was fused). */
enum {
    FG_ACC_NONE = 0,
    FG_ACC_SPARSE = 1,      /* argmax(row) == label (first maximum) */
    FG_ACC_CATEGORICAL = 2, /* argmax(row) == argmax(target row) */
    FG_ACC_BINARY = 3       /* mean over the row of (out > threshold) == (target > 0.5) */
};
int fg_net_set_accuracy(fg_net *net, int kind, float threshold);
/* weighted != 0 (the default): the accuracy uses the sample weights (Keras
 * `weighted_metrics=`); 0: it ignores them (Keras `metrics=`). The loss always uses them. */
int fg_net_set_accuracy_weighted(fg_net *net, int weighted);

/* Output capture for metrics computed outside C: while set, every batch of a
 * train_chunk / evaluate call copies output k (rows x its per-sample size,
 * the logits when a fused loss took over the output activation) into out,
 * batch after batch from the start of the call; capacity_rows bounds it (a
 * call that would write more fails with FG_ERR_ARG before running). out NULL
 * switches it off for that output. */
int fg_net_capture_outputs(fg_net *net, int output, float *out, int64_t capacity_rows);

/* Per-batch statistics written by train_chunk / evaluate:
 * fg_net_stat_width(net) = FG_STAT_COUNT + n_outputs doubles per batch. */
enum {
    FG_STAT_LOSS = 0,   /* sum_k weight_k loss_k (each as its loss reports it) + the penalty */
    FG_STAT_ACC = 1,    /* sum_i w_i acc_i (w_i = sample weight, or 1 if none / unweighted) */
    FG_STAT_WEIGHT = 2, /* sum_i w_i */
    FG_STAT_ROWS = 3,   /* rows in the batch */
    FG_STAT_COUNT = 4   /* then loss_0 .. loss_{n_outputs-1} (unweighted) */
};
int fg_net_stat_width(const fg_net *net);

/* n_batches training steps. x[j]: (x_rows, input j's per-sample size) float32; y[k]:
 * (x_rows,) labels (int32 / int64, y_kind[k]) or (x_rows, output k's size) float32 targets
 * (NULL, and not read, for an output without a loss);
 * sample_weight[k]: (x_rows,) or NULL (sample_weight itself may be NULL: none anywhere).
 * Batch b of the chunk is the rows perm[(start_batch + b) * batch_size ...] (the last batch
 * of perm may be partial; perm has n_perm entries, each in [0, x_rows); perm NULL: rows in
 * order). lr[b]: learning rate of step b; iteration0: optimizer iterations done before this
 * chunk (Adam uses t = iteration0 + b + 1). drop_offsets (n_streams entries; may be NULL
 * when there is no dropout stream): each dropout stream's position, advanced by the
 * elements each training forward consumed. stats: n_batches x fg_net_stat_width doubles
 * (may be NULL). A batch whose total loss is NaN/inf is not applied: FG_ERR_NONFINITE.
 * On any error the batches before the failing one stay applied; *n_done says how many. */
int fg_net_train_chunk(fg_net *net, int64_t *n_done, double *stats, const float *const *x, int64_t x_rows,
                       const void *const *y, const int *y_kind, const float *const *sample_weight,
                       const int64_t *perm, int64_t n_perm, int64_t start_batch, int64_t n_batches,
                       int64_t batch_size, const float *lr, int64_t iteration0, uint64_t *drop_offsets,
                       int nthreads);

/* The training step split at the point between gradient and update (data-parallel
 * training reduces the gradients across processes in between):
 * fg_net_train_grad runs batch start_batch of perm as train_chunk would, up to and
 * including the backward into the flat gradients (frozen arrays zeroed), but adds no
 * regularizer gradients and neither clips nor updates; the loss gradients are scaled by
 * float32 grad_scale (> 0; 1: none) after the loss weights, so a rank holding rows r of
 * a global batch of B passes r / B and the ranks' gradients add up to the global one;
 * stats: one row (may be NULL), the losses unscaled;
 * FG_ERR_NONFINITE: the total loss was NaN/inf (stats row's loss set, no backward).
 * fg_net_apply_update then does the rest of that step on the (reduced) gradients:
 * regularizer gradients, clipping, the optimizer kernel with learning rate lr at
 * optimizer step `iteration` (>= 1, Adam's t). The two together give train_chunk's bits. */
int fg_net_train_grad(fg_net *net, double *stats, const float *const *x, int64_t x_rows, const void *const *y,
                      const int *y_kind, const float *const *sample_weight, const int64_t *perm, int64_t n_perm,
                      int64_t start_batch, int64_t batch_size, float grad_scale, uint64_t *drop_offsets,
                      int nthreads);
int fg_net_apply_update(fg_net *net, float lr, int64_t iteration, int nthreads);

/* The evaluate path: like train_chunk (same batches, same stats) but forward and loss
 * only (dropout off); parameters, gradients and optimizer state are not touched. */
int fg_net_evaluate(fg_net *net, int64_t *n_done, double *stats, const float *const *x, int64_t x_rows,
                    const void *const *y, const int *y_kind, const float *const *sample_weight,
                    const int64_t *perm, int64_t n_perm, int64_t start_batch, int64_t n_batches,
                    int64_t batch_size, int nthreads);

/* Forward only (dropout off), with the output activations fused losses took over.
 * out[k]: (rows, output k's size); x[j]: (rows, input j's size).
 * FG_ERR_NONFINITE when an input holds NaN or inf (outputs are then partly written). */
int fg_net_predict(fg_net *net, float *const *out, const float *const *x, int64_t rows, int nthreads);

/* Thread policy of train_chunk (default on; see policy.c): results never depend on the
 * thread count, so each period starts by timing a few batches on nthreads and on one
 * thread and runs the rest on the faster. Off: always nthreads. */
int fg_net_set_adaptive_threads(fg_net *net, int on);

/* Bytes of workspace currently held (tests, memory reports). */
int64_t fg_net_workspace_bytes(const fg_net *net);

#ifdef __cplusplus
}
#endif
#endif /* FG_STEP_H */
