"""The automatic-gradient core: differentiable ops, Variables, GradientTape,
and the tracer that turns a Layer's ``call`` into a replayable program.

An op (``Op``) is a NumPy forward ``fwd(*xs, **attrs) -> y`` and a backward
``bwd(g, xs, y, **attrs) -> [dx_i or None]`` (gradients already reduced to
each input's shape when the forward broadcast it). ``apply(name, args,
attrs)`` is the one dispatcher every ``fg.math`` function goes through:

- any argument a ``TraceTensor`` (inside a traced ``call``): the op runs on
  the tracer's probe values and is recorded as a node of the trace program;
- any argument a graph ``SymbolicTensor`` (the functional API): the op
  becomes a node of the model graph (a ``MathOp`` layer);
- otherwise eagerly on arrays / ``Variable``s: the forward runs and, when a
  ``GradientTape`` is recording and an input is watched, the op is recorded
  on it.
"""
from __future__ import annotations

from typing import Any, Callable, Literal, NoReturn, Sequence

import numpy as np

__all__ = ["Op", "OPS", "defop", "apply", "Variable", "GradientTape", "TraceTensor", "Tensor",
           "TracingError", "unbroadcast", "active_tapes"]


class TracingError(TypeError):
    """Raised for an operation a traced ``call`` cannot record.

    Examples are Python control flow on a tensor's value or NumPy functions on
    the tensors of a traced call.
    """


# ---------------------------------------------------------------------------- ops
class Op:
    """A differentiable operation: a NumPy forward and its backward.

    Parameters
    ----------
    name : str
        Op name (the key in ``OPS``).
    fwd : callable
        ``fwd(*xs, **attrs) -> y``.
    bwd : callable or None
        ``bwd(g, xs, y, **attrs) -> [dx_i or None]``; None for an op without
        a gradient.
    variadic : bool, default False
        True when the op takes any number of inputs (concatenate, stack).
    """

    __slots__ = ("name", "fwd", "bwd", "variadic")

    def __init__(self, name: str, fwd: Callable[..., Any], bwd: Callable[..., Any] | None,
                 variadic: bool = False) -> None:
        self.name, self.fwd, self.bwd, self.variadic = name, fwd, bwd, variadic


OPS: dict = {}


def defop(name: str, fwd: Callable[..., Any], bwd: Callable[..., Any] | None = None,
          variadic: bool = False) -> Op:
    """Define (or redefine) a differentiable op.

    Parameters
    ----------
    name : str
        Op name, used by ``apply``.
    fwd : callable
        ``fwd(*xs, **attrs) -> y``, on NumPy arrays.
    bwd : callable, optional
        ``bwd(g, xs, y, **attrs) -> [dx_i or None]``, gradients reduced to
        each input's shape; None for an op without a gradient.
    variadic : bool, default False
        True when the op takes any number of inputs.

    Returns
    -------
    Op
        The registered op.
    """
    OPS[name] = Op(name, fwd, bwd, variadic)
    return OPS[name]


def unbroadcast(g: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Sum a gradient down to an input's shape (the reverse of NumPy broadcasting).

    Parameters
    ----------
    g : ndarray
        Gradient with the broadcast shape.
    shape : sequence of int
        Shape of the input that was broadcast.

    Returns
    -------
    ndarray
        ``g`` summed over the broadcast axes, of shape ``shape``.
    """
    shape = tuple(shape)
    if g.shape == shape:
        return g
    nd = g.ndim - len(shape)
    if nd > 0:
        g = g.sum(axis=tuple(range(nd)))
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


# ---------------------------------------------------------------------------- variables
class Variable:
    """A trainable (or non-trainable) array, as Keras 3's ``keras.Variable``.

    A layer's weight (``add_weight``, ``model.trainable_weights``) is a
    Variable whose value is the layer's view into the model's flat parameter
    buffer: assigning writes the buffer in place. Arithmetic on a Variable
    goes through ``fastgrad.math`` and is differentiable.

    Parameters
    ----------
    initializer : array_like, str or callable
        The initial value, or an initializer (name or callable ``shape ->
        array``) called with ``shape``.
    shape : tuple of int, optional
        Shape, required with an initializer.
    dtype : str or numpy.dtype, optional
        Data type; by default float32 for integer and boolean values,
        otherwise the value's dtype.
    trainable : bool, default True
        Whether a ``GradientTape`` watches the variable automatically.
    name : str, optional
        Name (default ``"variable"``).
    _layer, _key : optional
        Internal: bind the variable to a layer's weight.

    Raises
    ------
    ValueError
        When neither a value nor an initializer with a shape is given.

    Examples
    --------
    >>> import fastgrad as fg
    >>> v = fg.Variable([1.0, 2.0], dtype="float32")
    >>> v.shape, v.dtype
    ((2,), 'float32')
    >>> _ = v.assign_add([1.0, 1.0])
    >>> v.numpy()
    array([2., 3.], dtype=float32)
    """

    __array_priority__ = 1000

    def __init__(self, initializer: Any = None, shape: Any = None,
                 dtype: Any = None, trainable: bool = True, name: str | None = None,
                 *, _layer: Any = None, _key: Any = None) -> None:
        self.trainable = bool(trainable)
        self._layer = _layer
        self._pkey = _key
        if _layer is None:
            if callable(initializer) and not isinstance(initializer, np.ndarray):
                if shape is None:
                    raise ValueError("Variable: an initializer needs a shape")
                from .. import initializers
                init = initializers.get(initializer) if isinstance(initializer, str) \
                    else initializer
                val = np.asarray(init(tuple(shape)))
            elif isinstance(initializer, str):
                from .. import initializers
                val = np.asarray(initializers.get(initializer)(tuple(shape)))
            else:
                if initializer is None:
                    raise ValueError("Variable: give an initial value")
                val = np.asarray(initializer.value if isinstance(initializer, Variable)
                                 else initializer)
            dt = np.dtype(dtype) if dtype is not None else (
                np.float32 if val.dtype.kind in "fiub" and val.dtype != np.float64 else val.dtype)
            if dtype is None and val.dtype.kind in "iub":
                dt = np.dtype(np.float32)
            self._own: Any = np.array(val, dtype=dt, copy=True)
        else:
            self._own = None
        self.name = name or (f"{_layer.name}/{_key}" if _layer is not None else "variable")
        self._key = ("p", id(_layer), _key) if _layer is not None else ("v", id(self))

    # -- value
    @property
    def value(self) -> np.ndarray:
        """The variable's array (not a copy: writing to it changes the variable)."""
        if self._layer is not None:
            lay = self._layer
            arr = lay.params.get(self._pkey)
            if arr is None:
                arr = lay.state.get(self._pkey)
            if arr is None:
                pending = getattr(lay, "_fg_pending", {}).get(self._pkey)
                if pending is not None:
                    return pending
                raise ValueError(f"variable {self.name!r}: layer {lay.name!r} is not built")
            return arr
        return self._own

    def numpy(self) -> np.ndarray:
        """Return a copy of the value.

        Returns
        -------
        ndarray
            A copy of the variable's array.
        """
        return np.array(self.value, copy=True)

    @property
    def shape(self) -> tuple:
        """The shape of the value."""
        return tuple(self.value.shape)

    @property
    def dtype(self) -> str:
        """The dtype's name, e.g. ``"float32"``."""
        return str(self.value.dtype)

    @property
    def ndim(self) -> int:
        """The number of axes."""
        return self.value.ndim

    @property
    def size(self) -> int:
        """The number of elements."""
        return self.value.size

    @property
    def path(self) -> str:
        """The variable's name (Keras's ``path``)."""
        return self.name

    def _no_trace(self, value: Any, what: str) -> None:
        if isinstance(value, TraceTensor):
            raise TracingError(f"{value._tracer.owner_name}: Variable.{what} of {self.name!r} with "
                               "a traced tensor inside call(): a traced call cannot update "
                               "state; compute the value outside the traced call, or keep it "
                               "in a layer with its own forward/backward")

    def assign(self, value: Any) -> Variable:
        """Write a new value in place.

        Parameters
        ----------
        value : array_like or Variable
            The new value, of the variable's shape (or the same size).

        Returns
        -------
        Variable
            This variable.

        Raises
        ------
        ValueError
            When the value's shape does not fit.
        TracingError
            When called with a tensor of a traced ``call``.
        """
        self._no_trace(value, "assign")
        v = value.value if isinstance(value, Variable) else np.asarray(value)
        cur = self.value
        if v.shape != cur.shape and v.size != cur.size:
            raise ValueError(f"Variable {self.name!r}: assign of shape {v.shape} to a variable "
                             f"of shape {cur.shape}")
        cur[...] = v.reshape(cur.shape)
        return self

    def assign_add(self, value: Any) -> Variable:
        """Add to the value in place.

        Parameters
        ----------
        value : array_like or Variable
            The increment (broadcast to the variable's shape).

        Returns
        -------
        Variable
            This variable.
        """
        self._no_trace(value, "assign_add")
        cur = self.value
        cur[...] = cur + np.asarray(value.value if isinstance(value, Variable) else value)
        return self

    def assign_sub(self, value: Any) -> Variable:
        """Subtract from the value in place.

        Parameters
        ----------
        value : array_like or Variable
            The decrement (broadcast to the variable's shape).

        Returns
        -------
        Variable
            This variable.
        """
        self._no_trace(value, "assign_sub")
        cur = self.value
        cur[...] = cur - np.asarray(value.value if isinstance(value, Variable) else value)
        return self

    def __array__(self, dtype=None, copy=None):
        v = self.value
        if dtype is not None:
            return v.astype(dtype)
        return np.array(v, copy=True) if copy else v

    def __getitem__(self, idx):
        from .. import math as _m
        return _m.getitem(self, idx)

    def __setitem__(self, idx, value):
        self.value[idx] = value

    def __len__(self):
        return len(self.value)

    def __repr__(self):
        return (f"<Variable path={self.name}, shape={self.shape}, dtype={self.dtype}, "
                f"value={np.array2string(self.value, threshold=6)}>")

    def __eq__(self, other):
        from .. import math as _m
        return _m.equal(self, other)

    def __ne__(self, other):
        from .. import math as _m
        return _m.not_equal(self, other)

    __hash__ = object.__hash__


# ---------------------------------------------------------------------------- eager tensors
_UFUNC_OPS = {np.add: "add", np.subtract: "subtract", np.multiply: "multiply",
              np.true_divide: "divide", np.power: "power", np.negative: "negative",
              np.exp: "exp", np.log: "log", np.sqrt: "sqrt", np.square: "square",
              np.absolute: "abs", np.maximum: "maximum", np.minimum: "minimum", np.tanh: "tanh",
              np.matmul: "matmul", np.log1p: "log1p", np.expm1: "expm1", np.sin: "sin",
              np.cos: "cos", np.reciprocal: "reciprocal", np.equal: "equal",
              np.not_equal: "not_equal", np.less: "less", np.less_equal: "less_equal",
              np.greater: "greater", np.greater_equal: "greater_equal"}


class Tensor(np.ndarray):
    """A NumPy array computed while a ``GradientTape`` records.

    What ``fg.math`` (and layers, models, losses) return while a tape records:
    the array remembers it was computed on the tape, so Python's operators,
    NumPy ufuncs (``np.exp(t)``, ``t * 2``) and the methods reshape, sum, mean,
    max, min, transpose and indexing on it are recorded too. Without a
    recording tape results are plain arrays.

    Parameters
    ----------
    shape, dtype, buffer, offset, strides, order : optional
        As for ``numpy.ndarray``; a Tensor is normally made with
        ``array.view(Tensor)``.
    """

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = _UFUNC_OPS.get(ufunc)
        if name is not None and method == "__call__" and not kwargs and _recording():
            return apply(name, list(inputs))
        base = [i.view(np.ndarray) if isinstance(i, Tensor) else i for i in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, Tensor) else o
                                  for o in kwargs["out"])
        return getattr(ufunc, method)(*base, **kwargs)

    def __getitem__(self, idx):
        if _recording():
            from .. import math as _m
            return _m.getitem(self, idx)
        return self.view(np.ndarray)[idx]

    def _m(self, name, *a, **k):
        from .. import math as _m
        return getattr(_m, name)(self, *a, **k)

    def reshape(self, *shape, **k):
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = shape[0]
        return self._m("reshape", shape) if _recording() else \
            self.view(np.ndarray).reshape(shape, **k)

    def sum(self, axis: Any = None, keepdims: bool = False,  # type: ignore[override]
            **k: Any) -> Any:
        k = {a: b for a, b in k.items() if b is not None and not (a == "initial" and b is np._NoValue)
             and b is not np._NoValue}
        return self._m("sum", axis, keepdims) if _recording() and not k else \
            self.view(np.ndarray).sum(axis=axis, keepdims=keepdims, **k)

    def mean(self, axis: Any = None, keepdims: bool = False,  # type: ignore[override]
             **k: Any) -> Any:
        k = {a: b for a, b in k.items() if b is not None and not (a == "initial" and b is np._NoValue)
             and b is not np._NoValue}
        return self._m("mean", axis, keepdims) if _recording() and not k else \
            self.view(np.ndarray).mean(axis=axis, keepdims=keepdims, **k)

    def max(self, axis: Any = None, keepdims: bool = False,  # type: ignore[override]
            **k: Any) -> Any:
        k = {a: b for a, b in k.items() if b is not None and not (a == "initial" and b is np._NoValue)
             and b is not np._NoValue}
        return self._m("max", axis, keepdims) if _recording() and not k else \
            self.view(np.ndarray).max(axis=axis, keepdims=keepdims, **k)

    def min(self, axis: Any = None, keepdims: bool = False,  # type: ignore[override]
            **k: Any) -> Any:
        k = {a: b for a, b in k.items() if b is not None and not (a == "initial" and b is np._NoValue)
             and b is not np._NoValue}
        return self._m("min", axis, keepdims) if _recording() and not k else \
            self.view(np.ndarray).min(axis=axis, keepdims=keepdims, **k)

    def transpose(self, *axes):
        if len(axes) == 1 and not isinstance(axes[0], (int, np.integer)):
            axes = axes[0]
        return self._m("transpose", axes or None) if _recording() else \
            self.view(np.ndarray).transpose(*((axes,) if axes else ()))

    @property
    def T(self) -> Any:
        """The transpose (recorded on the tape)."""
        return self.transpose()

    def numpy(self) -> np.ndarray:
        """Return a plain NumPy copy.

        Returns
        -------
        ndarray
            A copy that is not a Tensor.
        """
        return np.array(self.view(np.ndarray), copy=True)


def _recording():
    for t in _TAPES:
        if t._recording:
            return True
    return False


def as_tensor(y):
    """y as a Tensor (a new object) when a tape records, else as it is."""
    return y.view(Tensor) if _recording() and isinstance(y, np.ndarray) else y


# ---------------------------------------------------------------------------- tapes
_TAPES: list = []


def active_tapes() -> list:
    """List the tapes that are recording now.

    Returns
    -------
    list of GradientTape
        The recording tapes, outermost first.
    """
    return [t for t in _TAPES if t._recording]


class GradientTape:
    """Record eager operations for reverse-mode differentiation.

    As Keras / TensorFlow's ``GradientTape``: operations of ``fg.math``,
    layers, models and losses run inside ``with GradientTape() as tape:`` are
    recorded when an input is watched, and ``tape.gradient`` differentiates
    a target with respect to sources. Trainable Variables are watched
    automatically (``watch_accessed_variables``); ``watch(x)`` watches arrays
    and non-trainable Variables.

    Parameters
    ----------
    persistent : bool, default False
        False: the tape answers a single ``gradient`` call. True: any number
        of calls (and the tape may be entered again).
    watch_accessed_variables : bool, default True
        Watch every trainable Variable an operation reads.

    Raises
    ------
    RuntimeError
        When a non-persistent tape is entered or asked for gradients twice.

    Examples
    --------
    >>> import numpy as np
    >>> import fastgrad as fg
    >>> w = fg.Variable(np.array([1.0, 2.0, 3.0], dtype=np.float32))
    >>> with fg.GradientTape() as tape:
    ...     loss = fg.math.sum(fg.math.square(w))
    >>> tape.gradient(loss, w)
    array([2., 4., 6.], dtype=float32)

    Watching a plain array:

    >>> x = np.float32(3.0) * np.ones(2, dtype=np.float32)
    >>> with fg.GradientTape() as tape:
    ...     tape.watch(x)
    ...     y = fg.math.sum(fg.math.square(x))
    >>> tape.gradient(y, x)
    array([6., 6.], dtype=float32)
    """

    def __init__(self, persistent: bool = False, watch_accessed_variables: bool = True) -> None:
        self.persistent = bool(persistent)
        self.watch_accessed = bool(watch_accessed_variables)
        self._recording = False
        self._nodes: list = []      # (in_keys, out_key, backward(g) -> [grads])
        self._tracked: dict = {}    # key -> object (keeps ids alive)
        self._used = False

    def __enter__(self) -> GradientTape:
        if self._used and not self.persistent:
            raise RuntimeError("GradientTape: a non-persistent tape records once; make a new one")
        self._recording = True
        _TAPES.append(self)
        return self

    def __exit__(self, *exc: Any) -> Literal[False]:
        self._recording = False
        if self in _TAPES:
            _TAPES.remove(self)
        return False

    def stop_recording(self) -> Any:
        """Pause recording inside a ``with`` block.

        Returns
        -------
        context manager
            Operations inside ``with tape.stop_recording():`` are not recorded.
        """
        tape = self

        class _Pause:
            def __enter__(self_):
                self_.was = tape._recording
                tape._recording = False

            def __exit__(self_, *e):
                tape._recording = self_.was
                return False
        return _Pause()

    def reset(self) -> None:
        """Forget everything recorded and watched so far."""
        self._nodes = []
        self._tracked = {}

    def watch(self, x: Any) -> None:
        """Watch arrays or Variables so that gradients with respect to them exist.

        Parameters
        ----------
        x : ndarray, Variable or nested list / tuple / dict of them
            What to watch.

        Raises
        ------
        TypeError
            For anything but arrays and Variables.
        """
        for t in _flatten(x):
            if isinstance(t, Variable):
                self._tracked[t._key] = t
            elif isinstance(t, np.ndarray):
                self._tracked[id(t)] = t
            else:
                raise TypeError(f"GradientTape.watch: expects arrays or fg.Variables, got "
                                f"{type(t).__name__} (convert Python numbers with np.asarray)")

    def watched_variables(self) -> list:
        """List the Variables this tape watches.

        Returns
        -------
        list of Variable
            The watched Variables, in the order they were first watched.
        """
        return [v for v in self._tracked.values() if isinstance(v, Variable)]

    # -- recording
    def _key_of(self, a: Any) -> Any:
        """The tracking key of an input, or None when it is not watched."""
        k: Any
        if isinstance(a, Variable):
            k = a._key
            if k in self._tracked:
                return k
            if self.watch_accessed and a.trainable:
                self._tracked[k] = a
                return k
            return None
        k = id(a)
        return k if k in self._tracked else None

    def _record(self, inputs, out, backward):
        keys = [self._key_of(a) for a in inputs]
        if all(k is None for k in keys):
            return False
        self._nodes.append((keys, id(out), backward))
        self._tracked[id(out)] = out
        return True

    # -- gradient
    def gradient(self, target: Any, sources: Any, output_gradients: Any = None,
                 unconnected_gradients: str = "none") -> Any:
        """Differentiate a target with respect to sources.

        Parameters
        ----------
        target : array or Variable, or a list of them
            What to differentiate (a list: the sum of the targets).
        sources : Variable, watched array, or nested list / tuple / dict of them
            What to differentiate with respect to.
        output_gradients : array or list of arrays, optional
            Gradient seeded at each target (default ones).
        unconnected_gradients : {"none", "zero"}, default "none"
            What a source the target does not depend on gets: None, or zeros.

        Returns
        -------
        ndarray, None or nested structure
            Gradients in the structure of ``sources``.

        Raises
        ------
        RuntimeError
            On a second call to a non-persistent tape.
        TypeError
            For a source that is neither a Variable nor an array.
        """
        if self._used and not self.persistent:
            raise RuntimeError("GradientTape.gradient can only be called once on a "
                               "non-persistent tape; use GradientTape(persistent=True)")
        self._used = True
        targets = _flatten(target)
        ogs = _flatten(output_gradients) if output_gradients is not None else [None] * len(targets)
        grads: dict = {}
        for t, og in zip(targets, ogs):
            k: Any
            if isinstance(t, Variable):
                k = t._key
                val = t.value
            else:
                k = id(t)
                val = np.asarray(t).view(np.ndarray) if isinstance(t, np.ndarray) else np.asarray(t)
            g: Any = np.ones_like(val) if og is None else np.asarray(og, dtype=val.dtype)
            if k in grads:
                grads[k] = grads[k] + g
            else:
                grads[k] = g
        was = self._recording
        self._recording = False
        try:
            for keys, ok, backward in reversed(self._nodes):
                g = grads.get(ok)
                if g is None:
                    continue
                gins = backward(g)
                for k, gi in zip(keys, gins):
                    if k is None or gi is None:
                        continue
                    cur = grads.get(k)
                    grads[k] = gi if cur is None else cur + gi
        finally:
            self._recording = was

        def one(s: Any) -> Any:
            g: Any
            if isinstance(s, Variable):
                g = grads.get(s._key)
                if g is not None and g.shape != s.value.shape:
                    g = g.reshape(s.value.shape)
            elif isinstance(s, np.ndarray):
                g = grads.get(id(s))
            else:
                raise TypeError(f"GradientTape.gradient: sources must be fg.Variables or "
                                f"watched arrays, got {type(s).__name__}")
            if g is None and unconnected_gradients == "zero":
                g = np.zeros_like(np.asarray(s))
            if g is not None:
                # own the result: copy views (of workspaces, of other gradients) and
                # arrays handed out for another source already
                if isinstance(g, Tensor) or not g.flags.owndata or id(g) in handed:
                    g = np.array(g, copy=True)
                handed.add(id(g))
            return g
        handed: set = set()
        out = _map_structure(one, sources)
        if not self.persistent:
            self._nodes = []
            self._tracked = {}
        return out

    def jacobian(self, target: Any, sources: Any) -> Any:
        """Compute the Jacobian of a target with respect to sources.

        Parameters
        ----------
        target : array
            The function value.
        sources : Variable, watched array, or nested list / tuple / dict of them
            What to differentiate with respect to.

        Returns
        -------
        ndarray or nested structure
            For each source, an array of shape ``target.shape + source.shape``.
        """
        raise NotImplementedError("GradientTape.jacobian is not implemented in fastgrad")


def _flatten(x):
    if isinstance(x, (list, tuple)):
        out = []
        for e in x:
            out.extend(_flatten(e))
        return out
    if isinstance(x, dict):
        out = []
        for k in x:
            out.extend(_flatten(x[k]))
        return out
    return [x]


def _map_structure(fn, x):
    if isinstance(x, list):
        return [_map_structure(fn, e) for e in x]
    if isinstance(x, tuple):
        vals = [_map_structure(fn, e) for e in x]
        return type(x)(*vals) if hasattr(x, "_fields") else tuple(vals)
    if isinstance(x, dict):
        return {k: _map_structure(fn, v) for k, v in x.items()}
    if isinstance(x, (zip, map)) or (hasattr(x, "__iter__") and not isinstance(
            x, (np.ndarray, Variable, str)) and not hasattr(x, "shape")):
        return [_map_structure(fn, e) for e in x]
    return fn(x)


def record_on_tapes(inputs, out, backward):
    """Record a computed node on every recording tape that watches an input."""
    for t in _TAPES:
        if t._recording:
            t._record(inputs, out, backward)


def is_watched(x: Any) -> bool:
    for t in _TAPES:
        if t._recording:
            if isinstance(x, Variable):
                if x._key in t._tracked or (t.watch_accessed and x.trainable):
                    return True
            elif id(x) in t._tracked:
                return True
    return False


# ---------------------------------------------------------------------------- tracing
class TraceTensor:
    """A tensor inside a traced ``call``.

    Its shape and dtype are known (from the probe run of the trace); its
    value is a placeholder for every batch of that signature. Python's
    operators on it call ``fg.math``; converting it to a NumPy array or
    branching on its value raises ``TracingError``.

    Parameters
    ----------
    tracer : Tracer
        The trace that owns the tensor.
    slot : int
        The tensor's slot in the trace program.
    val : ndarray
        The probe value.
    """

    __array_priority__ = 1000
    __slots__ = ("_tracer", "_slot", "_val")

    def __init__(self, tracer: Any, slot: int, val: np.ndarray) -> None:
        self._tracer, self._slot, self._val = tracer, slot, val

    @property
    def shape(self) -> tuple:
        """The shape (batch axis included) from the probe run."""
        return tuple(self._val.shape)

    @property
    def dtype(self) -> str:
        """The dtype's name."""
        return str(self._val.dtype)

    @property
    def ndim(self) -> int:
        """The number of axes."""
        return self._val.ndim

    def __repr__(self):
        return f"<TraceTensor shape={self.shape} dtype={self.dtype} in {self._tracer.owner_name}>"

    # -- what a trace cannot record
    def _refuse(self, what: str, hint: str) -> NoReturn:
        raise TracingError(f"{self._tracer.owner_name}: {what} on a traced tensor {self.shape} "
                           f"inside call(): {hint}")

    def __bool__(self):
        self._refuse("Python control flow (bool(), if/while/and/or)",
                     "the value is not known when the call is traced; use fg.math.where(...) "
                     "for value-dependent choices")

    def __float__(self):
        self._refuse("float()", "the value is not known when the call is traced")

    def __int__(self):
        self._refuse("int()", "the value is not known when the call is traced")

    def __index__(self):
        self._refuse("use as an index", "the value is not known when the call is traced; use "
                     "fg.math.take")

    def __iter__(self):
        self._refuse("iteration", "use fg.math.split / unstack by slicing with constant indices")

    def __len__(self):
        self._refuse("len()", "use x.shape")

    def __array__(self, *a, **k):
        self._refuse("conversion to a NumPy array (np.asarray or a NumPy function)",
                     "use the fg.math function of the same name, whose gradient is known")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        self._refuse(f"NumPy function np.{ufunc.__name__}",
                     f"use fg.math.{ufunc.__name__} (or the fg.math equivalent), whose gradient "
                     "is known")

    def __array_function__(self, func, types, args, kwargs):
        self._refuse(f"NumPy function np.{func.__name__}",
                     f"use fg.math.{func.__name__} (or the fg.math equivalent), whose gradient "
                     "is known")

    def numpy(self) -> np.ndarray:
        """Refuse: values do not exist while a call is traced.

        Returns
        -------
        ndarray
            Never returns.

        Raises
        ------
        TracingError
            Always.
        """
        self._refuse(".numpy()", "values do not exist while the call is traced")


def _install_operators(cls):
    """Python operators on `cls` (TraceTensor, graph SymbolicTensor) call fg.math."""
    def binop(name, swap=False):
        def f(self, other):
            from .. import math as _m
            fn = getattr(_m, name)
            return fn(other, self) if swap else fn(self, other)
        return f
    for dunder, name in (("add", "add"), ("sub", "subtract"), ("mul", "multiply"),
                         ("truediv", "divide"), ("pow", "power"), ("matmul", "matmul"),
                         ("floordiv", "floor_divide"), ("mod", "mod")):
        setattr(cls, f"__{dunder}__", binop(name))
        setattr(cls, f"__r{dunder}__", binop(name, swap=True))
    for dunder, name in (("lt", "less"), ("le", "less_equal"), ("gt", "greater"),
                         ("ge", "greater_equal")):
        setattr(cls, f"__{dunder}__", binop(name))

    def neg(self):
        from .. import math as _m
        return _m.negative(self)

    def pos(self):
        return self

    def absf(self):
        from .. import math as _m
        return _m.abs(self)

    def getitem(self, idx):
        from .. import math as _m
        return _m.getitem(self, idx)

    cls.__neg__ = neg
    cls.__pos__ = pos
    cls.__abs__ = absf
    cls.__getitem__ = getitem

    def T(self):
        """The transpose (``fg.math.transpose``)."""
        from .. import math as _m
        return _m.transpose(self)
    cls.T = property(T)


_install_operators(TraceTensor)


class TraceNode:
    __slots__ = ("kind", "op", "attrs", "ins", "out", "layer", "training", "multi")

    def __init__(self, kind, ins, out, op=None, attrs=None, layer=None, training=None,
                 multi=False):
        self.kind, self.ins, self.out = kind, list(ins), out
        self.op, self.attrs, self.layer = op, attrs or {}, layer
        self.training, self.multi = training, multi


class Tracer:
    """Records one trace of a call: slots (inputs, constants, weights, node
    outputs) and nodes in call order."""

    def __init__(self, owner_name):
        self.owner_name = owner_name
        self.training = False      # the training flag of the traced call (set by trace())
        self.slot_kind: list = []        # "input" | "const" | "weight" | "node"
        self.slot_ref = []         # input index | constant array | Variable | None
        self.nodes = []
        self._const_ids = {}
        self._var_slots = {}

    def _new_slot(self, kind, ref):
        self.slot_kind.append(kind)
        self.slot_ref.append(ref)
        return len(self.slot_kind) - 1

    def input(self, i, val):
        return TraceTensor(self, self._new_slot("input", i), val)

    def slot_of(self, a):
        """(slot, probe value) of an argument of a recorded op."""
        if isinstance(a, TraceTensor):
            if a._tracer is not self:
                raise TracingError(f"{self.owner_name}: a tensor of another trace "
                                   f"({a._tracer.owner_name}) was used inside this call")
            return a._slot, a._val
        if isinstance(a, Variable):
            s = self._var_slots.get(a._key)
            if s is None:
                s = self._var_slots[a._key] = self._new_slot("weight", a)
            return s, a.value
        arr = np.asarray(a)
        k = id(a)
        hit = self._const_ids.get(k)
        if hit is not None and hit[1] is a:
            return hit[0], self.slot_ref[hit[0]]
        s = self._new_slot("const", arr)
        self._const_ids[k] = (s, a)
        return s, arr

    def add_op(self, op, args, attrs):
        slots, vals = zip(*[self.slot_of(a) for a in args]) if args else ((), ())
        with np.errstate(all="ignore"):
            y = op.fwd(*vals, **attrs)
        y = np.asarray(y)
        out = self._new_slot("node", None)
        self.nodes.append(TraceNode("op", slots, out, op=op, attrs=attrs))
        return TraceTensor(self, out, y)

    def add_layer(self, layer, inputs, training, multi, run):
        """A sub-layer call: `run(vals) -> y` computes the probe value."""
        ts = list(inputs) if multi else [inputs]
        slots, vals = zip(*[self.slot_of(a) for a in ts])
        y = np.asarray(run(list(vals) if multi else vals[0]))
        out = self._new_slot("node", None)
        self.nodes.append(TraceNode("layer", slots, out, layer=layer, training=training,
                                    multi=multi))
        return TraceTensor(self, out, y)


_TRACERS: list = []


# ---------------------------------------------------------------------------- dispatch
def _is_graph_symbolic(a):
    from ..engine.graph import SymbolicTensor
    return isinstance(a, SymbolicTensor)


def _value(a):
    if isinstance(a, Variable):
        return a.value
    if isinstance(a, Tensor):
        return a.view(np.ndarray)
    return a


def apply(name: str, args: Sequence[Any], attrs: dict | None = None) -> Any:
    """Run a registered op on its arguments, whatever their kind.

    Parameters
    ----------
    name : str
        Name of an op in ``OPS``.
    args : sequence
        Arrays, numbers, Variables, traced tensors or graph tensors.
    attrs : dict, optional
        Keyword attributes of the op (axis, ...).

    Returns
    -------
    ndarray, Tensor, TraceTensor or SymbolicTensor
        The result: recorded on a trace, a model graph or a tape as the
        module docstring describes.
    """
    op = OPS[name]
    attrs = attrs or {}
    for a in args:
        if isinstance(a, TraceTensor):
            return a._tracer.add_op(op, args, attrs)
    for a in args:
        if _is_graph_symbolic(a):
            from .oplayer import symbolic_op
            return symbolic_op(op, args, attrs)
    vals = [_value(a) for a in args]
    if any(isinstance(v, (list, tuple)) for v in vals):
        vals = [np.asarray(v) if isinstance(v, (list, tuple)) else v for v in vals]
    y = op.fwd(*vals, **attrs)
    if not isinstance(y, np.ndarray):
        y = np.asarray(y)
    if _TAPES and _recording():
        out = y.view(Tensor)
        if op.bwd is not None:
            def backward(g, _op=op, _vals=vals, _y=y, _attrs=attrs):
                return _op.bwd(g, _vals, _y, **_attrs)
            record_on_tapes(args, out, backward)
        return out
    if any(y is v for v in vals):
        y = y.view()
    return y

_install_operators(Variable)
