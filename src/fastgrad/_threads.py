"""The thread count of fastgrad's kernels: a leaf module (it imports nothing of
fastgrad but the runtime extension), so the native backend can read it per
call without importing _config, which imports the backends.

get_num_threads() = fg.set_num_threads(n) if called, else the calling
thread's omp_get_max_threads() (which follows OMP_NUM_THREADS and
threadpoolctl.threadpool_limits)."""
from __future__ import annotations

import os

import numpy as np

_explicit = [None]           # fg.set_num_threads(n), or None
_runtime_mod = []            # [module or None], filled on first use (read per op: keep it cheap)


def set_num_threads(n: int | None) -> None:
    """Use `n` threads in fastgrad kernels (None: back to the default, which
    follows OMP_NUM_THREADS and threadpoolctl limits)."""
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"set_num_threads: expected a positive integer or None, got {n!r}")
        n = int(n)
    _explicit[0] = n


def explicit_num_threads():
    """The count given to set_num_threads, or None."""
    return _explicit[0]


def _runtime():
    if not _runtime_mod:
        from ._native import module
        _runtime_mod.append(module("runtime"))
    return _runtime_mod[0]


def get_num_threads() -> int:
    """Threads fastgrad kernels will use: fg.set_num_threads if called, else
    omp_get_max_threads() of the calling thread (OMP_NUM_THREADS, threadpoolctl)."""
    n = _explicit[0]
    if n is not None:
        return n
    rt = _runtime_mod[0] if _runtime_mod else _runtime()
    if rt is not None:
        return rt.omp_max_threads()
    env = os.environ.get("OMP_NUM_THREADS", "")
    try:
        return max(1, int(env.split(",")[0]))
    except ValueError:
        return os.cpu_count() or 1
