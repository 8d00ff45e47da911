"""Merge layers (Add, Subtract, Multiply, Average, Maximum, Minimum,
Concatenate, Dot) and reshaping layers (Reshape, Permute, RepeatVector,
Identity): forward against NumPy float64 formulas, backward by finite
differences in float64 (forward/backward called directly with a Workspace),
Keras's broadcasting, errors that name the layer and the shapes, config round
trips, dx arrays that never alias each other, eager calls on arrays, and a
PyTorch float64 oracle behind the `torch` marker."""
import json
from unittest import mock

import numpy as np
import pytest

import fastgrad as fg
from fastgrad.backend import NumpyOps
from fastgrad.engine.workspace import Workspace
from fastgrad.layers import (Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate, Dot,
                             Reshape, Permute, RepeatVector, Identity, Layer)

from conftest import backends

ELEMENTWISE = {
    "add": (Add, lambda xs: _fold(np.add, xs)),
    "subtract": (Subtract, lambda xs: _fold(np.subtract, xs)),
    "multiply": (Multiply, lambda xs: _fold(np.multiply, xs)),
    "average": (Average, lambda xs: _fold(np.add, xs) / len(xs)),
    "maximum": (Maximum, lambda xs: _fold(np.maximum, xs)),
    "minimum": (Minimum, lambda xs: _fold(np.minimum, xs)),
}

# per-sample shapes (batch axis excluded): equal, broadcast over dims of 1,
# lower ranks (read as expanded right after the batch axis, as in Keras), one input
SHAPE_SETS = {
    "equal": [(4, 5), (4, 5), (4, 5)],
    "broadcast": [(4, 5), (1, 5), (4, 1)],
    "ranks": [(3, 4, 5), (5,), (4, 1)],
    "first_broadcast": [(1, 5), (4, 5)],
    "scalar_samples": [(), ()],
    "single": [(3, 2)],
}


def _expand(x, nd):
    return x.reshape(x.shape[:1] + (1,) * (nd - x.ndim) + x.shape[1:])


def _fold(fn, xs):
    nd = max(x.ndim for x in xs)
    out = _expand(xs[0], nd)
    for x in xs[1:]:
        out = fn(out, _expand(x, nd))
    return out


@pytest.fixture
def numpy_backend():
    with fg.use_backend("numpy"):
        yield


def _run(layer, xs, rng, need_dx=True):
    """forward + backward with a random dy; returns (y copy, R, dxs copies, raw dxs, dy)."""
    ws = Workspace()
    y = layer.forward(xs, True, ws)
    y = np.array(y, copy=True)
    R = rng.standard_normal(y.shape)
    dy = R.copy()
    raw = layer.backward(dy, ws, need_dx)
    copies = raw if raw is None else [None if d is None else np.array(d, copy=True)
                                      for d in (raw if isinstance(raw, list) else [raw])]
    return y, R, copies, raw, dy


def _numeric(layer, xs, R, eps=1e-6):
    """Central differences of L = sum(forward(xs) * R) w.r.t. every input."""
    multi = isinstance(xs, list)

    def L():
        return float(np.sum(layer.forward(xs, True, Workspace()) * R))

    grads = []
    for x in (xs if multi else [xs]):
        g = np.zeros_like(x)
        flat, gf = x.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + eps
            lp = L()
            flat[i] = old - eps
            lm = L()
            flat[i] = old
            gf[i] = (lp - lm) / (2 * eps)
        grads.append(g)
    return grads


def _fd_check(layer, xs, rng, rtol=1e-5, atol=1e-7):
    y, R, dxs, _, _ = _run(layer, xs, rng)
    for i, (a, n) in enumerate(zip(dxs, _numeric(layer, xs, R))):
        np.testing.assert_allclose(a, n, rtol=rtol, atol=atol, err_msg=f"dx{i}")
    return y


def _inputs(shapes, rng, batch=3):
    return [rng.standard_normal((batch,) + tuple(s)) for s in shapes]


def _assert_no_alias(dxs, dy):
    assert sum(d is dy for d in dxs) <= 1
    for i in range(len(dxs)):
        for j in range(i + 1, len(dxs)):
            assert not np.shares_memory(dxs[i], dxs[j]), (i, j)


# ---------------------------------------------------------------------------- element-wise
@pytest.mark.parametrize("kind", sorted(ELEMENTWISE))
@pytest.mark.parametrize("case", sorted(SHAPE_SETS))
def test_elementwise_forward_and_fd_gradients(numpy_backend, kind, case):
    cls, formula = ELEMENTWISE[kind]
    shapes = SHAPE_SETS[case]
    if kind == "subtract":
        if len(shapes) < 2:
            pytest.skip("Subtract takes exactly 2 inputs")
        shapes = shapes[:2]
    rng = np.random.default_rng(7)
    xs = _inputs(shapes, rng)
    layer = cls()
    out_shape = layer.build(shapes)
    ref = formula(xs)
    assert (3,) + out_shape == ref.shape
    y = _fd_check(layer, xs, rng)
    np.testing.assert_allclose(y, ref, rtol=1e-15, atol=0)


@pytest.mark.parametrize("kind", sorted(ELEMENTWISE))
def test_elementwise_dx_never_alias(numpy_backend, kind):
    cls, _ = ELEMENTWISE[kind]
    shapes = [(4, 5), (4, 5)] if kind == "subtract" else [(4, 5), (4, 5), (1, 5), (4, 5)]
    rng = np.random.default_rng(3)
    layer = cls()
    layer.build(shapes)
    _, _, _, dxs, dy = _run(layer, _inputs(shapes, rng), rng)
    assert len(dxs) == len(shapes)
    _assert_no_alias(dxs, dy)
    assert dxs[0] is dy              # the first input of the output's shape reuses dy
    for d, s in zip(dxs, shapes):
        assert d.shape == (3,) + s


def test_add_dy_serves_first_input_of_output_shape(numpy_backend):
    rng = np.random.default_rng(0)
    layer = Add()
    layer.build([(1, 5), (4, 5), (4, 5)])
    _, R, dxs, raw, dy = _run(layer, _inputs([(1, 5), (4, 5), (4, 5)], rng), rng)
    assert raw[1] is dy and raw[0] is not dy and raw[2] is not dy
    np.testing.assert_array_equal(dxs[0], R.sum(axis=1, keepdims=True))
    np.testing.assert_array_equal(dxs[1], R)
    np.testing.assert_array_equal(dxs[2], R)


@pytest.mark.parametrize("cls,pick", [(Maximum, np.max), (Minimum, np.min)])
def test_extreme_ties_go_to_first_input(numpy_backend, cls, pick):
    a = np.array([[1.0, 5.0, -2.0, 3.0]])
    b = np.array([[1.0, 0.0, 7.0, 3.0]])
    c = np.array([[1.0, 5.0, 7.0, -9.0]])
    if cls is Minimum:
        a, b, c = -a, -b, -c
    layer = cls()
    layer.build([(4,), (4,), (4,)])
    ws = Workspace()
    y = layer.forward([a, b, c], True, ws)
    np.testing.assert_array_equal(y, pick(np.stack([a, b, c]), axis=0))
    dy = np.array([[10.0, 20.0, 30.0, 40.0]])
    dxs = layer.backward(dy.copy(), ws, True)
    # column 0: all tie -> a; column 1: a and c tie -> a; column 2: b and c tie -> b; column 3: a, b
    np.testing.assert_array_equal(dxs[0], [[10.0, 20.0, 0.0, 40.0]])
    np.testing.assert_array_equal(dxs[1], [[0.0, 0.0, 30.0, 0.0]])
    np.testing.assert_array_equal(dxs[2], [[0.0, 0.0, 0.0, 0.0]])


def test_maximum_broadcast_tie_gradient_is_summed(numpy_backend):
    # the (1,)-shaped input holds the maximum in two of three positions
    a = np.array([[2.0, 1.0, 2.0]])
    b = np.array([[2.0]])
    layer = Maximum()
    layer.build([(3,), (1,)])
    ws = Workspace()
    layer.forward([a, b], True, ws)
    dxs = layer.backward(np.array([[1.0, 2.0, 4.0]]), ws, True)
    np.testing.assert_array_equal(dxs[0], [[1.0, 0.0, 4.0]])   # ties at 0 and 2 -> a
    np.testing.assert_array_equal(dxs[1], [[2.0]])


def test_need_dx_false_returns_nones(numpy_backend):
    rng = np.random.default_rng(1)
    for layer, shapes in [(Add(), [(3,), (3,)]), (Concatenate(), [(2,), (3,)]),
                          (Dot(axes=1), [(3,), (3,)])]:
        layer.build(shapes)
        ws = Workspace()
        layer.forward(_inputs(shapes, rng), True, ws)
        assert layer.backward(np.ones((3,) + layer.output_shape), ws, False) == [None, None]


def test_float32_on_every_backend_matches_float64():
    rng = np.random.default_rng(5)
    shapes = [(4, 5), (1, 5), (4, 1)]
    xs = _inputs(shapes, rng)
    for name in backends():
        with fg.use_backend(name):
            for kind, (cls, formula) in ELEMENTWISE.items():
                sh = shapes[:2] if kind == "subtract" else shapes
                layer = cls()
                layer.build(sh)
                x32 = [x.astype(np.float32) for x in xs[:len(sh)]]
                y = layer.forward(x32, False, Workspace())
                assert y.dtype == np.float32
                np.testing.assert_allclose(y, formula(xs[:len(sh)]), rtol=1e-5, atol=1e-6,
                                           err_msg=f"{name} {kind}")


# ---------------------------------------------------------------------------- Concatenate
@pytest.mark.parametrize("axis", [1, 2, 3, -1, -2, -3])
def test_concatenate_forward_and_fd(numpy_backend, axis):
    base = [2, 3, 4]
    k = axis % 4 - 1
    shapes = []
    for extra in (1, 2, 3):
        s = list(base)
        s[k] = extra
        shapes.append(tuple(s))
    rng = np.random.default_rng(11)
    xs = _inputs(shapes, rng)
    layer = Concatenate(axis=axis)
    out = layer.build(shapes)
    y = _fd_check(layer, xs, rng)
    ref = np.concatenate(xs, axis=axis)
    assert (3,) + out == ref.shape
    np.testing.assert_array_equal(y, ref)


def test_concatenate_dx_never_alias_and_match_slices(numpy_backend):
    rng = np.random.default_rng(2)
    layer = Concatenate()
    layer.build([(2,), (3,), (1,)])
    _, R, dxs, raw, dy = _run(layer, _inputs([(2,), (3,), (1,)], rng), rng)
    _assert_no_alias(raw, dy)
    for d, ref in zip(dxs, np.split(R, [2, 5], axis=1)):
        np.testing.assert_array_equal(d, ref)


@pytest.mark.parametrize("shapes,axis,match", [
    ([(2, 3), (2, 4)], 1, r"\[\(2, 3\), \(2, 4\)\]"),
    ([(2, 3), (3,)], -1, r"\[\(2, 3\), \(3,\)\]"),
    ([(2, 3), (2, 3)], 3, "axis 3"),
    ([(2, 3), (2, 3)], -3, "axis -3"),
    ([(), ()], -1, "rank"),
])
def test_concatenate_shape_errors_name_layer_and_shapes(shapes, axis, match):
    layer = Concatenate(axis=axis, name="cat")
    with pytest.raises(ValueError, match="Concatenate layer 'cat'") as e:
        layer.build(shapes)
    assert e.match(match)


def test_concatenate_refuses_batch_axis_and_non_int():
    with pytest.raises(ValueError, match="batch axis"):
        Concatenate(axis=0)
    with pytest.raises(TypeError, match="axis"):
        Concatenate(axis=1.0)


# ---------------------------------------------------------------------------- Dot
def _l2n(x, axis, eps=1e-7):
    s = np.sum(x * x, axis=axis, keepdims=True)
    with np.errstate(divide="ignore"):
        return x * np.minimum(1.0 / np.sqrt(s), 1.0 / eps)


DOT_CASES = [  # (shape1, shape2, axes, einsum spec, output per-sample shape)
    ((5,), (5,), 1, "bk,bk->b", (1,)),
    ((5,), (5,), -1, "bk,bk->b", (1,)),
    ((3, 5), (5,), (2, 1), "bik,bk->bi", (3,)),
    ((5,), (5, 4), (1, 1), "bk,bkj->bj", (4,)),
    ((3, 5), (4, 5), 2, "bik,bjk->bij", (3, 4)),
    ((5, 3), (4, 5), (1, 2), "bki,bjk->bij", (3, 4)),
    ((2, 3, 5), (5, 4), (3, 1), "bilk,bkj->bilj", (2, 3, 4)),
    ((2, 5, 3), (4, 2, 5), (-2, -1), "bikl,bjmk->biljm", (2, 3, 4, 2)),
]


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("s1,s2,axes,spec,out", DOT_CASES)
def test_dot_forward_and_fd(numpy_backend, s1, s2, axes, spec, out, normalize):
    rng = np.random.default_rng(13)
    x1, x2 = _inputs([s1, s2], rng)
    layer = Dot(axes=axes, normalize=normalize)
    assert layer.build([s1, s2]) == out
    y = _fd_check(layer, [x1, x2], rng)
    a0, a1 = (axes, axes) if isinstance(axes, int) else axes
    u1 = _l2n(x1, a0) if normalize else x1
    u2 = _l2n(x2, a1) if normalize else x2
    ref = np.einsum(spec, u1, u2).reshape((3,) + out)
    np.testing.assert_allclose(y, ref, rtol=1e-13, atol=1e-15)


def test_dot_normalize_is_cosine_and_clamps_zero_vectors(numpy_backend):
    x1 = np.array([[3.0, 4.0], [0.0, 0.0]])
    x2 = np.array([[4.0, 3.0], [1.0, 2.0]])
    layer = Dot(axes=1, normalize=True)
    layer.build([(2,), (2,)])
    ws = Workspace()
    y = layer.forward([x1, x2], True, ws)
    np.testing.assert_allclose(y, [[24 / 25], [0.0]])
    dxs = layer.backward(np.ones((2, 1)), ws, True)
    assert np.all(np.isfinite(dxs[0])) and np.all(np.isfinite(dxs[1]))
    # zero row: normalised x1 = x1 * 1e7 (clamped), so d/dx1 = 1e7 * x2 / |x2|
    np.testing.assert_allclose(dxs[0][1], 1e7 * x2[1] / np.linalg.norm(x2[1]))
    np.testing.assert_array_equal(dxs[1][1], [0.0, 0.0])


def test_l2_normalize_clamped_gradient_by_fd():
    ops = NumpyOps()
    x = np.array([[3e-9, -4e-9, 1e-9]])           # norm < 1e-7: the clamped branch
    g = np.array([[0.5, -1.0, 2.0]])
    inv = np.empty((1, 1))
    y = ops.l2_normalize_forward(x, 1, 1e-7, inv_norm=inv)
    dx = ops.l2_normalize_backward(g, y, inv, 1, 1e-7)
    h = 1e-12
    num = np.zeros_like(x)
    for i in range(3):
        xp, xm = x.copy(), x.copy()
        xp[0, i] += h
        xm[0, i] -= h
        num[0, i] = (np.sum(g * ops.l2_normalize_forward(xp, 1, 1e-7)) -
                     np.sum(g * ops.l2_normalize_forward(xm, 1, 1e-7))) / (2 * h)
    np.testing.assert_allclose(dx, num, rtol=1e-6)
    np.testing.assert_allclose(dx, g * 1e7)


def test_dot_dx_never_alias(numpy_backend):
    rng = np.random.default_rng(4)
    for normalize in (False, True):
        layer = Dot(axes=1, normalize=normalize)
        layer.build([(4,), (4,)])
        x = rng.standard_normal((3, 4))
        _, _, _, dxs, dy = _run(layer, [x, x], rng)    # the same array twice
        _assert_no_alias(dxs, dy)
        assert dxs[0] is not dy and dxs[1] is not dy


@pytest.mark.parametrize("shapes,axes,match", [
    ([(3,), (4,)], 1, r"\(3,\).*\(4,\)"),
    ([(2, 3), (2, 3)], (1, 2), r"\(2, 3\)"),
    ([(3,), (3,)], 0, "batch axis"),
    ([(3,), (3,)], (1, 2), "axes"),
    ([(3,), (3,)], -3, "axes"),
])
def test_dot_shape_errors_name_layer_and_shapes(shapes, axes, match):
    layer = Dot(axes=axes, name="dotty")
    with pytest.raises(ValueError, match="Dot layer 'dotty'") as e:
        layer.build(shapes)
    assert e.match(match)


def test_dot_argument_errors():
    with pytest.raises(TypeError, match="axes"):
        Dot(axes="1")
    with pytest.raises(ValueError, match="two elements"):
        Dot(axes=(1, 2, 3))
    with pytest.raises(ValueError, match="integers"):
        Dot(axes=(1.0, 2))
    with pytest.raises(ValueError, match="exactly 2 inputs"):
        Dot(axes=1).build([(3,), (3,), (3,)])


# ---------------------------------------------------------------------------- merge errors
@pytest.mark.parametrize("cls", [Add, Multiply, Average, Maximum, Minimum, Concatenate])
def test_too_few_inputs(cls):
    with pytest.raises(ValueError, match=r"at least 1 input.*got 0"):
        cls().build([])
    with pytest.raises(ValueError, match="list of inputs"):
        cls().build((3, 4))                     # one shape, not a list of shapes


def test_subtract_takes_exactly_two():
    for shapes in ([(3,)], [(3,), (3,), (3,)]):
        with pytest.raises(ValueError, match=r"Subtract layer 'sub' should be called on exactly 2"):
            Subtract(name="sub").build(shapes)


@pytest.mark.parametrize("cls", [Add, Subtract, Multiply, Average, Maximum, Minimum])
def test_mismatched_shapes_name_layer_and_shapes(cls):
    with pytest.raises(ValueError, match=f"{cls.__name__} layer 'm'") as e:
        cls(name="m").build([(4, 5), (4, 3)])
    assert e.match(r"\(4, 3\)") and e.match(r"\(4, 5\)")


def test_forward_checks_inputs_against_build(numpy_backend):
    layer = Add(name="adder")
    layer.build([(3,), (3,)])
    with pytest.raises(ValueError, match=r"'adder'.*\(2, 3\), \(4, 3\)"):
        layer.forward([np.ones((2, 3)), np.ones((4, 3))], False, Workspace())
    with pytest.raises(ValueError, match="list of 2 arrays, got 3 inputs"):
        layer.forward([np.ones((2, 3))] * 3, False, Workspace())


# ---------------------------------------------------------------------------- ops level
def test_merge_ops_reject_overlapping_outputs():
    ops = NumpyOps()
    a, b = np.ones((2, 3)), np.ones((2, 3))
    dy = np.ones((2, 3))
    with pytest.raises(ValueError, match="only one entry"):
        ops.merge_backward("add", dy, [a, b], None, [dy, dy])
    buf = np.empty((2, 3))
    with pytest.raises(ValueError, match="overlaps"):
        ops.merge_backward("add", dy, [a, b], None, [buf, buf])
    with pytest.raises(ValueError, match="overlap"):
        ops.merge_forward("add", [a, b], a)
    with pytest.raises(ValueError, match="unknown kind"):
        ops.merge_forward("pow", [a, b])
    with pytest.raises(ValueError, match="do not broadcast"):
        ops.merge_forward("add", [a, np.ones((2, 4))])


def test_concat_backward_skips_none_entries():
    ops = NumpyOps()
    dy = np.arange(12.0).reshape(2, 6)
    d1 = np.empty((2, 3))
    ops.concat_backward(dy, 1, [2, 3, 1], [None, d1, None])
    np.testing.assert_array_equal(d1, dy[:, 2:5])
    with pytest.raises(ValueError, match="sizes"):
        ops.concat_backward(dy, 1, [2, 3], [None, None])


def test_dot_ops_non_contiguous_outputs():
    ops = NumpyOps()
    rng = np.random.default_rng(9)
    x1, x2 = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 4, 5))
    out = np.empty((2, 4, 3)).transpose(0, 2, 1)           # a strided view
    ops.dot_forward(x1, x2, (1, 2), out)
    np.testing.assert_allclose(out, np.einsum("bki,bjk->bij", x1, x2))


# ---------------------------------------------------------------------------- reshaping
@pytest.mark.parametrize("in_shape,target,out", [
    ((6,), (2, 3), (2, 3)),
    ((2, 3, 4), (-1,), (24,)),
    ((2, 3, 4), (4, -1, 2), (4, 3, 2)),
    ((5,), (5, 1), (5, 1)),
])
def test_reshape_forward_view_and_fd(numpy_backend, in_shape, target, out):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3,) + in_shape)
    layer = Reshape(target)
    assert layer.build(in_shape) == out
    y = layer.forward(x, True, Workspace())
    assert np.shares_memory(y, x)                  # a view, no copy
    np.testing.assert_array_equal(y, x.reshape((3,) + out))
    _fd_check(layer, x, rng)


def test_reshape_errors():
    with pytest.raises(ValueError, match="more than one -1"):
        Reshape((-1, -1))
    with pytest.raises(ValueError, match="positive"):
        Reshape((0, 3))
    with pytest.raises(ValueError, match=r"Reshape layer 'r'.*\(7,\).*\(2, -1\)"):
        Reshape((2, -1), name="r").build((7,))
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        Reshape((3, 4)).build((11,))


@pytest.mark.parametrize("dims,in_shape", [((2, 1), (3, 4)), ((3, 1, 2), (2, 3, 4)),
                                           ((1,), (5,)), ((1, 2), (3, 4))])
def test_permute_forward_and_fd(numpy_backend, dims, in_shape):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3,) + in_shape)
    layer = Permute(dims)
    out = layer.build(in_shape)
    ref = np.transpose(x, (0,) + dims)
    assert (3,) + out == ref.shape
    y = _fd_check(layer, x, rng)
    np.testing.assert_array_equal(y, ref)


def test_permute_errors():
    with pytest.raises(ValueError, match="consecutive and start from 1"):
        Permute((0, 1))
    with pytest.raises(ValueError, match="consecutive"):
        Permute((1, 3))
    with pytest.raises(ValueError, match=r"Permute layer 'p'.*rank 2.*\(2, 3, 4\)"):
        Permute((2, 1), name="p").build((2, 3, 4))


def test_repeat_vector_forward_and_fd(numpy_backend):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 4))
    layer = RepeatVector(5)
    assert layer.build((4,)) == (5, 4)
    y = _fd_check(layer, x, rng)
    np.testing.assert_array_equal(y, np.repeat(x[:, None, :], 5, axis=1))


def test_repeat_vector_errors():
    with pytest.raises(ValueError, match="positive integer"):
        RepeatVector(0)
    with pytest.raises(ValueError, match=r"RepeatVector layer 'rv'.*\(2, 3\)"):
        RepeatVector(2, name="rv").build((2, 3))


def test_identity(numpy_backend):
    x = np.ones((2, 3))
    layer = Identity()
    layer.build((3,))
    ws = Workspace()
    assert layer.forward(x, False, ws) is x
    dy = np.ones((2, 3))
    assert layer.backward(dy, ws, True) is dy
    assert layer.backward(dy, ws, False) is None


# ---------------------------------------------------------------------------- config
CONFIG_LAYERS = [
    lambda: Add(name="a1"), lambda: Subtract(), lambda: Multiply(), lambda: Average(),
    lambda: Maximum(), lambda: Minimum(), lambda: Concatenate(axis=-2),
    lambda: Concatenate(axis=1), lambda: Dot(axes=1), lambda: Dot(axes=(1, 2), normalize=True),
    lambda: Dot(axes=[-1, -2]), lambda: Reshape((2, -1)), lambda: Permute((2, 1)),
    lambda: RepeatVector(3), lambda: Identity(trainable=False),
]


@pytest.mark.parametrize("make", CONFIG_LAYERS)
def test_config_round_trip(make):
    layer = make()
    cfg = layer.get_config()
    again = type(layer).from_config(json.loads(json.dumps(cfg)))
    assert again.get_config() == cfg
    back = fg.layers.deserialize(fg.layers.serialize(layer))
    assert type(back) is type(layer) and back.get_config() == cfg


def test_config_uses_keras_parameter_names():
    assert Concatenate(axis=2).get_config()["axis"] == 2
    cfg = Dot(axes=(1, 2), normalize=True).get_config()
    assert cfg["axes"] == [1, 2] and cfg["normalize"] is True
    assert Reshape((2, 3)).get_config()["target_shape"] == [2, 3]
    assert Permute((2, 1)).get_config()["dims"] == [2, 1]
    assert RepeatVector(4).get_config()["n"] == 4


def test_layers_are_registered_and_exported():
    for name in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
                 "Dot", "Reshape", "Permute", "RepeatVector", "Identity"):
        assert name in fg.layers.__all__
        assert getattr(fg.layers, name) is fg.layers.get_layer_class(name)


def test_multi_input_flag_and_describe():
    assert Add._multi_input and Concatenate._multi_input and Dot._multi_input
    assert not getattr(Reshape, "_multi_input", False)
    layer = Concatenate(axis=-1)
    layer.build([(2, 3), (2, 4)])
    d = layer.describe()
    assert d["kind"] == "concatenate" and d["axis"] == 2
    assert d["input_shape"] == [(2, 3), (2, 4)] and d["output_shape"] == (2, 7)


# ---------------------------------------------------------------------------- eager use
def test_eager_calls_on_arrays():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.ones((2, 3), dtype=np.float32)
    y = Add()([a, b])
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, a + b)
    np.testing.assert_array_equal(Concatenate()([a, b]), np.concatenate([a, b], axis=1))
    np.testing.assert_array_equal(Subtract()([a.tolist(), b.tolist()]), a - b)   # array-likes
    x = np.arange(12.0).reshape(2, 6)
    np.testing.assert_array_equal(Reshape((2, 3))(x), x.reshape(2, 2, 3))
    np.testing.assert_array_equal(Permute((2, 1))(x.reshape(2, 2, 3)),
                                  x.reshape(2, 2, 3).transpose(0, 2, 1))
    np.testing.assert_array_equal(RepeatVector(2)(a), np.repeat(a[:, None], 2, axis=1))
    np.testing.assert_allclose(Dot(axes=1)([a, b]), (a * b).sum(1, keepdims=True))


def test_eager_call_errors():
    a = np.ones((2, 3))
    layer = Add(name="e")
    layer([a, a])
    with pytest.raises(ValueError, match=r"'e' was built for input shape \[\(3,\), \(3,\)\]"):
        layer([np.ones((2, 4)), np.ones((2, 4))])
    with pytest.raises(ValueError, match="list of inputs; got one array of shape"):
        Add()(a)
    with pytest.raises(ValueError, match="at least 1 input"):
        Add()([])


def test_calls_on_symbolic_tensors_build_graph_nodes():
    a, b = fg.Input((3,)), fg.Input((3,))
    t = Add()([a, b])
    assert isinstance(t, fg.engine.graph.SymbolicTensor) and t.shape == (None, 3)
    r = Reshape((3, 1))(t)
    assert r.shape == (None, 3, 1)
    assert (a + b).shape == (None, 3) and (a - b).shape == (None, 3) and (a * b).shape == (None, 3)
    with pytest.raises(ValueError, match="merge|shape"):
        Add()([a, fg.Input((4,))])


# ---------------------------------------------------------------------------- in a model
def test_reshaping_layers_train_in_sequential():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6)).astype(np.float32)
    y = (x.sum(1) > 0).astype(np.int64)
    model = fg.Sequential([fg.Input((6,)), Reshape((2, 3)), Permute((2, 1)), Identity(),
                           Reshape((-1,)), RepeatVector(2), fg.layers.Flatten(),
                           fg.layers.Dense(2)])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert model.layers[-1].input_shape == (12,)
    h = model.fit(x, y, epochs=5, batch_size=16, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]


# ---------------------------------------------------------------------------- torch oracle
@pytest.mark.torch
def test_torch_oracle_concatenate_dot_maximum():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(21)
    with fg.use_backend("numpy"):
        def grads(layer, shapes, torch_fn):
            xs = _inputs(shapes, rng, batch=4)
            layer.build(shapes)
            ws = Workspace()
            y = layer.forward(xs, True, ws)
            R = rng.standard_normal(y.shape)
            dxs = [np.array(d, copy=True) for d in layer.backward(R.copy(), ws, True)]
            ts = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs]
            ty = torch_fn(ts)
            (ty * torch.tensor(R)).sum().backward()
            np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-14)
            for d, t in zip(dxs, ts):
                np.testing.assert_allclose(d, t.grad.numpy(), rtol=1e-12, atol=1e-14)

        grads(Concatenate(axis=2), [(3, 2), (3, 5)], lambda ts: torch.cat(ts, dim=2))
        grads(Concatenate(axis=1), [(1, 4), (2, 4), (3, 4)], lambda ts: torch.cat(ts, dim=1))
        grads(Maximum(), [(3, 4), (3, 4), (1, 4)],
              lambda ts: torch.maximum(torch.maximum(ts[0], ts[1]), ts[2]))
        grads(Dot(axes=(1, 2)), [(5, 3), (4, 5)],
              lambda ts: torch.einsum("bki,bjk->bij", ts[0], ts[1]))

        def cos(ts):
            u = [t * torch.clamp(torch.rsqrt((t * t).sum(dim=1, keepdim=True)), max=1e7)
                 for t in ts]
            return (u[0] * u[1]).sum(dim=1, keepdim=True)
        grads(Dot(axes=1, normalize=True), [(6,), (6,)], cos)
