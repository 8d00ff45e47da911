"""The activations added to the first six (leaky_relu, elu, selu, silu,
softplus, softsign, hard_sigmoid, mish, exponential, relu6, hard_silu and
Keras's parametrised relu): C kernels (csrc/kernels/fg_act_vec.h through
fastgrad._native.kernels), their NumPy twins (NumpyOps), the fused dense
epilogue, the codes' single source (csrc/fg_common.h) and fastgrad.activations.

Each forward is checked against a float64 formula in float32 spacings over a
strided sweep of every float32 bit pattern, on every instruction-set path;
special values (signed zeros, +-inf, NaN, huge, tiny, denormal); gradients by
finite differences (float64, NumpyOps) and C backward against float64
derivatives; C against NumpyOps over sizes off every vector tile, in place,
and bitwise for 1/2/3 threads; fused dense == gemm + bias + activation bitwise.
"""
import math
import pathlib
import re

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _native
from fastgrad.backend import NumpyOps
from fastgrad.backend import numpy_ops as npo

K = _native.module("kernels")
G = _native.module("gemm")
RT = _native.module("runtime")
ISAS = RT.isa_supported() if RT is not None else []
needs_native = pytest.mark.skipif(K is None or G is None, reason="native modules not built")

REF = NumpyOps()
HEADER = pathlib.Path(__file__).resolve().parents[1] / "csrc" / "fg_common.h"
F32_TINY = float(np.finfo(np.float32).tiny)
DENORM = 2.0 ** -149
SA = 1.6732632423543772848170429916717
SS = 1.0507009873554804934193349852946

NEW = ["leaky_relu", "elu", "selu", "silu", "softplus", "softsign", "hard_sigmoid", "mish", "exponential",
       "relu6", "hard_silu", "relu_general"]
#: parameter sets exercised for the parametrised activations ({} = by-name defaults)
PARAMS = {"leaky_relu": [{}, {"negative_slope": 0.05}, {"negative_slope": 1.7}],
          "elu": [{}, {"alpha": 0.3}, {"alpha": 2.5}],
          "relu_general": [{}, {"negative_slope": 0.1, "max_value": None, "threshold": 0.5},
                           {"negative_slope": 0.0, "max_value": 2.0, "threshold": 0.0},
                           {"negative_slope": 0.2, "max_value": 3.0, "threshold": -0.5},
                           {"negative_slope": 0.0, "max_value": None, "threshold": 1.0},
                           {"negative_slope": 0.3, "max_value": 0.0, "threshold": 0.0}]}
CASES = [(n, p) for n in NEW for p in PARAMS.get(n, [{}])]
CASE_IDS = [n + ("" if not p else "-" + "-".join(f"{k}={v}" for k, v in p.items())) for n, p in CASES]
#: forward error bounds, in float32 spacings at the exact value (measured maxima
#: over the sweep in parentheses)
ULP_BOUND = {"leaky_relu": 0.5, "relu6": 0.0, "relu_general": 1.5,   # one or two roundings (1.25)
             "silu": 1.0, "softplus": 1.0, "mish": 1.0,              # double, rounded once (0.6)
             "elu": 1.5, "selu": 2.0, "softsign": 2.0,              # (0.86, 1.67, 1.49)
             "hard_sigmoid": 1.5, "hard_silu": 2.5, "exponential": 2.5}  # (1.0, 1.86, 0.98)
#: results that are exact float operations: C == NumpyOps bit for bit
EXACT = {"leaky_relu", "relu6", "relu_general", "hard_sigmoid", "hard_silu", "softsign"}
EXACT_BWD = {"leaky_relu", "relu6", "relu_general", "hard_sigmoid", "hard_silu", "softsign", "exponential"}
SIZES = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 97, 127, 129, 257, 1000, 1009, 1025, 4099]


@pytest.fixture(params=ISAS)
def isa(request):
    orig = _native.get_isa()
    _native.set_isa(request.param)
    yield request.param
    _native.set_isa(orig)


def rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- float64 references
def sigmoid64(v):
    e = np.exp(-np.abs(v))
    return np.where(v >= 0, 1 / (1 + e), e / (1 + e))


def softplus64(v):
    return np.logaddexp(v, 0.0)


def keras_relu64(x, negative_slope=0.0, max_value=None, threshold=0.0):
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


def f32(v):
    """A parameter as the float32 the kernels use, in float64."""
    return float(np.float32(v))


def fwd64(name, v, p=None):
    p = p or {}
    if name == "leaky_relu":
        s = f32(p.get("negative_slope", 0.2))
        return np.where(v >= 0, v, s * v)
    if name == "elu":
        a = f32(p.get("alpha", 1.0))
        return np.where(v > 0, v, a * np.expm1(np.minimum(v, 0)))
    if name == "selu":
        return SS * np.where(v > 0, v, SA * np.expm1(np.minimum(v, 0)))
    if name == "silu":
        return v * sigmoid64(v)
    if name == "softplus":
        return softplus64(v)
    if name == "softsign":
        return v / (1 + np.abs(v))
    if name == "hard_sigmoid":
        return np.clip(v + 3, 0, 6) / 6
    if name == "mish":
        return v * np.tanh(softplus64(v))
    if name == "exponential":
        return np.exp(v)
    if name == "relu6":
        return np.clip(v, 0, 6)
    if name == "hard_silu":
        return v * np.clip(v + 3, 0, 6) / 6
    if name == "relu_general":
        q = {k: (f32(x) if x is not None else None) for k, x in p.items()}
        return keras_relu64(v, **q)
    raise ValueError(name)


def deriv64(name, v, p=None, f32=f32):
    """d/dx in float64; parameters rounded to float32 (as the kernels take them)
    unless f32=float."""
    p = p or {}
    if name == "leaky_relu":
        return np.where(v >= 0, 1.0, f32(p.get("negative_slope", 0.2)))
    if name == "elu":
        return np.where(v > 0, 1.0, f32(p.get("alpha", 1.0)) * np.exp(np.minimum(v, 0)))
    if name == "selu":
        return SS * np.where(v > 0, 1.0, SA * np.exp(np.minimum(v, 0)))
    if name == "silu":
        s = sigmoid64(v)
        return s * (1 + v * (1 - s))
    if name == "softplus":
        return sigmoid64(v)
    if name == "softsign":
        return 1 / (1 + np.abs(v)) ** 2
    if name == "hard_sigmoid":
        return ((v > -3) & (v < 3)) / 6.0
    if name == "mish":
        t = np.tanh(softplus64(v))
        return t + v * (1 - t * t) * sigmoid64(v)
    if name == "exponential":
        return np.exp(v)
    if name == "relu6":
        return ((v > 0) & (v < 6)) * 1.0
    if name == "hard_silu":
        return np.where(v <= -3, 0.0, np.where(v >= 3, 1.0, (2 * v + 3) / 6))
    if name == "relu_general":
        s, m, t = f32(p.get("negative_slope", 0.0)), p.get("max_value"), f32(p.get("threshold", 0.0))
        pos = np.ones_like(v) if m is None else ((v > 0) & (v < f32(m))) * 1.0
        return np.where(v > t, pos, np.where(v < t, s, 0.0))
    raise ValueError(name)


def kinks(name, p=None):
    """Points where the function (or its derivative) is not smooth."""
    p = p or {}
    if name in ("leaky_relu", "elu", "selu"):
        return [0.0]
    if name == "relu6":
        return [0.0, 6.0]
    if name in ("hard_sigmoid", "hard_silu"):
        return [-3.0, 3.0]
    if name == "relu_general":
        return [0.0, p.get("threshold", 0.0)] + ([p["max_value"]] if p.get("max_value") is not None else [])
    return []


def away_from_kinks(x, pts, gap=0.05):
    x = x.copy()
    for k in pts:
        near = np.abs(x - k) < gap
        x[near] = k + np.where(x[near] >= k, gap, -gap) * 2
    return x


def code(name):
    return npo.ACTIVATIONS[name]


def c_fwd(name, x, p=None, nthreads=1, out=None):
    out = np.empty_like(x) if out is None else out
    K.act_forward(x, out, code(name), nthreads, **(p or {}))
    return out


def c_bwd(name, dy, ref, p=None, nthreads=1, out=None):
    out = np.empty_like(dy) if out is None else out
    K.act_backward(dy, ref, out, code(name), nthreads, **(p or {}))
    return out


def ulp_error(y, ref):
    y64 = y.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        sp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
        e = np.abs(y64 - ref) / sp
    e[y64 == ref] = 0.0
    return e


def sweep_inputs(stride=3701):
    bits = np.arange(0, 2 ** 32, stride, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    return x[np.isfinite(x)]


def check_accuracy(y, x, name, p, bound, where):
    with np.errstate(all="ignore"):
        ref = fwd64(name, x.astype(np.float64), p)
    big = np.abs(ref) > np.finfo(np.float32).max      # overflows in float32: must be inf
    assert np.all(np.isinf(y[big]) & (np.sign(y[big]) == np.sign(ref[big]))), (name, where)
    normal = ~big & (np.abs(ref) >= F32_TINY)
    e = ulp_error(y[normal], ref[normal])
    if e.size:
        i = int(np.argmax(e))
        assert e[i] <= bound, (name, p, where, float(x[normal][i]), float(e[i]))
    sub = ~big & ~normal                                 # denormal results: within one denormal spacing
    if sub.any():
        d = np.abs(y[sub].astype(np.float64) - ref[sub])
        assert d.max() <= DENORM, (name, p, where, float(x[sub][np.argmax(d)]), float(d.max() / DENORM))


# ---------------------------------------------------------------- codes: one source
def header_codes():
    text = HEADER.read_text()
    start = text.index("FG_ACT_LINEAR = 0")
    enum = text[start:text.index("FG_ACT_COUNT", start)]
    codes = {m.group(1).lower(): int(m.group(2)) for m in re.finditer(r"FG_ACT_(\w+)\s*=\s*(\d+)", enum)}
    body = text[text.index("static inline int fg_act_backward_needs_input"):]
    body = body[:body.index("default:")]
    needs = {m.group(1).lower() for m in re.finditer(r"case FG_ACT_(\w+):", body)}
    return codes, needs


def test_numpy_mirror_equals_header():
    codes, needs = header_codes()
    assert len(codes) >= 18 and sorted(codes.values()) == list(range(len(codes)))
    mirror = {k: v for k, v in npo.ACTIVATIONS.items() if v < 100}
    assert mirror == codes
    assert set(npo.BACKWARD_NEEDS_INPUT) == needs
    assert needs >= {"gelu", "gelu_tanh"} and not needs & {"relu", "sigmoid", "tanh", "linear"}


@needs_native
def test_native_codes_come_from_the_header():
    codes, needs = header_codes()
    assert K.ACTIVATIONS == codes and G.ACTIVATIONS == codes
    assert K.ACT_COUNT == G.ACT_COUNT == len(codes)
    assert {n for n, c in K.ACTIVATIONS.items() if K.act_backward_needs_input(c)} == needs
    with pytest.raises(ValueError, match="unknown activation code"):
        K.act_backward_needs_input(K.ACT_COUNT)


def test_backward_needs_input_single_source():
    from fastgrad.layers import core
    for name in fg.activations.ACTIVATION_NAMES:
        want = name in npo.BACKWARD_NEEDS_INPUT
        assert fg.activations.backward_needs_input(name) is want, name
        assert (name in core._NEEDS_PREACT) is want, name
    assert fg.activations.backward_needs_input("swish") and fg.activations.backward_needs_input(fg.activations.mish)
    assert not fg.activations.backward_needs_input("relu6")
    assert fg.activations.backward_needs_input("relu_general")


@pytest.mark.parametrize("name", [n for n in NEW if n != "relu_general"] + ["gelu", "relu"])
def test_dense_keeps_preact_exactly_when_needed(name):
    from fastgrad.engine.workspace import Workspace
    with fg.use_backend("numpy"):
        layer = fg.layers.Dense(3, activation=name)
        layer.build((4,))
        params = {s.name: np.ones(s.shape, np.float32) for s in layer.param_specs()}
        layer.bind(params, {k: np.zeros_like(v) for k, v in params.items()}, {})
        ws = Workspace()
        layer.forward(np.ones((2, 4), np.float32), True, ws)
        assert (ws.z is not None) == fg.activations.backward_needs_input(name)


# ---------------------------------------------------------------- accuracy (C)
@needs_native
@pytest.mark.parametrize("name,p", CASES, ids=CASE_IDS)
def test_ulp_sweep(isa, name, p):
    """Within ULP_BOUND[name] spacings of the exact value over every 3701st
    float32 bit pattern (both signs, all exponents); overflow gives inf;
    denormal results within one denormal spacing."""
    x = sweep_inputs()
    y = c_fwd(name, x, p)
    check_accuracy(y, x, name, p, ULP_BOUND[name], isa)


@needs_native
@pytest.mark.parametrize("name", ["silu", "softplus", "mish", "elu", "selu", "softsign", "hard_silu"])
def test_every_float_where_the_error_peaks(isa, name):
    """Every float32 in [-8, -0.25] and [0.25, 8] (step 7), where the compound formulas are
    least conditioned."""
    b0, b1 = np.float32(0.25).view(np.uint32), np.float32(8.0).view(np.uint32)
    pos = np.arange(b0, b1, 7, dtype=np.uint32).view(np.float32)
    x = np.concatenate([pos, -pos])
    check_accuracy(c_fwd(name, x), x, name, {}, ULP_BOUND[name], isa)


def test_numpy_twins_float32_accuracy():
    """NumpyOps' float32 results against the same float64 formulas."""
    x = sweep_inputs(7919)
    bound = dict(ULP_BOUND, exponential=2.5)
    for name, p in CASES:
        with np.errstate(all="ignore"):
            y = REF.activation(name, x, **p)
        check_accuracy(y, x, name, p, bound[name], "numpy")


def test_numpy_twins_float64_against_formulas():
    x = np.concatenate([np.linspace(-30, 30, 2001), [-700.0, -100.0, -1e-300, 0.0, 1e-300, 100.0, 700.0]])
    for name, p in CASES:
        ref = fwd64(name, x, {k: v for k, v in p.items()})
        if name in ("leaky_relu", "elu", "relu_general"):   # float64: parameters not rounded to float32
            q = {k: v for k, v in p.items()}
            ref = fwd64_exact(name, x, q)
        y = REF.activation(name, x, **p)
        np.testing.assert_allclose(y, ref, rtol=2e-15, atol=1e-300, err_msg=f"{name} {p}")


def fwd64_exact(name, v, p):
    if name == "leaky_relu":
        return np.where(v >= 0, v, p.get("negative_slope", 0.2) * v)
    if name == "elu":
        return np.where(v > 0, v, p.get("alpha", 1.0) * np.expm1(np.minimum(v, 0)))
    return keras_relu64(v, **p)


# ---------------------------------------------------------------- special values
SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3e38, -3e38, 1e-38, -1e-38, 1e-45, -1e-45, 1e-40,
                    -1e-40, 88.8, -88.8, 104.0, -104.0, 200.0, -200.0, 20.0, -20.0, 3.0, -3.0, 6.0, 1.0, -1.0,
                    -90.0, -100.0, -115.0], dtype=np.float32)
#: limits at +inf, -inf
LIMITS = {"leaky_relu": (np.inf, -np.inf), "elu": (np.inf, -1.0), "selu": (np.inf, np.float32(-SS * SA)),
          "silu": (np.inf, 0.0), "softplus": (np.inf, 0.0), "softsign": (1.0, -1.0), "hard_sigmoid": (1.0, 0.0),
          "mish": (np.inf, 0.0), "exponential": (np.inf, 0.0), "relu6": (6.0, 0.0), "hard_silu": (np.inf, 0.0),
          "relu_general": (np.inf, 0.0)}


def special_limits(name, p):
    if name == "relu_general":
        hi = np.inf if p.get("max_value") is None else p["max_value"]
        lo = -np.inf if p.get("negative_slope", 0.0) != 0 else 0.0
        return hi, lo
    if name == "leaky_relu":
        return np.inf, -np.inf
    if name == "elu":
        return np.inf, -np.float32(p.get("alpha", 1.0))
    return LIMITS[name]


def check_specials(y, name, p, where):
    x = SPECIAL
    hi, lo = special_limits(name, p)
    assert y[2] == np.float32(hi) and y[3] == np.float32(lo), (name, p, where, y[2], y[3])
    assert np.isnan(y[4]), (name, where)
    fin = np.isfinite(x)
    check_accuracy(y[fin], x[fin], name, p, ULP_BOUND[name] + (1.0 if where == "numpy" else 0.0), where)
    if name in ("elu", "selu", "silu", "softsign", "mish", "hard_silu", "leaky_relu"):
        # tiny negative inputs (normal and denormal) give results <= 0, never a positive value
        assert np.all(y[[8, 10, 12]] <= 0), (name, where, y[[8, 10, 12]])


@needs_native
@pytest.mark.parametrize("name,p", CASES, ids=CASE_IDS)
def test_special_values(isa, name, p):
    with np.errstate(all="ignore"):
        y = c_fwd(name, SPECIAL, p)
        check_specials(y, name, p, isa)
        ynp = REF.activation(name, SPECIAL, **p)
    check_specials(ynp, name, p, "numpy")
    if name in EXACT:
        np.testing.assert_array_equal(y, ynp)


DY1 = np.ones(5, np.float32)
X_LIM = np.array([np.inf, -np.inf, np.nan, 0.5, -0.5], np.float32)
#: d/dx at +inf, -inf
D_LIMITS = {"leaky_relu": (1.0, 0.2), "elu": (1.0, 0.0), "selu": (SS, 0.0), "silu": (1.0, 0.0),
            "softplus": (1.0, 0.0), "softsign": (0.0, 0.0), "mish": (1.0, 0.0), "hard_silu": (1.0, 0.0)}


@needs_native
@pytest.mark.parametrize("name", sorted(D_LIMITS))
def test_backward_limits_and_nan(isa, name):
    """Backward from x at +-inf: the finite limits of the derivative; NaN propagates
    through the smooth ones."""
    with np.errstate(all="ignore"):
        d = c_bwd(name, DY1, X_LIM)
        dn = REF.backprop_activation(name, DY1, None, X_LIM)
    for out, where in ((d, isa), (dn, "numpy")):
        np.testing.assert_allclose(out[:2], np.float32(D_LIMITS[name]), rtol=1e-7, err_msg=f"{name} {where}")
        if name != "leaky_relu":
            assert np.isnan(out[2]), (name, where)
        np.testing.assert_allclose(out[3:], deriv64(name, X_LIM[3:].astype(np.float64)), rtol=3e-7)


@needs_native
def test_denormal_inputs_are_not_flushed(isa):
    x = np.array([1e-45, -1e-45, 1e-40, -1e-40, 1e-39, -1e-39], np.float32)
    for name in ("leaky_relu", "elu", "selu", "silu", "softsign", "mish", "hard_silu", "relu6"):
        y = c_fwd(name, x)
        ref = fwd64(name, x.astype(np.float64))
        assert np.max(np.abs(y.astype(np.float64) - ref)) <= DENORM, name
        if name in ("elu", "selu", "softsign", "mish"):   # ~x near 0: the denormal survives
            np.testing.assert_array_equal(y[2:] != 0, True, err_msg=name)


# ---------------------------------------------------------------- gradients (NumpyOps, float64)
def fd_grad(f, x, h=1e-6):
    g = np.zeros_like(x)
    flat, gf = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = f(x)
        flat[i] = old - h
        fm = f(x)
        flat[i] = old
        gf[i] = (fp - fm) / (2 * h)
    return g


@pytest.mark.parametrize("name,p", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (2, 3, 7)])
def test_gradients_finite_differences(name, p, shape):
    r = rng(hash((name, shape)) % 1000)
    x = away_from_kinks(r.uniform(-7, 7, shape), kinks(name, p))
    w = r.standard_normal(shape)
    f = lambda z: float(np.sum(w * REF.activation(name, z, **p)))
    y = REF.activation(name, x, **p)
    dx = REF.backprop_activation(name, w, y, x, **p)
    noise = 1e-9 * max(1.0, float(np.abs(w * y).sum()))   # rounding of f over h
    np.testing.assert_allclose(dx, fd_grad(f, x.copy()), rtol=1e-6, atol=noise)
    np.testing.assert_allclose(dx, w * deriv64(name, x, p, f32=float), rtol=1e-12, atol=1e-14)


def test_gradients_in_the_tails():
    """Far tails (where naive formulas overflow or cancel) in float64."""
    x = np.array([-700.0, -300.0, -60.0, -30.0, 30.0, 60.0, 300.0, 700.0])
    for name in ("silu", "softplus", "mish", "elu", "selu", "softsign"):
        y = REF.activation(name, x)
        d = REF.backprop_activation(name, np.ones_like(x), y, x)
        assert np.all(np.isfinite(d)), name
        np.testing.assert_allclose(d, deriv64(name, x), rtol=1e-12, atol=1e-300, err_msg=name)


# ---------------------------------------------------------------- C vs NumpyOps
@needs_native
@pytest.mark.parametrize("name,p", CASES, ids=CASE_IDS)
def test_c_matches_numpy_ops_on_many_sizes(isa, name, p):
    for n in SIZES:
        x = (rng(n).standard_normal(n) * 5).astype(np.float32)
        dy = rng(n + 1).standard_normal(n).astype(np.float32)
        y = c_fwd(name, x, p)
        ynp = REF.activation(name, x, **p)
        if name in EXACT:
            np.testing.assert_array_equal(y, ynp, err_msg=f"{name} n={n}")
        else:
            np.testing.assert_allclose(y, ynp, rtol=4e-7, atol=1e-37, err_msg=f"{name} n={n}")
        check_accuracy(y, x, name, p, ULP_BOUND[name], (isa, n))
        # in place: the same bits, and nothing past the end is written
        buf = np.full(n + 16, 7.0, np.float32)
        buf[:n] = x
        c_fwd(name, buf[:n], p, out=buf[:n])
        np.testing.assert_array_equal(buf[:n], y)
        assert np.all(buf[n:] == 7.0)
        # backward from the ref the rule names, against float64 and NumpyOps
        ref = x if name in npo.BACKWARD_NEEDS_INPUT else y
        d = c_bwd(name, dy, ref, p)
        dnp = REF.backprop_activation(name, dy, y, x, **p)
        want = dy.astype(np.float64) * deriv64(name, x.astype(np.float64), p)
        if name == "hard_sigmoid":   # from y: the kink is decided by the rounded output
            want = np.where((y > 0) & (y < 1), dy / 6.0, 0.0)
        elif name == "relu6":
            want = np.where((y > 0) & (y < 6), dy, 0.0)
        np.testing.assert_allclose(d, want, rtol=2e-6, atol=1e-7, err_msg=f"{name} n={n}")
        if name in EXACT_BWD:
            np.testing.assert_array_equal(d, dnp, err_msg=f"{name} n={n}")
        else:
            np.testing.assert_allclose(d, dnp, rtol=2e-6, atol=1e-7, err_msg=f"{name} n={n}")
        dd = dy.copy()
        c_bwd(name, dd, ref, p, out=dd)  # in place over dy
        np.testing.assert_array_equal(dd, d)


@needs_native
def test_bitwise_across_thread_counts(isa):
    n = 300007  # above every grain (2 x 64K memory-bound, 2 x 8K transcendental), odd
    x = (rng(4).standard_normal(n) * 6).astype(np.float32)
    dy = rng(5).standard_normal(n).astype(np.float32)
    base = {}
    for nt in (1, 2, 3):
        for name, p in CASES:
            y = c_fwd(name, x, p, nt)
            ref = x if name in npo.BACKWARD_NEEDS_INPUT else y
            d = c_bwd(name, dy, ref, p, nt)
            key = (name, tuple(sorted(p.items())))
            if nt == 1:
                base[key] = (y, d)
            else:
                np.testing.assert_array_equal(y, base[key][0], err_msg=f"{key} nthreads={nt}")
                np.testing.assert_array_equal(d, base[key][1], err_msg=f"{key} nthreads={nt}")


@needs_native
def test_streaming_store_path_same_bits(isa):
    """>= 4M outputs, not in place: non-temporal stores after an aligned head;
    the lane-local bodies give the same bits as the cached path."""
    n = (1 << 22) + 19
    x = np.linspace(-9, 9, n, dtype=np.float32)
    buf = np.full(n + 1, 5.0, np.float32)
    for name in ("silu", "elu", "leaky_relu", "hard_silu"):
        y = buf[1:]
        K.act_forward(x, y, code(name), 2)
        inplace = x.copy()
        K.act_forward(inplace, inplace, code(name), 2)
        np.testing.assert_array_equal(y, inplace, err_msg=name)
        assert buf[0] == 5.0


@needs_native
def test_parameter_validation():
    x = np.zeros(4, np.float32)
    for bad in ({"negative_slope": float("nan")}, {"negative_slope": float("inf")}):
        with pytest.raises(ValueError, match="act_forward: invalid argument.*leaky|act_forward: invalid argument"):
            K.act_forward(x, x.copy(), code("leaky_relu"), 1, **bad)
    with pytest.raises(ValueError, match="act_backward: invalid argument"):
        K.act_backward(x, x, x.copy(), code("elu"), 1, alpha=float("nan"))
    for bad in ({"max_value": -1.0}, {"max_value": float("nan")}, {"threshold": float("inf")}):
        with pytest.raises(ValueError, match="invalid argument"):
            K.act_forward(x, x.copy(), code("relu_general"), 1, **bad)
    with pytest.raises(ValueError, match="unknown activation code"):
        K.act_forward(x, x.copy(), K.ACT_COUNT, 1)
    with pytest.raises(ValueError, match="not both"):
        K.act_forward(x, x.copy(), code("elu"), 1, alpha=1.0, negative_slope=0.1)
    # parameters are ignored by the activations that take none
    np.testing.assert_array_equal(c_fwd("silu", x + 1, {"alpha": 3.0}), c_fwd("silu", x + 1))


def test_ops_parameter_errors():
    x = np.ones(3, np.float32)
    with pytest.raises(TypeError, match="'relu' takes no parameter"):
        REF.activation("relu", x, negative_slope=0.1)
    with pytest.raises(TypeError, match="takes negative_slope"):
        REF.activation("leaky_relu", x, alpha=0.1)
    with pytest.raises(ValueError, match="max_value must be None or >= 0"):
        REF.relu_general(x, max_value=-1.0)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        REF.activation("swish", x)      # ops take canonical names; aliases are fastgrad.activations'
    with pytest.raises(ValueError, match="needs the forward input x"):
        REF.backprop_activation("mish", x, x, None)


@needs_native
def test_native_ops_overrides_and_falls_back(isa):
    from fastgrad.backend import NativeOps
    nat = NativeOps()
    x = (rng(3).standard_normal((37, 29)) * 4).astype(np.float32)
    dy = rng(4).standard_normal((37, 29)).astype(np.float32)
    for name, p in CASES:
        assert getattr(NativeOps, name) is not getattr(NumpyOps, name), name
        y = nat.activation(name, x, **p)
        np.testing.assert_array_equal(y, c_fwd(name, x.ravel(), p).reshape(x.shape), err_msg=name)
        d = nat.backprop_activation(name, dy, y, x, **p)
        ref = x if name in npo.BACKWARD_NEEDS_INPUT else y
        np.testing.assert_array_equal(d, c_bwd(name, dy.ravel(), ref.ravel(), p).reshape(x.shape), err_msg=name)
        out = np.empty_like(x)
        assert nat.activation(name, x, out=out, **p) is out
        # float64 and non-contiguous input: NumpyOps
        x64 = x.astype(np.float64)
        np.testing.assert_array_equal(nat.activation(name, x64, **p), REF.activation(name, x64, **p))
        xt = x.T
        np.testing.assert_array_equal(nat.activation(name, xt, **p), REF.activation(name, xt, **p))


# ---------------------------------------------------------------- fused dense
DENSE_SHAPES = [(1, 1, 1), (3, 5, 7), (37, 45, 300), (128, 10, 128), (17, 129, 33), (64, 1000, 9),
                (1000, 3, 16), (33, 13, 20), (129, 7, 130), (17, 16, 64), (40, 3, 33), (16, 9, 32)]


@needs_native
@pytest.mark.parametrize("name", NEW)
def test_fused_dense_equals_gemm_bias_activation(isa, name):
    """fg_dense_forward with each new code == gemm, + b, then fg_act_forward,
    BITWISE, for 1/2/3 threads, packed and unpacked paths, contiguous and strided
    output; the pre-activation stored on the side is the plain gemm + bias."""
    r = rng(21)
    for M, N, Kd in DENSE_SHAPES:
        x = (3 * r.standard_normal((M, Kd))).astype(np.float32)
        w = (r.standard_normal((Kd, N)) / math.sqrt(Kd)).astype(np.float32)
        b = r.standard_normal(N).astype(np.float32)
        z = np.empty((M, N), np.float32)
        G.gemm(x, w, z, 0, 0, 1.0, 0.0, 1)
        z += b
        ref = c_fwd(name, z)
        for nt in (1, 2, 3):
            y = np.full((M, N), np.nan, np.float32)
            zf = np.full((M, N), np.nan, np.float32)
            G.dense_forward(x, w, b, code(name), y, zf, nt)
            assert np.array_equal(zf, z), (name, M, N, Kd, nt)
            assert np.array_equal(y.view(np.int32), ref.view(np.int32)), (name, M, N, Kd, nt)
        big = np.full((M, N + 5), np.nan, np.float32)
        G.dense_forward(x, w, b, code(name), big[:, :N], None, 2)
        assert np.array_equal(big[:, :N].view(np.int32), ref.view(np.int32)), (name, M, N, Kd)
        assert np.isnan(big[:, N:]).all()


@needs_native
@pytest.mark.parametrize("name", NEW)
def test_fused_dense_special_values_and_accuracy(isa, name):
    v = np.concatenate([SPECIAL, np.linspace(-40, 40, 4001, dtype=np.float32)])
    x = v.reshape(-1, 1)
    one = np.ones((1, 1), np.float32)
    z = np.empty_like(x)
    G.gemm(x, one, z, 0, 0, 1.0, 0.0, 1)  # x @ [[1]] == x (but -0 -> +0)
    y = np.empty_like(x)
    with np.errstate(all="ignore"):
        G.dense_forward(x, one, None, code(name), y, None, 1)
        ref = c_fwd(name, z.ravel()).reshape(z.shape)
    assert np.array_equal(y.view(np.int32), ref.view(np.int32)), name
    fin = np.isfinite(z.ravel())
    check_accuracy(y.ravel()[fin], z.ravel()[fin], name, {}, ULP_BOUND[name], isa)


@needs_native
@pytest.mark.parametrize("name", [n for n in NEW if n != "relu_general"])
def test_native_dense_forward_backward_match_numpy(isa, name):
    from fastgrad.backend import NativeOps
    nat = NativeOps()
    r = rng(22)
    x = r.standard_normal((64, 50)).astype(np.float32)
    w = (r.standard_normal((50, 30)) / 3).astype(np.float32)
    b = r.standard_normal(30).astype(np.float32)
    dy = r.standard_normal((64, 30)).astype(np.float32)
    z1, z2 = np.empty((64, 30), np.float32), np.empty((64, 30), np.float32)
    y1 = nat.dense_forward(x, w, b, name, preact=z1)
    y2 = REF.dense_forward(x, w, b, name, preact=z2)
    np.testing.assert_allclose(z1, z2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-5, err_msg=name)
    g1 = nat.dense_backward(dy, x, w, y1, name, preact=z1)
    g2 = REF.dense_backward(dy, x, w, y2, name, preact=z2)
    for u, v in zip(g1, g2):  # sums of 30-64 terms: error relative to the largest magnitude
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5 * float(np.abs(v).max()), err_msg=name)


# ---------------------------------------------------------------- fastgrad.activations
def test_names_aliases_and_serialize():
    A = fg.activations
    for name in ("leaky_relu", "elu", "selu", "silu", "softplus", "softsign", "hard_sigmoid", "mish",
                 "exponential", "relu6", "hard_silu"):
        assert A.get(name) == name and A.serialize(name) == name and A.deserialize(name) == name
        assert A.get(getattr(A, name)) == name
        assert A.get(name.upper()) == name
    assert A.get("swish") == "silu" and A.get(A.swish) == "silu" and A.serialize(A.swish) == "silu"
    assert A.get("hard_swish") == "hard_silu" and A.get(A.hard_swish) == "hard_silu"
    assert set(A.ACTIVATION_NAMES) == set(npo.ACTIVATIONS) - {"relu_general"}
    with pytest.raises(ValueError, match="unknown activation 'relu_general'"):
        A.get("relu_general")   # an ops-level name, not a Keras one
    with pytest.raises(ValueError, match="swish"):
        A.get("swishy")


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_functions_keras_signatures(backend):
    if backend == "native" and not fg.backend.native_available():
        pytest.skip("native backend not built")
    A = fg.activations
    x = np.linspace(-5, 5, 41).astype(np.float32)
    x64 = x.astype(np.float64)
    with fg.use_backend(backend):
        np.testing.assert_allclose(A.leaky_relu(x), np.where(x64 >= 0, x64, 0.2 * x64), rtol=1e-6)
        np.testing.assert_allclose(A.leaky_relu(x, negative_slope=0.5), np.where(x64 >= 0, x64, 0.5 * x64),
                                   rtol=1e-6)
        np.testing.assert_allclose(A.elu(x, alpha=0.5), np.where(x64 > 0, x64, 0.5 * np.expm1(x64)), rtol=1e-6)
        np.testing.assert_allclose(A.selu(x), fwd64("selu", x64), rtol=1e-6)
        np.testing.assert_allclose(A.swish(x), fwd64("silu", x64), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(A.hard_swish(x), fwd64("hard_silu", x64), rtol=1e-6, atol=1e-7)
        for kw in ({}, {"max_value": 6.0}, {"negative_slope": 0.1}, {"threshold": 1.0},
                   {"negative_slope": 0.1, "max_value": 2.0, "threshold": -1.0}, {"max_value": 3.5},
                   {"threshold": -2.0}):
            np.testing.assert_allclose(A.relu(x, **kw), keras_relu64(x64, **kw), rtol=1e-6, atol=1e-7,
                                       err_msg=str(kw))
        assert A.relu_variant() == ("relu", {}) and A.relu_variant(max_value=6) == ("relu6", {})
        assert A.relu_variant(negative_slope=0.3)[0] == "leaky_relu"
        assert A.relu_variant(threshold=0.5)[0] == "relu_general"
        with pytest.raises(ValueError, match="max_value"):
            A.relu(x, max_value=-1)
        # float64 in, float64 out; other dtypes become float32
        assert A.mish(x64).dtype == np.float64 and A.mish([1, 2]).dtype == np.float32


@pytest.mark.parametrize("name", [n for n in NEW if n != "relu_general"])
def test_dense_with_each_activation_trains(name):
    r = rng(30)
    x = r.standard_normal((128, 6)).astype(np.float32)
    y = (x @ r.standard_normal((6, 1))).astype(np.float32) * 0.5
    for backend in (["numpy", "native"] if fg.backend.native_available() else ["numpy"]):
        with fg.use_backend(backend):
            fg.set_seed(1)
            m = fg.Sequential([fg.layers.Dense(16, activation=name, input_shape=(6,)), fg.layers.Dense(1)])
            m.compile(optimizer=fg.optimizers.Adam(0.01), loss="mse")
            h = m.fit(x, y, epochs=8, batch_size=32, verbose=0)
            loss = h.history["loss"]
            assert np.all(np.isfinite(loss)) and loss[-1] < loss[0], (name, backend, loss)


# ---------------------------------------------------------------- torch oracle
@pytest.mark.torch
def test_against_torch_float64():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    # float32-representable inputs, so the float32 kernels see the same x
    x = np.concatenate([np.linspace(-30, 30, 3001), [-100.0, -80.0, 50.0, 100.0]]).astype(np.float32)
    x = x.astype(np.float64)
    t = torch.from_numpy(x)
    oracle = {"leaky_relu": F.leaky_relu(t, 0.2), "elu": F.elu(t), "selu": F.selu(t), "silu": F.silu(t),
              "softplus": F.softplus(t, beta=1.0, threshold=1000.0), "softsign": F.softsign(t),
              "hard_sigmoid": F.hardsigmoid(t), "mish": F.mish(t), "exponential": torch.exp(t),
              "relu6": F.relu6(t), "hard_silu": F.hardswish(t)}
    xc = away_from_kinks(x, [-3.0, 0.0, 3.0, 6.0])
    tg = torch.from_numpy(xc).requires_grad_(True)
    for name, want in oracle.items():
        want = want.numpy()
        # rtol 1e-8, not 1e-13: torch's own float64 exp was seen off by 3e-9 (relative) in
        # some runs on a 2-thread VM (its vectorised path), while NumPy's was exact
        np.testing.assert_allclose(REF.activation(name, x), want, rtol=1e-8, atol=1e-300, err_msg=name)
        x32 = x.astype(np.float32)
        mask = np.abs(want) < 3e38
        if K is not None:
            check_accuracy(c_fwd(name, x32)[mask], x32[mask], name, {}, ULP_BOUND[name], "torch")
            np.testing.assert_allclose(c_fwd(name, x32)[mask], want[mask], rtol=3e-7, atol=1e-37, err_msg=name)
        # gradients
        fn = {"leaky_relu": lambda v: F.leaky_relu(v, 0.2), "elu": F.elu, "selu": F.selu, "silu": F.silu,
              "softplus": lambda v: F.softplus(v, threshold=1000.0), "softsign": F.softsign,
              "hard_sigmoid": F.hardsigmoid, "mish": F.mish, "exponential": torch.exp, "relu6": F.relu6,
              "hard_silu": F.hardswish}[name]
        tg.grad = None
        fn(tg).sum().backward()
        gt = tg.grad.numpy()
        y = REF.activation(name, xc)
        # torch's hardsigmoid backward uses a float32 1/6 even in float64
        np.testing.assert_allclose(REF.backprop_activation(name, np.ones_like(xc), y, xc), gt,
                                   rtol=1e-7 if name == "hard_sigmoid" else 1e-12, atol=1e-300, err_msg=name)


@pytest.mark.parametrize("backend", ["native", "numpy"])
@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4), (2, 1, 3, 7), (4, 1), (1, 1, 1)])
def test_softmax_acts_on_last_axis_at_any_rank(backend, shape):
    """Keras's softmax activation normalises over the last axis whatever the rank:
    ops.softmax / log_softmax and their backprops, the activation functions, and
    an Activation('softmax') layer (Python executor and compiled predict) agree
    with a float64 reference over axis -1 on both backends."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(shape).astype(np.float32) * 3
    dy = rng.standard_normal(shape).astype(np.float32)
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(-1, keepdims=True))
    sm = e / e.sum(-1, keepdims=True)
    lsm = np.log(sm)
    dsm = sm * (dy - (dy * sm).sum(-1, keepdims=True))
    dlsm = dy - sm * dy.sum(-1, keepdims=True)
    with fg.use_backend(backend):
        ops = fg.ops
        np.testing.assert_allclose(ops.softmax(x), sm, rtol=2e-6, atol=1e-7)
        np.testing.assert_allclose(ops.log_softmax(x), lsm, rtol=2e-6, atol=2e-6)
        np.testing.assert_allclose(ops.backprop_softmax(dy, sm.astype(np.float32)), dsm,
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ops.backprop_log_softmax(dy, lsm.astype(np.float32)), dlsm,
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(fg.activations.softmax(x), sm, rtol=2e-6, atol=1e-7)
        m = fg.Sequential([fg.Input(shape[1:]), fg.layers.Activation("softmax")])
        np.testing.assert_allclose(m.predict(x, verbose=0), sm, rtol=2e-6, atol=1e-7)
        np.testing.assert_allclose(np.asarray(m(x)), sm, rtol=2e-6, atol=1e-7)
