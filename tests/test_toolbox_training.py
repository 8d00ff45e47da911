"""The toolbox inside real fit() runs: callbacks driven by scripted monitor
values (a LambdaCallback placed first rewrites the epoch logs, so every
decision is known in advance), Dropout / BatchNormalization / LayerNormalization
training, schedules in optimizers, checkpoints, progress output."""
import csv

import numpy as np
import pytest

import fastgrad as fg
import fastgrad._config as cfg
from fastgrad import callbacks as C
from fastgrad.optimizers import schedules

from conftest import backends


def blobs(n=120, d=6, seed=0):
    r = np.random.default_rng(seed)
    y = r.integers(0, 3, n)
    centers = r.normal(scale=3.0, size=(3, d))
    x = (centers[y] + r.normal(size=(n, d))).astype(np.float32)
    return x, y


def mlp(d=6, dropout=0.2, bn=True, opt="adam"):
    layers = [fg.layers.Dense(16, activation="relu", input_shape=(d,))]
    if bn:
        layers.append(fg.layers.BatchNormalization())
    layers += [fg.layers.Dropout(dropout), fg.layers.Dense(3, activation="softmax")]
    m = fg.Sequential(layers)
    m.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def scripted(values, key="val_loss"):
    """A LambdaCallback that overwrites logs[key] with values[epoch]."""
    def on_epoch_end(epoch, logs):
        logs[key] = values[epoch]
    return C.LambdaCallback(on_epoch_end=on_epoch_end)


@pytest.fixture(params=backends())
def backend(request):
    with cfg.use_backend(request.param):
        yield request.param


def test_early_stopping_in_fit_restores_best_epoch_weights(backend):
    fg.set_seed(0)
    x, y = blobs()
    m = mlp()
    snaps = []
    record = C.LambdaCallback(on_epoch_end=lambda e, logs: snaps.append(m.get_weights()))
    es = C.EarlyStopping(patience=3, restore_best_weights=True)
    vals = [1.0, 0.8, 0.7, 0.75, 0.71, 0.72, 0.1, 0.1, 0.1, 0.1]
    h = m.fit(x, y, epochs=10, batch_size=16, verbose=0, validation_split=0.25,
              callbacks=[scripted(vals), record, es])
    assert h.epoch == [0, 1, 2, 3, 4, 5]
    assert h.history["val_loss"] == vals[:6]
    assert es.stopped_epoch == 5 and es.best_epoch == 2
    for a, b in zip(m.get_weights(), snaps[2]):
        assert np.array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(snaps[5], snaps[2]))


def test_early_stopping_unknown_monitor_in_fit():
    x, y = blobs()
    m = mlp()
    with pytest.raises(ValueError, match="val_loss.*never be logged.*validation"):
        m.fit(x, y, epochs=2, verbose=0, callbacks=[C.EarlyStopping()])
    with pytest.raises(ValueError, match="'val_acc' will never be logged.*val_accuracy"):
        m.fit(x, y, epochs=2, verbose=0, validation_split=0.2, callbacks=[C.EarlyStopping("val_acc")])


def test_reduce_lr_on_plateau_in_fit():
    fg.set_seed(0)
    x, y = blobs()
    m = mlp(opt=fg.optimizers.SGD(0.1))
    rl = C.ReduceLROnPlateau(factor=0.5, patience=1, min_lr=0.02)
    h = m.fit(x, y, epochs=6, batch_size=32, verbose=0, validation_split=0.25,
              callbacks=[scripted([1.0, 1.0, 1.0, 0.5, 0.6, 0.7]), rl])
    assert h.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.05, 0.025, 0.025, 0.02])
    assert m.optimizer.learning_rate == pytest.approx(0.02)


def test_learning_rate_scheduler_and_schedule_objects_in_fit():
    fg.set_seed(0)
    x, y = blobs()
    m = mlp(opt=fg.optimizers.SGD(0.1))
    h = m.fit(x, y, epochs=3, batch_size=40, verbose=0,
              callbacks=[C.LearningRateScheduler(lambda e, lr: 0.1 / (e + 1))])
    assert h.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.1 / 3])
    # an optimizer driven by a schedule sees step = iterations
    sched = schedules.PiecewiseConstantDecay([2], [0.5, 0.0])
    fg.set_seed(0)
    m = mlp(dropout=0.0, bn=False, opt=fg.optimizers.SGD(sched))
    m.fit(x, y, epochs=1, batch_size=40, verbose=0)            # 3 steps: lr 0.5, 0.5, 0.5 (step <= 2)
    w = m.get_weights()
    m.fit(x, y, epochs=1, batch_size=40, verbose=0)            # steps 3..5: lr 0 -> no change
    assert all(np.array_equal(a, b) for a, b in zip(w, m.get_weights()))
    assert m.optimizer.iterations == 6


def test_terminate_on_nan_stops_mid_epoch():
    x, y = blobs()
    m = mlp()
    seen = []

    def poison(batch, logs):
        seen.append(batch)
        if batch == 2:
            logs["loss"] = float("nan")

    h = m.fit(x, y, epochs=3, batch_size=10, verbose=0,
              callbacks=[C.LambdaCallback(on_train_batch_end=poison), C.TerminateOnNaN()])
    assert seen == [0, 1, 2] and len(h.epoch) == 1


def test_csv_logger_and_checkpoints_in_fit(tmp_path):
    fg.set_seed(0)
    x, y = blobs()
    m = mlp()
    path = tmp_path / "log.csv"
    snaps = {}
    record = C.LambdaCallback(on_epoch_end=lambda e, logs: snaps.setdefault(e, m.predict(x)))
    ck = C.ModelCheckpoint(str(tmp_path / "best.fgm"), monitor="val_accuracy", save_best_only=True)
    every = C.ModelCheckpoint(str(tmp_path / "e{epoch:02d}.fgm"))
    m.fit(x, y, epochs=4, batch_size=16, verbose=0, validation_split=0.25,
          callbacks=[scripted([0.5, 0.9, 0.7, 0.8], "val_accuracy"), record, C.CSVLogger(path), ck, every])
    rows = list(csv.DictReader(open(path)))
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"]
    assert set(rows[0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy"}
    assert [float(r["val_accuracy"]) for r in rows] == [0.5, 0.9, 0.7, 0.8]
    assert sorted(p.name for p in tmp_path.glob("e*.fgm")) == ["e01.fgm", "e02.fgm", "e03.fgm", "e04.fgm"]
    best = fg.models.load_model(tmp_path / "best.fgm")
    assert np.array_equal(best.predict(x), snaps[1])
    assert np.array_equal(fg.models.load_model(tmp_path / "e03.fgm").predict(x), snaps[2])


def test_progress_output_of_fit(capsys, monkeypatch):
    monkeypatch.setenv("FASTGRAD_PROGBAR_TTY", "0")
    x, y = blobs()
    m = mlp()
    m.fit(x, y, epochs=2, batch_size=16, verbose=1, validation_split=0.25)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Epoch 1/2" and out[2] == "Epoch 2/2" and len(out) == 4
    assert out[1].startswith("6/6 [==============================] - ")
    for k in ("loss: ", "accuracy: ", "val_loss: ", "val_accuracy: "):
        assert k in out[1]
    m.fit(x, y, epochs=2, batch_size=16, verbose=2)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and out[1].startswith("8/8 - ")
    m.fit(x, y, epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


def test_dropout_only_in_training(backend):
    fg.set_seed(0)
    x, y = blobs()
    m = mlp(dropout=0.5, bn=False)
    m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    p1 = m.predict(x)
    assert np.array_equal(p1, m.predict(x))                # inference is deterministic
    # train_on_batch twice from the same weights: different masks -> different updates
    w0 = m.get_weights()
    m.train_on_batch(x[:32], y[:32])
    w1 = m.get_weights()
    m.set_weights(w0)
    m.train_on_batch(x[:32], y[:32])
    assert not all(np.array_equal(a, b) for a, b in zip(w1, m.get_weights()))


def test_batchnorm_in_fit_updates_moving_stats_and_predicts_per_row(backend):
    fg.set_seed(0)
    x, y = blobs()
    x = x * 5 + 3
    m = mlp(dropout=0.0)
    bn = m.layers[1]
    mm0 = bn.state["moving_mean"].copy()
    m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert not np.array_equal(mm0, bn.state["moving_mean"])
    full = m.predict(x)
    one = np.concatenate([m.predict(x[i:i + 1]) for i in range(5)])
    np.testing.assert_allclose(one, full[:5], rtol=1e-5, atol=1e-6)   # moving stats, not batch stats
    w = m.get_weights()
    assert len(w) == 2 + 4 + 2


@pytest.mark.skipif(len(backends()) < 2, reason="native backend not built")
@pytest.mark.parametrize("layer", ["dropout", "batchnorm", "layernorm"])
def test_fit_bitwise_across_thread_counts(layer):
    x, y = blobs(n=200, d=33, seed=4)
    results = []
    for nt in (1, 2, 3):
        fg.set_num_threads(nt)
        with cfg.use_backend("native"):
            fg.set_seed(11)
            mid = {"dropout": fg.layers.Dropout(0.3), "batchnorm": fg.layers.BatchNormalization(),
                   "layernorm": fg.layers.LayerNormalization()}[layer]
            m = fg.Sequential([fg.layers.Dense(129, activation="relu", input_shape=(33,)), mid,
                               fg.layers.Dense(3, activation="softmax")])
            m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
            m.fit(x, y, epochs=2, batch_size=64, verbose=0)
            results.append(m.get_weights())
    for r in results[1:]:
        for a, b in zip(r, results[0]):
            assert np.array_equal(a, b)


@pytest.mark.skipif(len(backends()) < 2, reason="native backend not built")
def test_native_and_numpy_train_alike():
    x, y = blobs(n=200, d=10, seed=2)
    losses = []
    for name in ("numpy", "native"):
        with cfg.use_backend(name):
            fg.set_seed(3)
            m = fg.Sequential([fg.layers.Dense(32, activation="relu", input_shape=(10,)),
                               fg.layers.BatchNormalization(), fg.layers.Dropout(0.2),
                               fg.layers.Dense(16, activation="tanh"), fg.layers.LayerNormalization(),
                               fg.layers.Dense(3, activation="softmax")])
            m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
            h = m.fit(x, y, epochs=3, batch_size=32, verbose=0)
            losses.append(h.history["loss"])
    np.testing.assert_allclose(losses[0], losses[1], rtol=2e-3)


def test_digits_with_toolbox_reaches_high_accuracy():
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    r = np.random.default_rng(0).permutation(len(x))
    x, y = x[r], y[r]
    xtr, ytr, xte, yte = x[:1400], y[:1400], x[1400:], y[1400:]
    fg.set_seed(0)
    m = fg.Sequential([fg.layers.Dense(128, activation="relu", input_shape=(64,),
                                       kernel_regularizer=fg.regularizers.L2(1e-4)),
                       fg.layers.BatchNormalization(), fg.layers.Dropout(0.2),
                       fg.layers.Dense(64, activation="relu"), fg.layers.LayerNormalization(),
                       fg.layers.Dense(10, activation="softmax")])
    m.compile(optimizer=fg.optimizers.Adam(schedules.CosineDecay(3e-3, 400)),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    h = m.fit(xtr, ytr, epochs=15, batch_size=32, verbose=0, validation_split=0.1,
              callbacks=[C.EarlyStopping(monitor="val_accuracy", patience=5, restore_best_weights=True)])
    _, acc = m.evaluate(xte, yte, verbose=0)
    assert acc >= 0.93, (acc, h.history)


def test_example_script_runs(tmp_path, capsys):
    pytest.importorskip("sklearn")
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train_digits_toolbox.py"
    spec = importlib.util.spec_from_file_location("train_digits_toolbox", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([str(tmp_path), "--epochs", "3", "--verbose", "0", "--backend", cfg.get_backend()]) == 0
    out = capsys.readouterr().out
    assert "reloaded predictions identical: True" in out
    assert (tmp_path / "digits_mlp.fgm").exists() and (tmp_path / "training_log.csv").exists()
    try:
        import matplotlib  # noqa: F401
        assert (tmp_path / "history.png").read_bytes()[:4] == b"\x89PNG"
    except ImportError:
        pass
