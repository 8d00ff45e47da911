"""ops.all_finite (fg_all_finite in csrc/kernels/reduce.c): the input check
used by data validation and, per chunk, by the compiled inference plan.

Checked against numpy.isfinite for every size class, every position of the
bad element (vector head / body / tail), every kind of non-finite bit
pattern, every instruction-set path and several thread counts."""
import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _native
from fastgrad.backend import NumpyOps

K = _native.module("kernels")
RT = _native.module("runtime")
pytestmark = pytest.mark.skipif(K is None, reason="native kernels module not built")
ISAS = RT.isa_supported() if RT is not None else []
SIZES = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 127, 129, 1000, 1023, 1025, 65537, 300007]

# every exponent-all-ones pattern class: +-inf, quiet/signalling NaN, NaN
# with payloads, and the finite values closest to them
BAD_BITS = [0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FBFFFFF,
            0xFFFFFFFF, 0x7FFFFFFF]
GOOD_BITS = [0x7F7FFFFF, 0xFF7FFFFF, 0x00000001, 0x80000001, 0x00800000, 0x80000000, 0x00000000]


def _f(bits):
    return np.array([bits], dtype=np.uint32).view(np.float32)[0]


@pytest.fixture(params=ISAS)
def isa(request):
    orig = _native.get_isa()
    _native.set_isa(request.param)
    yield request.param
    _native.set_isa(orig)


@pytest.mark.parametrize("n", SIZES)
def test_all_finite_positions_and_threads(isa, n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    x[: min(n, len(GOOD_BITS))] = [_f(b) for b in GOOD_BITS][: min(n, len(GOOD_BITS))]
    for nt in (1, 2, 3):
        assert K.all_finite(x, nt) is True
    positions = sorted({0, n // 2, n - 1, max(0, n - 17), min(n - 1, 15)})
    for i in positions:
        for bits in BAD_BITS:
            y = x.copy()
            y[i] = _f(bits)
            assert not np.isfinite(y).all()
            for nt in (1, 2, 3):
                assert K.all_finite(y, nt) is False, (isa, n, i, hex(bits), nt)


def test_all_finite_ops_match_numpy_backend():
    ops, ref = fg.backend.NativeOps(), NumpyOps()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((513, 7)).astype(np.float32)
    big = np.full(5000, 3e38, np.float32)       # finite, but its squares overflow a dot
    cases = [x, x.T, x[::2], x.astype(np.float64), big, np.zeros(0, np.float32)]
    y = x.copy(); y[512, 6] = np.nan
    cases += [y, y.T, y.astype(np.float64)]
    for c in cases:
        assert ops.all_finite(c) == ref.all_finite(c) == bool(np.isfinite(c).all())


def test_all_finite_rejects_wrong_dtype():
    with pytest.raises(TypeError, match="all_finite"):
        K.all_finite(np.ones(3, np.float64), 1)
