"""The image layers' compiled-plan kinds (csrc/step layer_depthwise2d.c,
layer_sepconv2d.c, layer_conv2dt.c, layer_pad2d.c, layer_upsample2d.c,
layer_sdropout.c) and the 1-D conv / pooling layers: a small model per kind
trains through the plan to the Python executor's bits for 1, 2 and 3 threads
(weights after fit, training logs, evaluate, predict, the dropout streams),
its forward agrees with the NumPy backend, and each kind's check refuses bad
descriptions (the model then falls back to the Python step, naming the layer).
Odd sizes, strides, dilations, 'same' / 'valid', depth multipliers and
output_padding are in the models.
"""

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _config
from fastgrad.engine import compiled

from conftest import compiled_enabled, native_available

pytestmark = [
    pytest.mark.skipif(
        not native_available() or fg._native.module("step") is None or fg._native.module("conv") is None,
        reason="native backend / step / conv modules not built"),
    pytest.mark.usefixtures("native_backend"),
]

L = fg.layers


def _head(h, n_out=3):
    return L.Dense(n_out, activation="softmax")(L.Flatten()(h))


def depthwise():
    a = fg.Input(shape=(9, 11, 3))
    h = L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2, activation="gelu")(a)
    h = L.DepthwiseConv2D((2, 3), dilation_rate=(2, 1), use_bias=False, activation="relu",
                          depthwise_regularizer=fg.regularizers.L2(0.01))(h)
    h = L.DepthwiseConv2D((3, 2), strides=(1, 2), padding="same", depth_multiplier=3, activation="tanh")(h)
    return fg.Model(a, _head(h)), (9, 11, 3)


def separable():
    a = fg.Input(shape=(10, 9, 3))
    h = L.SeparableConv2D(5, 3, strides=(2, 1), padding="same", depth_multiplier=2, activation="elu")(a)
    h = L.SeparableConv2D(4, (2, 2), dilation_rate=2, use_bias=False, activation="relu",
                          pointwise_regularizer=fg.regularizers.L1(0.01))(h)
    h = L.SeparableConv2D(3, (3, 1), padding="same", activation="linear")(h)
    return fg.Model(a, _head(h)), (10, 9, 3)


def transpose():
    a = fg.Input(shape=(5, 6, 3))
    h = L.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu")(a)
    h = L.Conv2DTranspose(3, (2, 3), strides=(2, 1), output_padding=(1, 0), activation="gelu",
                          kernel_regularizer=fg.regularizers.L2(0.01))(h)
    h = L.Conv2DTranspose(2, (3, 2), strides=(1, 3), padding="same", use_bias=False)(h)
    h = L.Conv2DTranspose(2, 3, dilation_rate=(2, 1), activation="tanh")(h)
    h = L.Conv2DTranspose(3, (1, 2), strides=(3, 2), padding="valid")(h)   # kernel smaller than stride
    return fg.Model(a, L.Dense(3, activation="softmax")(L.GlobalAveragePooling2D()(h))), (5, 6, 3)


def pad_crop():
    a = fg.Input(shape=(7, 6, 2))
    h = L.Conv2D(3, 2, activation="relu")(a)
    h = L.ZeroPadding2D(((1, 2), (0, 3)))(h)
    h = L.Conv2D(3, 3, activation="tanh")(h)
    h = L.Cropping2D(((1, 0), (2, 1)))(h)
    h = L.ZeroPadding2D(1)(L.Cropping2D(1)(h))
    return fg.Model(a, _head(h)), (7, 6, 2)


def upsample():
    a = fg.Input(shape=(4, 5, 2))
    h = L.Conv2D(3, 2, padding="same")(a)
    h = L.UpSampling2D((2, 3))(h)
    h = L.Conv2D(2, 3, strides=2, activation="relu")(h)
    h = L.UpSampling2D(3)(h)
    h = L.UpSampling2D((1, 1))(h)
    return fg.Model(a, _head(h)), (4, 5, 2)


def spatial_dropout():
    a = fg.Input(shape=(6, 6, 3))
    h = L.Conv2D(4, 3, activation="relu")(a)
    h = L.SpatialDropout2D(0.4)(h)
    h = L.Conv2D(5, 2)(h)
    h = L.SpatialDropout2D(0.3, seed=7)(h)
    h = L.SpatialDropout2D(0.0)(h)
    return fg.Model(a, _head(h)), (6, 6, 3)


def one_d():
    """Conv1D and the 1-D pooling layers (kinds conv2d, pool2d, gpool at h = 1)."""
    a = fg.Input(shape=(17, 3))
    h = L.Conv1D(4, 3, strides=2, padding="same", dilation_rate=1, activation="relu")(a)
    h = L.Conv1D(5, 2, dilation_rate=2, padding="causal", activation="gelu")(h)
    h = L.MaxPooling1D(2, padding="same")(h)
    h = L.AveragePooling1D(2, strides=1)(h)
    g = L.Concatenate()([L.GlobalAveragePooling1D()(h), L.GlobalMaxPooling1D()(h), L.Flatten()(h)])
    return fg.Model(a, L.Dense(3, activation="softmax")(g)), (17, 3)


def shared_frozen():
    """A separable conv called twice (parameter gradients of both calls added), frozen
    depthwise / transposed convs (their gradients zero, the input gradient still flows)."""
    a = fg.Input(shape=(7, 7, 3))
    sep = L.SeparableConv2D(3, 3, padding="same", depth_multiplier=2, activation="relu")
    dw = L.DepthwiseConv2D(2, activation="tanh", name="frozen_dw")
    tr = L.Conv2DTranspose(3, 2, name="frozen_tr")
    h = sep(tr(dw(sep(a))))
    m = fg.Model(a, _head(h))
    dw.trainable = False
    tr.trainable = False
    return m, (7, 7, 3)


def image_net():
    """One layer of every image kind (test_compiled_graph's table-driven test uses it)."""
    a = fg.Input(shape=(6, 5, 2))
    h = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(a)
    h = L.SeparableConv2D(3, 2, activation="relu")(h)
    h = L.Conv2DTranspose(2, 2, strides=2)(h)
    h = L.Cropping2D(((1, 0), (0, 1)))(L.ZeroPadding2D(1)(h))
    h = L.SpatialDropout2D(0.2)(L.UpSampling2D(2)(h))
    return fg.Model(a, _head(h)), (6, 5, 2)


MODELS = {"depthwise": depthwise, "separable": separable, "transpose": transpose, "pad_crop": pad_crop,
          "upsample": upsample, "spatial_dropout": spatial_dropout, "one_d": one_d, "shared_frozen": shared_frozen,
          "image_net": image_net}


def _build(name):
    m, shape = MODELS[name]()
    m.compile(optimizer=fg.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m, shape


def _data(shape, n=37, seed=0):
    r = np.random.default_rng(seed)
    return r.standard_normal((n,) + shape).astype(np.float32), r.integers(0, 3, n)


def _run(name, on, threads):
    _config.set_num_threads(threads)
    fg.set_seed(3)
    m, shape = _build(name)
    x, y = _data(shape)
    with compiled_enabled(on):
        fg.set_seed(11)
        h = m.fit(x, y, batch_size=8, epochs=2, verbose=0)
        ev = m.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
        pr = m.predict(x[:21], batch_size=8, verbose=0)
        plan = m.__dict__.get("_fg_train_plan", (None, None))[1]
        if on:
            assert plan is not None, compiled.unsupported_reason(m)
        else:
            assert plan is None
    rng = [layer.get_rng_state() for layer in m.layers if hasattr(layer, "get_rng_state")]
    return m, h.history, ev, pr, rng


def _regularized(m):
    return any(getattr(layer, a, None) is not None for layer in m.layers
               for a in ("kernel_regularizer", "depthwise_regularizer", "pointwise_regularizer"))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_plan_matches_python_step_bitwise(name):
    ref = _run(name, False, 1)
    regularized = _regularized(ref[0])
    for threads in (1, 2, 3):
        got = _run(name, True, threads)
        assert all(np.array_equal(u, v) for u, v in zip(got[0].get_weights(), ref[0].get_weights())), threads
        for k in ref[1]:
            if regularized:   # the penalty is summed in another order in C (weights keep their bits)
                np.testing.assert_allclose(got[1][k], ref[1][k], rtol=1e-6)
            else:
                assert got[1][k] == ref[1][k], (k, threads)
        assert np.array_equal(got[3], ref[3]), threads
        for k in ref[2]:
            np.testing.assert_allclose(got[2][k], ref[2][k], rtol=1e-6)
        assert got[4] == ref[4]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_plan_forward_agrees_with_numpy(name):
    fg.set_seed(5)
    m, shape = _build(name)
    x, _ = _data(shape, n=13, seed=2)
    with compiled_enabled(True):
        assert compiled.inference_plan(m) is not None, compiled.unsupported_reason(m, False)
        got = m.predict(x, verbose=0)
    fg.set_backend("numpy")
    want = m.predict(x, verbose=0)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)


def test_every_image_model_has_a_c_path():
    for name in MODELS:
        m, _ = _build(name)
        assert compiled.unsupported_reason(m) is None, (name, compiled.unsupported_reason(m))


def test_upsample_backward_order_is_numpys():
    """The plan's upsample2d backward adds the copies in NumpyOps' fixed order: bitwise
    on gradients of wide dynamic range."""
    from fastgrad.backend.numpy_conv import ConvNumpyOps
    ops = ConvNumpyOps()
    r = np.random.default_rng(0)
    dy = (r.standard_normal((3, 6, 12, 5)) * np.exp(r.standard_normal((3, 6, 12, 5)) * 6)).astype(np.float32)
    dx = ops.upsample_nearest2d_backward(dy, (3, 4))
    want = dy[:, 0::3, 0::4].copy()
    for i in range(3):
        for j in range(4):
            if i or j:
                want += dy[:, i::3, j::4]
    assert np.array_equal(dx, want)


# ---------------------------------------------------------------- descriptor checks
def _step():
    return fg._native.module("step")


def _net(nodes, inputs, n_params=2000):
    params = np.zeros(n_params, np.float32)
    graph = dict(inputs=list(inputs), nodes=nodes, outputs=[len(inputs) + len(nodes) - 1])
    return _step().Net(graph, params, None, None, None)


def _node(kind, shape, **kw):
    return dict(kind=_step().LAYER_KINDS[kind], name="bad", inputs=[0], shape=shape, **kw)


WIN = dict(kh=3, kw=3, sh=1, sw=1, dh=1, dw=1, pt=0, pl=0)

GOOD = [
    ((6, 6, 2), _node("depthwise2d", (4, 4, 4), w_off=0, b_off=100, multiplier=2, **WIN)),
    ((6, 6, 2), _node("sepconv2d", (4, 4, 5), w_off=0, w2_off=100, b_off=200, multiplier=2, **WIN)),
    ((4, 4, 2), _node("conv2dt", (6, 6, 3), w_off=0, b_off=100, **WIN)),
    ((4, 4, 2), _node("pad2d", (7, 5, 2), pt=1, pl=-1)),
    ((4, 4, 2), _node("upsample2d", (8, 12, 2), sh=2, sw=3)),
    ((4, 4, 2), _node("sdropout", (4, 4, 2), rate=0.5, seed=1, stream=0)),
]

BAD = [
    ((6, 6, 2), _node("depthwise2d", (4, 4, 4), w_off=0, multiplier=0, **WIN)),              # multiplier 0
    ((6, 6, 2), _node("depthwise2d", (4, 4, 5), w_off=0, multiplier=2, **WIN)),              # 5 != 2 * 2
    ((6, 6, 2), _node("depthwise2d", (4, 4, 4), w_off=1990, multiplier=2, **WIN)),           # kernel past the end
    ((6, 6, 2), _node("depthwise2d", (4, 4, 4), w_off=0, multiplier=2, act=77, **WIN)),      # unknown activation
    ((6, 6, 2), _node("sepconv2d", (4, 4, 5), w_off=0, b_off=200, multiplier=2, **WIN)),     # no pointwise kernel
    ((6, 6, 2), _node("sepconv2d", (4, 4, 5), w_off=0, w2_off=1990, multiplier=2, **WIN)),   # pointwise past the end
    ((6, 6, 2), _node("sepconv2d", (4, 4, 5), w_off=0, w2_off=10, multiplier=2, **WIN)),     # kernels overlap
    ((6, 6), _node("sepconv2d", (4, 5), w_off=0, w2_off=100, multiplier=2, **WIN)),          # rank 2, 3 rows
    ((4, 4, 2), _node("conv2dt", (6, 6, 3), w_off=1990, **WIN)),                              # kernel past the end
    ((4, 4, 2), _node("conv2dt", (20, 6, 3), w_off=0, **WIN)),                                # no window reaches row 19
    ((4, 4, 2), _node("conv2dt", (6, 6, 3), w_off=0, **dict(WIN, sh=0))),                     # stride 0
    ((4, 4, 2), _node("pad2d", (7, 5, 3), pt=1, pl=-1)),                                      # channels differ
    ((4, 4, 2), _node("pad2d", (2, 4, 2), pt=-5, pl=0)),                                      # crops everything
    ((4, 4, 2), _node("upsample2d", (8, 11, 2), sh=2, sw=3)),                                 # 4 * 3 != 11
    ((4, 4, 2), _node("upsample2d", (8, 12, 2), sh=0, sw=3)),                                 # factor 0
    ((4, 4, 2), _node("sdropout", (4, 4, 2), rate=1.0, seed=1, stream=0)),                    # rate 1
    ((4, 4, 2), _node("sdropout", (4, 4, 2), rate=0.5, seed=1)),                              # no stream
    ((4, 4, 2), _node("sdropout", (4, 2, 4), rate=0.5, seed=1, stream=0)),                    # shape changes
]


@pytest.mark.parametrize("inp,node", GOOD, ids=[n["name"] + str(i) for i, (_, n) in enumerate(GOOD)])
def test_good_descriptions_build(inp, node):
    n_streams = 1 if "stream" in node else 0
    params = np.zeros(2000, np.float32)
    graph = dict(inputs=[inp], nodes=[node], outputs=[1], n_streams=n_streams)
    _step().Net(graph, params, None, None, None)


@pytest.mark.parametrize("inp,node", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_descriptions_raise_naming_the_layer(inp, node):
    params = np.zeros(2000, np.float32)
    graph = dict(inputs=[inp], nodes=[node], outputs=[1], n_streams=1 if "stream" in node else 0)
    with pytest.raises(ValueError, match="layer 'bad'"):
        _step().Net(graph, params, None, None, None)
