"""Traced layers (call + add_weight), subclassed models, Lambda, fg.math in
the functional API, custom losses / metrics, and the GradientTape training
loop against fit (bitwise)."""
import numpy as np
import pytest

import fastgrad as fg
from fastgrad import math as M
from fastgrad.testing import check_gradients
from conftest import backends


class Linear(fg.layers.Layer):
    """The classic example: a dense layer from add_weight and matmul."""

    def __init__(self, units=8, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = activation

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units),
                                 initializer="glorot_uniform", name="kernel")
        self.b = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

    def call(self, inputs):
        z = M.matmul(inputs, self.w) + self.b
        return M.relu(z) if self.activation == "relu" else z

    def get_config(self):
        return {**super().get_config(), "units": self.units, "activation": self.activation}


class ResidualBlock(fg.layers.Layer):
    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.d1 = fg.layers.Dense(units, activation="tanh")
        self.d2 = fg.layers.Dense(units)
        self.norm = fg.layers.LayerNormalization()

    def call(self, x, training=None):
        return M.tanh(self.norm(x + self.d2(self.d1(x))))


class MLP(fg.Model):
    def __init__(self, hidden=16, classes=3, **kwargs):
        super().__init__(**kwargs)
        self.hidden = hidden
        self.classes = classes
        self.l1 = Linear(hidden)
        self.block = ResidualBlock(hidden)
        self.drop = fg.layers.Dropout(0.1)
        self.out = fg.layers.Dense(classes)

    def call(self, x, training=None):
        h = M.tanh(self.l1(x))
        h = self.drop(self.block(h), training=training)
        return self.out(h)

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "classes": self.classes}


def data(n=96, d=6, k=3, seed=0):
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, d)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    return x, y % k


def huber(y_true, y_pred, delta=1.0):
    """Huber loss as a plain function of (y_true, y_pred) written with fg.math."""
    err = M.abs(y_true - y_pred)
    quad = M.minimum(err, delta)
    return M.mean(0.5 * quad * quad + delta * (err - quad), axis=-1)


# ---------------------------------------------------------------------------- layers
def test_linear_layer_weights_gradients_and_fit(tmp_path):
    x, y = data()
    layer = Linear(4, name="lin")
    assert layer(x[:3]).shape == (3, 4)
    assert [v.name for v in layer.trainable_weights] == ["lin/kernel", "lin/bias"]
    assert check_gradients(Linear(5, activation=None), x[:7]) < 1e-7      # float64 replay
    model = fg.Sequential([fg.Input((6,)), Linear(16, activation="relu"), fg.layers.Dense(3)])
    model.compile(optimizer=fg.optimizers.Adam(0.01),
                  loss=fg.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    h = model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    assert h.history["loss"][-1] < 0.7 * h.history["loss"][0]
    assert h.history["accuracy"][-1] > 0.8
    path = str(tmp_path / "lin.fgz")
    model.save(path)
    back = fg.load_model(path)
    assert np.array_equal(back.predict(x), model.predict(x))


def test_traced_dense_gives_the_builtin_dense_bits():
    """relu(matmul(x, w) + b) trains to the same bits as Dense(relu) (native: the
    built-in one on the compiled plan, the traced one on the Python step)."""
    x, y = data(128, 20, 4)
    for backend in backends():
        fg.set_backend(backend)

        def make(custom):
            fg.set_seed(5)
            first = Linear(32, activation="relu") if custom else fg.layers.Dense(32, activation="relu")
            m = fg.Sequential([fg.Input((20,)), first, fg.layers.Dense(4)])
            m.compile(optimizer="adam",
                      loss=fg.losses.SparseCategoricalCrossentropy(from_logits=True))
            return m
        a, b = make(False), make(True)
        b.set_weights(a.get_weights())
        a.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
        b.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
        for p, q in zip(a.get_weights(), b.get_weights()):
            assert np.array_equal(p, q), backend


def test_residual_block_layer_gradients_and_functional_use():
    x, _ = data(8, 5)
    block = ResidualBlock(5)
    assert check_gradients(block, x) < 2e-2                       # float32 kernels inside
    assert [w.shape for w in block.weights] == [(5, 5), (5,), (5, 5), (5,), (5,), (5,)]
    inp = fg.Input((5,))
    out = fg.layers.Dense(2)(ResidualBlock(5)(inp))
    m = fg.Model(inp, out)
    assert m.predict(x).shape == (8, 2)
    assert len(m.trainable_weights) == 8


def test_subclassed_model_fit_evaluate_predict_save(tmp_path):
    x, y = data()
    fg.set_seed(0)
    model = MLP(16, 3)
    model.compile(optimizer=fg.optimizers.Adam(0.01),
                  loss=fg.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    h = model.fit(x, y, epochs=12, batch_size=16, verbose=0)
    assert h.history["loss"][-1] < 0.7 * h.history["loss"][0]
    assert [l.name for l in model.layers] == [model.l1.name, model.block.name,
                                              model.drop.name, model.out.name]
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert f"{model.block.name} (ResidualBlock)" in text and "ModelCall" not in text
    loss, acc = model.evaluate(x, y, verbose=0)
    assert acc > 0.75
    p = model.predict(x)
    assert p.shape == (96, 3)
    model.save_weights(str(tmp_path / "w.fgz"))
    other = MLP(16, 3)
    other.build((6,))
    other.load_weights(str(tmp_path / "w.fgz"))
    assert np.array_equal(other.predict(x), p)
    model.save(str(tmp_path / "m.fgz"))
    back = fg.load_model(str(tmp_path / "m.fgz"))
    assert type(back) is MLP and np.array_equal(back.predict(x), p)
    assert check_gradients(MLP(4, 2), x[:5]) < 2e-2


def test_lambda_and_math_ops_in_functional_models():
    fg.set_seed(0)      # the fit-halves-the-loss check must not depend on the tests run before
    x, _ = data(32, 4)
    t = (x[:, :1] ** 2).astype(np.float32)
    inp = fg.Input((4,))
    h = fg.layers.Dense(8, activation="tanh")(inp)
    h = fg.layers.Lambda(lambda v: M.concatenate([v, M.square(v[:, :2])], axis=-1))(h)
    z = fg.layers.Dense(1)(h)
    out = (z * 0.5 + 1.0) / 2.0 - M.mean(h, axis=-1, keepdims=True) ** 2
    m = fg.Model(inp, out)
    assert "lambda" in [l.name.split("_")[0] for l in m.layers]
    assert all(not l.name.startswith("multiply") for l in m.layers)   # ops are not layers
    m.compile(optimizer=fg.optimizers.Adam(0.02), loss="mse")
    h0 = m.evaluate(x, t, verbose=0)
    m.fit(x, t, epochs=30, batch_size=8, verbose=0)
    assert m.evaluate(x, t, verbose=0) < 0.5 * h0
    with pytest.raises(TypeError, match="symbolic"):
        np.asarray(inp)


# ---------------------------------------------------------------------------- losses / metrics
def test_huber_plain_function_loss_value_gradient_and_fit():
    r = np.random.default_rng(1)
    yt = r.normal(size=(10, 3))
    yp = r.normal(size=(10, 3)) * 2
    err = np.abs(yt - yp)
    ref = np.mean(np.where(err < 1, 0.5 * err ** 2, err - 0.5), axis=-1)
    assert np.allclose(huber(yt, yp), ref)
    assert check_gradients(lambda p: huber(yt, p), [yp]) < 1e-6
    x, _ = data(64, 4)
    t = np.stack([x[:, 0] * 3, -x[:, 1]], axis=1).astype(np.float32)
    m = fg.Sequential([fg.Input((4,)), fg.layers.Dense(2)])
    m.compile(optimizer=fg.optimizers.SGD(0.1), loss=huber, metrics=[huber])
    h = m.fit(x, t, epochs=20, batch_size=16, verbose=0)
    assert h.history["loss"][-1] < 0.3 * h.history["loss"][0]
    assert np.isclose(h.history["huber"][-1], h.history["loss"][-1], rtol=0.2)


class WeightedMSE(fg.losses.Loss):
    def __init__(self, scale=2.0, **kw):
        super().__init__(**kw)
        self.scale = scale

    def call(self, y_true, y_pred):
        return self.scale * M.mean(M.square(y_pred - y_true), axis=-1)


class MAEMetric(fg.metrics.Metric):
    def call(self, y_true, y_pred):
        return M.abs(y_pred - y_true)


def test_loss_subclass_reductions_and_metric_subclass():
    yt = np.array([[1.0, 2.0], [0.0, 0.0]], np.float32)
    yp = np.array([[2.0, 2.0], [0.0, 2.0]], np.float32)
    per = 2.0 * np.array([0.5, 2.0])
    assert np.isclose(float(WeightedMSE()(yt, yp)), per.mean())
    assert np.isclose(float(WeightedMSE(reduction="sum")(yt, yp)), per.sum())
    assert np.allclose(WeightedMSE(reduction="none")(yt, yp), per)
    sw = np.array([1.0, 0.5])
    assert np.isclose(float(WeightedMSE()(yt, yp, sample_weight=sw)), (per * sw).mean())
    with pytest.raises(ValueError, match="reduction"):
        WeightedMSE(reduction="bogus")
    x, _ = data(32, 2)
    m = fg.Sequential([fg.Input((2,)), fg.layers.Dense(2)])
    m.compile(optimizer="sgd", loss=WeightedMSE(), metrics=[MAEMetric(name="mae2")])
    h = m.fit(x, x * 2, epochs=3, verbose=0, batch_size=8)
    assert h.history["loss"][-1] < h.history["loss"][0] and "mae2" in h.history


# ---------------------------------------------------------------------------- tape loops
def _tape_vs_fit(backend, make, loss, opt_factory, steps=50, bs=16):
    fg.set_backend(backend)
    r = np.random.default_rng(0)
    x = r.normal(size=(steps * bs, 784)).astype(np.float32)
    y = r.integers(0, 10, steps * bs)
    a, b = make(), make()
    b.set_weights(a.get_weights())
    a.compile(optimizer=opt_factory(), loss=loss)
    opt = opt_factory()
    a.fit(x, y, batch_size=bs, epochs=1, shuffle=False, verbose=0)
    for s in range(steps):
        xb, yb = x[s * bs:(s + 1) * bs], y[s * bs:(s + 1) * bs]
        with fg.GradientTape() as tape:
            pred = b(xb, training=True)
            value = loss(yb, pred)
        grads = tape.gradient(value, b.trainable_weights)
        opt.apply_gradients(zip(grads, b.trainable_weights))
    return a, b


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("opt", ["adam", "sgd_momentum"])
def test_tape_loop_gives_fits_weights_bitwise(backend, opt):
    def make():
        fg.set_seed(11)
        return fg.Sequential([fg.layers.Dense(128, activation="relu", input_shape=(784,)),
                              fg.layers.Dense(10)])
    factory = (lambda: fg.optimizers.Adam(1e-3)) if opt == "adam" else \
        (lambda: fg.optimizers.SGD(0.05, momentum=0.9))
    loss = fg.losses.SparseCategoricalCrossentropy(from_logits=True)
    a, b = _tape_vs_fit(backend, make, loss, factory)
    assert a.optimizer.iterations == 50
    for p, q in zip(a.get_weights(), b.get_weights()):
        assert np.array_equal(p, q)


def test_tape_loop_on_subclassed_model_matches_its_fit():
    def make():
        fg.set_seed(2)
        m = MLP(32, 10)
        m.drop.rate = 0.0
        m.build((784,))
        return m
    loss = fg.losses.SparseCategoricalCrossentropy(from_logits=True)
    a, b = _tape_vs_fit(fg.get_backend(), make, loss, lambda: fg.optimizers.Adam(1e-3),
                        steps=10)
    for p, q in zip(a.get_weights(), b.get_weights()):
        assert np.array_equal(p, q)


def test_tape_through_layers_and_probability_outputs():
    x, y = data(16, 6)
    model = fg.Sequential([fg.layers.Dense(8, activation="tanh", input_shape=(6,)),
                           fg.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)      # fit splits the softmax into its loss
    loss = fg.losses.SparseCategoricalCrossentropy()
    with fg.GradientTape() as tape:
        p = model(x, training=True)
        value = loss(y, p)
    assert np.allclose(np.asarray(p).sum(axis=1), 1.0, atol=1e-5)   # probabilities
    grads = tape.gradient(value, model.trainable_weights)
    assert all(g is not None and g.shape == v.shape for g, v in zip(grads, model.trainable_weights))
    # a hand-made eager tape step with a Variable-based layer
    d = fg.layers.Dense(2)
    with fg.GradientTape() as tape:
        out = d(x)
        v = M.mean(M.square(out))
    gk, gb = tape.gradient(v, d.trainable_weights)
    ref = 2 * np.asarray(out) / out.size
    assert np.allclose(gk, x.T @ ref, atol=1e-6) and np.allclose(gb, ref.sum(0), atol=1e-6)


def test_trainable_weights_are_views_into_the_flat_buffer():
    m = fg.Sequential([fg.layers.Dense(4, input_shape=(3,)), fg.layers.Dense(2)])
    vs = m.trainable_weights
    assert [v.shape for v in vs] == [(3, 4), (4,), (4, 2), (2,)]
    vs[0].assign(np.ones((3, 4)))
    assert np.array_equal(m.get_weights()[0], np.ones((3, 4)))
    assert np.shares_memory(vs[2].value, m.flat_params)
    assert vs[0] is m.trainable_weights[0]


class _TrainingOnlyNoise(fg.layers.Layer):
    def build(self, s):
        self.w = self.add_weight(shape=(s[-1], 3), name="kernel")

    def call(self, x, training=None):
        y = M.matmul(x, self.w)
        return y * 0.5 if training else y


def test_traced_dense_pattern_runs_on_the_compiled_plan():
    from fastgrad.engine import compiled
    from conftest import native_available
    if not native_available():
        pytest.skip("native backend not built")
    fg.set_backend("native")
    x, y = data(128, 20, 4)

    def make():
        fg.set_seed(5)
        m = fg.Sequential([fg.Input((20,)), Linear(32, activation="relu"), fg.layers.Dense(4)])
        m.compile(optimizer="adam", loss=fg.losses.SparseCategoricalCrossentropy(from_logits=True))
        return m
    a, b = make(), make()
    b.set_weights(a.get_weights())
    assert compiled.unsupported_reason(a) is None
    a.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    saved = compiled.enabled
    compiled.enabled = False
    try:
        b.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    finally:
        compiled.enabled = saved
    for p, q in zip(a.get_weights(), b.get_weights()):
        assert np.array_equal(p, q)
    # any other program stays on the Python executor, with the reason
    for layer in (ResidualBlock(20), _TrainingOnlyNoise(), fg.layers.Lambda(lambda v: v * 2)):
        m = fg.Sequential([fg.Input((20,)), layer, fg.layers.Dense(4)])
        m.compile(optimizer="sgd", loss="mse")
        assert "no C path" in compiled.unsupported_reason(m)


def test_model_losses_and_input_gradients_on_a_tape():
    fg.set_seed(4)
    m = fg.Sequential([fg.layers.Dense(3, activation="tanh", input_shape=(4,),
                                       kernel_regularizer=fg.regularizers.L2(0.1)),
                       fg.layers.Dense(2, kernel_regularizer=fg.regularizers.L1L2(0.01, 0.02))])
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    w0, w1 = m.get_weights()[0], m.get_weights()[2]
    pens = m.losses
    assert len(pens) == 2
    assert np.isclose(float(pens[0]), 0.1 * np.sum(w0.astype(np.float64) ** 2), rtol=1e-5)
    with fg.GradientTape() as tape:
        tape.watch(x)
        y = m(x)
        loss = M.sum(M.square(y)) + sum(m.losses)
    gx, gk0 = tape.gradient(loss, [x, m.trainable_weights[0]])
    # input gradient and the penalty's gradient against finite differences / formula
    xd = x.astype(np.float64)

    def f(xx):
        return float(np.sum(np.asarray(m(xx.astype(np.float32)), dtype=np.float64) ** 2))
    fd = np.zeros_like(xd)
    for i in range(xd.shape[0]):
        for j in range(xd.shape[1]):
            e = np.zeros_like(xd)
            e[i, j] = 1e-2
            fd[i, j] = (f(xd + e) - f(xd - e)) / 2e-2
    assert np.allclose(gx, fd, rtol=2e-2, atol=2e-3)
    with fg.GradientTape() as t2:
        pen = m.losses[0]
    assert np.allclose(t2.gradient(pen, m.trainable_weights[0]), 0.2 * w0, rtol=1e-5)
    assert gk0.shape == w0.shape and w1.shape == (3, 2)
