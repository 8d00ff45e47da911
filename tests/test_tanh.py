"""float32 tanh (csrc/kernels/fg_vmath.h v_tanh) through fg_act_forward.

The kernel has two branches (|x| < 0.625: odd polynomial; above: a bounded-range
exp and a refined reciprocal estimate, clamped at 9.1) chosen per vector, so the
tests sweep every float32 in the ranges where the error peaks (the branch
switch, the saturation at 9.01), a strided sweep of all bit patterns, the limits,
vectors that mix the branches, and every instruction-set path and thread count.
"""
import numpy as np
import pytest

from fastgrad import _native
from fastgrad.backend import NumpyOps

K = _native.module("kernels")
RT = _native.module("runtime")
pytestmark = pytest.mark.skipif(K is None, reason="native kernels module not built")

ISAS = RT.isa_supported() if RT is not None else []
TANH = 3
SIZES = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 97, 127, 129, 1000, 1023, 1025]
MAX_SPACINGS = 2.0  # contract: within 2 ULP; measured 1.53 (AVX-512), 1.36 (AVX2), 1.34 (portable)


@pytest.fixture(params=ISAS)
def isa(request):
    orig = _native.get_isa()
    _native.set_isa(request.param)
    yield request.param
    _native.set_isa(orig)


def tanh(x, nthreads=1):
    y = np.empty_like(x)
    K.act_forward(x, y, TANH, nthreads)
    return y


def floats_between(lo, hi, step=1):
    """Every step-th float32 in [lo, hi] (0 <= lo < hi)."""
    b0 = np.float32(lo).view(np.uint32)
    b1 = np.float32(hi).view(np.uint32)
    return np.arange(b0, b1 + 1, step, dtype=np.uint32).view(np.float32)


def spacings(y, x):
    """|y - tanh(x)| in float32 spacings at the exact value (float64 reference)."""
    ref = np.tanh(x.astype(np.float64))
    sp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    return np.abs(y.astype(np.float64) - ref) / sp


def assert_within(y, x, where):
    e = spacings(y, x)
    i = int(np.argmax(e))
    assert e[i] <= MAX_SPACINGS, (where, _native.get_isa(), float(x[i]), float(e[i]))


# ---------------------------------------------------------------- accuracy
@pytest.mark.parametrize("lo,hi", [(0.5, 0.75), (0.75, 1.5), (8.5, 9.5)])
def test_every_float_where_the_error_peaks(isa, lo, hi):
    """All float32 across the branch switch (0.625), the range just above it
    (where 2/(e^{2a}+1) is largest relative to the result) and the saturation
    at 9.01 / the clamp at 9.1; negatives by symmetry."""
    x = floats_between(lo, hi)
    y = tanh(x)
    assert_within(y, x, (lo, hi))
    np.testing.assert_array_equal(tanh(-x), -y)


def test_strided_sweep_of_all_bit_patterns(isa):
    bits = np.arange(0, 2 ** 32, 509, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    x = x[np.isfinite(x)]
    y = tanh(x)
    assert_within(y, x, "sweep")
    assert np.all(np.abs(y) <= 1)


def test_saturates_exactly_and_stays_below_one_before(isa):
    x = floats_between(9.02, 9.2)
    assert np.all(tanh(x) == 1) and np.all(tanh(-x) == -1)
    x = np.array([9.0, 8.0, 5.0], dtype=np.float32)
    assert np.all(tanh(x) < 1)  # 1 - 2e^{-18} is still below 1 in float32


def test_monotone(isa):
    x = np.concatenate([floats_between(0.0, 1e-3, 97), floats_between(1e-3, 9.5, 61)])
    y = tanh(x)
    assert np.all(np.diff(y.astype(np.float64)) >= 0)


def test_matches_numpy_float32(isa):
    x = (np.random.default_rng(4).standard_normal(100_000) * 3).astype(np.float32)
    np.testing.assert_allclose(tanh(x), np.tanh(x), rtol=1e-6, atol=0)
    np.testing.assert_allclose(tanh(x), NumpyOps().tanh(x), rtol=1e-6, atol=0)


# ---------------------------------------------------------------- special values
def test_special_values(isa):
    tiny = np.finfo(np.float32).tiny
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 3.4e38, -3.4e38, 1e-45, -1e-45, tiny, -tiny,
                  1e-20, -1e-20, 0.625, -0.625, np.nextafter(np.float32(0.625), np.float32(0)), 9.1, -9.1, 50.0,
                  -50.0, 100.0, 1e4], dtype=np.float32)
    y = tanh(x)
    assert y[0] == 0 and not np.signbit(y[0])
    assert y[1] == 0 and np.signbit(y[1])
    np.testing.assert_array_equal(y[2:4], [1, -1])
    assert np.isnan(y[4]) and np.isnan(y[5])
    np.testing.assert_array_equal(y[6:8], [1, -1])
    np.testing.assert_array_equal(y[8:14], x[8:14])  # tanh(x) rounds to x for tiny x (denormals kept)
    np.testing.assert_array_equal(y[17:], np.sign(x[17:]))
    assert_within(y[14:17], x[14:17], "thresholds")


def test_nan_payload_lanes_do_not_disturb_neighbours(isa):
    """A NaN or inf in a vector does not change the other lanes (bitwise)."""
    x = np.linspace(-3, 3, 64, dtype=np.float32)
    ref = tanh(x)
    for bad in (np.nan, np.inf, -np.inf, 0.0):
        z = x.copy()
        z[::5] = bad
        y = tanh(z)
        keep = np.ones(64, bool)
        keep[::5] = False
        np.testing.assert_array_equal(y[keep], ref[keep])


# ---------------------------------------------------------------- layout
def test_result_does_not_depend_on_vector_neighbours(isa):
    """Vectors pick their branch (small / large / both) by their lanes, yet each
    element's result is the same bits in any company: element-wise calls agree
    with one call on a shuffled array that mixes the branches."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-0.7, 0.7, 500), rng.uniform(-12, 12, 500),
                        rng.standard_normal(500)]).astype(np.float32)
    alone = np.array([tanh(x[i:i + 1])[0] for i in range(x.size)], dtype=np.float32)
    np.testing.assert_array_equal(tanh(x), alone)
    perm = rng.permutation(x.size)
    np.testing.assert_array_equal(tanh(x[perm]), alone[perm])
    np.testing.assert_array_equal(tanh(np.sort(x)), np.sort(alone))


@pytest.mark.parametrize("n", SIZES)
def test_sizes_and_in_place(isa, n):
    x = np.linspace(-10, 10, n, dtype=np.float32) * np.float32(0.9)
    y = tanh(x)
    assert_within(y, x, n)
    z = x.copy()
    K.act_forward(z, z, TANH, 1)
    np.testing.assert_array_equal(z, y)
    out = np.full(n + 2, 7, np.float32)
    K.act_forward(x, out[1:-1], TANH, 1)
    np.testing.assert_array_equal(out[1:-1], y)
    assert out[0] == 7 and out[-1] == 7  # tails are masked, nothing written past the end


def test_threads_bitwise(isa):
    x = (np.random.default_rng(1).standard_normal((1 << 16) + 37) * 2).astype(np.float32)
    y1 = tanh(x, 1)
    for nt in (2, 3):
        np.testing.assert_array_equal(tanh(x, nt), y1)


def test_streaming_store_size(isa):
    """The non-temporal store path (outputs of 4M+ elements) gives the same bits."""
    n = (1 << 22) + 19
    x = np.linspace(-9.5, 9.5, n, dtype=np.float32)
    y = tanh(x, 2)
    idx = np.r_[0:1000, n // 2 - 500:n // 2 + 500, n - 1000:n]
    np.testing.assert_array_equal(y[idx], tanh(np.ascontiguousarray(x[idx])))
    buf = np.zeros(n + 2, np.float32)
    out = buf[1:-1]  # output 4 bytes off a vector boundary: unaligned head, then streamed
    K.act_forward(x, out, TANH, 1)
    np.testing.assert_array_equal(out, y)
    assert buf[0] == 0 and buf[-1] == 0


def test_backward_uses_forward_output(isa):
    """tanh backward is dy (1 - y^2) from the forward output; it calls no tanh."""
    x = np.linspace(-4, 4, 1001, dtype=np.float32)
    y = tanh(x)
    dy = np.linspace(1, -1, 1001, dtype=np.float32)
    dx = np.empty_like(x)
    K.act_backward(dy, y, dx, TANH, 1)
    y64 = y.astype(np.float64)
    np.testing.assert_allclose(dx, dy * (1 - y64 * y64), rtol=1e-6, atol=1e-7)
