"""Nadam, Adamax, Adadelta, Ftrl and Lion (Keras 3 names, defaults and update
rules), each one fused ops call over the flat buffer (C: csrc/lossopt's
fg_optx_update; NumPy twin: backend/numpy_lossopt.py, the same bits), lowered
to the compiled plan's optimizer kinds. Clipping, learning-rate schedules,
decoupled weight_decay, get_config / from_config and get_state / set_state are
the base Optimizer's. Re-exported by fastgrad.optimizers."""
from __future__ import annotations

from typing import Any

from ..utils.validation import check_number as _hp
from .optimizers import Optimizer

__all__ = ["Nadam", "Adamax", "Adadelta", "Ftrl", "Lion"]


class Nadam(Optimizer):
    """Adam with Nesterov momentum (Keras 3's Nadam).

    Keras's momentum schedule ``u_t = beta_1 * (1 - 0.5 * 0.96**t)``; formulas
    in csrc/lossopt/fg_lossopt.h. It differs from ``torch.optim.NAdam``, whose
    decay constant is ``momentum_decay=0.004`` and whose epsilon sits after
    the bias correction.

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
    weight_decay : float or None, default None
        Decoupled weight decay: ``p -= lr * weight_decay * p`` before the update.
    clipnorm : float or None, default None
        Clip each gradient tensor to this L2 norm.
    clipvalue : float or None, default None
        Clip gradients element-wise to ``[-clipvalue, clipvalue]``.
    global_clipnorm : float or None, default None
        Clip all gradients together to this global L2 norm.
    name : str or None, default None
        Name (None: the lower-case class name).
    **kwargs
        ``use_ema`` is accepted and ignored.
    """

    _slots = {"m": 0.0, "v": 0.0}

    def __init__(self, learning_rate: Any = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, weight_decay: float | None = None, clipnorm: float | None = None,
                 clipvalue: float | None = None, global_clipnorm: float | None = None,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name,
                         **kwargs)
        self.beta_1 = _hp("Nadam", "beta_1", beta_1, lo=0.0, hi=1.0, hi_open=True)
        self.beta_2 = _hp("Nadam", "beta_2", beta_2, lo=0.0, hi=1.0, hi_open=True)
        self.epsilon = _hp("Nadam", "epsilon", epsilon, lo=0.0)

    def _update(self, ops, p, g, slots, lr, wd):
        ops.nadam_update(p, g, slots["m"], slots["v"], lr=lr, beta1=self.beta_1, beta2=self.beta_2,
                         eps=self.epsilon, step=self.iterations + 1, weight_decay=wd, decoupled=True)

    def lower(self, ctx):
        d = self._lower_common(ctx, Nadam, "nadam")
        d.update(beta1=float(self.beta_1), beta2=float(self.beta_2), eps=float(self.epsilon),
                 s1=self.slots["m"], s2=self.slots["v"])
        return d

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}


class Adamax(Optimizer):
    """Adamax, Adam with the infinity norm (Keras 3's).

    ``m = b1 * m + (1 - b1) * g; u = max(b2 * u, abs(g));
    p -= lr * m / ((1 - b1**t) * (u + epsilon))``.

    Parameters
    ----------
    learning_rate : float or LearningRateSchedule, default 0.001
        Step size, or a schedule called with the step number.
    beta_1 : float, default 0.9
        Decay of the first moment, in [0, 1).
    beta_2 : float, default 0.999
        Decay of the infinity norm, in [0, 1).
    epsilon : float, default 1e-7
        Added to the denominator.
    weight_decay : float or None, default None
        Decoupled weight decay: ``p -= lr * weight_decay * p`` before the update.
    clipnorm : float or None, default None
        Clip each gradient tensor to this L2 norm.
    clipvalue : float or None, default None
        Clip gradients element-wise to ``[-clipvalue, clipvalue]``.
    global_clipnorm : float or None, default None
        Clip all gradients together to this global L2 norm.
    name : str or None, default None
        Name (None: the lower-case class name).
    **kwargs
        ``use_ema`` is accepted and ignored.
    """

    _slots = {"m": 0.0, "u": 0.0}

    def __init__(self, learning_rate: Any = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, weight_decay: float | None = None, clipnorm: float | None = None,
                 clipvalue: float | None = None, global_clipnorm: float | None = None,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name,
                         **kwargs)
        self.beta_1 = _hp("Adamax", "beta_1", beta_1, lo=0.0, hi=1.0, hi_open=True)
        self.beta_2 = _hp("Adamax", "beta_2", beta_2, lo=0.0, hi=1.0)
        self.epsilon = _hp("Adamax", "epsilon", epsilon, lo=0.0)

    def _update(self, ops, p, g, slots, lr, wd):
        ops.adamax_update(p, g, slots["m"], slots["u"], lr=lr, beta1=self.beta_1, beta2=self.beta_2,
                          eps=self.epsilon, step=self.iterations + 1, weight_decay=wd, decoupled=True)

    def lower(self, ctx):
        d = self._lower_common(ctx, Adamax, "adamax")
        d.update(beta1=float(self.beta_1), beta2=float(self.beta_2), eps=float(self.epsilon),
                 s1=self.slots["m"], s2=self.slots["u"])
        return d

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}


class Adadelta(Optimizer):
    """Adadelta (Keras 3's, with its default learning rate 0.001).

    ``a = rho * a + (1 - rho) * g**2; d = -sqrt(b + epsilon) * g / sqrt(a + epsilon);
    b = rho * b + (1 - rho) * d**2; p += lr * d``.

    Parameters
    ----------
    learning_rate : float or LearningRateSchedule, default 0.001
        Step size, or a schedule called with the step number.
    rho : float, default 0.95
        Decay of the running averages, in [0, 1].
    epsilon : float, default 1e-7
        Added inside the square roots.
    weight_decay : float or None, default None
        Decoupled weight decay: ``p -= lr * weight_decay * p`` before the update.
    clipnorm : float or None, default None
        Clip each gradient tensor to this L2 norm.
    clipvalue : float or None, default None
        Clip gradients element-wise to ``[-clipvalue, clipvalue]``.
    global_clipnorm : float or None, default None
        Clip all gradients together to this global L2 norm.
    name : str or None, default None
        Name (None: the lower-case class name).
    **kwargs
        ``use_ema`` is accepted and ignored.
    """

    _slots = {"accumulated_grad": 0.0, "accumulated_delta_var": 0.0}

    def __init__(self, learning_rate: Any = 0.001, rho: float = 0.95, epsilon: float = 1e-7,
                 weight_decay: float | None = None, clipnorm: float | None = None,
                 clipvalue: float | None = None, global_clipnorm: float | None = None,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name,
                         **kwargs)
        self.rho = _hp("Adadelta", "rho", rho, lo=0.0, hi=1.0)
        self.epsilon = _hp("Adadelta", "epsilon", epsilon, lo=0.0)

    def _update(self, ops, p, g, slots, lr, wd):
        ops.adadelta_update(p, g, slots["accumulated_grad"], slots["accumulated_delta_var"], lr=lr,
                            rho=self.rho, eps=self.epsilon, weight_decay=wd, decoupled=True)

    def lower(self, ctx):
        d = self._lower_common(ctx, Adadelta, "adadelta")
        d.update(rho=float(self.rho), eps=float(self.epsilon), s1=self.slots["accumulated_grad"],
                 s2=self.slots["accumulated_delta_var"])
        return d

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}


class Ftrl(Optimizer):
    """FTRL-proximal (Keras 3's; formulas in csrc/lossopt/fg_lossopt.h).

    Parameters
    ----------
    learning_rate : float or LearningRateSchedule, default 0.001
        Step size (> 0), or a schedule called with the step number.
    learning_rate_power : float, default -0.5
        Power of the per-coordinate learning rate (<= 0).
    initial_accumulator_value : float, default 0.1
        Starting value of the accumulator (the linear term starts at 0).
    l1_regularization_strength : float, default 0.0
        L1 strength (>= 0).
    l2_regularization_strength : float, default 0.0
        L2 strength (>= 0).
    l2_shrinkage_regularization_strength : float, default 0.0
        L2 shrinkage strength (>= 0).
    beta : float, default 0.0
        Added to the denominator of the per-coordinate rate.
    weight_decay : float or None, default None
        Decoupled weight decay: ``p -= lr * weight_decay * p`` before the update.
    clipnorm : float or None, default None
        Clip each gradient tensor to this L2 norm.
    clipvalue : float or None, default None
        Clip gradients element-wise to ``[-clipvalue, clipvalue]``.
    global_clipnorm : float or None, default None
        Clip all gradients together to this global L2 norm.
    name : str or None, default None
        Name (None: the lower-case class name).
    **kwargs
        ``use_ema`` is accepted and ignored.
    """

    def __init__(self, learning_rate: Any = 0.001, learning_rate_power: float = -0.5,
                 initial_accumulator_value: float = 0.1, l1_regularization_strength: float = 0.0,
                 l2_regularization_strength: float = 0.0, l2_shrinkage_regularization_strength: float = 0.0,
                 beta: float = 0.0, weight_decay: float | None = None, clipnorm: float | None = None,
                 clipvalue: float | None = None, global_clipnorm: float | None = None,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name,
                         **kwargs)
        if isinstance(self.learning_rate, float) and not self.learning_rate > 0:
            raise ValueError(f"Ftrl: learning_rate must be > 0, got {learning_rate!r}")
        self.learning_rate_power = _hp("Ftrl", "learning_rate_power", learning_rate_power, hi=0.0)
        self.initial_accumulator_value = _hp("Ftrl", "initial_accumulator_value",
                                             initial_accumulator_value, lo=0.0)
        self.l1_regularization_strength = _hp("Ftrl", "l1_regularization_strength",
                                              l1_regularization_strength, lo=0.0)
        self.l2_regularization_strength = _hp("Ftrl", "l2_regularization_strength",
                                              l2_regularization_strength, lo=0.0)
        self.l2_shrinkage_regularization_strength = _hp(
            "Ftrl", "l2_shrinkage_regularization_strength", l2_shrinkage_regularization_strength,
            lo=0.0)
        self.beta = _hp("Ftrl", "beta", beta, lo=0.0)

    def _active_slots(self):
        return {"accumulator": self.initial_accumulator_value, "linear": 0.0}

    def _hps(self):
        return dict(lr_power=self.learning_rate_power, l1=self.l1_regularization_strength,
                    l2=self.l2_regularization_strength,
                    l2_shrinkage=self.l2_shrinkage_regularization_strength, beta=self.beta)

    def _update(self, ops, p, g, slots, lr, wd):
        if not lr > 0:
            raise ValueError(f"Ftrl: learning_rate must be > 0, got {lr} at step {self.iterations}")
        ops.ftrl_update(p, g, slots["accumulator"], slots["linear"], lr=lr, weight_decay=wd,
                        decoupled=True, **self._hps())

    def lower(self, ctx):
        d = self._lower_common(ctx, Ftrl, "ftrl")
        d.update(s1=self.slots["accumulator"], s2=self.slots["linear"], **self._hps())
        return d

    def get_config(self):
        return {**super().get_config(), "learning_rate_power": self.learning_rate_power,
                "initial_accumulator_value": self.initial_accumulator_value,
                "l1_regularization_strength": self.l1_regularization_strength,
                "l2_regularization_strength": self.l2_regularization_strength,
                "l2_shrinkage_regularization_strength": self.l2_shrinkage_regularization_strength,
                "beta": self.beta}


class Lion(Optimizer):
    """Lion, sign-of-momentum updates (Keras 3's).

    ``p -= lr * sign(b1 * m + (1 - b1) * g); m = b2 * m + (1 - b2) * g``.

    Parameters
    ----------
    learning_rate : float or LearningRateSchedule, default 0.001
        Step size, or a schedule called with the step number.
    beta_1 : float, default 0.9
        Interpolation factor of the update, in (0, 1].
    beta_2 : float, default 0.99
        Decay of the momentum, in [0, 1].
    weight_decay : float or None, default None
        Decoupled weight decay: ``p -= lr * weight_decay * p`` before the update.
    clipnorm : float or None, default None
        Clip each gradient tensor to this L2 norm.
    clipvalue : float or None, default None
        Clip gradients element-wise to ``[-clipvalue, clipvalue]``.
    global_clipnorm : float or None, default None
        Clip all gradients together to this global L2 norm.
    name : str or None, default None
        Name (None: the lower-case class name).
    **kwargs
        ``use_ema`` is accepted and ignored.
    """

    _slots = {"momentum": 0.0}

    def __init__(self, learning_rate: Any = 0.001, beta_1: float = 0.9, beta_2: float = 0.99,
                 weight_decay: float | None = None, clipnorm: float | None = None,
                 clipvalue: float | None = None, global_clipnorm: float | None = None,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(learning_rate, weight_decay, clipnorm, clipvalue, global_clipnorm, name,
                         **kwargs)
        self.beta_1 = _hp("Lion", "beta_1", beta_1, lo=0.0, lo_open=True, hi=1.0)
        self.beta_2 = _hp("Lion", "beta_2", beta_2, lo=0.0, hi=1.0)

    def _update(self, ops, p, g, slots, lr, wd):
        ops.lion_update(p, g, slots["momentum"], lr=lr, beta1=self.beta_1, beta2=self.beta_2,
                        weight_decay=wd, decoupled=True)

    def lower(self, ctx):
        d = self._lower_common(ctx, Lion, "lion")
        d.update(beta1=float(self.beta_1), beta2=float(self.beta_2), s1=self.slots["momentum"])
        return d

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2}
