"""fastgrad — fast CPU neural-network training: C/OpenMP kernels under a
Keras-style API.

    import fastgrad as fg
    model = fg.Sequential([fg.layers.Dense(128, activation="relu", input_shape=(784,)),
                           fg.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=5, batch_size=128, validation_split=0.1)

Process settings: fg.set_backend("native" | "numpy") / fg.use_backend(...) /
FASTGRAD_BACKEND, fg.set_num_threads(n), fg.set_seed(n), fg.set_flush_denormal(on).  `fg.ops` is the
active backend's Ops object (the low-level kernel API).  fg.show_config()
prints the build and runtime configuration (also `python -m fastgrad info`).
"""
from __future__ import annotations

from typing import Any, TextIO

from ._version import __version__
# The compiled modules load now, not at the first fit: threadpoolctl then sees
# (and limits) fastgrad's OpenMP runtime from the start. A process that asks for
# the NumPy backend (FASTGRAD_BACKEND=numpy) loads no extension module at all.
import os as _os
# Loading them also fixes how libgomp's workers wait between parallel regions
# (a short spin, unless the user set OMP_WAIT_POLICY / GOMP_SPINCOUNT): see
# _threads.begin_native_load and docs/threads.md.
if _os.environ.get("FASTGRAD_BACKEND", "").strip().lower() != "numpy":
    from . import _native  # noqa: F401

from ._threads import share_blas_threads
from ._config import (set_backend, get_backend, use_backend, get_ops, set_num_threads,
                      get_num_threads, set_seed, get_seed, set_flush_denormal,
                      get_flush_denormal)
from . import activations, initializers, regularizers, losses, metrics, optimizers, layers, engine
from . import models
from . import distribution
from . import math
from .models import Sequential, Model, load_model
from .autodiff import Variable, GradientTape
from .layers import Input
from .engine.graph import SymbolicTensor as KerasTensor

__all__ = ["__version__", "Sequential", "Model", "Input", "KerasTensor", "load_model", "layers", "models",
           "math", "Variable", "GradientTape", "testing",
           "losses", "metrics", "optimizers", "initializers", "regularizers", "activations",
           "callbacks", "distribution", "engine", "backend", "ops", "set_backend", "get_backend", "use_backend",
           "get_ops", "set_num_threads", "get_num_threads", "set_seed", "get_seed", "show_config",
           "config_info", "set_flush_denormal", "get_flush_denormal", "quantization",
           "share_blas_threads", "export"]


def __getattr__(name: str) -> Any:
    # `fg.ops` follows the active backend (set_backend / use_backend), so it is
    # resolved on every access rather than bound once at import.
    if name == "ops":
        return get_ops()
    if name in ("callbacks", "backend", "saving", "utils", "quantization", "testing", "export"):
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fastgrad' has no attribute {name!r}")


def config_info() -> dict:
    """The build and runtime configuration (what :func:`show_config` prints).

    Returns
    -------
    dict
        Version, backend, instruction set, OpenMP, threads, compiler, flags
        and thread pools, by name.
    """
    import platform
    import numpy as np
    from . import _native
    info: dict[str, object] = {"fastgrad": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "platform": platform.platform()}
    try:
        info["backend"] = get_backend()
    except Exception as exc:  # pragma: no cover - reported, not raised
        info["backend"] = f"unavailable ({exc})"
    rt = _native.module("runtime")
    if rt is None:
        info["native"] = f"not built ({_native.import_error('runtime')})"
    else:
        info["native modules"] = ", ".join(n for n in ("runtime", "gemm", "kernels", "step")
                                           if _native.available(n)) or "none"
        missing = [n for n in ("gemm", "kernels", "step") if not _native.available(n)]
        if missing:
            info["native missing"] = ", ".join(missing)
        info["isa"] = _native.get_isa()
        info["isa supported"] = ", ".join(rt.isa_supported())
        info["openmp compiled"] = rt.openmp_compiled()
        info["compiler"] = rt.build_compiler()
        info["flags"] = rt.build_flags()
        info["flush denormals"] = rt.get_flush_denormal()
    info["threads"] = get_num_threads()
    from ._threads import wait_policy
    wp = wait_policy()
    given = [f"{name}={wp[key]}" for name, key in (("GOMP_SPINCOUNT", "spincount"),
                                                   ("OMP_WAIT_POLICY", "omp_wait_policy")) if wp.get(key)]
    info["openmp wait"] = f"{', '.join(given)} ({wp['source']})" if given else wp["source"]
    from ._threads import blas_share_info
    bs = blas_share_info()
    if bs["enabled"]:
        libs = ", ".join(p.rsplit("/", 1)[-1] for p in bs["libraries"])
        info["blas threads"] = f"OpenBLAS jobs run on fastgrad's OpenMP team ({libs}; {bs['source']})"
    else:
        info["blas threads"] = f"OpenBLAS keeps its own threads ({bs['source']})"
    try:
        from threadpoolctl import threadpool_info
        pools = [f"{p.get('user_api')}:{p.get('internal_api')} ({p.get('num_threads')} threads, "
                 f"{p.get('filepath', '').rsplit('/', 1)[-1]})" for p in threadpool_info()]
        info["thread pools"] = "; ".join(pools) or "none"
    except ImportError:
        info["thread pools"] = "threadpoolctl not installed"
    return info


def show_config(file: TextIO | None = None) -> None:
    """Print the build and runtime configuration (also ``python -m fastgrad info``).

    Parameters
    ----------
    file : file-like or None, default None
        Where to print (None: standard output).
    """
    import sys
    file = file or sys.stdout
    info = config_info()
    width = max(len(k) for k in info) + 1
    for k, v in info.items():
        print(f"{k + ':':<{width}} {v}", file=file)
