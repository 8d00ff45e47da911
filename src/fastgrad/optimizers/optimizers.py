"""Optimizers (Keras 3 names, defaults and update rules) over flat buffers.

The model keeps every trainable parameter in one contiguous float32 buffer and
the gradients in a twin buffer; an optimizer keeps each of its slots
(momentum, Adam's m and v, ...) as one more flat buffer of the same length.
`apply_gradients` then runs ONE ops update call over the whole buffer per
step (one call per trainable segment when some layers are frozen).

Per step, in this order (Keras 3): clip the gradients (clipnorm per tensor,
or global_clipnorm over all, or clipvalue element-wise — at most one of them),
evaluate the learning rate (a float, or a schedule called with
`iterations`), apply decoupled weight decay p -= lr * wd * p (Keras's
`weight_decay`, AdamW's), apply the update, then `iterations += 1`.

State for save / resume: `get_state()` -> {"iterations": int, slot: array},
`set_state(state)`.

The compiled plan (engine/compiled.py) asks an optimizer for its C description
through the public `lower(ctx)`: the kind of the C header's optimizer table
(`ctx.optimizer_code(name)`), its hyper-parameters and its slot arrays as
s1/s2/s3. The base class has no C path (it raises `ctx.unsupported`), so a
user-defined optimizer runs on the Python step; a subclass of a built-in one
that replaces its update rule (`_update` / `apply_gradients`) falls back too.
"""
from __future__ import annotations

import math
import numbers

from typing import Any, Sequence

import numpy as np

from ..utils.validation import check_number

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "get", "serialize",
           "deserialize"]


_hp = check_number   # shared wording: fastgrad.utils.validation


class Optimizer:
    """Base class of the optimizers, which update flat parameter buffers.

    A subclass lists its slots in ``_slots`` (name -> initial value) and
    implements ``_update(ops, p, g, slots, lr, wd)`` on flat float32 views.

    Parameters
    ----------
    learning_rate : float, LearningRateSchedule or None, default None
        Step size, or a schedule called with the step number (None: the
        class's Keras default).
    weight_decay : float or None, default None
        Decoupled weight decay: ``p -= lr * weight_decay * p`` before the update.
    clipnorm : float or None, default None
        Clip each gradient tensor to this L2 norm.
    clipvalue : float or None, default None
        Clip gradients element-wise to ``[-clipvalue, clipvalue]``.
    global_clipnorm : float or None, default None
        Clip all gradients together to this global L2 norm (at most one of
        the three clipping options may be set).
    name : str or None, default None
        Name (None: the snake-case class name).
    **kwargs
        ``use_ema`` is accepted and ignored; anything else is a TypeError.

    Raises
    ------
    ValueError
        If a hyper-parameter is out of range, or more than one clipping option is set.
    TypeError
        If an unknown keyword argument is given.
    """

    _slots: dict = {}
    _default_lr = 0.001

    def __init__(self, learning_rate: Any = None, weight_decay: float | None = None,
                 clipnorm: float | None = None, clipvalue: float | None = None,
                 global_clipnorm: float | None = None, name: str | None = None, **kwargs: Any) -> None:
        cls = type(self).__name__
        kwargs.pop("use_ema", None)
        if kwargs:
            raise TypeError(f"{cls}: unexpected keyword argument(s) {', '.join(sorted(kwargs))}")
        self.name = name or _snake(cls)
        self.learning_rate = self._default_lr if learning_rate is None else learning_rate
        self.weight_decay = _hp(cls, "weight_decay", weight_decay, lo=0.0, allow_none=True)
        self.clipnorm = _hp(cls, "clipnorm", clipnorm, lo=0.0, lo_open=True, allow_none=True)
        self.clipvalue = _hp(cls, "clipvalue", clipvalue, lo=0.0, lo_open=True, allow_none=True)
        self.global_clipnorm = _hp(cls, "global_clipnorm", global_clipnorm, lo=0.0, lo_open=True,
                                   allow_none=True)
        if sum(v is not None for v in (self.clipnorm, self.clipvalue, self.global_clipnorm)) > 1:
            raise ValueError(f"{cls}: only one of clipnorm, clipvalue and global_clipnorm can be set")
        self.iterations = 0
        self.slots: dict = {}
        self._n: int | None = None
        self._views_cache = None

    # ------------------------------------------------------------------ lr
    @property
    def learning_rate(self) -> Any:
        """A float, or the schedule object given (callbacks may assign a float)."""
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value: Any) -> None:
        cls = type(self).__name__
        if callable(value) and not isinstance(value, numbers.Real):
            self._learning_rate = value
            return
        if isinstance(value, np.ndarray) and value.size == 1:
            value = float(value)
        self._learning_rate = _hp(cls, "learning_rate", value, lo=0.0)

    lr = learning_rate

    def current_learning_rate(self) -> float:
        """The learning rate of the next step (a schedule evaluated at `iterations`).

        Returns
        -------
        float
            The learning rate.

        Raises
        ------
        ValueError
            If a schedule returns a negative or non-finite value.
        """
        lr = self._learning_rate
        if isinstance(lr, float):
            return lr
        v = float(lr(self.iterations))
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{type(self).__name__}: learning-rate schedule returned {v} at "
                             f"step {self.iterations}")
        return v

    # ------------------------------------------------------------------ state
    def build(self, n: int) -> None:
        """Allocate the flat slot buffers for `n` parameters.

        The buffers are kept when the size is unchanged, so recompiling with
        the same optimizer resumes.

        Parameters
        ----------
        n : int
            Number of parameters (length of the flat parameter buffer).
        """
        if self._n == n and len(self.slots) == len(self._active_slots()):
            return
        from ..engine.params import aligned_zeros     # 64-byte aligned, like the parameters
        self.slots = {}
        for name, init in self._active_slots().items():
            a = aligned_zeros(n)
            if init:
                a.fill(init)
            self.slots[name] = a
        self._n = n
        self._views_cache = None

    def _active_slots(self) -> dict:
        return dict(self._slots)

    @property
    def built(self) -> bool:
        """Whether the slot buffers are allocated."""
        return self._n is not None

    @property
    def num_params(self) -> int | None:
        """The parameter count the slots were built for (None before build)."""
        return self._n

    def get_state(self) -> dict:
        """The optimizer state, for saving and resuming.

        Returns
        -------
        dict
            ``{"iterations": int, slot name: copy of its flat array, ...}``.
        """
        st = {"iterations": int(self.iterations)}
        st.update({k: np.array(v, copy=True) for k, v in self.slots.items()})
        return st

    def set_state(self, state: dict) -> None:
        """Restore what :meth:`get_state` returned.

        Parameters
        ----------
        state : dict
            ``{"iterations": int, slot name: flat array, ...}`` with exactly
            this optimizer's slots, all of one size.

        Raises
        ------
        ValueError
            If the slots or their sizes do not match.
        """
        cls = type(self).__name__
        names = set(self._active_slots())
        given = set(state) - {"iterations"}
        if given != names:
            raise ValueError(f"{cls}.set_state: expected slots {sorted(names)}, got {sorted(given)}")
        sizes = {np.asarray(state[k]).size for k in names}
        if len(sizes) > 1 or (self._n is not None and sizes and sizes != {self._n}):
            raise ValueError(f"{cls}.set_state: slot sizes {sorted(sizes)} do not match the model's "
                             f"{self._n} parameters")
        it = int(state.get("iterations", 0))
        if it < 0:
            raise ValueError(f"{cls}.set_state: iterations must be >= 0, got {it}")
        if names:
            n = sizes.pop()
            self.slots = {k: np.ascontiguousarray(state[k], dtype=np.float32).reshape(-1).copy()
                          for k in names}
            self._n = n
        self.iterations = it
        self._views_cache = None

    # ------------------------------------------------------------------ step
    def _segment_views(self, param, grad, segments):
        key = (id(param), id(grad), segments)
        c = self._views_cache
        if c is not None and c[0] == key:
            return c[1]
        if segments is None:
            views = [(param, grad, self.slots)]
        else:
            views = [(param[s:e], grad[s:e], {k: v[s:e] for k, v in self.slots.items()})
                     for s, e in segments]
        self._views_cache = (key, views)
        return views

    def apply_gradients(self, ops: Any, param: np.ndarray | None = None, grad: np.ndarray | None = None,
                        grad_views: Sequence[np.ndarray] | None = None,
                        segments: Sequence[tuple[int, int]] | None = None) -> None:
        """One optimizer step over flat parameter and gradient buffers.

        Clips the gradients, evaluates the learning rate, applies the
        decoupled weight decay and the update, then counts the step.
        Keras's form, ``apply_gradients(zip(grads, variables))`` (a custom
        training loop, docs/autodiff.md), runs the same update kernel over the
        model's flat buffers.

        Parameters
        ----------
        ops : Ops or iterable of (gradient, Variable)
            The backend that runs the update; in Keras's form, the
            ``zip(grads, variables)`` pairs.
        param : numpy.ndarray or None, default None
            Flat float32 parameters, updated in place.
        grad : numpy.ndarray or None, default None
            Flat float32 gradients of the same length (clipped in place).
        grad_views : sequence of numpy.ndarray or None, default None
            The per-tensor views of `grad` (for `clipnorm`).
        segments : sequence of (int, int) or None, default None
            The trainable ``(start, stop)`` ranges (None: the whole buffer).

        Returns
        -------
        None
            The parameters and slots are updated in place.
        """
        if param is None:
            from ..autodiff.subclass import apply_gradients as _keras_form
            return _keras_form(self, ops)
        if self._n != param.shape[0]:
            self.build(param.shape[0])
        # the thresholds as float32 (Keras's variables are float32; the compiled plan's
        # C description holds float32, so both executors scale by the same factor)
        if self.clipnorm is not None:
            for g in (grad_views if grad_views is not None else (grad,)):
                ops.clip_by_norm(g, float(np.float32(self.clipnorm)))
        elif self.global_clipnorm is not None:
            ops.clip_by_norm(grad, float(np.float32(self.global_clipnorm)))
        elif self.clipvalue is not None:
            ops.clip_by_value(grad, -self.clipvalue, self.clipvalue)
        lr = self.current_learning_rate()
        wd = self.weight_decay or 0.0
        for p, g, slots in self._segment_views(param, grad, segments):
            self._update(ops, p, g, slots, lr, wd)
        self.iterations += 1

    def _update(self, ops: Any, p: np.ndarray, g: np.ndarray, slots: dict, lr: float, wd: float) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ compiled plan
    def lower(self, ctx: Any) -> dict:
        """This optimizer's C description for the compiled training plan.

        The base class has no C path: it raises ``ctx.unsupported`` and the
        model trains on the Python step.

        Parameters
        ----------
        ctx : LowerContext
            The compiled plan's context (engine/compiled.py).

        Returns
        -------
        dict
            ``kind=ctx.optimizer_code(...)``, the hyper-parameters and the
            slot arrays as s1 / s2 / s3.
        """
        raise ctx.unsupported(f"optimizer {type(self).__name__} has no C path")

    def _lower_common(self, ctx, rule_of, kind):
        """The fields every C optimizer shares, after building the slots for the
        plan's parameter count. `rule_of`: the class whose update rule the C kind
        implements (a subclass that replaces it has no C path)."""
        cls = type(self)
        if cls._update is not rule_of._update or cls.apply_gradients is not Optimizer.apply_gradients:
            raise ctx.unsupported(f"optimizer {cls.__name__} replaces the update rule of "
                                  f"{rule_of.__name__}: no C path")
        n = ctx.n_params
        if not self.built or self._n != n:
            self.build(n)
        return dict(kind=ctx.optimizer_code(kind), decoupled=True,
                    weight_decay=float(self.weight_decay or 0.0),
                    clipnorm=self.clipnorm or 0.0, global_clipnorm=self.global_clipnorm or 0.0,
                    clipvalue=self.clipvalue or 0.0)

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict:
        """The constructor arguments as a dict (Keras config).

        Returns
        -------
        dict
            Keyword arguments that rebuild this optimizer (a schedule serialized).
        """
        lr = self._learning_rate
        if not isinstance(lr, float):
            from . import schedules
            try:
                lr = schedules.serialize(lr)
            except TypeError:
                lr = repr(lr)
        return {"name": self.name, "learning_rate": lr, "weight_decay": self.weight_decay,
                "clipnorm": self.clipnorm, "clipvalue": self.clipvalue,
                "global_clipnorm": self.global_clipnorm}

    @classmethod
    def from_config(cls, config: dict) -> Optimizer:
        """Build an optimizer from :meth:`get_config`'s output.

        Parameters
        ----------
        config : dict
            Constructor keyword arguments (a serialized schedule is rebuilt).

        Returns
        -------
        Optimizer
            The new optimizer.
        """
        cfg = dict(config)
        lr = cfg.get("learning_rate")
        if isinstance(lr, dict):
            from . import schedules
            cfg["learning_rate"] = schedules.deserialize(lr)
        return cls(**cfg)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(learning_rate={self._learning_rate!r})"


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum.

    ``p -= lr * g``; with momentum ``v = momentum * v - lr * g; p += v``
    (Nesterov: ``p += momentum * v - lr * g``).

    Parameters
    ----------
    learning_rate : float or LearningRateSchedule, default 0.01
        Step size, or a schedule called with the step number.
    momentum : float, default 0.0
        Momentum factor in [0, 1].
    nesterov : bool, default False
        Use Nesterov momentum.
    weight_decay : float or None, default None
        Decoupled weight decay: ``p -= lr * weight_decay * p`` before the update.
    clipnorm : float or None, default None
        Clip each gradient tensor to this L2 norm.
    clipvalue : float or None, default None
        Clip gradients element-wise to ``[-clipvalue, clipvalue]``.
    global_clipnorm : float or None, default None
        Clip all gradients together to this global L2 norm.
    name : str or None, default None
        Name (None: the snake-case class name).
    **kwargs
        ``use_ema`` is accepted and ignored.

    Examples
    --------
    >>> import fastgrad as fg
    >>> fg.optimizers.SGD(learning_rate=0.1, momentum=0.9).get_config()["momentum"]
    0.9
    """

    _default_lr = 0.01

    def __init__(self, learning_rate: Any = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float | None = None, clipnorm: float | None = None,
                 clipvalue: float | None = None, global_clipnorm: float | None = None,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name,
                         **kwargs)
        self.momentum = _hp("SGD", "momentum", momentum, lo=0.0, hi=1.0)
        self.nesterov = bool(nesterov)

    def _active_slots(self):
        return {"momentum": 0.0} if self.momentum > 0 else {}

    def _update(self, ops, p, g, slots, lr, wd):
        ops.sgd_update(p, g, lr=lr, momentum=self.momentum, velocity=slots.get("momentum"),
                       nesterov=self.nesterov, weight_decay=wd, decoupled=True)

    def lower(self, ctx):
        d = self._lower_common(ctx, SGD, "sgd")
        d.update(momentum=float(self.momentum), nesterov=self.nesterov,
                 s1=self.slots.get("momentum"))
        return d

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adagrad(Optimizer):
    """Adagrad: ``acc += g**2; p -= lr * g / sqrt(acc + epsilon)``.

    Parameters
    ----------
    learning_rate : float or LearningRateSchedule, default 0.001
        Step size, or a schedule called with the step number.
    initial_accumulator_value : float, default 0.1
        Starting value of the accumulator.
    epsilon : float, default 1e-7
        Added inside the square root.
    weight_decay : float or None, default None
        Decoupled weight decay: ``p -= lr * weight_decay * p`` before the update.
    clipnorm : float or None, default None
        Clip each gradient tensor to this L2 norm.
    clipvalue : float or None, default None
        Clip gradients element-wise to ``[-clipvalue, clipvalue]``.
    global_clipnorm : float or None, default None
        Clip all gradients together to this global L2 norm.
    name : str or None, default None
        Name (None: the snake-case class name).
    **kwargs
        ``use_ema`` is accepted and ignored.
    """

    def __init__(self, learning_rate: Any = 0.001, initial_accumulator_value: float = 0.1,
                 epsilon: float = 1e-7, weight_decay: float | None = None, clipnorm: float | None = None,
                 clipvalue: float | None = None, global_clipnorm: float | None = None,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name,
                         **kwargs)
        self.initial_accumulator_value = _hp("Adagrad", "initial_accumulator_value",
                                             initial_accumulator_value, lo=0.0)
        self.epsilon = _hp("Adagrad", "epsilon", epsilon, lo=0.0)

    def _active_slots(self):
        return {"accumulator": self.initial_accumulator_value}

    def _update(self, ops, p, g, slots, lr, wd):
        ops.adagrad_update(p, g, slots["accumulator"], lr=lr, eps=self.epsilon, weight_decay=wd,
                           decoupled=True)

    def lower(self, ctx):
        d = self._lower_common(ctx, Adagrad, "adagrad")
        d.update(eps=float(self.epsilon), s1=self.slots["accumulator"])
        return d

    def get_config(self):
        return {**super().get_config(), "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon}


class RMSprop(Optimizer):
    """RMSprop: divide the gradient by a running root mean square.

    ``ms = rho * ms + (1 - rho) * g**2``; centered: ``mg = rho * mg + (1 - rho) * g``
    and ``denom = ms - mg**2``; ``inc = lr * g / sqrt(denom + epsilon)``; with
    momentum ``m = momentum * m + inc; p -= m``, else ``p -= inc``.

    Parameters
    ----------
    learning_rate : float or LearningRateSchedule, default 0.001
        Step size, or a schedule called with the step number.
    rho : float, default 0.9
        Decay of the running mean square, in [0, 1].
    momentum : float, default 0.0
        Momentum factor in [0, 1].
    epsilon : float, default 1e-7
        Added inside the square root.
    centered : bool, default False
        Normalise by the variance estimate instead of the mean square.
    weight_decay : float or None, default None
        Decoupled weight decay: ``p -= lr * weight_decay * p`` before the update.
    clipnorm : float or None, default None
        Clip each gradient tensor to this L2 norm.
    clipvalue : float or None, default None
        Clip gradients element-wise to ``[-clipvalue, clipvalue]``.
    global_clipnorm : float or None, default None
        Clip all gradients together to this global L2 norm.
    name : str or None, default None
        Name (None: the snake-case class name).
    **kwargs
        ``use_ema`` is accepted and ignored.
    """

    def __init__(self, learning_rate: Any = 0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False, weight_decay: float | None = None,
                 clipnorm: float | None = None, clipvalue: float | None = None,
                 global_clipnorm: float | None = None, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name,
                         **kwargs)
        self.rho = _hp("RMSprop", "rho", rho, lo=0.0, hi=1.0)
        self.momentum = _hp("RMSprop", "momentum", momentum, lo=0.0, hi=1.0)
        self.epsilon = _hp("RMSprop", "epsilon", epsilon, lo=0.0)
        self.centered = bool(centered)

    def _active_slots(self):
        s = {"velocity": 0.0}
        if self.momentum > 0:
            s["momentum"] = 0.0
        if self.centered:
            s["average_gradient"] = 0.0
        return s

    def _update(self, ops, p, g, slots, lr, wd):
        ops.rmsprop_update(p, g, slots["velocity"], lr=lr, rho=self.rho, eps=self.epsilon,
                           momentum=self.momentum, mom=slots.get("momentum"),
                           centered=self.centered, mg=slots.get("average_gradient"),
                           weight_decay=wd, decoupled=True)

    def lower(self, ctx):
        d = self._lower_common(ctx, RMSprop, "rmsprop")
        s = self.slots
        d.update(rho=float(self.rho), momentum=float(self.momentum), eps=float(self.epsilon),
                 centered=self.centered, s1=s["velocity"], s2=s.get("momentum"),
                 s3=s.get("average_gradient"))
        return d

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}


class Adam(Optimizer):
    """Adam: adaptive moment estimation.

    ``m = b1 * m + (1 - b1) * g; v = b2 * v + (1 - b2) * g**2;
    p -= lr * sqrt(1 - b2**t) / (1 - b1**t) * m / (sqrt(v) + epsilon)`` with
    ``t = iterations + 1``.

    Parameters
    ----------
    learning_rate : float or LearningRateSchedule, default 0.001
        Step size, or a schedule called with the step number.
    beta_1 : float, default 0.9
        Decay of the first moment, in [0, 1).
    beta_2 : float, default 0.999
        Decay of the second moment, in [0, 1).
    epsilon : float, default 1e-7
        Added to the denominator.
    amsgrad : bool, default False
        Use the running maximum of the second moment (AMSGrad).
    weight_decay : float or None, default None
        Decoupled weight decay: ``p -= lr * weight_decay * p`` before the update.
    clipnorm : float or None, default None
        Clip each gradient tensor to this L2 norm.
    clipvalue : float or None, default None
        Clip gradients element-wise to ``[-clipvalue, clipvalue]``.
    global_clipnorm : float or None, default None
        Clip all gradients together to this global L2 norm.
    name : str or None, default None
        Name (None: the snake-case class name).
    **kwargs
        ``use_ema`` is accepted and ignored.
    """

    def __init__(self, learning_rate: Any = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, amsgrad: bool = False, weight_decay: float | None = None,
                 clipnorm: float | None = None, clipvalue: float | None = None,
                 global_clipnorm: float | None = None, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name,
                         **kwargs)
        cls = type(self).__name__
        self.amsgrad = bool(amsgrad)
        self.beta_1 = _hp(cls, "beta_1", beta_1, lo=0.0, hi=1.0, hi_open=True)
        self.beta_2 = _hp(cls, "beta_2", beta_2, lo=0.0, hi=1.0, hi_open=True)
        self.epsilon = _hp(cls, "epsilon", epsilon, lo=0.0)

    _slots = {"m": 0.0, "v": 0.0}

    def _active_slots(self):
        return {"m": 0.0, "v": 0.0, "vhat": 0.0} if self.amsgrad else {"m": 0.0, "v": 0.0}

    def _update(self, ops, p, g, slots, lr, wd):
        if self.amsgrad:     # Keras: v_hat = max(v_hat, v) in the denominator
            ops.adam_amsgrad_update(p, g, slots["m"], slots["v"], slots["vhat"], lr=lr,
                                    beta1=self.beta_1, beta2=self.beta_2, eps=self.epsilon,
                                    step=self.iterations + 1, weight_decay=wd, decoupled=True)
            return
        ops.adam_update(p, g, slots["m"], slots["v"], lr=lr, beta1=self.beta_1, beta2=self.beta_2,
                        eps=self.epsilon, step=self.iterations + 1, weight_decay=wd,
                        decoupled=True)

    def lower(self, ctx):
        """Adam and AdamW (its decoupled weight decay is the shared weight_decay field)."""
        d = self._lower_common(ctx, Adam, "adam_amsgrad" if self.amsgrad else "adam")
        d.update(beta1=float(self.beta_1), beta2=float(self.beta_2), eps=float(self.epsilon),
                 s1=self.slots["m"], s2=self.slots["v"], s3=self.slots.get("vhat"))
        return d

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay (Keras's default 0.004).

    Parameters
    ----------
    learning_rate : float or LearningRateSchedule, default 0.001
        Step size, or a schedule called with the step number.
    weight_decay : float, default 0.004
        Decoupled weight decay: ``p -= lr * weight_decay * p`` before the update.
    beta_1 : float, default 0.9
        Decay of the first moment, in [0, 1).
    beta_2 : float, default 0.999
        Decay of the second moment, in [0, 1).
    epsilon : float, default 1e-7
        Added to the denominator.
    amsgrad : bool, default False
        Use the running maximum of the second moment (AMSGrad).
    clipnorm : float or None, default None
        Clip each gradient tensor to this L2 norm.
    clipvalue : float or None, default None
        Clip gradients element-wise to ``[-clipvalue, clipvalue]``.
    global_clipnorm : float or None, default None
        Clip all gradients together to this global L2 norm.
    name : str or None, default None
        Name (None: "adamw").
    **kwargs
        ``use_ema`` is accepted and ignored.

    Raises
    ------
    ValueError
        If `weight_decay` is None or negative.
    """

    def __init__(self, learning_rate: Any = 0.001, weight_decay: float = 0.004, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7, amsgrad: bool = False,
                 clipnorm: float | None = None, clipvalue: float | None = None,
                 global_clipnorm: float | None = None, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay, clipnorm,
                         clipvalue, global_clipnorm, name, **kwargs)
        if self.weight_decay is None:
            raise ValueError("AdamW: weight_decay must be a number >= 0, got None")


def _snake(name):
    return {"SGD": "sgd", "RMSprop": "rmsprop", "AdamW": "adamw"}.get(name, name.lower())


def _register(classes):
    """Add optimizer classes (optimizers_ext) to get / deserialize."""
    for c in classes:
        _CLASSES[c.__name__] = c
        _NAMES[c.__name__.lower()] = c


_CLASSES: dict[str, type[Optimizer]] = {"SGD": SGD, "Adagrad": Adagrad, "RMSprop": RMSprop, "Adam": Adam, "AdamW": AdamW}
_NAMES = {k.lower(): v for k, v in _CLASSES.items()}


def get(identifier: str | dict | Optimizer, where: str = "optimizer") -> Optimizer:
    """The optimizer a user passes to ``compile(optimizer=...)``.

    Parameters
    ----------
    identifier : str, dict or Optimizer
        A name ("adam", "sgd", ...; Keras defaults), a serialized config, or an
        optimizer (returned as is).
    where : str, default "optimizer"
        What to name in an error message.

    Returns
    -------
    Optimizer
        The optimizer.

    Raises
    ------
    ValueError
        If the name is unknown.
    TypeError
        If `identifier` has another type.
    """
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Optimizer):
        return identifier()
    if isinstance(identifier, str):
        cls = _NAMES.get(identifier.strip().lower())
        if cls is None:
            raise ValueError(f"{where}: unknown optimizer {identifier!r}; expected one of "
                             f"{', '.join(sorted(_NAMES))} or a fastgrad.optimizers.Optimizer")
        return cls()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    raise TypeError(f"{where}: expected an optimizer name or a fastgrad.optimizers.Optimizer, "
                    f"got {identifier!r}")


def serialize(opt: Optimizer) -> dict:
    """An optimizer as a Keras-style ``{"class_name", "config"}`` dict.

    Parameters
    ----------
    opt : Optimizer
        The optimizer.

    Returns
    -------
    dict
        Its serialized form.
    """
    return {"class_name": type(opt).__name__, "config": opt.get_config()}


def deserialize(d: dict) -> Optimizer:
    """Rebuild an optimizer from :func:`serialize`'s output.

    Parameters
    ----------
    d : dict
        A ``{"class_name", "config"}`` dict.

    Returns
    -------
    Optimizer
        The optimizer.

    Raises
    ------
    ValueError
        If the class name is unknown.
    """
    cls = _CLASSES.get(str(d.get("class_name")))
    if cls is None:
        raise ValueError(f"unknown optimizer class {d.get('class_name')!r}")
    return cls.from_config(d.get("config", {}))
