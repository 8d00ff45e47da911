"""The 1-D counterparts of the image layers: DepthwiseConv1D, SeparableConv1D,
Conv1DTranspose, ZeroPadding1D, Cropping1D, UpSampling1D, SpatialDropout1D.

Each runs its 2-D twin's ops at height 1 (layers/convolutional.py `_HeightOne`,
layers/spatial.py) and lowers to the 2-D twin's compiled-plan kind at h = 1. Here:
forward against float64 loops written out per layer and against PyTorch float64
(torch marker, every gradient too), finite differences through the layers, the
NumPy and native backends, the compiled plan against the Python executor bitwise for
1/2/3 threads, the C kinds' checks at rank 2, Keras weight layouts / order / names /
configs, save / load (fastgrad and .keras files, and Keras 3 itself when installed),
a model that trains, and bad input.
"""
import json
import os

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _config
from fastgrad.engine import compiled
from fastgrad.engine.workspace import Workspace

from conftest import backends, compiled_enabled, native_available
from test_conv_layers import build64, fd_check

L = fg.layers


def _same(n, k, s, d):
    """Keras's 'same' padding (lo, hi) of one axis, written out again."""
    keff = (k - 1) * d + 1
    out = -(-n // s)
    tot = max((out - 1) * s + keff - n, 0)
    return tot // 2, tot - tot // 2


def _run(layer, x, seed=1):
    ws = Workspace()
    y = np.array(layer.forward(x, True, ws), copy=True)
    dy = np.random.default_rng(seed).standard_normal(y.shape)
    dx = layer.backward(dy.copy(), ws)
    return y, dy, dx


# ---------------------------------------------------------------- float64 references (plain loops)
def ref_depthwise(x, w, b, s, pads, d):
    """y[n, o, c*M + m] = b + sum_k xpad[n, o*s + k*d, c] w[k, c, m]."""
    N, Lx, C = x.shape
    K, _, M = w.shape
    xp = np.pad(x, ((0, 0), pads, (0, 0)))
    O = (xp.shape[1] - ((K - 1) * d + 1)) // s + 1
    y = np.zeros((N, O, C * M))
    for o in range(O):
        for k in range(K):
            y[:, o] += (xp[:, o * s + k * d, :, None] * w[k][None]).reshape(N, C * M)
    return y if b is None else y + b


def ref_transpose(x, w, b, s, d, lo, out_len):
    """y[n, i*s + k*d - lo, f] += x[n, i, c] w[k, f, c], kept inside [0, out_len)."""
    N, Lx, C = x.shape
    K, Fo, _ = w.shape
    y = np.zeros((N, out_len, Fo))
    for i in range(Lx):
        for k in range(K):
            t = i * s + k * d - lo
            if 0 <= t < out_len:
                y[:, t] += x[:, i] @ w[k].T
    return y if b is None else y + b


ACT = {"linear": lambda z: z, "relu": lambda z: np.maximum(z, 0), "tanh": np.tanh,
       "sigmoid": lambda z: 1 / (1 + np.exp(-z))}

DEPTHWISE = [  # (N, L, C, k, stride, padding, dilation, multiplier, activation)
    (2, 9, 3, 3, 1, "valid", 1, 1, "linear"),
    (2, 10, 2, 4, 2, "same", 1, 2, "relu"),
    (1, 11, 4, 3, 3, "same", 2, 3, "tanh"),
    (3, 7, 1, 2, 1, "valid", 3, 2, "linear"),
]


@pytest.mark.parametrize("case", DEPTHWISE)
def test_depthwise_forward_vs_loops(case):
    N, Lx, C, k, s, pad, d, M, act = case
    layer = L.DepthwiseConv1D(k, strides=s, padding=pad, dilation_rate=d, depth_multiplier=M, activation=act)
    p, _ = build64(layer, (Lx, C))
    assert p["kernel"].shape == (k, C, M) and p["bias"].shape == (C * M,)
    x = np.random.default_rng(2).standard_normal((N, Lx, C))
    pads = _same(Lx, k, s, d) if pad == "same" else (0, 0)
    want = ACT[act](ref_depthwise(x, p["kernel"], p["bias"], s, pads, d))
    np.testing.assert_allclose(layer.forward(x, False, Workspace()), want, rtol=1e-12, atol=1e-12)
    assert layer.output_shape == want.shape[1:]


SEPARABLE = [  # (N, L, C, filters, k, stride, padding, dilation, multiplier, activation)
    (2, 9, 3, 4, 3, 1, "valid", 1, 1, "linear"),
    (2, 10, 2, 3, 4, 2, "same", 1, 2, "relu"),
    (1, 12, 3, 2, 3, 1, "same", 2, 2, "tanh"),
]


@pytest.mark.parametrize("case", SEPARABLE)
def test_separable_forward_vs_loops(case):
    N, Lx, C, Fo, k, s, pad, d, M, act = case
    layer = L.SeparableConv1D(Fo, k, strides=s, padding=pad, dilation_rate=d, depth_multiplier=M,
                              activation=act)
    p, _ = build64(layer, (Lx, C))
    assert [sp.name for sp in layer.param_specs()] == ["depthwise_kernel", "pointwise_kernel", "bias"]
    assert p["depthwise_kernel"].shape == (k, C, M) and p["pointwise_kernel"].shape == (1, C * M, Fo)
    x = np.random.default_rng(3).standard_normal((N, Lx, C))
    pads = _same(Lx, k, s, d) if pad == "same" else (0, 0)
    mid = ref_depthwise(x, p["depthwise_kernel"], None, s, pads, d)
    want = ACT[act](mid @ p["pointwise_kernel"][0] + p["bias"])
    np.testing.assert_allclose(layer.forward(x, False, Workspace()), want, rtol=1e-12, atol=1e-12)


TRANSPOSE = [  # (N, L, C, filters, k, stride, padding, output_padding, dilation, activation)
    (2, 5, 3, 2, 3, 1, "valid", None, 1, "linear"),
    (2, 5, 3, 2, 3, 2, "same", None, 1, "relu"),
    (1, 4, 2, 4, 4, 2, "same", None, 1, "tanh"),
    (2, 3, 2, 3, 2, 3, "valid", None, 1, "linear"),    # kernel < stride: steps only the bias reaches
    (1, 5, 3, 2, 3, 2, "valid", 1, 1, "linear"),
    (1, 4, 2, 3, 5, 3, "same", 2, 1, "sigmoid"),
    (2, 4, 2, 2, 3, 1, "same", None, 2, "linear"),
]


def _transpose_len(n, k, s, pad, op, d):
    """Keras's deconv_output_length, written out again."""
    keff = (k - 1) * d + 1
    if op is None:
        return n * s + max(keff - s, 0) if pad == "valid" else n * s
    return (n - 1) * s + keff - 2 * (keff // 2 if pad == "same" else 0) + op


@pytest.mark.parametrize("case", TRANSPOSE)
def test_transpose_forward_vs_loops(case):
    N, Lx, C, Fo, k, s, pad, op, d, act = case
    layer = L.Conv1DTranspose(Fo, k, strides=s, padding=pad, output_padding=op, dilation_rate=d, activation=act)
    p, _ = build64(layer, (Lx, C))
    assert p["kernel"].shape == (k, Fo, C)
    x = np.random.default_rng(4).standard_normal((N, Lx, C))
    out_len = _transpose_len(Lx, k, s, pad, op, d)
    total = (Lx - 1) * s + (k - 1) * d + 1 - out_len
    lo = max(total, 0) // 2 if pad == "same" else 0
    want = ACT[act](ref_transpose(x, p["kernel"], p["bias"], s, d, lo, out_len))
    y = layer.forward(x, False, Workspace())
    assert y.shape == (N, out_len, Fo)
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)


def test_shape_layers_vs_numpy():
    x = np.random.default_rng(5).standard_normal((2, 6, 3))
    for layer, want in [(L.ZeroPadding1D(), np.pad(x, ((0, 0), (1, 1), (0, 0)))),
                        (L.ZeroPadding1D((0, 3)), np.pad(x, ((0, 0), (0, 3), (0, 0)))),
                        (L.Cropping1D(), x[:, 1:-1]), (L.Cropping1D((2, 0)), x[:, 2:]),
                        (L.Cropping1D(2), x[:, 2:4]), (L.UpSampling1D(), np.repeat(x, 2, axis=1)),
                        (L.UpSampling1D(3), np.repeat(x, 3, axis=1))]:
        layer.build((6, 3))
        np.testing.assert_array_equal(layer.forward(x, True, Workspace()), want)


def test_spatial_dropout_1d_drops_whole_channels():
    layer = L.SpatialDropout1D(0.5, seed=3)
    layer.build((7, 16))
    x = np.ones((4, 7, 16), np.float32)
    y = layer.forward(x, True, Workspace())
    assert (y == y[:, :1]).all() and 0 < (y[:, 0] == 0).sum() < 64
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert layer.forward(x, False, Workspace()) is x
    assert layer.get_rng_state()["offset"] == 4 * 16
    # the same flags as SpatialDropout2D's on an image of one row (one (N, C) stream)
    two = L.SpatialDropout2D(0.5, seed=3)
    two.build((1, 7, 16))
    np.testing.assert_array_equal(two.forward(x[:, None], True, Workspace())[:, 0], y)


# ---------------------------------------------------------------- finite differences
@pytest.mark.parametrize("make, shape", [
    (lambda: L.DepthwiseConv1D(3, strides=2, padding="same", depth_multiplier=2, activation="elu"), (7, 2)),
    (lambda: L.DepthwiseConv1D(2, dilation_rate=2, use_bias=False, activation="tanh"), (6, 3)),
    (lambda: L.SeparableConv1D(3, 3, padding="same", depth_multiplier=2, activation="tanh"), (6, 2)),
    (lambda: L.SeparableConv1D(2, 2, strides=2, dilation_rate=1, activation="softplus"), (7, 3)),
    (lambda: L.Conv1DTranspose(2, 3, strides=2, padding="same", activation="sigmoid"), (4, 2)),
    (lambda: L.Conv1DTranspose(3, 2, strides=3, output_padding=1), (3, 2)),
    (lambda: L.Conv1DTranspose(2, 3, dilation_rate=2, padding="same", activation="silu"), (4, 3)),
    (lambda: L.ZeroPadding1D((2, 1)), (4, 2)),
    (lambda: L.Cropping1D((1, 2)), (6, 2)),
    (lambda: L.UpSampling1D(3), (3, 2)),
])
def test_finite_differences(make, shape):
    fd_check(make(), shape)


# ---------------------------------------------------------------- PyTorch float64
@pytest.mark.torch
class TestTorch:
    RTOL, ATOL = 1e-10, 1e-11

    @staticmethod
    def _t(a):
        import torch
        return torch.tensor(np.ascontiguousarray(a), dtype=torch.float64, requires_grad=True)

    def _check(self, y, tref, dy, dx, tx, grads=(), tgrads=()):
        import torch
        (tref * torch.tensor(dy)).sum().backward()
        np.testing.assert_allclose(y, tref.detach().numpy(), rtol=self.RTOL, atol=self.ATOL)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-9, atol=1e-10)
        for g, tg in zip(grads, tgrads):
            np.testing.assert_allclose(g, tg.grad.numpy(), rtol=1e-9, atol=1e-10)

    @staticmethod
    def _act(name, z):
        import torch
        return {"linear": lambda v: v, "relu": torch.relu, "tanh": torch.tanh,
                "sigmoid": torch.sigmoid}[name](z)

    @pytest.mark.parametrize("case", DEPTHWISE)
    def test_depthwise(self, case):
        import torch.nn.functional as F
        N, Lx, C, k, s, pad, d, M, act = case
        layer = L.DepthwiseConv1D(k, strides=s, padding=pad, dilation_rate=d, depth_multiplier=M,
                                  activation=act)
        p, gr = build64(layer, (Lx, C))
        x = np.random.default_rng(6).standard_normal((N, Lx, C))
        y, dy, dx = _run(layer, x)
        lo, hi = _same(Lx, k, s, d) if pad == "same" else (0, 0)
        tx, tw, tb = self._t(x), self._t(p["kernel"]), self._t(p["bias"])
        z = F.conv1d(F.pad(tx.permute(0, 2, 1), (lo, hi)), tw.reshape(k, 1, C * M).permute(2, 1, 0), tb,
                     stride=s, dilation=d, groups=C)
        self._check(y, self._act(act, z).permute(0, 2, 1), dy, dx, tx, [gr["kernel"], gr["bias"]], [tw, tb])

    @pytest.mark.parametrize("case", SEPARABLE)
    def test_separable(self, case):
        import torch.nn.functional as F
        N, Lx, C, Fo, k, s, pad, d, M, act = case
        layer = L.SeparableConv1D(Fo, k, strides=s, padding=pad, dilation_rate=d, depth_multiplier=M,
                                  activation=act)
        p, gr = build64(layer, (Lx, C))
        x = np.random.default_rng(7).standard_normal((N, Lx, C))
        y, dy, dx = _run(layer, x)
        lo, hi = _same(Lx, k, s, d) if pad == "same" else (0, 0)
        tx, tdw, tpw, tb = (self._t(x), self._t(p["depthwise_kernel"]), self._t(p["pointwise_kernel"]),
                            self._t(p["bias"]))
        mid = F.conv1d(F.pad(tx.permute(0, 2, 1), (lo, hi)), tdw.reshape(k, 1, C * M).permute(2, 1, 0),
                       stride=s, dilation=d, groups=C)
        z = F.conv1d(mid, tpw.permute(2, 1, 0), tb)
        self._check(y, self._act(act, z).permute(0, 2, 1), dy, dx, tx,
                    [gr["depthwise_kernel"], gr["pointwise_kernel"], gr["bias"]], [tdw, tpw, tb])

    @pytest.mark.parametrize("case", TRANSPOSE)
    def test_transpose(self, case):
        import torch.nn.functional as F
        N, Lx, C, Fo, k, s, pad, op, d, act = case
        layer = L.Conv1DTranspose(Fo, k, strides=s, padding=pad, output_padding=op, dilation_rate=d,
                                  activation=act)
        p, gr = build64(layer, (Lx, C))
        x = np.random.default_rng(8).standard_normal((N, Lx, C))
        y, dy, dx = _run(layer, x)
        lo, hi = layer._pads
        tx, tw, tb = self._t(x), self._t(p["kernel"]), self._t(p["bias"])
        full = F.conv_transpose1d(tx.permute(0, 2, 1), tw.permute(2, 1, 0), None, stride=s, dilation=d)
        full = F.pad(full, (0, max(-hi, 0)))
        z = full[:, :, lo:full.shape[2] - max(hi, 0)] + tb[None, :, None]
        self._check(y, self._act(act, z).permute(0, 2, 1), dy, dx, tx, [gr["kernel"], gr["bias"]], [tw, tb])

    def test_transpose_same_stride1_is_torch_padding(self):
        import torch.nn.functional as F
        layer = L.Conv1DTranspose(3, 5, padding="same", use_bias=False)
        p, gr = build64(layer, (6, 2))
        x = np.random.default_rng(9).standard_normal((2, 6, 2))
        y, dy, dx = _run(layer, x)
        tx, tw = self._t(x), self._t(p["kernel"])
        z = F.conv_transpose1d(tx.permute(0, 2, 1), tw.permute(2, 1, 0), padding=2)
        self._check(y, z.permute(0, 2, 1), dy, dx, tx, [gr["kernel"]], [tw])

    @pytest.mark.parametrize("make, ref", [
        (lambda: L.ZeroPadding1D((2, 1)), lambda F, t: F.pad(t, (0, 0, 2, 1))),
        (lambda: L.Cropping1D((1, 2)), lambda F, t: t[:, 1:-2]),
        (lambda: L.UpSampling1D(3),
         lambda F, t: F.interpolate(t.permute(0, 2, 1), scale_factor=3, mode="nearest").permute(0, 2, 1)),
    ])
    def test_shape_layers(self, make, ref):
        import torch.nn.functional as F
        layer = make()
        layer.build((6, 3))
        x = np.random.default_rng(10).standard_normal((2, 6, 3))
        y, dy, dx = _run(layer, x)
        tx = self._t(x)
        self._check(y, ref(F, tx), dy, dx, tx)


# ---------------------------------------------------------------- models
def one_d_model(seed=3, with_dropout=True):
    """One layer of every new 1-D kind (and a second of some, with other options)."""
    fg.set_seed(seed)
    a = fg.Input(shape=(13, 3))
    h = L.DepthwiseConv1D(3, strides=2, padding="same", depth_multiplier=2, activation="gelu")(a)
    h = L.DepthwiseConv1D(2, dilation_rate=2, use_bias=False, activation="relu",
                          depthwise_regularizer=fg.regularizers.L2(0.01))(h)
    h = L.SeparableConv1D(5, 3, padding="same", depth_multiplier=2, activation="elu")(h)
    h = L.SeparableConv1D(4, 2, strides=2, use_bias=False, activation="tanh")(h)
    h = L.Conv1DTranspose(4, 3, strides=2, padding="same", activation="relu")(h)
    h = L.Conv1DTranspose(3, 2, strides=3, output_padding=1, activation="sigmoid")(h)
    h = L.Conv1DTranspose(3, 3, dilation_rate=2, padding="same", use_bias=False)(h)
    h = L.ZeroPadding1D((2, 1))(h)
    h = L.Cropping1D((1, 3))(h)
    h = L.UpSampling1D(2)(h)
    if with_dropout:
        h = L.SpatialDropout1D(0.3)(h)
        h = L.SpatialDropout1D(0.2, seed=7)(h)
    h = L.Conv1D(3, 3, strides=2, activation="relu")(h)
    out = L.Dense(3, activation="softmax")(L.Flatten()(h))
    m = fg.Model(a, out)
    m.compile(optimizer=fg.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def _data(n=37, seed=0):
    r = np.random.default_rng(seed)
    return r.standard_normal((n, 13, 3)).astype(np.float32), r.integers(0, 3, n)


def test_weights_order_names_and_shapes():
    m = one_d_model()
    assert [w.shape for w in m.get_weights()[:12]] == [
        (3, 3, 2), (6,), (2, 6, 1), (3, 6, 2), (1, 12, 5), (5,), (2, 5, 1), (1, 5, 4),
        (3, 4, 4), (4,), (2, 3, 4), (3,)]
    names = [l.name for l in m.layers if type(l).__name__ != "InputLayer"]
    for prefix in ("depthwise_conv1d", "separable_conv1d", "conv1d_transpose", "zero_padding1d", "cropping1d",
                   "up_sampling1d", "spatial_dropout1d"):
        assert any(n.startswith(prefix) for n in names), prefix
    assert L.SeparableConvolution1D is L.SeparableConv1D and L.Convolution1DTranspose is L.Conv1DTranspose


def test_get_set_weights_round_trip():
    m = one_d_model()
    ws = [np.random.default_rng(i).standard_normal(w.shape).astype(np.float32)
          for i, w in enumerate(m.get_weights())]
    m.set_weights(ws)
    assert all(np.array_equal(a, b) for a, b in zip(m.get_weights(), ws))
    layer = next(l for l in m.layers if type(l).__name__ == "Conv1DTranspose")
    np.testing.assert_array_equal(layer.kernel, ws[8])     # after 2 depthwise and 2 separable arrays sets


ALL = [
    L.DepthwiseConv1D(3, strides=2, padding="same", depth_multiplier=2, dilation_rate=1, activation="relu",
                      depthwise_regularizer="l2", depthwise_initializer="he_normal"),
    L.SeparableConv1D(4, 3, strides=1, padding="valid", dilation_rate=2, depth_multiplier=3, use_bias=False,
                      pointwise_regularizer=fg.regularizers.L1(0.01)),
    L.Conv1DTranspose(3, 4, strides=2, padding="same", output_padding=1, activation="sigmoid",
                      kernel_regularizer="l1"),
    L.Conv1DTranspose(2, 3),
    L.ZeroPadding1D(3), L.ZeroPadding1D((1, 2)), L.Cropping1D(), L.Cropping1D((0, 2)), L.UpSampling1D(4),
    L.SpatialDropout1D(0.3, seed=5),
]


@pytest.mark.parametrize("layer", ALL, ids=lambda l: l.name)
def test_config_round_trip(layer):
    cfg = layer.get_config()
    cfg2 = json.loads(json.dumps(cfg))
    clone = type(layer).from_config(cfg2)
    assert clone.get_config() == cfg
    d = L.deserialize(L.serialize(layer))
    assert type(d) is type(layer) and d.get_config() == cfg


def test_keras_defaults():
    assert L.ZeroPadding1D().padding == (1, 1)
    assert L.Cropping1D().cropping == (1, 1)
    assert L.UpSampling1D().size == 2
    t = L.Conv1DTranspose(2, 3)
    assert (t.strides, t.padding, t.output_padding, t.dilation_rate) == ((1,), "valid", None, (1,))
    s = L.SeparableConv1D(2, 3)
    assert (s.strides, s.padding, s.depth_multiplier, s.dilation_rate) == ((1,), "valid", 1, (1,))
    d = L.DepthwiseConv1D(3)
    assert (d.strides, d.padding, d.depth_multiplier) == ((1,), "valid", 1)
    assert L.SpatialDropout1D(0.5).get_config()["seed"] is None


def test_model_trains():
    m = one_d_model()
    r = np.random.default_rng(1)
    x = r.standard_normal((96, 13, 3)).astype(np.float32)
    y = (x[:, :, 0].mean(1) > x[:, :, 1].mean(1)).astype(np.int64) + (x[:, :, 2].mean(1) > 0.3)
    h = m.fit(x, y, epochs=12, batch_size=16, verbose=0)
    assert h.history["loss"][-1] < 0.8 * h.history["loss"][0]


def test_save_load_round_trip(tmp_path):
    m = one_d_model()
    x, y = _data()
    m.fit(x, y, epochs=1, batch_size=8, verbose=0)
    for name in ("m.fgm", "m.keras"):
        path = str(tmp_path / name)
        m.save(path)
        m2 = fg.models.load_model(path)
        assert all(np.array_equal(a, b) for a, b in zip(m.get_weights(), m2.get_weights())), name
        np.testing.assert_array_equal(m.predict(x, verbose=0), m2.predict(x, verbose=0))
        assert [type(l).__name__ for l in m2.layers] == [type(l).__name__ for l in m.layers]
    lines = []
    m.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Conv1DTranspose" in text and "SeparableConv1D" in text and "(None, 7, 6)" in text


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("make, shape, msg", [
    (lambda: L.DepthwiseConv1D(3), (8, 8, 3), r"DepthwiseConv1D depthwise_conv1d.*rank 2 \(steps, channels\).*"
                                              r"\(8, 8, 3\)"),
    (lambda: L.SeparableConv1D(2, 3), (8,), r"SeparableConv1D.*rank 2"),
    (lambda: L.Conv1DTranspose(2, 3), (4, 4, 2), r"Conv1DTranspose.*rank 2"),
    (lambda: L.ZeroPadding1D(), (4, 4, 2), r"ZeroPadding1D.*rank 2"),
    (lambda: L.Cropping1D(), (4,), r"Cropping1D.*rank 2"),
    (lambda: L.UpSampling1D(), (4, 4, 2), r"UpSampling1D.*rank 2"),
    (lambda: L.SpatialDropout1D(0.2), (4, 4, 2), r"SpatialDropout1D.*rank 2"),
    (lambda: L.SpatialDropout2D(0.2), (4, 2), r"SpatialDropout2D.*rank 3"),
    (lambda: L.DepthwiseConv1D(5), (3, 2), r"DepthwiseConv1D.*kernel \(5,\).*larger than the padded input \(3,\)"),
    (lambda: L.SeparableConv1D(2, 3, dilation_rate=3), (6, 2), r"dilated to \(7,\)"),
    (lambda: L.Cropping1D((2, 2)), (4, 2), r"Cropping1D.*cropping \(2, 2\) leaves nothing.*\(4, 2\)"),
    (lambda: L.Cropping1D((5, 0)), (4, 2), r"leaves nothing"),
])
def test_bad_input_shapes(make, shape, msg):
    with pytest.raises(ValueError, match=msg):
        make().build(shape)


@pytest.mark.parametrize("make, msg", [
    (lambda: L.DepthwiseConv1D(3, strides=0), r"DepthwiseConv1D.*strides must be positive, got \(0,\)"),
    (lambda: L.SeparableConv1D(2, 3, strides=-1), r"SeparableConv1D.*strides must be positive"),
    (lambda: L.Conv1DTranspose(2, 3, strides=0), r"Conv1DTranspose.*strides must be positive"),
    (lambda: L.Conv1DTranspose(2, 0), r"kernel_size must be positive"),
    (lambda: L.Conv1DTranspose(0, 3), r"filters must be a positive integer"),
    (lambda: L.SeparableConv1D(2, (3, 3)), r"kernel_size must be an integer or a tuple of 1 integers"),
    (lambda: L.Conv1DTranspose(2, 3, strides=2, output_padding=2), r"output_padding.*smaller"),
    (lambda: L.DepthwiseConv1D(3, depth_multiplier=0), r"depth_multiplier"),
    (lambda: L.SeparableConv1D(2, 3, padding="causal"), r"padding must be one of valid, same"),
    (lambda: L.DepthwiseConv1D(3, padding="causal"), r"padding must be one of valid, same"),
    (lambda: L.Conv1DTranspose(2, 3, data_format="channels_first"), r"Conv1DTranspose.*channels_last"),
    (lambda: L.DepthwiseConv1D(3, data_format="channels_first"), r"channels_last"),
    (lambda: L.SeparableConv1D(2, 3, data_format="channels_first"), r"channels_last"),
    (lambda: L.ZeroPadding1D(data_format="channels_first"), r"ZeroPadding1D.*channels_last"),
    (lambda: L.SeparableConv1D(2, 3, activation="softmax"), r"not element-wise"),
    (lambda: L.Conv1DTranspose(2, 3, kernel_constraint="non_neg"), r"kernel_constraint is not supported"),
    (lambda: L.ZeroPadding1D(-1), r"ZeroPadding1D.*non-negative"),
    (lambda: L.ZeroPadding1D((1, 2, 3)), r"ZeroPadding1D.*padding"),
    (lambda: L.Cropping1D((-1, 0)), r"Cropping1D.*non-negative"),
    (lambda: L.UpSampling1D(0), r"UpSampling1D.*size must be positive"),
    (lambda: L.UpSampling1D(1.5), r"UpSampling1D.*size must be an integer"),
    (lambda: L.SpatialDropout1D(1.0), r"rate must be a number in \[0, 1\)"),
])
def test_bad_arguments(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()


def test_wrong_channel_count_after_build():
    layer = L.SeparableConv1D(2, 3)
    layer(np.zeros((1, 6, 3), np.float32))
    with pytest.raises(ValueError, match=r"separable_conv1d.*built for input shape \(6, 3\).*\(6, 4\)"):
        layer(np.zeros((1, 6, 4), np.float32))
    m = fg.Sequential([fg.Input((8, 3)), L.DepthwiseConv1D(3), L.Flatten(), L.Dense(1)])
    m.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match=r"8, 2|\(8, 3\)"):
        m.fit(np.zeros((4, 8, 2), np.float32), np.zeros((4, 1), np.float32), verbose=0)


# ---------------------------------------------------------------- native backend and the compiled plan
needs_plan = pytest.mark.skipif(
    not native_available() or fg._native.module("step") is None or fg._native.module("conv") is None,
    reason="native backend / step / conv modules not built")


@pytest.mark.skipif(len(backends()) < 2, reason="native backend not built")
def test_numpy_and_native_backends_agree():
    x, y = _data(n=16, seed=4)
    got = {}
    for backend in ("numpy", "native"):
        fg.set_backend(backend)
        m = one_d_model(seed=5)
        with compiled_enabled(False):         # the Python executor on each backend's ops
            fg.set_seed(2)
            m.fit(x, y, batch_size=8, epochs=1, verbose=0)
            got[backend] = (m.predict(x, verbose=0), m.get_weights())
    np.testing.assert_allclose(got["native"][0], got["numpy"][0], rtol=2e-5, atol=2e-6)
    for a, b in zip(got["native"][1], got["numpy"][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _fit(on, threads, with_dropout=True):
    _config.set_num_threads(threads)
    m = one_d_model(with_dropout=with_dropout)
    x, y = _data()
    with compiled_enabled(on):
        fg.set_seed(11)
        h = m.fit(x, y, batch_size=8, epochs=2, verbose=0)
        ev = m.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
        pr = m.predict(x[:21], batch_size=8, verbose=0)
        plan = m.__dict__.get("_fg_train_plan", (None, None))[1]
        assert (plan is not None) == on, compiled.unsupported_reason(m)
    rng = [layer.get_rng_state() for layer in m.layers if hasattr(layer, "get_rng_state")]
    return m, h.history, ev, pr, rng


@needs_plan
@pytest.mark.usefixtures("native_backend")
def test_every_1d_layer_lowers_to_the_plan():
    m = one_d_model()
    assert compiled.unsupported_reason(m) is None
    assert compiled.unsupported_reason(m, False) is None


@needs_plan
@pytest.mark.usefixtures("native_backend")
def test_plan_matches_python_executor_bitwise():
    ref = _fit(False, 1)
    for threads in (1, 2, 3):
        got = _fit(True, threads)
        assert all(np.array_equal(u, v) for u, v in zip(got[0].get_weights(), ref[0].get_weights())), threads
        for k in ref[1]:     # a regularizer: C sums the penalty in another order (weights keep their bits)
            np.testing.assert_allclose(got[1][k], ref[1][k], rtol=1e-6)
        assert np.array_equal(got[3], ref[3]), threads
        for k in ref[2]:
            np.testing.assert_allclose(got[2][k], ref[2][k], rtol=1e-6)
        assert got[4] == ref[4]


@needs_plan
@pytest.mark.usefixtures("native_backend")
def test_plan_matches_python_executor_on_every_isa(each_isa):
    from conftest import isa_paths
    for isa in isa_paths():
        fg._native.set_isa(isa)
        ref, got = _fit(False, 2), _fit(True, 2)
        assert all(np.array_equal(u, v) for u, v in zip(got[0].get_weights(), ref[0].get_weights())), isa
        assert np.array_equal(got[3], ref[3]), isa


@needs_plan
@pytest.mark.usefixtures("native_backend")
def test_plan_forward_agrees_with_numpy():
    m = one_d_model(seed=5)
    x, _ = _data(n=13, seed=2)
    with compiled_enabled(True):
        assert compiled.inference_plan(m) is not None, compiled.unsupported_reason(m, False)
        got = m.predict(x, verbose=0)
    fg.set_backend("numpy")
    want = m.predict(x, verbose=0)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def _step():
    return fg._native.module("step")


def _node(kind, shape, **kw):
    return dict(kind=_step().LAYER_KINDS[kind], name="bad", inputs=[0], shape=shape, **kw)


WIN1 = dict(kh=1, kw=3, sh=1, sw=1, dh=1, dw=1, pt=0, pl=0)

GOOD_1D = [
    ((6, 2), lambda: _node("depthwise2d", (4, 4), w_off=0, b_off=100, multiplier=2, **WIN1)),
    ((6, 2), lambda: _node("sepconv2d", (4, 5), w_off=0, w2_off=100, b_off=200, multiplier=2, **WIN1)),
    ((4, 2), lambda: _node("conv2dt", (6, 3), w_off=0, b_off=100, **WIN1)),
    ((4, 2), lambda: _node("pad2d", (7, 2), pt=0, pl=2)),
    ((4, 2), lambda: _node("pad2d", (2, 2), pt=0, pl=-1)),
    ((4, 2), lambda: _node("upsample2d", (12, 2), sh=1, sw=3)),
    ((4, 2), lambda: _node("sdropout", (4, 2), rate=0.5, seed=1, stream=0)),
]

BAD_1D = [
    ((6, 2), lambda: _node("depthwise2d", (4, 4), w_off=0, multiplier=2, **dict(WIN1, kh=3))),   # a 3-row window
    ((6, 2), lambda: _node("depthwise2d", (4, 4, 1), w_off=0, multiplier=2, **WIN1)),            # ranks differ
    ((6, 2), lambda: _node("sepconv2d", (4, 5), w_off=0, w2_off=100, multiplier=2, **dict(WIN1, pt=1))),
    ((6, 2), lambda: _node("sepconv2d", (4, 5), w_off=0, w2_off=100, multiplier=2, **dict(WIN1, sh=2))),
    ((4, 2), lambda: _node("conv2dt", (6, 3), w_off=0, **dict(WIN1, dh=2))),
    ((4, 2), lambda: _node("conv2dt", (20, 3), w_off=0, **WIN1)),                                 # no window reaches
    ((4, 2), lambda: _node("pad2d", (7, 2), pt=1, pl=2)),                                         # a row pad at h = 1
    ((4, 2), lambda: _node("pad2d", (7, 3), pt=0, pl=2)),                                         # channels differ
    ((4, 2), lambda: _node("pad2d", (1, 2), pt=0, pl=-4)),                                        # crops everything
    ((4, 2), lambda: _node("upsample2d", (12, 2), sh=2, sw=3)),                                   # a row factor
    ((4, 2), lambda: _node("upsample2d", (11, 2), sh=1, sw=3)),                                   # 4 * 3 != 11
]


@needs_plan
@pytest.mark.parametrize("inp,node", GOOD_1D, ids=[str(i) for i in range(len(GOOD_1D))])
def test_good_rank2_descriptions_build(inp, node):
    node = node()
    graph = dict(inputs=[inp], nodes=[node], outputs=[1], n_streams=1 if "stream" in node else 0)
    _step().Net(graph, np.zeros(2000, np.float32), None, None, None)


@needs_plan
@pytest.mark.parametrize("inp,node", BAD_1D, ids=[str(i) for i in range(len(BAD_1D))])
def test_bad_rank2_descriptions_raise_naming_the_layer(inp, node):
    node = node()
    graph = dict(inputs=[inp], nodes=[node], outputs=[1], n_streams=1 if "stream" in node else 0)
    with pytest.raises(ValueError, match="layer 'bad'"):
        _step().Net(graph, np.zeros(2000, np.float32), None, None, None)


# ---------------------------------------------------------------- Keras 3 itself
def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except Exception as exc:          # not installed, or its backend is missing
        pytest.skip(f"keras not importable ({exc})")
    if int(keras.__version__.split(".")[0]) < 3:
        pytest.skip("needs Keras 3")
    return keras


def _keras_model(keras):
    Lk = keras.layers
    return keras.Sequential([
        keras.Input((13, 3)),
        Lk.DepthwiseConv1D(3, strides=2, padding="same", depth_multiplier=2, activation="relu"),
        Lk.SeparableConv1D(5, 3, padding="same", depth_multiplier=2, activation="tanh"),
        Lk.Conv1DTranspose(4, 3, strides=2, padding="same"),
        Lk.Conv1DTranspose(3, 4, strides=2, padding="same", output_padding=1),
        Lk.Conv1DTranspose(3, 2, strides=3),
        Lk.ZeroPadding1D((2, 1)), Lk.Cropping1D((1, 3)), Lk.UpSampling1D(2), Lk.SpatialDropout1D(0.3),
        Lk.SeparableConv1D(2, 4, strides=3, dilation_rate=1), Lk.Flatten(), Lk.Dense(2)])


def test_keras_to_fastgrad_and_back(tmp_path):
    pytest.importorskip("h5py")
    keras = _keras()
    km = _keras_model(keras)
    # non-zero biases, so their placement is checked too
    km.set_weights([w + np.random.default_rng(i).standard_normal(w.shape).astype(np.float32) * 0.1
                    for i, w in enumerate(km.get_weights())])
    x = np.random.default_rng(0).standard_normal((3, 13, 3)).astype(np.float32)
    km.save(tmp_path / "k.keras")
    fm = fg.models.load_keras(tmp_path / "k.keras")
    np.testing.assert_allclose(fm.predict(x, verbose=0), km.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
    fm.save(tmp_path / "back.keras")
    km2 = keras.saving.load_model(tmp_path / "back.keras")
    np.testing.assert_allclose(km2.predict(x, verbose=0), km.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
