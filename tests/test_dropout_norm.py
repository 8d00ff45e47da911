"""Dropout, BatchNormalization and LayerNormalization as standalone layers.

The layers are built and bound by hand (params/grads/state dicts, a
Workspace), the way a model drives them. Gradients are checked by central
finite differences in float64 on the NumPy backend; float32 results on every
backend against float64 references and (marker `torch`) against PyTorch.
"""
import numpy as np
import pytest

import fastgrad._config as cfg
from fastgrad.engine.workspace import Workspace
from fastgrad.layers.dropout import Dropout
from fastgrad.layers.normalization import BatchNormalization, LayerNormalization

from conftest import backends


def bind(layer, input_shape, dtype=np.float32, seed=0, randomize=True):
    """Build `layer` and bind fresh arrays: random gamma/beta (to exercise them), initial state."""
    layer.build(input_shape)
    r = np.random.default_rng(seed)
    params, grads, state = {}, {}, {}
    for s in layer.param_specs():
        init = np.asarray(s.initializer(s.shape), dtype=np.float64)
        if randomize:
            init = init + r.normal(0, 0.5, s.shape)
        params[s.name] = init.astype(dtype)
        grads[s.name] = np.zeros(s.shape, dtype)
    for s in layer.state_specs():
        state[s.name] = np.asarray(s.initializer(s.shape), dtype=np.float32)
    layer.bind(params, grads, state)
    return params, grads, state


@pytest.fixture(params=backends())
def backend(request):
    with cfg.use_backend(request.param):
        yield request.param


# ====================================================================== Dropout
@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), "0.5", True, None])
def test_dropout_invalid_rate(rate):
    with pytest.raises(ValueError, match="rate must be a number in \\[0, 1\\)"):
        Dropout(rate)


def test_dropout_invalid_seed_and_noise_shape():
    with pytest.raises(ValueError, match="seed"):
        Dropout(0.5, seed=-1)
    with pytest.raises(ValueError, match="seed"):
        Dropout(0.5, seed=1.5)
    with pytest.raises(ValueError, match="noise_shape"):
        Dropout(0.5, noise_shape=(1, 3))


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_dropout_kept_fraction_and_scaling(backend, rate):
    layer = Dropout(rate, seed=123)
    bind(layer, (1000,))
    x = np.random.default_rng(1).uniform(0.5, 2.0, (200, 1000)).astype(np.float32)
    ws = Workspace()
    y = layer.forward(x, True, ws).copy()
    keep = ws.mask.astype(bool)
    n = x.size
    frac = keep.mean()
    # binomial: 5 standard deviations
    assert abs(frac - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / n)
    assert np.array_equal(y != 0, keep)
    np.testing.assert_allclose(y[keep], x[keep] / np.float32(1 - rate), rtol=1e-6)
    assert np.all(y[~keep] == 0)
    # rows and columns are not correlated: every column keeps roughly (1-rate) of 200
    col = keep.mean(axis=0)
    assert abs(col.mean() - (1 - rate)) < 0.02
    # backward: same mask, same scaling
    dy = np.random.default_rng(2).normal(size=x.shape).astype(np.float32)
    dx = layer.backward(dy.copy(), ws)
    np.testing.assert_allclose(dx, np.where(keep, dy / np.float32(1 - rate), 0), rtol=1e-6)


def test_dropout_inference_is_identity(backend):
    layer = Dropout(0.5, seed=1)
    bind(layer, (7,))
    x = np.arange(21, dtype=np.float32).reshape(3, 7)
    ws = Workspace()
    assert layer.forward(x, False, ws) is x
    dy = np.ones_like(x)
    assert layer.backward(dy, ws) is dy
    assert layer.get_rng_state()["offset"] == 0       # inference consumes no randomness
    z = Dropout(0.0, seed=1)
    bind(z, (7,))
    assert z.forward(x, True, Workspace()) is x


def test_dropout_reproducible_and_advancing(backend):
    x = np.ones((64, 33), np.float32)
    a, b = Dropout(0.3, seed=7), Dropout(0.3, seed=7)
    bind(a, (33,))
    bind(b, (33,))
    ya1 = a.forward(x, True, Workspace()).copy()
    yb1 = b.forward(x, True, Workspace()).copy()
    assert np.array_equal(ya1, yb1)
    ya2 = a.forward(x, True, Workspace()).copy()
    assert not np.array_equal(ya1, ya2)                   # successive batches differ
    assert a.get_rng_state() == {"seed": 7, "offset": 2 * x.size}
    c = Dropout(0.3, seed=8)
    bind(c, (33,))
    assert not np.array_equal(c.forward(x, True, Workspace()), ya1)
    # the stream is a function of (seed, offset): restoring the state replays the batch
    b.set_rng_state({"seed": 7, "offset": x.size})
    assert np.array_equal(b.forward(x, True, Workspace()), ya2)
    # reset_rng starts over; an explicit seed wins over the model's one
    a.reset_rng(999)
    assert a.get_rng_state() == {"seed": 7, "offset": 0}
    assert np.array_equal(a.forward(x, True, Workspace()), ya1)


def test_dropout_seed_none_uses_library_generator():
    x = np.ones((10, 50), np.float32)
    ys = []
    for _ in range(2):
        cfg.set_seed(42)
        d = Dropout(0.5)
        bind(d, (50,))
        d.reset_rng(cfg.next_seed())          # what the model does at build
        ys.append(d.forward(x, True, Workspace()).copy())
    assert np.array_equal(ys[0], ys[1])
    cfg.set_seed(42)
    lazy = Dropout(0.5)                       # used without a model: draws its seed at first use
    bind(lazy, (50,))
    assert np.array_equal(lazy.forward(x, True, Workspace()), ys[0])
    cfg.set_seed(43)
    other = Dropout(0.5)
    bind(other, (50,))
    assert not np.array_equal(other.forward(x, True, Workspace()), ys[0])
    cfg.set_seed(None)


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (17, 129), (64, 1025)])
def test_dropout_same_mask_for_any_thread_count_and_backend(shape):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    results = []
    for name in backends():
        with cfg.use_backend(name):
            for nt in (1, 2, 3):
                cfg.set_num_threads(nt)
                d = Dropout(0.4, seed=2024)
                bind(d, shape[1:])
                d.forward(x, True, Workspace())            # advance once: test a nonzero offset too
                results.append(d.forward(x, True, Workspace()).copy())
    for r in results[1:]:
        assert np.array_equal(r, results[0])


def test_dropout_config_round_trip():
    d = Dropout(0.25, seed=5, name="drop")
    e = Dropout.from_config(d.get_config())
    assert (e.rate, e.seed, e.name) == (0.25, 5, "drop")


# ====================================================================== helpers
def num_grad(f, a, eps=1e-6):
    g = np.zeros_like(a)
    it = np.nditer(a, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = a[i]
        a[i] = old + eps
        fp = f()
        a[i] = old - eps
        fm = f()
        a[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


def fd_check(layer, x, params, grads, training=True, seed=3):
    """Loss L = sum(y * R): compare analytic dL/dx, dL/dparams to finite differences."""
    r = np.random.default_rng(seed).normal(size=x.shape)

    def loss():
        return float(np.sum(layer.forward(x, training, Workspace()) * r))

    ws = Workspace()
    layer.forward(x, training, ws)
    dx = layer.backward(r.copy(), ws).copy()
    np.testing.assert_allclose(dx, num_grad(loss, x), rtol=1e-6, atol=1e-7)
    for k in params:
        np.testing.assert_allclose(grads[k], num_grad(loss, params[k]), rtol=1e-6, atol=1e-7, err_msg=k)


def bn_ref(x, gamma, beta, eps, ax):
    red = tuple(i for i in range(x.ndim) if i != ax)
    shape = [1] * x.ndim
    shape[ax] = -1
    x = x.astype(np.float64)
    mu = x.mean(axis=red, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=red, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps) * gamma.reshape(shape) + beta.reshape(shape)
    return y, mu.reshape(-1), var.reshape(-1)


# ====================================================================== BatchNorm
@pytest.mark.parametrize("shape, axis", [((6, 4), -1), ((5, 3, 4), -1), ((4, 3, 5), 1), ((3, 2, 2, 3), 1)])
@pytest.mark.parametrize("center, scale", [(True, True), (False, True), (True, False)])
def test_batchnorm_finite_differences(shape, axis, center, scale):
    with cfg.use_backend("numpy"):
        bn = BatchNormalization(axis=axis, center=center, scale=scale, epsilon=1e-3)
        params, grads, state = bind(bn, shape[1:], dtype=np.float64)
        x = np.random.default_rng(1).normal(size=shape) * 2 + 1
        fd_check(bn, x, params, grads)


def test_batchnorm_inference_mode_finite_differences():
    with cfg.use_backend("numpy"):
        bn = BatchNormalization()
        params, grads, state = bind(bn, (4,), dtype=np.float64)
        state["moving_mean"][:] = [0.5, -1, 2, 0]
        state["moving_variance"][:] = [1, 4, 0.25, 2]
        x = np.random.default_rng(2).normal(size=(5, 4))
        fd_check(bn, x, params, grads, training=False)


@pytest.mark.parametrize("n, c", [(1, 1), (2, 3), (7, 8), (9, 17), (128, 129), (1000, 3)])
def test_batchnorm_forward_and_moving_stats(backend, n, c):
    bn = BatchNormalization(momentum=0.9, epsilon=1e-3)
    params, grads, state = bind(bn, (c,))
    x = (np.random.default_rng(n).normal(size=(n, c)) * 3 + 2).astype(np.float32)
    ws = Workspace()
    y = bn.forward(x, True, ws)
    ref, mu, var = bn_ref(x, params["gamma"].astype(np.float64), params["beta"].astype(np.float64), 1e-3, 1)
    np.testing.assert_allclose(y, ref, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(state["moving_mean"], 0.9 * 0 + 0.1 * mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["moving_variance"], 0.9 * 1 + 0.1 * var, rtol=1e-4, atol=1e-6)
    # a second step keeps averaging
    bn.forward(x, True, Workspace())
    np.testing.assert_allclose(state["moving_mean"], 0.19 * mu, rtol=1e-5, atol=1e-6)
    # inference uses the moving statistics
    y_inf = bn.forward(x, False, Workspace())
    mm, mv = state["moving_mean"].astype(np.float64), state["moving_variance"].astype(np.float64)
    expect = (x - mm) / np.sqrt(mv + 1e-3) * params["gamma"] + params["beta"]
    np.testing.assert_allclose(y_inf, expect, rtol=1e-5, atol=1e-5)
    mm_before = state["moving_mean"].copy()
    bn.forward(x, False, Workspace())
    assert np.array_equal(state["moving_mean"], mm_before)   # inference does not update


def test_batchnorm_frozen_runs_in_inference_mode():
    bn = BatchNormalization(trainable=False)
    params, grads, state = bind(bn, (3,))
    state["moving_mean"][:] = [1, 2, 3]
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    y = bn.forward(x, True, Workspace())
    np.testing.assert_allclose(y, (x - [1, 2, 3]) / np.sqrt(1 + 1e-3) * params["gamma"] + params["beta"],
                               rtol=1e-5, atol=1e-6)
    assert np.array_equal(state["moving_mean"], np.float32([1, 2, 3]))


def test_batchnorm_thread_counts_bitwise(backend):
    x = np.random.default_rng(5).normal(size=(257, 129)).astype(np.float32)
    dy = np.random.default_rng(6).normal(size=x.shape).astype(np.float32)
    outs = []
    for nt in (1, 2, 3):
        cfg.set_num_threads(nt)
        bn = BatchNormalization()
        params, grads, state = bind(bn, (129,))
        ws = Workspace()
        y = bn.forward(x, True, ws).copy()
        dx = bn.backward(dy.copy(), ws).copy()
        outs.append((y, dx, grads["gamma"].copy(), grads["beta"].copy(), state["moving_variance"].copy()))
    for o in outs[1:]:
        for a, b in zip(o, outs[0]):
            assert np.array_equal(a, b)


@pytest.mark.parametrize("kwargs, match", [
    (dict(momentum=1.5), "momentum"), (dict(momentum=-0.1), "momentum"), (dict(epsilon=0), "epsilon"),
    (dict(epsilon=-1e-3), "epsilon"), (dict(axis=1.5), "axis"), (dict(gamma_initializer="nope"), "nope"),
])
def test_batchnorm_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchNormalization(**kwargs)


def test_batchnorm_invalid_axis_at_build():
    with pytest.raises(ValueError, match="axis=0 is out of range"):
        BatchNormalization(axis=0).build((3,))
    with pytest.raises(ValueError, match="axis=3 is out of range"):
        BatchNormalization(axis=3).build((3, 4))


def test_batchnorm_weights_order_and_config():
    bn = BatchNormalization(momentum=0.8, epsilon=1e-4, name="bn")
    bind(bn, (3,))
    assert [s.name for s in bn.param_specs()] + [s.name for s in bn.state_specs()] == \
        ["gamma", "beta", "moving_mean", "moving_variance"]
    assert len(bn.get_weights()) == 4
    assert bn.count_params() == 12
    c = BatchNormalization.from_config(bn.get_config())
    assert (c.momentum, c.epsilon, c.axis, c.name) == (0.8, 1e-4, -1, "bn")


# ====================================================================== LayerNorm
@pytest.mark.parametrize("shape, axis", [((4, 5), -1), ((3, 2, 4), -1), ((3, 2, 4), [1, 2]),
                                         ((2, 3, 4), [-2, -1])])
@pytest.mark.parametrize("center, scale", [(True, True), (False, False)])
def test_layernorm_finite_differences(shape, axis, center, scale):
    with cfg.use_backend("numpy"):
        ln = LayerNormalization(axis=axis, center=center, scale=scale)
        params, grads, _ = bind(ln, shape[1:], dtype=np.float64)
        x = np.random.default_rng(4).normal(size=shape) * 2 - 1
        fd_check(ln, x, params, grads)


@pytest.mark.parametrize("n, d", [(1, 2), (3, 7), (8, 16), (17, 129), (129, 1023), (2, 1025)])
def test_layernorm_forward_vs_float64(backend, n, d):
    ln = LayerNormalization(epsilon=1e-5)
    params, grads, _ = bind(ln, (d,))
    x = (np.random.default_rng(d).normal(size=(n, d)) * 4 + 3).astype(np.float32)
    for training in (True, False):
        y = ln.forward(x, training, Workspace())
        x64 = x.astype(np.float64)
        mu = x64.mean(1, keepdims=True)
        var = x64.var(1, keepdims=True)
        ref = (x64 - mu) / np.sqrt(var + 1e-5) * params["gamma"] + params["beta"]
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_layernorm_invalid():
    with pytest.raises(ValueError, match="epsilon"):
        LayerNormalization(epsilon=0.0)
    with pytest.raises(ValueError, match="axis"):
        LayerNormalization(axis="last")
    with pytest.raises(ValueError, match="trailing axes"):
        LayerNormalization(axis=1).build((3, 4))
    with pytest.raises(ValueError, match="out of range"):
        LayerNormalization(axis=0).build((3,))
    with pytest.raises(ValueError, match="rms_scaling"):
        LayerNormalization(rms_scaling=True)
    ln = LayerNormalization(axis=[1, 2], name="ln")
    c = LayerNormalization.from_config(ln.get_config())
    assert c.axis == [1, 2] and c.name == "ln"


# ====================================================================== torch oracle
@pytest.mark.torch
def test_batchnorm_vs_torch(backend):
    torch = pytest.importorskip("torch")
    n, c = 33, 9
    x = np.random.default_rng(0).normal(size=(n, c)).astype(np.float32) * 2 + 1
    dy = np.random.default_rng(1).normal(size=(n, c)).astype(np.float32)
    bn = BatchNormalization(momentum=0.9, epsilon=1e-3)
    params, grads, state = bind(bn, (c,))
    ws = Workspace()
    y = bn.forward(x, True, ws).copy()
    dx = bn.backward(dy.copy(), ws).copy()

    tb = torch.nn.BatchNorm1d(c, eps=1e-3, momentum=0.1, dtype=torch.float64)
    with torch.no_grad():
        tb.weight.copy_(torch.from_numpy(params["gamma"].astype(np.float64)))
        tb.bias.copy_(torch.from_numpy(params["beta"].astype(np.float64)))
    tx = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    ty = tb(tx)
    ty.backward(torch.from_numpy(dy.astype(np.float64)))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(grads["gamma"], tb.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grads["beta"], tb.bias.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(state["moving_mean"], tb.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    # torch's running variance is unbiased, Keras's (ours) biased
    unb = tb.running_var.numpy()
    ours_unbiased = 0.9 + (state["moving_variance"] - 0.9) * n / (n - 1)
    np.testing.assert_allclose(ours_unbiased, unb, rtol=1e-4)


@pytest.mark.torch
def test_layernorm_vs_torch(backend):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(size=(6, 3, 10)).astype(np.float32)
    dy = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    ln = LayerNormalization(axis=[-2, -1], epsilon=1e-5)
    params, grads, _ = bind(ln, (3, 10))
    ws = Workspace()
    y = ln.forward(x, True, ws).copy()
    dx = ln.backward(dy.copy(), ws).copy()
    tl = torch.nn.LayerNorm((3, 10), eps=1e-5, dtype=torch.float64)
    with torch.no_grad():
        tl.weight.copy_(torch.from_numpy(params["gamma"].astype(np.float64)))
        tl.bias.copy_(torch.from_numpy(params["beta"].astype(np.float64)))
    tx = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    ty = tl(tx)
    ty.backward(torch.from_numpy(dy.astype(np.float64)))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(grads["gamma"], tl.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grads["beta"], tl.bias.grad.numpy(), rtol=1e-4, atol=1e-4)
