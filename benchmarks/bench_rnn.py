"""Recurrent-model benchmarks (issue 10): fastgrad native vs its NumPy backend vs PyTorch.

One pytest-benchmark group per workload, so the ratios come from one run
(2 threads everywhere):
    fastgrad   native backend (recurrences in csrc/rnn, one C call per sequence
               and direction; the model runs on the Python step, which calls C
               per layer)
    numpy      fastgrad's NumPy backend (a Python loop over time steps)
    torch      PyTorch nn.Embedding + nn.LSTM / nn.GRU + nn.Linear, Adam(fused)

Workloads (synthetic token data, fixed seed):
    lstm_classifier   Embedding(10000 -> 64), LSTM(128), Dense(1, sigmoid), BCE, Adam,
                      sequences of 80 tokens, batch 64, one epoch of 10000 sequences
    gru_classifier    the same with GRU(128)
    lstm_infer_one    predict_on_batch of one sequence of 80 tokens (latency)
    gru_infer_one     the same for the GRU model
Under --benchmark-disable (CI smoke) the epoch shrinks to 256 sequences;
FG_BENCH_RNN_N sets the epoch size and FG_BENCH_THREADS the thread count
(default 2) for short runs on a shared machine.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest benchmarks/bench_rnn.py \
        --benchmark-only --benchmark-group-by=group --benchmark-columns=median,iqr,rounds
"""
from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _config

THREADS = int(os.environ.get("FG_BENCH_THREADS", "2"))
EPOCH_N = int(os.environ.get("FG_BENCH_RNN_N", "10000"))   # sequences per epoch
VOCAB, EMB, UNITS, SEQ, BS = 10000, 64, 128, 80, 64


def _native_ok():
    from fastgrad.backend import native_available
    return native_available()


def _data(n, seed=0):
    r = np.random.default_rng(seed)
    x = r.integers(1, VOCAB, size=(n, SEQ))
    y = (x[:, :5].mean(axis=1) > VOCAB / 2).astype(np.float32).reshape(-1, 1)
    return x, y


@contextlib.contextmanager
def _fastgrad(mode):
    _config.set_num_threads(THREADS)
    try:
        with fg.use_backend("numpy" if mode == "numpy" else "native"):
            yield
    finally:
        _config.set_num_threads(None)


def _fg_model(cell):
    fg.set_seed(0)
    L = fg.layers
    rnn = L.LSTM(UNITS) if cell == "lstm" else L.GRU(UNITS)
    m = fg.Sequential([fg.Input((SEQ,)), L.Embedding(VOCAB, EMB), rnn, L.Dense(1, activation="sigmoid")])
    m.compile(optimizer=fg.optimizers.Adam(1e-3), loss="binary_crossentropy")
    return m


def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    return torch


def _torch_model(torch, cell):
    torch.manual_seed(0)
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(VOCAB, EMB)
            self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(EMB, UNITS, batch_first=True)
            self.out = nn.Linear(UNITS, 1)

        def forward(self, x):
            h, _ = self.rnn(self.emb(x))
            return self.out(h[:, -1])

    return Net()


def _torch_epoch(torch, model, opt, X, Y):
    F = torch.nn.functional
    perm = torch.randperm(X.shape[0])
    loss = None
    for i in range(0, X.shape[0], BS):
        idx = perm[i:i + BS]
        opt.zero_grad(set_to_none=True)
        loss = F.binary_cross_entropy_with_logits(model(X[idx]), Y[idx])
        loss.backward()
        opt.step()
    return float(loss.detach())


def _n(benchmark):
    return 256 if benchmark.disabled else EPOCH_N


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("mode", ["fastgrad", "numpy"])
def test_classifier_epoch_fastgrad(benchmark, cell, mode):
    if mode != "numpy" and not _native_ok():
        pytest.skip("native backend not built")
    benchmark.group = f"{cell}_classifier"
    benchmark.name = f"{cell}_classifier[{mode}]"
    n = _n(benchmark)
    x, y = _data(n)
    with _fastgrad(mode):
        m = _fg_model(cell)
        m.fit(x[:BS * 2], y[:BS * 2], batch_size=BS, epochs=1, verbose=0)      # warm
        rounds = 1 if benchmark.disabled or mode == "numpy" else 3
        hist = benchmark.pedantic(lambda: m.fit(x, y, batch_size=BS, epochs=1, verbose=0),
                                  rounds=rounds, iterations=1)
    benchmark.extra_info.update(samples=n, batch_size=BS, final_loss=float(hist.history["loss"][-1]))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_classifier_epoch_torch(benchmark, cell):
    torch = _torch()
    benchmark.group = f"{cell}_classifier"
    benchmark.name = f"{cell}_classifier[torch]"
    n = _n(benchmark)
    x, y = _data(n)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    model = _torch_model(torch, cell)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    _torch_epoch(torch, model, opt, X[:BS * 2], Y[:BS * 2])
    loss = benchmark.pedantic(lambda: _torch_epoch(torch, model, opt, X, Y),
                              rounds=1 if benchmark.disabled else 3, iterations=1)
    benchmark.extra_info.update(samples=n, batch_size=BS, final_loss=loss)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("mode", ["fastgrad", "numpy"])
def test_infer_one_fastgrad(benchmark, cell, mode):
    if mode != "numpy" and not _native_ok():
        pytest.skip("native backend not built")
    benchmark.group = f"{cell}_infer_one"
    benchmark.name = f"{cell}_infer_one[{mode}]"
    x, _ = _data(1)
    with _fastgrad(mode):
        m = _fg_model(cell)
        m.predict_on_batch(x)
        benchmark(m.predict_on_batch, x)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_infer_one_torch(benchmark, cell):
    torch = _torch()
    benchmark.group = f"{cell}_infer_one"
    benchmark.name = f"{cell}_infer_one[torch]"
    x, _ = _data(1)
    X = torch.from_numpy(x)
    model = _torch_model(torch, cell).eval()

    def run():
        with torch.inference_mode():
            return torch.sigmoid(model(X))
    run()
    benchmark(run)
