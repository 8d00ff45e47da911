"""fit throughput by data source (issue 13): one epoch of the 784-128-10 MLP
(Adam, batch 128, native backend) from an in-memory array, a float32 memmap
(np.memmap on a file: the C step reads the pages in place), a PyDataset and a
generator (both slicing the memmap, one batch per training step, the next one
read by the prefetch thread while C trains). One pytest-benchmark group, so
the ratios come from one run; samples/s are in extra_info.
FASTGRAD_BENCH_THREADS=N sets fastgrad's thread count (default: its own).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest benchmarks/bench_data.py \
        --benchmark-only --benchmark-max-time=0.5 --benchmark-min-rounds=3
"""
import os

import numpy as np
import pytest

import fastgrad as fg
from fastgrad.layers import Dense
from fastgrad.models import Sequential
from fastgrad.utils import PyDataset

BS = 128
GROUP = "fit_source_mlp_784_128_10"


def _n(benchmark):
    return 2048 if benchmark.disabled else 30000


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    n = 30000
    rng = np.random.default_rng(0)
    x = rng.random((n, 784), dtype=np.float32)
    y = rng.integers(0, 10, n)
    path = tmp_path_factory.mktemp("data") / "x.f32"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=x.shape)
    mm[:] = x
    mm.flush()
    del mm
    return x, y, path


def _model():
    threads = os.environ.get("FASTGRAD_BENCH_THREADS")
    if threads:
        fg.set_num_threads(int(threads))
    fg.set_seed(0)
    m = Sequential([Dense(128, activation="relu", input_shape=(784,)),
                    Dense(10, activation="softmax")])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


class _Slices(PyDataset):
    def __init__(self, x, y, **kw):
        super().__init__(**kw)
        self.x, self.y = x, y

    def __len__(self):
        return (len(self.x) + BS - 1) // BS

    def __getitem__(self, i):
        return self.x[i * BS:(i + 1) * BS], self.y[i * BS:(i + 1) * BS]


def _gen(x, y):
    while True:
        for s in range(0, len(x), BS):
            yield x[s:s + BS], y[s:s + BS]


@pytest.mark.parametrize("source", ["array", "memmap", "memmap_shuffled", "pydataset",
                                    "pydataset_2workers", "generator"])
def test_fit_epoch_by_source(benchmark, files, source):
    if fg.get_backend() != "native":
        pytest.skip("native backend not built")
    benchmark.group = GROUP
    benchmark.name = f"fit[{source}]"
    x, y, path = files
    n = _n(benchmark)
    x, y = x[:n], y[:n]
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=(30000, 784))[:n]
    steps = (n + BS - 1) // BS
    m = _model()
    if source == "array":
        run = lambda: m.fit(x, y, batch_size=BS, epochs=1, shuffle=False, verbose=0)  # noqa: E731
    elif source == "memmap":
        run = lambda: m.fit(mm, y, batch_size=BS, epochs=1, shuffle=False, verbose=0)  # noqa: E731
    elif source == "memmap_shuffled":
        run = lambda: m.fit(mm, y, batch_size=BS, epochs=1, verbose=0)  # noqa: E731
    elif source.startswith("pydataset"):
        ds = _Slices(mm, y, workers=2 if source.endswith("workers") else 1)
        run = lambda: m.fit(ds, epochs=1, shuffle=False, verbose=0)  # noqa: E731
    else:
        g = _gen(mm, y)
        run = lambda: m.fit(g, steps_per_epoch=steps, epochs=1, verbose=0)  # noqa: E731
    m.fit(x[:BS * 2], y[:BS * 2], batch_size=BS, epochs=1, verbose=0)     # warm
    benchmark.pedantic(run, rounds=1 if benchmark.disabled else 3, iterations=1)
    if not benchmark.disabled:
        benchmark.extra_info["samples_per_s"] = n / benchmark.stats.stats.median
    benchmark.extra_info.update(samples=n, batch_size=BS, source=source,
                                threads=fg.get_num_threads())
