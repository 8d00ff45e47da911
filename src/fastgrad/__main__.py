"""`python -m fastgrad info` — build / runtime configuration;
`python -m fastgrad demo [--epochs N] [--backend native|numpy]` — train an MLP
on scikit-learn's bundled 8x8 digits and compare with the NumPy backend;
`python -m fastgrad export MODEL OUT.onnx [--opset N]` — write a saved model
(fastgrad's file, or a QuantizedModel) as ONNX (needs pip install fastgrad[onnx])."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Sequence


def _info(args: Any) -> int:
    import fastgrad as fg
    fg.show_config()
    return 0


def _load_digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    import numpy as np
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int32)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    x, y = x[perm], y[perm]
    n_test = len(x) // 5
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def _train(fg, backend, data, epochs, batch_size, seed):
    xtr, ytr, xte, yte = data
    with fg.use_backend(backend):
        fg.set_seed(seed)
        model = fg.Sequential([fg.layers.Dense(64, activation="relu", input_shape=(64,)),
                               fg.layers.Dense(64, activation="relu"),
                               fg.layers.Dense(10, activation="softmax")])
        model.compile(optimizer=fg.optimizers.Adam(0.003), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        t0 = time.perf_counter()
        hist = model.fit(xtr, ytr, epochs=epochs, batch_size=batch_size, verbose=0)
        dt = time.perf_counter() - t0
        loss, acc = model.evaluate(xte, yte, batch_size=256, verbose=0)
    return dt, hist.history["loss"][-1], loss, acc


def _demo(args: Any) -> int:
    import fastgrad as fg
    from fastgrad.backend import native_available
    data = _load_digits()
    if data is None:
        print("fastgrad demo needs scikit-learn for its bundled digits data set: "
              "pip install scikit-learn", file=sys.stderr)
        return 2
    try:
        have_native = native_available()
    except Exception:  # a half-built tree: report it below, train on numpy
        have_native = False
    backend = args.backend or ("native" if have_native else "numpy")
    if not have_native and args.backend is None:
        print("note: the native backend is not available (not built?); running the NumPy "
              "backend only — see `python -m fastgrad info`")
    if backend == "native" and not have_native:
        from fastgrad.backend.native_ops import native_unavailable_reason
        print(f"native backend unavailable: {native_unavailable_reason()}", file=sys.stderr)
        return 2
    print(f"digits: {len(data[0])} train / {len(data[2])} test samples, 64 features, 10 classes; "
          f"MLP 64-64-64-10, Adam, batch {args.batch_size}, {args.epochs} epochs, "
          f"{fg.get_num_threads()} threads")
    dt, tr_loss, loss, acc = _train(fg, backend, data, args.epochs, args.batch_size, args.seed)
    print(f"{backend:>6}: train {dt:.3f} s ({dt / max(args.epochs, 1) * 1e3:.1f} ms/epoch), "
          f"final train loss {tr_loss:.4f}, test loss {loss:.4f}, test accuracy {acc:.2%}")
    if backend != "numpy" and not args.no_compare:
        dt2, tr2, loss2, acc2 = _train(fg, "numpy", data, args.epochs, args.batch_size, args.seed)
        print(f"{'numpy':>6}: train {dt2:.3f} s ({dt2 / max(args.epochs, 1) * 1e3:.1f} ms/epoch), "
              f"final train loss {tr2:.4f}, test loss {loss2:.4f}, test accuracy {acc2:.2%}")
        print(f"speed: {backend} is {dt2 / dt:.2f}x the NumPy backend "
              f"(same model, same seed; loss difference {abs(tr_loss - tr2):.2e})")
    return 0


def _export(args: Any) -> int:
    import fastgrad as fg
    try:
        from fastgrad import export as _export_mod
        _export_mod._import_onnx()
    except ImportError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    try:
        model = fg.load_model(args.model)
    except (OSError, ValueError) as exc:
        print(f"fastgrad export: cannot load {args.model}: {exc}", file=sys.stderr)
        return 2
    try:
        proto = _export_mod.to_onnx(model, args.out, opset=args.opset,
                                    dynamic_batch=args.batch_size is None, batch_size=args.batch_size)
    except ValueError as exc:
        print(f"fastgrad export: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {len(proto.graph.node)} ONNX nodes, opset {args.opset}, inputs "
          f"{[i.name for i in proto.graph.input]}, outputs {[o.name for o in proto.graph.output]}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastgrad", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd")
    sub.add_parser("info", help="print version, backend, ISA, threads, compiler and flags")
    d = sub.add_parser("demo", help="train an MLP on scikit-learn's digits")
    d.add_argument("--epochs", type=int, default=20)
    d.add_argument("--batch-size", type=int, default=32)
    d.add_argument("--backend", choices=("native", "numpy"), default=None)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--no-compare", action="store_true", help="skip the NumPy-backend run")
    e = sub.add_parser("export", help="write a saved model as ONNX (pip install fastgrad[onnx])")
    e.add_argument("model", help="a model file written by model.save (or a QuantizedModel's save)")
    e.add_argument("out", help="the .onnx file to write")
    e.add_argument("--opset", type=int, default=17)
    e.add_argument("--batch-size", type=int, default=None,
                   help="fix the batch axis to this size (default: dynamic)")
    args = p.parse_args(argv)
    if args.cmd == "export":
        return _export(args)
    if args.cmd == "info":
        return _info(args)
    if args.cmd == "demo":
        if args.epochs < 1:
            p.error("--epochs must be >= 1")
        return _demo(args)
    p.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
