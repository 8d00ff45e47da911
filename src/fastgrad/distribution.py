"""Data-parallel training across processes on MPI (Keras 3's distribution API).

    import fastgrad as fg
    fg.distribution.set_distribution(fg.distribution.DataParallel())
    model.fit(x, y, batch_size=256, ...)        # mpiexec -n N python train.py

After `set_distribution(DataParallel())` every process (rank) of the MPI job
runs the same script; `fit` then trains one model jointly:

- `batch_size` is the global batch: each of the N ranks computes
  batch_size / N of its rows (a ValueError when N does not divide it);
- at the start of every `fit` the parameters, non-trainable state and the
  optimizer state (slots, iterations) are broadcast from rank 0, so a model
  built or loaded on every rank starts from rank 0's bits;
- every epoch's permutation is rank 0's (broadcast), so N ranks see exactly
  the batches one process sees; rank r takes rows [r*B/N, (r+1)*B/N) of each
  global batch of B rows (a short last batch is split as evenly as it goes);
- after the backward pass the flat gradient buffers are reduced once per step
  (see `Communicator.allreduce_grads`: MPI_Allreduce for 2 ranks, else a
  reduce-scatter whose every chunk is summed in rank order 0, 1, ..., N-1,
  then an allgather); each rank's loss gradient was scaled by its share of
  the batch rows, so the sum is the gradient of the global batch's mean loss, bitwise the same on every rank and from run to
  run for a given N; then every rank runs the same regularizer / clip /
  fused optimizer update (engine: Step.grad_step + apply_update, or the C
  plan's fg_net_train_grad + fg_net_apply_update);
- the loss, per-output losses and metrics in the logs and History are those
  of the global batch / epoch (per-step loss rows and metric states are
  gathered and summed in rank order, so every rank gets the same numbers and
  EarlyStopping / ReduceLROnPlateau decide the same on every rank);
  `stop_training` set on any rank stops every rank;
- callbacks with `rank_zero_only = True` (ProgbarLogger, ModelCheckpoint,
  CSVLogger; set it on your own writers) run on rank 0 only;
- `evaluate` / `predict` split the rows into N contiguous shards and
  aggregate the losses / metrics or gather the outputs (every rank gets the
  full result).

Failure: every collective runs under a watchdog thread with a deadline
(`DataParallel(timeout=...)`, or FASTGRAD_MPI_TIMEOUT seconds; default 300)
that prints which collective of which rank timed out and aborts the job;
a rank that raises inside a distributed fit / evaluate / predict prints the
error naming itself and aborts the MPI job (MPI_Abort), so the other ranks
never wait forever; mpiexec (hydra) ends every rank when one is killed.

mpi4py (with an MPI library: `pip install "fastgrad[mpi]"` installs mpi4py
and MPICH) is imported only when a DataParallel is made.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np

__all__ = ["DataParallel", "set_distribution", "distribution", "rank", "world_size",
           "list_devices", "DistributedError", "DistributedTimeout"]

_current: DataParallel | None = None


class DistributedError(RuntimeError):
    """The ranks disagree on the job (raised on every rank alike)."""


class DistributedTimeout(DistributedError):
    """A collective did not complete in time on this rank (a peer died or hangs)."""


def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            "fastgrad.distribution.DataParallel needs mpi4py and an MPI library; install them "
            "with `pip install \"fastgrad[mpi]\"` (mpi4py + mpich) and run the script under "
            f"`mpiexec -n N python script.py` ({exc})") from None
    return MPI


class DataParallel:
    """Data parallelism over the processes of an MPI communicator.

    Keras 3's ``keras.distribution.DataParallel``: every rank holds the whole
    model, ``fit`` shards each global batch over the ranks and sums the
    gradients (docs/distributed.md). Needs mpi4py (``pip install "fastgrad[mpi]"``)
    and a run under ``mpiexec -n N``.

    Parameters
    ----------
    device_mesh : None
        Not supported (one device per rank); must be None.
    devices : list of str or None, default None
        Accepted for Keras compatibility; None or the ranks' devices
        (:meth:`list_devices`).
    auto_shard_dataset : bool, default True
        Must be True (fit shards every global batch).
    comm : mpi4py communicator or None, default None
        The communicator (None: a duplicate of ``COMM_WORLD``).
    timeout : float or None, default None
        Seconds a collective may take before the job is aborted (None:
        ``FASTGRAD_MPI_TIMEOUT`` or 300).

    Raises
    ------
    ImportError
        If mpi4py is not installed.
    ValueError
        If an argument is not supported or out of range.
    """

    def __init__(self, device_mesh: Any = None, devices: list[str] | None = None, auto_shard_dataset: bool = True,
                 comm: Any = None, timeout: float | None = None) -> None:
        if not auto_shard_dataset:
            raise ValueError("DataParallel: auto_shard_dataset=False is not supported (fit "
                             "shards every global batch over the ranks)")
        MPI = _import_mpi()
        self.MPI = MPI
        self.comm = (comm if comm is not None else MPI.COMM_WORLD).Dup()
        self.rank = self.comm.Get_rank()
        self.world_size = self.comm.Get_size()
        if device_mesh is not None:
            raise ValueError("DataParallel: device_mesh is not supported (one device per rank); "
                             "leave it None")
        if devices is not None and list(devices) != self.list_devices():
            raise ValueError(f"DataParallel: devices must be None or {self.list_devices()}, got "
                             f"{devices!r}")
        if timeout is None:
            timeout = float(os.environ.get("FASTGRAD_MPI_TIMEOUT", "300"))
        if not timeout > 0:
            raise ValueError(f"DataParallel: timeout must be > 0 seconds, got {timeout!r}")
        self.timeout = float(timeout)
        self.comms = Communicator(self.comm, self.timeout)

    def list_devices(self) -> list[str]:
        """One "cpu:<rank>" per rank.

        Returns
        -------
        list of str
            The devices.
        """
        return [f"cpu:{r}" for r in range(self.world_size)]

    @property
    def active(self) -> bool:
        """True when there is more than one rank (one rank trains as without it)."""
        return self.world_size > 1

    def __repr__(self) -> str:
        return f"DataParallel(rank={self.rank}, world_size={self.world_size})"


def set_distribution(value: DataParallel | None) -> None:
    """Make a distribution the active one (Keras's ``keras.distribution.set_distribution``).

    Parameters
    ----------
    value : DataParallel or None
        The distribution, or None to switch it off.

    Raises
    ------
    TypeError
        If `value` is neither.
    """
    global _current
    if value is not None and not isinstance(value, DataParallel):
        raise TypeError(f"set_distribution: expected a DataParallel or None, got {value!r}")
    _current = value


def distribution() -> DataParallel | None:
    """The active distribution.

    Returns
    -------
    DataParallel or None
        The distribution (None when none is set).
    """
    return _current


def rank() -> int:
    """This process's rank in the active distribution.

    Returns
    -------
    int
        The rank (0 without a distribution).
    """
    return 0 if _current is None else _current.rank


def world_size() -> int:
    """The number of ranks of the active distribution.

    Returns
    -------
    int
        The number (1 without a distribution).
    """
    return 1 if _current is None else _current.world_size


def list_devices(device_type: str | None = None) -> list[str]:
    """The devices of the active distribution, one "cpu:<rank>" per rank.

    Parameters
    ----------
    device_type : {None, "cpu"}, default None
        Only CPUs exist here.

    Returns
    -------
    list of str
        The devices (``["cpu:0"]`` without a distribution).

    Raises
    ------
    ValueError
        If another device type is asked for.
    """
    if device_type not in (None, "cpu", "CPU"):
        raise ValueError(f"list_devices: fastgrad runs on cpu only, got device_type={device_type!r}")
    return ["cpu:0"] if _current is None else _current.list_devices()


def active() -> DataParallel | None:
    """The active DataParallel when it spans more than one rank, else None (used by the
    training loop)."""
    d = _current
    return d if d is not None and d.world_size > 1 else None


# ====================================================================== collectives
def shard(lo, hi, r, n):
    """Rows [lo, hi) split into n contiguous parts as evenly as possible: part r."""
    rows = hi - lo
    return lo + (r * rows) // n, lo + ((r + 1) * rows) // n


class Communicator:
    """The collectives data-parallel training uses, each blocking under a watchdog
    deadline (past it the job is aborted with a message naming the collective).
    Every reduction has a fixed order, so every rank gets the same bits."""

    def __init__(self, comm, timeout):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.timeout = timeout
        self._grad_plan = None
        self.comm_seconds = 0.0      # time spent in collectives (benchmarks)
        self._start_watchdog()

    # -------------------------------------------------------------- watchdog
    def _start_watchdog(self):
        import threading
        self._cur = None              # (deadline, what) while a collective runs
        self._poll = min(1.0, self.timeout / 10)
        t = threading.Thread(target=self._watch, name="fastgrad-mpi-watchdog", daemon=True)
        t.start()

    def _watch(self):
        """A collective still running past its deadline: print why and end the job
        (MPI_Abort; mpi4py initialises MPI_THREAD_MULTIPLE) — the rank itself is blocked
        inside MPI, where no Python exception can reach it. The rank publishes one
        tuple per collective (an atomic store: no lock on the hot path)."""
        while True:
            time.sleep(self._poll)
            cur = self._cur
            if cur is None or time.monotonic() <= cur[0]:
                continue
            exc = DistributedTimeout(
                f"fastgrad.distribution: rank {self.rank} of {self.size}: {cur[1]} did not "
                f"complete within {self.timeout:g} s; another rank probably died or hangs "
                "(timeout: DataParallel(timeout=...) or FASTGRAD_MPI_TIMEOUT)")
            try:
                self.abort(exc, "a collective")
            finally:
                os._exit(1)

    def wait(self, what):
        """Context for one blocking collective: past `timeout` seconds the watchdog
        ends the job with a message naming `what`."""
        return _Guard(self, what)

    def _enter(self, what):
        self._t0 = time.perf_counter()
        self._cur = (time.monotonic() + self.timeout, what)

    def _leave(self):
        self._cur = None
        self.comm_seconds += time.perf_counter() - self._t0

    # -------------------------------------------------------------- small collectives
    def allgather(self, vec, what="allgather"):
        """(size, len(vec)) float64: every rank's vector, in rank order."""
        v = np.ascontiguousarray(vec, dtype=np.float64).reshape(-1)
        out = np.empty((self.size, v.size), dtype=np.float64)
        with self.wait(what):
            self.comm.Allgather([v, self.MPI.DOUBLE], [out, self.MPI.DOUBLE])
        return out

    def start_allgather(self, vec):
        """Start an allgather of vec (float64) without waiting: (request, out); the
        request completes while the next blocking collective runs (one round trip
        for both), finish with finish(request, what)."""
        v = np.ascontiguousarray(vec, dtype=np.float64).reshape(-1)
        out = np.empty((self.size, v.size), dtype=np.float64)
        req = self.comm.Iallgather([v, self.MPI.DOUBLE], [out, self.MPI.DOUBLE])
        return (req, v), out

    def finish(self, req, what):
        with self.wait(what):
            req[0].Wait()

    def sum(self, vec, what="sum"):
        """Elementwise sum over ranks in rank order (float64; the same bits everywhere)."""
        rows = self.allgather(vec, what)
        acc = rows[0].copy()
        for r in range(1, self.size):
            acc += rows[r]
        return acc

    def bcast(self, arr, what="broadcast", root=0):
        """arr (contiguous numeric ndarray) overwritten in place with root's."""
        a = arr if arr.flags.c_contiguous else np.ascontiguousarray(arr)
        with self.wait(what):
            self.comm.Bcast(a, root=root)
        if a is not arr:
            arr[...] = a
        return arr

    def agree(self, values, what):
        """Raise DistributedError (on every rank alike) unless every rank passed the same
        values (numbers)."""
        rows = self.allgather(np.asarray(values, dtype=np.float64), what)
        if not np.all(rows == rows[0]):
            raise DistributedError(f"fastgrad.distribution: the ranks disagree on {what}: " +
                                   "; ".join(f"rank {r}: {list(rows[r])}" for r in range(self.size)))

    # -------------------------------------------------------------- gradients
    def _plan(self, n):
        """Chunk bounds of a buffer of n floats (rank j owns [j C, (j+1) C) with C a
        multiple of 16 floats, the last chunks shorter or empty), the receive buffer
        of this rank's chunk from every rank, and the N C work buffer the chunks are
        gathered into (a regular MPI_Allgather: MPICH's Allgatherv of these irregular
        counts took 300-400 ms for 2.6 MiB on 3-4 ranks here, its Allgather 17-25 ms)."""
        p = self._grad_plan
        if p is not None and p[0] == n:
            return p
        N = self.size
        C = max(16, ((n + N - 1) // N + 15) // 16 * 16)
        bounds = [min(n, j * C) for j in range(N)] + [n]
        counts = [bounds[j + 1] - bounds[j] for j in range(N)]
        recv = np.empty((N, C), dtype=np.float32)
        work = np.empty(N * C, dtype=np.float32)
        p = self._grad_plan = (n, bounds, counts, recv, work, C)
        return p

    def allreduce_grads(self, grads):
        """grads <- the sum over ranks of grads (flat float32; each rank's loss gradient was
        already scaled by its share of the global batch rows, so the sum is the global
        batch's gradient), the same bits on every rank and in every run:

        - 2 ranks: MPI_Allreduce in place (each element is ONE addition, a + b, which
          IEEE makes commutative, so whatever algorithm the MPI library picks, both
          ranks get the same bits run after run);
        - more ranks: a reduce-scatter (Alltoallv: rank j receives chunk j of every
          buffer) whose chunk is summed in rank order 0, 1, ..., N-1 on its owner,
          then an allgather of the chunks — a fixed order independent of the MPI
          library's allreduce algorithm (whose order may change with the message
          size, the rank count or the library version); it moves 2 (N-1)/N x bytes
          per rank, as a ring allreduce does."""
        N = self.size
        MPI = self.MPI
        if N == 2:
            with self.wait("the gradient allreduce"):
                self.comm.Allreduce(MPI.IN_PLACE, [grads, MPI.FLOAT], op=MPI.SUM)
            return
        n, bounds, counts, recv, work, C = self._plan(grads.size)
        r = self.rank
        mine = counts[r]
        with self.wait("the gradient reduce-scatter"):
            self.comm.Alltoallv([grads, (counts, bounds[:-1]), MPI.FLOAT],
                                [recv, ([mine] * N, [j * C for j in range(N)]), MPI.FLOAT])
        if mine:
            out = work[r * C:r * C + mine]
            np.add(recv[0, :mine], recv[1, :mine], out=out)
            for j in range(2, N):
                np.add(out, recv[j, :mine], out=out)
        with self.wait("the gradient allgather"):
            self.comm.Allgather(MPI.IN_PLACE, [work, MPI.FLOAT])
        np.copyto(grads, work[:n])

    def allgatherv_rows(self, local, counts, what="gather"):
        """Concatenate every rank's rows (local: (counts[rank], ...) C-contiguous
        float32) into a new array on every rank."""
        tail = local.shape[1:]
        width = int(np.prod(tail)) if tail else 1
        total = int(sum(counts))
        out = np.empty((total,) + tuple(tail), dtype=local.dtype)
        c = [int(k) * width for k in counts]
        d = [int(sum(c[:j])) for j in range(len(c))]
        src = np.ascontiguousarray(local)
        with self.wait(what):
            self.comm.Allgatherv([src, self.MPI.FLOAT], [out, (c, d), self.MPI.FLOAT])
        return out

    def abort(self, exc, where):
        """Print why this rank fails, then end every rank of the job (MPI_Abort)."""
        msg = (f"fastgrad.distribution: rank {self.rank} of {self.size} failed in {where}: "
               f"{type(exc).__name__}: {exc}; aborting the MPI job on every rank")
        try:
            sys.stdout.flush()
            print(msg, file=sys.stderr, flush=True)
        finally:
            self.comm.Abort(1)


# ====================================================================== metric states
_STATE_FIELDS = ("total", "count", "tp", "fp", "tn", "fn")


def metric_state(m):
    """The metric's additive state as one float64 vector (fields of _STATE_FIELDS it has,
    or those its `_state_fields` lists)."""
    fields = getattr(m, "_state_fields", None) or [f for f in _STATE_FIELDS if hasattr(m, f)]
    parts = [np.asarray(getattr(m, f), dtype=np.float64).reshape(-1) for f in fields]
    return fields, (np.concatenate(parts) if parts else np.zeros(0))


def set_metric_state(m, fields, vec):
    pos = 0
    for f in fields:
        cur = getattr(m, f)
        if isinstance(cur, np.ndarray):
            k = cur.size
            setattr(m, f, vec[pos:pos + k].reshape(cur.shape).astype(cur.dtype))
        else:
            k = 1
            setattr(m, f, type(cur)(vec[pos]) if isinstance(cur, (int, float)) else float(vec[pos]))
        pos += k


class _Guard:
    __slots__ = ("c", "what")

    def __init__(self, c, what):
        self.c, self.what = c, what

    def __enter__(self):
        self.c._enter(self.what)

    def __exit__(self, *exc):
        self.c._leave()
        return False


class global_metrics:
    """Context: the metrics hold the sum of every rank's state (rank order) inside,
    their own local state again after (a collective: every rank enters it)."""

    def __init__(self, comms, metrics):
        self.comms, self.metrics = comms, list(metrics)

    def __enter__(self):
        self.saved = [metric_state(m) for m in self.metrics]
        if not self.metrics:
            return self
        vec = np.concatenate([v for _, v in self.saved]) if self.saved else np.zeros(0)
        tot = self.comms.sum(vec, "the metric states") if vec.size else vec
        pos = 0
        for m, (fields, v) in zip(self.metrics, self.saved):
            set_metric_state(m, fields, tot[pos:pos + v.size])
            pos += v.size
        return self

    def __exit__(self, *exc):
        for m, (fields, v) in zip(self.metrics, self.saved):
            set_metric_state(m, fields, v)
        return False


# ====================================================================== executor
class DataParallelExecutor:
    """Wraps a model executor (engine.step.Step or engine.compiled.CompiledPlan): the
    fit loop's `train(data, perm, start, nb, bs)` with bs the global batch, run as
    one grad_step on this rank's shard, one gradient reduction, one apply_update
    per batch. Statistics rows are those of the global batches."""

    def __init__(self, inner, dist, model):
        self.inner, self.dist, self.model = inner, dist, model
        self.comms = dist.comms

    def max_batches_per_call(self, batch_size):
        return self.inner.max_batches_per_call(max(1, batch_size // self.dist.world_size))

    def train(self, data, perm, start, nb, bs):
        from .engine.step import NonFiniteLossError
        comms = self.comms
        N, r = comms.size, comms.rank
        n = data.n
        grads = self.model._store.root.grads
        width = None
        out = None
        for b in range(nb):
            p0 = (start + b) * bs
            p1 = min(p0 + bs, n)
            lo, hi = shard(p0, p1, r, N)
            if hi > lo:
                local = (np.ascontiguousarray(perm[lo:hi]) if perm is not None
                         else np.arange(lo, hi, dtype=np.int64))
                # this shard's share of the global batch: the ranks' gradients add up
                bad, row = self.inner.grad_step(data, local, hi - lo, (hi - lo) / (p1 - p0))
            else:
                grads.fill(0.0)
                bad, row = False, None
            if width is None:
                width = 2 + (len(row) - 2 if row is not None else self._n_per())
                out = np.zeros((nb, width))
            # per rank: [non-finite flag, loss * rows, rows, per-output loss * rows ...]
            vec = np.zeros(width + 1)
            if row is not None:
                vec[0] = 1.0 if bad else 0.0
                vec[1] = row[0] * row[1]
                vec[2] = row[1]
                vec[3:] = np.asarray(row[2:]) * row[1]
            # the statistics travel while the gradients are reduced (one round trip); a
            # rank whose loss is not finite sends stale gradients, and then no rank
            # applies the step
            req, rows_all = comms.start_allgather(vec)
            comms.allreduce_grads(grads)
            comms.finish(req, "the step statistics")
            tot = rows_all[0].copy()
            for j in range(1, N):
                tot += rows_all[j]
            if tot[0]:
                badr = int(np.nonzero(rows_all[:, 0])[0][0])
                loss = float(rows_all[badr, 1] / max(rows_all[badr, 2], 1))
                exc = NonFiniteLossError(f"loss is {loss}", batch=start + b, loss=loss)
                exc.done_stats = out[:b]
                raise exc
            self.inner.apply_update()
            out[b, 0] = tot[1] / tot[2]
            out[b, 1] = tot[2]
            out[b, 2:] = tot[3:] / tot[2]
        return out

    def _n_per(self):
        m = self.model
        return len(m._loss_names) if m.n_outputs > 1 else 0
