"""csrc/conv through fastgrad._native.conv and ConvMixin (NativeOps).

Each C op is checked against NumpyOps in float64 (the reference, itself
tested against float64 loops and finite differences in test_conv_ops.py) and
against NumpyOps in float32, over shapes with 1, primes and sizes off every
GEMM tile, strides, dilations, groups and paddings, on every instruction-set
path of this machine; and for bitwise-identical results with 1, 2 and 3
threads.
"""
import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _native
from fastgrad.backend import NumpyOps

C = _native.module("conv")
RT = _native.module("runtime")
pytestmark = pytest.mark.skipif(C is None, reason="native conv module not built")

ISAS = RT.isa_supported() if RT is not None else []
REF = NumpyOps()

if C is not None:
    from fastgrad.backend import NativeOps
    NAT = NativeOps()


@pytest.fixture(params=ISAS)
def isa(request):
    orig = _native.get_isa()
    _native.set_isa(request.param)
    yield request.param
    _native.set_isa(orig)


@pytest.fixture
def threads():
    yield
    fg.set_num_threads(None)


def f64(*a):
    return [None if v is None else np.asarray(v, np.float64) for v in a]


def close(got, want, tol=2e-5, what=""):
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = 1.0 + np.max(np.abs(want)) if want.size else 1.0
    err = np.max(np.abs(got - want)) / scale if want.size else 0.0
    assert err < tol, f"{what}: relative error {err:.3g}"


# (N, H, W, C, kh, kw, F, strides, dilation, groups, pads)
CONV_CASES = [
    (1, 1, 1, 1, 1, 1, 1, (1, 1), (1, 1), 1, (0, 0, 0, 0)),
    (2, 7, 9, 3, 3, 3, 5, (1, 1), (1, 1), 1, (1, 1, 1, 1)),
    (3, 11, 13, 6, 5, 3, 4, (2, 3), (1, 2), 2, (2, 0, 1, 3)),
    (1, 5, 5, 4, 1, 1, 8, (1, 1), (1, 1), 1, (0, 0, 0, 0)),      # pointwise: plain GEMM
    (2, 6, 5, 4, 1, 1, 3, (2, 1), (1, 1), 1, (0, 1, 0, 0)),      # 1x1 strided
    (2, 28, 28, 1, 5, 5, 6, (1, 1), (1, 1), 1, (0, 0, 0, 0)),    # LeNet conv1
    (2, 12, 12, 6, 5, 5, 16, (1, 1), (1, 1), 1, (0, 0, 0, 0)),   # LeNet conv2
    (2, 9, 9, 6, 3, 3, 6, (2, 2), (1, 1), 6, (1, 1, 1, 1)),      # depthwise-shaped groups
    (1, 13, 17, 7, 3, 2, 13, (3, 2), (2, 3), 1, (3, 2, 0, 4)),   # primes, odd pads
    (2, 8, 8, 33, 3, 3, 37, (1, 1), (1, 1), 1, (1, 1, 1, 1)),    # K and N off every tile
    (1, 4, 31, 2, 1, 7, 3, (1, 1), (1, 1), 1, (0, 0, 3, 3)),     # 1-D-like
    (3, 6, 6, 8, 2, 2, 12, (2, 2), (1, 1), 4, (0, 0, 0, 0)),
    # few input channels: the register-tiled direct kernels (conv_tile.c), output channels
    # filling 1-5 vectors of every ISA (5 of avx512 -> back to the GEMM), odd pixel counts
    (3, 9, 11, 3, 3, 3, 33, (1, 2), (2, 1), 1, (2, 1, 0, 2)),
    (2, 7, 8, 5, 2, 3, 64, (1, 1), (1, 1), 1, (1, 0, 1, 1)),
    (2, 6, 7, 2, 3, 3, 65, (2, 1), (1, 1), 1, (1, 1, 1, 1)),
    (5, 10, 10, 15, 3, 3, 7, (1, 1), (1, 1), 1, (1, 1, 1, 1)),
    (1, 3, 3, 1, 3, 3, 1, (1, 1), (3, 3), 1, (3, 3, 3, 3)),
    # many channels, unit strides: the data gradient as the tiled forward on dz
    (2, 9, 10, 32, 3, 3, 64, (1, 1), (2, 1), 1, (2, 1, 2, 1)),
    (2, 7, 6, 17, 3, 2, 24, (1, 1), (1, 1), 1, (0, 1, 1, 0)),
    (1, 6, 6, 16, 2, 2, 16, (1, 1), (1, 1), 1, (2, 0, 0, 2)),     # pad > (k-1) d: data by the GEMM
    (2, 9, 23, 1, 3, 4, 13, (1, 1), (2, 1), 1, (1, 1, 2, 2)),     # one channel: row tiles + a partial one
    (2, 8, 30, 1, 2, 3, 5, (2, 1), (1, 2), 1, (0, 1, 0, 3)),
]


def _conv_args(case, rng, dtype=np.float32):
    N, H, W, Cin, kh, kw, F, s, d, g, p = case
    x = rng.standard_normal((N, H, W, Cin)).astype(dtype)
    w = (rng.standard_normal((kh, kw, Cin // g, F)) / np.sqrt(kh * kw * Cin / g)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    return x, w, b, s, p, d, g


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_float64(isa, case):
    rng = np.random.default_rng(sum(case[:7]))
    x, w, b, s, p, d, g = _conv_args(case, rng)
    for act in ("linear", "relu", "tanh", "gelu", "leaky_relu"):
        pre = np.empty_like(REF.conv2d_forward(x, w, b, s, p, d, g))
        y = NAT.conv2d_forward(x, w, b, s, p, d, g, act, preact=pre)
        y64 = REF.conv2d_forward(*f64(x, w, b), s, p, d, g, act)
        close(y, y64, what=f"forward {act}")
        close(pre, REF.conv2d_forward(*f64(x, w, b), s, p, d, g), what="preact")
        close(y, REF.conv2d_forward(x, w, b, s, p, d, g, act), what="vs NumpyOps float32")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    y = NAT.conv2d_forward(x, w, b, s, p, d, g, "tanh")
    got = NAT.conv2d_backward(dy, x, w, y, s, p, d, g, "tanh")
    want = REF.conv2d_backward(*f64(dy, x, w, y), s, p, d, g, "tanh")
    for name, a, e in zip(("dx", "dw", "db"), got, want):
        close(a, e, what=name)


def test_conv2d_no_bias_no_dx_and_outputs_given():
    rng = np.random.default_rng(5)
    x, w, b, s, p, d, g = _conv_args(CONV_CASES[2], rng)
    out = np.full(REF.conv2d_forward(x, w, None, s, p, d, g).shape, np.nan, np.float32)
    y = NAT.conv2d_forward(x, w, None, s, p, d, g, out=out)
    assert y is out
    close(y, REF.conv2d_forward(*f64(x, w), None, s, p, d, g))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dw = np.full(w.shape, np.nan, np.float32)
    dx, dw2, db = NAT.conv2d_backward(dy, x, w, y, s, p, d, g, db=False, dw=dw, need_dx=False)
    assert dx is None and db is None and dw2 is dw
    close(dw, REF.conv2d_backward(*f64(dy, x, w, y), s, p, d, g)[1])


def test_conv1d_through_conv2d(isa):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 29, 5)).astype(np.float32)
    w = rng.standard_normal((4, 5, 7)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    y = NAT.conv1d_forward(x, w, b, 2, (1, 2), 3, 1, "relu")
    close(y, REF.conv1d_forward(*f64(x, w, b), 2, (1, 2), 3, 1, "relu"))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    got = NAT.conv1d_backward(dy, x, w, y, 2, (1, 2), 3, 1, "relu")
    want = REF.conv1d_backward(*f64(dy, x, w, y), 2, (1, 2), 3, 1, "relu")
    for a, e in zip(got, want):
        close(a, e)


DW_CASES = [  # (N, H, W, C, kh, kw, M, strides, dilation, pads)
    (1, 1, 1, 1, 1, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0)),
    (2, 8, 7, 5, 3, 3, 2, (1, 1), (1, 1), (1, 1, 1, 1)),
    (2, 9, 11, 17, 3, 3, 1, (2, 2), (1, 1), (0, 1, 0, 1)),
    (1, 13, 10, 3, 5, 3, 3, (3, 1), (2, 1), (4, 2, 1, 1)),
    (3, 6, 6, 40, 3, 3, 1, (1, 1), (1, 1), (1, 1, 1, 1)),
]


@pytest.mark.parametrize("case", DW_CASES)
def test_depthwise_matches_float64(isa, case):
    N, H, W, Cin, kh, kw, M, s, d, p = case
    rng = np.random.default_rng(N * H + Cin)
    x = rng.standard_normal((N, H, W, Cin)).astype(np.float32)
    w = rng.standard_normal((kh, kw, Cin, M)).astype(np.float32)
    b = rng.standard_normal(Cin * M).astype(np.float32)
    for act in ("linear", "relu", "gelu"):
        y = NAT.depthwise_conv2d_forward(x, w, b, s, p, d, act)
        close(y, REF.depthwise_conv2d_forward(*f64(x, w, b), s, p, d, act), what=act)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    y = NAT.depthwise_conv2d_forward(x, w, b, s, p, d, "relu")
    got = NAT.depthwise_conv2d_backward(dy, x, w, y, s, p, d, "relu")
    want = REF.depthwise_conv2d_backward(*f64(dy, x, w, y), s, p, d, "relu")
    for name, a, e in zip(("dx", "dw", "db"), got, want):
        close(a, e, what=name)


POOL_CASES = [  # (N, H, W, C, pool, strides, pads)
    (1, 1, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0)),
    (2, 8, 8, 3, (2, 2), (2, 2), (0, 0, 0, 0)),
    (3, 9, 8, 4, (3, 3), (2, 2), (1, 1, 1, 1)),
    (2, 9, 8, 5, (3, 2), (1, 2), (0, 2, 1, 0)),
    (1, 7, 13, 17, (2, 3), (3, 1), (1, 0, 2, 2)),
    (2, 24, 24, 6, (2, 2), (2, 2), (0, 0, 0, 0)),
]


@pytest.mark.parametrize("case", POOL_CASES)
def test_pooling_matches_float64(isa, case):
    N, H, W, Cin, pool, s, p = case
    rng = np.random.default_rng(H * W + Cin)
    x = rng.standard_normal((N, H, W, Cin)).astype(np.float32)
    x[0, 0, 0, 0] = x[0, 0, min(1, W - 1), 0]  # a tie: the first maximum takes the gradient
    y = NAT.max_pool2d_forward(x, pool, s, p)
    y64 = REF.max_pool2d_forward(*f64(x), pool, s, p)
    assert np.array_equal(y, y64.astype(np.float32))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    close(NAT.max_pool2d_backward(dy, x, y, pool, s, p), REF.max_pool2d_backward(*f64(dy, x, y), pool, s, p))
    ya = NAT.avg_pool2d_forward(x, pool, s, p)
    close(ya, REF.avg_pool2d_forward(*f64(x), pool, s, p))
    close(NAT.avg_pool2d_backward(dy, (H, W), pool, s, p), REF.avg_pool2d_backward(*f64(dy), (H, W), pool, s, p))


def test_pool1d_and_global(isa):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 17, 5)).astype(np.float32)
    y = NAT.max_pool1d_forward(x, 3, 2, (1, 1))
    close(y, REF.max_pool1d_forward(*f64(x), 3, 2, (1, 1)))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    close(NAT.max_pool1d_backward(dy, x, y, 3, 2, (1, 1)), REF.max_pool1d_backward(*f64(dy, x, y), 3, 2, (1, 1)))
    close(NAT.avg_pool1d_backward(dy, 17, 3, 2, (1, 1)), REF.avg_pool1d_backward(*f64(dy), 17, 3, 2, (1, 1)))
    for shape in [(2, 1, 1), (3, 5, 6, 7), (2, 3, 4, 2, 33)]:
        x = rng.standard_normal(shape).astype(np.float32)
        N, Cc = shape[0], shape[-1]
        close(NAT.global_avg_pool_forward(x), REF.global_avg_pool_forward(*f64(x)))
        y = NAT.global_max_pool_forward(x)
        assert np.array_equal(y, REF.global_max_pool_forward(x))
        dy = rng.standard_normal((N, Cc)).astype(np.float32)
        close(NAT.global_avg_pool_backward(dy, shape), REF.global_avg_pool_backward(*f64(dy), shape))
        close(NAT.global_max_pool_backward(dy, x, y), REF.global_max_pool_backward(*f64(dy, x, y)))


def test_max_pool_nan_propagates():
    x = np.zeros((1, 4, 4, 2), np.float32)
    x[0, 1, 1, 0] = np.nan
    y = NAT.max_pool2d_forward(x, (2, 2), (2, 2))
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[0, 0, 0, 1])
    dx = NAT.max_pool2d_backward(np.ones_like(y), x, y, (2, 2), (2, 2))
    assert dx[0, 1, 1, 0] == 1 and dx[0, 0, 0, 0] == 0


# shapes big enough that 2 and 3 threads really run (GEMM and direct kernels)
THREAD_CASES = [
    (4, 20, 20, 16, 3, 3, 32, (1, 1), (1, 1), 1, (1, 1, 1, 1)),
    (3, 17, 19, 12, 5, 3, 18, (2, 1), (1, 2), 3, (2, 2, 1, 3)),
    (64, 12, 12, 6, 5, 5, 16, (1, 1), (1, 1), 1, (0, 0, 0, 0)),
    (32, 24, 24, 16, 3, 3, 8, (1, 1), (1, 1), 1, (1, 1, 1, 1)),   # direct kernels above their grain
    (16, 28, 28, 1, 5, 5, 6, (1, 1), (1, 1), 1, (2, 2, 2, 2)),     # conv_tile, LeNet conv1 "same"
    (16, 32, 32, 3, 3, 3, 32, (1, 1), (1, 1), 1, (1, 1, 1, 1)),    # conv_tile, CIFAR conv1
    (8, 16, 16, 32, 3, 3, 64, (1, 1), (1, 1), 1, (1, 1, 1, 1)),    # conv_tile, CIFAR conv3 (data as a conv)
]


def _all_ops(case, rng):
    x, w, b, s, p, d, g = _conv_args(case, rng)
    out = []
    y = NAT.conv2d_forward(x, w, b, s, p, d, g, "relu")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    out += [y, *NAT.conv2d_backward(dy, x, w, y, s, p, d, g, "relu")]
    wd = rng.standard_normal((3, 3, x.shape[3], 2)).astype(np.float32)
    yd = NAT.depthwise_conv2d_forward(x, wd, None, (1, 1), (1, 1, 1, 1))
    out += [yd, *NAT.depthwise_conv2d_backward(rng.standard_normal(yd.shape).astype(np.float32), x, wd, yd,
                                               (1, 1), (1, 1, 1, 1), db=False)[:2]]
    ym = NAT.max_pool2d_forward(x, (3, 3), (2, 2), (1, 1, 1, 1))
    dym = rng.standard_normal(ym.shape).astype(np.float32)
    out += [ym, NAT.max_pool2d_backward(dym, x, ym, (3, 3), (2, 2), (1, 1, 1, 1)),
            NAT.avg_pool2d_forward(x, (3, 3), (2, 2), (1, 1, 1, 1)),
            NAT.avg_pool2d_backward(dym, x.shape[1:3], (3, 3), (2, 2), (1, 1, 1, 1)),
            NAT.global_avg_pool_forward(x), NAT.global_max_pool_forward(x)]
    return out


@pytest.mark.parametrize("case", THREAD_CASES)
def test_bitwise_identical_for_1_2_3_threads(isa, threads, case):
    results = []
    for nt in (1, 2, 3):
        fg.set_num_threads(nt)
        results.append(_all_ops(case, np.random.default_rng(7)))
    for nt, res in zip((2, 3), results[1:]):
        for i, (a, e) in enumerate(zip(res, results[0])):
            assert a is not None and np.array_equal(a, e), f"op {i} differs with {nt} threads"


@pytest.mark.parametrize("case", [c for c in CONV_CASES if c[9] == 1 and c[4] * c[5] > 1])
def test_direct_tile_kernels_match_gemm_path(isa, monkeypatch, case):
    """conv_tile.c (register-tiled direct kernels) against the implicit GEMM (FASTGRAD_CONV_DIRECT=0)."""
    rng = np.random.default_rng(11)
    x, w, b, s, p, d, g = _conv_args(case, rng)
    y = NAT.conv2d_forward(x, w, b, s, p, d, g, "relu")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    got = [y, *NAT.conv2d_backward(dy, x, w, y, s, p, d, g, "relu")]
    monkeypatch.setenv("FASTGRAD_CONV_DIRECT", "0")
    y0 = NAT.conv2d_forward(x, w, b, s, p, d, g, "relu")
    want = [y0, *NAT.conv2d_backward(dy, x, w, y0, s, p, d, g, "relu")]
    for name, a, e in zip(("y", "dx", "dw", "db"), got, want):
        close(a, e, tol=1e-5, what=name)


def test_float64_and_strided_inputs_fall_back():
    rng = np.random.default_rng(2)
    x, w, b, s, p, d, g = _conv_args(CONV_CASES[1], rng, np.float64)
    assert NAT.conv2d_forward(x, w, b, s, p, d, g).dtype == np.float64
    xs = x.astype(np.float32)[:, :, ::-1]  # not contiguous
    close(NAT.conv2d_forward(xs, w.astype(np.float32), None, s, p, d, g),
          REF.conv2d_forward(np.ascontiguousarray(xs, np.float64), w, None, s, p, d, g))
    # softmax is not element-wise: NumpyOps raises its error
    with pytest.raises(ValueError, match="conv2d_forward"):
        NAT.conv2d_forward(x.astype(np.float32), w.astype(np.float32), None, s, p, d, g, "softmax")


@pytest.mark.filterwarnings("ignore:invalid value")
def test_pool_windows_outside_input_fall_back():
    x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
    # a pad as large as the window: some windows see only padding -> NumpyOps path
    y = NAT.avg_pool2d_forward(x, (2, 2), (2, 2), (2, 0, 0, 0))
    y_ref = REF.avg_pool2d_forward(x, (2, 2), (2, 2), (2, 0, 0, 0))
    assert np.array_equal(np.isnan(y), np.isnan(y_ref))


@pytest.mark.parametrize("bad, match", [
    (dict(x=np.zeros((2, 5, 5), np.float32)), "4-D"),
    (dict(w=np.zeros((3, 3, 2, 4), np.float32)), "channels"),
    (dict(groups=2, w=np.zeros((3, 3, 3, 3), np.float32), x=np.zeros((1, 5, 5, 6), np.float32)), "groups"),
    (dict(strides=(0, 1)), "strides"),
    (dict(w=np.zeros((7, 7, 3, 4), np.float32)), "larger than the padded"),
    (dict(pads=(-1, 0, 0, 0)), "pads"),
])
def test_bad_input_raises_naming_the_op(bad, match):
    args = dict(x=np.zeros((1, 5, 5, 3), np.float32), w=np.zeros((3, 3, 3, 4), np.float32),
                strides=(1, 1), pads=(0, 0, 0, 0), groups=1)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        NAT.conv2d_forward(args["x"], args["w"], None, args["strides"], args["pads"], (1, 1), args["groups"])


def test_binding_validation():
    x = np.zeros((1, 5, 5, 3), np.float32)
    w = np.zeros((3, 3, 3, 4), np.float32)
    y = np.zeros((1, 3, 3, 4), np.float32)
    good = (1, 5, 5, 3, 3, 3, 4, 3, 3, 1, 1, 1, 1, 0, 0, 1)
    C.conv2d_forward(y, None, x, w, None, good, 0, 1)
    with pytest.raises(ValueError, match="inconsistent"):
        C.conv2d_forward(y, None, x, w, None, good[:-1] + (2,), 0, 1)     # groups do not divide
    with pytest.raises(ValueError, match="elements"):
        C.conv2d_forward(y[:, :2], None, x, w, None, good, 0, 1)
    with pytest.raises(ValueError, match="float32"):
        C.conv2d_forward(y, None, x.astype(np.float64), w, None, good, 0, 1)
    with pytest.raises(ValueError, match="invalid argument"):
        C.conv2d_forward(y, y, x, w, None, good, 1, 1)                      # z == y with relu
    with pytest.raises(ValueError, match="inconsistent"):
        C.pool2d_forward(y, x, (1, 5, 5, 3, 2, 2, 3, 2, 2, 0, 2, 1, 1, 0, 0, 1), True, 1)


@pytest.mark.parametrize("pool,strides,pads", [((2, 2), (2, 2), (0, 0, 0, 0)), ((3, 3), (1, 2), (1, 1, 1, 1))])
def test_max_pool_backward_ties_go_to_the_first_maximum(isa, pool, strides, pads):
    """The vectorised max backward (conv_direct.c) with many tied maxima: the first one in
    row-major window order takes the gradient, as in NumpyOps."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 3, (2, 7, 9, 37)).astype(np.float32)
    y = NAT.max_pool2d_forward(x, pool, strides, pads)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    got = NAT.max_pool2d_backward(dy, x, y, pool, strides, pads)
    want = REF.max_pool2d_backward(*f64(dy, x, y), pool, strides, pads)
    close(got, want, tol=1e-6, what="max pool backward with ties")


def test_tiled_forward_fused_relu_keeps_nan_and_signed_zero(isa):
    """conv_tile.c fuses ReLU into its store: the same bits as relu applied to the linear output
    (max(0, z): NaN propagates, -0 stays -0), and preact gets the linear output."""
    rng = np.random.default_rng(3)
    x, w, b, s, p, d, g = _conv_args((2, 9, 10, 3, 3, 3, 20, (1, 1), (1, 1), 1, (1, 1, 1, 1)), rng)
    x[0, 4, 4, 1] = np.nan
    b[3] = -0.0
    w[..., 3] = 0.0                     # channel 3: 0 * x + (-0) = +0 or -0 sums
    lin = NAT.conv2d_forward(x, w, b, s, p, d, g, "linear")
    pre = np.empty_like(lin)
    y = NAT.conv2d_forward(x, w, b, s, p, d, g, "relu", preact=pre)
    want = np.where(np.float32(0) > lin, np.float32(0), lin)
    assert np.array_equal(pre.view(np.uint32), lin.view(np.uint32))
    assert np.array_equal(y.view(np.uint32), want.view(np.uint32))
    assert np.isnan(y).any()
