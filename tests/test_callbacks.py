"""Callbacks against a scripted training loop: a fake model and a scripted
sequence of monitored values make every decision (stop epoch, restored
weights, learning-rate drops) deterministic and checkable by hand."""
import csv

import numpy as np
import pytest

from fastgrad import callbacks as C
from fastgrad.utils.progbar import Progbar


class FakeOpt:
    def __init__(self, lr=0.1):
        self.learning_rate = lr
        self.iterations = 0


class FakeModel:
    """What callbacks touch: stop_training, optimizer, get/set_weights, save."""

    def __init__(self, lr=0.1):
        self.stop_training = False
        self.optimizer = FakeOpt(lr)
        self.w = [np.zeros(3, np.float32)]
        self.saved = []
        self.saved_weights = []

    def get_weights(self):
        return [a.copy() for a in self.w]

    def set_weights(self, ws):
        self.w = [np.array(a, copy=True) for a in ws]

    def save(self, path):
        with open(path, "w") as f:
            f.write("model")
        self.saved.append(path)

    def save_weights(self, path):
        with open(path, "w") as f:
            f.write("weights")
        self.saved_weights.append(path)


def run(callbacks, seq, model=None, key="val_loss", steps=3, extra=None, params=None):
    """Keras-ordered fake fit: epoch e sets the weights to e and logs seq[e]."""
    model = model or FakeModel()
    p = dict(verbose=0, epochs=len(seq), steps=steps)
    p.update(params or {})
    cbs = C.CallbackList(callbacks, add_history=True, model=model, **p)
    model.stop_training = False
    cbs.on_train_begin()
    for epoch, v in enumerate(seq):
        cbs.on_epoch_begin(epoch)
        for b in range(steps):
            cbs.on_train_batch_begin(b)
            cbs.on_train_batch_end(b, {"loss": 1.0 / (b + 1)})
        model.w = [np.full(3, epoch, np.float32)]
        logs = {"loss": 2.0 * v if not isinstance(v, str) else v, key: v}
        if extra:
            logs.update(extra(epoch))
        cbs.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    cbs.on_train_end()
    return model, cbs.history


# ====================================================================== EarlyStopping
def test_early_stopping_stops_after_patience_and_restores_best():
    es = C.EarlyStopping(patience=2, restore_best_weights=True)
    model, hist = run([es], [1.0, 0.9, 0.95, 0.96, 0.97, 0.5])
    assert hist.epoch == [0, 1, 2, 3]          # epoch 3 is the 2nd without improvement
    assert es.stopped_epoch == 3
    assert es.best == 0.9 and es.best_epoch == 1
    assert np.array_equal(model.w[0], np.full(3, 1.0))   # weights of the best epoch


def test_early_stopping_without_restore_keeps_last_weights():
    es = C.EarlyStopping(patience=1)
    model, hist = run([es], [1.0, 0.8, 0.9, 0.7])
    assert hist.epoch == [0, 1, 2]
    assert np.array_equal(model.w[0], np.full(3, 2.0))


def test_early_stopping_patience_zero_and_min_delta():
    es = C.EarlyStopping(patience=0)
    _, hist = run([es], [1.0, 0.9, 0.95, 0.1])
    assert hist.epoch == [0, 1, 2]
    # improvements of at most min_delta do not count
    es = C.EarlyStopping(patience=1, min_delta=0.1)
    _, hist = run([es], [1.0, 0.95, 0.91, 0.5])
    assert hist.epoch == [0, 1]
    assert es.best == 1.0


def test_early_stopping_max_mode_auto_for_accuracy():
    es = C.EarlyStopping(monitor="val_accuracy", patience=1, restore_best_weights=True)
    model, hist = run([es], [0.5, 0.7, 0.6, 0.9], key="val_accuracy")
    assert hist.epoch == [0, 1, 2]
    assert es.best == 0.7
    assert np.array_equal(model.w[0], np.full(3, 1.0))
    es = C.EarlyStopping(monitor="score", mode="max", patience=0)
    _, hist = run([es], [1, 2, 3, 2.5, 4], key="score")
    assert hist.epoch == [0, 1, 2, 3]


def test_early_stopping_baseline_and_start_from_epoch():
    es = C.EarlyStopping(patience=2, baseline=0.5)
    _, hist = run([es], [1.0, 1.1, 1.2, 0.1])
    assert hist.epoch == [0, 1]                 # never beat the baseline
    es = C.EarlyStopping(patience=0, start_from_epoch=2)
    _, hist = run([es], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert hist.epoch == [0, 1, 2, 3]           # epochs 0, 1 are ignored; 3 does not improve on 2


def test_early_stopping_missing_monitor_warns_when_unknown():
    es = C.EarlyStopping(patience=0)
    with pytest.warns(RuntimeWarning, match="val_loss.*not available"):
        _, hist = run([es], [1.0, 2.0, 3.0], key="other")
    assert hist.epoch == [0, 1, 2]


def test_early_stopping_monitor_that_can_never_appear_is_an_error():
    es = C.EarlyStopping()
    with pytest.raises(ValueError, match="val_loss.*never be logged.*validation_data"):
        run([es], [1.0], params=dict(metrics=["loss", "accuracy"], do_validation=False))
    es = C.EarlyStopping(monitor="val_acc")
    with pytest.raises(ValueError, match="val_acc.*never be logged"):
        run([es], [1.0], params=dict(metrics=["loss", "accuracy", "val_loss", "val_accuracy"]))
    es = C.EarlyStopping(monitor="weird_thing")
    with pytest.raises(ValueError, match="minimised or maximised.*mode="):
        run([es], [1.0], key="weird_thing")


@pytest.mark.parametrize("kwargs, match", [
    (dict(patience=-1), "patience"), (dict(patience=1.5), "patience"), (dict(mode="bogus"), "mode"),
    (dict(start_from_epoch=-1), "start_from_epoch"), (dict(min_delta=float("nan")), "min_delta"),
    (dict(monitor=""), "monitor"),
])
def test_early_stopping_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        C.EarlyStopping(**kwargs)


# ====================================================================== ReduceLROnPlateau
def test_reduce_lr_on_plateau_patience_and_cooldown():
    rl = C.ReduceLROnPlateau(factor=0.5, patience=2, cooldown=2, min_delta=0.0)
    model, hist = run([rl], [1.0] * 8)
    # reductions at epochs 2 and 5 (cooldown 2 eats two epochs of waiting), 8 would be next
    assert hist.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025])
    assert model.optimizer.learning_rate == pytest.approx(0.025)


def test_reduce_lr_on_plateau_improvement_resets_and_min_lr():
    rl = C.ReduceLROnPlateau(factor=0.1, patience=1, min_lr=0.002)
    model, hist = run([rl], [1.0, 0.5, 0.5, 0.4, 0.4, 0.4, 0.4])
    assert hist.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 0.002, 0.002])
    assert model.optimizer.learning_rate == pytest.approx(0.002)
    # min_delta: 0.4 -> 0.39995 is not an improvement at the default 1e-4
    rl = C.ReduceLROnPlateau(factor=0.5, patience=1)
    model, _ = run([rl], [0.4, 0.39995])
    assert model.optimizer.learning_rate == pytest.approx(0.05)


def test_reduce_lr_on_plateau_max_mode():
    rl = C.ReduceLROnPlateau(monitor="val_accuracy", factor=0.5, patience=1)
    model, _ = run([rl], [0.5, 0.6, 0.6], key="val_accuracy")
    assert model.optimizer.learning_rate == pytest.approx(0.05)


@pytest.mark.parametrize("kwargs, match", [
    (dict(factor=1.0), "factor"), (dict(factor=1.5), "factor"), (dict(factor=0.0), "factor"),
    (dict(factor=-0.5), "factor"), (dict(patience=-1), "patience"), (dict(cooldown=-1), "cooldown"),
    (dict(min_lr=-1.0), "min_lr"), (dict(mode="up"), "mode"),
])
def test_reduce_lr_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        C.ReduceLROnPlateau(**kwargs)


def test_reduce_lr_needs_float_learning_rate():
    m = FakeModel()
    m.optimizer.learning_rate = lambda step: 0.1
    with pytest.raises(TypeError, match="schedule"):
        run([C.ReduceLROnPlateau()], [1.0], model=m)


# ====================================================================== LearningRateScheduler
def test_learning_rate_scheduler(capsys):
    seen = []

    def sched(epoch, lr):
        seen.append((epoch, lr))
        return lr * 0.5 if epoch > 0 else lr

    model, hist = run([C.LearningRateScheduler(sched, verbose=1)], [1.0, 1.0, 1.0])
    assert seen == [(0, 0.1), (1, 0.1), (2, 0.05)]
    assert hist.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.025])
    assert "LearningRateScheduler setting learning rate to 0.025" in capsys.readouterr().out
    model, _ = run([C.LearningRateScheduler(lambda epoch: 0.01 * (epoch + 1))], [1.0, 1.0])
    assert model.optimizer.learning_rate == pytest.approx(0.02)
    with pytest.raises(ValueError, match="must return a float"):
        run([C.LearningRateScheduler(lambda e, lr: "fast")], [1.0])
    with pytest.raises(ValueError, match="invalid learning rate"):
        run([C.LearningRateScheduler(lambda e, lr: -1.0)], [1.0])
    with pytest.raises(TypeError, match="callable"):
        C.LearningRateScheduler(0.1)


# ====================================================================== CSVLogger
def test_csv_logger(tmp_path):
    path = tmp_path / "log.csv"
    run([C.CSVLogger(str(path))], [1.0, 0.5, 0.25], extra=lambda e: {"accuracy": 0.5 + e / 10})
    rows = list(csv.reader(open(path)))
    assert rows[0] == ["epoch", "accuracy", "loss", "val_loss"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    assert float(rows[2][1]) == pytest.approx(0.6) and float(rows[3][3]) == 0.25
    # append: no second header
    run([C.CSVLogger(path, append=True)], [0.1], extra=lambda e: {"accuracy": 0.9})
    rows = list(csv.reader(open(path)))
    assert len(rows) == 5 and rows[0][0] == "epoch" and rows[4][0] == "0"
    # overwrite + separator
    run([C.CSVLogger(path, separator=";")], [0.3])
    lines = open(path).read().splitlines()
    assert lines == ["epoch;loss;val_loss", "0;0.6;0.3"]


def test_csv_logger_validation_freq_columns(tmp_path):
    path = tmp_path / "v.csv"
    cb = C.CSVLogger(path)
    m = FakeModel()
    cbs = C.CallbackList([cb], model=m, epochs=2, steps=1, do_validation=True)
    cbs.on_train_begin()
    cbs.on_epoch_end(0, {"loss": 1.0})                    # validation_freq=2: no val_* yet
    cbs.on_epoch_end(1, {"loss": 0.5, "val_loss": 0.7})
    cbs.on_train_end()
    assert open(path).read().splitlines() == ["epoch,loss,val_loss", "0,1.0,NA", "1,0.5,0.7"]
    with pytest.raises(ValueError, match="separator"):
        C.CSVLogger(path, separator=",,")


# ====================================================================== TerminateOnNaN
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), np.float32("-inf")])
def test_terminate_on_nan(bad, capsys):
    m = FakeModel()
    cbs = C.CallbackList([C.TerminateOnNaN()], model=m)
    cbs.on_train_batch_end(0, {"loss": 0.3})
    assert not m.stop_training
    cbs.on_train_batch_end(1, {"loss": bad})
    assert m.stop_training
    assert "Batch 1: Invalid loss, terminating training" in capsys.readouterr().out


# ====================================================================== LambdaCallback, CallbackList
def test_lambda_callback_and_hook_order():
    events = []
    lc = C.LambdaCallback(on_train_begin=lambda logs: events.append("train_begin"),
                          on_epoch_begin=lambda e, logs: events.append(f"epoch_begin {e}"),
                          on_train_batch_end=lambda b, logs: events.append(f"batch_end {b}"),
                          on_epoch_end=lambda e, logs: events.append(f"epoch_end {e} {sorted(logs)}"),
                          on_train_end=lambda logs: events.append("train_end"),
                          on_test_begin=lambda logs: events.append("test_begin"))
    run([lc], [1.0, 2.0], steps=2)
    assert events == ["train_begin", "epoch_begin 0", "batch_end 0", "batch_end 1",
                      "epoch_end 0 ['loss', 'val_loss']", "epoch_begin 1", "batch_end 0", "batch_end 1",
                      "epoch_end 1 ['loss', 'val_loss']", "train_end"]
    with pytest.raises(TypeError, match="unknown hook 'on_whatever'"):
        C.LambdaCallback(on_whatever=print)
    with pytest.raises(TypeError, match="callable"):
        C.LambdaCallback(on_epoch_end=3)


def test_callback_list_batch_hooks_only_call_overriders():
    calls = []

    class Old(C.Callback):          # Keras-2 style name for the training batch hook
        def on_batch_end(self, batch, logs=None):
            calls.append(("old", batch))

    class Quiet(C.Callback):
        pass

    cbs = C.CallbackList([Old(), Quiet()], add_history=True)
    assert cbs.has_batch_hooks("train") and not cbs.has_batch_hooks("test")
    cbs.on_train_batch_end(4, {})
    cbs.on_test_batch_end(4, {})
    assert calls == [("old", 4)]
    assert isinstance(cbs.history, C.History) and len(cbs) == 3
    with pytest.raises(TypeError, match="Callback instances"):
        C.CallbackList([print])
    # params and model reach every callback, also one appended later
    m = FakeModel()
    q = Quiet()
    cbs = C.CallbackList([], model=m, epochs=3)
    cbs.append(q)
    assert q.model is m and q.params["epochs"] == 3


# ====================================================================== ModelCheckpoint
def test_model_checkpoint_formats_and_best_only(tmp_path):
    pattern = str(tmp_path / "ck-{epoch:02d}-{val_loss:.2f}.fgm")
    mc = C.ModelCheckpoint(pattern)
    model, _ = run([mc], [1.0, 0.5])
    assert [p.split("/")[-1] for p in model.saved] == ["ck-01-1.00.fgm", "ck-02-0.50.fgm"]
    best = str(tmp_path / "sub" / "best.fgm")
    mc = C.ModelCheckpoint(best, save_best_only=True, verbose=1)
    model, _ = run([mc], [1.0, 1.2, 0.8, 0.9])
    assert len(model.saved) == 2 and mc.best == 0.8
    mc = C.ModelCheckpoint(str(tmp_path / "w.fgw"), save_weights_only=True, monitor="val_acc", mode="max",
                           save_best_only=True)
    model, _ = run([mc], [0.1, 0.3, 0.2], key="val_acc")
    assert len(model.saved_weights) == 2 and not model.saved
    mc = C.ModelCheckpoint(str(tmp_path / "b-{epoch}-{batch}.fgm"), save_freq=2)
    model, _ = run([mc], [1.0, 1.0], steps=3)
    assert [p.split("/")[-1] for p in model.saved] == ["b-1-2.fgm", "b-2-1.fgm", "b-2-3.fgm"]


def test_model_checkpoint_errors(tmp_path):
    mc = C.ModelCheckpoint(str(tmp_path / "{nope:.2f}.fgm"))
    with pytest.raises(ValueError, match="failed to format filepath"):
        run([mc], [1.0])
    with pytest.raises(ValueError, match="mode"):
        C.ModelCheckpoint("x", mode="best")
    with pytest.raises(ValueError, match="save_freq"):
        C.ModelCheckpoint("x", save_freq=0)
    with pytest.raises(TypeError, match="filepath"):
        C.ModelCheckpoint(3)


# ====================================================================== History
def test_history_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    _, hist = run([], [1.0, 0.5, 0.4], extra=lambda e: {"accuracy": 0.1 * e, "val_accuracy": 0.1 * e + 0.05})
    assert hist.history["val_loss"] == [1.0, 0.5, 0.4] and hist.epoch == [0, 1, 2]
    png = tmp_path / "h.png"
    fig = hist.plot(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy"]
    assert len(fig.axes[0].get_lines()) == 2           # training + validation
    fig = hist.plot(tmp_path / "a.png", metrics="accuracy")
    assert [ax.get_title() for ax in fig.axes] == ["accuracy"]
    with pytest.raises(ValueError, match="no recorded values for \\['auc'\\]"):
        hist.plot(tmp_path / "x.png", metrics=["auc"])


def test_history_plot_without_matplotlib(monkeypatch, tmp_path):
    import sys
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    _, hist = run([], [1.0])
    with pytest.raises(ImportError, match="pip install matplotlib"):
        hist.plot(tmp_path / "h.png")


# ====================================================================== progress bar
def test_progbar_logger_verbose1_non_tty(capsys, monkeypatch):
    monkeypatch.setenv("FASTGRAD_PROGBAR_TTY", "0")
    run([C.ProgbarLogger()], [0.5, 0.25], steps=4, params=dict(verbose=1),
        extra=lambda e: {"accuracy": 0.75})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Epoch 1/2"
    assert out[1].startswith("4/4 [==============================] - ")
    assert "ms/step" in out[1] or "us/step" in out[1]
    assert out[1].endswith("- loss: 1.0000 - val_loss: 0.5000 - accuracy: 0.7500")
    assert out[2] == "Epoch 2/2" and len(out) == 4          # no per-batch lines off a TTY


def test_progbar_logger_verbose2_one_line_per_epoch(capsys):
    run([], [0.5, 0.25, 0.2], steps=5, params=dict(verbose=2))       # no progbar requested
    assert capsys.readouterr().out == ""
    run([C.ProgbarLogger()], [0.5, 0.25, 0.2], steps=5, params=dict(verbose=2))
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 6 and out[1].startswith("5/5 - ") and "loss: " in out[1]


def test_progbar_tty_redraw_is_throttled(monkeypatch):
    """A fake clock advancing 1 ms per reading: with interval 0.05 s the bar
    may redraw at most once per 50 readings, whatever the machine's speed.
    (What a non-drawing update costs is measured in benchmarks/bench_train.py,
    not asserted here.)"""
    import io
    from fastgrad.utils import progbar as pb
    clock = {"t": 1000.0}

    def fake_monotonic():
        clock["t"] += 1e-3
        return clock["t"]
    monkeypatch.setattr(pb.time, "monotonic", fake_monotonic)
    monkeypatch.setenv("FASTGRAD_PROGBAR_TTY", "1")
    buf = io.StringIO()
    bar = Progbar(target=20000, stream=buf, interval=0.05, stateful_metrics=True)
    for i in range(1, 20000):
        bar.update(i, [("loss", 1.0 / i)])
    readings = (clock["t"] - 1000.0) / 1e-3
    bar.update(20000, [("loss", 0.5)])
    text = buf.getvalue()
    draws = text.count("\r")
    assert 2 <= draws <= 2 + readings / 50 + 1        # first draw, time-throttled ones, final
    assert draws < 20000 / 10                         # most updates did not draw
    assert "ETA: " in text and "elapsed" in text
    assert text.endswith("\n") and text.rstrip(" \n").endswith("- loss: 0.5000") and "20000/20000 [" in text


def test_progbar_averages_non_stateful_values():
    import io
    bar = Progbar(target=4, stream=io.StringIO(), verbose=2)
    bar.update(2, [("loss", 1.0)])
    bar.update(4, [("loss", 3.0)])
    assert "loss: 2.0000" in bar.stream.getvalue()
    with pytest.raises(ValueError, match="verbose"):
        Progbar(3, verbose=3)


def test_progbar_logger_in_evaluate_and_unknown_target(capsys, monkeypatch):
    monkeypatch.setenv("FASTGRAD_PROGBAR_TTY", "0")
    m = FakeModel()
    cbs = C.CallbackList([], add_progbar=True, model=m, verbose=1, epochs=1, steps=None)
    cbs.on_test_begin()
    for b in range(3):
        cbs.on_test_batch_end(b, {"loss": 0.5})
    cbs.on_test_end({"loss": 0.5, "accuracy": 1.0})
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("3/3 [") and out[0].endswith("loss: 0.5000 - accuracy: 1.0000")
