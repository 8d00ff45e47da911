"""The model graph: symbolic tensors, nodes, and the ordered graph both
executors run.

Building (the Keras functional API):
    x = fg.Input(shape=(784,))          # a SymbolicTensor made by an InputLayer node
    h = fg.layers.Dense(128)(x)         # Layer.__call__ on symbolic tensors: build the
                                        # layer if needed, record a Node, return its output
    model = fg.Model(x, h)              # Graph(inputs, outputs): order, check, number slots

A Node is one call of a layer: the layer, the symbolic tensors it was called on
and the one tensor it produced. A layer called twice (a shared layer) has two
nodes and one set of weights. Tensors know the node that made them, so a
Graph is found by walking back from the outputs.

Order. Nodes are ordered as Keras orders them: by depth from the outputs
(deepest, i.e. nearest the inputs, first), ties by the order in which a walk
from the outputs (inputs of each node in call order) first met their layer.
That order is topological, and it is also the layer order of `model.layers`
and so of `get_weights()` — the same weight order as the Keras model built
by the same code.

Slots. The executors name tensors by integer slots: 0 .. n_inputs-1 are the
model inputs (in `inputs` order), node i writes slot n_inputs + i.
`consumers[slot]` lists the nodes reading a slot (ascending); the backward
pass sums a slot's gradient contributions in the fixed order the contract in
docs/architecture.md states, so both executors give the same bits.
"""
from __future__ import annotations

from typing import Any

__all__ = ["SymbolicTensor", "Node", "Graph", "GraphError", "is_symbolic", "flatten_structure"]


class GraphError(ValueError):
    """A graph that cannot be a model (disconnected, cyclic, clashing names...)."""


class SymbolicTensor:
    """A placeholder for a batch of values in a model graph (Keras's KerasTensor).

    ``fastgrad.Input`` makes one; calling a layer on one makes another.

    Parameters
    ----------
    shape : tuple of int or None
        Shape including the batch axis (None unless the Input fixed it).
    node : Node or None, default None
        The graph node that produces it.
    name : str or None, default None
        Name.
    dtype : str, default "float32"
        Dtype of the values.
    """

    __slots__ = ("shape", "dtype", "name", "_node", "_keras_mask", "_mask_of", "__weakref__")

    def __init__(self, shape, node=None, name=None, dtype="float32"):
        self.shape = tuple(shape)
        self.dtype = dtype
        self.name = name
        self._node = node
        self._keras_mask = None     # the symbolic mask this tensor carries (or None)
        self._mask_of = None        # for a symbolic mask: the tensor it is the mask of

    @property
    def per_sample_shape(self) -> tuple:
        return tuple(self.shape[1:])

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def node(self):
        return self._node

    @property
    def _keras_history(self):
        n = self._node
        return (n.layer, n.layer._inbound_nodes.index(n), 0)

    def __repr__(self):
        return f"<SymbolicTensor shape={self.shape}, dtype={self.dtype}, name={self.name}>"

    def __len__(self):
        raise TypeError("a symbolic tensor has no length; it stands for a batch of values")

    def __array__(self, *a, **k):
        raise TypeError(f"{self!r} is symbolic (a model graph placeholder) and has no values; "
                        "build a model with fg.Model(inputs, outputs) and call it on data")

    # Python operators build merge layers, as on Keras tensors
    def __add__(self, other):
        return _merge("Add", self, other)

    def __radd__(self, other):
        return _merge("Add", other, self)

    def __sub__(self, other):
        return _merge("Subtract", self, other)

    def __rsub__(self, other):
        return _merge("Subtract", other, self)

    def __mul__(self, other):
        return _merge("Multiply", self, other)

    def __rmul__(self, other):
        return _merge("Multiply", other, self)


#: the layer classes Python's operators on symbolic tensors build ({"Add": cls, ...});
#: filled by fastgrad.layers (this module sits below the layers and does not import them)
OPERATOR_LAYERS: dict = {}


#: fg.math functions behind the other operators and behind + - * of a tensor and a
#: constant or of broadcasting shapes ({"Add": fastgrad.math.add, "truediv": ...});
#: filled by fastgrad.math (this module sits below it)
OPERATOR_FUNCTIONS: dict = {}


def _math(kind, *args):
    fn = OPERATOR_FUNCTIONS.get(kind)
    if fn is None:
        raise TypeError(f"symbolic tensors have no {kind!r} operator in this build "
                        "(import fastgrad.math)")
    return fn(*args)


def _install_math_operators():
    for dunder in ("truediv", "pow", "matmul", "floordiv", "mod"):
        setattr(SymbolicTensor, f"__{dunder}__",
                (lambda d: lambda self, other: _math(d, self, other))(dunder))
        setattr(SymbolicTensor, f"__r{dunder}__",
                (lambda d: lambda self, other: _math(d, other, self))(dunder))
    for dunder in ("lt", "le", "gt", "ge", "neg", "abs", "getitem"):
        setattr(SymbolicTensor, f"__{dunder}__",
                (lambda d: lambda self, *o: _math(d, self, *o))(dunder))


_install_math_operators()


def _merge(kind, a, b):
    if not (isinstance(a, SymbolicTensor) and isinstance(b, SymbolicTensor)):
        if kind in OPERATOR_FUNCTIONS:
            return _math(kind, a, b)
        raise TypeError(f"{kind} of a symbolic tensor and {type(b if isinstance(a, SymbolicTensor) else a).__name__}: "
                        "both operands must be symbolic tensors (fg.math handles constants)")
    make = OPERATOR_LAYERS.get(kind)
    if make is None:
        raise TypeError(f"symbolic tensors have no {kind} layer in this build")
    return make()([a, b])


def is_symbolic(x: Any) -> bool:
    if isinstance(x, SymbolicTensor):
        return True
    if isinstance(x, (list, tuple)):
        return any(isinstance(t, SymbolicTensor) for t in x)
    if isinstance(x, dict):
        return any(isinstance(t, SymbolicTensor) for t in x.values())
    return False


def flatten_structure(obj, what):
    """(list of tensors, kind, keys): a tensor, a list/tuple or a dict of them."""
    if isinstance(obj, SymbolicTensor):
        return [obj], "single", None
    if isinstance(obj, (list, tuple)):
        items = list(obj)
        kind = "list"
    elif isinstance(obj, dict):
        keys = list(obj.keys())
        items = [obj[k] for k in keys]
        for t in items:
            if not isinstance(t, SymbolicTensor):
                raise TypeError(f"{what}: expected symbolic tensors (from fg.Input or a layer "
                                f"call), got {type(t).__name__}")
        return items, "dict", keys
    else:
        raise TypeError(f"{what}: expected a symbolic tensor (from fg.Input or a layer call), "
                        f"a list or a dict of them, got {type(obj).__name__}")
    if not items:
        raise GraphError(f"{what}: empty")
    for t in items:
        if not isinstance(t, SymbolicTensor):
            raise TypeError(f"{what}: expected symbolic tensors (from fg.Input or a layer call), "
                            f"got {type(t).__name__}")
    return items, kind, None


class Node:
    """One call of `layer` on `inputs` (symbolic tensors), producing `output`."""

    __slots__ = ("layer", "inputs", "multi", "output", "mask_srcs", "has_out_mask",
                 "__weakref__")

    def __init__(self, layer, inputs, multi, output_shape, batch=None):
        self.layer = layer
        self.inputs = list(inputs)
        self.multi = bool(multi)          # the layer takes a list (merge layers)
        self.mask_srcs = [None] * len(self.inputs)   # per input: the tensor whose mask it gets
        self.has_out_mask = False         # the output carries a mask (compute_mask at run time)
        self.output = SymbolicTensor((batch,) + tuple(output_shape), node=self)
        layer._inbound_nodes.append(self)
        idx = len(layer._inbound_nodes) - 1
        self.output.name = layer.name if idx == 0 else f"{layer.name}_{idx}"

    @property
    def is_input(self) -> bool:
        return not self.inputs and getattr(self.layer, "_is_input_layer", False)

    def __repr__(self):
        return f"<Node {self.layer.name} <- {[t.name for t in self.inputs]}>"


class GraphNode:
    """A node as the executors see it: layer, input slots, output slot."""

    __slots__ = ("layer", "in_slots", "out_slot", "index", "multi", "node", "mask_slots",
                 "out_mask")

    def __init__(self, node, in_slots, out_slot, index, mask_slots=None):
        self.node = node
        self.layer = node.layer
        self.in_slots = tuple(in_slots)
        self.out_slot = out_slot
        self.index = index
        self.multi = node.multi
        #: per input: the slot whose mask this input gets (None: no mask)
        self.mask_slots = tuple(mask_slots) if mask_slots is not None else (None,) * len(in_slots)
        self.out_mask = bool(node.has_out_mask)

    def __repr__(self):
        return f"<GraphNode {self.index} {self.layer.name} {self.in_slots}->{self.out_slot}>"


class Graph:
    """The nodes between `inputs` and `outputs`, ordered and numbered (module docstring)."""

    def __init__(self, inputs, outputs, owner="Model"):
        self.owner = owner
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        for t in self.inputs:
            n = t._node
            if n is None or not n.is_input:
                who = n.layer.name if n is not None else "?"
                raise GraphError(f"{owner}: inputs must be tensors made by fg.Input(...); "
                                 f"{t.name!r} is the output of layer {who!r}")
        if len({id(t) for t in self.inputs}) != len(self.inputs):
            raise GraphError(f"{owner}: the same input tensor is given twice in inputs "
                             f"({[t.name for t in self.inputs]})")
        order = self._order()
        self.input_layers = [t._node.layer for t in self.inputs]
        slot = {id(t): i for i, t in enumerate(self.inputs)}
        self.n_inputs = len(self.inputs)
        self.nodes = []
        for node in order:
            if node.is_input:
                continue
            gi = len(self.nodes)
            in_slots = []
            for t in node.inputs:
                s = slot.get(id(t))
                if s is None:       # a tensor reached before its producer: cannot happen for a DAG
                    raise GraphError(f"{owner}: graph order failed at layer {node.layer.name!r}")
                in_slots.append(s)
            out = self.n_inputs + gi
            mask_slots = []
            for t in node.mask_srcs:
                if t is None:
                    mask_slots.append(None)
                    continue
                ms = slot.get(id(t))
                if ms is None:
                    raise GraphError(f"{owner}: layer {node.layer.name!r} is given the mask of "
                                     f"{t.name!r}, which is not computed before it in this model")
                mask_slots.append(ms)
            slot[id(node.output)] = out
            self.nodes.append(GraphNode(node, in_slots, out, gi, mask_slots))
        self.output_slots = tuple(slot[id(t)] for t in self.outputs)
        self.slot_shapes = ([tuple(t.shape[1:]) for t in self.inputs] +
                            [tuple(n.node.output.shape[1:]) for n in self.nodes])
        self.consumers = [[] for _ in self.slot_shapes]
        for n in self.nodes:
            for s in sorted(set(n.in_slots)):
                self.consumers[s].append(n.index)
        used = {s for n in self.nodes for s in n.in_slots} | set(self.output_slots)
        for i, t in enumerate(self.inputs):
            if i not in used:
                raise GraphError(f"{owner}: input {t.name!r} is disconnected: no output depends "
                                 "on it (remove it from inputs, or use it)")
        # unique layers in node order (parameter / get_weights order), InputLayers first
        seen, layers = set(), []
        for n in self.nodes:
            if id(n.layer) not in seen:
                seen.add(id(n.layer))
                layers.append(n.layer)
        self.layers = layers
        # model.layers: every layer in Keras's order, InputLayers at their depth (first when
        # all inputs are equally deep; Keras 3 lists ["in_a", "dense_a1", "in_b", ...] when
        # input a feeds a longer branch than input b)
        seen, all_layers = set(), []
        for node in order:
            if id(node.layer) not in seen:
                seen.add(id(node.layer))
                all_layers.append(node.layer)
        self.all_layers = all_layers
        names = {}
        for layer in self.all_layers:
            other = names.get(layer.name)
            if other is not None and other is not layer:
                raise GraphError(f"{owner}: two different layers are named {layer.name!r} "
                                 f"({type(other).__name__} and {type(layer).__name__}); layer "
                                 "names must be unique in a model")
            names[layer.name] = layer
        self.nodes_of = {}
        for n in self.nodes:
            self.nodes_of.setdefault(id(n.layer), []).append(n.index)
        self.shared = {k: v for k, v in self.nodes_of.items() if len(v) > 1}
        #: any tensor of the graph carries a mask (the compiled plan has no masks)
        self.has_masks = any(n.out_mask or any(m is not None for m in n.mask_slots)
                             for n in self.nodes)

    # -------------------------------------------------------------- ordering
    def _order(self):
        """Nodes in Keras's order (see the module docstring); raises on cycles
        and on tensors that depend on inputs the model was not given."""
        owner = self.owner
        input_ids = {id(t) for t in self.inputs}
        layer_index = {}
        post = []                 # nodes in post order
        state = {}                # id(node) -> 1 visiting, 2 done

        def visit(node, path):
            k = id(node)
            st = state.get(k)
            if st == 2:
                return
            if st == 1:
                raise GraphError(f"{owner}: the graph has a cycle through layer "
                                 f"{node.layer.name!r}")
            state[k] = 1
            layer_index.setdefault(id(node.layer), len(layer_index))
            if node.is_input:
                if id(node.output) not in input_ids:
                    raise GraphError(
                        f"{owner}: the outputs depend on input {node.output.name!r}, which is "
                        f"not among the model's inputs ({[t.name for t in self.inputs]}): the "
                        f"graph is disconnected (path: {' <- '.join(path)})")
            for t in node.inputs:
                if t._node is None:
                    raise GraphError(f"{owner}: tensor {t.name!r} was not made by a layer")
                visit(t._node, path + [t._node.layer.name])
            state[k] = 2
            post.append(node)

        import sys
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 10000))
        try:
            for t in self.outputs:
                if t._node is None:
                    raise GraphError(f"{owner}: output {t!r} was not made by a layer call")
                visit(t._node, [t._node.layer.name])
        finally:
            sys.setrecursionlimit(limit)
        depth = {}
        layer_depth = {}
        for node in reversed(post):
            d = depth.setdefault(id(node), 0)
            d = max(d, layer_depth.get(id(node.layer), 0))
            layer_depth[id(node.layer)] = d
            depth[id(node)] = d
            for t in node.inputs:
                p = t._node
                depth[id(p)] = max(d + 1, depth.get(id(p), 0))
        pos = {id(n): i for i, n in enumerate(post)}
        order = sorted(post, key=lambda n: (-depth[id(n)], layer_index[id(n.layer)], pos[id(n)]))
        # a shared layer's depth rule can reorder; fall back to post order if not topological
        done = set()
        for n in order:
            if any(id(t._node) not in done for t in n.inputs):
                order = post
                break
            done.add(id(n))
        return order

    # -------------------------------------------------------------- helpers
    def needs_grad(self):
        """Per slot: does the backward pass need its gradient (contract item 3)?"""
        need = [False] * len(self.slot_shapes)
        for n in self.nodes:
            has_params = bool(n.layer.param_specs())
            need[n.out_slot] = has_params or any(need[s] for s in n.in_slots)
        return need

    def describe(self):
        return {"n_inputs": self.n_inputs, "output_slots": list(self.output_slots),
                "nodes": [{"layer": n.layer.name, "in": list(n.in_slots), "out": n.out_slot}
                          for n in self.nodes]}
