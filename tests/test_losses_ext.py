"""The further Keras losses (losses_ext.py, backend/numpy_lossopt.py, csrc/lossopt):
float64 references written from Keras 3's formulas, finite-difference gradients,
C vs NumPy over shapes / instruction sets / thread counts, reductions, the
compiled plan against the Python step (bitwise), metrics, bad input, and
PyTorch as an oracle (torch marker)."""
import math

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _native, _threads
from fastgrad.backend import NumpyOps
from fastgrad.engine import compiled

NATIVE = _native.available("lossopt")
RT = _native.module("runtime")
ISAS = RT.isa_supported() if RT is not None else []
EPS = 1e-7

ALL = ["mean_absolute_error", "mean_absolute_percentage_error", "mean_squared_logarithmic_error",
       "huber", "log_cosh", "poisson", "hinge", "squared_hinge", "kl_divergence",
       "categorical_hinge", "cosine_similarity"]
CLASSES = {"mean_absolute_error": fg.losses.MeanAbsoluteError,
           "mean_absolute_percentage_error": fg.losses.MeanAbsolutePercentageError,
           "mean_squared_logarithmic_error": fg.losses.MeanSquaredLogarithmicError,
           "huber": fg.losses.Huber, "log_cosh": fg.losses.LogCosh, "poisson": fg.losses.Poisson,
           "hinge": fg.losses.Hinge, "squared_hinge": fg.losses.SquaredHinge,
           "kl_divergence": fg.losses.KLDivergence, "categorical_hinge": fg.losses.CategoricalHinge,
           "cosine_similarity": fg.losses.CosineSimilarity}


def native_ops():
    from fastgrad.backend.native_ops import NativeOps
    return NativeOps()


def ref_values(name, p, t, delta=1.0):
    """Per-sample values in float64, straight from Keras 3's loss functions
    (keras/src/losses/losses.py), over the last axis."""
    p = p.astype(np.float64)
    t = t.astype(np.float64)
    if name == "mean_absolute_error":
        return np.mean(np.abs(p - t), axis=-1)
    if name == "mean_absolute_percentage_error":
        return 100.0 * np.mean(np.abs((t - p) / np.maximum(np.abs(t), EPS)), axis=-1)
    if name == "mean_squared_logarithmic_error":
        return np.mean((np.log(np.maximum(p, EPS) + 1) - np.log(np.maximum(t, EPS) + 1)) ** 2, axis=-1)
    if name == "huber":
        e = p - t
        return np.mean(np.where(np.abs(e) <= delta, 0.5 * e * e, delta * np.abs(e) - 0.5 * delta ** 2),
                       axis=-1)
    if name == "log_cosh":
        return np.mean(np.log(np.cosh(p - t)), axis=-1)
    if name == "poisson":
        return np.mean(p - t * np.log(p + EPS), axis=-1)
    if name in ("hinge", "squared_hinge"):
        if np.all((t == 0) | (t == 1)):
            t = 2 * t - 1
        h = np.maximum(1 - t * p, 0)
        return np.mean(h if name == "hinge" else h * h, axis=-1)
    if name == "kl_divergence":
        tc, pc = np.clip(t, EPS, 1), np.clip(p, EPS, 1)
        return np.sum(tc * np.log(tc / pc), axis=-1)
    if name == "categorical_hinge":
        pos = np.sum(t * p, axis=-1)
        neg = np.max((1 - t) * p, axis=-1)
        return np.maximum(neg - pos + 1, 0)
    if name == "cosine_similarity":
        def norm(x):
            return x * np.minimum(1 / np.sqrt(np.sum(x * x, axis=-1, keepdims=True)), 1 / EPS)
        return -np.sum(norm(t) * norm(p), axis=-1)
    raise KeyError(name)


def ref_loss(name, p, t, sw=None, delta=1.0):
    v = ref_values(name, p, t, delta)
    if sw is not None:
        v = v * np.asarray(sw, np.float64).reshape((-1,) + (1,) * (v.ndim - 1))
    return v.sum() / v.size


def make_data(name, shape, seed=0, dtype=np.float32):
    r = np.random.default_rng(seed)
    if name in ("hinge", "squared_hinge"):
        p = r.standard_normal(shape)
        t = (r.random(shape) > 0.5).astype(np.float64)
    elif name in ("kl_divergence", "poisson", "mean_squared_logarithmic_error"):
        p = r.uniform(0.05, 0.95, shape)
        t = r.uniform(0.05, 0.95, shape)
    elif name == "categorical_hinge":
        p = r.standard_normal(shape)
        t = np.eye(shape[-1])[r.integers(0, shape[-1], shape[:-1])]
    else:
        p = r.standard_normal(shape) * 1.5
        t = r.standard_normal(shape)
    return p.astype(dtype), t.astype(dtype)


def call(ops, name, p, t, sw=None, g=None, delta=1.0):
    kw = {"delta": delta} if name == "huber" else {}
    return getattr(ops, name)(p, t, sw, g, **kw)


# ---------------------------------------------------------------- NumPy vs float64
@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (16, 10), (5, 4, 3)])
def test_numpy_matches_float64_reference(name, shape):
    p, t = make_data(name, shape, 1)
    sw = np.random.default_rng(2).uniform(0.2, 2.0, shape[0]).astype(np.float32)
    for w in (None, sw):
        loss, g = call(NumpyOps(), name, p, t, w)
        assert g.shape == p.shape and g.dtype == np.float32
        assert loss == pytest.approx(ref_loss(name, p, t, w), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("name", ALL)
def test_gradients_by_finite_differences(name):
    p, t = make_data(name, (6, 5), 3, np.float64)
    sw = np.random.default_rng(4).uniform(0.5, 2.0, 6)
    ops = NumpyOps()
    _, g = call(ops, name, p, t, sw, delta=0.7)
    h = 1e-6
    num = np.zeros_like(p)
    for idx in np.ndindex(p.shape):
        a, b = p.copy(), p.copy()
        a[idx] += h
        b[idx] -= h
        num[idx] = (ref_loss(name, a, t, sw, 0.7) - ref_loss(name, b, t, sw, 0.7)) / (2 * h)
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-8)


# ---------------------------------------------------------------- C vs NumPy
needs_native = pytest.mark.skipif(not NATIVE, reason="lossopt extension not built")

SHAPES = [(1, 1), (1, 17), (3, 1), (13, 7), (31, 10), (17, 33), (257, 5), (4100, 3)]


@needs_native
@pytest.mark.parametrize("name", ALL)
def test_c_matches_numpy_and_is_the_same_for_every_isa_and_thread_count(name):
    C, N = native_ops(), NumpyOps()
    orig = _native.get_isa()
    try:
        for shape in SHAPES:
            p, t = make_data(name, shape, shape[0] * 7 + shape[1])
            sw = np.random.default_rng(5).uniform(0.1, 2, shape[0]).astype(np.float32)
            ln, gn = call(N, name, p, t, sw)
            first = None
            for isa in ISAS:
                _native.set_isa(isa)
                for nt in (1, 2, 3):
                    _threads.set_num_threads(nt)
                    lc, gc = call(C, name, p, t, sw)
                    if first is None:
                        first = (lc, gc.copy())
                        assert lc == pytest.approx(ln, rel=2e-6, abs=1e-9), (shape, isa, nt)
                        np.testing.assert_allclose(gc, gn, rtol=2e-5,
                                                   atol=2e-6 * max(1.0, np.abs(gn).max()))
                    else:
                        assert lc == first[0], (shape, isa, nt)
                        assert np.array_equal(gc, first[1]), (shape, isa, nt)
    finally:
        _native.set_isa(orig)
        _threads.set_num_threads(None)


@needs_native
def test_c_kernel_refuses_bad_arguments():
    L = _native.module("lossopt")
    p = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="invalid argument"):
        L.pointwise_loss("huber", L.LOSS_KINDS["huber"], p, p, None, None, 2, 3, 0.0, 1.0, 1)
    with pytest.raises(TypeError, match="float32"):
        L.pointwise_loss("mae", 1, p.astype(np.float64), p, None, None, 2, 3, 0.0, 1.0, 1)
    with pytest.raises(ValueError, match="overlaps"):
        L.pointwise_loss("mae", 1, p, p, None, p, 2, 3, 0.0, 1.0, 1)


# ---------------------------------------------------------------- classes, names, reductions
def test_names_classes_and_defaults():
    for alias, cls in [("mae", fg.losses.MeanAbsoluteError), ("mape", fg.losses.MeanAbsolutePercentageError),
                       ("msle", fg.losses.MeanSquaredLogarithmicError), ("huber", fg.losses.Huber),
                       ("logcosh", fg.losses.LogCosh), ("log_cosh", fg.losses.LogCosh),
                       ("kld", fg.losses.KLDivergence), ("kl_divergence", fg.losses.KLDivergence),
                       ("poisson", fg.losses.Poisson), ("hinge", fg.losses.Hinge),
                       ("squared_hinge", fg.losses.SquaredHinge),
                       ("categorical_hinge", fg.losses.CategoricalHinge),
                       ("cosine_similarity", fg.losses.CosineSimilarity),
                       ("Huber", fg.losses.Huber), ("mean_absolute_error", fg.losses.MeanAbsoluteError)]:
        assert type(fg.losses.get(alias)) is cls, alias
    h = fg.losses.Huber()
    assert h.delta == 1.0 and h.name == "huber_loss" and h.reduction == "sum_over_batch_size"
    assert fg.losses.CosineSimilarity().axis == -1
    assert fg.losses.LogCosh().name == "log_cosh"
    for cls in CLASSES.values():
        o = cls(reduction="sum")
        o2 = fg.losses.deserialize(fg.losses.serialize(o))
        assert type(o2) is cls and o2.get_config() == o.get_config()
    assert fg.losses.deserialize(fg.losses.serialize(fg.losses.Huber(2.5))).delta == 2.5


@pytest.mark.parametrize("name", ALL)
def test_function_forms_return_per_sample_values(name):
    p, t = make_data(name, (6, 4), 9, np.float64)
    fn = getattr(fg.losses, name)
    np.testing.assert_allclose(fn(t, p), ref_values(name, p, t), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["huber", "kl_divergence", "mean_absolute_error"])
def test_reductions(name):
    cls = CLASSES[name]
    p, t = make_data(name, (8, 3), 11, np.float64)
    sw = np.linspace(0.5, 2.0, 8)
    v = ref_values(name, p, t) * sw
    assert cls()(t, p, sw) == pytest.approx(v.sum() / 8)
    assert cls(reduction="mean")(t, p, sw) == pytest.approx(v.sum() / 8)
    assert cls(reduction="sum")(t, p, sw) == pytest.approx(v.sum())
    assert cls(reduction="mean_with_sample_weight")(t, p, sw) == pytest.approx(v.sum() / sw.sum())
    np.testing.assert_allclose(cls(reduction=None)(t, p, sw), v)
    np.testing.assert_allclose(cls(reduction="none")(t, p), ref_values(name, p, t))
    # the gradient scales with the reduction
    ops = NumpyOps()
    lo = cls(reduction="sum")
    loss, g = lo.compute(ops, p.copy(), t, None, np.empty_like(p), False)
    l1, g1 = cls().compute(ops, p.copy(), t, None, np.empty_like(p), False)
    assert loss == pytest.approx(8 * l1)
    np.testing.assert_allclose(g, 8 * g1)


def test_reduction_on_existing_losses():
    p = np.random.default_rng(0).random((5, 3))
    t = np.random.default_rng(1).random((5, 3))
    mse = ((p - t) ** 2).mean(axis=1)
    assert fg.losses.MeanSquaredError(reduction="sum")(t, p) == pytest.approx(mse.sum())
    np.testing.assert_allclose(fg.losses.MeanSquaredError(reduction=None)(t, p), mse)
    logits = np.random.default_rng(2).standard_normal((5, 4))
    lab = np.array([0, 3, 1, 2, 0])
    lp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    np.testing.assert_allclose(
        fg.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)(lab, logits),
        -lp[np.arange(5), lab], rtol=1e-6)
    assert fg.losses.CategoricalCrossentropy(from_logits=True, reduction="sum")(
        np.eye(4)[lab], logits) == pytest.approx(-lp[np.arange(5), lab].sum(), rel=1e-6)


def test_bad_arguments_give_clear_errors():
    with pytest.raises(ValueError, match="Huber: delta"):
        fg.losses.Huber(delta=0.0)
    with pytest.raises(ValueError, match="Huber: delta"):
        fg.losses.Huber(delta=float("nan"))
    with pytest.raises(ValueError, match="CosineSimilarity: only axis=-1"):
        fg.losses.CosineSimilarity(axis=0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        fg.losses.LogCosh(reduction="average")
    with pytest.raises(ValueError, match="shape"):
        NumpyOps().huber(np.zeros((3, 2), np.float32), np.zeros((3, 3), np.float32))
    with pytest.raises(ValueError, match="sample_weight"):
        NumpyOps().poisson(np.ones((3, 2), np.float32), np.ones((3, 2), np.float32), np.ones(4))
    with pytest.raises(ValueError, match="unknown loss"):
        fg.losses.get("hubber")


# ---------------------------------------------------------------- training: compiled == Python
def _fit(loss, on, threads, epochs=2, out_act="linear", units=4):
    from fastgrad import _config
    r = np.random.default_rng(0)
    x = r.standard_normal((70, 6)).astype(np.float32)
    if isinstance(loss, fg.losses.KLDivergence) or isinstance(loss, fg.losses.CategoricalHinge):
        y = np.eye(units, dtype=np.float32)[r.integers(0, units, 70)]
    elif isinstance(loss, (fg.losses.Hinge, fg.losses.SquaredHinge)):
        y = (r.random((70, units)) > 0.5).astype(np.float32)
    else:
        y = np.abs(r.standard_normal((70, units))).astype(np.float32)
    fg.set_seed(5)
    m = fg.Sequential([fg.Input((6,)), fg.layers.Dense(9, activation="tanh"),
                       fg.layers.Dense(units, activation=out_act)])
    m.compile(optimizer=fg.optimizers.Adam(0.01), loss=loss, metrics=["mae"])
    saved = compiled.enabled
    compiled.enabled = on
    try:
        _config.set_num_threads(threads)
        h = m.fit(x, y, batch_size=16, epochs=epochs, verbose=0, sample_weight=np.linspace(0.5, 1.5, 70))
        if on:
            assert compiled.unsupported_reason(m) is None
    finally:
        compiled.enabled = saved
        _config.set_num_threads(None)
    return h.history, m.get_weights()


@pytest.mark.skipif(not _native.available("step", "lossopt"), reason="native step not built")
@pytest.mark.parametrize("name", ALL)
def test_compiled_plan_trains_with_the_python_steps_bits(name):
    from fastgrad import _config
    _config.set_backend("native")
    loss = CLASSES[name](delta=0.5) if name == "huber" else CLASSES[name]()
    act = "softmax" if name == "kl_divergence" else ("softplus" if name in (
        "poisson", "mean_squared_logarithmic_error") else "linear")
    hp, wp = _fit(loss, False, 1, out_act=act)
    for t in (1, 2, 3):
        hc, wc = _fit(loss, True, t, out_act=act)
        assert hc["loss"] == hp["loss"], (name, t)
        assert all(np.array_equal(a, b) for a, b in zip(wp, wc)), (name, t)


@pytest.mark.skipif(not _native.available("step", "lossopt"), reason="native step not built")
def test_non_default_reduction_and_rank3_rowwise_fall_back_to_python():
    from fastgrad import _config
    _config.set_backend("native")
    m = fg.Sequential([fg.Input((3,)), fg.layers.Dense(2)])
    m.compile("sgd", loss=fg.losses.Huber(reduction="sum"))
    m.fit(np.ones((4, 3), np.float32), np.ones((4, 2), np.float32), verbose=0)
    assert "reduction='sum'" in compiled.unsupported_reason(m)
    m = fg.Sequential([fg.Input((6,)), fg.layers.Dense(12), fg.layers.Reshape((3, 4))])
    m.compile("sgd", loss="cosine_similarity")
    r = np.random.default_rng(0)
    h = m.fit(r.random((4, 6)).astype(np.float32), r.random((4, 3, 4)).astype(np.float32), verbose=0)
    assert compiled.unsupported_reason(m) is not None
    assert np.isfinite(h.history["loss"][0])


# ---------------------------------------------------------------- metrics
@pytest.mark.parametrize("cls,name,sign", [
    (fg.metrics.MeanAbsolutePercentageError, "mean_absolute_percentage_error", 1),
    (fg.metrics.MeanSquaredLogarithmicError, "mean_squared_logarithmic_error", 1),
    (fg.metrics.LogCoshError, "log_cosh", 1), (fg.metrics.KLDivergence, "kl_divergence", 1),
    (fg.metrics.Poisson, "poisson", 1), (fg.metrics.Hinge, "hinge", 1),
    (fg.metrics.SquaredHinge, "squared_hinge", 1), (fg.metrics.CategoricalHinge, "categorical_hinge", 1),
    (fg.metrics.CosineSimilarity, "cosine_similarity", -1)])
def test_metrics_are_weighted_means_of_the_per_sample_values(cls, name, sign):
    p, t = make_data(name, (10, 4), 21, np.float64)
    sw = np.linspace(0.1, 1, 10)
    m = cls()
    m.update_state(t[:6], p[:6], sw[:6])
    m.update_state(t[6:], p[6:], sw[6:])
    # hinge's {0,1} mapping is per call, as in Keras: both halves are binary here
    v = sign * ref_values(name, p, t)
    assert m.result() == pytest.approx(float((v * sw).sum() / sw.sum()), rel=1e-9)
    assert type(fg.metrics.get(m.name)) is cls


# ---------------------------------------------------------------- activity_regularizer
def test_activity_regularizer_adds_penalty_over_batch_and_its_gradient():
    """Keras 3 (keras-team/keras#22021): the layer's output penalty / batch size joins the
    loss. Checked against finite differences of the whole training loss."""
    from fastgrad import _config
    _config.set_backend("numpy")
    r = np.random.default_rng(0)
    x = r.standard_normal((8, 3)).astype(np.float32)
    y = r.standard_normal((8, 2)).astype(np.float32)
    fg.set_seed(1)
    reg = fg.regularizers.L1L2(l1=0.05, l2=0.1)
    m = fg.Sequential([fg.Input((3,)), fg.layers.Dense(4, activation="tanh", activity_regularizer=reg),
                       fg.layers.Dense(2)])
    m.compile(optimizer=fg.optimizers.SGD(1.0), loss="mse")
    w0 = [w.copy() for w in m.get_weights()]

    def total(ws):
        k1, b1, k2, b2 = [w.astype(np.float64) for w in ws]
        h = np.tanh(x @ k1 + b1)
        o = h @ k2 + b2
        return ((o - y) ** 2).mean() + (0.05 * np.abs(h).sum() + 0.1 * (h * h).sum()) / 8

    loss = m.evaluate(x, y, batch_size=8, verbose=0)
    assert loss == pytest.approx(total(w0), rel=1e-5)
    m.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    step = [a - b for a, b in zip(w0, m.get_weights())]       # = lr * grad, lr = 1
    eps = 1e-3
    for i, w in enumerate(w0):
        for idx in list(np.ndindex(w.shape))[:6]:
            a = [v.astype(np.float64) for v in w0]
            b = [v.astype(np.float64) for v in w0]
            a[i][idx] += eps
            b[i][idx] -= eps
            num = (total(a) - total(b)) / (2 * eps)
            assert step[i][idx] == pytest.approx(num, rel=2e-3, abs=2e-5), (i, idx)
    cfg = m.layers[0].get_config()
    assert type(m.layers[0]).from_config(cfg).activity_regularizer.get_config() == reg.get_config()


@pytest.mark.skipif(not _native.available("step"), reason="native step not built")
def test_activity_regularizer_models_train_on_the_python_step_with_a_reason():
    from fastgrad import _config
    _config.set_backend("native")
    m = fg.Sequential([fg.Input((3,)), fg.layers.Dense(4, activity_regularizer="l2"), fg.layers.Dense(1)])
    m.compile("adam", loss="mse")
    assert "activity_regularizer" in compiled.unsupported_reason(m)
    h = m.fit(np.ones((4, 3), np.float32), np.ones((4, 1), np.float32), verbose=0)
    assert np.isfinite(h.history["loss"][0])
    assert m.predict(np.ones((2, 3), np.float32)).shape == (2, 1)


# ---------------------------------------------------------------- PyTorch oracle
@pytest.mark.torch
def test_against_torch():
    """PyTorch float64 with autograd. Conventions: torch's HuberLoss, L1Loss,
    PoissonNLLLoss(log_input=False, eps=1e-7) and KLDivLoss(reduction='batchmean') on
    log-probabilities match Keras's (Keras clips KL inputs to [1e-7, 1]; inputs here
    are inside); Keras's cosine loss is -cosine_similarity (torch's eps 1e-8 acts on
    the product of norms, Keras's caps each inverse norm at 1e7); log_cosh and the
    hinges have no torch loss and are written with torch ops."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    r = np.random.default_rng(0)
    ops = NumpyOps()
    p = r.uniform(0.05, 0.95, (9, 5))
    p = p / p.sum(1, keepdims=True)
    t = r.uniform(0.05, 0.95, (9, 5))
    t = t / t.sum(1, keepdims=True)
    x = r.standard_normal((9, 5)) * 2
    z = r.standard_normal((9, 5))
    lab = np.where(r.random((9, 5)) > 0.5, 1.0, -1.0)
    cases = [
        ("huber", x, z, lambda a, b: torch.nn.HuberLoss(delta=0.8)(a, b), 0.8),
        ("mean_absolute_error", x, z, lambda a, b: F.l1_loss(a, b), 1.0),
        ("poisson", p, t, lambda a, b: torch.nn.PoissonNLLLoss(log_input=False, eps=1e-7,
                                                               full=False)(a, b), 1.0),
        ("kl_divergence", p, t, lambda a, b: torch.nn.KLDivLoss(reduction="batchmean")(torch.log(a), b), 1.0),
        ("cosine_similarity", x, z, lambda a, b: -F.cosine_similarity(a, b, dim=-1).mean(), 1.0),
        ("log_cosh", x, z, lambda a, b: torch.log(torch.cosh(a - b)).mean(), 1.0),
        ("hinge", x, lab, lambda a, b: torch.clamp(1 - a * b, min=0).mean(), 1.0),
        ("squared_hinge", x, lab, lambda a, b: (torch.clamp(1 - a * b, min=0) ** 2).mean(), 1.0),
        ("mean_squared_logarithmic_error", p, t, lambda a, b: F.mse_loss(torch.log1p(a), torch.log1p(b)), 1.0),
    ]
    for name, a, b, tfn, delta in cases:
        ta = torch.tensor(a, dtype=torch.float64, requires_grad=True)
        tl = tfn(ta, torch.tensor(b, dtype=torch.float64))
        tl.backward()
        loss, g = call(ops, name, a.copy(), b, None, delta=delta)
        assert loss == pytest.approx(tl.item(), rel=1e-9), name
        np.testing.assert_allclose(g, ta.grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=name)


@pytest.mark.skipif(not _native.available("step", "lossopt"), reason="native step not built")
def test_subclass_replacing_the_computation_has_no_c_path():
    from fastgrad import _config
    _config.set_backend("native")

    class MyHuber(fg.losses.Huber):
        def compute(self, ops, out, target, sw, g, logits):
            return super().compute(ops, out, target, sw, g, logits)

    m = fg.Sequential([fg.Input((3,)), fg.layers.Dense(2)])
    m.compile("sgd", loss=MyHuber())
    m.fit(np.ones((4, 3), np.float32), np.ones((4, 2), np.float32), verbose=0)
    assert "no C path" in compiled.unsupported_reason(m)
