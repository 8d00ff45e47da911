"""Conv nets on the compiled plan (csrc/step layer_conv2d.c, layer_pool2d.c,
layer_gpool.c, batch norm over channels, flatten of any rank): the plan gives
the Python executor's bits for 1, 2 and 3 threads — weights after fit,
training logs, evaluate and predict — and its checks refuse bad
descriptions (the model then falls back to the Python step, with a reason).
"""

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _config
from fastgrad.engine import compiled

from conftest import compiled_enabled, native_available

pytestmark = [
    pytest.mark.skipif(
        not native_available() or fg._native.module("step") is None or fg._native.module("conv") is None,
        reason="native backend / step / conv modules not built"),
    pytest.mark.usefixtures("native_backend"),
]

L = fg.layers


def lenet():
    m = fg.Sequential([
        fg.Input(shape=(28, 28, 1)),
        L.Conv2D(6, 5, activation="tanh"),
        L.AveragePooling2D(),
        L.Conv2D(16, 5, activation="relu"),
        L.AveragePooling2D(),
        L.Flatten(),
        L.Dense(120, activation="relu"),
        L.Dense(84, activation="relu"),
        L.Dense(10, activation="softmax"),
    ])
    m.compile(optimizer=fg.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m, (28, 28, 1)


def cifar():
    m = fg.Sequential([
        fg.Input(shape=(12, 12, 3)),   # the CIFAR net's layers on a smaller image
        L.Conv2D(8, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
        L.Conv2D(8, 3, padding="same"), L.BatchNormalization(), L.ReLU(),
        L.MaxPooling2D(),
        L.Conv2D(12, 3, activation="relu"),
        L.Conv2D(12, 3, activation="relu"),
        L.MaxPooling2D(),
        L.GlobalAveragePooling2D(),
        L.Dense(10, activation="softmax"),
    ])
    m.compile(optimizer=fg.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m, (12, 12, 3)


def odd():
    """Strides, dilation, groups, same padding with odd sizes, 1-D layers, a
    gelu conv (keeps its pre-activation), max global pooling, regularizers."""
    a = fg.Input(shape=(11, 9, 4))
    h = L.Conv2D(6, (3, 2), strides=(2, 1), padding="same", dilation_rate=1, groups=2, activation="gelu",
                 kernel_regularizer=fg.regularizers.L2(0.01))(a)
    h = L.Conv2D(5, 3, dilation_rate=(1, 2), padding="same", activation="elu")(h)
    h = L.MaxPooling2D((3, 3), strides=(2, 2), padding="same")(h)
    h = L.Reshape((15, 5))(h)
    h = L.Conv1D(7, 3, strides=2, padding="causal", activation="tanh")(h)
    h = L.AveragePooling1D(2, padding="same")(h)
    g = L.Flatten()(h)
    out = L.Dense(3, activation="softmax")(L.Concatenate()([g, L.GlobalMaxPooling2D()(a)]))
    m = fg.Model(a, out)
    m.compile(optimizer=fg.optimizers.SGD(0.05, momentum=0.9), loss="sparse_categorical_crossentropy")
    return m, (11, 9, 4)


MODELS = {"lenet": lenet, "cifar": cifar, "odd": odd}


def _run(name, on, threads, n=45, epochs=2, batch_size=16):
    _config.set_num_threads(threads)
    fg.set_seed(3)
    m, shape = MODELS[name]()
    r = np.random.default_rng(0)
    x = r.standard_normal((n,) + shape).astype(np.float32)
    y = r.integers(0, 3 if name == "odd" else 10, n)
    with compiled_enabled(on):
        fg.set_seed(11)
        h = m.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
        ev = m.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
        pr = m.predict(x[:37], batch_size=8, verbose=0)
        plan = m.__dict__.get("_fg_train_plan", (None, None))[1]
        if on:
            assert plan is not None, compiled.unsupported_reason(m)
        else:
            assert plan is None
    return m, h.history, ev, pr


@pytest.mark.parametrize("name", sorted(MODELS))
def test_plan_matches_python_step_bitwise(name):
    ref = _run(name, False, 1)
    for threads in (1, 2, 3):
        got = _run(name, True, threads)
        assert all(np.array_equal(u, v) for u, v in zip(got[0].get_weights(), ref[0].get_weights())), threads
        regularized = name == "odd"
        for k in ref[1]:
            if regularized:
                np.testing.assert_allclose(got[1][k], ref[1][k], rtol=1e-6)
            else:
                assert got[1][k] == ref[1][k], (k, threads)
        assert np.array_equal(got[3], ref[3]), threads
        for k in ref[2]:
            np.testing.assert_allclose(got[2][k], ref[2][k], rtol=1e-6)


def test_conv_nets_have_a_c_path():
    for name in MODELS:
        m, _ = MODELS[name]()
        assert compiled.unsupported_reason(m) is None, (name, compiled.unsupported_reason(m))


def test_kinds_in_the_table_and_refusals_name_the_layer():
    step = fg._native.module("step")
    assert {"conv2d", "pool2d", "gpool"} <= set(step.LAYER_KINDS)
    m = fg.Sequential([fg.Input(shape=(6, 6, 2)), L.Conv2D(3, 3), L.BatchNormalization(axis=1, name="bn_h"),
                       L.Flatten(), L.Dense(2)])
    m.compile(optimizer="sgd", loss="mse")
    reason = compiled.unsupported_reason(m)
    assert reason is not None and "bn_h" in reason


def test_conv_training_learns():
    """LeNet on the plan fits a small separable problem (the compiled path trains)."""
    _config.set_num_threads(2)
    fg.set_seed(0)
    m, _ = lenet()
    r = np.random.default_rng(1)
    y = r.integers(0, 2, 256)
    x = r.standard_normal((256, 28, 28, 1)).astype(np.float32) * 0.3
    x[y == 1, 8:20, 8:20, 0] += 1.0
    with compiled_enabled(True):
        h = m.fit(x, y, batch_size=32, epochs=4, verbose=0)
        assert m.__dict__.get("_fg_train_plan", (None, None))[1] is not None
    assert h.history["accuracy"][-1] > 0.9
