"""Graph models (the functional API): benchmarks of issue "Models as graphs".

Groups (ratios from one run; the modes as in bench_train.py):
    functional_784_128_10   the same 784-128(relu)-10(softmax) MLP built with
                            fg.Model(inputs, outputs) and with fg.Sequential,
                            one epoch of 60000 rows, batch 128, Adam: the
                            functional model must run within 3% of the Sequential
    residual_mlp            784 -> 256, four residual blocks
                            h = h + Dense(256)(Dense(256, relu)(h)), -> 10,
                            Adam, batch 128, one epoch of 20000 rows:
                            fastgrad (compiled plan when it has a C path),
                            fastgrad_py (Python executor), numpy, torch

    pytest benchmarks/bench_graph.py --benchmark-only
    pytest benchmarks/bench_graph.py --benchmark-disable      # smoke run (CI)
"""
from __future__ import annotations

import numpy as np
import pytest

import fastgrad as fg
from fastgrad.engine import compiled

from bench_train import (THREADS, _fastgrad, _mnist_like, _native_ok, _record, _sizes, _torch,
                         _torch_epoch)

RES_WIDTH, RES_BLOCKS, RES_BS = 256, 4, 128


def _residual_flops(n):
    dense = [(784, RES_WIDTH)] + [(RES_WIDTH, RES_WIDTH)] * (2 * RES_BLOCKS) + [(RES_WIDTH, 10)]
    fwd = sum(2 * a * b for a, b in dense)
    return n * (2 * fwd + sum(2 * a * b for a, b in dense[1:]))


def _fg_residual():
    fg.set_seed(0)
    L = fg.layers
    inp = fg.Input(shape=(784,))
    h = L.Dense(RES_WIDTH, activation="relu")(inp)
    for _ in range(RES_BLOCKS):
        f = L.Dense(RES_WIDTH, activation="relu")(h)
        f = L.Dense(RES_WIDTH)(f)
        h = L.Add()([h, f])
    out = L.Dense(10, activation="softmax")(h)
    m = fg.Model(inp, out)
    m.compile(optimizer=fg.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
    return m


def _fg_mlp(functional):
    fg.set_seed(0)
    L = fg.layers
    if functional:
        inp = fg.Input(shape=(784,))
        h = L.Dense(128, activation="relu")(inp)
        m = fg.Model(inp, L.Dense(10, activation="softmax")(h))
    else:
        m = fg.Sequential([L.Dense(128, activation="relu", input_shape=(784,)),
                           L.Dense(10, activation="softmax")])
    m.compile(optimizer=fg.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
    return m


def _epoch(benchmark, make, mode, n, bs, flops, require_plan):
    if mode != "numpy" and not _native_ok():
        pytest.skip("native backend not built")
    x, y = _mnist_like(n)
    with _fastgrad(mode):
        m = make()
        m.fit(x[:bs * 2], y[:bs * 2], batch_size=bs, epochs=1, verbose=0)   # warm: workspaces
        plan = compiled.train_plan(m) if mode == "fastgrad" else None
        if mode == "fastgrad" and require_plan:
            assert plan is not None, compiled.unsupported_reason(m)
        hist = benchmark.pedantic(lambda: m.fit(x, y, batch_size=bs, epochs=1, verbose=0),
                                  rounds=1 if benchmark.disabled else 3, iterations=1)
    _record(benchmark, flops, samples=n, batch_size=bs, compiled=plan is not None,
            final_loss=float(hist.history["loss"][-1]))


@pytest.mark.parametrize("kind", ["functional", "sequential"])
@pytest.mark.parametrize("mode", ["fastgrad", "fastgrad_py"])
def test_functional_vs_sequential(benchmark, kind, mode):
    benchmark.group = "functional_784_128_10"
    benchmark.name = f"functional_784_128_10[{kind}-{mode}]"
    n = _sizes(benchmark, 60000, 512)
    flops = n * (2 * 2 * (784 * 128 + 128 * 10) + 2 * 128 * 10)
    _epoch(benchmark, lambda: _fg_mlp(kind == "functional"), mode, n, 128, flops,
           require_plan=kind == "sequential")


@pytest.mark.parametrize("mode", ["fastgrad", "fastgrad_py", "numpy"])
def test_residual_mlp_fastgrad(benchmark, mode):
    benchmark.group = "residual_mlp"
    benchmark.name = f"residual_mlp[{mode}]"
    n = _sizes(benchmark, 20000, 512)
    _epoch(benchmark, _fg_residual, mode, n, RES_BS, _residual_flops(n), require_plan=False)


def test_residual_mlp_torch(benchmark):
    torch = _torch()
    benchmark.group = "residual_mlp"
    benchmark.name = "residual_mlp[torch]"
    n = _sizes(benchmark, 20000, 512)
    x, y = _mnist_like(n)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    nn = torch.nn
    torch.manual_seed(0)

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(784, RES_WIDTH)
            self.blocks = nn.ModuleList(
                nn.Sequential(nn.Linear(RES_WIDTH, RES_WIDTH), nn.ReLU(),
                              nn.Linear(RES_WIDTH, RES_WIDTH)) for _ in range(RES_BLOCKS))
            self.out = nn.Linear(RES_WIDTH, 10)

        def forward(self, x):
            h = torch.relu(self.inp(x))
            for b in self.blocks:
                h = h + b(h)
            return self.out(h)

    model = Residual()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    _torch_epoch(torch, model, opt, X[:RES_BS * 2], Y[:RES_BS * 2], RES_BS)
    loss = benchmark.pedantic(lambda: _torch_epoch(torch, model, opt, X, Y, RES_BS),
                              rounds=1 if benchmark.disabled else 3, iterations=1)
    _record(benchmark, _residual_flops(n), samples=n, batch_size=RES_BS, final_loss=loss,
            threads=THREADS)
