"""Coexistence benchmarks: fastgrad sharing a process (and the cores) with
NumPy's OpenBLAS, group `coexistence`.

Three scenarios (issue 14, section 1), each on 2 threads for both libraries:

  predict  model.predict (2,000 x 784 -> 512 -> 10) alternated call by call
           with a 384^3 float32 NumPy matmul;
  fit      fit (2,048 rows, batch 128, 784 -> 512 -> 10) with a callback doing
           one 384^3 NumPy matmul per batch;
  gemm     a 784x128x128 fastgrad GEMM (fg.ops.gemm, A^T as in dW of the MLP)
           alternated with a 384^3 NumPy matmul.

For each scenario the group holds the parts run alone and the mixed run; the
mixed run also times each part inside the mix, so extra_info gives
`fastgrad_ratio` (fastgrad's part in the mix / fastgrad alone) and
`numpy_ratio` (NumPy's part in the mix / NumPy alone). Target: both <= 1.3.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest \
        benchmarks/bench_coexistence.py --benchmark-only --benchmark-group-by=group \
        --benchmark-max-time=0.5 --benchmark-min-rounds=3

fastgrad runs NumPy's OpenBLAS jobs on its own OpenMP team (fg.share_blas_threads,
csrc/runtime/blas_share.c); FASTGRAD_SHARE_BLAS_THREADS=0 measures without it.
`python benchmarks/bench_coexistence.py sweep [repeats]` compares NumPy alone
with and without sharing over sizes 64..1024 (the cost to a NumPy-only program).

On a shared machine, pytest-benchmark's alone/mixed rows are measured minutes
apart; the script mode measures them interleaved (alone fastgrad, alone
NumPy, mixed, in rotation, REPEATS times) and prints the medians:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_coexistence.py [repeats]
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np

import fastgrad as fg

THREADS = 2
NP_N = 384


def _set_threads():
    fg.set_num_threads(THREADS)
    try:  # NumPy's OpenBLAS on the same count (threadpoolctl when installed)
        from threadpoolctl import threadpool_limits
        threadpool_limits(THREADS, user_api="blas")
    except ImportError:
        pass


class Scenarios:
    """The parts of the three scenarios; each returns the seconds of each part."""

    def __init__(self, seed=0):
        _set_threads()
        rng = np.random.default_rng(seed)
        self.a = rng.standard_normal((NP_N, NP_N)).astype(np.float32)
        self.b = rng.standard_normal((NP_N, NP_N)).astype(np.float32)
        self.c = np.empty((NP_N, NP_N), np.float32)
        fg.set_seed(seed)
        self.model = fg.Sequential([fg.layers.Dense(512, activation="relu", input_shape=(784,)),
                                    fg.layers.Dense(10, activation="softmax")])
        self.model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        self.x = rng.standard_normal((2000, 784)).astype(np.float32)
        self.fx = rng.standard_normal((2048, 784)).astype(np.float32)
        self.fy = rng.integers(0, 10, 2048).astype(np.int64)
        self.ga = rng.standard_normal((128, 784)).astype(np.float32)   # A^T: (K=128, M=784)
        self.gb = rng.standard_normal((128, 128)).astype(np.float32)
        self.gc = np.empty((784, 128), np.float32)
        self.model.predict(self.x, verbose=0)
        self.model.fit(self.fx, self.fy, batch_size=128, epochs=1, verbose=0, shuffle=False)
        self._np_times = []

    # parts
    def np_mm(self):
        t = time.perf_counter()
        np.matmul(self.a, self.b, out=self.c)
        return time.perf_counter() - t

    def predict(self):
        t = time.perf_counter()
        self.model.predict(self.x, verbose=0)
        return time.perf_counter() - t

    def gemm(self):
        t = time.perf_counter()
        fg.ops.gemm(self.ga, self.gb, out=self.gc, trans_a=True)
        return time.perf_counter() - t

    def fit(self, with_numpy=False):
        """Seconds of one epoch (16 batches); with_numpy: a callback does one
        NumPy matmul per batch (its times are kept in self._np_times). The
        fastgrad part of the mix is the epoch minus the callbacks' matmuls."""
        cbs = []
        self._np_times = []
        if with_numpy:
            cbs = [fg.callbacks.LambdaCallback(
                on_train_batch_end=lambda batch, logs: self._np_times.append(self.np_mm()))]
        t = time.perf_counter()
        self.model.fit(self.fx, self.fy, batch_size=128, epochs=1, verbose=0, shuffle=False, callbacks=cbs)
        return time.perf_counter() - t

    # blocks: median seconds per call
    def alone(self, fn, n):
        return statistics.median(fn() for _ in range(n))

    def mixed(self, fg_fn, n):
        """fg_fn and the NumPy matmul alternated n times: (median fastgrad, median NumPy)."""
        tf, tn = [], []
        for _ in range(n):
            tf.append(fg_fn())
            tn.append(self.np_mm())
        return statistics.median(tf), statistics.median(tn)

    def mixed_fit(self, n):
        tf, tn = [], []
        for _ in range(n):
            total = self.fit(with_numpy=True)
            tf.append(total - sum(self._np_times))
            tn.extend(self._np_times)
        return statistics.median(tf), statistics.median(tn)


CALLS = {"predict": 20, "gemm": 200, "fit": 3}


def measure(s: Scenarios, name: str, repeats: int, settle: float = 0.2):
    """Alone fastgrad, alone NumPy, mixed, in rotation: medians over repeats of
    (fastgrad alone, NumPy alone, fastgrad in mix, NumPy in mix)."""
    n = CALLS[name]
    fg_fn = {"predict": s.predict, "gemm": s.gemm, "fit": s.fit}[name]
    rows = []
    for r in range(repeats):
        order = [0, 1, 2][r % 3:] + [0, 1, 2][:r % 3]
        res = {}
        for k in order:
            time.sleep(settle)
            if k == 0:
                res[0] = s.alone(fg_fn, n)
            elif k == 1:
                res[1] = s.alone(s.np_mm, max(n, 30))
            else:
                res[2] = s.mixed_fit(n) if name == "fit" else s.mixed(fg_fn, n)
        rows.append((res[0], res[1], res[2][0], res[2][1]))
    return tuple(statistics.median(col) for col in zip(*rows))


SWEEP = (64, 96, 128, 192, 256, 384, 512, 1024)
SETTLE_S = 0.5


def numpy_alone_sweep(repeats: int):
    """NumPy alone with OpenBLAS's jobs on fastgrad's team vs on OpenBLAS's own
    threads (fg.share_blas_threads), interleaved: the cost of sharing to a
    program that only uses NumPy. Prints shared / own per size and dtype."""
    _set_threads()
    rng = np.random.default_rng(1)
    print(f"numpy matmul alone, {THREADS} threads: median time with the shared team / with OpenBLAS's own threads")
    for dt in (np.float32, np.float64):
        for n in SWEEP:
            a = rng.standard_normal((n, n)).astype(dt)
            b = rng.standard_normal((n, n)).astype(dt)
            c = np.empty((n, n), dt)
            calls = max(5, int(2e8 / (2 * n ** 3)))
            med = {True: [], False: []}
            for r in range(repeats):
                for mode in ((True, False) if r % 2 == 0 else (False, True)):
                    fg.share_blas_threads(mode)
                    # OpenBLAS's own workers, once used, spin for a while after
                    # their last job (OPENBLAS_THREAD_TIMEOUT, ~0.1-0.3 s here)
                    # before they sleep: let them settle, so the shared rows
                    # measure sharing, not the previous own-threads rows' spinners.
                    time.sleep(SETTLE_S)
                    np.matmul(a, b, out=c)
                    ts = []
                    for _ in range(calls):
                        t = time.perf_counter()
                        np.matmul(a, b, out=c)
                        ts.append(time.perf_counter() - t)
                    med[mode].append(statistics.median(ts))
            on, off = statistics.median(med[True]), statistics.median(med[False])
            print(f"  {np.dtype(dt).name:8s} {n:5d}^3  shared {on*1e6:9.1f} us  own {off*1e6:9.1f} us  "
                  f"ratio {on/off:5.3f}", flush=True)
    fg.share_blas_threads(True)


def main(argv):
    if len(argv) > 1 and argv[1] == "sweep":
        return numpy_alone_sweep(int(argv[2]) if len(argv) > 2 else 5)
    repeats = int(argv[1]) if len(argv) > 1 else 5
    names = argv[2].split(",") if len(argv) > 2 else ["predict", "fit", "gemm"]
    s = Scenarios()
    info = fg.config_info() if hasattr(fg, "config_info") else {}
    print(f"threads {THREADS}, isa {info.get('isa')}, GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')!r} "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')!r}, wait policy: {fg.thread_wait_policy()}"
          if hasattr(fg, "thread_wait_policy") else f"threads {THREADS}")
    print(f"blas threads: {info.get('blas threads')}")
    for name in names:
        fa, na, fm, nm = measure(s, name, repeats)
        print(f"{name:8s} fastgrad alone {fa*1e3:8.3f} ms  in mix {fm*1e3:8.3f} ms  ratio {fm/fa:5.2f} | "
              f"numpy alone {na*1e3:7.3f} ms  in mix {nm*1e3:7.3f} ms  ratio {nm/na:5.2f}", flush=True)


# ----------------------------------------------------------------- pytest-benchmark
try:
    import pytest
except ImportError:  # script mode without pytest
    pytest = None

if pytest is not None and "pytest" in sys.modules and __name__ != "__main__":
    _S = []

    def _scen():
        if not _S:
            _S.append(Scenarios())
        return _S[0]

    def _rounds(benchmark, fn):
        return benchmark.pedantic(fn, rounds=5, iterations=1, warmup_rounds=1)

    @pytest.mark.parametrize("name", ["predict", "fit", "gemm"])
    def test_alone_fastgrad(benchmark, name):
        s = _scen()
        benchmark.group = "coexistence"
        benchmark.name = f"{name}: fastgrad alone"
        fn = {"predict": s.predict, "gemm": s.gemm, "fit": s.fit}[name]
        n = CALLS[name]
        benchmark.pedantic(lambda: s.alone(fn, n), rounds=5, iterations=1, warmup_rounds=1)
        benchmark.extra_info["calls_per_round"] = n

    def test_alone_numpy(benchmark):
        s = _scen()
        benchmark.group = "coexistence"
        benchmark.name = f"numpy {NP_N}^3 matmul alone"
        benchmark.pedantic(lambda: s.alone(s.np_mm, 30), rounds=5, iterations=1, warmup_rounds=1)

    @pytest.mark.parametrize("name", ["predict", "fit", "gemm"])
    def test_mixed(benchmark, name):
        """The mix, with the ratios of each part to its alone time, measured
        interleaved in this test (so the ratios do not depend on the load
        minutes apart)."""
        s = _scen()
        benchmark.group = "coexistence"
        benchmark.name = f"{name}: fastgrad + numpy mixed"
        n = CALLS[name]
        fg_fn = {"predict": s.predict, "gemm": s.gemm, "fit": s.fit}[name]
        benchmark.pedantic(lambda: s.mixed_fit(n) if name == "fit" else s.mixed(fg_fn, n),
                           rounds=3, iterations=1, warmup_rounds=0)
        if getattr(benchmark, "disabled", False):  # --benchmark-disable (CI): each part once is enough
            return
        fa, na, fm, nm = measure(s, name, 3, settle=0.1)
        benchmark.extra_info.update(fastgrad_alone_s=fa, numpy_alone_s=na, fastgrad_mixed_s=fm,
                                    numpy_mixed_s=nm, fastgrad_ratio=fm / fa, numpy_ratio=nm / na)


    @pytest.mark.parametrize("shared", [True, False], ids=["fastgrad team", "openblas threads"])
    @pytest.mark.parametrize("n", [128, 384])
    def test_numpy_alone_shared_vs_own(benchmark, n, shared):
        """NumPy alone, its OpenBLAS jobs on fastgrad's team or on its own
        threads: sharing must cost a NumPy-only program nothing (<= 2 %)."""
        _set_threads()
        rng = np.random.default_rng(1)
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        c = np.empty((n, n), np.float32)
        benchmark.group = f"coexistence: numpy {n}^3 alone"
        benchmark.name = f"numpy {n}^3 matmul, jobs on the {'fastgrad team' if shared else 'openblas threads'}"
        fg.share_blas_threads(shared)
        try:
            benchmark(np.matmul, a, b, out=c)
        finally:
            fg.share_blas_threads(True)
        benchmark.extra_info["blas_shared"] = shared


if __name__ == "__main__":
    main(sys.argv)
