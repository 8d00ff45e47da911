"""fg.testing — tools for people who write layers, losses and fg.math code.

``check_gradients(target, inputs)`` compares the gradient fastgrad derives
(or a layer's hand-written ``backward``) with central finite differences and
returns the worst relative error (docs/autodiff.md, "Checking gradients").
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["check_gradients"]


def _rel_err(a, b):
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if a.size == 0:
        return 0.0
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))), 1e-6)
    return float(np.max(np.abs(a - b))) / scale


def _pick(n, max_elements, rng):
    if max_elements is None or n <= max_elements:
        return np.arange(n)
    return np.sort(rng.choice(n, size=max_elements, replace=False))


def check_gradients(target: Any, inputs: Any, eps: float | None = None, seed: int = 0,
                    max_elements: int | None = None, training: bool = False,
                    return_details: bool = False) -> float | tuple[float, dict[str, float]]:
    """Worst relative error between derived and finite-difference gradients.

    The scalar checked is ``sum(output * r)`` with a fixed random ``r``; the
    gradients are with respect to every input and, for layers and models,
    every trainable weight.

    Precision: functions and traced layers made of ``fastgrad.math``
    operations only run in float64 (eps 1e-6; errors ~1e-8 for a correct
    gradient). Layers with float32 kernels (built-in layers, traced layers
    calling them) and models run in float32 with eps 1e-2 scaled to each value
    (errors ~1e-3; use a tolerance around 1e-2).

    Parameters
    ----------
    target : callable, Layer or Model
        A function of arrays written with ``fastgrad.math`` (``fn(*inputs)``),
        a layer (traced ``call`` or hand-written ``forward`` / ``backward``) or
        a model.
    inputs : array_like or list of array_like
        One array, or one per argument of the function (a list for a
        multi-input layer).
    eps : float or None, default None
        Finite-difference step (None: 1e-6 in float64, 1e-2 relative in float32).
    seed : int, default 0
        Seed of ``r`` and of the sampled entries.
    max_elements : int or None, default None
        Check that many sampled entries of each array (None: all for float64
        checks, 64 for float32 ones).
    training : bool, default False
        Run layers and models in training mode.
    return_details : bool, default False
        Also return the error of each array.

    Returns
    -------
    float or tuple of (float, dict)
        The worst relative error; with `return_details`, ``(worst, {array name: error})``.

    Raises
    ------
    TypeError
        If `target` is not a function, layer or model.

    Examples
    --------
    >>> import numpy as np
    >>> import fastgrad as fg
    >>> err = fg.testing.check_gradients(lambda x: fg.math.tanh(x) * x, np.linspace(-1, 1, 5))
    >>> err < 1e-6
    True
    """
    from .layers.base import Layer
    from .models import Model
    rng = np.random.default_rng(seed)
    single = not isinstance(inputs, (list, tuple))
    xs = [inputs] if single else list(inputs)
    if isinstance(target, Model):
        worst, det = _check_model(target, xs[0] if len(xs) == 1 else xs, eps, rng,
                                  max_elements, training)
    elif isinstance(target, Layer):
        arg = xs[0] if single or not target._multi_input else xs
        if target._fg_traced():
            worst, det = _check_traced64(target, arg, eps, rng, max_elements, training)
            if worst is None:
                worst, det = _check_layer32(target, arg, eps, rng, max_elements, training)
        else:
            worst, det = _check_layer32(target, arg, eps, rng, max_elements, training)
    elif callable(target):
        worst, det = _check_fn(target, xs, eps, rng, max_elements)
    else:
        raise TypeError(f"check_gradients: expected a function, a Layer or a Model, got "
                        f"{type(target).__name__}")
    return (worst, det) if return_details else worst


# ---------------------------------------------------------------------------- functions
def _check_fn(fn, xs, eps, rng, max_elements):
    from .autodiff.core import GradientTape
    eps = 1e-6 if eps is None else eps
    xs = [np.array(x, dtype=np.float64) if np.asarray(x).dtype.kind in "fiu" else np.asarray(x)
          for x in xs]
    diff = [x.dtype.kind == "f" for x in xs]
    y0 = np.asarray(fn(*xs))
    r = rng.normal(size=y0.shape)

    def L(args):
        return float(np.sum(np.asarray(fn(*args), dtype=np.float64) * r))
    from .autodiff.core import Tensor
    ts = [x.view(Tensor) if d else x for x, d in zip(xs, diff)]
    with GradientTape() as tape:
        for t, d in zip(ts, diff):
            if d:
                tape.watch(t)
        y = fn(*ts)
        from . import math as M
        loss = M.sum(M.multiply(y, r))
    srcs = [t for t, d in zip(ts, diff) if d]
    grads = tape.gradient(loss, srcs)
    det = {}
    gi = 0
    for i, (x, d) in enumerate(zip(xs, diff)):
        if not d:
            continue
        g = grads[gi]
        gi += 1
        if g is None:
            g = np.zeros_like(x)
        idx = _pick(x.size, max_elements, rng)
        fd = np.empty(idx.size)
        flat = x.reshape(-1)
        for j, k in enumerate(idx):
            old = flat[k]
            flat[k] = old + eps
            lp = L(xs)
            flat[k] = old - eps
            lm = L(xs)
            flat[k] = old
            fd[j] = (lp - lm) / (2 * eps)
        det[f"input {i}"] = _rel_err(np.asarray(g).reshape(-1)[idx], fd)
    return (max(det.values()) if det else 0.0), det


# ---------------------------------------------------------------------------- traced, float64
def _check_traced64(layer, x, eps, rng, max_elements, training):
    """Traced programs made only of fg.math nodes, replayed in float64."""
    from .autodiff import traced
    from .engine.workspace import Workspace
    eps = 1e-6 if eps is None else eps
    xs = [np.asarray(a, dtype=np.float32) for a in (x if layer._multi_input else [x])]
    traced.ensure_built(layer, xs)
    prog = traced._program_for(layer, xs, training)
    if any(n.kind == "layer" for n in prog.nodes):
        return None, None
    x64 = [a.astype(np.float64) for a in xs]
    wvars = [prog.slot_ref[s] for s in prog.weight_slots if prog.slot_ref[s].trainable]
    w64 = {v._key: np.array(v.value, dtype=np.float64) for v in wvars}
    ws = Workspace()
    vals = traced.run_forward(prog, x64, training, ws, weights=w64)
    r = rng.normal(size=np.shape(vals[prog.out]))

    def L():
        v = traced.run_forward(prog, x64, training, Workspace(), weights=w64)
        return float(np.sum(np.asarray(v[prog.out], dtype=np.float64) * r))
    grads = traced.run_backward(prog, vals, r.copy(), ws)
    arrays = [(f"input {i}", a, grads[s]) for i, (a, s) in enumerate(zip(x64, prog.input_slots))]
    for s in prog.weight_slots:
        v = prog.slot_ref[s]
        if v.trainable:
            arrays.append((v.name, w64[v._key], grads[s]))
    det = {}
    for name, a, g in arrays:
        g = np.zeros_like(a) if g is None else np.broadcast_to(g, a.shape)
        idx = _pick(a.size, max_elements, rng)
        flat = a.reshape(-1)
        fd = np.empty(idx.size)
        for j, k in enumerate(idx):
            old = flat[k]
            flat[k] = old + eps
            lp = L()
            flat[k] = old - eps
            lm = L()
            flat[k] = old
            fd[j] = (lp - lm) / (2 * eps)
        det[name] = _rel_err(np.asarray(g).reshape(-1)[idx], fd)
    return max(det.values()), det


# ---------------------------------------------------------------------------- float32 layers / models
def _fd32(arrays, L, eps, rng, max_elements, det):
    for name, a, g in arrays:
        idx = _pick(a.size, 64 if max_elements is None else max_elements, rng)
        flat = a.reshape(-1)
        fd = np.empty(idx.size)
        for j, k in enumerate(idx):
            old = float(flat[k])
            h = (1e-2 if eps is None else eps) * max(1.0, abs(old))
            flat[k] = old + h
            hp = float(flat[k]) - old
            lp = L()
            flat[k] = old - h
            hm = old - float(flat[k])
            lm = L()
            flat[k] = old
            fd[j] = (lp - lm) / (hp + hm)
        g = np.zeros(a.shape) if g is None else np.asarray(g)
        det[name] = _rel_err(g.reshape(-1)[idx], fd)


def _check_layer32(layer, x, eps, rng, max_elements, training):
    from .autodiff.core import GradientTape
    from .autodiff import traced
    from . import math as M
    multi = layer._multi_input
    xs = [np.array(a, dtype=np.float32) for a in (x if multi else [x])]
    traced.ensure_built(layer, xs)
    arg = xs if multi else xs[0]
    y0 = np.asarray(layer(arg, training=training))
    r = rng.normal(size=y0.shape)
    variables = layer.trainable_weights

    def L():
        return float(np.sum(np.asarray(layer(arg, training=training), dtype=np.float64) * r))
    with GradientTape() as tape:
        for a in xs:
            tape.watch(a)
        y = layer(arg, training=training)
        loss = M.sum(M.multiply(y, r.astype(np.float32)))
    grads = tape.gradient(loss, xs + list(variables))
    arrays = [(f"input {i}", a, g) for i, (a, g) in enumerate(zip(xs, grads))]
    arrays += [(v.name, v.value, g) for v, g in zip(variables, grads[len(xs):])]
    det = {}
    _fd32(arrays, L, eps, rng, max_elements, det)
    return max(det.values()), det


def _check_model(model, x, eps, rng, max_elements, training):
    from .autodiff.core import GradientTape
    from . import math as M
    xs = np.array(x, dtype=np.float32)
    y0 = np.asarray(model(xs, training=training))
    r = rng.normal(size=y0.shape)

    def L():
        return float(np.sum(np.asarray(model(xs, training=training), dtype=np.float64) * r))
    variables = model.trainable_weights
    with GradientTape() as tape:
        y = model(xs, training=training)
        loss = M.sum(M.multiply(y, r.astype(np.float32)))
    grads = tape.gradient(loss, variables)
    det = {}
    _fd32([(v.name, v.value, g) for v, g in zip(variables, grads)], L, eps, rng, max_elements,
          det)
    return max(det.values()), det
