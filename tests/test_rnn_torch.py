"""Recurrent layers against PyTorch float64 (the numerical oracle).

Weight layouts (Keras -> torch), documented in docs/sequence.md:
- LSTM: Keras kernel (F, 4U) columns [i, f, c, o] = torch weight_ih_l0 (4U, F) rows
  [i, f, g, o] transposed: same gate order; Keras has one bias, torch two
  (bias_ih = Keras bias, bias_hh = 0).
- GRU (reset_after=True): Keras [z, r, h], torch [r, z, n]: swap the first two
  blocks; Keras bias row 0 = torch bias_ih, row 1 = bias_hh. Torch's GRU is
  Keras's reset_after=True: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)).
- SimpleRNN: torch nn.RNN(nonlinearity="tanh"), bias_ih = Keras bias, bias_hh = 0.
Masked sequences: torch has no Keras-style masking, so the oracle steps torch's
own cells (nn.LSTMCell / GRUCell / RNNCell, same weights) and applies Keras's
rule with torch.where (a masked step keeps the states; outputs repeat the
previous output, zeros before the first unmasked step).
"""
import numpy as np
import pytest

import fastgrad as fg
from fastgrad.engine.workspace import Workspace

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.torch

L = fg.layers


def _layer64(layer, x32, initial=None):
    """Build `layer` eagerly (float32 weights), then rebind float64 copies."""
    if initial is None:
        layer(x32)
    else:
        layer(x32, initial_state=initial)
    p64 = {k: np.array(v, dtype=np.float64) for k, v in layer.params.items()}
    g64 = {k: np.zeros_like(v) for k, v in p64.items()}
    layer.bind(p64, g64, {})
    return p64, g64


def _gate_perm_gru(a, u, axis):
    z, r, h = np.split(a, 3, axis=axis)
    return np.concatenate([r, z, h], axis=axis)


def _torch_cell(kind, f, u, p, go_back=False):
    t = lambda a: torch.tensor(np.ascontiguousarray(a), dtype=torch.float64)  # noqa: E731
    if kind == "lstm":
        cell = torch.nn.LSTMCell(f, u, dtype=torch.float64)
        wi, wh, bi, bh = p["kernel"].T, p["recurrent_kernel"].T, p["bias"], np.zeros_like(p["bias"])
    elif kind == "gru":
        cell = torch.nn.GRUCell(f, u, dtype=torch.float64)
        wi = _gate_perm_gru(p["kernel"], u, 1).T
        wh = _gate_perm_gru(p["recurrent_kernel"], u, 1).T
        bi = _gate_perm_gru(p["bias"][0], u, 0)
        bh = _gate_perm_gru(p["bias"][1], u, 0)
    else:
        cell = torch.nn.RNNCell(f, u, nonlinearity="tanh", dtype=torch.float64)
        wi, wh, bi, bh = p["kernel"].T, p["recurrent_kernel"].T, p["bias"], np.zeros_like(p["bias"])
    with torch.no_grad():
        cell.weight_ih.copy_(t(wi))
        cell.weight_hh.copy_(t(wh))
        cell.bias_ih.copy_(t(bi))
        cell.bias_hh.copy_(t(bh))
    return cell


def _torch_ref(kind, cell, x, mask, go_back, ret_seq, zero_out, h0=None, c0=None):
    """Keras semantics over torch cells; returns (output, [final states])."""
    n, T, _ = x.shape
    u = cell.hidden_size
    h = h0 if h0 is not None else torch.zeros(n, u, dtype=torch.float64)
    c = c0 if c0 is not None else torch.zeros(n, u, dtype=torch.float64)
    prev_out = torch.zeros(n, u, dtype=torch.float64)
    outs = []
    for s in range(T):
        t = T - 1 - s if go_back else s
        if kind == "lstm":
            hn, cn = cell(x[:, t], (h, c))
        else:
            hn = cell(x[:, t], h)
            cn = c
        if mask is not None:
            m = mask[:, t:t + 1]
            hn = torch.where(m, hn, h)
            cn = torch.where(m, cn, c)
            out = torch.where(m, hn, torch.zeros_like(hn) if zero_out else prev_out)
        else:
            out = hn
        h, c = hn, cn
        prev_out = out
        outs.append(out)
    y = torch.stack(outs, 1) if ret_seq else outs[-1]
    return y, ([h, c] if kind == "lstm" else [h])


CLASSES = {"lstm": L.LSTM, "gru": L.GRU, "simple": L.SimpleRNN}


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple"])
@pytest.mark.parametrize("ret_seq", [False, True])
@pytest.mark.parametrize("go_back", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_forward_backward_vs_torch(kind, ret_seq, go_back, masked):
    rng = np.random.default_rng(hash((kind, ret_seq, go_back, masked)) % 2**32)
    n, T, f, u = 3, 7, 5, 4
    x32 = rng.standard_normal((n, T, f)).astype(np.float32)
    layer = CLASSES[kind](u, return_sequences=ret_seq, go_backwards=go_back,
                          bias_initializer="random_normal")
    p, g = _layer64(layer, x32)
    x = x32.astype(np.float64)
    mask = None
    if masked:
        mask = rng.random((n, T)) > 0.35
        mask[0, :] = False            # a fully masked row (outputs zeros, states stay initial)
        mask[1, :] = True
    ws = Workspace()
    y = layer.forward(x, True, ws, mask=mask)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy.copy(), ws, True)

    cell = _torch_cell(kind, f, u, p)
    xt = torch.tensor(x, requires_grad=True)
    mt = None if mask is None else torch.tensor(mask)
    yt, _ = _torch_ref(kind, cell, xt, mt, go_back, ret_seq, False)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-9, atol=1e-11)
    (yt * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-8, atol=1e-11)
    if kind == "gru":
        gk = _gate_perm_gru(g["kernel"], u, 1).T
        gr = _gate_perm_gru(g["recurrent_kernel"], u, 1).T
        gbi = _gate_perm_gru(g["bias"][0], u, 0)
        gbh = _gate_perm_gru(g["bias"][1], u, 0)
        np.testing.assert_allclose(gbh, cell.bias_hh.grad.numpy(), rtol=1e-8, atol=1e-11)
    else:
        gk, gr, gbi = g["kernel"].T, g["recurrent_kernel"].T, g["bias"]
    np.testing.assert_allclose(gk, cell.weight_ih.grad.numpy(), rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(gr, cell.weight_hh.grad.numpy(), rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(gbi, cell.bias_ih.grad.numpy(), rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_full_layer_vs_torch_module(kind):
    """No mask: the fastgrad layer against torch's fused nn.LSTM / nn.GRU module."""
    rng = np.random.default_rng(5)
    n, T, f, u = 4, 9, 6, 5
    x32 = rng.standard_normal((n, T, f)).astype(np.float32)
    layer = CLASSES[kind](u, return_sequences=True, bias_initializer="random_normal")
    p, g = _layer64(layer, x32)
    x = x32.astype(np.float64)
    ws = Workspace()
    y = layer.forward(x, True, ws)
    mod = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(f, u, batch_first=True,
                                                               dtype=torch.float64)
    cell = _torch_cell(kind, f, u, p)
    with torch.no_grad():
        mod.weight_ih_l0.copy_(cell.weight_ih)
        mod.weight_hh_l0.copy_(cell.weight_hh)
        mod.bias_ih_l0.copy_(cell.bias_ih)
        mod.bias_hh_l0.copy_(cell.bias_hh)
    yt, _ = mod(torch.tensor(x))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple"])
def test_states_initial_state_vs_torch(kind):
    rng = np.random.default_rng(11)
    n, T, f, u = 3, 6, 4, 5
    x32 = rng.standard_normal((n, T, f)).astype(np.float32)
    ns = 2 if kind == "lstm" else 1
    init32 = [rng.standard_normal((n, u)).astype(np.float32) for _ in range(ns)]
    layer = CLASSES[kind](u, return_sequences=True, return_state=True,
                          bias_initializer="random_normal")
    p, g = _layer64(layer, x32, init32)
    x = x32.astype(np.float64)
    init = [a.astype(np.float64) for a in init32]
    mask = rng.random((n, T)) > 0.3
    ws = Workspace()
    packed = layer.forward([x] + init, True, ws, mask=[mask] + [None] * ns)
    dpk = rng.standard_normal(packed.shape)
    grads = layer.backward(dpk.copy(), ws, True)
    cell = _torch_cell(kind, f, u, p)
    xt = torch.tensor(x, requires_grad=True)
    it = [torch.tensor(a, requires_grad=True) for a in init]
    yt, st = _torch_ref(kind, cell, xt, torch.tensor(mask), False, True, False, *it)
    pk = torch.cat([yt.reshape(n, -1)] + st, 1)
    np.testing.assert_allclose(packed, pk.detach().numpy(), rtol=1e-9, atol=1e-11)
    (pk * torch.tensor(dpk)).sum().backward()
    np.testing.assert_allclose(grads[0], xt.grad.numpy(), rtol=1e-8, atol=1e-11)
    for a, b in zip(grads[1:], it):
        np.testing.assert_allclose(a, b.grad.numpy(), rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize("mode", ["concat", "sum", "mul", "ave"])
@pytest.mark.parametrize("ret_seq", [False, True])
def test_bidirectional_vs_torch(mode, ret_seq):
    rng = np.random.default_rng(17)
    n, T, f, u = 3, 6, 4, 3
    x32 = rng.standard_normal((n, T, f)).astype(np.float32)
    layer = L.Bidirectional(L.LSTM(u, return_sequences=ret_seq, bias_initializer="random_normal"),
                            merge_mode=mode)
    layer(x32)
    p = {k: np.array(v, np.float64) for k, v in layer.params.items()}
    g = {k: np.zeros_like(v) for k, v in p.items()}
    layer.bind(p, g, {})
    mask = rng.random((n, T)) > 0.3
    x = x32.astype(np.float64)
    ws = Workspace()
    y = layer.forward(x, True, ws, mask=mask)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy.copy(), ws, True)
    pf = {k[8:]: v for k, v in p.items() if k.startswith("forward_")}
    pb = {k[9:]: v for k, v in p.items() if k.startswith("backward_")}
    cf, cb = _torch_cell("lstm", f, u, pf), _torch_cell("lstm", f, u, pb)
    xt = torch.tensor(x, requires_grad=True)
    mt = torch.tensor(mask)
    yf, _ = _torch_ref("lstm", cf, xt, mt, False, ret_seq, ret_seq)
    yb, _ = _torch_ref("lstm", cb, xt, mt, True, ret_seq, ret_seq)
    if ret_seq:
        yb = torch.flip(yb, [1])
    ref = {"concat": lambda: torch.cat([yf, yb], -1), "sum": lambda: yf + yb,
           "mul": lambda: yf * yb, "ave": lambda: (yf + yb) / 2}[mode]()
    np.testing.assert_allclose(y, ref.detach().numpy(), rtol=1e-9, atol=1e-11)
    (ref * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(g["backward_recurrent_kernel"].T, cb.weight_hh.grad.numpy(),
                               rtol=1e-8, atol=1e-11)


def test_embedding_vs_torch():
    rng = np.random.default_rng(3)
    e = L.Embedding(11, 4)
    ids = rng.integers(0, 11, size=(5, 7))
    y = e(ids)
    te = torch.nn.Embedding(11, 4, dtype=torch.float64)
    with torch.no_grad():
        te.weight.copy_(torch.tensor(e.get_weights()[0], dtype=torch.float64))
    yt = te(torch.tensor(ids))
    np.testing.assert_allclose(y, yt.detach().numpy().astype(np.float32), rtol=0, atol=0)
    dy = rng.standard_normal(yt.shape)
    (yt * torch.tensor(dy)).sum().backward()
    g = np.zeros((11, 4))
    e.ops.embedding_backward(ids, dy, g)
    np.testing.assert_allclose(g, te.weight.grad.numpy(), rtol=1e-12, atol=1e-12)
