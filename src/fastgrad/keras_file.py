"""Keras 3 `.keras` files: `model.save("x.keras")` writes one, `fg.models.load_keras(path)`
(and `fg.models.load_model("x.keras")`) reads one.

A Keras 3 `.keras` file is a ZIP archive with three members::

    metadata.json      {"keras_version": ..., "date_saved": ...}
    config.json        the serialized model: {"module", "class_name" ("Sequential" or
                       "Functional"), "config" (name, layers, for graphs inbound_nodes /
                       input_layers / output_layers), "build_config", "compile_config"}
    model.weights.h5   HDF5: "layers/<key>/vars/<i>" datasets per layer, where <key> is
                       the layer's class name in snake case made unique in the order of
                       `model.layers` (dense, dense_1, ...; not the layer's name). Sublayers
                       nest: recurrent layers keep their weights in "cell/vars",
                       Bidirectional in "forward_layer/..." and "backward_layer/...",
                       TimeDistributed in "layer/...", MultiHeadAttention in
                       "query_dense", "key_dense", "value_dense", "output_dense".

fastgrad's layers keep Keras's configuration names and weight layouts (kernel (in, out),
LSTM gates i f c o, GRU z r h, ...), so a layer's arrays move one to one. Layer
classes without a Keras equivalent (Lambda, fg.math operations, quantized layers,
PositionEmbedding ...) and Keras options fastgrad does not implement (constraints,
mixed precision, ...) are refused with a ValueError naming the layer: a `.keras` name
always holds a real Keras file. h5py is needed for the HDF5 member (`pip install h5py`).

Reading trusts nothing: the archive's members are size-checked before they are read,
config.json is parsed as plain JSON (no code, no pickles, no lambdas: a class outside
the table below is refused), the HDF5 file may hold only hard-linked groups and
numeric datasets stored inside it (no external links or external storage), every
array's shape is compared with the layer it goes to before it is read, and the model is
built under an allocation limit equal to the number of values the file holds. Every
failure is a `fastgrad.saving.ModelFileError` (a ValueError).
"""
from __future__ import annotations

import io
import json
import os
import time
import warnings
import zipfile
from typing import Any

import numpy as np

from . import saving as _saving
from .saving import ModelFileError

__all__ = ["save_keras", "load_keras", "save_keras_weights", "load_keras_weights",
           "KERAS_LAYER_CLASSES", "is_keras_archive"]

#: layer classes that exist under the same name, configuration and weight layout
#: in Keras 3 and in fastgrad (both directions)
KERAS_LAYER_CLASSES = frozenset("""
InputLayer Dense Activation Flatten Dropout BatchNormalization LayerNormalization
ReLU LeakyReLU ELU PReLU Softmax
Add Subtract Multiply Average Maximum Minimum Concatenate Dot
Reshape Permute RepeatVector Identity
MultiHeadAttention Attention AdditiveAttention
Embedding Masking SimpleRNN LSTM GRU Bidirectional TimeDistributed
Conv1D Conv2D DepthwiseConv2D SeparableConv2D Conv2DTranspose
MaxPooling1D MaxPooling2D AveragePooling1D AveragePooling2D
GlobalAveragePooling1D GlobalAveragePooling2D GlobalMaxPooling1D GlobalMaxPooling2D
ZeroPadding2D Cropping2D UpSampling2D SpatialDropout2D
DepthwiseConv1D SeparableConv1D Conv1DTranspose
ZeroPadding1D Cropping1D UpSampling1D SpatialDropout1D
""".split())

_RNN = ("SimpleRNN", "LSTM", "GRU")
_ATTENTION = ("MultiHeadAttention", "Attention", "AdditiveAttention")
_MASK_KWARGS = ("query_mask", "value_mask", "key_mask", "attention_mask")

#: Keras configuration keys fastgrad has no parameter for; a file is accepted when they
#: hold these (Keras's default) values and refused otherwise
_KERAS_ONLY_DEFAULTS = {
    "kernel_constraint": None, "bias_constraint": None, "recurrent_constraint": None,
    "beta_constraint": None, "gamma_constraint": None, "embeddings_constraint": None,
    "depthwise_constraint": None, "pointwise_constraint": None, "quantization_config": None,
    "activity_regularizer": None, "synchronized": False, "renorm": False,
    "renorm_clipping": None, "renorm_momentum": 0.99, "rms_scaling": False, "use_gate": False,
    "sliding_window": None, "noise_shape": None, "data_format": "channels_last",
    "lora_rank": None, "lora_alpha": None, "sparse": False, "ragged": False, "optional": False,
    "seed": None, "autocast": True, "batch_size": None, "backward_layer": None,
    "flash_attention": None, "mask_zero": False, "input_length": None,
}
#: optimizer configuration keys of Keras 3 that fastgrad accepts only at these values
_KERAS_OPT_DEFAULTS = {"use_ema": False, "ema_momentum": 0.99, "ema_overwrite_frequency": None,
                       "loss_scale_factor": None, "gradient_accumulation_steps": None}

_MAX_CONFIG_BYTES = 16 << 20
_MAX_MEMBERS = 1 << 12
_DEFLATE_MAX_RATIO = 1100          # deflate cannot expand more than ~1032:1
_FG_EXT = "'.fgm' (fastgrad's own model format)"


class _Refused(ValueError):
    """An object fastgrad cannot express in a Keras file (or a Keras object it cannot
    load); becomes a ValueError / ModelFileError with the file name."""


def _keras_version():
    return "3.0.0"


# ====================================================================== helpers
def _h5py(what, for_save):
    try:
        import h5py
    except ImportError:
        if for_save:
            raise ValueError(f"{what}: writing a Keras 3 '.keras' file needs h5py, which is not "
                             f"installed (pip install h5py); save with the extension {_FG_EXT} "
                             "to use fastgrad's format instead") from None
        raise ImportError(f"{what}: reading Keras files needs h5py: pip install h5py "
                          "(or pip install 'fastgrad[keras]')") from None
    return h5py


def _snake(name):
    from .layers.base import _snake as s
    return s(name)


class _Keys:
    """Keras's names for the children of one object in model.weights.h5: the class name
    in snake case, `_1`, `_2` ... for repeats, in the order of the children."""

    def __init__(self):
        self.used = set()

    def next(self, class_name):
        base = _snake(class_name)
        key, i = base, 0
        while key in self.used:
            i += 1
            key = f"{base}_{i}"
        self.used.add(key)
        return key


def _weight_groups(class_name, cfg):
    """The sub-paths (in get_weights order) of a layer's variables, relative to its group."""
    if class_name in _RNN:
        return ["cell/vars"]
    if class_name == "Bidirectional":
        inner = cfg.get("layer") or {}
        sub = _weight_groups(inner.get("class_name"), inner.get("config") or {})
        return [f"forward_layer/{p}" for p in sub] + [f"backward_layer/{p}" for p in sub]
    if class_name == "TimeDistributed":
        inner = cfg.get("layer") or {}
        return [f"layer/{p}" for p in _weight_groups(inner.get("class_name"),
                                                     inner.get("config") or {})]
    if class_name == "MultiHeadAttention":
        return ["query_dense/vars", "key_dense/vars", "value_dense/vars", "output_dense/vars"]
    return ["vars"]


def _split_weights(class_name, cfg, weights):
    """The layer's arrays per sub-path (writing)."""
    groups = _weight_groups(class_name, cfg)
    if class_name == "MultiHeadAttention":
        k = 2 if cfg.get("use_bias", True) else 1
        return [(g, weights[i * k:(i + 1) * k]) for i, g in enumerate(groups)]
    if class_name == "Bidirectional":
        half = len(weights) // 2
        return [(groups[0], weights[:half]), (groups[1], weights[half:])]
    return [(groups[0], list(weights))]


# ====================================================================== fastgrad -> Keras
def _k_obj(module, d):
    """A fastgrad {"class_name", "config"} (initializer / regularizer) in Keras's form."""
    if d is None or isinstance(d, str):
        return d
    return {"module": module, "class_name": d["class_name"], "config": dict(d.get("config") or {}),
            "registered_name": None}


def _cfg_to_keras(class_name, cfg, where):
    """A fastgrad layer configuration as Keras's (returns config, call kwargs)."""
    if class_name not in KERAS_LAYER_CLASSES:
        raise _Refused(f"layer {where!r} ({class_name}) has no Keras 3 equivalent")
    cfg = dict(cfg)
    cfg.pop("input_shape", None)
    call = {}
    if class_name in _ATTENTION:
        call["inputs"] = cfg.pop("call_inputs", None) or ["query", "value"]
        call["use_causal_mask"] = bool(cfg.pop("use_causal_mask", False))
        cfg.pop("flash", None)
        if cfg.pop("graph_scores", False):
            raise _Refused(f"layer {where!r} ({class_name}) returns its attention scores in the "
                           "graph; that call is not written to Keras files")
    if class_name in _RNN and cfg.get("return_state"):
        raise _Refused(f"layer {where!r} ({class_name}) has return_state=True; graphs using "
                       "recurrent states are not written to Keras files")
    if class_name == "SimpleRNN" and cfg.get("seed") is None:
        cfg.pop("seed", None)
    if class_name in ("SpatialDropout1D", "SpatialDropout2D"):
        cfg.pop("trainable", None)    # Keras's constructors take no `trainable` (nor write one)
    for k, v in list(cfg.items()):
        if k.endswith("_initializer"):
            cfg[k] = _k_obj("keras.initializers", v)
        elif k.endswith("_regularizer"):
            cfg[k] = _k_obj("keras.regularizers", v)
        elif k == "layer" and isinstance(v, dict):
            inner, _ = _cfg_to_keras(v["class_name"], v.get("config") or {}, where)
            cfg[k] = {"module": "keras.layers", "class_name": v["class_name"], "config": inner,
                      "registered_name": None}
    return cfg, call


def _k_tensor(t):
    node = t._node
    return node, {"class_name": "__keras_tensor__",
                  "config": {"shape": [None if s is None else int(s) for s in t.shape],
                             "dtype": str(t.dtype or "float32"),
                             "keras_history": None}}


def _input_layer_entry(name, shape, dtype):
    return {"module": "keras.layers", "class_name": "InputLayer",
            "config": {"batch_shape": [None] + [int(s) for s in shape], "dtype": dtype or "float32",
                       "sparse": False, "ragged": False, "name": name, "optional": False},
            "registered_name": None}


def _layer_entry(layer):
    cname = type(layer).__name__
    if cname == "InputLayer":
        return _input_layer_entry(layer.name, layer._declared_input_shape,
                                  getattr(layer, "int_dtype", None)), {}
    cfg, call = _cfg_to_keras(cname, layer.get_config(), layer.name)
    return {"module": "keras.layers", "class_name": cname, "config": cfg,
            "registered_name": None}, call


def _functional_config(model):
    """Keras's Functional config for a fastgrad graph model (layers in the model's order,
    which follows Keras's)."""
    g = model._graph
    nodes_by_layer = {}
    for gn in g.nodes:
        nodes_by_layer.setdefault(id(gn.layer), []).append(gn.node)
    local = {id(n): i for nodes in nodes_by_layer.values() for i, n in enumerate(nodes)}

    def ref(t):
        node = t._node
        return [node.layer.name, local.get(id(node), 0), 0]

    def tensor(t):
        _, d = _k_tensor(t)
        d["config"]["keras_history"] = ref(t)
        return d

    layers, ordered = [], []
    for layer in model._layers:
        if getattr(layer, "_operator", False):
            # x + y on symbolic tensors: a Keras operation (keras.ops), not a layer, as
            # Keras itself writes it (no weights group, not in model.layers)
            cname = type(layer).__name__
            entry = {"module": "keras.src.ops.numpy", "class_name": cname,
                     "config": {"name": layer.name}, "registered_name": cname,
                     "name": layer.name, "inbound_nodes": []}
            for node in nodes_by_layer.get(id(layer), []):
                if len(node.inputs) != 2:
                    raise _Refused(f"operation {layer.name!r} ({cname}) has "
                                   f"{len(node.inputs)} inputs")
                entry["inbound_nodes"].append({"args": [tensor(t) for t in node.inputs],
                                               "kwargs": {}})
            layers.append(entry)
            continue
        entry, call = _layer_entry(layer)
        entry["name"] = layer.name
        entry["inbound_nodes"] = []
        cname = type(layer).__name__
        for node in nodes_by_layer.get(id(layer), []):
            if cname == "InputLayer":
                continue
            ins = [tensor(t) for t in node.inputs]
            kwargs = {}
            if cname == "MultiHeadAttention":
                names = list(call["inputs"])
                by = dict(zip(names, ins))
                args = [by["query"], by["value"]]
                if "key" in by:
                    kwargs["key"] = by["key"]
                for m in _MASK_KWARGS:
                    if m in by:
                        kwargs[m] = by[m]
                if call["use_causal_mask"]:
                    kwargs["use_causal_mask"] = True
            elif cname in ("Attention", "AdditiveAttention"):
                names = list(call["inputs"])
                if any(n in _MASK_KWARGS for n in names):
                    raise _Refused(f"layer {layer.name!r} ({cname}) is called with masks; that "
                                   "call is not written to Keras files")
                args = [ins]
                if call["use_causal_mask"]:
                    kwargs["use_causal_mask"] = True
            elif node.multi:
                args = [ins]
            else:
                if len(ins) != 1:
                    raise _Refused(f"layer {layer.name!r} ({cname}) is called on {len(ins)} "
                                   "tensors; that call is not written to Keras files")
                args = ins
            entry["inbound_nodes"].append({"args": args, "kwargs": kwargs})
        layers.append(entry)
        ordered.append((layer, entry))
    ins = [ref(t) for t in g.inputs]
    outs = [ref(t) for t in g.outputs]
    def pack(refs, kind, keys):
        if kind == "dict" and keys is not None:
            return dict(zip(keys, refs))
        return refs[0] if len(refs) == 1 and kind == "single" else refs

    cfg = {"name": model.name, "trainable": bool(model.trainable), "layers": layers,
           "input_layers": pack(ins, model._input_kind, model._input_keys),
           "output_layers": pack(outs, model._output_kind, model._output_keys)}
    return {"module": "keras.src.models.functional", "class_name": "Functional", "config": cfg,
            "registered_name": "Functional", "build_config": {"input_shape": None}}, ordered


def _sequential_config(model):
    shape = model._input_shape
    if shape is None:
        shape = model._input_shapes[0]
    layers = [_input_layer_entry(f"input_layer_{model.name}", shape, None)]
    ordered = []
    for layer in model.layers:
        entry, call = _layer_entry(layer)
        if type(layer).__name__ == "InputLayer":
            continue
        if call.get("inputs") not in (None, ["query", "value"]) or call.get("use_causal_mask"):
            raise _Refused(f"layer {layer.name!r} ({type(layer).__name__}) is called in a way a "
                           "Keras Sequential cannot express")
        layers.append(entry)
        ordered.append((layer, entry))
    bshape = [None] + [int(s) for s in shape]
    cfg = {"name": model.name, "trainable": bool(model.trainable), "layers": layers,
           "build_input_shape": bshape}
    return {"module": "keras", "class_name": "Sequential", "config": cfg,
            "registered_name": None, "build_config": {"input_shape": bshape}}, ordered


def _compile_to_keras(model):
    cc = model.get_compile_config() if getattr(model, "compiled", False) else None
    if not cc:
        return None
    opt = cc.get("optimizer")
    if isinstance(opt, dict):
        opt = {"module": "keras.optimizers", "class_name": opt["class_name"],
               "config": dict(opt.get("config") or {}), "registered_name": None}

    def loss(spec):
        if isinstance(spec, dict) and "class_name" in spec:
            return {"module": "keras.losses", "class_name": spec["class_name"],
                    "config": dict(spec.get("config") or {}), "registered_name": None}
        if isinstance(spec, dict) and "__dict__" in spec:
            return {k: loss(v) for k, v in spec["__dict__"].items()}
        if isinstance(spec, list):
            return [loss(s) for s in spec]
        return spec

    def metric(spec):
        if isinstance(spec, dict) and "class_name" in spec:
            return {"module": "keras.metrics", "class_name": spec["class_name"],
                    "config": dict(spec.get("config") or {}), "registered_name": None}
        if isinstance(spec, dict) and "__dict__" in spec:
            return {k: metric(v) for k, v in spec["__dict__"].items()}
        if isinstance(spec, list):
            return [metric(s) for s in spec]
        return spec

    lw = cc.get("loss_weights")
    if isinstance(lw, dict) and "__dict__" in lw:
        lw = lw["__dict__"]
    return {"optimizer": opt, "loss": loss(cc.get("loss")), "loss_weights": lw,
            "metrics": metric(cc.get("metrics")), "weighted_metrics": metric(cc.get("weighted_metrics")),
            "run_eagerly": False, "steps_per_execution": 1, "jit_compile": False}


def _model_to_keras(model):
    from .models import Sequential
    if type(model).__name__ not in ("Model", "Sequential", "Functional") and \
            model.__dict__.get("_fg_call_layer") is not None:
        raise _Refused(f"model {model.name!r} is a subclassed model ({type(model).__name__}); "
                       "only Sequential and functional models are written to Keras files")
    if isinstance(model, Sequential):
        return _sequential_config(model)
    if getattr(model, "_graph", None) is None:
        raise _Refused(f"model {model.name!r} ({type(model).__name__}) has no layer graph")
    return _functional_config(model)


def _write_h5(h5py, model_name, ordered, sequential):
    """model.weights.h5 as bytes, in Keras's layout."""
    buf = io.BytesIO()
    keys = _Keys()
    with h5py.File(buf, "w") as f:
        top = f.create_group("layers")
        for layer, entry in ordered:
            cname = entry["class_name"]
            if sequential and cname == "InputLayer":
                continue
            g = top.create_group(keys.next(cname))
            g.create_group("vars").attrs["name"] = layer.name
            weights = layer.get_weights() if cname != "InputLayer" else []
            parts = _split_weights(cname, entry["config"], weights)
            if cname == "MultiHeadAttention":
                parts += [("_softmax/vars", []), ("_dropout_layer/vars", [])]
            for sub, arrays in parts:
                bits = sub.split("/")[:-1]          # the objects above "vars"
                for i in range(1, len(bits) + 1):
                    vg = g.require_group("/".join(bits[:i]) + "/vars")
                    vg.attrs["name"] = bits[i - 1]
                grp = g.require_group(sub)
                for i, a in enumerate(arrays):
                    grp.create_dataset(str(i), data=np.ascontiguousarray(a, dtype=np.float32))
        f.create_group("vars").attrs["name"] = model_name
    return buf.getvalue()


def save_keras(model: Any, filepath: str | os.PathLike, overwrite: bool = True,
               include_optimizer: bool = True, what: str = "save_model") -> None:
    """Write a model as a Keras 3 ".keras" file (configuration and weights, no optimizer state).

    Needs h5py. docs/keras_interop.md lists the layers that translate.

    Parameters
    ----------
    model : Model
        A built model.
    filepath : str or path-like
        The file.
    overwrite : bool, default True
        Replace an existing file (False: raise instead).
    include_optimizer : bool, default True
        Write the compile configuration (optimizer, loss, metrics).
    what : str, default "save_model"
        What to name in an error message.

    Raises
    ------
    ValueError
        If a layer has no Keras equivalent, or the file exists and `overwrite` is False.
    ImportError
        If h5py is not installed.
    """
    path = _saving._check_target(filepath, overwrite, what)
    _saving._require_built(model, what)
    try:
        kconfig, ordered = _model_to_keras(model)
    except _Refused as exc:
        raise ValueError(f"{what}: {path!r}: cannot write a Keras file: {exc}; save with the "
                         f"extension {_FG_EXT} instead") from None
    h5py = _h5py(what, for_save=True)
    cc = _compile_to_keras(model) if include_optimizer else None
    if cc is not None:
        kconfig["compile_config"] = cc
    h5 = _write_h5(h5py, model.name, ordered, kconfig["class_name"] == "Sequential")
    meta = {"keras_version": _keras_version(),
            "date_saved": time.strftime("%Y-%m-%d@%H:%M:%S"),
            "written_by": "fastgrad"}
    _saving._write_members_atomic(path, [("metadata.json", json.dumps(meta).encode()),
                                         ("config.json", json.dumps(kconfig).encode()),
                                         ("model.weights.h5", h5)])


def _model_layer_order(model):
    """(layer, keras class name, keras config) in the order Keras names h5 groups."""
    kconfig, ordered = _model_to_keras(model)
    seq = kconfig["class_name"] == "Sequential"
    return [(l, e) for l, e in ordered if not (seq and e["class_name"] == "InputLayer")], seq


def save_keras_weights(model: Any, filepath: str | os.PathLike, overwrite: bool = True) -> None:
    """Write the weights as a Keras 3 ".weights.h5" file (``model.save_weights``).

    Parameters
    ----------
    model : Model
        A built model.
    filepath : str or path-like
        The file.
    overwrite : bool, default True
        Replace an existing file (False: raise instead).

    Raises
    ------
    ValueError
        If a layer has no Keras equivalent.
    ImportError
        If h5py is not installed.
    """
    what = "save_weights"
    path = _saving._check_target(filepath, overwrite, what)
    _saving._require_built(model, what)
    try:
        ordered, seq = _model_layer_order(model)
    except _Refused as exc:
        raise ValueError(f"{what}: {path!r}: cannot write a Keras weights file: {exc}; use the "
                         "extension '.fgw' (fastgrad's weights format) instead") from None
    h5py = _h5py(what, for_save=True)
    data = _write_h5(h5py, model.name, ordered, seq)
    _saving._write_bytes_atomic(path, data)


# ====================================================================== reading
def is_keras_archive(path: str | os.PathLike) -> bool:
    """Whether a file is a Keras 3 archive (a ZIP holding config.json and no fastgrad manifest).

    Parameters
    ----------
    path : str or path-like
        The file.

    Returns
    -------
    bool
        True for a Keras archive; False for anything else, unreadable files included.
    """
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
    except (OSError, zipfile.BadZipFile, ValueError, EOFError, NotImplementedError):
        return False
    return "config.json" in names and "fastgrad.json" not in names


class _Archive:
    def __init__(self, path, what):
        self.path, self.what = path, what
        if not os.path.exists(path):
            raise FileNotFoundError(f"{what}: no such file: {path!r}")
        if os.path.isdir(path):
            raise ModelFileError(f"{what}: {path!r} is a directory; fastgrad reads Keras 3 "
                                 "'.keras' archives (single files)")
        self.size = os.path.getsize(path)
        try:
            self.zip = zipfile.ZipFile(path)
            infos = self.zip.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
                NotImplementedError) as exc:
            raise ModelFileError(f"{what}: {path!r} is not a readable Keras archive ({exc})") from None
        if len(infos) > _MAX_MEMBERS:
            self.fail(f"{len(infos)} members; a Keras model archive has a handful")
        self.info = {}
        for i in infos:
            if i.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                self.fail(f"member {i.filename!r} uses compression method {i.compress_type}")
            limit = self.size if i.compress_type == zipfile.ZIP_STORED else \
                _DEFLATE_MAX_RATIO * i.compress_size + 1024
            if i.file_size > limit:
                self.fail(f"member {i.filename!r} claims {i.file_size} bytes from "
                          f"{i.compress_size} stored")
            self.info[i.filename] = i

    def fail(self, msg):
        raise ModelFileError(f"{self.what}: {self.path!r}: {msg}")

    def read(self, name, limit=None):
        i = self.info.get(name)
        if i is None:
            self.fail(f"no {name!r} member (not a Keras 3 .keras archive"
                      + ("; a sharded or directory-format model is not supported)"
                         if name == "model.weights.h5" else ")"))
        if limit is not None and i.file_size > limit:
            self.fail(f"member {name!r} is {i.file_size} bytes (limit {limit})")
        try:
            return self.zip.read(i)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            self.fail(f"member {name!r} cannot be read ({exc})")


class _H5Weights:
    """Read-only view of model.weights.h5 that refuses anything but hard-linked groups and
    plain numeric datasets held in the file."""

    def __init__(self, h5py, data, fail):
        self.h5py, self.fail = h5py, fail
        try:
            self.f = h5py.File(io.BytesIO(data), "r")
        except (OSError, ValueError) as exc:
            fail(f"model.weights.h5 is not a readable HDF5 file ({exc})")
        self.total = 0
        self._check(self.f, "", 0)

    def _check(self, group, path, depth):
        h5py = self.h5py
        if depth > 64:
            self.fail(f"model.weights.h5 nests deeper than 64 groups at {path!r}")
        for name in group:
            link = group.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):
                self.fail(f"model.weights.h5: {path}/{name} is a {type(link).__name__}; only "
                          "objects stored in the file are read")
            obj = group[name]
            if isinstance(obj, h5py.Group):
                self._check(obj, f"{path}/{name}", depth + 1)
            elif isinstance(obj, h5py.Dataset):
                if obj.external or obj.dtype.kind not in "fiu" or obj.dtype.itemsize > 8:
                    self.fail(f"model.weights.h5: {path}/{name} is not a plain numeric array "
                              f"(dtype {obj.dtype}, external={bool(obj.external)})")
                self.total += int(np.prod(obj.shape, dtype=np.int64)) if obj.shape else 1
            else:
                self.fail(f"model.weights.h5: {path}/{name} is not a group or dataset")

    def arrays(self, base, subpaths, expect, where):
        """The datasets 0..n-1 of each sub-path, checked against `expect` shapes."""
        out = []
        for sub in subpaths:
            p = f"{base}/{sub}"
            g = self.f.get(p) if p.lstrip("/") else self.f
            if g is None:
                if not expect:
                    continue
                self.fail(f"layer {where}: no weights group {p!r} in model.weights.h5")
            if not isinstance(g, self.h5py.Group):
                self.fail(f"layer {where}: {p!r} is not a group")
            names = list(g.keys())
            if sorted(names, key=lambda s: (len(s), s)) != [str(i) for i in range(len(names))]:
                self.fail(f"layer {where}: weights group {p!r} holds {names[:8]}, expected "
                          "datasets named 0, 1, ...")
            out.extend(g[str(i)] for i in range(len(names)))
        if len(out) != len(expect):
            self.fail(f"layer {where} has {len(expect)} weight arrays in fastgrad "
                      f"({[tuple(e) for e in expect]}); the file holds {len(out)} "
                      f"({[tuple(d.shape) for d in out]})")
        arrays = []
        for i, (d, shape) in enumerate(zip(out, expect)):
            if tuple(d.shape) != tuple(shape):
                self.fail(f"layer {where}: weight #{i} has shape {tuple(d.shape)} in the file; "
                          f"the layer needs {tuple(shape)}")
            a = np.asarray(d[()], dtype=np.float32)
            if not np.isfinite(a).all():
                self.fail(f"layer {where}: weight #{i} contains NaN or inf")
            arrays.append(a)
        return arrays


def _plain(v):
    """No Keras object (dict with a module / class_name) below this value."""
    if isinstance(v, dict):
        return "class_name" not in v and all(_plain(x) for x in v.values())
    if isinstance(v, list):
        return all(_plain(x) for x in v)
    return v is None or isinstance(v, (str, int, float, bool))


def _accepted_params(cls):
    import inspect
    names = set()
    for c in cls.__mro__:
        init = c.__dict__.get("__init__")
        if init is None:
            continue
        try:
            sig = inspect.signature(init)
        except (TypeError, ValueError):
            continue
        var_kw = False
        for p in sig.parameters.values():
            if p.kind is p.VAR_KEYWORD:
                var_kw = True
            elif p.name != "self":
                names.add(p.name)
        if not var_kw:
            break
    return names


def _is_float32_dtype(v):
    if v is None or v == "float32":
        return True
    return (isinstance(v, dict) and v.get("class_name") in ("DTypePolicy", "FloatDTypePolicy")
            and isinstance(v.get("config"), dict) and v["config"].get("name") == "float32")


def _obj_from_keras(v, kind, where, key):
    """A Keras initializer / regularizer object config as fastgrad's."""
    if v is None or isinstance(v, str):
        return v
    if not isinstance(v, dict) or not isinstance(v.get("class_name"), str):
        raise _Refused(f"layer {where}: {key} {v!r:.80} is not a {kind}")
    cfg = v.get("config") or {}
    if not isinstance(cfg, dict) or not _plain(cfg):
        raise _Refused(f"layer {where}: {key} has a bad configuration")
    cfg = {k: x for k, x in cfg.items() if x is not None}
    return {"class_name": v["class_name"], "config": cfg}


def _cfg_from_keras(class_name, kcfg, where):
    """A Keras layer configuration as fastgrad's (refuses options fastgrad lacks)."""
    from . import layers as _layers
    from .layers.base import Layer
    if class_name not in KERAS_LAYER_CLASSES:
        raise _Refused(f"layer {where!r} has Keras class {class_name!r}, which fastgrad does not "
                       f"load (supported: {', '.join(sorted(KERAS_LAYER_CLASSES))})")
    if not isinstance(kcfg, dict):
        raise _Refused(f"layer {where!r} ({class_name}) has no configuration")
    if class_name == "InputLayer":
        bs = kcfg.get("batch_shape")
        if bs is None and kcfg.get("shape") is not None:
            bs = [None] + list(kcfg["shape"])
        if not isinstance(bs, list) or not bs or any(
                not (isinstance(s, int) and not isinstance(s, bool) and 0 < s < 2**31)
                for s in bs[1:]):
            raise _Refused(f"input {where!r}: bad or unknown shape {bs!r:.80} (fastgrad needs "
                           "every axis but the batch axis known)")
        dt = kcfg.get("dtype")
        if isinstance(dt, dict):
            dt = (dt.get("config") or {}).get("name")
        if dt not in (None, "float32", "int32", "int64"):
            raise _Refused(f"input {where!r}: dtype {dt!r:.40} is not supported")
        extra = {k: v for k, v in kcfg.items() if k not in ("batch_shape", "shape", "dtype", "name")
                 and not (k in _KERAS_ONLY_DEFAULTS and v == _KERAS_ONLY_DEFAULTS[k])}
        if extra:
            raise _Refused(f"input {where!r}: options {extra!r:.80} are not supported")
        out = {"name": kcfg.get("name", where), "input_shape": list(bs[1:])}
        if dt in ("int32", "int64"):
            out["dtype"] = dt
        return out

    _layers._load_all()
    cls = Layer.registry.get(class_name) if hasattr(Layer, "registry") else None
    if cls is None:
        cls = getattr(_layers, class_name)
    accepted = _accepted_params(cls)
    out = {}
    for k, v in kcfg.items():
        if k == "dtype":
            if class_name == "InputLayer" and isinstance(v, str) and v in ("int32", "int64"):
                out["dtype"] = v
            elif not _is_float32_dtype(v):
                raise _Refused(f"layer {where!r} ({class_name}): dtype {v!r:.80} is not supported "
                               "(fastgrad computes in float32)")
            continue
        if k in ("layer", "backward_layer") and class_name in ("Bidirectional", "TimeDistributed"):
            continue
        if k.endswith("_initializer"):
            v = _obj_from_keras(v, "initializer", where, k)
        elif k.endswith("_regularizer"):
            v = _obj_from_keras(v, "regularizer", where, k)
        elif not _plain(v):
            raise _Refused(f"layer {where!r} ({class_name}): option {k} holds a Keras object "
                           f"({v!r:.80}); fastgrad loads plain options only")
        if k in accepted:
            out[k] = v
        elif k in _KERAS_ONLY_DEFAULTS and v == _KERAS_ONLY_DEFAULTS[k]:
            continue
        else:
            raise _Refused(f"layer {where!r} ({class_name}): Keras option {k}={v!r:.80} has no "
                           "fastgrad equivalent")
    if class_name in ("Bidirectional", "TimeDistributed"):
        inner = kcfg.get("layer")
        if not isinstance(inner, dict) or not isinstance(inner.get("class_name"), str):
            raise _Refused(f"layer {where!r} ({class_name}) has no wrapped layer")
        icfg = _cfg_from_keras(inner["class_name"], inner.get("config"), where + "/" +
                               str((inner.get("config") or {}).get("name")))
        out["layer"] = {"class_name": inner["class_name"], "config": icfg}
        back = kcfg.get("backward_layer")
        if class_name == "Bidirectional" and back is not None:
            if not isinstance(back, dict) or back.get("class_name") != inner["class_name"]:
                raise _Refused(f"layer {where!r} (Bidirectional): a backward_layer of another "
                               "class than the forward layer is not supported")
            bcfg = _cfg_from_keras(back["class_name"], back.get("config"), where + "/backward")
            a = {k: v for k, v in icfg.items() if k not in ("name", "go_backwards")}
            b = {k: v for k, v in bcfg.items() if k not in ("name", "go_backwards")}
            if a != b or bool(bcfg.get("go_backwards")) == bool(icfg.get("go_backwards")):
                raise _Refused(f"layer {where!r} (Bidirectional): the backward layer is not the "
                               "mirror of the forward layer; fastgrad builds the mirror only")
    return out


def _ref_from_keras(r, what):
    if (isinstance(r, list) and len(r) == 3 and isinstance(r[0], str)
            and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**20 for x in r[1:])):
        if r[2] != 0:
            raise _Refused(f"{what} uses output #{r[2]} of layer {r[0]!r}; layers with several "
                           "outputs are not loaded")
        return [r[0], r[1], 0]
    raise _Refused(f"{what}: bad tensor reference {r!r:.80}")


def _tensor_ref(t, what):
    if not (isinstance(t, dict) and t.get("class_name") == "__keras_tensor__"
            and isinstance(t.get("config"), dict)):
        raise _Refused(f"{what}: argument {t!r:.80} is not a layer output")
    return _ref_from_keras(t["config"].get("keras_history"), what)


def _node_from_keras(cname, name, node, fgcfg):
    """One Keras inbound node as fastgrad's {"args", "multi"} (and call convention)."""
    what = f"layer {name!r} ({cname})"
    if not isinstance(node, dict) or not isinstance(node.get("args"), list):
        raise _Refused(f"{what}: bad inbound node {node!r:.80}")
    args, kwargs = node["args"], node.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise _Refused(f"{what}: bad call arguments")
    causal = bool(kwargs.pop("use_causal_mask", False))
    kwargs.pop("training", None)
    if kwargs.get("mask") is None:
        kwargs.pop("mask", None)
    if cname == "MultiHeadAttention":
        parts = {}
        keys = ["query", "value", "key"]
        for i, a in enumerate(args):
            if i >= 3:
                raise _Refused(f"{what}: too many call arguments")
            parts[keys[i]] = a
        for k in ["query", "value", "key"] + list(_MASK_KWARGS):
            if kwargs.get(k) is not None:
                parts[k] = kwargs.pop(k)
            else:
                kwargs.pop(k, None)
        if kwargs.pop("return_attention_scores", False):
            raise _Refused(f"{what}: return_attention_scores=True is not loaded")
        if "query" not in parts or "value" not in parts:
            raise _Refused(f"{what}: called without query and value")
        names = [n for n in ["query", "value", "key"] + list(_MASK_KWARGS) if n in parts]
        refs = [_tensor_ref(parts[n], what) for n in names]
        multi, call = True, {"call_inputs": names, "use_causal_mask": causal}
    else:
        if len(args) != 1:
            raise _Refused(f"{what}: called with {len(args)} positional arguments")
        a = args[0]
        if isinstance(a, list):
            refs, multi = [_tensor_ref(t, what) for t in a], True
        else:
            refs, multi = [_tensor_ref(a, what)], False
        call = {}
        if cname in ("Attention", "AdditiveAttention"):
            if kwargs.pop("return_attention_scores", False):
                raise _Refused(f"{what}: return_attention_scores=True is not loaded")
            call = {"call_inputs": ["query", "value", "key"][:len(refs)], "use_causal_mask": causal}
        elif causal:
            raise _Refused(f"{what}: use_causal_mask is not an argument of this layer")
    rest = {k: v for k, v in kwargs.items() if v is not None and v is not False}
    if rest:
        raise _Refused(f"{what}: call arguments {sorted(rest)} are not supported")
    return {"args": refs, "multi": multi}, call


def _refs(v, what):
    """Keras's input_layers / output_layers: one reference or a list (kind, refs)."""
    if isinstance(v, list) and len(v) == 3 and isinstance(v[0], str):
        return "single", [_ref_from_keras(v, what)]
    if isinstance(v, list):
        return "list", [_ref_from_keras(r, what) for r in v]
    if isinstance(v, dict):
        return "dict", [_ref_from_keras(r, what) for r in v.values()]
    raise _Refused(f"{what}: bad {v!r:.80}")


def _keras_to_fg_config(spec):
    """(fastgrad model class name, fastgrad config, [(layer name, keras class, keras config)]
    in Keras's h5 order) from config.json."""
    if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict):
        raise _Refused("config.json holds no model configuration")
    kind, cfg = spec.get("class_name"), spec["config"]
    layers = cfg.get("layers")
    if not isinstance(layers, list) or not layers:
        raise _Refused(f"the {kind} model has no layers")
    for e in layers:
        if not isinstance(e, dict) or not isinstance(e.get("class_name"), str):
            raise _Refused(f"bad layer entry {e!r:.80}")
        if e["class_name"] in ("Sequential", "Functional", "Model"):
            raise _Refused(f"layer {(e.get('config') or {}).get('name')!r} is a nested "
                           f"{e['class_name']} model; nested models are not loaded (flatten it "
                           "in Keras first)")
    if kind == "Sequential":
        fl, order = [], []
        shape = None
        for i, e in enumerate(layers):
            kc = e.get("config") or {}
            name = kc.get("name", f"#{i}") if isinstance(kc, dict) else f"#{i}"
            if e["class_name"] == "InputLayer":
                if i != 0:
                    raise _Refused("an InputLayer after the first layer")
                shape = _cfg_from_keras("InputLayer", kc, name)
                continue
            fc = _cfg_from_keras(e["class_name"], kc, name)
            fl.append({"class_name": e["class_name"], "config": fc})
            order.append((fc["name"] if "name" in fc else name, e["class_name"], kc))
        if shape is None:
            bis = cfg.get("build_input_shape") or (spec.get("build_config") or {}).get("input_shape")
            if isinstance(bis, list) and len(bis) > 1:
                shape = _cfg_from_keras("InputLayer", {"batch_shape": bis, "name": "input"}, "input")
        if shape is None:
            raise _Refused("the Sequential model has no input shape (no InputLayer, not built)")
        if "dtype" in shape and fl:
            # integer ids: the first layer (Embedding) reads them; the config carries no dtype
            pass
        return "Sequential", {"name": cfg.get("name"), "input_shape": shape["input_shape"],
                              "layers": fl}, order
    if kind not in ("Functional", "Model"):
        raise _Refused(f"model class {kind!r} (a subclassed or custom model) is not loaded; "
                       "fastgrad loads Sequential and Functional models")
    fl, order = [], []
    for i, e in enumerate(layers):
        name = e.get("name")
        if not isinstance(name, str):
            raise _Refused(f"layer #{i} has no name")
        cname = e["class_name"]
        module = e.get("module")
        if isinstance(module, str) and module.startswith("keras.src.ops"):
            # an operation on Keras tensors (x + y): fastgrad's operator layers
            if cname not in ("Add", "Subtract", "Multiply"):
                raise _Refused(f"{name!r} is the Keras operation {module}.{cname}, which "
                               "fastgrad does not load (operations +, -, * are loaded)")
            fnodes = []
            for n in e.get("inbound_nodes") or []:
                if not isinstance(n, dict) or not isinstance(n.get("args"), list) \
                        or len(n["args"]) != 2 or (n.get("kwargs") or {}):
                    raise _Refused(f"operation {name!r} ({cname}): bad call {n!r:.80}")
                fnodes.append({"args": [_tensor_ref(t, f"operation {name!r}") for t in n["args"]],
                               "multi": True})
            fl.append({"class_name": cname, "name": name, "config": {"name": name},
                       "inbound_nodes": fnodes, "operator": True})
            continue
        fc = _cfg_from_keras(cname, e.get("config"), name)
        fc["name"] = name
        nodes = e.get("inbound_nodes") or []
        if not isinstance(nodes, list):
            raise _Refused(f"layer {name!r}: bad inbound nodes")
        fnodes = []
        for n in nodes:
            fn, call = _node_from_keras(cname, name, n, fc)
            if call:
                if "call_inputs" in fc and fc["call_inputs"] != call["call_inputs"]:
                    raise _Refused(f"layer {name!r} ({cname}) is shared with different calls")
                fc.update(call)
            fnodes.append(fn)
        entry = {"class_name": cname, "name": name, "config": fc, "inbound_nodes": fnodes}
        fl.append(entry)
        order.append((name, cname, e.get("config") or {}))
    in_kind, ins = _refs(cfg.get("input_layers"), "input_layers")
    out_kind, outs = _refs(cfg.get("output_layers"), "output_layers")
    fcfg = {"name": cfg.get("name"), "layers": fl, "input_layers": ins, "output_layers": outs,
            "input_kind": in_kind, "output_kind": out_kind}
    if in_kind == "dict":
        fcfg["input_keys"] = list(cfg["input_layers"].keys())
    if out_kind == "dict":
        fcfg["output_keys"] = list(cfg["output_layers"].keys())
    return "Functional", fcfg, order


def _build(kind, fcfg, limit, what, path):
    from . import models as _models
    from .engine import params as _params
    try:
        with _params.allocation_limit(limit):
            if kind == "Sequential":
                return _models.Sequential.from_config(fcfg)
            return _models.Model.from_config(fcfg)
    except _params.AllocationRefused as exc:
        raise ModelFileError(f"{what}: {path!r}: the configuration asks for {exc.elements} weight "
                             f"values but model.weights.h5 holds {limit}") from None
    except ModelFileError:
        raise
    except _saving._CONFIG_ERRORS as exc:
        raise ModelFileError(f"{what}: {path!r}: the Keras model does not build in fastgrad "
                             f"({type(exc).__name__}: {exc})") from None


def _assign(model, order, h5, sequential, what, path):
    """Every layer's arrays read and checked, then all written."""
    keys = _Keys()
    todo = []
    for name, cname, kcfg in order:
        if sequential and cname == "InputLayer":
            continue
        key = keys.next(cname)
        layer = model.get_layer(name)
        current = layer.weights
        expect = [w.shape for w in current]
        arrays = h5.arrays(f"layers/{key}", _weight_groups(cname, kcfg), expect,
                           f"{name!r} ({cname})")
        todo.extend(zip(arrays, current))
    for a, w in todo:
        w[...] = a


def _compile_from_keras(model, cc, what, path):
    try:
        if not isinstance(cc, dict):
            raise _Refused("bad compile_config")
        opt = cc.get("optimizer")
        if isinstance(opt, dict):
            ocfg = dict(opt.get("config") or {})
            for k, d in _KERAS_OPT_DEFAULTS.items():
                if k in ocfg:
                    if ocfg[k] != d:
                        raise _Refused(f"optimizer option {k}={ocfg[k]!r} is not supported")
                    del ocfg[k]
            if not _plain(ocfg):
                raise _Refused("the optimizer's configuration holds Keras objects "
                               "(a learning-rate schedule?)")
            opt = {"class_name": opt.get("class_name"), "config": ocfg}

        from . import losses as _losses, metrics as _metrics, optimizers as _optimizers

        def obj(spec, kind):
            """A Keras loss / metric: a name, {"class_name", "config"}, or a list / dict."""
            if spec is None or isinstance(spec, str):
                return spec
            if isinstance(spec, list):
                return [obj(x, kind) for x in spec]
            if isinstance(spec, dict) and "class_name" in spec:
                c = spec.get("config") or {}
                if not isinstance(c, dict) or not _plain(c):
                    raise _Refused(f"{spec['class_name']} has a configuration with objects")
                if kind == "loss":
                    return _losses.deserialize({"class_name": spec["class_name"], "config": c})
                cls = _metrics._CLASSES.get(spec["class_name"])
                if cls is None:
                    raise _Refused(f"metric {spec['class_name']!r} is not in fastgrad")
                return cls.from_config(c)
            if isinstance(spec, dict):
                return {k: obj(v, kind) for k, v in spec.items()}
            raise _Refused(f"bad {kind} {spec!r:.80}")

        model.compile(optimizer=_optimizers.deserialize(opt) if isinstance(opt, dict) else opt,
                      loss=obj(cc.get("loss"), "loss"), loss_weights=cc.get("loss_weights"),
                      metrics=obj(cc.get("metrics"), "metric"),
                      weighted_metrics=obj(cc.get("weighted_metrics"), "metric"))
    except (_Refused, *_saving._CONFIG_ERRORS) as exc:
        warnings.warn(f"{what}: {path!r}: the model is loaded uncompiled: its Keras compile "
                      f"configuration cannot be restored in fastgrad ({exc}); call compile()",
                      UserWarning, stacklevel=3)


def load_keras(filepath: str | os.PathLike, custom_objects: dict | None = None, compile: bool = True) -> Any:
    """Import a Keras 3 ".keras" file as a fastgrad model.

    A Sequential or Functional model of the layers in ``KERAS_LAYER_CLASSES``:
    configuration and weights; the compile configuration when fastgrad
    supports its optimizer, loss and metrics (else uncompiled, with a
    warning). The optimizer state is not imported. Needs h5py.

    Parameters
    ----------
    filepath : str or path-like
        The file.
    custom_objects : dict or None, default None
        Not supported for Keras files; must be empty.
    compile : bool, default True
        Compile the model as the file says.

    Returns
    -------
    Model
        The model.

    Raises
    ------
    ValueError
        If the file holds something fastgrad does not import (the message says what).
    TypeError
        If `filepath` is not a path.
    ImportError
        If h5py is not installed.
    """
    what = "load_keras"
    if not isinstance(filepath, (str, os.PathLike)):
        raise TypeError(f"{what}: filepath must be a str or os.PathLike, got {filepath!r}")
    path = os.fspath(filepath)
    if custom_objects:
        raise ValueError(f"{what}: custom_objects are not supported for Keras files")
    h5py = _h5py(what, for_save=False)
    arc = _Archive(path, what)
    raw = arc.read("config.json", _MAX_CONFIG_BYTES)
    try:
        spec = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        arc.fail(f"config.json is not valid JSON ({exc})")
    if not _saving._json_depth_ok(spec, _saving._MAX_JSON_DEPTH):
        arc.fail(f"config.json nests deeper than {_saving._MAX_JSON_DEPTH} levels")
    try:
        kind, fcfg, order = _keras_to_fg_config(spec)
    except _Refused as exc:
        arc.fail(str(exc))
    h5 = _H5Weights(h5py, arc.read("model.weights.h5"), arc.fail)
    model = _build(kind, fcfg, h5.total, what, path)
    _assign(model, order, h5, kind == "Sequential", what, path)
    cc = spec.get("compile_config")
    if compile and cc:
        _compile_from_keras(model, cc, what, path)
    return model


def load_keras_weights(model: Any, filepath: str | os.PathLike) -> None:
    """Load a Keras 3 ".weights.h5" file into a built model whose layers match the Keras model's.

    Parameters
    ----------
    model : Model
        A built model.
    filepath : str or path-like
        The file.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If the weights do not fit the model.
    """
    what = "load_weights"
    path = os.fspath(filepath)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what}: no such file: {path!r}")
    _saving._require_built(model, what)
    h5py = _h5py(what, for_save=False)

    def fail(msg):
        raise ModelFileError(f"{what}: {path!r}: {msg}")

    try:
        ordered, seq = _model_layer_order(model)
    except _Refused as exc:
        raise ValueError(f"{what}: {path!r}: {exc}") from None
    with open(path, "rb") as f:
        data = f.read()
    h5 = _H5Weights(h5py, data, fail)
    _assign(model, [(l.name, e["class_name"], e["config"]) for l, e in ordered], h5, seq,
            what, path)
