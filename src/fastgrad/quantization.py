"""fastgrad.quantization — int8 post-training quantization (dynamic and
static), quantization-aware training, and the quantized model.

    q = fg.quantization.quantize_dynamic(model)                 # int8 weights, float I/O
    q = fg.quantization.quantize_static(model, x_cal, method="percentile")
    qat = fg.quantization.prepare_qat(model); qat.fit(x, y); q = fg.quantization.convert(qat)
    fg.quantization.compare(model, q, x_test, y_test)

Design (docs/quantization.md has the full account):

- Weights: per output channel (column of the Dense kernel), symmetric int8:
  scale_j = max|W[:, j]| / 127, W_q = rint(W / scale_j), packed once for the
  integer GEMM (`ops.qpack`).
- Activations: unsigned 8-bit, asymmetric (scale, zero point), the range
  always containing 0. Dynamic: per row at run time; static: one (scale,
  zero point) per tensor from calibration (min/max, percentile or entropy)
  or, after QAT, from the ranges observed in training.
- Static models keep activations int8 between consecutive Dense layers: the
  integer GEMM's epilogue adds the bias, applies ReLU and requantizes to the
  next layer's (scale, zero point) ("integer activation functions"); float
  only at the model's input (one quantize) and output (dequantize, then a
  float activation such as softmax). Activations other than linear / ReLU
  run in float between dequantize and quantize.
- The quantized model (`QuantizedModel`) runs a chain of stages through
  `fg.ops` (C kernels under the native backend, the NumPy twin otherwise);
  it predicts, evaluates, prints a summary with dtypes and scales, saves and
  loads (int8 arrays in the file) and refuses to train.

Supported layers: Dense (any activation), Flatten / Reshape / Identity /
Dropout (inference: identity) / InputLayer, Activation / ReLU / Softmax.
Others raise a ValueError naming them, unless listed in `skip=` (names or
classes): a skipped layer stays float (its input is dequantized first).
Models must be chains (Sequential, or a functional model without branches).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np

from . import saving as _saving

__all__ = ["quantize_dynamic", "quantize_static", "prepare_qat", "convert", "compare", "QuantizedModel",
           "FakeQuantDense", "qparams"]

_FLOAT_ACTS_FUSED = ("linear", "relu")
_PASS_KINDS = ("Flatten", "Reshape", "Identity", "Dropout")
_ACT_KINDS = ("Activation", "ReLU", "Softmax")


# ====================================================================== helpers
def qparams(lo: float, hi: float) -> tuple[np.float32, np.int32]:
    """Scale and zero point of the uint8 grid over a range widened to contain 0.

    The rule of dynamic quantization, for one tensor.

    Parameters
    ----------
    lo : float
        Lower end of the range.
    hi : float
        Upper end of the range.

    Returns
    -------
    tuple of (numpy.float32, numpy.int32)
        ``(scale, zero_point)``.

    Examples
    --------
    >>> from fastgrad.quantization import qparams
    >>> scale, zp = qparams(-1.0, 3.0)
    >>> float(scale), int(zp)
    (0.01568627543747425, 64)
    """
    lo = np.float32(min(float(lo), 0.0))
    hi = np.float32(max(float(hi), 0.0))
    scale = (hi - lo) / np.float32(255)
    if scale == 0:
        scale = np.float32(1)
    zp = np.rint(np.clip(-lo / scale, np.float32(0), np.float32(255)))
    return np.float32(scale), np.int32(zp)


def _quantize_weights(ops, w):
    """Per-output-channel symmetric int8 of a Dense kernel (in, out):
    (w_q int8 (in, out), scales float32 (out,))."""
    wt = np.ascontiguousarray(np.asarray(w, np.float32).T)
    q, s, _ = ops.quantize(wt, "int8")
    return np.ascontiguousarray(q.T), np.asarray(s, np.float32)


def _ops():
    from . import _config
    return _config.get_ops()


def _chain_layers(model, what):
    """The layers of a built chain model, in order (InputLayer excluded)."""
    from .models import Model, Sequential
    if not isinstance(model, Model):
        raise TypeError(f"{what}: expected a fastgrad Model, got {type(model).__name__}")
    if not getattr(model, "built", False):
        raise ValueError(f"{what}: the model {model.name!r} is not built (no weights yet); give the "
                         "first layer input_shape=... or fit it first")
    if isinstance(model, Sequential):
        return list(model.layers)
    g = model._graph
    if g is None or g.n_inputs != 1 or len(g.outputs) != 1:
        raise ValueError(f"{what}: only single-input, single-output chain models are supported; "
                         f"{model.name!r} has {len(model.inputs)} inputs and {len(model.outputs)} outputs")
    layers, prev = [], 0
    for node in g.nodes:
        if len(node.in_slots) != 1 or node.in_slots[0] != prev:
            raise ValueError(f"{what}: only chain models are supported; layer {node.layer.name!r} "
                             f"({type(node.layer).__name__}) does not simply follow the previous layer")
        prev = node.out_slot
        layers.append(node.layer)
    return layers


def _skip_set(skip, layers, what):
    if skip is None:
        return set()
    if isinstance(skip, (str, type)):
        skip = [skip]
    names = set()
    for s in skip:
        if isinstance(s, type):
            names |= {l.name for l in layers if isinstance(l, s)}
        elif isinstance(s, str):
            if not any(l.name == s for l in layers):
                raise ValueError(f"{what}: skip names layer {s!r}, which is not in the model "
                                 f"(layers: {', '.join(l.name for l in layers)})")
            names.add(s)
        else:
            raise TypeError(f"{what}: skip must hold layer names or classes, got {s!r}")
    return names


def _layer_act(layer):
    """(activation name, params) a layer applies, or None."""
    kind = type(layer).__name__
    if kind == "Activation":
        return layer.activation
    if kind == "Softmax":
        if getattr(layer, "axis", -1) not in (-1, len(layer.input_shape)):
            return None
        return "softmax"
    if kind == "ReLU":
        cfg = layer.get_config()
        if (cfg.get("max_value") is None and not cfg.get("negative_slope") and not cfg.get("threshold")):
            return "relu"
        return None
    return None


# ====================================================================== stages
class _Stage:
    """One step of a quantized model; `run(x, ops)` maps a float array or a
    _QT (u8, scale, zero point) to either."""
    kind = "stage"

    def arrays(self):
        return []

    def set_arrays(self, arrays):
        pass

    def _buf(self, slot, shape, dtype):
        """A reused buffer (the model runs one predict at a time, under its lock):
        fresh multi-megabyte arrays per call cost page faults, not just time."""
        bufs = self.__dict__.setdefault("_bufs", {})
        key = (slot, shape, np.dtype(dtype).str)
        b = bufs.get(key)
        if b is None:
            if len(bufs) > 16:
                bufs.clear()
            b = bufs[key] = np.empty(shape, dtype)
        return b

    def config(self):
        return {"kind": self.kind, "name": self.name, "in_shape": list(self.in_shape),
                "out_shape": list(self.out_shape)}


class _QT:
    """A uint8 activation tensor with its per-tensor scale and zero point."""
    __slots__ = ("q", "scale", "zp")

    def __init__(self, q, scale, zp):
        self.q, self.scale, self.zp = q, scale, zp


def _to_float(x, ops):
    if isinstance(x, _QT):
        return ops.dequantize(x.q.reshape(x.q.shape[0], -1), x.scale, x.zp).reshape(x.q.shape)
    return x


class _Reshape(_Stage):
    kind = "reshape"

    def __init__(self, name, in_shape, out_shape, orig):
        self.name, self.in_shape, self.out_shape, self.orig = name, tuple(in_shape), tuple(out_shape), orig

    def run(self, x, ops):
        if isinstance(x, _QT):
            return _QT(x.q.reshape((x.q.shape[0],) + self.out_shape), x.scale, x.zp)
        return x.reshape((x.shape[0],) + self.out_shape)

    def config(self):
        c = super().config()
        c["orig"] = self.orig
        return c


class _Act(_Stage):
    kind = "activation"

    def __init__(self, name, shape, act, orig):
        self.name, self.in_shape, self.out_shape, self.act, self.orig = name, tuple(shape), tuple(shape), act, orig

    def run(self, x, ops):
        x = _to_float(x, ops)
        if self.act == "linear":
            return x
        y = np.empty_like(x)
        if self.act in ("softmax", "log_softmax"):
            return getattr(ops, self.act)(x.reshape(x.shape[0], -1), out=y.reshape(x.shape[0], -1)).reshape(x.shape)
        return ops.activation(self.act, x, y)

    def config(self):
        c = super().config()
        c.update(act=self.act, orig=self.orig)
        return c


class _Float(_Stage):
    """A layer kept in float (skip=): its input is dequantized first."""
    kind = "float"

    def __init__(self, layer, in_shape=None):
        self.layer = layer
        self.name = layer.name
        self.in_shape = tuple(layer.input_shape)
        self.out_shape = tuple(layer.output_shape)

    def run(self, x, ops):
        x = _to_float(x, ops)
        return self.layer(np.ascontiguousarray(x, np.float32))

    def arrays(self):
        return [np.asarray(w, np.float32) for w in self.layer.get_weights()]

    def set_arrays(self, arrays):
        from .engine.params import ParamStore
        if arrays:
            if not self.layer.params and (self.layer.param_specs() or self.layer.state_specs()):
                ParamStore([self.layer], fresh=True).initialize()
            for spec, a in zip(list(self.layer.param_specs()) + list(self.layer.state_specs()), arrays):
                tgt = self.layer.params.get(spec.name) if spec.name in self.layer.params else self.layer.state[spec.name]
                tgt[...] = a

    def config(self):
        from . import layers as _layers
        c = super().config()
        c["layer"] = _layers.serialize(self.layer)
        return c


class _QDense(_Stage):
    """A Dense layer with int8 weights (per output channel, symmetric).

    dynamic: float in -> per-row u8 -> integer GEMM -> float out (bias, relu fused)
    static:  u8 in (quantized with in_scale / in_zp if float arrives) ->
             u8 out requantized to (out_scale, out_zp) with bias + relu fused
             (out_q), or float out (dequantize + bias [+ relu], then the
             float activation)."""
    kind = "qdense"

    def __init__(self, name, in_dim, units, activation, use_bias, mode):
        self.name = name
        self.in_shape, self.out_shape = (int(in_dim),), (int(units),)
        self.activation, self.use_bias, self.mode = activation, bool(use_bias), mode
        self.w_q = np.zeros((in_dim, units), np.int8)
        self.w_scale = np.ones(units, np.float32)
        self.bias = np.zeros(units, np.float32) if use_bias else None
        self.in_scale = np.float32(1)
        self.in_zp = np.int32(0)
        self.out_q = False
        self.out_scale = np.float32(1)
        self.out_zp = np.int32(0)
        self._prepared = None

    # ---- weights
    def set_float_weights(self, ops, w, b):
        self.w_q, self.w_scale = _quantize_weights(ops, w)
        if self.use_bias:
            self.bias = np.ascontiguousarray(b, np.float32)
        self._prepared = None

    def arrays(self):
        a = [self.w_q, self.w_scale] + ([self.bias] if self.use_bias else [])
        if self.mode == "static":
            a += [np.array([self.in_scale, self.out_scale], np.float32),
                  np.array([self.in_zp, self.out_zp], np.int32)]
        return a

    def set_arrays(self, arrays):
        arrays = list(arrays)
        self.w_q = np.ascontiguousarray(arrays.pop(0), np.int8)
        self.w_scale = np.ascontiguousarray(arrays.pop(0), np.float32)
        if self.use_bias:
            self.bias = np.ascontiguousarray(arrays.pop(0), np.float32)
        if self.mode == "static":
            s, z = arrays.pop(0), arrays.pop(0)
            self.in_scale, self.out_scale = np.float32(s[0]), np.float32(s[1])
            self.in_zp, self.out_zp = np.int32(z[0]), np.int32(z[1])
        self._prepared = None

    def _prep(self, ops):
        """Everything a call needs, made once per backend: the packed weights
        and the epilogue's constants, validated through the public ops
        (qpack, and one qgemm on a zero row). Calls then go to the backend's
        cores (ops._quantize_rows / _quantize_given / _qgemm, the same code
        the public methods end in) with no per-call checks."""
        p = self._prepared
        if p is not None and p["ops"] is type(ops):
            return p
        from .backend.numpy_quant import requant_multiplier
        packed = ops.qpack(self.w_q)
        p = {"ops": type(ops), "packed": packed, "relu": self.activation == "relu"}
        if self.mode == "static":
            p["in_scale"] = np.array([self.in_scale], np.float32)
            p["in_zp"] = np.array([self.in_zp], np.int32)
            if self.out_q:
                p["kind"] = 2
                p["mult"] = requant_multiplier(self.in_scale, self.w_scale, self.out_scale)
                p["bias"] = None if self.bias is None else (self.bias / np.float32(self.out_scale)).astype(np.float32)
            else:
                p["kind"], p["mult"], p["bias"] = 1, None, self.bias
        else:
            p["kind"], p["mult"], p["bias"] = 1, None, self.bias
        # one checked call through the public entry point (raises on bad constants)
        z = np.zeros((1, self.in_shape[0]), np.uint8)
        if self.mode == "static" and self.out_q:
            ops.qgemm(z, packed, a_zero_point=self.in_zp, a_scale=self.in_scale, b_scale=self.w_scale,
                      bias=self.bias, activation=self.fused_act, out_scale=self.out_scale,
                      out_zero_point=int(self.out_zp))
        else:
            ops.qgemm(z, packed, a_zero_point=0, a_scale=1.0, b_scale=self.w_scale, bias=self.bias,
                      activation=self.fused_act)
        self._prepared = p
        return p

    @property
    def fused_act(self):
        return self.activation if self.activation in _FLOAT_ACTS_FUSED else "linear"

    def run(self, x, ops):
        p = self._prep(ops)
        n = x.q.shape[0] if isinstance(x, _QT) else x.shape[0]
        N = self.out_shape[0]
        if self.mode == "dynamic":
            x = np.ascontiguousarray(_to_float(x, ops), np.float32).reshape(n, -1)
            sa = self._buf("sa", (n,), np.float32)
            za = self._buf("za", (n,), np.int32)
            y = self._buf("y", (n, N), np.float32)
            # each row quantized by the thread that multiplies it (one pass, one parallel region)
            ops._qgemm_dyn(x, p["packed"], y, sa, za, self.w_scale, p["bias"], p["relu"])
        else:
            if isinstance(x, _QT):
                q, run = np.ascontiguousarray(x.q).reshape(n, -1), ops._qgemm
            else:  # float in (the model input): quantized inside the GEMM, row by row
                q, run = np.ascontiguousarray(x, np.float32).reshape(n, -1), ops._qgemm_given
            if p["kind"] == 2:
                y = self._buf("yq", (n, N), np.uint8)
                run(q, p["packed"], y, 2, p["in_zp"], p["in_scale"], self.w_scale, p["mult"], p["bias"],
                    int(self.out_zp), p["relu"])
                return _QT(y, self.out_scale, self.out_zp)
            y = self._buf("y", (n, N), np.float32)
            run(q, p["packed"], y, 1, p["in_zp"], p["in_scale"], self.w_scale, None, p["bias"], 0, p["relu"])
        if self.activation not in _FLOAT_ACTS_FUSED:
            if self.activation in ("softmax", "log_softmax"):
                getattr(ops, self.activation)(y, out=y)
            else:
                ops.activation(self.activation, y, y)
        return y

    def config(self):
        c = super().config()
        c.update(activation=self.activation, use_bias=self.use_bias, mode=self.mode, out_q=bool(self.out_q))
        return c


def _stage_from_config(c):
    kind = c["kind"]
    if kind == "reshape":
        return _Reshape(c["name"], c["in_shape"], c["out_shape"], c.get("orig", "Reshape"))
    if kind == "activation":
        return _Act(c["name"], c["in_shape"], c["act"], c.get("orig", "Activation"))
    if kind == "float":
        from . import layers as _layers
        layer = _layers.deserialize(c["layer"])
        layer.build(tuple(c["in_shape"]))
        if layer.param_specs() or layer.state_specs():
            from .engine.params import ParamStore
            ParamStore([layer], fresh=True).initialize()
        return _Float(layer)
    if kind == "qdense":
        st = _QDense(c["name"], c["in_shape"][0], c["out_shape"][0], c["activation"], c["use_bias"], c["mode"])
        st.out_q = bool(c.get("out_q", False))
        return st
    raise ValueError(f"QuantizedModel: unknown stage kind {kind!r}")


# ====================================================================== the model
class QuantizedModel:
    """An int8 model: a chain of stages run through ``fastgrad.ops``.

    It predicts, evaluates, summarizes and saves (``fastgrad.models.load_model``
    reads it back); it cannot be trained (``fit`` raises). Made by
    :func:`quantize_dynamic`, :func:`quantize_static` and :func:`convert`.

    Parameters
    ----------
    stages : list
        The stages (quantized Dense, float layers, activations, reshapes).
    input_shape : tuple of int
        Shape of one input row.
    mode : {"dynamic", "static"}
        How activations are quantized.
    name : str, default "quantized"
        Model name.
    loss : str, dict or None, default None
        The float model's loss (for :meth:`evaluate`).
    metrics : list or None, default None
        The float model's metric names.
    source_name : str or None, default None
        Name of the float model.
    """

    def __init__(self, stages: list, input_shape: Sequence[int], mode: str, name: str = "quantized",
                 loss: Any = None, metrics: list | None = None, source_name: str | None = None) -> None:
        self.stages = list(stages)
        self.mode = mode
        self.name = name
        self._input_shape = tuple(int(s) for s in input_shape)
        self.loss = loss
        self.metrics = list(metrics or [])
        self.source_name = source_name
        self.built = True
        import threading
        self._lock = threading.Lock()

    # ---- structure
    @property
    def layers(self) -> list:
        """The stages, as a list."""
        return list(self.stages)

    @property
    def input_shape(self) -> tuple:
        """Input shape with the batch axis (None)."""
        return (None,) + self._input_shape

    @property
    def output_shape(self) -> tuple:
        """Output shape with the batch axis (None)."""
        return (None,) + tuple(self.stages[-1].out_shape) if self.stages else self.input_shape

    def size_bytes(self) -> int:
        """Bytes of the arrays the model holds (int8 weights, float32 scales and biases).

        Returns
        -------
        int
            The size.
        """
        return int(sum(a.nbytes for a in self.get_weights()))

    def count_params(self) -> int:
        """Number of values in the arrays the model holds.

        Returns
        -------
        int
            The count.
        """
        return int(sum(a.size for a in self.get_weights()))

    # ---- running
    def _check_x(self, x, what):
        if not isinstance(x, np.ndarray):
            x = np.asarray(x)
        if x.dtype.kind not in "fiu":
            raise TypeError(f"{self.name}.{what}: x must be numeric, got dtype {x.dtype}")
        if tuple(x.shape[1:]) != self._input_shape or x.ndim < 1:
            raise ValueError(f"{self.name}.{what}: expected input of shape (rows,) + {self._input_shape}, "
                             f"got {x.shape}")
        # NaN is refused by the quantize kernels (dynamic: inf too; static: inf saturates)
        return np.ascontiguousarray(x, np.float32)

    def _forward(self, x, ops):
        for st in self.stages:
            x = st.run(x, ops)
        return _to_float(x, ops)

    def predict(self, x: Any, batch_size: int | None = None, verbose: int = 0) -> np.ndarray:
        """Run the int8 model on input rows (thread-safe; one call at a time).

        Parameters
        ----------
        x : array_like
            Input rows, ``(rows,) + input_shape``.
        batch_size : int or None, default None
            Rows per chunk (None: 4096).
        verbose : int, default 0
            Accepted for Keras compatibility.

        Returns
        -------
        numpy.ndarray
            float32 outputs, one row per input row.

        Raises
        ------
        ValueError
            If the input shape does not match.
        TypeError
            If `x` is not numeric.
        """
        x = self._check_x(x, "predict")
        ops = _ops()
        n = x.shape[0]
        bs = int(batch_size) if batch_size else 4096
        with self._lock:  # stages reuse their buffers: one predict at a time
            if n <= bs:
                return np.array(self._forward(x, ops), np.float32, copy=True)
            outs = [np.array(self._forward(x[i:i + bs], ops), np.float32, copy=True) for i in range(0, n, bs)]
        return np.concatenate(outs, axis=0)

    def predict_on_batch(self, x: Any) -> np.ndarray:
        """Run the model on one batch (same as :meth:`predict`).

        Parameters
        ----------
        x : array_like
            Input rows, ``(rows,) + input_shape``.

        Returns
        -------
        numpy.ndarray
            float32 outputs.
        """
        return self.predict(x)

    __call__ = predict

    def evaluate(self, x: Any = None, y: Any = None, batch_size: int | None = None, verbose: int = 0,
                 return_dict: bool = False) -> Any:
        """Loss and metrics with the float model's loss and metrics.

        A metric is computed as accuracy (any name containing "acc").

        Parameters
        ----------
        x : array_like
            Input rows, ``(rows,) + input_shape``.
        y : array_like
            Targets.
        batch_size : int or None, default None
            Rows per chunk (None: 4096).
        verbose : int, default 0
            Accepted for Keras compatibility.
        return_dict : bool, default False
            Return ``{name: value}``.

        Returns
        -------
        float, list of float or dict
            The loss alone, ``[loss, *metrics]``, or the dict.

        Raises
        ------
        ValueError
            If the float model was not compiled, or `x` and `y` differ in rows.
        """
        if self.loss is None:
            raise ValueError(f"{self.name}.evaluate: the float model was not compiled, so there is no "
                             "loss; compile it before quantizing, or use predict")
        from . import losses as _losses
        pred = self.predict(x, batch_size=batch_size)
        y = np.asarray(y)
        if y.shape[0] != pred.shape[0]:
            raise ValueError(f"{self.name}.evaluate: x has {pred.shape[0]} rows, y has {y.shape[0]}")
        loss_obj = _losses.deserialize(self.loss) if not isinstance(self.loss, str) else _losses.get(self.loss)
        logs = {"loss": float(loss_obj(y, pred))}
        for m in self.metrics:
            logs[m if isinstance(m, str) else str(m)] = _accuracy(y, pred)
        return logs if return_dict else (list(logs.values()) if len(logs) > 1 else logs["loss"])

    # ---- training is refused
    def _no_training(self, what):
        raise RuntimeError(f"{self.name}.{what}: a converted int8 model cannot be trained (its weights "
                           "are integers); train the float model, or use fg.quantization.prepare_qat(model) "
                           "and fit that, then convert it")

    def fit(self, *args: Any, **kwargs: Any) -> None:
        """Refused: an int8 model cannot be trained.

        Parameters
        ----------
        *args, **kwargs
            Ignored.

        Raises
        ------
        RuntimeError
            Always; train the float model, or a :func:`prepare_qat` copy.
        """
        self._no_training("fit")

    def train_on_batch(self, *args: Any, **kwargs: Any) -> None:
        """Refused: an int8 model cannot be trained.

        Parameters
        ----------
        *args, **kwargs
            Ignored.

        Raises
        ------
        RuntimeError
            Always.
        """
        self._no_training("train_on_batch")

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """Refused: an int8 model cannot be trained.

        Parameters
        ----------
        *args, **kwargs
            Ignored.

        Raises
        ------
        RuntimeError
            Always.
        """
        self._no_training("compile")

    # ---- weights / config / saving
    def get_weights(self) -> list[np.ndarray]:
        """Copies of the arrays of every stage, in order.

        Returns
        -------
        list of numpy.ndarray
            int8 weights, float32 scales and biases.
        """
        return [np.array(a, copy=True) for st in self.stages for a in st.arrays()]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Replace the arrays of every stage (as :meth:`get_weights` lists them).

        Parameters
        ----------
        weights : sequence of array_like
            One array per entry of :meth:`get_weights`, same shapes.

        Raises
        ------
        ValueError
            If the count or a shape does not match.
        """
        weights = list(weights)
        want = sum(len(st.arrays()) for st in self.stages)
        if len(weights) != want:
            raise ValueError(f"{self.name}.set_weights: expected {want} arrays, got {len(weights)}")
        i = 0
        for st in self.stages:
            k = len(st.arrays())
            cur = st.arrays()
            for a, c in zip(weights[i:i + k], cur):
                if np.shape(a) != c.shape:
                    raise ValueError(f"{self.name}.set_weights: stage {st.name!r}: shape {np.shape(a)} "
                                     f"does not match {c.shape}")
            st.set_arrays([np.asarray(a, c.dtype) for a, c in zip(weights[i:i + k], cur)])
            i += k

    def get_config(self) -> dict:
        """The model's configuration (stages included; arrays excluded).

        Returns
        -------
        dict
            What :meth:`from_config` rebuilds the model from.
        """
        return {"name": self.name, "mode": self.mode, "input_shape": list(self._input_shape),
                "loss": self.loss, "metrics": self.metrics, "source_name": self.source_name,
                "stages": [st.config() for st in self.stages]}

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> QuantizedModel:
        """Rebuild a model from :meth:`get_config`'s output (arrays zeroed).

        Parameters
        ----------
        config : dict
            The configuration.
        custom_objects : dict or None, default None
            Unused; accepted for the loader's interface.

        Returns
        -------
        QuantizedModel
            The model.
        """
        stages = [_stage_from_config(c) for c in config["stages"]]
        return cls(stages, config["input_shape"], config["mode"], name=config.get("name", "quantized"),
                   loss=config.get("loss"), metrics=config.get("metrics"), source_name=config.get("source_name"))

    def save(self, filepath: str | os.PathLike, overwrite: bool = True, **kwargs: Any) -> None:
        """Save the model in fastgrad's format (``fastgrad.models.load_model`` reads it back).

        Parameters
        ----------
        filepath : str or path-like
            The file.
        overwrite : bool, default True
            Replace an existing file.
        **kwargs
            Ignored (Keras's other saving options).
        """
        _saving.save_model(self, filepath, overwrite=overwrite, include_optimizer=False)

    # ---- summary
    def summary(self, print_fn: Callable | None = None) -> None:
        """Print the stages with their dtypes, scales and bytes.

        Parameters
        ----------
        print_fn : callable or None, default None
            Called with each line (None: ``print``).
        """
        p = print_fn or print
        rows = [("Layer (stage)", "Output shape", "Weights", "Activations in -> out", "Bytes")]
        total = 0
        for st in self.stages:
            nbytes = int(sum(a.nbytes for a in st.arrays()))
            total += nbytes
            if isinstance(st, _QDense):
                w = (f"int8 per-channel, scale {st.w_scale.min():.3g}..{st.w_scale.max():.3g}")
                if st.mode == "dynamic":
                    a = "f32 -> u8 per row (dynamic) -> f32"
                else:
                    a = f"u8 (s={float(st.in_scale):.3g}, zp={int(st.in_zp)}) -> "
                    a += (f"u8 (s={float(st.out_scale):.3g}, zp={int(st.out_zp)})" if st.out_q else "f32")
                a += f" [{st.activation}]"
                rows.append((f"{st.name} (QDense)", str((None,) + st.out_shape), w, a, str(nbytes)))
            elif isinstance(st, _Float):
                rows.append((f"{st.name} ({type(st.layer).__name__}, float)", str((None,) + st.out_shape),
                             "float32" if nbytes else "-", "f32 -> f32", str(nbytes)))
            else:
                rows.append((f"{st.name} ({st.orig})", str((None,) + st.out_shape), "-",
                             "keeps dtype" if st.kind == "reshape" else f"f32 [{st.act}]", "0"))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        line = "-" * (sum(widths) + 8)
        p(f'QuantizedModel "{self.name}" (int8 {self.mode}; from {self.source_name!r})')
        p(line)
        for j, r in enumerate(rows):
            p("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)))
            if j == 0:
                p(line)
        p(line)
        p(f"Total: {total} bytes ({total / 1024:.1f} KiB)")

    def __repr__(self):
        return f"<QuantizedModel {self.name!r} {self.mode}, {len(self.stages)} stages>"


_saving.register_model_class(QuantizedModel)


def _accuracy(y, pred):
    y = np.asarray(y)
    pred = np.asarray(pred)
    if pred.ndim == 2 and pred.shape[1] > 1:
        lab = y.reshape(-1) if (y.ndim == 1 or y.shape[-1] == 1) else y.argmax(axis=-1)
        return float(np.mean(pred.argmax(axis=1) == lab.astype(np.int64)))
    return float(np.mean((pred.reshape(-1) > 0.5) == (y.reshape(-1) > 0.5)))


# ====================================================================== building
def _compile_info(model):
    cc = model.get_compile_config() if getattr(model, "compiled", False) else None
    if not cc:
        return None, []
    loss = cc.get("loss")
    metrics = cc.get("metrics") or []
    if not isinstance(metrics, list):
        metrics = [metrics]
    metrics = [m if isinstance(m, str) else (m.get("class_name", "metric") if isinstance(m, dict) else str(m))
               for m in metrics]
    metrics = [m for m in metrics if "acc" in m.lower()]
    return loss, metrics


def _build_stages(model, layers, skip, mode, what):
    """Stages for each layer; QDense weights quantized here."""
    from .layers.core import Dense, InputLayer
    ops = _ops()
    stages = []
    unsupported = []
    for layer in layers:
        kind = type(layer).__name__
        if isinstance(layer, InputLayer):
            continue
        if layer.name in skip:
            stages.append(_Float(layer))
            continue
        if isinstance(layer, Dense) and type(layer) in (Dense,) or kind == "FakeQuantDense":
            st = _QDense(layer.name, layer.input_shape[0], layer.units, layer.activation, layer.use_bias, mode)
            st.set_float_weights(ops, layer.params["kernel"], layer.params.get("bias"))
            st.source = layer
            stages.append(st)
        elif kind in _PASS_KINDS:
            stages.append(_Reshape(layer.name, layer.input_shape, layer.output_shape, kind))
        elif kind in _ACT_KINDS and _layer_act(layer) is not None:
            stages.append(_Act(layer.name, layer.output_shape, _layer_act(layer), kind))
        else:
            unsupported.append(f"{layer.name!r} ({kind})")
    if unsupported:
        raise ValueError(f"{what}: layer(s) {', '.join(unsupported)} cannot be quantized (supported: Dense, "
                         "Flatten, Reshape, Identity, Dropout, Activation, ReLU, Softmax); pass skip=[names] "
                         "to keep them in float")
    if not any(isinstance(s, _QDense) for s in stages):
        raise ValueError(f"{what}: model {model.name!r} has no Dense layer to quantize")
    # a linear Dense followed by a plain ReLU: fuse the ReLU into the epilogue
    out = []
    for st in stages:
        if (isinstance(st, _Act) and st.act == "relu" and out and isinstance(out[-1], _QDense)
                and out[-1].activation == "linear"):
            out[-1].activation = "relu"
            out[-1].fused_names = getattr(out[-1], "fused_names", []) + [st.name]
            continue
        out.append(st)
    return out


def _input_shape_of(model):
    shp = model.input_shape
    if isinstance(shp, list):
        shp = shp[0]
    return tuple(shp[1:])


def quantize_dynamic(model: Any, skip: Any = None, name: str | None = None) -> QuantizedModel:
    """An int8 copy of a model with activations quantized at run time.

    Dense weights become int8 (per output channel, symmetric); activations
    are quantized per row at run time; outputs are float.

    Parameters
    ----------
    model : Model
        A built Sequential-like model (a chain of layers).
    skip : iterable of str or type, or None, default None
        Layer names (or classes) to keep in float.
    name : str or None, default None
        Name of the new model (None: ``<model>_int8_dynamic``).

    Returns
    -------
    QuantizedModel
        The int8 model.

    Raises
    ------
    ValueError
        If the model is not a chain or holds a layer that cannot be quantized.
    """
    what = "quantize_dynamic"
    layers = _chain_layers(model, what)
    stages = _build_stages(model, layers, _skip_set(skip, layers, what), "dynamic", what)
    loss, metrics = _compile_info(model)
    return QuantizedModel(stages, _input_shape_of(model), "dynamic", name=name or f"{model.name}_int8_dynamic",
                          loss=loss, metrics=metrics, source_name=model.name)


# ---- calibration
def _range_minmax(v):
    return float(v.min()), float(v.max())


def _range_percentile(v, pct):
    lo, hi = np.percentile(v, [100.0 - pct, pct])
    return float(lo), float(hi)


def _range_entropy(v, bins=2048, levels=None):
    """TensorRT-style: the clipping threshold T over |v| minimising the KL
    divergence between the clipped histogram and its quantized version."""
    nonneg = float(v.min()) >= 0
    a = np.abs(v.reshape(-1)).astype(np.float64)
    amax = float(a.max())
    if amax == 0:
        return 0.0, 0.0
    levels = levels or (255 if nonneg else 128)
    hist, edges = np.histogram(a, bins=bins, range=(0, amax))
    hist = hist.astype(np.float64)
    best_kl, best_i = np.inf, bins
    for i in range(max(levels, 128), bins + 1, 16):
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()
        nz = p > 0
        # quantize the first i bins into `levels` groups, spread back over the non-empty bins
        idx = (np.arange(i) * levels // i)
        sums = np.bincount(idx, weights=hist[:i], minlength=levels)
        counts = np.bincount(idx, weights=nz.astype(np.float64), minlength=levels)
        qv = np.where(nz, sums[idx] / np.maximum(counts[idx], 1), 0)
        ps, qs = p.sum(), qv.sum()
        if ps == 0 or qs == 0:
            continue
        pn, qn = p / ps, qv / qs
        m = (pn > 0)
        kl = float(np.sum(pn[m] * np.log(pn[m] / np.maximum(qn[m], 1e-12))))
        if kl < best_kl:
            best_kl, best_i = kl, i
    t = float(edges[best_i]) if best_i < len(edges) else amax
    return (0.0, t) if nonneg else (-t, t)


def _calib_range(v, method, percentile):
    if method == "minmax":
        return _range_minmax(v)
    if method == "percentile":
        return _range_percentile(v, percentile)
    if method == "entropy":
        return _range_entropy(v)
    raise ValueError(f"quantize_static: method must be 'minmax', 'percentile' or 'entropy', got {method!r}")


def _check_calibration(model, data, what):
    shape = _input_shape_of(model)
    if not isinstance(data, np.ndarray):
        try:
            data = np.asarray(data)
        except Exception:
            raise TypeError(f"{what}: calibration_data must be an array, got {type(data).__name__}") from None
    if data.dtype.kind not in "fiu":
        raise TypeError(f"{what}: calibration_data must be numeric, got dtype {data.dtype}")
    if data.ndim < 1 or tuple(data.shape[1:]) != shape or data.shape[0] == 0:
        raise ValueError(f"{what}: calibration_data has shape {data.shape}; the model {model.name!r} takes "
                         f"(rows,) + {shape} with at least one row")
    data = np.ascontiguousarray(data, np.float32)
    if not np.all(np.isfinite(data)):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise ValueError(f"{what}: calibration_data contains {bad} NaN/inf value(s)")
    return data


def _finish_static(stages, ranges):
    """Set each QDense's input (scale, zp) from `ranges` (stage name -> (lo, hi)
    of its input) and, where the next quantized consumer follows directly
    (through reshape stages only) and the activation is linear / ReLU, make
    it requantize its output to that consumer's input grid."""
    for st in stages:
        if isinstance(st, _QDense):
            st.in_scale, st.in_zp = qparams(*ranges[st.name])
    for i, st in enumerate(stages):
        if not isinstance(st, _QDense):
            continue
        j = i + 1
        while j < len(stages) and isinstance(stages[j], _Reshape):
            j += 1
        nxt = stages[j] if j < len(stages) else None
        if isinstance(nxt, _QDense) and st.activation in _FLOAT_ACTS_FUSED:
            st.out_q = True
            st.out_scale, st.out_zp = nxt.in_scale, nxt.in_zp
        else:
            st.out_q = False


def quantize_static(model: Any, calibration_data: Any, method: str = "minmax", percentile: float = 99.99,
                    skip: Any = None, name: str | None = None) -> QuantizedModel:
    """An int8 copy of a model with int8 activations between layers, calibrated on data.

    Each Dense's input scale and zero point come from `calibration_data`;
    Dense -> Dense hand-offs stay uint8 (bias, ReLU and requantization fused
    in the integer GEMM).

    Parameters
    ----------
    model : Model
        A built Sequential-like model (a chain of layers).
    calibration_data : array_like
        Representative input rows.
    method : {"minmax", "percentile", "entropy"}, default "minmax"
        Range of each activation: min to max, the central `percentile` %, or
        the KL-divergence threshold.
    percentile : float, default 99.99
        For ``method="percentile"``.
    skip : iterable of str or type, or None, default None
        Layer names (or classes) to keep in float.
    name : str or None, default None
        Name of the new model (None: ``<model>_int8``).

    Returns
    -------
    QuantizedModel
        The int8 model.

    Raises
    ------
    ValueError
        If `method` is unknown, or the model cannot be quantized.
    """
    what = "quantize_static"
    if method not in ("minmax", "percentile", "entropy"):
        raise ValueError(f"{what}: method must be 'minmax', 'percentile' or 'entropy', got {method!r}")
    if not (0 < float(percentile) <= 100):
        raise ValueError(f"{what}: percentile must lie in (0, 100], got {percentile}")
    layers = _chain_layers(model, what)
    data = _check_calibration(model, calibration_data, what)
    stages = _build_stages(model, layers, _skip_set(skip, layers, what), "static", what)
    # float pass: the input each quantized layer sees (float layers in between run as they are)
    ranges = {}
    by_name = {l.name: l for l in layers}
    x = data
    fused = set()
    for st in stages:
        fused |= set(getattr(st, "fused_names", []))
    for layer in layers:
        if type(layer).__name__ == "InputLayer":
            continue
        if layer.name in {s.name for s in stages if isinstance(s, _QDense)}:
            ranges[layer.name] = _calib_range(x, method, percentile)
        x = by_name[layer.name](x)
    _finish_static(stages, ranges)
    loss, metrics = _compile_info(model)
    return QuantizedModel(stages, _input_shape_of(model), "static", name=name or f"{model.name}_int8_static",
                          loss=loss, metrics=metrics, source_name=model.name)


# ====================================================================== QAT
def _fake_quant_layer_class():
    from .layers.core import Dense
    from .layers.base import StateSpec

    class FakeQuantDense(Dense):
        """Dense with fake quantization, for quantization-aware training.

        The kernel is rounded to the int8 grid the converted model uses (per
        output channel, symmetric) and the input to the uint8 grid of its
        observed range (an exponential moving average of batch min / max in
        training, frozen at inference); gradients pass straight through
        (inputs: only inside the range). Runs on the Python step.

        Parameters
        ----------
        units : int
            Output units.
        momentum : float, default 0.95
            Momentum of the moving average of the observed range.
        **kwargs
            Dense's other arguments.
        """

        def __init__(self, units: int, momentum: float = 0.95, **kwargs: Any) -> None:
            super().__init__(units, **kwargs)
            self.momentum = float(momentum)

        def state_specs(self):
            return [StateSpec("act_range", (3,), lambda shape: np.zeros(shape, np.float32))]

        def lower(self, ctx):
            raise ctx.unsupported(f"layer {self.name}: fake quantization (QAT) runs on the Python step")

        def _observe(self, x):
            r = self.state["act_range"]
            lo, hi = float(x.min()), float(x.max())
            if r[2] == 0:
                r[0], r[1], r[2] = lo, hi, 1
            else:
                m = self.momentum
                r[0] = m * r[0] + (1 - m) * lo
                r[1] = m * r[1] + (1 - m) * hi
                r[2] += 1

        def forward(self, x, training, ws):
            ops = self.ops
            if training:
                self._observe(x)
            r = self.state["act_range"]
            n = x.shape[0]
            dt = x.dtype
            if r[2] > 0:
                s, z = qparams(r[0], r[1])
                s, z = dt.type(s), dt.type(z)
                t = np.rint(x / s) + z
                mask = (t >= 0) & (t <= 255)
                xq = ws.buf("xq", x.shape, dt)
                np.clip(t, 0, 255, out=xq)
                xq -= z
                xq *= s
            else:
                xq, mask = x, None
            wq_i8, ws_ = _quantize_weights(ops, self._w)
            wq = ws.buf("wq", self._w.shape, dt)
            np.multiply(wq_i8, ws_[None, :].astype(dt), out=wq)
            act = self._run_act
            y = ws.buf("y", (n, self.units), dt)
            from .layers.core import _NEEDS_PREACT
            z_ = ws.buf("z", (n, self.units), dt) if (training and act in _NEEDS_PREACT) else None
            ops.dense_forward(xq, wq, self._b, act, y, z_)
            ws.x, ws.wq, ws.mask, ws.y, ws.z = xq, wq, mask, y, z_
            return y

        def backward(self, dy, ws, need_dx=True):
            x = ws.x
            dx = ws.buf("dx", x.shape, x.dtype) if need_dx else None
            self.ops.dense_backward(dy, x, ws.wq, ws.y, self._run_act, ws.z, dx, self._gw, self._gb, need_dx)
            if need_dx and ws.mask is not None:
                dx *= ws.mask
            return dx

        def get_config(self):
            cfg = super().get_config()
            cfg["momentum"] = self.momentum
            return cfg

    return FakeQuantDense


FakeQuantDense = _fake_quant_layer_class()  # registered in Layer.registry (saving / load_model)


def _fq_class():
    return FakeQuantDense


def prepare_qat(model: Any, skip: Any = None, momentum: float = 0.95) -> Any:
    """A trainable copy of a model for quantization-aware training.

    Its Dense layers fake-quantize their kernel (int8 per channel) and input
    (uint8, observed range); it is compiled like the original when that one
    is. Train it with ``fit`` (Python step), then :func:`convert` gives the
    int8 model.

    Parameters
    ----------
    model : Model
        A built Sequential-like model (a chain of layers).
    skip : iterable of str or type, or None, default None
        Layer names (or classes) to keep in float.
    momentum : float, default 0.95
        Momentum of the moving average of each observed input range.

    Returns
    -------
    Sequential
        The QAT model (with ``FakeQuantDense`` layers).
    """
    what = "prepare_qat"
    from .layers.core import Dense, InputLayer
    from . import layers as _layers
    from .models import Sequential
    FQ = _fq_class()
    layers = _chain_layers(model, what)
    skipped = _skip_set(skip, layers, what)
    new: list = []
    for layer in layers:
        if isinstance(layer, InputLayer):
            continue
        cfg = layer.get_config()
        cfg.pop("input_shape", None)
        if not new:
            cfg["input_shape"] = _input_shape_of(model)
        if type(layer) is Dense and layer.name not in skipped:
            nl = FQ(momentum=momentum, **cfg)
        else:
            nl = _layers.deserialize({"class_name": type(layer).__name__, "config": cfg})
        new.append(nl)
    qat = Sequential(new, name=f"{model.name}_qat")
    # weights: each layer's params in order (FakeQuantDense adds its act_range state after them)
    for old, nl in zip([l for l in layers if not isinstance(l, InputLayer)], new):
        for spec in old.param_specs():
            nl.params[spec.name][...] = old.params[spec.name]
        for spec in old.state_specs():
            nl.state[spec.name][...] = old.state[spec.name]
    if getattr(model, "compiled", False):
        qat.compile_from_config(model.get_compile_config())
    return qat


def convert(model: Any, name: str | None = None) -> QuantizedModel:
    """The int8 (static) model of a trained QAT model (:func:`prepare_qat`, then ``fit``).

    Weights are quantized as in training; activation grids come from the
    observed ranges.

    Parameters
    ----------
    model : Model
        The trained QAT model.
    name : str or None, default None
        Name of the new model (None: ``<model>_int8``).

    Returns
    -------
    QuantizedModel
        The int8 model.

    Raises
    ------
    ValueError
        If the model has no fake-quantized layer, or one has observed no data.
    """
    what = "convert"
    FQ = _fq_class()
    layers = _chain_layers(model, what)
    fq = [l for l in layers if isinstance(l, FQ)]
    if not fq:
        raise ValueError(f"{what}: model {model.name!r} has no fake-quantized layer; call prepare_qat(model) "
                         "and train it first (or use quantize_static / quantize_dynamic)")
    for l in fq:
        if l.state["act_range"][2] == 0:
            raise ValueError(f"{what}: layer {l.name!r} has observed no data (act_range unset); fit the QAT "
                             "model before converting it")
    skip = [l.name for l in layers if type(l).__name__ != "InputLayer" and not isinstance(l, FQ)
            and type(l).__name__ == "Dense"]
    stages = _build_stages(model, layers, set(skip), "static", what)
    ranges = {l.name: (float(l.state["act_range"][0]), float(l.state["act_range"][1])) for l in fq}
    _finish_static(stages, ranges)
    loss, metrics = _compile_info(model)
    return QuantizedModel(stages, _input_shape_of(model), "static", name=name or f"{model.name}_int8",
                          loss=loss, metrics=metrics, source_name=model.name)


# ====================================================================== compare
def _float_size(model):
    return int(sum(np.asarray(w).nbytes for w in model.get_weights()))


def compare(float_model: Any, q_model: QuantizedModel, x: Any, y: Any = None,
            batch_size: int | None = None) -> dict:
    """Accuracy and output agreement of an int8 model against its float model.

    Parameters
    ----------
    float_model : Model
        The float model.
    q_model : QuantizedModel
        Its int8 model.
    x : array_like
        Input rows.
    y : array_like or None, default None
        Targets (for the accuracies).
    batch_size : int or None, default None
        Rows per chunk.

    Returns
    -------
    dict
        float_accuracy, quant_accuracy, accuracy_drop_pp (percentage points),
        top1_agreement, max_abs_diff, mean_abs_diff, float_bytes, quant_bytes,
        size_ratio.

    Raises
    ------
    TypeError
        If `q_model` is not a QuantizedModel.
    ValueError
        If the models' outputs differ in shape.
    """
    if not isinstance(q_model, QuantizedModel):
        raise TypeError(f"compare: q_model must be a QuantizedModel, got {type(q_model).__name__}")
    pf = np.asarray(float_model.predict(x, batch_size=batch_size or 4096, verbose=0), np.float32)
    pq = q_model.predict(x, batch_size=batch_size)
    if pf.shape != pq.shape:
        raise ValueError(f"compare: the models' outputs differ in shape: {pf.shape} vs {pq.shape}")
    d = np.abs(pf.astype(np.float64) - pq)
    out = {"max_abs_diff": float(d.max()) if d.size else 0.0, "mean_abs_diff": float(d.mean()) if d.size else 0.0}
    if pf.ndim == 2 and pf.shape[1] > 1:
        out["top1_agreement"] = float(np.mean(pf.argmax(1) == pq.argmax(1)))
    if y is not None:
        fa, qa = _accuracy(y, pf), _accuracy(y, pq)
        out.update(float_accuracy=fa, quant_accuracy=qa, accuracy_drop_pp=100.0 * (fa - qa))
    fb, qb = _float_size(float_model), q_model.size_bytes()
    out.update(float_bytes=fb, quant_bytes=qb, size_ratio=fb / qb if qb else float("inf"))
    return out
