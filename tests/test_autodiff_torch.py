"""fg.math gradients against PyTorch autograd in float64 (the oracle), with
broadcasting shapes; and a traced layer / tape step against torch."""
import numpy as np
import pytest

import fastgrad as fg
from fastgrad import math as M

pytestmark = pytest.mark.torch


def _r(shape, seed, positive=False):
    a = np.random.default_rng(seed).normal(size=shape)
    return np.abs(a) + 0.3 if positive else a


def _cases(torch):
    F = torch.nn.functional
    return [
        # name, fastgrad fn, torch fn, input shapes, positive inputs
        ("add", M.add, torch.add, [(3, 1, 4), (5, 4)], False),
        ("subtract", M.subtract, torch.sub, [(4,), (2, 3, 4)], False),
        ("multiply", M.multiply, torch.mul, [(2, 1), (1, 3)], False),
        ("divide", M.divide, torch.div, [(3, 4), (4,)], True),
        ("power", M.power, torch.pow, [(3, 4), (1, 4)], True),
        ("maximum", M.maximum, torch.maximum, [(3, 4), (4,)], False),
        ("minimum", M.minimum, torch.minimum, [(3, 4), (3, 1)], False),
        ("matmul", M.matmul, torch.matmul, [(2, 3, 4), (4, 5)], False),
        ("matmul_b", M.matmul, torch.matmul, [(2, 3, 4), (1, 4, 2)], False),
        ("exp", M.exp, torch.exp, [(3, 4)], False),
        ("log", M.log, torch.log, [(3, 4)], True),
        ("sqrt", M.sqrt, torch.sqrt, [(3, 4)], True),
        ("square", M.square, torch.square, [(3, 4)], False),
        ("abs", M.abs, torch.abs, [(3, 4)], False),
        ("tanh", M.tanh, torch.tanh, [(3, 4)], False),
        ("sigmoid", M.sigmoid, torch.sigmoid, [(3, 4)], False),
        ("relu", M.relu, torch.relu, [(3, 4)], False),
        ("gelu", M.gelu, F.gelu, [(3, 4)], False),
        ("gelu_tanh", lambda x: M.gelu(x, approximate=True),
         lambda x: F.gelu(x, approximate="tanh"), [(3, 4)], False),
        ("elu", M.elu, F.elu, [(3, 4)], False),
        ("selu", M.selu, F.selu, [(3, 4)], False),
        ("silu", M.silu, F.silu, [(3, 4)], False),
        ("softplus", M.softplus, F.softplus, [(3, 4)], False),
        ("softsign", M.softsign, F.softsign, [(3, 4)], False),
        ("mish", M.mish, F.mish, [(3, 4)], False),
        ("leaky_relu", lambda x: M.leaky_relu(x, 0.2), lambda x: F.leaky_relu(x, 0.2),
         [(3, 4)], False),
        ("softmax0", lambda x: M.softmax(x, axis=0), lambda x: torch.softmax(x, 0),
         [(3, 4, 2)], False),
        ("log_softmax", M.log_softmax, lambda x: torch.log_softmax(x, -1), [(3, 4)], False),
        ("clip", lambda x: M.clip(x, -0.5, 0.5), lambda x: torch.clamp(x, -0.5, 0.5),
         [(3, 4)], False),
        ("where", lambda a, b: M.where(a > 0, a, b), lambda a, b: torch.where(a > 0, a, b),
         [(3, 4), (4,)], False),
        ("sum", lambda x: M.sum(x, axis=(0, 2), keepdims=True),
         lambda x: torch.sum(x, dim=(0, 2), keepdim=True), [(3, 4, 2)], False),
        ("mean", lambda x: M.mean(x, axis=1), lambda x: torch.mean(x, dim=1), [(3, 4, 2)], False),
        ("max", lambda x: M.max(x, axis=-1), lambda x: torch.amax(x, dim=-1), [(3, 4)], False),
        ("min", lambda x: M.min(x, axis=0), lambda x: torch.amin(x, dim=0), [(3, 4)], False),
        ("logsumexp", lambda x: M.logsumexp(x, axis=1), lambda x: torch.logsumexp(x, dim=1),
         [(3, 4)], False),
        ("reshape_transpose", lambda x: M.transpose(M.reshape(x, (4, 6)), (1, 0)),
         lambda x: torch.reshape(x, (4, 6)).permute(1, 0), [(2, 3, 4)], False),
        ("concat_stack", lambda a, b: M.stack([M.concatenate([a, b], axis=1)[:, 2:6], b * 2 - a], 1),
         lambda a, b: torch.stack([torch.cat([a, b], 1)[:, 2:6], b * 2 - a], 1), [(3, 4), (3, 4)],
         False),
        ("slicing", lambda x: x[1:, ::2] * x[:-1, 1::2], lambda x: x[1:, ::2] * x[:-1, 1::2],
         [(4, 6)], False),
        ("take", lambda x: M.take(x, np.array([2, 0, 2]), axis=1),
         lambda x: torch.index_select(x, 1, torch.tensor([2, 0, 2])), [(3, 4)], False),
        ("expand_squeeze", lambda x: M.squeeze(M.expand_dims(x, 1), 1) * 3,
         lambda x: x.unsqueeze(1).squeeze(1) * 3, [(3, 4)], False),
    ]


def test_math_gradients_match_torch_autograd():
    torch = pytest.importorskip("torch")
    for i, (name, f, tf, shapes, pos) in enumerate(_cases(torch)):
        xs = [_r(s, 100 + 7 * i + j, pos) for j, s in enumerate(shapes)]
        y = np.asarray(f(*xs))
        up = _r(y.shape, 999 + i)
        vs = [fg.Variable(x) for x in xs]
        with fg.GradientTape() as tape:
            out = f(*vs)
            loss = M.sum(out * up)
        gs = tape.gradient(loss, vs)
        ts = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs]
        ty = tf(*ts)
        (ty * torch.tensor(up)).sum().backward()
        np.testing.assert_allclose(np.asarray(out), ty.detach().numpy(), rtol=1e-8, atol=1e-10,
                                   err_msg=name)
        for g, t in zip(gs, ts):
            np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-7, atol=1e-9, err_msg=name)


def test_traced_layer_gradient_matches_torch():
    torch = pytest.importorskip("torch")

    class Gated(fg.layers.Layer):
        def build(self, s):
            self.w = self.add_weight(shape=(s[-1], 4), initializer="glorot_uniform", name="w")
            self.v = self.add_weight(shape=(s[-1], 4), initializer="glorot_uniform", name="v")

        def call(self, x):
            return M.tanh(x @ self.w) * M.sigmoid(x @ self.v)

    x = _r((5, 3), 1).astype(np.float32)
    layer = Gated()
    with fg.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = M.sum(M.square(y))
    gx, gw, gv = tape.gradient(loss, [x] + layer.trainable_weights)
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tw = torch.tensor(layer.w.numpy(), dtype=torch.float64, requires_grad=True)
    tv = torch.tensor(layer.v.numpy(), dtype=torch.float64, requires_grad=True)
    ty = torch.tanh(tx @ tw) * torch.sigmoid(tx @ tv)
    (ty ** 2).sum().backward()
    for a, b in ((gx, tx), (gw, tw), (gv, tv)):
        np.testing.assert_allclose(a, b.grad.numpy(), rtol=2e-4, atol=1e-5)
