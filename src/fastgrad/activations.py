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

from typing import Any, Callable

import numpy as np
from numpy.typing import ArrayLike

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


def _apply(name: str, x: ArrayLike, **params: Any) -> np.ndarray:
    from . import _config
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    return _config.get_ops().activation(name, np.ascontiguousarray(x), **params)


def linear(x: ArrayLike) -> np.ndarray:
    """Identity activation: return `x` unchanged (as an array).

    Parameters
    ----------
    x : array_like
        Input values; float32 and float64 keep their dtype, anything else is
        converted to float32.

    Returns
    -------
    numpy.ndarray
        The input values, same shape as `x`.
    """
    return _apply("linear", x)


def relu(x: ArrayLike, negative_slope: float = 0.0, max_value: float | None = None,
         threshold: float = 0.0) -> np.ndarray:
    """Rectified linear unit with Keras's optional slope, cap and threshold.

    ``max(x, 0)`` by default. With arguments: ``x`` where ``x > threshold``
    else 0, clipped to ``[0, max_value]`` when `max_value` is given, minus
    ``negative_slope * max(threshold - x, 0)``.

    Parameters
    ----------
    x : array_like
        Input values; float32 and float64 keep their dtype, anything else is
        converted to float32.
    negative_slope : float, default 0.0
        Slope below the threshold.
    max_value : float or None, default None
        Upper cap of the output (None: no cap).
    threshold : float, default 0.0
        Inputs at or below it are set to 0 (before the slope term).

    Returns
    -------
    numpy.ndarray
        The activation, same shape as `x`.

    Raises
    ------
    ValueError
        If `negative_slope` or `threshold` is not finite, or `max_value` is negative.

    Examples
    --------
    >>> import fastgrad as fg
    >>> fg.activations.relu([-1.0, 0.5, 8.0], max_value=6.0).tolist()
    [0.0, 0.5, 6.0]
    """
    if negative_slope is None or not np.isfinite(negative_slope):
        raise ValueError(f"relu: negative_slope must be a finite number, got {negative_slope!r}")
    if threshold is None or not np.isfinite(threshold):
        raise ValueError(f"relu: threshold must be a finite number, got {threshold!r}")
    if max_value is not None and not max_value >= 0:
        raise ValueError(f"relu: max_value must be None or >= 0, got {max_value!r}")
    name, params = relu_variant(negative_slope, max_value, threshold)
    return _apply(name, x, **params)


def relu_variant(negative_slope: float = 0.0, max_value: float | None = None,
                 threshold: float = 0.0) -> tuple[str, dict]:
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
                            "max_value": None if plain_max or max_value is None else float(max_value),
                            "threshold": float(threshold)}


def sigmoid(x: ArrayLike) -> np.ndarray:
    """Logistic sigmoid, ``1 / (1 + exp(-x))``.

    Parameters
    ----------
    x : array_like
        Input values; float32 and float64 keep their dtype, anything else is
        converted to float32.

    Returns
    -------
    numpy.ndarray
        The activation, same shape as `x`.
    """
    return _apply("sigmoid", x)


def tanh(x: ArrayLike) -> np.ndarray:
    """Hyperbolic tangent.

    Parameters
    ----------
    x : array_like
        Input values; float32 and float64 keep their dtype, anything else is
        converted to float32.

    Returns
    -------
    numpy.ndarray
        The activation, same shape as `x`.
    """
    return _apply("tanh", x)


def gelu(x: ArrayLike, approximate: bool = False) -> np.ndarray:
    """Gaussian error linear unit, ``x * Phi(x)`` with Phi the normal CDF.

    Parameters
    ----------
    x : array_like
        Input values; float32 and float64 keep their dtype, anything else is
        converted to float32.
    approximate : bool, default False
        Use the tanh approximation (:func:`gelu_tanh`) instead of the exact erf form.

    Returns
    -------
    numpy.ndarray
        The activation, same shape as `x`.
    """
    return _apply("gelu_tanh" if approximate else "gelu", x)


def gelu_tanh(x: ArrayLike) -> np.ndarray:
    """GELU with the tanh approximation (``gelu(x, approximate=True)``).

    Parameters
    ----------
    x : array_like
        Input values; float32 and float64 keep their dtype, anything else is
        converted to float32.

    Returns
    -------
    numpy.ndarray
        The activation, same shape as `x`.
    """
    return _apply("gelu_tanh", x)


def leaky_relu(x: ArrayLike, negative_slope: float = 0.2) -> np.ndarray:
    """Leaky ReLU: ``x`` where ``x >= 0``, else ``negative_slope * x``.

    Parameters
    ----------
    x : array_like
        Input values; float32 and float64 keep their dtype, anything else is
        converted to float32.
    negative_slope : float, default 0.2
        Slope for negative inputs (Keras 3's default).

    Returns
    -------
    numpy.ndarray
        The activation, same shape as `x`.
    """
    return _apply("leaky_relu", x, negative_slope=negative_slope)


def elu(x: ArrayLike, alpha: float = 1.0) -> np.ndarray:
    """Exponential linear unit: ``x`` where ``x > 0``, else ``alpha * (exp(x) - 1)``.

    Parameters
    ----------
    x : array_like
        Input values; float32 and float64 keep their dtype, anything else is
        converted to float32.
    alpha : float, default 1.0
        Scale of the negative part.

    Returns
    -------
    numpy.ndarray
        The activation, same shape as `x`.
    """
    return _apply("elu", x, alpha=alpha)


def selu(x: ArrayLike) -> np.ndarray:
    """Scaled ELU: ``scale * elu(x, alpha)`` with Keras's alpha = 1.67326324 and scale = 1.05070098.

    Parameters
    ----------
    x : array_like
        Input values; float32 and float64 keep their dtype, anything else is
        converted to float32.

    Returns
    -------
    numpy.ndarray
        The activation, same shape as `x`.
    """
    return _apply("selu", x)


def silu(x: ArrayLike) -> np.ndarray:
    """SiLU (swish), ``x * sigmoid(x)``.

    Parameters
    ----------
    x : array_like
        Input values; float32 and float64 keep their dtype, anything else is
        converted to float32.

    Returns
    -------
    numpy.ndarray
        The activation, same shape as `x`.
    """
    return _apply("silu", x)


def swish(x: ArrayLike) -> np.ndarray:
    """Swish, an alias of :func:`silu`: ``x * sigmoid(x)``.

    Parameters
    ----------
    x : array_like
        Input values; float32 and float64 keep their dtype, anything else is
        converted to float32.

    Returns
    -------
    numpy.ndarray
        The activation, same shape as `x`.
    """
    return _apply("silu", x)


def softplus(x: ArrayLike) -> np.ndarray:
    """Softplus, ``log(1 + exp(x))``, computed without overflow.

    Parameters
    ----------
    x : array_like
        Input values; float32 and float64 keep their dtype, anything else is
        converted to float32.

    Returns
    -------
    numpy.ndarray
        The activation, same shape as `x`.
    """
    return _apply("softplus", x)


def softsign(x: ArrayLike) -> np.ndarray:
    """Softsign, ``x / (1 + abs(x))``.

    Parameters
    ----------
    x : array_like
        Input values; float32 and float64 keep their dtype, anything else is
        converted to float32.

    Returns
    -------
    numpy.ndarray
        The activation, same shape as `x`.
    """
    return _apply("softsign", x)


def hard_sigmoid(x: ArrayLike) -> np.ndarray:
    """Hard sigmoid as in Keras 3, ``relu6(x + 3) / 6``.

    Parameters
    ----------
    x : array_like
        Input values; float32 and float64 keep their dtype, anything else is
        converted to float32.

    Returns
    -------
    numpy.ndarray
        The activation, same shape as `x`.
    """
    return _apply("hard_sigmoid", x)


def mish(x: ArrayLike) -> np.ndarray:
    """Mish, ``x * tanh(softplus(x))``.

    Parameters
    ----------
    x : array_like
        Input values; float32 and float64 keep their dtype, anything else is
        converted to float32.

    Returns
    -------
    numpy.ndarray
        The activation, same shape as `x`.
    """
    return _apply("mish", x)


def exponential(x: ArrayLike) -> np.ndarray:
    """Exponential activation, ``exp(x)``.

    Parameters
    ----------
    x : array_like
        Input values; float32 and float64 keep their dtype, anything else is
        converted to float32.

    Returns
    -------
    numpy.ndarray
        The activation, same shape as `x`.
    """
    return _apply("exponential", x)


def relu6(x: ArrayLike) -> np.ndarray:
    """ReLU capped at 6, ``min(max(x, 0), 6)``.

    Parameters
    ----------
    x : array_like
        Input values; float32 and float64 keep their dtype, anything else is
        converted to float32.

    Returns
    -------
    numpy.ndarray
        The activation, same shape as `x`.
    """
    return _apply("relu6", x)


def hard_silu(x: ArrayLike) -> np.ndarray:
    """Hard SiLU (hard swish), ``x * hard_sigmoid(x)``.

    Parameters
    ----------
    x : array_like
        Input values; float32 and float64 keep their dtype, anything else is
        converted to float32.

    Returns
    -------
    numpy.ndarray
        The activation, same shape as `x`.
    """
    return _apply("hard_silu", x)


def hard_swish(x: ArrayLike) -> np.ndarray:
    """Hard swish, an alias of :func:`hard_silu`.

    Parameters
    ----------
    x : array_like
        Input values; float32 and float64 keep their dtype, anything else is
        converted to float32.

    Returns
    -------
    numpy.ndarray
        The activation, same shape as `x`.
    """
    return _apply("hard_silu", x)


def softmax(x: ArrayLike) -> np.ndarray:
    """Softmax over the last axis (max-subtracted, so it does not overflow).

    Parameters
    ----------
    x : array_like
        Input values; float32 and float64 keep their dtype, anything else is
        converted to float32.

    Returns
    -------
    numpy.ndarray
        Probabilities that sum to 1 along the last axis, same shape as `x`.
    """
    return _apply("softmax", x)


def log_softmax(x: ArrayLike) -> np.ndarray:
    """Log of the softmax over the last axis, computed stably.

    Parameters
    ----------
    x : array_like
        Input values; float32 and float64 keep their dtype, anything else is
        converted to float32.

    Returns
    -------
    numpy.ndarray
        The log-probabilities, same shape as `x`.
    """
    return _apply("log_softmax", x)


_FUNCS = {f.__name__: f for f in (linear, relu, sigmoid, tanh, gelu, gelu_tanh, leaky_relu, elu, selu, silu,
                                   softplus, softsign, hard_sigmoid, mish, exponential, relu6, hard_silu,
                                   softmax, log_softmax)}
_FUNCS["swish"] = swish
_FUNCS["hard_swish"] = hard_swish


def get(identifier: str | Callable | None, where: str = "activation") -> str:
    """Canonical activation name of what a user passes as ``activation=``.

    Parameters
    ----------
    identifier : str, callable or None
        None (linear), a name or alias in any case ("relu", "ReLU", "swish"),
        or one of this module's functions.
    where : str, default "activation"
        What to name in an error message (the layer or argument).

    Returns
    -------
    str
        One of :data:`ACTIVATION_NAMES`.

    Raises
    ------
    ValueError
        If the name is unknown.
    TypeError
        If `identifier` is neither a string, None nor a function of this module.

    Examples
    --------
    >>> import fastgrad as fg
    >>> fg.activations.get("Swish"), fg.activations.get(None)
    ('silu', 'linear')
    """
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


def serialize(name: str | Callable | None) -> str:
    """The canonical name (the Keras config value) of an activation.

    Parameters
    ----------
    name : str, callable or None
        An activation name, alias or function of this module.

    Returns
    -------
    str
        The canonical name.
    """
    return get(name, "serialize")


def deserialize(name: str) -> str:
    """The canonical activation name of a config value (the inverse of :func:`serialize`).

    Parameters
    ----------
    name : str
        An activation name or alias, as found in a model config.

    Returns
    -------
    str
        The canonical name.
    """
    return get(name)


def backward_needs_input(name: str | Callable) -> bool:
    """Whether an activation's backward reads the forward input rather than the output.

    The rule of ``fg_act_backward_needs_input()`` in csrc/fg_common.h. A layer
    keeps the pre-activation exactly when this is True.

    Parameters
    ----------
    name : str or callable
        A name, alias or function of this module; also the ops-level
        "relu_general".

    Returns
    -------
    bool
        True if the backward reads the input x, False if it reads the output y.
    """
    if name == "relu_general":
        return True
    return get(name, "backward_needs_input") in _NEEDS_INPUT
