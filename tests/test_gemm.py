"""GEMM family (csrc/gemm, fastgrad._native.gemm, backend/native_gemm.py).

Every product is checked against a float64 reference with the rigorous
forward-error bound of a length-K dot product, |C - ref| <= (K + 2) eps
(|alpha| |op(A)| |op(B)| + |beta| |C0|), which never fails on correct code and
catches any wrong element. All C paths (path hook 1: packed driver, 2: the
unpacked path along N, 3: the unpacked path along M for few columns) run on
every instruction set; thread counts 1/2/3 must agree bitwise.
"""
import itertools
import math

import numpy as np
import pytest

from fastgrad import _native

G = _native.module("gemm")
RT = _native.module("runtime")
pytestmark = pytest.mark.skipif(G is None, reason="fastgrad._native.gemm not built")
ISAS = RT.isa_supported() if RT is not None else []
EPS = float(np.finfo(np.float32).eps)
ACT = {"linear": 0, "relu": 1, "sigmoid": 2, "tanh": 3, "gelu": 4, "gelu_tanh": 5}


@pytest.fixture(params=ISAS)
def isa(request):
    orig = _native.get_isa()
    _native.set_isa(request.param)
    yield request.param
    _native.set_isa(orig)


def rng(seed=0):
    return np.random.default_rng(seed)


def operands(r, M, N, K, ta, tb, dtype=np.float32):
    A = r.standard_normal((K, M) if ta else (M, K)).astype(dtype)
    B = r.standard_normal((N, K) if tb else (K, N)).astype(dtype)
    return A, B


def op(X, t):
    return X.T if t else X


def check_gemm(C, A, B, C0, ta, tb, alpha, beta):
    """C == alpha op(A) op(B) + beta C0 within the rigorous float32 bound."""
    A64, B64 = op(A, ta).astype(np.float64), op(B, tb).astype(np.float64)
    ref = alpha * (A64 @ B64)
    mag = abs(alpha) * (np.abs(A64) @ np.abs(B64))
    if beta != 0.0:
        ref = ref + beta * C0.astype(np.float64)
        mag = mag + abs(beta) * np.abs(C0.astype(np.float64))
    K = A64.shape[1]
    bound = (K + 3) * EPS * mag + 1e-30
    err = np.abs(C.astype(np.float64) - ref)
    bad = err > bound
    assert not bad.any(), (f"{int(bad.sum())} elements out of bound; first at "
                           f"{np.argwhere(bad)[0]}: got {C[tuple(np.argwhere(bad)[0])]}, "
                           f"want {ref[tuple(np.argwhere(bad)[0])]}")


def edge_sizes():
    """Sizes around every tile/blocking edge of every ISA path built here."""
    s = {1, 2, 3, 7, 8, 9, 13, 15, 16, 17, 31, 33, 127, 129}
    for name in ISAS:
        _native.set_isa(name)
        mr, nr, mc, kc, nc = G.tile()
        s |= {mr - 1, mr, mr + 1, 2 * mr + 1, nr - 1, nr, nr + 1, mc + 1, kc - 1, kc + 1}
    if ISAS:
        _native.set_isa(ISAS[-1])
    return sorted(x for x in s if x > 0)


# ---------------------------------------------------------------- products
@pytest.mark.parametrize("path", [0, 1, 2, 3])
def test_all_transposes_sizes_alpha_beta(isa, path):
    """All four transpose combinations x alpha/beta x edge sizes, on both C paths."""
    r = rng(1)
    sizes = edge_sizes()
    combos = list(itertools.product(sizes, repeat=3))
    r.shuffle(combos)
    combos = [(1, 1, 1), (1, 300, 5), (300, 1, 5), (5, 3, 1000), (129, 10, 128)] + combos[:40]
    for i, (M, N, K) in enumerate(combos):
        ta, tb = i % 2, (i // 2) % 2
        alpha, beta = [(1.0, 0.0), (0.5, 0.0), (1.0, 1.0), (-1.5, 0.25)][i % 4]
        A, B = operands(r, M, N, K, ta, tb)
        C0 = r.standard_normal((M, N)).astype(np.float32)
        C = C0.copy()
        G.gemm(A, B, C, ta, tb, alpha, beta, 2, path)
        check_gemm(C, A, B, C0, ta, tb, alpha, beta)


@pytest.mark.parametrize("ta,tb", list(itertools.product([0, 1], repeat=2)))
def test_transposes_blocking_edges(isa, ta, tb):
    """M, N, K just past MC, NC, KC multiples: several blocks in every loop."""
    mr, nr, mc, kc, nc = G.tile()
    r = rng(2)
    for M, N, K in [(mc + 1, 2 * nr + 3, 2 * kc + 1), (2 * mr + 1, nc + 5, kc + 3), (mc - 1, nr - 1, kc - 1)]:
        A, B = operands(r, M, N, K, ta, tb)
        C0 = r.standard_normal((M, N)).astype(np.float32)
        C = C0.copy()
        G.gemm(A, B, C, ta, tb, 1.0, 0.5, 2)
        check_gemm(C, A, B, C0, ta, tb, 1.0, 0.5)


@pytest.mark.parametrize("ta,tb", list(itertools.product([0, 1], repeat=2)))
def test_skinny_paths_agree_bitwise(isa, ta, tb):
    """Few columns (the 10-class output layer): the unpacked path along M
    (path 3, gemm_cols.h) against the one along N (path 2) and the reference.
    Each element is one FMA chain over k in order on both, so they agree
    bitwise; M crosses the panel edges (1 .. 33, 127 .. 129), N 1 .. 17 and
    31/33 (several column groups), K 0 .. 130."""
    r = rng(12 + 2 * ta + tb)
    Ms = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 47, 127, 128, 129]
    Ns = list(range(1, 18)) + [31, 33]
    Ks = [0, 1, 2, 5, 8, 9, 16, 17, 31, 64, 127, 128, 130]
    combos = list(itertools.product(Ms, Ns, Ks))
    r.shuffle(combos)
    combos = [(128, 10, 128), (129, 10, 1), (31, 17, 130), (1, 1, 1)] + combos[:70]
    for i, (M, N, K) in enumerate(combos):
        alpha, beta = [(1.0, 0.0), (-1.5, 0.25), (0.5, 0.0), (1.0, 1.0)][i % 4]
        A, B = operands(r, M, N, K, ta, tb)
        C0 = r.standard_normal((M, N)).astype(np.float32)
        C2, C3 = C0.copy(), C0.copy()
        G.gemm(A, B, C2, ta, tb, alpha, beta, 2, 2)
        G.gemm(A, B, C3, ta, tb, alpha, beta, 2, 3)
        check_gemm(C3, A, B, C0, ta, tb, alpha, beta)
        assert np.array_equal(C2, C3), (M, N, K, ta, tb)


def test_skinny_strided_views_and_specials(isa):
    """Path 3 with leading dimensions > the widths (A^T read in place) and
    inf / NaN in A and B."""
    r = rng(13)
    for M, N, K, ta in [(40, 10, 33, 1), (40, 10, 33, 0), (129, 7, 128, 1), (17, 16, 5, 0)]:
        bigA = r.standard_normal((K + 3, M + 5) if ta else (M + 3, K + 5)).astype(np.float32)
        A = bigA[1:1 + (K if ta else M), 2:2 + (M if ta else K)]
        bigB = r.standard_normal((K + 2, N + 9)).astype(np.float32)
        B = bigB[1:1 + K, 3:3 + N]
        bigC = np.full((M + 2, N + 6), 7.0, np.float32)
        C = bigC[1:1 + M, 2:2 + N]
        G.gemm(A, B, C, ta, 0, 1.0, 0.0, 1, 3)
        check_gemm(C, A, B, C, ta, 0, 1.0, 0.0)
        mask = np.ones(bigC.shape, bool)
        mask[1:1 + M, 2:2 + N] = False
        assert (bigC[mask] == 7.0).all()
    A = np.ones((20, 6), np.float32)
    B = np.ones((6, 10), np.float32)
    A[3, 2], A[17, 0], B[4, 9] = np.inf, np.nan, -np.inf
    for ta in (0, 1):
        Aop = np.ascontiguousarray(A.T) if ta else A
        C = np.empty((20, 10), np.float32)
        with np.errstate(all="ignore"):
            G.gemm(Aop, B, C, ta, 0, 1.0, 0.0, 1, 3)
            ref = A.astype(np.float64) @ B.astype(np.float64)
        np.testing.assert_array_equal(C, ref.astype(np.float32))


def test_large_product_by_vector_probe(isa):
    """A big GEMM checked without a second GEMM: C t == A (B t)."""
    r = rng(3)
    M, N, K = 700, 1100, 900
    A, B = operands(r, M, N, K, 0, 0)
    C = np.empty((M, N), np.float32)
    G.gemm(A, B, C, 0, 0, 1.0, 0.0, 2)
    t = r.standard_normal(N)
    lhs = C.astype(np.float64) @ t
    rhs = A.astype(np.float64) @ (B.astype(np.float64) @ t)
    scale = np.abs(A).astype(np.float64) @ (np.abs(B).astype(np.float64) @ np.abs(t))
    assert np.all(np.abs(lhs - rhs) <= (K + 3) * EPS * scale)


@pytest.mark.parametrize("M, K", [(401, 1300), (576, 1031)])
def test_transposed_a_bigger_than_l2(isa, M, K):
    """op(A) = A^T with M K past the L2 threshold (the driver prefetches each
    next A block's rows, across MC blocks and K blocks): right values, and
    the bits of 1, 2 and 3 threads agree."""
    r = rng(7)
    N = 45
    A, B = operands(r, M, N, K, 1, 0)
    C0 = r.standard_normal((M, N)).astype(np.float32)
    outs = []
    for nt in (1, 2, 3):
        C = C0.copy()
        G.gemm(A, B, C, 1, 0, 1.0, 0.25, nt)
        outs.append(C)
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    check_gemm(outs[0], A, B, C0, 1, 0, 1.0, 0.25)


@pytest.mark.parametrize("shape", [(300, 200, 300), (50, 700, 300), (128, 10, 128), (5, 40, 7),
                                   (128, 784, 128), (784, 128, 128), (128, 128, 10), (129, 3, 40)])
def test_bitwise_across_threads(isa, shape):
    M, N, K = shape
    r = rng(4)
    for ta, tb in itertools.product([0, 1], repeat=2):
        A, B = operands(r, M, N, K, ta, tb)
        C0 = r.standard_normal((M, N)).astype(np.float32)
        outs = []
        for nt in (1, 2, 3):
            C = C0.copy()
            G.gemm(A, B, C, ta, tb, 0.75, 0.5, nt)
            outs.append(C)
        assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2]), (shape, ta, tb)
        check_gemm(outs[0], A, B, C0, ta, tb, 0.75, 0.5)


def test_leading_dimension_views(isa):
    """a, b and out may be row views into larger matrices; out's surroundings stay untouched."""
    r = rng(5)
    for path, (M, N, K) in itertools.product([0, 1, 2, 3], [(7, 9, 11), (70, 50, 300), (3, 40, 5), (37, 10, 19)]):
        for ta, tb in itertools.product([0, 1], repeat=2):
            bigA = r.standard_normal((K + 9, M + 9) if ta else (M + 9, K + 9)).astype(np.float32)
            bigB = r.standard_normal((N + 5, K + 6) if tb else (K + 5, N + 6)).astype(np.float32)
            A = bigA[2:2 + (K if ta else M), 3:3 + (M if ta else K)]
            B = bigB[1:1 + (N if tb else K), 4:4 + (K if tb else N)]
            bigC = r.standard_normal((M + 4, N + 7)).astype(np.float32)
            keep = bigC.copy()
            C = bigC[2:2 + M, 3:3 + N]
            C0 = C.copy()
            G.gemm(A, B, C, ta, tb, 1.0, 1.0, 2, path)
            check_gemm(C, A, B, C0, ta, tb, 1.0, 1.0)
            mask = np.ones(bigC.shape, bool)
            mask[2:2 + M, 3:3 + N] = False
            assert np.array_equal(bigC[mask], keep[mask])


@pytest.mark.parametrize("path", [0, 1, 2, 3])
def test_beta_zero_ignores_nan_in_out(isa, path):
    r = rng(6)
    for M, N, K in [(5, 3, 4), (40, 70, 300)]:
        A, B = operands(r, M, N, K, 0, 0)
        C = np.full((M, N), np.nan, np.float32)
        G.gemm(A, B, C, 0, 0, 1.0, 0.0, 2, path)
        assert np.isfinite(C).all()
        C[:] = np.nan
        G.gemm(A, B, C, 0, 0, 1.0, 1.0, 2, path)  # beta != 0 reads C
        assert np.isnan(C).all()


def test_degenerate_sizes(isa):
    r = rng(7)
    # K == 0: C = beta C (alpha op(A) op(B) is an empty sum)
    C0 = r.standard_normal((4, 5)).astype(np.float32)
    C = C0.copy()
    G.gemm(np.empty((4, 0), np.float32), np.empty((0, 5), np.float32), C, 0, 0, 1.0, 2.0, 1)
    np.testing.assert_array_equal(C, 2.0 * C0)
    C[:] = np.nan
    G.gemm(np.empty((4, 0), np.float32), np.empty((0, 5), np.float32), C, 0, 0, 1.0, 0.0, 1)
    np.testing.assert_array_equal(C, 0.0)
    # M == 0 or N == 0: nothing to do
    G.gemm(np.empty((0, 3), np.float32), np.ones((3, 5), np.float32), np.empty((0, 5), np.float32))
    G.gemm(np.ones((4, 3), np.float32), np.ones((3, 0), np.float32), np.empty((4, 0), np.float32))
    # dense with K == 0: y = act(b)
    b = r.standard_normal(6).astype(np.float32)
    y = np.empty((3, 6), np.float32)
    G.dense_forward(np.empty((3, 0), np.float32), np.empty((0, 6), np.float32), b, ACT["relu"], y)
    np.testing.assert_array_equal(y, np.broadcast_to(np.maximum(b, 0), (3, 6)))


def test_special_values_propagate(isa):
    """inf and NaN in the inputs flow through like IEEE arithmetic."""
    A = np.ones((3, 4), np.float32)
    B = np.ones((4, 2), np.float32)
    A[1, 2] = np.inf
    A[2, 0] = np.nan
    for path in (1, 2, 3):
        C = np.empty((3, 2), np.float32)
        G.gemm(A, B, C, 0, 0, 1.0, 0.0, 1, path)
        assert np.array_equal(C[0], [4, 4]) and np.isposinf(C[1]).all() and np.isnan(C[2]).all()


# ---------------------------------------------------------------- validation
def test_errors_name_the_op_and_shapes():
    a = np.ones((3, 4), np.float32)
    b = np.ones((4, 5), np.float32)
    with pytest.raises(TypeError, match="gemm: a must be float32"):
        G.gemm(a.astype(np.float64), b, np.empty((3, 5), np.float32))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        G.gemm([[1.0]], b, np.empty((3, 5), np.float32))
    with pytest.raises(ValueError, match="2-D"):
        G.gemm(np.ones(3, np.float32), b, np.empty((3, 5), np.float32))
    with pytest.raises(ValueError, match=r"shapes do not match.*\(3, 4\).*\(5, 4\)"):
        G.gemm(a, np.ones((5, 4), np.float32), np.empty((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"out is \(3, 4\)"):
        G.gemm(a, b, np.empty((3, 4), np.float32))
    with pytest.raises(ValueError, match="unit stride"):
        G.gemm(np.ones((4, 3), np.float32).T, b, np.empty((3, 5), np.float32))
    with pytest.raises(ValueError, match="read-only"):
        out = np.empty((3, 5), np.float32)
        out.flags.writeable = False
        G.gemm(a, b, out)
    with pytest.raises(ValueError, match="dense_forward: shapes do not match"):
        G.dense_forward(a, np.ones((3, 5), np.float32), None, 0, np.empty((3, 5), np.float32))
    with pytest.raises(ValueError, match="b has shape"):
        G.dense_forward(a, b, np.ones(4, np.float32), 0, np.empty((3, 5), np.float32))
    with pytest.raises(ValueError, match="activation code"):
        G.dense_forward(a, b, None, G.ACT_COUNT, np.empty((3, 5), np.float32))


def test_aliasing_refused():
    big = np.ones((8, 8), np.float32)
    a = big[:4, :4]
    b = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match=r"gemm: out \(4, 4\) overlaps an input"):
        G.gemm(a, b, big[2:6, 2:6])
    with pytest.raises(ValueError, match="overlaps"):
        G.gemm(b, b, b)
    with pytest.raises(ValueError, match="overlaps"):
        G.dense_forward(a, b, None, 0, big[3:7, 0:4])
    with pytest.raises(ValueError, match="preact .* overlaps out"):
        y = np.empty((4, 4), np.float32)
        G.dense_forward(a, b, None, ACT["relu"], y, y)
    # disjoint views of one buffer are fine
    G.gemm(a, b, big[4:8, 4:8])
    np.testing.assert_array_equal(big[4:8, 4:8], 4.0)


# ---------------------------------------------------------------- fused dense
def erfc64(v):
    return np.frompyfunc(math.erfc, 1, 1)(v).astype(np.float64)


def sigmoid64(v):
    e = np.exp(-np.abs(v))
    return np.where(v >= 0, 1 / (1 + e), e / (1 + e))


def act64(name, z):
    """float64 references written without cancellation in either tail."""
    z = z.astype(np.float64)
    if name == "linear":
        return z
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "sigmoid":
        return sigmoid64(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "gelu":
        return 0.5 * z * erfc64(-z / math.sqrt(2.0))
    if name == "gelu_tanh":
        return z * sigmoid64(2 * math.sqrt(2.0 / math.pi) * (z + 0.044715 * z ** 3))
    raise ValueError(name)


def ulp_limit(name, z):
    """Allowed error in ulps: ~2-3 for the exp-based functions; gelu's erfc tail
    takes two exps and a fitted form; gelu_tanh's inner cubic is formed in
    float32, so its error grows with the formula's condition number."""
    z = np.abs(z.astype(np.float64))
    if name in ("linear", "relu"):
        return np.zeros_like(z)
    if name in ("sigmoid", "tanh"):
        return np.full_like(z, 3.0)
    if name == "gelu":
        return np.where(z < 10, 8.0, 10.0)
    return 3.0 + 2.0 * (1.0 + 2 * z * 1.6 * (1 + 0.134 * z * z))


def ulps(y, ref):
    """Error in float32 ulps of the reference (subnormal results: in units of the smallest normal ulp)."""
    ref32 = np.abs(ref).astype(np.float32)
    sp = np.spacing(np.maximum(ref32, np.finfo(np.float32).tiny))
    return np.abs(y.astype(np.float64) - ref) / sp


@pytest.mark.parametrize("name", list(ACT))
def test_dense_forward_matches_reference(isa, name):
    """y = act(x w + b), z = x w + b stored on the side; y checked against act64(z)."""
    r = rng(8)
    for M, N, K in [(1, 1, 1), (7, 9, 3), (128, 10, 128), (33, 70, 600), (130, 129, 17), (45, 11, 9),
                    (70, 5, 40)]:
        x = r.standard_normal((M, K)).astype(np.float32)
        w = (r.standard_normal((K, N)) / math.sqrt(K)).astype(np.float32)
        b = r.standard_normal(N).astype(np.float32)
        y = np.full((M, N), np.nan, np.float32)
        z = np.full((M, N), np.nan, np.float32)
        G.dense_forward(x, w, b, ACT[name], y, z, 2)
        # the pre-activation is a GEMM + bias
        zr = x.astype(np.float64) @ w.astype(np.float64) + b
        mag = np.abs(x).astype(np.float64) @ np.abs(w).astype(np.float64) + np.abs(b)
        assert np.all(np.abs(z - zr) <= (K + 3) * EPS * mag)
        # the epilogue's activation of exactly that z
        ref = act64(name, z)
        ok = np.abs(ref) >= np.finfo(np.float32).tiny
        assert np.all(ulps(y, ref)[ok] <= ulp_limit(name, z)[ok]), name
        # without preact and without bias: same y as the unfused sequence
        y2 = np.empty_like(y)
        G.dense_forward(x, w, None, ACT[name], y2, None, 1)
        z2 = np.empty_like(y)
        G.gemm(x, w, z2, 0, 0, 1.0, 0.0, 1)
        ref2 = act64(name, z2)
        ok = np.abs(ref2) >= np.finfo(np.float32).tiny
        assert np.all(ulps(y2, ref2)[ok] <= ulp_limit(name, z2)[ok]), name


@pytest.mark.parametrize("name", list(ACT))
def test_epilogue_accuracy_sweep(isa, name):
    """The epilogue's activation over a wide sweep of inputs: x @ I + 0 == x exactly."""
    x = np.concatenate([np.linspace(-40, 40, 4001), np.linspace(-3, 3, 3001),
                        np.geomspace(1e-6, 100, 500), -np.geomspace(1e-6, 100, 500)]).astype(np.float32)
    n = 64
    x = np.resize(x, (len(x) + n - 1) // n * n).reshape(-1, n)
    eye = np.eye(n, dtype=np.float32)
    y = np.empty_like(x)
    G.dense_forward(x, eye, None, ACT[name], y, None, 1)
    ref = act64(name, x)
    ok = np.abs(ref) >= np.finfo(np.float32).tiny
    e = ulps(y, ref)[ok] / ulp_limit(name, x)[ok].clip(min=1e-9)
    assert e.max() <= 1.0, (name, float(x[ok][np.argmax(e)]), float(e.max()))
    # results in the subnormal range: within a few subnormal spacings (or flushed to zero)
    assert np.all(np.abs(y[~ok].astype(np.float64) - ref[~ok]) <= np.finfo(np.float32).tiny)


def test_epilogue_special_values(isa):
    """One value per row (x (n, 1) @ [[1]]): huge, infinite and NaN inputs."""
    x = np.array([[0.0, -0.0, 1e-30, -1e-30, 30, -30, 100, -100, 1e30, -1e30, 88.0, -88.0, 89.0,
                   np.inf, -np.inf, np.nan]], np.float32).T
    one = np.ones((1, 1), np.float32)
    y = np.empty_like(x)
    with np.errstate(all="ignore"):
        for name in ACT:
            for path_rows in (x, np.repeat(x, 40, axis=1)[:, :1].copy()):
                G.dense_forward(path_rows, one, None, ACT[name], y, None, 1)
                assert np.isnan(y[15, 0]), name            # NaN propagates
                assert np.isfinite(y[:13]).all(), name      # finite in -> finite out
                ref = act64(name, x[:15])
                ref = np.where(np.isnan(ref), 0.0, ref)     # -inf * 0 in the gelu references
                np.testing.assert_allclose(y[:15], ref, rtol=1e-6, atol=1e-37, err_msg=name)


def unfused_act(name, z):
    """The element-wise kernels family's activation (NativeOps.relu/sigmoid/...,
    i.e. fg_act_forward) of a contiguous float32 array."""
    from fastgrad.backend import NativeOps
    if name == "linear":
        return z.copy()
    return getattr(NativeOps(), name)(z)


@pytest.mark.skipif(_native.module("kernels") is None, reason="kernels module not built")
@pytest.mark.parametrize("name", list(ACT))
def test_fused_equals_unfused_sequence(isa, name):
    """Fused epilogue == gemm, + b, then the kernels family's activation, BITWISE:
    the epilogue runs the same vector code (csrc/kernels/fg_act_vec.h) with the
    same vector grouping, on every ISA, for every thread count; the shapes take
    both the packed driver and the unpacked path."""
    r = rng(9)
    for M, N, K in [(1, 1, 1), (3, 5, 7), (37, 45, 300), (128, 10, 128), (17, 129, 33),
                    (128, 128, 784), (64, 1000, 9), (1000, 3, 16), (33, 13, 20), (129, 7, 130),
                    (17, 16, 64), (40, 3, 33), (129, 11, 64), (16, 9, 32)]:
        x = (3 * r.standard_normal((M, K))).astype(np.float32)
        w = (r.standard_normal((K, N)) / math.sqrt(K)).astype(np.float32)
        b = r.standard_normal(N).astype(np.float32)
        z = np.empty((M, N), np.float32)
        G.gemm(x, w, z, 0, 0, 1.0, 0.0, 1)
        z += b
        ref = unfused_act(name, z)
        for nt in (1, 2, 3):
            y = np.full((M, N), np.nan, np.float32)
            zf = np.full((M, N), np.nan, np.float32)
            G.dense_forward(x, w, b, ACT[name], y, zf, nt)
            assert np.array_equal(zf, z), (name, M, N, K, nt)
            assert np.array_equal(y.view(np.int32), ref.view(np.int32)), (name, M, N, K, nt)


@pytest.mark.skipif(_native.module("kernels") is None, reason="kernels module not built")
@pytest.mark.parametrize("name", [n for n in ACT if n != "linear"])
def test_fused_strided_output_equals_rowwise_unfused(isa, name):
    """out with a leading dimension > N: each row equals the kernels' activation of that row."""
    r = rng(11)
    for M, N, K in [(5, 13, 9), (40, 37, 70), (130, 21, 300), (40, 10, 70)]:
        x = (3 * r.standard_normal((M, K))).astype(np.float32)
        w = (r.standard_normal((K, N)) / math.sqrt(K)).astype(np.float32)
        b = r.standard_normal(N).astype(np.float32)
        big = np.full((M, N + 7), np.nan, np.float32)
        y = big[:, :N]
        z = np.empty((M, N), np.float32)
        for nt in (1, 2):
            G.dense_forward(x, w, b, ACT[name], y, z, nt)
            ref = np.stack([unfused_act(name, z[i].copy()) for i in range(M)])
            assert np.array_equal(y.view(np.int32), ref.view(np.int32)), (name, M, N, K, nt)
            assert np.isnan(big[:, N:]).all()


@pytest.mark.skipif(_native.module("kernels") is None, reason="kernels module not built")
def test_fused_equals_unfused_special_values(isa):
    """Specials (inf, NaN, signed zeros, tails, subnormal results) give the same bits."""
    v = np.array([0.0, -0.0, 1e-30, -1e-30, 30, -30, 100, -100, 1e30, -1e30, 88.0, -88.0, 89.0,
                  -14.0, -9.5, -5.0, -0.6, -0.4, 0.5, 0.8, np.inf, -np.inf, np.nan], np.float32)
    x = np.resize(v, 23 * 11).reshape(-1, 1)  # one value per row
    one = np.ones((1, 1), np.float32)
    z = np.empty_like(x)
    G.gemm(x, one, z, 0, 0, 1.0, 0.0, 1)  # x @ [[1]] == x, except -0 -> +0
    with np.errstate(all="ignore"):
        for name in ACT:
            y = np.empty_like(x)
            G.dense_forward(x, one, None, ACT[name], y, None, 1)
            ref = unfused_act(name, z)
            assert np.array_equal(y.view(np.int32), ref.view(np.int32)), name


def test_dense_bitwise_across_threads(isa):
    r = rng(10)
    x = r.standard_normal((128, 784)).astype(np.float32)
    w = (r.standard_normal((784, 128)) / 28).astype(np.float32)
    b = r.standard_normal(128).astype(np.float32)
    for name in ACT:
        ys = []
        for nt in (1, 2, 3):
            y = np.empty((128, 128), np.float32)
            z = np.empty((128, 128), np.float32)
            G.dense_forward(x, w, b, ACT[name], y, z, nt)
            ys.append((y, z))
        for y, z in ys[1:]:
            assert np.array_equal(y, ys[0][0]) and np.array_equal(z, ys[0][1]), name


# ---------------------------------------------------------------- the Ops mixin
def test_mixin_matches_numpy_ops(isa):
    from fastgrad.backend import NativeOps, NumpyOps
    nat, ref = NativeOps(), NumpyOps()
    r = rng(11)
    x = r.standard_normal((64, 50)).astype(np.float32)
    w = (r.standard_normal((50, 30)) / 7).astype(np.float32)
    b = r.standard_normal(30).astype(np.float32)
    dy = r.standard_normal((64, 30)).astype(np.float32)
    for name in list(ACT) + ["softmax", "log_softmax"]:
        z1, z2 = np.empty((64, 30), np.float32), np.empty((64, 30), np.float32)
        y1 = nat.dense_forward(x, w, b, name, preact=z1)
        y2 = ref.dense_forward(x, w, b, name, preact=z2)
        np.testing.assert_allclose(z1, z2, rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-5, err_msg=name)
        g1 = nat.dense_backward(dy, x, w, y1, name, preact=z1)
        g2 = ref.dense_backward(dy, x, w, y2, name, preact=z2)
        for u, v in zip(g1, g2):
            np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-4, err_msg=name)
    # gemm with all flags, allocated and given out
    for ta, tb in itertools.product([False, True], repeat=2):
        A, B = operands(r, 20, 30, 40, ta, tb)
        np.testing.assert_allclose(nat.gemm(A, B, trans_a=ta, trans_b=tb, alpha=2.0),
                                   ref.gemm(A, B, trans_a=ta, trans_b=tb, alpha=2.0), rtol=1e-5, atol=1e-5)
        C0 = r.standard_normal((20, 30)).astype(np.float32)
        c1, c2 = C0.copy(), C0.copy()
        nat.gemm(A, B, out=c1, trans_a=ta, trans_b=tb, beta=0.5)
        ref.gemm(A, B, out=c2, trans_a=ta, trans_b=tb, beta=0.5)
        np.testing.assert_allclose(c1, c2, rtol=1e-5, atol=1e-5)


def test_mixin_falls_back_to_numpy():
    """float64 and transposed views are NumpyOps' business (same results, same errors)."""
    from fastgrad.backend import NativeOps
    nat = NativeOps()
    r = rng(12)
    a = r.standard_normal((5, 6))
    b = r.standard_normal((6, 7))
    np.testing.assert_allclose(nat.gemm(a, b), a @ b)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    at = np.ascontiguousarray(a32.T).T  # transposed view: not unit stride
    np.testing.assert_allclose(nat.gemm(at, b32), a32 @ b32, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(nat.dense_forward(a, b, None, "tanh"), np.tanh(a @ b), rtol=1e-12)
    with pytest.raises(ValueError):
        nat.gemm(a32, a32)
    with pytest.raises(ValueError):
        nat.dense_forward(a32, b32, None, "swish")


# ---------------------------------------------------------------- threads and processes
def test_concurrent_callers_have_separate_workspaces():
    """Python threads calling at once (GIL released) each pack into their own buffers."""
    import threading
    r = rng(13)
    jobs = []
    for i in range(6):
        M, N, K = 100 + 17 * i, 90 + 11 * i, 300 + 29 * i
        A, B = operands(r, M, N, K, i % 2, 0)
        ref = np.empty((M, N), np.float32)
        G.gemm(A, B, ref, i % 2, 0, 1.0, 0.0, 1)
        jobs.append((A, B, ref, i % 2))
    bad = []

    def work(A, B, ref, ta):
        C = np.empty_like(ref)
        for _ in range(20):
            G.gemm(A, B, C, ta, 0, 1.0, 0.0, 2)
            if not np.array_equal(C, ref):
                bad.append(ref.shape)
                return

    threads = [threading.Thread(target=work, args=j) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_forked_child_after_threaded_parent():
    """After the parent used OpenMP threads, a forked child runs serially (no hang) with equal results."""
    import os
    r = rng(14)
    A, B = operands(r, 300, 200, 300, 0, 0)
    C = np.empty((300, 200), np.float32)
    G.gemm(A, B, C, 0, 0, 1.0, 0.0, 2)  # parent: threaded
    pid = os.fork()
    if pid == 0:  # child
        try:
            C2 = np.empty_like(C)
            G.gemm(A, B, C2, 0, 0, 1.0, 0.0, 2)
            os._exit(0 if np.array_equal(C, C2) else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


@pytest.mark.skipif(_native.module("kernels") is None, reason="kernels module not built")
@pytest.mark.parametrize("name", [n for n in ACT if n != "linear"])
def test_epilogue_agrees_with_kernels_family(isa, name):
    """The fused epilogue and the element-wise kernels (csrc/kernels) compute the
    same functions: within the sum of their error bounds."""
    Kmod = _native.module("kernels")
    x = np.linspace(-40, 40, 80001).astype(np.float32).reshape(-1, 1)
    y = np.empty_like(x)
    G.dense_forward(x, np.ones((1, 1), np.float32), None, ACT[name], y, None, 1)
    y2 = np.empty_like(x)
    Kmod.act_forward(x, y2, ACT[name], 1)
    ref = act64(name, x)
    ok = np.abs(ref) >= np.finfo(np.float32).tiny
    d = ulps(y, y2.astype(np.float64))
    assert np.all(d[ok] <= 2 * ulp_limit(name, x)[ok] + 1), (name, float(d[ok].max()))


@pytest.mark.parametrize("ta,tb", list(itertools.product([0, 1], repeat=2)))
def test_single_row_product_equals_first_row_of_two(isa, ta, tb):
    """M = 1 (a single-sample dense forward) takes an 8-vector row kernel on
    AVX2 / AVX-512 for whole 8-vector column chunks and the tiled row path for
    the rest. Each element is the same FMA chain over k as in the multi-row
    tiles, so row 0 of a 1-row product equals row 0 of a 2-row one bitwise;
    checked with alpha/beta, bias and every activation."""
    r = rng(31)
    for N in (1, 63, 64, 65, 127, 128, 129, 200, 256, 300):
        for K in (1, 7, 130, 784):
            A2, B = operands(r, 2, N, K, ta, tb)
            A1 = A2[:, :1].copy() if ta else A2[:1].copy()
            C0 = r.standard_normal((2, N)).astype(np.float32)
            C1, C2 = C0[:1].copy(), C0.copy()
            G.gemm(A1, B, C1, ta, tb, 0.75, 0.5, 1)
            G.gemm(A2, B, C2, ta, tb, 0.75, 0.5, 1)
            assert np.array_equal(C1[0], C2[0]), (N, K)
            check_gemm(C1, A1, B, C0[:1], ta, tb, 0.75, 0.5)
    for name in ACT:
        x2 = r.standard_normal((2, 784)).astype(np.float32)
        w = r.standard_normal((784, 256)).astype(np.float32)
        b = r.standard_normal(256).astype(np.float32)
        y1, y2 = np.empty((1, 256), np.float32), np.empty((2, 256), np.float32)
        G.dense_forward(x2[:1], w, b, ACT[name], y1, None, 1)
        G.dense_forward(x2, w, b, ACT[name], y2, None, 1)
        assert np.array_equal(y1[0], y2[0]), name
