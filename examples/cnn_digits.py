"""A LeNet-style convolutional network on scikit-learn's digits, upsampled to 28x28.

    python examples/cnn_digits.py [--epochs 12] [--backend native|numpy] [--quiet]

The data: scikit-learn's bundled 8x8 digits (1797 images, nothing is
downloaded), each upsampled to 24x24 (bilinear), padded to 28x28x1 with values
in [0, 1], split 80/20 into train / test; the training images get shifted
copies (up to 2 pixels each way). The model is LeNet-5 with ReLU and max
pooling, written with Keras's layers:

    Conv2D(6, 5, padding="same", relu) -> MaxPooling2D -> Conv2D(16, 5, relu)
    -> MaxPooling2D -> Flatten -> Dense(120, relu) -> Dense(84, relu)
    -> Dense(10, softmax)

trained with Adam and a cosine learning-rate decay. It reaches about 99% test
accuracy (99.7% with seed 0, 99.2% with seed 1) in a few minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def upsample_bilinear(img, size):
    """(n, h, w) -> (n, size, size), bilinear with edge clamping (align_corners=False)."""
    n, h, w = img.shape

    def axis(n_in, n_out):
        pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        pos = np.clip(pos, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    ylo, yhi, fy = axis(h, size)
    xlo, xhi, fx = axis(w, size)
    rows = img[:, ylo] * (1 - fy)[None, :, None] + img[:, yhi] * fy[None, :, None]
    return rows[:, :, xlo] * (1 - fx) + rows[:, :, xhi] * fx


def digits_28x28(seed=0, copies=4):
    """(x_train, y_train, x_test, y_test) as (n, 28, 28, 1) float32 images and int labels."""
    from sklearn.datasets import load_digits
    rng = np.random.default_rng(seed)
    d = load_digits()
    img = (d.images / 16.0).astype(np.float32)                      # (1797, 8, 8)
    big = np.pad(upsample_bilinear(img, 24), ((0, 0), (2, 2), (2, 2)))  # (1797, 28, 28)
    y = d.target.astype(np.int64)
    order = rng.permutation(len(big))
    big, y = big[order], y[order]
    n_test = len(big) // 5
    test_x, test_y = big[:n_test], y[:n_test]
    train, labels = [big[n_test:]], [y[n_test:]]
    for _ in range(copies - 1):
        shifted = np.empty_like(big[n_test:])
        for i, im in enumerate(big[n_test:]):
            dy, dx = rng.integers(-2, 3, size=2)
            shifted[i] = np.roll(im, (int(dy), int(dx)), axis=(0, 1))
        train.append(shifted)
        labels.append(y[n_test:])
    x_train = np.concatenate(train)[..., None]
    return x_train, np.concatenate(labels), test_x[..., None], test_y


def lenet(fg):
    L = fg.layers
    return fg.Sequential([
        fg.Input((28, 28, 1)),
        L.Conv2D(6, 5, padding="same", activation="relu"),
        L.MaxPooling2D(),
        L.Conv2D(16, 5, activation="relu"),
        L.MaxPooling2D(),
        L.Flatten(),
        L.Dense(120, activation="relu"),
        L.Dense(84, activation="relu"),
        L.Dense(10, activation="softmax"),
    ])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--copies", type=int, default=4, help="training copies (the first unshifted)")
    ap.add_argument("--backend", choices=("native", "numpy"), default=None,
                    help="kernel backend (default: native when built)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    args = ap.parse_args(argv)

    import fastgrad as fg

    if args.backend:
        fg.set_backend(args.backend)
    fg.set_seed(args.seed)
    x_train, y_train, x_test, y_test = digits_28x28(args.seed, args.copies)
    model = lenet(fg)
    steps = args.epochs * (-(-len(x_train) // args.batch_size))
    lr = fg.optimizers.schedules.CosineDecay(2e-3, decay_steps=steps, alpha=0.02)
    model.compile(optimizer=fg.optimizers.Adam(learning_rate=lr),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    if not args.quiet:
        model.summary()
    t0 = time.perf_counter()
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
              verbose=0 if args.quiet else 1)
    took = time.perf_counter() - t0
    loss, acc = model.evaluate(x_test, y_test, verbose=0)
    print(f"trained on {len(x_train)} images of 28x28x1 for {args.epochs} epochs "
          f"in {took:.1f} s ({fg.get_backend()} backend)")
    print(f"test loss {loss:.4f}")
    print(f"test accuracy {acc:.4f}")
    return acc


if __name__ == "__main__":
    main()
