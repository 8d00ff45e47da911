"""The compiled plan on model graphs (csrc/step, fastgrad.engine.compiled):
the same bits as the Python executor for residual Adds, multi-input
Concatenates, several outputs with loss weights, shared layers and fan-out,
for 1, 2 and 3 threads; the merge / concat kinds forward and backward
against NumPy through the plan; descriptions C refuses name the layer; and
the codes the binding takes from the C headers agree with the Python side.

Every parity test asserts the compiled run used the plan (a fallback to the
Python executor would pass them trivially)."""

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _config
from fastgrad.engine import compiled

from conftest import compiled_enabled, native_available

pytestmark = [
    pytest.mark.skipif(
        not native_available() or fg._native.module("step") is None,
        reason="native backend / step module not built"),
    pytest.mark.usefixtures("native_backend"),
]

L = fg.layers


def _step():
    return fg._native.module("step")


# ---------------------------------------------------------------- models
def residual():
    x = fg.Input(shape=(12,))
    h = L.Dense(10, activation="relu")(x)
    r = L.Add()([h, L.Dense(10, activation="tanh")(h)])
    r = L.Add()([r, L.Dense(10, activation="gelu")(r)])
    out = L.Dense(4, activation="softmax")(r)
    m = fg.Model(x, out)
    m.compile(optimizer=fg.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
    return m


def two_inputs():
    a, b = fg.Input(shape=(12,)), fg.Input(shape=(5,))
    ha = L.Dense(8, activation="relu")(a)
    hb = L.Dense(6, activation="sigmoid")(b)
    c = L.Concatenate()([ha, hb, b])
    out = L.Dense(4, activation="softmax")(L.Dense(7, activation="tanh")(c))
    m = fg.Model([a, b], out)
    m.compile(optimizer=fg.optimizers.SGD(0.05, momentum=0.9), loss="sparse_categorical_crossentropy")
    return m


def two_outputs():
    x = fg.Input(shape=(12,))
    h = L.Dense(9, activation="relu")(x)
    o1 = L.Dense(4, activation="softmax", name="cls")(h)
    o2 = L.Dense(3, name="reg")(L.Dense(5, activation="tanh")(h))
    m = fg.Model(x, [o1, o2])
    m.compile(optimizer=fg.optimizers.Adam(0.01), loss=["sparse_categorical_crossentropy", "mse"],
              loss_weights=[0.7, 0.3], metrics=[["accuracy"], ["mae"]])
    return m


def shared_dense():
    a, b = fg.Input(shape=(12,)), fg.Input(shape=(5,))
    shared = L.Dense(9, activation="tanh", name="shared")
    ha = shared(L.Dense(9, activation="relu")(a))
    hb = shared(L.Dense(9, activation="relu")(b))
    h = shared(L.Subtract()([ha, hb]))                    # a third call, downstream of the two
    out = L.Dense(4, activation="softmax")(L.Multiply()([h, ha]))
    m = fg.Model([a, b], out)
    m.compile(optimizer=fg.optimizers.RMSprop(0.005), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
    return m


def everything():
    """Fan-out to four consumers, every merge kind, dropout, both norms, a
    frozen layer, an output without a loss weight of 1 and one of rank 2."""
    a, b = fg.Input(shape=(12,)), fg.Input(shape=(3, 4))
    h = L.Dense(8, activation="relu", kernel_regularizer=fg.regularizers.L2(0.01))(a)
    g = L.Dense(8, activation="gelu_tanh")(h)
    m1 = L.Maximum()([h, g, L.Minimum()([h, g])])
    m2 = L.Average()([h, g, m1])
    m3 = L.Subtract()([m2, h])
    bn = L.BatchNormalization()(L.Dense(8)(L.Flatten()(b)))
    c = L.Concatenate()([m3, L.Dropout(0.25)(bn), L.LayerNormalization()(h)])
    frozen = L.Dense(6, activation="sigmoid", name="frozen")
    o1 = L.Dense(3, activation="softmax")(frozen(c))
    o2 = L.Reshape((2, 2))(L.Dense(4, activation="linear")(c))
    m = fg.Model([a, b], [o1, o2])
    frozen.trainable = False
    m.compile(optimizer=fg.optimizers.Adam(0.01, clipnorm=0.5),
              loss=["categorical_crossentropy", "mse"], loss_weights=[1.0, 2.5])
    return m


MODELS = {"residual": residual, "two_inputs": two_inputs, "two_outputs": two_outputs,
          "shared_dense": shared_dense, "everything": everything}


def _data(name, n=70, seed=0):
    r = np.random.default_rng(seed)
    x12 = r.standard_normal((n, 12)).astype(np.float32)
    lab = r.integers(0, 4, n)
    if name == "two_inputs" or name == "shared_dense":
        return [x12, r.standard_normal((n, 5)).astype(np.float32)], lab
    if name == "two_outputs":
        return x12, [lab, r.standard_normal((n, 3)).astype(np.float32)]
    if name == "everything":
        return ([x12, r.standard_normal((n, 3, 4)).astype(np.float32)],
                [np.eye(3, dtype=np.float32)[lab % 3], r.standard_normal((n, 2, 2)).astype(np.float32)])
    return x12, lab


def _run(name, on, threads, epochs=2, batch_size=16, sample_weight=None):
    _config.set_num_threads(threads)
    x, y = _data(name)
    fg.set_seed(3)
    m = MODELS[name]()
    with compiled_enabled(on):
        fg.set_seed(11)
        h = m.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, sample_weight=sample_weight)
        ev = m.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
        plan = m.__dict__.get("_fg_train_plan", (None, None))[1]
        if on:
            assert plan is not None, compiled.unsupported_reason(m)
        else:
            assert plan is None
    return m, h.history, ev


def _same_bits(a, b):
    return all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))


def _same_logs(a, b, regularized=False):
    """Logs of two runs (names differ by the layer counters; order does not). With a
    regularizer the penalty is summed in another order in C (weights keep equal bits)."""
    va, vb = list(a.values()), list(b.values())
    if not regularized:
        return va == vb
    # (C: l * sum w^2 with l as float32; Python: l * norm(w)^2 with l a double)
    return len(va) == len(vb) and all(np.allclose(x, y, rtol=1e-6, atol=0) for x, y in zip(va, vb))


# ---------------------------------------------------------------- parity
@pytest.mark.parametrize("name", sorted(MODELS))
def test_graph_trains_to_the_python_executors_bits(name):
    ref, h_ref, ev_ref = _run(name, False, 1)
    assert ref.optimizer.iterations == 10
    for t in (1, 2, 3):
        com, h_com, ev_com = _run(name, True, t)
        assert _same_bits(ref, com), f"{name}: weights differ from the Python executor with {t} threads"
        reg = name == "everything"
        assert _same_logs(h_com, h_ref, reg), f"{name}: history differs with {t} threads"
        assert _same_logs(ev_com, ev_ref, reg)
    # and training moved every trainable weight (a test that can fail)
    fg.set_seed(3)
    fresh = MODELS[name]()
    moved = [not np.array_equal(a, b) for a, b in zip(fresh.get_weights(), ref.get_weights())]
    assert sum(moved) >= len(moved) // 2


@pytest.mark.parametrize("name", ["two_outputs", "shared_dense"])
def test_sample_weights_and_train_on_batch_match(name):
    sw = np.random.default_rng(5).random(70).astype(np.float32)
    ref, h_ref, _ = _run(name, False, 2, sample_weight=sw)
    com, h_com, _ = _run(name, True, 2, sample_weight=sw)
    assert _same_bits(ref, com) and _same_logs(h_com, h_ref)
    x, y = _data(name, n=20, seed=4)
    logs = []
    for m, on in ((ref, False), (com, True)):
        with compiled_enabled(on):
            logs.append(m.train_on_batch(x, y, return_dict=True))
    assert _same_logs(logs[0], logs[1]) and _same_bits(ref, com)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_graph_predict_matches_python(name):
    m, _, _ = _run(name, True, 2, epochs=1)
    x, _ = _data(name, n=600, seed=7)
    with compiled_enabled(False):
        ref = m.predict(x, batch_size=600)
    plan = compiled.inference_plan(m)
    assert plan is not None, compiled.unsupported_reason(m, training=False)
    refs = ref if isinstance(ref, list) else [ref]
    for rows in (1, 5, 64, 65, 300, 600):
        outs = []
        for t in (1, 2, 3):
            _config.set_num_threads(t)
            xs = [a[:rows] for a in (x if isinstance(x, list) else [x])]
            got = m.predict([a for a in xs] if isinstance(x, list) else xs[0], batch_size=rows)
            outs.append(got if isinstance(got, list) else [got])
        for o, r in zip(outs[0], refs):
            assert o.shape == r[:rows].shape
            np.testing.assert_allclose(o, r[:rows], rtol=2e-5, atol=1e-6)
        for other in outs[1:]:
            assert all(np.array_equal(a, b) for a, b in zip(outs[0], other))


def test_output_without_a_loss_and_dead_branch():
    """An output with no loss gets no gradient: the layer only it reaches has a zero
    gradient and keeps its weights (SGD without momentum), as on the Python executor."""
    def build():
        x = fg.Input(shape=(12,))
        h = L.Dense(9, activation="relu")(x)
        o1 = L.Dense(4, activation="softmax")(h)
        o2 = L.Dense(3, name="side")(h)
        m = fg.Model(x, [o1, o2])
        m.compile(optimizer=fg.optimizers.SGD(0.1), loss=["sparse_categorical_crossentropy", None])
        return m

    r = np.random.default_rng(0)
    x, y = r.standard_normal((50, 12)).astype(np.float32), r.integers(0, 4, 50)
    runs = []
    for on in (False, True):
        fg.set_seed(3)
        m = build()
        before = m.get_layer("side").get_weights()
        with compiled_enabled(on):
            h = m.fit(x, [y, None], batch_size=16, epochs=2, verbose=0)
            assert (m.__dict__.get("_fg_train_plan", (0, None))[1] is not None) == on
        for a, b in zip(before, m.get_layer("side").get_weights()):
            np.testing.assert_array_equal(a, b)
        runs.append((m, h.history))
    assert _same_bits(runs[0][0], runs[1][0]) and _same_logs(runs[0][1], runs[1][1])


def test_nonfinite_loss_in_a_graph_stops_before_the_step():
    from fastgrad.engine.step import NonFiniteLossError
    x, y = _data("two_outputs")
    x[40] = 3e38
    res = []
    for on in (False, True):
        fg.set_seed(3)
        m = two_outputs()
        with compiled_enabled(on), pytest.raises(NonFiniteLossError, match="batch 2") as info:
            m.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
        assert m.optimizer.iterations == 2
        res.append((m, str(info.value)))
    assert _same_bits(res[0][0], res[1][0])


# ---------------------------------------------------------------- merge / concat kinds
MERGES = ["add", "subtract", "multiply", "average", "maximum", "minimum"]


def _merge_model(kind, n_in, ties):
    """x -> n_in tanh Dense branches -> merge -> Dense(3); also the model of the branches."""
    x = fg.Input(shape=(7,))
    hs = [L.Dense(6, activation="tanh")(x) for _ in range(n_in)]
    if ties:   # relu outputs tie at 0, and one input appears twice
        hs = [L.Activation("relu")(h) for h in hs]
        hs[-1] = hs[0]
    cls = {"add": L.Add, "subtract": L.Subtract, "multiply": L.Multiply, "average": L.Average,
           "maximum": L.Maximum, "minimum": L.Minimum}[kind]
    out = L.Dense(3)(cls()(hs))
    m = fg.Model(x, out)
    m.compile(optimizer=fg.optimizers.SGD(0.1), loss="mse")
    return m, fg.Model(x, hs)


def _np_merge(kind, xs):
    xs = [np.asarray(v, np.float64) for v in xs]
    if kind == "add":
        return sum(xs)
    if kind == "subtract":
        return xs[0] - xs[1]
    if kind == "multiply":
        return np.prod(xs, axis=0)
    if kind == "average":
        return sum(xs) / len(xs)
    return (np.maximum if kind == "maximum" else np.minimum).reduce(xs)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("kind", MERGES)
def test_merge_forward_and_backward_through_the_plan(kind, ties):
    n_in = 2 if kind == "subtract" else 3
    r = np.random.default_rng(1)
    x = r.standard_normal((37, 7)).astype(np.float32)
    y = r.standard_normal((37, 3)).astype(np.float32)
    fg.set_seed(2)
    m, branches = _merge_model(kind, n_in, ties)
    # forward against a float64 NumPy merge of the branch outputs
    xs = branches.predict(x)
    plan = compiled.inference_plan(m)
    assert plan is not None, compiled.unsupported_reason(m, training=False)
    head = m.layers[-1]
    want = _np_merge(kind, xs) @ head.kernel.astype(np.float64) + head.bias
    np.testing.assert_allclose(plan.predict_rows(x), want, rtol=1e-5, atol=1e-5)
    # backward: one step's flat gradient equals the Python executor's bit for bit
    grads = []
    for on in (False, True):
        fg.set_seed(2)
        mm, _ = _merge_model(kind, n_in, ties)
        with compiled_enabled(on):
            mm.train_on_batch(x, y)
            assert (mm.__dict__.get("_fg_train_plan", (0, None))[1] is not None) == on
        grads.append(mm.flat_grads.copy())
    assert np.array_equal(grads[0], grads[1])
    if not (kind == "subtract" and ties):       # x - x: only the head's bias moves
        assert np.count_nonzero(grads[1]) > grads[1].size // 3


@pytest.mark.parametrize("axis", [-1, 1, 2])
def test_concat_along_an_axis_through_the_plan(axis):
    def build():
        a, b = fg.Input(shape=(3, 4)), fg.Input(shape=(3, 4))
        ha = L.Reshape((3, 4))(L.Dense(12, activation="tanh")(L.Flatten()(a)))
        c = L.Concatenate(axis=axis)([ha, b, ha])
        m = fg.Model([a, b], L.Dense(2)(L.Flatten()(c)))
        m.compile(optimizer="adam", loss="mse")
        return m

    def branch():
        a, b = fg.Input(shape=(3, 4)), fg.Input(shape=(3, 4))
        ha = L.Reshape((3, 4))(L.Dense(12, activation="tanh")(L.Flatten()(a)))
        return fg.Model([a, b], [L.Concatenate(axis=axis)([ha, b, ha]), ha])

    r = np.random.default_rng(3)
    xa, xb = r.standard_normal((2, 29, 3, 4)).astype(np.float32)
    y = r.standard_normal((29, 2)).astype(np.float32)
    runs = []
    for on in (False, True):
        fg.set_seed(4)
        m = build()
        with compiled_enabled(on):
            m.fit([xa, xb], y, batch_size=8, epochs=2, verbose=0)
            assert (m.__dict__.get("_fg_train_plan", (0, None))[1] is not None) == on
        runs.append(m)
    assert _same_bits(*runs)
    # forward against np.concatenate of the branch (both from the plan)
    inner = branch()
    assert compiled.inference_plan(inner) is not None, compiled.unsupported_reason(inner, False)
    got, ha = inner.predict([xa, xb])
    np.testing.assert_array_equal(got, np.concatenate([ha, xb, ha], axis=axis))


def test_broadcasting_merge_and_dot_fall_back_with_a_reason():
    x = fg.Input(shape=(6,))
    h = L.Dense(6)(x)
    m = fg.Model(x, L.Dense(2)(L.Add()([h, L.Dense(1)(x)])))
    m.compile(optimizer="sgd", loss="mse")
    assert "broadcasts" in compiled.unsupported_reason(m)
    x = fg.Input(shape=(6,))
    m2 = fg.Model(x, L.Dot(axes=1)([L.Dense(6)(x), L.Dense(6)(x)]))
    m2.compile(optimizer="sgd", loss="mse")
    assert "Dot" in compiled.unsupported_reason(m2)
    r = np.random.default_rng(0)
    m.fit(r.standard_normal((8, 6)).astype(np.float32), r.standard_normal((8, 2)).astype(np.float32),
          verbose=0)          # runs, on the Python executor


# ---------------------------------------------------------------- descriptor validation
def _net(nodes, n_params=400, inputs=((4,),), outputs=None, losses=None):
    params = np.zeros(n_params, np.float32)
    graph = dict(inputs=list(inputs), nodes=nodes,
                 outputs=outputs if outputs is not None else [len(inputs) + len(nodes) - 1])
    opt = dict(kind=_step().OPTIMIZERS["sgd"]) if losses else None
    return _step().Net(graph, params, np.zeros_like(params) if losses else None, losses, opt)


def _dense(name, ins, units, w_off, b_off=-1, act=None, **kw):
    return dict(kind=_step().LAYER_KINDS["dense"], name=name, inputs=ins, shape=(units,),
                act=_step().ACTIVATIONS["relu"] if act is None else act, w_off=w_off, b_off=b_off, **kw)


def test_valid_description_builds():
    net = _net([_dense("d1", [0], 5, 0, 20), _dense("d2", [1], 3, 32, 48)])
    out = [np.empty((2, 3), np.float32)]
    net.predict([np.ones((2, 4), np.float32)], out, 1)
    assert net.n_outputs == 1 and net.out_shapes == ((3,),)


@pytest.mark.parametrize("bad,culprit", [
    (lambda: [_dense("d1", [0], 5, 390), _dense("d2", [1], 3, 0)], "d1"),       # kernel past the end
    (lambda: [_dense("d1", [0], 5, 0, 398), _dense("d2", [1], 3, 32)], "d1"),   # bias past the end
    (lambda: [_dense("d1", [0], 5, 0), _dense("d2", [1], 3, 10)], "d2"),        # overlaps d1's kernel
    (lambda: [_dense("d1", [0], 5, 0), _dense("d2", [0], 3, 32)], None),        # d1 feeds nothing: fine
    (lambda: [_dense("d1", [0], 5, 0), dict(_dense("d2", [1], 3, 32), shape=(3, 1))], "d2"),  # rank 2
    (lambda: [_dense("d1", [0], 5, 0), _dense("d2", [2], 3, 32)], "d2"),        # slot not yet written
    (lambda: [_dense("d1", [0], 5, 0, act=77), _dense("d2", [1], 3, 32)], "d1"),  # unknown activation
    (lambda: [_dense("d1", [0], 5, 0, out_act=_step().ACTIVATIONS["softmax"]),
              _dense("d2", [1], 3, 32)], "d1"),                                  # out_act on a hidden node
    (lambda: [_dense("d1", [0], 5, 0), dict(kind=_step().LAYER_KINDS["merge"], name="m",
                                            op=_step().MERGE_OPS["add"], inputs=[0, 1], shape=(5,))],
     "m"),                                                                       # shapes differ
    (lambda: [_dense("d1", [0], 5, 0), dict(kind=_step().LAYER_KINDS["concat"], name="c", axis=0,
                                            inputs=[0, 1], shape=(8,))], "c"),   # 4 + 5 != 8
    (lambda: [_dense("d1", [0], 5, 0), dict(kind=_step().LAYER_KINDS["layernorm"], name="ln",
                                            inputs=[1], shape=(5,), w_off=-1, b_off=-1, eps=0.0)],
     "ln"),                                                                      # eps 0
    (lambda: [_dense("d1", [0], 5, 0), dict(kind=99, name="what", inputs=[1], shape=(5,))], "what"),
])
def test_bad_descriptions_raise_naming_the_layer(bad, culprit):
    nodes = bad()
    if culprit is None:
        _net(nodes, outputs=[1, 2])
        return
    with pytest.raises(ValueError, match=f"layer '{culprit}'"):
        _net(nodes)


def test_bad_graph_and_fields_raise():
    with pytest.raises(ValueError, match="unknown description field 'units'"):
        _net([dict(_dense("d1", [0], 5, 0), units=5)])
    with pytest.raises(ValueError, match="rank"):
        _net([_dense("d1", [0], 5, 0)], inputs=[(1,) * 9])
    with pytest.raises(ValueError):          # the same output twice
        _net([_dense("d1", [0], 5, 0)], outputs=[1, 1])
    with pytest.raises(ValueError):          # an input as an output
        _net([_dense("d1", [0], 5, 0)], outputs=[0])
    with pytest.raises(ValueError):          # training with nothing to train
        _net([dict(kind=_step().LAYER_KINDS["activation"], name="a", inputs=[0], shape=(4,),
                   act=_step().ACTIVATIONS["tanh"])], losses=[(_step().LOSSES["mse"], 1.0)])


# ---------------------------------------------------------------- codes
def test_codes_from_the_headers_agree_with_the_python_side():
    from fastgrad.backend import ACTIVATIONS as PY_ACTS
    from fastgrad.backend.numpy_ops import MERGE_KINDS
    step = _step()
    for name, code in PY_ACTS.items():          # every activation the step runs has Python's code
        if name in step.ACTIVATIONS:
            assert step.ACTIVATIONS[name] == code, name
    for name in ("linear", "relu", "sigmoid", "tanh", "gelu", "gelu_tanh"):
        assert name in step.ACTIVATIONS
    for mod in ("gemm", "kernels"):
        for name, code in fg._native.module(mod).ACTIVATIONS.items():
            if name in step.ACTIVATIONS:
                assert step.ACTIVATIONS[name] == code, (mod, name)
    assert set(step.MERGE_OPS) == set(MERGE_KINDS)
    assert len(set(step.ACTIVATIONS.values())) == len(step.ACTIVATIONS)
    assert step.ACT_NONE not in step.ACTIVATIONS.values()
    assert len(set(step.LOSSES.values())) == len(step.LOSSES)
    assert len(set(step.OPTIMIZERS.values())) == len(step.OPTIMIZERS)


def _conv_net():
    x = fg.Input(shape=(12, 12, 2))
    h = L.Conv2D(4, 3, padding="same", activation="relu")(x)
    h = L.MaxPooling2D(2)(h)
    h = L.Activation("tanh")(L.GlobalAveragePooling2D()(h))
    m = fg.Model(x, L.Dense(3)(h))
    m.compile(optimizer="sgd", loss="mse")
    return m


def _image_net():
    """One layer of each image kind (csrc/step layer_depthwise2d.c ... layer_sdropout.c)."""
    x = fg.Input(shape=(6, 5, 2))
    h = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2)(x)
    h = L.SeparableConv2D(3, 2, activation="relu")(h)
    h = L.Conv2DTranspose(2, 2, strides=2)(h)
    h = L.Cropping2D(((1, 0), (0, 1)))(L.ZeroPadding2D(1)(h))
    h = L.SpatialDropout2D(0.2)(L.UpSampling2D(2)(h))
    m = fg.Model(x, L.Dense(3)(L.Flatten()(h)))
    m.compile(optimizer="sgd", loss="mse")
    return m


def test_every_lowered_kind_is_in_the_c_table():
    """Driven by the C side, not by a list here: every key a layer's lower()
    returns is a field of desc.c's table, every kind it names is a row of
    layer_table.c, and every row is reached by some layer of these models (a
    new kind adds its model to the tuple — step 5 of docs/architecture.md's
    checklist)."""
    step = _step()
    seen = set()
    for model in (everything(), _conv_net(), _image_net()):
        ctx = compiled.LowerContext(step, True)
        for layer in model._graph.layers:
            if isinstance(layer, L.InputLayer):
                continue
            d = layer.lower(ctx)
            assert d["kind"] in step.LAYER_KINDS, layer.name
            seen.add(d["kind"])
            for key in d:
                assert key == "kind" or step.node_field_type(key) is not None, (layer.name, key)
    assert step.node_field_type("no_such_field") is None
    assert seen == set(step.LAYER_KINDS), f"kinds no test model lowers to: {set(step.LAYER_KINDS) - seen}"


def test_layers_without_a_c_path_say_so():
    step = _step()
    ctx = compiled.LowerContext(step, True)
    x = fg.Input(shape=(3, 4))
    ln = L.LayerNormalization(axis=-1)
    fg.Model(x, ln(x))
    with pytest.raises(compiled.NoCPath, match="part of each sample"):
        ln.lower(ctx)
    with pytest.raises(compiled.NoCPath, match="activation 'swishy'"):
        ctx.act("swishy")


@pytest.mark.parametrize("act", sorted(set(fg.activations.ACTIVATION_NAMES) - {"softmax", "log_softmax"}))
def test_every_activation_trains_to_the_python_executors_bits(act):
    """Every element-wise activation of the header runs in the plan (by name, with Keras's
    default parameters), in a Dense epilogue and as an Activation layer, with the backward
    reading the tensor fg_act_backward_needs_input names."""
    def build():
        x = fg.Input(shape=(12,))
        h = L.Dense(9, activation=act)(x)
        h = L.Activation(act)(L.Dense(7)(h))
        m = fg.Model(x, L.Dense(4, activation="softmax")(h))
        m.compile(optimizer=fg.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
        return m

    r = np.random.default_rng(0)
    x, y = r.standard_normal((60, 12)).astype(np.float32), r.integers(0, 4, 60)
    runs = []
    for on in (False, True):
        fg.set_seed(3)
        m = build()
        with compiled_enabled(on):
            fg.set_seed(11)
            h = m.fit(x, y, batch_size=16, epochs=2, verbose=0)
            assert (m.__dict__.get("_fg_train_plan", (0, None))[1] is not None) == on, \
                compiled.unsupported_reason(m)
        runs.append((m, h.history))
    assert _same_bits(runs[0][0], runs[1][0]) and _same_logs(runs[0][1], runs[1][1])


@pytest.mark.parametrize("make", [
    lambda: L.ReLU(), lambda: L.ReLU(max_value=6.0), lambda: L.ReLU(negative_slope=0.1),
    lambda: L.ReLU(max_value=2.5, negative_slope=0.05, threshold=-0.3), lambda: L.LeakyReLU(),
    lambda: L.LeakyReLU(negative_slope=0.01), lambda: L.ELU(), lambda: L.ELU(alpha=0.4),
    lambda: L.Softmax()], ids=["relu", "relu6", "leaky", "general", "leaky_layer", "leaky_001", "elu",
                               "elu_04", "softmax"])
def test_activation_layers_with_parameters_train_to_the_python_executors_bits(make):
    def build():
        x = fg.Input(shape=(3, 4))
        h = make()(L.Reshape((3, 4))(L.Dense(12)(L.Flatten()(x))))
        m = fg.Model(x, L.Dense(4, activation="softmax")(make()(L.Dense(9)(L.Flatten()(h)))))
        m.compile(optimizer=fg.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
        return m

    r = np.random.default_rng(0)
    x, y = r.standard_normal((60, 3, 4)).astype(np.float32), r.integers(0, 4, 60)
    runs = []
    for on in (False, True):
        fg.set_seed(3)
        m = build()
        with compiled_enabled(on):
            fg.set_seed(11)
            h = m.fit(x, y, batch_size=16, epochs=2, verbose=0)
            assert (m.__dict__.get("_fg_train_plan", (0, None))[1] is not None) == on, \
                compiled.unsupported_reason(m)
        runs.append((m, h.history))
    assert _same_bits(runs[0][0], runs[1][0]) and _same_logs(runs[0][1], runs[1][1])


def test_softmax_layer_fused_and_over_other_axes():
    x = fg.Input(shape=(6,))
    m = fg.Model(x, L.Softmax()(L.Dense(4)(x)))
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    plan = compiled.train_plan(m)
    assert plan is not None and m._output_activations == ["softmax"]
    xx = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)
    np.testing.assert_allclose(compiled.inference_plan(m).predict_rows(xx).sum(axis=1), 1.0, rtol=1e-6)
    x2 = fg.Input(shape=(3, 4))
    m2 = fg.Model(x2, L.Flatten()(L.Softmax(axis=1)(x2)))
    m2.compile(optimizer="adam", loss="mse")
    assert "Softmax over axes" in compiled.unsupported_reason(m2, training=False)


def test_graphs_match_on_every_isa(each_isa):
    from conftest import isa_paths
    for isa in isa_paths():
        fg._native.set_isa(isa)
        for name in ("everything", "shared_dense"):
            ref, h_ref, _ = _run(name, False, 2, epochs=1)
            com, h_com, _ = _run(name, True, 2, epochs=1)
            assert _same_bits(ref, com), (isa, name)
            assert _same_logs(h_com, h_ref, name == "everything"), (isa, name)
