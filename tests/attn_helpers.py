"""Helpers of the attention tests: run a layer in float64 (its weights swapped
for float64 copies) forward and backward, outside any model."""
import numpy as np

from fastgrad.engine.workspace import Workspace


def bind64(layer, seed=0, scale=0.5):
    """Give a built layer float64 weights (random) and float64 gradient arrays."""
    r = np.random.default_rng(seed)
    params = {s.name: r.standard_normal(s.shape) * scale for s in layer.param_specs()}
    grads = {s.name: np.zeros(s.shape) for s in layer.param_specs()}
    layer.bind(params, grads, {})
    return params, grads


def run64(layer, xs, dy=None, training=False, need_dx=True):
    ws = Workspace()
    y = np.array(layer.forward(xs, training, ws), copy=True)
    if dy is None:
        return y, None
    dxs = layer.backward(dy.copy(), ws, need_dx)
    return y, [None if d is None else np.array(d, copy=True) for d in dxs] \
        if isinstance(dxs, list) else np.array(dxs, copy=True)
