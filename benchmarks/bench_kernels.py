"""Benchmarks of the kernels family (csrc/kernels) against the NumPy backend and PyTorch.

Each group holds fastgrad native, the NumPy backend and (when importable)
PyTorch, both on 2 threads (FG_BENCH_THREADS=n to change), so ratios come
from one run:

    pytest benchmarks/bench_kernels.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=median,iqr,rounds
    pytest benchmarks/bench_kernels.py --benchmark-disable     # CI: run each once, fast

extra_info carries the effective bandwidth ("GBps": bytes read + written per
call / median time) and, for the memory-bound groups, the STREAM triad
bandwidth of this machine (benchmarks/stream) and the fraction reached.
Sizes: element-wise 16M float32, optimizers 10M parameters, cross-entropy
(128, 10) and (4096, 1000). Under --benchmark-disable the big inputs shrink
(FG_BENCH_SMALL is implied) so the run stays quick.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import fastgrad._config as config
from fastgrad import _threads as fg_threads
from fastgrad import _native
from fastgrad.backend import NumpyOps

K = _native.module("kernels")
pytestmark = pytest.mark.skipif(K is None, reason="native kernels module not built")

THREADS = int(os.environ.get("FG_BENCH_THREADS", "2"))  # fastgrad and torch alike


def _disabled(request) -> bool:
    return bool(request.config.getoption("benchmark_disable", False)) or bool(os.environ.get("FG_BENCH_SMALL"))


@pytest.fixture(scope="module")
def small(request):
    return _disabled(request)


@pytest.fixture(scope="module")
def ops():
    from fastgrad.backend.native_kernels import KernelsMixin

    class Ops(KernelsMixin, NumpyOps):
        pass

    return Ops()


@pytest.fixture(scope="module")
def ref():
    return NumpyOps()


@pytest.fixture(autouse=True)
def _two_threads():
    saved = fg_threads.explicit_num_threads()
    config.set_num_threads(THREADS)
    yield
    fg_threads.set_num_threads(saved)


def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    return torch


@pytest.fixture(scope="module")
def triad(small):
    """STREAM triad GB/s on THREADS threads (None when no C compiler)."""
    if small:
        return None
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "stream"))
    try:
        from run_stream import measure
        return measure(THREADS, 64 * 1024 * 1024, 10)
    except Exception:  # no compiler / OpenMP: report without the yardstick
        return None
    finally:
        sys.path.pop(0)


def _run(benchmark, fn, *args):
    """One untimed call first (page faults of fresh outputs, lazy init), then the timed rounds."""
    fn(*args)
    return benchmark(fn, *args)


def _bw(benchmark, nbytes, triad=None):
    """Effective GB/s (and % of triad) into extra_info, from the median time."""
    benchmark.extra_info["bytes"] = int(nbytes)
    st = getattr(benchmark, "stats", None)
    med = getattr(getattr(st, "stats", None), "median", None)
    if med:
        benchmark.extra_info["GBps"] = round(nbytes / med / 1e9, 2)
        if triad:
            benchmark.extra_info["triad_GBps"] = triad["triad_GBps"]
            benchmark.extra_info["of_triad"] = round(nbytes / med / 1e9 / triad["triad_GBps"], 3)


# ---------------------------------------------------------------- element-wise
N_ELT = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def elt(small):
    n = 1 << 16 if small else N_ELT
    x = np.linspace(-8, 8, n, dtype=np.float32)
    return x, np.empty_like(x), np.linspace(1, -1, n, dtype=np.float32)


ACTS = ["sigmoid", "tanh", "exp", "gelu"]


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("impl", ["native", "numpy", "torch"])
def test_activation(benchmark, elt, ops, ref, act, impl):
    x, y, _ = elt
    benchmark.group = f"{act} 16M float32"
    if impl == "torch":
        torch = _torch()
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        fn = {"sigmoid": lambda: torch.sigmoid(tx, out=ty), "tanh": lambda: torch.tanh(tx, out=ty),
              "exp": lambda: torch.exp(tx, out=ty), "gelu": lambda: torch.nn.functional.gelu(tx)}[act]
        _run(benchmark, fn)
    else:
        o = ops if impl == "native" else ref
        f = getattr(o, act)
        _run(benchmark, f, x, y)
        if impl == "native":
            np.testing.assert_allclose(y[::4097], getattr(ref, act)(x[::4097]), rtol=1e-5, atol=1e-6)
    _bw(benchmark, 8 * x.size)


@pytest.mark.parametrize("impl", ["native", "numpy", "torch"])
def test_relu_forward(benchmark, elt, ops, ref, triad, impl):
    x, y, _ = elt
    benchmark.group = "relu forward 16M float32"
    if impl == "torch":
        torch = _torch()
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        _run(benchmark, lambda: torch.clamp_min(tx, 0.0, out=ty))
    else:
        _run(benchmark, (ops if impl == "native" else ref).relu, x, y)
    _bw(benchmark, 8 * x.size, triad)


@pytest.mark.parametrize("impl", ["native", "numpy", "torch"])
def test_relu_backward(benchmark, elt, ops, ref, triad, impl):
    x, y, dy = elt
    benchmark.group = "relu backward 16M float32"
    if impl == "torch":
        torch = _torch()
        tx, tdy, ty = torch.from_numpy(x), torch.from_numpy(dy), torch.from_numpy(y)
        # aten's relu backward: threshold_backward(grad, output, 0)
        _run(benchmark, lambda: torch.ops.aten.threshold_backward.grad_input(tdy, tx, 0.0, grad_input=ty))
    else:
        _run(benchmark, (ops if impl == "native" else ref).backprop_relu, dy, x, y)
    _bw(benchmark, 12 * x.size, triad)


# ---------------------------------------------------------------- fused cross-entropy
@pytest.mark.parametrize("shape", [(128, 10), (4096, 1000)], ids=["128x10", "4096x1000"])
@pytest.mark.parametrize("impl", ["native", "numpy", "torch"])
def test_sparse_softmax_xent(benchmark, ops, ref, shape, impl, small):
    rows, cols = shape if not small else (min(shape[0], 256), shape[1])
    r = np.random.default_rng(0)
    logits = (r.standard_normal((rows, cols)) * 2).astype(np.float32)
    labels = r.integers(0, cols, rows)
    grad = np.empty_like(logits)
    benchmark.group = f"sparse softmax-CE fwd+bwd {shape[0]}x{shape[1]}"
    if impl == "torch":
        torch = _torch()
        F = torch.nn.functional
        tl = torch.from_numpy(logits).requires_grad_(True)
        tlab = torch.from_numpy(labels)

        def step():
            tl.grad = None
            loss = F.cross_entropy(tl, tlab)
            loss.backward()
            return loss.item()
        _run(benchmark, step)
    else:
        o = ops if impl == "native" else ref
        loss, _ = _run(benchmark, o.sparse_softmax_crossentropy, logits, labels, None, grad)
        if impl == "native":
            l2, g2 = ref.sparse_softmax_crossentropy(logits, labels)
            np.testing.assert_allclose(loss, l2, rtol=1e-5)
            np.testing.assert_allclose(grad, g2, rtol=1e-4, atol=1e-7)
    _bw(benchmark, 8 * logits.size + 8 * rows)


# ---------------------------------------------------------------- optimizers
N_PARAMS = 10 * 1000 * 1000


@pytest.fixture(scope="module")
def flat(small):
    n = 1 << 16 if small else N_PARAMS
    r = np.random.default_rng(1)
    return r.standard_normal(n).astype(np.float32), (r.standard_normal(n) * 1e-2).astype(np.float32)


def _torch_opt(torch, kind, p0, g0):
    p = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    p.grad = torch.from_numpy(g0.copy())
    if kind == "adam":
        opt = torch.optim.Adam([p], lr=1e-3, fused=True)
    elif kind == "adamw":
        opt = torch.optim.AdamW([p], lr=1e-3, weight_decay=0.01, fused=True)
    else:
        opt = torch.optim.SGD([p], lr=1e-2, momentum=0.9, fused=True)
    return opt


@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd_momentum"])
@pytest.mark.parametrize("impl", ["native", "numpy", "torch", "torch_foreach"])
def test_optimizer(benchmark, ops, ref, flat, triad, kind, impl):
    p0, g0 = flat
    n = p0.size
    benchmark.group = f"{kind} {n / 1e6:g}M params"
    if impl.startswith("torch"):
        torch = _torch()
        if impl == "torch_foreach":
            p = torch.nn.Parameter(torch.from_numpy(p0.copy()))
            p.grad = torch.from_numpy(g0.copy())
            opt = {"adam": lambda: torch.optim.Adam([p], lr=1e-3, foreach=True),
                   "adamw": lambda: torch.optim.AdamW([p], lr=1e-3, weight_decay=0.01, foreach=True),
                   "sgd_momentum": lambda: torch.optim.SGD([p], lr=1e-2, momentum=0.9, foreach=True)}[kind]()
        else:
            try:
                opt = _torch_opt(torch, kind, p0, g0)
                opt.step()
            except (RuntimeError, TypeError) as exc:  # fused CPU kernels missing in this build
                pytest.skip(f"torch fused optimizer unavailable: {exc}")
        _run(benchmark, opt.step)
    else:
        o = ops if impl == "native" else ref
        p, g = p0.copy(), g0
        m, v = np.zeros_like(p), np.zeros_like(p)
        state = {"step": 0}
        if kind == "sgd_momentum":
            def step():
                o.sgd_update(p, g, lr=1e-2, momentum=0.9, velocity=m)
        else:
            wd = 0.01 if kind == "adamw" else 0.0

            def step():
                state["step"] += 1
                o.adam_update(p, g, m, v, lr=1e-3, step=state["step"], weight_decay=wd, decoupled=True)
        _run(benchmark, step)
    streams = 5 if kind == "sgd_momentum" else 7  # (p, v, g) read + (p, v) written; Adam (p, m, v, g) + (p, m, v)
    _bw(benchmark, 4 * streams * n, triad)
