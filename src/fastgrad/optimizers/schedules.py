"""Learning-rate schedules: `schedule(step) -> float`, Keras semantics and names.

An optimizer accepts a float or any callable `schedule(step)`; it evaluates the
schedule once per optimizer step with `step = optimizer.iterations` (0 for the
first update) and passes the float down to the update kernel. Schedules are
pure functions of the step (no state), so saving a model only needs their
config (`serialize`) and the optimizer's iteration counter to resume exactly.

    ExponentialDecay       lr0 * rate ** (step / decay_steps)            (floored if staircase)
    InverseTimeDecay       lr0 / (1 + rate * step / decay_steps)         (floored if staircase)
    PiecewiseConstantDecay values[i] while boundaries[i-1] < step <= boundaries[i]
    CosineDecay            optional linear warmup, then a half cosine to alpha * peak
    PolynomialDecay        (lr0 - end) * (1 - step/decay_steps) ** power + end

The arithmetic is done in Python floats (float64); the kernels receive the
rounded float32 value.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

from ..utils.validation import check_number

__all__ = [
    "LearningRateSchedule", "ExponentialDecay", "PiecewiseConstantDecay", "CosineDecay",
    "InverseTimeDecay", "PolynomialDecay", "serialize", "deserialize", "get",
]


_number = check_number   # shared wording: fastgrad.utils.validation


def _step(cls: str, step: float) -> float:
    try:
        s = float(step)
    except (TypeError, ValueError):
        raise TypeError(f"{cls}: step must be a number, got {step!r}") from None
    if not s >= 0.0:  # also rejects NaN
        raise ValueError(f"{cls}: step must be >= 0, got {step!r}")
    return s


class LearningRateSchedule:
    """Base class of the learning-rate schedules, pure functions of the step.

    A subclass implements ``__call__(step) -> float`` and ``get_config()``.
    """

    def __call__(self, step: float) -> float:
        """The learning rate at a step.

        Parameters
        ----------
        step : int or float
            The optimizer step (``optimizer.iterations``; 0 for the first update).

        Returns
        -------
        float
            The learning rate.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(step)")

    def get_config(self) -> dict:
        """The constructor arguments as a dict (Keras config).

        Returns
        -------
        dict
            Keyword arguments that rebuild this schedule.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement get_config()")

    @classmethod
    def from_config(cls, config: dict) -> LearningRateSchedule:
        """Build a schedule from :meth:`get_config`'s output.

        Parameters
        ----------
        config : dict
            Constructor keyword arguments.

        Returns
        -------
        LearningRateSchedule
            The new schedule.
        """
        return cls(**config)

    def __repr__(self) -> str:
        try:
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        except NotImplementedError:
            args = ""
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    __hash__ = object.__hash__


class ExponentialDecay(LearningRateSchedule):
    """Exponential decay, ``initial_learning_rate * decay_rate ** (step / decay_steps)``.

    Parameters
    ----------
    initial_learning_rate : float
        Rate at step 0 (>= 0).
    decay_steps : float
        Steps per factor of `decay_rate` (> 0).
    decay_rate : float
        The factor (> 0).
    staircase : bool, default False
        Floor the exponent, so the rate drops every `decay_steps` steps.
    name : str, default "ExponentialDecay"
        Name of the schedule.

    Examples
    --------
    >>> from fastgrad.optimizers.schedules import ExponentialDecay
    >>> ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)(20)
    0.025
    """

    def __init__(self, initial_learning_rate: float, decay_steps: float, decay_rate: float,
                 staircase: bool = False, name: str = "ExponentialDecay") -> None:
        c = type(self).__name__
        self.initial_learning_rate = _number(c, "initial_learning_rate", initial_learning_rate, lo=0.0)
        self.decay_steps = _number(c, "decay_steps", decay_steps, lo=0.0, lo_open=True)
        self.decay_rate = _number(c, "decay_rate", decay_rate, lo=0.0, lo_open=True)
        self.staircase = bool(staircase)
        self.name = name

    def __call__(self, step: float) -> float:
        p = _step(type(self).__name__, step) / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate ** p

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class InverseTimeDecay(LearningRateSchedule):
    """Inverse time decay, ``initial_learning_rate / (1 + decay_rate * step / decay_steps)``.

    Parameters
    ----------
    initial_learning_rate : float
        Rate at step 0 (>= 0).
    decay_steps : float
        Step scale (> 0).
    decay_rate : float
        Decay factor (>= 0).
    staircase : bool, default False
        Floor ``step / decay_steps``.
    name : str, default "InverseTimeDecay"
        Name of the schedule.
    """

    def __init__(self, initial_learning_rate: float, decay_steps: float, decay_rate: float,
                 staircase: bool = False, name: str = "InverseTimeDecay") -> None:
        c = type(self).__name__
        self.initial_learning_rate = _number(c, "initial_learning_rate", initial_learning_rate, lo=0.0)
        self.decay_steps = _number(c, "decay_steps", decay_steps, lo=0.0, lo_open=True)
        self.decay_rate = _number(c, "decay_rate", decay_rate, lo=0.0)
        self.staircase = bool(staircase)
        self.name = name

    def __call__(self, step: float) -> float:
        p = _step(type(self).__name__, step) / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate / (1.0 + self.decay_rate * p)

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class PiecewiseConstantDecay(LearningRateSchedule):
    """A constant rate per interval of steps (Keras semantics).

    ``values[0]`` for ``step <= boundaries[0]``, ``values[i]`` for
    ``boundaries[i-1] < step <= boundaries[i]``, ``values[-1]`` after the
    last boundary.

    Parameters
    ----------
    boundaries : sequence of float
        Strictly increasing step boundaries.
    values : sequence of float
        The rates, one more than `boundaries` (each >= 0).
    name : str, default "PiecewiseConstantDecay"
        Name of the schedule.

    Raises
    ------
    ValueError
        If the lengths do not match or the boundaries do not increase.
    TypeError
        If `boundaries` or `values` is not a sequence.
    """

    def __init__(self, boundaries: Sequence[float], values: Sequence[float],
                 name: str = "PiecewiseConstantDecay") -> None:
        c = type(self).__name__
        try:
            boundaries = list(boundaries)
            values = list(values)
        except TypeError:
            raise TypeError(f"{c}: boundaries and values must be sequences of numbers, "
                            f"got {boundaries!r} and {values!r}") from None
        if len(values) != len(boundaries) + 1:
            raise ValueError(f"{c}: len(values) must be len(boundaries) + 1, got {len(boundaries)} "
                             f"boundaries and {len(values)} values")
        self.boundaries = [_number(c, f"boundaries[{i}]", b) for i, b in enumerate(boundaries)]
        self.values = [_number(c, f"values[{i}]", v, lo=0.0) for i, v in enumerate(values)]
        for i in range(1, len(self.boundaries)):
            if not self.boundaries[i] > self.boundaries[i - 1]:
                raise ValueError(f"{c}: boundaries must be strictly increasing, got {boundaries!r}")
        self.name = name

    def __call__(self, step: float) -> float:
        s = _step(type(self).__name__, step)
        for b, v in zip(self.boundaries, self.values):
            if s <= b:
                return v
        return self.values[-1]

    def get_config(self) -> dict:
        return {"boundaries": list(self.boundaries), "values": list(self.values), "name": self.name}


class CosineDecay(LearningRateSchedule):
    """Cosine decay with an optional linear warmup (Keras's ``CosineDecay``).

    Without warmup:
    ``lr0 * ((1 - alpha) * 0.5 * (1 + cos(pi * min(step, decay_steps) / decay_steps)) + alpha)``.
    With `warmup_target` and ``warmup_steps > 0``: linear from ``lr0`` to
    `warmup_target` over `warmup_steps`, then the cosine decay from
    `warmup_target` over `decay_steps`; after the end the rate stays at
    ``alpha * peak``.

    Parameters
    ----------
    initial_learning_rate : float
        Rate at step 0, ``lr0`` (>= 0).
    decay_steps : float
        Length of the cosine decay in steps (> 0).
    alpha : float, default 0.0
        Final rate as a fraction of the peak, in [0, 1].
    name : str, default "CosineDecay"
        Name of the schedule.
    warmup_target : float or None, default None
        Rate reached at the end of the warmup (None: no warmup).
    warmup_steps : float, default 0
        Length of the warmup in steps.

    Raises
    ------
    ValueError
        If `warmup_steps` is given without `warmup_target`, or a number is out of range.
    """

    def __init__(self, initial_learning_rate: float, decay_steps: float, alpha: float = 0.0,
                 name: str = "CosineDecay", warmup_target: float | None = None,
                 warmup_steps: float = 0) -> None:
        c = type(self).__name__
        self.initial_learning_rate = _number(c, "initial_learning_rate", initial_learning_rate, lo=0.0)
        self.decay_steps = _number(c, "decay_steps", decay_steps, lo=0.0, lo_open=True)
        self.alpha = _number(c, "alpha", alpha, lo=0.0, hi=1.0)
        self.warmup_target = None if warmup_target is None else _number(c, "warmup_target", warmup_target, lo=0.0)
        self.warmup_steps = _number(c, "warmup_steps", warmup_steps, lo=0.0)
        if self.warmup_steps > 0 and self.warmup_target is None:
            raise ValueError(f"{c}: warmup_steps={warmup_steps!r} needs warmup_target (the rate reached at "
                             "the end of the warmup)")
        self.name = name

    def _decay(self, step: float, peak: float) -> float:
        frac = step / self.decay_steps
        cosine = 0.5 * (1.0 + math.cos(math.pi * frac))
        return peak * ((1.0 - self.alpha) * cosine + self.alpha)

    def __call__(self, step: float) -> float:
        s = _step(type(self).__name__, step)
        if self.warmup_target is None:
            return self._decay(min(s, self.decay_steps), self.initial_learning_rate)
        s = min(s, self.decay_steps + self.warmup_steps)
        if s < self.warmup_steps:
            frac = s / self.warmup_steps
            return (self.warmup_target - self.initial_learning_rate) * frac + self.initial_learning_rate
        return self._decay(s - self.warmup_steps, self.warmup_target)

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "name": self.name, "warmup_target": self.warmup_target,
                "warmup_steps": self.warmup_steps}


class PolynomialDecay(LearningRateSchedule):
    """Polynomial decay, ``(lr0 - end) * (1 - s / decay_steps) ** power + end``.

    ``s = min(step, decay_steps)``; with ``cycle=True`` `decay_steps` grows to
    the next multiple of itself above the step instead of clamping.

    Parameters
    ----------
    initial_learning_rate : float
        Rate at step 0, ``lr0`` (>= 0).
    decay_steps : float
        Length of the decay in steps (> 0).
    end_learning_rate : float, default 0.0001
        Rate at the end, ``end``.
    power : float, default 1.0
        Exponent of the polynomial (>= 0).
    cycle : bool, default False
        Restart the decay beyond `decay_steps`.
    name : str, default "PolynomialDecay"
        Name of the schedule.
    """

    def __init__(self, initial_learning_rate: float, decay_steps: float, end_learning_rate: float = 0.0001,
                 power: float = 1.0, cycle: bool = False, name: str = "PolynomialDecay") -> None:
        c = type(self).__name__
        self.initial_learning_rate = _number(c, "initial_learning_rate", initial_learning_rate, lo=0.0)
        self.decay_steps = _number(c, "decay_steps", decay_steps, lo=0.0, lo_open=True)
        self.end_learning_rate = _number(c, "end_learning_rate", end_learning_rate, lo=0.0)
        self.power = _number(c, "power", power, lo=0.0)
        self.cycle = bool(cycle)
        self.name = name

    def __call__(self, step: float) -> float:
        s = _step(type(self).__name__, step)
        decay_steps = self.decay_steps
        if self.cycle:
            # Keras: multiplier 1 at step 0, else ceil(step / decay_steps)
            decay_steps = decay_steps * (1.0 if s == 0 else math.ceil(s / decay_steps))
        else:
            s = min(s, decay_steps)
        frac = s / decay_steps
        return (self.initial_learning_rate - self.end_learning_rate) * (1.0 - frac) ** self.power \
            + self.end_learning_rate

    def get_config(self) -> dict:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "end_learning_rate": self.end_learning_rate, "power": self.power, "cycle": self.cycle,
                "name": self.name}


_REGISTRY: dict[str, type] = {cls.__name__: cls for cls in (ExponentialDecay, PiecewiseConstantDecay, CosineDecay,
                                            InverseTimeDecay, PolynomialDecay)}


def register(cls: type) -> type:
    """Register a schedule class so :func:`deserialize` (and ``load_model``) find it by name.

    Parameters
    ----------
    cls : type
        A LearningRateSchedule subclass; usable as a class decorator.

    Returns
    -------
    type
        `cls` itself.

    Raises
    ------
    TypeError
        If `cls` is not a LearningRateSchedule subclass.
    """
    if not (isinstance(cls, type) and issubclass(cls, LearningRateSchedule)):
        raise TypeError(f"register: expected a LearningRateSchedule subclass, got {cls!r}")
    _REGISTRY[cls.__name__] = cls
    return cls


def serialize(schedule: LearningRateSchedule) -> dict:
    """A schedule as plain JSON-able data, ``{"class_name": ..., "config": {...}}``.

    Parameters
    ----------
    schedule : LearningRateSchedule
        The schedule.

    Returns
    -------
    dict
        Its serialized form.

    Raises
    ------
    TypeError
        If `schedule` is not a LearningRateSchedule.
    """
    if not isinstance(schedule, LearningRateSchedule):
        raise TypeError(f"serialize: expected a LearningRateSchedule, got {schedule!r}")
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def deserialize(config: dict, custom_objects: dict | None = None) -> LearningRateSchedule:
    """Rebuild a schedule from :func:`serialize`'s output.

    Parameters
    ----------
    config : dict
        A ``{"class_name", "config"}`` dict.
    custom_objects : dict or None, default None
        Further class names mapped to classes.

    Returns
    -------
    LearningRateSchedule
        The schedule.

    Raises
    ------
    ValueError
        If `config` is malformed or names an unknown class.
    """
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"deserialize: expected {{'class_name': ..., 'config': {{...}}}}, got {config!r}")
    name = config["class_name"]
    registry = dict(_REGISTRY)
    if custom_objects:
        registry.update(custom_objects)
    cls: Any = registry.get(name)
    if cls is None:
        raise ValueError(f"deserialize: unknown learning-rate schedule {name!r}; known: {sorted(registry)} "
                         "(pass custom_objects= or register() for your own)")
    return cls.from_config(dict(config.get("config") or {}))


def get(identifier: LearningRateSchedule | dict | Callable) -> Callable:
    """A schedule from a schedule object, a serialized dict, or any callable.

    Parameters
    ----------
    identifier : LearningRateSchedule, dict or callable
        The schedule, its serialized form, or any ``f(step) -> float``.

    Returns
    -------
    LearningRateSchedule or callable
        The schedule.

    Raises
    ------
    ValueError
        If `identifier` is none of these.
    """
    if isinstance(identifier, LearningRateSchedule):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if callable(identifier):
        return identifier
    raise ValueError(f"Could not interpret learning-rate schedule identifier: {identifier!r}")
