"""The two backends agree on every input: for the same call, fg.ops on the
native backend (on every instruction-set path) and on the NumPy backend
return the same result, or raise the same exception type.

Property-based (hypothesis, a test extra): calls of every element-wise
activation and its derivative, exp/log, softmax, the losses, reductions,
clipping, the optimizer updates, dropout and GEMM, over drawn shapes (empty,
1, odd), strides (views), dtypes (float32, float64, int, bool), outputs (none,
fresh, exact alias, partial overlap, wrong shape or dtype, read-only) and
hyper-parameters with their edge values. "Same result" allows the rounding
differences the kernel tests allow between C and NumPy (a few ulps; NaN in
the same places); it is run at a fixed seed and example count in CI."""
import math

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from fastgrad import _native  # noqa: E402
from fastgrad.backend import NumpyOps, native_available  # noqa: E402
from fastgrad.backend.numpy_ops import ACTIVATIONS, ACTIVATION_PARAMS  # noqa: E402

pytestmark = pytest.mark.skipif(not native_available(), reason="native backend not built")

NP = NumpyOps()
SETTINGS = settings(max_examples=int(__import__("os").environ.get("FASTGRAD_HYPOTHESIS_EXAMPLES", 80)),
                    deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


def _native_ops():
    from fastgrad.backend.native_ops import NativeOps
    return NativeOps()


NATIVE = _native_ops() if native_available() else None
ISAS = [i for i in _native.ISA_NAMES if native_available() and i in _native.module("runtime").isa_supported()]

EDGE = [0.0, -0.0, 1.0, -1.0, 0.5, 3.0, -3.0, 20.0, -20.0, 88.0, -104.0, 1e-40, -1e-40, 1e30, -1e30,
        3e38, -3e38, np.inf, -np.inf, np.nan]


@st.composite
def arrays(draw, shape=None, dtype=None, edge=True, min_rank=1, max_rank=3):
    if shape is None:
        rank = draw(st.integers(min_rank, max_rank))
        shape = tuple(draw(st.lists(st.integers(0, 7), min_size=rank, max_size=rank)))
    if dtype is None:
        dtype = draw(st.sampled_from([np.float32, np.float32, np.float32, np.float64, np.int64, np.bool_]))
    n = int(np.prod(shape)) if shape else 1
    seed = draw(st.integers(0, 2**32 - 1))
    r = np.random.default_rng(seed)
    vals = r.normal(scale=draw(st.sampled_from([0.1, 1.0, 10.0])), size=n)
    if edge and n and draw(st.booleans()):
        k = draw(st.integers(1, min(n, 4)))
        idx = r.choice(n, size=k, replace=False)
        vals[idx] = [draw(st.sampled_from(EDGE)) for _ in range(k)]
    with np.errstate(all="ignore"):
        a = vals.reshape(shape).astype(dtype)
    if draw(st.integers(0, 4)) == 0 and a.ndim and a.shape[-1] > 1:
        # a strided view of a wider array with the same values
        wide = np.zeros(shape[:-1] + (shape[-1] * 2,), dtype=dtype)
        wide[..., ::2] = a
        a = wide[..., ::2]
    return a


@st.composite
def outs(draw, like, dtype_ok=True):
    """None, fresh, exact alias, partial overlap, wrong shape, wrong dtype, read-only."""
    kind = draw(st.sampled_from(["none", "none", "fresh", "alias", "partial", "shape", "dtype",
                                 "readonly"]))
    if kind == "none":
        return kind, None
    if kind == "fresh":
        return kind, np.empty(like.shape, like.dtype if like.dtype.kind == "f" else np.float32)
    if kind == "alias":
        return kind, like
    if kind == "partial":
        if like.size < 2 or like.base is not None:
            return "none", None
        return kind, "partial"          # made per call (it needs a shared base)
    if kind == "shape":
        return kind, np.empty(like.shape + (2,), np.float32)
    if kind == "dtype":
        return kind, np.empty(like.shape, np.float64 if like.dtype == np.float32 else np.float32)
    o = np.empty(like.shape, like.dtype if like.dtype.kind == "f" else np.float32)
    o.flags.writeable = False
    return kind, o


def _partial(x):
    """x placed at the start of a buffer, and an out of x's shape starting one element in."""
    buf = np.zeros(x.size + 1, dtype=x.dtype)
    buf[:x.size] = x.reshape(-1)
    return buf[:x.size].reshape(x.shape), buf[1:].reshape(x.shape)


def _run(ops, fn):
    try:
        return "ok", fn(ops)
    except Exception as exc:   # noqa: BLE001 - the type is what is compared
        return "err", exc


def _close(a, b):
    if isinstance(a, (bool, np.bool_)) or isinstance(b, (bool, np.bool_)):
        return bool(a) == bool(b)
    if isinstance(a, tuple):
        return isinstance(b, tuple) and len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if a is None or b is None:
        return a is b
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    if a.dtype.kind != "f" or b.dtype.kind != "f":
        return np.array_equal(a, b)
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return False
    with np.errstate(all="ignore"):
        fin = np.isfinite(a) & np.isfinite(b)
        if not np.array_equal(a[~fin & ~np.isnan(a)], b[~fin & ~np.isnan(b)]):
            return False
        if not fin.any():
            return True
        # norm-wise: float32 results computed in another order (FMA, blocking,
        # vector lanes) differ by a few ulps of the largest magnitude involved
        scale = max(float(np.max(np.abs(a[fin]))), float(np.max(np.abs(b[fin]))),
                    float(np.finfo(np.float32).tiny))
        return float(np.max(np.abs(a[fin] - b[fin]))) <= 2e-5 * scale


def agree(call, make_args):
    """Run call(ops, *make_args()) on NumPy and on every native ISA path, with
    fresh copies of the arguments each time; compare outcome and every array
    the call may have written."""
    args0 = make_args()
    ref = _run(NP, lambda o: call(o, *args0))
    try:
        for isa in ISAS:
            _native.set_isa(isa)
            args = make_args()
            got = _run(NATIVE, lambda o: call(o, *args))
            assert got[0] == ref[0], (f"[{isa}] numpy {ref[0]}: {ref[1]!r}; native {got[0]}: "
                                      f"{got[1]!r}")
            if ref[0] == "err":
                assert type(got[1]) is type(ref[1]), (f"[{isa}] exception types differ: numpy "
                                                      f"{ref[1]!r}, native {got[1]!r}")
            else:
                assert _close(got[1], ref[1]), f"[{isa}] results differ: {got[1]!r} vs {ref[1]!r}"
                for a, b in zip(args, args0):
                    if isinstance(a, np.ndarray):
                        assert _close(a, b), f"[{isa}] written arguments differ"
    finally:
        _native.set_isa(ISAS[-1])


def _copy(v):
    return v.copy() if isinstance(v, np.ndarray) else v


UNARY = [a for a in ACTIVATIONS if a not in ("softmax", "log_softmax")] + ["exp", "log", "softmax",
                                                                           "log_softmax"]
BACKPROP = [a for a in ACTIVATIONS] + []


@SETTINGS
@given(st.data())
def test_activation_forward(data):
    name = data.draw(st.sampled_from(UNARY))
    x = data.draw(arrays())
    kind, out = data.draw(outs(x))
    params = {}
    if name in ACTIVATION_PARAMS and data.draw(st.booleans()):
        for p in ACTIVATION_PARAMS[name]:
            params[p] = data.draw(st.sampled_from([0.0, 0.1, 1.0, 6.0, -1.0, np.inf, np.nan, None]))

    def make():
        xx = _copy(x)
        if kind == "partial":
            xx, oo = _partial(xx)
        elif kind == "alias":
            oo = xx
        else:
            oo = _copy(out)
            if kind == "readonly":
                oo.flags.writeable = False
        return xx, oo

    agree(lambda ops, xx, oo: getattr(ops, name)(xx, out=oo, **params), make)


@SETTINGS
@given(st.data())
def test_activation_backward(data):
    name = data.draw(st.sampled_from(BACKPROP))
    x = data.draw(arrays())
    dy = data.draw(arrays(shape=data.draw(st.sampled_from([x.shape, x.shape, x.shape[:-1] + (1,)])),
                          dtype=data.draw(st.sampled_from([x.dtype, x.dtype, np.float32]))))
    kind, out = data.draw(outs(dy))

    def make():
        d, r = _copy(dy), _copy(x)
        if kind == "partial":
            d, oo = _partial(d)
        elif kind == "alias":
            oo = d
        else:
            oo = _copy(out)
            if kind == "readonly":
                oo.flags.writeable = False
        return d, r, oo

    agree(lambda ops, d, r, oo: getattr(ops, f"backprop_{name}")(d, r, out=oo), make)


LOSSES = ["mse", "binary_crossentropy", "categorical_crossentropy", "binary_crossentropy_from_logits",
          "softmax_crossentropy", "sparse_softmax_crossentropy"]


@SETTINGS
@given(st.data())
def test_losses(data):
    name = data.draw(st.sampled_from(LOSSES))
    p = data.draw(arrays(min_rank=1, max_rank=3))
    if name == "sparse_softmax_crossentropy":
        t = data.draw(st.sampled_from([
            np.arange(p.shape[0] if p.ndim else 1) % max(p.shape[-1], 1) if p.ndim else np.zeros(1),
            np.full(p.shape[0] if p.ndim else 1, -1), np.full(p.shape[0] if p.ndim else 1, 99),
            np.zeros(p.shape[0] if p.ndim else 1, np.float32)]))
    else:
        t = data.draw(arrays(shape=data.draw(st.sampled_from([p.shape, p.shape, p.shape[:1]])),
                             dtype=data.draw(st.sampled_from([p.dtype, np.float32, np.int64]))))
        if name != "mse":
            t = np.abs(t) % 1.0 if t.dtype.kind == "f" else t
    rows = p.shape[0] if p.ndim else 1
    sw = data.draw(st.sampled_from([None, "ones", "neg", "short", "nan"]))
    sw = {None: None, "ones": np.ones(rows, np.float32), "neg": -np.ones(rows, np.float32),
          "short": np.ones(max(rows - 1, 0), np.float32),
          "nan": np.full(rows, np.nan, np.float32)}[sw]
    if name in ("binary_crossentropy", "categorical_crossentropy"):
        p = np.abs(p) % 1.0 if p.dtype.kind == "f" else p
    agree(lambda ops, a, b, w: getattr(ops, name)(a, b, sample_weight=w),
          lambda: (_copy(p), _copy(t), _copy(sw)))


@SETTINGS
@given(st.data())
def test_reductions_and_clipping(data):
    op = data.draw(st.sampled_from(["sum_rows", "all_finite", "global_norm", "clip_by_norm",
                                    "clip_by_value"]))
    x = data.draw(arrays(min_rank=1 if op != "sum_rows" else 2, max_rank=2))
    if op == "clip_by_norm":
        v = data.draw(st.sampled_from([1.0, 0.5, 0.0, -1.0, np.inf, np.nan, 1e-30]))
        agree(lambda ops, a: ops.clip_by_norm(a, v), lambda: (_copy(x),))
    elif op == "clip_by_value":
        lo = data.draw(st.sampled_from([-1.0, 0.0, 1.0, -np.inf, np.nan]))
        hi = data.draw(st.sampled_from([1.0, 0.0, -1.0, np.inf, np.nan]))
        agree(lambda ops, a: ops.clip_by_value(a, lo, hi), lambda: (_copy(x),))
    else:
        agree(lambda ops, a: getattr(ops, op)(a), lambda: (_copy(x),))


OPTIMIZERS = {
    "sgd_update": dict(states=["velocity"], hyper=dict(lr=0.1, momentum=0.9, nesterov=False)),
    "adagrad_update": dict(states=["accum"], hyper=dict(lr=0.1, eps=1e-7)),
    "rmsprop_update": dict(states=["ms", "mom", "mg"], hyper=dict(lr=0.1, rho=0.9, eps=1e-7,
                                                                    momentum=0.5, centered=True)),
    "adam_update": dict(states=["m", "v"], hyper=dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-7,
                                                      step=3)),
    # csrc/lossopt's updates: states passed positionally after (param, grad)
    "nadam_update": dict(states=["m", "v"], hyper=dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-7,
                                                       step=3, decoupled=False)),
    "adamax_update": dict(states=["m", "u"], hyper=dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-7,
                                                        step=3, decoupled=True)),
    "adadelta_update": dict(states=["acc_grad", "acc_delta"], hyper=dict(lr=1.0, rho=0.95, eps=1e-7)),
    "ftrl_update": dict(states=["accum", "linear"], hyper=dict(lr=0.1, lr_power=-0.5, l1=0.01, l2=0.01,
                                                               l2_shrinkage=0.0, beta=0.0)),
    "lion_update": dict(states=["m"], hyper=dict(lr=0.01, beta1=0.9, beta2=0.99)),
    "adam_amsgrad_update": dict(states=["m", "v", "vhat"], hyper=dict(lr=0.1, beta1=0.9, beta2=0.999,
                                                                      eps=1e-7, step=3)),
}
EDGE_HYPER = {"lr": [0.0, -1.0, 1e30, np.inf, np.nan], "momentum": [0.0, 1.0, -0.5, 2.0, np.nan],
              "rho": [0.0, 1.0, -0.1, 1.5], "eps": [0.0, -1e-7, np.inf],
              "beta1": [0.0, 1.0, -0.1, 0.999999], "beta2": [0.0, 1.0, 1.5],
              "step": [1, 0, -3, 1.5, 2**70, 2**40, True, np.int64(7), 3.0],
              "weight_decay": [0.0, 0.01, -0.01, np.inf], "centered": [False, True],
              "nesterov": [True, False], "decoupled": [True, False],
              "lr_power": [0.0, -0.5, 0.5, np.nan], "l1": [0.0, -0.1, np.inf], "l2": [0.0, -0.1, np.nan],
              "l2_shrinkage": [0.0, 0.1, -1.0], "beta": [0.0, 1.0, -1.0]}


@SETTINGS
@given(st.data())
def test_optimizer_updates(data):
    name = data.draw(st.sampled_from(sorted(OPTIMIZERS)))
    spec = OPTIMIZERS[name]
    shape = data.draw(st.sampled_from([(7,), (3, 5), (10, 10), (1,), (0,)]))
    dt = data.draw(st.sampled_from([np.float32, np.float32, np.float64]))
    param = data.draw(arrays(shape=shape, dtype=dt, edge=False))
    gshape = data.draw(st.sampled_from([shape, shape, shape, (int(np.prod(shape)),), shape + (1,)]))
    grad = data.draw(arrays(shape=gshape, dtype=data.draw(st.sampled_from([dt, dt, np.float64]))))
    states = {}
    for s in spec["states"]:
        states[s] = np.abs(data.draw(arrays(shape=shape, dtype=dt, edge=False)))
    hyper = dict(spec["hyper"])
    for k in list(hyper) + (["weight_decay"] if data.draw(st.booleans()) else []):
        if data.draw(st.integers(0, 3)) == 0 and k in EDGE_HYPER:
            hyper[k] = data.draw(st.sampled_from(EDGE_HYPER[k]))
    overlap = data.draw(st.sampled_from([None, None, None, "grad=param", "state=param",
                                         "state=grad"]))

    def make():
        p, g = _copy(param), _copy(grad)
        sts = {k: _copy(v) for k, v in states.items()}
        if overlap == "grad=param" and g.shape == p.shape and g.dtype == p.dtype:
            g = p
        elif overlap == "state=param":
            sts[spec["states"][0]] = p
        elif overlap == "state=grad" and g.shape == p.shape and g.dtype == p.dtype:
            sts[spec["states"][0]] = g
        return p, g, sts

    def call(ops, p, g, sts):
        if name == "sgd_update":
            return ops.sgd_update(p, g, velocity=sts["velocity"], **hyper)
        if name == "adagrad_update":
            return ops.adagrad_update(p, g, sts["accum"], **hyper)
        if name == "rmsprop_update":
            return ops.rmsprop_update(p, g, sts["ms"], mom=sts["mom"], mg=sts["mg"], **hyper)
        if name == "adam_update":
            return ops.adam_update(p, g, sts["m"], sts["v"], **hyper)
        return getattr(ops, name)(p, g, *(sts[k] for k in spec["states"]), **hyper)

    agree(call, make)


@SETTINGS
@given(st.data())
def test_dropout(data):
    x = data.draw(arrays())
    rate = data.draw(st.sampled_from([0.0, 0.25, 0.5, 0.999, 1.0, -0.1, np.nan]))
    seed = data.draw(st.sampled_from([0, 1, 2**63, 2**64 - 1, -1, 1.5]))
    offset = data.draw(st.sampled_from([0, 5, 2**40, -1]))
    kind, out = data.draw(outs(x))
    with_mask = data.draw(st.booleans())

    def make():
        xx = _copy(x)
        oo = xx if kind == "alias" else (None if kind == "partial" else _copy(out))
        m = np.zeros(x.shape, np.uint8) if with_mask else None
        return xx, oo, m

    agree(lambda ops, xx, oo, m: ops.dropout(xx, rate, seed, offset=offset, out=oo, mask=m), make)


@SETTINGS
@given(st.data())
def test_gemm(data):
    m, k, n = (data.draw(st.integers(0, 9)) for _ in range(3))
    ta, tb = data.draw(st.booleans()), data.draw(st.booleans())
    dt = data.draw(st.sampled_from([np.float32, np.float32, np.float64, np.int64]))
    a = data.draw(arrays(shape=(k, m) if ta else (m, k), dtype=dt))
    b = data.draw(arrays(shape=(n, k) if tb else (k, n), dtype=data.draw(st.sampled_from([dt, np.float32]))))
    alpha = data.draw(st.sampled_from([1.0, 0.5, 0.0, np.nan]))
    beta = data.draw(st.sampled_from([0.0, 1.0, 0.5]))
    okind = data.draw(st.sampled_from(["none", "fresh", "alias_a", "shape"]))

    def make():
        aa, bb = _copy(a), _copy(b)
        oo = {"none": None, "fresh": np.ones((m, n), np.float32), "alias_a": aa,
              "shape": np.ones((m + 1, n), np.float32)}[okind]
        return aa, bb, oo

    agree(lambda ops, aa, bb, oo: ops.gemm(aa, bb, out=oo, trans_a=ta, trans_b=tb, alpha=alpha,
                                           beta=beta), make)


@pytest.mark.parametrize("case", ["step=1.5", "step=2**70", "grad (100,) for (10, 10)", "beta1=1.0",
                                  "partial overlap", "step=True"])
def test_the_reported_disagreements(case):
    """The five calls the adversarial pass found answered differently."""
    def make():
        r = np.random.default_rng(0)
        p = r.normal(size=(10, 10)).astype(np.float32)
        g = r.normal(size=(10, 10)).astype(np.float32)
        return p, g, np.zeros_like(p), np.zeros_like(p)
    kw = dict(lr=0.1, step=1)
    if case == "step=1.5":
        kw["step"] = 1.5
    elif case == "step=2**70":
        kw["step"] = 2**70
    elif case == "step=True":
        kw["step"] = True
    elif case == "beta1=1.0":
        kw["beta1"] = 1.0
    if case == "grad (100,) for (10, 10)":
        call = lambda ops, p, g, m, v: ops.adam_update(p, g.reshape(100), m, v, **kw)  # noqa: E731
    elif case == "partial overlap":
        def call(ops, p, g, m, v):
            buf = np.zeros(101, np.float32)
            buf[:100] = p.reshape(-1)
            return ops.tanh(buf[:100], out=buf[1:])
    else:
        call = lambda ops, p, g, m, v: ops.adam_update(p, g, m, v, **kw)  # noqa: E731
    outcomes = []
    for ops in (NP, NATIVE):
        try:
            call(ops, *make())
            outcomes.append(None)
        except Exception as exc:  # noqa: BLE001
            outcomes.append(type(exc))
    assert outcomes[0] is not None and outcomes[0] is outcomes[1], outcomes
    agree(call, make)
