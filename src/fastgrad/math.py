"""Differentiable functions (fg.math).

Keras's ``keras.ops``; in fastgrad ``fg.ops`` is the kernel API, so the
differentiable layer is ``fg.math``.

Every function takes arrays, Python numbers, ``fg.Variable`` objects, the tensors
of a traced ``call`` and the symbolic tensors of the functional API, with
NumPy broadcasting. Each has a NumPy forward and a backward (docs/autodiff.md);
the activations, softmax / log_softmax and matmul use the active backend's
kernels on float32 (C on the native backend) and the NumPy reference on
float64. Comparisons, ``argmax`` / ``argmin``, ``one_hot`` and ``cast`` to an
integer type have no gradient.
"""
from __future__ import annotations

import builtins
from typing import Any, Callable, Sequence

import numpy as np

from .autodiff.core import apply, defop, unbroadcast, OPS

__all__ = ["matmul", "add", "subtract", "multiply", "divide", "negative", "power", "exp", "log",
           "sqrt", "square", "abs", "maximum", "minimum", "clip", "where", "tanh", "sigmoid",
           "relu", "softmax", "log_softmax", "sum", "mean", "max", "min", "logsumexp",
           "reshape", "transpose", "expand_dims", "squeeze", "concatenate", "stack", "split",
           "getitem", "take", "one_hot", "cast", "equal", "not_equal", "less", "less_equal",
           "greater", "greater_equal", "argmax", "argmin", "floor_divide", "mod", "sign",
           "log1p", "expm1", "sin", "cos", "reciprocal", "stop_gradient", "convert_to_tensor",
           "linear", "gelu", "gelu_tanh", "leaky_relu", "elu", "selu", "silu", "swish",
           "softplus", "softsign", "hard_sigmoid", "mish", "exponential", "relu6", "hard_silu",
           "hard_swish", "var", "std", "norm", "dot", "flatten", "square_difference"]

_numpy_ops = None


def _ops_for(x):
    """The kernels for x: the active backend on float32, the NumPy reference otherwise."""
    global _numpy_ops
    if x.dtype == np.float32:
        from . import _config
        return _config.get_ops()
    if _numpy_ops is None:
        from .backend.numpy_ops import NumpyOps
        _numpy_ops = NumpyOps()
    return _numpy_ops


def _f(x):
    """x as a float array (ints and bools become float32)."""
    x = np.asarray(x)
    if x.dtype.kind not in "fc":
        x = x.astype(np.float32)
    return x


def _ub(g, x):
    return unbroadcast(g, np.shape(x))


# ============================================================================ element-wise binary
def _ub_add(g, x):
    """unbroadcast for add: a bias (n,) of a float32 (rows, n) sum uses the backend's
    column-sum kernel, as the Dense layer's backward does (same bits)."""
    shp = np.shape(x)
    if g.ndim == 2 and g.dtype == np.float32 and len(shp) == 1 and shp[0] == g.shape[1] \
            and g.shape[0] != 1:
        from . import _config
        return _config.get_ops().sum_rows(np.ascontiguousarray(g))
    return unbroadcast(g, shp)


defop("add", lambda a, b: np.add(a, b),
      lambda g, xs, y: [_ub_add(g, xs[0]), _ub_add(g, xs[1])])
defop("subtract", lambda a, b: np.subtract(a, b),
      lambda g, xs, y: [_ub(g, xs[0]), _ub(-g, xs[1])])
defop("multiply", lambda a, b: np.multiply(a, b),
      lambda g, xs, y: [_ub(g * xs[1], xs[0]), _ub(g * xs[0], xs[1])])
defop("divide", lambda a, b: np.true_divide(a, b),
      lambda g, xs, y: [_ub(g / xs[1], xs[0]), _ub(-g * y / xs[1], xs[1])])


def _pow_bwd(g, xs, y):
    a, b = xs
    ga = _ub(g * b * np.power(a, b - 1), a)
    gb = None
    if np.ndim(b) or not isinstance(b, (int, float)):
        with np.errstate(all="ignore"):
            la = np.where(a > 0, np.log(np.where(a > 0, a, 1)), 0)
        gb = _ub(g * y * la, b)
    return [ga, gb]


defop("power", lambda a, b: np.power(a, b), _pow_bwd)


def _minmax_bwd(pick_first):
    def bwd(g, xs, y):
        a, b = xs
        ma = np.asarray(pick_first(a, b))
        return [_ub(g * ma, a), _ub(g * (1 - ma), b)]
    return bwd


defop("maximum", lambda a, b: np.maximum(a, b),
      _minmax_bwd(lambda a, b: np.greater_equal(a, b)))
defop("minimum", lambda a, b: np.minimum(a, b),
      _minmax_bwd(lambda a, b: np.less_equal(a, b)))
defop("floor_divide", lambda a, b: np.floor_divide(a, b), None)
defop("mod", lambda a, b: np.mod(a, b),
      lambda g, xs, y: [_ub(g, xs[0]), _ub(-g * np.floor_divide(xs[0], xs[1]), xs[1])])
defop("square_difference", lambda a, b: np.square(np.subtract(a, b)),
      lambda g, xs, y: [_ub(2 * g * (xs[0] - xs[1]), xs[0]), _ub(-2 * g * (xs[0] - xs[1]), xs[1])])

# ============================================================================ element-wise unary
defop("negative", lambda x: np.negative(x), lambda g, xs, y: [-g])
defop("exp", lambda x: np.exp(x), lambda g, xs, y: [g * y])
defop("log", lambda x: np.log(x), lambda g, xs, y: [g / xs[0]])
defop("log1p", lambda x: np.log1p(x), lambda g, xs, y: [g / (1 + xs[0])])
defop("expm1", lambda x: np.expm1(x), lambda g, xs, y: [g * (y + 1)])
defop("sqrt", lambda x: np.sqrt(x), lambda g, xs, y: [g / (2 * y)])
defop("square", lambda x: np.square(x), lambda g, xs, y: [g * 2 * xs[0]])
defop("abs", lambda x: np.abs(x), lambda g, xs, y: [g * np.sign(xs[0])])
defop("sign", lambda x: np.sign(x), None)
defop("sin", lambda x: np.sin(x), lambda g, xs, y: [g * np.cos(xs[0])])
defop("cos", lambda x: np.cos(x), lambda g, xs, y: [-g * np.sin(xs[0])])
defop("reciprocal", lambda x: np.reciprocal(x), lambda g, xs, y: [-g * y * y])
defop("stop_gradient", lambda x: np.array(x, copy=True), lambda g, xs, y: [None])
defop("identity", lambda x: np.array(x, copy=True), lambda g, xs, y: [g])


def _clip_fwd(x, lo, hi):
    return np.clip(x, lo, hi)


def _clip_bwd(g, xs, y):
    x, lo, hi = xs
    inside = (np.greater_equal(x, lo) & np.less_equal(x, hi))
    return [_ub(g * inside, x), None, None]


defop("clip", _clip_fwd, _clip_bwd)


def _where_bwd(g, xs, y):
    c, a, b = xs
    c = np.asarray(c).astype(bool)
    return [None, _ub(np.where(c, g, 0).astype(g.dtype), a),
            _ub(np.where(c, 0, g).astype(g.dtype), b)]


defop("where", lambda c, a, b: np.where(np.asarray(c).astype(bool), a, b), _where_bwd)

# ============================================================================ activations
_ACT_NAMES = ("linear", "relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "leaky_relu", "elu",
              "selu", "silu", "softplus", "softsign", "hard_sigmoid", "mish", "exponential",
              "relu6", "hard_silu")


def _act_fwd(name):
    def fwd(x, **p):
        x = np.ascontiguousarray(_f(x))
        ops = _ops_for(x)
        return ops.activation(name, x, out=np.empty_like(x), **p)
    return fwd


def _act_bwd(name):
    def bwd(g, xs, y, **p):
        x = np.ascontiguousarray(_f(xs[0]))
        g = np.ascontiguousarray(g, dtype=x.dtype)
        ops = _ops_for(x)
        return [ops.backprop_activation(name, g, np.ascontiguousarray(y, dtype=x.dtype), x,
                                        out=np.empty_like(x), **p)]
    return bwd


for _n in _ACT_NAMES:
    defop(_n, _act_fwd(_n), _act_bwd(_n))
defop("relu_general", _act_fwd("relu_general"), _act_bwd("relu_general"))


def _softmax_fwd(kind):
    def fwd(x, axis=-1):
        x = np.ascontiguousarray(_f(x))
        ops = _ops_for(x)
        if kind == "softmax":
            return ops.softmax_along(x, axis=axis, out=np.empty_like(x))
        m = np.max(x, axis=axis, keepdims=True)
        z = x - m
        return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))
    return fwd


def _softmax_bwd(g, xs, y, axis=-1):
    x = np.ascontiguousarray(_f(xs[0]))
    ops = _ops_for(x)
    return [ops.backprop_softmax_along(np.ascontiguousarray(g, dtype=x.dtype),
                                       np.ascontiguousarray(y), axis=axis,
                                       out=np.empty_like(x))]


def _log_softmax_bwd(g, xs, y, axis=-1):
    return [g - np.exp(y) * np.sum(g, axis=axis, keepdims=True)]


defop("softmax", _softmax_fwd("softmax"), _softmax_bwd)
defop("log_softmax", _softmax_fwd("log_softmax"), _log_softmax_bwd)

# ============================================================================ matmul


def _matmul_fwd(a, b):
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim == 2 and b.ndim == 2 and a.dtype == np.float32 and b.dtype == np.float32:
        from . import _config
        return _config.get_ops().gemm(np.ascontiguousarray(a), np.ascontiguousarray(b))
    return np.matmul(a, b)


def _matmul_bwd(g, xs, y):
    a, b = np.asarray(xs[0]), np.asarray(xs[1])
    if a.ndim == 2 and b.ndim == 2 and a.dtype == np.float32 and b.dtype == np.float32 \
            and g.dtype == np.float32:
        from . import _config
        ops = _config.get_ops()
        g = np.ascontiguousarray(g)
        ga = ops.gemm(g, np.ascontiguousarray(b), trans_b=True)
        gb = ops.gemm(np.ascontiguousarray(a), g, trans_a=True)
        return [ga, gb]
    if a.ndim == 1 and b.ndim == 1:
        return [g * b, g * a]
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    g2 = g
    if a.ndim == 1:
        g2 = np.expand_dims(g2, -2)
    if b.ndim == 1:
        g2 = np.expand_dims(g2, -1)
    ga = np.matmul(g2, np.swapaxes(b2, -1, -2))
    gb = np.matmul(np.swapaxes(a2, -1, -2), g2)
    if a.ndim == 1:
        ga = np.squeeze(ga, -2)
    if b.ndim == 1:
        gb = np.squeeze(gb, -1)
    return [unbroadcast(ga, a.shape), unbroadcast(gb, b.shape)]


defop("matmul", _matmul_fwd, _matmul_bwd)

# ============================================================================ reductions


def _norm_axis(axis, nd):
    if axis is None:
        return tuple(range(nd))
    if isinstance(axis, (int, np.integer)):
        axis = (int(axis),)
    return tuple(a % nd if nd else a for a in axis)


def _expand_back(g, x, axis, keepdims):
    if keepdims or np.ndim(x) == 0:
        return g
    for a in sorted(_norm_axis(axis, np.ndim(x))):
        g = np.expand_dims(g, a)
    return g


defop("sum", lambda x, axis=None, keepdims=False: np.sum(x, axis=axis, keepdims=keepdims),
      lambda g, xs, y, axis=None, keepdims=False:
      [np.broadcast_to(_expand_back(g, xs[0], axis, keepdims), np.shape(xs[0])).copy()])


def _count(x, axis):
    return int(np.prod([np.shape(x)[a] for a in _norm_axis(axis, np.ndim(x))]))


defop("mean", lambda x, axis=None, keepdims=False: np.mean(x, axis=axis, keepdims=keepdims),
      lambda g, xs, y, axis=None, keepdims=False:
      [np.broadcast_to(_expand_back(g, xs[0], axis, keepdims) / _count(xs[0], axis),
                       np.shape(xs[0])).copy()])


def _extreme_bwd(g, xs, y, axis=None, keepdims=False):
    x = xs[0]
    ye = _expand_back(y, x, axis, keepdims)
    ge = _expand_back(g, x, axis, keepdims)
    mask = (x == ye)
    cnt = np.sum(mask, axis=_norm_axis(axis, np.ndim(x)), keepdims=True)
    return [(mask * ge / cnt).astype(np.result_type(g, x))]


defop("max", lambda x, axis=None, keepdims=False: np.max(x, axis=axis, keepdims=keepdims),
      _extreme_bwd)
defop("min", lambda x, axis=None, keepdims=False: np.min(x, axis=axis, keepdims=keepdims),
      _extreme_bwd)


def _lse_fwd(x, axis=None, keepdims=False):
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    s = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    if not keepdims:
        s = np.squeeze(s, axis=_norm_axis(axis, np.ndim(x)))
    return s


def _lse_bwd(g, xs, y, axis=None, keepdims=False):
    x = xs[0]
    ye = _expand_back(y, x, axis, keepdims)
    ge = _expand_back(g, x, axis, keepdims)
    return [ge * np.exp(x - ye)]


defop("logsumexp", _lse_fwd, _lse_bwd)


def _var_fwd(x, axis=None, keepdims=False):
    return np.var(x, axis=axis, keepdims=keepdims)


def _var_bwd(g, xs, y, axis=None, keepdims=False):
    x = xs[0]
    n = _count(x, axis)
    mu = np.mean(x, axis=axis, keepdims=True)
    return [_expand_back(g, x, axis, keepdims) * 2 * (x - mu) / n]


defop("var", _var_fwd, _var_bwd)
defop("argmax", lambda x, axis=-1: np.argmax(x, axis=axis), None)
defop("argmin", lambda x, axis=-1: np.argmin(x, axis=axis), None)

# ============================================================================ shapes
defop("reshape", lambda x, shape: np.reshape(x, shape),
      lambda g, xs, y, shape: [np.reshape(g, np.shape(xs[0]))])


def _tr_fwd(x, axes=None):
    return np.transpose(x, axes)


def _tr_bwd(g, xs, y, axes=None):
    if axes is None:
        return [np.transpose(g)]
    nd = np.ndim(xs[0])
    return [np.transpose(g, np.argsort([a % nd for a in axes]))]


defop("transpose", _tr_fwd, _tr_bwd)
defop("expand_dims", lambda x, axis: np.expand_dims(x, axis),
      lambda g, xs, y, axis: [np.reshape(g, np.shape(xs[0]))])
defop("squeeze", lambda x, axis=None: np.squeeze(x, axis=axis),
      lambda g, xs, y, axis=None: [np.reshape(g, np.shape(xs[0]))])


def _concat_bwd(g, xs, y, axis=0):
    sizes = [np.shape(x)[axis] for x in xs]
    cuts = np.cumsum(sizes)[:-1]
    return list(np.split(g, cuts, axis=axis))


defop("concatenate", lambda *xs, axis=0: np.concatenate(xs, axis=axis), _concat_bwd,
      variadic=True)


def _stack_bwd(g, xs, y, axis=0):
    return [np.take(g, i, axis=axis) for i in range(len(xs))]


defop("stack", lambda *xs, axis=0: np.stack(xs, axis=axis), _stack_bwd, variadic=True)


def _getitem_bwd(g, xs, y, index):
    x = xs[0]
    out = np.zeros(np.shape(x), dtype=g.dtype)
    np.add.at(out, index, g)
    return [out]


defop("getitem", lambda x, index: np.asarray(x)[index], _getitem_bwd)


def _take_fwd(x, idx, axis=None):
    return np.take(x, np.asarray(idx).astype(np.intp), axis=axis)


def _take_bwd(g, xs, y, axis=None):
    x, idx = xs
    idx = np.asarray(idx).astype(np.intp)
    out = np.zeros(np.shape(x), dtype=g.dtype)
    if axis is None:
        np.add.at(out.reshape(-1), idx.reshape(-1), g.reshape(-1))
        return [out, None]
    ax = axis % np.ndim(x)
    om = np.moveaxis(out, ax, 0)
    gm = np.moveaxis(g, list(range(ax, ax + idx.ndim)), list(range(idx.ndim)))
    np.add.at(om, idx, gm)
    return [out, None]


defop("take", _take_fwd, _take_bwd)


def _one_hot_fwd(idx, num_classes, axis=-1, dtype="float32"):
    idx = np.asarray(idx).astype(np.intp)
    out = (idx[..., None] == np.arange(num_classes)).astype(dtype)
    if axis != -1:
        out = np.moveaxis(out, -1, axis)
    return out


defop("one_hot", _one_hot_fwd, None)


def _cast_fwd(x, dtype):
    return np.asarray(x).astype(dtype)


def _cast_bwd(g, xs, y, dtype):
    src = np.asarray(xs[0]).dtype
    if src.kind != "f" or np.dtype(dtype).kind != "f":
        return [None]
    return [g.astype(src)]


defop("cast", _cast_fwd, _cast_bwd)

for _cmp in ("equal", "not_equal", "less", "less_equal", "greater", "greater_equal"):
    defop(_cmp, (lambda f: lambda a, b: f(a, b))(getattr(np, _cmp)), None)


# ============================================================================ public API
#: what the functions accept: arrays, Python numbers, fg.Variables, the tensors of a
#: traced ``call`` and the symbolic tensors of the functional API
TensorLike = Any


def _named(fn: Callable[..., Any], name: str, doc: str) -> Callable[..., Any]:
    fn.__name__ = name
    fn.__qualname__ = name      # so documentation tools find it as fastgrad.math.<name>
    fn.__doc__ = doc
    return fn


_RESULT = """
    Returns
    -------
    ndarray or tensor
        The result; a tensor of the same kind when an input is a traced or
        symbolic tensor, recorded on a recording ``GradientTape``.
"""

_BIN_DOC = {
    "add": "Add element-wise", "subtract": "Subtract element-wise",
    "multiply": "Multiply element-wise", "divide": "Divide element-wise (true division)",
    "power": "Raise ``x1`` to the power ``x2`` element-wise",
    "maximum": "Take the element-wise maximum (ties send the gradient to ``x1``)",
    "minimum": "Take the element-wise minimum (ties send the gradient to ``x1``)",
    "floor_divide": "Divide element-wise, rounding down (no gradient)",
    "mod": "Compute the element-wise remainder of floor division",
    "square_difference": "Compute ``(x1 - x2) ** 2`` element-wise",
    "equal": "Compare ``x1 == x2`` element-wise (boolean result, no gradient)",
    "not_equal": "Compare ``x1 != x2`` element-wise (boolean result, no gradient)",
    "less": "Compare ``x1 < x2`` element-wise (boolean result, no gradient)",
    "less_equal": "Compare ``x1 <= x2`` element-wise (boolean result, no gradient)",
    "greater": "Compare ``x1 > x2`` element-wise (boolean result, no gradient)",
    "greater_equal": "Compare ``x1 >= x2`` element-wise (boolean result, no gradient)",
}


def _bin(name: str) -> Callable[[TensorLike, TensorLike], Any]:
    def fn(x1: TensorLike, x2: TensorLike) -> Any:
        return apply(name, [x1, x2])
    return _named(fn, name, f"""{_BIN_DOC[name]}.

    The inputs broadcast against each other as in NumPy.

    Parameters
    ----------
    x1 : array_like or tensor
        First operand.
    x2 : array_like or tensor
        Second operand.
{_RESULT}""")


add = _bin("add")
subtract = _bin("subtract")
multiply = _bin("multiply")
divide = _bin("divide")
true_divide = divide
power = _bin("power")
maximum = _bin("maximum")
minimum = _bin("minimum")
floor_divide = _bin("floor_divide")
mod = _bin("mod")
square_difference = _bin("square_difference")
equal = _bin("equal")
not_equal = _bin("not_equal")
less = _bin("less")
less_equal = _bin("less_equal")
greater = _bin("greater")
greater_equal = _bin("greater_equal")

_UN_DOC = {
    "negative": "Negate element-wise", "exp": "Compute the exponential element-wise",
    "log": "Compute the natural logarithm element-wise",
    "log1p": "Compute ``log(1 + x)`` element-wise",
    "expm1": "Compute ``exp(x) - 1`` element-wise",
    "sqrt": "Compute the square root element-wise", "square": "Square element-wise",
    "abs": "Compute the absolute value element-wise",
    "sign": "Compute the sign element-wise (no gradient)",
    "sin": "Compute the sine element-wise", "cos": "Compute the cosine element-wise",
    "reciprocal": "Compute ``1 / x`` element-wise",
    "stop_gradient": "Return a copy of ``x`` through which no gradient flows",
}


def _un(name: str) -> Callable[[TensorLike], Any]:
    def fn(x: TensorLike) -> Any:
        return apply(name, [x])
    return _named(fn, name, f"""{_UN_DOC[name]}.

    Parameters
    ----------
    x : array_like or tensor
        Input.
{_RESULT}""")


negative = _un("negative")
exp = _un("exp")
log = _un("log")
log1p = _un("log1p")
expm1 = _un("expm1")
sqrt = _un("sqrt")
square = _un("square")
abs = _un("abs")
absolute = abs
sign = _un("sign")
sin = _un("sin")
cos = _un("cos")
reciprocal = _un("reciprocal")
stop_gradient = _un("stop_gradient")


def matmul(x1: TensorLike, x2: TensorLike) -> Any:
    """Compute the matrix product with NumPy's ``matmul`` rules.

    Two 2-D float32 operands run on the active backend's GEMM.

    Parameters
    ----------
    x1 : array_like or tensor
        Left operand (1-D, 2-D or a stack of matrices).
    x2 : array_like or tensor
        Right operand.

    Returns
    -------
    ndarray or tensor
        The product.

    Examples
    --------
    >>> import numpy as np
    >>> import fastgrad as fg
    >>> fg.math.matmul(np.eye(2), np.array([[1.0, 2.0], [3.0, 4.0]]))
    array([[1., 2.],
           [3., 4.]])
    """
    return apply("matmul", [x1, x2])


def dot(x1: TensorLike, x2: TensorLike) -> Any:
    """Compute the dot product (same as ``matmul``).

    Parameters
    ----------
    x1 : array_like or tensor
        Left operand.
    x2 : array_like or tensor
        Right operand.

    Returns
    -------
    ndarray or tensor
        The product.
    """
    return apply("matmul", [x1, x2])


def clip(x: TensorLike, x_min: TensorLike, x_max: TensorLike) -> Any:
    """Clip values to an interval.

    The gradient flows where ``x_min <= x <= x_max``.

    Parameters
    ----------
    x : array_like or tensor
        Input.
    x_min : array_like or tensor
        Lower bound.
    x_max : array_like or tensor
        Upper bound.

    Returns
    -------
    ndarray or tensor
        ``x`` clipped to ``[x_min, x_max]``.
    """
    return apply("clip", [x, x_min, x_max])


def where(condition: TensorLike, x1: TensorLike, x2: TensorLike) -> Any:
    """Select elements of ``x1`` where ``condition`` holds, else of ``x2``.

    The gradient flows to ``x1`` and ``x2``, not to ``condition``.

    Parameters
    ----------
    condition : array_like or tensor
        Boolean (or non-zero) selector.
    x1 : array_like or tensor
        Values where the condition is true.
    x2 : array_like or tensor
        Values where it is false.

    Returns
    -------
    ndarray or tensor
        The selected values, broadcast to a common shape.
    """
    return apply("where", [condition, x1, x2])


# activations: every named activation of fastgrad.activations, on the backend's kernels
def _act(name: str) -> Callable[[TensorLike], Any]:
    def fn(x: TensorLike) -> Any:
        return apply(name, [x])
    return _named(fn, name, f"""Apply the ``{name}`` activation element-wise.

    On float32 inputs it runs on the active backend's kernel; other float
    types use the NumPy reference.

    Parameters
    ----------
    x : array_like or tensor
        Input.
{_RESULT}""")


linear = _act("linear")
sigmoid = _act("sigmoid")
tanh = _act("tanh")
gelu_tanh = _act("gelu_tanh")
selu = _act("selu")
silu = _act("silu")
swish = silu
softplus = _act("softplus")
softsign = _act("softsign")
hard_sigmoid = _act("hard_sigmoid")
mish = _act("mish")
exponential = _act("exponential")
relu6 = _act("relu6")
hard_silu = _act("hard_silu")
hard_swish = hard_silu


def relu(x: TensorLike, negative_slope: float = 0.0, max_value: float | None = None,
         threshold: float = 0.0) -> Any:
    """Apply the rectified linear unit, with Keras's optional arguments.

    Parameters
    ----------
    x : array_like or tensor
        Input.
    negative_slope : float, default 0.0
        Slope below the threshold.
    max_value : float, optional
        Upper saturation value (None: no limit).
    threshold : float, default 0.0
        Values below it are scaled by ``negative_slope``.

    Returns
    -------
    ndarray or tensor
        The activation.
    """
    if negative_slope == 0.0 and max_value is None and threshold == 0.0:
        return apply("relu", [x])
    return apply("relu_general", [x], dict(negative_slope=float(negative_slope),
                                           max_value=None if max_value is None
                                           else float(max_value), threshold=float(threshold)))


def gelu(x: TensorLike, approximate: bool = False) -> Any:
    """Apply the Gaussian error linear unit.

    Parameters
    ----------
    x : array_like or tensor
        Input.
    approximate : bool, default False
        Use the tanh approximation instead of the exact erf form.

    Returns
    -------
    ndarray or tensor
        The activation.
    """
    return apply("gelu_tanh" if approximate else "gelu", [x])


def leaky_relu(x: TensorLike, negative_slope: float = 0.2) -> Any:
    """Apply the leaky rectified linear unit.

    Parameters
    ----------
    x : array_like or tensor
        Input.
    negative_slope : float, default 0.2
        Slope for negative inputs.

    Returns
    -------
    ndarray or tensor
        The activation.
    """
    return apply("leaky_relu", [x], dict(negative_slope=float(negative_slope)))


def elu(x: TensorLike, alpha: float = 1.0) -> Any:
    """Apply the exponential linear unit.

    Parameters
    ----------
    x : array_like or tensor
        Input.
    alpha : float, default 1.0
        Scale of the negative part, ``alpha * (exp(x) - 1)``.

    Returns
    -------
    ndarray or tensor
        The activation.
    """
    return apply("elu", [x], dict(alpha=float(alpha)))


def softmax(x: TensorLike, axis: int = -1) -> Any:
    """Compute the softmax along an axis.

    Parameters
    ----------
    x : array_like or tensor
        Input (logits).
    axis : int, default -1
        Axis the probabilities sum to one along.

    Returns
    -------
    ndarray or tensor
        The probabilities.
    """
    return apply("softmax", [x], dict(axis=axis))


def log_softmax(x: TensorLike, axis: int = -1) -> Any:
    """Compute the logarithm of the softmax along an axis, stably.

    Parameters
    ----------
    x : array_like or tensor
        Input (logits).
    axis : int, default -1
        Axis of the softmax.

    Returns
    -------
    ndarray or tensor
        The log-probabilities.
    """
    return apply("log_softmax", [x], dict(axis=axis))


_REDUCE_PARAMS = """
    Parameters
    ----------
    x : array_like or tensor
        Input.
    axis : int or tuple of int, optional
        Axes to reduce (None: all).
    keepdims : bool, default False
        Keep the reduced axes with length one.
"""


def _reduction_doc(summary: str, extra: str = "") -> str:
    return f"""{summary}
{extra}{_REDUCE_PARAMS}
    Returns
    -------
    ndarray or tensor
        The reduced values.
"""


def sum(x: TensorLike, axis: Any = None, keepdims: bool = False) -> Any:
    return apply("sum", [x], dict(axis=axis, keepdims=bool(keepdims)))


def mean(x: TensorLike, axis: Any = None, keepdims: bool = False) -> Any:
    return apply("mean", [x], dict(axis=axis, keepdims=bool(keepdims)))


def max(x: TensorLike, axis: Any = None, keepdims: bool = False) -> Any:
    return apply("max", [x], dict(axis=axis, keepdims=bool(keepdims)))


def min(x: TensorLike, axis: Any = None, keepdims: bool = False) -> Any:
    return apply("min", [x], dict(axis=axis, keepdims=bool(keepdims)))


def logsumexp(x: TensorLike, axis: Any = None, keepdims: bool = False) -> Any:
    return apply("logsumexp", [x], dict(axis=axis, keepdims=bool(keepdims)))


def var(x: TensorLike, axis: Any = None, keepdims: bool = False) -> Any:
    return apply("var", [x], dict(axis=axis, keepdims=bool(keepdims)))


def std(x: TensorLike, axis: Any = None, keepdims: bool = False) -> Any:
    return sqrt(var(x, axis=axis, keepdims=keepdims))


sum.__doc__ = _reduction_doc("Sum over axes.")
mean.__doc__ = _reduction_doc("Average over axes.")
max.__doc__ = _reduction_doc("Take the maximum over axes.",
                             "\n    Tied maxima share the gradient equally.\n")
min.__doc__ = _reduction_doc("Take the minimum over axes.",
                             "\n    Tied minima share the gradient equally.\n")
logsumexp.__doc__ = _reduction_doc("Compute ``log(sum(exp(x)))`` over axes, stably.")
var.__doc__ = _reduction_doc("Compute the (population) variance over axes.")
std.__doc__ = _reduction_doc("Compute the (population) standard deviation over axes.")


def norm(x: TensorLike, ord: Any = None, axis: Any = None, keepdims: bool = False) -> Any:
    """Compute the Euclidean (2-)norm over axes.

    Parameters
    ----------
    x : array_like or tensor
        Input.
    ord : {None, 2, "euclidean"}, optional
        Only the 2-norm is supported.
    axis : int or tuple of int, optional
        Axes to reduce (None: all).
    keepdims : bool, default False
        Keep the reduced axes with length one.

    Returns
    -------
    ndarray or tensor
        The norm.

    Raises
    ------
    ValueError
        For any other ``ord``.
    """
    if ord not in (None, 2, "euclidean"):
        raise ValueError(f"fg.math.norm: only the 2-norm is supported, got ord={ord!r}")
    return sqrt(sum(square(x), axis=axis, keepdims=keepdims))


def argmax(x: TensorLike, axis: int = -1) -> Any:
    """Find the indices of the maxima along an axis (no gradient).

    Parameters
    ----------
    x : array_like or tensor
        Input.
    axis : int, default -1
        Axis to search.

    Returns
    -------
    ndarray or tensor
        Integer indices.
    """
    return apply("argmax", [x], dict(axis=axis))


def argmin(x: TensorLike, axis: int = -1) -> Any:
    """Find the indices of the minima along an axis (no gradient).

    Parameters
    ----------
    x : array_like or tensor
        Input.
    axis : int, default -1
        Axis to search.

    Returns
    -------
    ndarray or tensor
        Integer indices.
    """
    return apply("argmin", [x], dict(axis=axis))


def reshape(x: TensorLike, newshape: Any) -> Any:
    """Give a new shape to an array without changing its data.

    Parameters
    ----------
    x : array_like or tensor
        Input.
    newshape : int or sequence of int
        New shape; one entry may be -1 (or None) to be inferred.

    Returns
    -------
    ndarray or tensor
        The reshaped values.
    """
    return apply("reshape", [x], dict(shape=tuple(int(s) if s is not None else -1
                                                  for s in np.atleast_1d(newshape))))


def flatten(x: TensorLike) -> Any:
    """Flatten to one axis.

    Parameters
    ----------
    x : array_like or tensor
        Input.

    Returns
    -------
    ndarray or tensor
        The values as a 1-D array.
    """
    return reshape(x, (-1,))


def transpose(x: TensorLike, axes: Sequence[int] | None = None) -> Any:
    """Permute the axes.

    Parameters
    ----------
    x : array_like or tensor
        Input.
    axes : sequence of int, optional
        The new order of the axes (None: reverse them).

    Returns
    -------
    ndarray or tensor
        The transposed values.
    """
    return apply("transpose", [x], dict(axes=None if axes is None else tuple(axes)))


def expand_dims(x: TensorLike, axis: int) -> Any:
    """Insert an axis of length one.

    Parameters
    ----------
    x : array_like or tensor
        Input.
    axis : int
        Position of the new axis.

    Returns
    -------
    ndarray or tensor
        The values with one more axis.
    """
    return apply("expand_dims", [x], dict(axis=axis))


def squeeze(x: TensorLike, axis: Any = None) -> Any:
    """Remove axes of length one.

    Parameters
    ----------
    x : array_like or tensor
        Input.
    axis : int or tuple of int, optional
        Axes to remove (None: every axis of length one).

    Returns
    -------
    ndarray or tensor
        The values without those axes.
    """
    return apply("squeeze", [x], dict(axis=axis))


def concatenate(xs: Sequence[TensorLike], axis: int = 0) -> Any:
    """Join arrays along an existing axis.

    Parameters
    ----------
    xs : sequence of array_like or tensor
        The arrays, of equal shape except along ``axis``.
    axis : int, default 0
        Axis to join along.

    Returns
    -------
    ndarray or tensor
        The joined values.

    Raises
    ------
    ValueError
        When ``xs`` is empty.
    """
    xs = list(xs)
    if not xs:
        raise ValueError("fg.math.concatenate: needs at least one array")
    return apply("concatenate", xs, dict(axis=axis))


def stack(xs: Sequence[TensorLike], axis: int = 0) -> Any:
    """Join arrays along a new axis.

    Parameters
    ----------
    xs : sequence of array_like or tensor
        The arrays, all of the same shape.
    axis : int, default 0
        Position of the new axis.

    Returns
    -------
    ndarray or tensor
        The stacked values.

    Raises
    ------
    ValueError
        When ``xs`` is empty.
    """
    xs = list(xs)
    if not xs:
        raise ValueError("fg.math.stack: needs at least one array")
    return apply("stack", xs, dict(axis=axis))


def _freeze_index(idx: Any) -> Any:
    """An index made of constants (slices, ints, None, Ellipsis, int arrays)."""
    from .autodiff.core import TraceTensor, TracingError
    items = idx if isinstance(idx, tuple) else (idx,)
    for it in items:
        if isinstance(it, TraceTensor):
            raise TracingError(f"{it._tracer.owner_name}: indexing with a traced tensor inside "
                               "call(); use fg.math.take(x, indices) with the indices as a tensor")
    return idx


def getitem(x: TensorLike, index: Any) -> Any:
    """Index or slice with constant indices (``x[index]``).

    The gradient scatters back into the indexed positions.

    Parameters
    ----------
    x : array_like or tensor
        Input.
    index : int, slice, None, Ellipsis, integer array or tuple of them
        The index, as NumPy takes it.

    Returns
    -------
    ndarray or tensor
        The selected values.

    Raises
    ------
    TracingError
        When the index is a tensor of a traced ``call`` (use ``take``).
    """
    return apply("getitem", [x], dict(index=_freeze_index(index)))


def split(x: TensorLike, indices_or_sections: Any, axis: int = 0) -> list:
    """Split into pieces along an axis (NumPy's ``split`` rules).

    Parameters
    ----------
    x : array_like or tensor
        Input.
    indices_or_sections : int or sequence of int
        Number of equal pieces, or the indices where to cut.
    axis : int, default 0
        Axis to split.

    Returns
    -------
    list
        The pieces, each differentiable.

    Raises
    ------
    ValueError
        When the axis size is unknown or does not divide into equal pieces.
    """
    n = np.shape(x)[axis] if not hasattr(x, "_val") else x.shape[axis]
    if n is None:
        raise ValueError("fg.math.split: the split axis must have a known size")
    if isinstance(indices_or_sections, (int, np.integer)):
        k = int(indices_or_sections)
        if n % k:
            raise ValueError(f"fg.math.split: axis of size {n} does not split into {k} equal parts")
        cuts = [i * (n // k) for i in range(1, k)]
    else:
        cuts = [int(c) for c in indices_or_sections]
    bounds = [0] + cuts + [n]
    nd = len(np.shape(x)) if not hasattr(x, "_val") else len(x.shape)
    ax = axis % nd
    out = []
    for s, e in zip(bounds[:-1], bounds[1:]):
        idx = (slice(None),) * ax + (slice(s, e),)
        out.append(getitem(x, idx))
    return out


def take(x: TensorLike, indices: TensorLike, axis: int | None = None) -> Any:
    """Gather elements by index (``np.take``).

    The gradient scatter-adds into ``x``; ``indices`` gets none.

    Parameters
    ----------
    x : array_like or tensor
        Input.
    indices : array_like or tensor
        Integer indices (may be a traced tensor).
    axis : int, optional
        Axis to gather along (None: the flattened input).

    Returns
    -------
    ndarray or tensor
        The gathered values.
    """
    return apply("take", [x, indices], dict(axis=axis))


def one_hot(x: TensorLike, num_classes: int, axis: int = -1, dtype: Any = "float32") -> Any:
    """Encode integer class ids as one-hot vectors (no gradient).

    Parameters
    ----------
    x : array_like or tensor
        Integer class ids.
    num_classes : int
        Number of classes (length of the new axis).
    axis : int, default -1
        Position of the new axis.
    dtype : str or numpy.dtype, default "float32"
        Data type of the result.

    Returns
    -------
    ndarray or tensor
        The one-hot encoding.
    """
    return apply("one_hot", [x], dict(num_classes=int(num_classes), axis=axis, dtype=dtype))


def cast(x: TensorLike, dtype: Any) -> Any:
    """Convert to another dtype.

    Differentiable between float types; a cast to an integer type has no
    gradient.

    Parameters
    ----------
    x : array_like or tensor
        Input.
    dtype : str or numpy.dtype
        Target data type.

    Returns
    -------
    ndarray or tensor
        The converted values.
    """
    return apply("cast", [x], dict(dtype=np.dtype(dtype).name))


def convert_to_tensor(x: Any, dtype: Any = None) -> np.ndarray:
    """Convert to a NumPy array (a Variable gives its value).

    Parameters
    ----------
    x : array_like or Variable
        Input.
    dtype : str or numpy.dtype, optional
        Target data type (None: keep).

    Returns
    -------
    ndarray
        The array.
    """
    a = np.asarray(x.value if hasattr(x, "value") and not isinstance(x, np.ndarray) else x)
    return a.astype(dtype) if dtype is not None else a


#: names of the element-wise activations (fastgrad.activations) available here
ACTIVATIONS = _ACT_NAMES + ("softmax", "log_softmax")
_builtin_max = builtins.max


def _register_operators():
    from .engine import graph as _graph
    _graph.OPERATOR_FUNCTIONS.update({
        "Add": add, "Subtract": subtract, "Multiply": multiply, "truediv": divide,
        "pow": power, "matmul": matmul, "floordiv": floor_divide, "mod": mod,
        "lt": less, "le": less_equal, "gt": greater, "ge": greater_equal,
        "neg": negative, "abs": abs, "getitem": getitem})


_register_operators()
