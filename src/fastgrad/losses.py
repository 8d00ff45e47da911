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

import numpy as np

__all__ = ["Loss", "LossFunctionWrapper", "MeanSquaredError", "BinaryCrossentropy", "CategoricalCrossentropy",
           "SparseCategoricalCrossentropy", "get", "serialize", "deserialize",
           "mean_squared_error", "binary_crossentropy", "categorical_crossentropy",
           "sparse_categorical_crossentropy", "LABEL_DTYPE"]

#: dtype of integer labels handed to the sparse kernels
LABEL_DTYPE = np.int32


class Loss:
    """Base class.  Subclasses implement `compute(ops, out, target, sw, grad_out, logits)`."""

    target_kind = "dense"
    fusable_activation = None   # output activation this loss can take over
    from_logits = False

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        from .autodiff.losses import REDUCTIONS
        custom = type(self).call is not Loss.call
        if reduction not in (REDUCTIONS if custom else ("sum_over_batch_size", "auto", None)):
            raise ValueError(f"{type(self).__name__}: reduction must be one of "
                             f"{REDUCTIONS if custom else ('sum_over_batch_size',)}, "
                             f"got {reduction!r}")
        self.reduction = ("none" if reduction is None and custom else
                          "sum_over_batch_size" if reduction is None else reduction)
        self.name = name or _DEFAULT_NAMES.get(type(self).__name__, _snake(type(self).__name__))

    def call(self, y_true, y_pred):
        """Per-sample loss values written with fg.math (Keras's Loss.call): a
        subclass that defines it gets its gradient derived (docs/autodiff.md)."""
        raise NotImplementedError(f"{type(self).__name__}.call")

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
        loss, _ = self.compute(ops, pred, target, sw, np.empty_like(pred), self.from_logits)
        return loss

    def get_config(self) -> dict:
        if type(self).call is not Loss.call:
            return {"name": self.name, "reduction": self.reduction}
        return {"name": self.name}

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
        return ops.mse(out, target, sample_weight, grad_out)

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
        return {"name": self.name, "from_logits": self.from_logits}


class BinaryCrossentropy(_CrossEntropy):
    _fuse = "sigmoid"

    def compute(self, ops, out, target, sample_weight, grad_out, logits):
        if logits:
            return ops.binary_crossentropy_from_logits(out, target, sample_weight, grad_out)
        return ops.binary_crossentropy(out, target, sample_weight, grad_out)

    def lower(self, ctx, on_logits):
        return self._lower_code(ctx, BinaryCrossentropy, on_logits, "sigmoid_bce")


class CategoricalCrossentropy(_CrossEntropy):
    _fuse = "softmax"

    def compute(self, ops, out, target, sample_weight, grad_out, logits):
        if logits:
            return ops.softmax_crossentropy(out, target, sample_weight, grad_out)
        return ops.categorical_crossentropy(out, target, sample_weight, grad_out)

    def lower(self, ctx, on_logits):
        return self._lower_code(ctx, CategoricalCrossentropy, on_logits, "softmax_xent")


class SparseCategoricalCrossentropy(_CrossEntropy):
    _fuse = "softmax"
    target_kind = "sparse"

    def compute(self, ops, out, target, sample_weight, grad_out, logits):
        if logits:
            return ops.sparse_softmax_crossentropy(out, target, sample_weight, grad_out)
        # probabilities without a softmax to absorb: one-hot the labels (rare path)
        onehot = np.zeros(out.shape, dtype=out.dtype)
        onehot[np.arange(out.shape[0]), target] = 1
        return ops.categorical_crossentropy(out, onehot, sample_weight, grad_out)

    def lower(self, ctx, on_logits):
        return self._lower_code(ctx, SparseCategoricalCrossentropy, on_logits,
                                "sparse_softmax_xent")


_DEFAULT_NAMES = {"MeanSquaredError": "mean_squared_error",
                  "BinaryCrossentropy": "binary_crossentropy",
                  "CategoricalCrossentropy": "categorical_crossentropy",
                  "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy"}
_CLASSES = {"MeanSquaredError": MeanSquaredError, "BinaryCrossentropy": BinaryCrossentropy,
            "CategoricalCrossentropy": CategoricalCrossentropy,
            "SparseCategoricalCrossentropy": SparseCategoricalCrossentropy}
_NAMES = {"mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
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
    cls = _CLASSES.get(d.get("class_name"))
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
