"""GEMM benchmarks: fastgrad native vs NumPy (its BLAS) vs PyTorch, float32.

One pytest-benchmark group per shape; each group holds fastgrad native
(NativeOps.gemm), NumPy's `np.matmul(a, b, out=c)` (the NumPy backend's GEMM,
BLAS threads limited with threadpoolctl) and `torch.matmul(..., out=)` (when
torch is importable), all on the same thread count, so the ratios come from
one run:

    pytest benchmarks/bench_gemm.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=median,iqr,rounds
    pytest benchmarks/bench_gemm.py --benchmark-disable     # CI: each once, fast

extra_info["GFLOPs"] = 2 M N K / median time; "flop_lower_bound_s" = 2 M N K /
the fp32 FMA peak of that many threads measured on this machine
(fastgrad._native.gemm.peak_gflops, once per process; FASTGRAD_PEAK_GFLOPS
overrides), which report.py prints as "x the FLOP bound".

Run the file alone and on a quiet machine: OpenBLAS and torch worker threads
keep spinning for a while after their calls, and on 2 cores a spinning
thread of another library starves a 2-thread region (whole scheduler time
slices, ~10 ms, for a ~100 us GEMM). The fastgrad tests run first for that
reason (pytest keeps file order).

Shapes (M, N, K) with the transposes the training step uses:
  square 1024 and 2048, 256x1024x1024, 1024^3 on one thread;
  MLP 784-128 layer at batch 128: forward X W (128x784 @ 784x128),
  dW = X^T dZ (784x128 <- (128x784)^T @ 128x128), dX = dZ W^T (128x784);
  the 10-class output layer: forward (128x128 @ 128x10), dW = (128x128)^T @
  (128x10), dX = (128x10) @ (128x10)^T;
  plus the fused dense forward (bias + relu) of the 784-128 layer.
Under --benchmark-disable (or FG_BENCH_SMALL=1) 2048^3 shrinks to 512^3.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import fastgrad._config as config
from fastgrad import _threads as fg_threads
from fastgrad import _native
from fastgrad.backend import NumpyOps

G = _native.module("gemm")
pytestmark = pytest.mark.skipif(G is None, reason="native gemm module not built")

THREADS = 2

# name: (M, N, K, trans_a, trans_b, threads)
SHAPES = {
    "1024^3": (1024, 1024, 1024, False, False, THREADS),
    "2048^3": (2048, 2048, 2048, False, False, THREADS),
    "256x1024x1024": (256, 1024, 1024, False, False, THREADS),
    "1024^3-1thread": (1024, 1024, 1024, False, False, 1),
    "mlp-fwd 128x128x784": (128, 128, 784, False, False, THREADS),
    "mlp-dW 784x128x128 (A^T)": (784, 128, 128, True, False, THREADS),
    "mlp-dX 128x784x128 (B^T)": (128, 784, 128, False, True, THREADS),
    "skinny-fwd 128x10x128": (128, 10, 128, False, False, THREADS),
    "skinny-dW 128x10x128 (A^T)": (128, 10, 128, True, False, THREADS),
    "skinny-dX 128x128x10 (B^T)": (128, 128, 10, False, True, THREADS),
}


def _small(request) -> bool:
    return bool(request.config.getoption("benchmark_disable", False)) or bool(os.environ.get("FG_BENCH_SMALL"))


def _operands(name, small):
    M, N, K, ta, tb, nt = SHAPES[name]
    if small and name == "2048^3":
        M = N = K = 512
    r = np.random.default_rng(0)
    a = r.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
    b = r.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
    c = np.empty((M, N), np.float32)
    return a, b, c, ta, tb, nt, 2.0 * M * N * K


def _gflops(benchmark, flops, nt=THREADS):
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        med = stats.stats.median
        if med > 0:
            benchmark.extra_info["GFLOPs"] = round(flops / med / 1e9, 1)
            peak = G.peak_gflops(nt)
            benchmark.extra_info["peak_gflops"] = round(peak, 1)
            benchmark.extra_info["flop_lower_bound_s"] = flops / (peak * 1e9)


@pytest.fixture
def threads():
    saved = fg_threads.explicit_num_threads()
    yield config.set_num_threads
    fg_threads.set_num_threads(saved)


@pytest.mark.parametrize("name", list(SHAPES))
def test_fastgrad(benchmark, request, threads, name):
    from fastgrad.backend import NativeOps
    ops = NativeOps()
    a, b, c, ta, tb, nt, flops = _operands(name, _small(request))
    threads(nt)
    benchmark.group = f"gemm {name}"
    benchmark.extra_info["threads"] = nt
    benchmark(ops.gemm, a, b, c, ta, tb)
    # the result is right (cheap check on one column). One BLAS thread: OpenBLAS
    # workers spin for a long while after a threaded call and would starve the
    # next benchmark's second thread.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1):
        ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b)[:, :1].astype(np.float64)
    np.testing.assert_allclose(c[:, :1], ref, rtol=1e-3, atol=1e-3 * np.sqrt(a.size / c.shape[0]))
    _gflops(benchmark, flops, nt)


@pytest.mark.parametrize("name", list(SHAPES))
def test_numpy(benchmark, request, name):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    a, b, c, ta, tb, nt, flops = _operands(name, _small(request))
    A, B = (a.T if ta else a), (b.T if tb else b)
    benchmark.group = f"gemm {name}"
    benchmark.extra_info["threads"] = nt
    with threadpoolctl.threadpool_limits(nt):
        benchmark(np.matmul, A, B, out=c)
    _gflops(benchmark, flops, nt)


@pytest.mark.parametrize("name", list(SHAPES))
def test_torch(benchmark, request, name):
    torch = pytest.importorskip("torch")
    a, b, c, ta, tb, nt, flops = _operands(name, _small(request))
    saved = torch.get_num_threads()
    torch.set_num_threads(nt)
    try:
        A, B, C = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
        A, B = (A.t() if ta else A), (B.t() if tb else B)
        benchmark.group = f"gemm {name}"
        benchmark.extra_info["threads"] = nt
        benchmark(torch.matmul, A, B, out=C)
    finally:
        torch.set_num_threads(saved)
    _gflops(benchmark, flops, nt)


# ---------------------------------------------------------------- fused dense forward
def _dense_operands():
    r = np.random.default_rng(1)
    x = r.standard_normal((128, 784)).astype(np.float32)
    w = (r.standard_normal((784, 128)) / 28).astype(np.float32)
    b = r.standard_normal(128).astype(np.float32)
    return x, w, b, np.empty((128, 128), np.float32), 2.0 * 128 * 784 * 128


def test_dense_relu_fastgrad(benchmark, threads):
    from fastgrad.backend import NativeOps
    ops = NativeOps()
    x, w, b, y, flops = _dense_operands()
    threads(THREADS)
    benchmark.group = "dense_forward relu 128x784 -> 128"
    benchmark(ops.dense_forward, x, w, b, "relu", y)
    _gflops(benchmark, flops)


def test_dense_relu_numpy_backend(benchmark):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    ops = NumpyOps()
    x, w, b, y, flops = _dense_operands()
    benchmark.group = "dense_forward relu 128x784 -> 128"
    with threadpoolctl.threadpool_limits(THREADS):
        benchmark(ops.dense_forward, x, w, b, "relu", y)
    _gflops(benchmark, flops)


def test_dense_relu_torch(benchmark):
    torch = pytest.importorskip("torch")
    x, w, b, y, flops = _dense_operands()
    saved = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    X, W, B, Y = (torch.from_numpy(v) for v in (x, w, b, y))

    def step():
        torch.addmm(B, X, W, out=Y)
        Y.relu_()

    try:
        benchmark.group = "dense_forward relu 128x784 -> 128"
        benchmark(step)
    finally:
        torch.set_num_threads(saved)
    _gflops(benchmark, flops)
