"""The compiled executor (csrc/step, fastgrad.engine.compiled) against the
reference Python step: same parameters after training (float32 tolerance),
bitwise reproducible for a seed and any thread count, same predictions;
plus the edges (partial / oversized / single-row batches, NaN loss, frozen
layers, regularizers, clipping, schedules, dropout), steady-state memory and
the fallback for models without a C path.

The reference run is `model.fit` with the compiled path switched off
(`compiled.enabled = False`); the compiled run is `model.fit` driving the
plan's executor interface (asserting the model has a plan). Tests of the
public API through the hook are at the end.
"""
import inspect
import tracemalloc

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _config
from fastgrad.engine import compiled

from conftest import compiled_enabled, native_available

pytestmark = [
    pytest.mark.skipif(
        not native_available() or fg._native.module("step") is None,
        reason="native backend / step module not built"),
    pytest.mark.usefixtures("native_backend"),
]


def _data(n=103, d=12, classes=4, kind="sparse", seed=0):
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, d)).astype(np.float32)
    if kind == "sparse":
        y = r.integers(0, classes, n).astype(np.int64)
    elif kind == "onehot":
        y = np.eye(classes, dtype=np.float32)[r.integers(0, classes, n)]
    elif kind == "binary":
        y = (r.random((n, classes)) > 0.5).astype(np.float32)
    else:
        y = r.standard_normal((n, classes)).astype(np.float32)
    return x, y


def _model(layers, loss, optimizer, metrics=None, seed=3, weighted_metrics=None):
    fg.set_seed(seed)
    m = fg.Sequential(layers())
    m.compile(optimizer=optimizer() if callable(optimizer) else optimizer, loss=loss,
              metrics=metrics or [], weighted_metrics=weighted_metrics)
    return m


def _python_fit(model, x, y, epochs=2, batch_size=16, shuffle=True, sample_weight=None,
                class_weight=None):
    with compiled_enabled(False):
        h = model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=shuffle, verbose=0,
                      sample_weight=sample_weight, class_weight=class_weight)
    return h.history


def _compiled_fit(model, x, y, epochs=2, batch_size=16, shuffle=True, sample_weight=None,
                  class_weight=None):
    """model.fit on the compiled plan (the model must have one)."""
    with compiled_enabled(True):
        h = model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=shuffle, verbose=0,
                      sample_weight=sample_weight, class_weight=class_weight)
        plan = model.__dict__.get("_fg_train_plan", (None, None))[1]
        assert plan is not None, compiled.unsupported_reason(model)
    return h.history


def _data_of(model, x, y, sw=None):
    """The validated ArrayData the model's loop hands an executor."""
    from fastgrad.engine.data import ArrayData
    xa, ya, swa = model._prepare_xy(x, y, sw, None, "fit")
    model._resolve_metrics()
    model.optimizer.build(model._store.size)
    return ArrayData([xa], [ya], [swa])


def _pair(layers, loss, optimizer, kind, metrics=None, fit_kw=None, data_kw=None, seed=3):
    fit_kw = fit_kw or {}
    x, y = _data(kind=kind, **(data_kw or {}))
    fg.set_seed(11)
    ref = _model(layers, loss, optimizer, metrics, seed)
    fg.set_seed(11)
    h_ref = _python_fit(ref, x, y, **fit_kw)
    fg.set_seed(11)
    com = _model(layers, loss, optimizer, metrics, seed)
    fg.set_seed(11)
    h_com = _compiled_fit(com, x, y, **fit_kw)
    return ref, com, h_ref, h_com


def _assert_close(ref, com, rtol=2e-4, atol=2e-5):
    for a, b, name in zip(ref.get_weights(), com.get_weights(), ref._store.weight_names()):
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol, err_msg=name)
    # and training moved the parameters at all (a test that can fail)
    assert ref.optimizer.iterations == com.optimizer.iterations > 0


D = fg.layers.Dense


def _mlp(act="relu", out_act="softmax", out=4, d=12, hidden=9):
    return lambda: [D(hidden, activation=act, input_shape=(d,)), D(7, activation=act),
                    D(out, activation=out_act)]


# ---------------------------------------------------------------- parity
@pytest.mark.parametrize("act", ["linear", "relu", "sigmoid", "tanh", "gelu", "gelu_tanh"])
def test_activations_match_python(act):
    ref, com, h_ref, h_com = _pair(_mlp(act), "sparse_categorical_crossentropy", "adam", "sparse",
                                   metrics=["accuracy"])
    _assert_close(ref, com)
    np.testing.assert_allclose(h_com["loss"], h_ref["loss"], rtol=1e-5)
    np.testing.assert_allclose(h_com["accuracy"], h_ref["accuracy"], atol=1e-12)


@pytest.mark.parametrize("loss,out_act,kind,metric", [
    ("sparse_categorical_crossentropy", "softmax", "sparse", "accuracy"),
    (fg.losses.SparseCategoricalCrossentropy(from_logits=True), "linear", "sparse", "accuracy"),
    ("categorical_crossentropy", "softmax", "onehot", "accuracy"),
    (fg.losses.CategoricalCrossentropy(from_logits=True), "linear", "onehot", None),
    ("binary_crossentropy", "sigmoid", "binary", "accuracy"),
    (fg.losses.BinaryCrossentropy(from_logits=True), "linear", "binary", "accuracy"),
    ("mse", "linear", "real", None),
    ("mse", "tanh", "real", None),
    ("mse", "softmax", "onehot", "accuracy"),        # softmax trained through (not fused)
])
def test_losses_match_python(loss, out_act, kind, metric):
    ref, com, h_ref, h_com = _pair(_mlp("relu", out_act), loss, "adam", kind,
                                   metrics=[metric] if metric else None)
    _assert_close(ref, com)
    np.testing.assert_allclose(h_com["loss"], h_ref["loss"], rtol=1e-5)
    for k in h_ref:
        np.testing.assert_allclose(h_com[k], h_ref[k], rtol=1e-5, atol=1e-12, err_msg=k)


OPTIMIZERS = {
    "sgd": lambda: fg.optimizers.SGD(0.05),
    "sgd_momentum": lambda: fg.optimizers.SGD(0.05, momentum=0.9),
    "sgd_nesterov_wd": lambda: fg.optimizers.SGD(0.05, momentum=0.8, nesterov=True, weight_decay=0.01),
    "adam": lambda: fg.optimizers.Adam(0.01),
    "adamw": lambda: fg.optimizers.AdamW(0.01, weight_decay=0.05),
    "rmsprop": lambda: fg.optimizers.RMSprop(0.005),
    "rmsprop_centered_momentum": lambda: fg.optimizers.RMSprop(0.005, momentum=0.5, centered=True),
    "adagrad": lambda: fg.optimizers.Adagrad(0.05),
    "adam_clipnorm": lambda: fg.optimizers.Adam(0.01, clipnorm=0.05),
    "adam_global_clipnorm": lambda: fg.optimizers.Adam(0.01, global_clipnorm=0.1),
    "sgd_clipvalue": lambda: fg.optimizers.SGD(0.05, clipvalue=0.01),
    "adam_schedule": lambda: fg.optimizers.Adam(
        fg.optimizers.schedules.ExponentialDecay(0.01, decay_steps=3, decay_rate=0.5)),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizers_match_python(name):
    ref, com, _, _ = _pair(_mlp("tanh"), "sparse_categorical_crossentropy", OPTIMIZERS[name],
                           "sparse")
    _assert_close(ref, com)


def test_regularizers_and_frozen_layer_match_python():
    def layers():
        return [D(9, activation="relu", input_shape=(12,), kernel_regularizer=fg.regularizers.L2(0.01),
                  bias_regularizer=fg.regularizers.L1(0.02)),
                D(7, activation="relu", kernel_regularizer=fg.regularizers.L1L2(0.01, 0.02)),
                D(4, activation="softmax")]

    x, y = _data()
    runs = []
    for execute in (_python_fit, _compiled_fit):
        fg.set_seed(11)
        m = _model(layers, "sparse_categorical_crossentropy", lambda: fg.optimizers.Adam(0.01))
        m.layers[1].trainable = False
        m.refresh_trainable()
        frozen_before = m.layers[1].get_weights()
        fg.set_seed(11)
        h = execute(m, x, y)
        for a, b in zip(frozen_before, m.layers[1].get_weights()):
            np.testing.assert_array_equal(a, b)      # frozen layer untouched
        runs.append((m, h))
    (ref, h_ref), (com, h_com) = runs
    _assert_close(ref, com)
    np.testing.assert_allclose(h_com["loss"], h_ref["loss"], rtol=1e-5)


LN = fg.layers.LayerNormalization


@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False), (False, False)])
@pytest.mark.parametrize("opt", ["adam", "sgd_clipnorm"])
def test_layernorm_matches_python(center, scale, opt):
    """LayerNormalization runs inside the compiled step (fg_layernorm_* kernels,
    statistics kept per batch): same training as the Python step, including
    gamma/beta regularizers, per-tensor clipping and a LayerNorm right after
    the input (its dx is not needed)."""
    reg = fg.regularizers.L2(0.01)

    def layers():
        return [LN(center=center, scale=scale, input_shape=(12,), epsilon=1e-3),
                D(9, activation="relu"),
                LN(center=center, scale=scale, gamma_regularizer=reg, beta_regularizer=reg, epsilon=1e-5),
                D(4, activation="softmax")]

    optimizer = (lambda: fg.optimizers.Adam(0.01)) if opt == "adam" else (
        lambda: fg.optimizers.SGD(0.05, clipnorm=0.05))
    ref, com, h_ref, h_com = _pair(layers, "sparse_categorical_crossentropy", optimizer, "sparse",
                                   metrics=["accuracy"])
    assert compiled.unsupported_reason(com) is None
    _assert_close(ref, com)
    np.testing.assert_allclose(h_com["loss"], h_ref["loss"], rtol=1e-5)
    if scale:   # gamma moved away from its initial ones
        assert not np.allclose(com.layers[2].get_weights()[0], 1.0)
    x, _ = _data(n=300)
    with compiled_enabled(False):
        p_ref = ref.predict(x)
    np.testing.assert_allclose(com.predict(x), p_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(com.predict_on_batch(x[:3]), p_ref[:3], rtol=1e-5, atol=1e-6)


def test_layernorm_frozen_and_thread_invariant():
    def layers():
        return [D(9, activation="tanh", input_shape=(12,)), LN(), D(4, activation="softmax")]

    x, y = _data()
    runs = []
    for execute in (_python_fit, _compiled_fit):
        fg.set_seed(11)
        m = _model(layers, "sparse_categorical_crossentropy", lambda: fg.optimizers.Adam(0.01))
        m.layers[1].trainable = False
        m.refresh_trainable()
        before = m.layers[1].get_weights()
        fg.set_seed(11)
        execute(m, x, y)
        for a, b in zip(before, m.layers[1].get_weights()):
            np.testing.assert_array_equal(a, b)
        runs.append(m)
    _assert_close(*runs)
    bits = []
    for t in (1, 2, 3):
        _config.set_num_threads(t)
        try:
            fg.set_seed(11)
            m = _model(layers, "sparse_categorical_crossentropy", lambda: fg.optimizers.Adam(0.01))
            fg.set_seed(11)
            _compiled_fit(m, x, y)
            bits.append(m.get_weights())
        finally:
            _config.set_num_threads(None)
    for w in bits[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(bits[0], w))


BN = fg.layers.BatchNormalization


@pytest.mark.parametrize("center,scale", [(True, True), (False, False)])
@pytest.mark.parametrize("opt", ["adam", "sgd_clipnorm"])
def test_batchnorm_matches_python(center, scale, opt):
    """BatchNormalization (2-D input) runs inside the compiled step: batch
    statistics in training, moving statistics updated in float32 in the
    Python layer's order (so they come out bitwise equal), moving statistics
    in evaluate / predict; regularized gamma/beta and per-tensor clipping."""
    reg = fg.regularizers.L1L2(0.01, 0.02)

    def layers():
        return [BN(center=center, scale=scale, input_shape=(12,), momentum=0.9),
                D(9, activation="relu"),
                BN(center=center, scale=scale, gamma_regularizer=reg, beta_regularizer=reg, epsilon=1e-5),
                D(4, activation="softmax")]

    optimizer = (lambda: fg.optimizers.Adam(0.01)) if opt == "adam" else (
        lambda: fg.optimizers.SGD(0.05, clipnorm=0.05))
    ref, com, h_ref, h_com = _pair(layers, "sparse_categorical_crossentropy", optimizer, "sparse",
                                   metrics=["accuracy"], fit_kw=dict(batch_size=16))
    assert compiled.unsupported_reason(com) is None
    _assert_close(ref, com)
    np.testing.assert_allclose(h_com["loss"], h_ref["loss"], rtol=1e-5)
    for lr_, lc in zip(ref.layers[::2], com.layers[::2]):
        # moving statistics moved, and equal to the Python path's
        assert not np.allclose(lc.state["moving_mean"], 0.0)
        np.testing.assert_allclose(lc.state["moving_mean"], lr_.state["moving_mean"], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(lc.state["moving_variance"], lr_.state["moving_variance"],
                                   rtol=1e-4, atol=1e-6)
    x, y = _data(n=300)
    with compiled_enabled(False):
        p_ref = ref.predict(x)
        e_ref = ref.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(com.predict(x), p_ref, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(com.predict_on_batch(x[:3]), p_ref[:3], rtol=1e-4, atol=1e-6)
    e_com = com.evaluate(x, y, verbose=0, return_dict=True)
    assert e_com["loss"] == pytest.approx(e_ref["loss"], rel=1e-5)


def test_batchnorm_same_weights_same_bits_and_frozen():
    """From identical weights, one compiled and one Python step give the same
    bits for the moving statistics; a frozen BatchNorm uses its moving
    statistics in training (Keras) and keeps every weight and statistic."""
    def layers():
        return [D(9, activation="tanh", input_shape=(12,)), BN(momentum=0.8), D(4, activation="softmax")]

    x, y = _data(n=64)
    ms = []
    for execute in (_python_fit, _compiled_fit):
        fg.set_seed(11)
        m = _model(layers, "sparse_categorical_crossentropy", lambda: fg.optimizers.SGD(0.1))
        fg.set_seed(11)
        execute(m, x, y, epochs=1, batch_size=64, shuffle=False)
        ms.append(m)
    ref, com = ms
    assert np.array_equal(ref.layers[1].state["moving_mean"], com.layers[1].state["moving_mean"])
    assert np.array_equal(ref.layers[1].state["moving_variance"], com.layers[1].state["moving_variance"])
    runs = []
    for execute in (_python_fit, _compiled_fit):
        fg.set_seed(11)
        m = _model(layers, "sparse_categorical_crossentropy", lambda: fg.optimizers.Adam(0.01))
        m.layers[1].trainable = False
        m.refresh_trainable()
        before = m.layers[1].get_weights()
        fg.set_seed(11)
        execute(m, x, y)
        for a, b in zip(before, m.layers[1].get_weights()):
            np.testing.assert_array_equal(a, b)
        runs.append(m)
    _assert_close(*runs)


def test_batchnorm_of_a_feature_axis_falls_back():
    m = _model(lambda: [BN(axis=1, input_shape=(3, 4)), fg.layers.Flatten(), D(2)], "mse", "adam")
    assert "BatchNormalization" in compiled.unsupported_reason(m)


def test_layernorm_over_part_of_the_sample_falls_back():
    m = _model(lambda: [LN(axis=-1, input_shape=(3, 4)), fg.layers.Flatten(), D(2)], "mse", "adam")
    assert "part of each sample" in compiled.unsupported_reason(m)


@pytest.mark.parametrize("fit_kw,n", [
    (dict(batch_size=32, shuffle=True), 103),     # partial last batch
    (dict(batch_size=32, shuffle=False), 103),
    (dict(batch_size=500, shuffle=True), 103),    # batch larger than the dataset
    (dict(batch_size=1, shuffle=True, epochs=1), 40),
    (dict(batch_size=8, shuffle=False, epochs=1), 8),
])
def test_batching_edges_match_python(fit_kw, n):
    ref, com, h_ref, h_com = _pair(_mlp("relu"), "sparse_categorical_crossentropy", "adam",
                                   "sparse", fit_kw=fit_kw, data_kw=dict(n=n))
    _assert_close(ref, com)
    np.testing.assert_allclose(h_com["loss"], h_ref["loss"], rtol=1e-5)


@pytest.mark.parametrize("mkw", [dict(metrics=["accuracy"]), dict(weighted_metrics=["accuracy"])])
def test_sample_and_class_weights_match_python(mkw):
    # metrics= (unweighted) and weighted_metrics= (weighted) accuracy: C step == Python step
    x, y = _data(kind="sparse")
    sw = np.random.default_rng(5).random(x.shape[0]).astype(np.float32)
    for kw in (dict(sample_weight=sw), dict(class_weight={0: 2.0, 1: 0.5, 3: 1.5})):
        fg.set_seed(11)
        ref = _model(_mlp(), "sparse_categorical_crossentropy", "adam", **mkw)
        fg.set_seed(11)
        h_ref = _python_fit(ref, x, y, **kw)
        fg.set_seed(11)
        com = _model(_mlp(), "sparse_categorical_crossentropy", "adam", **mkw)
        fg.set_seed(11)
        h_com = _compiled_fit(com, x, y, **kw)
        _assert_close(ref, com)
        np.testing.assert_allclose(h_com["loss"], h_ref["loss"], rtol=1e-5)
        np.testing.assert_allclose(h_com["accuracy"], h_ref["accuracy"], rtol=1e-12)


def test_int32_labels_and_flatten_input():
    def layers():
        return [fg.layers.Flatten(input_shape=(3, 4)), D(9, activation="relu"), D(4, activation="softmax")]

    x, y = _data()
    x = x.reshape(-1, 3, 4)
    fg.set_seed(11)
    ref = _model(layers, "sparse_categorical_crossentropy", "adam")
    fg.set_seed(11)
    _python_fit(ref, x, y.astype(np.int32))
    fg.set_seed(11)
    com = _model(layers, "sparse_categorical_crossentropy", "adam")
    fg.set_seed(11)
    _compiled_fit(com, x, y.astype(np.int32))
    _assert_close(ref, com)
    np.testing.assert_allclose(compiled.inference_plan(com).predict_rows(x[:5].copy()),
                               com.predict(x[:5]), rtol=1e-6, atol=1e-7)


def test_dropout_matches_python():
    def layers():
        return [D(16, activation="relu", input_shape=(12,)), fg.layers.Dropout(0.3),
                D(4, activation="softmax")]

    ref, com, h_ref, h_com = _pair(layers, "sparse_categorical_crossentropy", "adam", "sparse")
    _assert_close(ref, com)
    assert ref.layers[1].get_rng_state() == com.layers[1].get_rng_state()
    assert com.layers[1].get_rng_state()["offset"] > 0


def test_evaluate_matches_python():
    x, y = _data(n=77)
    m = _model(_mlp(), "sparse_categorical_crossentropy", "adam", ["accuracy"])
    _compiled_fit(m, x, y, epochs=1)
    with compiled_enabled(False):
        ref = m.evaluate(x, y, batch_size=20, return_dict=True)
    with compiled_enabled(True):
        got = m.evaluate(x, y, batch_size=20, return_dict=True)
        assert compiled.train_plan(m) is not None
    assert got.keys() == ref.keys()
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-6, err_msg=k)


# ---------------------------------------------------------------- reproducibility
def _train_bits(threads, isa=None):
    _config.set_num_threads(threads)
    x, y = _data(n=300, d=40, classes=10)
    fg.set_seed(11)
    m = _model(lambda: [D(64, activation="gelu", input_shape=(40,)), D(48, activation="relu"),
                        D(10, activation="softmax")], "sparse_categorical_crossentropy", "adam")
    fg.set_seed(11)
    h = _compiled_fit(m, x, y, epochs=2, batch_size=64)
    return m.get_weights(), h["loss"]


def test_bitwise_repeatable_any_thread_count():
    w1, l1 = _train_bits(1)
    for t in (1, 2, 3):
        w, l = _train_bits(t)
        assert l == l1, f"loss differs with {t} threads"
        for a, b in zip(w1, w):
            assert np.array_equal(a, b), f"parameters differ with {t} threads"


def test_adaptive_thread_policy_does_not_change_results():
    saved = compiled.adaptive_threads
    try:
        runs = []
        for adaptive in (False, True):
            compiled.adaptive_threads = adaptive
            runs.append(_train_bits(2))
    finally:
        compiled.adaptive_threads = saved
    (w0, l0), (w1, l1) = runs
    assert l0 == l1
    for a, b in zip(w0, w1):
        assert np.array_equal(a, b)


def test_every_isa_matches_python(each_isa):
    from conftest import isa_paths
    x, y = _data()
    for isa in isa_paths():
        fg._native.set_isa(isa)
        ref, com, _, _ = _pair(_mlp("gelu"), "sparse_categorical_crossentropy", "adam", "sparse")
        _assert_close(ref, com)


def test_predict_matches_python_and_is_thread_invariant():
    x, _ = _data(n=1000, d=12)
    m = _model(_mlp("tanh"), "sparse_categorical_crossentropy", "adam")
    plan = compiled.inference_plan(m)
    assert plan is not None
    with compiled_enabled(False):
        ref = m.predict(x, batch_size=1000)
    for rows in (1, 7, 255, 256, 257, 600, 1000):
        outs = []
        for t in (1, 2, 3):
            _config.set_num_threads(t)
            out = np.empty((rows, 4), np.float32)
            plan.predict(x[:rows], out)
            outs.append(out)
        np.testing.assert_allclose(outs[0], ref[:rows], rtol=1e-5, atol=1e-7)
        for o in outs[1:]:
            assert np.array_equal(o, outs[0])
        np.testing.assert_allclose(outs[0].sum(axis=1), 1.0, rtol=1e-5)   # softmax re-applied


def test_predict_rows_returns_fresh_arrays():
    x, _ = _data(n=70, d=12)
    m = _model(_mlp(), "sparse_categorical_crossentropy", "adam")
    plan = compiled.inference_plan(m)
    a = plan.predict_rows(x[:1])
    b = plan.predict_rows(x[1:2])
    assert a.shape == (1, 4) and not np.shares_memory(a, b)
    np.testing.assert_array_equal(a, plan.predict_rows(x[:1]))
    big = plan.predict_rows(x)                      # > 64 rows: the chunked path
    np.testing.assert_allclose(big[:1], a, rtol=1e-6, atol=1e-7)
    with pytest.raises((TypeError, ValueError)):
        plan.predict_rows(x[:, :5].copy())          # wrong feature count


def test_uncompiled_model_predicts():
    fg.set_seed(1)
    m = fg.Sequential([D(5, activation="sigmoid", input_shape=(3,))])
    plan = compiled.inference_plan(m)
    x = np.random.default_rng(0).standard_normal((9, 3)).astype(np.float32)
    with compiled_enabled(False):
        ref = m.predict(x)
    np.testing.assert_allclose(plan.predict_rows(x), ref, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- failure modes
def test_nonfinite_loss_stops_before_the_step():
    from fastgrad.engine.step import NonFiniteLossError
    x, y = _data(kind="real")
    x[40] = 3e38        # overflows the forward pass -> non-finite loss in batch 2
    results = []
    for execute in (_python_fit, _compiled_fit):
        m = _model(_mlp("linear", "linear"), "mse", "sgd")
        with pytest.raises(NonFiniteLossError, match="batch 2") as info:
            execute(m, x, y, epochs=1, batch_size=16, shuffle=False)
        assert m.optimizer.iterations == 2       # batches 0 and 1 applied, batch 2 not
        assert all(np.isfinite(w).all() for w in m.get_weights())
        results.append((m.get_weights(), str(info.value)))
    (w_ref, msg_ref), (w_com, msg_com) = results
    assert msg_ref.split(";")[0].split(" at ")[1] == msg_com.split(";")[0].split(" at ")[1]
    for a, b in zip(w_ref, w_com):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_unsupported_models_fall_back_with_a_reason():
    m = _model(lambda: [fg.layers.BatchNormalization(axis=1, input_shape=(3, 4)), fg.layers.Flatten(),
                        D(2)], "mse", "adam")
    assert compiled.train_plan(m) is None
    assert "BatchNormalization" in compiled.unsupported_reason(m)
    m2 = _model(lambda: [D(4, input_shape=(3,)), D(2, activation="softmax")],
                "sparse_categorical_crossentropy", "adam", ["mae"])
    assert compiled.train_plan(m2) is not None and compiled.train_plan(m2).py_metrics
    with fg.use_backend("numpy"):
        m3 = _model(_mlp(), "sparse_categorical_crossentropy", "adam")
        assert compiled.train_plan(m3) is None and "numpy" in compiled.unsupported_reason(m3)


def test_plan_is_rebuilt_when_the_model_changes():
    m = _model(_mlp(), "sparse_categorical_crossentropy", "adam")
    x, y = _data()
    _compiled_fit(m, x, y, epochs=1)
    p1 = compiled.train_plan(m)
    assert compiled.train_plan(m) is p1                 # cached
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    _compiled_fit(m, x, y, epochs=1)
    p2 = compiled.train_plan(m)
    assert p2 is not p1 and p2.spec["opt"]["kind"] == fg._native.module("step").OPTIMIZERS["sgd"]


def test_steady_state_allocates_nothing():
    x, y = _data(n=512, d=32, classes=10)
    m = _model(lambda: [D(64, activation="relu", input_shape=(32,)), D(10, activation="softmax")],
               "sparse_categorical_crossentropy", "adam", ["accuracy"])
    _compiled_fit(m, x, y, epochs=1, batch_size=64)
    data = _data_of(m, x, y)
    plan = compiled.train_plan(m)
    perm = np.random.default_rng(0).permutation(512)
    plan.train(data, perm, 0, 8, 64)        # warm
    tracemalloc.start()
    try:
        plan.train(data, perm, 0, 8, 64)
        snap1, _ = tracemalloc.get_traced_memory()
        for _ in range(3):
            plan.train(data, perm, 0, 8, 64)
        snap2, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert snap2 - snap1 < 4096, f"traced memory grew by {snap2 - snap1} bytes over 3 epochs"
    ws = plan.net.workspace_bytes
    plan.train(data, perm, 0, 8, 64)
    assert plan.net.workspace_bytes == ws > 0


# ---------------------------------------------------------------- public API (needs the hook)
def _hook_present():
    import fastgrad.models as M
    return "compiled" in inspect.getsource(M)


needs_hook = pytest.mark.skipif(not _hook_present(),
                                reason="Sequential.fit does not call fastgrad.engine.compiled yet")


@needs_hook
def test_fit_uses_compiled_path_and_matches_python():
    x, y = _data()
    runs = []
    for on in (False, True):
        fg.set_seed(11)
        m = _model(_mlp(), "sparse_categorical_crossentropy", "adam", ["accuracy"])
        with compiled_enabled(on):
            h = m.fit(x, y, batch_size=16, epochs=2, verbose=0)
        runs.append((m, h.history))
    (ref, h_ref), (com, h_com) = runs
    assert "_fg_train_plan" in com.__dict__ and com.__dict__["_fg_train_plan"][1] is not None
    _assert_close(ref, com)
    np.testing.assert_allclose(h_com["loss"], h_ref["loss"], rtol=1e-5)


@needs_hook
def test_keyboard_interrupt_in_callback_leaves_last_completed_step():
    x, y = _data(n=200)
    m = _model(_mlp(), "sparse_categorical_crossentropy", "adam")

    class Stop(fg.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.snap = [w.copy() for w in self.model.get_weights()]
            self.it = self.model.optimizer.iterations
            if batch == 3:
                raise KeyboardInterrupt

    cb = Stop()
    with pytest.raises(KeyboardInterrupt):
        m.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[cb])
    assert m.optimizer.iterations == cb.it == 4
    for a, b in zip(cb.snap, m.get_weights()):
        np.testing.assert_array_equal(a, b)
    m.fit(x, y, batch_size=16, epochs=1, verbose=0)      # still usable
    assert m.optimizer.iterations == 4 + 13
    assert m.predict(x[:3]).shape == (3, 4)


@needs_hook
def test_predict_on_batch_through_the_hook():
    x, _ = _data(n=5)
    m = _model(_mlp(), "sparse_categorical_crossentropy", "adam")
    with compiled_enabled(False):
        ref = m.predict_on_batch(x)
    got = m.predict_on_batch(x)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
    assert "_fg_infer_plan" in m.__dict__


@needs_hook
def test_progress_bar_fit_matches_silent_fit(capsys):
    x, y = _data(n=300)
    ws = []
    for verbose in (0, 1):
        fg.set_seed(11)
        m = _model(_mlp(), "sparse_categorical_crossentropy", "adam", ["accuracy"])
        h = m.fit(x, y, batch_size=8, epochs=2, verbose=verbose)
        ws.append((m.get_weights(), h.history))
    assert "38/38" in capsys.readouterr().out
    for a, b in zip(ws[0][0], ws[1][0]):
        np.testing.assert_array_equal(a, b)
    assert ws[0][1] == ws[1][1]


@pytest.mark.parametrize("loss,kind", [("sparse_categorical_crossentropy", "sparse"),
                                       ("binary_crossentropy", "binary")])
def test_activation_layers_and_fused_activation_layer(loss, kind):
    out_act = "softmax" if kind == "sparse" else "sigmoid"

    def layers():
        return [D(10, input_shape=(12,)), fg.layers.Activation("gelu"), D(8, activation="linear"),
                fg.layers.Activation("tanh"), fg.layers.Activation("linear"),
                fg.layers.Activation("softmax"), D(4), fg.layers.Activation(out_act)]

    ref, com, h_ref, h_com = _pair(layers, loss, "adam", kind)
    assert com._output_activation == out_act
    _assert_close(ref, com)
    np.testing.assert_allclose(h_com["loss"], h_ref["loss"], rtol=1e-5)
    x, _ = _data(n=9)
    with compiled_enabled(False):
        p_ref = com.predict(x)
    np.testing.assert_allclose(compiled.inference_plan(com).predict_rows(x), p_ref, rtol=1e-5, atol=1e-7)


@needs_hook
def test_train_on_batch_and_weighted_evaluate_match_python():
    x, y = _data(n=50)
    sw = np.random.default_rng(2).random(50).astype(np.float32)
    res = []
    for on in (False, True):
        fg.set_seed(11)
        m = _model(_mlp(), "sparse_categorical_crossentropy", "adam", ["accuracy"])
        with compiled_enabled(on):
            r1 = m.train_on_batch(x, y, sample_weight=sw, return_dict=True)
            r2 = m.train_on_batch(x[:7], y[:7], return_dict=True)
            ev = m.evaluate(x, y, sample_weight=sw, batch_size=16, return_dict=True)
        res.append((m, r1, r2, ev))
    (ref, *ref_logs), (com, *com_logs) = res
    assert com.__dict__["_fg_train_plan"][1] is not None
    _assert_close(ref, com)
    for a, b in zip(ref_logs, com_logs):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-5, err_msg=k)


def test_concurrent_predicts_from_threads_queue_instead_of_failing():
    import threading
    x, _ = _data(n=600, d=12)
    m = _model(_mlp(), "sparse_categorical_crossentropy", "adam")
    plan = compiled.inference_plan(m)
    ref_small, ref_big = plan.predict_rows(x[:3]), plan.predict_rows(x)
    errors, bad = [], []
    go = threading.Barrier(4)

    def work():
        go.wait()
        try:
            for _ in range(200):
                if not np.array_equal(plan.predict_rows(x[:3]), ref_small) or \
                        not np.array_equal(plan.predict_rows(x), ref_big):
                    bad.append(1)
        except Exception as exc:       # pragma: no cover - reported below
            errors.append(exc)

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors and not bad


def test_forked_child_predicts_after_parent_used_threads():
    import multiprocessing as mp
    x, _ = _data(n=2000, d=12)
    m = _model(_mlp(), "sparse_categorical_crossentropy", "adam")
    _config.set_num_threads(2)
    plan = compiled.inference_plan(m)
    ref = plan.predict_rows(x)                 # parent ran the parallel path
    ctx = mp.get_context("fork")
    q = ctx.Queue()

    def child():
        q.put(np.array_equal(plan.predict_rows(x), ref))

    p = ctx.Process(target=child)
    p.start()
    p.join(timeout=60)
    if p.is_alive():
        p.kill()
        pytest.fail("forked child hung in the compiled predict")
    assert p.exitcode == 0 and q.get(timeout=5)


def test_train_chunks_match_one_call():
    """Batches run as two executor calls give the bits of one call over all of them."""
    x, y = _data(n=90)
    runs = []
    for use_chunks in (False, True):
        fg.set_seed(11)
        m = _model(_mlp(), "sparse_categorical_crossentropy", "adam", ["accuracy"])
        data = _data_of(m, x, y)
        plan = compiled.train_plan(m)
        perm = np.random.default_rng(4).permutation(90)
        if use_chunks:
            stats = np.concatenate([plan.train(data, perm, 0, 3, 16), plan.train(data, perm, 3, 3, 16)])
        else:
            stats = plan.train(data, perm, 0, 6, 16)
        runs.append((m.get_weights(), stats, m.metrics[0].result(), m.optimizer.iterations))
    (w0, s0, a0, i0), (w1, s1, a1, i1) = runs
    assert s0.shape == (6, 2) and s0[:, 1].sum() == 90 and i0 == i1 == 6
    assert np.array_equal(s0, s1) and a0 == a1
    for a, b in zip(w0, w1):
        assert np.array_equal(a, b)


@needs_hook
@pytest.mark.parametrize("weighted", [False, True])
def test_metric_weighting_fit_and_evaluate_match_python(weighted):
    # Keras 3: metrics= ignore sample/class weights, weighted_metrics= honour them;
    # fit / evaluate / train_on_batch give the same logs with and without the C step
    x, y = _data(kind="sparse", n=70)
    sw = np.random.default_rng(5).random(x.shape[0]).astype(np.float32)
    kw = dict(weighted_metrics=["accuracy"]) if weighted else dict(metrics=["accuracy"])
    res = []
    for on in (False, True):
        fg.set_seed(11)
        m = _model(_mlp(), "sparse_categorical_crossentropy", "adam", **kw)
        with compiled_enabled(on):
            h = m.fit(x, y, batch_size=16, epochs=2, verbose=0, sample_weight=sw).history
            ev = m.evaluate(x, y, sample_weight=sw, batch_size=16, verbose=0, return_dict=True)
            tb = m.train_on_batch(x, y, class_weight={0: 3.0, 1: 0.25}, return_dict=True)
            ev2 = m.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
        res.append((m, h, ev, tb, ev2))
    (ref, *ref_logs), (com, *com_logs) = res
    assert com.__dict__["_fg_train_plan"][1] is not None      # ran on the C step
    assert ref.__dict__.get("_fg_train_plan", (None, None))[1] is None
    _assert_close(ref, com)
    for a, b in zip(ref_logs, com_logs):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-5, err_msg=k)
    # the reported accuracy is the weighted / unweighted mean of the hits
    hits = (np.argmax(ref.predict(x), axis=1) == y).astype(np.float64)
    want = float(np.dot(hits, sw) / sw.sum()) if weighted else float(hits.mean())
    assert com_logs[1]["accuracy"] == pytest.approx(want, rel=1e-6)
    assert com_logs[3]["accuracy"] == pytest.approx(hits.mean(), rel=1e-6)


METRIC_SETS = [
    # (loss, output activation, target kind, metrics, weighted_metrics)
    ("sparse_categorical_crossentropy", "softmax", "sparse",
     ["accuracy", "sparse_top_k_categorical_accuracy"], ["accuracy"]),
    ("categorical_crossentropy", "softmax", "onehot", ["categorical_accuracy", "top_k_categorical_accuracy"],
     ["mse"]),
    ("binary_crossentropy", "sigmoid", "binary", ["accuracy", "precision", "recall", "auc"], ["auc"]),
    ("mse", "linear", "real", ["mae", "mse"], None),
]


@pytest.mark.parametrize("chunk_floats", [None, 40])
@pytest.mark.parametrize("loss,out_act,kind,metrics,weighted", METRIC_SETS)
def test_python_metrics_on_captured_outputs_match_python(loss, out_act, kind, metrics, weighted,
                                                         chunk_floats, monkeypatch):
    """Metrics without a C path no longer push a model off the compiled step:
    the C step copies each batch's last-layer output into a buffer and the
    metrics update from it in Python, once per C call. fit (silent, with
    batch callbacks, with the progress bar), evaluate and train_on_batch give
    the Python path's logs; chunk_floats=40 forces C calls of a batch or two
    (the capture buffer bound) so chunk edges are exercised."""
    if chunk_floats is not None:
        monkeypatch.setattr(compiled, "_CAPTURE_FLOATS", chunk_floats)
    x, y = _data(kind=kind, n=70)
    sw = np.random.default_rng(5).random(x.shape[0]).astype(np.float32)
    seen = []
    cb = fg.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(b))
    res = []
    for on in (False, True):
        fg.set_seed(11)
        m = _model(_mlp("relu", out_act), loss, "adam", metrics=metrics, weighted_metrics=weighted)
        with compiled_enabled(on):
            logs = [m.fit(x, y, batch_size=16, epochs=2, verbose=0, sample_weight=sw).history,
                    m.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[cb]).history,
                    m.evaluate(x, y, sample_weight=sw, batch_size=16, verbose=0, return_dict=True),
                    m.train_on_batch(x[:20], y[:20], return_dict=True),
                    m.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)]
        if on:
            plan = m.__dict__["_fg_train_plan"][1]
            assert plan is not None and plan.py_metrics     # ran on the C step, metrics in Python
        res.append((m, logs))
    (ref, ref_logs), (com, com_logs) = res
    _assert_close(ref, com)
    for a, b in zip(ref_logs, com_logs):
        assert a.keys() == b.keys() and len(a) >= 1 + len(metrics)
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=2e-5, atol=1e-7, err_msg=k)
    assert seen == list(range(5)) * 2


def test_python_metrics_with_progress_bar_match_silent_fit(capsys):
    x, y = _data(kind="sparse", n=70)
    hs = []
    for verbose in (0, 1):
        fg.set_seed(11)
        m = _model(_mlp(), "sparse_categorical_crossentropy", "adam",
                   metrics=["accuracy", "sparse_top_k_categorical_accuracy"])
        hs.append(m.fit(x, y, batch_size=16, epochs=2, verbose=verbose).history)
    assert "sparse_top_k_categorical_accuracy" in capsys.readouterr().out
    for k in hs[0]:
        np.testing.assert_allclose(hs[1][k], hs[0][k], rtol=1e-12, err_msg=k)
