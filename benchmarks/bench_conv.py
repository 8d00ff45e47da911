"""Convolutional-network benchmarks (issue 16): fastgrad native vs fastgrad's
NumPy backend vs PyTorch, one pytest-benchmark group per workload, 2 threads.

    fastgrad   native backend; the compiled plan runs the whole epoch in C
               (csrc/step layer_conv2d.c / layer_pool2d.c / layer_gpool.c over the
               implicit-GEMM convolution of csrc/conv)
    numpy      fastgrad's NumPy backend (im2col per batch chunk + BLAS GEMM)
    torch      PyTorch (2 threads), nn.Sequential + the standard loop, Adam

Workloads (synthetic, fixed seed, labels from a random teacher):
    lenet_epoch      LeNet-5 (28x28x1: Conv 6@5x5 tanh, AvgPool, Conv 16@5x5 relu,
                     AvgPool, Dense 120-84-10), Adam, batch 64, 10,000 samples
    cifar_epoch      32x32x3: 2 x [Conv 32 3x3 same + BatchNorm + ReLU], MaxPool,
                     2 x [Conv 64 3x3 relu], MaxPool, GlobalAveragePooling2D,
                     Dense 10; Adam, batch 64, FG_BENCH_CIFAR_N samples (default
                     2,000 to keep the run short; the time scales linearly)
    lenet_predict    predict 10,000 images;  cifar_predict  predict 2,000 images
    *_one_image      predict_on_batch of one image (latency)
    peak_rss         peak RSS of one training epoch in a fresh process, per
                     network, fastgrad vs torch (extra_info)
extra_info: FLOPs of the workload (multiply-adds x 2 of the convolutions and
dense layers: forward, plus filter and data gradients in training).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest benchmarks/bench_conv.py \\
        --benchmark-only --benchmark-group-by=group --benchmark-columns=median,rounds
    python -m pytest benchmarks/bench_conv.py --benchmark-disable   # smoke run, tiny sizes
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _config
from fastgrad.engine import compiled

THREADS = 2
CIFAR_N = int(os.environ.get("FG_BENCH_CIFAR_N", "2000"))
L = fg.layers


def _native_ok():
    from fastgrad.backend import native_available
    return native_available() and fg._native.module("conv") is not None


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


def _data(n, shape, seed=0):
    r = np.random.default_rng(seed)
    x = r.random((n,) + shape, dtype=np.float32)
    teacher = r.standard_normal((int(np.prod(shape)), 10)).astype(np.float32)
    y = np.argmax((x.reshape(n, -1) - 0.5) @ teacher, axis=1).astype(np.int64)
    return x, y


def fg_lenet():
    fg.set_seed(0)
    m = fg.Sequential([fg.Input(shape=(28, 28, 1)),
                       L.Conv2D(6, 5, activation="tanh"), L.AveragePooling2D(),
                       L.Conv2D(16, 5, activation="relu"), L.AveragePooling2D(),
                       L.Flatten(), L.Dense(120, activation="relu"), L.Dense(84, activation="relu"),
                       L.Dense(10, activation="softmax")])
    m.compile(optimizer=fg.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def fg_cifar():
    fg.set_seed(0)
    m = fg.Sequential([fg.Input(shape=(32, 32, 3)),
                       L.Conv2D(32, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
                       L.Conv2D(32, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
                       L.MaxPooling2D(),
                       L.Conv2D(64, 3, activation="relu"), L.Conv2D(64, 3, activation="relu"),
                       L.MaxPooling2D(), L.GlobalAveragePooling2D(), L.Dense(10, activation="softmax")])
    m.compile(optimizer=fg.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


# multiply-adds per sample of each conv / dense layer (forward)
LENET_MACS = 24 * 24 * 25 * 6 + 8 * 8 * 150 * 16 + 256 * 120 + 120 * 84 + 84 * 10
CIFAR_MACS = 32 * 32 * 27 * 32 + 32 * 32 * 288 * 32 + 14 * 14 * 288 * 64 + 12 * 12 * 576 * 64 + 64 * 10
# first layers need no data gradient; approximate training as 3x forward
NETS = {"lenet": (fg_lenet, (28, 28, 1), LENET_MACS), "cifar": (fg_cifar, (32, 32, 3), CIFAR_MACS)}


def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    return torch


def torch_net(torch, name):
    torch.manual_seed(0)
    nn = torch.nn
    if name == "lenet":
        return nn.Sequential(nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                             nn.AvgPool2d(2), nn.Flatten(), nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84),
                             nn.ReLU(), nn.Linear(84, 10))
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32, eps=1e-3, momentum=0.01), nn.ReLU(),
                         nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32, eps=1e-3, momentum=0.01), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def _torch_epoch(torch, model, opt, X, Y, bs):
    F = torch.nn.functional
    perm = torch.randperm(X.shape[0])
    for i in range(0, X.shape[0], bs):
        idx = perm[i:i + bs]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(X[idx]), Y[idx])
        loss.backward()
        opt.step()
    return float(loss.detach())


def _n_train(benchmark, name):
    if benchmark.disabled:
        return 128
    return 10000 if name == "lenet" else CIFAR_N


def _n_predict(benchmark, name):
    if benchmark.disabled:
        return 64
    return 10000 if name == "lenet" else 2000


MODES = ["fastgrad", "numpy"]


# ------------------------------------------------------------ training epoch
@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("mode", MODES)
def test_epoch_fastgrad(benchmark, name, mode):
    if mode == "fastgrad" and not _native_ok():
        pytest.skip("native backend not built")
    benchmark.group = f"{name}_epoch"
    build, shape, macs = NETS[name]
    n = _n_train(benchmark, name)
    x, y = _data(n, shape)
    with _fastgrad(mode):
        m = build()
        if mode == "fastgrad":
            assert compiled.unsupported_reason(m) is None, compiled.unsupported_reason(m)
        benchmark.pedantic(lambda: m.fit(x, y, batch_size=64, epochs=1, verbose=0),
                           rounds=1 if benchmark.disabled else 5, iterations=1,
                           warmup_rounds=0 if benchmark.disabled else 1)
    benchmark.extra_info.update(samples=n, flops=6 * macs * n)


@pytest.mark.parametrize("name", sorted(NETS))
def test_epoch_torch(benchmark, name):
    torch = _torch()
    benchmark.group = f"{name}_epoch"
    build, shape, macs = NETS[name]
    n = _n_train(benchmark, name)
    x, y = _data(n, shape)
    X = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    Y = torch.from_numpy(y)
    model = torch_net(torch, name)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    benchmark.pedantic(lambda: _torch_epoch(torch, model, opt, X, Y, 64),
                       rounds=1 if benchmark.disabled else 5, iterations=1,
                       warmup_rounds=0 if benchmark.disabled else 1)
    benchmark.extra_info.update(samples=n, flops=6 * macs * n)


# ------------------------------------------------------------ inference
@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("mode", MODES)
def test_predict_fastgrad(benchmark, name, mode):
    if mode == "fastgrad" and not _native_ok():
        pytest.skip("native backend not built")
    benchmark.group = f"{name}_predict"
    build, shape, macs = NETS[name]
    n = _n_predict(benchmark, name)
    x, _ = _data(n, shape)
    with _fastgrad(mode):
        m = build()
        m.predict(x[:64], batch_size=256, verbose=0)
        benchmark.pedantic(lambda: m.predict(x, batch_size=256, verbose=0),
                           rounds=1 if benchmark.disabled else 3, iterations=1)
    benchmark.extra_info.update(samples=n, flops=2 * macs * n)


@pytest.mark.parametrize("name", sorted(NETS))
def test_predict_torch(benchmark, name):
    torch = _torch()
    benchmark.group = f"{name}_predict"
    build, shape, macs = NETS[name]
    n = _n_predict(benchmark, name)
    x, _ = _data(n, shape)
    X = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    model = torch_net(torch, name).eval()

    def run():
        with torch.inference_mode():
            return [model(X[i:i + 256]) for i in range(0, n, 256)]
    run()
    benchmark.pedantic(run, rounds=1 if benchmark.disabled else 3, iterations=1)
    benchmark.extra_info.update(samples=n, flops=2 * macs * n)


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("mode", MODES)
def test_one_image_fastgrad(benchmark, name, mode):
    if mode == "fastgrad" and not _native_ok():
        pytest.skip("native backend not built")
    benchmark.group = f"{name}_one_image"
    build, shape, _ = NETS[name]
    x, _ = _data(1, shape)
    with _fastgrad(mode):
        m = build()
        m.predict_on_batch(x)
        if benchmark.disabled:
            benchmark.pedantic(lambda: m.predict_on_batch(x), rounds=1, iterations=1)
        else:
            benchmark.pedantic(lambda: m.predict_on_batch(x), rounds=200, iterations=1, warmup_rounds=5)


@pytest.mark.parametrize("name", sorted(NETS))
def test_one_image_torch(benchmark, name):
    torch = _torch()
    benchmark.group = f"{name}_one_image"
    build, shape, _ = NETS[name]
    x, _ = _data(1, shape)
    X = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    model = torch_net(torch, name).eval()

    def run():
        with torch.inference_mode():
            return model(X)
    run()
    if benchmark.disabled:
        benchmark.pedantic(run, rounds=1, iterations=1)
    else:
        benchmark.pedantic(run, rounds=200, iterations=1, warmup_rounds=5)


# ------------------------------------------------------------ peak memory
_RSS_SCRIPT = r"""
import json, resource, sys
import numpy as np
sys.path.insert(0, sys.argv[4])
import bench_conv as B
impl, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
build, shape, _ = B.NETS[name]
x, y = B._data(n, shape)
def rss():
    # VmHWM: this process image's peak (ru_maxrss would keep the high-water mark of the
    # pytest process this probe was forked from: exec does not reset it)
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
if impl == "fastgrad":
    import fastgrad as fg
    fg.set_num_threads(B.THREADS)
    m = build()
    m.fit(x[:64], y[:64], batch_size=64, epochs=1, verbose=0)   # warm: plan and workspaces
    before = rss()
    m.fit(x, y, batch_size=64, epochs=1, verbose=0)
else:
    import torch
    torch.set_num_threads(B.THREADS)
    X = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))); Y = torch.from_numpy(y)
    model = B.torch_net(torch, name); opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    B._torch_epoch(torch, model, opt, X[:64], Y[:64], 64)
    before = rss()
    B._torch_epoch(torch, model, opt, X, Y, 64)
print(json.dumps(dict(peak_rss_mib=rss(), growth_during_fit_mib=rss() - before)))
"""


@pytest.mark.parametrize("name", sorted(NETS))
def test_peak_rss(benchmark, name):
    """Peak RSS of one training epoch in a fresh process, fastgrad vs torch."""
    benchmark.group = f"{name}_peak_rss"
    n = 256 if benchmark.disabled else (2000 if name == "lenet" else 1000)
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(here), "src")
    if os.path.isdir(src):
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    impls = ["fastgrad"]
    try:
        import torch  # noqa: F401
        impls.append("torch")
    except ImportError:
        pass
    res = {}

    def run():
        for impl in impls:
            out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, impl, name, str(n), here], env=env,
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f"peak-RSS probe for {impl} failed:\n{out.stderr[-2000:]}")
            res[impl] = json.loads(out.stdout.strip().splitlines()[-1])

    benchmark.pedantic(run, rounds=1, iterations=1)
    for impl, r in res.items():
        benchmark.extra_info[f"{impl}_peak_rss_mib"] = round(r["peak_rss_mib"], 1)
        benchmark.extra_info[f"{impl}_growth_during_fit_mib"] = round(r["growth_during_fit_mib"], 1)
