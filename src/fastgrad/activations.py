"""Activation functions by name.

Layers carry activations as canonical names (strings), because the same name
is handed to the fused dense kernel and written into a layer's `describe()`.
`get(identifier)` maps what users write (None, "relu", "ReLU", a function of
this module) to that name; the functions here evaluate an activation eagerly
through the active backend, for users and tests.
"""
from __future__ import annotations

import numpy as np

__all__ = ["get", "serialize", "deserialize", "ACTIVATION_NAMES", "linear", "relu", "sigmoid",
           "tanh", "gelu", "gelu_tanh", "softmax", "log_softmax"]

#: canonical names understood by every backend (fastgrad.backend.ACTIVATIONS)
ACTIVATION_NAMES = ("linear", "relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "softmax", "log_softmax")
_ALIASES = {"none": "linear", "identity": "linear", "gelu_approximate": "gelu_tanh",
            "approximate_gelu": "gelu_tanh", "logsoftmax": "log_softmax"}


def _apply(name, x):
    from . import _config
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    return _config.get_ops().activation(name, np.ascontiguousarray(x))


def linear(x):
    return _apply("linear", x)


def relu(x):
    return _apply("relu", x)


def sigmoid(x):
    return _apply("sigmoid", x)


def tanh(x):
    return _apply("tanh", x)


def gelu(x, approximate=False):
    return _apply("gelu_tanh" if approximate else "gelu", x)


def gelu_tanh(x):
    return _apply("gelu_tanh", x)


def softmax(x):
    return _apply("softmax", x)


def log_softmax(x):
    return _apply("log_softmax", x)


_FUNCS = {f.__name__: f for f in (linear, relu, sigmoid, tanh, gelu, gelu_tanh, softmax, log_softmax)}


def get(identifier, where: str = "activation") -> str:
    """Canonical activation name for None, a name, or a function of this module."""
    if identifier is None:
        return "linear"
    if callable(identifier) and getattr(identifier, "__name__", None) in _FUNCS \
            and _FUNCS[identifier.__name__] is identifier:
        return identifier.__name__
    if isinstance(identifier, str):
        key = identifier.strip().lower()
        key = _ALIASES.get(key, key)
        if key in ACTIVATION_NAMES:
            return key
        raise ValueError(f"{where}: unknown activation {identifier!r}; expected one of "
                         f"{', '.join(ACTIVATION_NAMES)} (or None for linear)")
    raise TypeError(f"{where}: activation must be a name (str), None, or a function of "
                    f"fastgrad.activations; got {identifier!r}")


def serialize(name: str) -> str:
    return name


def deserialize(name: str) -> str:
    return get(name)
