"""Conv / pooling layers against PyTorch float64 (forward and every gradient).

Each layer is built in float64 (its weights bound to float64 arrays), run
through forward(training=True) / backward with a random dy, and compared with
torch autograd on the same weights converted to NCHW / (out, in/groups, kh, kw).
"""
import itertools

import numpy as np
import pytest

import fastgrad as fg
from fastgrad.engine.workspace import Workspace

torch = pytest.importorskip("torch")
F = torch.nn.functional
pytestmark = pytest.mark.torch

L = fg.layers
RTOL, ATOL = 1e-10, 1e-11


def build64(layer, in_shape, seed=0, scale=0.5):
    """Build `layer` for per-sample `in_shape` with float64 weights (returned by name)."""
    layer.build(tuple(in_shape))
    r = np.random.default_rng(seed)
    params = {s.name: r.standard_normal(s.shape) * scale for s in layer.param_specs()}
    grads = {s.name: np.full(s.shape, np.nan) for s in layer.param_specs()}
    state = {s.name: np.asarray(s.initializer(s.shape), dtype=np.float64) for s in layer.state_specs()}
    layer.bind(params, grads, state)
    return params, grads


def run(layer, x, dy_seed=1):
    ws = Workspace()
    y = np.array(layer.forward(x, True, ws), copy=True)
    dy = np.random.default_rng(dy_seed).standard_normal(y.shape)
    dx = layer.backward(dy.copy(), ws)
    return y, dy, dx


def t(a):
    return torch.tensor(np.ascontiguousarray(a), dtype=torch.float64, requires_grad=True)


def nchw(a):
    return a.permute(0, 3, 1, 2)


def nhwc(a):
    return a.permute(0, 2, 3, 1)


def check(y, tref, dy, dx, tx, grads=(), tgrads=()):
    (tref * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(y, tref.detach().numpy(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-9, atol=1e-10)
    for g, tg in zip(grads, tgrads):
        np.testing.assert_allclose(g, tg.grad.numpy(), rtol=1e-9, atol=1e-10)


TORCH_ACT = {"linear": lambda z: z, "relu": F.relu, "tanh": torch.tanh, "gelu": F.gelu,
             "sigmoid": torch.sigmoid}


def keras_same(n, k, s, d):
    keff = (k - 1) * d + 1
    out = -(-n // s)
    tot = max((out - 1) * s + keff - n, 0)
    return tot // 2, tot - tot // 2


CONV2D = [
    # (N, H, W, C, filters, kernel, strides, padding, dilation, groups, activation)
    (2, 7, 9, 3, 4, (3, 3), (1, 1), "valid", (1, 1), 1, "linear"),
    (2, 7, 9, 3, 4, (3, 3), (1, 1), "same", (1, 1), 1, "relu"),
    (1, 8, 6, 2, 5, (4, 2), (2, 2), "same", (1, 1), 1, "tanh"),      # even kernel: asymmetric pads
    (3, 11, 10, 4, 6, (3, 5), (3, 2), "valid", (1, 1), 2, "gelu"),
    (2, 9, 9, 6, 6, (3, 3), (1, 1), "same", (2, 2), 3, "linear"),
    (2, 13, 7, 4, 8, (2, 3), (2, 1), "same", (2, 1), 4, "sigmoid"),
    (1, 5, 5, 1, 3, (5, 5), (1, 1), "valid", (1, 1), 1, "linear"),   # kernel == input
    (2, 6, 5, 5, 7, (1, 1), (1, 1), "valid", (1, 1), 1, "relu"),     # 1x1
    (2, 7, 8, 3, 2, (1, 1), (2, 3), "same", (1, 1), 1, "linear"),
]


@pytest.mark.parametrize("case", CONV2D)
def test_conv2d_layer_vs_torch(case):
    N, H, W, C, Fo, k, s, pad, d, g, act = case
    layer = L.Conv2D(Fo, k, strides=s, padding=pad, dilation_rate=d, groups=g, activation=act)
    p, gr = build64(layer, (H, W, C))
    x = np.random.default_rng(2).standard_normal((N, H, W, C))
    y, dy, dx = run(layer, x)
    if pad == "same":
        (pt, pb), (pl, pr) = keras_same(H, k[0], s[0], d[0]), keras_same(W, k[1], s[1], d[1])
        assert layer._pads == (pt, pb, pl, pr)
        assert y.shape[1:3] == (-(-H // s[0]), -(-W // s[1]))
    else:
        pt = pb = pl = pr = 0
    tx, tw, tb = t(x), t(p["kernel"]), t(p["bias"])
    z = F.conv2d(F.pad(nchw(tx), (pl, pr, pt, pb)), tw.permute(3, 2, 0, 1), tb, stride=s, dilation=d, groups=g)
    check(y, nhwc(TORCH_ACT[act](z)), dy, dx, tx, [gr["kernel"], gr["bias"]], [tw, tb])


CONV1D = [
    (2, 11, 3, 4, 3, 1, "valid", 1, 1, "linear"),
    (2, 10, 4, 6, 4, 2, "same", 1, 2, "relu"),
    (3, 9, 2, 3, 3, 1, "causal", 2, 1, "tanh"),
    (1, 13, 6, 6, 5, 3, "same", 1, 6, "linear"),
]


@pytest.mark.parametrize("case", CONV1D)
def test_conv1d_layer_vs_torch(case):
    N, Lx, C, Fo, k, s, pad, d, g, act = case
    layer = L.Conv1D(Fo, k, strides=s, padding=pad, dilation_rate=d, groups=g, activation=act)
    p, gr = build64(layer, (Lx, C))
    x = np.random.default_rng(3).standard_normal((N, Lx, C))
    y, dy, dx = run(layer, x)
    if pad == "same":
        pl, pr = keras_same(Lx, k, s, d)
    elif pad == "causal":
        pl, pr = d * (k - 1), 0
        assert y.shape[1] == Lx
    else:
        pl = pr = 0
    tx, tw, tb = t(x), t(p["kernel"]), t(p["bias"])
    z = F.conv1d(F.pad(tx.permute(0, 2, 1), (pl, pr)), tw.permute(2, 1, 0), tb, stride=s, dilation=d, groups=g)
    check(y, TORCH_ACT[act](z).permute(0, 2, 1), dy, dx, tx, [gr["kernel"], gr["bias"]], [tw, tb])


DEPTHWISE = [
    (2, 7, 8, 3, (3, 3), (1, 1), "valid", (1, 1), 1, "linear"),
    (2, 9, 7, 2, (3, 2), (2, 1), "same", (1, 1), 3, "relu"),
    (1, 10, 10, 4, (3, 3), (1, 1), "same", (2, 3), 2, "tanh"),
]


@pytest.mark.parametrize("case", DEPTHWISE)
def test_depthwise_layer_vs_torch(case):
    N, H, W, C, k, s, pad, d, M, act = case
    layer = L.DepthwiseConv2D(k, strides=s, padding=pad, dilation_rate=d, depth_multiplier=M, activation=act)
    p, gr = build64(layer, (H, W, C))
    assert p["kernel"].shape == k + (C, M)
    x = np.random.default_rng(4).standard_normal((N, H, W, C))
    y, dy, dx = run(layer, x)
    (pt, pb), (pl, pr) = ((keras_same(H, k[0], s[0], d[0]), keras_same(W, k[1], s[1], d[1]))
                          if pad == "same" else ((0, 0), (0, 0)))
    tx, tw, tb = t(x), t(p["kernel"]), t(p["bias"])
    wt = tw.reshape(k[0], k[1], 1, C * M).permute(3, 2, 0, 1)
    z = F.conv2d(F.pad(nchw(tx), (pl, pr, pt, pb)), wt, tb, stride=s, dilation=d, groups=C)
    check(y, nhwc(TORCH_ACT[act](z)), dy, dx, tx, [gr["kernel"], gr["bias"]], [tw, tb])


@pytest.mark.parametrize("case", [((2, 8, 7, 3), 5, (3, 3), (1, 1), "same", 2, "relu"),
                                  ((1, 9, 9, 4), 3, (2, 3), (2, 2), "valid", 1, "linear")])
def test_separable_layer_vs_torch(case):
    (N, H, W, C), Fo, k, s, pad, M, act = case
    layer = L.SeparableConv2D(Fo, k, strides=s, padding=pad, depth_multiplier=M, activation=act)
    p, gr = build64(layer, (H, W, C))
    assert [sp.name for sp in layer.param_specs()] == ["depthwise_kernel", "pointwise_kernel", "bias"]
    x = np.random.default_rng(5).standard_normal((N, H, W, C))
    y, dy, dx = run(layer, x)
    (pt, pb), (pl, pr) = ((keras_same(H, k[0], s[0], 1), keras_same(W, k[1], s[1], 1))
                          if pad == "same" else ((0, 0), (0, 0)))
    tx, tdw, tpw, tb = t(x), t(p["depthwise_kernel"]), t(p["pointwise_kernel"]), t(p["bias"])
    mid = F.conv2d(F.pad(nchw(tx), (pl, pr, pt, pb)), tdw.reshape(k[0], k[1], 1, C * M).permute(3, 2, 0, 1),
                   stride=s, groups=C)
    z = F.conv2d(mid, tpw.permute(3, 2, 0, 1), tb)
    check(y, nhwc(TORCH_ACT[act](z)), dy, dx, tx,
          [gr["depthwise_kernel"], gr["pointwise_kernel"], gr["bias"]], [tdw, tpw, tb])


TRANSPOSE = [
    # (N, H, W, C, filters, kernel, strides, padding, output_padding, dilation, act)
    (2, 4, 5, 3, 2, (3, 3), (1, 1), "valid", None, (1, 1), "linear"),
    (2, 4, 5, 3, 2, (3, 3), (2, 2), "same", None, (1, 1), "relu"),
    (1, 3, 4, 2, 4, (4, 3), (2, 3), "same", None, (1, 1), "tanh"),
    (2, 3, 3, 2, 3, (2, 2), (3, 3), "valid", None, (1, 1), "linear"),   # kernel < stride: extra rows
    (1, 5, 4, 3, 2, (3, 3), (2, 2), "valid", (1, 1), (1, 1), "linear"),
    (1, 4, 4, 2, 3, (5, 3), (3, 2), "same", (2, 1), (1, 1), "sigmoid"),
    (2, 4, 3, 2, 2, (3, 2), (1, 1), "same", None, (2, 2), "linear"),
]


@pytest.mark.parametrize("case", TRANSPOSE)
def test_conv2d_transpose_layer_vs_torch(case):
    N, H, W, C, Fo, k, s, pad, op, d, act = case
    layer = L.Conv2DTranspose(Fo, k, strides=s, padding=pad, output_padding=op, dilation_rate=d, activation=act)
    p, gr = build64(layer, (H, W, C))
    assert p["kernel"].shape == k + (Fo, C)
    x = np.random.default_rng(6).standard_normal((N, H, W, C))
    y, dy, dx = run(layer, x)
    # Keras's output size (deconv_output_length)
    for i in range(2):
        keff = (k[i] - 1) * d[i] + 1
        if op is None:
            want = (x.shape[1 + i] * s[i] + max(keff - s[i], 0)) if pad == "valid" else x.shape[1 + i] * s[i]
        else:
            pp = keff // 2 if pad == "same" else 0
            want = (x.shape[1 + i] - 1) * s[i] + keff - 2 * pp + op[i]
        assert y.shape[1 + i] == want
    pt, pb, pl, pr = layer._pads
    tx, tw, tb = t(x), t(p["kernel"]), t(p["bias"])
    full = F.conv_transpose2d(nchw(tx), tw.permute(3, 2, 0, 1), None, stride=s, dilation=d)
    full = F.pad(full, (0, max(-pr, 0), 0, max(-pb, 0)))
    hf, wf = full.shape[2:]
    z = full[:, :, pt:hf - max(pb, 0), pl:wf - max(pr, 0)] + tb[None, :, None, None]
    check(y, nhwc(TORCH_ACT[act](z)), dy, dx, tx, [gr["kernel"], gr["bias"]], [tw, tb])


def test_conv2d_transpose_same_matches_torch_symmetric_case():
    # stride 1, odd kernel: Keras's same == torch padding k // 2
    layer = L.Conv2DTranspose(3, 3, padding="same", use_bias=False)
    p, gr = build64(layer, (5, 6, 2))
    x = np.random.default_rng(7).standard_normal((2, 5, 6, 2))
    y, dy, dx = run(layer, x)
    tx, tw = t(x), t(p["kernel"])
    z = F.conv_transpose2d(nchw(tx), tw.permute(3, 2, 0, 1), padding=1)
    check(y, nhwc(z), dy, dx, tx, [gr["kernel"]], [tw])


POOL2D = [
    ((2, 7, 9, 3), (2, 2), None, "valid"),
    ((2, 7, 9, 3), (2, 2), None, "same"),
    ((1, 8, 6, 2), (3, 3), (2, 2), "same"),
    ((2, 9, 10, 1), (3, 2), (1, 3), "valid"),
    ((1, 5, 5, 4), (4, 4), (3, 3), "same"),
]


@pytest.mark.parametrize("case", POOL2D)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool2d_layer_vs_torch(case, kind):
    shape, pool, strides, pad = case
    cls = L.MaxPooling2D if kind == "max" else L.AveragePooling2D
    layer = cls(pool, strides=strides, padding=pad)
    build64(layer, shape[1:])
    s = pool if strides is None else strides
    x = np.random.default_rng(8).standard_normal(shape)
    y, dy, dx = run(layer, x)
    H, W = shape[1:3]
    (pt, pb), (pl, pr) = ((keras_same(H, pool[0], s[0], 1), keras_same(W, pool[1], s[1], 1))
                          if pad == "same" else ((0, 0), (0, 0)))
    tx = t(x)
    xc = nchw(tx)
    if kind == "max":
        z = F.max_pool2d(F.pad(xc, (pl, pr, pt, pb), value=-float("inf")), pool, s)
    else:
        ssum = F.avg_pool2d(F.pad(xc, (pl, pr, pt, pb)), pool, s, divisor_override=1)
        cnt = F.avg_pool2d(F.pad(torch.ones_like(xc), (pl, pr, pt, pb)), pool, s, divisor_override=1)
        z = ssum / cnt
    check(y, nhwc(z), dy, dx, tx)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("pool, strides, pad", [(2, None, "valid"), (3, 2, "same"), (4, 1, "same")])
def test_pool1d_layer_vs_torch(kind, pool, strides, pad):
    cls = L.MaxPooling1D if kind == "max" else L.AveragePooling1D
    layer = cls(pool, strides=strides, padding=pad)
    build64(layer, (11, 3))
    s = pool if strides is None else strides
    x = np.random.default_rng(9).standard_normal((2, 11, 3))
    y, dy, dx = run(layer, x)
    pl, pr = keras_same(11, pool, s, 1) if pad == "same" else (0, 0)
    tx = t(x)
    xc = tx.permute(0, 2, 1)
    if kind == "max":
        z = F.max_pool1d(F.pad(xc, (pl, pr), value=-float("inf")), pool, s)
    else:
        z = (F.avg_pool1d(F.pad(xc, (pl, pr)), pool, s) /
             F.avg_pool1d(F.pad(torch.ones_like(xc), (pl, pr)), pool, s))
    check(y, z.permute(0, 2, 1), dy, dx, tx)


@pytest.mark.parametrize("cls, rank, red", [
    (L.GlobalAveragePooling2D, 2, "mean"), (L.GlobalMaxPooling2D, 2, "amax"),
    (L.GlobalAveragePooling1D, 1, "mean"), (L.GlobalMaxPooling1D, 1, "amax")])
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_pooling_vs_torch(cls, rank, red, keepdims):
    shape = (3, 5, 7, 4) if rank == 2 else (3, 9, 4)
    layer = cls(keepdims=keepdims)
    build64(layer, shape[1:])
    x = np.random.default_rng(10).standard_normal(shape)
    y, dy, dx = run(layer, x)
    assert y.shape == ((3,) + (1,) * rank + (4,) if keepdims else (3, 4))
    tx = t(x)
    axes = tuple(range(1, rank + 1))
    z = getattr(torch, red)(tx, dim=axes, keepdim=keepdims)
    check(y, z, dy, dx, tx)


def test_global_pooling_1d_mask_vs_torch():
    x = np.random.default_rng(11).standard_normal((3, 6, 2))
    mask = np.array([[1, 1, 1, 0, 0, 0], [1, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], dtype=bool)
    for cls in (L.GlobalAveragePooling1D, L.GlobalMaxPooling1D):
        layer = cls()
        build64(layer, (6, 2))
        layer.set_mask(mask)
        y, dy, dx = run(layer, x)
        tx = t(x)
        tm = torch.tensor(mask)[:, :, None]
        if cls is L.GlobalAveragePooling1D:
            z = (tx * tm).sum(1) / tm.sum(1)
        else:
            z = torch.where(tm, tx, torch.tensor(-float("inf"), dtype=torch.float64)).amax(1)
        check(y, z, dy, dx, tx)
    # eager call with mask=
    out = L.GlobalAveragePooling1D()(x.astype(np.float32), mask=mask)
    np.testing.assert_allclose(out[0], x[0, :3].mean(0), rtol=1e-6)


def test_shape_layers_vs_torch():
    x = np.random.default_rng(12).standard_normal((2, 5, 4, 3))
    for layer, fn in [
            (L.ZeroPadding2D(((1, 2), (3, 0))), lambda a: F.pad(a, (3, 0, 1, 2))),
            (L.ZeroPadding2D(2), lambda a: F.pad(a, (2, 2, 2, 2))),
            (L.Cropping2D(((1, 0), (1, 2))), lambda a: a[:, :, 1:, 1:2]),
            (L.UpSampling2D((2, 3)), lambda a: F.interpolate(a, scale_factor=(2, 3), mode="nearest"))]:
        build64(layer, x.shape[1:])
        y, dy, dx = run(layer, x)
        tx = t(x)
        check(y, nhwc(fn(nchw(tx))), dy, dx, tx)


def test_batchnorm_4d_vs_torch():
    layer = L.BatchNormalization()
    p, gr = build64(layer, (5, 4, 3))
    x = np.random.default_rng(13).standard_normal((4, 5, 4, 3)) * 2 + 1
    y, dy, dx = run(layer, x)
    tx, tg, tb = t(x), t(p["gamma"]), t(p["beta"])
    z = nhwc(F.batch_norm(nchw(tx), None, None, tg, tb, training=True, eps=1e-3))
    check(y, z, dy, dx, tx, [gr["gamma"], gr["beta"]], [tg, tb])


def test_flatten_of_rank4():
    layer = L.Flatten()
    build64(layer, (3, 4, 5))
    x = np.random.default_rng(14).standard_normal((2, 3, 4, 5))
    y, dy, dx = run(layer, x)
    np.testing.assert_array_equal(y, x.reshape(2, -1))
    np.testing.assert_array_equal(dx, dy.reshape(x.shape))


def test_small_lenet_step_matches_torch():
    """One SGD step of a LeNet-like net (float32 model, Python path) against torch float64."""
    fg.utils.set_random_seed(0) if hasattr(fg.utils, "set_random_seed") else None
    model = fg.Sequential([fg.Input((12, 12, 1)), L.Conv2D(3, 5, activation="tanh"),
                           L.AveragePooling2D(), L.Conv2D(4, 3, padding="same", activation="relu"),
                           L.MaxPooling2D(), L.Flatten(), L.Dense(5)])
    model.compile(optimizer=fg.optimizers.SGD(learning_rate=0.1),
                  loss=fg.losses.SparseCategoricalCrossentropy(from_logits=True))
    w0 = model.get_weights()
    r = np.random.default_rng(15)
    x = r.standard_normal((8, 12, 12, 1)).astype(np.float32)
    y = r.integers(0, 5, 8)
    model.train_on_batch(x, y)
    w1 = model.get_weights()
    tw = [torch.tensor(w.astype(np.float64), requires_grad=True) for w in w0]
    h = torch.tanh(F.conv2d(nchw(torch.tensor(x, dtype=torch.float64)), tw[0].permute(3, 2, 0, 1), tw[1]))
    h = F.avg_pool2d(h, 2)
    h = F.relu(F.conv2d(h, tw[2].permute(3, 2, 0, 1), tw[3], padding=1))
    h = F.max_pool2d(h, 2)
    h = nhwc(h).reshape(8, -1)
    logits = h @ tw[4] + tw[5]
    F.cross_entropy(logits, torch.tensor(y)).backward()
    for a, b, tt in zip(w0, w1, tw):
        np.testing.assert_allclose(b, a - 0.1 * tt.grad.numpy(), rtol=2e-4, atol=2e-6)
