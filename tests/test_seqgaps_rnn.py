"""Bidirectional(..., return_state=True) (Keras: [output, *forward states,
*backward states]) and GRU(reset_after=False) against PyTorch float64."""
import numpy as np
import pytest

import fastgrad as fg
from fastgrad.engine.workspace import Workspace

L = fg.layers
CLASSES = {"lstm": L.LSTM, "gru": L.GRU, "simple": L.SimpleRNN}


# ------------------------------------------------------------ Bidirectional return_state
@pytest.mark.torch
@pytest.mark.parametrize("kind", ["lstm", "gru", "simple"])
@pytest.mark.parametrize("mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("ret_seq", [False, True])
def test_bidirectional_return_state_vs_torch(kind, mode, ret_seq):
    torch = pytest.importorskip("torch")
    from test_rnn_torch import _torch_cell, _torch_ref
    rng = np.random.default_rng(21)
    n, T, f, u = 3, 6, 4, 3
    x32 = rng.standard_normal((n, T, f)).astype(np.float32)
    layer = L.Bidirectional(CLASSES[kind](u, return_sequences=ret_seq, return_state=True,
                                          bias_initializer="random_normal"), merge_mode=mode)
    outs = layer(x32)
    S = 2 if kind == "lstm" else 1
    nout = 2 if mode is None else 1
    assert len(outs) == nout + 2 * S
    p = {k: np.array(v, np.float64) for k, v in layer.params.items()}
    g = {k: np.zeros_like(v) for k, v in p.items()}
    layer.bind(p, g, {})
    mask = rng.random((n, T)) > 0.3
    mask[0] = False                     # a fully masked row
    x = x32.astype(np.float64)
    ws = Workspace()
    packed = layer.forward(x, True, ws, mask=mask)
    dpk = rng.standard_normal(packed.shape)
    dx = layer.backward(dpk.copy(), ws, True)
    pf = {k[8:]: v for k, v in p.items() if k.startswith("forward_")}
    pb = {k[9:]: v for k, v in p.items() if k.startswith("backward_")}
    cf, cb = _torch_cell(kind, f, u, pf), _torch_cell(kind, f, u, pb)
    xt = torch.tensor(x, requires_grad=True)
    mt = torch.tensor(mask)
    yf, sf = _torch_ref(kind, cf, xt, mt, False, ret_seq, ret_seq)
    yb, sb = _torch_ref(kind, cb, xt, mt, True, ret_seq, ret_seq)
    if ret_seq:
        yb = torch.flip(yb, [1])
    if mode is None:
        ys = [yf, yb]
    else:
        ys = [{"concat": lambda: torch.cat([yf, yb], -1), "sum": lambda: yf + yb,
               "mul": lambda: yf * yb, "ave": lambda: (yf + yb) / 2}[mode]()]
    ref = torch.cat([y.reshape(n, -1) for y in ys] + sf + sb, 1)
    np.testing.assert_allclose(packed, ref.detach().numpy(), rtol=1e-9, atol=1e-11)
    (ref * torch.tensor(dpk)).sum().backward()
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(g["backward_recurrent_kernel"].T,
                               _perm(kind, cb.weight_hh.grad.numpy(), u), rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(g["forward_kernel"].T, _perm(kind, cf.weight_ih.grad.numpy(), u),
                               rtol=1e-8, atol=1e-11)


def _perm(kind, w, u):
    """torch GRU rows [r, z, n] -> Keras [z, r, h] (LSTM / SimpleRNN: same order)."""
    if kind != "gru":
        return w
    r, z, h = np.split(w, 3, axis=0)
    return np.concatenate([z, r, h], axis=0)


@pytest.mark.parametrize("mode", ["concat", None])
def test_bidirectional_return_state_in_a_model(tmp_path, mode):
    """Symbolic call: [output, h_fwd, c_fwd, h_bwd, c_bwd] (Keras's order), shapes,
    eager == model, a model using the states trains, and save / load keeps it."""
    fg.utils.set_random_seed(4)
    T, F, U = 5, 3, 4
    x = fg.Input((T, F))
    outs = L.Bidirectional(L.LSTM(U, return_state=True, return_sequences=True), merge_mode=mode,
                           name="bi")(x)
    if mode is None:
        yf, yb, hf, cf, hb, cb = outs
        assert tuple(yf.shape) == (None, T, U) and tuple(yb.shape) == (None, T, U)
    else:
        y, hf, cf, hb, cb = outs
        assert tuple(y.shape) == (None, T, 2 * U)
    for s in (hf, cf, hb, cb):
        assert tuple(s.shape) == (None, U)
    z = L.Dense(1)(L.Concatenate()([hf, cf, hb, cb]))
    model = fg.Model(x, [z] + list(outs))
    r = np.random.default_rng(5)
    X = r.standard_normal((64, T, F)).astype(np.float32)
    got = model.predict(X, verbose=0)
    eager = model.get_layer("bi")(X)
    for a, b in zip(got[1:], eager):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the backward layer's final h is its output at time 0 (return_sequences, reversed back)
    bwd_seq = eager[1] if mode is None else eager[0][..., U:]
    np.testing.assert_allclose(eager[-2], bwd_seq[:, 0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(eager[-4], (eager[0] if mode is None else eager[0][..., :U])[:, -1],
                               rtol=1e-6, atol=1e-6)
    m2 = fg.Model(x, z)
    m2.compile(optimizer=fg.optimizers.Adam(1e-2), loss="mse")
    Y = X[:, :, 0].sum(1, keepdims=True)
    before = m2.evaluate(X, Y, verbose=0)
    m2.fit(X, Y, epochs=20, batch_size=16, verbose=0, shuffle=False)
    assert m2.evaluate(X, Y, verbose=0) < 0.5 * before
    model.save(tmp_path / "m.fgm")
    m3 = fg.models.load_model(tmp_path / "m.fgm")
    for a, b in zip(model.predict(X, verbose=0), m3.predict(X, verbose=0)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_bidirectional_stateful_still_refused():
    with pytest.raises(ValueError, match="stateful"):
        L.Bidirectional(L.LSTM(3, stateful=True))
    with pytest.raises(ValueError, match="backward_layer"):
        L.Bidirectional(L.LSTM(3, return_state=True), backward_layer=L.LSTM(3, go_backwards=True))


# ------------------------------------------------------------ GRU(reset_after=False)
def _torch_gru_v1(torch, p, x, mask, go_back, ret_seq, h0=None, rmask=None):
    """Keras's reset_after=False GRU written in torch (float64), Keras's mask rule."""
    n, T, _ = x.shape
    k, rk = p["kernel"], p["recurrent_kernel"]
    u = rk.shape[0]
    b = p["bias"] if "bias" in p else torch.zeros(3 * u, dtype=torch.float64)
    h = h0 if h0 is not None else torch.zeros(n, u, dtype=torch.float64)
    prev = torch.zeros(n, u, dtype=torch.float64)
    outs = []
    for s in range(T):
        t = T - 1 - s if go_back else s
        xw = x[:, t] @ k + b
        hp = h if rmask is None else h * rmask
        z = torch.sigmoid(xw[:, :u] + hp @ rk[:, :u])
        r = torch.sigmoid(xw[:, u:2 * u] + hp @ rk[:, u:2 * u])
        hh = torch.tanh(xw[:, 2 * u:] + (r * hp) @ rk[:, 2 * u:])
        hn = z * h + (1 - z) * hh
        if mask is not None:
            m = mask[:, t:t + 1]
            hn = torch.where(m, hn, h)
            out = torch.where(m, hn, prev)
        else:
            out = hn
        h, prev = hn, out
        outs.append(out)
    return (torch.stack(outs, 1) if ret_seq else outs[-1]), h


def test_gru_reset_after_false_weights_and_config():
    layer = L.GRU(4, reset_after=False)
    layer(np.zeros((2, 3, 5), np.float32))
    assert [w.shape for w in layer.get_weights()] == [(5, 12), (4, 12), (12,)]   # Keras 3
    assert layer.get_config()["reset_after"] is False
    l2 = L.GRU.from_config(layer.get_config())
    assert l2.reset_after is False
    g2 = L.GRU(4)
    g2(np.zeros((2, 3, 5), np.float32))
    assert g2.get_weights()[2].shape == (2, 12)                                  # reset_after=True


@pytest.mark.torch
@pytest.mark.parametrize("ret_seq", [False, True])
@pytest.mark.parametrize("go_back", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_gru_reset_after_false_vs_torch(ret_seq, go_back, masked, backend):
    torch = pytest.importorskip("torch")
    if backend == "native":
        from fastgrad.backend import native_available
        if not native_available():
            pytest.skip("native kernels not built")
    fg.set_backend(backend)
    rng = np.random.default_rng(31)
    n, T, f, u = 3, 7, 4, 5
    x32 = rng.standard_normal((n, T, f)).astype(np.float32)
    h032 = rng.standard_normal((n, u)).astype(np.float32)
    layer = L.GRU(u, reset_after=False, return_sequences=ret_seq, go_backwards=go_back,
                  return_state=True, bias_initializer="random_normal")
    layer(x32, initial_state=[h032])
    p = {k: np.array(v, np.float64) for k, v in layer.params.items()}
    g = {k: np.zeros_like(v) for k, v in p.items()}
    layer.bind(p, g, {})
    x, h0 = x32.astype(np.float64), h032.astype(np.float64)
    mask = rng.random((n, T)) > 0.3 if masked else None
    if masked:
        mask[1] = False
    ws = Workspace()
    packed = layer.forward([x, h0], True, ws, mask=None if mask is None else [mask, None])
    dpk = rng.standard_normal(packed.shape)
    dxs = layer.backward(dpk.copy(), ws, True)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    xt, ht = torch.tensor(x, requires_grad=True), torch.tensor(h0, requires_grad=True)
    y, hT = _torch_gru_v1(torch, tp, xt, None if mask is None else torch.tensor(mask), go_back,
                          ret_seq, ht)
    ref = torch.cat([y.reshape(n, -1), hT], 1)
    np.testing.assert_allclose(packed, ref.detach().numpy(), rtol=1e-9, atol=1e-11)
    (ref * torch.tensor(dpk)).sum().backward()
    np.testing.assert_allclose(dxs[0], xt.grad.numpy(), rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(dxs[1], ht.grad.numpy(), rtol=1e-8, atol=1e-11)
    for k in p:
        np.testing.assert_allclose(g[k], tp[k].grad.numpy(), rtol=1e-8, atol=1e-11, err_msg=k)


@pytest.mark.torch
def test_gru_reset_after_false_recurrent_dropout_vs_torch():
    """The recurrent dropout mask multiplies the state fed to the recurrent products
    (as gru_forward does), checked with the layer's own mask."""
    torch = pytest.importorskip("torch")
    fg.set_backend("numpy")
    rng = np.random.default_rng(32)
    n, T, f, u = 4, 5, 3, 6
    x32 = rng.standard_normal((n, T, f)).astype(np.float32)
    layer = L.GRU(u, reset_after=False, return_sequences=True, recurrent_dropout=0.4, seed=3)
    layer(x32)
    p = {k: np.array(v, np.float64) for k, v in layer.params.items()}
    g = {k: np.zeros_like(v) for k, v in p.items()}
    layer.bind(p, g, {})
    x = x32.astype(np.float64)
    ws = Workspace()
    y = layer.forward(x, True, ws)
    rmask = ws.rmask
    assert rmask is not None and np.any(rmask == 0)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy.copy(), ws, True)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    xt = torch.tensor(x, requires_grad=True)
    yt, _ = _torch_gru_v1(torch, tp, xt, None, False, True, rmask=torch.tensor(rmask))
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-9, atol=1e-11)
    (yt * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(g["recurrent_kernel"], tp["recurrent_kernel"].grad.numpy(),
                               rtol=1e-8, atol=1e-11)


def test_gru_reset_after_false_in_a_model_trains_and_round_trips(tmp_path):
    fg.utils.set_random_seed(6)
    T, F = 6, 2
    x = fg.Input((T, F))
    h = L.Bidirectional(L.GRU(8, reset_after=False, return_sequences=True))(x)
    z = L.Dense(1)(L.GRU(8, reset_after=False)(h))
    model = fg.Model(x, z)
    r = np.random.default_rng(7)
    X = r.standard_normal((128, T, F)).astype(np.float32)
    Y = X[:, :, 0].sum(1, keepdims=True)
    model.compile(optimizer=fg.optimizers.Adam(1e-2), loss="mse")
    before = model.evaluate(X, Y, verbose=0)
    model.fit(X, Y, epochs=15, batch_size=16, verbose=0, shuffle=False)
    assert model.evaluate(X, Y, verbose=0) < 0.3 * before
    model.save(tmp_path / "g.fgm")
    m2 = fg.models.load_model(tmp_path / "g.fgm")
    np.testing.assert_allclose(m2.predict(X, verbose=0), model.predict(X, verbose=0),
                               rtol=1e-6, atol=1e-6)


def test_gru_reset_after_false_finite_differences():
    """float64 finite differences of the NumPy op through the layer (mask, reverse)."""
    fg.set_backend("numpy")
    rng = np.random.default_rng(33)
    n, T, f, u = 2, 4, 3, 3
    x32 = rng.standard_normal((n, T, f)).astype(np.float32)
    layer = L.GRU(u, reset_after=False, return_sequences=True, go_backwards=True,
                  bias_initializer="random_normal")
    layer(x32)
    p = {k: np.array(v, np.float64) for k, v in layer.params.items()}
    g = {k: np.zeros_like(v) for k, v in p.items()}
    layer.bind(p, g, {})
    x = x32.astype(np.float64)
    mask = np.array([[1, 1, 0, 1], [0, 1, 1, 1]], bool)
    dy = rng.standard_normal((n, T, u))

    def loss():
        return float((layer.forward(x, False, Workspace(), mask=mask) * dy).sum())

    ws = Workspace()
    layer.forward(x, False, ws, mask=mask)
    dx = layer.backward(dy.copy(), ws, True)
    eps = 1e-6
    for arr, grad in [(x, dx), (p["recurrent_kernel"], g["recurrent_kernel"]),
                      (p["bias"], g["bias"])]:
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + eps
            a = loss()
            arr[i] = old - eps
            b = loss()
            arr[i] = old
            num[i] = (a - b) / (2 * eps)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)
