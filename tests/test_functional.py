"""The functional API as Keras 3 users write it: fg.Input, layer calls on
symbolic tensors, fg.Model(inputs, outputs) with branches, merges, several
inputs / outputs, shared layers, sub-models and models called on new inputs.

Keras 3 is the reference for names, return structures, history keys, layer
and weight order and errors; the numbers are checked against manual NumPy
forwards, float64 finite differences (NumPy backend), the NumPy vs native
backends (the Python executor runs every graph), thread counts (bitwise) and
a save / load / resume round trip. The PyTorch oracle is in
test_functional_torch.py."""
import json
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import fastgrad as fg
from fastgrad.engine.graph import GraphError

from conftest import backends

L = fg.layers
SCCE = "sparse_categorical_crossentropy"


# ====================================================================== models and data
def relu(z):
    return np.maximum(z, 0.0)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def residual_mlp(op=False, seed=0, fin=12, width=16, k=4, blocks=2):
    """x -> stem -> blocks of x + Dense(Dense(x)) -> softmax head; the merge is
    an Add layer (op=False) or Python's + on symbolic tensors (op=True)."""
    fg.set_seed(seed)
    inp = fg.Input(shape=(fin,), name="features")
    x = L.Dense(width, activation="relu", name="stem")(inp)
    for i in range(blocks):
        h = L.Dense(width, activation="relu", name=f"block{i}_a")(x)
        h = L.Dense(width, name=f"block{i}_b")(h)
        x = x + h if op else L.Add(name=f"add{i}")([x, h])
    out = L.Dense(k, activation="softmax", name="head")(x)
    return fg.Model(inp, out, name="residual_op" if op else "residual")


def residual_data(n=256, fin=12, k=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, fin)).astype(np.float32)
    y = (x[:, :k] + 0.5 * x[:, k:2 * k]).argmax(axis=1)
    return x, y


def two_input(seed=0):
    """The brief's two-branch model: a=Input; b=Input; da=Dense(a); db=Dense(b);
    c=Concatenate([da, db]); out=Dense(c)."""
    fg.set_seed(seed)
    a = fg.Input(shape=(6,), name="input_a")
    b = fg.Input(shape=(4,), name="input_b")
    da = L.Dense(8, activation="relu", name="da")(a)
    db = L.Dense(8, activation="tanh", name="db")(b)
    c = L.Concatenate(name="concatenate")([da, db])
    out = L.Dense(3, activation="softmax", name="out")(c)
    return fg.Model([a, b], out, name="two_input")


def two_input_data(n=240, seed=1):
    rng = np.random.default_rng(seed)
    xa = rng.standard_normal((n, 6)).astype(np.float32)
    xb = rng.standard_normal((n, 4)).astype(np.float32)
    y = (xa[:, :3] + xb[:, :3]).argmax(axis=1)
    return [xa, xb], y


def two_output(seed=0, dict_outputs=False):
    """One input, a trunk, two heads: out_a (3 classes, softmax) and out_b
    (regression)."""
    fg.set_seed(seed)
    inp = fg.Input(shape=(10,), name="x")
    h = L.Dense(16, activation="tanh", name="trunk")(inp)
    oa = L.Dense(3, activation="softmax", name="out_a")(h)
    ob = L.Dense(1, name="out_b")(h)
    outs = {"out_a": oa, "out_b": ob} if dict_outputs else [oa, ob]
    return fg.Model(inp, outs, name="two_output")


def two_output_data(n=240, seed=2):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 10)).astype(np.float32)
    ya = x[:, :3].argmax(axis=1)
    yb = (x[:, 3:4] - 0.5 * x[:, 4:5]).astype(np.float32)
    return x, [ya, yb]


TWO_OUTPUT_COMPILE = dict(loss={"out_a": SCCE, "out_b": "mse"},
                          loss_weights={"out_a": 1.0, "out_b": 0.5},
                          metrics={"out_a": ["accuracy"]})


def siamese(seed=0, shared=True, out_act="sigmoid"):
    """Two inputs through ONE encoder (shared=True) or two encoders (False),
    their difference, a sigmoid head."""
    fg.set_seed(seed)
    left = fg.Input(shape=(5,), name="left")
    right = fg.Input(shape=(5,), name="right")
    if shared:
        enc = L.Dense(6, activation="tanh", name="encoder")
        el, er = enc(left), enc(right)
    else:
        el = L.Dense(6, activation="tanh", name="encoder")(left)
        er = L.Dense(6, activation="tanh", name="encoder_r")(right)
    d = L.Subtract(name="diff")([el, er])
    out = L.Dense(1, activation=out_act, name="same")(d)
    return fg.Model([left, right], out, name="siamese")


def siamese_data(n=240, seed=3):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, 5)).astype(np.float32)
    b = rng.standard_normal((n, 5)).astype(np.float32)
    y = (a.sum(axis=1) > b.sum(axis=1)).astype(np.float32)
    return [a, b], y


def shared_two_in_two_out(seed=0):
    """Two inputs through one shared Dense, a concatenation head and an Add head."""
    fg.set_seed(seed)
    a = fg.Input(shape=(6,), name="in_a")
    b = fg.Input(shape=(6,), name="in_b")
    shared = L.Dense(8, activation="tanh", name="shared")
    sa, sb = shared(a), shared(b)
    oa = L.Dense(3, activation="softmax", name="out_a")(L.Concatenate(name="cat")([sa, sb]))
    ob = L.Dense(1, name="out_b")(L.Add(name="sum")([sa, sb]))
    return fg.Model([a, b], [oa, ob], name="shared_io")


def shared_io_data(n=200, seed=4):
    rng = np.random.default_rng(seed)
    xa = rng.standard_normal((n, 6)).astype(np.float32)
    xb = rng.standard_normal((n, 6)).astype(np.float32)
    ya = (xa[:, :3] - xb[:, :3]).argmax(axis=1)
    yb = (xa[:, :1] + xb[:, 1:2]).astype(np.float32)
    return [xa, xb], [ya, yb]


#: name -> (builder, data, compile kwargs, optimizer factory)
CASES = {
    "residual_add": (lambda s=0: residual_mlp(False, s), residual_data,
                     dict(loss=SCCE, metrics=["accuracy"])),
    "residual_op": (lambda s=0: residual_mlp(True, s), residual_data,
                    dict(loss=SCCE, metrics=["accuracy"])),
    "two_input": (two_input, two_input_data, dict(loss=SCCE, metrics=["accuracy"])),
    "two_output": (two_output, two_output_data, TWO_OUTPUT_COMPILE),
    "siamese": (siamese, siamese_data, dict(loss="binary_crossentropy", metrics=["accuracy"])),
    "shared_io": (shared_two_in_two_out, shared_io_data,
                  dict(loss=[SCCE, "mse"], loss_weights=[1.0, 0.3],
                       metrics=[["accuracy"], []])),
}


def _build(case, seed=0, optimizer=None):
    build, data, kw = CASES[case]
    m = build(seed)
    m.compile(optimizer=optimizer or fg.optimizers.Adam(0.01), **kw)
    x, y = data()
    return m, x, y


def _mnist_like(n=3000, seed=0):
    """Random data of MNIST's shape (784 features in [0, 1], 10 classes) that
    can be learnt: each image is its class's fixed random template, faint
    (weight 0.15) under uniform noise."""
    rng = np.random.default_rng(seed)
    templates = rng.random((10, 784), dtype=np.float32)
    y = rng.integers(0, 10, n)
    x = (0.15 * templates[y] + 0.85 * rng.random((n, 784), dtype=np.float32))
    return x.astype(np.float32), y


# ====================================================================== 1. the tutorial's MNIST
def test_tutorial_functional_mnist_example():
    fg.set_seed(0)
    inputs = fg.Input(shape=(784,))
    x = fg.layers.Dense(128, activation="relu")(inputs)
    outputs = fg.layers.Dense(10, activation="softmax")(x)
    model = fg.Model(inputs=inputs, outputs=outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    assert [type(l).__name__ for l in model.layers] == ["InputLayer", "Dense", "Dense"]
    assert model.count_params() == 784 * 128 + 128 + 128 * 10 + 10
    assert model.input_shape == (None, 784) and model.output_shape == (None, 10)

    x_all, y_all = _mnist_like(3000)
    x_train, y_train, x_test, y_test = x_all[:2500], y_all[:2500], x_all[2500:], y_all[2500:]
    before = model.evaluate(x_test, y_test, verbose=0)
    history = model.fit(x_train, y_train, batch_size=64, epochs=4, validation_split=0.1,
                        verbose=0)
    h = history.history
    assert set(h) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 4 for v in h.values())
    assert h["loss"][-1] < h["loss"][0]
    assert h["accuracy"][-1] > h["accuracy"][0] + 0.2
    assert h["val_accuracy"][-1] > h["val_accuracy"][0]

    loss, acc = model.evaluate(x_test, y_test, verbose=0)
    assert isinstance(loss, float) and isinstance(acc, float)
    assert acc > before[1] + 0.3 and acc > 0.6
    assert loss < before[0]
    d = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
    assert d == {"loss": loss, "accuracy": acc}

    probs = model.predict(x_test)
    assert isinstance(probs, np.ndarray) and probs.shape == (500, 10)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (probs.argmax(axis=1) == y_test).mean() == pytest.approx(acc)
    # the prediction is the forward pass of the weights get_weights returns
    w1, b1, w2, b2 = [w.astype(np.float64) for w in model.get_weights()]
    ref = softmax(relu(x_test @ w1 + b1) @ w2 + b2)
    np.testing.assert_allclose(probs, ref, rtol=1e-4, atol=1e-6)


def test_functional_mnist_example_script_runs(tmp_path):
    """examples/functional_mnist.py runs offline and learns (small run)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(root, "examples", "functional_mnist.py")
    env = dict(os.environ, PYTHONPATH=os.path.join(root, "src") + os.pathsep +
               os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, script, "--epochs", "2", "--quiet"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    last = [l for l in res.stdout.splitlines() if l.startswith("test accuracy")]
    assert last, res.stdout
    assert float(last[-1].split()[-1]) > 0.5


# ====================================================================== 2. graph shapes
@pytest.mark.parametrize("op", [False, True])
def test_residual_mlp_forward_matches_numpy(op):
    m = residual_mlp(op)
    x, _ = residual_data(32)
    names = [l.name for l in m.layers]
    assert names[:2] == ["features", "stem"] and names[-1] == "head"
    # Keras 3: x + h is an op, not a layer: model.layers omits it; an Add layer is listed
    adds = [l for l in m.layers if type(l).__name__ == "Add"]
    assert len(adds) == (0 if op else 2)
    assert len([n for n in m._graph.nodes if type(n.layer).__name__ == "Add"]) == 2
    w = [a.astype(np.float64) for a in m.get_weights()]
    h = relu(x @ w[0] + w[1])
    for i in range(2):
        a = relu(h @ w[2 + 4 * i] + w[3 + 4 * i])
        h = h + (a @ w[4 + 4 * i] + w[5 + 4 * i])
    ref = softmax(h @ w[10] + w[11])
    np.testing.assert_allclose(m.predict(x), ref, rtol=1e-4, atol=1e-6)


def test_add_layer_and_plus_operator_build_the_same_model():
    m1, m2 = residual_mlp(False, seed=5), residual_mlp(True, seed=5)
    for a, b in zip(m1.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)
    x, y = residual_data(64)
    np.testing.assert_array_equal(m1.predict(x), m2.predict(x))
    for m in (m1, m2):
        m.compile(optimizer=fg.optimizers.SGD(0.05), loss=SCCE)
        m.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    for a, b in zip(m1.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_two_input_concatenate_forward_and_keras_layer_order():
    m = two_input()
    assert [l.name for l in m.layers] == ["input_a", "input_b", "da", "db", "concatenate",
                                          "out"]
    assert [w.shape for w in m.get_weights()] == [(6, 8), (8,), (4, 8), (8,), (16, 3), (3,)]
    (xa, xb), _ = two_input_data(20)
    w = [a.astype(np.float64) for a in m.get_weights()]
    c = np.concatenate([relu(xa @ w[0] + w[1]), np.tanh(xb @ w[2] + w[3])], axis=1)
    ref = softmax(c @ w[4] + w[5])
    np.testing.assert_allclose(m.predict([xa, xb]), ref, rtol=1e-4, atol=1e-6)
    # inputs as a dict by input name, in any key order
    np.testing.assert_array_equal(m.predict({"input_b": xb, "input_a": xa}),
                                  m.predict([xa, xb]))
    assert m.input_names == ["input_a", "input_b"]


def test_keras_layer_order_with_uneven_branches():
    """Keras 3 orders layers by depth from the outputs (ties: first met walking
    back from the outputs); an InputLayer sits at its own depth, so a short
    branch's input comes after the long branch's first layer (Keras 3.15:
    ['in_a', 'da1', 'in_b', 'da2', 'db', 'cat', 'out'])."""
    a, b = fg.Input((6,), name="in_a"), fg.Input((4,), name="in_b")
    da2 = L.Dense(8, name="da2")(L.Dense(8, name="da1")(a))
    db = L.Dense(8, name="db")(b)
    m = fg.Model([a, b], L.Dense(2, name="out")(L.Concatenate(name="cat")([da2, db])))
    assert [l.name for l in m.layers] == ["in_a", "da1", "in_b", "da2", "db", "cat", "out"]
    assert [w.shape for w in m.get_weights()] == [(6, 8), (8,), (8, 8), (8,), (4, 8), (8,),
                                                  (16, 2), (2,)]
    # the short branch first in the merge: the walk from the output meets in_b2 before
    # da1b, both at depth 3 (Keras 3.15: the list below)
    a, b = fg.Input((6,), name="in_a2"), fg.Input((4,), name="in_b2")
    db = L.Dense(8, name="db2")(b)
    da = L.Dense(8, name="da2b")(L.Dense(8, name="da1b")(a))
    m = fg.Model([a, b], L.Dense(2, name="out2")(L.Concatenate(name="cat2")([db, da])))
    assert [l.name for l in m.layers] == ["in_a2", "in_b2", "da1b", "db2", "da2b", "cat2",
                                          "out2"]
    assert [w.shape for w in m.get_weights()][:6] == [(6, 8), (8,), (4, 8), (8,), (8, 8), (8,)]
    # a layer shared at two depths sits at its deepest call (Keras: x, s, mid, add, o)
    x = fg.Input((4,), name="xs")
    s = L.Dense(4, name="s")
    h1 = s(x)
    h3 = s(L.Dense(4, name="mid")(h1))
    m = fg.Model(x, L.Dense(2, name="o")(L.Add(name="add_s")([h3, h1])))
    assert [l.name for l in m.layers] == ["xs", "s", "mid", "add_s", "o"]


def test_two_output_model_keras_names_and_structures():
    m = two_output()
    m.compile(optimizer="adam", **TWO_OUTPUT_COMPILE)
    assert m.output_names == ["out_a", "out_b"]
    x, (ya, yb) = two_output_data()
    h = m.fit(x, [ya, yb], epochs=3, batch_size=32, validation_split=0.2, verbose=0).history
    assert set(h) == {"loss", "out_a_loss", "out_b_loss", "out_a_accuracy", "val_loss",
                      "val_out_a_loss", "val_out_b_loss", "val_out_a_accuracy"}
    # the total is the weighted sum of the per-output losses (epoch means)
    for e in range(3):
        assert h["loss"][e] == pytest.approx(h["out_a_loss"][e] + 0.5 * h["out_b_loss"][e],
                                             rel=1e-6)
        assert h["val_loss"][e] == pytest.approx(h["val_out_a_loss"][e] +
                                                 0.5 * h["val_out_b_loss"][e], rel=1e-6)
    assert h["loss"][-1] < h["loss"][0]
    res = m.evaluate(x, [ya, yb], verbose=0)
    assert isinstance(res, list) and len(res) == 4       # loss, out_a_loss, out_b_loss, acc
    d = m.evaluate(x, {"out_a": ya, "out_b": yb}, verbose=0, return_dict=True)
    assert list(d) == ["loss", "out_a_loss", "out_b_loss", "out_a_accuracy"]
    assert list(d.values()) == res
    assert m.metrics_names == ["loss", "out_a_loss", "out_b_loss", "out_a_accuracy"]
    # per-output losses and accuracy against NumPy
    pa, pb = m.predict(x)
    assert res[1] == pytest.approx(-np.log(pa[np.arange(len(ya)), ya].astype(np.float64)).mean(),
                                   rel=1e-4)
    assert res[2] == pytest.approx(((pb.astype(np.float64) - yb) ** 2).mean(), rel=1e-4)
    assert res[3] == pytest.approx((pa.argmax(1) == ya).mean())
    assert res[0] == pytest.approx(res[1] + 0.5 * res[2], rel=1e-6)
    # predict: a list for list outputs, a dict for dict outputs
    p = m.predict(x)
    assert isinstance(p, list) and [a.shape for a in p] == [(240, 3), (240, 1)]
    md = two_output(dict_outputs=True)
    md.set_weights(m.get_weights())
    pd_ = md.predict(x)
    assert isinstance(pd_, dict) and list(pd_) == ["out_a", "out_b"]
    np.testing.assert_array_equal(pd_["out_a"], p[0])
    np.testing.assert_array_equal(pd_["out_b"], p[1])
    # train_on_batch / test_on_batch give the same structure
    tb = m.test_on_batch(x[:32], [ya[:32], yb[:32]], return_dict=True)
    assert list(tb) == list(d)


def test_loss_list_and_loss_weights_list_equal_dicts():
    x, (ya, yb) = two_output_data()
    res = []
    for kw in (TWO_OUTPUT_COMPILE,
               dict(loss=[SCCE, "mse"], loss_weights=[1.0, 0.5], metrics=[["accuracy"], []])):
        m = two_output(seed=3)
        m.compile(optimizer=fg.optimizers.SGD(0.1), **kw)
        m.fit(x, [ya, yb], epochs=2, batch_size=32, shuffle=False, verbose=0)
        res.append(m.get_weights())
    for a, b in zip(*res):
        np.testing.assert_array_equal(a, b)


def test_output_with_no_loss_is_predicted_but_not_trained():
    m = two_output(seed=1)
    m.compile(optimizer=fg.optimizers.SGD(0.1), loss={"out_a": SCCE})
    x, (ya, yb) = two_output_data()
    wb = m.get_layer("out_b").get_weights()
    h = m.fit(x, {"out_a": ya}, epochs=1, verbose=0).history
    assert set(h) == {"loss", "out_a_loss"}
    for a, b in zip(wb, m.get_layer("out_b").get_weights()):
        np.testing.assert_array_equal(a, b)
    assert len(m.predict(x)) == 2


def _to_float64(model):
    """Rebind the model's parameters / gradients to float64 copies (NumPy backend
    only) so the Python executor runs the graph in float64."""
    st = model._store
    p64 = st.params.astype(np.float64)
    g64 = np.zeros_like(p64)
    for e in st.entries:
        e.param = p64[e.offset:e.offset + e.size].reshape(e.spec.shape)
        e.grad = g64[e.offset:e.offset + e.size].reshape(e.spec.shape)
    for layer in st.layers:
        mine = [e for e in st.entries if e.layer is layer]
        layer.bind({e.spec.name: e.param for e in mine}, {e.spec.name: e.grad for e in mine},
                   layer.state)
    st.params, st.grads = p64, g64
    return p64, g64


def _fd_grad_check(model, xs, rng, n_out=1):
    """d/dp of sum(out * R) by the executor's backward vs central differences."""
    model.compile(optimizer=fg.optimizers.SGD(0.0), loss="mse")
    p, g = _to_float64(model)
    step = model._get_step()
    xs = [x.astype(np.float64) for x in xs]
    n = xs[0].shape[0]
    R = [rng.standard_normal((n,) + s) for s in model._output_shapes]

    def objective():
        wss = step.cache.get(n)
        outs = step.forward(xs, True, wss)
        return sum(float((o * r).sum()) for o, r in zip(outs, R)), wss

    _, wss = objective()
    step.backward([r.copy() for r in R], wss)
    analytic = g.copy()
    eps = 1e-6
    numeric = np.zeros_like(p)
    for i in range(p.size):
        old = p[i]
        p[i] = old + eps
        up, _ = objective()
        p[i] = old - eps
        down, _ = objective()
        p[i] = old
        numeric[i] = (up - down) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
    return analytic


def test_siamese_shared_gradient_is_the_sum_of_both_uses_fd_float64():
    (a, b), _ = siamese_data(7)
    with fg.use_backend("numpy"):
        shared = siamese(seed=2, out_act=None)
        assert [l.name for l in shared.layers] == ["left", "right", "encoder", "diff", "same"]
        assert [w.shape for w in shared.get_weights()] == [(5, 6), (6,), (6, 1), (1,)]
        g_shared = _fd_grad_check(shared, [a, b], np.random.default_rng(1))
        # the same function with two encoders holding the same weights
        twin = siamese(seed=2, shared=False, out_act=None)
        w = shared.get_weights()
        twin.set_weights([w[0], w[1], w[0], w[1], w[2], w[3]])
        g_twin = _fd_grad_check(twin, [a, b], np.random.default_rng(1))
    ks, kt = shared.get_layer("encoder"), twin.get_layer("encoder")
    kr = twin.get_layer("encoder_r")
    np.testing.assert_allclose(ks.grads["kernel"], kt.grads["kernel"] + kr.grads["kernel"],
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ks.grads["bias"], kt.grads["bias"] + kr.grads["bias"],
                               rtol=1e-12, atol=1e-14)
    assert not np.allclose(kt.grads["kernel"], 0) and not np.allclose(kr.grads["kernel"], 0)
    assert g_shared.shape != g_twin.shape           # one encoder's arrays fewer


@pytest.mark.parametrize("case", ["residual_add", "two_input", "two_output", "shared_io"])
def test_graph_gradients_fd_float64(case):
    build, data, _ = CASES[case]
    x, _ = data(5)
    xs = x if isinstance(x, list) else [x]
    with fg.use_backend("numpy"):
        _fd_grad_check(build(3), xs, np.random.default_rng(0))


@pytest.mark.parametrize("backend", backends())
def test_siamese_training_updates_the_shared_weights_once(backend):
    """One SGD step on the shared encoder = w - lr * (grad via left + grad via
    right), the gradients taken from an unshared twin with the same weights."""
    (a, b), y = siamese_data(32)
    lr = 0.1
    with fg.use_backend(backend):
        m = siamese(seed=4)
        m.compile(optimizer=fg.optimizers.SGD(lr), loss="binary_crossentropy")
        twin = siamese(seed=4, shared=False)
        w = m.get_weights()
        twin.set_weights([w[0], w[1], w[0], w[1], w[2], w[3]])
        twin.compile(optimizer=fg.optimizers.SGD(0.0), loss="binary_crossentropy")
        lt = twin.train_on_batch([a, b], y)
        ls = m.train_on_batch([a, b], y)
        assert ls == pytest.approx(lt, rel=1e-6)
        gl = twin.get_layer("encoder").grads["kernel"].astype(np.float64)
        gr = twin.get_layer("encoder_r").grads["kernel"].astype(np.float64)
        new = m.get_weights()
    np.testing.assert_allclose(new[0], w[0] - lr * (gl + gr), rtol=1e-5, atol=1e-7)
    # one kernel for both branches: the model has 4 arrays, and the encoder weight the
    # left branch uses is the one the right branch uses
    assert len(new) == 4
    assert m.get_layer("encoder").kernel is m.get_layer("encoder").params["kernel"]


def test_siamese_fit_trains_and_branches_stay_tied():
    m = siamese(seed=0)
    m.compile(optimizer=fg.optimizers.Adam(0.02), loss="binary_crossentropy",
              metrics=["accuracy"])
    x, y = siamese_data()
    h = m.fit(x, y, epochs=6, batch_size=32, verbose=0).history
    assert h["loss"][-1] < 0.8 * h["loss"][0]
    # swapping the inputs flips the difference: the shared encoder gives exactly
    # enc(a) - enc(b) = -(enc(b) - enc(a)), so logit(a, b) = 2 * bias - logit(b, a)
    enc = fg.Model(m.get_layer("left").output, m.get_layer("encoder").output)
    a, b = x
    ea, eb = enc.predict(a), enc.predict(b)
    w, bias = [v.astype(np.float64) for v in m.get_layer("same").get_weights()]
    ref = sigmoid((ea.astype(np.float64) - eb) @ w + bias)
    np.testing.assert_allclose(m.predict([a, b]), ref, rtol=1e-4, atol=1e-6)


def test_sub_model_shares_weights_with_its_parent():
    m = two_output(seed=7)
    m.compile(optimizer=fg.optimizers.Adam(0.01), **TWO_OUTPUT_COMPILE)
    sub = fg.Model(m.input, m.get_layer("trunk").output)
    assert [l.name for l in sub.layers] == ["x", "trunk"]
    x, ys = two_output_data()
    p0 = sub.predict(x)
    w = m.get_layer("trunk").get_weights()
    np.testing.assert_allclose(p0, np.tanh(x @ w[0].astype(np.float64) + w[1]), rtol=1e-4,
                               atol=1e-6)
    m.fit(x, ys, epochs=1, verbose=0)
    p1 = sub.predict(x)
    assert not np.allclose(p0, p1)
    w = m.get_layer("trunk").get_weights()
    np.testing.assert_allclose(p1, np.tanh(x @ w[0].astype(np.float64) + w[1]), rtol=1e-4,
                               atol=1e-6)
    for a, b in zip(sub.get_weights(), w):
        np.testing.assert_array_equal(a, b)
    # training the sub-model moves the parent's trunk and nothing else of the parent
    heads = m.get_layer("out_a").get_weights() + m.get_layer("out_b").get_weights()
    sub.compile(optimizer=fg.optimizers.SGD(0.1), loss="mse")
    sub.fit(x, np.zeros((len(x), 16), np.float32), epochs=1, verbose=0)
    for a, b in zip(sub.get_weights(), m.get_layer("trunk").get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(sub.get_weights()[0], w[0])
    for a, b in zip(heads, m.get_layer("out_a").get_weights() +
                    m.get_layer("out_b").get_weights()):
        np.testing.assert_array_equal(a, b)
    # the parent still trains (its optimizer and its executor are intact)
    before = m.evaluate(x, ys, verbose=0)[0]
    m.fit(x, ys, epochs=3, verbose=0)
    assert m.evaluate(x, ys, verbose=0)[0] < before


def _fwd_two_layer(x, w):
    return relu(x @ w[0].astype(np.float64) + w[1]) @ w[2] + w[3]


@pytest.mark.parametrize("backend", backends())
def test_new_head_on_a_trained_model_keeps_both_models_working(backend):
    """Transfer learning: a new model over a trained model's layers plus new
    ones. Both models keep sharing the old layers' weights, and the old model
    trains on exactly as if the new one had never been made (its optimizer
    state moves with its weights)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 4)).astype(np.float32)
    y = rng.standard_normal((96, 2)).astype(np.float32)

    def base():
        fg.set_seed(11)
        inp = fg.Input((4,), name="x")
        h = L.Dense(6, activation="relu", name="hidden")(inp)
        m = fg.Model(inp, L.Dense(2, name="head")(h))
        m.compile(optimizer=fg.optimizers.Adam(0.01), loss="mse")
        return m

    with fg.use_backend(backend):
        ref, m = base(), base()
        for mm in (ref, m):
            mm.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
        tm = fg.Model(m.input, L.Dense(3, name="new_head")(m.get_layer("hidden").output))
        assert [l.name for l in tm.layers] == ["x", "hidden", "new_head"]
        for a, b in zip(ref.get_weights(), m.get_weights()):
            np.testing.assert_array_equal(a, b)
        for mm in (ref, m):
            mm.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
        for a, b in zip(ref.get_weights(), m.get_weights()):
            np.testing.assert_array_equal(a, b)
        w = m.get_weights()
        np.testing.assert_allclose(m.predict(x), _fwd_two_layer(x, w), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(tm.get_weights()[0], w[0])
        # training the new model moves the shared hidden layer the old one uses
        tm.compile(optimizer=fg.optimizers.SGD(0.05), loss="mse")
        tm.fit(x, np.zeros((96, 3), np.float32), epochs=1, verbose=0)
        w2 = m.get_weights()
        assert not np.array_equal(w2[0], w[0])
        np.testing.assert_array_equal(w2[2], w[2])          # the old head: untouched
        np.testing.assert_allclose(m.predict(x), _fwd_two_layer(x, w2), rtol=1e-4, atol=1e-5)


def test_model_called_on_new_inputs_shares_weights():
    inner = residual_mlp(seed=2)
    inp = fg.Input((12,), name="outer_in")
    y = inner(inp)
    outer = fg.Model(inp, L.Dense(2, name="top")(y))
    x, labels = residual_data(64)
    # the inner model's layers are used as they are (shared)
    assert [l.name for l in outer.layers][-2:] == ["head", "top"]
    w_top = outer.get_layer("top").get_weights()
    ref = inner.predict(x).astype(np.float64) @ w_top[0] + w_top[1]
    np.testing.assert_allclose(outer.predict(x), ref, rtol=1e-4, atol=1e-6)
    # training the outer model changes the inner model's outputs
    p0 = inner.predict(x)
    outer.compile(optimizer=fg.optimizers.SGD(0.1), loss="mse")
    outer.fit(x, np.ones((64, 2), np.float32), epochs=2, verbose=0)
    p1 = inner.predict(x)
    assert not np.allclose(p0, p1)
    w_top = outer.get_layer("top").get_weights()
    np.testing.assert_allclose(outer.predict(x), p1.astype(np.float64) @ w_top[0] + w_top[1],
                               rtol=1e-4, atol=1e-6)
    # and the inner model still trains on its own
    inner.compile(optimizer="adam", loss=SCCE)
    h = inner.fit(x, labels, epochs=3, verbose=0).history
    assert h["loss"][-1] < h["loss"][0]
    # calling a two-input model on new inputs: list in, tensor out
    m2 = two_input()
    a, b = fg.Input((6,), name="na"), fg.Input((4,), name="nb")
    out = m2([a, b])
    assert out.shape == (None, 3)
    (xa, xb), _ = two_input_data(10)
    np.testing.assert_array_equal(fg.Model([a, b], out).predict([xa, xb]), m2.predict([xa, xb]))
    with pytest.raises(ValueError, match=r"expects input of shape \(None, 6\)"):
        m2([fg.Input((5,)), fg.Input((4,))])


def test_model_attributes_inputs_outputs_get_layer():
    m = two_output()
    assert isinstance(m.input, fg.engine.graph.SymbolicTensor)
    assert m.inputs == [m.input] and m.input.shape == (None, 10)
    assert isinstance(m.output, list) and len(m.outputs) == 2
    assert m.outputs[0] is m.get_layer("out_a").output
    assert m.outputs[1] is m.get_layer("out_b").output
    assert m.get_layer(index=0).name == "x" and m.get_layer(index=-1).name == "out_b"
    assert m.get_layer("trunk") is m.layers[1]
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        m.get_layer("nope")
    md = two_output(dict_outputs=True)
    assert isinstance(md.output, dict) and list(md.output) == ["out_a", "out_b"]
    ti = two_input()
    assert isinstance(ti.input, list) and [t.name for t in ti.inputs] == ["input_a", "input_b"]
    assert ti.input_shape == [(None, 6), (None, 4)] and ti.output_shape == (None, 3)
    # a list of one output is unpacked, as Keras does
    a = fg.Input((3,))
    one = fg.Model([a], [L.Dense(2)(a)])
    assert isinstance(one.predict(np.zeros((4, 3), np.float32)), np.ndarray)


def test_dict_inputs_by_name():
    a, b = fg.Input((6,), name="input_a"), fg.Input((4,), name="input_b")
    m0 = two_input(seed=9)
    (xa, xb), y = two_input_data()
    out = m0([a, b])
    md = fg.Model({"input_a": a, "input_b": b}, out)
    assert md.input_names == ["input_a", "input_b"]
    np.testing.assert_array_equal(md.predict({"input_b": xb, "input_a": xa}),
                                  m0.predict([xa, xb]))
    md.compile(optimizer="adam", loss=SCCE)
    h = md.fit({"input_a": xa, "input_b": xb}, y, epochs=3, verbose=0).history
    assert h["loss"][-1] < h["loss"][0]


# ====================================================================== 3. training, backends, threads
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("backend", backends())
def test_every_graph_trains(case, backend):
    with fg.use_backend(backend):
        m, x, y = _build(case, seed=1)
        h = m.fit(x, y, epochs=5, batch_size=32, verbose=0).history
    assert h["loss"][-1] < 0.9 * h["loss"][0], h["loss"]
    assert all(np.isfinite(h["loss"]))


def _train(case, backend, opt, steps=6, threads=None):
    with fg.use_backend(backend):
        if threads is not None:
            fg.set_num_threads(threads)
        m, x, y = _build(case, seed=3, optimizer=opt)
        m.fit(x, y, epochs=1, batch_size=max(1, len(y if not isinstance(y, list) else y[0])
                                              // steps), shuffle=False, verbose=0)
        return m.get_weights(), m.evaluate(x, y, verbose=0, return_dict=True)


@pytest.mark.skipif("native" not in backends(), reason="native backend not built")
@pytest.mark.parametrize("case", sorted(CASES))
def test_numpy_and_native_backends_agree(case):
    for opt in (lambda: fg.optimizers.SGD(0.05), lambda: fg.optimizers.Adam(0.005)):
        wn, ln = _train(case, "numpy", opt())
        wc, lc = _train(case, "native", opt())
        for a, b in zip(wn, wc):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
        for k in ln:
            assert ln[k] == pytest.approx(lc[k], rel=1e-4, abs=1e-6), k


@pytest.mark.skipif("native" not in backends(), reason="native backend not built")
@pytest.mark.parametrize("case", sorted(CASES))
def test_thread_counts_give_identical_bits(case):
    runs = [_train(case, "native", fg.optimizers.Adam(0.005), threads=t) for t in (1, 2, 3)]
    for w, logs in runs[1:]:
        for a, b in zip(runs[0][0], w):
            np.testing.assert_array_equal(a, b)
        assert logs == runs[0][1]


# ====================================================================== 4. errors
def test_model_inputs_must_come_from_fg_input():
    a = fg.Input((3,), name="a_in")
    h = L.Dense(4, name="mid")(a)
    with pytest.raises(GraphError, match=r"fg\.Input.*'mid'"):
        fg.Model(h, L.Dense(2)(h))
    with pytest.raises(TypeError, match="ndarray"):
        fg.Model(np.zeros((2, 3)), h)
    with pytest.raises(TypeError, match="int"):
        fg.Model(a, 5)
    with pytest.raises(TypeError, match="inputs and outputs"):
        fg.Model(a)
    with pytest.raises(GraphError, match="given twice"):
        fg.Model([a, a], h)


def test_disconnected_and_missing_inputs():
    a, b = fg.Input((3,), name="in_a"), fg.Input((4,), name="in_b")
    h = L.Dense(2, name="only_a")(a)
    with pytest.raises(GraphError, match="'in_b' is disconnected"):
        fg.Model([a, b], h)
    hb = L.Dense(2, name="uses_b")(b)
    with pytest.raises(GraphError, match=r"depend on input 'in_b'.*\['in_a'\].*uses_b"):
        fg.Model(a, hb)
    with pytest.raises(ValueError, match="in_b"):      # GraphError is a ValueError, as Keras
        fg.Model(a, L.Add()([h, L.Dense(2)(b)]))


def test_merge_shape_mismatches_name_layer_and_shapes():
    a, b = fg.Input((3,)), fg.Input((4,))
    with pytest.raises(ValueError, match=r"Add layer 'bad_add'.*\(4,\).*\(3,\)"):
        L.Add(name="bad_add")([a, b])
    with pytest.raises(ValueError, match=r"Add layer .*\(4,\).*\(3,\)"):
        a + b
    c, d = fg.Input((2, 3)), fg.Input((4, 5))
    with pytest.raises(ValueError, match=r"Concatenate layer 'bad_cat'.*\(2, 3\), \(4, 5\)"):
        L.Concatenate(axis=1, name="bad_cat")([c, d])
    with pytest.raises(ValueError, match=r"Concatenate layer 'cat_rank'.*\(3,\), \(2, 3\)"):
        L.Concatenate(name="cat_rank")([a, c])


def test_shared_layer_with_incompatible_shape():
    a, b = fg.Input((3,)), fg.Input((4,))
    d = L.Dense(5, name="reused")
    d(a)
    with pytest.raises(ValueError, match=r"reused.*\(None, 3\).*\(None, 4\)"):
        d(b)
    merge = L.Concatenate(name="cat_reused")
    merge([a, a])
    with pytest.raises(ValueError, match=r"cat_reused.*\(None, 3\).*\(None, 4\)"):
        merge([a, b])


def test_duplicate_layer_names_in_one_model():
    a = fg.Input((3,), name="dup_in")
    h = L.Dense(4, name="twin")(a)
    with pytest.raises(GraphError, match="two different layers are named 'twin'"):
        fg.Model(a, L.Dense(2, name="twin")(h))
    with pytest.raises(GraphError, match="'dup_in'"):
        fg.Model(a, L.Dense(2, name="dup_in")(a))


def test_dense_on_rank_mismatched_inputs():
    # Dense acts on the last axis of any rank (Keras; issue 10)
    assert L.Dense(2, name="dense_2d")(fg.Input((3, 4))).shape == (None, 3, 2)
    d = L.Dense(2, name="dense_1d")
    d(fg.Input((4,)))
    with pytest.raises(ValueError, match=r"dense_1d.*\(None, 4\).*\(None, 3, 4\)"):
        d(fg.Input((3, 4)))
    # symbolic and concrete values do not mix; a one-input layer takes one tensor
    a = fg.Input((3,))
    with pytest.raises(TypeError, match="mix"):
        L.Add(name="mixed")([a, np.zeros((1, 3))])
    with pytest.raises(TypeError, match="one input tensor, got a list of 2"):
        L.Dense(2)([a, a])
    with pytest.raises(TypeError, match="expects a list"):
        L.Add()(a)


def test_fit_data_structure_errors():
    m = two_input()
    m.compile(optimizer="sgd", loss=SCCE)
    (xa, xb), y = two_input_data(20)
    with pytest.raises(ValueError, match=r"2 inputs \(\['input_a', 'input_b'\]\).*list of 1"):
        m.fit([xa], y, verbose=0)
    with pytest.raises(ValueError, match="list of 3"):
        m.fit([xa, xb, xb], y, verbose=0)
    with pytest.raises(ValueError, match="2 inputs.*got ndarray"):
        m.fit(xa, y, verbose=0)
    with pytest.raises(ValueError, match=r"keys \['input_c'\]"):
        m.fit({"input_a": xa, "input_b": xb, "input_c": xb}, y, verbose=0)
    with pytest.raises(ValueError, match="no entry for input 'input_b'"):
        m.fit({"input_a": xa}, y, verbose=0)
    with pytest.raises(ValueError, match="'input_a' 20, 'input_b' 19"):
        m.fit([xa, xb[:19]], y, verbose=0)
    with pytest.raises(ValueError, match=r"input 'input_b'.*\(4,\).*\(20, 6\)"):
        m.fit([xa, xa], y, verbose=0)
    with pytest.raises(ValueError, match="20 samples, y has 19"):
        m.fit([xa, xb], y[:19], verbose=0)
    with pytest.raises(ValueError, match="list of 1"):
        m.predict([xa])

    m2 = two_output()
    m2.compile(optimizer="sgd", **TWO_OUTPUT_COMPILE)
    x, (ya, yb) = two_output_data(20)
    with pytest.raises(ValueError, match=r"2 outputs \(\['out_a', 'out_b'\]\).*list of 1"):
        m2.fit(x, [ya], verbose=0)
    with pytest.raises(ValueError, match="list of 3"):
        m2.fit(x, [ya, yb, yb], verbose=0)
    with pytest.raises(ValueError, match=r"keys \['out_c'\]"):
        m2.fit(x, {"out_a": ya, "out_b": yb, "out_c": yb}, verbose=0)
    with pytest.raises(ValueError, match="no target for output 'out_b'"):
        m2.fit(x, {"out_a": ya}, verbose=0)
    with pytest.raises(ValueError, match="output 'out_b'.*20 samples, y has 19"):
        m2.fit(x, [ya, yb[:19]], verbose=0)
    with pytest.raises(ValueError, match=r"output 'out_b'.*\(20, 3\).*\(20, 1\)"):
        m2.fit(x, [ya, np.zeros((20, 3), np.float32)], verbose=0)
    with pytest.raises(ValueError, match=r"loss has keys \['out_c'\]"):
        m2.compile(optimizer="sgd", loss={"out_a": SCCE, "out_c": "mse"})
    with pytest.raises(ValueError, match="list of 3 but the model has 2 outputs"):
        m2.compile(optimizer="sgd", loss=[SCCE, "mse", "mse"])
    with pytest.raises(ValueError, match=r"loss_weights has keys \['zz'\]"):
        m2.compile(optimizer="sgd", loss=[SCCE, "mse"], loss_weights={"zz": 1.0})
    # a failed call leaves the model usable
    m2.fit(x, [ya, yb], verbose=0)


# ====================================================================== 5. summary, config, saving
def test_summary_connected_to_column(capsys):
    m = two_input()
    m.summary()
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "Connected to" in lines[2]
    row = next(l for l in lines if l.startswith("concatenate (Concatenate)"))
    assert row.rstrip().endswith("da[0][0], db[0][0]")
    row = next(l for l in lines if l.startswith("input_b (InputLayer)"))
    assert row.rstrip().endswith("-")
    assert "(None, 16)" in next(l for l in lines if l.startswith("concatenate"))
    assert m.count_params() == 6 * 8 + 8 + 4 * 8 + 8 + 16 * 3 + 3
    assert f"Total params: {m.count_params():,}" in out
    s = siamese()
    s.summary()
    out = capsys.readouterr().out
    assert "diff (Subtract)" in out and "encoder[0][0], encoder[1][0]" in out
    assert "left[0][0]" in out and "right[0][0]" in out and "(shared)" in out
    r = residual_mlp()
    r.summary()
    out = capsys.readouterr().out
    assert "stem[0][0], block0_b[0][0]" in out and "add0[0][0], block1_b[0][0]" in out
    # the merges + made are in the summary (as Keras 3 shows its ops) though not in layers
    r = residual_mlp(op=True)
    r.summary()
    out = capsys.readouterr().out
    add_rows = [l for l in out.splitlines() if "(Add)" in l]
    assert len(add_rows) == 2 and add_rows[0].rstrip().endswith("stem[0][0], block0_b[0][0]")
    assert f"Total params: {r.count_params():,}" in out
    # a plain chain has no Connected to column, as Keras's Sequential
    seq = fg.Sequential([fg.Input((3,)), L.Dense(2)])
    seq.summary()
    assert "Connected to" not in capsys.readouterr().out


def _inputs_for(case, n=16):
    x, _ = CASES[case][1](n)
    return x


def _all_models():
    out = {name: CASES[name][0](0) for name in CASES}
    out["two_output_dict"] = two_output(dict_outputs=True)
    base = two_output(seed=5)
    out["sub_model"] = fg.Model(base.input, base.get_layer("trunk").output)
    inner = residual_mlp(seed=6)
    inp = fg.Input((12,), name="nested_in")
    out["nested"] = fg.Model(inp, L.Dense(2, name="nested_top")(inner(inp)))
    return out


def _data_for(name, n=16):
    if name == "two_output_dict" or name == "sub_model":
        return two_output_data(n)[0]
    if name == "nested":
        return residual_data(n)[0]
    return _inputs_for(name, n)


@pytest.mark.parametrize("name", ["residual_add", "residual_op", "two_input", "two_output",
                                  "siamese", "shared_io", "two_output_dict", "sub_model",
                                  "nested"])
def test_config_round_trip(name):
    m = _all_models()[name]
    cfg = m.get_config()
    cfg = json.loads(json.dumps(cfg))             # JSON-friendly
    m2 = fg.Model.from_config(cfg)
    assert [l.name for l in m2.layers] == [l.name for l in m.layers]
    assert [type(l) for l in m2.layers] == [type(l) for l in m.layers]
    assert [w.shape for w in m2.get_weights()] == [w.shape for w in m.get_weights()]
    m2.set_weights(m.get_weights())
    x = _data_for(name)
    p, p2 = m.predict(x), m2.predict(x)
    assert type(p) is type(p2)
    if isinstance(p, dict):
        assert list(p) == list(p2)
        p, p2 = list(p.values()), list(p2.values())
    for a, b in zip(p if isinstance(p, list) else [p], p2 if isinstance(p2, list) else [p2]):
        np.testing.assert_array_equal(a, b)
    assert m2.get_config() == cfg
    # shared layers are shared again
    if name == "siamese":
        assert len(m2.get_layer("encoder")._inbound_nodes) == 2


def test_save_load_resumes_bitwise(tmp_path):
    x, y = shared_io_data()
    fg.set_seed(123)
    m = shared_two_in_two_out(seed=3)
    m.compile(optimizer=fg.optimizers.Adam(0.01), loss=[SCCE, "mse"], loss_weights=[1.0, 0.3],
              metrics=[["accuracy"], []])
    m.fit(x, y, epochs=2, batch_size=32, verbose=0)
    path = tmp_path / "shared_io.fgm"
    m.save(path)
    m.fit(x, y, epochs=2, batch_size=32, verbose=0)          # shuffled: uses the library RNG
    want = m.get_weights()
    want_eval = m.evaluate(x, y, verbose=0)

    loaded = fg.models.load_model(path)                      # restores the RNG state too
    assert [l.name for l in loaded.layers] == [l.name for l in m.layers]
    assert len(loaded.get_layer("shared")._inbound_nodes) == 2
    assert loaded.optimizer.iterations == 2 * 7
    loaded.fit(x, y, epochs=2, batch_size=32, verbose=0)
    for a, b in zip(want, loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert loaded.evaluate(x, y, verbose=0) == want_eval


def test_save_load_sub_model_with_optimizer_state(tmp_path):
    """A model whose weights live in a bigger shared buffer saves its optimizer
    slots in its own layout, which is what load_model rebuilds."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 10)).astype(np.float32)
    t = rng.standard_normal((64, 16)).astype(np.float32)
    parent = two_output(seed=2)
    sub = fg.Model(parent.input, parent.get_layer("trunk").output)
    head = fg.Model(parent.input, L.Dense(2, name="extra")(parent.get_layer("trunk").output))
    assert head._store.parent is not None and sub._store.parent is not None
    sub.compile(optimizer=fg.optimizers.Adam(0.01), loss="mse")
    sub.fit(x, t, epochs=2, batch_size=16, shuffle=False, verbose=0)
    path = tmp_path / "sub.fgm"
    sub.save(path)
    loaded = fg.models.load_model(path)
    for a, b in zip(sub.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    for mm in (sub, loaded):
        mm.fit(x, t, epochs=2, batch_size=16, shuffle=False, verbose=0)
    for a, b in zip(sub.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


# ====================================================================== 6. allocation
def _wide_residual(seed=0):
    fg.set_seed(seed)
    inp = fg.Input((32,), name="wide_in")
    x = L.Dense(64, activation="relu", name="wide_stem")(inp)
    for i in range(2):
        h = L.Dense(64, activation="relu", name=f"wide{i}_a")(x)
        x = x + L.Dense(64, name=f"wide{i}_b")(h)
    return fg.Model(inp, L.Dense(4, activation="softmax", name="wide_head")(x))


@pytest.mark.parametrize("backend", backends())
def test_residual_step_allocates_nothing_in_steady_state(backend):
    """After warm-up, train_on_batch on a residual graph reuses its workspaces
    (same buffers), keeps nothing new alive, and -- on the native backend,
    whose kernels write into the given buffers -- allocates no array of batch
    size even transiently: the peak traced memory over 5 steps stays far below
    one (256, 64) activation (64 KiB). The NumPy reference backend's kernels
    make temporaries, so there only the retained memory is checked."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 32)).astype(np.float32)
    y = rng.integers(0, 4, 256)
    with fg.use_backend(backend):
        m = _wide_residual()
        m.compile(optimizer=fg.optimizers.Adam(0.01), loss=SCCE)
        for _ in range(3):                                   # warm: workspaces exist
            m.train_on_batch(x, y)
        step = m._step
        wss = step.cache.get(256)
        ptrs = [{k: a.ctypes.data for k, a in ws._bufs.items()} for ws in wss]
        tracemalloc.start()
        start, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        snap0 = tracemalloc.take_snapshot()
        for _ in range(5):
            m.train_on_batch(x, y)
        now, peak = tracemalloc.get_traced_memory()
        snap = tracemalloc.take_snapshot()
        tracemalloc.stop()
    assert m._step is step
    assert [{k: a.ctypes.data for k, a in ws._bufs.items()} for ws in wss] == ptrs
    grown = [d for d in snap.compare_to(snap0, "lineno")
             if d.size_diff > 4096 and "fastgrad" in str(d.traceback)]
    assert not grown, grown
    assert now - start < 16384
    if backend == "native":
        assert peak - start < 24576, f"{peak - start} bytes allocated at peak"


def test_frozen_base_under_a_new_head():
    """Keras's transfer-learning idiom: base.trainable = False freezes every layer
    of the base; a new model over it trains only its own head."""
    base = two_output(seed=4)
    base.compile(optimizer="adam", **TWO_OUTPUT_COMPILE)
    x, ys = two_output_data()
    base.fit(x, ys, epochs=1, verbose=0)
    frozen = base.get_weights()
    base.trainable = False
    assert not base.trainable and all(not l.trainable for l in base.layers)
    head = L.Dense(2, name="new_head")(base.get_layer("trunk").output)
    tm = fg.Model(base.input, head)
    assert [w.shape for w in tm.trainable_weights] == [(16, 2), (2,)]
    assert len(tm.non_trainable_weights) == 2
    tm.compile(optimizer=fg.optimizers.Adam(0.01), loss="mse")
    t = np.random.default_rng(0).standard_normal((len(x), 2)).astype(np.float32)
    h = tm.fit(x, t, epochs=3, verbose=0).history
    assert h["loss"][-1] < h["loss"][0]
    for a, b in zip(frozen, base.get_weights()):
        np.testing.assert_array_equal(a, b)
    # unfreezing: the base trains again
    base.trainable = True
    base.fit(x, ys, epochs=1, verbose=0)
    assert not np.array_equal(frozen[0], base.get_weights()[0])
    # Model(..., trainable=False) freezes at construction
    m = two_input()
    m2 = fg.Model(m.inputs, m.output, trainable=False)
    assert not any(l.trainable for l in m2.layers) and m2.trainable_weights == []


@pytest.mark.parametrize("backend", backends())
def test_fused_output_activation_is_per_model(backend):
    """A model compiled with a cross-entropy runs its softmax head as logits
    (fused loss); other models sharing that head -- the same graph again, a
    model calling it on new inputs, a new layer on top -- still see
    probabilities, and the first model keeps its fused training."""
    x, y = residual_data(64)
    with fg.use_backend(backend):
        a = residual_mlp(seed=8)
        probs = a.predict(x)
        a.compile(optimizer=fg.optimizers.SGD(0.1), loss=SCCE)
        assert a._fused_layers[0] is a.get_layer("head")
        b = fg.Model(a.input, a.output)
        inp = fg.Input((12,), name="again")
        c = fg.Model(inp, a(inp))
        top = L.Dense(2, name="on_top")
        d = fg.Model(a.input, top(a.output))
        for m in (a, b, c, a, b):
            np.testing.assert_allclose(m.predict(x), probs, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(b.predict_on_batch(x[:3]), probs[:3], rtol=1e-5, atol=1e-7)
        w = top.get_weights()
        np.testing.assert_allclose(d.predict(x), probs.astype(np.float64) @ w[0] + w[1],
                                   rtol=1e-4, atol=1e-6)
        # b trained with mse on the probabilities (not on logits)
        b.compile(optimizer=fg.optimizers.SGD(0.0), loss="mse")
        t = np.eye(4, dtype=np.float32)[y]
        assert b.evaluate(x, t, verbose=0) == pytest.approx(
            float(((probs.astype(np.float64) - t) ** 2).mean()), rel=1e-5)
        # a's loss is still the fused cross-entropy on its probabilities
        ref = float(-np.log(probs[np.arange(64), y].astype(np.float64)).mean())
        assert a.evaluate(x, y, verbose=0) == pytest.approx(ref, rel=1e-5)
        h = a.fit(x, y, epochs=3, verbose=0).history
        assert h["loss"][-1] < h["loss"][0]
        np.testing.assert_allclose(a.predict(x).sum(axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(b.predict(x), a.predict(x), rtol=1e-6, atol=1e-7)


def test_multi_output_compile_arguments_as_keras():
    x, (ya, yb) = two_output_data(64)
    m = two_output(seed=2)
    # a list as long as the outputs is read per output (Keras 3)
    m.compile(optimizer="sgd", loss=[SCCE, "mse"], metrics=["accuracy", "mae"])
    h = m.fit(x, [ya, yb], verbose=0).history
    assert set(h) == {"loss", "out_a_loss", "out_b_loss", "out_a_accuracy", "out_b_mae"}
    assert m.metrics_names == ["loss", "out_a_loss", "out_b_loss", "out_a_accuracy",
                               "out_b_mae"]
    r = m.evaluate(x, [ya, yb], verbose=0, return_dict=True)
    pa, pb = m.predict(x)
    assert r["out_b_mae"] == pytest.approx(float(np.abs(pb.astype(np.float64) - yb).mean()),
                                           rel=1e-5)
    # per-output lists, dicts, None entries
    m.compile(optimizer="sgd", loss=[SCCE, "mse"], metrics=[["accuracy"], None])
    assert set(m.fit(x, [ya, yb], verbose=0).history) == {"loss", "out_a_loss", "out_b_loss",
                                                           "out_a_accuracy"}
    m.compile(optimizer="sgd", loss={"out_b": "mse", "out_a": SCCE},
              metrics={"out_b": ["mse", "mae"]})
    m.fit(x, [ya, yb], verbose=0)
    assert m.metrics_names == ["loss", "out_a_loss", "out_b_loss", "out_b_mse", "out_b_mae"]
    # one loss for every output; loss weights 0 drop an output from the total
    m.compile(optimizer="sgd", loss="mse", loss_weights=[0.0, 1.0])
    t = np.eye(3, dtype=np.float32)[ya]
    r = m.evaluate(x, [t, yb], verbose=0, return_dict=True)
    assert r["loss"] == pytest.approx(r["out_b_loss"], rel=1e-6)
    assert r["out_a_loss"] > 0
