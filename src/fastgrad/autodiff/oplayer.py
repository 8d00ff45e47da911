"""fg.math on the functional API's symbolic tensors: each call becomes a
node of the model graph, a `MathOp` layer (hidden from model.layers, as
Keras 3's ops) whose forward / backward are the op's NumPy pair."""
from __future__ import annotations

import numpy as np

from ..layers.base import Layer


class MathOp(Layer):
    """One fg.math function applied to symbolic tensors (and constants)."""

    _multi_input = True

    def __init__(self, op=None, template=None, attrs=None, **kwargs):
        if "name" not in kwargs or kwargs["name"] is None:
            from ..layers.base import _unique_name
            kwargs["name"] = _unique_name(op or "math_op")
        super().__init__(**kwargs)
        self.op = op
        self.template = list(template or [])      # ("t", i) tensor i, ("c", array) a constant
        self.attrs = dict(attrs or {})
        self._operator = True

    def _fill(self, xs):
        return [xs[v] if k == "t" else v for k, v in self.template]

    def build(self, input_shapes):
        shapes = [tuple(int(d) for d in s) for s in input_shapes]
        out = self.compute_output_shape(shapes)
        self.input_shape, self.output_shape, self.built = shapes, out, True
        return out

    def compute_output_shape(self, input_shapes):
        from .core import OPS
        probe = [np.full((2,) + tuple(s), 0.5, dtype=np.float32) for s in input_shapes]
        with np.errstate(all="ignore"):
            y = np.asarray(OPS[self.op].fwd(*self._fill(probe), **self.attrs))
        if y.ndim < 1 or y.shape[0] != 2:
            raise ValueError(f"fg.math.{self.op} on symbolic tensors {input_shapes}: the result "
                             f"must keep the batch axis first (got shape {y.shape} for a batch "
                             "of 2)")
        return tuple(y.shape[1:])

    def forward(self, xs, training, ws):
        from .core import OPS
        vals = self._fill(xs)
        y = OPS[self.op].fwd(*vals, **self.attrs)
        ws.vals, ws.y = vals, y
        return np.ascontiguousarray(y, dtype=np.float32)

    def backward(self, dy, ws, need_dx=True):
        from .core import OPS
        op = OPS[self.op]
        if not need_dx:
            return None
        gins = op.bwd(dy, ws.vals, ws.y, **self.attrs) if op.bwd is not None else \
            [None] * len(ws.vals)
        res = []
        for (k, _), x, g in zip(self.template, ws.vals, gins):
            if k == "t":
                res.append(np.zeros(np.shape(x), np.float32) if g is None else
                           np.array(g, dtype=np.float32, copy=True))
        return res

    def get_config(self):
        cfg = super().get_config()
        attrs: dict = {}
        for k, v in self.attrs.items():
            if isinstance(v, (int, float, str, bool, type(None))) or (
                    isinstance(v, tuple) and all(isinstance(e, (int, type(None))) for e in v)):
                attrs[k] = list(v) if isinstance(v, tuple) else v
            else:
                attrs[k] = {"__repr__": repr(v)}
        cfg.update(op=self.op, attrs=attrs,
                   template=[[k, v if k == "t" else np.asarray(v).tolist()]
                             for k, v in self.template])
        return cfg

    @classmethod
    def from_config(cls, config):
        cfg = dict(config)
        attrs = {}
        for k, v in (cfg.pop("attrs", None) or {}).items():
            if isinstance(v, dict) and "__repr__" in v:
                import builtins
                v = eval(v["__repr__"], {"__builtins__": {}, "slice": builtins.slice,
                                         "Ellipsis": Ellipsis, "None": None})
            attrs[k] = tuple(v) if isinstance(v, list) else v
        tmpl = [("t", v) if k == "t" else ("c", np.asarray(v, dtype=np.float32))
                for k, v in cfg.pop("template", [])]
        return cls(op=cfg.pop("op"), template=tmpl, attrs=attrs, **cfg)


def symbolic_op(op, args, attrs):
    from ..engine.graph import SymbolicTensor
    tensors: list = []
    template: list = []
    for a in args:
        if isinstance(a, SymbolicTensor):
            template.append(("t", len(tensors)))
            tensors.append(a)
        else:
            v = a.value if hasattr(a, "value") and not isinstance(a, np.ndarray) else a
            template.append(("c", np.asarray(v)))
    return MathOp(op=op.name, template=template, attrs=attrs)(tensors)
