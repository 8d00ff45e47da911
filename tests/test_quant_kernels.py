"""csrc/quant (int8 kernels) against the NumPy twin (backend/numpy_quant.py):
bitwise equal integers (and epilogue floats) on every int8 path this machine
runs (baseline, avx2 = widened vpmaddwd, avxvnni, avx512vnni; forced with
fastgrad._native.quant.set_qisa) and for 1/2/3 threads; saturation at the
limits; quantize -> dequantize within half a step; bad input."""
import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _native
from fastgrad.backend import NumpyOps
from fastgrad._threads import explicit_num_threads

Q = _native.module("quant")
pytestmark = pytest.mark.skipif(Q is None, reason="native quant module not built")
QISAS = Q.qisa_supported() if Q is not None else []
REF = NumpyOps()
SHAPES = [(1, 1, 1), (1, 10, 784), (2, 3, 5), (7, 13, 4), (8, 32, 8), (9, 33, 17), (13, 47, 129),
          (31, 16, 3), (61, 97, 67), (6, 8, 1), (97, 5, 255), (257, 64, 31)]


def nat():
    from fastgrad.backend import NativeOps
    return NativeOps()


@pytest.fixture(params=QISAS)
def qisa(request):
    Q.set_qisa(request.param)
    yield request.param
    Q.set_qisa(None)


@pytest.fixture(params=[1, 2, 3])
def threads(request):
    old = explicit_num_threads()
    fg.set_num_threads(request.param)
    yield request.param
    fg.set_num_threads(old)


def operands(rng, M, N, K, extreme=False):
    if extreme:  # every product at the largest magnitude: 255 * -128
        a = np.full((M, K), 255, np.uint8)
        b = np.where(rng.random((K, N)) < 0.5, -128, 127).astype(np.int8)
    else:
        a = rng.integers(0, 256, (M, K), dtype=np.uint8)
        b = rng.integers(-128, 128, (K, N), dtype=np.int8)
    return a, b


def test_paths_exist():
    assert "baseline" in QISAS
    assert Q.qisa_active() in QISAS


@pytest.mark.parametrize("M,N,K", SHAPES)
def test_qgemm_exact_int32(qisa, threads, M, N, K):
    rng = np.random.default_rng(M * 1000 + N * 10 + K)
    ops = nat()
    for extreme in (False, True):
        a, b = operands(rng, M, N, K, extreme)
        exact = a.astype(np.int64) @ b.astype(np.int64)
        got = ops.qgemm(a, b)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, exact)
        np.testing.assert_array_equal(REF.qgemm(a, b), exact)
        # packed once, reused; zero point per row and one for all
        pb = ops.qpack(b)
        za = rng.integers(0, 256, M).astype(np.int32)
        ex2 = (a.astype(np.int64) - za[:, None]) @ b.astype(np.int64)
        np.testing.assert_array_equal(ops.qgemm(a, pb, a_zero_point=za), ex2)
        np.testing.assert_array_equal(REF.qgemm(a, pb, a_zero_point=za), ex2)


@pytest.mark.parametrize("M,N,K", SHAPES)
def test_qgemm_epilogues_bitwise(qisa, threads, M, N, K):
    rng = np.random.default_rng(7 + M + N + K)
    ops = nat()
    a, b = operands(rng, M, N, K)
    pb = ops.qpack(b)
    za = rng.integers(0, 256, M).astype(np.int32)
    sa = (rng.random(M) * 0.05 + 1e-3).astype(np.float32)
    sb = (rng.random(N) * 0.01 + 1e-4).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    for act in ("linear", "relu"):
        for bb in (None, bias):
            kw = dict(a_zero_point=za, a_scale=sa, b_scale=sb, bias=bb, activation=act)
            got, ref = ops.qgemm(a, pb, **kw), REF.qgemm(a, b, **kw)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got.view(np.int32), ref.view(np.int32))
            kw = dict(a_zero_point=int(za[0]), a_scale=float(sa[0]), b_scale=sb, bias=bb, activation=act,
                      out_scale=0.05 * K ** 0.5, out_zero_point=11)
            got, ref = ops.qgemm(a, pb, **kw), REF.qgemm(a, b, **kw)
            assert got.dtype == np.uint8
            np.testing.assert_array_equal(got, ref)
            if act == "relu":
                assert got.min() >= 11
    # the u8 output saturates at both ends
    q = ops.qgemm(a, pb, a_scale=1.0, b_scale=np.ones(N, np.float32), out_scale=1.0, out_zero_point=128)
    assert q.min() == 0 or K < 8
    assert q.max() == 255 or K < 8


def test_qgemm_same_bits_every_path_and_thread_count():
    rng = np.random.default_rng(3)
    ops = nat()
    a, b = operands(rng, 203, 517, 785)
    pb = ops.qpack(b)
    sb = (rng.random(517) * 0.01 + 1e-4).astype(np.float32)
    results = []
    old = explicit_num_threads()
    try:
        for path in QISAS:
            Q.set_qisa(path)
            for nt in (1, 2, 3):
                fg.set_num_threads(nt)
                f = ops.qgemm(a, pb, a_zero_point=5, a_scale=0.02, b_scale=sb, activation="relu")
                results.append((ops.qgemm(a, pb), f.view(np.int32)))
    finally:
        Q.set_qisa(None)
        fg.set_num_threads(old)
        fg.set_num_threads(None) if False else None
    for r in results[1:]:
        np.testing.assert_array_equal(r[0], results[0][0])
        np.testing.assert_array_equal(r[1], results[0][1])


@pytest.mark.parametrize("M,N", [(1, 1), (1, 784), (3, 17), (37, 101), (256, 129), (1000, 33)])
def test_quantize_dequantize_bitwise(qisa, threads, M, N):
    rng = np.random.default_rng(M + N)
    ops = nat()
    x = (rng.standard_normal((M, N)) * rng.uniform(0.1, 10)).astype(np.float32)
    x[0, 0] = 0.5  # a tie for round-half-even when the scale is 1 below
    for dt in ("uint8", "int8"):
        q, s, z = ops.quantize(x, dt)
        q2, s2, z2 = REF.quantize(x, dt)
        np.testing.assert_array_equal(q, q2)
        np.testing.assert_array_equal(s.view(np.int32), s2.view(np.int32))
        np.testing.assert_array_equal(z, z2)
        y, y2 = ops.dequantize(q, s, z), REF.dequantize(q2, s2, z2)
        np.testing.assert_array_equal(y.view(np.int32), y2.view(np.int32))
        # quantize -> dequantize error within half a step
        err = np.abs(y.astype(np.float64) - x)
        # (+ the float32 rounding of the dequantized value itself)
        tol = 0.5 * s[:, None].astype(np.float64) + 2 * np.spacing(np.abs(x))
        assert np.all(err <= tol), (dt, err.max())
        # given scale / zero point, one for all and one per row
        for sc, zp in ((0.37, 3 if dt == "uint8" else -2), (s, z)):
            qa, qb = ops.quantize(x, dt, scale=sc, zero_point=zp)[0], REF.quantize(x, dt, scale=sc, zero_point=zp)[0]
            np.testing.assert_array_equal(qa, qb)


def test_round_half_to_even_and_saturation(qisa):
    ops = nat()
    x = np.array([[0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 300.0, -300.0, np.inf, -np.inf, 126.5, 127.5]], np.float32)
    q8, _, _ = ops.quantize(x, "int8", scale=1.0)
    np.testing.assert_array_equal(q8[0], [0, 2, 2, 0, -2, -2, 127, -128, 127, -128, 126, 127])
    qu, _, _ = ops.quantize(x, "uint8", scale=1.0, zero_point=128)
    np.testing.assert_array_equal(qu[0], [128, 130, 130, 128, 126, 126, 255, 0, 255, 0, 254, 255])
    np.testing.assert_array_equal(q8, REF.quantize(x, "int8", scale=1.0)[0])
    np.testing.assert_array_equal(qu, REF.quantize(x, "uint8", scale=1.0, zero_point=128)[0])
    # dynamic: the row's extremes land exactly on the limits
    y = np.array([[-3.0, 0.0, 1.0, 5.0]], np.float32)
    q, s, z = ops.quantize(y, "uint8")
    assert q.min() == 0 and q.max() == 255
    q, s, z = ops.quantize(y, "int8")
    assert q.max() == 127 and z[0] == 0
    zero = np.zeros((2, 5), np.float32)
    q, s, z = ops.quantize(zero, "uint8")
    assert np.all(q == 0) and np.all(s == 1) and np.all(z == 0)


def test_bad_input():
    ops = nat()
    x = np.ones((3, 4), np.float32)
    x[1, 2] = np.nan
    for o in (ops, REF):
        with pytest.raises(ValueError, match="NaN"):
            o.quantize(x, "uint8")
        with pytest.raises(ValueError, match="NaN"):
            o.quantize(x, "int8", scale=0.1)
        with pytest.raises(ValueError, match="scale"):
            o.quantize(np.ones(3, np.float32), scale=0.0)
        with pytest.raises(ValueError, match="dtype"):
            o.quantize(np.ones(3, np.float32), dtype="int16")
        with pytest.raises(ValueError, match="shapes"):
            o.qgemm(np.zeros((2, 3), np.uint8), np.zeros((4, 5), np.int8))
        with pytest.raises(TypeError, match="uint8"):
            o.qgemm(np.zeros((2, 3), np.int16), np.zeros((3, 5), np.int8))
        with pytest.raises(ValueError, match="needs b_scale"):
            o.qgemm(np.zeros((2, 3), np.float32), np.zeros((3, 5), np.int8))
        with pytest.raises(ValueError, match="activation"):
            o.qgemm(np.zeros((2, 3), np.uint8), np.zeros((3, 5), np.int8), a_scale=1.0, b_scale=1.0,
                    activation="tanh")
        with pytest.raises(ValueError, match="K = 70000"):
            o.qpack(np.zeros((70000, 1), np.int8))
    with pytest.raises(ValueError, match="not available|unknown"):
        Q.set_qisa("sse9")


def test_fg_ops_entry_points():
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    b = (np.arange(8, dtype=np.int8) - 4).reshape(4, 2)
    np.testing.assert_array_equal(fg.ops.qgemm(a, b), a.astype(np.int64) @ b)
    q, s, z = fg.ops.quantize(np.linspace(-1, 1, 9, dtype=np.float32))
    assert q.dtype == np.uint8 and q.shape == (9,)
    np.testing.assert_allclose(fg.ops.dequantize(q, s, z), np.linspace(-1, 1, 9), atol=s / 2 + 1e-7)


def test_path_follows_the_global_isa_unless_forced():
    RT = _native.module("runtime")
    orig = _native.get_isa()
    try:
        for isa in RT.isa_supported():
            _native.set_isa(isa)
            want = {"baseline": ["baseline"], "avx2": ["avxvnni", "avx2"],
                    "avx512": ["avx512vnni", "avxvnni", "avx2"]}[isa]
            assert Q.qisa_active() == next(p for p in want if p in QISAS), isa
        Q.set_qisa("baseline")
        _native.set_isa(orig)
        assert Q.qisa_active() == "baseline"  # forced stays forced
    finally:
        Q.set_qisa(None)
        _native.set_isa(orig)


def test_fastgrad_qisa_environment_variable():
    import os
    import subprocess
    import sys
    for path in QISAS:
        env = dict(os.environ, FASTGRAD_QISA=path)
        out = subprocess.run([sys.executable, "-c", "from fastgrad import _native; "
                              "print(_native.module('quant').qisa_active())"],
                             env=env, capture_output=True, text=True, check=True).stdout.strip()
        assert out == path


@pytest.mark.parametrize("M,N,K", SHAPES)
def test_qgemm_float_a_fused_dynamic_quantization(qisa, threads, M, N, K):
    rng = np.random.default_rng(11 + M * N + K)
    ops = nat()
    x = (rng.standard_normal((M, K)) * 3).astype(np.float32)
    b = rng.integers(-128, 128, (K, N), dtype=np.int8)
    pb = ops.qpack(b)
    sb = (rng.random(N) * 0.01 + 1e-4).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    for act in ("linear", "relu"):
        got = ops.qgemm(x, pb, b_scale=sb, bias=bias, activation=act)
        q, s, z = REF.quantize(x, "uint8")
        want = REF.qgemm(q, b, a_zero_point=z, a_scale=s, b_scale=sb, bias=bias, activation=act)
        np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))
        np.testing.assert_array_equal(REF.qgemm(x, b, b_scale=sb, bias=bias, activation=act).view(np.int32),
                                      want.view(np.int32))
    bad = x.copy()
    bad[-1, -1] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        ops.qgemm(bad, pb, b_scale=sb)


@pytest.mark.parametrize("M,N,K", SHAPES)
def test_qgemm_float_a_given_grid_fused(qisa, threads, M, N, K):
    """A static model's input: float rows quantized with a given (scale, zero
    point) inside the GEMM; same bits as quantize then qgemm, both epilogues."""
    from fastgrad.backend.numpy_quant import requant_multiplier
    rng = np.random.default_rng(5 + M + 3 * N + K)
    ops = nat()
    x = (rng.standard_normal((M, K)) * 2).astype(np.float32)
    x[0, 0] = 1e9  # saturates
    b = rng.integers(-128, 128, (K, N), dtype=np.int8)
    pb, pr = ops.qpack(b), REF.qpack(b)
    sa, za = np.array([0.02], np.float32), np.array([117], np.int32)
    sb = (rng.random(N) * 0.01 + 1e-4).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    for relu in (False, True):
        y1, y2 = np.empty((M, N), np.float32), np.empty((M, N), np.float32)
        ops._qgemm_given(x, pb, y1, 1, za, sa, sb, None, bias, 0, relu)
        REF._qgemm_given(x, pr, y2, 1, za, sa, sb, None, bias, 0, relu)
        np.testing.assert_array_equal(y1.view(np.int32), y2.view(np.int32))
        mult = requant_multiplier(sa[0], sb, 0.3)
        q1, q2 = np.empty((M, N), np.uint8), np.empty((M, N), np.uint8)
        ops._qgemm_given(x, pb, q1, 2, za, sa, sb, mult, bias / np.float32(0.3), 9, relu)
        REF._qgemm_given(x, pr, q2, 2, za, sa, sb, mult, bias / np.float32(0.3), 9, relu)
        np.testing.assert_array_equal(q1, q2)
    bad = x.copy()
    bad[-1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ops._qgemm_given(bad, pb, np.empty((M, N), np.float32), 1, za, sa, sb, None, None, 0, False)
