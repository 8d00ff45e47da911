"""The tutorials' functional-API MNIST model, offline, on data of MNIST's shape.

    python examples/functional_mnist.py [--epochs 5] [--backend native|numpy] [--quiet]

The model is the Keras tutorial's, written with fastgrad's functional API:

    inputs = fg.Input(shape=(784,))
    x = fg.layers.Dense(128, activation="relu")(inputs)
    outputs = fg.layers.Dense(10, activation="softmax")(x)
    model = fg.Model(inputs=inputs, outputs=outputs)

The data: scikit-learn's bundled 8x8 digits, each pixel blown up to a 3x3
block and padded to 28x28 (784 values in [0, 1], as MNIST), with shifted
copies (up to 2 pixels each way) for a few thousand training images. Without
scikit-learn it falls back to a synthetic, learnable data set of the same
shape. Nothing is downloaded; a run takes a few seconds.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def digits_28x28(seed=0, copies=4):
    """(x_train, y_train, x_test, y_test): 28x28 digits flattened to 784 floats."""
    rng = np.random.default_rng(seed)
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return synthetic_mnist(seed)
    d = load_digits()
    img = (d.images / 16.0).astype(np.float32)                     # (1797, 8, 8)
    big = np.kron(img, np.ones((1, 3, 3), np.float32))             # (1797, 24, 24)
    big = np.pad(big, ((0, 0), (2, 2), (2, 2)))                    # (1797, 28, 28)
    y = d.target.astype(np.int64)
    order = rng.permutation(len(big))
    big, y = big[order], y[order]
    n_test = len(big) // 5
    test_x, test_y = big[:n_test], y[:n_test]
    train, labels = [big[n_test:]], [y[n_test:]]
    for _ in range(copies - 1):                                    # shifted copies
        dy, dx = rng.integers(-2, 3, size=2)
        train.append(np.roll(big[n_test:], (int(dy), int(dx)), axis=(1, 2)))
        labels.append(y[n_test:])
    x_train = np.concatenate(train).reshape(-1, 784)
    y_train = np.concatenate(labels)
    return x_train, y_train, test_x.reshape(-1, 784), test_y


def synthetic_mnist(seed=0, n=6000):
    """Random images of MNIST's shape: each is its class's fixed random
    template, faint under uniform noise."""
    rng = np.random.default_rng(seed)
    templates = rng.random((10, 784), dtype=np.float32)
    y = rng.integers(0, 10, n)
    x = (0.15 * templates[y] + 0.85 * rng.random((n, 784), dtype=np.float32)).astype(np.float32)
    n_test = n // 6
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--backend", choices=("native", "numpy"), default=None,
                    help="kernel backend (default: native when built)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--synthetic", action="store_true",
                    help="use the synthetic data set even when scikit-learn is installed")
    ap.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    args = ap.parse_args(argv)

    import fastgrad as fg

    if args.backend:
        fg.set_backend(args.backend)
    fg.set_seed(args.seed)
    x_train, y_train, x_test, y_test = (synthetic_mnist(args.seed) if args.synthetic
                                        else digits_28x28(args.seed))

    inputs = fg.Input(shape=(784,))
    x = fg.layers.Dense(128, activation="relu")(inputs)
    outputs = fg.layers.Dense(10, activation="softmax")(x)
    model = fg.Model(inputs=inputs, outputs=outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    if not args.quiet:
        model.summary()

    t0 = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
                        validation_split=0.1, verbose=0 if args.quiet else 1)
    took = time.perf_counter() - t0
    loss, acc = model.evaluate(x_test, y_test, verbose=0)
    probs = model.predict(x_test[:5])
    print(f"trained on {len(x_train)} images of 784 pixels for {args.epochs} epochs "
          f"in {took:.1f} s ({fg.get_backend()} backend)")
    print("val_accuracy per epoch: " +
          " ".join(f"{a:.3f}" for a in history.history["val_accuracy"]))
    print(f"first test images: predicted {probs.argmax(axis=1).tolist()}, "
          f"true {y_test[:5].tolist()}")
    print(f"test loss {loss:.4f}")
    print(f"test accuracy {acc:.4f}")
    return acc


if __name__ == "__main__":
    main()
