"""fastgrad.export — write a model as an ONNX graph.

    import fastgrad as fg
    proto = fg.export.to_onnx(model, "model.onnx")        # onnx.ModelProto, also written
    # python -m fastgrad export model.fgm model.onnx

The exporter walks the model's graph (Sequential, functional, nested models
inlined) and emits, per layer call, ONNX operators that compute what
fastgrad's inference computes (dropout and noise: identity; BatchNormalization:
the moving statistics). Layouts follow fastgrad (channels_last, Keras weight
layouts): convolutions and pools are wrapped in Transposes to ONNX's NCHW, the
kernels are permuted once at export time. The batch axis is dynamic.

A `QuantizedModel` (fastgrad.quantization) exports too: DynamicQuantizeLinear /
QuantizeLinear, MatMulInteger and float rescaling (docs/export.md states the
tolerance).

Layers with no faithful ONNX form raise `ExportError` (a ValueError) naming the
layer and the reason: Lambda, fg.math ops, custom layers, stateful or
return_state recurrent layers, any layer that consumes a mask, ...
`SUPPORTED` and `REFUSED` list the layer classes each way.

`onnx` is an optional dependency: ``pip install fastgrad[onnx]`` (onnx and
onnxruntime, which the tests use to check every layer to 1e-5).
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Sequence

import numpy as np

__all__ = ["to_onnx", "ExportError", "SUPPORTED", "REFUSED", "DEFAULT_OPSET"]

DEFAULT_OPSET = 17
_INT64_MIN = -(2 ** 63)

#: layer classes with an ONNX translation
SUPPORTED = ("Dense", "Activation", "Flatten", "InputLayer", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
             "Identity",
             "BatchNormalization", "LayerNormalization", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax",
             "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot",
             "Reshape", "Permute", "RepeatVector", "Embedding", "Masking",
             "SimpleRNN", "LSTM", "GRU", "Bidirectional", "TimeDistributed",
             "Conv1D", "Conv2D", "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D",
             "Conv1DTranspose", "Conv2DTranspose",
             "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
             "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
             "ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D", "UpSampling1D", "UpSampling2D",
             "MultiHeadAttention", "Attention",
             "AdditiveAttention", "PositionEmbedding", "SinePositionEncoding", "MathOp")

#: layer classes refused, with the reason
REFUSED = {
    "Lambda": "it runs arbitrary Python code, which has no ONNX form",
    "ModelCall": "a subclassed model's call() is Python code, which has no ONNX form",
    "FakeQuantDense": "it is a quantization-aware-training layer; export fg.quantization.convert(model) "
                      "(the int8 model) or the float model instead",
}


class ExportError(ValueError):
    """A model (or one of its layers) that cannot be written as ONNX."""


def _import_onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper, TensorProto
    except ImportError as exc:  # pragma: no cover - exercised only without onnx
        raise ImportError("fastgrad.export needs the 'onnx' package: pip install fastgrad[onnx] "
                          "(or pip install onnx onnxruntime)") from exc
    return onnx, helper, numpy_helper, TensorProto


# ====================================================================== graph builder
class _Builder:
    """Collects nodes and initializers, hands out unique tensor names."""

    def __init__(self, opset):
        self.onnx, self.helper, self.numpy_helper, self.TP = _import_onnx()
        self.opset = int(opset)
        self.nodes, self.inits = [], []
        self._used = set()
        self._consts = {}
        self.prefix = "g"

    def fresh(self, base):
        base = "".join(ch if ch.isalnum() or ch in "_./:-" else "_" for ch in str(base)) or "t"
        name, k = base, 1
        while name in self._used:
            name = f"{base}_{k}"
            k += 1
        self._used.add(name)
        return name

    def reserve(self, name):
        self._used.add(name)
        return name

    def const(self, arr, base="const", dtype=None):
        a = np.asarray(arr)
        if dtype is not None:
            a = a.astype(dtype)
        elif a.dtype == np.float64:
            a = a.astype(np.float32)
        elif a.dtype.kind in "iu" and a.dtype not in (np.int8, np.uint8, np.int32):
            a = a.astype(np.int64)
        a = np.ascontiguousarray(a)
        # a shared layer's weights (and repeated small constants) are stored once
        key = (a.dtype.str, a.shape, hashlib.sha1(a.tobytes()).hexdigest())
        name = self._consts.get(key)
        if name is None:
            name = self.fresh(f"{self.prefix}/{base}")
            self.inits.append(self.numpy_helper.from_array(a, name))
            self._consts[key] = name
        return name

    def ints(self, values, base="shape"):
        return self.const(np.asarray(list(values), np.int64), base)

    def scalar(self, v, base="scalar"):
        return self.const(np.asarray(v, np.float32), base)

    def op(self, op_type, inputs, base=None, n_out=1, **attrs):
        outs = [self.fresh(f"{self.prefix}/{base or op_type}{'' if n_out == 1 else f'_{i}'}")
                for i in range(n_out)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(self.helper.make_node(op_type, list(inputs), outs,
                                                name=self.fresh(f"{self.prefix}/{op_type}_node"), **attrs))
        return outs[0] if n_out == 1 else outs

    # ---- helpers that differ between opsets
    def reduce(self, op_type, x, axes, keepdims=1):
        axes = [int(a) for a in axes]
        if self.opset >= 18 or op_type == "ReduceSum":
            return self.op(op_type, [x, self.ints(axes, "axes")], keepdims=keepdims)
        return self.op(op_type, [x], axes=axes, keepdims=keepdims)

    def reshape(self, x, per_sample_shape):
        return self.op("Reshape", [x, self.ints([-1] + [int(s) for s in per_sample_shape])])

    def transpose(self, x, perm):
        return self.op("Transpose", [x], perm=[int(p) for p in perm])

    def squeeze(self, x, axes):
        return self.op("Squeeze", [x, self.ints(axes, "axes")])

    def unsqueeze(self, x, axes):
        return self.op("Unsqueeze", [x, self.ints(axes, "axes")])

    def slice(self, x, starts, ends, axes, steps=None):
        ins = [x, self.ints(starts, "starts"), self.ints(ends, "ends"), self.ints(axes, "axes")]
        if steps is not None:
            ins.append(self.ints(steps, "steps"))
        return self.op("Slice", ins)

    def reverse(self, x, axis):
        return self.slice(x, [-1], [_INT64_MIN], [axis], [-1])

    def clip(self, x, lo=None, hi=None):
        ins = [x, self.scalar(lo, "min") if lo is not None else "",
               self.scalar(hi, "max") if hi is not None else ""]
        while ins and ins[-1] == "":
            ins.pop()
        return self.op("Clip", ins)


# ====================================================================== activations
_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805


def _softplus(b, x):
    # max(x, 0) + log1p(exp(-|x|)), fastgrad's stable form (ONNX Softplus overflows early)
    t = b.op("Exp", [b.op("Neg", [b.op("Abs", [x])])])
    return b.op("Add", [b.op("Relu", [x]), b.op("Log", [b.op("Add", [t, b.scalar(1.0)])])])


def _hard_sigmoid(b, x):
    return b.op("Div", [b.clip(b.op("Add", [x, b.scalar(3.0)]), 0.0, 6.0), b.scalar(6.0)])


def _activation(b, name, x, params=None, axis=-1):
    """ONNX ops for fastgrad activation `name` (canonical, or the ops-level relu_general)."""
    p = params or {}
    if name == "linear":
        return x
    if name == "relu":
        return b.op("Relu", [x])
    if name == "sigmoid":
        return b.op("Sigmoid", [x])
    if name == "tanh":
        return b.op("Tanh", [x])
    if name == "softmax":
        return b.op("Softmax", [x], axis=axis)
    if name == "log_softmax":
        return b.op("LogSoftmax", [x], axis=axis)
    if name == "gelu":
        e = b.op("Erf", [b.op("Div", [x, b.scalar(np.sqrt(2.0))])])
        return b.op("Mul", [b.op("Mul", [x, b.scalar(0.5)]), b.op("Add", [e, b.scalar(1.0)])])
    if name == "gelu_tanh":
        x3 = b.op("Mul", [b.op("Mul", [x, x]), x])
        inner = b.op("Add", [x, b.op("Mul", [x3, b.scalar(0.044715)])])
        t = b.op("Tanh", [b.op("Mul", [inner, b.scalar(np.sqrt(2.0 / np.pi))])])
        return b.op("Mul", [b.op("Mul", [x, b.scalar(0.5)]), b.op("Add", [t, b.scalar(1.0)])])
    if name == "leaky_relu":
        slope = float(p.get("negative_slope", 0.2))
        # fastgrad: x >= 0 ? x : slope * x
        return b.op("Where", [b.op("GreaterOrEqual", [x, b.scalar(0.0)]), x,
                              b.op("Mul", [x, b.scalar(slope)])])
    if name == "elu":
        return b.op("Elu", [x], alpha=float(p.get("alpha", 1.0)))
    if name == "selu":
        return b.op("Selu", [x], alpha=_SELU_ALPHA, gamma=_SELU_SCALE)
    if name == "silu":
        return b.op("Mul", [x, b.op("Sigmoid", [x])])
    if name == "softplus":
        return _softplus(b, x)
    if name == "softsign":
        return b.op("Softsign", [x])
    if name == "hard_sigmoid":
        return _hard_sigmoid(b, x)
    if name == "mish":
        return b.op("Mul", [x, b.op("Tanh", [_softplus(b, x)])])
    if name == "exponential":
        return b.op("Exp", [x])
    if name == "relu6":
        return b.clip(x, 0.0, 6.0)
    if name == "hard_silu":
        return b.op("Mul", [x, _hard_sigmoid(b, x)])
    if name == "relu_general":
        slope = float(p.get("negative_slope", 0.0))
        thr = float(p.get("threshold", 0.0))
        mx = p.get("max_value")
        a = b.op("Where", [b.op("Greater", [x, b.scalar(thr)]), x, b.scalar(0.0)])
        if mx is not None and mx != float("inf"):
            a = b.clip(a, 0.0, float(mx))
        if slope != 0:
            neg = b.op("Mul", [b.op("Relu", [b.op("Sub", [b.scalar(thr), x])]), b.scalar(slope)])
            a = b.op("Sub", [a, neg])
        return a
    raise ExportError(f"activation {name!r} has no ONNX translation")


# ====================================================================== layer converters
# each: fn(b, layer, xs (ONNX names), in_shapes (per-sample), out_shape (per-sample)) -> name
_CONVERTERS: dict = {}


def _converter(*kinds):
    def deco(fn):
        for k in kinds:
            _CONVERTERS[k] = fn
        return fn
    return deco


def _refuse(layer, why):
    raise ExportError(f"to_onnx: layer {layer.name!r} ({type(layer).__name__}) cannot be exported: {why}")


def _param(layer, name):
    v = layer.params.get(name)
    return None if v is None else np.asarray(v, np.float32)


def _state(layer, name):
    return np.asarray(layer.state[name], np.float32)


def _run_act(layer):
    """The activation a layer applies at inference (its fused one when split off)."""
    act = getattr(layer, "_fused_activation", None) or getattr(layer, "_run_act", None) \
        or getattr(layer, "activation", "linear")
    return act


@_converter("Dense")
def _dense(b, layer, xs, in_shapes, out_shape):
    y = b.op("MatMul", [xs[0], b.const(_param(layer, "kernel"), f"{layer.name}/kernel")])
    if layer.use_bias:
        y = b.op("Add", [y, b.const(_param(layer, "bias"), f"{layer.name}/bias")])
    return _activation(b, _run_act(layer), y)


@_converter("Activation")
def _activation_layer(b, layer, xs, in_shapes, out_shape):
    return _activation(b, _run_act(layer), xs[0])


@_converter("ReLU", "LeakyReLU", "ELU")
def _elementwise_act(b, layer, xs, in_shapes, out_shape):
    name, params = layer._op
    return _activation(b, name, xs[0], params)


@_converter("PReLU")
def _prelu(b, layer, xs, in_shapes, out_shape):
    alpha = _param(layer, "alpha")
    # fastgrad: x >= 0 ? x : alpha * x  (= ONNX PRelu, which takes x < 0 ? slope * x : x)
    return b.op("PRelu", [xs[0], b.const(alpha, f"{layer.name}/alpha")])


@_converter("Softmax")
def _softmax_layer(b, layer, xs, in_shapes, out_shape):
    axes = list(layer._axes)
    x = xs[0]
    if len(axes) == 1:
        return b.op("Softmax", [x], axis=axes[0])
    m = b.reduce("ReduceMax", x, axes)
    e = b.op("Exp", [b.op("Sub", [x, m])])
    return b.op("Div", [e, b.reduce("ReduceSum", e, axes)])


@_converter("Dropout", "SpatialDropout1D", "SpatialDropout2D", "Identity", "InputLayer", "GaussianNoise", "GaussianDropout",
            "AlphaDropout")
def _identity(b, layer, xs, in_shapes, out_shape):
    return b.op("Identity", [xs[0]])


@_converter("Flatten", "Reshape")
def _reshape(b, layer, xs, in_shapes, out_shape):
    return b.reshape(xs[0], out_shape)


@_converter("Permute")
def _permute(b, layer, xs, in_shapes, out_shape):
    return b.transpose(xs[0], layer._perm)


@_converter("RepeatVector")
def _repeat(b, layer, xs, in_shapes, out_shape):
    u = b.unsqueeze(xs[0], [1])
    return b.op("Expand", [u, b.ints([1, layer.n, 1])])


@_converter("BatchNormalization")
def _batchnorm(b, layer, xs, in_shapes, out_shape):
    c = layer._c
    gamma = _param(layer, "gamma") if layer.scale else np.ones(c, np.float32)
    beta = _param(layer, "beta") if layer.center else np.zeros(c, np.float32)
    mm, mv = _state(layer, "moving_mean"), _state(layer, "moving_variance")
    # the same float32 operations as BatchNormalization._forward_infer
    scale = np.sqrt(mv + np.float32(layer.epsilon)).astype(np.float32)
    scale = (gamma / scale).astype(np.float32)
    shift = (beta - mm * scale).astype(np.float32)
    shape = [1] * len(in_shapes[0])
    shape[layer._ax - 1] = c
    y = b.op("Mul", [xs[0], b.const(scale.reshape(shape), f"{layer.name}/scale")])
    return b.op("Add", [y, b.const(shift.reshape(shape), f"{layer.name}/shift")])


@_converter("LayerNormalization")
def _layernorm(b, layer, xs, in_shapes, out_shape):
    ns = tuple(layer._norm_shape)
    gamma = _param(layer, "gamma") if layer.scale else np.ones(ns, np.float32)
    beta = _param(layer, "beta") if layer.center else np.zeros(ns, np.float32)
    axis = len(in_shapes[0]) + 1 - len(ns)
    return b.op("LayerNormalization", [xs[0], b.const(gamma.reshape(ns), f"{layer.name}/gamma"),
                                       b.const(beta.reshape(ns), f"{layer.name}/beta")],
                axis=axis, epsilon=float(np.float32(layer.epsilon)))


@_converter("Embedding")
def _embedding(b, layer, xs, in_shapes, out_shape):
    ids = xs[0]
    if b.dtypes.get(ids) != "int":
        ids = b.op("Cast", [ids], to=b.TP.INT64)
    return b.op("Gather", [b.const(_param(layer, "embeddings"), f"{layer.name}/embeddings"), ids], axis=0)


@_converter("Masking")
def _masking(b, layer, xs, in_shapes, out_shape):
    x = xs[0]
    ne = b.op("Not", [b.op("Equal", [x, b.scalar(layer.mask_value)])])
    keep = b.op("Cast", [b.reduce("ReduceMax", b.op("Cast", [ne], to=b.TP.INT32), [-1])], to=b.TP.FLOAT)
    return b.op("Mul", [x, keep])


# ---------------------------------------------------------------------- merges
@_converter("Add")
def _add(b, layer, xs, in_shapes, out_shape):
    return b.op("Sum", xs) if len(xs) > 2 else b.op("Add", xs)


@_converter("Subtract")
def _sub(b, layer, xs, in_shapes, out_shape):
    return b.op("Sub", xs)


@_converter("Multiply")
def _mul(b, layer, xs, in_shapes, out_shape):
    y = xs[0]
    for x in xs[1:]:
        y = b.op("Mul", [y, x])
    return y


@_converter("Average")
def _average(b, layer, xs, in_shapes, out_shape):
    y = xs[0]
    for x in xs[1:]:
        y = b.op("Add", [y, x])
    return b.op("Div", [y, b.scalar(float(len(xs)))])


@_converter("Maximum")
def _maximum(b, layer, xs, in_shapes, out_shape):
    return b.op("Max", xs)


@_converter("Minimum")
def _minimum(b, layer, xs, in_shapes, out_shape):
    return b.op("Min", xs)


@_converter("Concatenate")
def _concat(b, layer, xs, in_shapes, out_shape):
    return b.op("Concat", xs, axis=int(layer.axis))


_LETTERS = "bcdefghijklmnopqrstuvwxyz"


@_converter("Dot")
def _dot(b, layer, xs, in_shapes, out_shape):
    a0, a1 = layer._full_axes(layer.input_shape)
    us = list(xs)
    if layer.normalize:
        from .layers.merge import _EPSILON
        for i, a in enumerate((a0, a1)):
            ss = b.reduce("ReduceSumSquare", us[i], [a])
            inv = b.op("Min", [b.op("Reciprocal", [b.op("Sqrt", [ss])]), b.scalar(1.0 / np.float32(_EPSILON))])
            us[i] = b.op("Mul", [us[i], inv])
    r0, r1 = len(in_shapes[0]) + 1, len(in_shapes[1]) + 1
    letters = iter(_LETTERS)
    s0 = ["a"] + [next(letters) for _ in range(r0 - 1)]
    s1 = ["a"] + [next(letters) for _ in range(r1 - 1)]
    s1[a1] = s0[a0]
    out = ["a"] + [c for i, c in enumerate(s0) if i not in (0, a0)] + \
        [c for i, c in enumerate(s1) if i not in (0, a1)]
    y = b.op("Einsum", us, equation=f"{''.join(s0)},{''.join(s1)}->{''.join(out)}")
    return b.reshape(y, out_shape)


# ---------------------------------------------------------------------- convolutions
def _to_nchw(b, x, rank):
    return b.transpose(x, [0, rank + 1] + list(range(1, rank + 1)))


def _to_nhwc(b, x, rank):
    return b.transpose(x, [0] + list(range(2, rank + 2)) + [1])


def _onnx_pads(pads, rank):
    """fastgrad (lo0, hi0, lo1, hi1, ...) -> ONNX (lo0, lo1, ..., hi0, hi1, ...)."""
    return [int(pads[2 * i]) for i in range(rank)] + [int(pads[2 * i + 1]) for i in range(rank)]


@_converter("Conv1D", "Conv2D", "Convolution1D", "Convolution2D")
def _conv(b, layer, xs, in_shapes, out_shape):
    r = layer.rank
    k = _param(layer, "kernel")                       # (*ks, in/g, out)
    w = np.transpose(k, (r + 1, r) + tuple(range(r)))  # (out, in/g, *ks)
    ins = [_to_nchw(b, xs[0], r), b.const(w, f"{layer.name}/kernel")]
    if layer.use_bias:
        ins.append(b.const(_param(layer, "bias"), f"{layer.name}/bias"))
    y = b.op("Conv", ins, kernel_shape=list(layer.kernel_size), strides=list(layer.strides),
             dilations=list(layer.dilation_rate), pads=_onnx_pads(layer._pads, r), group=layer.groups)
    return _activation(b, _run_act(layer), _to_nhwc(b, y, r))


def _depthwise(b, x, k, bias, layer, base):
    r = layer.rank
    ks, c, m = k.shape[:r], k.shape[r], k.shape[r + 1]
    w = np.moveaxis(k.reshape(ks + (c * m,)), r, 0)[:, None]   # (c*m, 1, *ks)
    ins = [x, b.const(w, base)]
    if bias is not None:
        ins.append(b.const(bias, f"{layer.name}/bias"))
    return b.op("Conv", ins, kernel_shape=list(layer.kernel_size), strides=list(layer.strides),
                dilations=list(layer.dilation_rate), pads=_onnx_pads(layer._pads, r), group=c)


@_converter("DepthwiseConv1D", "DepthwiseConv2D")
def _depthwise_conv(b, layer, xs, in_shapes, out_shape):
    r = layer.rank
    y = _depthwise(b, _to_nchw(b, xs[0], r), _param(layer, "kernel"),
                   _param(layer, "bias") if layer.use_bias else None, layer, f"{layer.name}/kernel")
    return _activation(b, _run_act(layer), _to_nhwc(b, y, r))


@_converter("SeparableConv1D", "SeparableConv2D", "SeparableConvolution1D")
def _separable(b, layer, xs, in_shapes, out_shape):
    r = layer.rank
    t = _depthwise(b, _to_nchw(b, xs[0], r), _param(layer, "depthwise_kernel"), None, layer,
                   f"{layer.name}/depthwise_kernel")
    pw = _param(layer, "pointwise_kernel")                          # (1, [1,] c*m, F)
    w = np.transpose(pw, (r + 1, r) + tuple(range(r)))              # (F, c*m, 1[, 1])
    ins = [t, b.const(w, f"{layer.name}/pointwise_kernel")]
    if layer.use_bias:
        ins.append(b.const(_param(layer, "bias"), f"{layer.name}/bias"))
    y = b.op("Conv", ins, kernel_shape=[1] * r)
    return _activation(b, _run_act(layer), _to_nhwc(b, y, r))


@_converter("Conv1DTranspose", "Conv2DTranspose", "Convolution1DTranspose", "Convolution2DTranspose")
def _conv_transpose(b, layer, xs, in_shapes, out_shape):
    r = layer.rank
    k = _param(layer, "kernel")                       # (*ks, F, C)
    w = np.transpose(k, (r + 1, r) + tuple(range(r)))  # (C, F, *ks)
    lo = [int(p) for p in layer._pads[0::2]]
    hi = [int(p) for p in layer._pads[1::2]]
    ins = [_to_nchw(b, xs[0], r), b.const(w, f"{layer.name}/kernel")]
    if layer.use_bias:
        ins.append(b.const(_param(layer, "bias"), f"{layer.name}/bias"))
    # fastgrad's bottom / right pad may be negative (TF's rule): extra output rows = output_padding
    y = b.op("ConvTranspose", ins, kernel_shape=list(layer.kernel_size), strides=list(layer.strides),
             dilations=list(layer.dilation_rate), pads=lo + [max(h, 0) for h in hi],
             output_padding=[max(-h, 0) for h in hi])
    return _activation(b, _run_act(layer), _to_nhwc(b, y, r))


@_converter("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D", "MaxPool1D", "MaxPool2D",
            "AvgPool1D", "AvgPool2D")
def _pool(b, layer, xs, in_shapes, out_shape):
    r = layer.rank
    x = _to_nchw(b, xs[0], r)
    kw = dict(kernel_shape=list(layer.pool_size), strides=list(layer.strides), pads=_onnx_pads(layer._pads, r))
    if layer.kind == "max":
        y = b.op("MaxPool", [x], **kw)
    else:
        y = b.op("AveragePool", [x], count_include_pad=0, **kw)
    return _to_nhwc(b, y, r)


@_converter("GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
            "GlobalAvgPool1D", "GlobalAvgPool2D", "GlobalMaxPool1D", "GlobalMaxPool2D")
def _global_pool(b, layer, xs, in_shapes, out_shape):
    r = len(in_shapes[0]) - 1
    op = "ReduceMax" if "Max" in type(layer).__name__ else "ReduceMean"
    return b.reduce(op, xs[0], list(range(1, r + 1)), keepdims=1 if layer.keepdims else 0)


@_converter("ZeroPadding2D")
def _zero_pad(b, layer, xs, in_shapes, out_shape):
    t, bo, l, r = layer.padding
    return b.op("Pad", [xs[0], b.ints([0, t, l, 0, 0, bo, r, 0], "pads")], mode="constant")


@_converter("Cropping2D")
def _crop(b, layer, xs, in_shapes, out_shape):
    t, bo, l, r = layer.cropping
    h, w = in_shapes[0][0], in_shapes[0][1]
    return b.slice(xs[0], [t, l], [h - bo, w - r], [1, 2])


@_converter("ZeroPadding1D")
def _zero_pad1d(b, layer, xs, in_shapes, out_shape):
    lo, hi = layer.padding
    return b.op("Pad", [xs[0], b.ints([0, lo, 0, 0, hi, 0], "pads")], mode="constant")


@_converter("Cropping1D")
def _crop1d(b, layer, xs, in_shapes, out_shape):
    lo, hi = layer.cropping
    return b.slice(xs[0], [lo], [in_shapes[0][0] - hi], [1])


@_converter("UpSampling1D")
def _upsample1d(b, layer, xs, in_shapes, out_shape):
    n, c = in_shapes[0]
    u = b.op("Reshape", [xs[0], b.ints([-1, n, 1, c])])
    u = b.op("Expand", [u, b.ints([1, 1, layer.size, 1])])
    return b.reshape(u, out_shape)


@_converter("UpSampling2D")
def _upsample(b, layer, xs, in_shapes, out_shape):
    h, w, c = in_shapes[0]
    sh, sw = layer.size
    u = b.op("Reshape", [xs[0], b.ints([-1, h, 1, w, 1, c])])
    u = b.op("Expand", [u, b.ints([1, 1, sh, 1, sw, 1])])
    return b.reshape(u, out_shape)


# ---------------------------------------------------------------------- recurrent
_RNN_ACTS = {"tanh": ("Tanh", None), "sigmoid": ("Sigmoid", None), "relu": ("Relu", None),
             "linear": ("Affine", (1.0, 0.0))}


def _rnn_core(b, layer, x, inits=()):
    """x (N, T, I) -> (output (N, T, U) or (N, U), [final h (N, U)(, final c)])."""
    if getattr(layer, "stateful", False):
        _refuse(layer, "stateful=True carries states across calls, which an ONNX graph cannot")
    kind = type(layer).__name__
    u = layer.units
    k = _param(layer, "kernel")
    rk = _param(layer, "recurrent_kernel")
    bias = _param(layer, "bias") if layer.use_bias else None
    if kind == "LSTM":
        def reorder(m):  # Keras [i f c o] -> ONNX [i o f c] along the last axis
            return np.concatenate([m[..., :u], m[..., 3 * u:], m[..., u:2 * u], m[..., 2 * u:3 * u]], axis=-1)
        W, R = reorder(k).T, reorder(rk).T
        wb = reorder(bias) if bias is not None else np.zeros(4 * u, np.float32)
        B = np.concatenate([wb, np.zeros(4 * u, np.float32)])
        acts, op = [layer.recurrent_activation, layer.activation, layer.activation], "LSTM"
        extra = {}
    elif kind == "GRU":
        W, R = k.T, rk.T
        if layer.reset_after:
            B = (np.concatenate([bias[0], bias[1]]) if bias is not None else np.zeros(6 * u, np.float32))
        else:
            B = np.concatenate([bias if bias is not None else np.zeros(3 * u, np.float32),
                                np.zeros(3 * u, np.float32)])
        acts, op = [layer.recurrent_activation, layer.activation], "GRU"
        extra = {"linear_before_reset": 1 if layer.reset_after else 0}
    else:
        W, R = k.T, rk.T
        B = np.concatenate([bias if bias is not None else np.zeros(u, np.float32), np.zeros(u, np.float32)])
        acts, op = [layer.activation], "RNN"
        extra = {}
    names, alphas, betas, params = [], [], [], False
    for a in acts:
        n, ab = _RNN_ACTS[a]
        names.append(n)
        if ab is not None:
            params = True
            alphas.append(ab[0])
            betas.append(ab[1])
    if params:
        extra.update(activation_alpha=alphas, activation_beta=betas)
    xt = b.transpose(x, [1, 0, 2])                    # (T, N, I)
    if layer.go_backwards:
        xt = b.reverse(xt, 0)
    ins = [xt, b.const(W[None], f"{layer.name}/W"), b.const(R[None], f"{layer.name}/R"),
           b.const(B[None], f"{layer.name}/B"), ""]
    for h in inits:
        ins.append(b.unsqueeze(h, [0]))
    outs = b.op(op, ins, n_out=3 if op == "LSTM" else 2, hidden_size=u, activations=names, **extra)
    states = [b.squeeze(t, [0]) for t in outs[1:]]
    if layer.return_sequences:
        return b.transpose(b.squeeze(outs[0], [1]), [1, 0, 2]), states
    return states[0], states


def _pack(b, tensors, shapes):
    """fastgrad's packed multi-output tensor: each part flattened per sample, concatenated."""
    flat = [b.reshape(t, (int(np.prod(s)),)) for t, s in zip(tensors, shapes)]
    return flat[0] if len(flat) == 1 else b.op("Concat", flat, axis=1)


@_converter("SimpleRNN", "LSTM", "GRU")
def _rnn(b, layer, xs, in_shapes, out_shape):
    y, states = _rnn_core(b, layer, xs[0], xs[1:])
    if not layer.return_state:
        return y
    u = layer.units
    return _pack(b, [y] + states, [layer._out_shape(in_shapes[0][0])] + [(u,)] * len(states))


@_converter("_RnnPart")
def _rnn_part(b, layer, xs, in_shapes, out_shape):
    return b.reshape(b.slice(xs[0], [layer.start], [layer.stop], [1]), layer.shape)


@_converter("_HalfPart")
def _half_part(b, layer, xs, in_shapes, out_shape):
    u = layer.units
    return b.slice(xs[0], [layer.k * u], [(layer.k + 1) * u], [-1])


@_converter("Bidirectional")
def _bidirectional(b, layer, xs, in_shapes, out_shape):
    if len(xs) > 1:
        _refuse(layer, "initial states are not exported for Bidirectional")
    yf, sf = _rnn_core(b, layer.forward_layer, xs[0])
    yb, sb = _rnn_core(b, layer.backward_layer, xs[0])
    if layer.return_sequences:
        yb = b.reverse(yb, 1)
    mode = layer.merge_mode
    if mode in ("concat", None):
        y = b.op("Concat", [yf, yb], axis=-1)
    elif mode == "sum":
        y = b.op("Add", [yf, yb])
    elif mode == "mul":
        y = b.op("Mul", [yf, yb])
    elif mode == "ave":
        y = b.op("Mul", [b.op("Add", [yf, yb]), b.scalar(0.5)])
    else:
        _refuse(layer, f"merge_mode {mode!r} is not exported")
    if not layer.return_state:
        return y
    parts = layer._state_parts()
    if mode is None:
        outs = [yf, yb]
    else:
        outs = [y]
    tensors = outs + sf + sb
    return _pack(b, tensors, [p[2] for p in parts])


@_converter("TimeDistributed")
def _time_distributed(b, layer, xs, in_shapes, out_shape):
    inner = layer.layer
    fn = _CONVERTERS.get(type(inner).__name__)
    if fn is None:
        _refuse(layer, f"its inner layer {type(inner).__name__} has no ONNX translation")
    t = in_shapes[0][0]
    inner_in = tuple(in_shapes[0][1:])
    x = b.reshape(xs[0], inner_in)
    y = fn(b, inner, [x], [inner_in], tuple(out_shape[1:]))
    return b.reshape(y, (t,) + tuple(out_shape[1:]))


# ---------------------------------------------------------------------- attention / positions
@_converter("PositionEmbedding")
def _position_embedding(b, layer, xs, in_shapes, out_shape):
    t = in_shapes[0][-2]
    table = b.const(_param(layer, "embeddings")[:t], f"{layer.name}/embeddings")
    return b.op("Expand", [table, b.op("Shape", [xs[0]])])


@_converter("SinePositionEncoding")
def _sine_position(b, layer, xs, in_shapes, out_shape):
    t, d = in_shapes[0][-2], in_shapes[0][-1]
    enc = b.const(layer.encoding(t, d, layer.max_wavelength, np.float32), f"{layer.name}/encoding")
    return b.op("Expand", [enc, b.op("Shape", [xs[0]])])


def _allowed(b, layer, parts, tq, tk):
    """The boolean (B, 1, Tq, Tk) of attended entries (attention_allowed), or None;
    and the query-valid (B, Tq) boolean, or None."""
    allowed, qv = None, None

    def both(a, m):
        return m if a is None else b.op("And", [a, m])

    def nz(x, shape):
        return b.op("Not", [b.op("Equal", [b.reshape(b.op("Cast", [x], to=b.TP.FLOAT), shape), b.scalar(0.0)])])
    for n in ("value_mask", "key_mask"):
        if n in parts:
            allowed = both(allowed, nz(parts[n], (1, 1, tk)))
    if "query_mask" in parts:
        qv = nz(parts["query_mask"], (tq,))
    if "attention_mask" in parts:
        allowed = both(allowed, nz(parts["attention_mask"], (1, tq, tk)))
    if layer._causal:
        allowed = both(allowed, b.const(np.tril(np.ones((tq, tk), bool))[None, None], "causal"))
    return allowed, qv


def _masked_softmax(b, s, allowed):
    """attention_softmax: softmax over the last axis restricted to `allowed`, 0 elsewhere
    (a row with nothing allowed is all 0)."""
    if allowed is None:
        return b.op("Softmax", [s], axis=-1)
    s = b.op("Where", [allowed, s, b.scalar(-np.inf)])
    m = b.reduce("ReduceMax", s, [-1])
    m = b.op("Where", [b.op("IsInf", [m]), b.scalar(0.0), m])
    e = b.op("Exp", [b.op("Sub", [s, m])])
    tot = b.reduce("ReduceSum", e, [-1])
    tot = b.op("Where", [b.op("Equal", [tot, b.scalar(0.0)]), b.scalar(1.0), tot])
    return b.op("Div", [e, tot])


def _attention_parts(layer, xs):
    return dict(zip(layer._slots, xs))


@_converter("MultiHeadAttention")
def _mha(b, layer, xs, in_shapes, out_shape):
    parts = _attention_parts(layer, xs)
    shp = dict(zip(layer._slots, in_shapes))
    H, kd, vd = layer.num_heads, layer.key_dim, layer.value_dim
    tq = int(np.prod(shp["query"][:-1]))
    tk = int(np.prod(shp["value"][:-1]))

    def project(x, t, din, name, d):
        x = b.reshape(x, (t, din))
        y = b.op("MatMul", [x, b.const(_param(layer, f"{name}_kernel").reshape(din, H * d), f"{layer.name}/{name}_kernel")])
        if layer.use_bias:
            y = b.op("Add", [y, b.const(_param(layer, f"{name}_bias").reshape(H * d), f"{layer.name}/{name}_bias")])
        return b.transpose(b.reshape(y, (t, H, d)), [0, 2, 1, 3])          # (B, H, T, d)
    q = project(parts["query"], tq, layer._dq, "query", kd)
    k = project(parts.get("key", parts["value"]), tk, layer._dk_in, "key", kd)
    v = project(parts["value"], tk, layer._dv_in, "value", vd)
    s = b.op("MatMul", [q, b.transpose(k, [0, 1, 3, 2])])
    s = b.op("Mul", [s, b.scalar(np.float32(1.0 / np.sqrt(kd)))])
    allowed, qv = _allowed(b, layer, parts, tq, tk)
    if qv is not None:
        qa = b.unsqueeze(b.unsqueeze(qv, [1]), [3])                          # (B, 1, Tq, 1)
        allowed = qa if allowed is None else b.op("And", [allowed, qa])
    p = _masked_softmax(b, s, allowed)
    o = b.op("MatMul", [p, v])                                               # (B, H, Tq, vd)
    o = b.reshape(b.transpose(o, [0, 2, 1, 3]), (tq, H * vd))
    y = b.op("MatMul", [o, b.const(_param(layer, "output_kernel").reshape(H * vd, layer._dout),
                                   f"{layer.name}/output_kernel")])
    if layer.use_bias:
        y = b.op("Add", [y, b.const(_param(layer, "output_bias"), f"{layer.name}/output_bias")])
    if layer._graph_scores:     # packed (output, scores): hidden _RnnPart nodes split it
        return _pack(b, [y, p], [layer._y_shape, layer._scores_shape])
    return b.reshape(y, out_shape)


@_converter("Attention", "AdditiveAttention")
def _luong_bahdanau(b, layer, xs, in_shapes, out_shape):
    parts = _attention_parts(layer, xs)
    shp = dict(zip(layer._slots, in_shapes))
    tq, tk = shp["query"][0], shp["value"][0]
    q, v = parts["query"], parts["value"]
    k = parts.get("key", v)
    mult = None
    if layer.score_mode == "dot":
        s = b.op("MatMul", [q, b.transpose(k, [0, 2, 1])])                  # (B, Tq, Tk)
        if layer.use_scale:
            mult = float(_param(layer, "scale"))
    else:
        t = b.op("Add", [b.unsqueeze(q, [2]), b.unsqueeze(k, [1])])         # (B, Tq, Tk, D)
        if layer.score_mode == "concat":
            if layer.use_scale:
                t = b.op("Mul", [t, b.scalar(_param(layer, "scale").reshape(()))])
            s = b.reduce("ReduceSum", b.op("Tanh", [t]), [-1], keepdims=0)
            mult = float(_param(layer, "concat_score_weight"))
        else:   # additive
            t = b.op("Tanh", [t])
            if layer.use_scale:
                s = b.op("MatMul", [t, b.const(_param(layer, "scale"), f"{layer.name}/scale")])
            else:
                s = b.reduce("ReduceSum", t, [-1], keepdims=0)
    s = b.unsqueeze(s, [1])                                                   # (B, 1, Tq, Tk)
    if mult is not None:
        s = b.op("Mul", [s, b.scalar(mult)])
    allowed, qv = _allowed(b, layer, parts, tq, tk)
    p = b.squeeze(_masked_softmax(b, s, allowed), [1])
    y = b.op("MatMul", [p, v])
    if qv is not None:
        y = b.op("Mul", [y, b.unsqueeze(b.op("Cast", [qv], to=b.TP.FLOAT), [2])])
    return y


# ---------------------------------------------------------------------- fg.math on symbolic tensors
_MATH_BINARY = {"add": "Add", "subtract": "Sub", "multiply": "Mul", "divide": "Div", "power": "Pow",
                "maximum": "Max", "minimum": "Min", "matmul": "MatMul", "equal": "Equal", "not_equal": None,
                "greater": "Greater", "greater_equal": "GreaterOrEqual", "less": "Less",
                "less_equal": "LessOrEqual"}
_MATH_UNARY = {"negative": "Neg", "abs": "Abs", "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "sin": "Sin",
               "cos": "Cos", "reciprocal": "Reciprocal", "sign": "Sign", "identity": "Identity",
               "stop_gradient": "Identity"}
_MATH_ACTS = ("linear", "relu", "sigmoid", "tanh", "gelu", "gelu_tanh", "leaky_relu", "elu", "selu", "silu",
              "softplus", "softsign", "hard_sigmoid", "mish", "exponential", "relu6", "hard_silu", "relu_general")
_MATH_REDUCE = {"sum": "ReduceSum", "mean": "ReduceMean", "max": "ReduceMax", "min": "ReduceMin"}


@_converter("MathOp")
def _math_op(b, layer, xs, in_shapes, out_shape):
    op, attrs = layer.op, dict(layer.attrs)
    vals = [xs[v] if k == "t" else b.const(np.asarray(v, np.float32), f"{layer.name}/const")
            for k, v in layer.template]
    if op in _MATH_BINARY and _MATH_BINARY[op] is not None and not attrs:
        y = b.op(_MATH_BINARY[op], vals)
        if op in ("equal", "greater", "greater_equal", "less", "less_equal"):
            y = b.op("Cast", [y], to=b.TP.FLOAT)
        return y
    if op == "not_equal" and not attrs:
        return b.op("Cast", [b.op("Not", [b.op("Equal", vals)])], to=b.TP.FLOAT)
    if op == "square_difference" and not attrs:
        d = b.op("Sub", vals)
        return b.op("Mul", [d, d])
    if op == "square" and not attrs:
        return b.op("Mul", [vals[0], vals[0]])
    if op in _MATH_UNARY and not attrs:
        return b.op(_MATH_UNARY[op], vals)
    if op in _MATH_ACTS:
        return _activation(b, op, vals[0], attrs)
    if op in ("softmax", "log_softmax"):
        return _activation(b, op, vals[0], axis=int(attrs.get("axis", -1)))
    if op == "clip" and not attrs:
        return b.op("Min", [b.op("Max", [vals[0], vals[1]]), vals[2]])
    if op in _MATH_REDUCE and attrs.get("axis") is not None:
        ax = attrs["axis"]
        axes = [int(a) for a in (ax if isinstance(ax, (tuple, list)) else [ax])]
        rank = len(in_shapes[0]) + 1
        if any(a % rank == 0 for a in axes):
            _refuse(layer, f"fg.math.{op} over the batch axis is not exported")
        return b.reduce(_MATH_REDUCE[op], vals[0], axes, keepdims=1 if attrs.get("keepdims") else 0)
    if op in ("reshape", "expand_dims", "squeeze"):
        return b.reshape(vals[0], out_shape)
    if op == "transpose" and attrs.get("axes") is not None:
        rank = len(in_shapes[0]) + 1
        perm = [int(a) % rank for a in attrs["axes"]]
        if perm[0] != 0:
            _refuse(layer, "fg.math.transpose moving the batch axis is not exported")
        return b.transpose(vals[0], perm)
    if op == "concatenate":
        return b.op("Concat", vals, axis=int(attrs.get("axis", 0)))
    _refuse(layer, f"fg.math.{op}{'(' + ', '.join(f'{k}=...' for k in attrs) + ')' if attrs else ''} "
                   "has no ONNX translation here")


# ====================================================================== the walk
def _graph_of(model):
    from .models import Model
    if not isinstance(model, Model):
        raise TypeError(f"to_onnx: expected a fastgrad Model or QuantizedModel, got {type(model).__name__}")
    if not model.built or model._graph is None:
        raise ExportError(f"to_onnx: the model {model.name!r} is not built (no weights yet); give the first "
                          "layer input_shape=... or call it on data first")
    return model._graph


def _input_is_int(model, i, graph):
    layers = [graph.nodes[j].layer for j in graph.consumers[i]]
    return bool(layers) and all(getattr(l, "_takes_ids", False) for l in layers)


def to_onnx(model: Any, path: str | os.PathLike | None = None, *, opset: int = DEFAULT_OPSET,
            input_names: str | Sequence[str] | None = None, output_names: str | Sequence[str] | None = None,
            dynamic_batch: bool = True, batch_size: int | None = None, model_name: str | None = None,
            doc_string: str | None = None) -> Any:
    """Translate a model into an ONNX ``ModelProto``, and write it to a file when asked.

    Inputs that feed only Embedding layers are int64 (token ids); others
    float32. Needs onnx (``pip install fastgrad[onnx]``).

    Parameters
    ----------
    model : Model or QuantizedModel
        A built fastgrad Model / Sequential, or a QuantizedModel.
    path : str, path-like or None, default None
        Where to write the ``.onnx`` file (None: do not write).
    opset : int, default DEFAULT_OPSET
        The ONNX opset (17 or later).
    input_names : str, sequence of str or None, default None
        Graph input names (None: the model's ``input_names``).
    output_names : str, sequence of str or None, default None
        Graph output names (None: the model's ``output_names``).
    dynamic_batch : bool, default True
        Leave the batch axis symbolic ("batch"); False fixes it to `batch_size`.
    batch_size : int or None, default None
        The fixed batch size when `dynamic_batch` is False (None: 1).
    model_name : str or None, default None
        Graph name (None: the model's name).
    doc_string : str or None, default None
        The model's doc string.

    Returns
    -------
    onnx.ModelProto
        The checked ONNX model.

    Raises
    ------
    ExportError
        A ValueError naming the first layer with no ONNX form.
    ValueError
        If `opset` is below 17 or a name list has the wrong length.
    """
    if int(opset) < 17:
        raise ValueError(f"to_onnx: opset must be >= 17 (LayerNormalization), got {opset}")
    from .quantization import QuantizedModel
    b = _Builder(opset)
    batch = "batch" if dynamic_batch else int(batch_size or 1)
    if isinstance(model, QuantizedModel):
        graph_inputs, graph_outputs = _quantized_graph(b, model, input_names, output_names, batch)
        name = model_name or model.name
    else:
        graph_inputs, graph_outputs = _float_graph(b, model, input_names, output_names, batch)
        name = model_name or model.name
    helper = b.helper
    g = helper.make_graph(b.nodes, name, graph_inputs, graph_outputs, b.inits)
    from ._version import __version__
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", int(opset))],
                              producer_name="fastgrad", producer_version=__version__,
                              doc_string=doc_string or f"fastgrad model {name!r}")
    # an IR version every onnxruntime that knows the opset can read
    proto.ir_version = min(proto.ir_version, 8 if opset <= 18 else 9 if opset <= 20 else proto.ir_version)
    b.onnx.checker.check_model(proto)
    if path is not None:
        b.onnx.save(proto, str(path))
    return proto


def _names(given, default, what):
    if given is None:
        return list(default)
    given = [given] if isinstance(given, str) else list(given)
    if len(given) != len(default):
        raise ValueError(f"to_onnx: {what} has {len(given)} names, the model has {len(default)}")
    return given


def _float_graph(b, model, input_names, output_names, batch):
    graph = _graph_of(model)
    helper, TP = b.helper, b.TP
    in_names = _names(input_names, model.input_names, "input_names")
    out_names = _names(output_names, model.output_names, "output_names")
    if len(set(out_names)) != len(out_names):
        out_names = [f"{n}_{i}" for i, n in enumerate(out_names)]
    b.dtypes = {}
    slots, graph_inputs = {}, []
    for i, (t, nm) in enumerate(zip(graph.inputs, in_names)):
        nm = b.reserve(nm)
        is_int = _input_is_int(model, i, graph)
        graph_inputs.append(helper.make_tensor_value_info(nm, TP.INT64 if is_int else TP.FLOAT,
                                                          [batch] + list(t.shape[1:])))
        b.dtypes[nm] = "int" if is_int else "float"
        slots[i] = nm
    for nm in out_names:
        b.reserve(nm)
    for gn in graph.nodes:
        layer = gn.layer
        kind = type(layer).__name__
        if any(m is not None for m in gn.mask_slots):
            _refuse(layer, "it is given a mask (from Embedding(mask_zero=True) or Masking); masks change "
                           "what it computes and are not exported")
        fn = _CONVERTERS.get(kind)
        if fn is None:
            why = REFUSED.get(kind, "it has no ONNX translation (a custom or unsupported layer)")
            _refuse(layer, why)
        xs = [slots[s] for s in gn.in_slots]
        in_shapes = [tuple(graph.slot_shapes[s]) for s in gn.in_slots]
        out_shape = tuple(graph.slot_shapes[gn.out_slot])
        b.prefix = layer.name if gn.index == graph.nodes_of[id(layer)][0] else \
            f"{layer.name}_{graph.nodes_of[id(layer)].index(gn.index)}"
        slots[gn.out_slot] = fn(b, layer, xs, in_shapes, out_shape)
    b.prefix = "output"
    graph_outputs = []
    for s, t, nm in zip(graph.output_slots, graph.outputs, out_names):
        b.nodes.append(helper.make_node("Identity", [slots[s]], [nm], name=b.fresh(f"output/{nm}")))
        graph_outputs.append(helper.make_tensor_value_info(nm, TP.FLOAT, [batch] + list(t.shape[1:])))
    return graph_inputs, graph_outputs


# ====================================================================== int8 models
class _Q:
    """A uint8 tensor of the quantized graph with its (scale, zero point)."""

    def __init__(self, name, scale, zp):
        self.name, self.scale, self.zp = name, np.float32(scale), np.int32(zp)


def _q_to_float(b, x):
    """dequantize: float32(q - zp) * scale (fastgrad's order)."""
    if not isinstance(x, _Q):
        return x
    d = b.op("Sub", [b.op("Cast", [x.name], to=b.TP.INT32), b.const(np.int32(x.zp), "zp", np.int32)])
    return b.op("Mul", [b.op("Cast", [d], to=b.TP.FLOAT), b.scalar(x.scale)])


def _quantize_rows_u8(b, x):
    """Per-row dynamic u8 quantization (QuantNumpyOps._quantize_rows): (q, scale (M,1), zp float (M,1))."""
    mn = b.op("Min", [b.reduce("ReduceMin", x, [1]), b.scalar(0.0)])
    mx = b.op("Max", [b.reduce("ReduceMax", x, [1]), b.scalar(0.0)])
    s = b.op("Div", [b.op("Sub", [mx, mn]), b.scalar(255.0)])
    s = b.op("Where", [b.op("Equal", [s, b.scalar(0.0)]), b.scalar(1.0), s])
    zpf = b.op("Round", [b.clip(b.op("Div", [b.op("Neg", [mn]), s]), 0.0, 255.0)])
    q = b.clip(b.op("Add", [b.op("Round", [b.op("Div", [x, s])]), zpf]), 0.0, 255.0)
    return b.op("Cast", [q], to=b.TP.UINT8), s, zpf


def _quantize_given_u8(b, x, scale, zp):
    v = b.op("Add", [b.op("Round", [b.op("Div", [x, b.scalar(scale)])]), b.scalar(np.float32(zp))])
    return b.op("Cast", [b.clip(v, 0.0, 255.0)], to=b.TP.UINT8)


def _qdense(b, st, x):
    """A _QDense stage: MatMulInteger (exact int32), the zero point through the weights'
    column sums, then fastgrad's float32 epilogue in its order."""
    w = np.ascontiguousarray(st.w_q, np.int8)
    colsum = w.sum(axis=0, dtype=np.int64).astype(np.int32)[None, :]
    wname = b.const(w, f"{st.name}/w_q", np.int8)
    relu = st.activation == "relu"
    if st.mode == "dynamic":
        xf = b.reshape(_q_to_float(b, x), (st.in_shape[0],))
        q, sa, zpf = _quantize_rows_u8(b, xf)
        za = b.op("Cast", [zpf], to=b.TP.INT32)                                  # (M, 1)
        scale = b.op("Mul", [sa, b.const(st.w_scale[None, :], f"{st.name}/w_scale")])
        kind = 1
    else:
        if isinstance(x, _Q):
            q = b.reshape(x.name, (st.in_shape[0],))
        else:
            q = _quantize_given_u8(b, b.reshape(x, (st.in_shape[0],)), st.in_scale, st.in_zp)
        za = b.const(np.int32(st.in_zp), "in_zp", np.int32)
        kind = 2 if st.out_q else 1
        if kind == 1:
            scale = b.const((np.asarray([st.in_scale], np.float32)[:, None] * st.w_scale[None, :]).astype(np.float32),
                            f"{st.name}/scale")
    acc = b.op("MatMulInteger", [q, wname])                                     # int32 (M, N)
    acc = b.op("Sub", [acc, b.op("Mul", [za, b.const(colsum, f"{st.name}/colsum", np.int32)])])
    d = b.op("Cast", [acc], to=b.TP.FLOAT)
    if kind == 1:
        y = b.op("Mul", [d, scale])
        if st.use_bias:
            y = b.op("Add", [y, b.const(st.bias, f"{st.name}/bias")])
        if relu:
            y = b.op("Relu", [y])
        if st.activation not in ("linear", "relu"):
            y = _activation(b, st.activation, y)
        return y
    from .backend.numpy_quant import requant_multiplier
    mult = requant_multiplier(st.in_scale, st.w_scale, st.out_scale)
    y = b.op("Mul", [d, b.const(mult[None, :], f"{st.name}/mult")])
    if st.use_bias:
        y = b.op("Add", [y, b.const((st.bias / np.float32(st.out_scale)).astype(np.float32), f"{st.name}/bias_q")])
    qv = b.op("Add", [b.op("Round", [y]), b.scalar(np.float32(st.out_zp))])
    qv = b.clip(qv, float(st.out_zp) if relu else 0.0, 255.0)
    return _Q(b.op("Cast", [qv], to=b.TP.UINT8), st.out_scale, st.out_zp)


def _quantized_graph(b, model, input_names, output_names, batch):
    from . import quantization as _q
    helper, TP = b.helper, b.TP
    in_name = b.reserve(_names(input_names, ["input"], "input_names")[0])
    out_name = b.reserve(_names(output_names, ["output"], "output_names")[0])
    b.dtypes = {in_name: "float"}
    x = in_name
    shape = tuple(model._input_shape)
    for st in model.stages:
        b.prefix = st.name
        if isinstance(st, _q._QDense):
            x = _qdense(b, st, x)
        elif isinstance(st, _q._Reshape):
            x = _Q(b.reshape(x.name, st.out_shape), x.scale, x.zp) if isinstance(x, _Q) else \
                b.reshape(x, st.out_shape)
        elif isinstance(st, _q._Act):
            x = _q_to_float(b, x)
            if st.act in ("softmax", "log_softmax"):
                flat = b.reshape(x, (int(np.prod(st.in_shape)),))
                x = b.reshape(_activation(b, st.act, flat), st.out_shape)
            else:
                x = _activation(b, st.act, x)
        elif isinstance(st, _q._Float):
            layer = st.layer
            fn = _CONVERTERS.get(type(layer).__name__)
            if fn is None:
                _refuse(layer, REFUSED.get(type(layer).__name__, "it has no ONNX translation"))
            x = fn(b, layer, [_q_to_float(b, x)], [tuple(st.in_shape)], tuple(st.out_shape))
        else:
            raise ExportError(f"to_onnx: quantized stage {st.name!r} ({type(st).__name__}) has no ONNX translation")
        shape = tuple(st.out_shape)
    b.prefix = "output"
    x = _q_to_float(b, x)
    b.nodes.append(helper.make_node("Identity", [x], [out_name], name=b.fresh("output/identity")))
    return ([helper.make_tensor_value_info(in_name, TP.FLOAT, [batch] + list(model._input_shape))],
            [helper.make_tensor_value_info(out_name, TP.FLOAT, [batch] + list(shape))])
