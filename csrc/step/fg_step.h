/* fg_step.h — the compiled training step and inference path for a Sequential.
 *
 * A network is described once as plain data (one fg_layer_desc per layer, the
 * loss kind, the optimizer) by fastgrad.engine.compiled from the layers'
 * describe(). fg_net_create() copies that description, keeps pointers to the
 * model's flat parameter / gradient buffers and optimizer state (the caller
 * keeps them alive and at fixed addresses), and owns the workspaces, which
 * are allocated on the first call for a batch size and reused afterwards.
 *
 * fg_net_train_chunk() runs n_batches consecutive training steps in one call:
 * per batch, gather the rows perm[b*bs .. ] from the caller's dataset (no
 * copy when they are consecutive), forward (fused dense epilogue), fused loss
 * + gradient, backward (GEMMs for dW and dX, activation backward, bias column
 * sums) straight into the flat gradient buffer, regularizer gradients,
 * frozen-layer zeroing, clipping, and one optimizer kernel over the flat
 * buffers. fg_net_predict() runs the forward pass (with the output activation
 * a fused loss had taken over) on fixed row chunks, in parallel over chunks.
 *
 * Every kernel used is bitwise reproducible for any thread count, and the
 * chunking here depends only on the sizes, so both calls give the same bits
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

/* activation codes beyond FG_ACT_* (same numbers as fastgrad.backend.ACTIVATIONS) */
#define FG_ACT_SOFTMAX 100
#define FG_ACT_LOG_SOFTMAX 101
#define FG_ACT_NONE (-1)

/* FG_LAYER_LAYERNORM: LayerNormalization over the whole sample (in == out):
 * w_off = gamma (scale), b_off = beta (center), each -1 when absent; the
 * l1/l2 fields are gamma's and beta's regularizers; eps.
 * FG_LAYER_BATCHNORM: BatchNormalization of 2-D input over the batch, features
 * = in == out; parameters as for layer norm, plus the moving statistics
 * (moving_mean / moving_var, `out` floats each, updated in training with
 * bn_momentum and bn_rest = float32(1 - momentum)). A frozen (non-trainable)
 * batch norm uses its moving statistics in training too, as in Keras. */
enum {
    FG_LAYER_DENSE = 1,
    FG_LAYER_ACTIVATION = 2,
    FG_LAYER_DROPOUT = 3,
    FG_LAYER_LAYERNORM = 4,
    FG_LAYER_BATCHNORM = 5
};

/* loss on the last layer's output (logits when a cross-entropy took over the
 * output activation). Reported per batch as Keras "sum_over_batch_size". */
enum {
    FG_LOSS_SPARSE_SOFTMAX_XENT = 1, /* integer labels; loss_sum / rows */
    FG_LOSS_SOFTMAX_XENT = 2,        /* dense target rows; loss_sum / rows */
    FG_LOSS_SIGMOID_BCE = 3,         /* from logits; loss_sum / (rows * cols) */
    FG_LOSS_MSE = 4                  /* loss_sum / (rows * cols) */
};

enum { FG_OPT_SGD = 1, FG_OPT_ADAM = 2, FG_OPT_RMSPROP = 3, FG_OPT_ADAGRAD = 4 };

/* dtype of the dataset's targets */
enum { FG_TARGET_INT32 = 1, FG_TARGET_INT64 = 2, FG_TARGET_FLOAT32 = 3 };

typedef struct fg_layer_desc {
    int kind;             /* FG_LAYER_* */
    int act;              /* activation run in training (FG_ACT_* or FG_ACT_SOFTMAX / _LOG_SOFTMAX) */
    int out_act;          /* applied after `act` by predict only: the activation a fused loss
                             took over (FG_ACT_SIGMOID or FG_ACT_SOFTMAX), else FG_ACT_NONE */
    int trainable;        /* 0: this layer's gradients are zeroed after backward (frozen) */
    int64_t in, out;      /* per-sample features in / out (equal for activation and dropout) */
    int64_t w_off, b_off; /* dense: offsets (floats) of kernel (in x out) and bias in the flat
                             buffers; b_off < 0: no bias */
    float l1_w, l2_w;     /* kernel regularizer: penalty l1 sum|w| + l2 sum w^2 */
    float l1_b, l2_b;     /* bias regularizer */
    float rate;           /* dropout rate in [0, 1) */
    uint64_t seed;        /* dropout stream seed (the position is passed per call) */
    float eps;            /* normalisation epsilon (> 0) */
    float bn_momentum, bn_rest;        /* batch norm: moving = moving * momentum + batch * rest */
    float *moving_mean, *moving_var;   /* batch norm state (not owned) */
} fg_layer_desc;

typedef struct fg_optim_desc {
    int kind;                 /* FG_OPT_* */
    int nesterov, centered, decoupled;
    float momentum, beta1, beta2, rho, eps, weight_decay;
    float clipnorm;           /* > 0: clip each parameter array's gradient to this L2 norm */
    float global_clipnorm;    /* > 0: clip the whole flat gradient to this L2 norm */
    float clipvalue;          /* > 0: clamp every gradient element to [-clipvalue, clipvalue] */
    /* state buffers (n_params floats each, or NULL):
     *   SGD: s1 velocity (NULL iff momentum == 0);  Adam: s1 m, s2 v;
     *   RMSprop: s1 ms, s2 mom (NULL iff momentum == 0), s3 mg (NULL iff !centered);
     *   Adagrad: s1 accumulator */
    float *s1, *s2, *s3;
} fg_optim_desc;

typedef struct fg_net fg_net;

/* Copy the description; validate sizes and offsets against n_params (FG_ERR_ARG).
 * in_features: per-sample input width (product of the input shape).
 * loss: FG_LOSS_* (0: inference only); opt may be NULL (inference only). */
int fg_net_create(fg_net **net, const fg_layer_desc *layers, int n_layers, int64_t in_features,
                  float *params, float *grads, int64_t n_params, int loss, const fg_optim_desc *opt);
void fg_net_free(fg_net *net);
/* Point the net at new buffers (after the model reallocated them); NULL keeps the old. */
int fg_net_rebind(fg_net *net, float *params, float *grads, float *s1, float *s2, float *s3);

/* Accuracy computed alongside the loss (one metric, Keras semantics, on the
 * raw last-layer output: logits when the output activation was fused). */
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
 * train_chunk / evaluate call copies its last-layer output (rows x
 * out_features, the logits when a fused loss took over the output
 * activation) into out, batch after batch from the start of the call;
 * capacity_rows bounds it (a call that would write more fails with
 * FG_ERR_ARG before running). out NULL switches it off. */
int fg_net_capture_outputs(fg_net *net, float *out, int64_t capacity_rows);

/* Per-batch statistics written by train_chunk / evaluate: 4 doubles per batch. */
enum {
    FG_STAT_LOSS = 0,   /* mean loss as the loss reports it, plus the regularization penalty */
    FG_STAT_ACC = 1,    /* sum_i w_i acc_i (w_i = sample weight, or 1 if none / unweighted) */
    FG_STAT_WEIGHT = 2, /* sum_i w_i */
    FG_STAT_ROWS = 3,   /* rows in the batch */
    FG_STAT_COUNT = 4
};

/* n_batches training steps. x: (x_rows, in_features) float32; y: (x_rows,) labels (int32 /
 * int64) or (x_rows, out) float32 targets; sample_weight: (x_rows,) or NULL. Batch b of the
 * chunk is the rows perm[(start_batch + b) * batch_size ...] (the last batch of perm may be
 * partial; perm has n_perm entries, each in [0, x_rows); perm NULL: rows in order).
 * lr[b]: learning rate of step b; iteration0: optimizer iterations done before this chunk
 * (Adam uses t = iteration0 + b + 1). drop_offsets (n_layers entries, may be NULL when there
 * is no dropout): each dropout layer's stream position, advanced by rows * features per
 * training batch (in/out). stats: n_batches x FG_STAT_COUNT doubles (may be NULL).
 * A batch whose loss (plus penalty) is NaN/inf is not applied: FG_ERR_NONFINITE.
 * On any error the batches before the failing one stay applied; *n_done says how many. */
int fg_net_train_chunk(fg_net *net, int64_t *n_done, double *stats, const float *x, int64_t x_rows,
                       const void *y, int y_kind, const float *sample_weight, const int64_t *perm,
                       int64_t n_perm, int64_t start_batch, int64_t n_batches, int64_t batch_size,
                       const float *lr, int64_t iteration0, uint64_t *drop_offsets, int nthreads);

/* The evaluate path: like train_chunk (same batches, same stats) but forward and loss
 * only (dropout off); parameters, gradients and optimizer state are not touched. */
int fg_net_evaluate(fg_net *net, int64_t *n_done, double *stats, const float *x, int64_t x_rows,
                    const void *y, int y_kind, const float *sample_weight, const int64_t *perm,
                    int64_t n_perm, int64_t start_batch, int64_t n_batches, int64_t batch_size,
                    int nthreads);

/* Forward only (dropout off), with the output activation a fused loss took over.
 * out: (rows, out_features of the last layer); x: (rows, in_features).
 * FG_ERR_NONFINITE when x holds NaN or inf (out is then partly written). */
int fg_net_predict(fg_net *net, float *out, const float *x, int64_t rows, int nthreads);

/* Thread policy of train_chunk (default on): results never depend on the thread count, so
 * each period (64 batches, doubling to 1024 while the choice holds) starts by timing 2
 * batches on nthreads and 2 on one thread and runs the rest on the faster (a shared,
 * oversubscribed machine makes every fork/join slow). Off: always nthreads. */
int fg_net_set_adaptive_threads(fg_net *net, int on);

/* Bytes of workspace currently held (tests, memory reports). */
int64_t fg_net_workspace_bytes(const fg_net *net);

#ifdef __cplusplus
}
#endif
#endif /* FG_STEP_H */
