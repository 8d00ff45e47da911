"""MultiHeadAttention(..., return_attention_scores=True) in a functional model:
the node outputs a packed (output, scores) tensor split by hidden nodes. Torch
float64 oracle for forward and for gradients of a loss on the output and on the
scores; models that output both, train, and survive save / JSON / clone."""
import numpy as np
import pytest

import fastgrad as fg
from attn_helpers import bind64, run64
from test_attention_layers import _torch_mha, make_mha

L = fg.layers


def rng(s=0):
    return np.random.default_rng(s)


@pytest.mark.torch
@pytest.mark.parametrize("loss_on_scores", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_packed_scores_vs_torch(loss_on_scores, dropout):
    """The packed node (output, scores) forward, and its backward from a gradient on
    the output and (optionally) on the scores, vs torch autograd in float64."""
    torch = pytest.importorskip("torch")
    B, Tq, Tv, D, H, kd = 2, 4, 6, 5, 3, 2
    mha = make_mha(H, kd, (Tq, D), (Tv, D), masks=("value_mask",), causal=False)
    mha._graph_scores = True
    mha.build([(Tq, D), (Tv, D), (Tv,)])
    assert mha.output_shape == (Tq * D + H * Tq * Tv,)
    p, g = bind64(mha, seed=2)
    r = rng(3)
    q, v = r.standard_normal((B, Tq, D)), r.standard_normal((B, Tv, D))
    vm = (r.random((B, Tv)) > 0.3).astype(float)
    vm[:, 0] = 1
    vm[1, :] = 0          # a row with no key: zero weights (Keras)
    dy_out = r.standard_normal((B, Tq, D))
    dy_s = r.standard_normal((B, H, Tq, Tv)) if loss_on_scores else np.zeros((B, H, Tq, Tv))
    dy = np.concatenate([dy_out.reshape(B, -1), dy_s.reshape(B, -1)], axis=1)
    training = dropout > 0
    if training:
        mha.dropout = dropout
        # dropout acts on the output path only; check the scores are the undropped weights
        y, _ = run64(mha, [q, v, vm], None, training=True)
        mha.dropout = 0.0
        y0, _ = run64(mha, [q, v, vm], None)
        np.testing.assert_allclose(y[:, Tq * D:], y0[:, Tq * D:], atol=1e-15)
        return
    y, dxs = run64(mha, [q, v, vm], dy)
    tp = {k: torch.tensor(a, requires_grad=True) for k, a in p.items()}
    tq, tv = torch.tensor(q, requires_grad=True), torch.tensor(v, requires_grad=True)
    out, w = _torch_mha(torch, tp, tq, tv, tv, H, kd, kd, kv=torch.tensor(vm != 0))
    np.testing.assert_allclose(y[:, :Tq * D].reshape(B, Tq, D), out.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(y[:, Tq * D:].reshape(B, H, Tq, Tv), w.detach().numpy(),
                               atol=1e-12)
    assert np.all(y[1, Tq * D:] == 0)
    loss = (out * torch.tensor(dy_out)).sum() + (w * torch.tensor(dy_s)).sum()
    loss.backward()
    np.testing.assert_allclose(dxs[0], tq.grad.numpy(), atol=1e-11)
    np.testing.assert_allclose(dxs[1], tv.grad.numpy(), atol=1e-11)
    for k in p:
        np.testing.assert_allclose(g[k], tp[k].grad.numpy(), atol=1e-11, err_msg=k)


def _model(T=5, E=8, H=2, causal=False):
    x = fg.Input((T, E))
    y, s = L.MultiHeadAttention(H, 4, name="mha")(x, x, return_attention_scores=True,
                                                  use_causal_mask=causal)
    return x, y, s


def test_functional_model_outputs_output_and_scores():
    x, y, s = _model(causal=True)
    assert tuple(y.shape) == (None, 5, 8) and tuple(s.shape) == (None, 2, 5, 5)
    model = fg.Model(x, [y, s])
    X = rng(1).standard_normal((3, 5, 8)).astype(np.float32)
    a, b = model.predict(X, verbose=0)
    mha = model.get_layer("mha")
    ye, se = mha(X, X, return_attention_scores=True, use_causal_mask=True)
    np.testing.assert_allclose(a, ye, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(b, se, rtol=1e-6, atol=1e-6)
    assert b.shape == (3, 2, 5, 5)
    np.testing.assert_allclose(b.sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.triu(b, 1) == 0)             # causal
    # an eager call without scores on the same layer returns just the output
    np.testing.assert_allclose(mha(X, X, use_causal_mask=True), ye, rtol=1e-6, atol=1e-6)


def test_model_trains_through_the_output_and_the_scores():
    """A loss on the scores output trains the attention (target: each token attends
    to itself); a loss on the output alone gives the scores no gradient."""
    fg.utils.set_random_seed(3)
    T, E = 4, 6
    x = fg.Input((T, E))
    y, s = L.MultiHeadAttention(2, 3, name="mha", seed=1)(x, x, return_attention_scores=True)
    model = fg.Model(x, [L.Dense(1)(y), s])
    r = rng(2)
    X = r.standard_normal((64, T, E)).astype(np.float32)
    Y = X.sum(-1, keepdims=True)
    S = np.broadcast_to(np.eye(T, dtype=np.float32), (64, 2, T, T)).copy()   # attend to self
    model.compile(optimizer=fg.optimizers.Adam(3e-2), loss=["mse", "mse"], loss_weights=[0.1, 10.0])
    before = model.evaluate(X, [Y, S], verbose=0)
    model.fit(X, [Y, S], epochs=40, batch_size=16, verbose=0, shuffle=False)
    after = model.evaluate(X, [Y, S], verbose=0)
    assert after[2] < 0.3 * before[2], (before, after)     # the scores' loss went down


@pytest.mark.parametrize("how", ["save", "json", "clone"])
def test_scores_model_round_trips(tmp_path, how):
    x, y, s = _model()
    model = fg.Model(x, [y, s])
    X = rng(5).standard_normal((2, 5, 8)).astype(np.float32)
    a = model.predict(X, verbose=0)
    if how == "save":
        model.save(tmp_path / "m.fgm")
        m2 = fg.models.load_model(tmp_path / "m.fgm")
    elif how == "json":
        m2 = fg.models.model_from_json(model.to_json())
        m2.set_weights(model.get_weights())
    else:
        m2 = fg.models.clone_model(model)
        m2.set_weights(model.get_weights())
    b = m2.predict(X, verbose=0)
    for u, w in zip(a, b):
        np.testing.assert_allclose(w, u, rtol=1e-6, atol=1e-6)


def test_shared_layer_called_with_and_without_scores_is_refused():
    x = fg.Input((5, 8))
    mha = L.MultiHeadAttention(2, 4, name="mha")
    mha(x, x, return_attention_scores=True)
    with pytest.raises(ValueError, match="return_attention_scores"):
        mha(x, x)


def test_attention_layer_scores_in_graph_still_refused_clearly():
    x = fg.Input((5, 8))
    with pytest.raises(NotImplementedError, match="only supported in eager"):
        L.Attention()([x, x], return_attention_scores=True)
