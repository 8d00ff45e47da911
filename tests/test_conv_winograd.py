"""Winograd F(2x2, 3x3) (csrc/conv/conv_wino.c) through fastgrad._native.conv / NativeOps.

3x3, stride-1, undilated, ungrouped convolutions: the forward (bias and ReLU fused in the
output transform, other activations after it) and the unit-stride data gradient (the
forward on dz with the rotated, transposed kernel). Checked against NumpyOps in float64
on every instruction-set path, for bitwise-identical results with 1, 2 and 3 threads,
and against the direct / implicit-GEMM kernels (FASTGRAD_CONV_WINOGRAD=0).

FASTGRAD_CONV_WINOGRAD=2 runs Winograd on every eligible shape whatever its size (the
default routing keeps it for c >= 16, f >= 16 and at least 16 output tiles), so the
small and odd shapes below exercise the kernel itself, not the routing.

Measured error (Zen 4; x ~ N(0, 1), w ~ N(0, 1) / sqrt(9 c); max |got - float64| relative to
1 + max |float64|; the CIFAR-shaped layers 32x32 c=f=32 same, 16x16 32->64 and 14x14
64->64 valid, batch 8; one run):
    path     Winograd forward / data grad     direct forward / data grad
    avx512   2.4e-7 .. 2.7e-7 / 2.8e-7 .. 3.0e-7   5.3e-7 .. 6.3e-7 / 5.2e-7 .. 7.6e-7
    avx2     2.4e-7 .. 2.7e-7 / 2.8e-7 .. 3.0e-7   3.2e-7 .. 6.1e-7 / 4.3e-7 .. 7.0e-7
    baseline 2.2e-7 .. 2.8e-7 / 2.4e-7 .. 3.1e-7   3.2e-7 .. 3.4e-7 / 3.2e-7 .. 3.9e-7
Winograd F(2x2, 3x3) is as accurate as the direct sum here (its chains are c long, the
direct ones 9 c); test_default_routing_uses_winograd_and_matches_direct asserts at most
4x the direct error. F(4x4, 3x3) would be about 10x and is not used.
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


@pytest.fixture
def forced(monkeypatch):
    monkeypatch.setenv("FASTGRAD_CONV_WINOGRAD", "2")
    yield monkeypatch


def f64(*a):
    return [None if v is None else np.asarray(v, np.float64) for v in a]


def rel_err(got, want):
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape
    return float(np.max(np.abs(got - want)) / (1.0 + np.max(np.abs(want)))) if want.size else 0.0


def close(got, want, tol=2e-5, what=""):
    err = rel_err(got, want)
    assert err < tol, f"{what}: relative error {err:.3g}"


SPATIAL = [(1, 1), (2, 2), (3, 3), (5, 5), (7, 7), (13, 13), (17, 9), (32, 32)]
CHANNELS_IN = [1, 3, 5, 16, 17, 33]
CHANNELS_OUT = [1, 7, 16, 31, 64, 65]
# (top, bottom, left, right): same, valid, and asymmetric ones
PADS = [(1, 1, 1, 1), (0, 0, 0, 0), (0, 1, 1, 0), (2, 0, 1, 2), (1, 2, 0, 1)]


def _cases():
    """Every (c, f) pair, cycling through sizes, batch sizes and paddings (valid padding needs
    h, w >= 3; such cases take same padding instead)."""
    out = []
    k = 0
    for c in CHANNELS_IN:
        for f in CHANNELS_OUT:
            h, w = SPATIAL[k % len(SPATIAL)]
            n = (1, 3)[k % 2]
            pads = PADS[k % len(PADS)]
            if h + pads[0] + pads[1] < 3 or w + pads[2] + pads[3] < 3:
                pads = (1, 1, 1, 1)
            out.append((n, h, w, c, f, pads))
            k += 1
    # every size with a mid-sized channel pair
    for i, (h, w) in enumerate(SPATIAL):
        out.append(((1, 3)[i % 2], h, w, 17, 31, (1, 1, 1, 1)))
        if h >= 3 and w >= 3:
            out.append(((3, 1)[i % 2], h, w, 16, 16, (0, 0, 0, 0)))
    return out


CASES = _cases()


def _args(case, rng):
    n, h, w, c, f, pads = case
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    k = (rng.standard_normal((3, 3, c, f)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    return x, k, b, pads


S1 = (1, 1)


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_winograd_matches_float64(isa, forced, case):
    rng = np.random.default_rng(sum(case[:5]))
    x, k, b, pads = _args(case, rng)
    for bias, act in ((b, "linear"), (None, "relu"), (b, "relu"), (None, "linear"), (b, "tanh")):
        want = REF.conv2d_forward(*f64(x, k, bias), S1, pads, S1, 1, act)
        pre = np.empty(want.shape, np.float32)
        y = NAT.conv2d_forward(x, k, bias, S1, pads, S1, 1, act, preact=pre)
        close(y, want, what=f"forward {act} bias={bias is not None}")
        close(pre, REF.conv2d_forward(*f64(x, k, bias), S1, pads, S1, 1), what="preact")
        y2 = NAT.conv2d_forward(x, k, bias, S1, pads, S1, 1, act)  # no preact kept
        assert np.array_equal(y2, y)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, db = NAT.conv2d_backward(dy, x, k, y, S1, pads, S1, 1, "linear")
    wdx, wdw, wdb = REF.conv2d_backward(*f64(dy, x, k, y), S1, pads, S1, 1, "linear")
    close(dx, wdx, what="dx")
    close(dw, wdw, what="dw")


@pytest.mark.parametrize("case", [(2, 32, 32, 32, 32, (1, 1, 1, 1)), (2, 16, 16, 32, 64, (0, 0, 0, 0)),
                                  (2, 14, 14, 64, 64, (0, 0, 0, 0)), (1, 12, 12, 64, 64, (0, 0, 0, 0)),
                                  (3, 17, 9, 33, 65, (0, 1, 1, 0))])
def test_default_routing_uses_winograd_and_matches_direct(isa, monkeypatch, case):
    """The CIFAR-shaped layers take Winograd by default (its bits differ from the direct
    kernels'); FASTGRAD_CONV_WINOGRAD=0 gives the direct / GEMM result within float32
    tolerance, and Winograd's error against float64 stays within 4x the direct one."""
    rng = np.random.default_rng(11)
    x, k, b, pads = _args(case, rng)
    y = NAT.conv2d_forward(x, k, b, S1, pads, S1, 1, "relu")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx = NAT.conv2d_backward(dy, x, k, y, S1, pads, S1, 1, "relu")[0]
    monkeypatch.setenv("FASTGRAD_CONV_WINOGRAD", "0")
    y0 = NAT.conv2d_forward(x, k, b, S1, pads, S1, 1, "relu")
    dx0 = NAT.conv2d_backward(dy, x, k, y0, S1, pads, S1, 1, "relu")[0]
    assert not np.array_equal(y, y0), "Winograd did not run"
    close(y, y0, tol=1e-5, what="y vs direct")
    close(dx, dx0, tol=1e-5, what="dx vs direct")
    y64 = REF.conv2d_forward(*f64(x, k, b), S1, pads, S1, 1, "relu")
    dz = np.where(y > 0, dy, 0).astype(np.float64)
    dx64 = REF.conv2d_backward(dz, *f64(x, k, y), S1, pads, S1, 1)[0]
    for got, base, want, what in ((y, y0, y64, "forward"), (dx, dx0, dx64, "data gradient")):
        assert rel_err(got, want) <= 4 * rel_err(base, want) + 1e-7, what


THREAD_CASES = [(3, 17, 9, 33, 65, (1, 1, 1, 1)), (1, 32, 32, 32, 32, (1, 1, 1, 1)),
                (1, 14, 14, 64, 64, (0, 0, 0, 0)), (3, 13, 13, 17, 31, (0, 1, 1, 0)),
                (2, 5, 7, 16, 7, (2, 0, 1, 2))]


@pytest.mark.parametrize("case", THREAD_CASES)
def test_bitwise_identical_for_1_2_3_threads(isa, threads, forced, case):
    res = []
    for nt in (1, 2, 3):
        fg.set_num_threads(nt)
        rng = np.random.default_rng(5)
        x, k, b, pads = _args(case, rng)
        pre = np.empty(REF.conv2d_forward(x, k, None, S1, pads, S1, 1).shape, np.float32)
        y = NAT.conv2d_forward(x, k, b, S1, pads, S1, 1, "relu", preact=pre)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dx = NAT.conv2d_backward(dy, x, k, y, S1, pads, S1, 1, "linear")[0]
        res.append((y, pre, dx))
    for nt, r in zip((2, 3), res[1:]):
        for name, a, e in zip(("y", "preact", "dx"), r, res[0]):
            assert np.array_equal(a, e), f"{name} differs with {nt} threads"


def test_fused_relu_keeps_nan_and_signed_zero(isa, forced):
    """ReLU in the output transform: the same bits as relu applied to the linear output
    (max(0, z): NaN propagates, -0 stays -0), and preact gets the linear output."""
    rng = np.random.default_rng(3)
    x, k, b, pads = _args((2, 9, 10, 20, 20, (1, 1, 1, 1)), rng)
    x[0, 4, 4, 1] = np.nan
    b[3] = -0.0
    k[..., 3] = 0.0
    lin = NAT.conv2d_forward(x, k, b, S1, pads, S1, 1, "linear")
    pre = np.empty_like(lin)
    y = NAT.conv2d_forward(x, k, b, S1, pads, S1, 1, "relu", preact=pre)
    want = np.where(np.float32(0) > lin, np.float32(0), lin)
    assert np.array_equal(pre.view(np.uint32), lin.view(np.uint32))
    assert np.array_equal(y.view(np.uint32), want.view(np.uint32))
    assert np.isnan(y).any()
