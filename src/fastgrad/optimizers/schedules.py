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

from ..utils.validation import check_number

__all__ = [
    "LearningRateSchedule", "ExponentialDecay", "PiecewiseConstantDecay", "CosineDecay",
    "InverseTimeDecay", "PolynomialDecay", "serialize", "deserialize", "get",
]


_number = check_number   # shared wording: fastgrad.utils.validation


def _step(cls, step):
    try:
        s = float(step)
    except (TypeError, ValueError):
        raise TypeError(f"{cls}: step must be a number, got {step!r}") from None
    if not s >= 0.0:  # also rejects NaN
        raise ValueError(f"{cls}: step must be >= 0, got {step!r}")
    return s


class LearningRateSchedule:
    """Base class: subclasses implement `__call__(step) -> float` and `get_config()`."""

    def __call__(self, step) -> float:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(step)")

    def get_config(self) -> dict:
        raise NotImplementedError(f"{type(self).__name__} must implement get_config()")

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self):
        try:
            args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        except NotImplementedError:
            args = ""
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    __hash__ = object.__hash__


class ExponentialDecay(LearningRateSchedule):
    """`initial_learning_rate * decay_rate ** (step / decay_steps)`; with
    staircase=True the exponent is floored (the rate drops every decay_steps)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="ExponentialDecay"):
        c = type(self).__name__
        self.initial_learning_rate = _number(c, "initial_learning_rate", initial_learning_rate, lo=0.0)
        self.decay_steps = _number(c, "decay_steps", decay_steps, lo=0.0, lo_open=True)
        self.decay_rate = _number(c, "decay_rate", decay_rate, lo=0.0, lo_open=True)
        self.staircase = bool(staircase)
        self.name = name

    def __call__(self, step) -> float:
        p = _step(type(self).__name__, step) / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate * self.decay_rate ** p

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class InverseTimeDecay(LearningRateSchedule):
    """`initial_learning_rate / (1 + decay_rate * step / decay_steps)`; with
    staircase=True, `step / decay_steps` is floored."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="InverseTimeDecay"):
        c = type(self).__name__
        self.initial_learning_rate = _number(c, "initial_learning_rate", initial_learning_rate, lo=0.0)
        self.decay_steps = _number(c, "decay_steps", decay_steps, lo=0.0, lo_open=True)
        self.decay_rate = _number(c, "decay_rate", decay_rate, lo=0.0)
        self.staircase = bool(staircase)
        self.name = name

    def __call__(self, step) -> float:
        p = _step(type(self).__name__, step) / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return self.initial_learning_rate / (1.0 + self.decay_rate * p)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class PiecewiseConstantDecay(LearningRateSchedule):
    """`values[0]` for step <= boundaries[0], `values[i]` for
    boundaries[i-1] < step <= boundaries[i], `values[-1]` after the last boundary
    (Keras semantics). Needs len(values) == len(boundaries) + 1 and strictly
    increasing boundaries."""

    def __init__(self, boundaries, values, name="PiecewiseConstantDecay"):
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

    def __call__(self, step) -> float:
        s = _step(type(self).__name__, step)
        for b, v in zip(self.boundaries, self.values):
            if s <= b:
                return v
        return self.values[-1]

    def get_config(self):
        return {"boundaries": list(self.boundaries), "values": list(self.values), "name": self.name}


class CosineDecay(LearningRateSchedule):
    """Keras CosineDecay. Without warmup (warmup_target=None):
    `lr0 * ((1 - alpha) * 0.5 * (1 + cos(pi * min(step, decay_steps) / decay_steps)) + alpha)`.
    With warmup_target and warmup_steps > 0: linear from lr0 to warmup_target over
    warmup_steps, then the cosine decay above starting from warmup_target over
    decay_steps; after the end the rate stays at alpha * (peak)."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay",
                 warmup_target=None, warmup_steps=0):
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

    def _decay(self, step, peak):
        frac = step / self.decay_steps
        cosine = 0.5 * (1.0 + math.cos(math.pi * frac))
        return peak * ((1.0 - self.alpha) * cosine + self.alpha)

    def __call__(self, step) -> float:
        s = _step(type(self).__name__, step)
        if self.warmup_target is None:
            return self._decay(min(s, self.decay_steps), self.initial_learning_rate)
        s = min(s, self.decay_steps + self.warmup_steps)
        if s < self.warmup_steps:
            frac = s / self.warmup_steps
            return (self.warmup_target - self.initial_learning_rate) * frac + self.initial_learning_rate
        return self._decay(s - self.warmup_steps, self.warmup_target)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "name": self.name, "warmup_target": self.warmup_target,
                "warmup_steps": self.warmup_steps}


class PolynomialDecay(LearningRateSchedule):
    """Keras PolynomialDecay: `(lr0 - end) * (1 - s / decay_steps) ** power + end` with
    s = min(step, decay_steps); with cycle=True decay_steps grows to the next
    multiple of itself above step instead of clamping."""

    def __init__(self, initial_learning_rate, decay_steps, end_learning_rate=0.0001, power=1.0,
                 cycle=False, name="PolynomialDecay"):
        c = type(self).__name__
        self.initial_learning_rate = _number(c, "initial_learning_rate", initial_learning_rate, lo=0.0)
        self.decay_steps = _number(c, "decay_steps", decay_steps, lo=0.0, lo_open=True)
        self.end_learning_rate = _number(c, "end_learning_rate", end_learning_rate, lo=0.0)
        self.power = _number(c, "power", power, lo=0.0)
        self.cycle = bool(cycle)
        self.name = name

    def __call__(self, step) -> float:
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

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "end_learning_rate": self.end_learning_rate, "power": self.power, "cycle": self.cycle,
                "name": self.name}


_REGISTRY = {cls.__name__: cls for cls in (ExponentialDecay, PiecewiseConstantDecay, CosineDecay,
                                            InverseTimeDecay, PolynomialDecay)}


def register(cls):
    """Register a LearningRateSchedule subclass so `deserialize` (and load_model) find it by name."""
    if not (isinstance(cls, type) and issubclass(cls, LearningRateSchedule)):
        raise TypeError(f"register: expected a LearningRateSchedule subclass, got {cls!r}")
    _REGISTRY[cls.__name__] = cls
    return cls


def serialize(schedule) -> dict:
    """`{"class_name": ..., "config": {...}}` — plain JSON-able data."""
    if not isinstance(schedule, LearningRateSchedule):
        raise TypeError(f"serialize: expected a LearningRateSchedule, got {schedule!r}")
    return {"class_name": type(schedule).__name__, "config": schedule.get_config()}


def deserialize(config, custom_objects=None):
    """Inverse of `serialize`; custom_objects maps extra class names to classes."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError(f"deserialize: expected {{'class_name': ..., 'config': {{...}}}}, got {config!r}")
    name = config["class_name"]
    registry = dict(_REGISTRY)
    if custom_objects:
        registry.update(custom_objects)
    cls = registry.get(name)
    if cls is None:
        raise ValueError(f"deserialize: unknown learning-rate schedule {name!r}; known: {sorted(registry)} "
                         "(pass custom_objects= or register() for your own)")
    return cls.from_config(dict(config.get("config") or {}))


def get(identifier):
    """A schedule from a schedule object, a serialized dict, or any callable."""
    if isinstance(identifier, LearningRateSchedule):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if callable(identifier):
        return identifier
    raise ValueError(f"Could not interpret learning-rate schedule identifier: {identifier!r}")
