"""PyTorch float64 oracle for functional models (marker `torch`).

Each graph of test_functional.py -- a residual MLP, a two-input model, a
two-output model with loss weights, a shared-layer siamese model -- is
trained 20 steps (SGD; Adam for two of them) in fastgrad from its initial
weights, and the same function is trained in PyTorch float64 from the same
weights on the same batches (autograd gradients; the optimizer update is
Keras's formula). The final weights agree to float32 rounding."""
import numpy as np
import pytest

import fastgrad as fg

from conftest import backends
from test_functional import (SCCE, residual_mlp, residual_data, two_input, two_input_data,
                             two_output, two_output_data, siamese, siamese_data)

pytestmark = pytest.mark.torch

STEPS, BATCH = 20, 16


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


# ---------------------------------------------------------------- the graphs in torch
def _residual_fwd(torch, w, xs):
    x = xs[0]
    h = torch.relu(x @ w[0] + w[1])
    for i in range(2):
        a = torch.relu(h @ w[2 + 4 * i] + w[3 + 4 * i])
        h = h + (a @ w[4 + 4 * i] + w[5 + 4 * i])
    return [h @ w[10] + w[11]]                       # logits (softmax is the loss's)


def _two_input_fwd(torch, w, xs):
    a, b = xs
    c = torch.cat([torch.relu(a @ w[0] + w[1]), torch.tanh(b @ w[2] + w[3])], dim=1)
    return [c @ w[4] + w[5]]


def _two_output_fwd(torch, w, xs):
    h = torch.tanh(xs[0] @ w[0] + w[1])
    return [h @ w[2] + w[3], h @ w[4] + w[5]]


def _siamese_fwd(torch, w, xs):
    left, right = xs
    d = torch.tanh(left @ w[0] + w[1]) - torch.tanh(right @ w[0] + w[1])   # one encoder
    return [d @ w[2] + w[3]]


def _sce(torch, z, y):
    return torch.nn.functional.cross_entropy(z, torch.as_tensor(y, dtype=torch.long))


def _bce(torch, z, y):
    return torch.nn.functional.binary_cross_entropy_with_logits(
        z, torch.as_tensor(y, dtype=torch.float64).reshape(z.shape))


def _mse(torch, z, y):
    return torch.mean((z - torch.as_tensor(y, dtype=torch.float64).reshape(z.shape)) ** 2)


CASES = {
    "residual": (lambda: residual_mlp(False, seed=5), lambda: residual_data(STEPS * BATCH),
                 _residual_fwd, [(_sce, 1.0)], dict(loss=SCCE)),
    "residual_op": (lambda: residual_mlp(True, seed=5), lambda: residual_data(STEPS * BATCH),
                    _residual_fwd, [(_sce, 1.0)], dict(loss=SCCE)),
    "two_input": (lambda: two_input(seed=6), lambda: two_input_data(STEPS * BATCH),
                  _two_input_fwd, [(_sce, 1.0)], dict(loss=SCCE)),
    "two_output": (lambda: two_output(seed=7), lambda: two_output_data(STEPS * BATCH),
                   _two_output_fwd, [(_sce, 1.0), (_mse, 0.5)],
                   dict(loss={"out_a": SCCE, "out_b": "mse"},
                        loss_weights={"out_a": 1.0, "out_b": 0.5})),
    "siamese": (lambda: siamese(seed=8), lambda: siamese_data(STEPS * BATCH),
                _siamese_fwd, [(_bce, 1.0)], dict(loss="binary_crossentropy")),
}


def _as_list(a):
    return a if isinstance(a, list) else [a]


def _torch_train(torch, fwd, losses, w0, xs, ys, opt, lr):
    w = [torch.tensor(a.astype(np.float64), requires_grad=True) for a in w0]
    m = [torch.zeros_like(p) for p in w]
    v = [torch.zeros_like(p) for p in w]
    b1, b2, eps = 0.9, 0.999, 1e-7
    for t in range(1, STEPS + 1):
        s = slice((t - 1) * BATCH, t * BATCH)
        bx = [torch.tensor(x[s].astype(np.float64)) for x in xs]
        outs = fwd(torch, w, bx)
        total = sum(wk * f(torch, z, y[s]) for (f, wk), z, y in zip(losses, outs, ys))
        for p in w:
            p.grad = None
        total.backward()
        with torch.no_grad():
            for p, mk, vk in zip(w, m, v):
                g = p.grad
                if opt == "sgd":
                    p -= lr * g
                else:                                   # Keras 3 Adam
                    mk += (g - mk) * (1 - b1)
                    vk += (g * g - vk) * (1 - b2)
                    alpha = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                    p -= alpha * mk / (torch.sqrt(vk) + eps)
    return [p.detach().numpy() for p in w]


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("case,opt", [("residual", "sgd"), ("residual_op", "adam"),
                                      ("two_input", "sgd"), ("two_output", "sgd"),
                                      ("two_output", "adam"), ("siamese", "sgd")])
def test_training_matches_torch_float64(torch, backend, case, opt):
    build, data, fwd, losses, compile_kw = CASES[case]
    lr = 0.1 if opt == "sgd" else 0.01
    x, y = data()
    xs, ys = _as_list(x), _as_list(y)
    with fg.use_backend(backend):
        m = build()
        m.compile(optimizer=fg.optimizers.SGD(lr) if opt == "sgd" else fg.optimizers.Adam(lr),
                  **compile_kw)
        w0 = m.get_weights()
        h = m.fit(x, y, epochs=1, batch_size=BATCH, shuffle=False, verbose=0)
        assert m.optimizer.iterations == STEPS
        ours = m.get_weights()
    theirs = _torch_train(torch, fwd, losses, w0, xs, ys, opt, lr)
    assert len(ours) == len(theirs)
    moved = 0
    for a, b, a0 in zip(ours, theirs, w0):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6)
        moved += not np.allclose(a, a0)
    assert moved == len(ours)                    # every array trained (no dead branch)
    assert np.isfinite(h.history["loss"][0])
