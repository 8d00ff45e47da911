"""Train a small CNN on scikit-learn's 8x8 digits, export it (and its int8
dynamic-quantized twin) to ONNX, and check onnxruntime's predictions against
fastgrad's.

    python examples/export_onnx.py [OUT_DIR] [--epochs 5]

Needs onnx and onnxruntime (pip install 'fastgrad[onnx]') and scikit-learn.
"""
from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", nargs="?", default=None)
    p.add_argument("--epochs", type=int, default=5)
    args = p.parse_args()
    import fastgrad as fg
    import onnxruntime as ort
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]       # (n, 8, 8, 1), channels_last
    y = d.target.astype(np.int32)
    xtr, ytr, xte, yte = x[:1500], y[:1500], x[1500:], y[1500:]

    fg.set_seed(0)
    L = fg.layers
    cnn = fg.Sequential([L.Input(shape=(8, 8, 1)),
                         L.Conv2D(16, 3, padding="same", activation="relu"),
                         L.BatchNormalization(), L.MaxPooling2D(),
                         L.Conv2D(32, 3, activation="relu"), L.GlobalAveragePooling2D(),
                         L.Dropout(0.2), L.Dense(10, activation="softmax")])
    cnn.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    cnn.fit(xtr, ytr, epochs=args.epochs, batch_size=32, verbose=0)

    out_dir = args.out_dir or tempfile.mkdtemp(prefix="fg_onnx_")
    os.makedirs(out_dir, exist_ok=True)

    def check(model, xs, path, what):
        fg.export.to_onnx(model, path)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: xs})[0]
        want = model.predict(xs)
        acc = float(np.mean(np.argmax(got, axis=1) == yte))
        print(f"{what:>12}: {path} ({os.path.getsize(path) / 1024:.1f} KiB), max |onnx - fastgrad| = "
              f"{np.abs(got - want).max():.2e}, onnxruntime test accuracy {acc:.2%}")

    check(cnn, xte, os.path.join(out_dir, "cnn.onnx"), "float CNN")

    fg.set_seed(0)
    mlp = fg.Sequential([L.Input(shape=(64,)), L.Dense(64, activation="relu"),
                         L.Dense(10, activation="softmax")])
    mlp.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    mlp.fit(xtr.reshape(-1, 64), ytr, epochs=args.epochs * 4, batch_size=32, verbose=0)
    q = fg.quantization.quantize_dynamic(mlp)
    check(q, xte.reshape(-1, 64), os.path.join(out_dir, "mlp_int8.onnx"), "int8 MLP")


if __name__ == "__main__":
    main()
