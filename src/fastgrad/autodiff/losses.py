"""Custom losses and metrics written with fg.math (plain functions of
(y_true, y_pred), ``fg.losses.Loss`` / ``fg.metrics.Metric`` subclasses with
``call``), and built-in losses on a GradientTape.

Reductions (Keras 3): the per-sample values ``call`` returns are multiplied by
``sample_weight`` (when given), then "sum_over_batch_size" (default; "auto"
and "mean" are the same) divides their sum by their number, "sum" sums them,
"none" / None returns them unreduced (fit averages them).
"""
from __future__ import annotations

import numpy as np

from .core import GradientTape, Tensor, TraceTensor, Variable, record_on_tapes, _recording

REDUCTIONS = ("sum_over_batch_size", "auto", "mean", "sum", "none", None)


def _is_tensor(x):
    from ..engine.graph import SymbolicTensor
    return isinstance(x, (Tensor, TraceTensor, Variable, SymbolicTensor))


def reduce(values, sample_weight, reduction):
    from .. import math as M
    if sample_weight is not None:
        sw = sample_weight
        nd = len(np.shape(values)) if not hasattr(values, "shape") else len(values.shape)
        sw = np.asarray(sw.value if isinstance(sw, Variable) else sw, dtype=np.float32)
        while sw.ndim < nd:
            sw = sw[..., None]
        values = M.multiply(values, sw)
    if reduction in ("none", None):
        return values
    if reduction == "sum":
        return M.sum(values)
    return M.mean(values)


def loss_call(loss, y_true, y_pred, sample_weight=None):
    """Loss.__call__ on tensors (a tape, a traced call, symbolic tensors) and for
    losses written with call: a differentiable scalar (or per-sample values)."""
    if type(loss).call is not _base_call():
        per = loss.call(y_true, y_pred)
        red = getattr(loss, "reduction", "sum_over_batch_size")
        return reduce(per, sample_weight, red)
    # a built-in loss: its fused kernel gives the value and the gradient at once
    if isinstance(y_pred, (TraceTensor,)) or not isinstance(y_pred, np.ndarray):
        from ..engine.graph import SymbolicTensor
        if isinstance(y_pred, (TraceTensor, SymbolicTensor)):
            from .core import TracingError
            raise TracingError(f"loss {loss.name}: built-in losses run on arrays (in fit or on a "
                               "GradientTape); inside a traced call use a loss written with "
                               "fg.math")
    from .. import _config
    from ..losses import LABEL_DTYPE
    raw = y_pred.value if isinstance(y_pred, Variable) else y_pred
    pred = np.asarray(raw).view(np.ndarray) if isinstance(raw, np.ndarray) else np.asarray(raw)
    shape = pred.shape
    if pred.dtype not in (np.float32, np.float64):
        pred = pred.astype(np.float32)
    pred = np.ascontiguousarray(pred)
    if pred.ndim == 1:
        pred = pred.reshape(-1, 1)
    yt = np.asarray(y_true.value if isinstance(y_true, Variable) else y_true)
    if isinstance(yt, Tensor):
        yt = yt.view(np.ndarray)
    if loss.target_kind == "sparse":
        target = np.ascontiguousarray(yt.reshape(-1).astype(LABEL_DTYPE))
    else:
        target = np.ascontiguousarray(yt, dtype=pred.dtype).reshape(pred.shape)
    sw = None if sample_weight is None else np.ascontiguousarray(
        np.asarray(sample_weight), dtype=pred.dtype).reshape(-1)
    g = np.empty_like(pred)
    value, g = loss.compute(_config.get_ops(), pred, target, sw, g, loss.from_logits)
    out = np.asarray(value, dtype=np.float64)
    if not _recording():
        return out
    out = out.view(Tensor)

    def back(gup):
        gg = g.reshape(shape)
        if not (np.ndim(gup) == 0 and float(gup) == 1.0):
            gg = (gg * np.asarray(gup, dtype=np.float64)).astype(g.dtype)
        return [None, gg, None]
    record_on_tapes([y_true, y_pred, sample_weight], out, back)
    return out


def _base_call():
    from ..losses import Loss
    return Loss.call


def derived_compute(loss, ops, out, target, sample_weight, grad_out, logits):
    """Loss.compute for losses written with call: (value, gradient) by reverse mode."""
    from .. import math as M
    p = out.view(Tensor) if isinstance(out, np.ndarray) else np.asarray(out).view(Tensor)
    with GradientTape() as tape:
        tape.watch(p)
        per = loss.call(target, p)
        red = getattr(loss, "reduction", "sum_over_batch_size")
        val = reduce(per, sample_weight, "sum_over_batch_size" if red in ("none", None) else red)
        if np.ndim(val):
            val = M.mean(val)
    g = tape.gradient(val, p)
    v = float(np.asarray(val))
    if grad_out is None:
        grad_out = np.empty_like(np.asarray(out))
    if g is None:
        grad_out[...] = 0.0
    else:
        grad_out[...] = np.reshape(g, grad_out.shape)
    return v, grad_out


def metric_values(metric, y_true, y_pred):
    """Per-sample values of a metric written with call (trailing axes averaged)."""
    v = np.asarray(metric.call(y_true, y_pred), dtype=np.float64)
    if v.ndim == 0:
        v = v.reshape(1)
    if v.ndim > 1:
        v = v.reshape(v.shape[0], -1).mean(axis=1)
    return v
