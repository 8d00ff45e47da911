"""Benchmarks of the native LayerNorm / BatchNorm kernels (csrc/kernels/norm.c)
against the NumPy backend and PyTorch (F.layer_norm / F.batch_norm, forward +
autograd backward), and of the BatchNormalization / LayerNormalization layers
(forward + backward, native vs NumPy backend). One group per op and shape, so
ratios come from one run; fastgrad and torch on 2 threads (FG_BENCH_THREADS=n):

    pytest benchmarks/bench_norm.py --benchmark-only --benchmark-group-by=group \
        --benchmark-columns=median,iqr,rounds
    pytest benchmarks/bench_norm.py --benchmark-disable     # CI: each once, small inputs

Every op benchmark is forward + backward with gamma and beta (training step
cost). Under --benchmark-disable (or FG_BENCH_SMALL=1) the shapes shrink.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import fastgrad._config as config
from fastgrad import _threads as fg_threads
from fastgrad import _native
from fastgrad.backend import NumpyOps

K = _native.module("kernels")
pytestmark = pytest.mark.skipif(K is None or not hasattr(K, "norm_forward"),
                                reason="native kernels module (with norm) not built")

THREADS = int(os.environ.get("FG_BENCH_THREADS", "2"))
EPS = 1e-3
OP_SHAPES = [(256, 512), (4096, 1024)]
LAYER_SHAPES = [(32, 128), (256, 512)]


def _small(request) -> bool:
    return bool(request.config.getoption("benchmark_disable", False)) or bool(os.environ.get("FG_BENCH_SMALL"))


@pytest.fixture(scope="module")
def native_ops():
    from fastgrad.backend.native_kernels import KernelsMixin

    class Ops(KernelsMixin, NumpyOps):
        pass

    return Ops()


@pytest.fixture(autouse=True)
def _threads():
    saved = fg_threads.explicit_num_threads()
    config.set_num_threads(THREADS)
    yield
    fg_threads.set_num_threads(saved)


def _shape(request, shape):
    return (min(shape[0], 64), min(shape[1], 96)) if _small(request) else shape


def _data(shape, seed=0):
    r = np.random.default_rng(seed)
    x = (r.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    dy = r.standard_normal(shape).astype(np.float32)
    g = (r.standard_normal(shape[1]) * 0.1 + 1).astype(np.float32)
    b = (r.standard_normal(shape[1]) * 0.1).astype(np.float32)
    return x, dy, g, b


def _fastgrad_step(ops, kind, x, dy, g, b):
    n = x.shape[0] if kind == "layernorm" else x.shape[1]
    y, m, r = np.empty_like(x), np.empty(n, np.float32), np.empty(n, np.float32)
    dx, dg, db = np.empty_like(x), np.empty_like(g), np.empty_like(b)
    fwd, bwd = getattr(ops, kind + "_forward"), getattr(ops, kind + "_backward")

    def step():
        fwd(x, g, b, EPS, out=y, mean=m, rstd=r)
        return bwd(dy, x, g, m, r, dx=dx, dgamma=dg, dbeta=db)

    return step


def _info(benchmark, shape, backend):
    benchmark.extra_info.update(shape=list(shape), backend=backend, threads=THREADS)


@pytest.mark.parametrize("backend", ["native", "numpy", "torch"])
@pytest.mark.parametrize("shape", OP_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", ["layernorm", "batchnorm"])
def test_norm_fwd_bwd(benchmark, request, native_ops, kind, shape, backend):
    shape = _shape(request, shape)
    benchmark.group = f"{kind} fwd+bwd {shape[0]}x{shape[1]}"
    _info(benchmark, shape, backend)
    x, dy, g, b = _data(shape)
    if backend == "torch":
        torch = pytest.importorskip("torch")
        torch.set_num_threads(THREADS)
        F = torch.nn.functional
        tx = torch.from_numpy(x).requires_grad_(True)
        tg = torch.from_numpy(g).requires_grad_(True)
        tb = torch.from_numpy(b).requires_grad_(True)
        tdy = torch.from_numpy(dy)

        def step():
            tx.grad = tg.grad = tb.grad = None
            if kind == "layernorm":
                y = F.layer_norm(tx, (shape[1],), tg, tb, EPS)
            else:
                y = F.batch_norm(tx, None, None, tg, tb, training=True, eps=EPS)
            y.backward(tdy)
            return tx.grad

        benchmark(step)
        return
    step = _fastgrad_step(native_ops if backend == "native" else NumpyOps(), kind, x, dy, g, b)
    res = benchmark(step)
    assert res[0].shape == shape and np.all(np.isfinite(res[0]))


@pytest.mark.parametrize("backend", ["native", "numpy"])
@pytest.mark.parametrize("shape", LAYER_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("layer_name", ["BatchNormalization", "LayerNormalization"])
def test_norm_layer_fwd_bwd(benchmark, request, native_ops, layer_name, shape, backend):
    from fastgrad.engine.workspace import Workspace
    from fastgrad.layers import normalization

    shape = _shape(request, shape)
    benchmark.group = f"{layer_name} layer fwd+bwd {shape[0]}x{shape[1]}"
    _info(benchmark, shape, backend)
    layer = getattr(normalization, layer_name)()
    layer.build((shape[1],))
    params = {s.name: np.asarray(s.initializer(s.shape), np.float32) for s in layer.param_specs()}
    grads = {s.name: np.zeros(s.shape, np.float32) for s in layer.param_specs()}
    state = {s.name: np.asarray(s.initializer(s.shape), np.float32) for s in layer.state_specs()}
    layer.bind(params, grads, state)
    layer.ops = native_ops if backend == "native" else NumpyOps()
    x, dy, _, _ = _data(shape)
    ws = Workspace()

    def step():
        layer.forward(x, True, ws)
        return layer.backward(dy, ws)

    dx = benchmark(step)
    assert dx.shape == shape and np.all(np.isfinite(dx))
