"""Lambda: a layer from a function written with fg.math (traced; gradient derived)."""
from __future__ import annotations

from typing import Any, Callable

from .base import Layer

__all__ = ["Lambda"]


class Lambda(Layer):
    """Wrap a function of tensors as a layer (``keras.layers.Lambda``).

    ``function(inputs, **arguments)`` is written with ``fastgrad.math`` functions
    and operators; its gradient is derived by tracing (docs/autodiff.md).
    Saved models record the function by name; give it in ``custom_objects``
    when loading.

    Parameters
    ----------
    function : callable
        The function of the inputs.
    output_shape : optional
        Accepted for Keras compatibility; the output shape is found by tracing.
    mask : optional
        Accepted for Keras compatibility; unused.
    arguments : dict, optional
        Extra keyword arguments for ``function``.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    TypeError
        When ``function`` is not callable.
    """

    def __init__(self, function: Callable[..., Any], output_shape: Any = None, mask: Any = None,
                 arguments: dict | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not callable(function):
            raise TypeError(f"Lambda {self.name}: function must be callable, got {function!r}")
        self.function = function
        self.arguments = dict(arguments or {})

    def call(self, inputs: Any) -> Any:  # type: ignore[override]
        return self.function(inputs, **self.arguments)

    def get_config(self):
        cfg = super().get_config()
        cfg["function"] = getattr(self.function, "__name__", repr(self.function))
        cfg["arguments"] = self.arguments
        return cfg

    @classmethod
    def from_config(cls, config, custom_objects=None):
        cfg = dict(config)
        fn = cfg.pop("function")
        if isinstance(fn, str):
            found = (custom_objects or {}).get(fn)
            if found is None:
                from .. import math as _m
                found = getattr(_m, fn, None)
            if found is None:
                raise ValueError(f"Lambda: function {fn!r} is not known; pass it in "
                                 "custom_objects when loading")
            fn = found
        if cfg.get("input_shape") is not None:
            cfg["input_shape"] = tuple(cfg["input_shape"])
        return cls(fn, **cfg)
