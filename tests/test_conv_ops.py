"""NumpyOps conv / pooling ops (backend/numpy_conv.py) against float64 loops and
finite differences; PyTorch parity of the ops lives in test_conv_torch.py."""
import itertools

import numpy as np
import pytest

from fastgrad.backend.numpy_ops import NumpyOps
from fastgrad.backend.numpy_conv import same_pads, conv_out_size

OPS = NumpyOps()


# ------------------------------------------------------------------ float64 loop references
def ref_conv2d(x, w, b, strides, pads, dil, groups):
    N, H, W, C = x.shape
    kh, kw, cg, F = w.shape
    sh, sw = strides
    dh, dw = dil
    pt, pb, pl, pr = pads
    oh = (H + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (W + pl + pr - (kw - 1) * dw - 1) // sw + 1
    fg = F // groups
    y = np.zeros((N, oh, ow, F))
    for oy, ox, f in itertools.product(range(oh), range(ow), range(F)):
        g = f // fg
        acc = np.zeros(N)
        for ky, kx, c in itertools.product(range(kh), range(kw), range(cg)):
            iy, ix = oy * sh + ky * dh - pt, ox * sw + kx * dw - pl
            if 0 <= iy < H and 0 <= ix < W:
                acc += x[:, iy, ix, g * cg + c] * w[ky, kx, c, f]
        y[:, oy, ox, f] = acc + (0 if b is None else b[f])
    return y


def ref_conv2d_transpose(x, w, b, strides, pads, dil):
    N, H, W, C = x.shape
    kh, kw, F, _ = w.shape
    sh, sw = strides
    dh, dw = dil
    pt, pb, pl, pr = pads
    oh = (H - 1) * sh + (kh - 1) * dh + 1 - pt - pb
    ow = (W - 1) * sw + (kw - 1) * dw + 1 - pl - pr
    y = np.zeros((N, oh, ow, F))
    for iy, ix, ky, kx in itertools.product(range(H), range(W), range(kh), range(kw)):
        oy, ox = iy * sh + ky * dh - pt, ix * sw + kx * dw - pl
        if 0 <= oy < oh and 0 <= ox < ow:
            y[:, oy, ox, :] += x[:, iy, ix, :] @ w[ky, kx].T
    if b is not None:
        y += b
    return y


def ref_pool(x, pool, strides, pads, kind):
    N, H, W, C = x.shape
    ph, pw = pool
    sh, sw = strides
    pt, pb, pl, pr = pads
    oh = (H + pt + pb - ph) // sh + 1
    ow = (W + pl + pr - pw) // sw + 1
    y = np.zeros((N, oh, ow, C))
    for oy, ox in itertools.product(range(oh), range(ow)):
        y0, x0 = oy * sh - pt, ox * sw - pl
        win = x[:, max(y0, 0):min(y0 + ph, H), max(x0, 0):min(x0 + pw, W)]
        y[:, oy, ox] = win.max(axis=(1, 2)) if kind == "max" else win.mean(axis=(1, 2))
    return y


def rng(seed=0):
    return np.random.default_rng(seed)


def numgrad(f, a, eps=1e-6):
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


CONV_CASES = [
    # (N, H, W, C, kh, kw, F, strides, pads, dil, groups)
    (2, 7, 5, 3, 3, 3, 4, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    (1, 9, 11, 2, 3, 2, 5, (2, 3), (1, 2, 0, 1), (1, 1), 1),
    (3, 8, 8, 4, 3, 3, 6, (1, 2), (2, 2, 2, 2), (2, 1), 2),
    (2, 6, 7, 6, 2, 3, 6, (2, 1), (0, 1, 1, 0), (1, 2), 6),     # depthwise-like
    (2, 5, 5, 1, 5, 5, 3, (1, 1), (2, 2, 2, 2), (1, 1), 1),     # one input channel
    (2, 4, 6, 5, 1, 1, 7, (1, 1), (0, 0, 0, 0), (1, 1), 1),     # 1x1 fast path
    (1, 13, 3, 4, 4, 1, 2, (3, 1), (1, 2, 0, 0), (2, 1), 2),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_forward_matches_loops(case):
    N, H, W, C, kh, kw, F, s, p, d, g = case
    r = rng(1)
    x = r.standard_normal((N, H, W, C))
    w = r.standard_normal((kh, kw, C // g, F))
    b = r.standard_normal(F)
    y = OPS.conv2d_forward(x, w, b, s, p, d, g)
    np.testing.assert_allclose(y, ref_conv2d(x, w, b, s, p, d, g), rtol=1e-12, atol=1e-12)
    y32 = OPS.conv2d_forward(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32), s, p, d, g)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("act", ["linear", "tanh", "gelu"])
@pytest.mark.parametrize("corr", [None, True, False])
def test_conv2d_backward_finite_differences(case, act, corr, monkeypatch):
    monkeypatch.setattr(OPS, "_dx_by_correlation", corr)
    N, H, W, C, kh, kw, F, s, p, d, g = case
    r = rng(2)
    x = r.standard_normal((N, H, W, C))
    w = r.standard_normal((kh, kw, C // g, F)) * 0.5
    b = r.standard_normal(F)
    pre = np.empty((N,) + ref_conv2d(x[:1, :, :, :], w, b, s, p, d, g).shape[1:]) if act == "gelu" else None
    if pre is not None:
        pre = np.empty((N,) + pre.shape[1:])
    y = OPS.conv2d_forward(x, w, b, s, p, d, g, act, preact=pre)
    dy = r.standard_normal(y.shape)
    dx, dw, db = OPS.conv2d_backward(dy, x, w, y, s, p, d, g, act, pre)

    def loss():
        return float(np.sum(OPS.conv2d_forward(x, w, b, s, p, d, g, act) * dy))
    np.testing.assert_allclose(dx, numgrad(loss, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dw, numgrad(loss, w), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(db, numgrad(loss, b), rtol=1e-5, atol=1e-6)


def test_conv2d_backward_outputs_and_no_bias():
    r = rng(3)
    x = r.standard_normal((2, 6, 6, 3)).astype(np.float32)
    w = r.standard_normal((3, 3, 3, 4)).astype(np.float32)
    y = OPS.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1))
    dy = r.standard_normal(y.shape).astype(np.float32)
    dx, dw, db = np.full(x.shape, np.nan, np.float32), np.full(w.shape, np.nan, np.float32), None
    gx, gw, gb = OPS.conv2d_backward(dy, x, w, y, (1, 1), (1, 1, 1, 1), dx=dx, dw=dw, db=False)
    assert gx is dx and gw is dw and gb is None
    assert np.isfinite(dx).all() and np.isfinite(dw).all()
    _, gw2, _ = OPS.conv2d_backward(dy, x, w, y, (1, 1), (1, 1, 1, 1), db=False, need_dx=False)
    np.testing.assert_array_equal(gw2, dw)


def test_conv_chunking_gives_same_result():
    r = rng(4)
    x = r.standard_normal((5, 9, 9, 3))
    w = r.standard_normal((3, 3, 3, 4))
    y = OPS.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1))
    dy = r.standard_normal(y.shape)
    gx, gw, _ = OPS.conv2d_backward(dy, x, w, y, (1, 1), (1, 1, 1, 1), db=False)
    small = NumpyOps()
    small._COL_ELEMS = 9 * 9 * 27 * 2       # chunks of 2 samples
    y2 = small.conv2d_forward(x, w, None, (1, 1), (1, 1, 1, 1))
    gx2, gw2, _ = small.conv2d_backward(dy, x, w, y2, (1, 1), (1, 1, 1, 1), db=False)
    np.testing.assert_allclose(y2, y, rtol=1e-13)
    np.testing.assert_allclose(gx2, gx, rtol=1e-13)
    np.testing.assert_allclose(gw2, gw, rtol=1e-12)


def test_conv1d_is_conv2d_with_one_row():
    r = rng(5)
    x = r.standard_normal((3, 11, 4))
    w = r.standard_normal((3, 2, 6))
    b = r.standard_normal(6)
    y = OPS.conv1d_forward(x, w, b, 2, (1, 2), 2, 2, "relu")
    ref = np.maximum(ref_conv2d(x[:, None], w[None], b, (1, 2), (0, 0, 1, 2), (1, 2), 2)[:, 0], 0)
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    dy = r.standard_normal(y.shape)
    dx, dw, db = OPS.conv1d_backward(dy, x, w, y, 2, (1, 2), 2, 2, "relu")

    def loss():
        return float(np.sum(OPS.conv1d_forward(x, w, b, 2, (1, 2), 2, 2, "relu") * dy))
    np.testing.assert_allclose(dx, numgrad(loss, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dw, numgrad(loss, w), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(db, numgrad(loss, b), rtol=1e-5, atol=1e-6)


def test_depthwise_channel_order_is_keras():
    r = rng(6)
    x = r.standard_normal((2, 6, 5, 3))
    w = r.standard_normal((3, 2, 3, 2))        # (kh, kw, C, M)
    b = r.standard_normal(6)
    y = OPS.depthwise_conv2d_forward(x, w, b, (1, 2), (1, 1, 0, 1), (1, 1))
    for c in range(3):
        for m in range(2):
            ref = ref_conv2d(x[..., c:c + 1], w[:, :, c:c + 1, m:m + 1], b[c * 2 + m:c * 2 + m + 1],
                             (1, 2), (1, 1, 0, 1), (1, 1), 1)
            np.testing.assert_allclose(y[..., c * 2 + m:c * 2 + m + 1], ref, rtol=1e-12, atol=1e-12)
    dy = r.standard_normal(y.shape)
    dx, dw, db = OPS.depthwise_conv2d_backward(dy, x, w, y, (1, 2), (1, 1, 0, 1), (1, 1))
    assert dw.shape == w.shape

    def loss():
        return float(np.sum(OPS.depthwise_conv2d_forward(x, w, b, (1, 2), (1, 1, 0, 1), (1, 1)) * dy))
    np.testing.assert_allclose(dw, numgrad(loss, w), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, numgrad(loss, x), rtol=1e-5, atol=1e-6)


TRANSPOSE_CASES = [
    (2, 3, 4, 3, 3, 3, 2, (1, 1), (0, 0, 0, 0), (1, 1)),
    (1, 4, 3, 2, 3, 2, 3, (2, 3), (1, 0, 0, 1), (1, 1)),
    (2, 3, 3, 2, 3, 3, 4, (2, 2), (0, -1, 1, -2), (1, 1)),   # extra output rows/cols at the end
    (1, 3, 4, 3, 2, 3, 2, (2, 1), (1, 1, 2, 0), (2, 2)),
]


@pytest.mark.parametrize("case", TRANSPOSE_CASES)
def test_conv2d_transpose_matches_loops_and_fd(case):
    N, H, W, C, kh, kw, F, s, p, d = case
    r = rng(7)
    x = r.standard_normal((N, H, W, C))
    w = r.standard_normal((kh, kw, F, C))
    b = r.standard_normal(F)
    y = OPS.conv2d_transpose_forward(x, w, b, s, p, d)
    np.testing.assert_allclose(y, ref_conv2d_transpose(x, w, b, s, p, d), rtol=1e-12, atol=1e-12)
    dy = r.standard_normal(y.shape)
    dx, dw, db = OPS.conv2d_transpose_backward(dy, x, w, y, s, p, d, "sigmoid")
    ys = OPS.conv2d_transpose_forward(x, w, b, s, p, d, "sigmoid")
    dx, dw, db = OPS.conv2d_transpose_backward(dy, x, w, ys, s, p, d, "sigmoid")

    def loss():
        return float(np.sum(OPS.conv2d_transpose_forward(x, w, b, s, p, d, "sigmoid") * dy))
    np.testing.assert_allclose(dx, numgrad(loss, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dw, numgrad(loss, w), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(db, numgrad(loss, b), rtol=1e-5, atol=1e-6)


POOL_CASES = [
    (2, 6, 6, 3, (2, 2), (2, 2), (0, 0, 0, 0)),
    (1, 7, 5, 2, (3, 2), (2, 1), (1, 1, 0, 1)),
    (2, 5, 8, 1, (3, 3), (1, 3), (1, 1, 1, 1)),
    (1, 9, 9, 2, (2, 3), (3, 2), (0, 1, 1, 1)),
]


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool2d_matches_loops_and_fd(case, kind):
    N, H, W, C, pool, s, p = case
    r = rng(8)
    x = r.standard_normal((N, H, W, C))
    fwd = OPS.max_pool2d_forward if kind == "max" else OPS.avg_pool2d_forward
    y = fwd(x, pool, s, p)
    np.testing.assert_allclose(y, ref_pool(x, pool, s, p, kind), rtol=1e-13, atol=1e-14)
    dy = r.standard_normal(y.shape)
    if kind == "max":
        dx = OPS.max_pool2d_backward(dy, x, y, pool, s, p)
    else:
        dx = OPS.avg_pool2d_backward(dy, (H, W), pool, s, p)

    def loss():
        return float(np.sum(fwd(x, pool, s, p) * dy))
    np.testing.assert_allclose(dx, numgrad(loss, x), rtol=1e-5, atol=1e-6)


def test_max_pool_ties_go_to_first_maximum():
    x = np.zeros((1, 2, 2, 1))
    y = OPS.max_pool2d_forward(x, (2, 2), (2, 2))
    dx = OPS.max_pool2d_backward(np.ones_like(y), x, y, (2, 2), (2, 2))
    np.testing.assert_array_equal(dx[0, :, :, 0], [[1, 0], [0, 0]])


def test_pool1d():
    r = rng(9)
    x = r.standard_normal((2, 9, 3))
    y = OPS.max_pool1d_forward(x, 3, 2, (1, 1))
    np.testing.assert_allclose(y, ref_pool(x[:, None], (1, 3), (1, 2), (0, 0, 1, 1), "max")[:, 0])
    a = OPS.avg_pool1d_forward(x, 2)
    np.testing.assert_allclose(a, (x[:, 0:8:2] + x[:, 1:9:2]) / 2)
    da = OPS.avg_pool1d_backward(np.ones_like(a), 9, 2)
    np.testing.assert_allclose(da[:, :8], 0.5)
    np.testing.assert_allclose(da[:, 8], 0.0)
    dm = OPS.max_pool1d_backward(np.ones_like(y), x, y, 3, 2, (1, 1))
    assert dm.shape == x.shape and dm.sum() == y.size


def test_same_pads_rule():
    # Keras / TF: output ceil(n / s); the odd pixel of padding goes at the end
    assert same_pads(5, 3, 1) == (1, 1)
    assert same_pads(6, 3, 2) == (0, 1)
    assert same_pads(7, 3, 2) == (1, 1)
    assert same_pads(8, 4, 1) == (1, 2)
    assert same_pads(5, 3, 1, 2) == (2, 2)
    assert same_pads(4, 1, 3) == (0, 0)
    for n, k, s, d in itertools.product(range(1, 9), range(1, 5), range(1, 4), range(1, 3)):
        lo, hi = same_pads(n, k, s, d)
        assert conv_out_size(n, k, s, d, lo, hi) == -(-n // s)
        assert 0 <= hi - lo <= 1


@pytest.mark.parametrize("shape", [(2, 7, 3), (2, 4, 5, 3)])
def test_global_pools(shape):
    r = rng(10)
    x = r.standard_normal(shape)
    N, C = shape[0], shape[-1]
    ya = OPS.global_avg_pool_forward(x)
    ym = OPS.global_max_pool_forward(x)
    x3 = x.reshape(N, -1, C)
    np.testing.assert_allclose(ya, x3.mean(axis=1))
    np.testing.assert_array_equal(ym, x3.max(axis=1))
    dy = r.standard_normal((N, C))
    da = OPS.global_avg_pool_backward(dy, x.shape)
    dm = OPS.global_max_pool_backward(dy, x, ym)
    np.testing.assert_allclose(da, numgrad(lambda: float(np.sum(OPS.global_avg_pool_forward(x) * dy)), x),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dm, numgrad(lambda: float(np.sum(OPS.global_max_pool_forward(x) * dy)), x),
                               rtol=1e-6, atol=1e-8)


def test_global_pools_with_mask():
    r = rng(11)
    x = r.standard_normal((3, 5, 2))
    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=bool)
    ya = OPS.global_avg_pool_forward(x, mask=mask)
    ym = OPS.global_max_pool_forward(x, mask=mask)
    np.testing.assert_allclose(ya[0], x[0, :2].mean(axis=0))
    np.testing.assert_allclose(ya[1], x[1].mean(axis=0))
    np.testing.assert_array_equal(ya[2], 0)
    np.testing.assert_array_equal(ym[0], x[0, :2].max(axis=0))
    np.testing.assert_array_equal(ym[2], 0)
    dy = np.ones((3, 2))
    da = OPS.global_avg_pool_backward(dy, x.shape, mask=mask)
    np.testing.assert_allclose(da[0, :2], 0.5)
    np.testing.assert_array_equal(da[0, 2:], 0)
    np.testing.assert_array_equal(da[2], 0)
    dm = OPS.global_max_pool_backward(dy, x, ym, mask=mask)
    assert dm[0, 2:].sum() == 0 and dm[0].sum() == 2 and dm[2].sum() == 0


def test_pad_crop_upsample():
    r = rng(12)
    x = r.standard_normal((2, 3, 4, 2))
    p = OPS.pad2d_forward(x, (1, 2, 0, 3))
    assert p.shape == (2, 6, 7, 2) and p.sum() == pytest.approx(x.sum())
    np.testing.assert_array_equal(OPS.pad2d_backward(p, (1, 2, 0, 3)), x)
    c = OPS.crop2d_forward(p, (1, 2, 0, 3))
    np.testing.assert_array_equal(c, x)
    np.testing.assert_array_equal(OPS.crop2d_backward(c, (1, 2, 0, 3)), p)
    u = OPS.upsample_nearest2d_forward(x, (2, 3))
    assert u.shape == (2, 6, 12, 2)
    np.testing.assert_array_equal(u[:, 1, 5], x[:, 0, 1])
    du = OPS.upsample_nearest2d_backward(np.ones_like(u), (2, 3))
    np.testing.assert_array_equal(du, 6.0)


def test_spatial_dropout_masks_whole_channels():
    x = np.ones((4, 3, 3, 8), np.float32)
    mask = np.empty((4, 8), np.uint8)
    y = OPS.spatial_dropout_forward(x, 0.5, seed=7, offset=0, mask=mask)
    assert 0 < mask.sum() < mask.size
    per = y.reshape(4, 9, 8)
    assert (per == per[:, :1]).all()                  # constant over the spatial positions
    np.testing.assert_allclose(per[:, 0], mask * 2.0)
    # same flags as `dropout` over the (N, C) index space
    m2 = np.empty((4, 8), np.uint8)
    OPS.dropout(np.ones((4, 8), np.float32), 0.5, 7, 0, mask=m2)
    np.testing.assert_array_equal(mask, m2)
    dx = OPS.spatial_dropout_backward(np.ones_like(x), mask, 0.5)
    np.testing.assert_array_equal(dx, y)


@pytest.mark.parametrize("call, msg", [
    (lambda: OPS.conv2d_forward(np.zeros((1, 4, 4, 3)), np.zeros((3, 3, 2, 4))), "channels"),
    (lambda: OPS.conv2d_forward(np.zeros((1, 4, 4, 4)), np.zeros((3, 3, 2, 3)), groups=2), "groups"),
    (lambda: OPS.conv2d_forward(np.zeros((1, 2, 2, 1)), np.zeros((3, 3, 1, 1))), "larger than the padded"),
    (lambda: OPS.conv2d_forward(np.zeros((1, 4, 4, 1)), np.zeros((3, 3, 1, 1)), strides=(0, 1)), "strides"),
    (lambda: OPS.conv2d_forward(np.zeros((4, 4, 1)), np.zeros((3, 3, 1, 1))), "4-D"),
    (lambda: OPS.conv2d_forward(np.zeros((1, 4, 4, 1)), np.zeros((3, 3, 1, 1)), pads=(-1, 0, 0, 0)), "pads"),
    (lambda: OPS.max_pool2d_forward(np.zeros((1, 2, 2, 1)), (3, 3)), "larger than the padded"),
    (lambda: OPS.conv2d_transpose_forward(np.zeros((1, 2, 2, 3)), np.zeros((3, 3, 2, 4))), "channels"),
])
def test_bad_input(call, msg):
    with pytest.raises(ValueError, match=msg):
        call()
