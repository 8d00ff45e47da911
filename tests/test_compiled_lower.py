"""Losses, optimizers and metrics describe themselves to the compiled plan through
their public lower() (as layers do); engine/compiled.py imports none of their
modules, switches on none of their types and reads none of their private fields.
A user-defined optimizer / loss (or a built-in one whose rule a subclass
replaces) runs on the Python step, and unsupported_reason names it."""
import ast
import inspect
import re

import numpy as np
import pytest

import fastgrad as fg
from fastgrad.engine import compiled

from conftest import native_available

pytestmark = [
    pytest.mark.skipif(
        not native_available() or fg._native.module("step") is None,
        reason="native backend / step module not built"),
    pytest.mark.usefixtures("native_backend"),
]


class PlainSGD(fg.optimizers.Optimizer):
    """A user-defined optimizer: no lower()."""

    def _update(self, ops, p, g, slots, lr, wd):
        p -= np.float32(lr) * g


class HalfStepSGD(fg.optimizers.SGD):
    """Inherits SGD.lower but replaces its update rule."""

    def _update(self, ops, p, g, slots, lr, wd):
        p -= np.float32(lr / 2) * g


class AbsError(fg.losses.Loss):
    """A user-defined loss: no lower()."""

    def compute(self, ops, out, target, sample_weight, grad_out, logits):
        d = out - target
        grad_out[...] = np.sign(d) / d.size
        return float(np.abs(d).mean()), grad_out


class ScaledMSE(fg.losses.MeanSquaredError):
    """Inherits MeanSquaredError.lower but replaces compute."""

    def compute(self, ops, out, target, sample_weight, grad_out, logits):
        loss, g = super().compute(ops, out, target, sample_weight, grad_out, logits)
        grad_out *= 2
        return 2 * loss, grad_out


class MyAccuracy(fg.metrics.SparseCategoricalAccuracy):
    def update_state(self, y_true, y_pred, sample_weight=None):
        super().update_state(y_true, y_pred, sample_weight)


def _model(loss, optimizer, metrics=(), out=3, out_act=None):
    fg.set_seed(1)
    m = fg.Sequential([fg.layers.Dense(5, activation="relu", input_shape=(4,)),
                       fg.layers.Dense(out, activation=out_act)])
    m.compile(optimizer=optimizer, loss=loss, metrics=list(metrics))
    return m


def _data(n=37, out=3):
    r = np.random.default_rng(0)
    return (r.standard_normal((n, 4)).astype(np.float32),
            r.standard_normal((n, out)).astype(np.float32))


def _fit_runs_on_python(m, x, y):
    w0 = [w.copy() for w in m.get_weights()]
    h = m.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert compiled.train_plan(m) is None
    assert np.isfinite(h.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(w0, m.get_weights()))


@pytest.mark.parametrize("opt, name", [(PlainSGD, "PlainSGD"), (HalfStepSGD, "HalfStepSGD")])
def test_user_optimizer_without_c_path_runs_on_python(opt, name):
    m = _model("mse", opt(learning_rate=0.1))
    reason = compiled.unsupported_reason(m)
    assert reason is not None and name in reason and "optimizer" in reason
    _fit_runs_on_python(m, *_data())


@pytest.mark.parametrize("loss, name", [(AbsError, "AbsError"), (ScaledMSE, "ScaledMSE")])
def test_user_loss_without_c_path_runs_on_python(loss, name):
    m = _model(loss(), "sgd")
    reason = compiled.unsupported_reason(m)
    assert reason is not None and name in reason and "loss" in reason
    _fit_runs_on_python(m, *_data())


def test_builtins_lower_and_metric_subclass_goes_to_python():
    m = _model("sparse_categorical_crossentropy", "adam", ["accuracy"], out_act="softmax")
    assert compiled.unsupported_reason(m) is None
    assert not compiled.train_plan(m).py_metrics           # accuracy in C
    m2 = _model("sparse_categorical_crossentropy", "adam", [MyAccuracy()], out_act="softmax")
    assert compiled.unsupported_reason(m2) is None
    assert compiled.train_plan(m2).py_metrics               # its own update: in Python
    for opt in ("sgd", fg.optimizers.SGD(momentum=0.9, nesterov=True), "adam", "adamw",
                "rmsprop", fg.optimizers.RMSprop(momentum=0.5, centered=True), "adagrad"):
        assert compiled.unsupported_reason(_model("mse", opt)) is None, opt


def test_lower_context_codes_come_from_the_c_headers():
    mod = fg._native.module("step")
    ctx = compiled.LowerContext(mod, True, n_params=7)
    assert ctx.loss_code("mse") == mod.LOSSES["mse"]
    assert ctx.optimizer_code("adam") == mod.OPTIMIZERS["adam"]
    assert ctx.accuracy_code("binary") == mod.ACCURACY["binary"]
    with pytest.raises(compiled.NoCPath, match="adabelief"):
        ctx.optimizer_code("adabelief")
    with pytest.raises(compiled.NoCPath, match="Optimizer"):
        fg.optimizers.Optimizer().lower(ctx)
    with pytest.raises(compiled.NoCPath, match="Loss"):
        fg.losses.Loss().lower(ctx, False)
    assert fg.metrics.MeanAbsoluteError().lower(ctx, mod.LOSSES["mse"], None) is None
    opt = fg.optimizers.Adam()
    d = opt.lower(ctx)
    assert d["kind"] == mod.OPTIMIZERS["adam"] and d["s1"] is opt.slots["m"] and d["s1"].size == 7


def test_compiled_imports_no_face_floor_module_and_reads_no_private_field():
    src = inspect.getsource(compiled)
    banned = {"losses", "metrics", "optimizers"}
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ImportFrom):
            parts = set((node.module or "").split("."))
            names = {a.name.split(".")[0] for a in node.names}
            assert not (parts & banned) and not (names & banned), ast.dump(node)
        elif isinstance(node, ast.Import):
            for a in node.names:
                assert not set(a.name.split(".")) & banned, a.name
    # no private attribute of an optimizer / loss / metric object
    assert not re.search(r"\b(opt|optimizer|loss|losses|m|metric)\._[a-z]", src)
