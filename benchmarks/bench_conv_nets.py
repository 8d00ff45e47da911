"""Convolutional network benchmarks (issue 16): whole models, one group per workload.

Implementations in each group (2 threads):
    fastgrad       the native backend (the compiled plan when the model has one,
                   else the Python step calling the native ops)
    fastgrad_py    the native backend with the compiled step switched off
    numpy          fastgrad's NumPy backend (im2col + OpenBLAS GEMM: the baseline)
    torch          PyTorch, nn.Sequential + the standard loop, Adam(fused=True)

Workloads (synthetic images, fixed seed, labels from a random linear teacher):
    lenet_epoch       LeNet-5: 28x28x1, Conv2D 6@5x5 relu (same) -> AvgPool ->
                      Conv2D 16@5x5 relu -> AvgPool -> Dense 120 -> 84 -> 10,
                      Adam, batch 64, one epoch of 10,000 samples
    cifar_epoch       32x32x3: 2 x [Conv2D 32 3x3 same + BatchNorm + ReLU], MaxPool,
                      2 x [Conv2D 64 3x3 same relu], MaxPool, GlobalAveragePooling2D,
                      Dense 10; Adam, batch 64, one epoch of 2,000 samples
    lenet_predict / cifar_predict   predict 10,000 (cifar: 2,000) images
    lenet_latency     predict_on_batch of one image
extra_info: the workload's FLOPs (forward + both gradients for training) and the
FLOP lower bound at the fp32 FMA peak measured on this machine for the
benchmark's threads (fastgrad._native.gemm.peak_gflops; FASTGRAD_PEAK_GFLOPS
overrides).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest benchmarks/bench_conv_nets.py \
        --benchmark-only --benchmark-max-time=0.5 --benchmark-min-rounds=3
    pytest benchmarks/bench_conv_nets.py --benchmark-disable      # tiny smoke run
"""
from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _config
from fastgrad.engine import compiled

THREADS = 2


def _peak_gflops():
    """fp32 FMA peak of THREADS threads on this machine, measured once per
    process (fastgrad._native.gemm.peak_gflops; FASTGRAD_PEAK_GFLOPS overrides)."""
    from fastgrad import _native
    G = _native.module("gemm")
    env = os.environ.get("FASTGRAD_PEAK_GFLOPS")
    if G is None:
        return float(env) if env else float("nan")
    return G.peak_gflops(THREADS)
BS = 64
MODES = ["fastgrad", "fastgrad_py", "numpy"]


def _native_ok():
    from fastgrad.backend import native_available
    return native_available()


def _n(benchmark, full, small):
    return small if benchmark.disabled else full


def _images(n, shape, seed=0):
    r = np.random.default_rng(seed)
    x = r.random((n,) + shape, dtype=np.float32)
    teacher = r.standard_normal((int(np.prod(shape)), 10)).astype(np.float32)
    y = np.argmax((x.reshape(n, -1) - 0.5) @ teacher, axis=1).astype(np.int64)
    return x, y


@contextlib.contextmanager
def _fastgrad(mode):
    saved = compiled.enabled
    compiled.enabled = mode == "fastgrad"
    _config.set_num_threads(THREADS)
    try:
        with fg.use_backend("numpy" if mode == "numpy" else "native"):
            yield
    finally:
        compiled.enabled = saved
        _config.set_num_threads(None)


def _skip_native(mode):
    if mode != "numpy" and not _native_ok():
        pytest.skip("native backend not built")


# ------------------------------------------------------------------ models
def _conv_flops(h, w, c, k, f, oh, ow):
    return 2 * oh * ow * k * k * c * f


def _lenet_fwd_flops():
    return (_conv_flops(28, 28, 1, 5, 6, 28, 28) + _conv_flops(14, 14, 6, 5, 16, 10, 10)
            + 2 * (400 * 120 + 120 * 84 + 84 * 10))


def _cifar_fwd_flops():
    return (_conv_flops(32, 32, 3, 3, 32, 32, 32) + _conv_flops(32, 32, 32, 3, 32, 32, 32)
            + _conv_flops(16, 16, 32, 3, 64, 16, 16) + _conv_flops(16, 16, 64, 3, 64, 16, 16) + 2 * 64 * 10)


def _fg_lenet():
    fg.set_seed(0)
    L = fg.layers
    m = fg.Sequential([fg.Input((28, 28, 1)), L.Conv2D(6, 5, padding="same", activation="relu"),
                       L.AveragePooling2D(), L.Conv2D(16, 5, activation="relu"), L.AveragePooling2D(),
                       L.Flatten(), L.Dense(120, activation="relu"), L.Dense(84, activation="relu"),
                       L.Dense(10, activation="softmax")])
    m.compile(optimizer=fg.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def _fg_cifar():
    fg.set_seed(0)
    L = fg.layers
    m = fg.Sequential([fg.Input((32, 32, 3)),
                       L.Conv2D(32, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
                       L.Conv2D(32, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
                       L.MaxPooling2D(),
                       L.Conv2D(64, 3, padding="same", activation="relu"),
                       L.Conv2D(64, 3, padding="same", activation="relu"),
                       L.MaxPooling2D(), L.GlobalAveragePooling2D(), L.Dense(10, activation="softmax")])
    m.compile(optimizer=fg.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m



def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    return torch


def _torch_lenet(torch):
    nn = torch.nn
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(6, 16, 5), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def _torch_cifar(torch):
    nn = torch.nn
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32, eps=1e-3, momentum=0.01), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32, eps=1e-3, momentum=0.01), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def _torch_epoch(torch, model, opt, X, Y, bs):
    F = torch.nn.functional
    perm = torch.randperm(X.shape[0])
    for i in range(0, X.shape[0], bs):
        idx = perm[i:i + bs]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(X[idx].permute(0, 3, 1, 2)), Y[idx])
        loss.backward()
        opt.step()
    return float(loss.detach())


def _torch_predict(torch, model, X, bs=256):
    with torch.inference_mode():
        return [model(X[i:i + bs].permute(0, 3, 1, 2)) for i in range(0, X.shape[0], bs)]


def _record(benchmark, flops=None, **info):
    if flops is not None:
        benchmark.extra_info["flops"] = flops
        peak = _peak_gflops()
        benchmark.extra_info["flop_lower_bound_s"] = flops / (peak * 1e9)
        benchmark.extra_info["peak_gflops"] = round(peak, 1)
    benchmark.extra_info.update(info)


NETS = {"lenet": (_fg_lenet, _torch_lenet, (28, 28, 1), 10000, _lenet_fwd_flops),
        "cifar": (_fg_cifar, _torch_cifar, (32, 32, 3), 2000, _cifar_fwd_flops)}


# ------------------------------------------------------------------ training epochs
@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("mode", MODES)
def test_epoch_fastgrad(benchmark, net, mode):
    _skip_native(mode)
    make, _, shape, n_full, fwd = NETS[net]
    benchmark.group = f"{net}_epoch"
    benchmark.name = f"{net}_epoch[{mode}]"
    n = _n(benchmark, n_full, BS)
    x, y = _images(n, shape)
    with _fastgrad(mode):
        m = make()
        m.fit(x[:BS], y[:BS], batch_size=BS, epochs=1, verbose=0)
        hist = benchmark.pedantic(lambda: m.fit(x, y, batch_size=BS, epochs=1, verbose=0),
                                  rounds=1 if benchmark.disabled else 3, iterations=1)
        plan = compiled.train_plan(m) is not None if mode == "fastgrad" else None
    _record(benchmark, 3 * fwd() * n, samples=n, batch_size=BS, compiled_plan=plan,
            final_loss=float(hist.history["loss"][-1]))


@pytest.mark.parametrize("net", sorted(NETS))
def test_epoch_torch(benchmark, net):
    torch = _torch()
    _, make, shape, n_full, fwd = NETS[net]
    benchmark.group = f"{net}_epoch"
    benchmark.name = f"{net}_epoch[torch]"
    n = _n(benchmark, n_full, BS)
    x, y = _images(n, shape)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    model = make(torch)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    _torch_epoch(torch, model, opt, X[:BS], Y[:BS], BS)
    benchmark.pedantic(lambda: _torch_epoch(torch, model, opt, X, Y, BS),
                       rounds=1 if benchmark.disabled else 3, iterations=1)
    _record(benchmark, 3 * fwd() * n, samples=n, batch_size=BS)


# ------------------------------------------------------------------ inference
@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("mode", MODES)
def test_predict_fastgrad(benchmark, net, mode):
    _skip_native(mode)
    make, _, shape, n_full, fwd = NETS[net]
    benchmark.group = f"{net}_predict"
    benchmark.name = f"{net}_predict[{mode}]"
    n = _n(benchmark, 10000 if net == "lenet" else n_full, 64)
    x, _ = _images(n, shape)
    with _fastgrad(mode):
        m = make()
        m.predict(x[:64], verbose=0)
        benchmark.pedantic(lambda: m.predict(x, batch_size=256, verbose=0),
                           rounds=1 if benchmark.disabled else 3, iterations=1)
    _record(benchmark, fwd() * n, samples=n)


@pytest.mark.parametrize("net", sorted(NETS))
def test_predict_torch(benchmark, net):
    torch = _torch()
    _, make, shape, n_full, fwd = NETS[net]
    benchmark.group = f"{net}_predict"
    benchmark.name = f"{net}_predict[torch]"
    n = _n(benchmark, 10000 if net == "lenet" else n_full, 64)
    x, _ = _images(n, shape)
    X = torch.from_numpy(x)
    model = make(torch).eval()
    _torch_predict(torch, model, X[:64])
    benchmark.pedantic(lambda: _torch_predict(torch, model, X),
                       rounds=1 if benchmark.disabled else 3, iterations=1)
    _record(benchmark, fwd() * n, samples=n)


@pytest.mark.parametrize("mode", MODES)
def test_lenet_latency_fastgrad(benchmark, mode):
    _skip_native(mode)
    benchmark.group = "lenet_latency"
    benchmark.name = f"lenet_latency[{mode}]"
    x, _ = _images(1, (28, 28, 1))
    with _fastgrad(mode):
        m = _fg_lenet()
        m.predict_on_batch(x)
        benchmark(m.predict_on_batch, x)


def test_lenet_latency_torch(benchmark):
    torch = _torch()
    benchmark.group = "lenet_latency"
    benchmark.name = "lenet_latency[torch]"
    x, _ = _images(1, (28, 28, 1))
    X = torch.from_numpy(x)
    model = _torch_lenet(torch).eval()

    def run():
        with torch.inference_mode():
            return model(X.permute(0, 3, 1, 2))
    run()
    benchmark(run)
