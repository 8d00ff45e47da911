"""The NumPy backend is the reference: check it in float64 against finite
differences and hand-written scalar formulas (the C kernels are then tested
against it in test_gemm.py / test_kernels.py)."""
import math

import numpy as np
import pytest

from fastgrad.backend import NumpyOps

ops = NumpyOps()
R = np.random.default_rng(1234)


def fd_grad(f, x, h=1e-6):
    """Central finite differences of scalar f at x (float64)."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        fp = f(x)
        x[i] = old - h
        fm = f(x)
        x[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


ACTS = ["relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "softmax", "log_softmax", "linear"]


@pytest.mark.parametrize("name", ACTS)
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (7, 13)])
def test_activation_backprop_matches_finite_differences(name, shape):
    x = R.standard_normal(shape) * 2
    x[np.abs(x) < 1e-3] = 0.5          # keep away from relu's kink
    w = R.standard_normal(shape)       # random projection -> scalar
    f = lambda z: float(np.sum(w * ops.activation(name, z)))
    y = ops.activation(name, x)
    dx = ops.backprop_activation(name, w, y, x)
    np.testing.assert_allclose(dx, fd_grad(f, x.copy()), rtol=1e-5, atol=1e-7)


def test_activation_values_against_scalar_formulas():
    x = np.array([-50.0, -3.0, -0.5, 0.0, 0.5, 3.0, 50.0])
    np.testing.assert_allclose(ops.sigmoid(x), [1 / (1 + math.exp(-v)) for v in x], rtol=1e-14)
    np.testing.assert_allclose(ops.gelu(x), [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x],
                               rtol=1e-14, atol=1e-300)
    x32 = x.astype(np.float32)
    np.testing.assert_allclose(ops.gelu(x32), ops.gelu(x), rtol=3e-7, atol=1e-30)
    np.testing.assert_allclose(ops.sigmoid(x32), ops.sigmoid(x), rtol=2e-7)


def test_special_values():
    x = np.array([-np.inf, np.inf, np.nan, -0.0, 0.0], dtype=np.float32)
    with np.errstate(invalid="ignore"):
        s = ops.sigmoid(x)
        g = ops.gelu(x)
    np.testing.assert_array_equal(s[:2], [0.0, 1.0])
    assert np.isnan(s[2]) and np.isnan(g[2])
    np.testing.assert_array_equal(g[:2], [0.0, np.inf])
    np.testing.assert_array_equal(ops.tanh(x[:2]), [-1.0, 1.0])


LOSSES = {
    "mse": lambda p, t: ops.mse(p, t),
    "bce": lambda p, t: ops.binary_crossentropy(1 / (1 + np.exp(-p)), t),
    "bce_logits": lambda p, t: ops.binary_crossentropy_from_logits(p, t),
    "cce": lambda p, t: ops.categorical_crossentropy(np.exp(p), t),
    "softmax_ce": lambda p, t: ops.softmax_crossentropy(p, t),
}


@pytest.mark.parametrize("name", ["mse", "bce_logits", "softmax_ce"])
@pytest.mark.parametrize("shape", [(1, 1), (4, 3), (9, 10)])
@pytest.mark.parametrize("weighted", [False, True])
def test_loss_gradients_finite_differences(name, shape, weighted):
    x = R.standard_normal(shape)
    t = R.random(shape)
    if name == "softmax_ce":
        t = np.eye(shape[1])[R.integers(0, shape[1], shape[0])]
    sw = R.random(shape[0]) + 0.5 if weighted else None
    fn = {"mse": ops.mse, "bce_logits": ops.binary_crossentropy_from_logits,
          "softmax_ce": ops.softmax_crossentropy}[name]
    loss, g = fn(x, t, sample_weight=sw)
    np.testing.assert_allclose(g, fd_grad(lambda z: fn(z, t, sample_weight=sw)[0], x.copy()),
                               rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("shape", [(1, 1), (4, 3), (6, 5)])
def test_prob_losses_finite_differences(shape):
    p = R.uniform(0.05, 0.95, shape)
    t = (R.random(shape) > 0.5).astype(np.float64)
    _, g = ops.binary_crossentropy(p, t)
    np.testing.assert_allclose(g, fd_grad(lambda z: ops.binary_crossentropy(z, t)[0], p.copy()), rtol=1e-5)
    q = R.uniform(0.1, 1.0, shape)
    tc = np.eye(shape[1])[R.integers(0, shape[1], shape[0])]
    _, g = ops.categorical_crossentropy(q, tc)
    np.testing.assert_allclose(g, fd_grad(lambda z: ops.categorical_crossentropy(z, tc)[0], q.copy()),
                               rtol=1e-5, atol=1e-9)


def test_sparse_equals_dense_cross_entropy_and_values():
    x = R.standard_normal((6, 4))
    lab = np.array([0, 3, 1, 2, 2, 0])
    l1, g1 = ops.sparse_softmax_crossentropy(x, lab)
    l2, g2 = ops.softmax_crossentropy(x, np.eye(4)[lab])
    ref = np.mean([math.log(np.exp(r).sum()) - r[c] for r, c in zip(x, lab)])
    assert l1 == pytest.approx(ref, rel=1e-12) and l2 == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(g1, g2, rtol=1e-12)
    with pytest.raises(ValueError, match="outside"):
        ops.sparse_softmax_crossentropy(x, lab + 1)
    with pytest.raises(TypeError, match="integers"):
        ops.sparse_softmax_crossentropy(x, lab.astype(np.float32))


def test_bce_logits_stable_for_huge_logits():
    x = np.array([[1000.0, -1000.0, 0.0]])
    t = np.array([[1.0, 0.0, 1.0]])
    loss, g = ops.binary_crossentropy_from_logits(x, t)
    assert loss == pytest.approx(math.log(2) / 3)
    assert np.all(np.isfinite(g))


@pytest.mark.parametrize("act", ["linear", "relu", "sigmoid", "tanh", "gelu", "softmax"])
def test_dense_backward_finite_differences(act):
    x = R.standard_normal((5, 4))
    w = R.standard_normal((4, 3))
    b = R.standard_normal(3)
    up = R.standard_normal((5, 3))
    z = np.empty((5, 3))
    y = ops.dense_forward(x, w, b, act, preact=z)
    dx, dw, db = ops.dense_backward(up, x, w, y, act, preact=z)
    f = lambda X, W, B: float(np.sum(up * ops.dense_forward(X, W, B, act)))
    np.testing.assert_allclose(dx, fd_grad(lambda v: f(v, w, b), x.copy()), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(dw, fd_grad(lambda v: f(x, v, b), w.copy()), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(db, fd_grad(lambda v: f(x, w, v), b.copy()), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("kind", ["layernorm", "batchnorm"])
def test_norm_backward_finite_differences(kind):
    x = R.standard_normal((6, 5))
    gamma, beta = R.standard_normal(5), R.standard_normal(5)
    up = R.standard_normal((6, 5))
    fwd = getattr(ops, kind + "_forward")
    bwd = getattr(ops, kind + "_backward")
    n = 6 if kind == "layernorm" else 5
    mean, rstd = np.empty(n), np.empty(n)
    fwd(x, gamma, beta, 1e-3, mean=mean, rstd=rstd)
    dx, dg, dbt = bwd(up, x, gamma, mean, rstd)
    f = lambda X, G, B: float(np.sum(up * fwd(X, G, B, 1e-3)))
    np.testing.assert_allclose(dx, fd_grad(lambda v: f(v, gamma, beta), x.copy()), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(dg, fd_grad(lambda v: f(x, v, beta), gamma.copy()), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(dbt, fd_grad(lambda v: f(x, gamma, v), beta.copy()), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (3, 5, 7), (17, 1, 13), (2, 31, 3)])
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_gemm_reference(m, k, n, ta, tb):
    a = R.standard_normal((k, m) if ta else (m, k))
    b = R.standard_normal((n, k) if tb else (k, n))
    c0 = R.standard_normal((m, n))
    ref = 1.5 * (a.T if ta else a) @ (b.T if tb else b) - 0.5 * c0
    c = c0.copy()
    ops.gemm(a, b, out=c, trans_a=ta, trans_b=tb, alpha=1.5, beta=-0.5)
    np.testing.assert_allclose(c, ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="overlap"):
        sq = R.standard_normal((4, 4))
        ops.gemm(sq, sq, out=sq)


# ---- optimizers: several steps against scalar float64 formulas (Keras 3) ----
def _scalar_run(kind, p, g_seq, **hp):
    p = p.copy()
    n = p.size
    s1, s2, s3 = np.zeros(n), np.zeros(n), np.zeros(n)
    if kind == "adagrad":
        s1[:] = 0.1
    for t, g in enumerate(g_seq, start=1):
        for i in range(n):
            gi = g[i]
            lr = hp["lr"]
            if kind == "sgd":
                mo = hp.get("momentum", 0.0)
                if mo == 0:
                    p[i] -= lr * gi
                else:
                    s1[i] = mo * s1[i] - lr * gi
                    p[i] += (mo * s1[i] - lr * gi) if hp.get("nesterov") else s1[i]
            elif kind == "adagrad":
                s1[i] += gi * gi
                p[i] -= lr * gi / math.sqrt(s1[i] + 1e-7)
            elif kind == "rmsprop":
                rho, mo = 0.9, hp.get("momentum", 0.0)
                s1[i] = rho * s1[i] + (1 - rho) * gi * gi
                if hp.get("centered"):
                    s3[i] = rho * s3[i] + (1 - rho) * gi
                    den = s1[i] - s3[i] ** 2 + 1e-7
                else:
                    den = s1[i] + 1e-7
                inc = lr * gi / math.sqrt(den)
                if mo:
                    s2[i] = mo * s2[i] + inc
                    p[i] -= s2[i]
                else:
                    p[i] -= inc
            elif kind == "adam":
                wd = hp.get("weight_decay", 0.0)
                p[i] -= lr * wd * p[i]
                b1, b2 = 0.9, 0.999
                s1[i] = b1 * s1[i] + (1 - b1) * gi
                s2[i] = b2 * s2[i] + (1 - b2) * gi * gi
                alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                p[i] -= alpha * s1[i] / (math.sqrt(s2[i]) + 1e-7)
    return p


@pytest.mark.parametrize("kind,hp", [
    ("sgd", dict(lr=0.1)), ("sgd", dict(lr=0.1, momentum=0.9)),
    ("sgd", dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("adagrad", dict(lr=0.1)), ("rmsprop", dict(lr=0.01)),
    ("rmsprop", dict(lr=0.01, momentum=0.5, centered=True)),
    ("adam", dict(lr=0.01)), ("adam", dict(lr=0.01, weight_decay=0.1)),
])
def test_optimizer_updates_match_scalar_reference(kind, hp):
    n = 7
    p0 = R.standard_normal(n)
    gs = [R.standard_normal(n) for _ in range(5)]
    ref = _scalar_run(kind, p0, gs, **hp)
    p = p0.copy()
    s1, s2, s3 = np.zeros(n), np.zeros(n), np.zeros(n)
    for t, g in enumerate(gs, start=1):
        if kind == "sgd":
            ops.sgd_update(p, g, lr=hp["lr"], momentum=hp.get("momentum", 0.0), velocity=s1,
                           nesterov=hp.get("nesterov", False))
        elif kind == "adagrad":
            if t == 1:
                s1[:] = 0.1
            ops.adagrad_update(p, g, s1, lr=hp["lr"])
        elif kind == "rmsprop":
            ops.rmsprop_update(p, g, s1, lr=hp["lr"], momentum=hp.get("momentum", 0.0), mom=s2,
                               centered=hp.get("centered", False), mg=s3)
        else:
            ops.adam_update(p, g, s1, s2, lr=hp["lr"], step=t, weight_decay=hp.get("weight_decay", 0.0),
                            decoupled=True)
    np.testing.assert_allclose(p, ref, rtol=1e-12, atol=1e-14)


def test_dropout_statistics_and_reproducibility():
    x = np.ones(200_000, dtype=np.float32)
    m = np.empty(x.shape, np.uint8)
    y = ops.dropout(x, 0.3, seed=42, mask=m)
    assert abs(m.mean() - 0.7) < 0.005
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.7)}
    np.testing.assert_array_equal(y, ops.dropout(x, 0.3, seed=42))
    assert not np.array_equal(y, ops.dropout(x, 0.3, seed=43))
    # the offset picks up the stream where a previous call ended
    np.testing.assert_array_equal(ops.dropout(x[:1000], 0.3, seed=42, offset=500)[:500],
                                  y[500:1000])
    dy = np.full_like(x, 2.0)
    np.testing.assert_array_equal(ops.backprop_dropout(dy, m, 0.3), 2.0 * y)


def test_clipping_and_norm():
    x = R.standard_normal(1000)
    n = np.linalg.norm(x)
    assert ops.global_norm(x) == pytest.approx(n, rel=1e-13)
    before = ops.clip_by_norm(x, 1.0)
    assert before == pytest.approx(n) and np.linalg.norm(x) == pytest.approx(1.0)
    ops.clip_by_value(x, -0.01, 0.02)
    assert x.min() >= -0.01 and x.max() <= 0.02
