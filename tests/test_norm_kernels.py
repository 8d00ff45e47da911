"""Native LayerNorm / BatchNorm (csrc/kernels/norm.c via fastgrad._native.kernels
and KernelsMixin) against NumpyOps and a float64 reference: shapes that hit
every tail of the 16-lane sums and 256-column tiles, with and without
gamma / beta, on every instruction-set path, special values, in-place use,
bitwise-identical results across thread counts and ISAs, and bad input."""
import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _native
from fastgrad.backend import NumpyOps

K = _native.module("kernels")
RT = _native.module("runtime")
pytestmark = pytest.mark.skipif(K is None or not hasattr(K, "norm_forward"),
                                reason="native kernels module (with norm) not built")

ISAS = RT.isa_supported() if RT is not None else []
SHAPES = [(1, 1), (1, 7), (3, 5), (2, 16), (7, 17), (17, 129), (5, 257), (128, 1000), (1000, 3), (9, 1025)]
KINDS = ["layernorm", "batchnorm"]
AFFINE = [(True, True), (False, False), (True, False), (False, True)]
EPS = 1e-3

if K is not None:
    from fastgrad.backend.native_kernels import KernelsMixin

    class Ops(KernelsMixin, NumpyOps):
        """NumpyOps with this family's C kernels."""
else:  # pragma: no cover
    Ops = NumpyOps

OPS = Ops()
REF = NumpyOps()


@pytest.fixture(params=ISAS)
def isa(request):
    orig = _native.get_isa()
    _native.set_isa(request.param)
    yield request.param
    _native.set_isa(orig)


def data(shape, seed=0, loc=1.0, scale=3.0):
    r = np.random.default_rng(seed)
    x = (r.standard_normal(shape) * scale + loc).astype(np.float32)
    dy = r.standard_normal(shape).astype(np.float32)
    c = int(np.prod(shape[1:]))
    g = (r.standard_normal(c) * 0.5 + 1).astype(np.float32)
    b = r.standard_normal(c).astype(np.float32)
    return x, dy, g, b


def nstat(kind, x):
    return x.shape[0] if kind == "layernorm" else x.size // x.shape[0]


# ------------------------------------------------------------- float64 reference
def ref64_forward(kind, x, g, b, eps):
    x2 = x.reshape(x.shape[0], -1).astype(np.float64)
    ax = 1 if kind == "layernorm" else 0
    mu = x2.mean(axis=ax, keepdims=True)
    var = ((x2 - mu) ** 2).mean(axis=ax, keepdims=True)
    rs = 1.0 / np.sqrt(var + eps)
    xh = (x2 - mu) * rs
    y = xh * (1.0 if g is None else g.astype(np.float64)) + (0.0 if b is None else b.astype(np.float64))
    return y.reshape(x.shape), mu.reshape(-1), rs.reshape(-1), xh


def ref64_backward(kind, dy, x, g, eps):
    _, mu, rs, xh = ref64_forward(kind, x, None, None, eps)
    d2 = dy.reshape(dy.shape[0], -1).astype(np.float64)
    gg = d2 * (1.0 if g is None else g.astype(np.float64))
    ax = 1 if kind == "layernorm" else 0
    rsk = rs[:, None] if kind == "layernorm" else rs[None, :]
    mg, mgx = gg.mean(axis=ax, keepdims=True), (gg * xh).mean(axis=ax, keepdims=True)
    dx = rsk * (gg - mg - xh * mgx)
    # dx cancels (e.g. BatchNorm over 2 rows): errors scale with the terms, not the result
    dx_scale = float(np.max(rsk * (np.abs(gg) + np.abs(mg) + np.abs(xh * mgx))))
    # LayerNorm's parameter gradients are float sums in row order (like NumPy's):
    # their error scales with the sum of the magnitudes of the terms
    sums_scale = (float(np.abs(d2 * xh).sum(axis=0).max()), float(np.abs(d2).sum(axis=0).max()))
    return dx.reshape(dy.shape), (d2 * xh).sum(axis=0), d2.sum(axis=0), dx_scale, sums_scale


def close(got, want, rtol, what, scale=None):
    want = np.asarray(want, dtype=np.float64)
    if scale is None:
        scale = float(np.max(np.abs(want))) if want.size else 0.0
    scale = max(scale, 1e-30)
    err = float(np.max(np.abs(got.astype(np.float64) - want))) if want.size else 0.0
    assert err <= rtol * scale, f"{what}: max abs error {err:.3g} > {rtol:g} * {scale:.3g}"


def fwd(ops, kind, x, g, b, eps=EPS, out=None):
    n = nstat(kind, x)
    m, r = np.full(n, np.nan, np.float32), np.full(n, np.nan, np.float32)
    y = getattr(ops, kind + "_forward")(x, g, b, eps, out=out, mean=m, rstd=r)
    return y, m, r


def bwd(ops, kind, dy, x, g, m, r, dx=None):
    return getattr(ops, kind + "_backward")(dy, x, g, m, r, dx=dx)


# ------------------------------------------------------------------ accuracy
@pytest.mark.parametrize("affine", AFFINE, ids=["gb", "none", "g", "b"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", KINDS)
def test_forward_backward_vs_reference(isa, kind, shape, affine):
    x, dy, g, b = data(shape, seed=sum(shape))
    g = g if affine[0] else None
    b = b if affine[1] else None
    y, m, r = fwd(OPS, kind, x, g, b)
    y64, mu64, rs64, _ = ref64_forward(kind, x, g, b, EPS)
    close(m, mu64, 1e-6, "mean")
    np.testing.assert_allclose(r, rs64, rtol=2e-7)
    close(y, y64, 4e-6, "y")
    yn, mn, rn = fwd(REF, kind, x, g, b)
    close(y, yn, 4e-6, "y vs NumpyOps")
    np.testing.assert_allclose(r, rn, rtol=2e-7)

    dx, dg, db = bwd(OPS, kind, dy, x, g, m, r)
    dx64, dg64, db64, dx_scale, (dg_scale, db_scale) = ref64_backward(kind, dy, x, g, EPS)
    close(dx, dx64, 2e-6, "dx", dx_scale)
    if g is None:
        assert dg is None
    else:
        close(dg, dg64, 2e-6, "dgamma", dg_scale)
    close(db, db64, 2e-6, "dbeta", db_scale)
    dxn, dgn, dbn = bwd(REF, kind, dy, x, g, mn, rn)
    close(dx, dxn, 2e-6, "dx vs NumpyOps", dx_scale)
    # the fast path (every output buffer given, as the layers call it) gives the same bits
    y2, m2, r2 = fwd(OPS, kind, x, g, b, out=np.empty_like(x))
    for a, a2 in ((y, y2), (m, m2), (r, r2)):
        np.testing.assert_array_equal(a, a2)
    bufs = dict(dx=np.empty_like(dy), dgamma=np.empty(x.size // x.shape[0], np.float32),
                dbeta=np.empty(x.size // x.shape[0], np.float32))
    dx2, dg2, db2 = getattr(OPS, kind + "_backward")(dy, x, g, m, r, **bufs)
    assert dx2 is bufs["dx"] and db2 is bufs["dbeta"] and dg2 is bufs["dgamma"]  # as NumpyOps returns it
    np.testing.assert_array_equal(dx2, dx)
    np.testing.assert_array_equal(db2, db)
    if g is not None:
        np.testing.assert_array_equal(dg2, dg)
    close(db, dbn, 1e-5, "dbeta vs NumpyOps")
    if g is not None:
        close(dg, dgn, 1e-5, "dgamma vs NumpyOps")


@pytest.mark.parametrize("kind", KINDS)
def test_large_offset_and_small_spread(kind):
    # the mean is accumulated in double: a large common offset keeps full accuracy
    x, dy, g, b = data((64, 96), seed=3, loc=1e3, scale=0.5)
    y, m, r = fwd(OPS, kind, x, g, b)
    y64, mu64, rs64, _ = ref64_forward(kind, x, g, b, EPS)
    close(y, y64, 2e-4, "y")  # x - mean loses ~log2(1e3/0.5) bits to the float32 inputs' rounding of mean
    np.testing.assert_allclose(r, rs64, rtol=1e-5)


@pytest.mark.parametrize("outlier", [1e2, 1e3, -3e3])
def test_batchnorm_first_row_outlier(outlier):
    # BatchNorm's one-pass variance is shifted by the first row: an outlier there
    # costs bits of double precision only, float32 accuracy remains
    x, dy, g, b = data((257, 40), seed=6, loc=0.0, scale=1.0)
    x[0] = outlier
    y, m, r = fwd(OPS, "batchnorm", x, g, b)
    y64, mu64, rs64, _ = ref64_forward("batchnorm", x, g, b, EPS)
    np.testing.assert_allclose(r, rs64, rtol=3e-7)
    close(m, mu64, 1e-6, "mean")
    close(y, y64, 4e-6, "y")


@pytest.mark.parametrize("kind", KINDS)
def test_constant_rows_and_columns(kind):
    x = np.full((6, 10), 2.5, np.float32)
    g = np.arange(10, dtype=np.float32)
    b = np.linspace(-1, 1, 10, dtype=np.float32)
    y, m, r = fwd(OPS, kind, x, g, b)
    np.testing.assert_array_equal(m, 2.5)
    np.testing.assert_allclose(r, 1 / np.sqrt(np.float32(EPS)), rtol=1e-6)
    np.testing.assert_array_equal(y, np.broadcast_to(b, x.shape))
    dx, dg, db = bwd(OPS, kind, np.ones_like(x), x, g, m, r)
    np.testing.assert_array_equal(dg, 0)
    np.testing.assert_array_equal(db, 6)
    assert np.all(np.isfinite(dx))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_layernorm_nan_and_inf_stay_in_their_row():
    x, dy, g, b = data((5, 33), seed=4)
    x[1, 7] = np.nan
    x[3, 0] = np.inf
    y, m, r = fwd(OPS, "layernorm", x, g, b)
    yn, mn, rn = fwd(REF, "layernorm", x, g, b)
    for i in (1, 3):
        assert np.all(np.isnan(y[i])), i
    ok = [0, 2, 4]
    close(y[ok], yn[ok], 4e-6, "finite rows")
    assert np.isnan(m[1]) and np.isnan(r[1])


def test_batchnorm_nan_stays_in_its_column():
    x, dy, g, b = data((40, 20), seed=5)
    x[11, 3] = np.nan
    x[0, 5] = np.nan  # the first row is the shift of the one-pass variance
    y, m, r = fwd(OPS, "batchnorm", x, g, b)
    for j in (3, 5):
        assert np.all(np.isnan(y[:, j])) and np.isnan(m[j]) and np.isnan(r[j]), j
    keep = [j for j in range(20) if j not in (3, 5)]
    yn, _, _ = fwd(REF, "batchnorm", x, g, b)
    close(y[:, keep], yn[:, keep], 4e-6, "other columns")


# ------------------------------------------------ determinism (threads, ISAs)
# (4096, 32) / (2000, 48) / (4096, 33): BatchNorm's column tiles of exactly 32
# (a specialised copy) next to generic ones, depending on the threads
@pytest.mark.parametrize("shape", [(128, 1000), (300, 257), (4096, 33), (4096, 32), (2000, 48), (1000, 3),
                                   (64, 2048)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", KINDS)
def test_bitwise_across_threads_and_isas(kind, shape):
    x, dy, g, b = data(shape, seed=7)
    results = []
    orig = _native.get_isa()
    try:
        for isa in ISAS:
            _native.set_isa(isa)
            for nt in (1, 2, 3):
                fg.set_num_threads(nt)
                y, m, r = fwd(OPS, kind, x, g, b)
                dx, dg, db = bwd(OPS, kind, dy, x, g, m, r)
                results.append(((isa, nt), [y, m, r, dx, dg, db]))
    finally:
        _native.set_isa(orig)
    (k0, first) = results[0]
    for k, arrs in results[1:]:
        for name, a, a0 in zip(["y", "mean", "rstd", "dx", "dgamma", "dbeta"], arrs, first):
            assert np.array_equal(a.view(np.uint32), a0.view(np.uint32)), f"{name}: {k} differs from {k0}"


# ------------------------------------------------------- calling conventions
@pytest.mark.parametrize("kind", KINDS)
def test_in_place_and_given_outputs(kind):
    x, dy, g, b = data((33, 70), seed=8)
    y_ref, m_ref, r_ref = fwd(OPS, kind, x, g, b)
    xc = x.copy()
    y, m, r = fwd(OPS, kind, xc, g, b, out=xc)
    assert y is xc
    np.testing.assert_array_equal(y, y_ref)
    dx_ref, dg_ref, db_ref = bwd(OPS, kind, dy, x, g, m_ref, r_ref)
    dyc = dy.copy()
    dg, db = np.full(70, np.nan, np.float32), np.full(70, np.nan, np.float32)
    out = getattr(OPS, kind + "_backward")(dyc, x, g, m_ref, r_ref, dx=dyc, dgamma=dg, dbeta=db)
    assert out[0] is dyc and out[1] is dg and out[2] is db
    np.testing.assert_array_equal(dyc, dx_ref)
    np.testing.assert_array_equal(dg, dg_ref)
    np.testing.assert_array_equal(db, db_ref)


@pytest.mark.parametrize("kind", KINDS)
def test_float64_statistics_buffers(kind):
    x, dy, g, b = data((12, 9), seed=9)
    n = nstat(kind, x)
    m64, r64 = np.zeros(n), np.zeros(n)
    y = getattr(OPS, kind + "_forward")(x, g, b, EPS, out=np.empty_like(x), mean=m64, rstd=r64)
    y32, m32, r32 = fwd(OPS, kind, x, g, b)
    np.testing.assert_array_equal(y, y32)
    np.testing.assert_array_equal(m64, m32.astype(np.float64))
    np.testing.assert_array_equal(r64, r32.astype(np.float64))
    dx, dg, db = getattr(OPS, kind + "_backward")(dy, x, g, m64, r64, dx=np.empty_like(dy),
                                                  dgamma=np.empty(9, np.float32),
                                                  dbeta=np.empty(9, np.float32))  # cast like NumpyOps
    dx2, dg2, db2 = bwd(OPS, kind, dy, x, g, m32, r32)
    np.testing.assert_array_equal(dx, dx2)
    np.testing.assert_array_equal(dg, dg2)


def test_layernorm_3d_input_matches_numpy_view():
    # NumpyOps normalises over everything after axis 0; the C path uses the same view
    x, dy, g, b = data((4, 3, 10), seed=10)
    y, m, r = fwd(OPS, "layernorm", x, g, b)
    yn, mn, rn = fwd(REF, "layernorm", x, g, b)
    assert y.shape == x.shape
    close(y, yn, 4e-6, "y")
    dx, dg, db = bwd(OPS, "layernorm", dy, x, g, m, r)
    dxn, dgn, dbn = bwd(REF, "layernorm", dy, x, g, mn, rn)
    close(dx, dxn, 2e-5, "dx")
    close(dg, dgn, 1e-5, "dgamma")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("kind", KINDS)
def test_fallbacks_match_numpy(kind):
    x, dy, g, b = data((10, 6), seed=11)
    # float64, non-contiguous, and a broadcasting gamma go to NumpyOps
    for xx, gg in [(x.astype(np.float64), g), (np.asfortranarray(x), g), (x, g.reshape(1, -1))]:
        y, m, r = fwd(OPS, kind, xx, gg, b)
        yn, mn, rn = fwd(REF, kind, xx, gg, b)
        np.testing.assert_array_equal(y, yn)
    empty = np.zeros((0, 6), np.float32)
    assert getattr(OPS, kind + "_forward")(empty, g, b, EPS).shape == (0, 6)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("batch", [False, True])
def test_binding_rejects_bad_input(batch):
    x, dy, g, b = data((8, 5), seed=12)
    y = np.empty_like(x)
    n = 5 if batch else 8
    m, r = np.empty(n, np.float32), np.empty(n, np.float32)
    K.norm_forward(x, g, b, EPS, y, m, r, batch, 1)
    with pytest.raises(TypeError, match="float32"):
        K.norm_forward(x.astype(np.float64), g, b, EPS, y, m, r, batch, 1)
    with pytest.raises(TypeError, match="C-contiguous"):
        K.norm_forward(np.asfortranarray(x), g, b, EPS, y, m, r, batch, 1)
    with pytest.raises(ValueError, match="gamma"):
        K.norm_forward(x, g[:4], b, EPS, y, m, r, batch, 1)
    with pytest.raises(ValueError, match="mean"):
        K.norm_forward(x, g, b, EPS, y, np.empty(n + 1, np.float32), r, batch, 1)
    with pytest.raises(ValueError, match="same shape"):
        K.norm_forward(x, g, b, EPS, np.empty((5, 8), np.float32), m, r, batch, 1)
    with pytest.raises(ValueError, match="overlaps"):
        K.norm_forward(x, g, b, EPS, y, m, m, batch, 1)
    with pytest.raises(ValueError, match="overlaps"):
        K.norm_forward(x, g, b, EPS, y, y.reshape(-1)[:n], r, batch, 1)
    ro = np.empty_like(x)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        K.norm_forward(x, g, b, EPS, ro, m, r, batch, 1)
    dx = np.empty_like(x)
    dg, db = np.empty(5, np.float32), np.empty(5, np.float32)
    K.norm_backward(dy, x, g, m, r, dx, dg, db, batch, 1)
    with pytest.raises(ValueError, match="overlaps"):
        K.norm_backward(dy, x, g, m, r, x, dg, db, batch, 1)
    with pytest.raises(ValueError, match="same shape"):
        K.norm_backward(dy, x[:4], g, m, r, dx, dg, db, batch, 1)
    with pytest.raises(ValueError, match="rstd"):
        K.norm_backward(dy, x, g, m, r[:-1], dx, dg, db, batch, 1)
    with pytest.raises(ValueError, match="overlaps"):
        K.norm_backward(dy, x, g, m, r, dx, dg, dg, batch, 1)
