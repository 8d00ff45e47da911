"""Training / inference benchmarks of whole models (issue #5).

Each workload is one pytest-benchmark group, so the ratios come from one run:
    fastgrad       the native backend; models with a C path run the compiled
                   step (one C call per epoch, engine/compiled.py)
    fastgrad_py    the native backend with the compiled step switched off
                   (the Python Step calling C kernels per layer)
    numpy          fastgrad's NumPy backend (the straightforward NumPy baseline)
    torch          PyTorch 2 threads, nn.Sequential + the standard loop,
                   Adam(fused=True) (skipped when torch is not importable)

Workloads (synthetic, fixed seed; MNIST-shaped 60000 x 784 float32, 10
classes whose labels come from a random linear teacher, so the model keeps
learning and the optimizer state does not decay into denormals):
    mlp_784_128_10      784-128(relu)-10(softmax), batch 128, Adam, one epoch
    mlp_784_512_512_10  784-512-512-10, batch 256, Adam, one epoch
    xor                 2-4-1 sigmoid, BCE, Adam(0.01), batch 1, 4 samples x 1000 epochs
    predict_10000       predict 10000 rows of the 784-128-10 MLP
    predict_one_row     predict_on_batch of one row (latency)
    mlp_bn_ln           784-256-BatchNorm-relu-128(relu)-LayerNorm-10, batch 128,
                        Adam, one epoch of 20000 samples
extra_info: FLOPs of the workload, the FLOP lower bound at the fp32 FMA peak
measured on this machine for the benchmark's threads (fastgrad._native.gemm.
peak_gflops; FASTGRAD_PEAK_GFLOPS overrides), the
time and ratio per implementation, and (test_peak_rss) the peak RSS of a fit
epoch in a fresh process for fastgrad and torch.

    pytest benchmarks/bench_train.py                          # full sizes
    pytest benchmarks/bench_train.py --benchmark-disable      # tiny smoke run (CI)
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap

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


def _native_ok():
    from fastgrad.backend import native_available
    return native_available()


def _sizes(benchmark, full, small):
    return small if benchmark.disabled else full


def _mnist_like(n, seed=0):
    r = np.random.default_rng(seed)
    x = r.random((n, 784), dtype=np.float32)
    teacher = r.standard_normal((784, 10)).astype(np.float32)
    y = np.argmax((x - 0.5) @ teacher, axis=1).astype(np.int64)
    return x, y


def _mlp_flops(sizes, n):
    """Training FLOPs of an MLP epoch: forward, dW, and dX for every layer but the first."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    per = sum(2 * a * b for a, b in pairs) * 2 + sum(2 * a * b for a, b in pairs[1:])
    return per * n


@contextlib.contextmanager
def _fastgrad(mode):
    """mode: 'fastgrad' (native + compiled), 'fastgrad_py' (native, Python step), 'numpy'."""
    saved = compiled.enabled
    compiled.enabled = mode == "fastgrad"
    _config.set_num_threads(THREADS)
    try:
        with fg.use_backend("numpy" if mode == "numpy" else "native"):
            yield
    finally:
        compiled.enabled = saved
        _config.set_num_threads(None)


def _fg_mlp(sizes, lr=1e-3):
    fg.set_seed(0)
    layers = [fg.layers.Dense(sizes[1], activation="relu", input_shape=(sizes[0],))]
    layers += [fg.layers.Dense(s, activation="relu") for s in sizes[2:-1]]
    layers += [fg.layers.Dense(sizes[-1], activation="softmax")]
    m = fg.Sequential(layers)
    m.compile(optimizer=fg.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
    return m


def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    return torch


def _torch_mlp(torch, sizes):
    torch.manual_seed(0)
    mods = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        mods.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            mods.append(torch.nn.ReLU())
    return torch.nn.Sequential(*mods)


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


def _record(benchmark, flops=None, **info):
    if flops is not None:
        benchmark.extra_info["flops"] = flops
        peak = _peak_gflops()
        benchmark.extra_info["flop_lower_bound_s"] = flops / (peak * 1e9)
        benchmark.extra_info["peak_gflops"] = round(peak, 1)
    benchmark.extra_info.update(info)


# ============================================================ MLP with normalisation
NORM_SIZES, NORM_BS = (784, 256, 128, 10), 128


def _fg_norm_mlp():
    """784-256-BN-relu-128(relu)-LN-10(softmax), Adam: BatchNorm and LayerNorm
    inside the compiled step (engine/compiled.py)."""
    fg.set_seed(0)
    L = fg.layers
    m = fg.Sequential([L.Dense(256, input_shape=(784,)), L.BatchNormalization(), L.Activation("relu"),
                       L.Dense(128, activation="relu"), L.LayerNormalization(),
                       L.Dense(10, activation="softmax")])
    m.compile(optimizer=fg.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
    return m


@pytest.mark.parametrize("mode", ["fastgrad", "fastgrad_py", "numpy"])
def test_norm_mlp_epoch_fastgrad(benchmark, mode):
    if mode != "numpy" and not _native_ok():
        pytest.skip("native backend not built")
    benchmark.group = "mlp_bn_ln"
    benchmark.name = f"mlp_bn_ln[{mode}]"
    n = _sizes(benchmark, 20000, 512)
    x, y = _mnist_like(n)
    with _fastgrad(mode):
        m = _fg_norm_mlp()
        m.fit(x[:NORM_BS * 2], y[:NORM_BS * 2], batch_size=NORM_BS, epochs=1, verbose=0)
        if mode == "fastgrad":
            assert compiled.train_plan(m) is not None, compiled.unsupported_reason(m)
        hist = benchmark.pedantic(lambda: m.fit(x, y, batch_size=NORM_BS, epochs=1, verbose=0),
                                  rounds=1 if benchmark.disabled else 3, iterations=1)
    _record(benchmark, _mlp_flops(NORM_SIZES, n), samples=n, batch_size=NORM_BS,
            final_loss=float(hist.history["loss"][-1]))


def test_norm_mlp_epoch_torch(benchmark):
    torch = _torch()
    benchmark.group = "mlp_bn_ln"
    benchmark.name = "mlp_bn_ln[torch]"
    n = _sizes(benchmark, 20000, 512)
    x, y = _mnist_like(n)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(784, 256), nn.BatchNorm1d(256, eps=1e-3, momentum=0.01), nn.ReLU(),
                          nn.Linear(256, 128), nn.ReLU(), nn.LayerNorm(128, eps=1e-3), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    _torch_epoch(torch, model, opt, X[:NORM_BS * 2], Y[:NORM_BS * 2], NORM_BS)
    benchmark.pedantic(lambda: _torch_epoch(torch, model, opt, X, Y, NORM_BS),
                       rounds=1 if benchmark.disabled else 3, iterations=1)
    _record(benchmark, _mlp_flops(NORM_SIZES, n), samples=n, batch_size=NORM_BS)


# ============================================================ MLP epochs
MLPS = {"mlp_784_128_10": ((784, 128, 10), 128), "mlp_784_512_512_10": ((784, 512, 512, 10), 256)}


def _fg_epoch_bench(benchmark, workload, mode):
    if mode != "numpy" and not _native_ok():
        pytest.skip("native backend not built")
    sizes, bs = MLPS[workload]
    n = _sizes(benchmark, 60000, 512)
    x, y = _mnist_like(n)
    with _fastgrad(mode):
        m = _fg_mlp(sizes)
        m.fit(x[:bs * 2], y[:bs * 2], batch_size=bs, epochs=1, verbose=0)   # warm: workspaces
        if mode == "fastgrad":
            assert compiled.train_plan(m) is not None, compiled.unsupported_reason(m)
        hist = benchmark.pedantic(lambda: m.fit(x, y, batch_size=bs, epochs=1, verbose=0),
                                  rounds=1 if benchmark.disabled else 3, iterations=1)
    _record(benchmark, _mlp_flops(sizes, n), samples=n, batch_size=bs,
            final_loss=float(hist.history["loss"][-1]), accuracy=float(hist.history["accuracy"][-1]))


@pytest.mark.parametrize("workload", sorted(MLPS))
@pytest.mark.parametrize("mode", ["fastgrad", "fastgrad_py", "numpy"])
def test_mlp_epoch_fastgrad(benchmark, workload, mode):
    benchmark.group = workload
    benchmark.name = f"{workload}[{mode}]"
    _fg_epoch_bench(benchmark, workload, mode)


@pytest.mark.parametrize("workload", sorted(MLPS))
def test_mlp_epoch_torch(benchmark, workload):
    torch = _torch()
    benchmark.group = workload
    benchmark.name = f"{workload}[torch]"
    sizes, bs = MLPS[workload]
    n = _sizes(benchmark, 60000, 512)
    x, y = _mnist_like(n)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    model = _torch_mlp(torch, sizes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    torch.manual_seed(0)
    _torch_epoch(torch, model, opt, X[:bs * 2], Y[:bs * 2], bs)
    loss = benchmark.pedantic(lambda: _torch_epoch(torch, model, opt, X, Y, bs),
                              rounds=1 if benchmark.disabled else 3, iterations=1)
    _record(benchmark, _mlp_flops(sizes, n), samples=n, batch_size=bs, final_loss=loss)


# ============================================================ XOR
_XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
_XOR_Y = np.array([[0], [1], [1], [0]], dtype=np.float32)


@pytest.mark.parametrize("mode", ["fastgrad", "fastgrad_py"])
def test_xor_fastgrad(benchmark, mode):
    if not _native_ok():
        pytest.skip("native backend not built")
    benchmark.group = "xor"
    benchmark.name = f"xor[{mode}]"
    epochs = _sizes(benchmark, 1000, 10)

    def run():
        with _fastgrad(mode):
            fg.set_seed(0)
            m = fg.Sequential([fg.layers.Dense(4, activation="sigmoid", input_shape=(2,)),
                               fg.layers.Dense(1, activation="sigmoid")])
            m.compile(optimizer=fg.optimizers.Adam(0.01), loss="binary_crossentropy")
            h = m.fit(_XOR_X, _XOR_Y, batch_size=1, epochs=epochs, verbose=0)
        return h.history["loss"][-1]

    loss = benchmark.pedantic(run, rounds=1 if benchmark.disabled else 3, iterations=1)
    _record(benchmark, steps=4 * epochs, final_loss=float(loss))


def test_xor_torch(benchmark):
    torch = _torch()
    benchmark.group = "xor"
    benchmark.name = "xor[torch]"
    epochs = _sizes(benchmark, 1000, 10)
    X, Y = torch.from_numpy(_XOR_X), torch.from_numpy(_XOR_Y)

    def run():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.Sigmoid(), torch.nn.Linear(4, 1))
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        lossf = torch.nn.BCEWithLogitsLoss()
        for _ in range(epochs):
            perm = torch.randperm(4)
            for i in range(4):
                idx = perm[i:i + 1]
                opt.zero_grad(set_to_none=True)
                loss = lossf(model(X[idx]), Y[idx])
                loss.backward()
                opt.step()
        return float(loss.detach())

    loss = benchmark.pedantic(run, rounds=1 if benchmark.disabled else 3, iterations=1)
    _record(benchmark, steps=4 * epochs, final_loss=loss)


# ============================================================ inference
def _trained_fg(mode, n):
    x, y = _mnist_like(max(n, 1024))
    with _fastgrad(mode):
        m = _fg_mlp((784, 128, 10))
        m.fit(x[:1024], y[:1024], batch_size=128, epochs=1, verbose=0)
    return m, x[:n]


@pytest.mark.parametrize("mode", ["fastgrad", "fastgrad_py", "numpy"])
def test_predict_10000_fastgrad(benchmark, mode):
    if mode != "numpy" and not _native_ok():
        pytest.skip("native backend not built")
    benchmark.group = "predict_10000"
    benchmark.name = f"predict_10000[{mode}]"
    n = _sizes(benchmark, 10000, 300)
    m, x = _trained_fg(mode, n)
    with _fastgrad(mode):
        m.predict(x)
        out = benchmark(m.predict, x)
    assert out.shape == (n, 10)
    _record(benchmark, flops=2 * n * (784 * 128 + 128 * 10), rows=n)


def test_predict_10000_torch(benchmark):
    torch = _torch()
    benchmark.group = "predict_10000"
    benchmark.name = "predict_10000[torch]"
    n = _sizes(benchmark, 10000, 300)
    x, _ = _mnist_like(max(n, 1024))
    model = _torch_mlp(torch, (784, 128, 10)).eval()
    X = torch.from_numpy(x[:n])

    def run():
        with torch.inference_mode():
            return torch.softmax(model(X), dim=1).numpy()

    run()
    out = benchmark(run)
    assert out.shape == (n, 10)
    _record(benchmark, flops=2 * n * (784 * 128 + 128 * 10), rows=n)


@pytest.mark.parametrize("mode", ["fastgrad", "fastgrad_py", "numpy"])
def test_predict_one_row_fastgrad(benchmark, mode):
    if mode != "numpy" and not _native_ok():
        pytest.skip("native backend not built")
    benchmark.group = "predict_one_row"
    benchmark.name = f"predict_one_row[{mode}]"
    m, x = _trained_fg(mode, 1)
    with _fastgrad(mode):
        m.predict_on_batch(x)
        out = benchmark(m.predict_on_batch, x)
    assert out.shape == (1, 10)


def test_predict_one_row_torch(benchmark):
    torch = _torch()
    benchmark.group = "predict_one_row"
    benchmark.name = "predict_one_row[torch]"
    x, _ = _mnist_like(1024)
    model = _torch_mlp(torch, (784, 128, 10)).eval()
    X = torch.from_numpy(x[:1])

    def run():
        with torch.inference_mode():
            return torch.softmax(model(X), dim=1).numpy()

    run()
    out = benchmark(run)
    assert out.shape == (1, 10)


# ============================================================ memory
_RSS_SCRIPT = textwrap.dedent("""
    import json, resource, sys, numpy as np

    def hwm_mib():
        # VmHWM of this process (ru_maxrss can carry the parent's peak across fork + exec)
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def rss_mib():
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return hwm_mib()

    def reset_hwm():
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")        # Linux: peak RSS := current RSS
        except OSError:
            pass

    impl, n = sys.argv[1], int(sys.argv[2])
    r = np.random.default_rng(0)
    x = r.random((n, 784), dtype=np.float32)
    t = r.standard_normal((784, 10)).astype(np.float32)
    y = np.concatenate([np.argmax((x[i:i + 4096] - 0.5) @ t, axis=1) for i in range(0, n, 4096)])
    if impl == "torch":
        import torch
        torch.set_num_threads(2)
        X, Y = torch.from_numpy(x), torch.from_numpy(y)
        model = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        base = rss_mib()
        reset_hwm()
        perm = torch.randperm(n)
        for i in range(0, n, 128):
            idx = perm[i:i + 128]
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(X[idx]), Y[idx]).backward()
            opt.step()
    else:
        import fastgrad as fg
        fg.set_num_threads(2)
        m = fg.Sequential([fg.layers.Dense(128, activation="relu", input_shape=(784,)),
                           fg.layers.Dense(10, activation="softmax")])
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        base = rss_mib()
        reset_hwm()
        m.fit(x, y, batch_size=128, epochs=1, verbose=0)
    peak = hwm_mib()
    print(json.dumps({"peak_rss_mib": peak, "growth_during_fit_mib": peak - base}))
""")


def test_peak_rss(benchmark):
    """Peak RSS of one 784-128-10 epoch in a fresh process (fastgrad vs torch)."""
    benchmark.group = "peak_rss"
    n = _sizes(benchmark, 60000, 512)
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
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
            out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, impl, str(n)], env=env,
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f"peak-RSS probe for {impl} failed:\n{out.stderr[-2000:]}")
            res[impl] = json.loads(out.stdout.strip().splitlines()[-1])

    benchmark.pedantic(run, rounds=1, iterations=1)
    for impl, r in res.items():
        benchmark.extra_info[f"{impl}_peak_rss_mib"] = round(r["peak_rss_mib"], 1)
        benchmark.extra_info[f"{impl}_growth_during_fit_mib"] = round(r["growth_during_fit_mib"], 1)


def test_progbar_update_between_draws(benchmark):
    """What `verbose=1` adds to a batch between redraws: 1000 updates of the
    live bar with a running loss (a TTY bar, writing to a buffer). Issue #6
    asks that the bar not slow training measurably; an MLP batch is ~1 ms."""
    import io
    from fastgrad.utils.progbar import Progbar
    benchmark.group = "progbar_update"
    benchmark.name = "progbar_update[1000 updates]"
    os.environ["FASTGRAD_PROGBAR_TTY"] = "1"
    try:
        bar = Progbar(target=10**9, stream=io.StringIO(), interval=3600.0)

        def run():
            for i in range(1, 1001):
                bar.update(i, [("loss", 0.5)])
        benchmark(run)
    finally:
        os.environ.pop("FASTGRAD_PROGBAR_TTY", None)
