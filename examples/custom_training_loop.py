"""Custom layers, a custom loss and a GradientTape training loop (docs/autodiff.md).

    PYTHONPATH=src python examples/custom_training_loop.py
"""
import numpy as np

import fastgrad as fg
from fastgrad import math as M


class Linear(fg.layers.Layer):
    """A dense layer from add_weight and matmul; its gradient is derived."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units),
                                 initializer="glorot_uniform", name="kernel")
        self.b = self.add_weight(shape=(self.units,), initializer="zeros", name="bias")

    def call(self, x):
        return M.matmul(x, self.w) + self.b


class ResidualMLP(fg.Model):
    def __init__(self, hidden=64, classes=10, **kwargs):
        super().__init__(**kwargs)
        self.inp = Linear(hidden)
        self.block = fg.layers.Dense(hidden, activation="gelu")
        self.out = fg.layers.Dense(classes)

    def call(self, x, training=None):
        h = M.relu(self.inp(x))
        return self.out(h + self.block(h))


def huber(y_true, y_pred, delta=1.0):
    err = M.abs(y_true - y_pred)
    quad = M.minimum(err, delta)
    return M.mean(0.5 * quad * quad + delta * (err - quad), axis=-1)


def main():
    r = np.random.default_rng(0)
    x = r.normal(size=(2048, 32)).astype(np.float32)
    y = np.argmax(x @ r.normal(size=(32, 10)), axis=1)
    y1h = np.eye(10, dtype=np.float32)[y]

    model = ResidualMLP()
    opt = fg.optimizers.Adam(1e-3)
    print("gradient check (worst relative error):",
          fg.testing.check_gradients(Linear(4), x[:8]))
    for epoch in range(3):
        perm = r.permutation(len(x))
        for s in range(0, len(x), 64):
            idx = perm[s:s + 64]
            with fg.GradientTape() as tape:
                logits = model(x[idx], training=True)
                loss = M.mean(huber(y1h[idx], M.softmax(logits)))
            grads = tape.gradient(loss, model.trainable_weights)
            opt.apply_gradients(zip(grads, model.trainable_weights))
        acc = np.mean(np.argmax(model.predict(x), axis=1) == y)
        print(f"epoch {epoch + 1}: loss {float(loss):.4f}  accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
