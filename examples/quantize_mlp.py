"""Float -> int8: train an MLP on scikit-learn's digits, quantize it three
ways, and print size, speed and accuracy before and after.

    python examples/quantize_mlp.py [OUT_DIR] [--epochs 30] [--threads 2]

1. train the float32 model (train -> validate);
2. post-training dynamic quantization (int8 weights, activations per row at
   run time) and static quantization calibrated on 500 training rows
   (int8 activations between layers, bias + ReLU + requantization fused in
   the integer GEMM);
3. quantization-aware training: prepare_qat, a short low-rate fine-tune with
   fake quantization, convert;
4. for each: test accuracy and its change (percentage points), file size of
   model.save, predict time for the test set and for one row — and the same
   for a wider 784-512-512-10 MLP on random inputs, where the int8 kernels
   have real work to do (speed only);
5. save / load_model round trip of the int8 model (bitwise same predictions).

Everything is offline: the digits data ships with scikit-learn.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np


def timed(f, reps=5):
    f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", nargs="?", default=None)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        sys.exit("this example needs scikit-learn for its bundled digits data: pip install scikit-learn")
    import fastgrad as fg
    from fastgrad import _native  # noqa: F401  (fg._native below)
    from fastgrad import quantization as fq

    out_dir = args.out_dir or tempfile.mkdtemp(prefix="fg_quant_")
    os.makedirs(out_dir, exist_ok=True)
    fg.set_num_threads(args.threads)
    fg.set_seed(0)
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)

    # 1. float model
    model = fg.Sequential([fg.layers.Dense(128, activation="relu", input_shape=(64,)),
                           fg.layers.Dense(64, activation="relu"),
                           fg.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(xtr, ytr, epochs=args.epochs, batch_size=32, validation_split=0.1, verbose=0)

    # 2. post-training quantization
    dyn = fq.quantize_dynamic(model)
    static = fq.quantize_static(model, xtr[:500], method="percentile")

    # 3. quantization-aware training (fake quantization on the Python step), then convert
    qat = fq.prepare_qat(model)
    qat.compile(optimizer=fg.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy",
                metrics=["accuracy"])
    qat.fit(xtr, ytr, epochs=3, batch_size=32, verbose=0)
    qat_int8 = fq.convert(qat)

    # 4. the table
    fpath = os.path.join(out_dir, "float.fgm")
    model.save(fpath, include_optimizer=False)
    fsize = os.path.getsize(fpath)
    facc = float(np.mean(model.predict(xte, verbose=0).argmax(1) == yte))
    qmod = fg._native.module("quant") if fg.get_backend() == "native" else None
    path_name = qmod.qisa_active() if qmod is not None else "NumPy backend"
    print(f"digits MLP 64-128-64-10, {len(xte)} test rows, {args.threads} threads, int8 path: {path_name}")
    print(f"{'model':<22}{'accuracy':>9}{'change pp':>11}{'file bytes':>12}{'x smaller':>10}"
          f"{'predict ms':>12}{'1 row us':>10}")
    t_all = timed(lambda: model.predict(xte, verbose=0)) * 1e3
    t_one = timed(lambda: model.predict(xte[:1], verbose=0), 50) * 1e6
    print(f"{'float32':<22}{facc:>9.4f}{0.0:>11.2f}{fsize:>12}{1.0:>10.2f}{t_all:>12.2f}{t_one:>10.1f}")
    for name, q in (("int8 dynamic", dyn), ("int8 static", static), ("int8 QAT", qat_int8)):
        path = os.path.join(out_dir, name.replace(" ", "_") + ".fgm")
        q.save(path)
        r = fq.compare(model, q, xte, yte)
        t_all = timed(lambda: q.predict(xte)) * 1e3
        t_one = timed(lambda: q.predict(xte[:1]), 50) * 1e6
        size = os.path.getsize(path)
        print(f"{name:<22}{r['quant_accuracy']:>9.4f}{-r['accuracy_drop_pp']:>11.2f}{size:>12}"
              f"{fsize / size:>10.2f}{t_all:>12.2f}{t_one:>10.1f}")
    print()
    static.summary()

    # the wider MLP: where int8 pays
    wide = fg.Sequential([fg.layers.Dense(512, activation="relu", input_shape=(784,)),
                          fg.layers.Dense(512, activation="relu"), fg.layers.Dense(10, activation="softmax")])
    xw = np.random.default_rng(1).random((10000, 784), dtype=np.float32)
    wq = {"int8 dynamic": fq.quantize_dynamic(wide), "int8 static": fq.quantize_static(wide, xw[:1000])}
    print(f"\n784-512-512-10 MLP, predict 10000 rows / 1 row ({args.threads} threads):")
    t32 = timed(lambda: wide.predict(xw, batch_size=10000, verbose=0))
    print(f"  {'float32':<14}{t32 * 1e3:9.2f} ms {timed(lambda: wide.predict(xw[:1], verbose=0), 50) * 1e6:9.1f} us")
    for name, q in wq.items():
        t = timed(lambda: q.predict(xw, batch_size=10000))
        agree = float(np.mean(q.predict(xw).argmax(1) == wide.predict(xw, verbose=0).argmax(1)))
        print(f"  {name:<14}{t * 1e3:9.2f} ms {timed(lambda: q.predict(xw[:1]), 50) * 1e6:9.1f} us"
              f"   {t32 / t:4.2f}x faster, top-1 agreement with float {agree:.4f}")

    # 5. round trip
    back = fg.models.load_model(os.path.join(out_dir, "int8_static.fgm"))
    same = np.array_equal(back.predict(xte), static.predict(xte))
    print(f"\nload_model(int8_static.fgm): {type(back).__name__}, predictions bitwise equal: {same}")
    print(f"files in {out_dir}")


if __name__ == "__main__":
    main()
