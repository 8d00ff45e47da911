"""Bad input: each gets a clear ValueError/TypeError naming what is wrong,
raised before any parameter is touched (the model is unchanged after)."""
import numpy as np
import pytest

import fastgrad as fg


def _model(loss="sparse_categorical_crossentropy", out=3, act="softmax"):
    fg.set_seed(0)
    m = fg.Sequential([fg.layers.Dense(8, activation="relu", input_shape=(4,), name="hidden"),
                       fg.layers.Dense(out, activation=act, name="out")])
    m.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    return m


def _data(n=10):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 4)).astype(np.float32), rng.integers(0, 3, n)


def _unchanged(m, before):
    after = m.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert m.optimizer.iterations == 0


X, Y = _data()
NAN_X = X.copy(); NAN_X[3, 2] = np.nan
INF_X = X.copy(); INF_X[0, 0] = np.inf
BIG_X = X.astype(np.float64); BIG_X[1, 1] = 1e300

CASES = [
    # (id, x, y, exception, message regex)
    ("wrong_features", np.ones((10, 5), np.float32), Y, ValueError, r"hidden.*\(4,\).*\(10, 5\)"),
    ("wrong_rank", np.ones((10, 2, 2), np.float32), Y, ValueError, r"rank 2"),
    ("rank1", np.ones(4, np.float32), Y, ValueError, r"rank 1|batch axis"),
    ("length_mismatch", X, Y[:7], ValueError, r"10 samples.*7"),
    ("label_too_big", X, np.r_[Y[:9], 3], ValueError, r"label 3 .*index 9.*\[0, 3\)"),
    ("label_negative", X, np.r_[-1, Y[1:]], ValueError, r"label -1 .*index 0"),
    ("label_fraction", X, Y + 0.5, ValueError, r"non-integer label"),
    ("label_bool", X, Y > 0, TypeError, r"bool"),
    ("label_string", X, np.array(["a"] * 10), TypeError, r"dtype"),
    ("empty", np.ones((0, 4), np.float32), np.array([], int), ValueError, r"empty"),
    ("nan_x", NAN_X, Y, ValueError, r"NaN or inf.*\(3, 2\)"),
    ("inf_x", INF_X, Y, ValueError, r"NaN or inf"),
    ("overflow_x", BIG_X, Y, ValueError, r"float32 range"),
    # integer / bool x are cast to float32 as Keras casts them (tests/test_data_adapters.py)
    ("complex_x", np.ones((10, 4), np.complex64), Y, TypeError, r"complex64"),
    ("object_x", np.array([[object()] * 4] * 10), Y, TypeError, r"object"),
    ("string_x", "not an array", Y, TypeError, r"x"),
    ("none_y", X, None, ValueError, r"y is required"),
    ("onehot_for_sparse", X, np.eye(3)[Y], ValueError, r"categorical_crossentropy"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("method", ["fit", "evaluate", "train_on_batch", "test_on_batch"])
def test_bad_fit_input(case, method):
    _, x, y, exc, msg = case
    m = _model()
    before = m.get_weights()
    with pytest.raises(exc, match=msg):
        if method == "fit":
            m.fit(x, y, epochs=1, verbose=0)
        else:
            getattr(m, method)(x, y)
    _unchanged(m, before)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in (
    "wrong_features", "wrong_rank", "rank1", "empty", "nan_x", "inf_x",
    "complex_x", "object_x", "string_x")], ids=lambda c: c[0])
@pytest.mark.parametrize("method", ["predict", "predict_on_batch"])
def test_bad_predict_input(case, method):
    _, x, _, exc, msg = case
    m = _model()
    with pytest.raises(exc, match=msg):
        getattr(m, method)(x)


def test_float64_and_noncontiguous_x_are_converted():
    m = _model()
    x64 = X.astype(np.float64)
    xt = np.asfortranarray(X)
    xs = np.ones((10, 8), np.float32)[:, ::2]
    p = m.predict(X)
    np.testing.assert_array_equal(m.predict(x64), p)
    np.testing.assert_array_equal(m.predict(xt), p)
    assert m.predict(xs).shape == (10, 3)
    m.fit(x64, Y, epochs=1, verbose=0)
    m.fit(xt, Y, epochs=1, verbose=0)
    m.fit(X, Y.astype(np.float64), epochs=1, verbose=0)   # integral float labels are fine


def test_dense_targets_shape_and_values():
    m = _model(loss="categorical_crossentropy")
    before = m.get_weights()
    with pytest.raises(ValueError, match="sparse_categorical_crossentropy"):
        m.fit(X, Y, verbose=0)              # integer class ids for a dense loss
    with pytest.raises(ValueError, match=r"\(10, 3\)"):
        m.fit(X, np.ones((10, 4), np.float32), verbose=0)
    yn = np.eye(3, dtype=np.float32)[Y]
    yn[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        m.fit(X, yn, verbose=0)
    _unchanged(m, before)


def test_sample_and_class_weight_validation():
    m = _model()
    before = m.get_weights()
    with pytest.raises(ValueError, match="sample_weight.*shape"):
        m.fit(X, Y, sample_weight=np.ones(9), verbose=0)
    with pytest.raises(ValueError, match="sample_weight.*>= 0"):
        m.fit(X, Y, sample_weight=-np.ones(10), verbose=0)
    with pytest.raises(ValueError, match="class_weight key 5"):
        m.fit(X, Y, class_weight={5: 1.0}, verbose=0)
    with pytest.raises(TypeError, match="class_weight"):
        m.fit(X, Y, class_weight=[1.0, 2.0], verbose=0)
    _unchanged(m, before)


@pytest.mark.parametrize("kw,msg", [
    (dict(batch_size=0), "batch_size"), (dict(batch_size=2.5), "batch_size"),
    (dict(epochs=-1), "epochs"), (dict(validation_split=1.0), "validation_split"),
(dict(verbose=3), "verbose"),
    (dict(validation_data=(X,)), "validation_data"), (dict(validation_freq=0), "validation_freq"),
    (dict(validation_data=(X, Y[:5])), "10 samples"), (dict(shuffle="yes"), "shuffle"),
])
def test_bad_fit_arguments(kw, msg):
    m = _model()
    before = m.get_weights()
    with pytest.raises(ValueError, match=msg):
        m.fit(X, Y, **{"verbose": 0, **kw})
    _unchanged(m, before)


def test_validation_split_leaving_nothing():
    m = _model()
    with pytest.raises(ValueError, match="leaves 0 training"):
        m.fit(X[:1], Y[:1], validation_split=0.5, verbose=0)


def test_not_compiled():
    m = fg.Sequential([fg.layers.Dense(2, input_shape=(4,))])
    for call in (lambda: m.fit(X, Y), lambda: m.evaluate(X, Y), lambda: m.train_on_batch(X, Y)):
        with pytest.raises(RuntimeError, match="compile"):
            call()
    # predict works without compile
    assert m.predict(X).shape == (10, 2)


@pytest.mark.parametrize("kw,exc,msg", [
    (dict(loss="msee"), ValueError, "unknown loss"),
    (dict(loss="mse", optimizer="adamz"), ValueError, "unknown optimizer"),
    (dict(loss="mse", metrics=["acuracy"]), ValueError, "unknown metric"),
    (dict(loss="mse", optimizer=3), TypeError, "optimizer"),
    (dict(loss=None), ValueError, "loss is required"),
])
def test_unknown_names_in_compile(kw, exc, msg):
    m = fg.Sequential([fg.layers.Dense(2, input_shape=(4,))])
    with pytest.raises(exc, match=msg):
        m.compile(**kw)
    assert not m.compiled


def test_unknown_names_in_layers():
    with pytest.raises(ValueError, match="unknown activation 'relux'"):
        fg.layers.Dense(3, activation="relux")
    with pytest.raises(ValueError, match="unknown activation"):
        fg.layers.Activation("soft_max")
    with pytest.raises(ValueError, match="unknown initializer"):
        fg.layers.Dense(3, kernel_initializer="glorot")


def test_set_weights_validated_before_writing():
    m = _model()
    before = m.get_weights()
    bad = [w.copy() for w in before]
    bad[-1] = np.ones(4, np.float32)                   # last one has the wrong shape
    bad[0][:] = 7.0
    with pytest.raises(ValueError, match=r"out/bias.*\(3,\).*\(4,\)"):
        m.set_weights(bad)
    with pytest.raises(ValueError, match="expected 4 arrays"):
        m.set_weights(before[:3])
    nan = [w.copy() for w in before]
    nan[1][0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        m.set_weights(nan)
    _unchanged(m, before)


def test_nan_loss_stops_fit_with_last_good_parameters():
    """A learning rate that blows up: fit raises FloatingPointError naming the
    epoch/batch; the weights are those after the last finite-loss step."""
    fg.set_seed(1)
    m = fg.Sequential([fg.layers.Dense(16, activation="relu", input_shape=(4,)),
                       fg.layers.Dense(1)])
    m.compile(optimizer=fg.optimizers.SGD(1e4), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = rng.standard_normal((64, 1)).astype(np.float32)

    snapshots = []

    class Snap(fg.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            snapshots.append(self.model.get_weights())

    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match=r"epoch \d+, batch \d+"):
        m.fit(x, y, epochs=50, batch_size=8, verbose=0, shuffle=False, callbacks=[Snap()])
    assert snapshots, "at least one good step"
    for a, b in zip(m.get_weights(), snapshots[-1]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("call", [
    lambda m: m.fit(X, np.r_[Y[:9], 7], verbose=0),
    lambda m: m.fit(X, Y, validation_data=(X[:, :3], Y), verbose=0),
    lambda m: m.fit(X, Y, validation_data=(X, Y[:4]), verbose=0),
    lambda m: m.train_on_batch(X, Y[:3]),
    lambda m: m.fit(X.reshape(10, 2, 2), Y, verbose=0),
])
def test_unbuilt_model_stays_unbuilt_on_bad_input(call):
    m = fg.Sequential([fg.layers.Dense(8, activation="relu"), fg.layers.Dense(3, activation="softmax")])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError):
        call(m)
    assert not m.built
    m.fit(X, Y, epochs=1, verbose=0)          # and it still works afterwards
    assert m.built and m.input_shape == (None, 4)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("rows", [1, 63, 64, 65, 256, 257, 1031])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nonfinite_x_of_a_built_model_is_named(threads, rows, where, value):
    """Once a model is built the compiled inference plan checks x for NaN/inf
    in C, chunk by chunk (256 rows), instead of a Python pre-pass: the error
    must still name the first bad element, for every chunk position."""
    m = _model()
    m.predict(X)                                  # built, plan compiled
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, 4)).astype(np.float32)
    i = {"first": 0, "middle": x.size // 2, "last": x.size - 1}[where]
    x.reshape(-1)[i] = value
    bad = np.unravel_index(i, x.shape)
    old = fg.get_num_threads()
    fg.set_num_threads(threads)
    try:
        for method in ("predict", "predict_on_batch"):
            with pytest.raises(ValueError, match=rf"{method}: x contains NaN or inf \(first at index "
                                                 rf"\({bad[0]}, {bad[1]}\)"):
                getattr(m, method)(x)
        x.reshape(-1)[i] = np.finfo(np.float32).max    # largest finite float32 and
        x.reshape(-1)[0] = np.float32(1e-45)           # a denormal are accepted
        assert m.predict(x).shape == (rows, 3)
        assert m.predict_on_batch(x).shape == (rows, 3)
    finally:
        fg.set_num_threads(old)
