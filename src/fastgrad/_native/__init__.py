"""fastgrad._native — the compiled extension modules, one per kernel family.

    runtime  CPU / build facts, instruction-set choice, denormal flag
    gemm     packed GEMM and the fused dense forward (csrc/gemm)
    kernels  activations, losses, optimizer updates, reductions (csrc/kernels)
    lossopt  the further Keras losses and optimizers (csrc/lossopt)
    step     compiled training / inference step (csrc/step)
    attn     batched GEMM, masked softmax, blocked attention (csrc/attn)

Every module links its own copy of csrc/runtime, so process-wide settings
(instruction set, flush-denormal) are broadcast here to every loaded module.
Import failures are kept, not raised: `available()` says whether the native
backend can be used and `import_error()` says why not.
"""
from __future__ import annotations

import importlib
from typing import Any

from .. import _threads

_MODULES = ("runtime", "gemm", "kernels", "lossopt", "quant", "rnn", "attn", "conv", "step")
_loaded: dict = {}
_errors: dict = {}

# libgomp reads its environment once, when the first module loads it: put
# fastgrad's wait policy (a short spin) in place for that moment, unless the
# user set one (docs/threads.md).
_policy_set = _threads.begin_native_load()
try:
    for _name in _MODULES:
        try:
            _loaded[_name] = importlib.import_module(f"{__name__}.{_name}")
        except ImportError as exc:  # module not built (dev tree) or failed to load
            _errors[_name] = exc
        except RuntimeError as exc:  # e.g. FASTGRAD_ISA names an unavailable path
            raise
finally:
    _threads.end_native_load(_policy_set)

# one thread pool for fastgrad and NumPy's OpenBLAS (unless
# FASTGRAD_SHARE_BLAS_THREADS=0): csrc/runtime/blas_share.c, docs/threads.md
if "runtime" in _loaded:
    _threads.apply_blas_share_default(_loaded["runtime"])

ISA_NAMES = ("baseline", "avx2", "avx512")


def module(name: str) -> Any:
    """The loaded extension module `name`, or None."""
    return _loaded.get(name)


def available(*names: str) -> bool:
    return all(n in _loaded for n in (names or _MODULES))


def import_error(name: str) -> Any:
    return _errors.get(name)


def set_isa(name: str) -> None:
    """Switch every loaded module to the instruction-set path `name`."""
    if name not in ISA_NAMES:
        raise ValueError(f"unknown instruction set {name!r}; expected one of {ISA_NAMES}")
    rt = _loaded.get("runtime")
    if rt is None:
        raise RuntimeError("fastgrad native runtime is not built")
    if name not in rt.isa_supported():
        raise ValueError(f"instruction set {name!r} is not available on this CPU/build; "
                         f"available: {', '.join(rt.isa_supported())}")
    for mod in _loaded.values():
        mod._isa_set(ISA_NAMES.index(name))


def get_isa() -> str | None:
    rt = _loaded.get("runtime")
    return rt.isa_active_name() if rt else None


def set_flush_denormal(on: bool) -> None:
    for mod in _loaded.values():
        mod._set_flush_denormal(bool(on))
