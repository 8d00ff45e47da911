"""Attention layers: MultiHeadAttention, Attention, AdditiveAttention,
PositionEmbedding, SinePositionEncoding. PyTorch float64 oracles (marker
`torch`: nn.MultiheadAttention with converted weights, and the formulas in
torch autograd), finite differences in float64, the flash path against the
full one, models that train, and bad input naming the layer."""
import math

import numpy as np
import pytest

import fastgrad as fg
from fastgrad.engine.workspace import Workspace
from attn_helpers import bind64, run64

L = fg.layers


def rng(s=0):
    return np.random.default_rng(s)


def make_mha(H, kd, qshape, vshape, kshape=None, masks=(), causal=False, **kw):
    mha = L.MultiHeadAttention(H, kd, **kw)
    names = dict(query_mask=(qshape[0],), value_mask=(vshape[0],), key_mask=(vshape[0],),
                 attention_mask=(qshape[0], vshape[0]))
    parts = {m: 1 for m in masks}
    mha._call_parts(1, 1, 1 if kshape else None, parts, causal)
    shapes = [qshape, vshape] + ([kshape] if kshape else []) + [names[m] for m in
                                                              ("query_mask", "value_mask",
                                                               "key_mask", "attention_mask")
                                                              if m in masks]
    mha.build(shapes)
    return mha


# ------------------------------------------------------------------ torch oracles
@pytest.mark.torch
@pytest.mark.parametrize("causal", [False, True])
def test_mha_vs_torch_multiheadattention(causal):
    torch = pytest.importorskip("torch")
    B, Tq, Tv, E, H = 3, 5, 7, 12, 3
    mha = make_mha(H, E // H, (Tq, E), (Tv, E), masks=("value_mask",), causal=causal)
    p, g = bind64(mha)
    r = rng(1)
    q, v = r.standard_normal((B, Tq, E)), r.standard_normal((B, Tv, E))
    vm = (r.random((B, Tv)) > 0.3).astype(float)
    vm[:, 0] = 1
    dy = r.standard_normal((B, Tq, E))
    y, dxs = run64(mha, [q, v, vm], dy)
    t = torch.nn.MultiheadAttention(E, H, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        for i, n in enumerate(("query", "key", "value")):
            t.in_proj_weight[i * E:(i + 1) * E] = torch.tensor(p[f"{n}_kernel"].reshape(E, E).T)
            t.in_proj_bias[i * E:(i + 1) * E] = torch.tensor(p[f"{n}_bias"].reshape(-1))
        t.out_proj.weight[:] = torch.tensor(p["output_kernel"].reshape(E, E).T)
        t.out_proj.bias[:] = torch.tensor(p["output_bias"])
    tq, tv = torch.tensor(q, requires_grad=True), torch.tensor(v, requires_grad=True)
    am = torch.triu(torch.ones(Tq, Tv, dtype=bool), 1) if causal else None
    out, _ = t(tq, tv, tv, key_padding_mask=torch.tensor(vm == 0), attn_mask=am)
    np.testing.assert_allclose(y, out.detach().numpy(), atol=1e-12)
    out.backward(torch.tensor(dy))
    np.testing.assert_allclose(dxs[0], tq.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(dxs[1], tv.grad.numpy(), atol=1e-12)
    assert dxs[2] is None
    for i, n in enumerate(("query", "key", "value")):
        np.testing.assert_allclose(g[f"{n}_kernel"].reshape(E, E).T,
                                   t.in_proj_weight.grad[i * E:(i + 1) * E].numpy(), atol=1e-12)
        np.testing.assert_allclose(g[f"{n}_bias"].reshape(-1),
                                   t.in_proj_bias.grad[i * E:(i + 1) * E].numpy(), atol=1e-12)
    np.testing.assert_allclose(g["output_kernel"].reshape(E, E).T, t.out_proj.weight.grad.numpy(),
                               atol=1e-12)
    np.testing.assert_allclose(g["output_bias"], t.out_proj.bias.grad.numpy(), atol=1e-12)


def _torch_mha(torch, p, q, v, k, H, kd, vd, kv=None, qv=None, am=None, causal=False):
    """Keras's MultiHeadAttention written in torch (einsum over the kernels)."""
    Q = torch.einsum("btd,dhk->bhtk", q, p["query_kernel"]) + p["query_bias"][None, :, None]
    K = torch.einsum("btd,dhk->bhtk", k, p["key_kernel"]) + p["key_bias"][None, :, None]
    V = torch.einsum("btd,dhk->bhtk", v, p["value_kernel"]) + p["value_bias"][None, :, None]
    s = torch.einsum("bhik,bhjk->bhij", Q, K) / math.sqrt(kd)
    Tq, Tv = s.shape[2], s.shape[3]
    ok = torch.ones(s.shape[0], 1, Tq, Tv, dtype=torch.bool)
    if kv is not None:
        ok = ok & kv[:, None, None, :]
    if qv is not None:
        ok = ok & qv[:, None, :, None]
    if am is not None:
        ok = ok & am[:, None]
    if causal:
        ok = ok & torch.tril(torch.ones(Tq, Tv, dtype=torch.bool))
    w = torch.softmax(s.masked_fill(~ok, -torch.inf), -1).nan_to_num(0.0) * ok
    o = torch.einsum("bhij,bhjv->bihv", w, V)
    return torch.einsum("bihv,hvo->bio", o, p["output_kernel"]) + p["output_bias"], w


@pytest.mark.torch
@pytest.mark.parametrize("flash", [False, True])
def test_mha_general_vs_torch_formula(flash):
    """key_dim != dim / heads, value_dim, output_shape, a separate key, query /
    value / key / attention masks, causal; flash path included."""
    torch = pytest.importorskip("torch")
    B, Tq, Tv, Dq, Dv, Dk, H, kd, vd, out = 2, 6, 5, 7, 4, 3, 2, 5, 3, 9
    masks = ("query_mask", "value_mask", "key_mask") + (() if flash else ("attention_mask",))
    mha = make_mha(H, kd, (Tq, Dq), (Tv, Dv), (Tv, Dk), masks=masks, causal=True, value_dim=vd,
                   output_shape=out, flash=flash)
    p, g = bind64(mha, seed=3)
    r = rng(4)
    q, v, k = (r.standard_normal((B, Tq, Dq)), r.standard_normal((B, Tv, Dv)),
               r.standard_normal((B, Tv, Dk)))
    qm = (r.random((B, Tq)) > 0.3).astype(float)
    vm = (r.random((B, Tv)) > 0.2).astype(float)
    km = (r.random((B, Tv)) > 0.2).astype(float)
    vm[:, 0] = km[:, 0] = 1
    am = (r.random((B, Tq, Tv)) > 0.3).astype(float)
    am[:, :, 0] = 1
    xs = [q, v, k, qm, vm, km] + ([] if flash else [am])
    dy = r.standard_normal((B, Tq, out))
    y, dxs = run64(mha, xs, dy)
    tp = {n: torch.tensor(a, requires_grad=True) for n, a in p.items()}
    tq, tv, tk = (torch.tensor(a, requires_grad=True) for a in (q, v, k))
    ty, _ = _torch_mha(torch, tp, tq, tv, tk, H, kd, vd, torch.tensor((vm * km) != 0),
                       torch.tensor(qm != 0), None if flash else torch.tensor(am != 0), True)
    np.testing.assert_allclose(y, ty.detach().numpy(), atol=1e-12)
    ty.backward(torch.tensor(dy))
    for a, t in zip(dxs[:3], (tq, tv, tk)):
        np.testing.assert_allclose(a, t.grad.numpy(), atol=1e-12)
    for n in p:
        np.testing.assert_allclose(g[n], tp[n].grad.numpy(), atol=1e-12, err_msg=n)


@pytest.mark.torch
@pytest.mark.parametrize("mode", ["dot", "dot_scale", "concat", "concat_scale", "additive",
                                  "additive_noscale"])
def test_attention_and_additive_vs_torch(mode):
    torch = pytest.importorskip("torch")
    B, Tq, Tv, D, Dv = 2, 4, 6, 3, 5
    if mode.startswith("additive"):
        layer = L.AdditiveAttention(use_scale=mode == "additive")
    else:
        layer = L.Attention(use_scale=mode.endswith("scale"), score_mode=mode.split("_")[0])
    layer._call_parts(1, 1, 1, dict(query_mask=1, value_mask=1), True)
    layer.build([(Tq, D), (Tv, Dv), (Tv, D), (Tq,), (Tv,)])
    p, g = bind64(layer, seed=5)
    r = rng(6)
    q, v, k = r.standard_normal((B, Tq, D)), r.standard_normal((B, Tv, Dv)), r.standard_normal((B, Tv, D))
    qm = np.array([[1, 1, 0, 1], [1, 0, 1, 1]], float)
    vm = (r.random((B, Tv)) > 0.3).astype(float)
    vm[:, 0] = 1
    dy = r.standard_normal((B, Tq, Dv))
    y, dxs = run64(layer, [q, v, k, qm, vm], dy)
    tp = {n: torch.tensor(a, requires_grad=True) for n, a in p.items()}
    tq, tv, tk = (torch.tensor(a, requires_grad=True) for a in (q, v, k))
    if mode.startswith("dot"):
        s = tq @ tk.transpose(1, 2)
        if "scale" in tp:
            s = s * tp["scale"]
    elif mode.startswith("concat"):
        u = tq[:, :, None] + tk[:, None]
        if "scale" in tp:
            u = u * tp["scale"]
        s = tp["concat_score_weight"] * torch.tanh(u).sum(-1)
    else:
        t = torch.tanh(tq[:, :, None] + tk[:, None])
        s = (t * tp["scale"]).sum(-1) if "scale" in tp else t.sum(-1)
    ok = torch.tensor(vm != 0)[:, None, :] & torch.tril(torch.ones(Tq, Tv, dtype=torch.bool))
    w = torch.softmax(s.masked_fill(~ok, -torch.inf), -1)
    ty = (w @ tv) * torch.tensor(qm)[:, :, None]
    np.testing.assert_allclose(y, ty.detach().numpy(), atol=1e-12)
    ty.backward(torch.tensor(dy))
    for a, t in zip(dxs[:3], (tq, tv, tk)):
        np.testing.assert_allclose(a, t.grad.numpy(), atol=1e-12)
    for n in p:
        np.testing.assert_allclose(g[n], tp[n].grad.numpy(), atol=1e-12, err_msg=n)


# ------------------------------------------------------------------ finite differences
def test_mha_finite_differences_self_attention():
    """key = value = query (one tensor used three times): the input gradient sums
    the three projections' contributions."""
    B, T, E = 2, 4, 6
    mha = make_mha(2, 3, (T, E), (T, E), masks=("query_mask",), causal=True)
    p, g = bind64(mha, seed=7)
    r = rng(8)
    x = r.standard_normal((B, T, E))
    qm = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], float)
    dy = r.standard_normal((B, T, E))
    y, dxs = run64(mha, [x, x, qm], dy)
    dx = dxs[0] + dxs[1]

    def f(x_):
        return float(np.sum(run64(mha, [x_, x_, qm])[0] * dy))
    eps = 1e-6
    for i in [(0, 0, 0), (1, 2, 3), (0, 3, 5), (1, 3, 1)]:
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        assert abs((f(xp) - f(xm)) / (2 * eps) - dx[i]) < 1e-7
    for n in p:
        idx = (0,) * p[n].ndim
        old = p[n][idx]
        p[n][idx] = old + eps
        fp = f(x)
        p[n][idx] = old - eps
        fm = f(x)
        p[n][idx] = old
        assert abs((fp - fm) / (2 * eps) - g[n][idx]) < 1e-7, n


def test_position_layers_values_and_gradients():
    B, T, D = 3, 5, 6
    pe = L.PositionEmbedding(8)
    pe.build((T, D))
    p, g = bind64(pe)
    x = rng(9).standard_normal((B, T, D))
    dy = rng(10).standard_normal((B, T, D))
    y, dx = run64(pe, x, dy)
    np.testing.assert_allclose(y, np.broadcast_to(p["embeddings"][:T], (B, T, D)))
    np.testing.assert_allclose(g["embeddings"][:T], dy.sum(0))
    assert np.all(g["embeddings"][T:] == 0) and np.all(dx == 0)
    se = L.SinePositionEncoding()
    y = se(np.zeros((2, T, D), np.float32))
    pos, i = np.arange(T)[:, None], np.arange(D)[None, :]
    ang = pos / 10000 ** ((2 * (i // 2)) / D)
    np.testing.assert_allclose(y[1], np.where(i % 2 == 0, np.sin(ang), np.cos(ang)), atol=1e-6)


# ------------------------------------------------------------------ float32 paths
def test_mha_flash_path_equals_full_path_float32():
    B, T, E = 2, 150, 16
    r = rng(11)
    x = r.standard_normal((B, T, E)).astype(np.float32)
    vm = (r.random((B, T)) > 0.2).astype(np.float32)
    vm[:, 0] = 1
    outs = []
    for flash in (False, True):
        mha = L.MultiHeadAttention(4, 4, flash=flash, name=f"m{flash}")
        mha(x, x, value_mask=vm, use_causal_mask=True)          # builds the weights
        if outs:
            for a, b in zip(mha.weights, outs[0][1]):
                a[...] = b
        ws = Workspace()
        mha.ops = fg.ops
        y = np.array(mha.forward([x, x, vm], True, ws), copy=True)
        dy = r.standard_normal(y.shape).astype(np.float32) if not outs else outs[0][3]
        dxs = mha.backward(dy.copy(), ws, True)
        outs.append((y, [w.copy() for w in mha.weights], [d.copy() for d in dxs[:2]], dy,
                     {n: a.copy() for n, a in mha.grads.items()}))
    np.testing.assert_allclose(outs[1][0], outs[0][0], rtol=1e-4, atol=1e-5)
    for a, b in zip(outs[1][2], outs[0][2]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    for n in outs[0][4]:
        np.testing.assert_allclose(outs[1][4][n], outs[0][4][n], rtol=1e-3, atol=2e-4, err_msg=n)


def test_weights_order_and_shapes_as_keras():
    mha = L.MultiHeadAttention(num_heads=2, key_dim=3, value_dim=5, output_shape=7)
    y = mha(np.zeros((1, 4, 6), np.float32), np.zeros((1, 3, 8), np.float32))
    assert y.shape == (1, 4, 7)
    assert [w.shape for w in mha.get_weights()] == [(6, 2, 3), (2, 3), (8, 2, 3), (2, 3),
                                                    (8, 2, 5), (2, 5), (2, 5, 7), (7,)]
    cfg = mha.get_config()
    again = L.MultiHeadAttention.from_config(cfg)
    assert again.get_config()["key_dim"] == 3 and again.value_dim == 5
    y, s = mha(np.ones((2, 4, 6), np.float32), np.ones((2, 3, 8), np.float32),
               return_attention_scores=True)
    assert s.shape == (2, 2, 4, 3)
    np.testing.assert_allclose(s.sum(-1), 1, rtol=1e-6)


def test_mha_dropout_only_in_training():
    mha = L.MultiHeadAttention(2, 4, dropout=0.5, seed=1)
    x = rng(12).standard_normal((2, 5, 8)).astype(np.float32)
    a = mha(x, x)
    np.testing.assert_array_equal(a, mha(x, x, training=False))
    t1, t2 = mha(x, x, training=True), mha(x, x, training=True)
    assert not np.allclose(t1, a) and not np.allclose(t1, t2)


def test_model_with_attention_trains():
    """A functional model with MHA (padding + causal masks), Attention and
    position layers learns a task needing attention: copy the token marked
    by a flag (class = that token's class)."""
    r = rng(13)
    N, T, C = 512, 8, 4
    tok = r.integers(0, C, (N, T))
    flag = r.integers(0, T, N)
    X = np.zeros((N, T, C + 1), np.float32)
    X[np.arange(N)[:, None], np.arange(T)[None], tok] = 1
    X[np.arange(N), flag, C] = 1
    y = tok[np.arange(N), flag]
    M = np.ones((N, T), np.float32)
    x = fg.Input((T, C + 1))
    m = fg.Input((T,))
    h = L.Add()([x, L.SinePositionEncoding()(x)])
    h = L.MultiHeadAttention(2, 8, name="mha", output_shape=16)(h, h, value_mask=m)
    h = L.Attention(use_scale=True)([h, h])
    h = L.Flatten()(h)
    out = L.Dense(C, activation="softmax")(h)
    model = fg.Model([x, m], out)
    model.compile(fg.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    hist = model.fit([X, M], y, epochs=30, batch_size=64, verbose=0)
    assert hist.history["accuracy"][-1] > 0.9, hist.history["accuracy"][-5:]


# ------------------------------------------------------------------ bad input
def test_bad_construction_names_the_layer():
    with pytest.raises(ValueError, match="MultiHeadAttention layer 'm1'.*num_heads"):
        L.MultiHeadAttention(0, 4, name="m1")
    with pytest.raises(ValueError, match="'m2'.*key_dim"):
        L.MultiHeadAttention(2, 2.5, name="m2")
    with pytest.raises(ValueError, match="'m3'.*dropout"):
        L.MultiHeadAttention(2, 4, dropout=1.0, name="m3")
    with pytest.raises(ValueError, match="Attention layer 'a1'.*score_mode"):
        L.Attention(score_mode="cosine", name="a1")
    with pytest.raises(ValueError, match="PositionEmbedding layer 'p1'.*sequence_length"):
        L.PositionEmbedding(0, name="p1")


def test_bad_shapes_and_masks_name_the_layer():
    x = fg.Input((5, 8))
    m = fg.Input((6,))
    with pytest.raises(ValueError, match="'bad1'.*value_mask has per-sample shape \\(6,\\), expected \\(5,\\)"):
        L.MultiHeadAttention(2, 4, name="bad1")(x, x, value_mask=m)
    with pytest.raises(ValueError, match="'bad2'.*attention_mask"):
        L.MultiHeadAttention(2, 4, name="bad2")(x, x, attention_mask=fg.Input((5, 4)))
    with pytest.raises(ValueError, match="'bad3'.*key .*value .*same time axes"):
        L.MultiHeadAttention(2, 4, name="bad3")(x, x, key=fg.Input((4, 8)))
    with pytest.raises(ValueError, match="'bad4'.*attention_axes"):
        L.MultiHeadAttention(2, 4, attention_axes=(2,), name="bad4")(fg.Input((3, 5, 8)),
                                                                     fg.Input((3, 5, 8)))
    with pytest.raises(ValueError, match="'bad5'.*same feature size"):
        L.Attention(name="bad5")([x, fg.Input((5, 3))])
    with pytest.raises(ValueError, match="'bad6'.*length 0"):
        L.MultiHeadAttention(2, 4, name="bad6")(np.zeros((2, 0, 8), np.float32),
                                                np.zeros((2, 3, 8), np.float32))
    mha = L.MultiHeadAttention(2, 4, name="bad7")
    mha(x, x)
    with pytest.raises(ValueError, match="'bad7'.*called the same way"):
        mha(x, x, use_causal_mask=True)
    # MultiHeadAttention returns scores in a graph (tests/test_seqgaps_attention.py);
    # Attention still refuses
    with pytest.raises(NotImplementedError, match="'bad8'.*return_attention_scores"):
        L.Attention(name="bad8")([x, x], return_attention_scores=True)
    with pytest.raises(ValueError, match="'bad9'.*exceeds sequence_length=4"):
        L.PositionEmbedding(4, name="bad9")(x)


def test_eager_batch_mismatch_names_the_layer():
    mha = L.MultiHeadAttention(2, 4, name="bad10")
    with pytest.raises(ValueError, match="'bad10'.*different batch sizes \\[2, 3\\]"):
        mha(np.zeros((2, 5, 8), np.float32), np.zeros((3, 5, 8), np.float32))
    att = L.Attention(name="bad11")
    with pytest.raises(ValueError, match="'bad11'.*different batch sizes"):
        att([np.zeros((2, 5, 8), np.float32), np.zeros((2, 5, 8), np.float32)],
            mask=[np.ones((2, 5)), np.ones((4, 5))])


def test_implicit_masks_equal_explicit_mask_inputs():
    """The mask mechanism's per-input masks (forward(..., mask=[q_mask, v_mask]))
    give what the explicit query_mask / value_mask inputs give."""
    B, Tq, Tv, E = 2, 4, 6, 8
    r = rng(14)
    q, v = r.standard_normal((B, Tq, E)), r.standard_normal((B, Tv, E))
    qm = np.array([[1, 1, 0, 1], [1, 1, 1, 0]], float)
    vm = np.array([[1, 1, 1, 0, 0, 1], [1, 0, 1, 1, 1, 1]], float)
    a = make_mha(2, 4, (Tq, E), (Tv, E), masks=("query_mask", "value_mask"))
    bind64(a, seed=15)
    b = make_mha(2, 4, (Tq, E), (Tv, E))
    b.bind(a.params, {n: np.zeros_like(g) for n, g in a.grads.items()}, {})
    ya = a.forward([q, v, qm, vm], False, Workspace())
    yb = b.forward([q, v], False, Workspace(), mask=[qm != 0, vm != 0])
    np.testing.assert_array_equal(ya, yb)
    assert b.compute_mask([q, v], [qm != 0, vm != 0]) is not None


def test_embedding_mask_flows_into_mha_in_a_model():
    """Embedding(mask_zero=True) -> MultiHeadAttention: the padding mask reaches the
    layer through the mask mechanism (query and value masks) and gives what explicit
    query_mask / value_mask inputs give."""
    if not hasattr(L, "Embedding"):
        pytest.skip("the mask mechanism (branch rnn) is not merged")
    T, V, E = 6, 12, 8
    ids = rng(16).integers(1, V, (5, T))
    ids[0, 4:] = 0
    ids[3, 2:] = 0
    x = fg.Input((T,))
    emb = L.Embedding(V, E, mask_zero=True, name="emb")
    h = emb(x)
    mha = L.MultiHeadAttention(2, 4, name="mha_implicit")
    y = mha(h, h)
    assert y._keras_mask is not None          # the query's mask is passed on
    m1 = fg.Model(x, y)
    x2 = fg.Input((T,))
    mk = fg.Input((T,))
    emb2 = L.Embedding(V, E, name="emb2")
    h2 = emb2(x2)
    mha2 = L.MultiHeadAttention(2, 4, name="mha_explicit")
    m2 = fg.Model([x2, mk], mha2(h2, h2, query_mask=mk, value_mask=mk))
    m2.set_weights(m1.get_weights())
    a = m1.predict(ids, verbose=0)
    b = m2.predict([ids, (ids != 0).astype(np.float32)], verbose=0)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("how", ["save", "json", "clone"])
def test_saved_graph_keeps_the_call(tmp_path, how):
    """The call convention (which inputs, causal) is part of the config, so a saved,
    JSON-rebuilt or cloned model computes the same function."""
    T, E = 5, 8
    x, m = fg.Input((T, E)), fg.Input((T,))
    h = L.MultiHeadAttention(2, 4, name="mha")(x, x, value_mask=m, use_causal_mask=True)
    h = L.Attention(name="att")([h, h], mask=[m, m], use_causal_mask=True)
    h = L.AdditiveAttention(name="add_att")([h, h, x])
    model = fg.Model([x, m], h)
    X = rng(17).standard_normal((3, T, E)).astype(np.float32)
    M = np.ones((3, T), np.float32)
    M[0, 3:] = 0
    a = model.predict([X, M], verbose=0)
    if how == "save":
        model.save(tmp_path / "m.fgm")
        m2 = fg.models.load_model(tmp_path / "m.fgm")
    elif how == "json":
        m2 = fg.models.model_from_json(model.to_json())
        m2.set_weights(model.get_weights())
    else:
        m2 = fg.models.clone_model(model)
        m2.set_weights(model.get_weights())
    np.testing.assert_allclose(m2.predict([X, M], verbose=0), a, rtol=1e-6, atol=1e-6)
    assert m2.get_layer("mha").get_config()["use_causal_mask"] is True


@pytest.mark.parametrize("flash", [False, True])
def test_mha_native_bits_for_any_thread_count_and_close_to_numpy(flash):
    """One MultiHeadAttention step on the native backend gives the same bits for
    1, 2 and 3 threads, and agrees with the NumPy backend to float32 rounding."""
    B, T, E = 3, 70, 16
    r = rng(18)
    x = r.standard_normal((B, T, E)).astype(np.float32)
    vm = (r.random((B, T)) > 0.2).astype(np.float32)
    vm[:, 0] = 1
    dy = r.standard_normal((B, T, E)).astype(np.float32)
    mha = make_mha(4, 4, (T, E), (T, E), masks=("value_mask",), causal=True, flash=flash)
    from fastgrad.engine.params import ParamStore
    ParamStore([mha], fresh=True).initialize()

    def step(backend, nt):
        fg.set_num_threads(nt)
        with fg.use_backend(backend):
            mha.ops = fg.ops
            ws = Workspace()
            y = np.array(mha.forward([x, x, vm], True, ws), copy=True)
            dxs = mha.backward(dy.copy(), ws, True)
            out = [y] + [np.array(d, copy=True) for d in dxs[:2]] + \
                [mha.grads[n].copy() for n in sorted(mha.grads)]
        mha.ops = None
        return out
    if not fg.backend.native_available():
        pytest.skip("native backend not built")
    runs = [step("native", nt) for nt in (1, 2, 3)]
    for run in runs[1:]:
        for a, b in zip(run, runs[0]):
            np.testing.assert_array_equal(a, b)
    ref = step("numpy", 1)
    for a, b in zip(runs[0], ref):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
