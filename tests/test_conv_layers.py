"""Conv / pooling layers: Keras API (weights, config, save/load, summary,
describe), finite differences through the layers, training with fit on the
Python path, and bad input errors naming the layer and shapes."""
import numpy as np
import pytest

import fastgrad as fg
from fastgrad.engine.workspace import Workspace

L = fg.layers


def build64(layer, in_shape, seed=0):
    layer.build(tuple(in_shape))
    r = np.random.default_rng(seed)
    params = {s.name: r.standard_normal(s.shape) * 0.5 for s in layer.param_specs()}
    grads = {s.name: np.zeros(s.shape) for s in layer.param_specs()}
    layer.bind(params, grads, {})
    return params, grads


def fd_check(layer, in_shape, n=2, seed=0):
    params, grads = build64(layer, in_shape, seed)
    r = np.random.default_rng(seed + 1)
    x = r.standard_normal((n,) + tuple(in_shape))
    ws = Workspace()
    y = layer.forward(x, True, ws)
    dy = r.standard_normal(y.shape)
    dx = np.array(layer.backward(dy.copy(), ws), copy=True)

    def loss():
        return float(np.sum(layer.forward(x, False, Workspace()) * dy))

    def num(a, eps=1e-6):
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + eps
            fp = loss()
            a[i] = old - eps
            fm = loss()
            a[i] = old
            g[i] = (fp - fm) / (2 * eps)
        return g
    np.testing.assert_allclose(dx, num(x), rtol=1e-5, atol=1e-7)
    for name, p in params.items():
        np.testing.assert_allclose(grads[name], num(p), rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("make, shape", [
    (lambda: L.Conv2D(3, (3, 2), strides=(2, 1), padding="same", dilation_rate=1, activation="elu"), (6, 5, 2)),
    (lambda: L.Conv2D(4, 3, padding="same", dilation_rate=2, groups=2, activation="silu"), (7, 6, 4)),
    (lambda: L.Conv1D(3, 3, padding="causal", dilation_rate=2, activation="softplus"), (8, 2)),
    (lambda: L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2), (7, 6, 2)),
    (lambda: L.SeparableConv2D(3, 2, padding="same", activation="tanh"), (5, 5, 2)),
    (lambda: L.Conv2DTranspose(2, 3, strides=2, padding="same", activation="sigmoid"), (3, 4, 2)),
    (lambda: L.Conv2DTranspose(2, (2, 3), strides=(3, 2), padding="valid", output_padding=(1, 1)), (3, 3, 2)),
    (lambda: L.MaxPooling2D(3, strides=2, padding="same"), (7, 6, 2)),
    (lambda: L.AveragePooling2D((2, 3), padding="same"), (5, 7, 2)),
    (lambda: L.AveragePooling1D(3, strides=2, padding="same"), (8, 2)),
    (lambda: L.GlobalMaxPooling2D(keepdims=True), (3, 4, 2)),
    (lambda: L.UpSampling2D((2, 1)), (3, 2, 2)),
])
def test_finite_differences_through_layers(make, shape):
    fd_check(make(), shape)


def test_keras_weight_layouts_and_order():
    m = fg.Sequential([fg.Input((9, 8, 3)), L.Conv2D(6, (3, 2), groups=3), L.DepthwiseConv2D(3, depth_multiplier=2),
                       L.SeparableConv2D(4, 2), L.Conv2DTranspose(5, 3), L.Conv2D(2, 1, use_bias=False)])
    shapes = [w.shape for w in m.get_weights()]
    assert shapes == [(3, 2, 1, 6), (6,), (3, 3, 6, 2), (12,), (2, 2, 12, 1), (1, 1, 12, 4), (4,),
                      (3, 3, 5, 4), (5,), (1, 1, 5, 2)]
    prefixes = ["conv2d", "depthwise_conv2d", "separable_conv2d", "conv2d_transpose", "conv2d"]
    assert all(l.name.startswith(p) for l, p in zip(m.layers, prefixes))
    assert m.layers[-1].output_shape == (6, 6, 2)


def test_layer_names_follow_keras_snake_case():
    assert L.MaxPooling2D().name.startswith("max_pooling2d")
    assert L.GlobalAveragePooling1D().name.startswith("global_average_pooling1d")
    assert L.Conv2DTranspose(2, 2).name.startswith("conv2d_transpose")
    assert L.ReLU().name.startswith("re_lu")
    assert L.BatchNormalization().name.startswith("batch_normalization")


def test_glorot_fans_of_conv_kernel():
    layer = L.Conv2D(16, 5)
    layer(np.zeros((1, 8, 8, 3), np.float32))
    w = layer.get_weights()[0]
    limit = np.sqrt(6.0 / (5 * 5 * 3 + 5 * 5 * 16))    # Keras: fans times the receptive field
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.9 * limit


ALL = [
    L.Conv1D(4, 3, strides=2, padding="causal", dilation_rate=1, groups=1, activation="relu",
             kernel_regularizer=fg.regularizers.L2(0.01), name="c1"),
    L.Conv2D(4, (3, 5), strides=(1, 2), padding="same", dilation_rate=(2, 1), groups=2, use_bias=False,
             kernel_initializer="he_normal"),
    L.DepthwiseConv2D((3, 3), depth_multiplier=3, padding="same", depthwise_regularizer="l1"),
    L.SeparableConv2D(5, 3, strides=2, depth_multiplier=2, activation="tanh"),
    L.Conv2DTranspose(3, 4, strides=2, padding="same", output_padding=1, activation="sigmoid"),
    L.MaxPooling1D(3, strides=1, padding="same"), L.MaxPooling2D((2, 3)), L.AveragePooling1D(),
    L.AveragePooling2D(3, 2, "same"), L.GlobalAveragePooling1D(keepdims=True), L.GlobalMaxPooling1D(),
    L.GlobalAveragePooling2D(), L.GlobalMaxPooling2D(keepdims=True), L.ZeroPadding2D(((1, 2), (0, 3))),
    L.Cropping2D((1, 2)), L.UpSampling2D(3), L.SpatialDropout2D(0.3, seed=5),
]


@pytest.mark.parametrize("layer", ALL, ids=lambda l: type(l).__name__)
def test_config_round_trip(layer):
    cfg = layer.get_config()
    import json
    cfg2 = json.loads(json.dumps(cfg))
    clone = type(layer).from_config(cfg2)
    assert clone.get_config() == cfg
    d = L.deserialize(L.serialize(layer))
    assert type(d) is type(layer) and d.get_config() == cfg


def test_save_load_and_summary(tmp_path):
    m = fg.Sequential([fg.Input((10, 10, 2)), L.Conv2D(4, 3, padding="same", activation="relu"),
                       L.SeparableConv2D(3, 3), L.MaxPooling2D(), L.SpatialDropout2D(0.2),
                       L.Conv2DTranspose(2, 2, strides=2), L.ZeroPadding2D(1), L.Cropping2D(1),
                       L.UpSampling2D(), L.AveragePooling2D(2), L.GlobalMaxPooling2D(), L.Dense(2)])
    m.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(0).standard_normal((6, 10, 10, 2)).astype(np.float32)
    m.fit(x, np.zeros((6, 2), np.float32), epochs=1, batch_size=3, verbose=0)
    path = str(tmp_path / "m.fgm")
    m.save(path)
    m2 = fg.models.load_model(path)
    for a, b in zip(m.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(m.predict(x, verbose=0), m2.predict(x, verbose=0))
    lines = []
    m.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "(None, 10, 10, 4)" in text and "(None, 8, 8, 3)" in text and "(None, 16, 16, 2)" in text and "SeparableConv2D" in text
    d = m.layers[0].describe()
    assert d["pads"] == (1, 1, 1, 1) and d["params"]["kernel"]["shape"] == (3, 3, 2, 4)
    assert d["params"]["kernel"]["offset"] == 0


def test_functional_cnn_with_batchnorm_trains():
    fg.set_seed(0)
    inp = fg.Input((8, 8, 3))
    h = L.Conv2D(8, 3, padding="same")(inp)
    h = L.BatchNormalization()(h)
    h = L.ReLU()(h)
    h = L.MaxPooling2D()(h)
    h = L.Conv2D(8, 3, padding="same", activation="relu")(h)
    h = L.GlobalAveragePooling2D()(h)
    out = L.Dense(2, activation="softmax")(h)
    m = fg.Model(inp, out)
    m.compile(optimizer=fg.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    r = np.random.default_rng(1)
    x = r.standard_normal((128, 8, 8, 3)).astype(np.float32)
    x[:, :, :, 0] += r.standard_normal((128, 1, 1)).astype(np.float32)   # a per-image shift of channel 0
    y = (x[..., 0].mean(axis=(1, 2)) > x[..., 1].mean(axis=(1, 2))).astype(np.int64)
    h = m.fit(x, y, epochs=15, batch_size=32, verbose=0)
    assert h.history["loss"][-1] < 0.6 * h.history["loss"][0]
    assert h.history["accuracy"][-1] > 0.85


def test_spatial_dropout_layer():
    layer = L.SpatialDropout2D(0.5, seed=3)
    x = np.ones((4, 3, 3, 16), np.float32)
    ws = Workspace()
    layer.build((3, 3, 16))
    y = layer.forward(x, True, ws)
    per = y.reshape(4, 9, 16)
    assert (per == per[:, :1]).all() and 0 < (per[:, 0] == 0).sum() < 64
    y2 = layer.forward(x, True, Workspace())
    assert not np.array_equal(y2, y)                    # the stream advances
    assert layer.forward(x, False, Workspace()) is x    # identity in inference
    assert layer.get_rng_state()["offset"] == 2 * 4 * 16
    assert layer.lower.__func__ is not L.Dropout.lower    # its own plan kind (sdropout)


@pytest.mark.parametrize("make, shape, msg", [
    (lambda: L.Conv2D(4, 3), (8, 8), r"Conv2D conv2d.*rank 3.*\(8, 8\)"),
    (lambda: L.Conv2D(4, 3), (8, 8, 3, 1), r"rank 3"),
    (lambda: L.Conv2D(4, 5), (3, 8, 1), r"kernel \(5, 5\).*larger than the padded input \(3, 8\)"),
    (lambda: L.Conv2D(4, 3, dilation_rate=3), (6, 6, 1), r"dilated to \(7, 7\)"),
    (lambda: L.Conv2D(4, 3, groups=2), (8, 8, 3), r"input channels 3.*not divisible by groups=2"),
    (lambda: L.Conv1D(4, 3), (8, 8, 3), r"Conv1D.*rank 2"),
    (lambda: L.MaxPooling2D(4), (3, 8, 2), r"MaxPooling2D.*larger than the padded input"),
    (lambda: L.GlobalAveragePooling1D(), (3, 8, 2), r"GlobalAveragePooling1D.*rank 2"),
    (lambda: L.Cropping2D(((2, 2), (0, 0))), (4, 5, 1), r"Cropping2D.*leaves nothing"),
    (lambda: L.DepthwiseConv2D(3), (5, 5), r"DepthwiseConv2D.*rank 3"),
])
def test_bad_input_shapes(make, shape, msg):
    with pytest.raises(ValueError, match=msg):
        make().build(shape)


@pytest.mark.parametrize("make, msg", [
    (lambda: L.Conv2D(4, 3, strides=0), r"strides must be positive, got \(0, 0\)"),
    (lambda: L.Conv2D(4, 3, strides=(1, -2)), r"strides must be positive"),
    (lambda: L.Conv2D(4, 0), r"kernel_size must be positive"),
    (lambda: L.Conv2D(0, 3), r"filters must be a positive integer"),
    (lambda: L.Conv2D(5, 3, groups=2), r"filters=5 is not divisible by groups=2"),
    (lambda: L.Conv2D(4, 3, padding="full"), r"padding must be one of valid, same"),
    (lambda: L.Conv2D(4, 3, data_format="channels_first"), r"channels_last"),
    (lambda: L.Conv2D(4, 3, activation="softmax"), r"not element-wise"),
    (lambda: L.MaxPooling2D(2, strides=0), r"strides must be positive"),
    (lambda: L.Conv2DTranspose(2, 3, strides=2, output_padding=2), r"output_padding.*smaller"),
    (lambda: L.DepthwiseConv2D(3, depth_multiplier=0), r"depth_multiplier"),
    (lambda: L.UpSampling2D(interpolation="bilinear"), r"nearest"),
    (lambda: L.ZeroPadding2D(-1), r"non-negative"),
])
def test_bad_arguments(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()


def test_wrong_channel_count_at_call():
    m = fg.Sequential([fg.Input((8, 8, 3)), L.Conv2D(2, 3), L.Flatten(), L.Dense(1)])
    m.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match=r"8, 8, 1|\(8, 8, 3\)"):
        m.fit(np.zeros((4, 8, 8, 1), np.float32), np.zeros((4, 1), np.float32), verbose=0)
    layer = L.Conv2D(2, 3)
    layer(np.zeros((1, 5, 5, 3), np.float32))
    with pytest.raises(ValueError, match=r"conv2d.*built for input shape \(5, 5, 3\).*\(5, 5, 4\)"):
        layer(np.zeros((1, 5, 5, 4), np.float32))


@pytest.mark.skipif(not hasattr(L, "Embedding") or not hasattr(fg.layers.Layer, "_forward_takes_mask"),
                    reason="the mask mechanism (branch rnn) is not merged")
@pytest.mark.parametrize("cls", [L.GlobalAveragePooling1D, L.GlobalMaxPooling1D])
def test_global_pooling_1d_takes_the_graph_mask(cls):
    ids = np.array([[3, 4, 0, 0], [5, 0, 0, 0], [1, 2, 3, 4]])
    inp = fg.Input((4,))
    emb = L.Embedding(10, 3, mask_zero=True)
    m = fg.Model(inp, cls()(emb(inp)))
    y = m.predict(ids, verbose=0)
    table = emb.get_weights()[0]
    for i in range(3):
        rows = table[ids[i][ids[i] != 0]]
        np.testing.assert_allclose(y[i], rows.mean(0) if cls is L.GlobalAveragePooling1D else rows.max(0),
                                   rtol=1e-6, atol=1e-7)
    seq = fg.Sequential([fg.Input((4,)), L.Embedding(10, 3, mask_zero=True), cls(), L.Dense(1)])
    seq.compile(optimizer="adam", loss="mse")
    h = seq.fit(ids, np.ones((3, 1), np.float32), epochs=3, verbose=0)
    assert np.isfinite(h.history["loss"]).all()


def test_cnn_digits_example_runs():
    """examples/cnn_digits.py runs offline and learns (a small budget: 2 epochs, no shifted copies)."""
    pytest.importorskip("sklearn")
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.path.join(root, "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, os.path.join(root, "examples", "cnn_digits.py"), "--epochs", "2",
                          "--copies", "1", "--quiet"], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr
    acc = [l for l in res.stdout.splitlines() if l.startswith("test accuracy")]
    assert acc and float(acc[-1].split()[-1]) > 0.6, res.stdout
