# _act.pxi — the activation codes, read from csrc/fg_common.h (never copied by
# hand): included by the modules that take an activation code (kernels, gemm).
# fastgrad.backend.numpy_ops.ACTIVATIONS mirrors ACTIVATIONS below for the
# NumPy backend (which must not import native code); a test compares them.

cdef extern from "fg_common.h" nogil:
    enum:
        FG_ACT_LINEAR
        FG_ACT_RELU
        FG_ACT_SIGMOID
        FG_ACT_TANH
        FG_ACT_GELU
        FG_ACT_GELU_TANH
        FG_ACT_LEAKY_RELU
        FG_ACT_ELU
        FG_ACT_SELU
        FG_ACT_SILU
        FG_ACT_SOFTPLUS
        FG_ACT_SOFTSIGN
        FG_ACT_HARD_SIGMOID
        FG_ACT_MISH
        FG_ACT_EXPONENTIAL
        FG_ACT_RELU6
        FG_ACT_HARD_SILU
        FG_ACT_RELU_GENERAL
        FG_ACT_COUNT
    ctypedef struct fg_act_param:
        float alpha
        float max_value
        float threshold
    int fg_act_valid(int act)
    int fg_act_backward_needs_input(int act)

#: canonical activation name -> FG_ACT_* code (element-wise codes of fg_common.h)
ACTIVATIONS = {
    "linear": FG_ACT_LINEAR,
    "relu": FG_ACT_RELU,
    "sigmoid": FG_ACT_SIGMOID,
    "tanh": FG_ACT_TANH,
    "gelu": FG_ACT_GELU,
    "gelu_tanh": FG_ACT_GELU_TANH,
    "leaky_relu": FG_ACT_LEAKY_RELU,
    "elu": FG_ACT_ELU,
    "selu": FG_ACT_SELU,
    "silu": FG_ACT_SILU,
    "softplus": FG_ACT_SOFTPLUS,
    "softsign": FG_ACT_SOFTSIGN,
    "hard_sigmoid": FG_ACT_HARD_SIGMOID,
    "mish": FG_ACT_MISH,
    "exponential": FG_ACT_EXPONENTIAL,
    "relu6": FG_ACT_RELU6,
    "hard_silu": FG_ACT_HARD_SILU,
    "relu_general": FG_ACT_RELU_GENERAL,
}
#: one past the last code
ACT_COUNT = FG_ACT_COUNT


def act_backward_needs_input(int act):
    """fg_act_backward_needs_input(act): True if the backward of code `act`
    reads the forward input x, False if it reads the output y."""
    if not fg_act_valid(act):
        raise ValueError(f"unknown activation code {act}; expected 0..{FG_ACT_COUNT - 1}")
    return fg_act_backward_needs_input(act) != 0
