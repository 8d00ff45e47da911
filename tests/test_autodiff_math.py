"""fg.math: every function's derived gradient against float64 finite
differences (fg.testing.check_gradients) over broadcasting shapes, the
GradientTape and Variable API, and the errors of traced calls."""
import numpy as np
import pytest

import fastgrad as fg
from fastgrad import math as M
from fastgrad.testing import check_gradients
from fastgrad.autodiff import TracingError

TOL = 1e-6


def R(*shape, seed=0, lo=None):
    a = np.random.default_rng(seed + sum(shape)).normal(size=shape)
    if lo is not None:
        a = np.abs(a) + lo
    return a


BINARY = ["add", "subtract", "multiply", "divide", "maximum", "minimum", "square_difference"]
SHAPES = [((3, 4), (3, 4)), ((3, 1, 4), (5, 4)), ((4,), (2, 3, 4)), ((2, 1), (1, 3)), ((3, 4), ())]


@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize("sa,sb", SHAPES)
def test_binary_broadcast_gradients(name, sa, sb):
    fn = getattr(M, name)
    a, b = R(*sa, seed=1), R(*sb, seed=2)
    if name == "divide":
        b = np.sign(b) * (np.abs(b) + 0.5)
    assert check_gradients(fn, [a, b]) < TOL


@pytest.mark.parametrize("sa,sb", SHAPES)
def test_power_broadcast_gradients(sa, sb):
    a, b = R(*sa, seed=3, lo=0.5), R(*sb, seed=4)
    assert check_gradients(M.power, [a, b]) < TOL


UNARY = {"negative": None, "exp": None, "log": 0.2, "sqrt": 0.2, "square": None, "abs": 0.1,
         "log1p": 0.1, "expm1": None, "sin": None, "cos": None, "reciprocal": 0.5,
         "tanh": None, "sigmoid": None, "linear": None, "gelu_tanh": None, "selu": None,
         "silu": None, "softplus": None, "softsign": None, "mish": None, "exponential": None,
         "hard_silu": None, "relu": None, "relu6": None, "hard_sigmoid": None}


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_gradients(name):
    lo = UNARY[name]
    x = R(4, 5, seed=5, lo=lo)
    if name in ("abs",):
        x = x * np.where(R(4, 5, seed=6) > 0, 1, -1)
    if name in ("relu", "relu6", "hard_sigmoid", "hard_silu"):
        x = np.where(np.abs(x) < 0.05, 0.3, x) * 2.0    # away from the kinks
        x = np.where(np.abs(np.abs(x) - 3) < 0.05, 2.0, x)
        x = np.where(np.abs(x - 6) < 0.05, 5.0, x)
    assert check_gradients(getattr(M, name), [x]) < TOL


@pytest.mark.parametrize("fn", [lambda x: M.gelu(x), lambda x: M.gelu(x, approximate=True),
                                lambda x: M.leaky_relu(x, 0.1), lambda x: M.elu(x, 0.7),
                                lambda x: M.relu(x, negative_slope=0.1, max_value=1.5,
                                                 threshold=0.2)])
def test_parametrised_activation_gradients(fn):
    x = R(3, 6, seed=7)
    x = np.where(np.abs(x - 0.2) < 0.05, 0.5, x)
    x = np.where(np.abs(x - 1.5) < 0.05, 1.0, x)
    assert check_gradients(fn, [x]) < TOL


@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_gradients(fn, axis):
    x = R(3, 4, 5, seed=8)
    assert check_gradients(lambda a: getattr(M, fn)(a, axis=axis), [x]) < TOL


@pytest.mark.parametrize("fn", ["sum", "mean", "max", "min", "logsumexp", "var"])
@pytest.mark.parametrize("axis", [None, 0, -1, (0, 2)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reduction_gradients(fn, axis, keepdims):
    x = R(3, 4, 5, seed=9)
    assert check_gradients(lambda a: getattr(M, fn)(a, axis=axis, keepdims=keepdims), [x]) < TOL


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (1, 4, 2)),
                                   ((4,), (4, 3)), ((3, 4), (4,)), ((4,), (4,))])
def test_matmul_gradients(sa, sb):
    assert check_gradients(M.matmul, [R(*sa, seed=10), R(*sb, seed=11)]) < TOL


SHAPE_FNS = {
    "reshape": lambda x: M.reshape(x, (4, -1)),
    "transpose": lambda x: M.transpose(x, (2, 0, 1)),
    "transpose_default": lambda x: M.transpose(x),
    "expand_dims": lambda x: M.expand_dims(x, 1),
    "squeeze": lambda x: M.squeeze(M.expand_dims(x, 0), 0),
    "flatten": lambda x: M.flatten(x),
    "getitem_slice": lambda x: x[1:, ::2, -1],
    "getitem_fancy": lambda x: x[[0, 0, 2], :, 1:3],
    "getitem_newaxis": lambda x: x[:, None, 1, ...],
    "take_flat": lambda x: M.take(x, np.array([0, 5, 5, 7])),
    "take_axis": lambda x: M.take(x, np.array([[0, 2], [2, 2]]), axis=1),
    "split": lambda x: M.split(x, 2, axis=1)[1] * 2 + M.sum(M.split(x, [1], axis=2)[0]),
    "clip": lambda x: M.clip(x, -0.5, 0.6),
    "where": lambda x: M.where(x > 0, x * 2, M.exp(x)),
    "cast": lambda x: M.cast(x, "float64") * x,
    "operators": lambda x: (-x[0] + 2) * x[1] / (x[2] ** 2 + 1) - M.sum(x[0] @ M.transpose(x[1])),
    "norm": lambda x: M.norm(x, axis=-1),
}


@pytest.mark.parametrize("name", sorted(SHAPE_FNS))
def test_shape_and_indexing_gradients(name):
    x = R(3, 4, 5, seed=12)
    x = np.where(np.abs(x) < 0.05, 0.3, x)
    x = np.where(np.abs(x + 0.5) < 0.05, -0.3, x)
    x = np.where(np.abs(x - 0.6) < 0.05, 0.3, x)
    assert check_gradients(SHAPE_FNS[name], [x]) < TOL


def test_stop_gradient_blocks():
    x = fg.Variable(np.array([1.5, -2.0]))
    with fg.GradientTape() as t:
        y = M.sum(M.stop_gradient(x) * x)
    assert np.allclose(t.gradient(y, x), x.numpy())


def test_concatenate_stack_gradients():
    a, b = R(2, 3, seed=13), R(2, 5, seed=14)
    assert check_gradients(lambda p, q: M.concatenate([p, q], axis=1), [a, b]) < TOL
    c = R(2, 3, seed=15)
    assert check_gradients(lambda p, q: M.stack([p, q * 2], axis=1), [a, c]) < TOL


def test_no_gradient_ops_values():
    x = np.array([[1.0, -2.0], [3.0, 0.5]])
    assert np.array_equal(M.one_hot(np.array([0, 2]), 3),
                          np.array([[1, 0, 0], [0, 0, 1]], dtype=np.float32))
    assert M.greater(x, 0.7).tolist() == [[True, False], [True, False]]
    assert M.argmax(x, axis=-1).tolist() == [0, 0]
    with fg.GradientTape() as t:
        v = fg.Variable(x)
        y = M.sum(M.cast(M.greater(v, 0), "float64") * v)
    assert np.array_equal(t.gradient(y, v), (x > 0).astype(float))


def test_float32_activations_use_backend_kernels():
    x = R(7, 33, seed=16).astype(np.float32)
    for name in ("relu", "tanh", "sigmoid", "gelu", "silu"):
        ref = fg.get_ops().activation(name, x)
        assert np.array_equal(getattr(M, name)(x), ref)
    assert np.array_equal(M.matmul(x, x.T), fg.get_ops().gemm(x, x, trans_b=True))


# ---------------------------------------------------------------------------- tape / Variable
def test_variable_api():
    v = fg.Variable(np.ones((2, 3)), name="w")
    assert v.shape == (2, 3) and v.dtype == "float64" and v.trainable and v.name == "w"
    v.assign(np.full((2, 3), 2.0))
    v.assign_add(1.0)
    v.assign_sub(np.ones((2, 3)))
    assert np.array_equal(v.numpy(), np.full((2, 3), 2.0))
    assert np.asarray(v).shape == (2, 3)
    with pytest.raises(ValueError, match="assign of shape"):
        v.assign(np.ones((4, 4)))
    f = fg.Variable(np.arange(3), trainable=False)
    assert f.dtype == "float32" and not f.trainable


def test_tape_nested_sources_and_semantics():
    a = fg.Variable(np.array([1.0, 2.0]))
    b = fg.Variable(np.array([[3.0]]))
    c = fg.Variable(np.array([5.0]))
    x = np.array([0.5, -1.0])
    with fg.GradientTape(persistent=True) as t:
        t.watch(x)
        y = M.sum(a * a * b + x)
    g = t.gradient(y, {"first": [a, (b,)], "x": x, "unused": c})
    assert np.allclose(g["first"][0], 2 * a.numpy() * 3.0)
    assert np.allclose(g["first"][1][0], [[5.0]])
    assert np.allclose(g["x"], [1.0, 1.0])
    assert g["unused"] is None
    assert np.allclose(t.gradient(y, a), 2 * a.numpy() * 3.0)    # persistent: again
    with fg.GradientTape() as t2:
        y2 = M.sum(M.square(a))
    t2.gradient(y2, a)
    with pytest.raises(RuntimeError, match="non-persistent"):
        t2.gradient(y2, a)


def test_tape_ufuncs_and_methods_on_tensors_record():
    a = fg.Variable(np.array([[1.0, 2.0], [3.0, 4.0]]))
    with fg.GradientTape() as t:
        y = M.multiply(a, 1.0)
        z = (np.exp(y) * 2 - y ** 2).sum() + y.T[0].mean() + y.reshape(4).max()
    g = t.gradient(z, a)
    A = a.numpy()
    exp = np.exp(A) * 2 - 2 * A
    exp[:, 0] += 0.5
    exp[1, 1] += 1
    assert np.allclose(g, exp)


def test_tape_stop_recording_and_unwatched():
    a = fg.Variable(np.array([2.0]))
    frozen = fg.Variable(np.array([3.0]), trainable=False)
    with fg.GradientTape() as t:
        y = a * frozen
        with t.stop_recording():
            z = a * 10.0
        w = y + M.stop_gradient(z)
    ga, gf = t.gradient(w, [a, frozen])
    assert np.allclose(ga, [3.0]) and gf is None


def test_eager_results_are_plain_arrays_without_tape():
    x = np.ones((2, 2), np.float32)
    y = M.exp(x)
    assert type(y) is np.ndarray


# ---------------------------------------------------------------------------- traced errors
class _IfLayer(fg.layers.Layer):
    def call(self, x):
        if M.sum(x) > 0:
            return x
        return -x


class _NumpyLayer(fg.layers.Layer):
    def call(self, x):
        return np.exp(x)


class _FloatLayer(fg.layers.Layer):
    def call(self, x):
        return x * float(M.mean(x))


class _InnerLayer(fg.layers.Layer):
    def call(self, x):
        return fg.layers.Dense(3)(x)


class _AssignLayer(fg.layers.Layer):
    def build(self, s):
        self.v = self.add_weight(shape=(s[-1],), trainable=False, name="v")

    def call(self, x):
        self.v.assign(M.mean(x, axis=0))
        return x


@pytest.mark.parametrize("cls,what", [(_IfLayer, "Python control flow"),
                                      (_AssignLayer, "Variable.assign"),
                                      (_NumpyLayer, "np.exp"),
                                      (_FloatLayer, r"float\(\)"),
                                      (_InnerLayer, "not an attribute")])
def test_traced_call_errors_name_layer_and_operation(cls, what):
    layer = cls(name=f"bad_{cls.__name__.lower()}")
    with pytest.raises(TracingError, match=f"{layer.name}.*{what}|{what}.*") as ei:
        layer(np.ones((2, 3), np.float32))
    assert layer.name in str(ei.value)
    x = fg.Input((3,))
    with pytest.raises(TracingError):
        cls()(x)


def test_apply_gradients_generic_variables_and_errors():
    v = fg.Variable(np.array([1.0, -2.0], np.float32))
    w = fg.Variable(np.array([[3.0]], np.float32))
    opt = fg.optimizers.SGD(0.1)
    for _ in range(3):
        with fg.GradientTape() as t:
            loss = M.sum(M.square(v)) + M.sum(w * 2.0)
        gv, gw = t.gradient(loss, [v, w])
        opt.apply_gradients(zip([gv, gw], [v, w]))
    assert np.allclose(v.numpy(), np.array([1.0, -2.0]) * 0.8 ** 3, atol=1e-6)
    assert np.allclose(w.numpy(), [[3.0 - 0.6]], atol=1e-6)
    assert opt.iterations == 3
    with pytest.raises(ValueError, match="gradient of shape"):
        opt.apply_gradients([(np.ones(5), v)])
    with pytest.raises(TypeError, match="fg.Variable"):
        opt.apply_gradients([(np.ones(2), np.ones(2))])
