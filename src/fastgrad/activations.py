"""Activation functions by name (Keras 3 names, defaults and formulas).

Layers carry activations as canonical names (strings), because the same name
is handed to the fused dense kernel and written into a layer's `describe()`.
`get(identifier)` maps what users write (None, "relu", "ReLU", "swish", a
function of this module) to that name; the functions here evaluate an
activation eagerly through the active backend, for users and tests.

Canonical names: linear, relu, sigmoid, tanh, gelu, gelu_tanh (= gelu with
approximate=True), leaky_relu, elu, selu, silu (alias swish), softplus,
softsign, hard_sigmoid, mish, exponential, relu6, hard_silu (alias
hard_swish), softmax, log_softmax. By name, the parametrised ones take Keras's
defaults: leaky_relu negative_slope=0.2, elu alpha=1.0. Their formulas are
listed with the FG_ACT_* codes in csrc/fg_common.h.

`backward_needs_input(name)` says whether an activation's backward reads the
forward input x (else the output y): the rule of
fg_act_backward_needs_input() in csrc/fg_common.h, mirrored by
fastgrad.backend.numpy_ops.BACKWARD_NEEDS_INPUT (a test holds them equal).
"""
from __future__ import annotations

import numpy as np

from .backend.numpy_ops import BACKWARD_NEEDS_INPUT as _NEEDS_INPUT

__all__ = ["get", "serialize", "deserialize", "backward_needs_input", "ACTIVATION_NAMES", "linear", "relu",
           "sigmoid", "tanh", "gelu", "gelu_tanh", "leaky_relu", "elu", "selu", "silu", "swish", "softplus",
           "softsign", "hard_sigmoid", "mish", "exponential", "relu6", "hard_silu", "hard_swish", "softmax",
           "log_softmax"]

#: canonical names understood by every backend (fastgrad.backend.ACTIVATIONS)
ACTIVATION_NAMES = ("linear", "relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "leaky_relu", "elu", "selu",
                    "silu", "softplus", "softsign", "hard_sigmoid", "mish", "exponential", "relu6",
                    "hard_silu", "softmax", "log_softmax")
_ALIASES = {"none": "linear", "identity": "linear", "gelu_approximate": "gelu_tanh",
            "approximate_gelu": "gelu_tanh", "logsoftmax": "log_softmax", "swish": "silu",
            "hard_swish": "hard_silu", "leakyrelu": "leaky_relu", "hardsigmoid": "hard_sigmoid",
            "hardswish": "hard_silu"}


def _apply(name, x, **params):
    from . import _config
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    return _config.get_ops().activation(name, np.ascontiguousarray(x), **params)


def linear(x):
    return _apply("linear", x)


def relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """Keras relu: max(x, 0) by default; with arguments
    a = x > threshold ? x : 0, clipped to [0, max_value] when given, minus
    negative_slope * max(threshold - x, 0)."""
    if negative_slope is None or not np.isfinite(negative_slope):
        raise ValueError(f"relu: negative_slope must be a finite number, got {negative_slope!r}")
    if threshold is None or not np.isfinite(threshold):
        raise ValueError(f"relu: threshold must be a finite number, got {threshold!r}")
    if max_value is not None and not max_value >= 0:
        raise ValueError(f"relu: max_value must be None or >= 0, got {max_value!r}")
    name, params = relu_variant(negative_slope, max_value, threshold)
    return _apply(name, x, **params)


def relu_variant(negative_slope=0.0, max_value=None, threshold=0.0):
    """(canonical op name, its parameters) computing Keras's
    relu(x, negative_slope, max_value, threshold): relu, relu6, leaky_relu,
    or the general form ("relu_general", whose backward reads the input x)."""
    plain_max = max_value is None or max_value == float("inf")
    if threshold == 0 and negative_slope == 0 and plain_max:
        return "relu", {}
    if threshold == 0 and negative_slope == 0 and max_value == 6:
        return "relu6", {}
    if threshold == 0 and plain_max:
        return "leaky_relu", {"negative_slope": float(negative_slope)}
    return "relu_general", {"negative_slope": float(negative_slope),
                            "max_value": None if plain_max else float(max_value),
                            "threshold": float(threshold)}


def sigmoid(x):
    return _apply("sigmoid", x)


def tanh(x):
    return _apply("tanh", x)


def gelu(x, approximate=False):
    return _apply("gelu_tanh" if approximate else "gelu", x)


def gelu_tanh(x):
    return _apply("gelu_tanh", x)


def leaky_relu(x, negative_slope=0.2):
    """x >= 0 ? x : negative_slope * x."""
    return _apply("leaky_relu", x, negative_slope=negative_slope)


def elu(x, alpha=1.0):
    """x > 0 ? x : alpha * (exp(x) - 1)."""
    return _apply("elu", x, alpha=alpha)


def selu(x):
    """scale * elu(x, alpha), alpha = 1.67326324..., scale = 1.05070098..."""
    return _apply("selu", x)


def silu(x):
    """x * sigmoid(x)."""
    return _apply("silu", x)


def swish(x):
    """Alias of silu."""
    return _apply("silu", x)


def softplus(x):
    """log(1 + exp(x))."""
    return _apply("softplus", x)


def softsign(x):
    """x / (1 + |x|)."""
    return _apply("softsign", x)


def hard_sigmoid(x):
    """relu6(x + 3) / 6 (Keras 3)."""
    return _apply("hard_sigmoid", x)


def mish(x):
    """x * tanh(softplus(x))."""
    return _apply("mish", x)


def exponential(x):
    """exp(x)."""
    return _apply("exponential", x)


def relu6(x):
    """min(max(x, 0), 6)."""
    return _apply("relu6", x)


def hard_silu(x):
    """x * hard_sigmoid(x)."""
    return _apply("hard_silu", x)


def hard_swish(x):
    """Alias of hard_silu."""
    return _apply("hard_silu", x)


def softmax(x):
    return _apply("softmax", x)


def log_softmax(x):
    return _apply("log_softmax", x)


_FUNCS = {f.__name__: f for f in (linear, relu, sigmoid, tanh, gelu, gelu_tanh, leaky_relu, elu, selu, silu,
                                   softplus, softsign, hard_sigmoid, mish, exponential, relu6, hard_silu,
                                   softmax, log_softmax)}
_FUNCS["swish"] = swish
_FUNCS["hard_swish"] = hard_swish


def get(identifier, where: str = "activation") -> str:
    """Canonical activation name for None, a name or alias, or a function of this module."""
    if identifier is None:
        return "linear"
    if callable(identifier) and getattr(identifier, "__name__", None) in _FUNCS \
            and _FUNCS[identifier.__name__] is identifier:
        return _ALIASES.get(identifier.__name__, identifier.__name__)
    if isinstance(identifier, str):
        key = identifier.strip().lower()
        key = _ALIASES.get(key, key)
        if key in ACTIVATION_NAMES:
            return key
        raise ValueError(f"{where}: unknown activation {identifier!r}; expected one of "
                         f"{', '.join(ACTIVATION_NAMES)} (or an alias: "
                         f"{', '.join(sorted(a for a in _ALIASES if a != _ALIASES[a]))}; None for linear)")
    raise TypeError(f"{where}: activation must be a name (str), None, or a function of "
                    f"fastgrad.activations; got {identifier!r}")


def serialize(name) -> str:
    """The canonical name (Keras config value) of an activation name, alias or function."""
    return get(name, "serialize")


def deserialize(name: str) -> str:
    return get(name)


def backward_needs_input(name) -> bool:
    """True if the backward of activation `name` (a name, alias or function;
    also the ops-level "relu_general") reads the forward input x, False if it
    reads the output y — fg_act_backward_needs_input() of csrc/fg_common.h.
    A layer keeps the pre-activation exactly when this is True."""
    if name == "relu_general":
        return True
    return get(name, "backward_needs_input") in _NEEDS_INPUT
