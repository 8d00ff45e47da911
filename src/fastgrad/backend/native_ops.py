"""NativeOps: NumpyOps with its hot methods overridden by C kernels.

Assembled from one mixin per kernel family so each family's binding code lives
beside its own extension module:
    native_gemm.GemmMixin       gemm, dense_forward, dense_backward   (_native.gemm)
    native_kernels.KernelsMixin activations, losses, optimizer updates,
                                reductions, dropout                   (_native.kernels)
    native_conv.ConvMixin       conv2d (implicit GEMM), depthwise, pooling (_native.conv)
Every override handles float32 C-contiguous inputs and otherwise calls
super(), i.e. NumpyOps. Signatures are identical (tests/test_ops_interface.py).
"""
from __future__ import annotations

from .. import _native
from .numpy_ops import NumpyOps


def native_unavailable_reason():
    """None if the compiled modules NativeOps needs are importable, else why not."""
    missing = [n for n in ("runtime", "gemm", "kernels") if not _native.available(n)]
    if not missing:
        return None
    errs = "; ".join(f"{n}: {_native.import_error(n)}" for n in missing)
    return f"extension module(s) not built or not loadable: {errs}"


def _mixins():
    bases = []
    if _native.available("gemm"):
        from .native_gemm import GemmMixin
        bases.append(GemmMixin)
    if _native.available("kernels"):
        from .native_kernels import KernelsMixin
        bases.append(KernelsMixin)
    if _native.available("quant"):
        from .native_quant import QuantMixin
        bases.append(QuantMixin)
    if _native.available("lossopt"):
        from .native_lossopt import LossOptMixin
        bases.append(LossOptMixin)
    if _native.available("attn"):
        from .native_attn import AttnMixin
        bases.append(AttnMixin)
    if _native.available("rnn"):
        from .native_rnn import RnnMixin
        bases.append(RnnMixin)
    if _native.available("conv", "gemm"):
        from .native_conv import ConvMixin
        bases.append(ConvMixin)
    return tuple(bases)


class NativeOps(*_mixins(), NumpyOps):  # type: ignore[misc]  # bases chosen by what is built
    """C/OpenMP kernels for float32 C-contiguous arrays; NumpyOps for the rest."""

    name = "native"
