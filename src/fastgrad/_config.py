"""Process-wide settings resolved once, above the kernels: the active backend,
the thread count and the library's random seed.

Kernels never read these themselves: NativeOps resolves `get_num_threads()` per
call and passes it down as an argument (see docs/architecture.md).
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Iterator

import numpy as np

_BACKEND_NAMES = ("native", "numpy")
class _ThreadState(threading.local):
    """Per-thread `use_backend` stack; the class attribute is every thread's
    default, so reading it needs no getattr fallback (get_backend is on the
    per-call path of predict_on_batch)."""
    stack: list[str] | None = None


_state = _ThreadState()
_global: dict[str, Any] = {"backend": None, "ops": {}, "seed": None}
_rng_lock = threading.Lock()
_rng = np.random.default_rng()


# ---------------------------------------------------------------- backend
def _make_ops(name: str) -> Any:
    ops = _global["ops"].get(name)
    if ops is None:
        if name == "numpy":
            from .backend.numpy_ops import NumpyOps
            ops = NumpyOps()
        else:
            from .backend.native_ops import NativeOps, native_unavailable_reason
            why = native_unavailable_reason()
            if why:
                raise RuntimeError(f"fastgrad native backend is not available: {why}")
            ops = NativeOps()
        _global["ops"][name] = ops
    return ops


def _default_backend() -> str:
    env = os.environ.get("FASTGRAD_BACKEND", "").strip().lower()
    if env:
        if env not in _BACKEND_NAMES:
            raise ValueError(f"FASTGRAD_BACKEND={env!r}: expected one of {_BACKEND_NAMES}")
        return env
    from .backend.native_ops import native_unavailable_reason
    if native_unavailable_reason():
        import warnings
        warnings.warn("fastgrad: native kernels are not built; using the NumPy backend "
                      f"({native_unavailable_reason()})", RuntimeWarning, stacklevel=3)
        return "numpy"
    return "native"


def set_backend(name: str) -> None:
    """Select the kernel backend for this process.

    The default is "native" when the C kernels are built, else "numpy"; the
    environment variable ``FASTGRAD_BACKEND`` sets it at import.

    Parameters
    ----------
    name : {"native", "numpy"}
        "native" (C/OpenMP kernels) or "numpy" (the NumPy reference), in any case.

    Raises
    ------
    ValueError
        If `name` is not a backend name.
    RuntimeError
        If "native" is asked for but the C kernels are not built.

    See Also
    --------
    use_backend : Another backend for one block of code.

    Examples
    --------
    >>> import fastgrad as fg
    >>> previous = fg.get_backend()
    >>> fg.set_backend("numpy")
    >>> fg.get_backend()
    'numpy'
    >>> fg.set_backend(previous)
    """
    if not isinstance(name, str) or name.lower() not in _BACKEND_NAMES:
        raise ValueError(f"set_backend: unknown backend {name!r}; expected one of {_BACKEND_NAMES}")
    name = name.lower()
    _make_ops(name)  # fail now, not at first use
    _global["backend"] = name


def get_backend() -> str:
    """Name of the active backend.

    Returns
    -------
    str
        "native" or "numpy"; inside a :func:`use_backend` block, that block's
        backend (in its thread).
    """
    local = _state.stack
    if local:
        return local[-1]
    if _global["backend"] is None:
        _global["backend"] = _default_backend()
    return _global["backend"]


def get_ops(name: str | None = None) -> Any:
    """The Ops object (kernel interface) of a backend; ``fastgrad.ops`` is the active one's.

    Parameters
    ----------
    name : {"native", "numpy"} or None, default None
        The backend (None: the active one).

    Returns
    -------
    NumpyOps or NativeOps
        The backend's Ops object (one per process and backend).
    """
    return _make_ops(name or get_backend())


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[Any]:
    """Run a block on another backend, in the calling thread only.

    Parameters
    ----------
    name : {"native", "numpy"}
        The backend for the block.

    Yields
    ------
    NumpyOps or NativeOps
        The block's Ops object.

    Raises
    ------
    ValueError
        If `name` is not a backend name.

    Examples
    --------
    >>> import fastgrad as fg
    >>> with fg.use_backend("numpy"):
    ...     print(fg.get_backend())
    numpy
    """
    if not isinstance(name, str) or name.lower() not in _BACKEND_NAMES:
        raise ValueError(f"use_backend: unknown backend {name!r}; expected one of {_BACKEND_NAMES}")
    _make_ops(name.lower())
    stack = _state.stack
    if stack is None:
        stack = _state.stack = []
    stack.append(name.lower())
    try:
        yield get_ops(name.lower())
    finally:
        stack.pop()


# ---------------------------------------------------------------- threads
# The thread count lives in the leaf module _threads (the native backend reads
# it per call and must not import this module, which imports the backends).
from ._threads import set_num_threads, get_num_threads, explicit_num_threads  # noqa: E402



# ---------------------------------------------------------------- seed
def set_seed(seed: int | None) -> None:
    """Seed fastgrad's generator: initialisation, shuffling and dropout become reproducible.

    Parameters
    ----------
    seed : int or None
        A non-negative integer, or None for a fresh unpredictable seed.

    Raises
    ------
    ValueError
        If `seed` is negative or not an integer.
    """
    global _rng
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"set_seed: expected a non-negative integer or None, got {seed!r}")
    with _rng_lock:
        _global["seed"] = None if seed is None else int(seed)
        _rng = np.random.default_rng(seed)


def get_seed() -> int | None:
    """The seed last given to :func:`set_seed`.

    Returns
    -------
    int or None
        The seed, or None when unseeded.
    """
    seed: int | None = _global["seed"]
    return seed


def rng() -> np.random.Generator:
    """The library's random generator (re-created by set_seed)."""
    return _rng


def next_seed() -> int:
    """A fresh 63-bit seed drawn from the library generator (for layer RNG streams)."""
    with _rng_lock:
        return int(_rng.integers(0, 2**63 - 1))


# ---------------------------------------------------------------- denormals
def set_flush_denormal(on: bool) -> None:
    """Flush denormal floats to zero inside fastgrad's C kernels.

    Off by default (IEEE semantics). When on, every worker thread sets FTZ/DAZ
    for the duration of each kernel and restores its previous state after, so
    the caller's floating-point environment (and NumPy) is never changed; the
    NumPy backend is unaffected. Worth turning on for long trainings where
    optimizer state decays into denormals (e.g. Adam moments of dead ReLU
    units), which makes x86 arithmetic on them many times slower.

    Parameters
    ----------
    on : bool
        True to flush, False for IEEE semantics.

    Raises
    ------
    RuntimeError
        If the native kernels are not built.
    """
    from . import _native
    if _native.module("runtime") is None:
        raise RuntimeError("set_flush_denormal: the native kernels are not built")
    _native.set_flush_denormal(bool(on))


def get_flush_denormal() -> bool:
    """Whether fastgrad's C kernels flush denormals to zero.

    Returns
    -------
    bool
        The setting of :func:`set_flush_denormal` (False without native kernels).
    """
    from . import _native
    rt = _native.module("runtime")
    return bool(rt and rt.get_flush_denormal())


# ---------------------------------------------------------------- BLAS threads
def blas_thread_limit() -> contextlib.AbstractContextManager:
    """Context manager capping NumPy's BLAS pool at fg.set_num_threads(n) while
    the NumPy backend trains or evaluates, so that setting governs that backend
    too and its BLAS team does not oversubscribe the cores next to other pools.
    A no-op for the native backend (its kernels use no BLAS) or when
    threadpoolctl is not installed. Entered once per fit/evaluate call: it
    costs about a millisecond, so it is not used on per-batch paths."""
    n = explicit_num_threads()
    if n is None or get_backend() != "numpy":
        # without fg.set_num_threads the BLAS pool already follows
        # OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / threadpoolctl by itself
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")
