"""The thread count of fastgrad's kernels: a leaf module (it imports nothing of
fastgrad but the runtime extension), so the native backend can read it per
call without importing _config, which imports the backends.

get_num_threads() = fg.set_num_threads(n) if called, else the calling
thread's omp_get_max_threads() (which follows OMP_NUM_THREADS and
threadpoolctl.threadpool_limits)."""
from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

_explicit: list[int | None] = [None]           # fg.set_num_threads(n), or None
_runtime_mod: list[Any] = []            # [module or None], filled on first use (read per op: keep it cheap)


def set_num_threads(n: int | None) -> None:
    """Set how many threads fastgrad's kernels use.

    Results do not depend on the thread count (sums run in a fixed order).
    With the NumPy backend the setting also caps NumPy's BLAS pool during
    fit and evaluate.

    Parameters
    ----------
    n : int or None
        A positive count, or None for the default, which follows
        ``OMP_NUM_THREADS`` and threadpoolctl limits.

    Raises
    ------
    ValueError
        If `n` is not a positive integer or None.
    """
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"set_num_threads: expected a positive integer or None, got {n!r}")
        n = int(n)
    _explicit[0] = n


def explicit_num_threads() -> int | None:
    """The count given to set_num_threads, or None."""
    return _explicit[0]


def _runtime() -> Any:
    if not _runtime_mod:
        from ._native import module
        _runtime_mod.append(module("runtime"))
    return _runtime_mod[0]


def get_num_threads() -> int:
    """How many threads fastgrad's kernels will use.

    Returns
    -------
    int
        The count given to :func:`set_num_threads`, else the calling thread's
        ``omp_get_max_threads()`` (which follows ``OMP_NUM_THREADS`` and
        threadpoolctl).
    """
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


# ------------------------------------------------------------------ wait policy
# libgomp's workers spin (GOMP_SPINCOUNT iterations of a `pause` loop, 300,000
# by default: several milliseconds) after each parallel region before they
# sleep on a futex. On a machine with as many threads as cores, that spin takes
# the cores NumPy's OpenBLAS (or any other pool) wants next, and under
# oversubscription it takes them from fastgrad's own main thread. libgomp reads
# its environment once, when it is loaded, so when asked
# (FASTGRAD_GOMP_SPINCOUNT=short or a number) fastgrad puts a short spin count in
# place just before it loads its extension modules (`import fastgrad`), unless
# the user chose a wait policy. See docs/threads.md.

#: the short spin FASTGRAD_GOMP_SPINCOUNT=short asks for (~0.3 ms). Not the
#: default: measured on a quiet 2-core Xeon it cost fastgrad alone 2-9 % per
#: epoch (Python step and compiled plan), more than the 2 % it may cost.
SHORT_SPINCOUNT = 10000
DEFAULT_SPINCOUNT = None
_USER_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
_policy = {"source": "libgomp not loaded (FASTGRAD_BACKEND=numpy)", "spincount": None, "omp_wait_policy": None}


def _libgomp_loaded() -> bool:
    """Whether the libgomp.so.1 our modules link is already mapped into this process (then its
    environment was read already and a default set now would do nothing)."""
    try:
        with open("/proc/self/maps") as f:
            # the system libgomp (libgomp.so.1 -> libgomp.so.1.0.0); PyTorch's
            # bundled copy (libgomp-<hash>.so.1) is another library that does
            # not share our libgomp's settings
            return any(line.rstrip().rsplit("/", 1)[-1].startswith("libgomp.so") for line in f)
    except OSError:
        return False


def _fastgrad_spincount(env: Any) -> int | None:
    """The spin count fastgrad asks for: FASTGRAD_GOMP_SPINCOUNT = a
    non-negative integer, or "short" (SHORT_SPINCOUNT); unset or "default":
    None, i.e. set nothing and leave libgomp's own (~300,000 spins)."""
    raw = env.get("FASTGRAD_GOMP_SPINCOUNT", "").strip()
    if not raw or raw.lower() in ("default", "libgomp", "off"):
        return None
    if raw.lower() == "short":
        return SHORT_SPINCOUNT
    try:
        value = int(raw)
        if value < 0:
            raise ValueError
    except ValueError:
        warnings.warn(f"fastgrad: FASTGRAD_GOMP_SPINCOUNT={raw!r} is not a non-negative integer, "
                      "'short' or 'default'; leaving libgomp's default", RuntimeWarning, stacklevel=3)
        return None
    return value


def begin_native_load() -> bool:
    """Called by fastgrad._native just before it loads the extension modules
    (and with them libgomp): puts fastgrad's GOMP_SPINCOUNT in place unless
    the user chose a wait policy. Returns whether it set the variable; then
    end_native_load() removes it again once libgomp has read it, so child
    processes and libraries loaded later (PyTorch's own libgomp) see the
    environment the user gave. A user's OMP_WAIT_POLICY or GOMP_SPINCOUNT is
    never overridden."""
    env = os.environ
    if any(v in env for v in _USER_VARS):
        _policy.update(source="user", spincount=env.get("GOMP_SPINCOUNT"),
                       omp_wait_policy=env.get("OMP_WAIT_POLICY"))
        return False
    value = _fastgrad_spincount(env)
    if value is None:
        _policy.update(source="libgomp default", spincount=None)
        return False
    if _libgomp_loaded():
        _policy.update(source="not applied: libgomp was loaded before fastgrad", spincount=None)
        return False
    env["GOMP_SPINCOUNT"] = str(value)
    _policy.update(source="fastgrad", spincount=str(value))
    return True


def end_native_load(was_set: bool) -> None:
    if was_set:
        os.environ.pop("GOMP_SPINCOUNT", None)


def wait_policy() -> dict:
    """How the OpenMP runtime fastgrad loaded waits between parallel regions:
    {"source": "fastgrad" | "user" | "libgomp default" | "not applied: ...",
     "spincount": the GOMP_SPINCOUNT fastgrad set or the user gave, or None,
     "omp_wait_policy": the user's OMP_WAIT_POLICY, or None}."""
    return dict(_policy)


# ------------------------------------------------------------ BLAS thread pool
# NumPy's OpenBLAS (pthreads build) keeps a pool of its own whose workers spin
# after each call, as libgomp's do after each of fastgrad's regions: on a
# machine with as many threads as cores the two pools take each other's cores
# (a NumPy matmul next to fastgrad calls ran 1.1-7x slower, fastgrad's calls
# up to 80x). fastgrad therefore gives OpenBLAS a callback that runs its
# parallel jobs on fastgrad's OpenMP team — one pool in the process. OpenBLAS
# keeps choosing how many jobs a call has (its thread count; threadpoolctl's
# "blas" limit still applies), and its results do not change.
# FASTGRAD_SHARE_BLAS_THREADS=0 at import leaves OpenBLAS alone;
# fg.share_blas_threads(False) undoes it at run time. csrc/runtime/blas_share.c
# has the mechanism; docs/threads.md the measurements.

_blas_share: dict[str, Any] = {"requested": None, "source": "not applied (native backend not loaded)"}
_OFF = ("0", "off", "false", "no")


_share_rt: list[Any] = []  # [the runtime extension module], set by fastgrad._native when it loads


def _runtime_if_loaded() -> Any:
    return _share_rt[0] if _share_rt else None


def share_blas_threads(enable: bool = True) -> list[str]:
    """Run NumPy's OpenBLAS parallel jobs on fastgrad's OpenMP threads.

    Parameters
    ----------
    enable : bool, default True
        True routes every loaded OpenBLAS (a pthreads build with the
        threads-callback API, OpenBLAS >= 0.3.27, as NumPy and SciPy wheels
        ship it) to fastgrad's thread team, so the process has one thread pool
        instead of two pools spinning on each other's cores; calling it again
        picks up OpenBLAS copies loaded since (SciPy's). False gives OpenBLAS
        its own threads back.

    Returns
    -------
    list of str
        Paths of the OpenBLAS libraries now routed (empty when disabled, when
        none is loaded, or where unsupported: not Linux/glibc, or fastgrad
        built without OpenMP).
    """
    rt = _runtime_if_loaded()
    if rt is None or not hasattr(rt, "blas_share_set"):
        _blas_share.update(requested=bool(enable), source="unavailable (native backend not loaded)")
        return []
    paths = rt.blas_share_set(bool(enable))
    _blas_share.update(requested=bool(enable), source="fg.share_blas_threads")
    return paths


def apply_blas_share_default(runtime: Any) -> None:
    """At import (fastgrad._native, with its runtime module): share the pool
    unless FASTGRAD_SHARE_BLAS_THREADS says not to."""
    _share_rt[:] = [runtime]
    raw = os.environ.get("FASTGRAD_SHARE_BLAS_THREADS", "").strip().lower()
    if raw in _OFF:
        _blas_share.update(requested=False, source="FASTGRAD_SHARE_BLAS_THREADS=0")
        return
    share_blas_threads(True)
    _blas_share["source"] = "default"


def refresh_blas_share() -> None:
    """Route OpenBLAS copies loaded after import (called when fit starts); a
    no-op unless sharing is on."""
    if _blas_share["requested"]:
        rt = _runtime_if_loaded()
        if rt is not None and hasattr(rt, "blas_share_set"):
            rt.blas_share_set(True)


def blas_share_info() -> dict:
    """{"enabled": bool, "libraries": [paths], "source": why, "supported": bool}."""
    rt = _runtime_if_loaded()
    if rt is None or not hasattr(rt, "blas_share_state"):
        return {"enabled": False, "libraries": [], "source": _blas_share["source"], "supported": False}
    supported, enabled, paths = rt.blas_share_state()
    return {"enabled": enabled, "libraries": paths, "source": _blas_share["source"], "supported": supported}
