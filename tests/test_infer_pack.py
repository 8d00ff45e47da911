"""Inference with the Dense kernels packed once per predict call
(csrc/step/layer_dense.c infer_pack -> fg_gemm_packb / fg_dense_forward_prepacked):
bitwise the same predictions as packing per product (FASTGRAD_INFER_PACK=0),
on every ISA and for 1/2/3 threads, for row counts below / at / above the
256-row chunk, with the fused activations, softmax and a rank-3 Dense input."""
import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _config, _native
from fastgrad.engine import compiled

from conftest import native_available

pytestmark = [
    pytest.mark.skipif(
        not native_available() or _native.module("step") is None or _native.module("gemm") is None,
        reason="native backend / step module not built"),
    pytest.mark.usefixtures("native_backend"),
]
RT = _native.module("runtime")
ISAS = RT.isa_supported() if RT is not None else []


@pytest.fixture(params=ISAS)
def isa(request):
    orig = _native.get_isa()
    _native.set_isa(request.param)
    yield request.param
    _native.set_isa(orig)


def _mlp(d):
    fg.set_seed(3)
    m = fg.models.Sequential([
        fg.layers.Input((d,)),
        fg.layers.Dense(300, activation="gelu"),   # K = d > KC: several K blocks
        fg.layers.Dense(130, activation="relu"),
        fg.layers.Dense(40),
        fg.layers.Dense(10, activation="softmax"),
    ])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return m


def _seq(d):
    fg.set_seed(4)
    m = fg.models.Sequential([
        fg.layers.Input((5, d)),
        fg.layers.Dense(33, activation="tanh"),
        fg.layers.Flatten(),
        fg.layers.Dense(3),
    ])
    m.compile(optimizer="sgd", loss="mse")
    return m


def _predict_all(plan, x, out_dim, monkeypatch):
    res = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("FASTGRAD_INFER_PACK", flag)
        for t in (1, 2, 3):
            _config.set_num_threads(t)
            for rows in (1, 255, 257, 600):
                out = np.empty((rows, out_dim), np.float32)
                plan.predict(x[:rows], out)
                res[flag, t, rows] = out
    return res


@pytest.mark.parametrize("make,shape,out_dim", [(_mlp, (600, 520), 10), (_seq, (600, 5, 70), 3)])
def test_packed_predict_is_bitwise_unpacked(isa, monkeypatch, make, shape, out_dim):
    saved = _config.get_num_threads()
    try:
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        m = make(shape[-1])
        plan = compiled.inference_plan(m)
        assert plan is not None
        res = _predict_all(plan, x, out_dim, monkeypatch)
        ref = res["0", 1, 600]
        with compiled_off():
            py = m.predict(x, batch_size=600, verbose=0)
        np.testing.assert_allclose(ref, py, rtol=1e-4, atol=1e-5)
        # (a row count may pick another GEMM path, hence the reference per row count)
        for (flag, t, rows), out in res.items():
            want = res["0", 1, rows]
            assert np.array_equal(out.view(np.uint32), want.view(np.uint32)), (flag, t, rows)
    finally:
        _config.set_num_threads(saved)


class compiled_off:
    def __enter__(self):
        self.saved = compiled.enabled
        compiled.enabled = False

    def __exit__(self, *a):
        compiled.enabled = self.saved


def test_model_predict_uses_packed_plan(monkeypatch):
    x = np.random.default_rng(1).standard_normal((1000, 520)).astype(np.float32)
    m = _mlp(520)
    monkeypatch.setenv("FASTGRAD_INFER_PACK", "0")
    a = m.predict(x, verbose=0)
    monkeypatch.setenv("FASTGRAD_INFER_PACK", "1")
    b = m.predict(x, verbose=0)
    assert np.array_equal(a, b)
