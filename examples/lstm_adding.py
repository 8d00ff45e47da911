"""The adding problem (Hochreiter & Schmidhuber 1997) with an LSTM.

Each sequence has `length` steps of two features: a random value in [0, 1) and
a marker that is 1 at exactly two steps (one in each half). The target is the
sum of the two marked values. Predicting the mean (1.0) gives MSE ~0.167; an
LSTM that learned to carry the marked values across the sequence gets below
0.01. This is an end-to-end check of the recurrent gradients (backward
through 50 steps).

    python examples/lstm_adding.py            # length 50, ~1-2 minutes on 2 cores
    python examples/lstm_adding.py --quick    # a small budget (what the test runs)
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import fastgrad as fg


def adding_data(n, length, rng):
    x = np.zeros((n, length, 2), np.float32)
    x[:, :, 0] = rng.random((n, length), dtype=np.float32)
    half = length // 2
    a = rng.integers(0, half, n)
    b = rng.integers(half, length, n)
    rows = np.arange(n)
    x[rows, a, 1] = 1.0
    x[rows, b, 1] = 1.0
    y = (x[rows, a, 0] + x[rows, b, 0]).reshape(n, 1)
    return x, y


def run(length=50, n_train=10000, epochs=12, batch_size=64, units=32, lr=1e-2, seed=0, target=0.01,
        verbose=1):
    """Train until the validation MSE is below `target` or `epochs` run out; return it."""
    fg.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x, y = adding_data(n_train, length, rng)
    xv, yv = adding_data(1000, length, rng)
    model = fg.Sequential([fg.layers.InputLayer(shape=(length, 2)), fg.layers.LSTM(units),
                           fg.layers.Dense(1)])
    model.compile(optimizer=fg.optimizers.Adam(learning_rate=lr, clipnorm=1.0), loss="mse")
    mse = float("inf")
    for epoch in range(epochs):
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
        mse = float(model.evaluate(xv, yv, verbose=0))
        if verbose:
            print(f"epoch {epoch + 1}: validation MSE {mse:.5f} ({time.perf_counter() - t0:.1f} s)")
        if mse < target:
            break
    return mse


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--length", type=int, default=50)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    if a.quick:
        mse = run(length=a.length, n_train=4000, epochs=a.epochs)
    else:
        mse = run(length=a.length, epochs=a.epochs)
    print(f"final validation MSE {mse:.5f} ({'below' if mse < 0.01 else 'NOT below'} 0.01)")


if __name__ == "__main__":
    main()
