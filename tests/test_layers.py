"""Layers: finite-difference gradient checks in float64 on the NumPy backend
(every layer, every activation), native float32 gradients against that
reference, config round trips and describe()."""
import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _config
from fastgrad.engine.workspace import Workspace
from fastgrad.layers import Dense, Activation, Flatten

from conftest import backends

ACTS = ["linear", "relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "softmax", "log_softmax"]


def _bind64(layer, input_shape, rng):
    """Build `layer` and bind float64 parameter / gradient arrays (no model)."""
    layer.build(input_shape)
    params, grads = {}, {}
    for spec in layer.param_specs():
        params[spec.name] = rng.standard_normal(spec.shape) * 0.5
        grads[spec.name] = np.zeros(spec.shape)
    state = {spec.name: np.asarray(spec.initializer(spec.shape), np.float64)
             for spec in layer.state_specs()}
    layer.bind(params, grads, state)
    return params, grads


def _fd_check(layer, x, params, grads, rng, eps=1e-6, rtol=1e-5, atol=1e-7, need_dx=True):
    """Central differences of L = sum(forward(x) * R) vs backward(R)."""
    ws = Workspace()
    y = layer.forward(x, True, ws)
    R = rng.standard_normal(y.shape)
    dx = layer.backward(R.copy(), ws, need_dx)
    dx = None if dx is None else np.array(dx, copy=True)
    analytic = {k: np.array(v, copy=True) for k, v in grads.items()}

    def L():
        return float(np.sum(layer.forward(x, True, Workspace()) * R))

    def numeric(arr):
        g = np.zeros_like(arr)
        flat, gf = arr.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            lp = L()
            flat[i] = old - eps
            lm = L()
            flat[i] = old
            gf[i] = (lp - lm) / (2 * eps)
        return g

    if need_dx:
        np.testing.assert_allclose(dx, numeric(x), rtol=rtol, atol=atol, err_msg="dx")
    for k, p in params.items():
        np.testing.assert_allclose(analytic[k], numeric(p), rtol=rtol, atol=atol, err_msg=k)


@pytest.fixture
def numpy_backend():
    with fg.use_backend("numpy"):
        yield


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_gradients_fd(numpy_backend, act, use_bias):
    rng = np.random.default_rng(1)
    layer = Dense(5, activation=act, use_bias=use_bias)
    params, grads = _bind64(layer, (4,), rng)
    x = rng.standard_normal((3, 4))
    if act == "relu":
        x += np.sign(x) * 0.05   # keep away from the kink
    _fd_check(layer, x, params, grads, rng)


@pytest.mark.parametrize("act", ACTS)
def test_activation_layer_gradients_fd(numpy_backend, act):
    rng = np.random.default_rng(2)
    layer = Activation(act)
    _bind64(layer, (6,), rng)
    x = rng.standard_normal((4, 6))
    if act == "relu":
        x += np.sign(x) * 0.05
    _fd_check(layer, x, {}, {}, rng)


def test_flatten_gradients_and_view(numpy_backend):
    rng = np.random.default_rng(3)
    layer = Flatten()
    assert layer.build((2, 3, 4)) == (24,)
    x = rng.standard_normal((5, 2, 3, 4))
    ws = Workspace()
    y = layer.forward(x, True, ws)
    assert y.shape == (5, 24) and np.shares_memory(y, x)
    _fd_check(layer, x, {}, {}, rng)


def test_dense_first_layer_skips_dx(numpy_backend):
    rng = np.random.default_rng(4)
    layer = Dense(3, activation="tanh")
    params, grads = _bind64(layer, (4,), rng)
    x = rng.standard_normal((2, 4))
    ws = Workspace()
    layer.forward(x, True, ws)
    assert layer.backward(np.ones((2, 3)), ws, need_dx=False) is None
    _fd_check(layer, x, params, grads, rng, need_dx=False)


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("act", ["linear", "relu", "sigmoid", "tanh", "gelu", "softmax"])
@pytest.mark.parametrize("n,fin,fout", [(1, 1, 1), (7, 9, 3), (17, 33, 16), (64, 129, 10)])
def test_dense_float32_matches_float64_reference(backend, act, n, fin, fout):
    """float32 forward/backward on each backend vs the float64 NumPy result."""
    rng = np.random.default_rng(n * 1000 + fin)
    x64 = rng.standard_normal((n, fin))
    w64 = rng.standard_normal((fin, fout)) / np.sqrt(fin)
    b64 = rng.standard_normal(fout) * 0.1
    R = rng.standard_normal((n, fout))
    out = {}
    for dt, bk in ((np.float64, "numpy"), (np.float32, backend)):
        layer = Dense(fout, activation=act)
        layer.build((fin,))
        p = {"kernel": w64.astype(dt), "bias": b64.astype(dt)}
        g = {"kernel": np.zeros((fin, fout), dt), "bias": np.zeros(fout, dt)}
        layer.bind(p, g, {})
        with fg.use_backend(bk):
            ws = Workspace()
            y = np.array(layer.forward(x64.astype(dt), True, ws), dtype=np.float64)
            dx = np.array(layer.backward(R.astype(dt), ws, True), dtype=np.float64)
        out[dt] = (y, dx, g["kernel"].astype(np.float64), g["bias"].astype(np.float64))
    for a, b, name in zip(out[np.float32], out[np.float64], ("y", "dx", "dw", "db")):
        scale = max(1.0, np.abs(b).max())
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5 * scale * np.sqrt(max(fin, n)),
                                   err_msg=f"{name} ({backend}, {act})")


def test_dense_validation():
    with pytest.raises(ValueError, match="units"):
        Dense(0)
    with pytest.raises(ValueError, match="units"):
        Dense(-3)
    with pytest.raises(ValueError, match="unknown activation"):
        Dense(3, activation="swishy")
    with pytest.raises(ValueError, match="initializer"):
        Dense(3, kernel_initializer="nope")
    with pytest.raises(ValueError, match="regularizer"):
        Dense(3, kernel_regularizer="l3")
    with pytest.raises(TypeError, match="unexpected keyword"):
        Dense(3, unitz=4)
    assert Dense(3).build((4, 5)) == (4, 3)      # any rank, on the last axis (Keras)
    with pytest.raises(ValueError, match="input_shape or input_dim"):
        Dense(3, input_shape=(2,), input_dim=2)


@pytest.mark.parametrize("layer", [
    Dense(7, activation="gelu", use_bias=False, kernel_initializer="he_normal",
          kernel_regularizer=fg.regularizers.L2(0.1), input_shape=(3,), name="d_cfg"),
    Activation("tanh", name="act_cfg"),
    Flatten(name="flat_cfg"),
])
def test_config_round_trip(layer):
    cfg = layer.get_config()
    clone = fg.layers.deserialize({"class_name": type(layer).__name__, "config": cfg})
    assert type(clone) is type(layer)
    assert clone.get_config() == cfg


def test_initializers_keras_semantics():
    fg.set_seed(0)
    a = fg.initializers.GlorotUniform()((300, 200))
    lim = np.sqrt(6 / 500)
    assert a.dtype == np.float32 and np.abs(a).max() <= lim
    assert abs(a.std() - lim / np.sqrt(3)) < 0.02 * lim
    h = fg.initializers.HeNormal()((400, 300))
    assert np.abs(h).max() <= 2 * np.sqrt(2 / 400) / 0.8796256610342398 + 1e-6   # truncated
    assert abs(h.std() - np.sqrt(2 / 400)) < 0.03 * np.sqrt(2 / 400)
    ln = fg.initializers.LecunNormal()((500, 100))
    assert abs(ln.std() - np.sqrt(1 / 500)) < 0.03 * np.sqrt(1 / 500)
    gn = fg.initializers.get("glorot_normal")((100, 100))
    assert abs(gn.std() - np.sqrt(2 / 200)) < 0.05 * np.sqrt(2 / 200)
    assert (fg.initializers.get("zeros")((3,)) == 0).all()
    assert (fg.initializers.Ones()((2, 2)) == 1).all()
    assert (fg.initializers.Constant(2.5)((2,)) == 2.5).all()
    r = fg.initializers.RandomNormal(stddev=0.5)((10000,))
    assert abs(r.std() - 0.5) < 0.02
    u = fg.initializers.RandomUniform(-1, 2)((10000,))
    assert u.min() >= -1 and u.max() <= 2
    # a seeded initializer repeats itself; unseeded ones follow fg.set_seed
    s = fg.initializers.HeUniform(seed=5)
    assert np.array_equal(s((4, 4)), s((4, 4)))
    fg.set_seed(7)
    x1 = fg.initializers.GlorotUniform()((5, 5))
    fg.set_seed(7)
    x2 = fg.initializers.GlorotUniform()((5, 5))
    assert np.array_equal(x1, x2)
    with pytest.raises(ValueError, match="unknown initializer"):
        fg.initializers.get("glorot_uniformm")


def test_regularizers_penalty_and_gradient():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 4)).astype(np.float32)
    ops = _config.get_ops("numpy")
    for reg, pen, grad in [
        (fg.regularizers.L1(0.1), 0.1 * np.abs(w).sum(), 0.1 * np.sign(w)),
        (fg.regularizers.L2(0.2), 0.2 * (w.astype(np.float64) ** 2).sum(), 0.4 * w),
        (fg.regularizers.L1L2(0.1, 0.2), 0.1 * np.abs(w).sum() + 0.2 * (w.astype(np.float64) ** 2).sum(),
         0.1 * np.sign(w) + 0.4 * w),
    ]:
        assert reg(w) == pytest.approx(pen, rel=1e-6)
        assert reg.penalty(ops, w, np.empty_like(w)) == pytest.approx(pen, rel=1e-5)
        g = np.zeros_like(w)
        reg.add_gradient(w, g, np.empty_like(w))
        np.testing.assert_allclose(g, grad, rtol=1e-6)
    assert isinstance(fg.regularizers.get("l2"), fg.regularizers.L2)
    with pytest.raises(ValueError):
        fg.regularizers.L2(-1)


def test_activations_get():
    assert fg.activations.get(None) == "linear"
    assert fg.activations.get("ReLU") == "relu"
    assert fg.activations.get(fg.activations.tanh) == "tanh"
    with pytest.raises(ValueError, match="unknown activation"):
        fg.activations.get("swish2")
    with pytest.raises(TypeError):
        fg.activations.get(3)
    x = np.array([[-1.0, 0.0, 2.0]], np.float32)
    np.testing.assert_allclose(fg.activations.relu(x), [[0, 0, 2]])
    np.testing.assert_allclose(fg.activations.softmax(x).sum(), 1.0, rtol=1e-6)


def test_describe_lists_offsets():
    m = fg.Sequential([Dense(4, activation="relu", input_shape=(3,)), Dense(2, use_bias=False)])
    d = [l.describe() for l in m.layers]
    assert d[0]["kind"] == "dense" and d[0]["units"] == 4 and d[0]["activation"] == "relu"
    # every array starts at a multiple of 16 floats of a 64-byte aligned buffer
    assert d[0]["params"]["kernel"] == {"offset": 0, "shape": (3, 4)}
    assert d[0]["params"]["bias"] == {"offset": 16, "shape": (4,)}
    assert d[1]["params"] == {"kernel": {"offset": 32, "shape": (4, 2)}}
    flat = m.flat_params
    assert flat.ctypes.data % 64 == 0 and flat.size == 48
    assert np.shares_memory(m.layers[1].kernel, flat)
    np.testing.assert_array_equal(flat[32:40].reshape(4, 2), m.layers[1].kernel)
    assert not flat[12:16].any() and not flat[20:32].any() and not flat[40:].any()   # zero padding
