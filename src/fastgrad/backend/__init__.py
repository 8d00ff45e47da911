"""fastgrad.backend — one Ops interface, two implementations.

::

    NumpyOps   the complete pure-NumPy reference and fallback (float32 and float64)
    NativeOps  NumpyOps with the hot methods overridden by C kernels for float32
               C-contiguous inputs; anything else falls through to NumpyOps.

`fastgrad.ops` is the active backend's Ops object: the low-level kernel API for
people who write their own training loops.
"""
from .numpy_ops import NumpyOps, ACTIVATIONS

__all__ = ["NumpyOps", "NativeOps", "ACTIVATIONS", "native_available"]


def native_available() -> bool:
    """Whether the native (C/OpenMP) backend can run in this process.

    Returns
    -------
    bool
        True when the compiled kernels are built and load.
    """
    from .native_ops import native_unavailable_reason
    return native_unavailable_reason() is None


def __getattr__(name):
    if name == "NativeOps":
        from .native_ops import NativeOps
        return NativeOps
    raise AttributeError(name)
