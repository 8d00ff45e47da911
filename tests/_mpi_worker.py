"""Worker run under `mpiexec -n N python tests/_mpi_worker.py MODE OUTDIR [args]` by
tests/test_distributed.py (also runnable alone: one process, no DataParallel when
N is given as 0). Each rank writes OUTDIR/<mode>-rank<r>.npz with what the test checks."""
from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

import fastgrad as fg


def data(n=600, d=20, k=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    w = rng.standard_normal((d, k)).astype(np.float32)
    y = np.argmax(x @ w + 0.5 * rng.standard_normal((n, k)), axis=1)
    return x, y


def mlp(kind="sequential", optimizer="adam"):
    fg.set_seed(7)
    if kind == "reg":            # regularizers and clipping act on the reduced gradient
        m = fg.Sequential([fg.layers.Input((20,)),
                           fg.layers.Dense(32, activation="relu",
                                           kernel_regularizer=fg.regularizers.L2(1e-2)),
                           fg.layers.Dense(5, activation="softmax",
                                           kernel_regularizer=fg.regularizers.L1(1e-3))])
        opt = fg.optimizers.Adam(1e-2, global_clipnorm=0.5)
        m.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return m
    if kind == "sequential":
        m = fg.Sequential([fg.layers.Input((20,)), fg.layers.Dense(32, activation="relu"),
                           fg.layers.Dense(16, activation="tanh"),
                           fg.layers.Dense(5, activation="softmax")])
    else:      # a graph model: two branches merged
        inp = fg.Input((20,))
        a = fg.layers.Dense(16, activation="relu", name="a")(inp)
        b = fg.layers.Dense(16, activation="tanh", name="b")(inp)
        h = fg.layers.Concatenate()([a, b])
        out = fg.layers.Dense(5, activation="softmax", name="out")(h)
        m = fg.Model(inp, out)
    opt = fg.optimizers.Adam(1e-2) if optimizer == "adam" else fg.optimizers.SGD(0.05, momentum=0.9)
    m.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def main():
    mode, out = sys.argv[1], sys.argv[2]
    args = sys.argv[3:]
    distributed = os.environ.get("FG_TEST_NO_DIST") != "1"
    if os.environ.get("FG_TEST_PYTHON_STEP") == "1":
        import fastgrad.engine.compiled as compiled
        compiled.enabled = False
    r = 0
    if distributed:
        timeout = float(os.environ.get("FG_TEST_TIMEOUT", "300"))
        dist = fg.distribution.DataParallel(timeout=timeout)
        fg.distribution.set_distribution(dist)
        r = dist.rank
    res = {}
    x, y = data()
    if mode == "train":            # args: kind optimizer steps batch_size
        kind, optname, steps, bs = args[0], args[1], int(args[2]), int(args[3])
        m = mlp(kind, optname)
        n = steps * bs               # exactly `steps` optimizer steps in one epoch
        xs = np.concatenate([x] * (n // len(x) + 1))[:n]
        ys = np.concatenate([y] * (n // len(y) + 1))[:n]
        fg.set_seed(3)
        h = m.fit(xs, ys, batch_size=bs, epochs=1, verbose=0)
        res = dict(params=m.flat_params.copy(), loss=np.array(h.history["loss"]),
                   acc=np.array(h.history["accuracy"]), iters=m.optimizer.iterations)
    elif mode == "metrics":        # epochs with validation, sample weights, a short last batch
        m = mlp()
        if args and args[0] == "two":  # metrics updated in Python from captured outputs
            m.compile(optimizer=fg.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy", fg.metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")])
        sw = np.linspace(0.5, 1.5, len(x)).astype(np.float32)
        fg.set_seed(3)
        h = m.fit(x[:500], y[:500], sample_weight=sw[:500], batch_size=48, epochs=2, verbose=0,
                  validation_data=(x[500:], y[500:]))
        ev = m.evaluate(x, y, batch_size=50, verbose=0)
        pr = m.predict(x[:37])
        res = dict(params=m.flat_params.copy(), ev=np.array(ev), pred=pr,
                   **{k: np.array(v) for k, v in h.history.items()})
    elif mode == "writers":        # rank-0-only writing callbacks, same early stop everywhere
        m = mlp()
        ck = os.path.join(out, f"r{r}-ckpt-{{epoch}}.fgm")
        cbs = [fg.callbacks.ModelCheckpoint(ck), fg.callbacks.CSVLogger(os.path.join(out, f"r{r}-log.csv")),
               fg.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0),
               fg.callbacks.ReduceLROnPlateau(monitor="loss", patience=0, min_delta=10.0, factor=0.5)]
        fg.set_seed(3)
        h = m.fit(x, y, batch_size=60, epochs=5, verbose=1, callbacks=cbs)
        res = dict(epochs=len(h.history["loss"]), lr=float(m.optimizer.learning_rate),
                   params=m.flat_params.copy())
    elif mode == "save":           # args: epochs path
        m = mlp()
        fg.set_seed(3)
        m.fit(x, y, batch_size=60, epochs=int(args[0]), verbose=0,
              callbacks=[fg.callbacks.ModelCheckpoint(args[1])])
        res = dict(params=m.flat_params.copy())
    elif mode == "resume":         # args: path epochs
        m = fg.load_model(args[0])
        fg.set_seed(11)
        m.fit(x, y, batch_size=60, epochs=int(args[1]), initial_epoch=2, verbose=0)
        res = dict(params=m.flat_params.copy(), iters=m.optimizer.iterations)
    elif mode in ("kill", "raise", "hang"):
        m = mlp()

        class Fail(fg.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if r == 1 and batch == 3:
                    if mode == "kill":
                        os.kill(os.getpid(), signal.SIGKILL)
                    elif mode == "raise":
                        raise RuntimeError("injected failure on rank 1")
                    else:
                        time.sleep(3600)
        m.fit(x, y, batch_size=20, epochs=3, verbose=0, callbacks=[Fail()])
    elif mode == "bn":             # BatchNormalization + Dropout: ranks keep the same bits
        fg.set_seed(7)
        m = fg.Sequential([fg.layers.Input((20,)), fg.layers.Dense(32),
                           fg.layers.BatchNormalization(), fg.layers.Activation("relu"),
                           fg.layers.Dropout(0.3), fg.layers.Dense(5, activation="softmax")])
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        fg.set_seed(3)
        h = m.fit(x, y, batch_size=40, epochs=2, verbose=0)
        res = dict(params=m.flat_params.copy(), loss=np.array(h.history["loss"]),
                   state=np.concatenate([w.reshape(-1) for w in m.get_weights()]))
    elif mode == "nonfinite":      # a diverging step: every rank raises the same error
        fg.set_seed(7)
        m = fg.Sequential([fg.layers.Input((20,)), fg.layers.Dense(5)])
        m.compile(optimizer=fg.optimizers.SGD(1e12), loss="mse")
        try:
            m.fit(x * 100, np.ones((len(x), 5), np.float32) * 1e6, batch_size=20, epochs=3,
                  verbose=0)
        except fg.models.NonFiniteLossError as exc:
            res = dict(msg=np.array(str(exc)), params=m.flat_params.copy())
    elif mode == "badbatch":
        m = mlp()
        try:
            m.fit(x, y, batch_size=25, epochs=1, verbose=0)
        except ValueError as exc:
            res = dict(msg=np.array(str(exc)))
    np.savez(os.path.join(out, f"{mode}-rank{r}.npz"), **res)


if __name__ == "__main__":
    main()
