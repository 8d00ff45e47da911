"""Weight initializers (Keras semantics), by name or as objects.

An initializer is a callable `init(shape) -> float32 array`.  Random ones draw
from `fastgrad._config.rng()` (re-seeded by `fg.set_seed`) unless they were
given their own `seed`, in which case every call returns the same values, as
in Keras.  The variance-scaling *Normal* initializers use a normal truncated
at two standard deviations, with the std corrected for the truncation.
"""
from __future__ import annotations

import math

from typing import Any, Callable, Sequence

import numpy as np
from numpy.typing import DTypeLike

__all__ = ["Initializer", "Zeros", "Ones", "Constant", "RandomNormal", "RandomUniform",
           "TruncatedNormal", "VarianceScaling", "GlorotUniform", "GlorotNormal", "HeUniform",
           "HeNormal", "LecunUniform", "LecunNormal", "get", "serialize", "deserialize"]

# std of a unit normal truncated to [-2, 2]
_TRUNC_STD = 0.87962566103423978


def compute_fans(shape: Sequence[int]) -> tuple[int, int]:
    """(fan_in, fan_out) as Keras computes them: kernels are (..., in, out)."""
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[:-2]))
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer:
    """Base class of the weight initializers: a callable ``init(shape) -> array``.

    Parameters
    ----------
    seed : int or None, default None
        With a seed every call returns the same values (as in Keras); None
        draws from fastgrad's generator (``fg.set_seed``).

    Raises
    ------
    ValueError
        If `seed` is not a non-negative integer or None.
    """

    def __init__(self, seed: int | None = None) -> None:
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                                 or seed < 0):
            raise ValueError(f"{type(self).__name__}: seed must be a non-negative integer or None, "
                             f"got {seed!r}")
        self.seed = seed

    def _rng(self) -> np.random.Generator:
        if self.seed is not None:
            return np.random.default_rng(self.seed)
        from . import _config
        return _config.rng()

    def __call__(self, shape: Sequence[int], dtype: DTypeLike | None = None) -> np.ndarray:
        """Draw a new array of initial values.

        Parameters
        ----------
        shape : sequence of int
            Shape of the weight; kernels are laid out ``(..., fan_in, fan_out)``.
        dtype : dtype or None, default None
            Result dtype (None: float32).

        Returns
        -------
        numpy.ndarray
            C-contiguous array of that shape.
        """
        raise NotImplementedError

    def get_config(self) -> dict:
        """The constructor arguments as a dict (Keras config).

        Returns
        -------
        dict
            Keyword arguments that rebuild this initializer.
        """
        return {"seed": self.seed} if self.seed is not None else {}

    @classmethod
    def from_config(cls, config: dict) -> Initializer:
        """Build an initializer from :meth:`get_config`'s output.

        Parameters
        ----------
        config : dict
            Constructor keyword arguments.

        Returns
        -------
        Initializer
            The new initializer.
        """
        return cls(**config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get_config()})"


def _out(a: Any, dtype: DTypeLike | None) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype or np.float32)


def _truncated_normal(rng: np.random.Generator, shape: Sequence[int], mean: float, std: float) -> np.ndarray:
    """Normal(mean, std) truncated to 2 std by redrawing the outliers."""
    z = rng.standard_normal(size=shape)
    bad = np.abs(z) > 2.0
    while bad.any():
        z[bad] = rng.standard_normal(size=int(bad.sum()))
        bad = np.abs(z) > 2.0
    return mean + std * z


class Zeros(Initializer):
    """Initialize with zeros."""

    def __init__(self) -> None:
        super().__init__(None)

    def __call__(self, shape: Sequence[int], dtype: DTypeLike | None = None) -> np.ndarray:
        return np.zeros(shape, dtype=dtype or np.float32)

    def get_config(self) -> dict:
        return {}


class Ones(Initializer):
    """Initialize with ones."""

    def __init__(self) -> None:
        super().__init__(None)

    def __call__(self, shape: Sequence[int], dtype: DTypeLike | None = None) -> np.ndarray:
        return np.ones(shape, dtype=dtype or np.float32)

    def get_config(self) -> dict:
        return {}


class Constant(Initializer):
    """Initialize with one constant value.

    Parameters
    ----------
    value : float, default 0.0
        The value (finite).
    """

    def __init__(self, value: float = 0.0) -> None:
        super().__init__(None)
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"Constant: value must be finite, got {value}")
        self.value = value

    def __call__(self, shape: Sequence[int], dtype: DTypeLike | None = None) -> np.ndarray:
        return np.full(shape, self.value, dtype=dtype or np.float32)

    def get_config(self) -> dict:
        return {"value": self.value}


class RandomNormal(Initializer):
    """Draw from a normal distribution.

    Parameters
    ----------
    mean : float, default 0.0
        Mean.
    stddev : float, default 0.05
        Standard deviation (>= 0).
    seed : int or None, default None
        With a seed every call returns the same values (as in Keras); None
        draws from fastgrad's generator (``fg.set_seed``).
    """

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None) -> None:
        super().__init__(seed)
        if not stddev >= 0:
            raise ValueError(f"RandomNormal: stddev must be >= 0, got {stddev}")
        self.mean, self.stddev = float(mean), float(stddev)

    def __call__(self, shape: Sequence[int], dtype: DTypeLike | None = None) -> np.ndarray:
        return _out(self._rng().normal(self.mean, self.stddev, size=shape), dtype)

    def get_config(self) -> dict:
        return {"mean": self.mean, "stddev": self.stddev, **super().get_config()}


class TruncatedNormal(Initializer):
    """Draw from a normal distribution, redrawing values beyond two standard deviations.

    Parameters
    ----------
    mean : float, default 0.0
        Mean.
    stddev : float, default 0.05
        Standard deviation of the untruncated normal (>= 0).
    seed : int or None, default None
        With a seed every call returns the same values (as in Keras); None
        draws from fastgrad's generator (``fg.set_seed``).
    """

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: int | None = None) -> None:
        super().__init__(seed)
        if not stddev >= 0:
            raise ValueError(f"TruncatedNormal: stddev must be >= 0, got {stddev}")
        self.mean, self.stddev = float(mean), float(stddev)

    def __call__(self, shape: Sequence[int], dtype: DTypeLike | None = None) -> np.ndarray:
        return _out(_truncated_normal(self._rng(), shape, self.mean, self.stddev), dtype)

    def get_config(self) -> dict:
        return {"mean": self.mean, "stddev": self.stddev, **super().get_config()}


class RandomUniform(Initializer):
    """Draw from a uniform distribution on ``[minval, maxval)``.

    Parameters
    ----------
    minval : float, default -0.05
        Lower bound.
    maxval : float, default 0.05
        Upper bound (>= `minval`).
    seed : int or None, default None
        With a seed every call returns the same values (as in Keras); None
        draws from fastgrad's generator (``fg.set_seed``).
    """

    def __init__(self, minval: float = -0.05, maxval: float = 0.05, seed: int | None = None) -> None:
        super().__init__(seed)
        if not minval <= maxval:
            raise ValueError(f"RandomUniform: minval {minval} > maxval {maxval}")
        self.minval, self.maxval = float(minval), float(maxval)

    def __call__(self, shape: Sequence[int], dtype: DTypeLike | None = None) -> np.ndarray:
        return _out(self._rng().uniform(self.minval, self.maxval, size=shape), dtype)

    def get_config(self) -> dict:
        return {"minval": self.minval, "maxval": self.maxval, **super().get_config()}


class VarianceScaling(Initializer):
    """Draw with a variance scaled to the weight's fans: ``var = scale / n``.

    Parameters
    ----------
    scale : float, default 1.0
        Scale of the variance (> 0).
    mode : {"fan_in", "fan_out", "fan_avg"}, default "fan_in"
        Which fan is ``n`` (``fan_avg``: the mean of both).
    distribution : {"truncated_normal", "untruncated_normal", "uniform"}, default "truncated_normal"
        The distribution; "normal" means "truncated_normal". The truncated
        normal is cut at two standard deviations and its std corrected for the cut.
    seed : int or None, default None
        With a seed every call returns the same values (as in Keras); None
        draws from fastgrad's generator (``fg.set_seed``).

    Raises
    ------
    ValueError
        If `scale`, `mode` or `distribution` is out of range.
    """

    def __init__(self, scale: float = 1.0, mode: str = "fan_in", distribution: str = "truncated_normal",
                 seed: int | None = None) -> None:
        super().__init__(seed)
        if not scale > 0:
            raise ValueError(f"VarianceScaling: scale must be > 0, got {scale}")
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"VarianceScaling: mode must be fan_in, fan_out or fan_avg, got {mode!r}")
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError("VarianceScaling: distribution must be truncated_normal, "
                             f"untruncated_normal or uniform, got {distribution!r}")
        self.scale, self.mode, self.distribution = float(scale), mode, distribution

    def __call__(self, shape: Sequence[int], dtype: DTypeLike | None = None) -> np.ndarray:
        fan_in, fan_out = compute_fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        var = self.scale / max(1.0, n)
        rng = self._rng()
        if self.distribution == "truncated_normal":
            a = _truncated_normal(rng, shape, 0.0, math.sqrt(var) / _TRUNC_STD)
        elif self.distribution == "untruncated_normal":
            a = rng.normal(0.0, math.sqrt(var), size=shape)
        else:
            lim = math.sqrt(3.0 * var)
            a = rng.uniform(-lim, lim, size=shape)
        return _out(a, dtype)

    def get_config(self) -> dict:
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution,
                **super().get_config()}


class _Preset(VarianceScaling):
    _args: tuple[float, str, str]       # (scale, mode, distribution), set by each subclass

    def __init__(self, seed: int | None = None) -> None:
        super().__init__(*self._args, seed=seed)

    def get_config(self) -> dict:
        return Initializer.get_config(self)


class GlorotUniform(_Preset):
    """Glorot (Xavier) uniform: ``VarianceScaling(1.0, "fan_avg", "uniform")``.

    Parameters
    ----------
    seed : int or None, default None
        With a seed every call returns the same values (as in Keras); None
        draws from fastgrad's generator (``fg.set_seed``).
    """

    _args = (1.0, "fan_avg", "uniform")


class GlorotNormal(_Preset):
    """Glorot (Xavier) normal: ``VarianceScaling(1.0, "fan_avg", "truncated_normal")``.

    Parameters
    ----------
    seed : int or None, default None
        With a seed every call returns the same values (as in Keras); None
        draws from fastgrad's generator (``fg.set_seed``).
    """

    _args = (1.0, "fan_avg", "truncated_normal")


class HeUniform(_Preset):
    """He uniform: ``VarianceScaling(2.0, "fan_in", "uniform")``.

    Parameters
    ----------
    seed : int or None, default None
        With a seed every call returns the same values (as in Keras); None
        draws from fastgrad's generator (``fg.set_seed``).
    """

    _args = (2.0, "fan_in", "uniform")


class HeNormal(_Preset):
    """He normal: ``VarianceScaling(2.0, "fan_in", "truncated_normal")``.

    Parameters
    ----------
    seed : int or None, default None
        With a seed every call returns the same values (as in Keras); None
        draws from fastgrad's generator (``fg.set_seed``).
    """

    _args = (2.0, "fan_in", "truncated_normal")


class LecunUniform(_Preset):
    """LeCun uniform: ``VarianceScaling(1.0, "fan_in", "uniform")``.

    Parameters
    ----------
    seed : int or None, default None
        With a seed every call returns the same values (as in Keras); None
        draws from fastgrad's generator (``fg.set_seed``).
    """

    _args = (1.0, "fan_in", "uniform")


class LecunNormal(_Preset):
    """LeCun normal: ``VarianceScaling(1.0, "fan_in", "truncated_normal")``.

    Parameters
    ----------
    seed : int or None, default None
        With a seed every call returns the same values (as in Keras); None
        draws from fastgrad's generator (``fg.set_seed``).
    """

    _args = (1.0, "fan_in", "truncated_normal")


class Orthogonal(Initializer):
    """Draw an orthogonal matrix (the recurrent kernels' default).

    The Q factor of a normal matrix of the flattened shape
    ``(prod(shape[:-1]), shape[-1])``, signs fixed by ``diag(R)``, times `gain`.

    Parameters
    ----------
    gain : float, default 1.0
        Factor applied to the orthogonal matrix.
    seed : int or None, default None
        With a seed every call returns the same values (as in Keras); None
        draws from fastgrad's generator (``fg.set_seed``).
    """

    def __init__(self, gain: float = 1.0, seed: int | None = None) -> None:
        super().__init__(seed)
        self.gain = float(gain)

    def __call__(self, shape: Sequence[int], dtype: DTypeLike | None = None) -> np.ndarray:
        shape = tuple(int(s) for s in shape)
        if len(shape) < 2:
            raise ValueError(f"Orthogonal: needs a shape of rank >= 2, got {shape}")
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        a = self._rng().normal(0.0, 1.0, size=(max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q *= np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return _out(self.gain * q.reshape(shape), dtype)

    def get_config(self) -> dict:
        return {"gain": self.gain, **super().get_config()}


_CLASSES: dict[str, type[Initializer]] = {c.__name__: c for c in (Zeros, Ones, Constant, RandomNormal, RandomUniform,
                                     TruncatedNormal, VarianceScaling, GlorotUniform, GlorotNormal,
                                     HeUniform, HeNormal, LecunUniform, LecunNormal, Orthogonal)}
_NAMES: dict[str, type[Initializer]] = {"zeros": Zeros, "zero": Zeros, "ones": Ones, "one": Ones, "constant": Constant,
          "random_normal": RandomNormal, "random_uniform": RandomUniform,
          "uniform": RandomUniform, "normal": RandomNormal, "orthogonal": Orthogonal,
          "truncated_normal": TruncatedNormal, "variance_scaling": VarianceScaling,
          "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal,
          "xavier_uniform": GlorotUniform, "xavier_normal": GlorotNormal,
          "he_uniform": HeUniform, "he_normal": HeNormal,
          "lecun_uniform": LecunUniform, "lecun_normal": LecunNormal}


def get(identifier: str | dict | Callable, where: str = "initializer") -> Callable:
    """The initializer a user passes as ``kernel_initializer=`` and the like.

    Parameters
    ----------
    identifier : str, dict, Initializer or callable
        A name ("glorot_uniform", "he_normal", ...) or class name, a
        serialized config, an initializer (returned as is) or any callable
        ``f(shape, dtype=None)``.
    where : str, default "initializer"
        What to name in an error message.

    Returns
    -------
    Initializer or callable
        The initializer.

    Raises
    ------
    ValueError
        If the name is unknown.
    TypeError
        If `identifier` has another type.

    Examples
    --------
    >>> import fastgrad as fg
    >>> fg.initializers.get("he_normal")
    HeNormal({})
    """
    if isinstance(identifier, Initializer):
        return identifier
    if isinstance(identifier, str):
        cls = _NAMES.get(identifier.strip().lower()) or _CLASSES.get(identifier)
        if cls is None:
            raise ValueError(f"{where}: unknown initializer {identifier!r}; expected one of "
                             f"{', '.join(sorted(_NAMES))}")
        return cls()
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if callable(identifier):
        return identifier
    raise TypeError(f"{where}: expected an initializer name or object, got {identifier!r}")


def serialize(init: Callable[..., Any]) -> dict:
    """An initializer as a Keras-style ``{"class_name", "config"}`` dict.

    Parameters
    ----------
    init : Initializer or callable
        The initializer (what ``get`` returns).

    Returns
    -------
    dict
        Its serialized form.

    Raises
    ------
    TypeError
        If `init` is not a fastgrad Initializer.
    """
    if isinstance(init, Initializer):
        return {"class_name": type(init).__name__, "config": init.get_config()}
    raise TypeError(f"cannot serialize initializer {init!r} (not a fastgrad Initializer)")


def deserialize(d: dict) -> Initializer:
    """Rebuild an initializer from :func:`serialize`'s output.

    Parameters
    ----------
    d : dict
        A ``{"class_name", "config"}`` dict.

    Returns
    -------
    Initializer
        The initializer.

    Raises
    ------
    ValueError
        If the class name is unknown.
    """
    cls = _CLASSES.get(str(d.get("class_name")))
    if cls is None:
        raise ValueError(f"unknown initializer class {d.get('class_name')!r}")
    return cls.from_config(d.get("config", {}))
