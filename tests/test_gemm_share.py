"""GEMM: shared B panels between threads, pre-packed B, measured peak
(csrc/gemm/gemm_driver.c gemm_shared / fg_gemm_packb, gemm_peak.c).

Sharing and pre-packing change who packs B and when, never the K blocks or
any element's FMA chain: results must be bitwise those of the per-thread
packing path with one thread, on every ISA, for 1/2/3 threads, over shapes
around every tile edge (1, primes, off-tile sizes, several K blocks and NC
panels).
"""
import numpy as np
import pytest

from fastgrad import _native

G = _native.module("gemm")
RT = _native.module("runtime")
pytestmark = pytest.mark.skipif(G is None, reason="fastgrad._native.gemm not built")
ISAS = RT.isa_supported() if RT is not None else []
ACT = {"linear": 0, "relu": 1, "gelu": 4}


@pytest.fixture(params=ISAS)
def isa(request):
    orig = _native.get_isa()
    _native.set_isa(request.param)
    yield request.param
    _native.set_isa(orig)


@pytest.fixture
def share():
    yield G.set_share
    G.set_share(0)


# (M, N, K): 1, primes, off-tile, several K blocks (KC = 256 baseline, 512 AVX2 / AVX-512), NC panels
SHAPES = [(1, 1, 1), (2, 3, 5), (13, 17, 19), (37, 61, 257), (97, 131, 300), (64, 100, 513),
          (150, 40, 97), (200, 33, 600), (31, 1031, 260), (260, 3100, 70), (129, 257, 255)]


def _ops(r, M, N, K, ta, tb):
    A = r.standard_normal((K, M) if ta else (M, K)).astype(np.float32)
    B = r.standard_normal((N, K) if tb else (K, N)).astype(np.float32)
    return A, B


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True)])
def test_shared_b_bitwise_any_threads(isa, share, ta, tb):
    r = np.random.default_rng(1)
    for M, N, K in SHAPES:
        A, B = _ops(r, M, N, K, ta, tb)
        C0 = r.standard_normal((M, N)).astype(np.float32)
        share(-1)
        ref = G.gemm(A, B, C0.copy(), ta, tb, 0.5, 0.75, nthreads=1, _path=1)
        np.testing.assert_allclose(ref, 0.5 * (A.T if ta else A).astype(np.float64)
                                   @ (B.T if tb else B).astype(np.float64) + 0.75 * C0,
                                   rtol=1e-4, atol=1e-4 * np.sqrt(K))
        for mode in (1, -1, 0):
            share(mode)
            for nt in (1, 2, 3):
                c = G.gemm(A, B, C0.copy(), ta, tb, 0.5, 0.75, nthreads=nt, _path=1)
                assert np.array_equal(c.view(np.uint32), ref.view(np.uint32)), (isa, M, N, K, ta, tb, mode, nt)
                c = G.gemm(A, B, np.empty((M, N), np.float32), ta, tb, 1.0, 0.0, nthreads=nt)
                c1 = G.gemm(A, B, np.empty((M, N), np.float32), ta, tb, 1.0, 0.0, nthreads=1)
                assert np.array_equal(c.view(np.uint32), c1.view(np.uint32)), (isa, M, N, K, mode, nt)


def test_shared_b_dense_forward_epilogue(isa, share):
    r = np.random.default_rng(2)
    for M, N, K in [(300, 130, 520), (128, 128, 784), (97, 1031, 257)]:
        x = r.standard_normal((M, K)).astype(np.float32)
        w = (r.standard_normal((K, N)) / np.sqrt(K)).astype(np.float32)
        b = r.standard_normal(N).astype(np.float32)
        for act in ACT.values():
            share(-1)
            ref = G.dense_forward(x, w, b, act, np.empty((M, N), np.float32), nthreads=1)
            for mode in (1, 0):
                share(mode)
                for nt in (2, 3):
                    y = G.dense_forward(x, w, b, act, np.empty((M, N), np.float32), nthreads=nt)
                    assert np.array_equal(y.view(np.uint32), ref.view(np.uint32)), (M, N, K, act, mode, nt)


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_prepacked_bitwise(isa, ta, tb):
    r = np.random.default_rng(3)
    for M, N, K in SHAPES + [(128, 10, 128), (8, 128, 784), (256, 128, 784)]:
        A, B = _ops(r, M, N, K, ta, tb)
        pk = G.PackedB(B, tb, nthreads=2)
        assert (pk.n, pk.k) == (N, K)
        C0 = r.standard_normal((M, N)).astype(np.float32)
        for nt in (1, 2, 3):
            ref = G.gemm(A, B, C0.copy(), ta, tb, 1.5, 0.25, nthreads=nt)
            c = G.gemm_prepacked(A, pk, C0.copy(), ta, 1.5, 0.25, nthreads=nt)
            assert np.array_equal(c.view(np.uint32), ref.view(np.uint32)), (isa, M, N, K, ta, tb, nt)
        # a sub-range of rows (a predict chunk) with the same packed B
        if M > 3:
            ref = G.gemm(A[:, 1:M - 1] if ta else A[1:M - 1], B, np.empty((M - 2, N), np.float32), ta, tb)
            c = G.gemm_prepacked(A[:, 1:M - 1] if ta else A[1:M - 1], pk, np.empty((M - 2, N), np.float32), ta)
            assert np.array_equal(c.view(np.uint32), ref.view(np.uint32))


def test_prepacked_dense_forward_bitwise(isa):
    r = np.random.default_rng(4)
    for M, N, K in [(1, 1, 1), (7, 13, 29), (128, 128, 784), (256, 10, 128), (300, 70, 600)]:
        x = r.standard_normal((M, K)).astype(np.float32)
        w = (r.standard_normal((K, N)) / np.sqrt(K)).astype(np.float32)
        b = r.standard_normal(N).astype(np.float32)
        pk = G.PackedB(w)
        for act in ACT.values():
            for nt in (1, 2, 3):
                ref = G.dense_forward(x, w, b, act, np.empty((M, N), np.float32), nthreads=nt)
                y = G.dense_forward_prepacked(x, pk, b, act, np.empty((M, N), np.float32), nthreads=nt)
                assert np.array_equal(y.view(np.uint32), ref.view(np.uint32)), (M, N, K, act, nt)


def test_prepacked_isa_change_falls_back():
    if len(ISAS) < 2:
        pytest.skip("one ISA")
    orig = _native.get_isa()
    try:
        r = np.random.default_rng(5)
        A, B = _ops(r, 70, 90, 300, False, False)
        _native.set_isa(ISAS[-1])
        pk = G.PackedB(B)
        _native.set_isa(ISAS[0])
        ref = G.gemm(A, B, np.empty((70, 90), np.float32))
        c = G.gemm_prepacked(A, pk, np.empty((70, 90), np.float32))
        assert np.array_equal(c.view(np.uint32), ref.view(np.uint32))
    finally:
        _native.set_isa(orig)


def test_prepacked_errors():
    B = np.ones((5, 4), np.float32)
    pk = G.PackedB(B)
    with pytest.raises(ValueError, match="gemm_prepacked"):
        G.gemm_prepacked(np.ones((3, 6), np.float32), pk, np.empty((3, 4), np.float32))
    with pytest.raises(TypeError):
        G.PackedB(np.ones((5, 4)))


def test_peak_gflops_measured_and_cached(monkeypatch):
    monkeypatch.delenv("FASTGRAD_PEAK_GFLOPS", raising=False)
    p1 = G.peak_gflops(1)
    assert 0.5 < p1 < 1e5  # GFLOP/s of one core, any plausible CPU
    assert G.peak_gflops(1) == p1  # cached per process
    p2 = G.peak_gflops(2)
    assert 0.5 < p2 < 2.5 * p1  # two threads: at most two cores' worth (+ noise)
    monkeypatch.setenv("FASTGRAD_PEAK_GFLOPS", "100")
    assert G.peak_gflops(1) == 100.0 and G.peak_gflops(2) == 100.0
    monkeypatch.setenv("FASTGRAD_PEAK_GFLOPS", "fast")
    with pytest.raises(ValueError, match="FASTGRAD_PEAK_GFLOPS"):
        G.peak_gflops(1)
