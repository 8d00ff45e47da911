"""Custom training loops (issue 11): a GradientTape loop on the 784-128-10 MLP
against a PyTorch eager loop and against fit, one pytest-benchmark group.

    tape          native backend: with fg.GradientTape(): model(x, training=True),
                  loss; tape.gradient; optimizer.apply_gradients(zip(...))
    tape_numpy    the same loop on fastgrad's NumPy backend
    fit           native backend model.fit (the compiled plan), same model / data
    torch         PyTorch eager loop: loss.backward(); opt.step() (Adam fused=True),
                  2 threads (skipped when torch is not importable)

One epoch of 20000 MNIST-shaped samples (synthetic, fixed seed), batch 128,
Adam(1e-3), logits output with SparseCategoricalCrossentropy(from_logits=True)
(torch: F.cross_entropy), shuffled per epoch.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest benchmarks/bench_tape.py \
        --benchmark-only --benchmark-max-time=0.5 --benchmark-min-rounds=3
"""
from __future__ import annotations

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _config

THREADS = 2
BS = 128
GROUP = "tape_mlp_784_128_10"


def _data(n, seed=0):
    r = np.random.default_rng(seed)
    x = r.random((n, 784), dtype=np.float32)
    teacher = r.standard_normal((784, 10)).astype(np.float32)
    y = np.argmax((x - 0.5) @ teacher, axis=1).astype(np.int64)
    return x, y


def _n(benchmark):
    return 512 if benchmark.disabled else 20000


def _model():
    fg.set_seed(0)
    return fg.Sequential([fg.layers.Dense(128, activation="relu", input_shape=(784,)),
                          fg.layers.Dense(10)])


def _tape_epoch(model, opt, loss_fn, x, y, rng):
    perm = rng.permutation(x.shape[0])
    value = None
    for s in range(0, x.shape[0], BS):
        idx = perm[s:s + BS]
        xb, yb = x[idx], y[idx]
        with fg.GradientTape() as tape:
            pred = model(xb, training=True)
            value = loss_fn(yb, pred)
        grads = tape.gradient(value, model.trainable_weights)
        opt.apply_gradients(zip(grads, model.trainable_weights))
    return float(value)


def _native_ok():
    from fastgrad.backend import native_available
    return native_available()


@pytest.mark.parametrize("mode", ["tape", "tape_numpy", "fit"])
def test_tape_epoch_fastgrad(benchmark, mode):
    if mode != "tape_numpy" and not _native_ok():
        pytest.skip("native backend not built")
    benchmark.group = GROUP
    benchmark.name = f"{GROUP}[{mode}]"
    x, y = _data(_n(benchmark))
    loss = fg.losses.SparseCategoricalCrossentropy(from_logits=True)
    _config.set_num_threads(THREADS)
    try:
        with fg.use_backend("numpy" if mode == "tape_numpy" else "native"):
            m = _model()
            if mode == "fit":
                m.compile(optimizer=fg.optimizers.Adam(1e-3), loss=loss)
                m.fit(x[:BS * 2], y[:BS * 2], batch_size=BS, epochs=1, verbose=0)
                run = lambda: m.fit(x, y, batch_size=BS, epochs=1, verbose=0)   # noqa: E731
            else:
                opt = fg.optimizers.Adam(1e-3)
                rng = np.random.default_rng(1)
                _tape_epoch(m, opt, loss, x[:BS * 2], y[:BS * 2], rng)
                run = lambda: _tape_epoch(m, opt, loss, x, y, rng)              # noqa: E731
            benchmark.pedantic(run, rounds=1 if benchmark.disabled else 3, iterations=1)
    finally:
        _config.set_num_threads(None)
    benchmark.extra_info.update(samples=int(x.shape[0]), batch_size=BS)


def test_tape_epoch_torch(benchmark):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    benchmark.group = GROUP
    benchmark.name = f"{GROUP}[torch]"
    x, y = _data(_n(benchmark))
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    F = torch.nn.functional

    def epoch(Xe, Ye):
        perm = torch.randperm(Xe.shape[0])
        for s in range(0, Xe.shape[0], BS):
            idx = perm[s:s + BS]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(Xe[idx]), Ye[idx])
            loss.backward()
            opt.step()
        return float(loss.detach())
    epoch(X[:BS * 2], Y[:BS * 2])
    benchmark.pedantic(lambda: epoch(X, Y), rounds=1 if benchmark.disabled else 3, iterations=1)
    benchmark.extra_info.update(samples=int(x.shape[0]), batch_size=BS)
