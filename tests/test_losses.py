"""Losses: values against float64 formulas, gradients by finite differences,
sample weights, name resolution, and the fused (logits) model path against
the unfused one."""
import zlib

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import losses as L
from fastgrad import _config

from conftest import backends

@pytest.fixture(params=["compiled", "python"])
def executor(request, monkeypatch):
    """Native backend through the compiled step, or forced through the Python Step."""
    from fastgrad.engine import compiled
    monkeypatch.setattr(compiled, "enabled", request.param == "compiled")
    return request.param



def _ref_loss(kind, out, y, sw=None, logits=False):
    """float64 per-sample losses, Keras definitions, then the weighted mean."""
    out = out.astype(np.float64)
    eps = 1e-7
    if kind == "mse":
        per = ((out - y) ** 2).mean(axis=1)
    elif kind == "bce":
        if logits:
            p = 1 / (1 + np.exp(-out))
        else:
            p = np.clip(out, eps, 1 - eps)
        per = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=1)
    elif kind in ("cce", "scce"):
        t = y if kind == "cce" else np.eye(out.shape[1])[y]
        if logits:
            z = out - out.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        else:
            q = out / out.sum(axis=1, keepdims=True)
            logp = np.log(np.clip(q, eps, 1 - eps))
        per = -(t * logp).sum(axis=1)
    if sw is not None:
        per = per * sw
    return per.sum() / out.shape[0]


def _probs(rng, n, k):
    """Rows of probabilities bounded away from 0 (each >= 0.2/k): -log q has
    curvature 1/q^2, so a Dirichlet draw near 0 makes a central difference with
    a fixed step meaningless rather than testing the gradient."""
    return 0.8 * rng.dirichlet(np.ones(k), n) + 0.2 / k


def _case(kind, logits, rng, n=6, k=4):
    if kind == "mse":
        return L.MeanSquaredError(), rng.standard_normal((n, k)), rng.standard_normal((n, k))
    if kind == "bce":
        out = rng.standard_normal((n, k)) if logits else rng.uniform(0.05, 0.95, (n, k))
        return L.BinaryCrossentropy(from_logits=logits), out, rng.integers(0, 2, (n, k)).astype(float)
    if kind == "cce":
        out = rng.standard_normal((n, k)) if logits else _probs(rng, n, k)
        t = rng.dirichlet(np.ones(k), n)   # soft targets
        return L.CategoricalCrossentropy(from_logits=logits), out, t
    out = rng.standard_normal((n, k)) if logits else _probs(rng, n, k)
    return (L.SparseCategoricalCrossentropy(from_logits=logits), out,
            rng.integers(0, k, n).astype(L.LABEL_DTYPE))


CASES = [(k, lg) for k in ("mse", "bce", "cce", "scce") for lg in (False, True)
         if not (k == "mse" and lg)]


@pytest.mark.parametrize("kind,logits", CASES)
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_value_and_fd_gradient_float64(kind, logits, weighted):
    # crc32, not hash(): str hashing is salted per process (PYTHONHASHSEED), and
    # a test's data must be the same in every run.
    rng = np.random.default_rng(zlib.crc32(repr((kind, logits, weighted)).encode()))
    loss, out, y = _case(kind, logits, rng)
    sw = rng.uniform(0.2, 2.0, out.shape[0]) if weighted else None
    ops = _config.get_ops("numpy")
    val, g = loss.compute(ops, out, y, sw, np.empty_like(out), logits)
    assert val == pytest.approx(_ref_loss(kind, out, y, sw, logits), rel=1e-10)
    eps = 1e-6
    num = np.zeros_like(out)
    for i in np.ndindex(out.shape):
        o = out.copy(); o[i] += eps
        lp = loss.compute(ops, o, y, sw, np.empty_like(o), logits)[0]
        o[i] -= 2 * eps
        lm = loss.compute(ops, o, y, sw, np.empty_like(o), logits)[0]
        num[i] = (lp - lm) / (2 * eps)
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("kind,logits", CASES)
@pytest.mark.parametrize("n,k", [(1, 1), (3, 2), (17, 10), (129, 7)])
def test_loss_float32_matches_float64(backend, kind, logits, n, k):
    if kind in ("cce", "scce") and k == 1:
        k = 2
    rng = np.random.default_rng(n * 31 + k)
    loss, out, y = _case(kind, logits, rng, n, k)
    sw = rng.uniform(0.5, 1.5, n)
    ops64 = _config.get_ops("numpy")
    v64, g64 = loss.compute(ops64, out, y, sw, np.empty_like(out), logits)
    ops = _config.get_ops(backend)
    y32 = y if y.dtype.kind == "i" else y.astype(np.float32)
    out32 = out.astype(np.float32)
    v32, g32 = loss.compute(ops, out32, y32, sw.astype(np.float32), np.empty_like(out32), logits)
    assert g32.dtype == np.float32
    assert v32 == pytest.approx(v64, rel=1e-4, abs=1e-6)
    np.testing.assert_allclose(g32, g64, rtol=1e-3, atol=1e-6 / n)


def test_loss_call_keras_style():
    y = np.array([[0.0, 1.0], [1.0, 0.0]])
    p = np.array([[0.2, 0.8], [0.6, 0.4]])
    assert L.CategoricalCrossentropy()(y, p) == pytest.approx(-(np.log(0.8) + np.log(0.6)) / 2,
                                                              rel=1e-5)
    assert L.SparseCategoricalCrossentropy()(np.array([1, 0]), p) == pytest.approx(
        -(np.log(0.8) + np.log(0.6)) / 2, rel=1e-5)
    assert L.get("mse")([1.0, 2.0], [1.5, 2.0]) == pytest.approx(0.125)
    assert L.binary_crossentropy(np.array([1.0]), np.array([0.9])) == pytest.approx(-np.log(0.9),
                                                                                    rel=1e-5)


def test_loss_get_names():
    assert isinstance(L.get("mse"), L.MeanSquaredError)
    assert isinstance(L.get("mean_squared_error"), L.MeanSquaredError)
    assert isinstance(L.get("binary_crossentropy"), L.BinaryCrossentropy)
    assert isinstance(L.get("categorical_crossentropy"), L.CategoricalCrossentropy)
    assert isinstance(L.get("sparse_categorical_crossentropy"), L.SparseCategoricalCrossentropy)
    assert isinstance(L.get("SparseCategoricalCrossentropy"), L.SparseCategoricalCrossentropy)
    assert L.get("categorical_crossentropy").fusable_activation == "softmax"
    assert L.get("binary_crossentropy").fusable_activation == "sigmoid"
    assert L.CategoricalCrossentropy(from_logits=True).fusable_activation is None
    with pytest.raises(ValueError, match="unknown loss"):
        L.get("hinge2")
    with pytest.raises(TypeError):
        L.get(3.0)
    d = L.serialize(L.BinaryCrossentropy(from_logits=True))
    assert L.deserialize(d).from_logits is True


def _pair(out_act, loss_fused, loss_logits, classes, seed=0):
    """Two models with equal weights: softmax/sigmoid + probability loss (fused
    internally) vs linear + from_logits loss."""
    models = []
    for act, loss in ((out_act, loss_fused), (None, loss_logits)):
        fg.set_seed(seed)
        m = fg.Sequential([fg.layers.Dense(8, activation="tanh", input_shape=(5,)),
                           fg.layers.Dense(classes, activation=act)])
        m.compile(optimizer=fg.optimizers.SGD(0.1), loss=loss)
        models.append(m)
    return models


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("case", ["scce", "cce", "bce"])
def test_fused_output_equals_from_logits(backend, case, executor):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((32, 5)).astype(np.float32)
    if case == "scce":
        y = rng.integers(0, 3, 32)
        a, b = _pair("softmax", "sparse_categorical_crossentropy",
                     L.SparseCategoricalCrossentropy(from_logits=True), 3)
    elif case == "cce":
        y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 32)]
        a, b = _pair("softmax", "categorical_crossentropy",
                     L.CategoricalCrossentropy(from_logits=True), 3)
    else:
        y = rng.integers(0, 2, (32, 1)).astype(np.float32)
        a, b = _pair("sigmoid", "binary_crossentropy", L.BinaryCrossentropy(from_logits=True), 1)
    with fg.use_backend(backend):
        assert a.describe()["output_activation"] in ("softmax", "sigmoid")
        assert b.describe()["output_activation"] is None
        la = a.fit(x, y, epochs=3, batch_size=8, verbose=0, shuffle=False).history["loss"]
        lb = b.fit(x, y, epochs=3, batch_size=8, verbose=0, shuffle=False).history["loss"]
        np.testing.assert_allclose(la, lb, rtol=1e-6)
        for wa, wb in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_allclose(wa, wb, rtol=1e-6, atol=1e-7)
        # predict returns probabilities for the fused model, logits for the other
        pa, pb = a.predict(x), b.predict(x)
        ref = (1 / (1 + np.exp(-pb))) if case == "bce" else \
            np.exp(pb) / np.exp(pb).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(pa, ref, rtol=1e-5, atol=1e-6)


def test_fused_loss_is_stable_for_saturated_outputs():
    """Huge logits: the probability path would clip at eps; the fused path gives
    the exact (large) loss and a finite gradient."""
    m = fg.Sequential([fg.layers.Dense(2, activation="softmax", input_shape=(1,),
                                       kernel_initializer=fg.initializers.Constant(0.0))])
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    m.set_weights([np.array([[100.0, -100.0]], np.float32), np.zeros(2, np.float32)])
    loss = m.test_on_batch(np.array([[1.0]], np.float32), np.array([1]))
    assert loss == pytest.approx(200.0, rel=1e-5)


def test_unfused_probability_losses_still_work():
    """A linear output with a probability loss (no activation to absorb) runs the
    clipped probability kernel; sparse labels are one-hot encoded on the fly."""
    m = fg.Sequential([fg.layers.Dense(3, activation="relu", input_shape=(2,))])
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert m.describe()["output_activation"] is None
    m.set_weights([np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], np.float32),
                   np.full(3, 0.1, np.float32)])
    v = m.test_on_batch(np.array([[1.0, 0.0]], np.float32), np.array([2]))
    assert v == pytest.approx(-np.log(3.1 / 6.3), rel=1e-5)
