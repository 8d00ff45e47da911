"""Attention ops: the NumPy reference (backend/numpy_attention.py) against
float64 formulas, finite differences and PyTorch (marker `torch`); the C
family (csrc/attn) against NumPy and float64 over shapes (1, primes, sizes
off every tile), every ISA path, 1/2/3 threads (bitwise equal across thread
counts; ISA paths agree to a few ulp)."""
import math

import numpy as np
import pytest

from fastgrad import _native
from fastgrad.backend import NumpyOps
from fastgrad.backend.numpy_attention import attention_allowed

A = _native.module("attn")
RT = _native.module("runtime")
ISAS = RT.isa_supported() if RT is not None else []
REF = NumpyOps()
needs_c = pytest.mark.skipif(A is None, reason="native attn module not built")

if A is not None:
    from fastgrad.backend.native_attn import AttnMixin
    from fastgrad.backend.native_kernels import KernelsMixin
    from fastgrad.backend.native_gemm import GemmMixin

    class COps(AttnMixin, KernelsMixin, GemmMixin, NumpyOps):
        pass
    C = COps()


def rng(s=0):
    return np.random.default_rng(s)


def qkv(B, H, Tq, Tk, D, Dv, seed=0, dtype=np.float64):
    r = rng(seed)
    return tuple(r.standard_normal(s).astype(dtype) for s in
                 ((B, H, Tq, D), (B, H, Tk, D), (B, H, Tk, Dv)))


def masks(B, Tq, Tk, seed=1):
    r = rng(seed)
    kv = r.random((B, Tk)) > 0.3
    kv[:, 0] = True
    qv = r.random((B, Tq)) > 0.2
    am = r.random((B, Tq, Tk)) > 0.2
    return kv, qv, am


def ref_attention64(q, k, v, kv=None, qv=None, am=None, causal=False, scale=None):
    """Direct float64 formula, loop over rows."""
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    scale = 1 / math.sqrt(D) if scale is None else scale
    out = np.zeros((B, H, Tq, v.shape[3]))
    P = np.zeros((B, H, Tq, Tk))
    for b in range(B):
        for h in range(H):
            for i in range(Tq):
                ok = np.ones(Tk, bool)
                if kv is not None:
                    ok &= kv[b]
                if qv is not None and not qv[b, i]:
                    ok[:] = False
                if am is not None:
                    ok &= am[b, i]
                if causal:
                    ok &= np.arange(Tk) <= i
                if not ok.any():
                    continue
                s = (q[b, h, i] @ k[b, h].T) * scale
                e = np.exp(s[ok] - s[ok].max())
                P[b, h, i, ok] = e / e.sum()
                out[b, h, i] = P[b, h, i] @ v[b, h]
    return out, P


MASKS = ["none", "key", "query", "explicit", "causal", "all"]


def mask_args(kind, B, Tq, Tk):
    kv, qv, am = masks(B, Tq, Tk)
    return dict(none={}, key=dict(key_valid=kv), query=dict(query_valid=qv),
                explicit=dict(mask=am), causal=dict(causal=True),
                all=dict(key_valid=kv, query_valid=qv, mask=am, causal=True))[kind]


def _ref_kw(kw):
    return dict(kv=kw.get("key_valid"), qv=kw.get("query_valid"), am=kw.get("mask"),
                causal=kw.get("causal", False))


# ------------------------------------------------------------------ NumPy reference
@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1, 1), (2, 3, 5, 7, 4, 6), (1, 2, 9, 4, 3, 2)])
def test_numpy_attention_matches_float64_formula(kind, shape):
    q, k, v = qkv(*shape)
    kw = mask_args(kind, shape[0], shape[2], shape[3])
    w = np.empty(shape[:3] + (shape[3],))
    out = REF.attention_forward(q, k, v, weights=w, **kw)
    o64, p64 = ref_attention64(q, k, v, **_ref_kw(kw))
    np.testing.assert_allclose(out, o64, atol=1e-12)
    np.testing.assert_allclose(w, p64, atol=1e-12)


@pytest.mark.parametrize("kind", MASKS)
def test_numpy_attention_backward_finite_differences(kind):
    B, H, Tq, Tk, D, Dv = 2, 2, 4, 5, 3, 2
    q, k, v = qkv(B, H, Tq, Tk, D, Dv, seed=3)
    kw = mask_args(kind, B, Tq, Tk)
    dout = rng(4).standard_normal((B, H, Tq, Dv))
    w = np.empty((B, H, Tq, Tk))
    REF.attention_forward(q, k, v, weights=w, **kw)
    grads = REF.attention_backward(dout, q, k, v, w)

    def f(q_, k_, v_):
        return float(np.sum(REF.attention_forward(q_, k_, v_, **kw) * dout))
    eps = 1e-6
    for idx, (x, g) in enumerate(zip((q, k, v), grads)):
        num = np.zeros_like(x)
        it = np.nditer(x, flags=["multi_index"])
        for _ in it:
            i = it.multi_index
            xp, xm = x.copy(), x.copy()
            xp[i] += eps
            xm[i] -= eps
            a = [q, k, v]
            a[idx] = xp
            fp = f(*a)
            a[idx] = xm
            num[i] = (fp - f(*a)) / (2 * eps)
        np.testing.assert_allclose(g, num, atol=1e-7, err_msg=f"input {idx}")


@pytest.mark.parametrize("kind", ["none", "key", "query", "causal"])
@pytest.mark.parametrize("block", [1, 3, 128])
def test_numpy_flash_equals_attention(kind, block):
    B, H, Tq, Tk, D, Dv = 2, 2, 7, 11, 3, 5
    q, k, v = qkv(B, H, Tq, Tk, D, Dv, seed=5)
    kw = mask_args(kind, B, Tq, Tk)
    w = np.empty((B, H, Tq, Tk))
    out = REF.attention_forward(q, k, v, weights=w, **kw)
    lse = np.empty((B, H, Tq))
    fo = REF.flash_attention_forward(q, k, v, lse=lse, block=block, **kw)
    np.testing.assert_allclose(fo, out, atol=1e-13)
    do = rng(6).standard_normal(out.shape)
    g1 = REF.attention_backward(do, q, k, v, w)
    g2 = REF.flash_attention_backward(do, q, k, v, fo, lse, block=block, **kw)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(b, a, atol=1e-13)


def test_dropout_on_weights_backward_finite_differences():
    B, H, Tq, Tk, D, Dv = 1, 2, 3, 4, 2, 2
    q, k, v = qkv(B, H, Tq, Tk, D, Dv, seed=7)
    dout = rng(8).standard_normal((B, H, Tq, Dv))
    kw = dict(dropout_rate=0.4, seed=11, offset=5)
    w, pd, keep = (np.empty((B, H, Tq, Tk)), np.empty((B, H, Tq, Tk)),
                   np.empty((B, H, Tq, Tk), np.uint8))
    out = REF.attention_forward(q, k, v, weights=w, dropped=pd, keep=keep, **kw)
    assert 0 < keep.sum() < keep.size
    np.testing.assert_allclose(pd, w * keep / np.float32(0.6).astype(np.float64), rtol=1e-6)
    g = REF.attention_backward(dout, q, k, v, w, dropout_rate=0.4, dropped=pd, keep=keep)
    eps = 1e-6
    qp, qm = q.copy(), q.copy()
    qp[0, 1, 2, 1] += eps
    qm[0, 1, 2, 1] -= eps
    fp = np.sum(REF.attention_forward(qp, k, v, **kw) * dout)
    fm = np.sum(REF.attention_forward(qm, k, v, **kw) * dout)
    assert abs((fp - fm) / (2 * eps) - g[0][0, 1, 2, 1]) < 1e-7
    assert out.shape == (B, H, Tq, Dv)


def test_fully_masked_rows_are_zero_not_nan():
    q, k, v = qkv(1, 1, 3, 4, 2, 2)
    kv = np.zeros((1, 4), bool)
    w = np.empty((1, 1, 3, 4))
    out = REF.attention_forward(q, k, v, weights=w, key_valid=kv)
    assert np.all(out == 0) and np.all(w == 0)
    lse = np.empty((1, 1, 3))
    assert np.all(REF.flash_attention_forward(q, k, v, lse=lse, key_valid=kv) == 0)
    assert np.all(np.isneginf(lse))


def test_mask_shape_errors_are_clear():
    q, k, v = qkv(2, 1, 3, 4, 2, 2)
    with pytest.raises(ValueError, match=r"key_valid has shape \(2, 5\), expected \(2, 4\)"):
        REF.attention_forward(q, k, v, key_valid=np.ones((2, 5)))
    with pytest.raises(ValueError, match="shapes do not fit"):
        REF.attention_forward(q, k[:, :, :, :1], v)
    with pytest.raises(ValueError, match="bmm: shapes do not fit"):
        REF.bmm(np.ones((2, 3, 4)), np.ones((2, 5, 4)))


def test_additive_scores_finite_differences():
    r = rng(9)
    q, k = r.standard_normal((2, 3, 4)), r.standard_normal((2, 5, 4))
    ds = r.standard_normal((2, 3, 5))
    for inner, scale in ((False, r.standard_normal(4)), (True, np.array([0.7])),
                         (False, None), (True, None)):
        t = np.empty((2, 3, 5, 4))
        REF.additive_scores_forward(q, k, scale, None, t, inner=inner)
        dsc = None if scale is None else np.zeros_like(scale)
        dq, dk = REF.additive_scores_backward(ds, q, k, scale, t, dscale=dsc, inner=inner)
        eps = 1e-6

        def f(q_, k_, s_):
            return np.sum(REF.additive_scores_forward(q_, k_, s_, inner=inner) * ds)
        for x, g, name in ((q, dq, "q"), (k, dk, "k")) + (((scale, dsc, "s"),) if scale is not None else ()):
            i = (0,) * x.ndim
            xp, xm = x.copy(), x.copy()
            xp[i] += eps
            xm[i] -= eps
            args = {"q": (xp, k, scale), "k": (q, xp, scale), "s": (q, k, xp)}[name]
            argm = {"q": (xm, k, scale), "k": (q, xm, scale), "s": (q, k, xm)}[name]
            assert abs((f(*args) - f(*argm)) / (2 * eps) - g[i]) < 1e-7, (inner, name)


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["none", "key", "explicit", "causal"])
def test_numpy_attention_vs_torch_sdpa(kind):
    torch = pytest.importorskip("torch")
    B, H, Tq, Tk, D, Dv = 2, 3, 6, 6, 4, 5
    q, k, v = qkv(B, H, Tq, Tk, D, Dv, seed=12)
    kw = mask_args(kind, B, Tq, Tk)
    w = np.empty((B, H, Tq, Tk))
    out = REF.attention_forward(q, k, v, weights=w, **kw)
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    am = None
    if "key_valid" in kw:
        am = torch.tensor(kw["key_valid"])[:, None, None, :]
    if "mask" in kw:
        am = torch.tensor(kw["mask"])[:, None]
        am = am | ~am.any(-1, keepdim=True)   # torch gives NaN on empty rows: not compared
    to = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=am,
                                                          is_causal=kw.get("causal", False))
    rows = np.ones((B, 1, Tq, 1), bool)
    if "mask" in kw:
        rows = kw["mask"].any(-1)[:, None, :, None]
    np.testing.assert_allclose(np.where(rows, out, 0), np.where(rows, to.detach().numpy(), 0),
                               atol=1e-12)
    do = rng(13).standard_normal(out.shape) * rows
    to.backward(torch.tensor(do))
    g = REF.attention_backward(do, q, k, v, w)
    for a, t in zip(g, (tq, tk, tv)):
        np.testing.assert_allclose(a, t.grad.numpy(), atol=1e-12)


# ------------------------------------------------------------------ C against NumPy / float64
SHAPES = [(1, 1, 1, 1, 1, 1), (1, 2, 3, 5, 7, 2), (2, 3, 13, 17, 8, 16), (1, 1, 65, 129, 5, 3),
          (2, 1, 67, 131, 16, 17), (1, 2, 200, 260, 32, 32)]


def f32(*a):
    return tuple(x.astype(np.float32) for x in a)


@pytest.fixture(params=ISAS)
def isa(request):
    orig = _native.get_isa()
    _native.set_isa(request.param)
    yield request.param
    _native.set_isa(orig)


@needs_c
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (3, 7, 5, 9), (5, 33, 17, 65), (2, 64, 129, 31)])
@pytest.mark.parametrize("flags", [(False, False), (True, False), (False, True), (True, True)])
def test_c_bmm(isa, shape, flags):
    G, M, N, K = shape
    ta, tb = flags
    r = rng(20)
    a = r.standard_normal((G, K, M) if ta else (G, M, K)).astype(np.float32)
    b = r.standard_normal((G, N, K) if tb else (G, K, N)).astype(np.float32)
    ref = REF.bmm(a.astype(np.float64), b.astype(np.float64), trans_a=ta, trans_b=tb)
    outs = []
    for nt in (1, 2, 3):
        import fastgrad as fg
        fg.set_num_threads(nt)
        o = np.full((G, M, N), np.nan, np.float32)
        C.bmm(a, b, out=o, trans_a=ta, trans_b=tb)
        outs.append(o)
    np.testing.assert_allclose(outs[0], ref, rtol=1e-4, atol=1e-4 * math.sqrt(K))
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    c0 = r.standard_normal((G, M, N)).astype(np.float32)
    o = c0.copy()
    C.bmm(a, b, out=o, trans_a=ta, trans_b=tb, alpha=0.5, beta=2.0)
    np.testing.assert_allclose(o, 0.5 * ref + 2.0 * c0, rtol=1e-4, atol=1e-3 * math.sqrt(K))


def _run_threads(fn):
    import fastgrad as fg
    res = []
    for nt in (1, 2, 3):
        fg.set_num_threads(nt)
        res.append(fn())
    return res


@needs_c
@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("shape", SHAPES)
def test_c_softmax_matches_numpy(isa, kind, shape):
    B, H, Tq, Tk, _, _ = shape
    s = (rng(21).standard_normal((B, H, Tq, Tk)) * 3).astype(np.float32)
    kw = mask_args(kind, B, Tq, Tk)
    ref = REF.attention_softmax(s.astype(np.float64), None, 0.37, **kw)
    outs = _run_threads(lambda: C.attention_softmax(s, None, 0.37, **kw))
    np.testing.assert_allclose(outs[0], ref, rtol=2e-6, atol=1e-7)
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    dp = rng(22).standard_normal(s.shape).astype(np.float32)
    p = outs[0]
    ref_b = REF.attention_softmax_backward(dp.astype(np.float64), p.astype(np.float64), None, 0.37)
    bs = _run_threads(lambda: C.attention_softmax_backward(dp, p, None, 0.37))
    np.testing.assert_allclose(bs[0], ref_b, rtol=1e-5, atol=1e-6)
    for o in bs[1:]:
        np.testing.assert_array_equal(o, bs[0])


@needs_c
@pytest.mark.parametrize("kind", ["none", "key", "query", "causal"])
@pytest.mark.parametrize("shape", SHAPES)
def test_c_flash_matches_float64(isa, kind, shape):
    B, H, Tq, Tk, D, Dv = shape
    q, k, v = qkv(*shape, seed=23)
    kw = mask_args(kind, B, Tq, Tk)
    lse64 = np.empty((B, H, Tq))
    o64 = REF.flash_attention_forward(q, k, v, lse=lse64, **kw)
    q32, k32, v32 = f32(q, k, v)

    def fwd():
        lse = np.empty((B, H, Tq), np.float32)
        return C.flash_attention_forward(q32, k32, v32, None, lse, **kw), lse
    outs = _run_threads(fwd)
    np.testing.assert_allclose(outs[0][0], o64, rtol=1e-4, atol=2e-5)
    fin = np.isfinite(lse64)
    np.testing.assert_array_equal(np.isfinite(outs[0][1]), fin)
    np.testing.assert_allclose(outs[0][1][fin], lse64[fin], rtol=1e-5, atol=1e-5)
    for o, l in outs[1:]:
        np.testing.assert_array_equal(o, outs[0][0])
        np.testing.assert_array_equal(l, outs[0][1])
    do = rng(24).standard_normal(o64.shape)
    g64 = REF.flash_attention_backward(do, q, k, v, o64, lse64, **kw)
    o32, l32 = outs[0]
    do32 = do.astype(np.float32)
    gs = _run_threads(lambda: C.flash_attention_backward(do32, q32, k32, v32, o32, l32, **kw))
    for a, b in zip(gs[0], g64):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * math.sqrt(Tk))
    for g in gs[1:]:
        for a, b in zip(g, gs[0]):
            np.testing.assert_array_equal(a, b)


@needs_c
def test_c_bits_equal_on_every_isa():
    B, H, Tq, Tk, D, Dv = 2, 2, 70, 150, 8, 8
    q, k, v = f32(*qkv(B, H, Tq, Tk, D, Dv, seed=25))
    kv, qv, _ = masks(B, Tq, Tk)
    s = (rng(26).standard_normal((B, H, Tq, Tk))).astype(np.float32)
    orig = _native.get_isa()
    res = []
    try:
        for name in ISAS:
            _native.set_isa(name)
            lse = np.empty((B, H, Tq), np.float32)
            o = C.flash_attention_forward(q, k, v, None, lse, key_valid=kv, causal=True)
            p = C.attention_softmax(s, None, 0.5, key_valid=kv, query_valid=qv, causal=True)
            res.append((o, lse, p))
    finally:
        _native.set_isa(orig)
    # the vector exp and the GEMM tiles are the ISA's own: a few ulp apart, not bitwise
    for r in res[1:]:
        np.testing.assert_allclose(r[2], res[0][2], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(r[0], res[0][0], rtol=1e-5, atol=1e-6)


@needs_c
def test_c_falls_back_for_float64_and_views():
    q, k, v = qkv(1, 2, 5, 6, 3, 3)
    np.testing.assert_array_equal(C.attention_forward(q, k, v), REF.attention_forward(q, k, v))
    a = rng(0).standard_normal((3, 4, 6)).astype(np.float32)
    view = a[:, :, ::2]
    np.testing.assert_allclose(C.bmm(view, view, trans_b=True), REF.bmm(view, view, trans_b=True),
                               rtol=1e-5)


@needs_c
def test_c_attention_forward_backward_uses_c_and_matches(isa):
    B, H, Tq, Tk, D, Dv = 2, 4, 33, 33, 16, 16
    q, k, v = qkv(B, H, Tq, Tk, D, Dv, seed=27)
    kv, qv, am = masks(B, Tq, Tk)
    kw = dict(key_valid=kv, query_valid=qv, causal=True)
    w64 = np.empty((B, H, Tq, Tk))
    o64 = REF.attention_forward(q, k, v, weights=w64, **kw)
    q32, k32, v32 = f32(q, k, v)
    w = np.empty((B, H, Tq, Tk), np.float32)
    o = C.attention_forward(q32, k32, v32, weights=w, **kw)
    np.testing.assert_allclose(o, o64, rtol=1e-4, atol=1e-5)
    do = rng(28).standard_normal(o.shape)
    g64 = REF.attention_backward(do, q, k, v, w64)
    g = C.attention_backward(do.astype(np.float32), q32, k32, v32, w)
    for a, b in zip(g, g64):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
