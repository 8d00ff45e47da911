"""Keras 3 activation layers (fastgrad/layers/activations.py): ReLU, LeakyReLU,
ELU, PReLU, Softmax — Keras defaults and config names, validation errors that
name the layer, values against float64 formulas (Keras's own relu written out),
inputs of any rank, finite-difference gradients in float64 (PReLU's alpha
included), native float32 against that reference, training with fit, saving,
and a PyTorch float64 oracle."""
import numpy as np
import pytest

import fastgrad as fg
from fastgrad.engine.workspace import Workspace
from fastgrad.layers import ELU, LeakyReLU, PReLU, ReLU, Softmax

from conftest import backends

SHAPES = [(6,), (3, 5), (2, 3, 4)]   # per-sample shapes: ranks 2, 3, 4 with the batch


def relu64(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """keras.activations.relu (Keras 3 ReLU.static_call), literally, in float64."""
    if negative_slope != 0.0:
        if max_value is None and threshold == 0:
            return np.where(x >= 0, x, negative_slope * x)
        negative_part = np.maximum(-x + threshold, 0) if threshold != 0 else np.maximum(-x, 0)
    else:
        negative_part = 1
    clip_max = max_value is not None
    if threshold != 0:
        x = x * (x > threshold)
    elif max_value == 6:
        x = np.clip(x, 0, 6)
        clip_max = False
    else:
        x = np.maximum(x, 0)
    if clip_max:
        x = np.clip(x, 0, max_value)
    if negative_slope != 0.0:
        x = x - negative_slope * negative_part
    return x


def softmax64(x, axes):
    m = np.max(x, axis=axes, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(axis=axes, keepdims=True)


def prelu_alpha_shape(input_shape, shared_axes):
    shape = list(input_shape)
    for a in shared_axes or ():
        shape[(a if a > 0 else a + len(input_shape) + 1) - 1] = 1
    return tuple(shape)


def bind(layer, input_shape, dtype=np.float64, seed=0):
    layer.build(input_shape)
    r = np.random.default_rng(seed)
    params = {s.name: (r.standard_normal(s.shape) * 0.5).astype(dtype) for s in layer.param_specs()}
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    layer.bind(params, grads, {})
    return params, grads


def fd_check(layer, x, params, grads, seed=1, eps=1e-6, rtol=1e-6, atol=1e-8):
    """Central differences of L = sum(forward(x) * R) vs backward(R), dx and every parameter."""
    r = np.random.default_rng(seed)
    ws = Workspace()
    y = layer.forward(x, True, ws)
    R = r.standard_normal(y.shape)
    dx = np.array(layer.backward(R.copy(), ws, True), copy=True)
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

    np.testing.assert_allclose(dx, numeric(x), rtol=rtol, atol=atol, err_msg="dx")
    for k, p in params.items():
        np.testing.assert_allclose(analytic[k], numeric(p), rtol=rtol, atol=atol, err_msg=k)


def away(x, pts, gap=0.05):
    x = x.copy()
    for k in pts:
        near = np.abs(x - k) < gap
        x[near] = k + np.where(x[near] >= k, 2 * gap, -2 * gap)
    return x


@pytest.fixture
def numpy_backend():
    with fg.use_backend("numpy"):
        yield


RELU_KW = [{}, {"max_value": 6.0}, {"negative_slope": 0.1}, {"threshold": 1.0}, {"max_value": 2.5},
           {"negative_slope": 0.2, "max_value": 3.0, "threshold": -0.5}, {"threshold": -1.0},
           {"negative_slope": 0.3, "threshold": 0.5}, {"max_value": 0.0, "negative_slope": 0.1}]


def make_layers():
    """(layer, float64 reference of its forward, kink points) for every layer kind."""
    out = [(ReLU(**kw), (lambda kw: lambda x: relu64(x, **kw))(kw),
            [0.0, kw.get("threshold", 0.0)] + ([kw["max_value"]] if "max_value" in kw else []))
           for kw in RELU_KW]
    out += [(LeakyReLU(), lambda x: np.where(x >= 0, x, 0.3 * x), [0.0]),
            (LeakyReLU(negative_slope=0.01), lambda x: np.where(x >= 0, x, 0.01 * x), [0.0]),
            (ELU(), lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))), [0.0]),
            (ELU(alpha=0.4), lambda x: np.where(x > 0, x, 0.4 * np.expm1(np.minimum(x, 0))), [0.0])]
    return out


LAYER_IDS = [f"ReLU{kw}" for kw in RELU_KW] + ["LeakyReLU", "LeakyReLU0.01", "ELU", "ELU0.4"]


# ---------------------------------------------------------------- defaults, config
def test_keras_defaults():
    r = ReLU()
    assert (r.max_value, r.negative_slope, r.threshold) == (None, 0.0, 0.0)
    assert LeakyReLU().negative_slope == 0.3
    assert ELU().alpha == 1.0
    p = PReLU()
    assert p.shared_axes is None and p.alpha_regularizer is None and p.alpha_constraint is None
    assert fg.initializers.serialize(p.alpha_initializer)["class_name"] == "Zeros"
    assert Softmax().axis == -1
    assert {k: v for k, v in ReLU().get_config().items() if k in ("max_value", "negative_slope", "threshold")} \
        == {"max_value": None, "negative_slope": 0.0, "threshold": 0.0}
    assert PReLU(shared_axes=2).shared_axes == [2]


@pytest.mark.parametrize("layer", [
    ReLU(max_value=4.0, negative_slope=0.1, threshold=0.5, name="relu_cfg", input_shape=(3, 4)),
    ReLU(), LeakyReLU(negative_slope=0.05, name="lr_cfg"), ELU(alpha=0.7, name="elu_cfg"),
    PReLU(alpha_initializer="ones", alpha_regularizer=fg.regularizers.L2(0.01), shared_axes=[1, 2],
          name="prelu_cfg"),
    PReLU(), Softmax(axis=1, name="sm_cfg"), Softmax(axis=[1, 2]), Softmax(),
])
def test_config_round_trip(layer):
    cfg = layer.get_config()
    clone = fg.layers.deserialize(fg.layers.serialize(layer))
    assert type(clone) is type(layer) and clone.get_config() == cfg
    assert clone.describe()["kind"] == layer.describe()["kind"]
    import json
    json.dumps(cfg)  # JSON friendly


def test_registered_and_exported():
    for name in ("ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax"):
        assert name in fg.layers.__all__ and fg.layers._LAZY[name] == ".activations"
        cls = getattr(fg.layers, name)
        assert fg.layers.get_layer_class(name) is cls


def test_leaky_relu_accepts_keras2_alpha():
    with pytest.warns(DeprecationWarning, match="negative_slope"):
        layer = LeakyReLU(alpha=0.1)
    assert layer.negative_slope == 0.1 and "alpha" not in layer.get_config()


@pytest.mark.parametrize("make,match", [
    (lambda: ReLU(max_value=-1.0), r"ReLU re_lu\w*: max_value cannot be negative"),
    (lambda: ReLU(negative_slope=-0.1), r"ReLU \w+: negative_slope cannot be negative"),
    (lambda: ReLU(negative_slope=None), r"ReLU \w+: negative_slope cannot be None"),
    (lambda: ReLU(threshold=None), r"ReLU \w+: threshold cannot be None"),
    (lambda: ReLU(threshold=float("nan")), r"ReLU \w+: threshold must be a finite number"),
    (lambda: ReLU(max_value="6"), r"ReLU \w+: max_value must be a finite number or None"),
    (lambda: LeakyReLU(negative_slope=-1), r"LeakyReLU \w+: negative_slope cannot be negative"),
    (lambda: LeakyReLU(negative_slope=None), r"LeakyReLU \w+: negative_slope cannot be None"),
    (lambda: ELU(alpha="one"), r"ELU \w+: alpha must be a finite number"),
    (lambda: ELU(alpha=float("inf")), r"ELU \w+: alpha must be a finite number"),
    (lambda: PReLU(shared_axes=["h"]), r"PReLU \w+: shared_axes must be integers"),
    (lambda: PReLU(alpha_constraint="non_neg"), r"PReLU \w+: alpha_constraint is not supported"),
    (lambda: PReLU(alpha_initializer="nope"), r"PReLU \w+: alpha_initializer"),
    (lambda: Softmax(axis="x"), r"Softmax \w+: axis must be an integer"),
    (lambda: Softmax(axis=[]), r"Softmax \w+: axis must be an integer"),
    (lambda: ReLU(maxvalue=3), "unexpected keyword"),
])
def test_validation_names_the_layer(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


@pytest.mark.parametrize("layer,shape,match", [
    (PReLU(shared_axes=[0]), (3, 4), r"PReLU \w+: shared axis 0 is out of range .*axis 0 is the batch"),
    (PReLU(shared_axes=[3]), (3, 4), r"PReLU \w+: shared axis 3 is out of range"),
    (Softmax(axis=0), (5,), r"Softmax \w+: axis 0 is out of range for input of shape \(batch, 5\)"),
    (Softmax(axis=[1, 4]), (2, 3), r"Softmax \w+: axis 4 is out of range"),
    (Softmax(axis=-3), (5,), r"Softmax \w+: axis -3 is out of range"),
])
def test_validation_at_build(layer, shape, match):
    with pytest.raises(ValueError, match=match):
        layer.build(shape)
    with pytest.raises(ValueError, match=match.split(":")[0]):
        fg.Sequential([fg.layers.Input(shape), layer])


# ---------------------------------------------------------------- values, any rank
@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("shape", SHAPES)
def test_elementwise_values_any_rank(backend, shape):
    r = np.random.default_rng(3)
    x = (r.standard_normal((4,) + shape) * 3).astype(np.float32)
    x64 = x.astype(np.float64)
    with fg.use_backend(backend):
        for (layer, ref, _), lid in zip(make_layers(), LAYER_IDS):
            assert layer.build(shape) == shape
            y = layer(x)
            assert y.shape == x.shape and y.dtype == np.float32
            np.testing.assert_allclose(y, ref(x64), rtol=2e-7, atol=1e-7, err_msg=f"{lid} {backend}")


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("shape,shared", [((6,), None), ((3, 5), None), ((3, 5), [1]), ((2, 3, 4), [1, 2]),
                                          ((2, 3, 4), [2]), ((2, 3, 4), [-1]), ((2, 3, 4), [1, 2, 3])])
def test_prelu_values_and_alpha_layout(backend, shape, shared):
    layer = PReLU(shared_axes=shared)
    layer.build(shape)
    assert layer.param_specs()[0].shape == prelu_alpha_shape(shape, shared)
    assert layer.param_specs()[0].name == "alpha"
    r = np.random.default_rng(4)
    alpha = r.standard_normal(layer.param_specs()[0].shape).astype(np.float32)
    layer.bind({"alpha": alpha}, {"alpha": np.zeros_like(alpha)}, {})
    x = r.standard_normal((5,) + shape).astype(np.float32)
    with fg.use_backend(backend):
        y = layer(x)
    x64 = x.astype(np.float64)
    # Keras: relu(x) - alpha * relu(-x)
    np.testing.assert_allclose(y, np.maximum(x64, 0) - alpha * np.maximum(-x64, 0), rtol=1e-7, atol=1e-7)


def test_prelu_in_a_model_starts_as_relu_and_has_keras_weights():
    m = fg.Sequential([fg.layers.Input((2, 3)), PReLU(shared_axes=[1])])
    assert [w.shape for w in m.get_weights()] == [(1, 3)]
    assert m.count_params() == 3
    x = np.random.default_rng(5).standard_normal((4, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(m.predict(x, verbose=0), np.maximum(x, 0))   # alpha starts at zero


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("shape,axis", [((7,), -1), ((7,), 1), ((3, 5), -1), ((3, 5), 1), ((3, 5), [1, 2]),
                                        ((2, 3, 4), 2), ((2, 3, 4), -2), ((2, 3, 4), [1, 3]), ((33,), -1),
                                        ((2, 3, 4), (1, 2, 3))])
def test_softmax_any_axis(backend, shape, axis):
    layer = Softmax(axis=list(axis) if isinstance(axis, tuple) else axis)
    layer.build(shape)
    r = np.random.default_rng(6)
    x = (r.standard_normal((4,) + shape) * 4).astype(np.float32)
    nd = len(shape) + 1
    axes = tuple(sorted({(a + nd) % nd for a in (axis if isinstance(axis, (list, tuple)) else [axis])}))
    with fg.use_backend(backend):
        y = layer(x)
    ref = softmax64(x.astype(np.float64), axes)
    np.testing.assert_allclose(y, ref, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(y.sum(axis=axes), 1.0, rtol=1e-6)


@pytest.mark.skipif(not fg.backend.native_available(), reason="native backend not built")
def test_softmax_last_axis_runs_the_row_kernel():
    from fastgrad import _native
    K = _native.module("kernels")
    x = np.random.default_rng(7).standard_normal((4, 3, 9)).astype(np.float32)
    layer = Softmax()
    layer.build((3, 9))
    with fg.use_backend("native"):
        y = layer(x)
    ref = np.empty((12, 9), np.float32)
    K.softmax_forward(x.reshape(12, 9), ref, False, 1)
    np.testing.assert_array_equal(y.reshape(12, 9), ref)   # the C row softmax's own bits


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("shape", [(5,), (2, 3, 2)])
@pytest.mark.parametrize("idx", range(len(LAYER_IDS)), ids=LAYER_IDS)
def test_elementwise_gradients_fd(numpy_backend, idx, shape):
    layer, _, pts = make_layers()[idx]
    params, grads = bind(layer, shape)
    x = away(np.random.default_rng(idx).uniform(-4, 4, (3,) + shape), pts)
    fd_check(layer, x, params, grads)


@pytest.mark.parametrize("shape,shared", [((4,), None), ((3, 4), [1]), ((2, 3, 2), [1, 2]), ((2, 3, 2), [2]),
                                          ((2, 3, 2), None)])
def test_prelu_gradients_fd(numpy_backend, shape, shared):
    """dx and the alpha gradient (summed over the batch and the shared axes)
    against central differences in float64."""
    layer = PReLU(shared_axes=shared)
    params, grads = bind(layer, shape, seed=2)
    x = away(np.random.default_rng(8).uniform(-3, 3, (4,) + shape), [0.0])
    fd_check(layer, x, params, grads)
    assert grads["alpha"].shape == prelu_alpha_shape(shape, shared)
    ws = Workspace()
    layer.forward(x, True, ws)
    assert layer.backward(np.ones_like(x), ws, need_dx=False) is None   # alpha gradient still written
    np.testing.assert_allclose(grads["alpha"], np.minimum(x, 0).sum(
        axis=tuple([0] + [a for a in (shared or [])]), keepdims=True).reshape(grads["alpha"].shape))


@pytest.mark.parametrize("shape,axis", [((5,), -1), ((3, 4), 1), ((2, 3, 2), [1, 3]), ((2, 3, 2), 2)])
def test_softmax_gradients_fd(numpy_backend, shape, axis):
    layer = Softmax(axis=axis)
    params, grads = bind(layer, shape)
    x = np.random.default_rng(9).standard_normal((3,) + shape)
    fd_check(layer, x, params, grads)


@pytest.mark.skipif(not fg.backend.native_available(), reason="native backend not built")
@pytest.mark.parametrize("kind", ["relu", "relu_full", "leaky", "elu", "prelu", "softmax", "softmax_mid"])
def test_native_float32_matches_float64(kind):
    shape = (3, 5)
    make = {"relu": lambda: ReLU(), "relu_full": lambda: ReLU(max_value=2.0, negative_slope=0.1, threshold=0.3),
            "leaky": lambda: LeakyReLU(), "elu": lambda: ELU(0.5), "prelu": lambda: PReLU(shared_axes=[1]),
            "softmax": lambda: Softmax(), "softmax_mid": lambda: Softmax(axis=1)}[kind]
    r = np.random.default_rng(10)
    x64 = r.standard_normal((6,) + shape) * 2
    R = r.standard_normal((6,) + shape)
    out = {}
    for dt, bk in ((np.float64, "numpy"), (np.float32, "native")):
        layer = make()
        params, grads = bind(layer, shape, dtype=dt, seed=3)
        with fg.use_backend(bk):
            ws = Workspace()
            y = np.array(layer.forward(x64.astype(dt), True, ws), dtype=np.float64)
            dx = np.array(layer.backward(R.astype(dt), ws, True), dtype=np.float64)
        out[dt] = [y, dx] + [np.array(g, dtype=np.float64) for g in grads.values()]
    for a, b in zip(out[np.float32], out[np.float64]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=kind)


# ---------------------------------------------------------------- models
def _fit_loss(layer, backend, shape=(3, 4), epochs=12):
    r = np.random.default_rng(11)
    x = r.standard_normal((96,) + shape).astype(np.float32)
    y = np.tanh(x.reshape(96, -1) @ r.standard_normal((int(np.prod(shape)), 2))).astype(np.float32)
    with fg.use_backend(backend):
        fg.set_seed(3)
        m = fg.Sequential([fg.layers.Input(shape), fg.layers.Flatten(), fg.layers.Dense(16), layer,
                           fg.layers.Dense(2)])
        m.compile(optimizer=fg.optimizers.Adam(0.01), loss="mse")
        h = m.fit(x, y, epochs=epochs, batch_size=16, verbose=0)
    return h.history["loss"], m


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("make", [lambda: ReLU(), lambda: ReLU(max_value=6.0), lambda: ReLU(negative_slope=0.1,
                                  threshold=0.2, max_value=3.0), lambda: LeakyReLU(), lambda: ELU(),
                                  lambda: PReLU(), lambda: Softmax()],
                         ids=["ReLU", "ReLU6", "ReLUfull", "LeakyReLU", "ELU", "PReLU", "Softmax"])
def test_sequential_trains(backend, make):
    loss, _ = _fit_loss(make(), backend)
    assert np.all(np.isfinite(loss)) and loss[-1] < 0.7 * loss[0], loss


@pytest.mark.parametrize("backend", backends())
def test_prelu_and_rank3_activations_train_in_a_model(backend):
    r = np.random.default_rng(12)
    x = r.standard_normal((128, 4, 3)).astype(np.float32)
    y = (np.abs(x).sum(axis=(1, 2)) > 2.5).astype(np.int64)
    with fg.use_backend(backend):
        fg.set_seed(5)
        m = fg.Sequential([fg.layers.Input((4, 3)), LeakyReLU(0.1), ELU(), ReLU(max_value=5.0, negative_slope=0.05),
                           PReLU(shared_axes=[1], alpha_initializer=fg.initializers.Constant(0.25)),
                           fg.layers.Flatten(), fg.layers.Dense(16), PReLU(), fg.layers.Dense(2), Softmax()])
        m.compile(optimizer=fg.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        before = m.get_weights()[0].copy()
        h = m.fit(x, y, epochs=15, batch_size=32, verbose=0)
        assert h.history["loss"][-1] < 0.8 * h.history["loss"][0]
        assert not np.array_equal(m.get_weights()[0], before)       # PReLU's alpha learns
        p = m.predict(x[:7], verbose=0)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("backend", backends())
def test_softmax_layer_fuses_into_the_loss_like_dense_softmax(backend):
    """Dense(10) + Softmax() with a cross-entropy on probabilities hands the
    softmax to the fused loss, exactly as Dense(10, activation="softmax")."""
    r = np.random.default_rng(13)
    x = r.standard_normal((64, 8)).astype(np.float32)
    y = r.integers(0, 10, 64)
    hist, weights = [], None
    with fg.use_backend(backend):
        for split in (True, False):
            if split:
                m = fg.Sequential([fg.layers.Input((8,)), fg.layers.Dense(10), Softmax()])
                weights = m.get_weights()
            else:
                m = fg.Sequential([fg.layers.Input((8,)), fg.layers.Dense(10, activation="softmax")])
                m.set_weights(weights)
            m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
            assert m._output_activation == "softmax"
            fg.set_seed(9)
            hist.append((m.fit(x, y, epochs=3, batch_size=16, verbose=0).history["loss"], m.predict(x, verbose=0)))
    np.testing.assert_allclose(hist[0][0], hist[1][0], rtol=1e-6)
    np.testing.assert_allclose(hist[0][1], hist[1][1], rtol=1e-5, atol=1e-7)
    # a Softmax over another axis, or not last, is not fused
    m = fg.Sequential([fg.layers.Input((2, 5)), Softmax(axis=1), fg.layers.Flatten()])
    m.compile(optimizer="sgd", loss="categorical_crossentropy")
    assert m._output_activation is None


def test_save_and_load(tmp_path):
    r = np.random.default_rng(14)
    x = r.standard_normal((32, 3, 4)).astype(np.float32)
    y = r.standard_normal((32, 2)).astype(np.float32)
    fg.set_seed(2)
    m = fg.Sequential([fg.layers.Input((3, 4)), PReLU(shared_axes=[2], alpha_regularizer="l2"),
                       ReLU(max_value=4.0, threshold=-0.5, negative_slope=0.05), LeakyReLU(0.2), ELU(0.9),
                       Softmax(axis=1), fg.layers.Flatten(), fg.layers.Dense(2)])
    m.compile(optimizer="adam", loss="mse")
    m.fit(x, y, epochs=2, verbose=0)
    path = tmp_path / "act.fgm"
    m.save(path)
    m2 = fg.models.load_model(path)
    assert [type(l).__name__ for l in m2.layers] == [type(l).__name__ for l in m.layers]
    assert m2.get_config() == m.get_config()
    np.testing.assert_array_equal(m2.predict(x, verbose=0), m.predict(x, verbose=0))


# ---------------------------------------------------------------- torch oracle
@pytest.mark.torch
@pytest.mark.parametrize("backend", backends())
def test_against_torch_float64(backend):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    r = np.random.default_rng(15)
    x = r.standard_normal((6, 4, 5)) * 3
    tx = torch.from_numpy(x)
    alpha = np.abs(r.standard_normal(5)) * 0.3     # PReLU over the last (channel) axis of (N, L, C)
    cases = [
        (ReLU(), F.relu(tx)), (ReLU(max_value=6.0), F.relu6(tx)), (LeakyReLU(0.3), F.leaky_relu(tx, 0.3)),
        (ELU(0.7), F.elu(tx, 0.7)), (Softmax(axis=1), torch.softmax(tx, dim=1)),
        (Softmax(), torch.softmax(tx, dim=-1)),
        (ReLU(threshold=0.5), F.threshold(tx, 0.5, 0.0)),
        (ReLU(max_value=1.5), F.hardtanh(tx, 0.0, 1.5)),
    ]
    for layer, want in cases:
        layer.build((4, 5))
        layer.bind({}, {}, {})
        with fg.use_backend("numpy"):
            np.testing.assert_allclose(layer.forward(x, True, Workspace()), want.numpy(), rtol=1e-13, atol=1e-15,
                                       err_msg=repr(layer))
        with fg.use_backend(backend):
            np.testing.assert_allclose(layer(x.astype(np.float32)), want.numpy(), rtol=3e-6, atol=1e-6,
                                       err_msg=repr(layer))
    # PReLU: torch's weight per channel on dim 1 -> compare on (N, C, L) with Keras alpha (1, C)... via a permute
    layer = PReLU(shared_axes=[1])
    layer.build((4, 5))
    a64 = alpha.reshape(1, 5)
    grads = {"alpha": np.zeros_like(a64)}
    layer.bind({"alpha": a64.copy()}, grads, {})
    tw = torch.from_numpy(alpha).requires_grad_(True)
    txg = tx.clone().requires_grad_(True)
    ty = F.prelu(txg.permute(0, 2, 1), tw).permute(0, 2, 1)
    R = r.standard_normal(x.shape)
    (ty * torch.from_numpy(R)).sum().backward()
    with fg.use_backend("numpy"):
        ws = Workspace()
        y = layer.forward(x, True, ws)
        dx = layer.backward(R.copy(), ws, True)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-13)
    np.testing.assert_allclose(dx, txg.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grads["alpha"].ravel(), tw.grad.numpy(), rtol=1e-12)
