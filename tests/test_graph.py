"""The model graph itself (engine/graph.py): order, slots, errors, and the
graph utilities (plot_model, the functional merge helpers, summary)."""
import numpy as np
import pytest

import fastgrad as fg
from fastgrad import layers as L
from fastgrad.engine.graph import Graph, GraphError, SymbolicTensor


def _two_branch():
    a = fg.Input(shape=(4,), name="in_a")
    b = fg.Input(shape=(3,), name="in_b")
    da = L.Dense(5, name="da")(a)
    db = L.Dense(6, name="db")(b)
    c = L.Concatenate(name="cat")([da, db])
    out = L.Dense(2, name="out")(c)
    return fg.Model([a, b], out), (a, b, da, db, c, out)


def test_input_is_a_symbolic_tensor():
    t = fg.Input(shape=(3, 4), name="x")
    assert isinstance(t, SymbolicTensor) and isinstance(t, fg.KerasTensor)
    assert t.shape == (None, 3, 4) and t.dtype == "float32"
    assert fg.Input(shape=(2,), batch_size=8).shape == (8, 2)
    with pytest.raises(TypeError, match="symbolic"):
        np.asarray(t)


def test_layer_order_is_keras_depth_order():
    m, _ = _two_branch()
    assert [l.name for l in m.layers] == ["in_a", "in_b", "da", "db", "cat", "out"]
    names = m._store.weight_names()
    assert names == ["da/kernel", "da/bias", "db/kernel", "db/bias", "out/kernel", "out/bias"]


def test_slots_and_consumers():
    m, _ = _two_branch()
    g = m._graph
    assert g.n_inputs == 2
    assert [n.layer.name for n in g.nodes] == ["da", "db", "cat", "out"]
    assert [n.in_slots for n in g.nodes] == [(0,), (1,), (2, 3), (4,)]
    assert g.output_slots == (5,)
    assert g.consumers[2] == [2] and g.consumers[5] == []
    assert g.slot_shapes == [(4,), (3,), (5,), (6,), (11,), (2,)]


def test_graph_errors_name_the_layers():
    a = fg.Input(shape=(4,), name="ga")
    b = fg.Input(shape=(4,), name="gb")
    h = L.Dense(3, name="gh")(b)
    with pytest.raises(GraphError, match="gb.*not among the model's inputs"):
        fg.Model(a, h)
    with pytest.raises(GraphError, match="'ga' is disconnected"):
        fg.Model([a, b], h)
    with pytest.raises(GraphError, match="made by fg.Input"):
        fg.Model(h, L.Dense(2)(h))
    with pytest.raises(GraphError, match="twice"):
        fg.Model([b, b], h)
    x = L.Dense(3, name="dup")(a)
    y = L.Dense(3, name="dup")(x)
    with pytest.raises(GraphError, match="two different layers are named 'dup'"):
        fg.Model(a, y)
    d = L.Dense(3, name="reuse")
    d(a)
    with pytest.raises(ValueError, match=r"reuse: this layer was built for input shape \(None, 4\) "
                                         r"and is now called on \(None, 5\)"):
        d(fg.Input(shape=(5,)))
    # Dense acts on the last axis of any rank (Keras; issue 10): no error
    assert L.Dense(2)(fg.Input(shape=(2, 3))).shape == (None, 2, 2)
    with pytest.raises(TypeError, match="expected a symbolic tensor"):
        fg.Model(a, np.zeros((1, 4)))


def test_cycle_is_refused():
    a = fg.Input(shape=(2,))
    h = L.Dense(2, name="cyc")(a)
    node = h._node
    node.inputs.append(h)            # a hand-made cycle (the API cannot make one)
    with pytest.raises(GraphError, match="cycle through layer 'cyc'"):
        Graph([a], [h])


def test_functional_merge_helpers():
    a, b = fg.Input(shape=(3,)), fg.Input(shape=(3,))
    assert L.add([a, b]).shape == (None, 3)
    assert L.concatenate([a, b]).shape == (None, 6)
    assert L.dot([a, b], axes=1).shape == (None, 1)
    for f in (L.subtract, L.multiply, L.average, L.maximum, L.minimum):
        assert f([a, b]).shape == (None, 3)
    m = fg.Model([a, b], L.add([a, b]))
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(m.predict([x, 2 * x]), 3 * x)


def test_plot_model_writes_dot(tmp_path):
    m, _ = _two_branch()
    p = fg.utils.plot_model(m, to_file=str(tmp_path / "m.dot"), show_shapes=True)
    text = open(p).read()
    assert text.startswith("digraph") and "da (Dense)" in text and "->" in text
    assert text.count("->") == 5
    dot = fg.utils.model_to_dot(m)
    assert "cat (Concatenate)" in dot


def test_plot_model_png_needs_pydot_or_graphviz(tmp_path, monkeypatch):
    import shutil
    import sys
    m, _ = _two_branch()
    monkeypatch.setitem(sys.modules, "pydot", None)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ImportError, match="pydot"):
        fg.utils.plot_model(m, to_file=str(tmp_path / "m.png"))


def test_summary_connected_to_column():
    m, _ = _two_branch()
    lines = []
    m.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "Connected to" in text
    assert "da[0][0], db[0][0]" in text
    seq = fg.Sequential([L.Dense(2, input_shape=(3,))])
    lines = []
    seq.summary(print_fn=lines.append)
    assert "Connected to" not in "\n".join(lines)


def test_shared_layer_summary_and_params():
    a, b = fg.Input(shape=(3,)), fg.Input(shape=(3,))
    s = L.Dense(2, name="shared_d")
    m = fg.Model([a, b], L.add([s(a), s(b)]))
    assert m.count_params() == 8
    assert len(m._graph.nodes_of[id(s)]) == 2
    lines = []
    m.summary(print_fn=lines.append)
    assert "shared_d[1][0]" in "\n".join(lines)


def test_sub_model_predicts_on_the_compiled_plan():
    from fastgrad.engine import compiled
    from conftest import native_available
    if not native_available():
        pytest.skip("native backend not built")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 6)).astype(np.float32)
    inp = fg.Input(shape=(6,))
    h = L.Dense(8, activation="relu", name="sub_hidden")(inp)
    out = L.Dense(3, activation="softmax")(h)
    m = fg.Model(inp, out)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    m.fit(x, rng.integers(0, 3, 300), epochs=1, verbose=0)
    sub = fg.Model(m.input, m.get_layer("sub_hidden").output)
    assert sub._store.parent is not None
    with fg.use_backend("native"):
        assert compiled.inference_plan(sub) is not None, compiled.unsupported_reason(sub, False)
        got = sub.predict(x)
        one = sub.predict_on_batch(x[:1])
    want = np.maximum(x @ m.get_layer("sub_hidden").kernel + m.get_layer("sub_hidden").bias, 0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(one, got[:1])
    saved = compiled.enabled
    try:
        compiled.enabled = False
        np.testing.assert_array_equal(sub.predict(x), got)    # the Python executor: same bits
    finally:
        compiled.enabled = saved
    m.fit(x, rng.integers(0, 3, 300), epochs=1, verbose=0)       # the parent trains on
    np.testing.assert_allclose(sub.predict(x), np.maximum(
        x @ m.get_layer("sub_hidden").kernel + m.get_layer("sub_hidden").bias, 0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opt", ["adam", "sgd_clip"])
def test_sub_model_trains_on_the_compiled_plan_like_the_python_step(opt):
    """A model whose weights live in another model's buffers trains on the C plan,
    updating only its own arrays (the parent's other weights and optimizer state
    stay untouched), with the Python step's bits."""
    from fastgrad.engine import compiled
    from conftest import native_available
    if not native_available():
        pytest.skip("native backend not built")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((96, 6)).astype(np.float32)
    y = rng.standard_normal((96, 4)).astype(np.float32)

    def run(use_c):
        fg.set_seed(3)
        inp = fg.Input(shape=(6,))
        h = L.Dense(4, activation="tanh", name="h")(inp)
        out = L.Dense(2, name="head")(h)
        parent = fg.Model(inp, out)
        parent.compile(optimizer="sgd", loss="mse")
        with fg.use_backend("native"):     # leaves the head's gradient in the shared buffer
            parent.train_on_batch(x[:8], y[:8, :2])
        sub = fg.Model(parent.input, parent.get_layer("h").output)
        make = (fg.optimizers.Adam(0.01, weight_decay=0.01) if opt == "adam" else
                fg.optimizers.SGD(0.05, momentum=0.9, global_clipnorm=0.5))
        sub.compile(optimizer=make, loss="mse")
        head = [w.copy() for w in parent.get_layer("head").get_weights()]
        assert parent.get_layer("head").grads["kernel"].any()
        saved = compiled.enabled
        compiled.enabled = use_c
        try:
            with fg.use_backend("native"):
                sub.fit(x, y, epochs=2, batch_size=16, verbose=0)
                plan = compiled.train_plan(sub)
        finally:
            compiled.enabled = saved
        assert (plan is not None) == use_c, compiled.unsupported_reason(sub)
        for a, b in zip(parent.get_layer("head").get_weights(), head):
            np.testing.assert_array_equal(a, b)          # the parent's head is not updated
        return parent.get_weights()

    for a, b in zip(run(True), run(False)):
        np.testing.assert_array_equal(a, b)


def test_clone_model_and_json_round_trip():
    m, _ = _two_branch()
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((5, 4)).astype(np.float32), rng.standard_normal((5, 3)).astype(np.float32)]
    c = fg.models.clone_model(m)
    assert [l.name for l in c.layers] == [l.name for l in m.layers]
    assert all(a is not b for a, b in zip(c.layers, m.layers))          # new layers
    assert [w.shape for w in c.get_weights()] == [w.shape for w in m.get_weights()]
    c.set_weights(m.get_weights())
    np.testing.assert_array_equal(c.predict(xs), m.predict(xs))
    j = fg.models.model_from_json(m.to_json())
    j.set_weights(m.get_weights())
    np.testing.assert_array_equal(j.predict(xs), m.predict(xs))
    seq = fg.Sequential([L.Dense(3, input_shape=(4,)), L.Dense(2)])
    s2 = fg.models.clone_model(seq, clone_function=lambda l: type(l).from_config(l.get_config()))
    assert isinstance(s2, fg.Sequential) and s2.built and s2.count_params() == seq.count_params()
    with pytest.raises(ValueError, match="JSON"):
        fg.models.model_from_json("not json")
