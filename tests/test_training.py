"""End-to-end training: XOR to 100%, digits to >= 95% test accuracy, the two
backends train to the same loss from the same seed, seeds reproduce runs."""
import numpy as np
import pytest

import fastgrad as fg

from conftest import backends, native_available

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
XOR_Y = np.array([[0], [1], [1], [0]], np.float32)


@pytest.mark.parametrize("backend", backends())
def test_xor_reaches_full_accuracy(backend, executor):
    """The issue's example: 2-4-1 sigmoid, binary cross-entropy, Adam 0.01, batch 1."""
    with fg.use_backend(backend):
        fg.set_seed(42)
        m = fg.Sequential([fg.layers.Dense(4, activation="sigmoid", input_shape=(2,)),
                           fg.layers.Dense(1, activation="sigmoid")])
        m.compile(optimizer=fg.optimizers.Adam(0.01), loss="binary_crossentropy",
                  metrics=["accuracy"])
        h = m.fit(XOR_X, XOR_Y, epochs=1000, batch_size=1, verbose=0)
        assert h.history["accuracy"][-1] == 1.0
        pred = m.predict(XOR_X)
        assert ((pred > 0.5) == (XOR_Y > 0.5)).all()
        assert m.evaluate(XOR_X, XOR_Y)[1] == 1.0
        assert h.history["loss"][-1] < 0.2


def _digits():
    sk = pytest.importorskip("sklearn.datasets")
    d = sk.load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target
    perm = np.random.default_rng(0).permutation(len(x))
    x, y = x[perm], y[perm]
    return x[360:], y[360:], x[:360], y[:360]


@pytest.mark.parametrize("backend", backends())
def test_digits_mlp_reaches_95_percent(backend, executor):
    xtr, ytr, xte, yte = _digits()
    with fg.use_backend(backend):
        fg.set_seed(0)
        m = fg.Sequential([fg.layers.Dense(64, activation="relu", input_shape=(64,)),
                           fg.layers.Dense(10, activation="softmax")])
        m.compile(optimizer=fg.optimizers.Adam(0.005), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
        m.fit(xtr, ytr, epochs=15, batch_size=32, verbose=0, validation_split=0.1)
        loss, acc = m.evaluate(xte, yte)
        assert acc >= 0.95, acc
        assert (m.predict(xte).argmax(1) == yte).mean() == pytest.approx(acc)


@pytest.fixture(params=["compiled", "python"])
def executor(request, monkeypatch):
    """Run the native backend through the compiled step (default when the model
    has a C path) or force the Python Step over NativeOps."""
    from fastgrad.engine import compiled
    monkeypatch.setattr(compiled, "enabled", request.param == "compiled")
    return request.param


@pytest.mark.skipif(not native_available(), reason="native backend not built")
@pytest.mark.parametrize("loss,act,opt", [
    ("sparse_categorical_crossentropy", "softmax", "adam"),
    ("categorical_crossentropy", "softmax", "rmsprop"),
    ("mse", "linear", "sgd"),
])
def test_backends_train_to_the_same_loss(loss, act, opt, executor):
    xtr, ytr, _, _ = _digits()
    if loss == "categorical_crossentropy":
        ytr = np.eye(10, dtype=np.float32)[ytr]
    if loss == "mse":
        ytr = np.eye(10, dtype=np.float32)[ytr]
    hist = {}
    for backend in ("numpy", "native"):
        with fg.use_backend(backend):
            fg.set_seed(0)
            m = fg.Sequential([fg.layers.Dense(32, activation="gelu", input_shape=(64,)),
                               fg.layers.Dense(10, activation=act)])
            m.compile(optimizer=opt, loss=loss)
            hist[backend] = m.fit(xtr, ytr, epochs=3, batch_size=64, verbose=0).history["loss"]
    np.testing.assert_allclose(hist["native"], hist["numpy"], rtol=2e-3)


def test_seed_reproduces_init_and_shuffling():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 5)).astype(np.float32)
    y = rng.integers(0, 3, 100)
    runs = []
    for _ in range(2):
        fg.set_seed(123)
        m = fg.Sequential([fg.layers.Dense(8, activation="relu", input_shape=(5,)),
                           fg.layers.Dense(3, activation="softmax")])
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        h = m.fit(x, y, epochs=3, batch_size=10, verbose=0)
        runs.append((m.get_weights(), h.history["loss"]))
    assert runs[0][1] == runs[1][1]
    for a, b in zip(runs[0][0], runs[1][0]):
        np.testing.assert_array_equal(a, b)
    fg.set_seed(124)
    m = fg.Sequential([fg.layers.Dense(8, input_shape=(5,))])
    assert not np.array_equal(m.get_weights()[0], runs[0][0][0])


def test_regression_with_mse_and_mae_metric():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((256, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype(np.float32)
    fg.set_seed(0)
    m = fg.Sequential([fg.layers.Dense(1, input_shape=(3,))])
    m.compile(optimizer=fg.optimizers.SGD(0.1, momentum=0.9), loss="mse", metrics=["mae"])
    h = m.fit(x, y, epochs=30, batch_size=32, verbose=0)
    assert h.history["loss"][-1] < 1e-4
    assert h.history["mae"][-1] < 1e-2
    np.testing.assert_allclose(m.get_weights()[0].ravel(), [1.0, -2.0, 0.5], atol=1e-2)


@pytest.mark.skipif(not native_available(), reason="native backend not built")
def test_every_isa_trains_like_numpy(each_isa, executor):
    """The same short run on each instruction-set path matches the NumPy backend."""
    from conftest import isa_paths
    from fastgrad import _native
    xtr, ytr, _, _ = _digits()
    xtr, ytr = xtr[:512], ytr[:512]

    def run(backend):
        with fg.use_backend(backend):
            fg.set_seed(0)
            m = fg.Sequential([fg.layers.Dense(24, activation="tanh", input_shape=(64,)),
                               fg.layers.Dense(10, activation="softmax")])
            m.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
            return m.fit(xtr, ytr, epochs=2, batch_size=32, verbose=0).history["loss"]

    ref = run("numpy")
    for isa in isa_paths():
        _native.set_isa(isa)
        np.testing.assert_allclose(run("native"), ref, rtol=1e-3, err_msg=isa)
