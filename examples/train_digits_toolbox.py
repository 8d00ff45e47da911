"""Train an MLP on scikit-learn's bundled 8x8 digits with the training toolbox.

    python examples/train_digits_toolbox.py [OUT_DIR] [--epochs 60] [--backend native|numpy]

Shows: Dropout, BatchNormalization and an L2 penalty in the model; a live
progress bar (verbose=1); ReduceLROnPlateau halving the learning rate when the
validation loss stalls; EarlyStopping restoring the best epoch's weights; a CSV
log and a best-model checkpoint; then saves the final model, reloads it to
check predictions are bitwise identical, and writes the loss/accuracy curves
to OUT_DIR/history.png (needs matplotlib; skipped with a note otherwise).

Everything is offline: the digits data ships with scikit-learn.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def load_digits_split(seed):
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("this example needs scikit-learn for its bundled digits data: pip install scikit-learn")
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)           # pixel values 0..16 -> 0..1
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_test = len(x) // 5
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="out", help="output directory (default ./out)")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--backend", choices=("native", "numpy"), default=None,
                    help="kernel backend (default: native when built)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    args = ap.parse_args(argv)

    import fastgrad as fg
    from fastgrad import callbacks as cb

    if args.backend:
        fg.set_backend(args.backend)
    if args.threads:
        fg.set_num_threads(args.threads)
    fg.set_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)

    x_train, y_train, x_test, y_test = load_digits_split(args.seed)
    print(f"digits: {len(x_train)} training / {len(x_test)} test samples, backend {fg.get_backend()}, "
          f"{fg.get_num_threads()} thread(s)")

    l2 = fg.regularizers.L2(1e-4)
    model = fg.Sequential([
        fg.layers.Dense(128, activation="relu", input_shape=(64,), kernel_regularizer=l2),
        fg.layers.BatchNormalization(),
        fg.layers.Dropout(0.25),
        fg.layers.Dense(64, activation="relu", kernel_regularizer=l2),
        fg.layers.Dropout(0.25),
        fg.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=fg.optimizers.Adam(learning_rate=2e-3),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.summary()

    callbacks = [
        cb.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3, min_lr=1e-5, verbose=1),
        cb.EarlyStopping(monitor="val_loss", patience=8, restore_best_weights=True, verbose=1),
        cb.ModelCheckpoint(os.path.join(args.out, "best.fgm"), monitor="val_accuracy", save_best_only=True),
        cb.CSVLogger(os.path.join(args.out, "training_log.csv")),
    ]
    t0 = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        validation_split=0.15, callbacks=callbacks, verbose=args.verbose)
    elapsed = time.perf_counter() - t0
    loss, acc = model.evaluate(x_test, y_test, verbose=0)
    print(f"trained {len(history.epoch)} epochs in {elapsed:.2f} s; test loss {loss:.4f}, "
          f"test accuracy {acc:.4f}")

    path = os.path.join(args.out, "digits_mlp.fgm")
    model.save(path)
    again = fg.models.load_model(path)
    same = np.array_equal(again.predict(x_test), model.predict(x_test))
    print(f"saved {path} ({os.path.getsize(path) / 1024:.1f} KiB); reloaded predictions identical: {same}")

    try:
        png = os.path.join(args.out, "history.png")
        history.plot(png, title="fastgrad MLP on digits")
        print(f"history plot: {png}")
    except ImportError as exc:
        print(f"no history plot: {exc}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
