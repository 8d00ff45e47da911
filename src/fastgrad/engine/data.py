"""Dataset validation (once per fit/evaluate/predict call) and batching.

Everything a training step could trip over is checked here, before any
parameter is touched: types, ranks, feature counts, lengths, NaN/inf, label
ranges.  Inputs are converted ONCE per call to what the kernels take:

- x: cast as Keras casts it, to the model input's declared dtype (float32 by
  default; `cast_x`): float16/float64, integer and bool arrays, any layout ->
  C-contiguous float32 (a copy only when needed).  float64 -> float32 narrows
  (values beyond float32 become inf and are refused, as NaN/inf are).  An input
  declared with an integer dtype keeps integer ids.  Complex, object and string
  arrays are refused with a TypeError.  Torch tensors and pandas objects are
  converted through NumPy.
- y: integer class ids (LABEL_DTYPE) for sparse losses, float32 arrays shaped
  like the model output otherwise.

Batches are index ranges of a per-epoch permutation; a shuffled batch is ONE
gather (`np.take(..., out=buffer)`) into a preallocated buffer, an unshuffled
batch is a view (no copy).
"""
from __future__ import annotations

from typing import Any

import math
import numbers

import numpy as np

from .. import _config
from ..losses import LABEL_DTYPE


def _to_array(a, what):
    if isinstance(a, np.ndarray):
        return a
    conv = _foreign_to_numpy(a)
    if conv is not None:
        return conv
    if isinstance(a, (list, tuple)) or hasattr(a, "__array__"):
        try:
            return np.asarray(a)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{what}: cannot convert to an array ({exc})") from None
    raise TypeError(f"{what}: expected a numpy array, got {type(a).__name__}")


def _foreign_to_numpy(a):
    """A torch tensor or a pandas DataFrame / Series as a NumPy array (None for
    anything else). Looked up by module name: neither library is imported here."""
    mod = type(a).__module__ or ""
    if mod.startswith("torch"):
        if hasattr(a, "detach") and hasattr(a, "numpy"):
            return a.detach().cpu().numpy()
    elif mod.startswith("pandas"):
        if hasattr(a, "to_numpy"):
            return a.to_numpy()
    return None


def input_dtype(declared: Any) -> np.dtype:
    """The dtype x is cast to for an input declared with `declared` (a layer's
    `dtype` attribute, Input(dtype=...)): float32 when None."""
    if declared is None:
        return np.dtype(np.float32)
    try:
        return np.dtype(declared)
    except TypeError:
        return np.dtype(getattr(declared, "name", np.float32))


def cast_x(x: np.ndarray, dtype: Any, what: str) -> np.ndarray:
    """x cast as Keras casts model inputs: to the input's dtype (float32 by
    default), C-contiguous; a copy only when needed. Integer and bool features
    become floats for a float input; an integer input (ids for an Embedding)
    keeps integers, which must fit the dtype. NaN/inf (also float64 values
    beyond float32's range) are refused."""
    dt = input_dtype(dtype)
    k = x.dtype.kind
    if k not in "iubf":
        raise TypeError(f"{what}: x has unsupported dtype {x.dtype}; expected numbers "
                        f"(the model input takes {dt})")
    if dt.kind in "iu":
        if k == "f":
            if not np.isfinite(x).all():
                raise_if_nonfinite(x, x, what)
            if (x != np.floor(x)).any():
                i = tuple(int(v) for v in np.argwhere(x != np.floor(x))[0])
                raise ValueError(f"{what}: the model input takes integer ids ({dt}), got "
                                 f"non-integer value {x[i].item()!r} at index {i}")
        if x.size and k != "b":
            info = np.iinfo(dt)
            lo, hi = x.min(), x.max()
            if lo < info.min or hi > info.max:
                raise ValueError(f"{what}: x has values in [{lo}, {hi}], outside the range of the "
                                 f"input's dtype {dt}")
        return np.ascontiguousarray(x, dtype=dt)
    with np.errstate(over="ignore"):     # values beyond float32 become inf: reported below
        xf = np.ascontiguousarray(x, dtype=dt)
    if k == "f" or dt.itemsize < 4:      # ints/bools are finite as floats of >= 32 bits
        raise_if_nonfinite(xf, x, what)
    return xf


def all_finite(a: Any) -> bool:
    """No NaN/inf in float array `a`: the active backend's `ops.all_finite`
    (a C bit test per element on the native backend)."""
    return _config.get_ops().all_finite(a)


def as_ids(x: Any, what: str, input_shape: Any = None, layer_name: Any = None) -> np.ndarray:
    """Integer token ids for an input that feeds only id-taking layers (Embedding):
    checked (integer dtype, |id| < 2**24) and carried as exact float32 values."""
    if x is None:
        raise ValueError(f"{what}: x is required")
    x = _to_array(x, f"{what}: x")
    who = f"layer {layer_name!r}" if layer_name else "the model"
    if x.dtype.kind not in "iu":
        raise TypeError(f"{what}: {who} takes integer token ids (an Embedding), got an array of "
                        f"dtype {x.dtype}; convert with x.astype('int32') if the values are ids")
    if x.ndim < 2 or x.shape[0] == 0 or 0 in x.shape:
        raise ValueError(f"{what}: token ids need shape (batch, length) with every dimension > 0, "
                         f"got {x.shape}")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(f"{what}: {who} expects per-sample shape {tuple(input_shape)}, got x of "
                         f"shape {x.shape}")
    if x.size and (int(x.max()) >= 2**24 or int(x.min()) <= -2**24):
        raise ValueError(f"{what}: token ids must be below 2**24 in magnitude, got values in "
                         f"[{int(x.min())}, {int(x.max())}]")
    return np.ascontiguousarray(x, dtype=np.float32)


def as_x(x: Any, what: str, input_shape: Any = None, layer_name: Any = None, finite: Any = True,
         dtype: Any = None, ids: Any = False) -> np.ndarray:
    """Validate x and return it cast to the input's `dtype` (float32 when None;
    see cast_x), C-contiguous, shaped (batch, *input_shape).

    finite=False skips the NaN/inf scan for a float32 array that needs no
    conversion: for callers whose C path checks the rows as it reads them
    (the compiled inference plan) and calls raise_if_nonfinite on failure.
    ids=True: the input feeds only Embedding-like layers; see as_ids."""
    if ids:
        return as_ids(x, what, input_shape, layer_name)
    if (type(x) is np.ndarray and x.dtype == np.float32 and dtype is None and x.flags.c_contiguous
            and input_shape is not None and x.shape[1:] == input_shape and x.shape[0] > 0
            and x.size > 0):
        # the common case, kept cheap for per-call paths (predict_on_batch)
        if not finite or all_finite(x):
            return x
    if x is None:
        raise ValueError(f"{what}: x is required")
    x = _to_array(x, f"{what}: x")
    k = x.dtype.kind
    if k not in "iubf":
        raise TypeError(f"{what}: x has unsupported dtype {x.dtype}; expected a float32 array "
                        "(or numbers castable to the model input's dtype)")
    if x.ndim < 2:
        if input_shape is not None and x.ndim == 1 and len(input_shape) == 1 and x.size:
            raise ValueError(f"{what}: x has shape {x.shape} (rank 1); expected (batch, "
                             f"{input_shape[0]}) — for one sample use x.reshape(1, -1)")
        raise ValueError(f"{what}: x must have a batch axis (rank >= 2), got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{what}: x is empty (shape {x.shape})")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        who = f"layer {layer_name!r}" if layer_name else "the model"
        if x.ndim - 1 != len(input_shape):
            raise ValueError(f"{what}: {who} expects input of rank {len(input_shape) + 1} "
                             f"(batch, {', '.join(map(str, input_shape))}), got x of shape "
                             f"{x.shape}")
        raise ValueError(f"{what}: {who} expects per-sample shape {tuple(input_shape)}, got x of "
                         f"shape {x.shape} (per-sample {tuple(x.shape[1:])})")
    if 0 in x.shape:
        raise ValueError(f"{what}: x is empty (shape {x.shape})")
    return cast_x(x, dtype, what)


def raise_if_nonfinite(xf: Any, x: Any, what: str) -> None:
    """ValueError naming the first NaN/inf of xf (the float32 form of x)."""
    if all_finite(xf):
        return
    bad = np.argwhere(~np.isfinite(xf))[0]
    raise ValueError(f"{what}: x contains NaN or inf (first at index {tuple(int(i) for i in bad)}"
                     f", value {x[tuple(bad)].item()!r}" + (", out of float32 range"
                                                     if np.isfinite(x[tuple(bad)]) else "")
                     + ")")


def as_y(y: Any, loss: Any, output_shape: Any, n: int, what: str) -> np.ndarray:
    """Validate targets for `loss` and a model output of per-sample `output_shape`."""
    if y is None:
        raise ValueError(f"{what}: y is required to compute the loss")
    y = _to_array(y, f"{what}: y")
    if y.ndim == 0:
        raise ValueError(f"{what}: y must have a batch axis, got a scalar")
    if y.shape[0] != n:
        raise ValueError(f"{what}: x and y have different lengths: x has {n} samples, "
                         f"y has {y.shape[0]}")
    k = y.dtype.kind
    if k not in "iubf":
        raise TypeError(f"{what}: y has unsupported dtype {y.dtype}; expected numbers")
    out_shape = tuple(output_shape)
    if loss.target_kind == "sparse":
        classes = out_shape[-1]
        if len(out_shape) > 1:
            # a sequence output (batch, time, classes): one class id per step
            want = (n,) + out_shape[:-1]
            if y.shape != want and not (y.shape == want + (1,)):
                raise ValueError(f"{what}: {loss.name} on an output of shape (batch, "
                                 f"{', '.join(map(str, out_shape))}) expects integer class ids of "
                                 f"shape {want}, got y of shape {y.shape}")
            raise ValueError(f"{what}: {loss.name} on outputs of rank > 2 (per-sample shape "
                             f"{out_shape}) is not supported yet; flatten the time axis into "
                             "the batch")
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.reshape(-1)
        if y.ndim != 1:
            raise ValueError(f"{what}: {loss.name} expects integer class ids of shape ({n},), got y "
                             f"of shape {y.shape}" + (" — one-hot targets need "
                                                      "categorical_crossentropy"
                                                      if y.shape[1:] == out_shape else ""))
        if k == "b":
            raise TypeError(f"{what}: {loss.name} expects integer class ids, got a bool array")
        if k == "f":
            if not np.isfinite(y).all():
                raise ValueError(f"{what}: y contains NaN or inf")
            frac = y != np.floor(y)
            if frac.any():
                i = int(np.argmax(frac))
                raise ValueError(f"{what}: {loss.name} expects integer class ids, got non-integer "
                                 f"label {y[i].item()!r} at index {i}")
        lo, hi = y.min(), y.max()
        if lo < 0 or hi >= classes:
            bad = (lo if lo < 0 else hi).item()
            i = int(np.argmax(y == bad))
            raise ValueError(f"{what}: label {bad!r} at index {i} is outside [0, {classes}) — the "
                             f"model output has {classes} classes")
        return np.ascontiguousarray(y, dtype=LABEL_DTYPE)
    # dense targets shaped like the output
    if y.shape[1:] != out_shape:
        if y.ndim == 1 and out_shape == (1,):
            y = y.reshape(n, 1)
        elif y.ndim == 1 and len(out_shape) == 1 and out_shape[0] > 1 and k in "iu":
            raise ValueError(f"{what}: y has shape {y.shape} (class ids?) but the model outputs "
                             f"{out_shape[0]} values per sample and the loss {loss.name} expects "
                             f"targets of shape ({n}, {out_shape[0]}); use "
                             "loss='sparse_categorical_crossentropy' for integer labels")
        else:
            raise ValueError(f"{what}: y has shape {y.shape}, expected ({n}, "
                             f"{', '.join(map(str, out_shape))}) to match the model output")
    yf = np.ascontiguousarray(y, dtype=np.float32)
    if not all_finite(yf):
        raise ValueError(f"{what}: y contains NaN or inf")
    return yf


def as_sample_weight(sw: Any, n: int, what: str) -> np.ndarray | None:
    if sw is None:
        return None
    sw = _to_array(sw, f"{what}: sample_weight")
    if sw.dtype.kind not in "iuf":
        raise TypeError(f"{what}: sample_weight has unsupported dtype {sw.dtype}")
    if sw.ndim == 2 and sw.shape[1] == 1:
        sw = sw.reshape(-1)
    if sw.shape != (n,):
        raise ValueError(f"{what}: sample_weight has shape {sw.shape}, expected ({n},)")
    swf = np.ascontiguousarray(sw, dtype=np.float32)
    if not np.isfinite(swf).all() or (swf < 0).any():
        raise ValueError(f"{what}: sample_weight must be finite and >= 0")
    return swf


def class_weight_to_sample_weight(class_weight: Any, y: Any, loss: Any, output_shape: Any, what: str) -> np.ndarray | None:
    """Per-sample weights from a {class: weight} dict (missing classes weigh 1)."""
    if class_weight is None:
        return None
    if not isinstance(class_weight, dict):
        raise TypeError(f"{what}: class_weight must be a dict {{class_id: weight}}, "
                        f"got {type(class_weight).__name__}")
    classes = max(2, tuple(output_shape)[-1])
    table = np.ones(classes, dtype=np.float32)
    for c, w in class_weight.items():
        if isinstance(c, bool) or not isinstance(c, (numbers.Integral, np.integer)) \
                or not 0 <= int(c) < classes:
            raise ValueError(f"{what}: class_weight key {c!r} is not a class id in [0, {classes})")
        w = float(w)
        if not (math.isfinite(w) and w >= 0):
            raise ValueError(f"{what}: class_weight[{c!r}] must be finite and >= 0, got {w}")
        table[int(c)] = w
    if loss.target_kind == "sparse":
        ids = y
    elif y.ndim == 2 and y.shape[1] > 1:
        ids = np.argmax(y, axis=1)
    else:
        ids = (y.reshape(y.shape[0], -1)[:, 0] > 0.5).astype(np.int64)
    return table[ids]


def combine_weights(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return np.ascontiguousarray(a * b, dtype=np.float32)


class ArrayData:
    """Validated in-memory data for an executor: `xs` one float32 C-contiguous
    array per model input, `ys` / `sws` one entry per output (None for an
    output without a loss / without sample weights), `n` rows."""

    __slots__ = ("xs", "ys", "sws", "n")

    def __init__(self, xs, ys, sws):
        self.xs = list(xs)
        self.ys = list(ys)
        self.sws = list(sws)
        self.n = int(self.xs[0].shape[0])

    def split(self, at):
        """(first `at` rows, the rest): views, no copy."""
        def cut(lst, lo, hi):
            return [None if a is None else a[lo:hi] for a in lst]
        return (ArrayData(cut(self.xs, 0, at), cut(self.ys, 0, at), cut(self.sws, 0, at)),
                ArrayData(cut(self.xs, at, None), cut(self.ys, at, None),
                          cut(self.sws, at, None)))


class Batches:
    """Index ranges over n samples; `epoch(shuffle)` yields (start, stop, idx)
    where idx is the batch's slice of a fresh permutation, or None (in order)."""

    def __init__(self, n: int, batch_size: int):
        self.n = n
        self.batch_size = batch_size
        self.steps = (n + batch_size - 1) // batch_size

    def epoch(self, shuffle: bool) -> Any:
        n, bs = self.n, self.batch_size
        if shuffle:
            from .. import _config
            perm = _config.rng().permutation(n)
            for s in range(0, n, bs):
                yield s, min(s + bs, n), perm[s:s + bs]
        else:
            for s in range(0, n, bs):
                yield s, min(s + bs, n), None


def take(a, idx, start, stop, ws, name):
    """Batch rows of `a`: a view when idx is None, else one gather into ws."""
    if a is None:
        return None
    if idx is None:
        return a[start:stop]
    out = ws.buf(name, (idx.shape[0],) + a.shape[1:], a.dtype)
    np.take(a, idx, axis=0, out=out)
    return out


def check_batch_size(batch_size: Any, what: str, default: int = 32) -> int:
    if batch_size is None:
        return default
    if isinstance(batch_size, bool) or not isinstance(batch_size, (numbers.Integral, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"{what}: batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)
