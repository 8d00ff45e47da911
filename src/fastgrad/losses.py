"""Losses (Keras names and semantics), each computed by one fused ops call.

A loss reports the mean over the batch of the per-sample loss (weighted by
sample_weight when given: sum_i w_i l_i / rows, Keras "sum_over_batch_size")
and the gradient of that mean with respect to the model output.

Cross-entropies on probabilities (from_logits=False) declare the output
activation they can absorb (`fusable_activation`: softmax or sigmoid).  When
the model ends in that activation, the model strips it from the last layer
and the loss runs the numerically stable kernel on the logits
(ops.sparse_softmax_crossentropy / softmax_crossentropy /
binary_crossentropy_from_logits); predict() still returns probabilities.

`target_kind` tells the data validation what y must look like: "sparse"
(integer class ids) or "dense" (float array shaped like the output).

The compiled plan (engine/compiled.py) asks a loss for its C code through the
public `lower(ctx, on_logits)`; the base class has no C path (it raises
`ctx.unsupported`), so a user-defined loss runs on the Python step, as does a
subclass of a built-in loss that replaces its `compute`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Loss", "LossFunctionWrapper", "MeanSquaredError", "BinaryCrossentropy", "CategoricalCrossentropy",
           "SparseCategoricalCrossentropy", "get", "serialize", "deserialize",
           "mean_squared_error", "binary_crossentropy", "categorical_crossentropy",
           "sparse_categorical_crossentropy", "LABEL_DTYPE", "REDUCTIONS"]

#: dtype of integer labels handed to the sparse kernels
LABEL_DTYPE = np.int32

#: Keras 3's reductions ("auto" is read as "sum_over_batch_size")
REDUCTIONS = ("sum_over_batch_size", "sum", None, "none", "mean", "mean_with_sample_weight", "auto")


class Loss:
    """Base class.  Subclasses implement `compute(ops, out, target, sw, grad_out, logits)`."""

    target_kind = "dense"
    fusable_activation = None   # output activation this loss can take over
    from_logits = False

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        if reduction not in REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of "
                             f"{', '.join(repr(r) for r in REDUCTIONS)}, got {reduction!r}")
        custom = type(self).call is not Loss.call
        # "auto" is "sum_over_batch_size"; a loss written with call spells None "none"
        self.reduction = ("sum_over_batch_size" if reduction == "auto" else
                          "none" if reduction is None and custom else reduction)
        self.name = name or _DEFAULT_NAMES.get(type(self).__name__, _snake(type(self).__name__))

    def call(self, y_true, y_pred):
        """Per-sample loss values written with fg.math (Keras's Loss.call): a
        subclass that defines it gets its gradient derived (docs/autodiff.md)."""
        raise NotImplementedError(f"{type(self).__name__}.call")

    # ------------------------------------------------------------------ reduction
    def _reduction_factor(self, out, sample_weight):
        """What turns the "sum_over_batch_size" value (and gradient) the kernels give
        into this loss's reduction: 1; the number of per-sample values for "sum" and
        None / "none" (training takes the gradient of the sum, as Keras's tape does
        for a vector loss); that number / sum(sample_weight) for
        "mean_with_sample_weight" ("mean" is "sum_over_batch_size" in Keras 3)."""
        r = self.reduction
        if r in ("sum_over_batch_size", "mean"):
            return 1.0
        # per-sample values: one per row of the last axis (a sparse target: per row)
        if self.target_kind == "sparse" or out.ndim == 1:
            n = out.shape[0]
        else:
            n = out.size // out.shape[-1]
        if r == "mean_with_sample_weight":
            if sample_weight is None:
                return 1.0
            sw = float(np.sum(sample_weight, dtype=np.float64))
            return float(n) / sw if sw != 0.0 else 0.0
        return float(n)

    def _reduce(self, out, sample_weight, result):
        """Apply the reduction to a kernel's (loss, grad) (grad scaled in place)."""
        f = self._reduction_factor(out, sample_weight)
        if f == 1.0:
            return result
        loss, g = result
        g *= g.dtype.type(f)
        return loss * f, g

    def _lower_reduction(self, ctx):
        if self.reduction not in ("sum_over_batch_size", "mean"):
            raise ctx.unsupported(f"loss {self.name}: reduction={self.reduction!r} runs on the "
                                  "Python step")

    def compute(self, ops, out, target, sample_weight, grad_out, logits):
        """(loss, grad) for the model output `out` (logits when `logits`)."""
        if type(self).call is not Loss.call:
            from .autodiff.losses import derived_compute
            return derived_compute(self, ops, out, target, sample_weight, grad_out, logits)
        raise NotImplementedError

    def __call__(self, y_true, y_pred, sample_weight=None) -> float:
        """Eager evaluation (Keras style): loss value of y_pred against y_true.
        On a GradientTape (or for a loss written with call) the result is
        differentiable."""
        from .autodiff import losses as _adl
        from .autodiff.core import _recording
        if type(self).call is not Loss.call or _recording() or _adl._is_tensor(y_pred):
            return _adl.loss_call(self, y_true, y_pred, sample_weight)
        from . import _config
        ops = _config.get_ops()
        pred = np.asarray(y_pred)
        if pred.dtype not in (np.float32, np.float64):
            pred = pred.astype(np.float32)
        pred = np.ascontiguousarray(pred)
        if pred.ndim == 1:
            pred = pred.reshape(-1, 1)
        target = np.asarray(y_true)
        if self.target_kind == "sparse":
            target = np.ascontiguousarray(target.reshape(-1).astype(LABEL_DTYPE))
        else:
            target = np.ascontiguousarray(target, dtype=pred.dtype).reshape(pred.shape)
        sw = None if sample_weight is None else np.ascontiguousarray(sample_weight,
                                                                     dtype=pred.dtype).reshape(-1)
        if self.reduction in (None, "none"):
            return self.values(ops, pred, target, sw)
        loss, _ = self.compute(ops, pred, target, sw, np.empty_like(pred), self.from_logits)
        return loss

    def values(self, ops, pred, target, sample_weight=None):
        """Per-sample loss values (float64; Keras's reduction=None), times
        sample_weight when given."""
        v = self._values(ops, pred, target)
        if sample_weight is not None:
            w = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
            v = v * w.reshape((-1,) + (1,) * (v.ndim - 1))
        return v

    def _values(self, ops, pred, target):
        raise NotImplementedError(f"{type(self).__name__}: per-sample values (reduction=None) "
                                  "are not implemented")

    def get_config(self) -> dict:
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"


    # ------------------------------------------------------------------ compiled plan
    def lower(self, ctx, on_logits):
        """The C loss code of this loss for the compiled plan (engine/compiled.py
        LowerContext: `ctx.loss_code(name)`). `on_logits`: the model fused its output
        activation into this loss, so the output C hands it is logits. The base
        class has no C path."""
        raise ctx.unsupported(f"loss {self.name} ({type(self).__name__}) has no C path")

    def _lower_code(self, ctx, rule_of, on_logits, logits_name, probs_name=None):
        """ctx.loss_code of the C loss that computes `rule_of.compute` on logits
        (`logits_name`) or probabilities (`probs_name`, None: no C path); a subclass
        that replaces `compute` has no C path."""
        cls = type(self)
        self._lower_reduction(ctx)
        logits = bool(on_logits) or bool(self.from_logits)
        name = logits_name if logits else probs_name
        if cls.compute is not rule_of.compute or name is None:
            raise ctx.unsupported(f"loss {self.name} ({cls.__name__}, on "
                                  f"{'logits' if logits else 'probabilities'}) has no fused C path")
        return ctx.loss_code(name)


class LossFunctionWrapper(Loss):
    """A plain function ``fn(y_true, y_pred) -> per-sample losses`` written with
    fg.math as a Loss (what compile(loss=fn) makes); its gradient is derived."""

    def __init__(self, fn, name=None, reduction="sum_over_batch_size", **kwargs):
        if not callable(fn):
            raise TypeError(f"LossFunctionWrapper: expected a function, got {fn!r}")
        self.fn = fn
        self.fn_kwargs = kwargs
        super().__init__(name=name or getattr(fn, "__name__", "loss"), reduction=reduction)

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred, **self.fn_kwargs)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction,
                "fn": getattr(self.fn, "__name__", repr(self.fn))}

    @classmethod
    def from_config(cls, config):
        cfg = dict(config)
        fn = cfg.pop("fn", None)
        if not callable(fn):
            raise ValueError(f"LossFunctionWrapper: the function {fn!r} is not known; pass it as "
                             "custom_objects / compile it again")
        return cls(fn, **cfg)


def _snake(name):
    from .layers.base import _snake as s
    return s(name)


class MeanSquaredError(Loss):
    def compute(self, ops, out, target, sample_weight, grad_out, logits):
        return self._reduce(out, sample_weight, ops.mse(out, target, sample_weight, grad_out))

    def _values(self, ops, pred, target):
        d = pred.astype(np.float64) - target.astype(np.float64)
        return np.mean(d * d, axis=-1)

    def lower(self, ctx, on_logits):
        return self._lower_code(ctx, MeanSquaredError, on_logits, "mse", "mse")


class _CrossEntropy(Loss):
    def __init__(self, from_logits=False, name=None, reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)
        self.from_logits = bool(from_logits)

    @property
    def fusable_activation(self):
        return None if self.from_logits else self._fuse

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits}


class BinaryCrossentropy(_CrossEntropy):
    _fuse = "sigmoid"

    def compute(self, ops, out, target, sample_weight, grad_out, logits):
        if logits:
            r = ops.binary_crossentropy_from_logits(out, target, sample_weight, grad_out)
        else:
            r = ops.binary_crossentropy(out, target, sample_weight, grad_out)
        return self._reduce(out, sample_weight, r)

    def _values(self, ops, pred, target):
        x, z = pred.astype(np.float64), target.astype(np.float64)
        if self.from_logits:
            e = np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))
        else:
            p = np.clip(x, 1e-7, 1 - 1e-7)
            e = -(z * np.log(p) + (1 - z) * np.log1p(-p))
        return e.mean(axis=-1)

    def lower(self, ctx, on_logits):
        return self._lower_code(ctx, BinaryCrossentropy, on_logits, "sigmoid_bce")


class CategoricalCrossentropy(_CrossEntropy):
    _fuse = "softmax"

    def compute(self, ops, out, target, sample_weight, grad_out, logits):
        if logits:
            r = ops.softmax_crossentropy(out, target, sample_weight, grad_out)
        else:
            r = ops.categorical_crossentropy(out, target, sample_weight, grad_out)
        return self._reduce(out, sample_weight, r)

    def _values(self, ops, pred, target):
        return -(target.astype(np.float64) * _log_probs(pred, self.from_logits)).sum(axis=-1)

    def lower(self, ctx, on_logits):
        return self._lower_code(ctx, CategoricalCrossentropy, on_logits, "softmax_xent")


class SparseCategoricalCrossentropy(_CrossEntropy):
    _fuse = "softmax"
    target_kind = "sparse"

    def compute(self, ops, out, target, sample_weight, grad_out, logits):
        if logits:
            return self._reduce(out, sample_weight,
                                ops.sparse_softmax_crossentropy(out, target, sample_weight, grad_out))
        # probabilities without a softmax to absorb: one-hot the labels (rare path)
        onehot = np.zeros(out.shape, dtype=out.dtype)
        onehot[np.arange(out.shape[0]), target] = 1
        return self._reduce(out, sample_weight,
                            ops.categorical_crossentropy(out, onehot, sample_weight, grad_out))

    def _values(self, ops, pred, target):
        lp = _log_probs(pred, self.from_logits)
        return -lp[np.arange(lp.shape[0]), np.asarray(target).reshape(-1)]

    def lower(self, ctx, on_logits):
        return self._lower_code(ctx, SparseCategoricalCrossentropy, on_logits,
                                "sparse_softmax_xent")


def _log_probs(pred, from_logits):
    """float64 log-probabilities of rows of logits or (renormalised, clipped) probabilities."""
    x = pred.astype(np.float64)
    if from_logits:
        m = x.max(axis=-1, keepdims=True)
        return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))
    q = x / x.sum(axis=-1, keepdims=True)
    return np.log(np.clip(q, 1e-7, 1 - 1e-7))


_DEFAULT_NAMES = {"MeanSquaredError": "mean_squared_error",
                  "BinaryCrossentropy": "binary_crossentropy",
                  "CategoricalCrossentropy": "categorical_crossentropy",
                  "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy"}
_CLASSES: dict[str, Any] = {"MeanSquaredError": MeanSquaredError, "BinaryCrossentropy": BinaryCrossentropy,
            "CategoricalCrossentropy": CategoricalCrossentropy,
            "SparseCategoricalCrossentropy": SparseCategoricalCrossentropy}
_NAMES: dict[str, Any] = {"mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
          "meansquarederror": MeanSquaredError,
          "binary_crossentropy": BinaryCrossentropy, "bce": BinaryCrossentropy,
          "binarycrossentropy": BinaryCrossentropy,
          "categorical_crossentropy": CategoricalCrossentropy,
          "categoricalcrossentropy": CategoricalCrossentropy,
          "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
          "sparsecategoricalcrossentropy": SparseCategoricalCrossentropy}


def get(identifier, where: str = "loss") -> Loss:
    """A Loss from a name ("mse", "sparse_categorical_crossentropy", ...) or a Loss."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Loss):
        return identifier()
    if isinstance(identifier, str):
        cls = _NAMES.get(identifier.strip().lower()) or _CLASSES.get(identifier)
        if cls is None:
            raise ValueError(f"{where}: unknown loss {identifier!r}; expected one of "
                             f"{', '.join(sorted(set(_NAMES) - {'meansquarederror', 'binarycrossentropy', 'categoricalcrossentropy', 'sparsecategoricalcrossentropy'}))}"
                             " or a fastgrad.losses.Loss")
        return cls()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if identifier is None:
        raise ValueError(f"{where}: a loss is required")
    if callable(identifier) and not isinstance(identifier, type):
        # a plain function of (y_true, y_pred) written with fg.math: gradient derived
        return LossFunctionWrapper(identifier)
    raise TypeError(f"{where}: expected a loss name or a fastgrad.losses.Loss, got {identifier!r}")


def serialize(loss: Loss) -> dict:
    return {"class_name": type(loss).__name__, "config": loss.get_config()}


def deserialize(d: dict) -> Loss:
    cls = _CLASSES.get(str(d.get("class_name")))
    if cls is None:
        raise ValueError(f"unknown loss class {d.get('class_name')!r}")
    return cls.from_config(d.get("config", {}))


def mean_squared_error(y_true, y_pred):
    return MeanSquaredError()(y_true, y_pred)


def binary_crossentropy(y_true, y_pred, from_logits=False):
    return BinaryCrossentropy(from_logits=from_logits)(y_true, y_pred)


def categorical_crossentropy(y_true, y_pred, from_logits=False):
    return CategoricalCrossentropy(from_logits=from_logits)(y_true, y_pred)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False):
    return SparseCategoricalCrossentropy(from_logits=from_logits)(y_true, y_pred)


mse = mean_squared_error


# the further Keras losses (Huber, LogCosh, KLDivergence, ...) live in losses_ext
from . import losses_ext as _ext  # noqa: E402
from .losses_ext import *  # noqa: E402,F401,F403

__all__ += _ext.__all__
_CLASSES.update(_ext.CLASSES)
_NAMES.update(_ext.NAMES)
_DEFAULT_NAMES.update(_ext.DEFAULT_NAMES)
