"""Sequence layers without torch: masks (symbolic, eager, executors), any-rank
Dense / normalisation, Embedding / Masking, recurrent layers' Keras semantics,
finite differences, bad input."""
import numpy as np
import pytest

import fastgrad as fg
from fastgrad.engine import compiled
from fastgrad.engine.workspace import Workspace
from fastgrad.backend.numpy_ops import NumpyOps

L = fg.layers


# ---------------------------------------------------------------- any-rank layers
def test_dense_rank3_acts_on_last_axis():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5, 3)).astype(np.float32)
    d = L.Dense(6, activation="tanh")
    y = d(x)
    k, b = d.get_weights()
    np.testing.assert_allclose(y, np.tanh(x @ k + b), rtol=1e-5, atol=1e-6)
    assert d.get_weights()[0].shape == (3, 6)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_dense_rank3_compiled_plan_matches_python(threads):
    def make():
        fg.utils.set_random_seed(3)
        inp = fg.Input((5, 4))
        h = L.Dense(7, activation="relu")(inp)
        out = L.Dense(2)(L.Dropout(0.2)(h))
        m = fg.Model(inp, out)
        m.compile("adam", "mse")
        return m
    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 5, 4)).astype(np.float32)
    y = rng.standard_normal((50, 5, 2)).astype(np.float32)
    from fastgrad import _config
    old = _config.get_num_threads()
    fg.set_num_threads(threads)
    try:
        a = make()
        assert compiled.unsupported_reason(a) is None
        a.fit(x, y, epochs=2, batch_size=16, verbose=0)
        b = make()
        compiled.enabled = False
        try:
            b.fit(x, y, epochs=2, batch_size=16, verbose=0)
        finally:
            compiled.enabled = True
    finally:
        if old is not None:
            fg.set_num_threads(old)
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)


def test_layernorm_batchnorm_dropout_activation_rank3():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    y = L.LayerNormalization()(x)
    ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-3)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
    y = L.BatchNormalization()(x, training=True)
    xm = x.reshape(-1, 5)
    np.testing.assert_allclose(y.reshape(-1, 5), (xm - xm.mean(0)) / np.sqrt(xm.var(0) + 1e-3),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(L.Activation("relu")(x), np.maximum(x, 0))
    np.testing.assert_array_equal(L.Dropout(0.5)(x), x)


# ---------------------------------------------------------------- masks
def test_embedding_mask_zero_symbolic_and_eager():
    e = L.Embedding(10, 3, mask_zero=True)
    ids = np.array([[1, 2, 0], [0, 4, 0]])
    y = e(ids)
    np.testing.assert_array_equal(y._keras_mask, ids != 0)
    # propagation through supports_masking layers (eager)
    z = L.Dense(2)(y)
    np.testing.assert_array_equal(z._keras_mask, ids != 0)
    z = L.LayerNormalization()(z)
    np.testing.assert_array_equal(z._keras_mask, ids != 0)
    # symbolic
    inp = fg.Input((3,))
    h = L.Embedding(10, 3, mask_zero=True)(inp)
    assert h._keras_mask is not None and h._keras_mask.shape == (None, 3)
    d = L.Dense(2)(h)
    assert d._keras_mask is not None
    last = L.LSTM(4)(d)
    assert last._keras_mask is None
    seq = L.LSTM(4, return_sequences=True)(d)
    assert seq._keras_mask is not None
    assert L.Flatten()(seq)._keras_mask is None           # a layer without masking drops it
    no = L.Embedding(10, 3)(inp)
    assert no._keras_mask is None


def test_masking_layer():
    x = np.array([[[1., 2.], [0., 0.], [3., 0.]]], np.float32)
    m = L.Masking(0.0)
    y = m(x)
    np.testing.assert_array_equal(y._keras_mask, [[True, False, True]])
    y2 = L.Masking(1.0)(np.array([[[1., 1.], [1., 2.]]], np.float32))
    np.testing.assert_array_equal(y2._keras_mask, [[False, True]])
    np.testing.assert_array_equal(y2[0, 0], [0, 0])


def _masked_model(kind, seed=0):
    fg.utils.set_random_seed(seed)
    inp = fg.Input((6,))
    h = L.Embedding(12, 4, mask_zero=True)(inp)
    h = {"lstm": L.LSTM, "gru": L.GRU, "simple": L.SimpleRNN}[kind](5)(h)
    out = L.Dense(1)(h)
    m = fg.Model(inp, out)
    m.compile("sgd", "mse")
    return m


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple"])
def test_masked_padding_is_invisible(kind):
    """Right padding with id 0 under mask_zero: the prediction equals the unpadded one."""
    m = _masked_model(kind)
    ids = np.array([[3, 5, 7, 0, 0, 0], [3, 5, 7, 1, 0, 0]])
    p = m.predict(ids, verbose=0)
    # the same sequence padded differently gives the same output
    ids2 = np.array([[3, 5, 7, 0, 0, 0]])
    np.testing.assert_array_equal(m.predict(ids2, verbose=0)[0], p[0])
    # without mask_zero the padding would change the result: the mask is doing work
    assert compiled.unsupported_reason(m) is not None and "mask" in compiled.unsupported_reason(m)
    m2 = fg.Model(m.input, m.output)   # same layers
    assert m2.predict(ids, verbose=0).shape == (2, 1)


def test_masked_model_trains():
    m = _masked_model("lstm", 1)
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 12, size=(32, 6))
    ids[:, 4:] = 0
    y = (ids[:, :1] > 6).astype(np.float32)
    h = m.fit(ids, y, epochs=3, verbose=0)
    assert np.isfinite(h.history["loss"]).all()


def test_mask_padding_gradient_zero():
    """Embedding rows of the padding id get no gradient through a masked LSTM."""
    fg.utils.set_random_seed(0)
    e = L.Embedding(5, 3, mask_zero=True)
    lstm = L.LSTM(2)
    ids = np.array([[1, 2, 0, 0]])
    e(ids)
    ws_e, ws_l = Workspace(), Workspace()
    h = e.forward(ids.astype(np.float32), True, ws_e)
    mask = e.compute_mask(ids)
    lstm(e(ids))
    y = lstm.forward(h, True, ws_l, mask=mask)
    dh = lstm.backward(np.ones_like(y), ws_l, True)
    assert np.all(dh[0, 2:] == 0) and np.any(dh[0, :2] != 0)


def test_explicit_mask_argument_and_bad_mask_shape():
    x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    lstm = L.LSTM(2, return_sequences=True)
    m = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], bool)
    y = lstm(x, mask=m)
    np.testing.assert_array_equal(y[0, 2], y[0, 1])    # masked steps repeat the last output
    with pytest.raises(ValueError, match="mask of shape"):
        lstm(x, mask=np.ones((2, 5), bool))
    inp = fg.Input((4, 3))
    with pytest.raises(TypeError, match="symbolic mask"):
        L.LSTM(2)(inp, mask=fg.Input((4,)))


# ---------------------------------------------------------------- recurrent semantics
def test_weight_layouts_keras():
    x = np.zeros((1, 3, 5), np.float32)
    l = L.LSTM(4)
    l(x)
    k, r, b = l.get_weights()
    assert k.shape == (5, 16) and r.shape == (4, 16) and b.shape == (16,)
    np.testing.assert_array_equal(b, np.r_[np.zeros(4), np.ones(4), np.zeros(8)])  # unit_forget_bias
    g = L.GRU(4)
    g(x)
    assert [w.shape for w in g.get_weights()] == [(5, 12), (4, 12), (2, 12)]
    s = L.SimpleRNN(4)
    s(x)
    assert [w.shape for w in s.get_weights()] == [(5, 4), (4, 4), (4,)]
    # recurrent kernel is orthogonal by default
    np.testing.assert_allclose(s.get_weights()[1] @ s.get_weights()[1].T, np.eye(4), atol=1e-5)


def test_stateful_and_reset_states():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    l = L.GRU(3, stateful=True)
    a = l(x)
    b = l(x)
    assert not np.allclose(a, b)           # the second call starts from the carried state
    l.reset_states()
    np.testing.assert_array_equal(l(x), a)
    with pytest.raises(ValueError, match="batch size"):
        l(x[:1])


def test_dropout_masks_train_only_and_shared_across_steps():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5, 3)).astype(np.float32)
    l = L.LSTM(3, dropout=0.5, recurrent_dropout=0.3, seed=1)
    inf1 = l(x)
    np.testing.assert_array_equal(l(x), inf1)        # inference: no dropout
    tr = l(x, training=True)
    assert not np.allclose(tr, inf1)


def test_go_backwards_output_order():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 3)).astype(np.float32)
    f = L.SimpleRNN(3, return_sequences=True)
    f(x)
    b = L.SimpleRNN(3, return_sequences=True, go_backwards=True)
    b(x)
    b.set_weights(f.get_weights()) if hasattr(b, "set_weights") else None
    for k in f.params:
        b.params[k][...] = f.params[k]
    np.testing.assert_allclose(b(x), f(x[:, ::-1].copy()), rtol=1e-6)


def test_return_state_symbolic_and_initial_state_model():
    inp = fg.Input((5, 3))
    out, h, c = L.LSTM(4, return_state=True)(inp)
    np.testing.assert_equal(out.shape, (None, 4))
    dec_in = fg.Input((2, 3))
    dec = L.LSTM(4, return_sequences=True)(dec_in, initial_state=[h, c])
    y = L.Dense(1)(dec)
    m = fg.Model([inp, dec_in], y)
    m.compile("adam", "mse")
    rng = np.random.default_rng(0)
    xa = rng.standard_normal((8, 5, 3)).astype(np.float32)
    xb = rng.standard_normal((8, 2, 3)).astype(np.float32)
    m.fit([xa, xb], np.zeros((8, 2, 1), np.float32), epochs=1, verbose=0)
    assert m.predict([xa, xb], verbose=0).shape == (8, 2, 1)


def test_bidirectional_merge_none_and_time_distributed():
    inp = fg.Input((5, 3))
    a, b = L.Bidirectional(L.GRU(4, return_sequences=True), merge_mode=None)(inp)
    assert a.shape == (None, 5, 4) and b.shape == (None, 5, 4)
    t = L.TimeDistributed(L.Dense(2))(a)
    assert t.shape == (None, 5, 2)
    m = fg.Model(inp, t)
    m.compile("adam", "mse")
    x = np.random.default_rng(0).standard_normal((4, 5, 3)).astype(np.float32)
    m.fit(x, np.zeros((4, 5, 2), np.float32), epochs=1, verbose=0)


def test_config_roundtrip():
    for layer in [L.LSTM(3, return_sequences=True, dropout=0.1), L.GRU(2, go_backwards=True),
                  L.SimpleRNN(2, activation="relu"), L.Embedding(5, 2, mask_zero=True),
                  L.Masking(1.0), L.Bidirectional(L.LSTM(2), merge_mode="sum"),
                  L.TimeDistributed(L.Dense(3))]:
        cfg = L.serialize(layer)
        back = L.deserialize(cfg)
        assert type(back) is type(layer)
        c1, c2 = dict(layer.get_config()), dict(back.get_config())
        c1.pop("name"), c2.pop("name")
        assert c1.keys() == c2.keys()


def test_model_save_load_roundtrip(tmp_path):
    fg.utils.set_random_seed(0)
    m = fg.Sequential([fg.Input((4,)), L.Embedding(9, 3, mask_zero=True),
                       L.Bidirectional(L.LSTM(2, return_sequences=True)), L.GRU(2), L.Dense(1)])
    m.compile("adam", "mse")
    ids = np.array([[1, 2, 0, 0], [3, 4, 5, 6]])
    p = m.predict(ids, verbose=0)
    path = str(tmp_path / "m.fgm")
    m.save(path)
    m2 = fg.models.load_model(path)
    np.testing.assert_array_equal(m2.predict(ids, verbose=0), p)


# ---------------------------------------------------------------- finite differences
def _fd_check(kind, masked, go_back, ret_seq, rdrop=False):
    rng = np.random.default_rng(7)
    ops = NumpyOps()
    n, T, f, u = 2, 4, 3, 3
    x32 = rng.standard_normal((n, T, f)).astype(np.float32)
    cls = {"lstm": L.LSTM, "gru": L.GRU, "simple": L.SimpleRNN}[kind]
    layer = cls(u, return_sequences=ret_seq, go_backwards=go_back, bias_initializer="random_normal")
    layer(x32)
    layer.ops = ops
    p = {k: np.array(v, np.float64) for k, v in layer.params.items()}
    g = {k: np.zeros_like(v) for k, v in p.items()}
    layer.bind(p, g, {})
    x = x32.astype(np.float64)
    mask = (rng.random((n, T)) > 0.3) if masked else None
    ws = Workspace()
    y = layer.forward(x, True, ws, mask=mask)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy.copy(), ws, True)

    def loss():
        return float((layer.forward(x, True, Workspace(), mask=mask) * dy).sum())
    eps = 1e-6
    for name, arr in list(p.items()) + [("x", x)]:
        grad = dx if name == "x" else g[name]
        flat = arr.reshape(-1)
        for i in rng.choice(flat.size, size=min(6, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + eps
            lp = loss()
            flat[i] = old - eps
            lm = loss()
            flat[i] = old
            np.testing.assert_allclose(grad.reshape(-1)[i], (lp - lm) / (2 * eps), rtol=1e-5,
                                       atol=1e-7, err_msg=f"{kind} {name}[{i}]")


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple"])
@pytest.mark.parametrize("masked,go_back,ret_seq", [(False, False, False), (True, False, True),
                                                    (True, True, True), (False, True, False)])
def test_finite_differences(kind, masked, go_back, ret_seq):
    _fd_check(kind, masked, go_back, ret_seq)


# ---------------------------------------------------------------- bad input
def test_embedding_bad_ids():
    e = L.Embedding(5, 2)
    with pytest.raises(ValueError, match=r"token id 5 .* outside \[0, input_dim=5\)"):
        e(np.array([[1, 5]]))
    with pytest.raises(ValueError, match="negative"):
        e(np.array([[-1, 2]]))
    with pytest.raises(TypeError, match="integers"):
        e(np.array([[1.0, 2.0]]))
    m = fg.Sequential([fg.Input((2,)), e, L.Flatten(), L.Dense(1)])
    m.compile("sgd", "mse")
    with pytest.raises(TypeError, match="integer token ids"):
        m.fit(np.array([[1.0, 2.0]]), np.zeros((1, 1)), verbose=0)
    with pytest.raises(ValueError, match="outside"):
        m.fit(np.array([[1, 7]]), np.zeros((1, 1)), verbose=0)
    with pytest.raises(ValueError):
        L.Embedding(0, 3)


def test_recurrent_bad_input():
    with pytest.raises(ValueError, match="units"):
        L.LSTM(0)
    with pytest.raises(ValueError, match="dropout"):
        L.GRU(2, dropout=1.5)
    with pytest.raises(ValueError, match="timesteps, features"):
        L.LSTM(2)(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="positive|at least one time step"):
        L.LSTM(2)(np.zeros((2, 0, 3), np.float32))
    with pytest.raises(ValueError, match="initial_state needs 2"):
        L.LSTM(2)(np.zeros((2, 3, 1), np.float32), initial_state=[np.zeros((2, 2), np.float32)])
    with pytest.raises(ValueError, match="merge_mode"):
        L.Bidirectional(L.LSTM(2), merge_mode="max")
    with pytest.raises(ValueError, match="reset_after"):
        L.GRU(2, reset_after="no")      # reset_after=False is supported (test_seqgaps_rnn.py)
    with pytest.raises(ValueError, match="activation"):
        L.LSTM(2, activation="gelu")


def test_model_reset_states_and_part_names():
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    m = fg.Sequential([fg.Input((3, 4)), L.LSTM(3, stateful=True), L.Dense(1)])
    a = m.predict(x, verbose=0, batch_size=2)
    assert not np.allclose(m.predict(x, verbose=0, batch_size=2), a)
    m.reset_states()
    np.testing.assert_array_equal(m.predict(x, verbose=0, batch_size=2), a)
    inp = fg.Input((3, 4))
    o, h, c = L.LSTM(2, return_state=True, name="enc")(inp)
    assert [t.name for t in (o, h, c)] == ["enc_output", "enc_state_h", "enc_state_c"]


def test_functional_return_state_initial_state_save_load_clone(tmp_path):
    fg.utils.set_random_seed(0)
    inp = fg.Input((5,))
    e = L.Embedding(20, 4, mask_zero=True)(inp)
    o, h, c = L.LSTM(3, return_state=True, return_sequences=True)(e)
    a, b = L.Bidirectional(L.GRU(2, return_sequences=True), merge_mode=None)(o)
    d = L.Dense(1)(L.TimeDistributed(L.Dense(2))(a))
    dec = L.LSTM(3)(L.Dense(4)(b), initial_state=[h, c])
    m = fg.Model(inp, [d, L.Dense(1)(dec)])
    m.compile("adam", "mse")
    ids = np.array([[1, 2, 3, 0, 0], [4, 5, 0, 0, 0]])
    p = m.predict(ids, verbose=0)
    path = str(tmp_path / "m.fgm")
    m.save(path)
    m2 = fg.models.load_model(path)
    for u, v in zip(p, m2.predict(ids, verbose=0)):
        np.testing.assert_array_equal(u, v)
    m3 = fg.models.clone_model(m)
    assert [w.shape for w in m3.get_weights()] == [w.shape for w in m.get_weights()]
    assert type(fg.models.model_from_json(m.to_json())).__name__ == "Model"
    m.fit(ids, [np.zeros((2, 5, 1)), np.zeros((2, 1))], verbose=0)
