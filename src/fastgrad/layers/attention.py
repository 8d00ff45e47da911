"""Attention layers (Keras 3 keras.layers.MultiHeadAttention, Attention,
AdditiveAttention) and position encodings (keras_hub's PositionEmbedding and
SinePositionEncoding).

The attention layers are multi-input layers of the graph (``_multi_input``):
a call ``mha(query, value, key=None, query_mask=None, value_mask=None,
key_mask=None, attention_mask=None, use_causal_mask=False, ...)`` becomes one
node whose inputs are, in this order, query, value, then key / query_mask /
value_mask / key_mask / attention_mask when given. Which of them a layer takes
is fixed by its first call (``self._slots``); a shared layer must be called the
same way every time. Masks are ordinary tensors (1 = keep, 0 = masked; float or
int), get no gradient, and are combined as Keras combines them:
query_mask (B, Tq) masks query rows, value_mask / key_mask (B, Tv) mask keys,
attention_mask (B, Tq, Tv) masks entries, use_causal_mask keeps j <= i.
A query row with no key left gets zero weights (Keras 3's Softmax does the
same by multiplying the weights by the mask).

Compute goes through the ops of backend/numpy_attention.py (and their C
twins): projections are Dense GEMMs on (rows, features) views, heads are
transposed once into (B, H, T, d), then ``attention_forward`` (weights kept
for the backward and for return_attention_scores) or, for long sequences
without dropout / explicit mask, ``flash_attention_forward`` whose memory is
linear in the sequence length.
"""
from __future__ import annotations

from typing import Any

import math
import numbers

import numpy as np

from .. import initializers as _initializers
from .. import regularizers as _regularizers
from .base import Layer, ParamSpec

__all__ = ["MultiHeadAttention", "Attention", "AdditiveAttention", "PositionEmbedding",
           "SinePositionEncoding"]

_MASK_SLOTS = ("query_mask", "value_mask", "key_mask", "attention_mask")
#: MultiHeadAttention takes the blocked (flash) path from this many keys on
#: (when no dropout is active, no attention_mask and no scores are returned)
FLASH_MIN_KEYS = 512


def _pos_int(v, what):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
        raise ValueError(f"{what} must be a positive integer, got {v!r}")
    return int(v)


def _rate(v, what):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0.0 <= float(v) < 1.0:
        raise ValueError(f"{what} must be a number in [0, 1), got {v!r}")
    return float(v)


class _AttentionBase(Layer):
    """The call convention shared by the attention layers: named inputs to a
    list of graph inputs (self._slots), masks as inputs, the dropout stream."""

    _multi_input = True
    _key_allowed = True
    _graph_scores_ok = False     # return_attention_scores in a graph (MultiHeadAttention)
    _graph_scores = False
    _last_scores: Any            # the eager call's attention weights (return_attention_scores)
    _split_scores: Any           # MultiHeadAttention: (output, scores) of a packed graph output

    def __init__(self, dropout: Any = 0.0, seed: Any = None, name: str | None = None,
                 call_inputs: Any = None, use_causal_mask: Any = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.dropout = _rate(dropout, f"{self._what()}: dropout")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                                 or not 0 <= int(seed) < 2**63):
            raise ValueError(f"{self._what()}: seed must be None or an integer in [0, 2**63), "
                             f"got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self._stream_seed = self.seed
        self._offset = 0
        self._slots: Any = None     # names of the inputs, fixed by the first call
        self._causal: Any = None    # use_causal_mask, fixed by the first call
        if call_inputs is not None:  # a layer rebuilt from a saved graph (get_config)
            names = tuple(call_inputs)
            allowed = ("query", "value", "key") + _MASK_SLOTS
            if names[:2] != ("query", "value") or any(n not in allowed for n in names):
                raise ValueError(f"{self._what()}: invalid call_inputs {call_inputs!r}")
            self._slots = names
            self._causal = bool(use_causal_mask)
        self._from_config = call_inputs is not None

    def _replay(self, inputs):
        """A list of all the node's inputs (a saved graph rebuilt, clone_model): the
        call convention of the layer's config."""
        if (self._slots is not None and isinstance(inputs, (list, tuple))
                and len(inputs) == len(self._slots)):
            return list(inputs)
        return None

    def _what(self):
        return f"{type(self).__name__} layer {self.name!r}"

    # -------------------------------------------------------------- rng stream
    def reset_rng(self, seed):
        self._stream_seed = self.seed if self.seed is not None else int(seed)
        self._offset = 0

    def get_rng_state(self):
        return {"seed": self._stream_seed, "offset": self._offset}

    def set_rng_state(self, state):
        self._stream_seed = state.get("seed")
        self._offset = int(state.get("offset", 0))

    def _next_stream(self, n):
        if self._stream_seed is None:
            from .. import _config
            self._stream_seed = _config.next_seed()
        off = self._offset
        self._offset += int(n)
        return self._stream_seed, off

    # -------------------------------------------------------------- the call
    def _call_parts(self, query, value, key, masks, use_causal_mask):
        names: Any = ["query", "value"]
        parts = [query, value]
        if key is not None:
            if not self._key_allowed:
                raise ValueError(f"{self._what()} takes no key")
            names.append("key")
            parts.append(key)
        for n in _MASK_SLOTS:
            if masks.get(n) is not None:
                names.append(n)
                parts.append(masks[n])
        names = tuple(names)
        if self._slots is None or not self._inbound_nodes and not self.built:
            self._slots = names
            self._causal = bool(use_causal_mask)
        elif names != self._slots or bool(use_causal_mask) != self._causal:
            raise ValueError(f"{self._what()} was first called with inputs {self._slots} "
                             f"(use_causal_mask={self._causal}); now with {names} "
                             f"(use_causal_mask={bool(use_causal_mask)}): a shared attention "
                             "layer must be called the same way every time")
        return parts

    def _run_call(self, parts, training, return_attention_scores):
        from ..engine import graph as _graph
        if any(_graph.is_symbolic(p) for p in parts):
            want = bool(return_attention_scores)
            if not self._graph_scores_ok:
                if want:
                    raise NotImplementedError(
                        f"{self._what()}: return_attention_scores=True is only supported in "
                        "eager calls for this layer (MultiHeadAttention supports it in a graph)")
                return self._call_symbolic(parts)
            if self._from_config:
                want = want or self._graph_scores      # a saved graph replayed
            if self._inbound_nodes and want != self._graph_scores:
                raise ValueError(f"{self._what()} was first called with return_attention_scores="
                                 f"{self._graph_scores}; a shared attention layer must be "
                                 "called the same way every time")
            if not self._inbound_nodes and not self.built:
                self._graph_scores = want
            elif want != self._graph_scores:
                raise ValueError(f"{self._what()}: return_attention_scores={want} in a graph, but "
                                 f"the layer was built with {self._graph_scores}")
            out = self._call_symbolic(parts)
            if not self._graph_scores:
                return out
            return self._split_scores(out)
        self._want_scores = bool(return_attention_scores)
        try:
            y = Layer.__call__(self, list(parts), training=bool(training))
        finally:
            self._want_scores = False
        if getattr(self, "_graph_scores", False):
            y, scores = self._split_scores(y)
            if return_attention_scores:
                return y, scores
            return y
        if return_attention_scores:
            return y, self._last_scores
        return y

    def _check_batch(self, xs):
        """All inputs of one call share the batch size (eager calls can mix them up)."""
        sizes = [int(x.shape[0]) for x in xs]
        if len(set(sizes)) > 1:
            raise ValueError(f"{self._what()}: inputs {self._slots} have different batch sizes "
                             f"{sizes} (shapes {[tuple(x.shape) for x in xs]})")

    def _split(self, items):
        """Map the list of inputs (shapes or arrays) to a dict by slot name."""
        if self._slots is None:
            self._slots = ("query", "value") + (("key",) if len(items) > 2 else ())
            self._causal = bool(self._causal)
        if len(items) != len(self._slots):
            raise ValueError(f"{self._what()} expects inputs {self._slots}, got {len(items)}")
        return dict(zip(self._slots, items))

    def _mask_shapes_check(self, sh, Tq, Tv):
        want = {"query_mask": (Tq,), "value_mask": (Tv,), "key_mask": (Tv,),
                "attention_mask": (Tq, Tv)}
        for n in _MASK_SLOTS:
            if n in sh and tuple(sh[n]) != want[n]:
                raise ValueError(f"{self._what()}: {n} has per-sample shape {tuple(sh[n])}, "
                                 f"expected {want[n]} (query length {Tq}, value length {Tv})")

    def _masks(self, d, B, Tq, Tv, implicit=None):
        """(key_valid, query_valid, mask) as boolean arrays, from the mask inputs
        and the inputs' own masks (`implicit`: the mask mechanism's list, one
        entry per input, None where an input has none; see
        /work/notes/mask_contract.md): the query's mask masks query rows, the
        value's and the key's mask keys, as Keras's MultiHeadAttention /
        Attention combine them."""
        kv = None
        got = dict(d)
        if implicit is not None:
            for name, m in zip(self._slots, implicit):
                if m is None or name not in ("query", "value", "key"):
                    continue
                got[f"_{name}_implicit"] = np.asarray(m)
        for n in ("value_mask", "key_mask", "_value_implicit", "_key_implicit"):
            if n in got:
                m = got[n].reshape(B, Tv) != 0
                kv = m if kv is None else (kv & m)
        qv = None
        for n in ("query_mask", "_query_implicit"):
            if n in got:
                m = got[n].reshape(B, Tq) != 0
                qv = m if qv is None else (qv & m)
        am = d["attention_mask"].reshape(B, Tq, Tv) != 0 if "attention_mask" in d else None
        return kv, qv, am

    supports_masking = True

    def compute_mask(self, inputs, mask=None):
        """The output carries the query's mask (Keras)."""
        if mask is None:
            return None
        return mask[0] if isinstance(mask, (list, tuple)) else mask

    def get_config(self):
        cfg = super().get_config()
        cfg.update(dropout=self.dropout, seed=self.seed)
        if self._slots is not None:
            cfg.update(call_inputs=list(self._slots), use_causal_mask=bool(self._causal))
        return cfg


class MultiHeadAttention(_AttentionBase):
    """Multi-head attention layer, as Keras 3's ``MultiHeadAttention``.

    The query, key and value are projected to ``num_heads`` heads, attention
    is computed per head with the query scaled by ``1 / sqrt(key_dim)``, and
    the heads are projected back to the query's feature size (or
    ``output_shape``). The weights, in ``get_weights`` order, are the query
    kernel ``(dim_q, heads, key_dim)`` and bias ``(heads, key_dim)``, the key
    kernel and bias, the value kernel ``(dim_v, heads, value_dim)`` and bias
    ``(heads, value_dim)``, and the output kernel ``(heads, value_dim, out_dim)``
    and bias ``(out_dim,)``.

    Call it as ``mha(query, value, key=None, query_mask=None, value_mask=None,
    key_mask=None, attention_mask=None, return_attention_scores=False,
    training=None, use_causal_mask=False)``. Masks hold 1 to keep and 0 to
    mask: ``query_mask`` (batch, Tq), ``value_mask`` / ``key_mask`` (batch, Tv),
    ``attention_mask`` (batch, Tq, Tv); ``use_causal_mask`` keeps key ``j <= i``
    for query ``i``.

    Parameters
    ----------
    num_heads : int
        Number of attention heads.
    key_dim : int
        Size of each head for query and key.
    value_dim : int, optional
        Size of each head for value (default ``key_dim``).
    dropout : float, default 0.0
        Dropout rate on the attention weights, in ``[0, 1)``.
    use_bias : bool, default True
        Whether the projections have biases.
    output_shape : int, optional
        Size of the output's last axis (default: the query's).
    attention_axes : int or tuple of int, optional
        Axes attention runs over (default: all axes but batch, heads and
        features).
    kernel_initializer : str, dict or callable, default "glorot_uniform"
        Initializer of the kernels.
    bias_initializer : str, dict or callable, default "zeros"
        Initializer of the biases.
    kernel_regularizer : str, dict or Regularizer, optional
        Penalty on the kernels.
    bias_regularizer : str, dict or Regularizer, optional
        Penalty on the biases.
    activity_regularizer : None
        Not supported; must be None.
    kernel_constraint : None
        Not supported; must be None.
    bias_constraint : None
        Not supported; must be None.
    seed : int, optional
        Seed of the dropout stream.
    flash : bool, optional
        None (default) picks the blocked (flash) kernel, whose memory is
        linear in the sequence length, for long sequences without dropout,
        attention mask or returned scores; True or False forces the choice.
    name : str, optional
        Layer name.
    graph_scores : bool, default False
        Set by ``get_config`` when a symbolic call returned the attention
        scores.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``); ``call_inputs`` and ``use_causal_mask`` are written
        by ``get_config`` to rebuild the call convention of a saved graph.

    Raises
    ------
    ValueError
        For non-positive sizes, a dropout rate outside ``[0, 1)``, an invalid
        ``output_shape`` or ``flash``, constraints or an activity regularizer.

    Examples
    --------
    >>> import numpy as np
    >>> import fastgrad as fg
    >>> mha = fg.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    >>> q = np.ones((3, 5, 8), dtype=np.float32)
    >>> v = np.ones((3, 7, 8), dtype=np.float32)
    >>> mha(q, v).shape
    (3, 5, 8)
    >>> out, scores = mha(q, v, return_attention_scores=True)
    >>> scores.shape
    (3, 2, 5, 7)
    """

    _graph_scores_ok = True

    def __init__(self, num_heads: Any, key_dim: Any, value_dim: Any = None, dropout: Any = 0.0,
                 use_bias: bool = True, output_shape: Any = None, attention_axes: Any = None,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 kernel_regularizer: Any = None, bias_regularizer: Any = None,
                 activity_regularizer: Any = None, kernel_constraint: Any = None,
                 bias_constraint: Any = None, seed: Any = None, flash: Any = None,
                 name: str | None = None, graph_scores: bool = False, **kwargs: Any) -> None:
        super().__init__(dropout=dropout, seed=seed, name=name, **kwargs)
        self._graph_scores = bool(graph_scores)
        w = self._what()
        self.num_heads = _pos_int(num_heads, f"{w}: num_heads")
        self.key_dim = _pos_int(key_dim, f"{w}: key_dim")
        self.value_dim = self.key_dim if value_dim is None else _pos_int(value_dim, f"{w}: value_dim")
        self.use_bias = bool(use_bias)
        if output_shape is not None:
            os_ = (output_shape,) if isinstance(output_shape, (int, np.integer)) else tuple(output_shape)
            if len(os_) != 1:
                raise ValueError(f"{w}: output_shape must be one integer (the last axis), got "
                                 f"{output_shape!r}")
            output_shape = _pos_int(os_[0], f"{w}: output_shape")
        self._out_dim_arg = output_shape
        if attention_axes is not None:
            attention_axes = ((attention_axes,) if isinstance(attention_axes, (int, np.integer))
                              else tuple(int(a) for a in attention_axes))
        self.attention_axes = attention_axes
        if activity_regularizer is not None or kernel_constraint is not None \
                or bias_constraint is not None:
            raise ValueError(f"{w}: activity_regularizer and constraints are not supported")
        if flash not in (None, True, False):
            raise ValueError(f"{w}: flash must be None (automatic), True or False, got {flash!r}")
        self.flash = flash
        self.kernel_initializer = _initializers.get(kernel_initializer, f"{w}: kernel_initializer")
        self.bias_initializer = _initializers.get(bias_initializer, f"{w}: bias_initializer")
        self.kernel_regularizer = _regularizers.get(kernel_regularizer, f"{w}: kernel_regularizer")
        self.bias_regularizer = _regularizers.get(bias_regularizer, f"{w}: bias_regularizer")
        self._want_scores = False
        self._last_scores = None

    def __call__(self, query: Any, value: Any = None,  # type: ignore[override]
                 key: Any = None, query_mask: Any = None, value_mask: Any = None,
                 key_mask: Any = None, attention_mask: Any = None,
                 return_attention_scores: bool = False, training: bool | None = None,
                 use_causal_mask: bool = False) -> Any:
        """Apply multi-head attention.

        Parameters
        ----------
        query : tensor
            Query of shape (batch, Tq, dim_q); or a list ``[query, value]`` /
            ``[query, value, key]``.
        value : tensor, optional
            Value of shape (batch, Tv, dim_v).
        key : tensor, optional
            Key of shape (batch, Tv, dim_k) (default: value).
        query_mask : tensor, optional
            (batch, Tq) mask of the query rows (1 keep, 0 masked).
        value_mask : tensor, optional
            (batch, Tv) mask of the keys.
        key_mask : tensor, optional
            (batch, Tv) mask of the keys.
        attention_mask : tensor, optional
            (batch, Tq, Tv) mask of the score entries.
        return_attention_scores : bool, default False
            Also return the attention weights (batch, heads, Tq, Tv).
        training : bool, optional
            Training mode (dropout).
        use_causal_mask : bool, default False
            Let query ``i`` attend to keys ``j <= i`` only.

        Returns
        -------
        tensor or tuple of tensors
            The output (batch, Tq, out_dim), and the scores when asked for.

        Raises
        ------
        TypeError
            When ``value`` is missing.
        ValueError
            When the shapes do not fit.
        """
        if value is None:
            parts = self._replay(query)
            if parts is not None:
                return self._run_call(parts, training, return_attention_scores)
            if isinstance(query, (list, tuple)) and len(query) in (2, 3):   # graph replay / list call
                parts = list(query)
                return self._run_call(self._call_parts(parts[0], parts[1],
                                                       parts[2] if len(parts) > 2 else None,
                                                       {}, use_causal_mask),
                                      training, return_attention_scores)
            raise TypeError(f"{self._what()}: call as mha(query, value, key=None, ...); "
                            "value is missing")
        parts = self._call_parts(query, value, key,
                                 dict(query_mask=query_mask, value_mask=value_mask,
                                      key_mask=key_mask, attention_mask=attention_mask),
                                 use_causal_mask)
        return self._run_call(parts, training, return_attention_scores)

    # ------------------------------------------------------------------ shapes
    def compute_output_shape(self, input_shapes):
        sh = self._split([tuple(s) for s in input_shapes])
        q, v = sh["query"], sh["value"]
        k = sh.get("key", v)
        w = self._what()
        if len(q) < 2 or len(v) < 2 or len(k) < 2:
            raise ValueError(f"{w}: query, value and key need per-sample shape (time..., features); "
                             f"got query {q}, value {v}, key {k}")
        if len(q) != len(v) or len(k) != len(v):
            raise ValueError(f"{w}: query {q}, value {v} and key {k} must have the same rank")
        if k[:-1] != v[:-1]:
            raise ValueError(f"{w}: key {k} and value {v} must have the same time axes")
        if self.attention_axes is not None:
            rank = len(q) + 1
            axes = tuple(a % rank for a in self.attention_axes)
            if axes != tuple(range(1, rank - 1)):
                raise ValueError(f"{w}: attention_axes={self.attention_axes} is not supported for "
                                 f"inputs of rank {rank}; only attention over all axes between "
                                 f"the batch and the feature axis ({tuple(range(1, rank - 1))} "
                                 "or None)")
        self._mask_check_nd(sh, q[:-1], v[:-1])
        out = tuple(q[:-1]) + (self._out_dim_arg or q[-1],)
        if self._graph_scores:
            scores = (self.num_heads,) + tuple(q[:-1]) + tuple(v[:-1])
            return (int(np.prod(out)) + int(np.prod(scores)),)
        return out

    def _score_parts(self):
        """[(start, stop, shape, propagate_mask)] of the packed (output, scores) tensor."""
        out, scores = self._y_shape, self._scores_shape
        n = int(np.prod(out))
        return [(0, n, out, True), (n, n + int(np.prod(scores)), scores, False)]

    def _split_scores(self, packed):
        from ..engine import graph as _graph
        from .recurrent import _Outputs, _RnnPart
        from .base import _unique_name
        parts = self._score_parts()
        if _graph.is_symbolic(packed):
            names = ("output", "scores")
            return _Outputs([_RnnPart(a, b, shp, pm, name=_unique_name(f"{self.name}_{names[k]}"))(packed)
                             for k, (a, b, shp, pm) in enumerate(parts)], packed)
        res = []
        for a, b, shp, pm in parts:
            r = np.ascontiguousarray(packed[:, a:b].reshape((packed.shape[0],) + shp))
            if pm and getattr(packed, "_keras_mask", None) is not None:
                rm: Any = r.view(type(packed))
                rm._keras_mask = packed._keras_mask
                r = rm
            res.append(r)
        return tuple(res)

    def _mask_check_nd(self, sh, qt, vt):
        want = {"query_mask": tuple(qt), "value_mask": tuple(vt), "key_mask": tuple(vt),
                "attention_mask": tuple(qt) + tuple(vt)}
        for n in _MASK_SLOTS:
            if n in sh and tuple(sh[n]) != want[n]:
                raise ValueError(f"{self._what()}: {n} has per-sample shape {tuple(sh[n])}, "
                                 f"expected {want[n]}")

    def build(self, input_shapes):
        shapes = [tuple(int(d) for d in s) for s in input_shapes]
        out = self.compute_output_shape(shapes)
        sh = self._split(shapes)
        self.input_shape = shapes
        self.output_shape = tuple(out)
        self._y_shape = tuple(sh["query"][:-1]) + (self._out_dim_arg or sh["query"][-1],)
        self._scores_shape = ((self.num_heads,) + tuple(sh["query"][:-1])
                              + tuple(sh["value"][:-1]))
        self._dq = sh["query"][-1]
        self._dv_in = sh["value"][-1]
        self._dk_in = sh.get("key", sh["value"])[-1]
        self._dout = self._y_shape[-1]
        self.built = True
        return self.output_shape

    def param_specs(self):
        H, kd, vd = self.num_heads, self.key_dim, self.value_dim
        ki, bi, kr, br = (self.kernel_initializer, self.bias_initializer, self.kernel_regularizer,
                          self.bias_regularizer)
        specs = []
        for n, din, d in (("query", self._dq, kd), ("key", self._dk_in, kd),
                          ("value", self._dv_in, vd)):
            specs.append(ParamSpec(f"{n}_kernel", (din, H, d), ki, kr))
            if self.use_bias:
                specs.append(ParamSpec(f"{n}_bias", (H, d), bi, br))
        specs.append(ParamSpec("output_kernel", (H, vd, self._dout), ki, kr))
        if self.use_bias:
            specs.append(ParamSpec("output_bias", (self._dout,), bi, br))
        return specs

    # ------------------------------------------------------------------ helpers
    def _w2(self, name, rows):
        return self.params[name].reshape(rows, -1)

    def _g2(self, name, rows):
        return self.grads[name].reshape(rows, -1)

    def _b1(self, name):
        return self.params[name].reshape(-1) if self.use_bias else None

    def _gb1(self, name):
        return self.grads[name].reshape(-1) if self.use_bias else False

    # ------------------------------------------------------------------ compute
    def forward(self, xs, training, ws, mask=None):
        ops = self.ops
        d = self._split(xs)
        self._check_batch(xs)
        xq, xv = d["query"], d["value"]
        xk = d.get("key", xv)
        B = xq.shape[0]
        w = self._what()
        if xq.shape[1:] != tuple(self.input_shape[0]):
            raise ValueError(f"{w} was built for query shape {self.input_shape[0]}, got "
                             f"{xq.shape[1:]}")
        Tq = int(np.prod(xq.shape[1:-1]))
        Tv = int(np.prod(xv.shape[1:-1]))
        if Tq == 0 or Tv == 0:
            raise ValueError(f"{w}: sequences of length 0 (query {xq.shape}, value {xv.shape})")
        H, kd, vd = self.num_heads, self.key_dim, self.value_dim
        dt = xq.dtype
        q2, k2, v2 = (xq.reshape(B * Tq, -1), xk.reshape(B * Tv, -1), xv.reshape(B * Tv, -1))
        # projections (rows, H*d), then heads first: (B, H, T, d)
        pq = ops.dense_forward(q2, self._w2("query_kernel", self._dq), self._b1("query_bias"),
                               "linear", ws.buf("pq", (B * Tq, H * kd), dt))
        pk = ops.dense_forward(k2, self._w2("key_kernel", self._dk_in), self._b1("key_bias"),
                               "linear", ws.buf("pk", (B * Tv, H * kd), dt))
        pv = ops.dense_forward(v2, self._w2("value_kernel", self._dv_in), self._b1("value_bias"),
                               "linear", ws.buf("pv", (B * Tv, H * vd), dt))
        Q = ws.buf("Q", (B, H, Tq, kd), dt)
        K = ws.buf("K", (B, H, Tv, kd), dt)
        V = ws.buf("V", (B, H, Tv, vd), dt)
        np.copyto(Q, pq.reshape(B, Tq, H, kd).transpose(0, 2, 1, 3))
        np.copyto(K, pk.reshape(B, Tv, H, kd).transpose(0, 2, 1, 3))
        np.copyto(V, pv.reshape(B, Tv, H, vd).transpose(0, 2, 1, 3))
        kv, qv, am = self._masks(d, B, Tq, Tv, mask)
        causal = bool(self._causal)
        scale = 1.0 / math.sqrt(kd)
        drop = training and self.dropout > 0.0
        flash = self.flash
        if flash is None:
            flash = Tv >= FLASH_MIN_KEYS
        flash = flash and not drop and am is None and not self._want_scores \
            and not self._graph_scores
        O = ws.buf("O", (B, H, Tq, vd), dt)
        ws.flash = flash
        if flash:
            lse = ws.buf("lse", (B, H, Tq), dt)
            ops.flash_attention_forward(Q, K, V, O, lse, scale, kv, qv, causal)
            ws.lse = lse
        else:
            P = ws.buf("P", (B, H, Tq, Tv), dt)
            dropped = keep = None
            seed = off = 0
            if drop:
                dropped = ws.buf("Pd", P.shape, dt)
                keep = ws.buf("keep", P.shape, np.uint8)
                seed, off = self._next_stream(P.size)
            ops.attention_forward(Q, K, V, O, P, scale, kv, qv, am, causal,
                                  self.dropout if drop else 0.0, seed, off, dropped, keep)
            ws.P, ws.Pd, ws.keep = P, dropped, keep
            if self._want_scores:
                self._last_scores = np.array(P.reshape((B, H) + tuple(xq.shape[1:-1])
                                                       + tuple(xv.shape[1:-1])), copy=True)
        Oc = ws.buf("Oc", (B, Tq, H, vd), dt)
        np.copyto(Oc, O.transpose(0, 2, 1, 3))
        y = ws.buf("y", (B,) + tuple(self._y_shape), dt)
        ops.dense_forward(Oc.reshape(B * Tq, H * vd), self._w2("output_kernel", H * vd),
                          self._b1("output_bias"), "linear", y.reshape(B * Tq, self._dout))
        ws.d, ws.dims = d, (B, Tq, Tv)
        ws.q2, ws.k2, ws.v2 = q2, k2, v2
        ws.Q, ws.K, ws.V, ws.O, ws.Oc, ws.y = Q, K, V, O, Oc, y
        ws.masks = (kv, qv, am, causal, scale, drop)
        if self._graph_scores:     # packed (output, scores): the scores are the softmax
            ny = B and y.size // B  # weights before dropout (Keras)
            packed = ws.buf("packed", (B, ny + ws.P.size // B), dt)
            packed[:, :ny] = y.reshape(B, ny)
            packed[:, ny:] = ws.P.reshape(B, -1)
            return packed
        return y

    def backward(self, dy, ws, need_dx=True):
        ops = self.ops
        B, Tq, Tv = ws.dims
        H, kd, vd = self.num_heads, self.key_dim, self.value_dim
        dt = dy.dtype
        kv, qv, am, causal, scale, drop = ws.masks
        dS = None
        if self._graph_scores:      # packed (output, scores) gradient
            ny = ws.y.size // B
            dS = dy[:, ny:]
            dy = np.ascontiguousarray(dy[:, :ny])
            if not dS.any():
                dS = None
            else:
                dS = np.ascontiguousarray(dS).reshape(ws.P.shape)
        dOc = ws.buf("dOc", (B * Tq, H * vd), dt)
        ops.dense_backward(dy.reshape(B * Tq, self._dout), ws.Oc.reshape(B * Tq, H * vd),
                           self._w2("output_kernel", H * vd), None, "linear", None, dOc,
                           self._g2("output_kernel", H * vd), self._gb1("output_bias"), True)
        dO = ws.buf("dO", (B, H, Tq, vd), dt)
        np.copyto(dO, dOc.reshape(B, Tq, H, vd).transpose(0, 2, 1, 3))
        dQ = ws.buf("dQ", ws.Q.shape, dt)
        dK = ws.buf("dK", ws.K.shape, dt)
        dV = ws.buf("dV", ws.V.shape, dt)
        if ws.flash:
            ops.flash_attention_backward(dO, ws.Q, ws.K, ws.V, ws.O, ws.lse, scale, kv, qv, causal,
                                         dQ, dK, dV)
        elif dS is not None:
            # a loss on the returned scores too: attention_backward's steps with the
            # scores' gradient added to the weights' gradient before the softmax backward
            G = B * H
            P = ws.P
            pd = ws.Pd if drop else P
            dp = ws.buf("dP", P.shape, dt)
            ops.bmm(pd.reshape(G, Tq, Tv), dO.reshape(G, Tq, vd), out=dV.reshape(G, Tv, vd),
                    trans_a=True)
            ops.bmm(dO.reshape(G, Tq, vd), ws.V.reshape(G, Tv, vd), out=dp.reshape(G, Tq, Tv),
                    trans_b=True)
            if drop:
                ops.backprop_dropout(dp, ws.keep, self.dropout, dp)
            dp += dS
            ops.attention_softmax_backward(dp, P, dp, scale)
            ops.bmm(dp.reshape(G, Tq, Tv), ws.K.reshape(G, Tv, kd), out=dQ.reshape(G, Tq, kd))
            ops.bmm(dp.reshape(G, Tq, Tv), ws.Q.reshape(G, Tq, kd), out=dK.reshape(G, Tv, kd),
                    trans_a=True)
        else:
            ops.attention_backward(dO, ws.Q, ws.K, ws.V, ws.P, scale,
                                   self.dropout if drop else 0.0, ws.Pd, ws.keep, dQ, dK, dV,
                                   ws.buf("dP", ws.P.shape, dt))
        names = self._slots
        dxs = [None] * len(names)
        outs: dict = {}
        for n, D, rows, x2, din, dh in (("query", dQ, B * Tq, ws.q2, self._dq, kd),
                                        ("key", dK, B * Tv, ws.k2, self._dk_in, kd),
                                        ("value", dV, B * Tv, ws.v2, self._dv_in, vd)):
            dflat = ws.buf(f"d{n}_flat", (rows, H * dh), dt)
            T = D.shape[2]
            np.copyto(dflat.reshape(B, T, H, dh), D.transpose(0, 2, 1, 3))
            dx = ws.buf(f"dx_{n}", (rows, din), dt) if need_dx else None
            ops.dense_backward(dflat, x2, self._w2(f"{n}_kernel", din), None, "linear", None, dx,
                               self._g2(f"{n}_kernel", din), self._gb1(f"{n}_bias"), need_dx)
            outs[n] = dx
        if not need_dx:
            return dxs
        shapes = {n: (B,) + tuple(s) for n, s in zip(names, self.input_shape)}
        dxs[0] = outs["query"].reshape(shapes["query"])
        if "key" in names:
            dxs[names.index("key")] = outs["key"].reshape(shapes["key"])
            dxs[1] = outs["value"].reshape(shapes["value"])
        else:   # key is value: both projections' gradients
            dvx = outs["value"]
            dvx += outs["key"]
            dxs[1] = dvx.reshape(shapes["value"])
        return dxs

    def get_config(self):
        cfg = super().get_config()
        cfg.update(num_heads=self.num_heads, key_dim=self.key_dim, value_dim=self.value_dim,
                   use_bias=self.use_bias, output_shape=self._out_dim_arg,
                   attention_axes=None if self.attention_axes is None else list(self.attention_axes),
                   kernel_initializer=_initializers.serialize(self.kernel_initializer),
                   bias_initializer=_initializers.serialize(self.bias_initializer),
                   kernel_regularizer=_regularizers.serialize(self.kernel_regularizer),
                   bias_regularizer=_regularizers.serialize(self.bias_regularizer),
                   flash=self.flash)
        if self._graph_scores:
            cfg.update(graph_scores=True)
        return cfg


class Attention(_AttentionBase):
    """Dot-product (Luong) attention layer, as Keras 3's ``Attention``.

    ``scores = query @ key.T`` (times a learned scalar ``scale`` when
    ``use_scale``), or with ``score_mode="concat"``
    ``concat_score_weight * sum(tanh(scale * (query_i + key_j)))``. Call it as
    ``layer([query, value])`` or ``layer([query, value, key])`` (key defaults
    to value), with ``mask=[query_mask, value_mask]``; a masked query row's
    output is zero.

    Parameters
    ----------
    use_scale : bool, default False
        Learn a scalar that scales the scores.
    score_mode : {"dot", "concat"}, default "dot"
        How scores are computed.
    dropout : float, default 0.0
        Dropout rate on the attention weights, in ``[0, 1)``.
    seed : int, optional
        Seed of the dropout stream.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``); ``call_inputs`` and ``use_causal_mask`` are written
        by ``get_config`` to rebuild the call convention of a saved graph.

    Raises
    ------
    ValueError
        For an unknown ``score_mode`` or an invalid dropout rate or seed.
    """

    _score_mode_values: tuple = ("dot", "concat")

    def __init__(self, use_scale: bool = False, score_mode: str = "dot", dropout: Any = 0.0,
                 seed: Any = None, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(dropout=dropout, seed=seed, name=name, **kwargs)
        if score_mode not in self._score_mode_values:
            raise ValueError(f"{self._what()}: score_mode must be one of "
                             f"{self._score_mode_values}, got {score_mode!r}")
        self.use_scale = bool(use_scale)
        self.score_mode = score_mode
        self._want_scores = False
        self._last_scores = None

    def __call__(self, inputs: Any, mask: Any = None,  # type: ignore[override]
                 training: bool | None = None, return_attention_scores: bool = False,
                 use_causal_mask: bool = False) -> Any:
        """Apply attention to ``[query, value]`` or ``[query, value, key]``.

        Parameters
        ----------
        inputs : list of tensors
            ``[query, value]`` or ``[query, value, key]``.
        mask : list of tensors, optional
            ``[query_mask, value_mask]`` (either may be None).
        training : bool, optional
            Training mode (dropout).
        return_attention_scores : bool, default False
            Also return the attention weights (batch, Tq, Tv).
        use_causal_mask : bool, default False
            Let query ``i`` attend to keys ``j <= i`` only.

        Returns
        -------
        tensor or tuple of tensors
            The output (batch, Tq, dim), and the scores when asked for.

        Raises
        ------
        ValueError
            When ``inputs`` is not a list of two or three tensors, or the shapes
            do not fit.
        """
        parts = self._replay(inputs) if (mask is None and not use_causal_mask
                                         and self._from_config) else None
        if parts is not None:
            return self._run_call(parts, training, return_attention_scores)
        if not isinstance(inputs, (list, tuple)) or len(inputs) not in (2, 3):
            raise ValueError(f"{self._what()} should be called on a list [query, value] or "
                             f"[query, value, key]; got {type(inputs).__name__}")
        masks = {}
        if mask is not None:
            if not isinstance(mask, (list, tuple)) or len(mask) not in (1, 2, 3):
                raise ValueError(f"{self._what()}: mask must be a list [query_mask, value_mask]")
            masks = dict(query_mask=mask[0], value_mask=mask[1] if len(mask) > 1 else None)
        parts = self._call_parts(inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else None,
                                 masks, use_causal_mask)
        return self._run_call(parts, training, return_attention_scores)

    def compute_output_shape(self, input_shapes):
        sh = self._split([tuple(s) for s in input_shapes])
        q, v = sh["query"], sh["value"]
        k = sh.get("key", v)
        w = self._what()
        if len(q) != 2 or len(v) != 2 or len(k) != 2:
            raise ValueError(f"{w}: query, value and key must be (time, features) per sample; got "
                             f"query {q}, value {v}, key {k}")
        if k[0] != v[0]:
            raise ValueError(f"{w}: key {k} and value {v} must have the same length")
        if q[1] != k[1]:
            raise ValueError(f"{w}: query {q} and key {k} must have the same feature size")
        self._mask_shapes_check({n: s for n, s in sh.items() if n in _MASK_SLOTS}, q[0], v[0])
        return (q[0], v[1])

    def build(self, input_shapes):
        shapes = [tuple(int(d) for d in s) for s in input_shapes]
        out = self.compute_output_shape(shapes)
        self.input_shape = shapes
        self.output_shape = tuple(out)
        self._dim = shapes[0][-1]
        self.built = True
        return self.output_shape

    def param_specs(self):
        specs = []
        if self.use_scale:
            specs.append(ParamSpec("scale", (), _initializers.get("ones", "scale")))
        if self.score_mode == "concat":
            specs.append(ParamSpec("concat_score_weight", (), _initializers.get("ones", "w")))
        return specs

    def _scores(self, Q, K, ws, dt):
        """Raw scores (B, 1, Tq, Tk) and the softmax scale applied on top."""
        B, Tq, Tk = Q.shape[0], Q.shape[1], K.shape[1]
        S = ws.buf("S", (B, 1, Tq, Tk), dt)
        if self.score_mode == "dot":
            self.ops.bmm(Q, K, out=S.reshape(B, Tq, Tk), trans_b=True)
            return S, float(self.params["scale"]) if self.use_scale else 1.0
        sc = self.params["scale"].reshape(1) if self.use_scale else None
        t = ws.buf("t", (B, Tq, Tk, Q.shape[2]), dt)
        self.ops.additive_scores_forward(Q, K, sc, S.reshape(B, Tq, Tk), t, inner=True)
        ws.t = t
        return S, float(self.params["concat_score_weight"])

    def _scores_backward(self, dS, Q, K, ws, dQ, dK):
        B, Tq, Tk = dS.shape[0], dS.shape[2], dS.shape[3]
        dS3 = dS.reshape(B, Tq, Tk)
        if self.score_mode == "dot":
            self.ops.bmm(dS3, K, out=dQ)
            self.ops.bmm(dS3, Q, out=dK, trans_a=True)
            return
        sc = self.params["scale"].reshape(1) if self.use_scale else None
        gsc = self.grads["scale"].reshape(1) if self.use_scale else None
        self.ops.additive_scores_backward(dS3, Q, K, sc, ws.t, dQ, dK, gsc, inner=True)

    def forward(self, xs, training, ws, mask=None):
        ops = self.ops
        d = self._split(xs)
        self._check_batch(xs)
        Q, V = d["query"], d["value"]
        K = d.get("key", V)
        B, Tq, Tk = Q.shape[0], Q.shape[1], V.shape[1]
        if Tq == 0 or Tk == 0:
            raise ValueError(f"{self._what()}: sequences of length 0 (query {Q.shape}, value "
                             f"{V.shape})")
        dt = Q.dtype
        kv, qv, am = self._masks(d, B, Tq, Tk, mask)
        S, mult = self._scores(Q, K, ws, dt)
        P = ws.buf("P", S.shape, dt)
        ops.attention_softmax(S, P, mult, kv, None, am, bool(self._causal))
        drop = training and self.dropout > 0.0
        Pu = P
        if drop:
            seed, off = self._next_stream(P.size)
            Pd = ws.buf("Pd", P.shape, dt)
            keep = ws.buf("keep", P.shape, np.uint8)
            ops.dropout(P, self.dropout, seed, off, Pd, keep)
            Pu, ws.keep = Pd, keep
        y = ws.buf("y", (B, Tq, V.shape[2]), dt)
        ops.bmm(Pu.reshape(B, Tq, Tk), V, out=y)
        if qv is not None:
            y *= qv[:, :, None]
        if self._want_scores:
            self._last_scores = np.array(Pu.reshape(B, Tq, Tk), copy=True)
        ws.d, ws.Q, ws.K, ws.V, ws.S, ws.P, ws.Pu, ws.mult, ws.drop, ws.qv = (
            d, Q, K, V, S, P, Pu, mult, drop, qv)
        return y

    def backward(self, dy, ws, need_dx=True):
        ops = self.ops
        Q, K, V, S, P = ws.Q, ws.K, ws.V, ws.S, ws.P
        B, Tq, Tk = Q.shape[0], Q.shape[1], V.shape[1]
        dt = dy.dtype
        if ws.qv is not None:
            dy = dy * ws.qv[:, :, None]
        dV = ws.buf("dV", V.shape, dt)
        ops.bmm(ws.Pu.reshape(B, Tq, Tk), dy, out=dV, trans_a=True)
        dP = ws.buf("dP", P.shape, dt)
        ops.bmm(dy, V, out=dP.reshape(B, Tq, Tk), trans_b=True)
        if ws.drop:
            ops.backprop_dropout(dP, ws.keep, self.dropout, dP)
        dZ = ops.attention_softmax_backward(dP, P, dP, 1.0)   # d/d(mult * S)
        if self.score_mode == "dot":
            if self.use_scale:
                self.grads["scale"][...] = np.vdot(dZ, S)
                dZ *= dt.type(ws.mult)
        elif self.score_mode == "concat":
            self.grads["concat_score_weight"][...] = np.vdot(dZ, S)
            dZ *= dt.type(ws.mult)
        dQ = ws.buf("dQ", Q.shape, dt)
        dK = ws.buf("dK", K.shape, dt)
        self._scores_backward(dZ, Q, K, ws, dQ, dK)
        if not need_dx:
            return [None] * len(self._slots)
        dxs = [None] * len(self._slots)
        dxs[0] = dQ
        if "key" in self._slots:
            dxs[self._slots.index("key")] = dK
            dxs[1] = dV
        else:
            dV += dK
            dxs[1] = dV
        return dxs

    def get_config(self):
        cfg = super().get_config()
        cfg.update(use_scale=self.use_scale, score_mode=self.score_mode)
        return cfg


class AdditiveAttention(Attention):
    """Additive (Bahdanau) attention layer, as Keras 3's ``AdditiveAttention``.

    ``scores = sum_d scale_d * tanh(query_i + key_j)_d``, with ``scale`` a
    learned ``(dim,)`` weight (glorot_uniform) when ``use_scale``. Called as
    ``Attention``.

    Parameters
    ----------
    use_scale : bool, default True
        Learn the per-feature scale.
    dropout : float, default 0.0
        Dropout rate on the attention weights, in ``[0, 1)``.
    seed : int, optional
        Seed of the dropout stream.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``); ``call_inputs`` and ``use_causal_mask`` are written
        by ``get_config`` to rebuild the call convention of a saved graph.

    Raises
    ------
    ValueError
        For an invalid dropout rate or seed.
    """

    _score_mode_values = ("dot",)   # no score_mode argument in Keras; internal only

    def __init__(self, use_scale: bool = True, dropout: Any = 0.0, seed: Any = None,
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(use_scale=use_scale, dropout=dropout, seed=seed, name=name, **kwargs)
        self.score_mode = "additive"

    def param_specs(self):
        if not self.use_scale:
            return []
        return [ParamSpec("scale", (self._dim,), _initializers.get("glorot_uniform", "scale"))]

    def _scores(self, Q, K, ws, dt):
        B, Tq, Tk = Q.shape[0], Q.shape[1], K.shape[1]
        S = ws.buf("S", (B, 1, Tq, Tk), dt)
        t = ws.buf("t", (B, Tq, Tk, Q.shape[2]), dt)
        self.ops.additive_scores_forward(Q, K, self.params["scale"] if self.use_scale else None,
                                         S.reshape(B, Tq, Tk), t, inner=False)
        ws.t = t
        return S, 1.0

    def _scores_backward(self, dS, Q, K, ws, dQ, dK):
        B, Tq, Tk = dS.shape[0], dS.shape[2], dS.shape[3]
        self.ops.additive_scores_backward(dS.reshape(B, Tq, Tk), Q, K,
                                          self.params["scale"] if self.use_scale else None, ws.t,
                                          dQ, dK, self.grads["scale"] if self.use_scale else None,
                                          inner=False)

    def get_config(self):
        cfg = _AttentionBase.get_config(self)
        cfg.update(use_scale=self.use_scale)
        return cfg


class PositionEmbedding(Layer):
    """Learned position embedding, as ``keras_hub.layers.PositionEmbedding``.

    A learned ``(sequence_length, features)`` table; the output is its first
    ``T`` rows broadcast over the batch (add it to the input yourself:
    ``x + PositionEmbedding(T)(x)``). The input's values are not read, so it
    gets no gradient.

    Parameters
    ----------
    sequence_length : int
        Longest sequence the table covers.
    initializer : str, dict or callable, default "glorot_uniform"
        Initializer of the table.
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For a non-positive ``sequence_length`` or an input longer than it.
    """

    def __init__(self, sequence_length: Any, initializer: Any = "glorot_uniform",
                 name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.sequence_length = _pos_int(sequence_length,
                                        f"PositionEmbedding layer {self.name!r}: sequence_length")
        self.initializer = _initializers.get(initializer, f"PositionEmbedding {self.name}: initializer")

    def compute_output_shape(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"PositionEmbedding layer {self.name!r}: expects per-sample input "
                             f"(time, features), got {tuple(input_shape)}")
        if input_shape[-2] > self.sequence_length:
            raise ValueError(f"PositionEmbedding layer {self.name!r}: sequence length "
                             f"{input_shape[-2]} exceeds sequence_length={self.sequence_length}")
        return tuple(input_shape)

    def param_specs(self):
        return [ParamSpec("embeddings", (self.sequence_length, self.input_shape[-1]),
                          self.initializer)]

    def forward(self, x, training, ws):
        T = x.shape[-2]
        y = ws.buf("y", x.shape, x.dtype)
        np.copyto(y, self.params["embeddings"][:T].astype(x.dtype, copy=False))
        ws.xshape = x.shape
        return y

    def backward(self, dy, ws, need_dx=True):
        T, D = dy.shape[-2], dy.shape[-1]
        g = self.grads["embeddings"]
        g[T:] = 0
        self.ops.sum_rows(dy.reshape(-1, T * D), out=g[:T].reshape(T * D))
        return self._zero_dx(dy, ws, need_dx)

    @staticmethod
    def _zero_dx(dy, ws, need_dx):
        if not need_dx:
            return None
        dx = ws.buf("dx", dy.shape, dy.dtype)
        dx[...] = 0      # the executor may accumulate into it: zero it every step
        return dx

    def get_config(self):
        cfg = super().get_config()
        cfg.update(sequence_length=self.sequence_length,
                   initializer=_initializers.serialize(self.initializer))
        return cfg


class SinePositionEncoding(Layer):
    """Fixed sinusoidal position encoding, as ``keras_hub.layers.SinePositionEncoding``.

    The encoding of "Attention Is All You Need": sine on even features,
    cosine on odd ones, wavelengths up to ``max_wavelength``, broadcast over
    the batch. It has no weights and passes no gradient to the input.

    Parameters
    ----------
    max_wavelength : float, default 10000
        Longest wavelength (positive).
    name : str, optional
        Layer name.
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        For a non-positive ``max_wavelength``.
    """

    def __init__(self, max_wavelength: Any = 10000, name: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        if isinstance(max_wavelength, bool) or not isinstance(max_wavelength, numbers.Real) \
                or max_wavelength <= 0:
            raise ValueError(f"SinePositionEncoding layer {self.name!r}: max_wavelength must be "
                             f"positive, got {max_wavelength!r}")
        self.max_wavelength = float(max_wavelength)

    def compute_output_shape(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"SinePositionEncoding layer {self.name!r}: expects per-sample input "
                             f"(time, features), got {tuple(input_shape)}")
        return tuple(input_shape)

    @staticmethod
    def encoding(T, D, max_wavelength=10000.0, dtype=np.float32):
        """Compute the sinusoidal encoding table.

        Parameters
        ----------
        T : int
            Number of positions.
        D : int
            Number of features.
        max_wavelength : float, default 10000.0
            Longest wavelength.
        dtype : numpy.dtype, default numpy.float32
            Data type of the table.

        Returns
        -------
        ndarray
            The ``(T, D)`` table.
        """
        pos = np.arange(T, dtype=np.float64)[:, None]
        i = np.arange(D)
        timescales = np.power(1.0 / max_wavelength, (2 * (i // 2)).astype(np.float64) / D)
        ang = pos * timescales[None, :]
        enc = np.where(i % 2 == 0, np.sin(ang), np.cos(ang))
        return enc.astype(dtype)

    def forward(self, x, training, ws):
        T, D = x.shape[-2], x.shape[-1]
        enc = getattr(ws, "enc", None)
        if enc is None or enc.shape != (T, D) or enc.dtype != x.dtype:
            enc = ws.enc = self.encoding(T, D, self.max_wavelength, x.dtype)
        y = ws.buf("y", x.shape, x.dtype)
        np.copyto(y, enc)
        return y

    def backward(self, dy, ws, need_dx=True):
        return PositionEmbedding._zero_dx(dy, ws, need_dx)

    def get_config(self):
        cfg = super().get_config()
        cfg.update(max_wavelength=self.max_wavelength)
        return cfg
