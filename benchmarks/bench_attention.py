"""Attention benchmarks (issue 10).

Groups (ratios from one run, 2 threads):
    transformer_encoder   encoder classifier: input (128, 64) + PositionEmbedding,
                          2 post-norm blocks (d_model 64, 4 heads, feed-forward
                          128, relu, no dropout), Flatten, Dense(10); Adam,
                          batch 32, one epoch of 1024 sequences: fastgrad
                          (native ops, Python executor), numpy backend, torch
                          (2 x nn.TransformerEncoderLayer, batch_first)
    attention_memory      peak RSS of one MultiHeadAttention forward + backward
                          (batch 1, 4 heads, d_model 64, self-attention) at
                          sequence lengths 512 .. 4096, blocked (flash) path
                          against the full-matrix path, each in a fresh process;
                          the figures land in extra_info (rss_mib)

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest benchmarks/bench_attention.py \
        --benchmark-only --benchmark-max-time=0.5 --benchmark-min-rounds=3
    pytest benchmarks/bench_attention.py --benchmark-disable      # smoke run
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastgrad as fg

from bench_train import THREADS, _fastgrad, _native_ok, _torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
import transformer_reverse as _ex  # noqa: E402

SEQ, DM, HEADS, FF, BLOCKS, BS, CLASSES = 128, 64, 4, 128, 2, 32, 10


def _data(n, seed=0):
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, SEQ, DM)).astype(np.float32)
    teacher = r.standard_normal((SEQ * DM, CLASSES)).astype(np.float32)
    y = (x.reshape(n, -1) @ teacher).argmax(1)
    return x, y


def _fg_encoder():
    fg.set_seed(0)
    L = fg.layers
    dense, ln = (L.Dense, L.LayerNormalization) if _ex._rank3_ok() else (_ex.TokenDense,
                                                                        _ex.TokenLayerNorm)
    x = fg.Input((SEQ, DM))
    h = L.Add()([x, L.PositionEmbedding(SEQ)(x)])
    for i in range(BLOCKS):
        a = L.MultiHeadAttention(HEADS, DM // HEADS)(h, h)
        h = ln(epsilon=1e-5)(L.Add()([h, a]))
        f = dense(DM)(dense(FF, activation="relu")(h))
        h = ln(epsilon=1e-5)(L.Add()([h, f]))
    out = L.Dense(CLASSES, activation="softmax")(L.Flatten()(h))
    m = fg.Model(x, out)
    m.compile(fg.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    return m


@pytest.mark.parametrize("mode", ["fastgrad", "numpy"])
def test_transformer_epoch_fastgrad(benchmark, mode):
    if mode != "numpy" and not _native_ok():
        pytest.skip("native backend not built")
    benchmark.group = "transformer_encoder"
    benchmark.name = f"transformer_encoder[{mode}]"
    n = 64 if benchmark.disabled else 1024
    x, y = _data(n)
    with _fastgrad("fastgrad_py" if mode == "fastgrad" else "numpy"):
        m = _fg_encoder()
        m.fit(x[:BS * 2], y[:BS * 2], batch_size=BS, epochs=1, verbose=0)
        benchmark.pedantic(lambda: m.fit(x, y, batch_size=BS, epochs=1, verbose=0),
                           rounds=1 if benchmark.disabled else 3, iterations=1)
    benchmark.extra_info.update(samples=n, batch_size=BS, threads=THREADS)


def test_transformer_epoch_torch(benchmark):
    torch = _torch()
    benchmark.group = "transformer_encoder"
    benchmark.name = "transformer_encoder[torch]"
    n = 64 if benchmark.disabled else 1024
    x, y = _data(n)
    torch.manual_seed(0)
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos = nn.Parameter(torch.randn(SEQ, DM) * 0.05)
            self.blocks = nn.ModuleList([nn.TransformerEncoderLayer(
                DM, HEADS, FF, dropout=0.0, batch_first=True) for _ in range(BLOCKS)])
            self.head = nn.Linear(SEQ * DM, CLASSES)

        def forward(self, v):
            h = v + self.pos
            for b in self.blocks:
                h = b(h)
            return self.head(h.flatten(1))

    net = Net()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)

    def epoch():
        perm = torch.randperm(n)
        for i in range(0, n, BS):
            idx = perm[i:i + BS]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(X[idx]), Y[idx])
            loss.backward()
            opt.step()
    epoch()
    benchmark.pedantic(epoch, rounds=1 if benchmark.disabled else 3, iterations=1)
    benchmark.extra_info.update(samples=n, batch_size=BS, threads=THREADS)


# ------------------------------------------------------------------ memory
_MEM_SCRIPT = r"""
import json, resource, sys
import numpy as np
import fastgrad as fg
T, flash = int(sys.argv[1]), sys.argv[2] == "1"
fg.set_num_threads(%d)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
from fastgrad.engine.workspace import Workspace
x = np.random.default_rng(0).standard_normal((1, T, 64)).astype(np.float32)
mha = fg.layers.MultiHeadAttention(4, 16, flash=flash)
mha._call_parts(x, x, None, {}, True)
mha.build([(T, 64), (T, 64)])
from fastgrad.engine.params import ParamStore
ParamStore([mha], fresh=True).initialize()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ws = Workspace()
y = mha.forward([x, x], True, ws)
mha.backward(np.ones_like(y), ws, True)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"T": T, "flash": flash, "rss_mib": peak / 1024.0,
                  "attention_mib": (peak - before) / 1024.0}))
"""


def _mem(T, flash):
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(__file__), "..", "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", _MEM_SCRIPT % THREADS, str(T), "1" if flash else "0"],
                         capture_output=True, text=True, env=env, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("T", [512, 1024, 2048, 4096])
@pytest.mark.parametrize("path", ["flash", "full"])
def test_attention_memory(benchmark, T, path):
    if not _native_ok():
        pytest.skip("native backend not built")
    if benchmark.disabled and T > 512:
        pytest.skip("smoke run: the shortest length only")
    benchmark.group = "attention_memory"
    benchmark.name = f"attention_memory[{path}-{T}]"
    res = {}

    def run():
        res.update(_mem(T, path == "flash"))
    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(res)
    # the blocked path keeps O(T) memory: its extra RSS at 4096 stays far below one
    # (4, T, T) float32 matrix (256 MiB at T = 4096)
    if path == "flash":
        assert res["attention_mib"] < 4 * T * T * 4 / 2**20 / 4 + 64, res
