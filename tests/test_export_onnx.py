"""fg.export.to_onnx: every supported layer round-trips through onnxruntime
within rtol 1e-5; refused layers raise with a message naming them; every
class of fg.layers is either exported here or listed as refused."""
import inspect

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import fastgrad as fg  # noqa: E402
from fastgrad import export as fx  # noqa: E402
from fastgrad import layers as L  # noqa: E402

RTOL, ATOL = 1e-5, 1e-5

#: classes exercised by a round-trip test below (the coverage test checks this list)
EXPORTED_IN_TESTS = set()


def _session(proto, optimize=False):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _ort_predict(proto, xs, optimize=False):
    sess = _session(proto, optimize)
    feeds = {}
    for inp, x in zip(sess.get_inputs(), xs):
        feeds[inp.name] = x.astype(np.int64) if inp.type == "tensor(int64)" else x.astype(np.float32)
    return sess.run(None, feeds)


def _roundtrip(model, xs, rtol=RTOL, atol=ATOL, tmp_path=None):
    xs = xs if isinstance(xs, list) else [xs]
    want = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
    want = want if isinstance(want, list) else [want]
    path = None if tmp_path is None else tmp_path / "m.onnx"
    proto = fg.export.to_onnx(model, path)
    got = _ort_predict(proto, xs)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    for node in model._graph.nodes:
        EXPORTED_IN_TESTS.add(type(node.layer).__name__)
        inner = getattr(node.layer, "layer", None)       # TimeDistributed
        if inner is not None:
            EXPORTED_IN_TESTS.add(type(inner).__name__)
    return proto


def _seq(layers, shape, seed=0):
    fg.set_seed(seed)
    return fg.Sequential([L.Input(shape=shape)] + list(layers))


def _x(shape, n=3, seed=1, scale=1.0):
    return (np.random.default_rng(seed).standard_normal((n,) + tuple(shape)) * scale).astype(np.float32)


def _randomize(model, seed=2, scale=0.5):
    """Non-trivial weights everywhere (biases, BN statistics, ...)."""
    rng = np.random.default_rng(seed)
    ws = []
    for layer in model.layers:
        for w in layer.weights:
            ws.append(w)
    new = []
    for w in model.get_weights():
        a = (rng.standard_normal(w.shape) * scale).astype(np.float32)
        new.append(a)
    model.set_weights(new)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            mv = layer.state["moving_variance"]
            mv[...] = np.abs(mv) + 0.5
    return model


# ---------------------------------------------------------------------- activations
ACTS = ["linear", "relu", "sigmoid", "tanh", "softmax", "log_softmax", "gelu", "gelu_tanh", "leaky_relu",
        "elu", "selu", "silu", "swish", "softplus", "softsign", "hard_sigmoid", "mish", "exponential",
        "relu6", "hard_silu", "hard_swish"]


@pytest.mark.parametrize("act", ACTS)
def test_dense_activations(act):
    m = _randomize(_seq([L.Dense(7, activation=act)], (5,)))
    x = _x((5,), n=6, scale=2.0)
    x[0, :] = [-3.0, 3.0, 0.0, -2.5, 40.0]     # hard_sigmoid kinks, softplus large
    _roundtrip(m, x)


def test_dense_no_bias_rank3():
    m = _randomize(_seq([L.Dense(4, use_bias=False), L.Dense(3, activation="relu")], (6, 5)))
    _roundtrip(m, _x((6, 5)))


@pytest.mark.parametrize("layer", [
    lambda: L.ReLU(), lambda: L.ReLU(max_value=1.5), lambda: L.ReLU(negative_slope=0.1),
    lambda: L.ReLU(threshold=0.3), lambda: L.ReLU(max_value=2.0, negative_slope=0.2, threshold=-0.5),
    lambda: L.ReLU(max_value=6.0), lambda: L.LeakyReLU(), lambda: L.LeakyReLU(negative_slope=0.05),
    lambda: L.ELU(), lambda: L.ELU(alpha=0.5), lambda: L.Softmax(), lambda: L.Softmax(axis=1),
    lambda: L.Softmax(axis=[1, 2]), lambda: L.Activation("gelu"), lambda: L.Activation("softmax")],
    ids=["relu", "relu_max", "relu_slope", "relu_thr", "relu_general", "relu6", "leaky", "leaky005",
         "elu", "elu05", "softmax", "softmax_ax1", "softmax_ax12", "act_gelu", "act_softmax"])
def test_activation_layers(layer, request):
    m = _seq([layer()], (4, 5))
    _roundtrip(m, _x((4, 5), scale=2.0))


@pytest.mark.parametrize("shared", [None, [1], [1, 2]])
def test_prelu(shared):
    m = _randomize(_seq([L.PReLU(shared_axes=shared)], (3, 4)))
    _roundtrip(m, _x((3, 4)))


# ---------------------------------------------------------------------- core / reshaping
@pytest.mark.parametrize("layers,shape", [
    (lambda: [L.Flatten(), L.Dense(3)], (2, 3, 4)),
    (lambda: [L.Reshape((6, 2))], (3, 4)),
    (lambda: [L.Reshape((-1, 3))], (3, 4)),
    (lambda: [L.Permute((2, 1))], (3, 4)),
    (lambda: [L.Permute((3, 1, 2))], (2, 3, 4)),
    (lambda: [L.RepeatVector(3)], (5,)),
    (lambda: [L.Dropout(0.5), L.Identity(), L.SpatialDropout2D(0.3)], (4, 4, 2)),
    (lambda: [L.BatchNormalization()], (5,)),
    (lambda: [L.BatchNormalization(axis=1, center=False)], (3, 4)),
    (lambda: [L.BatchNormalization(scale=False, epsilon=0.01)], (4, 4, 3)),
    (lambda: [L.LayerNormalization()], (6,)),
    (lambda: [L.LayerNormalization(axis=[1, 2], center=False)], (3, 4)),
    (lambda: [L.LayerNormalization(epsilon=1e-5, scale=False)], (3, 4)),
    (lambda: [L.Masking(mask_value=0.0)], (3, 4)),
], ids=["flatten", "reshape", "reshape_m1", "permute", "permute3", "repeat", "dropouts", "bn", "bn_axis1",
        "bn_4d", "ln", "ln_2axes", "ln_noscale", "masking"])
def test_core_layers(layers, shape):
    m = _randomize(_seq(layers(), shape))
    x = _x(shape)
    if shape == (3, 4):
        x[0, 1] = 0.0
    _roundtrip(m, x)


def test_embedding():
    fg.set_seed(0)
    inp = fg.Input(shape=(5,), dtype="int32")
    out = L.Dense(2)(L.Flatten()(L.Embedding(11, 3)(inp)))
    m = fg.Model(inp, out)
    ids = np.random.default_rng(0).integers(0, 11, size=(4, 5))
    _roundtrip(m, ids)


# ---------------------------------------------------------------------- convolution
CONVS = [
    ("c2_valid", lambda: L.Conv2D(4, 3), (7, 6, 2)),
    ("c2_same_s2", lambda: L.Conv2D(3, (3, 2), strides=2, padding="same", activation="relu"), (7, 6, 2)),
    ("c2_same_even", lambda: L.Conv2D(3, 4, strides=(2, 3), padding="same"), (9, 8, 3)),
    ("c2_dil", lambda: L.Conv2D(2, 3, dilation_rate=(2, 1), padding="same", use_bias=False), (8, 7, 2)),
    ("c2_groups", lambda: L.Conv2D(6, 3, groups=3, activation="gelu"), (6, 6, 6)),
    ("c1_valid", lambda: L.Conv1D(4, 3, strides=2), (11, 3)),
    ("c1_same", lambda: L.Conv1D(3, 4, padding="same", dilation_rate=2), (10, 2)),
    ("c1_causal", lambda: L.Conv1D(3, 3, padding="causal", dilation_rate=2, activation="tanh"), (9, 2)),
    ("c1_groups", lambda: L.Conv1D(4, 2, groups=2), (7, 4)),
    ("dw", lambda: L.DepthwiseConv2D(3), (6, 7, 3)),
    ("dw_m2_same_s2", lambda: L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2,
                                                activation="relu6"), (7, 7, 3)),
    ("dw_dil", lambda: L.DepthwiseConv2D((2, 3), dilation_rate=2, use_bias=False), (8, 8, 2)),
    ("sep", lambda: L.SeparableConv2D(5, 3), (7, 6, 3)),
    ("sep_same_s2_m2", lambda: L.SeparableConv2D(4, 3, strides=2, padding="same", depth_multiplier=2,
                                                 activation="silu"), (8, 7, 2)),
    ("ct_valid", lambda: L.Conv2DTranspose(3, 3), (4, 5, 2)),
    ("ct_s2_same", lambda: L.Conv2DTranspose(3, 3, strides=2, padding="same"), (4, 5, 2)),
    ("ct_s2_valid", lambda: L.Conv2DTranspose(2, (2, 3), strides=(2, 3)), (3, 4, 2)),
    ("ct_s2_same_even", lambda: L.Conv2DTranspose(2, 4, strides=2, padding="same", activation="relu"), (3, 4, 2)),
    ("ct_outpad", lambda: L.Conv2DTranspose(2, 3, strides=2, output_padding=1), (3, 4, 2)),
    ("ct_outpad_same", lambda: L.Conv2DTranspose(2, 3, strides=3, padding="same", output_padding=(2, 0)),
     (3, 4, 2)),
    ("ct_dil", lambda: L.Conv2DTranspose(2, 3, dilation_rate=2, use_bias=False), (4, 4, 2)),
    ("ct_s1_same", lambda: L.Conv2DTranspose(2, 4, padding="same"), (4, 5, 3)),
    # the 1-D counterparts
    ("dw1", lambda: L.DepthwiseConv1D(3, depth_multiplier=2), (9, 3)),
    ("dw1_same_s2", lambda: L.DepthwiseConv1D(3, strides=2, padding="same",
                                                  activation="relu"), (10, 2)),
    ("dw1_dil", lambda: L.DepthwiseConv1D(2, dilation_rate=3, use_bias=False), (9, 2)),
    ("sep1", lambda: L.SeparableConv1D(4, 3), (9, 3)),
    ("sep1_same_s2_m2", lambda: L.SeparableConv1D(3, 4, strides=2, padding="same", depth_multiplier=2,
                                                  activation="tanh"), (11, 2)),
    ("ct1_valid", lambda: L.Conv1DTranspose(3, 3), (5, 2)),
    ("ct1_s2_same", lambda: L.Conv1DTranspose(3, 4, strides=2, padding="same"), (5, 2)),
    ("ct1_outpad", lambda: L.Conv1DTranspose(2, 3, strides=3, output_padding=2, activation="relu"), (4, 3)),
    ("ct1_small_kernel", lambda: L.Conv1DTranspose(2, 1, strides=3), (4, 2)),
    ("ct1_dil", lambda: L.Conv1DTranspose(2, 3, dilation_rate=2, use_bias=False), (5, 2)),
]


@pytest.mark.parametrize("make,shape", [c[1:] for c in CONVS], ids=[c[0] for c in CONVS])
def test_convolutions(make, shape):
    m = _randomize(_seq([make()], shape))
    _roundtrip(m, _x(shape, n=2))


POOLS = [
    ("max2", lambda: L.MaxPooling2D(), (6, 7, 3)),
    ("max2_same_s1", lambda: L.MaxPooling2D(3, strides=1, padding="same"), (5, 6, 2)),
    ("max2_same_s2", lambda: L.MaxPooling2D((3, 2), strides=2, padding="same"), (7, 6, 2)),
    ("avg2", lambda: L.AveragePooling2D((2, 3)), (6, 7, 2)),
    ("avg2_same", lambda: L.AveragePooling2D(3, strides=2, padding="same"), (7, 6, 2)),
    ("max1", lambda: L.MaxPooling1D(3, strides=2), (9, 2)),
    ("max1_same", lambda: L.MaxPooling1D(2, padding="same"), (7, 2)),
    ("avg1", lambda: L.AveragePooling1D(2), (8, 3)),
    ("avg1_same", lambda: L.AveragePooling1D(3, strides=2, padding="same"), (8, 3)),
    ("gap2", lambda: L.GlobalAveragePooling2D(), (4, 5, 3)),
    ("gmp2_keep", lambda: L.GlobalMaxPooling2D(keepdims=True), (4, 5, 3)),
    ("gap1_keep", lambda: L.GlobalAveragePooling1D(keepdims=True), (6, 3)),
    ("gmp1", lambda: L.GlobalMaxPooling1D(), (6, 3)),
    ("zpad", lambda: L.ZeroPadding2D(((1, 2), (0, 3))), (3, 4, 2)),
    ("zpad1", lambda: L.ZeroPadding2D(), (3, 4, 2)),
    ("crop", lambda: L.Cropping2D(((1, 0), (2, 1))), (5, 6, 2)),
    ("up", lambda: L.UpSampling2D(), (3, 4, 2)),
    ("up32", lambda: L.UpSampling2D((3, 2)), (2, 3, 2)),
    ("zpad1d", lambda: L.ZeroPadding1D((2, 1)), (4, 3)),
    ("crop1d", lambda: L.Cropping1D((1, 2)), (6, 3)),
    ("up1d", lambda: L.UpSampling1D(3), (4, 2)),
    ("sdrop1d", lambda: L.SpatialDropout1D(0.4), (5, 3)),
]


@pytest.mark.parametrize("make,shape", [c[1:] for c in POOLS], ids=[c[0] for c in POOLS])
def test_pooling_spatial(make, shape):
    m = _seq([make()], shape)
    _roundtrip(m, _x(shape, n=2))


def test_small_cnn_trained(tmp_path):
    fg.set_seed(0)
    m = fg.Sequential([L.Input(shape=(8, 8, 1)), L.Conv2D(4, 3, padding="same", activation="relu"),
                       L.BatchNormalization(), L.MaxPooling2D(), L.Conv2D(6, 3, activation="relu"),
                       L.GlobalAveragePooling2D(), L.Dropout(0.2), L.Dense(3, activation="softmax")])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    proto = _roundtrip(m, x[:10], tmp_path=tmp_path)
    # onnxruntime's default graph optimizations (operator fusion) keep the 1e-5 agreement
    np.testing.assert_allclose(_ort_predict(proto, [x[:10]], optimize=True)[0], m.predict(x[:10], verbose=0),
                               rtol=RTOL, atol=ATOL)
    assert (tmp_path / "m.onnx").exists()
    assert onnx.load(str(tmp_path / "m.onnx")).graph.name == proto.graph.name


# ---------------------------------------------------------------------- merges / functional
@pytest.mark.parametrize("kind", ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"])
def test_merges(kind):
    fg.set_seed(0)
    a, b_ = fg.Input(shape=(4,)), fg.Input(shape=(4,))
    h1, h2 = L.Dense(3)(a), L.Dense(3)(b_)
    ins = [h1, h2] if kind == "Subtract" else [h1, h2, L.Dense(3)(a)]
    out = getattr(L, kind)()(ins)
    m = fg.Model([a, b_], out)
    _roundtrip(m, [_x((4,)), _x((4,), seed=3)])


def test_merge_broadcast_and_concat_axis():
    fg.set_seed(0)
    a = fg.Input(shape=(3, 4))
    b_ = fg.Input(shape=(1, 4))
    s = L.Add()([a, b_])
    c = L.Concatenate(axis=1)([s, b_])
    m = fg.Model([a, b_], L.Concatenate()([c, c]))
    _roundtrip(m, [_x((3, 4)), _x((1, 4), seed=4)])


@pytest.mark.parametrize("axes,normalize,s1,s2", [
    (1, False, (4,), (4,)), (1, True, (4,), (4,)), ((2, 2), False, (3, 4), (5, 4)),
    ((1, 2), True, (4, 3), (2, 4)), (2, False, (3, 4), (3, 4))])
def test_dot(axes, normalize, s1, s2):
    a, b_ = fg.Input(shape=s1), fg.Input(shape=s2)
    m = fg.Model([a, b_], L.Dot(axes, normalize=normalize)([a, b_]))
    _roundtrip(m, [_x(s1), _x(s2, seed=5)])


def test_functional_branches_shared_nested():
    fg.set_seed(0)
    inner_in = fg.Input(shape=(6,))
    inner = fg.Model(inner_in, L.Dense(6, activation="tanh")(inner_in))
    x = fg.Input(shape=(6,))
    shared = L.Dense(6, activation="elu")
    h1 = shared(x)
    h2 = shared(inner(x))
    h = h1 + h2
    y1 = L.Dense(2, activation="softmax", name="cls")(h)
    y2 = L.Dense(1, name="reg")(L.Concatenate()([h1, h]))
    m = fg.Model(x, [y1, y2])
    proto = _roundtrip(m, _x((6,), n=5))
    assert [o.name for o in proto.graph.output] == ["cls", "reg"]
    # the shared layer's kernel is stored once
    assert sum(1 for i in proto.graph.initializer if tuple(i.dims) == (6, 6)) == 2    # shared + inner
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_dict_io_and_names():
    a, b_ = fg.Input(shape=(3,), name="a"), fg.Input(shape=(2,), name="b")
    m = fg.Model({"a": a, "b": b_}, L.Dense(2)(L.Concatenate()([a, b_])))
    proto = fg.export.to_onnx(m, input_names=["x0", "x1"], output_names="y", dynamic_batch=False, batch_size=2)
    assert [i.name for i in proto.graph.input] == ["x0", "x1"]
    got = _ort_predict(proto, [_x((3,), n=2), _x((2,), n=2)])[0]
    want = m.predict({"a": _x((3,), n=2), "b": _x((2,), n=2)}, verbose=0)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------- recurrent
RNNS = [
    ("rnn", lambda: L.SimpleRNN(5)),
    ("rnn_seq_back", lambda: L.SimpleRNN(4, return_sequences=True, go_backwards=True, activation="relu")),
    ("rnn_linear_nobias", lambda: L.SimpleRNN(3, activation="linear", use_bias=False)),
    ("lstm", lambda: L.LSTM(5)),
    ("lstm_seq", lambda: L.LSTM(4, return_sequences=True)),
    ("lstm_back", lambda: L.LSTM(3, go_backwards=True, recurrent_activation="tanh", activation="relu")),
    ("lstm_seq_back", lambda: L.LSTM(3, return_sequences=True, go_backwards=True, use_bias=False)),
    ("gru", lambda: L.GRU(5)),
    ("gru_seq_back", lambda: L.GRU(4, return_sequences=True, go_backwards=True)),
    ("gru_v1", lambda: L.GRU(4, reset_after=False)),
    ("gru_v1_seq", lambda: L.GRU(3, reset_after=False, return_sequences=True, use_bias=False)),
    ("gru_nobias", lambda: L.GRU(3, use_bias=False, activation="linear")),
    ("bi_lstm", lambda: L.Bidirectional(L.LSTM(3))),
    ("bi_gru_seq_sum", lambda: L.Bidirectional(L.GRU(3, return_sequences=True), merge_mode="sum")),
    ("bi_rnn_seq_ave", lambda: L.Bidirectional(L.SimpleRNN(3, return_sequences=True), merge_mode="ave")),
    ("bi_lstm_seq_mul", lambda: L.Bidirectional(L.LSTM(2, return_sequences=True), merge_mode="mul")),
    ("td_dense", lambda: L.TimeDistributed(L.Dense(3, activation="relu"))),
]


@pytest.mark.parametrize("make", [c[1] for c in RNNS], ids=[c[0] for c in RNNS])
def test_recurrent(make):
    m = _randomize(_seq([make()], (6, 4)), scale=0.4)
    _roundtrip(m, _x((6, 4), n=3))


def test_rnn_initial_state():
    fg.set_seed(0)
    x, h, c = fg.Input(shape=(5, 3)), fg.Input(shape=(4,)), fg.Input(shape=(4,))
    y1 = L.LSTM(4)(x, initial_state=[h, c])
    y2 = L.GRU(4, return_sequences=True)(x, initial_state=[h])
    m = _randomize(fg.Model([x, h, c], [y1, y2]), scale=0.4)
    _roundtrip(m, [_x((5, 3)), _x((4,), seed=6), _x((4,), seed=7)])


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize("seq", [False, True])
def test_rnn_return_state(cls, seq):
    fg.set_seed(0)
    x = fg.Input(shape=(5, 3))
    outs = getattr(L, cls)(4, return_state=True, return_sequences=seq, go_backwards=seq)(x)
    m = _randomize(fg.Model(x, list(outs)), scale=0.4)
    _roundtrip(m, _x((5, 3)))


@pytest.mark.parametrize("mode", [None, "concat", "sum"])
@pytest.mark.parametrize("state", [False, True])
def test_bidirectional_states_and_halves(mode, state):
    fg.set_seed(0)
    x = fg.Input(shape=(5, 3))
    outs = L.Bidirectional(L.LSTM(3, return_sequences=True, return_state=state), merge_mode=mode)(x)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    m = _randomize(fg.Model(x, outs), scale=0.4)
    _roundtrip(m, _x((5, 3)))


def test_mha_return_attention_scores():
    fg.set_seed(0)
    q, v = fg.Input(shape=(4, 6)), fg.Input(shape=(5, 6))
    y, scores = L.MultiHeadAttention(2, 3)(q, v, return_attention_scores=True)
    m = _randomize(fg.Model([q, v], [y, L.Flatten()(scores)]), scale=0.5)
    _roundtrip(m, [_x((4, 6)), _x((5, 6), seed=3)])


def test_td_conv_stack():
    m = _randomize(_seq([L.TimeDistributed(L.Conv2D(2, 2)), L.TimeDistributed(L.Flatten()),
                         L.LSTM(3)], (3, 4, 4, 1)), scale=0.4)
    _roundtrip(m, _x((3, 4, 4, 1), n=2))


# ---------------------------------------------------------------------- attention
def _mha_model(causal=False, key=False, masks=(), seq=(5, 6), heads=2, kd=3, vd=None, out=None, qshape=None,
               vshape=None):
    fg.set_seed(0)
    q = fg.Input(shape=qshape or (seq[0], 4))
    v = fg.Input(shape=vshape or (seq[1], 4))
    ins = [q, v]
    kw = {}
    if key:
        k = fg.Input(shape=(seq[1], 5))
        ins.append(k)
        kw["key"] = k
    for n in masks:
        shape = {"query_mask": (seq[0],), "value_mask": (seq[1],), "key_mask": (seq[1],),
                 "attention_mask": seq}[n]
        t = fg.Input(shape=shape)
        ins.append(t)
        kw[n] = t
    mha = L.MultiHeadAttention(heads, kd, value_dim=vd, output_shape=out)
    y = mha(q, v, use_causal_mask=causal, **kw)
    return _randomize(fg.Model(ins, y), scale=0.5), len(masks)


def _mask_data(model, n_masks, n=3, seed=9):
    rng = np.random.default_rng(seed)
    data = []
    k = len(model.inputs) - n_masks
    for i, t in enumerate(model.inputs):
        shape = tuple(t.shape[1:])
        if i >= k:
            data.append((rng.random((n,) + shape) > 0.35).astype(np.float32))
        else:
            data.append(_x(shape, n=n, seed=i + seed))
    return data


@pytest.mark.parametrize("kw", [
    {}, {"causal": True, "seq": (5, 5)}, {"key": True, "vd": 2, "out": 7}, {"masks": ("value_mask",)},
    {"masks": ("query_mask", "key_mask"), "key": True}, {"masks": ("attention_mask",), "heads": 1, "kd": 5},
    {"qshape": (2, 3, 4), "vshape": (3, 2, 4)}], ids=["plain", "causal", "key_vd_out", "vmask", "qk_mask", "amask",
                                                "nd_query"])
def test_multi_head_attention(kw):
    m, n_masks = _mha_model(**kw)
    xs = _mask_data(m, n_masks)
    if kw.get("masks") == ("attention_mask",):
        xs[-1][0] = 0.0          # a sample with every entry masked: zero weights
    _roundtrip(m, xs)


@pytest.mark.parametrize("cls,kw", [(L.Attention, {}), (L.Attention, {"use_scale": True}),
                                    (L.Attention, {"score_mode": "concat"}),
                                    (L.Attention, {"score_mode": "concat", "use_scale": True}),
                                    (L.AdditiveAttention, {}), (L.AdditiveAttention, {"use_scale": False})])
@pytest.mark.parametrize("masked", [False, True])
def test_luong_bahdanau(cls, kw, masked):
    fg.set_seed(0)
    q, v, k = fg.Input(shape=(4, 3)), fg.Input(shape=(5, 3)), fg.Input(shape=(5, 3))
    ins = [q, v, k]
    call = {}
    if masked:
        qm, vm = fg.Input(shape=(4,)), fg.Input(shape=(5,))
        ins += [qm, vm]
        call["mask"] = [qm, vm]
    layer = cls(**kw)
    m = fg.Model(ins, layer([q, v, k], use_causal_mask=masked, **call))
    _randomize(m, scale=0.8)
    xs = [_x((4, 3)), _x((5, 3), seed=2), _x((5, 3), seed=3)]
    if masked:
        rng = np.random.default_rng(0)
        xs += [(rng.random((3, 4)) > 0.3).astype(np.float32), (rng.random((3, 5)) > 0.3).astype(np.float32)]
    _roundtrip(m, xs)


def test_position_encodings_transformer_block():
    fg.set_seed(0)
    x = fg.Input(shape=(6,), dtype="int32")
    e = L.Embedding(20, 8)(x)
    h = e + L.PositionEmbedding(10)(e)
    h = L.Add()([h, L.SinePositionEncoding()(h)])
    a = L.MultiHeadAttention(2, 4)(h, h, use_causal_mask=True)
    h = L.LayerNormalization()(h + a)
    f = L.Dense(8)(L.Dense(16, activation="gelu")(h))
    h = L.LayerNormalization()(h + f)
    y = L.Dense(3, activation="softmax")(L.GlobalAveragePooling1D()(h))
    m = _randomize(fg.Model(x, y), scale=0.3)
    ids = np.random.default_rng(0).integers(0, 20, size=(4, 6))
    _roundtrip(m, ids)


# ---------------------------------------------------------------------- int8 models
def _mlp(act_last="softmax"):
    fg.set_seed(0)
    m = fg.Sequential([L.Input(shape=(12,)), L.Dense(16, activation="relu"), L.Dropout(0.1),
                       L.Dense(8), L.ReLU(), L.Dense(8, activation="tanh"), L.Dense(5, activation=act_last)])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 12)).astype(np.float32)
    m.fit(x, rng.integers(0, 5, 128), epochs=2, batch_size=32, verbose=0)
    return m, x


def _q_roundtrip(q, x, atol=0.0, rtol=0.0):
    want = q.predict(x)
    proto = fg.export.to_onnx(q)
    got = _ort_predict(proto, [x])[0]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    ops = {n.op_type for n in proto.graph.node}
    assert "MatMulInteger" in ops
    return got, want


@pytest.mark.parametrize("act_last", ["softmax", "linear"])
def test_quantized_dynamic(act_last):
    m, x = _mlp(act_last)
    q = fg.quantization.quantize_dynamic(m)
    # integer products are exact; the float epilogue is the same float32 operations
    _q_roundtrip(q, x[:40], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_quantized_static(method):
    m, x = _mlp("linear")
    q = fg.quantization.quantize_static(m, x[:64], method=method)
    _q_roundtrip(q, x[64:], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_quantized_bitwise_dense_relu_chain(mode):
    """Dense / ReLU chains: integer GEMM exact, epilogue the same float32 operations -> same bits."""
    fg.set_seed(0)
    m = fg.Sequential([L.Input(shape=(12,)), L.Dense(16, activation="relu"), L.Dense(8), L.ReLU(),
                       L.Flatten(), L.Dense(5)])
    x = np.random.default_rng(0).standard_normal((100, 12)).astype(np.float32)
    q = fg.quantization.quantize_dynamic(m) if mode == "dynamic" else \
        fg.quantization.quantize_static(m, x[:64])
    got, want = _q_roundtrip(q, x)
    assert np.array_equal(got, want)


def test_quantized_static_skip_float_layer():
    m, x = _mlp("softmax")
    q = fg.quantization.quantize_static(m, x[:64], skip=[m.layers[2].name])
    _q_roundtrip(q, x[64:], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------- command line
def test_cli_export(tmp_path, capsys):
    from fastgrad.__main__ import main
    m = _randomize(_seq([L.Conv1D(3, 2, activation="relu"), L.GlobalMaxPooling1D(), L.Dense(2)], (6, 2)))
    src, dst = tmp_path / "m.fgm", tmp_path / "m.onnx"
    m.save(str(src))
    assert main(["export", str(src), str(dst)]) == 0
    assert "wrote" in capsys.readouterr().out
    x = _x((6, 2), n=4)
    np.testing.assert_allclose(_ort_predict(onnx.load(str(dst)), [x])[0], m.predict(x, verbose=0),
                               rtol=RTOL, atol=ATOL)
    q = fg.quantization.quantize_dynamic(_seq([L.Dense(4, activation="relu"), L.Dense(2)], (3,)))
    q.save(str(tmp_path / "q.fgm"))
    assert main(["export", str(tmp_path / "q.fgm"), str(tmp_path / "q.onnx"), "--batch-size", "2"]) == 0
    assert main(["export", str(tmp_path / "missing.fgm"), str(tmp_path / "x.onnx")]) == 2


# ---------------------------------------------------------------------- fg.math on symbolic tensors
def test_math_ops_on_symbolic_tensors():
    fg.set_seed(0)
    M = fg.math
    a, c = fg.Input(shape=(3, 4)), fg.Input(shape=(3, 4))
    h = a * 2.0 + 1.0
    h = h / (M.abs(c) + 1.5) - M.exp(c * 0.1)
    h = M.maximum(h, c) ** 2.0
    h = M.sqrt(M.square(h) + 1.0) + M.tanh(-h) + M.clip(c, -0.5, 0.5)
    h = M.softmax(h, axis=1) + M.relu(c) + M.gelu(c)
    s = M.sum(h, axis=-1, keepdims=True) + M.mean(h, axis=2, keepdims=True)
    t = M.transpose(h, (0, 2, 1))
    r = M.reshape(t, (-1, 12))
    y = L.Concatenate()([r, M.max(h, axis=2), M.reshape(s, (-1, 3))])
    y = y @ np.ones((18, 2), np.float32)
    m = fg.Model([a, c], y)
    _roundtrip(m, [_x((3, 4)), _x((3, 4), seed=4)])


def test_math_op_refused_with_name():
    a = fg.Input(shape=(3, 4))
    m = fg.Model(a, a[:, 1])
    with pytest.raises(fx.ExportError, match=r"getitem"):
        fg.export.to_onnx(m)


# ---------------------------------------------------------------------- refusals
def test_refuse_lambda():
    m = _seq([L.Dense(3), L.Lambda(lambda t: t * 2)], (4,))
    with pytest.raises(fx.ExportError, match=r"Lambda.*arbitrary Python"):
        fg.export.to_onnx(m)


def test_refuse_mask_consumer():
    fg.set_seed(0)
    m = _seq([L.Embedding(10, 3, mask_zero=True), L.LSTM(2)], (5,))
    with pytest.raises(fx.ExportError, match=r"LSTM.*mask"):
        fg.export.to_onnx(m)


def test_refuse_stateful():
    m = fg.Sequential([L.Input(shape=(4, 3), batch_size=2), L.GRU(2, stateful=True)])
    with pytest.raises(fx.ExportError, match=r"GRU.*stateful"):
        fg.export.to_onnx(m)


def test_refuse_qat_model():
    m, x = _mlp("linear")
    qat = fg.quantization.prepare_qat(m)
    with pytest.raises(fx.ExportError, match=r"FakeQuantDense.*convert"):
        fg.export.to_onnx(qat)


def test_refuse_custom_layer():
    class Twice(fg.layers.Layer):
        def call(self, inputs):
            return inputs * 2.0

    x = fg.Input(shape=(3,))
    m = fg.Model(x, Twice(name="twice")(x))
    with pytest.raises(fx.ExportError, match=r"'twice' \(Twice\)"):
        fg.export.to_onnx(m)


def test_refuse_unbuilt_and_bad_opset():
    with pytest.raises(fx.ExportError, match="not built"):
        fg.export.to_onnx(fg.Sequential([L.Dense(2)]))
    with pytest.raises(ValueError, match="opset"):
        fg.export.to_onnx(_seq([L.Dense(2)], (3,)), opset=13)


# ---------------------------------------------------------------------- coverage of fg.layers
def test_every_layer_class_is_exported_or_refused():
    """A new layer class must be added to fx.SUPPORTED (and tested here) or fx.REFUSED."""
    fg.layers._load_all()
    names = set()
    for n in fg.layers.__all__:
        obj = getattr(fg.layers, n, None)
        if inspect.isclass(obj) and issubclass(obj, fg.layers.Layer) and obj is not fg.layers.Layer:
            names.add(obj.__name__)
    missing = sorted(n for n in names if n not in fx.SUPPORTED and n not in fx.REFUSED)
    assert not missing, f"layer classes neither exported nor refused by fastgrad.export: {missing}"
    both = sorted(set(fx.SUPPORTED) & set(fx.REFUSED))
    assert not both


def test_supported_list_is_tested():
    # runs last in the file (pytest keeps definition order): every SUPPORTED class was round-tripped
    aliases = {"InputLayer"}
    untested = sorted(set(fx.SUPPORTED) - EXPORTED_IN_TESTS - aliases - set(fx.REFUSED))
    if len(EXPORTED_IN_TESTS) < 20:
        pytest.skip("run with the whole file to check coverage")
    assert not untested, f"SUPPORTED layers without a round-trip test: {untested}"
