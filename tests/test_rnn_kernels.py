"""csrc/rnn through fastgrad._native.rnn and RnnMixin, against NumpyOps
(float32) and a float64 NumpyOps reference, over shapes that hit the vector
tails (units 1, primes, off every tile), every instruction-set path, masks,
go_backwards, recurrent dropout, and thread counts 1/2/3 (bitwise equal)."""
import numpy as np
import pytest

from fastgrad import _native, _threads
from fastgrad.backend import NumpyOps

R = _native.module("rnn")
RT = _native.module("runtime")
pytestmark = pytest.mark.skipif(R is None, reason="native rnn module not built")
ISAS = RT.isa_supported() if RT is not None else []

if R is not None:
    from fastgrad.backend.native_ops import NativeOps
    NAT = NativeOps()
REF = NumpyOps()

SHAPES = [(1, 1, 1), (2, 3, 5), (3, 7, 13), (5, 4, 17), (4, 9, 33), (7, 5, 64), (3, 2, 129)]
G = {"simple": 1, "lstm": 4, "gru": 3}


@pytest.fixture(params=ISAS)
def isa(request):
    orig = _native.get_isa()
    _native.set_isa(request.param)
    yield request.param
    _native.set_isa(orig)


def _case(kind, n, T, u, seed, masked, rdrop, dtype=np.float32):
    rng = np.random.default_rng(seed)
    g = G[kind]
    c = dict(
        xw=rng.standard_normal((n, T, g * u)).astype(dtype),
        rk=(rng.standard_normal((u, g * u)) / np.sqrt(u)).astype(dtype),
        h0=rng.standard_normal((n, u)).astype(dtype) * 0.5,
        c0=rng.standard_normal((n, u)).astype(dtype) * 0.5,
        brec=rng.standard_normal(3 * u).astype(dtype) * 0.1,
        mask=(rng.random((n, T)) > 0.3) if masked else None,
        rmask=(rng.random((n, u)) > 0.25).astype(dtype) / dtype(0.75) if rdrop else None,
        dhs=rng.standard_normal((n, T, u)).astype(dtype),
        dhT=rng.standard_normal((n, u)).astype(dtype),
        dcT=rng.standard_normal((n, u)).astype(dtype),
    )
    return c


def _run(ops, kind, c, reverse, act="tanh", rec="sigmoid"):
    """forward + backward through `ops`; returns every output array."""
    xw = c["xw"]
    n, T, gu = xw.shape
    u = gu // G[kind]
    dt = xw.dtype
    hs = np.empty((n, T, u), dt)
    dxw = np.empty_like(xw)
    drk = np.empty_like(c["rk"])
    dh0 = np.empty((n, u), dt)
    if kind == "simple":
        ops.simple_rnn_forward(xw, c["rk"], c["h0"], c["mask"], reverse, c["rmask"], act, hs)
        ops.simple_rnn_backward(c["dhs"], c["dhT"], xw, c["rk"], c["h0"], hs, c["mask"], reverse,
                                c["rmask"], act, dxw, drk, dh0)
        return dict(hs=hs, dxw=dxw, drk=drk, dh0=dh0)
    if kind == "lstm":
        cs = np.empty((n, T, u), dt)
        gates = np.empty((n, T, 4 * u), dt)
        dc0 = np.empty((n, u), dt)
        ops.lstm_forward(xw, c["rk"], c["h0"], c["c0"], c["mask"], reverse, c["rmask"], act, rec, hs,
                         cs, gates)
        ops.lstm_backward(c["dhs"], c["dhT"], c["dcT"], xw, c["rk"], c["h0"], c["c0"], hs, cs, gates,
                          c["mask"], reverse, c["rmask"], act, rec, dxw, drk, dh0, dc0)
        return dict(hs=hs, cs=cs, gates=gates, dxw=dxw, drk=drk, dh0=dh0, dc0=dc0)
    gates = np.empty((n, T, 4 * u), dt)
    dbrec = np.empty(3 * u, dt)
    ops.gru_forward(xw, c["rk"], c["brec"], c["h0"], c["mask"], reverse, c["rmask"], act, rec, hs, gates)
    ops.gru_backward(c["dhs"], c["dhT"], xw, c["rk"], c["brec"], c["h0"], hs, gates, c["mask"], reverse,
                     c["rmask"], act, rec, dxw, drk, dbrec, dh0)
    return dict(hs=hs, gates=gates, dxw=dxw, drk=drk, dbrec=dbrec, dh0=dh0)


def _close(a, b, what, tol=2e-4):
    scale = max(1.0, float(np.abs(b).max()))
    err = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) / scale
    assert err <= tol, f"{what}: max scaled error {err:.3g}"


@pytest.mark.parametrize("kind", ["simple", "lstm", "gru"])
@pytest.mark.parametrize("shape", SHAPES)
def test_c_matches_numpy_and_float64(isa, kind, shape):
    n, T, u = shape
    for k, (masked, reverse, rdrop) in enumerate([(False, False, False), (True, True, False),
                                                  (True, False, True)]):
        c = _case(kind, n, T, u, 100 + k, masked, rdrop)
        got = _run(NAT, kind, c, reverse)
        ref32 = _run(REF, kind, c, reverse)
        c64 = {key: (None if v is None else (v.astype(np.float64) if v.dtype != np.bool_ else v))
               for key, v in c.items()}
        ref64 = _run(REF, kind, c64, reverse)
        for key in got:
            _close(got[key], ref32[key], f"{kind} {shape} {isa} {key} vs NumPy f32")
            _close(got[key], ref64[key], f"{kind} {shape} {isa} {key} vs float64")


@pytest.mark.parametrize("kind", ["simple", "lstm", "gru"])
@pytest.mark.parametrize("acts", [("relu", "sigmoid"), ("linear", "tanh")])
def test_other_activations(kind, acts):
    c = _case(kind, 3, 5, 7, 9, True, False)
    got = _run(NAT, kind, c, False, *acts)
    ref = _run(REF, kind, c, False, *acts)
    for key in got:
        _close(got[key], ref[key], f"{kind} {acts} {key}")


@pytest.mark.parametrize("kind", ["simple", "lstm", "gru"])
def test_bitwise_same_for_1_2_3_threads(kind):
    c = _case(kind, 64, 6, 96, 1, True, True)
    outs = []
    saved = _threads.explicit_num_threads()
    try:
        for t in (1, 2, 3):
            _threads.set_num_threads(t)
            outs.append(_run(NAT, kind, c, True))
    finally:
        _threads.set_num_threads(saved)
    for o in outs[1:]:
        for key in o:
            np.testing.assert_array_equal(o[key], outs[0][key], err_msg=f"{kind} {key}")


def test_binding_rejects_bad_arrays():
    c = _case("lstm", 2, 3, 4, 0, False, False)
    hs = np.empty((2, 3, 4), np.float32)
    cs = np.empty((2, 3, 4), np.float32)
    gates = np.empty((2, 3, 16), np.float32)
    scratch = np.empty(R.scratch_size(4, 2, 3, 4), np.float32)
    with pytest.raises(ValueError, match="xw has shape"):
        R.lstm_forward(hs, cs, gates, c["xw"][:, :2].copy(), c["rk"], c["h0"], c["c0"], None, False, None,
                       3, 2, scratch, 1)
    with pytest.raises(TypeError, match="float32"):
        R.lstm_forward(hs, cs, gates, c["xw"].astype(np.float64), c["rk"], c["h0"], c["c0"], None, False,
                       None, 3, 2, scratch, 1)
    with pytest.raises(ValueError, match="invalid argument"):
        R.lstm_forward(hs, cs, gates, c["xw"], c["rk"], c["h0"], c["c0"], None, False, None, 4, 2,
                       scratch, 1)   # gelu: not a recurrent activation
    with pytest.raises(ValueError, match="scratch"):
        R.lstm_forward(hs, cs, gates, c["xw"], c["rk"], c["h0"], c["c0"], None, False, None, 3, 2,
                       scratch[:-1], 1)


def test_mixin_falls_back_for_float64():
    c = _case("gru", 2, 3, 4, 0, True, False, np.float64)
    a = _run(NAT, "gru", c, False)
    b = _run(REF, "gru", c, False)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("shape,V,D", [((1,), 1, 1), ((3, 7), 11, 5), ((64, 80), 1000, 64), ((5, 2, 3), 7, 33)])
def test_embedding_backward_c(shape, V, D):
    rng = np.random.default_rng(V)
    ids = rng.integers(0, V, size=shape)
    dy = rng.standard_normal(shape + (D,)).astype(np.float32)
    a = np.full((V, D), 7.0, np.float32)
    NAT.embedding_backward(ids, dy, a)
    ref = np.zeros((V, D))
    np.add.at(ref, ids.reshape(-1), dy.reshape(-1, D).astype(np.float64))
    np.testing.assert_allclose(a, ref, rtol=1e-5, atol=1e-5)
    b = np.empty((V, D), np.float32)
    REF.embedding_backward(ids, dy, b)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="outside"):
        R.embedding_backward(a, np.full(shape, V, np.int64), dy)
