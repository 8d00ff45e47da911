"""A small Transformer learns to reverse (or sort) short digit sequences.

Built with the functional API from fastgrad's layers: a token projection
(Dense on one-hot digits) plus a learned PositionEmbedding, N encoder blocks
written here in pre-norm or post-norm form from MultiHeadAttention,
LayerNormalization, Dense and Add, and a per-token Dense(10) head. The loss is
a per-token softmax cross-entropy (a small Loss subclass below: mean over all
tokens).

    python examples/transformer_reverse.py                  # reverse, pre-norm
    python examples/transformer_reverse.py --task sort --norm post

Prints the token accuracy on held-out sequences (>= 0.99 expected).

Dense and LayerNormalization act on the last axis of (batch, time, features)
inputs as in Keras (issue 10, branch rnn). On a tree where they take only
per-sample vectors, per-token stand-ins built on the same ops
(TokenDense / TokenLayerNorm below) are used instead.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import fastgrad as fg
from fastgrad.layers import Layer, ParamSpec

L = fg.layers
DIGITS = 10


# ---------------------------------------------------------------- data
def make_data(n, length, task, seed):
    r = np.random.default_rng(seed)
    x = r.integers(0, DIGITS, (n, length))
    y = x[:, ::-1] if task == "reverse" else np.sort(x, axis=1)
    eye = np.eye(DIGITS, dtype=np.float32)
    return eye[x], eye[y], y


# ---------------------------------------------------------------- the loss
class TokenCrossEntropy(fg.losses.Loss):
    """Softmax cross-entropy on logits over the last axis, averaged over every
    (sample, position): the per-token loss of a sequence-to-sequence model."""

    def __init__(self):
        super().__init__(name="token_crossentropy")

    def compute(self, ops, out, target, sample_weight, grad_out, logits):
        c = out.shape[-1]
        loss, _ = ops.softmax_crossentropy(out.reshape(-1, c), target.reshape(-1, c), None,
                                           grad_out.reshape(-1, c))
        return loss, grad_out


# ---------------------------------------------------------------- per-token stand-ins
def _rank3_ok():
    """Do Dense and LayerNormalization act on the last axis of rank-3 input here?"""
    try:
        d = L.Dense(2)
        d.build((3, 4))
        n = L.LayerNormalization()
        n.build((3, 4))
        return [s.shape for s in n.param_specs()] == [(4,), (4,)]
    except (ValueError, TypeError):
        return False


class TokenDense(Layer):
    """Dense on the last axis of (batch, time, features): one GEMM on the
    (batch * time, features) view (a stand-in when Dense takes vectors only)."""

    def __init__(self, units, activation=None, name=None, **kw):
        super().__init__(name=name, **kw)
        self.units, self.act = int(units), activation or "linear"

    def compute_output_shape(self, s):
        return tuple(s[:-1]) + (self.units,)

    def param_specs(self):
        return [ParamSpec("kernel", (self.input_shape[-1], self.units),
                          fg.initializers.get("glorot_uniform")),
                ParamSpec("bias", (self.units,), fg.initializers.get("zeros"))]

    def forward(self, x, training, ws):
        x2 = x.reshape(-1, x.shape[-1])
        y = ws.buf("y", x.shape[:-1] + (self.units,), x.dtype)
        z = ws.buf("z", y.shape, x.dtype) if self.act == "gelu" and training else None
        self.ops.dense_forward(x2, self.params["kernel"], self.params["bias"], self.act,
                               y.reshape(-1, self.units), None if z is None else z.reshape(-1, self.units))
        ws.x2, ws.y, ws.z = x2, y, z
        return y

    def backward(self, dy, ws, need_dx=True):
        dx = ws.buf("dx", ws.x2.shape, dy.dtype) if need_dx else None
        self.ops.dense_backward(dy.reshape(-1, self.units), ws.x2, self.params["kernel"],
                                ws.y.reshape(-1, self.units), self.act,
                                None if ws.z is None else ws.z.reshape(-1, self.units), dx,
                                self.grads["kernel"], self.grads["bias"], need_dx)
        return None if dx is None else dx.reshape(dy.shape[:-1] + (ws.x2.shape[1],))


class TokenLayerNorm(Layer):
    """LayerNormalization over the last axis (epsilon 1e-3, Keras's default)."""

    def __init__(self, epsilon=1e-3, name=None, **kw):
        super().__init__(name=name, **kw)
        self.eps = float(epsilon)

    def param_specs(self):
        d = self.input_shape[-1]
        return [ParamSpec("gamma", (d,), fg.initializers.get("ones")),
                ParamSpec("beta", (d,), fg.initializers.get("zeros"))]

    def forward(self, x, training, ws):
        d = x.shape[-1]
        x2 = x.reshape(-1, d)
        y = ws.buf("y", x.shape, x.dtype)
        mean = ws.buf("mean", (x2.shape[0],), x.dtype)
        rstd = ws.buf("rstd", (x2.shape[0],), x.dtype)
        self.ops.layernorm_forward(x2, self.params["gamma"], self.params["beta"], self.eps,
                                   y.reshape(-1, d), mean, rstd)
        ws.x2, ws.mean, ws.rstd = x2, mean, rstd
        return y

    def backward(self, dy, ws, need_dx=True):
        d = dy.shape[-1]
        dx = ws.buf("dx", dy.shape, dy.dtype)
        self.ops.layernorm_backward(dy.reshape(-1, d), ws.x2, self.params["gamma"], ws.mean,
                                    ws.rstd, dx.reshape(-1, d), self.grads["gamma"],
                                    self.grads["beta"])
        return dx if need_dx else None


# ---------------------------------------------------------------- the model
def encoder_block(h, d_model, heads, ff, norm, dropout, i, dense, layernorm):
    """One Transformer encoder block, pre-norm (x + f(LN(x))) or post-norm
    (LN(x + f(x)))."""
    mha = L.MultiHeadAttention(heads, d_model // heads, dropout=dropout, name=f"mha{i}")
    if norm == "pre":
        a = layernorm(name=f"ln{i}a")(h)
        h = L.Add(name=f"res{i}a")([h, mha(a, a)])
        f = layernorm(name=f"ln{i}b")(h)
        f = dense(d_model, name=f"ff{i}b")(dense(ff, activation="gelu", name=f"ff{i}a")(f))
        return L.Add(name=f"res{i}b")([h, f])
    h = layernorm(name=f"ln{i}a")(L.Add(name=f"res{i}a")([h, mha(h, h)]))
    f = dense(d_model, name=f"ff{i}b")(dense(ff, activation="gelu", name=f"ff{i}a")(h))
    return layernorm(name=f"ln{i}b")(L.Add(name=f"res{i}b")([h, f]))


def build_model(length, d_model=64, heads=4, ff=128, blocks=2, norm="pre", dropout=0.0):
    if _rank3_ok():
        dense, layernorm = L.Dense, L.LayerNormalization
    else:
        dense, layernorm = TokenDense, TokenLayerNorm
    x = fg.Input((length, DIGITS))
    h = dense(d_model, name="embed")(x)
    h = L.Add(name="add_pos")([h, L.PositionEmbedding(length, name="pos")(h)])
    for i in range(blocks):
        h = encoder_block(h, d_model, heads, ff, norm, dropout, i, dense, layernorm)
    if norm == "pre":
        h = layernorm(name="ln_final")(h)
    out = dense(DIGITS, name="head")(h)           # per-token logits
    return fg.Model(x, out)


def token_accuracy(model, x, labels):
    pred = model.predict(x, batch_size=256, verbose=0)
    return float(np.mean(pred.argmax(-1) == labels))


def train(task="reverse", norm="pre", length=8, n_train=6000, epochs=25, batch=64, lr=3e-3,
          seed=0, verbose=1, d_model=64, blocks=2):
    fg.utils.set_random_seed(seed)
    xtr, ytr, _ = make_data(n_train, length, task, seed)
    xte, _, lte = make_data(1000, length, task, seed + 1)
    model = build_model(length, d_model=d_model, norm=norm, blocks=blocks)
    steps = epochs * (n_train // batch)
    sched = fg.optimizers.schedules.CosineDecay(lr, steps)
    model.compile(fg.optimizers.Adam(sched), TokenCrossEntropy())
    t0 = time.perf_counter()
    model.fit(xtr, ytr, epochs=epochs, batch_size=batch, verbose=verbose)
    secs = time.perf_counter() - t0
    return model, token_accuracy(model, xte, lte), secs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", choices=("reverse", "sort"), default="reverse")
    ap.add_argument("--norm", choices=("pre", "post"), default="pre")
    ap.add_argument("--length", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=25)
    ap.add_argument("--n-train", type=int, default=6000)
    args = ap.parse_args()
    _, acc, secs = train(args.task, args.norm, args.length, args.n_train, args.epochs)
    print(f"{args.task} ({args.norm}-norm, length {args.length}): held-out token accuracy "
          f"{acc:.4f} after {args.epochs} epochs ({secs:.1f} s)")


if __name__ == "__main__":
    main()
