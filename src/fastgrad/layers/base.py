"""The Layer protocol: what a layer must provide so a model can own its memory.

A model (fastgrad.models.Sequential) drives every layer through the same small
protocol; layers never allocate parameters themselves and never import native
code — they compute only through `self.ops` (the active backend's Ops object).

Life of a layer
---------------
1. ``__init__(**hyper_parameters, name=None, input_shape=None)``
   Stores hyper-parameters only.  `input_shape` (shape WITHOUT the batch axis)
   is accepted on any layer and used by the model when it is the first layer.
2. ``build(input_shape) -> output_shape``
   Called once by the model with the per-sample input shape (tuple, no batch
   axis).  Validates it (raise ValueError naming the layer and the shape),
   records ``self.input_shape`` / ``self.output_shape``, sets ``self.built``.
   The base implementation does the bookkeeping and calls
   ``compute_output_shape``; override ``compute_output_shape`` (and call
   ``super().build`` if you override ``build``).
3. ``param_specs() -> list[ParamSpec]``  (trainable, after build)
   ``ParamSpec(name, shape, initializer, regularizer)`` in Keras weight order
   (Dense: kernel, bias).  The model lays all trainable parameters of all
   layers end to end in ONE contiguous float32 buffer (and gradients in a twin
   buffer) and fills them with ``initializer(shape)``.
   ``state_specs() -> list[StateSpec]``  (non-trainable, after build)
   ``StateSpec(name, shape, initializer)``, e.g. BatchNorm moving_mean /
   moving_variance.  Held by the model outside the trainable buffer (one
   float32 array each) but part of get_weights()/set_weights()/save, placed
   after the layer's trainable weights (Keras order).
4. ``bind(params, grads, state)``
   Three dicts name -> numpy array.  ``params[name]`` / ``grads[name]`` are
   views into the model's flat buffers, ``state[name]`` the state arrays.
   The base implementation stores them as ``self.params``, ``self.grads``,
   ``self.state``.  Layers must keep writing INTO these arrays (out=...,
   ``a[...] = ...``), never rebind them.
5. ``forward(x, training, ws) -> y``
   x: float32 C-contiguous (batch, *input_shape).  ``ws`` is this layer's
   Workspace for the current batch size (see engine.workspace.Workspace):
   ``ws.buf(name, shape, dtype=np.float32)`` returns an array allocated on
   first use and reused on every later step with that batch size, and ``ws``
   accepts plain attributes for anything the backward pass needs (e.g.
   ``ws.x = x``).  y must be a workspace array (or x itself for identity
   layers / a reshaped view for Flatten); it stays valid until the next
   forward with the same batch size.  A steady-state step allocates nothing.
6. ``backward(dy, ws, need_dx=True) -> dx or None``
   dy: gradient w.r.t. this layer's output (batch, *output_shape), float32.
   Writes this batch's parameter gradients INTO ``self.grads[...]``
   (overwriting, not accumulating: the model calls every layer's backward
   once per step) and returns dx (a workspace array) unless need_dx is False
   (the first layer: the model never needs dL/dx).  Layers may overwrite dy.
7. ``get_config() -> dict`` / ``from_config(config)``: JSON-friendly
   hyper-parameters; ``from_config(get_config())`` rebuilds an equivalent
   (unbuilt) layer.  Every Layer subclass is registered by class name
   (``Layer.registry``) so saved models can be reloaded.
8. ``lower(ctx) -> dict`` (optional): the layer as a node of the compiled
   C plan, from its own state — kind name (a row of csrc/step/layer_table.c),
   activation code, parameter offsets in the flat buffer, hyper-parameters —
   through the helpers of ``ctx`` (engine/compiled.py ``LowerContext``: codes
   from the C headers, regularizer coefficients, trainability). A layer
   without ``lower`` (or raising ``ctx.unsupported(...)``) makes the model run
   on the Python executor, with the same results. No other module reads a
   layer's private fields.
   ``describe() -> dict``: the layer as plain data for people and tools:
   kind, name, shapes, hyper-parameters and each array's offset and shape in
   the flat buffer.  Subclasses extend ``super().describe()``.
9. Multi-input layers (merge layers) set ``_multi_input = True``: ``build`` /
   ``compute_output_shape`` take a list of shapes, ``forward`` a list of
   arrays, ``backward`` returns a list of dx that never alias each other (at
   most one may be dy itself).
10. ``__call__``: on symbolic tensors (fg.Input, another layer's output) it
   records a node of the model graph (engine/graph.py); on arrays it runs
   forward eagerly, building the layer (weights included) if needed.

Output-activation fusion
------------------------
When the model's loss is a cross-entropy on probabilities and its last layer
ends in the matching activation (softmax / sigmoid), the model asks that layer
to emit logits instead (``split_output_activation()`` returns the activation
name it removed, or None if it cannot) and computes the fused, numerically
stable loss on the logits; predict() re-applies the activation.
``merge_output_activation()`` undoes the split (recompile with another loss).

Extra hooks
-----------
- ``trainable`` (bool attribute): False freezes the layer; the model then
  zeroes its gradient views after backward (its parameters stay in the flat
  buffer, so the optimizer step is still one call).
- ``reset_rng(seed)``: layers with randomness (Dropout) derive their streams
  from it; the model calls it at build time with ``fastgrad._config.next_seed()``.
- ``ops``: the Ops object; the model sets it once per fit/evaluate/predict
  (attribute ``_ops``); otherwise it is the active backend's.
"""
from __future__ import annotations

import re
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Layer", "ParamSpec", "StateSpec", "get_layer_class", "deserialize_layer"]


class ParamSpec(NamedTuple):
    """A trainable parameter: lives in the model's flat float32 buffer."""
    name: str
    shape: tuple
    initializer: Any          # callable shape -> float array (fastgrad.initializers)
    regularizer: Any = None   # fastgrad.regularizers.Regularizer or None


class StateSpec(NamedTuple):
    """A non-trainable array (BatchNorm moving statistics)."""
    name: str
    shape: tuple
    initializer: Any


_name_counts: dict = {}


def _unique_name(base: str) -> str:
    n = _name_counts.get(base, 0)
    _name_counts[base] = n + 1
    return base if n == 0 else f"{base}_{n}"


def _snake(name: str) -> str:
    """Keras's to_snake_case: Conv2D -> conv2d, ReLU -> re_lu, Conv2DTranspose -> conv2d_transpose."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", name)
    return name.lower()


def _as_shape(shape, what: str) -> tuple:
    if shape is None:
        return None
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise TypeError(f"{what}: expected a tuple of positive integers, got {shape!r}") from None
    if any(s <= 0 for s in shape):
        raise ValueError(f"{what}: every dimension must be positive, got {shape}")
    return shape


class Layer:
    """Base class of every fastgrad layer (protocol in the module docstring)."""

    registry: dict = {}

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        Layer.registry[cls.__name__] = cls

    def __init__(self, name=None, input_shape=None, input_dim=None, trainable=True, dtype=None,
                 batch_input_shape=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument(s) "
                            f"{', '.join(sorted(kwargs))}")
        if dtype not in (None, "float32", np.float32):
            raise ValueError(f"{type(self).__name__}: only dtype float32 is supported, got {dtype!r}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"{type(self).__name__}: name must be a string, got {name!r}")
        self.name = name or _unique_name(_snake(type(self).__name__))
        if input_dim is not None:
            if input_shape is not None:
                raise ValueError(f"{self.name}: give input_shape or input_dim, not both")
            input_shape = (input_dim,)
        if batch_input_shape is not None and input_shape is None:
            input_shape = tuple(batch_input_shape)[1:]
        self._declared_input_shape = _as_shape(input_shape, f"{self.name}: input_shape")
        self.trainable = bool(trainable)
        self.built = False
        self.input_shape = None
        self.output_shape = None
        self.params: dict = {}
        self.grads: dict = {}
        self.state: dict = {}
        self.offsets: dict = {}     # param name -> offset (float32 elements) in the flat buffer
        self._ops = None
        self._fused_activation = None
        self._inbound_nodes: list = []   # engine.graph.Node per symbolic call

    # ------------------------------------------------------------------ ops
    @property
    def ops(self):
        ops = self._ops
        if ops is None:
            from .. import _config
            ops = _config.get_ops()
        return ops

    @ops.setter
    def ops(self, value):
        self._ops = value

    # ------------------------------------------------------------------ build
    def compute_output_shape(self, input_shape: tuple) -> tuple:
        """Per-sample output shape for a per-sample input shape (default: identity)."""
        return tuple(input_shape)

    def build(self, input_shape) -> tuple:
        input_shape = _as_shape(input_shape, f"{self.name}: input shape")
        out = tuple(self.compute_output_shape(input_shape))
        self.input_shape = input_shape
        self.output_shape = out
        self.built = True
        return out

    def param_specs(self) -> list:
        return []

    def state_specs(self) -> list:
        return []

    def bind(self, params: dict, grads: dict, state: dict) -> None:
        self.params = params
        self.grads = grads
        self.state = state

    def reset_rng(self, seed: int) -> None:
        """Layers with random streams derive them from `seed` (default: nothing)."""

    def count_params(self) -> int:
        if not self.built:
            raise ValueError(f"{self.name}: count_params() needs a built layer "
                             "(give input_shape or call the model on data first)")
        return int(sum(int(np.prod(s.shape)) for s in self.param_specs()) +
                   sum(int(np.prod(s.shape)) for s in self.state_specs()))

    # ------------------------------------------------------------------ compute
    def forward(self, x, training: bool, ws):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, dy, ws, need_dx: bool = True):
        raise NotImplementedError(f"{type(self).__name__}.backward")

    #: True for layers called on a list of tensors (merge layers): build /
    #: compute_output_shape / forward get lists, backward returns a list
    _multi_input = False

    def __call__(self, inputs, training: bool = False, **kwargs):
        """On symbolic tensors (fg.Input, another layer's output): add a node to
        the model graph and return its output tensor (the functional API).
        On arrays: run forward eagerly with a throw-away workspace (the layer
        is built from the arrays' per-sample shapes first if needed)."""
        from ..engine import graph as _graph
        if kwargs:
            raise TypeError(f"{self.name}: unexpected keyword argument(s) "
                            f"{', '.join(sorted(kwargs))} in the call")
        if _graph.is_symbolic(inputs):
            return self._call_symbolic(inputs)
        from ..engine.workspace import Workspace
        multi = self._multi_input
        if multi:
            if isinstance(inputs, np.ndarray) or not isinstance(inputs, (list, tuple)):
                got = (f"one array of shape {inputs.shape}" if isinstance(inputs, np.ndarray)
                       else type(inputs).__name__)
                raise ValueError(f"{type(self).__name__} layer {self.name!r} should be called on "
                                 f"a list of inputs; got {got}")
            xs = [np.ascontiguousarray(x, dtype=np.float32) for x in inputs]
        else:
            xs = [np.ascontiguousarray(inputs, dtype=np.float32)]
        if any(x.ndim < 1 for x in xs):
            raise ValueError(f"{type(self).__name__} layer {self.name!r}: inputs need a batch "
                             f"axis; got shapes {[x.shape for x in xs]}")
        shapes = [tuple(x.shape[1:]) for x in xs]
        shape = shapes if multi else shapes[0]
        if not self.built:
            self.build(shape)
            if self.param_specs() or self.state_specs():
                # weights of a layer used on its own (Keras builds them at the first call);
                # a model that takes the layer later starts from them
                from ..engine.params import ParamStore
                from .. import _config
                ParamStore([self], fresh=True).initialize()
                self.reset_rng(_config.next_seed())
        else:
            cur = [tuple(s) for s in self.input_shape] if multi else tuple(self.input_shape)
            if cur != shape:
                raise ValueError(f"{type(self).__name__} layer {self.name!r} was built for input "
                                 f"shape {cur}, called on {shape} (batch axis excluded)")
        y = self.forward(xs if multi else xs[0], training, Workspace())
        return np.array(y, copy=True)

    def _call_symbolic(self, inputs):
        from ..engine.graph import Node, SymbolicTensor
        if self._multi_input:
            if not isinstance(inputs, (list, tuple)):
                raise TypeError(f"{type(self).__name__} {self.name}: expects a list of tensors, "
                                f"got {type(inputs).__name__}")
            ts = list(inputs)
        else:
            if isinstance(inputs, (list, tuple)):
                if len(inputs) != 1:
                    raise TypeError(f"{type(self).__name__} {self.name}: takes one input tensor, "
                                    f"got a list of {len(inputs)}")
                inputs = inputs[0]
            ts = [inputs]
        for t in ts:
            if not isinstance(t, SymbolicTensor):
                raise TypeError(f"{self.name}: cannot mix symbolic tensors and "
                                f"{type(t).__name__} in one call")
        shapes = [tuple(t.shape[1:]) for t in ts]
        arg = shapes if self._multi_input else shapes[0]
        if not self.built:
            out = self.build(arg)
        else:
            cur = [tuple(s) for s in self.input_shape] if self._multi_input else \
                tuple(self.input_shape)
            want = [tuple(s) for s in arg] if self._multi_input else tuple(arg)
            if cur != want:
                fmt = (lambda s: str([(None,) + tuple(x) for x in s])) if self._multi_input \
                    else (lambda s: str((None,) + tuple(s)))
                raise ValueError(f"{type(self).__name__} {self.name}: this layer was built for "
                                 f"input shape {fmt(cur)} and is now called on {fmt(want)}; a "
                                 "shared layer needs the same input shape at every call")
            out = self.output_shape
        batch = ts[0].shape[0] if all(t.shape[0] == ts[0].shape[0] for t in ts) else None
        node = Node(self, ts, self._multi_input, out, batch)
        return node.output

    @property
    def output(self):
        """The output tensor of this layer's single call (Keras `layer.output`)."""
        return self._single_node("output").output

    @property
    def input(self):
        n = self._single_node("input")
        return n.inputs if n.multi else (n.inputs[0] if n.inputs else n.output)

    def _single_node(self, what):
        if not self._inbound_nodes:
            raise AttributeError(f"layer {self.name!r} has never been called on a symbolic "
                                 f"tensor, so it has no {what}")
        return self._inbound_nodes[0]

    # ------------------------------------------------------------------ fusion
    def split_output_activation(self):
        """Emit logits instead of probabilities; return the removed activation
        name, or None if this layer has no fusable output activation."""
        return None

    def merge_output_activation(self) -> None:
        """Undo split_output_activation()."""
        self._fused_activation = None

    # ------------------------------------------------------------------ weights
    def get_weights(self) -> list:
        """Copies of this layer's arrays in Keras order: params, then state."""
        return ([np.array(self.params[s.name], copy=True) for s in self.param_specs()] +
                [np.array(self.state[s.name], copy=True) for s in self.state_specs()])

    @property
    def weights(self) -> list:
        return ([self.params[s.name] for s in self.param_specs()] +
                [self.state[s.name] for s in self.state_specs()])

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict:
        cfg = {"name": self.name, "trainable": self.trainable}
        if self._declared_input_shape is not None:
            cfg["input_shape"] = list(self._declared_input_shape)
        return cfg

    @classmethod
    def from_config(cls, config: dict):
        cfg = dict(config)
        if cfg.get("input_shape") is not None:
            cfg["input_shape"] = tuple(cfg["input_shape"])
        return cls(**cfg)

    def describe(self) -> dict:
        d = {
            "kind": _snake(type(self).__name__),
            "class": type(self).__name__,
            "name": self.name,
            "input_shape": self.input_shape,
            "output_shape": self.output_shape,
            "trainable": self.trainable,
            "params": {s.name: {"offset": self.offsets.get(s.name), "shape": tuple(s.shape)}
                       for s in self.param_specs()} if self.built else {},
            "state": {s.name: {"shape": tuple(s.shape)} for s in self.state_specs()}
            if self.built else {},
        }
        return d

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r}>"


def get_layer_class(name: str):
    """The Layer subclass registered under class name `name`."""
    try:
        return Layer.registry[name]
    except KeyError:
        raise ValueError(f"unknown layer class {name!r}; known: "
                         f"{', '.join(sorted(Layer.registry))}") from None


def deserialize_layer(d: dict) -> Layer:
    """Inverse of {"class_name": type(layer).__name__, "config": layer.get_config()}."""
    return get_layer_class(d["class_name"]).from_config(d["config"])
