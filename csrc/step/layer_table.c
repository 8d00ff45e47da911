/* layer_table.c — the layer kinds the plan can run, indexed by FG_LAYER_*.
 * Adding a kind: a code in fg_step.h, its layer_<kind>.c, one row here. */
#include "step_internal.h"

static const fg_layer_ops *const table[FG_LAYER_COUNT] = {
    [FG_LAYER_DENSE] = &fg_layer_dense_ops,
    [FG_LAYER_ACTIVATION] = &fg_layer_activation_ops,
    [FG_LAYER_DROPOUT] = &fg_layer_dropout_ops,
    [FG_LAYER_LAYERNORM] = &fg_layer_layernorm_ops,
    [FG_LAYER_BATCHNORM] = &fg_layer_batchnorm_ops,
    [FG_LAYER_MERGE] = &fg_layer_merge_ops,
    [FG_LAYER_CONCAT] = &fg_layer_concat_ops,
    [FG_LAYER_RESHAPE] = &fg_layer_reshape_ops,
};

const fg_layer_ops *fg_layer_ops_of(int kind) {
    return kind > 0 && kind < FG_LAYER_COUNT ? table[kind] : NULL;
}

const char *fg_layer_kind_name(int kind) {
    const fg_layer_ops *ops = fg_layer_ops_of(kind);
    return ops ? ops->name : NULL;
}
