"""Layers written as ``call``: tracing, replay and the derived backward.

A Layer subclass that defines ``call(inputs, training=None, mask=None)``
(with ``fg.math`` functions, Python operators and other layers) is a traced
layer. Its life:

1. ``build(per-sample shape)`` from the engine (a model, a functional call,
   an eager call): the user's ``build((None,) + shape)`` runs (its
   ``add_weight`` calls declare the weights, with values), then one probe
   trace at batch 2 builds the sub-layers and gives the output shape.
   Sub-layers are the Layer attributes of the layer (``self.dense = ...``,
   lists / tuples / dicts of layers), in assignment order; their weights
   become the layer's own (``param_specs``, named ``<sub-layer>/<weight>``),
   so the model's flat buffer holds them and ``bind`` hands each its views.
2. ``forward(x, training, ws)``: the program traced for (input shapes,
   training) -- traced on first use, cached -- is replayed node by node
   (``Op.fwd`` of each fg.math node, ``forward`` of each sub-layer, reading
   the weights' live views); the values stay in ``ws``.
3. ``backward(dy, ws)``: reverse mode over the program: each node's ``Op.bwd``
   (or the sub-layer's own ``backward``), contributions to a slot summed in
   reverse node order, weight gradients written into the flat gradient
   buffer.

A trace records only what fg.math and layers compute: Python control flow on
a tensor value, NumPy functions on a traced tensor and indexing with traced
tensors raise ``TracingError`` naming the layer and the operation.
"""
from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from .core import (Tracer, TraceTensor, TracingError, Variable, _TRACERS, record_on_tapes,
                   is_watched)

PROBE_BATCH = 2
MAX_PROGRAMS = 16


def is_traced(layer: Any) -> bool:
    from ..layers.base import Layer
    return type(layer).call is not Layer.call


def current_tracer():
    return _TRACERS[-1] if _TRACERS else None


def _owner_name(layer):
    return f"{type(layer).__name__} layer {layer.name!r}"


# ---------------------------------------------------------------------------- weights
def add_weight(layer, shape=None, initializer=None, regularizer=None, trainable=True, name=None,
               dtype=None, constraint=None):
    from .. import initializers as _init
    from .. import regularizers as _reg
    from ..layers.base import _as_shape
    if constraint is not None:
        raise ValueError(f"{layer.name}: add_weight(constraint=...) is not supported")
    if dtype not in (None, "float32", np.float32):
        raise ValueError(f"{layer.name}: add_weight supports dtype float32 only, got {dtype!r}")
    shape = () if shape is None else (_as_shape(shape, f"{layer.name}: add_weight shape")
                                      if np.ndim(shape) or shape else ())
    d = layer.__dict__
    specs = d.setdefault("_fg_specs", [])
    pending = d.setdefault("_fg_pending", {})
    if name is None:
        name = f"variable_{len(specs)}" if specs else "variable"
    if not isinstance(name, str) or "/" in name:
        raise ValueError(f"{layer.name}: add_weight name must be a string without '/', "
                         f"got {name!r}")
    if any(s[1] == name for s in specs):
        raise ValueError(f"{layer.name}: a weight named {name!r} already exists")
    if initializer is None:
        initializer = "glorot_uniform" if len(shape) >= 2 else "zeros"
    init = _init.get(initializer) if not callable(initializer) or isinstance(initializer, str) \
        else initializer
    reg = _reg.get(regularizer) if regularizer is not None else None
    try:
        v = init(tuple(shape))
    except TypeError:
        v = init(tuple(shape), np.float32)
    v = np.array(v, dtype=np.float32).reshape(shape)
    pending[name] = v
    specs.append((bool(trainable), name, tuple(shape), init, reg))
    var = Variable(_layer=layer, _key=name, trainable=trainable, name=f"{layer.name}/{name}")
    d.setdefault("_fg_vars", {})[name] = var
    return var


def layer_variable(layer: Any, name: str) -> Variable:
    """The Variable of `layer`'s weight `name` (one object per weight)."""
    vs = layer.__dict__.setdefault("_fg_vars", {})
    v = vs.get(name)
    if v is None:
        tr = name in layer.params or not name in layer.state
        v = vs[name] = Variable(_layer=layer, _key=name, trainable=tr and layer.trainable,
                                name=f"{layer.name}/{name}")
    return v


def _current_value(layer, name, shape, init):
    def initializer(shape_, dtype=None):
        arr = layer.__dict__.get("_fg_pending", {}).pop(name, None)
        if arr is None:
            arr = layer.params.get(name)
        if arr is None:
            arr = layer.state.get(name)
        if arr is not None and tuple(arr.shape) == tuple(shape_):
            return np.array(arr, copy=True)
        try:
            return init(tuple(shape_))
        except TypeError:
            return init(tuple(shape_), np.float32)
    return initializer


# ---------------------------------------------------------------------------- sub-layers
def _scan(obj, out, seen, skip):
    from ..layers.base import Layer
    if isinstance(obj, Layer):
        if id(obj) not in seen and obj is not skip:
            seen.add(id(obj))
            out.append(obj)
    elif isinstance(obj, (list, tuple)):
        for e in obj:
            _scan(e, out, seen, skip)
    elif isinstance(obj, dict):
        for e in obj.values():
            _scan(e, out, seen, skip)


def tracked_sublayers(layer):
    """The layers held as attributes of the layer's owner (assignment order)."""
    owner = layer._fg_owner()
    internal = layer.__dict__.get("_fg_internal", ())
    out: list = []
    seen: set = set()
    for k, v in list(owner.__dict__.items()):
        if k.startswith("_fg") or k in internal or k in ("_inbound_nodes", "_ops",
                                                         "_param_store"):
            continue
        _scan(v, out, seen, layer)
    return out


def param_specs(layer):
    from ..layers.base import ParamSpec
    specs = []
    for trainable, name, shape, init, reg in layer.__dict__.get("_fg_specs", []):
        if trainable:
            specs.append(ParamSpec(name, shape, _current_value(layer, name, shape, init), reg))
    for sub in layer.__dict__.get("_fg_subs", []):
        for s in sub.param_specs():
            specs.append(ParamSpec(f"{sub.name}/{s.name}", s.shape,
                                   _current_value(sub, s.name, s.shape, s.initializer),
                                   s.regularizer))
    return specs


def state_specs(layer):
    from ..layers.base import StateSpec
    specs = []
    for trainable, name, shape, init, reg in layer.__dict__.get("_fg_specs", []):
        if not trainable:
            specs.append(StateSpec(name, shape, _current_value(layer, name, shape, init)))
    for sub in layer.__dict__.get("_fg_subs", []):
        for s in sub.state_specs():
            specs.append(StateSpec(f"{sub.name}/{s.name}", s.shape,
                                   _current_value(sub, s.name, s.shape, s.initializer)))
    return specs


def bind(layer, params, grads, state):
    # the values the layers hold now (add_weight's, a probe store's) are what the
    # new store's initialize() starts from (_current_value)
    _snapshot(layer)
    for sub in layer.__dict__.get("_fg_subs", []):
        _snapshot(sub)
    own_p = {k: v for k, v in params.items() if "/" not in k}
    own_g = {k: v for k, v in grads.items() if "/" not in k}
    own_s = {k: v for k, v in state.items() if "/" not in k}
    layer.params, layer.grads, layer.state = own_p, own_g, own_s
    for sub in layer.__dict__.get("_fg_subs", []):
        pre = sub.name + "/"
        sp = {k[len(pre):]: v for k, v in params.items() if k.startswith(pre)}
        sg = {k[len(pre):]: v for k, v in grads.items() if k.startswith(pre)}
        ss = {k[len(pre):]: v for k, v in state.items() if k.startswith(pre)}
        sub.bind(sp, sg, ss)
        if "_param_store" in sub.__dict__:
            del sub.__dict__["_param_store"]
    # the layer's full views (own + sub-layers) for get_weights / weights
    layer.__dict__["_fg_all"] = (params, grads, state)


def _snapshot(layer):
    pend = layer.__dict__.setdefault("_fg_pending", {})
    for d in (layer.params, layer.state):
        for k, v in d.items():
            if k not in pend:
                pend[k] = np.array(v, copy=True)


def all_weights(layer):
    t = layer.__dict__.get("_fg_all")
    if t is None:
        return [layer.params[s.name] for s in layer.param_specs()] + \
            [layer.state[s.name] for s in layer.state_specs()]
    p, _, s = t
    return [p[x.name] for x in layer.param_specs()] + [s[x.name] for x in layer.state_specs()]


# ---------------------------------------------------------------------------- build
def _accepts(fn, name):
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    return name in sig.parameters or any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())


def engine_build(layer, input_shape, user_build):
    """The engine's build of a traced layer (module docstring, step 1)."""
    from ..layers.base import _as_shape
    multi = layer._multi_input
    if multi:
        shapes = [_as_shape(s, f"{layer.name}: input shape") for s in input_shape]
    else:
        shapes = [_as_shape(input_shape, f"{layer.name}: input shape")]
    if layer.built and layer.__dict__.get("_fg_built"):
        cur = [tuple(s) for s in layer.input_shape] if multi else [tuple(layer.input_shape)]
        if cur != shapes:
            raise ValueError(f"{_owner_name(layer)} was built for input shape {cur}, called on "
                             f"{shapes} (batch axis excluded)")
        return layer.output_shape
    full = [(None,) + tuple(s) for s in shapes]
    if user_build is not None:
        layer.__dict__["_fg_in_user_build"] = True
        try:
            user_build(layer, full if multi else full[0])
        finally:
            layer.__dict__["_fg_in_user_build"] = False
    layer.input_shape = shapes if multi else shapes[0]
    rng = np.random.default_rng(12345)
    probe = [rng.uniform(0.25, 1.0, size=(PROBE_BATCH,) + s).astype(np.float32) for s in shapes]
    prog, y = trace(layer, probe, False)
    if y.ndim < 1 or y.shape[0] != PROBE_BATCH:
        raise ValueError(f"{_owner_name(layer)}: call() must return a batch (batch axis first, "
                         f"kept); for inputs {[p.shape for p in probe]} it returned shape "
                         f"{y.shape}")
    layer.__dict__["_fg_subs"] = tracked_sublayers(layer)
    _check_untracked(layer, prog)
    out = tuple(y.shape[1:])
    layer.output_shape = out
    layer.built = True
    layer.__dict__["_fg_built"] = True
    return out


def _check_untracked(layer, prog):
    subs = {id(s) for s in layer.__dict__.get("_fg_subs", [])}
    for n in prog.nodes:
        if n.kind == "layer" and id(n.layer) not in subs and \
                (n.layer.param_specs() or n.layer.state_specs()):
            raise TracingError(f"{_owner_name(layer)}: layer {n.layer.name!r} is called in call() "
                               "but is not an attribute of the layer; create sub-layers in "
                               "__init__ or build and keep them as attributes "
                               "(self.dense = fg.layers.Dense(...))")


# ---------------------------------------------------------------------------- trace / replay
class Program:
    __slots__ = ("nodes", "slot_kind", "slot_ref", "out", "n_inputs", "need", "n_slots",
                 "input_slots", "weight_slots")

    def __init__(self, tracer, out_slot):
        self.nodes = tracer.nodes
        self.slot_kind = tracer.slot_kind
        self.slot_ref = tracer.slot_ref
        self.n_slots = len(tracer.slot_kind)
        self.out = out_slot
        self.input_slots = [i for i, k in enumerate(tracer.slot_kind) if k == "input"]
        self.weight_slots = [i for i, k in enumerate(tracer.slot_kind) if k == "weight"]
        need = [k == "input" or (k == "weight" and tracer.slot_ref[i].trainable)
                for i, k in enumerate(tracer.slot_kind)]
        for n in self.nodes:
            if n.kind == "layer" and n.layer.param_specs():
                need[n.out] = True
            if any(need[s] for s in n.ins):
                need[n.out] = True
        self.need = need


def trace(layer, xs, training):
    """(Program, output value) of layer.call on arrays xs (the probe)."""
    tracer = Tracer(_owner_name(layer))
    tracer.training = bool(training)
    ins = [tracer.input(i, x) for i, x in enumerate(xs)]
    arg = ins if layer._multi_input else ins[0]
    fn = layer._fg_call_fn()
    kw = {}
    if _accepts(fn, "training"):
        kw["training"] = bool(training)
    _TRACERS.append(tracer)
    try:
        with np.errstate(all="ignore"):
            out = fn(arg, **kw)
    finally:
        _TRACERS.pop()
    if isinstance(out, (list, tuple, dict)):
        raise TracingError(f"{_owner_name(layer)}: call() returned a {type(out).__name__}; a "
                           "traced layer returns one tensor")
    if not isinstance(out, TraceTensor):
        if out is None:
            raise TracingError(f"{_owner_name(layer)}: call() returned None")
        # a constant result (does not depend on the inputs): broadcast it over the batch
        raise TracingError(f"{_owner_name(layer)}: call() returned a {type(out).__name__} that "
                           "does not depend on its inputs")
    if out._tracer is not tracer:
        raise TracingError(f"{_owner_name(layer)}: call() returned a tensor of another trace")
    return Program(tracer, out._slot), out._val


def _program_for(layer, xs, training):
    key = (tuple((x.shape, x.dtype.str) for x in xs), bool(training))
    cache = layer.__dict__.setdefault("_fg_programs", {})
    prog = cache.get(key)
    if prog is None:
        if len(cache) >= MAX_PROGRAMS:
            cache.pop(next(iter(cache)))
        prog, _ = trace(layer, xs, training)
        cache[key] = prog
    return prog


def _sub_ws(ws, i):
    d = ws.__dict__.get("_fg_sub")
    if d is None:
        d = ws.__dict__["_fg_sub"] = {}
    w = d.get(i)
    if w is None:
        from ..engine.workspace import Workspace
        w = d[i] = Workspace()
    return w


def _f32(a):
    a = np.asarray(a)
    if a.dtype != np.float32 or not a.flags.c_contiguous:
        a = np.ascontiguousarray(a, dtype=np.float32)
    return a


def run_forward(prog, xs, training, ws, weights=None, dtype=np.float32):
    """Replay `prog` on inputs xs; returns the values of every slot."""
    vals = [None] * prog.n_slots
    kinds, refs = prog.slot_kind, prog.slot_ref
    for i, k in enumerate(kinds):
        if k == "input":
            vals[i] = xs[refs[i]]
        elif k == "const":
            vals[i] = refs[i]
        elif k == "weight":
            v = refs[i]
            vals[i] = weights[v._key] if weights is not None and v._key in weights else v.value
    for idx, n in enumerate(prog.nodes):
        if n.kind == "op":
            y = n.op.fwd(*[vals[s] for s in n.ins], **n.attrs)
        else:
            tr = training if n.training is None else n.training
            args = [_f32(vals[s]) for s in n.ins]
            y = n.layer.forward(args if n.multi else args[0], bool(tr), _sub_ws(ws, idx))
        vals[n.out] = y
    return vals


def run_backward(prog, vals, dy, ws, need_dx=True):
    """Reverse mode over prog: (grads of the input slots, {weight key: grad})."""
    grads = [None] * prog.n_slots
    grads[prog.out] = dy
    need = prog.need
    done = set()
    for idx in range(len(prog.nodes) - 1, -1, -1):
        n = prog.nodes[idx]
        g = grads[n.out]
        if g is None:
            continue
        if n.kind == "op":
            if n.op.bwd is None:
                continue
            gins = n.op.bwd(g, [vals[s] for s in n.ins], vals[n.out], **n.attrs)
        else:
            layer = n.layer
            want_dx = any(need[s] for s in n.ins)
            g32 = _f32(g)
            if id(layer) in done:
                saved = {k: np.array(v, copy=True) for k, v in _layer_grads(layer).items()}
                dx = layer.backward(g32, _sub_ws(ws, idx), want_dx)
                for k, v in _layer_grads(layer).items():
                    v += saved[k]
            else:
                dx = layer.backward(g32, _sub_ws(ws, idx), want_dx)
            done.add(id(layer))
            if not want_dx:
                continue
            gins = list(dx) if n.multi else [dx]
        for s, gi in zip(n.ins, gins):
            if gi is None or not need[s]:
                continue
            cur = grads[s]
            grads[s] = gi if cur is None else cur + gi
    return grads


def _layer_grads(layer):
    t = layer.__dict__.get("_fg_all")
    return t[1] if t is not None else layer.grads


def _write_weight_grads(layer, prog, grads):
    own = layer.grads
    written = set()
    for s in prog.weight_slots:
        v = prog.slot_ref[s]
        lay = v._layer
        if lay is None or v._pkey not in lay.grads:
            continue
        g = grads[s]
        dst = lay.grads[v._pkey]
        if g is None:
            dst[...] = 0.0
        else:
            dst[...] = np.reshape(g, dst.shape)
        if lay is layer:
            written.add(v._pkey)
    for k, dst in own.items():          # own weights the call did not use: zero gradient
        if k not in written:
            dst[...] = 0.0


# ---------------------------------------------------------------------------- Layer protocol
def forward(layer, x, training, ws):
    xs = [_f32(a) for a in x] if layer._multi_input else [_f32(x)]
    prog = _program_for(layer, xs, training)
    vals = run_forward(prog, xs, training, ws)
    ws._fg_prog = prog
    ws._fg_vals = vals
    y = vals[prog.out]
    return _f32(y)


def backward(layer, dy, ws, need_dx=True):
    prog, vals = ws._fg_prog, ws._fg_vals
    grads = run_backward(prog, vals, dy, ws, need_dx)
    _write_weight_grads(layer, prog, grads)
    for sub in layer.__dict__.get("_fg_subs", []):
        if not sub.trainable:
            for g in sub.grads.values():
                g[...] = 0.0
    if not need_dx:
        return None
    outs = []
    for s in prog.input_slots:
        x = vals[s]
        g = grads[s]
        outs.append(np.zeros_like(x) if g is None else _f32(g))
    return outs if layer._multi_input else outs[0]


# ---------------------------------------------------------------------------- calls
def call_in_trace(layer, inputs, training, tracer):
    """A layer called on traced tensors inside another layer's call."""
    multi = layer._multi_input
    if isinstance(inputs, (list, tuple)) and not multi:
        if is_traced(layer):
            layer._multi_input = multi = True
        elif len(inputs) == 1:
            inputs = inputs[0]
    if training is None:
        training = tracer.training

    def run(v):
        vs = list(v) if multi else [v]
        vs = [_f32(a) for a in vs]
        ensure_built(layer, vs)
        from ..engine.workspace import Workspace
        y = layer.forward(vs if multi else vs[0], bool(training), Workspace())
        return np.array(y, copy=True)
    return tracer.add_layer(layer, inputs, None if training is None else bool(training), multi,
                            run)


def ensure_built(layer, xs):
    """Build `layer` for arrays xs (batch axis first) and give it weights if it
    has none yet (as the eager call does)."""
    multi = layer._multi_input
    shapes = [tuple(x.shape[1:]) for x in xs]
    shape = shapes if multi else shapes[0]
    if not layer.built:
        layer.build(shape)
    if (layer.param_specs() or layer.state_specs()) and not _is_bound(layer):
        from ..engine.params import ParamStore
        from .. import _config
        ParamStore([layer], fresh=True).initialize()
        layer.reset_rng(_config.next_seed())


def _is_bound(layer):
    specs = layer.param_specs()
    if specs and specs[0].name not in (layer.__dict__.get("_fg_all") or (layer.params,))[0]:
        return False
    ss = layer.state_specs()
    if ss and ss[0].name not in (layer.__dict__.get("_fg_all") or (None, None, layer.state))[2]:
        return False
    return True


def layer_variables(layer):
    """The layer's trainable weights as Variables (sub-layers' included)."""
    out: list = []
    for s in layer.param_specs():
        if "/" in s.name and "_fg_subs" in layer.__dict__:
            subname, rest = s.name.split("/", 1)
            sub = next(l for l in layer.__dict__["_fg_subs"] if l.name == subname)
            out.extend(v for v in layer_variables(sub) if v._pkey == rest)
        else:
            out.append(layer_variable(layer, s.name))
    return out


def eager_call_on_tape(layer, xs, training):
    """An eager layer call while a GradientTape records: forward now, the
    layer's backward as the tape node's backward."""
    from ..engine.workspace import Workspace
    multi = layer._multi_input
    ws = Workspace()
    vals = [x.value if isinstance(x, Variable) else x for x in xs]
    arrs = [_f32(np.asarray(v).view(np.ndarray)) for v in vals]
    from .core import Tensor
    y = np.array(layer.forward(arrs if multi else arrs[0], bool(training), ws),
                 copy=True).view(Tensor)
    variables = [v for v in layer_variables(layer) if v.trainable]
    inputs = list(xs) + variables

    def back(g):
        gs = _f32(g)
        need = any(is_watched(x) for x in xs) or True
        dx = layer.backward(gs, ws, need)
        dxs = list(dx) if multi else [dx]
        dxs = [None if d is None else np.array(d, copy=True) for d in dxs]
        gw = [np.array(v._layer.grads[v._pkey], copy=True) for v in variables]
        return dxs + gw
    record_on_tapes(inputs, y, back)
    return y


# ---------------------------------------------------------------------------- compiled plan
_C_ACTS = ("linear", "relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "selu", "silu", "softplus",
           "softsign", "hard_sigmoid", "mish", "exponential", "relu6", "hard_silu")


def lower(layer, ctx):
    """The traced program as a node of the compiled plan, when it is one: y =
    act(matmul(x, W) + b) with the layer's own 2-D W and 1-D b on a rank-2 input
    is the C "dense" kind (the same float operations as the Python replay: GEMM,
    bias add, activation; their backward: activation backward, dW = x^T dz, the
    column sums, dx = dz W^T). Any other program runs on the Python executor."""
    if layer._multi_input or not layer.built:
        raise ctx.unsupported(f"{_owner_name(layer)}: traced call has no C path")
    probe = np.full((PROBE_BATCH,) + tuple(layer.input_shape), 0.5, dtype=np.float32)
    for training in (False, True):          # both modes must be the same dense program
        _program_for(layer, [probe], training)
    progs = list(layer.__dict__.get("_fg_programs", {}).values())
    why = None
    for prog in progs:
        d, why = _dense_pattern(layer, prog)
        if d is None:
            raise ctx.unsupported(f"{_owner_name(layer)}: traced call has no C path ({why})")
    W, b, act = d
    trainable = ctx.trainable(layer)
    regs = {name: reg for _, name, _, _, reg in layer.__dict__.get("_fg_specs", [])}
    l1w, l2w = ctx.regularizer(regs.get(W._pkey))
    l1b, l2b = ctx.regularizer(regs.get(b._pkey)) if b is not None else (0.0, 0.0)
    if not trainable:
        l1w = l2w = l1b = l2b = 0.0
    return dict(kind="dense", act=ctx.act(act), out_act=ctx.out_act(None), trainable=trainable,
                w_off=int(layer.offsets[W._pkey]),
                b_off=int(layer.offsets[b._pkey]) if b is not None else -1,
                l1_w=l1w, l2_w=l2w, l1_b=l1b, l2_b=l2b)


def _dense_pattern(layer, prog):
    nodes = prog.nodes
    kinds, refs = prog.slot_kind, prog.slot_ref
    if len(prog.input_slots) != 1 or not 1 <= len(nodes) <= 3:
        return None, "not a matmul + bias + activation"
    if any(n.kind != "op" for n in nodes):
        return None, "calls other layers"
    xs = prog.input_slots[0]

    def own_weight(s, nd):
        if kinds[s] != "weight":
            return None
        v = refs[s]
        if v._layer is not layer or not v.trainable or v._pkey not in layer.offsets or \
                len(v.shape) != nd:
            return None
        return v
    n0 = nodes[0]
    if n0.op.name != "matmul" or n0.ins[0] != xs:
        return None, "does not start with matmul(inputs, kernel)"
    W = own_weight(n0.ins[1], 2)
    if W is None:
        return None, "matmul's right operand is not a 2-D weight of the layer"
    cur, b, act = n0.out, None, "linear"
    rest = nodes[1:]
    if rest and rest[0].op.name == "add":
        a0, a1 = rest[0].ins
        other = a1 if a0 == cur else a0 if a1 == cur else None
        b = None if other is None else own_weight(other, 1)
        if b is None or b.shape != (W.shape[1],):
            return None, "the add is not a bias of the layer"
        cur = rest[0].out
        rest = rest[1:]
    if rest:
        n = rest[0]
        if n.op.name not in _C_ACTS or n.attrs or n.ins[0] != cur:
            return None, f"{n.op.name} is not an activation with a C path"
        act, cur = n.op.name, n.out
        rest = rest[1:]
    if rest or cur != prog.out:
        return None, "more operations follow"
    return (W, b, act), None
