"""csrc/kernels through fastgrad._native.kernels and KernelsMixin.

Every kernel is checked against a float64 reference (and NumpyOps) over sizes
that hit every vector-tail case, on every instruction-set path this machine
runs, with special values, and for bitwise-identical results across thread
counts (and across ISAs for the fixed-order reductions).
"""
import math

import numpy as np
import pytest

from fastgrad import _native
from fastgrad.backend import NumpyOps

K = _native.module("kernels")
RT = _native.module("runtime")
pytestmark = pytest.mark.skipif(K is None, reason="native kernels module not built")

ISAS = RT.isa_supported() if RT is not None else []
SIZES = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 127, 129, 1000, 1023, 1025]
RELU, SIGMOID, TANH, GELU, GELU_TANH, LINEAR = 1, 2, 3, 4, 5, 0
F32_TINY = np.finfo(np.float32).tiny

if K is not None:
    from fastgrad.backend.native_kernels import KernelsMixin

    class Ops(KernelsMixin, NumpyOps):
        """NumpyOps with this family's C kernels (NativeOps minus the GEMM mixin)."""
else:  # pragma: no cover
    Ops = NumpyOps

REF = NumpyOps()


@pytest.fixture(params=ISAS)
def isa(request):
    orig = _native.get_isa()
    _native.set_isa(request.param)
    yield request.param
    _native.set_isa(orig)


def on_isa(name):
    _native.set_isa(name)


@pytest.fixture
def restore_isa():
    orig = _native.get_isa()
    yield
    _native.set_isa(orig)


def rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- references
def erfc64(v):
    return np.frompyfunc(math.erfc, 1, 1)(v).astype(np.float64)


def sigmoid64(v):
    e = np.exp(-np.abs(v))
    return np.where(v >= 0, 1 / (1 + e), e / (1 + e))


def gelu64(v):
    return 0.5 * v * erfc64(-v / math.sqrt(2))


def gelu_tanh64(v):  # == 0.5 v (1 + tanh(u)) without the cancellation
    return v * sigmoid64(2 * math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3))


def dgelu64(v):
    return 0.5 * erfc64(-v / math.sqrt(2)) + v * np.exp(-0.5 * v * v) / math.sqrt(2 * math.pi)


def dgelu_tanh64(v):
    c = math.sqrt(2 / math.pi)
    s = sigmoid64(2 * c * (v + 0.044715 * v ** 3))
    return s + v * s * (1 - s) * 2 * c * (1 + 3 * 0.044715 * v * v)


FWD64 = {RELU: lambda v: np.maximum(v, 0), SIGMOID: sigmoid64, TANH: np.tanh, GELU: gelu64,
         GELU_TANH: gelu_tanh64, LINEAR: lambda v: v}


def ulp_error(y, ref):
    """|y - ref| in units of the float32 spacing at ref (ref exact, float64)."""
    y64 = y.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        sp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
        e = np.abs(y64 - ref) / sp
    e[y64 == ref] = 0.0
    return e


def sweep_inputs(stride=3701):
    """Every stride-th float32 bit pattern (both signs, all exponents), finite."""
    bits = np.arange(0, 2 ** 32, stride, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    return x[np.isfinite(x)]


def act(code, x, nthreads=1, out=None):
    out = np.empty_like(x) if out is None else out
    K.act_forward(x, out, code, nthreads)
    return out


# ---------------------------------------------------------------- ULP accuracy
@pytest.mark.parametrize("name", ["exp", "tanh", "sigmoid", "log"])
def test_ulp_sweep(isa, name):
    """exp, tanh, sigmoid, log within 2 ULP of the correctly rounded result over
    a dense sweep of float32 bit patterns (error vs exact <= 2.5 spacings)."""
    x = sweep_inputs()
    if name == "log":
        x = x[x > 0]
    x64 = x.astype(np.float64)
    y = np.empty_like(x)
    with np.errstate(over="ignore", divide="ignore"):
        if name == "exp":
            K.exp(x, y, 1)
            ref = np.exp(x64)
        elif name == "log":
            K.log(x, y, 1)
            ref = np.log(x64)
        elif name == "tanh":
            act(TANH, x, out=y)
            ref = np.tanh(x64)
        else:
            act(SIGMOID, x, out=y)
            ref = sigmoid64(x64)
    big = np.abs(ref) > np.finfo(np.float32).max  # overflows in float32: must be inf
    assert np.all(np.isinf(y[big]) & (np.sign(y[big]) == np.sign(ref[big])))
    e = ulp_error(y[~big], ref[~big])
    assert e.max() <= 2.5, (name, isa, float(x[~big][np.argmax(e)]), float(e.max()))


def test_gelu_accuracy(isa):
    """Exact GELU within 2 ULP of the correctly rounded result: float erf series
    near 0, the erfc tails in double (rounded once)."""
    x = sweep_inputs(3701)
    x = x[np.abs(x) < 30]
    x64 = x.astype(np.float64)
    ref = gelu64(x64)
    y = act(GELU, x)
    normal = np.abs(ref) >= F32_TINY
    e = ulp_error(y[normal], ref[normal])
    assert e.max() <= 2.5, (isa, float(x[normal][np.argmax(e)]), float(e.max()))
    # denormal outputs (x near -13): within one denormal spacing
    assert np.max(np.abs(y[~normal].astype(np.float64) - ref[~normal])) <= 2.0 ** -149


def test_gelu_tanh_accuracy(isa):
    """x * sigmoid(2u): no cancellation for negative x; vectors with x < -0.5
    (where the float inner cubic would be ill-conditioned) run in double.
    Within 2 ULP of the correctly rounded result."""
    x = sweep_inputs(3701)
    x = x[np.abs(x) < 1e4]
    ref = gelu_tanh64(x.astype(np.float64))
    y = act(GELU_TANH, x)
    normal = np.abs(ref) >= F32_TINY
    e = ulp_error(y[normal], ref[normal])
    assert e.max() <= 2.5, (isa, float(x[normal][np.argmax(e)]), float(e.max()))
    assert np.max(np.abs(y[~normal].astype(np.float64) - ref[~normal])) <= 2.0 ** -149


def test_matches_numpy_float32_within_1e6(isa):
    """Within 1e-6 relative of NumPy's own float32 exp/tanh/log (normal outputs)."""
    x = np.concatenate([rng(1).standard_normal(20000) * 5, rng(2).uniform(-87, 88, 20000)]).astype(np.float32)
    pos = np.abs(x) + np.float32(1e-3)
    for ours, theirs in ((lambda v: K.exp(v, np.empty_like(v), 1), np.exp),
                         (lambda v: act(TANH, v), np.tanh),
                         (lambda v: K.log(np.abs(v) + np.float32(1e-3), np.empty_like(v), 1),
                          lambda v: np.log(np.abs(v) + np.float32(1e-3)))):
        a, b = ours(x).astype(np.float64), theirs(x).astype(np.float64)
        ok = np.abs(b) >= F32_TINY
        np.testing.assert_allclose(a[ok], b[ok], rtol=1e-6, atol=0)
    del pos


# ---------------------------------------------------------------- special values
SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3e38, -3e38, 1e-38, -1e-38, 1e-45, -1e-45,
                    1e-40, 88.8, -88.8, 104.0, -104.0, 200.0, -200.0, 9.0, -9.0, 1.0, -1.0], dtype=np.float32)


def test_special_values(isa):
    x = SPECIAL
    with np.errstate(all="ignore"):
        y = np.empty_like(x)
        K.exp(x, y, 1)
        np.testing.assert_array_equal(y[:5], [1, 1, np.inf, 0, np.nan])
        assert y[5] == np.inf and y[6] == 0 and y[12] == np.inf and y[14] == np.inf and y[15] == 0
        assert 0 < y[13] < 1e-38  # denormal result, correctly scaled
        assert abs(y[13] - np.exp(np.float64(x[13]))) <= 2.0 ** -149  # rounded once, at the end

        K.log(x, y, 1)
        assert y[0] == -np.inf and y[1] == -np.inf and y[2] == np.inf and np.isnan(y[3]) and np.isnan(y[4])
        assert np.isnan(y[6]) and np.isnan(y[8])
        for i in (5, 7, 9, 11):  # large, tiny, denormal inputs
            np.testing.assert_allclose(y[i], np.log(np.float64(x[i])), rtol=2e-7)

        t = act(TANH, x)
        np.testing.assert_array_equal(t[:5], [0, -0.0, 1, -1, np.nan])
        assert np.signbit(t[1]) and t[5] == 1 and t[6] == -1 and t[11] == x[11] and t[7] == x[7]

        s = act(SIGMOID, x)
        np.testing.assert_array_equal(s[:5], [0.5, 0.5, 1, 0, np.nan])
        assert s[5] == 1 and s[6] == 0 and s[16] == 1 and s[17] == 0
        assert abs(s[13] - sigmoid64(np.float64(x[13]))) <= 2.0 ** -148  # denormal tail, not flushed

        g = act(GELU, x)
        np.testing.assert_array_equal(g[:5], [0, 0, np.inf, 0, np.nan])
        assert g[5] == x[5] and g[6] == 0 and g[16] == 200 and g[17] == 0
        gt = act(GELU_TANH, x)
        np.testing.assert_array_equal(gt[:5], [0, 0, np.inf, 0, np.nan])
        assert gt[5] == x[5] and gt[6] == 0

        r = act(RELU, x)
        np.testing.assert_array_equal(r[[2, 3, 4, 5, 6]], np.float32([np.inf, 0, np.nan, 3e38, 0]))

        # backward at the limits: finite slopes 1 / 0, NaN propagates
        dy = np.ones_like(x)
        for code in (GELU, GELU_TANH):
            d = np.empty_like(x)
            K.act_backward(dy, x, d, code, 1)
            np.testing.assert_array_equal(d[[2, 3, 5, 6, 16, 17]], [1, 0, 1, 0, 1, 0])
            assert np.isnan(d[4]) and d[0] == 0.5


# ---------------------------------------------------------------- element-wise
@pytest.mark.parametrize("code", [LINEAR, RELU, SIGMOID, TANH, GELU, GELU_TANH])
def test_activation_forward_sizes(isa, code):
    for n in SIZES:
        x = (rng(n).standard_normal(n) * 4).astype(np.float32)
        ref = FWD64[code](x.astype(np.float64))
        y = act(code, x)
        np.testing.assert_allclose(y, ref, rtol=3e-7, atol=1e-37, err_msg=f"n={n}")
        # in place gives the same bits, and lanes past the end are never written
        buf = np.full(n + 16, 7.0, np.float32)
        buf[:n] = x
        act(code, buf[:n], out=buf[:n])
        np.testing.assert_array_equal(buf[:n], y)
        assert np.all(buf[n:] == 7.0)


@pytest.mark.parametrize("code", [LINEAR, RELU, SIGMOID, TANH, GELU, GELU_TANH])
def test_activation_backward_sizes(isa, code):
    for n in SIZES:
        x = (rng(n).standard_normal(n) * 4).astype(np.float32)
        dy = rng(n + 1).standard_normal(n).astype(np.float32)
        y = act(code, x)
        ref_in = x if code in (GELU, GELU_TANH) else y
        x64, y64 = x.astype(np.float64), y.astype(np.float64)
        deriv = {LINEAR: np.ones_like(x64), RELU: (y64 > 0) * 1.0, SIGMOID: y64 * (1 - y64),
                 TANH: 1 - y64 * y64, GELU: dgelu64(x64), GELU_TANH: dgelu_tanh64(x64)}[code]
        d = np.empty_like(x)
        K.act_backward(dy, ref_in, d, code, 1)
        np.testing.assert_allclose(d, dy.astype(np.float64) * deriv, rtol=2e-6, atol=1e-7, err_msg=f"n={n}")
        dd = dy.copy()
        K.act_backward(dd, ref_in, dd, code, 1)  # in place over dy
        np.testing.assert_array_equal(dd, d)


def test_streaming_store_path(isa):
    """Outputs of >= 4M floats (not in place) use non-temporal stores after an
    aligned head: same bits as the cached path, whatever the alignment."""
    n = (1 << 22) + 37
    x = np.linspace(-6, 6, n, dtype=np.float32)
    dy = np.linspace(1, -1, n, dtype=np.float32)
    buf = np.full(n + 2, 9.0, np.float32)
    for code in (RELU, SIGMOID):
        y = buf[1:n + 1]  # 4-byte aligned only
        K.act_forward(x, y, code, 2)
        inplace = x.copy()
        K.act_forward(inplace, inplace, code, 2)
        np.testing.assert_array_equal(y, inplace)
        assert buf[0] == 9.0 and buf[-1] == 9.0
        K.act_backward(dy, x, y, code, 2)
        inplace = dy.copy()
        K.act_backward(inplace, x, inplace, code, 2)
        np.testing.assert_array_equal(y, inplace)
    y = buf[2:n + 2]
    K.exp(x, y, 2)
    np.testing.assert_allclose(y[::1001], np.exp(x[::1001].astype(np.float64)), rtol=3e-7)


def test_gelu_gradient_finite_differences(isa):
    x = np.linspace(-6, 6, 241).astype(np.float32)
    for code in (GELU, GELU_TANH):
        d = np.empty_like(x)
        K.act_backward(np.ones_like(x), x, d, code, 1)
        h = 1e-3
        f = FWD64[code]
        x64 = x.astype(np.float64)
        num = (f(x64 + h) - f(x64 - h)) / (2 * h)
        np.testing.assert_allclose(d, num, rtol=1e-5, atol=1e-6)


def test_exp_log_sizes(isa):
    for n in SIZES:
        x = rng(n).uniform(-80, 80, n).astype(np.float32)
        y = np.empty_like(x)
        K.exp(x, y, 1)
        np.testing.assert_allclose(y, np.exp(x.astype(np.float64)), rtol=3e-7)
        p = np.abs(x) + np.float32(1e-20)
        K.log(p, y, 1)
        np.testing.assert_allclose(y, np.log(p.astype(np.float64)), rtol=2e-7, atol=1e-7)


def test_mixin_matches_numpy_ops(isa):
    ops = Ops()
    x = (rng(3).standard_normal((37, 29)) * 3).astype(np.float32)
    dy = rng(4).standard_normal((37, 29)).astype(np.float32)
    for name in ("relu", "sigmoid", "tanh", "gelu", "exp", "softmax", "log_softmax"):
        np.testing.assert_allclose(getattr(ops, name)(x), getattr(REF, name)(x), rtol=2e-6, atol=1e-6,
                                   err_msg=name)
    np.testing.assert_allclose(ops.gelu_tanh(x), REF.gelu_tanh(x), rtol=1e-5, atol=2e-6)
    np.testing.assert_allclose(ops.log(np.abs(x) + 1), REF.log(np.abs(x) + 1), rtol=2e-7)
    for name, ref in (("relu", ops.relu(x)), ("sigmoid", ops.sigmoid(x)), ("tanh", ops.tanh(x)),
                      ("gelu", x), ("gelu_tanh", x), ("softmax", ops.softmax(x)),
                      ("log_softmax", ops.log_softmax(x))):
        a = getattr(ops, "backprop_" + name)(dy, ref)
        b = getattr(REF, "backprop_" + name)(dy, ref)
        # NumpyOps' gelu_tanh derivative cancels in 0.5 (1 + tanh) for x < 0 (ours does not)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=5e-6 if name == "gelu_tanh" else 1e-6, err_msg=name)
    # relu and its backward are exact products: same bits as NumPy
    np.testing.assert_array_equal(ops.relu(x), REF.relu(x))
    np.testing.assert_array_equal(ops.backprop_relu(dy, x), REF.backprop_relu(dy, x))
    # out= is honoured and returned
    out = np.empty_like(x)
    assert ops.sigmoid(x, out=out) is out


def test_mixin_falls_back(isa):
    ops = Ops()
    x64 = rng(5).standard_normal((6, 5))
    np.testing.assert_array_equal(ops.sigmoid(x64), REF.sigmoid(x64))
    xt = rng(6).standard_normal((5, 6)).astype(np.float32).T  # not C-contiguous
    np.testing.assert_allclose(ops.tanh(xt), np.tanh(xt), rtol=1e-6)
    x3 = rng(7).standard_normal((2, 3, 4)).astype(np.float32)  # NumpyOps' 2-D view semantics
    np.testing.assert_allclose(ops.softmax(x3), REF.softmax(x3), rtol=1e-6)
    assert ops.relu(np.zeros((0, 3), np.float32)).shape == (0, 3)
    with pytest.raises(ValueError):
        ops.relu(np.zeros(3, np.float32), out=np.zeros(4, np.float32))


def test_binding_validation():
    x = np.zeros(8, np.float32)
    with pytest.raises(TypeError, match="act_forward: x must be a C-contiguous float32"):
        K.act_forward(x.astype(np.float64), x, RELU, 1)
    with pytest.raises(TypeError, match="float32"):
        K.act_forward(np.zeros(16, np.float32)[::2], x, RELU, 1)
    with pytest.raises(ValueError, match="differ in size"):
        K.act_forward(x, np.zeros(9, np.float32), RELU, 1)
    buf = np.zeros(12, np.float32)
    with pytest.raises(ValueError, match="overlaps"):
        K.act_forward(buf[:8], buf[4:], RELU, 1)
    with pytest.raises(ValueError, match="invalid argument"):
        K.act_forward(x, x, 99, 1)
    ro = np.zeros(8, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        K.act_forward(x, ro, RELU, 1)
    with pytest.raises(ValueError, match="overlaps"):
        K.sum_rows(buf.reshape(3, 4), buf[:4], 1)
    K.act_forward(buf[3:3], buf[2:2], RELU, 1)  # empty views overlap nothing


# ---------------------------------------------------------------- softmax
SHAPES = [(1, 1), (1, 7), (3, 8), (5, 9), (2, 15), (4, 17), (7, 33), (3, 1000), (2, 1025), (129, 10)]


def softmax64(x):
    m = x.max(axis=1, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("log", [False, True])
def test_softmax_forward_backward(isa, log):
    for rows, cols in SHAPES:
        r = rng(rows * cols)
        x = (r.standard_normal((rows, cols)) * 5).astype(np.float32)
        dy = r.standard_normal((rows, cols)).astype(np.float32)
        x64 = x.astype(np.float64)
        p = softmax64(x64)
        y = np.empty_like(x)
        K.softmax_forward(x, y, log, 1)
        if log:
            np.testing.assert_allclose(y, np.log(p), rtol=2e-6, atol=2e-6)
        else:
            np.testing.assert_allclose(y, p, rtol=2e-6, atol=1e-9)
        d = np.empty_like(x)
        K.softmax_backward(dy, y, d, log, 1)
        dy64 = dy.astype(np.float64)
        if log:
            ref = dy64 - p * dy64.sum(axis=1, keepdims=True)
        else:
            ref = p * (dy64 - (dy64 * p).sum(axis=1, keepdims=True))
        np.testing.assert_allclose(d, ref, rtol=1e-5, atol=2e-6 * max(1, math.sqrt(cols)))
        y2 = x.copy()
        K.softmax_forward(y2, y2, log, 1)  # in place
        np.testing.assert_array_equal(y2, y)


def test_softmax_extreme_rows(isa):
    x = np.array([[1e30, 0, -1e30], [-np.inf, 0, 1], [88, 89, 90], [-100, -100, -100]], np.float32)
    y = np.empty_like(x)
    K.softmax_forward(x, y, False, 1)
    np.testing.assert_allclose(y, softmax64(x.astype(np.float64)), rtol=1e-6, atol=1e-30)
    K.softmax_forward(x, y, True, 1)
    assert y[1, 0] == -np.inf and np.all(np.isfinite(y[[0, 2, 3]]))


# ---------------------------------------------------------------- losses
def lse64(x):
    m = x.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]


@pytest.mark.parametrize("rows,cols", [(1, 1), (1, 2), (3, 7), (5, 10), (17, 9), (64, 17), (9, 1000), (2, 1025)])
def test_sparse_softmax_xent(isa, rows, cols):
    r = rng(rows + cols)
    x = (r.standard_normal((rows, cols)) * 3).astype(np.float32)
    lab = r.integers(0, cols, rows)
    w = r.random(rows).astype(np.float32)
    x64 = x.astype(np.float64)
    per = lse64(x64) - x64[np.arange(rows), lab]
    onehot = np.eye(cols)[lab]
    for sw in (None, w):
        ww = np.ones(rows) if sw is None else w.astype(np.float64)
        g = np.empty_like(x)
        loss, correct = K.sparse_softmax_xent(x, lab, sw, g, 0.5, 1, True)
        np.testing.assert_allclose(loss, (ww * per).sum(), rtol=1e-6)
        np.testing.assert_allclose(g, 0.5 * ww[:, None] * (softmax64(x64) - onehot), rtol=1e-5, atol=1e-7)
        assert correct == int((x.argmax(axis=1) == lab).sum())
        loss2, c2 = K.sparse_softmax_xent(x, lab, sw, None, 0.5, 1, False)  # loss only
        assert loss2 == loss and c2 is None
        gi = x.copy()
        K.sparse_softmax_xent(gi, lab, sw, gi, 0.5, 1)  # gradient in place over the logits
        np.testing.assert_array_equal(gi, g)
    # vs NumpyOps (mean loss, gradient of the mean)
    l_a, g_a = Ops().sparse_softmax_crossentropy(x, lab, sample_weight=w)
    l_b, g_b = REF.sparse_softmax_crossentropy(x, lab, sample_weight=w)
    np.testing.assert_allclose(l_a, l_b, rtol=2e-6, atol=1e-6)  # NumpyOps' log(sum) loses tiny losses
    np.testing.assert_allclose(g_a, g_b, rtol=1e-5, atol=1e-7)  # NumpyOps cancels in p_label - 1


def test_xent_confident_rows_keep_precision(isa):
    """Loss far below float32 epsilon: computed from log1p of the non-max terms."""
    x = np.array([[30.0, 0.0, -5.0], [0.0, 25.0, 1.0], [3.0, 3.0, 0.0]], np.float32)
    lab = np.array([0, 1, 0])
    loss, correct = K.sparse_softmax_xent(x, lab, None, None, 1.0, 1, True)
    x64 = x.astype(np.float64)
    m = x64.max(axis=1)
    e = np.exp(x64 - m[:, None])
    k = (x64 == m[:, None]).sum(axis=1)
    rest = np.where(x64 == m[:, None], 0, e).sum(axis=1)
    per = (m - x64[np.arange(3), lab]) + np.log1p(k - 1 + rest)  # exact to double rounding
    assert per[0] < 1e-12 and per[1] < 1e-10
    g = np.empty((1, 3), np.float32)
    K.sparse_softmax_xent(x[:1], lab[:1], None, g, 1.0, 1)
    np.testing.assert_allclose(g[0, 0], -per[0], rtol=1e-6)  # p - 1 without cancellation
    for r in range(3):
        loss, correct = K.sparse_softmax_xent(x[r:r + 1], lab[r:r + 1], None, None, 1.0, 1, True)
        np.testing.assert_allclose(loss, per[r], rtol=2e-7)
        assert correct == 1  # ties: first argmax (numpy convention)
        t = np.eye(3, dtype=np.float32)[lab[r:r + 1]]
        np.testing.assert_allclose(K.softmax_xent(x[r:r + 1], t, None, None, 1.0, 1), per[r], rtol=2e-7)


def test_sparse_xent_bad_labels():
    x = np.zeros((3, 4), np.float32)
    for bad in ([0, 4, 1], [0, -1, 1]):
        g = np.full_like(x, 5)
        with pytest.raises(ValueError, match="label outside"):
            K.sparse_softmax_xent(x, np.array(bad, np.int64), None, g, 1.0, 1)
        assert np.all(g == 5)  # nothing written
    with pytest.raises(ValueError):
        Ops().sparse_softmax_crossentropy(x, np.array([0, 9, 1]))
    with pytest.raises(TypeError):
        K.sparse_softmax_xent(x, np.array([0, 1, 2], np.int32), None, None, 1.0, 1)
    with pytest.raises(ValueError, match="one label per row"):
        K.sparse_softmax_xent(x, np.array([0, 1], np.int64), None, None, 1.0, 1)
    # the mixin converts other integer dtypes
    l32, _ = Ops().sparse_softmax_crossentropy(x, np.array([0, 1, 2], np.int32))
    np.testing.assert_allclose(l32, math.log(4), rtol=1e-7)


@pytest.mark.parametrize("rows,cols", [(1, 1), (37, 1), (3, 7), (5, 10), (17, 9), (9, 1000), (2, 1025)])
def test_dense_losses(isa, rows, cols):
    r = rng(rows * 7 + cols)
    x = (r.standard_normal((rows, cols)) * 3).astype(np.float32)
    t = r.random((rows, cols)).astype(np.float32)
    z = (r.random((rows, cols)) > 0.5).astype(np.float32)
    w = r.random(rows).astype(np.float32)
    x64, t64, z64 = x.astype(np.float64), t.astype(np.float64), z.astype(np.float64)
    for sw in (None, w):
        ww = np.ones(rows) if sw is None else w.astype(np.float64)
        # dense softmax CE
        g = np.empty_like(x)
        loss = K.softmax_xent(x, t, sw, g, 0.25, 1)
        lsm = x64 - lse64(x64)[:, None]
        np.testing.assert_allclose(loss, (ww * -(t64 * lsm).sum(axis=1)).sum(), rtol=2e-6)
        gref = 0.25 * ww[:, None] * (softmax64(x64) * t64.sum(axis=1, keepdims=True) - t64)
        np.testing.assert_allclose(g, gref, rtol=1e-5, atol=1e-6)
        # sigmoid BCE from logits
        loss = K.sigmoid_bce(x, z, sw, g, 0.25, 1)
        per = np.maximum(x64, 0) - x64 * z64 + np.log1p(np.exp(-np.abs(x64)))
        np.testing.assert_allclose(loss, (ww * per.sum(axis=1)).sum(), rtol=2e-6)
        np.testing.assert_allclose(g, 0.25 * ww[:, None] * (sigmoid64(x64) - z64), rtol=1e-5, atol=1e-8)
        # MSE
        loss = K.mse(x, t, sw, g, 0.25, 1)
        d = (x - t).astype(np.float64)  # the kernel squares the float32 difference exactly
        np.testing.assert_allclose(loss, (ww * (d * d).sum(axis=1)).sum(), rtol=1e-12)
        np.testing.assert_allclose(g, 0.25 * ww[:, None] * 2 * d, rtol=1e-6, atol=1e-7)
    ops = Ops()
    for name, a, b in (("softmax_crossentropy", x, t), ("binary_crossentropy_from_logits", x, z), ("mse", x, t)):
        la, ga = getattr(ops, name)(a, b, sample_weight=w)
        lb, gb = getattr(REF, name)(a, b, sample_weight=w)
        np.testing.assert_allclose(la, lb, rtol=2e-6, err_msg=name)
        np.testing.assert_allclose(ga, gb, rtol=2e-5, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 7), (17, 9), (9, 1000), (2, 1025)])
def test_losses_from_probabilities(isa, rows, cols):
    """Keras BCE / CCE from probabilities: clip to [eps, 1 - eps] (zero gradient
    outside), CCE renormalises rows; vs float64 and NumpyOps."""
    r = rng(rows * 3 + cols)
    p = r.random((rows, cols)).astype(np.float32)
    p.flat[0] = 1e-9  # below the clip
    p.flat[-1] = np.float32(1.0)  # above it
    t = (r.random((rows, cols)) > 0.5).astype(np.float32)
    w = r.random(rows).astype(np.float32)
    eps = 1e-7
    lo, hi = np.float32(eps), np.float32(1.0 - eps)
    p64, t64 = p.astype(np.float64), t.astype(np.float64)
    for sw in (None, w):
        ww = np.ones(rows) if sw is None else w.astype(np.float64)
        g = np.empty_like(p)
        loss = K.bce_prob(p, t, sw, g, eps, 0.5, 1)
        q = np.clip(p64, lo, hi)
        per = -(t64 * np.log(q) + (1 - t64) * np.log1p(-q))
        np.testing.assert_allclose(loss, (ww * per.sum(axis=1)).sum(), rtol=2e-6)
        inside = (p >= lo) & (p <= hi)
        gref = 0.5 * ww[:, None] * (-(t64 / q) + (1 - t64) / (1 - q)) * inside
        np.testing.assert_allclose(g, gref, rtol=2e-6, atol=1e-30)
        loss = K.cce_prob(p, t, sw, g, eps, 0.5, 1)
        s = p64.sum(axis=1, keepdims=True)
        qq = p64 / s
        qc = np.clip(qq, lo, hi)  # float32 clip bounds, like the kernel and NumpyOps
        np.testing.assert_allclose(loss, (ww * -(t64 * np.log(qc)).sum(axis=1)).sum(), rtol=2e-6)
        gq = -(t64 / qc) * ((qq >= lo) & (qq <= hi))
        gref = 0.5 * ww[:, None] * (gq - (gq * qq).sum(axis=1, keepdims=True)) / s
        np.testing.assert_allclose(g, gref, rtol=2e-5, atol=1e-6 * np.abs(gref).max())
    ops = Ops()
    for name in ("binary_crossentropy", "categorical_crossentropy"):
        la, ga = getattr(ops, name)(p, t, sample_weight=w)
        lb, gb = getattr(REF, name)(p, t, sample_weight=w)
        np.testing.assert_allclose(la, lb, rtol=2e-6, err_msg=name)
        np.testing.assert_allclose(ga, gb, rtol=2e-4, atol=1e-6 * np.abs(gb).max(), err_msg=name)
    with pytest.raises(ValueError, match="overlaps"):
        K.cce_prob(p, t, None, p, eps, 1.0, 1)


def test_bce_extreme_logits(isa):
    x = np.array([[100.0, -100.0, 30.0, -30.0, 0.0, 1e-8]], np.float32)
    z = np.array([[1.0, 0.0, 0.0, 1.0, 1.0, 0.0]], np.float32)
    g = np.empty_like(x)
    loss = K.sigmoid_bce(x, z, None, g, 1.0, 1)
    x64 = x.astype(np.float64)
    per = np.maximum(x64, 0) - x64 * z + np.log1p(np.exp(-np.abs(x64)))
    np.testing.assert_allclose(loss, per.sum(), rtol=1e-7)
    np.testing.assert_allclose(g, sigmoid64(x64) - z, rtol=1e-6, atol=1e-30)


def test_loss_mixin_shapes(isa):
    ops = Ops()
    p = rng(8).standard_normal(13).astype(np.float32)  # 1-D: NumpyOps treats it as (13, 1)
    t = rng(9).standard_normal(13).astype(np.float32)
    la, ga = ops.mse(p, t)
    lb, gb = REF.mse(p, t)
    np.testing.assert_allclose(la, lb, rtol=1e-6)
    np.testing.assert_allclose(ga, gb, rtol=1e-6)
    p3 = rng(10).standard_normal((4, 3, 5)).astype(np.float32)
    t3 = rng(11).standard_normal((4, 3, 5)).astype(np.float32)
    la, ga = ops.binary_crossentropy_from_logits(p3, (t3 > 0).astype(np.float32), sample_weight=[1, 2, 3, 4])
    lb, gb = REF.binary_crossentropy_from_logits(p3, (t3 > 0).astype(np.float32), sample_weight=[1, 2, 3, 4])
    np.testing.assert_allclose(la, lb, rtol=1e-6)
    np.testing.assert_allclose(ga, gb, rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError):
        ops.mse(p, t[:5])
    with pytest.raises(ValueError):
        ops.mse(p, t, sample_weight=np.ones(3))


# ---------------------------------------------------------------- reductions
def test_sum_rows(isa):
    for rows, cols in [(1, 1), (3, 7), (128, 10), (5, 17), (64, 1023), (2, 1025), (1000, 3), (0, 5)]:
        x = rng(rows + cols).standard_normal((rows, cols)).astype(np.float32)
        out = np.empty(cols, np.float32)
        K.sum_rows(x, out, 1)
        np.testing.assert_allclose(out, x.astype(np.float64).sum(axis=0), rtol=1e-5, atol=1e-5)
        # sequential row order, exactly numpy's axis-0 reduction
        np.testing.assert_array_equal(out, x.sum(axis=0))
        np.testing.assert_array_equal(Ops().sum_rows(x), REF.sum_rows(x))


def test_sumsq_norm_clip(isa):
    for n in SIZES + [4096 * 3 + 5, 100003]:
        x = rng(n).standard_normal(n).astype(np.float32)
        s = K.sumsq(x, 1)
        np.testing.assert_allclose(s, np.dot(x.astype(np.float64), x.astype(np.float64)), rtol=1e-13)
    ops = Ops()
    x = rng(1).standard_normal(5000).astype(np.float32)
    assert ops.global_norm(x) == pytest.approx(REF.global_norm(x), rel=1e-13)
    xa, xb = x.copy(), x.copy()
    na, nb = ops.clip_by_norm(xa, 10.0), REF.clip_by_norm(xb, 10.0)
    assert na == pytest.approx(nb, rel=1e-13)
    np.testing.assert_array_equal(xa, xb)
    assert ops.global_norm(xa) == pytest.approx(10.0, rel=1e-6)
    xs = x.copy()
    assert ops.clip_by_norm(xs, 1e6) == pytest.approx(nb) and np.array_equal(xs, x)  # below: untouched
    xa, xb = x.copy(), x.copy()
    xa[3] = np.nan
    xb[3] = np.nan
    ops.clip_by_value(xa, -0.5, 0.25)
    REF.clip_by_value(xb, -0.5, 0.25)
    np.testing.assert_array_equal(xa, xb)
    assert np.isnan(xa[3])
    with pytest.raises(ValueError):
        ops.clip_by_value(xa, 1.0, -1.0)
    with pytest.raises(ValueError):
        ops.clip_by_norm(xa, 0.0)
    y = x.copy()
    K.scale(y, 0.5, 1)
    np.testing.assert_array_equal(y, x * np.float32(0.5))


def test_reductions_same_bits_on_every_isa(restore_isa):
    """sum_rows, sumsq and the MSE loss sum have an ISA-independent order."""
    x = (rng(2).standard_normal(300007) * 3).astype(np.float32)
    m = x[:299 * 1003].reshape(299, 1003)
    t = rng(3).standard_normal((299, 1003)).astype(np.float32)
    results = []
    for name in ISAS:
        on_isa(name)
        sr = np.empty(1003, np.float32)
        K.sum_rows(m, sr, 1)
        g = np.empty_like(m)
        results.append((K.sumsq(x, 1), sr, K.mse(m, t, None, g, 0.5, 1), g))
    for r in results[1:]:
        assert r[0] == results[0][0]
        np.testing.assert_array_equal(r[1], results[0][1])
        assert r[2] == results[0][2]
        np.testing.assert_array_equal(r[3], results[0][3])


# ---------------------------------------------------------------- threads
def test_bitwise_across_thread_counts(isa):
    n = 300001  # above every grain, not a multiple of any vector width
    x = (rng(4).standard_normal(n) * 4).astype(np.float32)
    dy = rng(5).standard_normal(n).astype(np.float32)
    m = x[:3001 * 99].reshape(3001, 99)
    lab = rng(6).integers(0, 99, 3001)
    t = rng(7).random((3001, 99)).astype(np.float32)
    w = rng(8).random(3001).astype(np.float32)

    def run(nt):
        out = {}
        for code in (RELU, SIGMOID, TANH, GELU, GELU_TANH):
            out[f"f{code}"] = act(code, x, nt)
            d = np.empty_like(x)
            K.act_backward(dy, x, d, code, nt)
            out[f"b{code}"] = d
        e = np.empty_like(x)
        out["exp"] = K.exp(x, e, nt).copy()
        out["log"] = K.log(np.abs(x), e, nt).copy()
        for lg in (False, True):
            y = np.empty_like(m)
            K.softmax_forward(m, y, lg, nt)
            d = np.empty_like(m)
            K.softmax_backward(m, y, d, lg, nt)
            out[f"sm{lg}"], out[f"smb{lg}"] = y, d
        m10 = x[:3001 * 10].reshape(3001, 10)  # few classes: the row-per-lane path
        g10 = np.empty_like(m10)
        out["sparse10"] = (K.sparse_softmax_xent(m10, lab % 10, w, g10, 0.1, nt, True), g10)
        m1, t1 = x[:3001 * 7].reshape(-1, 1), t.reshape(-1)[:3001 * 7].reshape(-1, 1).copy()
        for name, fn in (("bce1", K.sigmoid_bce), ("mse1", K.mse)):
            g1 = np.empty_like(m1)
            out[name] = (fn(m1, t1, None, g1, 0.1, nt), g1)
        gd10 = np.empty_like(m10)
        out["dense10"] = (K.softmax_xent(m10, t[:, :10].copy(), w, gd10, 0.1, nt), gd10)
        for name, fn, tgt in (("sparse", K.sparse_softmax_xent, lab), ("dense", K.softmax_xent, t),
                              ("bce", K.sigmoid_bce, t), ("mse", K.mse, t)):
            g = np.empty_like(m)
            res = fn(m, tgt, w, g, 0.1, nt)
            out[name] = (res, g)
        for name, fn in (("bce_prob", K.bce_prob), ("cce_prob", K.cce_prob)):
            g = np.empty_like(m)
            out[name] = (fn(t, t[::-1].copy(), w, g, 1e-7, 0.1, nt), g)
        out["sumsq"] = K.sumsq(x, nt)
        sr = np.empty(99, np.float32)
        out["sum_rows"] = K.sum_rows(m, sr, nt)
        big = rng(9).standard_normal((64, 5001)).astype(np.float32)
        out["sum_rows_wide"] = K.sum_rows(big, np.empty(5001, np.float32), nt)
        y = np.empty_like(x)
        mk = np.empty(n, np.uint8)
        K.dropout_forward(x, y, mk, 0.3, 1234, 5, nt)
        out["drop"] = (y, mk)
        return out

    base = run(1)
    for nt in (2, 3):
        other = run(nt)
        for k in base:
            a, b = base[k], other[k]
            if isinstance(a, tuple):
                for u, v in zip(a, b):
                    if isinstance(u, tuple):
                        assert u == v, (k, nt)
                    else:
                        np.testing.assert_array_equal(u, v, err_msg=f"{k} nthreads={nt}")
            else:
                np.testing.assert_array_equal(a, b, err_msg=f"{k} nthreads={nt}")


# ---------------------------------------------------------------- optimizers
def _opt_ref64(kind, p, g, st, hp, step):
    """One float64 step of the Keras conventions (fg_optim.h)."""
    lr, wd, dec = hp["lr"], hp.get("weight_decay", 0.0), hp.get("decoupled", False)
    if wd:
        if dec:
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
    if kind == "sgd":
        mu = hp.get("momentum", 0.0)
        if mu == 0:
            return p - lr * g
        st["velocity"] = mu * st["velocity"] - lr * g
        return p + (mu * st["velocity"] - lr * g if hp.get("nesterov") else st["velocity"])
    if kind == "adagrad":
        st["accum"] = st["accum"] + g * g
        return p - lr * g / np.sqrt(st["accum"] + hp["eps"])
    if kind == "rmsprop":
        rho, eps, mu = hp["rho"], hp["eps"], hp.get("momentum", 0.0)
        st["ms"] = rho * st["ms"] + (1 - rho) * g * g
        if hp.get("centered"):
            st["mg"] = rho * st["mg"] + (1 - rho) * g
            denom = st["ms"] - st["mg"] ** 2 + eps
        else:
            denom = st["ms"] + eps
        inc = lr * g / np.sqrt(denom)
        if mu:
            st["mom"] = mu * st["mom"] + inc
            return p - st["mom"]
        return p - inc
    b1, b2, eps = hp["beta1"], hp["beta2"], hp["eps"]
    st["m"] = b1 * st["m"] + (1 - b1) * g
    st["v"] = b2 * st["v"] + (1 - b2) * g * g
    alpha = lr * math.sqrt(1 - b2 ** step) / (1 - b1 ** step)
    return p - alpha * st["m"] / (np.sqrt(st["v"]) + eps)


OPT_CASES = [
    ("sgd", dict(lr=0.1), []),
    ("sgd", dict(lr=0.05, momentum=0.9), ["velocity"]),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01), ["velocity"]),
    ("sgd", dict(lr=0.05, weight_decay=0.1, decoupled=True), []),
    ("adagrad", dict(lr=0.1, eps=1e-7), ["accum"]),
    ("adagrad", dict(lr=0.1, eps=1e-7, weight_decay=0.01, decoupled=True), ["accum"]),
    ("rmsprop", dict(lr=0.01, rho=0.9, eps=1e-7), ["ms"]),
    ("rmsprop", dict(lr=0.01, rho=0.8, eps=1e-7, momentum=0.9, centered=True, weight_decay=0.01),
     ["ms", "mom", "mg"]),
    ("adam", dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-7), ["m", "v"]),
    ("adam", dict(lr=0.01, beta1=0.8, beta2=0.99, eps=1e-7, weight_decay=0.05, decoupled=True), ["m", "v"]),
    ("adam", dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-7, weight_decay=0.05), ["m", "v"]),
]


def _opt_call(ops, kind, p, g, st, hp, step):
    if kind == "sgd":
        ops.sgd_update(p, g, velocity=st.get("velocity"), **hp)
    elif kind == "adagrad":
        ops.adagrad_update(p, g, st["accum"], **hp)
    elif kind == "rmsprop":
        ops.rmsprop_update(p, g, st["ms"], mom=st.get("mom"), mg=st.get("mg"), **hp)
    else:
        ops.adam_update(p, g, st["m"], st["v"], step=step, **hp)


@pytest.mark.parametrize("case", range(len(OPT_CASES)))
def test_optimizers_vs_float64(isa, case):
    kind, hp, names = OPT_CASES[case]
    n = 1037
    p = rng(case).standard_normal(n).astype(np.float32)
    init = {k: (np.full(n, 0.1, np.float32) if k == "accum" else np.zeros(n, np.float32)) for k in names}
    st32 = {k: v.copy() for k, v in init.items()}
    st64 = {k: v.astype(np.float64) for k, v in init.items()}
    stnp = {k: v.copy() for k, v in init.items()}
    p32, p64, pnp = p.copy(), p.astype(np.float64), p.copy()
    ops = Ops()
    for step in range(1, 9):
        g = rng(100 + step).standard_normal(n).astype(np.float32)
        _opt_call(ops, kind, p32, g, st32, hp, step)
        _opt_call(REF, kind, pnp, g, stnp, hp, step)
        p64 = _opt_ref64(kind, p64, g.astype(np.float64), st64, hp, step)
    np.testing.assert_allclose(p32, p64, rtol=2e-5, atol=2e-6)
    for k in names:
        np.testing.assert_allclose(st32[k], st64[k], rtol=2e-5, atol=2e-6, err_msg=k)
    # NumpyOps performs the same float32 operations (constants may round differently)
    np.testing.assert_allclose(p32, pnp, rtol=1e-6, atol=1e-7)
    if kind in ("sgd", "adagrad"):
        np.testing.assert_array_equal(p32, pnp)


def test_optimizer_argument_checks():
    p = np.zeros(4, np.float32)
    g = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="velocity"):
        K.sgd_update(p, g, None, 0.1, 0.9, False, 0.0, False, 1)
    with pytest.raises(ValueError, match="step"):
        K.adam_update(p, g, np.zeros(4, np.float32), np.zeros(4, np.float32), 0.1, 0.9, 0.999, 1e-7, 0, 0.0,
                      False, 1)
    with pytest.raises(ValueError, match="differ in size"):
        K.adagrad_update(p, g, np.zeros(5, np.float32), 0.1, 1e-7, 0.0, False, 1)
    with pytest.raises(ValueError, match="overlaps"):
        K.sgd_update(p, p, None, 0.1, 0.0, False, 0.0, False, 1)
    with pytest.raises(ValueError):
        Ops().sgd_update(p, g, lr=0.1, momentum=0.9)  # NumpyOps' message: needs a velocity
    # momentum == 0: a velocity passed anyway is ignored, like NumpyOps
    v = np.ones(4, np.float32)
    Ops().sgd_update(p, g, lr=0.1, velocity=v)
    assert np.all(v == 1)


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["sgd_momentum", "sgd_nesterov", "adam", "adamw", "rmsprop", "rmsprop_centered",
                                  "adagrad"])
def test_optimizers_match_torch(kind):
    """10 steps against torch.optim. torch's conventions differ where noted:
    Adam puts eps on the bias-corrected sqrt(v_hat) (our eps on sqrt(v): use
    eps_torch = eps * sqrt(1 - b2^t) ... so pick eps tiny); torch's SGD momentum
    keeps v' = mu v' + g and steps lr v' (the same as ours for constant lr);
    torch's RMSprop puts eps outside the sqrt (tiny eps); Adagrad starts from 0
    and puts eps outside (initial accumulator 0.1 passed to torch)."""
    torch = pytest.importorskip("torch")
    n = 513
    p0 = rng(1).standard_normal(n).astype(np.float32)
    grads = [rng(10 + i).standard_normal(n).astype(np.float32) for i in range(10)]
    tp = torch.nn.Parameter(torch.tensor(p0.copy()))
    eps = 1e-12
    if kind == "sgd_momentum":
        opt = torch.optim.SGD([tp], lr=0.05, momentum=0.9)
        hp, names, k = dict(lr=0.05, momentum=0.9), ["velocity"], "sgd"
    elif kind == "sgd_nesterov":
        opt = torch.optim.SGD([tp], lr=0.05, momentum=0.9, nesterov=True)
        hp, names, k = dict(lr=0.05, momentum=0.9, nesterov=True), ["velocity"], "sgd"
    elif kind == "adam":
        opt = torch.optim.Adam([tp], lr=0.01, betas=(0.9, 0.999), eps=eps)
        hp, names, k = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=eps), ["m", "v"], "adam"
    elif kind == "adamw":
        opt = torch.optim.AdamW([tp], lr=0.01, betas=(0.9, 0.999), eps=eps, weight_decay=0.1)
        hp, names, k = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=eps, weight_decay=0.1, decoupled=True), \
            ["m", "v"], "adam"
    elif kind == "rmsprop":
        opt = torch.optim.RMSprop([tp], lr=0.01, alpha=0.9, eps=eps)
        hp, names, k = dict(lr=0.01, rho=0.9, eps=eps), ["ms"], "rmsprop"
    elif kind == "rmsprop_centered":
        opt = torch.optim.RMSprop([tp], lr=0.01, alpha=0.9, eps=eps, centered=True, momentum=0.5)
        hp, names, k = dict(lr=0.01, rho=0.9, eps=eps, centered=True, momentum=0.5), ["ms", "mom", "mg"], \
            "rmsprop"
    else:
        opt = torch.optim.Adagrad([tp], lr=0.1, eps=eps, initial_accumulator_value=0.1)
        hp, names, k = dict(lr=0.1, eps=eps), ["accum"], "adagrad"
    st = {nm: (np.full(n, 0.1, np.float32) if nm == "accum" else np.zeros(n, np.float32)) for nm in names}
    p = p0.copy()
    ops = Ops()
    for step, g in enumerate(grads, 1):
        tp.grad = torch.tensor(g)
        opt.step()
        _opt_call(ops, k, p, g, st, hp, step)
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- dropout
def test_dropout_matches_numpy_stream(isa):
    ops = Ops()
    for n in SIZES + [70001]:
        x = rng(n).standard_normal(n).astype(np.float32)
        for rate, seed, offset in ((0.5, 3, 0), (0.25, 2 ** 63 + 5, 123456789), (0.1, 7, 2 ** 40 - 3)):
            ma, mb = np.empty(n, np.uint8), np.empty(n, np.uint8)
            ya = ops.dropout(x, rate, seed, offset, mask=ma)
            yb = REF.dropout(x, rate, seed, offset, mask=mb)
            np.testing.assert_array_equal(ma, mb)
            np.testing.assert_array_equal(ya, yb)
            dy = rng(n + 1).standard_normal(n).astype(np.float32)
            np.testing.assert_array_equal(ops.backprop_dropout(dy, ma, rate), REF.backprop_dropout(dy, mb, rate))


def test_dropout_stream_properties(isa):
    n = 100000
    x = np.ones(n, np.float32)
    y = np.empty_like(x)
    mk = np.empty(n, np.uint8)
    K.dropout_forward(x, y, mk, 0.3, 99, 0, 1)
    frac = mk.mean()
    assert abs(frac - 0.7) < 5 * math.sqrt(0.21 / n)
    np.testing.assert_array_equal(y, np.where(mk == 1, np.float32(1 / 0.7), 0).astype(np.float32))
    # the stream depends only on (seed, offset + i): a slice at an offset continues it
    y2, m2 = np.empty(n - 1000, np.float32), np.empty(n - 1000, np.uint8)
    K.dropout_forward(x[1000:], y2, m2, 0.3, 99, 1000, 1)
    np.testing.assert_array_equal(m2, mk[1000:])
    K.dropout_forward(x, y, None, 0.0, 99, 0, 1)
    np.testing.assert_array_equal(y, x)
    K.dropout_forward(x, y, mk, 1.0, 99, 0, 1)
    assert not y.any() and not mk.any()
    with pytest.raises(ValueError):
        Ops().dropout(x, 1.0, 1)
    K.dropout_forward(x, y, mk, 0.3, 99, 0, 1)
    bm = np.empty(n, np.bool_)  # bool masks work too
    Ops().dropout(x, 0.3, 99, 0, mask=bm)
    np.testing.assert_array_equal(bm.view(np.uint8), mk)
