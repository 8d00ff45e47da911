"""Data adapters: every data source fit / evaluate / predict accept besides
in-memory arrays, turned into a stream of validated one-batch `ArrayData`.

Sources (Keras 3 semantics):

- a Python generator or iterator yielding `x`, `(x,)`, `(x, y)` or
  `(x, y, sample_weight)` batches (lists count as tuples, as in Keras). It is
  read once: without `steps_per_epoch` an epoch lasts until it is exhausted and
  the next epoch finds it empty ("ran out of data": a warning, training stops);
  with `steps_per_epoch` each epoch takes that many batches from the same
  iterator (a generator that loops forever needs it). `shuffle` does not apply.
- a `PyDataset` (`fastgrad.utils.PyDataset`, or any object with `__len__`,
  `__getitem__` and `on_epoch_end`, e.g. a keras.utils.Sequence): batch i is
  `ds[i]`; fit's `shuffle=True` visits the batches in a random order (fastgrad's
  seeded generator), as Keras 3 does; `on_epoch_end()` runs after every epoch.
  `workers > 1` fetches `__getitem__` calls in that many threads, at most
  `max_queue_size` ahead (`use_multiprocessing` is accepted and uses threads).
- a PyTorch DataLoader or any other re-iterable object (iterated afresh each
  epoch; its len() is the step count when it has one).

Every batch is validated as an in-memory array is (`Model._prepare_data`:
shapes, dtypes cast as Keras casts them, NaN/inf, label ranges), naming the
batch at fault, and all batches must have the structure of the first one.
A prefetch thread reads and validates batch b+1 while the C step trains on
batch b (the native step releases the GIL).
"""
from __future__ import annotations

import itertools
import numbers
import queue
import threading
from typing import Any
import types
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class PyDataset:
    """Base class for a dataset of batches (Keras 3's ``keras.utils.PyDataset``).

    Subclass it and define ``__len__`` (the number of batches) and
    ``__getitem__(index)`` (batch `index`: ``x``, ``(x, y)`` or
    ``(x, y, sample_weight)``); optionally :meth:`on_epoch_begin` /
    :meth:`on_epoch_end` (e.g. to reshuffle).

    Parameters
    ----------
    workers : int, default 1
        Threads that call ``__getitem__`` ahead of the training step (1: the
        prefetch thread alone).
    use_multiprocessing : bool, default False
        Accepted for Keras compatibility; fastgrad uses threads either way.
    max_queue_size : int, default 10
        Batches fetched ahead at most when ``workers > 1``.

    Raises
    ------
    ValueError
        If `workers` or `max_queue_size` is not a positive integer.

    Examples
    --------
    >>> import numpy as np
    >>> import fastgrad as fg
    >>> class Batches(fg.utils.PyDataset):
    ...     def __init__(self, x, y, batch_size):
    ...         super().__init__()
    ...         self.x, self.y, self.batch_size = x, y, batch_size
    ...     def __len__(self):
    ...         return -(-len(self.x) // self.batch_size)
    ...     def __getitem__(self, i):
    ...         s = slice(i * self.batch_size, (i + 1) * self.batch_size)
    ...         return self.x[s], self.y[s]
    >>> len(Batches(np.zeros((10, 3)), np.zeros(10), 4))
    3
    """

    def __init__(self, workers: int = 1, use_multiprocessing: bool = False, max_queue_size: int = 10) -> None:
        for name, v in (("workers", workers), ("max_queue_size", max_queue_size)):
            if isinstance(v, bool) or not isinstance(v, (numbers.Integral, np.integer)) or v < 1:
                raise ValueError(f"PyDataset: {name} must be a positive integer, got {v!r}")
        self._workers = int(workers)
        self._use_multiprocessing = bool(use_multiprocessing)
        self._max_queue_size = int(max_queue_size)

    @property
    def workers(self) -> int:
        """Threads that fetch batches ahead (a subclass that skips ``__init__`` gets 1)."""
        return self.__dict__.get("_workers", 1)

    @workers.setter
    def workers(self, value: int) -> None:
        self._workers = int(value)

    @property
    def use_multiprocessing(self) -> bool:
        """Accepted for Keras compatibility; fastgrad uses threads."""
        return self.__dict__.get("_use_multiprocessing", False)

    @use_multiprocessing.setter
    def use_multiprocessing(self, value: bool) -> None:
        self._use_multiprocessing = bool(value)

    @property
    def max_queue_size(self) -> int:
        """Batches fetched ahead at most when ``workers > 1``."""
        return self.__dict__.get("_max_queue_size", 10)

    @max_queue_size.setter
    def max_queue_size(self, value: int) -> None:
        self._max_queue_size = int(value)

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__(index)")

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define __len__()")

    @property
    def num_batches(self) -> int:
        """The number of batches, ``len(self)``."""
        return len(self)

    def on_epoch_begin(self) -> None:
        """Called before each epoch's first batch is fetched."""
        pass

    def on_epoch_end(self) -> None:
        """Called after each epoch (reshuffle here)."""
        pass


# ---------------------------------------------------------------------- detection
def _is_array_like(x: Any) -> bool:
    if isinstance(x, (np.ndarray, list, tuple, dict, str, bytes, numbers.Number)):
        return True
    if hasattr(x, "__array__") or hasattr(x, "__array_interface__"):
        return True            # torch tensors, pandas objects, array-likes
    return False


def _is_pydataset(x: Any) -> bool:
    return isinstance(x, PyDataset) or (
        not _is_array_like(x) and hasattr(x, "__getitem__") and hasattr(x, "__len__")
        and hasattr(x, "on_epoch_end"))


def is_stream(x: Any) -> bool:
    """True for the sources this module adapts (not for arrays, lists, dicts,
    torch tensors or pandas objects, which are in-memory data)."""
    if x is None or _is_array_like(x):
        return False
    if _is_pydataset(x) or isinstance(x, types.GeneratorType):
        return True
    return hasattr(x, "__iter__") or hasattr(x, "__next__")


def describe(x: Any) -> str:
    if isinstance(x, ArrayBatches):
        return "memmap"
    if isinstance(x, types.GeneratorType):
        return "generator"
    if _is_pydataset(x):
        return f"PyDataset {type(x).__name__}"
    mod = type(x).__module__ or ""
    if mod.startswith("torch"):
        return f"torch {type(x).__name__}"
    if hasattr(x, "__next__"):
        return f"iterator {type(x).__name__}"
    return f"iterable {type(x).__name__}"


# ---------------------------------------------------------------------- sources
class _Source:
    one_shot = False           # an iterator read once, across epochs
    length = None              # batches per pass when known

    def epoch_iter(self, shuffle):
        raise NotImplementedError

    def end_epoch(self):
        pass


class _IteratorSource(_Source):
    one_shot = True

    def __init__(self, it):
        self.it = it

    def epoch_iter(self, shuffle):
        return self.it


class _IterableSource(_Source):
    def __init__(self, obj):
        self.obj = obj
        try:
            self.length = int(len(obj))
        except (TypeError, NotImplementedError):
            self.length = None

    def epoch_iter(self, shuffle):
        return iter(self.obj)


class _PyDatasetSource(_Source):
    def __init__(self, ds, what):
        self.ds = ds
        try:
            self.length = int(len(ds))
        except Exception as exc:    # noqa: BLE001 -- a user's __len__
            raise TypeError(f"{what}: len() of {describe(ds)} failed: {exc!r}") from None
        if self.length < 0:
            raise ValueError(f"{what}: {describe(ds)} has length {self.length}")

    def epoch_iter(self, shuffle):
        ds, n = self.ds, self.length
        order = np.arange(n)
        if shuffle:
            from .. import _config
            order = _config.rng().permutation(n)
        begin = getattr(ds, "on_epoch_begin", None)
        if begin is not None:
            begin()
        workers = int(getattr(ds, "workers", 1) or 1)
        if workers <= 1:
            return (ds[int(i)] for i in order)
        return _threaded_getitem(ds, order, workers, int(getattr(ds, "max_queue_size", 10) or 10))

    def end_epoch(self):
        end = getattr(self.ds, "on_epoch_end", None)
        if end is not None:
            end()


def _threaded_getitem(ds, order, workers, ahead):
    """ds[i] for i in order, fetched by `workers` threads at most `ahead` batches
    in advance, yielded in order."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fg-pydataset")
    pending = []
    try:
        it = iter(order)
        for i in itertools.islice(it, max(ahead, workers)):
            pending.append(pool.submit(ds.__getitem__, int(i)))
        while pending:
            fut = pending.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(ds.__getitem__, int(nxt)))
            yield fut.result()
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True)


class ArrayBatches:
    """Batches of in-memory-style arrays read a batch at a time: fit routes a
    memmap that needs a dtype conversion (uint8 images, float64) here, so only
    one batch is converted at a time instead of the whole file. Batch order is
    the in-memory path's: rows in order, or one permutation per epoch drawn
    from fastgrad's generator when shuffled (same weights as the arrays)."""

    def __init__(self, x, y, sample_weight, batch_size, what="fit"):
        from .data import _to_array
        self.n = int(x.shape[0])
        self.x = x
        self.y = None if y is None else _to_array(y, f"{what}: y")
        self.sw = None if sample_weight is None else _to_array(sample_weight,
                                                                f"{what}: sample_weight")
        for name, a in (("y", self.y), ("sample_weight", self.sw)):
            if a is not None and (a.ndim == 0 or a.shape[0] != self.n):
                raise ValueError(f"{what}: x and {name} have different lengths: x has "
                                 f"{self.n} samples, {name} has shape {a.shape}")
        self.batch_size = int(batch_size)


class _ArraySource(_Source):
    def __init__(self, ab):
        self.ab = ab
        self.length = (ab.n + ab.batch_size - 1) // ab.batch_size

    def epoch_iter(self, shuffle):
        ab = self.ab
        perm = None
        if shuffle:
            from .. import _config
            perm = _config.rng().permutation(ab.n)

        return self._batches(perm)     # the permutation is drawn now, not in the prefetch thread

    def _batches(self, perm):
        ab = self.ab

        def rows(a, s, e):
            if a is None:
                return None
            if perm is None:
                return a[s:e]
            return np.take(a, perm[s:e], axis=0)
        for s in range(0, ab.n, ab.batch_size):
            e = min(s + ab.batch_size, ab.n)
            yield rows(ab.x, s, e), rows(ab.y, s, e), rows(ab.sw, s, e)


def make_source(x, what):
    if isinstance(x, ArrayBatches):
        return _ArraySource(x)
    if _is_pydataset(x):
        return _PyDatasetSource(x, what)
    if isinstance(x, types.GeneratorType) or hasattr(x, "__next__"):
        return _IteratorSource(x)
    if hasattr(x, "__iter__"):
        return _IterableSource(x)
    raise TypeError(f"{what}: cannot read batches from {type(x).__name__}")


# ---------------------------------------------------------------------- batches
def unpack(raw):
    """(x, y, sample_weight) of one batch, Keras's unpack_x_y_sample_weight."""
    if isinstance(raw, list):
        raw = tuple(raw)
    if not isinstance(raw, tuple):
        return raw, None, None
    if len(raw) == 1:
        return raw[0], None, None
    if len(raw) == 2:
        return raw[0], raw[1], None
    if len(raw) == 3:
        return raw
    raise ValueError(f"a batch must be x, (x,), (x, y) or (x, y, sample_weight); got a "
                     f"{type(raw).__name__} of {len(raw)} elements")


def structure(raw):
    """A description of a batch's structure, for consistency checks."""
    def of(a):
        if a is None:
            return "None"
        if isinstance(a, dict):
            return "dict(" + ",".join(sorted(map(str, a))) + ")"
        if isinstance(a, (list, tuple)) and a and not np.isscalar(a[0]) and \
                not isinstance(a[0], (list, tuple)):
            return f"{len(a)} arrays"
        return "array"
    x, y, sw = unpack(raw)
    return (of(x), of(y), of(sw))


def _describe_structure(s):
    return f"x: {s[0]}, y: {s[1]}, sample_weight: {s[2]}"


# ---------------------------------------------------------------------- prefetch
_END = object()


class Feeder:
    """Reads raw batches from `it` in a thread, converts them with
    `convert(raw, index)` and hands them over in order through a small queue,
    so batch b+1 is read and validated while the caller trains on batch b.
    An exception raised reading or converting batch b is re-raised by `get`
    when batch b is due. `first`: an already converted first item."""

    def __init__(self, it, convert, start=0, first=None, depth=2, threaded=True):
        self._it = it
        self._convert = convert
        self._index = start
        self._first = first
        self._q = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = None
        if threaded:
            self._thread = threading.Thread(target=self._run, name="fg-prefetch", daemon=True)
            self._thread.start()

    def _put(self, item):
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self):
        """One (kind, payload): ("ok", data) / (_END, None) / ("err", exc)."""
        try:
            raw = next(self._it)
        except StopIteration:
            return _END, None
        except Exception as exc:    # noqa: BLE001 -- the user's generator failed
            return "err", exc
        b = self._index
        self._index += 1
        try:
            return "ok", self._convert(raw, b)
        except Exception as exc:    # noqa: BLE001 -- re-raised in the caller's thread
            return "err", exc

    def _run(self):
        while not self._stop.is_set():
            item = self._produce()
            if not self._put(item) or item[0] != "ok":
                return

    def get(self):
        """The next converted batch, or _END."""
        if self._first is not None:
            item, self._first = self._first, None
            return item
        if self._done:
            return _END
        if self._thread is None:
            kind, payload = self._produce()
        else:
            kind, payload = self._q.get()
        if kind is _END:
            self._done = True
            return _END
        if kind == "err":
            self._done = True
            raise payload
        return payload

    def close(self):
        self._stop.set()
        if self._thread is not None:
            while True:                 # unblock a producer waiting on a full queue
                try:
                    self._q.get_nowait()
                except queue.Empty:
                    break
            self._thread.join(timeout=5.0)
            self._thread = None


class Stream:
    """Epochs of validated batches from a source.

    steps: batches per epoch (None: one pass of the source). After an epoch,
    `ran_out` tells whether it ended before `steps` batches (or, for a one-shot
    iterator, produced nothing)."""

    def __init__(self, x, what, steps, convert, shuffle=False, prefetch=True):
        self.what = what
        self.name = describe(x)
        self.src = make_source(x, what)
        self.steps = steps
        self.convert = convert
        self.shuffle = bool(shuffle) and isinstance(self.src, (_PyDatasetSource, _ArraySource))
        self.prefetch = prefetch
        self._feeder = None       # the persistent feeder of a one-shot iterator
        self._pending_iter = None  # the epoch iterator the first batch was peeked from
        self._first = None
        self.ran_out = False
        self.epochs_done = 0
        self.signature = None

    @property
    def known_steps(self):
        if self.steps is not None:
            return self.steps
        return self.src.length

    def _iter(self):
        return iter(self.src.epoch_iter(self.shuffle))

    def peek_first(self):
        """The first raw batch (kept for the first epoch): the model is built from it."""
        if self._first is None:
            it = self._iter()
            try:
                raw = next(it)
            except StopIteration:
                raise ValueError(f"{self.what}: the {self.name} yielded no batch") from None
            self._first = raw
            self._pending_iter = it
        return self._first

    def _check_structure(self, raw, b):
        if isinstance(self.src, _ArraySource):
            return raw
        try:
            sig = structure(raw)
        except ValueError as exc:
            raise ValueError(f"{self.what}: batch {b} of the {self.name}: {exc}") from None
        if self.signature is None:
            self.signature = sig
        elif sig != self.signature:
            raise ValueError(f"{self.what}: batch {b} of the {self.name} has structure "
                             f"({_describe_structure(sig)}), but the first batch had "
                             f"({_describe_structure(self.signature)}); every batch must have "
                             "the same structure")
        return unpack(raw)

    def _convert(self, raw, b):
        x, y, sw = self._check_structure(raw, b)
        return self.convert(x, y, sw, f"{self.what}: batch {b} of the {self.name}")

    def _new_feeder(self, start):
        if self._pending_iter is not None:
            it = itertools.chain([self._first], self._pending_iter)
            self._pending_iter = None
            self._first = None
        else:
            it = self._iter()
        return Feeder(it, self._convert, start=start, threaded=self.prefetch)

    def epoch(self):
        """Yields (batch index in the epoch, ArrayData) for one epoch."""
        self.ran_out = False
        one_shot = self.src.one_shot
        if one_shot:
            if self._feeder is None:
                self._feeder = self._new_feeder(0)
            feeder = self._feeder
        else:
            feeder = self._new_feeder(0)
        b = 0
        try:
            while self.steps is None or b < self.steps:
                data = feeder.get()
                if data is _END:
                    if self.steps is not None or (one_shot and b == 0):
                        self.ran_out = True
                    break
                yield b, data
                b += 1
        finally:
            if not one_shot:
                feeder.close()
        self.epochs_done += 1
        if not one_shot:
            self.src.end_epoch()

    def close(self):
        if self._feeder is not None:
            self._feeder.close()
            self._feeder = None


def check_steps(steps, what, name):
    if steps is None:
        return None
    if isinstance(steps, bool) or not isinstance(steps, (numbers.Integral, np.integer)) \
            or steps < 1:
        raise ValueError(f"{what}: {name} must be a positive integer or None, got {steps!r}")
    return int(steps)


def warn_ran_out(what, name, steps, epoch):
    warnings.warn(f"{what}: the {name} ran out of data at epoch {epoch + 1}"
                  + (f" before steps_per_epoch={steps} batches" if steps else "")
                  + "; interrupting training. A generator is read once: give steps_per_epoch "
                  "with a generator that loops, or use a PyDataset / DataLoader",
                  UserWarning, stacklevel=6)
