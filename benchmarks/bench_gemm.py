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

`python benchmarks/bench_gemm.py compare ...` (not pytest) prints an
interleaved fastgrad / OpenBLAS / MKL table instead (min and median of
several rounds, % of the measured peak; see COMPARE_DOC below). torch's
float32 matmul on CPU calls MKL's SGEMM (checked with MKL_VERBOSE=1).
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


# ---------------------------------------------------------------- compare mode
COMPARE_DOC = """Interleaved comparison, not a test (run the file as a script):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE PYTHONPATH=src \\
        python benchmarks/bench_gemm.py compare [--threads 1,2] [--repeats 7] [--isa avx512] [shape ...]
    # the AVX2 path against AVX2 kernels of the others (OpenBLAS Haswell, MKL AVX2):
    env OPENBLAS_CORETYPE=Haswell MKL_ENABLE_INSTRUCTIONS=AVX2 PYTHONPATH=src \\
        python benchmarks/bench_gemm.py compare --isa avx2

For each shape and thread count, `--repeats` rounds; each round times
fastgrad (the gemm binding, the chosen ISA path), np.matmul(out=) (NumPy's
BLAS under threadpoolctl limits) and torch.matmul(out=) once each, in an
order that rotates every round, so slow spells of a shared machine hit all
three alike. A timing is one call, or a batch of calls averaged when one call
is under ~10 ms. With 2 threads a 0.15 s pause separates the libraries
(OpenBLAS workers spin after a call and would steal the next library's second
core). Prints min and median GFLOP/s, % of the measured FMA peak
(peak_gflops of that ISA and thread count), fastgrad / best-of-the-others for
min and median, and the load average. Shape arguments select rows by
substring; `all` adds the 10-class skinny shapes."""

# name: (M, N, K, trans_a, trans_b) — conv rows: a 3x3 convolution 64 -> 64
# channels on 16x16 images at batch 32 as an implicit GEMM (M = pixels, K = 3*3*64)
COMPARE_SHAPES = {
    "1024^3": (1024, 1024, 1024, 0, 0),
    "2048^3": (2048, 2048, 2048, 0, 0),
    "256x1024x1024": (256, 1024, 1024, 0, 0),
    "mlp-fwd 128x128x784": (128, 128, 784, 0, 0),
    "mlp-dW 784x128x128 A^T": (784, 128, 128, 1, 0),
    "mlp-dX 128x784x128 B^T": (128, 784, 128, 0, 1),
    "conv-fwd 8192x64x576": (8192, 64, 576, 0, 0),
    "conv-dW 576x64x8192 A^T": (576, 64, 8192, 1, 0),
    "conv-dX 8192x576x64 B^T": (8192, 576, 64, 0, 1),
}
SKINNY_SHAPES = {
    "skinny-fwd 128x10x128": (128, 10, 128, 0, 0),
    "skinny-dW 128x10x128 A^T": (128, 10, 128, 1, 0),
    "skinny-dX 128x128x10 B^T": (128, 128, 10, 0, 1),
}


def _compare(argv):
    import argparse
    import statistics
    import time

    ap = argparse.ArgumentParser(prog="bench_gemm.py compare", description=COMPARE_DOC,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--isa", default=None, help="fastgrad ISA path (default: the active one)")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--clock", choices=["wall", "thread"], default="wall",
                    help="thread: CPU time of the calling thread (1-thread rows only; the time a busy "
                         "shared machine keeps the process off the CPU does not count)")
    ap.add_argument("shapes", nargs="*")
    args = ap.parse_args(argv)

    from threadpoolctl import threadpool_info, threadpool_limits
    if args.isa:
        _native.set_isa(args.isa)
    isa = _native.get_isa()
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            pass
    blas = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture', '')}".strip()
            for i in threadpool_info() if i.get("user_api") == "blas"]
    print(f"# fastgrad ISA path: {isa}; NumPy BLAS: {', '.join(blas) or '?'}; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '-')}")
    if torch is not None:
        print(f"# torch {torch.__version__}: mkl {torch.backends.mkl.is_available()}, "
              f"MKL_ENABLE_INSTRUCTIONS={os.environ.get('MKL_ENABLE_INSTRUCTIONS', '-')}, "
              f"{torch.backends.cpu.get_cpu_capability()}")

    shapes = dict(COMPARE_SHAPES)
    if "all" in args.shapes:
        shapes.update(SKINNY_SHAPES)
    sel = [s for s in args.shapes if s != "all"]
    if sel:
        shapes = {k: v for k, v in {**COMPARE_SHAPES, **SKINNY_SHAPES}.items() if any(s in k for s in sel)}
    rng = np.random.default_rng(0)
    print(f"# clock: {args.clock} (1 thread), wall (more threads); {args.repeats} interleaved rounds")
    print("| shape (M,N,K) | thr | load | fastgrad GF/s min/med (% peak) | OpenBLAS GF/s | MKL GF/s "
          "| fg/best min | fg/best med |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for nt in [int(t) for t in args.threads.split(",")]:
        peak = G.peak_gflops(nt)
        clock = time.thread_time if args.clock == "thread" and nt == 1 else time.perf_counter
        for name, (M, N, K, ta, tb) in shapes.items():
            a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
            b = rng.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
            cs = [np.empty((M, N), np.float32) for _ in range(3)]
            A, B = (a.T if ta else a), (b.T if tb else b)
            fns = [lambda: G.gemm(a, b, cs[0], ta, tb, 1.0, 0.0, nt),
                   lambda: np.matmul(A, B, out=cs[1])]
            if torch is not None:
                tA, tB, tC = torch.from_numpy(A), torch.from_numpy(B), torch.from_numpy(cs[2])
                fns.append(lambda: torch.matmul(tA, tB, out=tC))
            flops = 2.0 * M * N * K
            times = [[] for _ in fns]
            with threadpool_limits(nt):
                if torch is not None:
                    torch.set_num_threads(nt)
                # calibrate: calls per timing so one timing is >= ~10 ms
                reps = []
                for f in fns:
                    f()
                    t = time.perf_counter()
                    f()
                    reps.append(max(1, int(0.01 / max(time.perf_counter() - t, 1e-7))))
                for r in range(args.repeats):
                    order = list(range(len(fns)))
                    order = order[r % len(order):] + order[:r % len(order)]
                    for i in order:
                        if nt > 1:
                            time.sleep(0.15)
                        f, n = fns[i], reps[i]
                        if n > 1:
                            f()
                        t = clock()
                        for _ in range(n):
                            f()
                        times[i].append((clock() - t) / n)
            np.testing.assert_allclose(cs[0], cs[1], rtol=1e-3, atol=1e-3 * np.sqrt(K))
            gmin = [flops / min(t) / 1e9 for t in times]
            gmed = [flops / statistics.median(t) / 1e9 for t in times]
            best_min, best_med = max(gmin[1:]), max(gmed[1:])
            cols = [f"{gmin[i]:.0f} / {gmed[i]:.0f}" for i in range(len(fns))] + ["-"] * (3 - len(fns))
            load = os.getloadavg()[0]
            print(f"| {name} | {nt} | {load:.2f} | {cols[0]} ({100 * gmin[0] / peak:.0f}% / "
                  f"{100 * gmed[0] / peak:.0f}%) | {cols[1]} | {cols[2]} | {gmin[0] / best_min:.2f} | "
                  f"{gmed[0] / best_med:.2f} |", flush=True)
    print(f"# peak_gflops ({isa}): " + ", ".join(
        f"{t} thr {G.peak_gflops(int(t)):.0f}" for t in args.threads.split(",")))


if __name__ == "__main__":
    import sys

    if len(sys.argv) > 1 and sys.argv[1] == "compare":
        _compare(sys.argv[2:])
    else:
        print(__doc__ + "\n" + COMPARE_DOC)
