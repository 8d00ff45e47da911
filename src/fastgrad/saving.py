"""Saving and loading models: one self-checking file per model.

`model.save(path)` / `fastgrad.models.load_model(path)` (and the weights-only
`save_weights` / `load_weights`) write a ZIP container (stored, not
compressed) holding

    fastgrad.json        manifest: format name + version, the architecture
                         (model config: every layer's class name and config),
                         the compile config (loss / optimizer / metrics), the
                         list of arrays with name, shape, dtype and SHA-256,
                         and the random-stream state needed to resume
    arrays/NNNN.bin      raw little-endian array bytes: the weights in Keras
                         order (BatchNorm moving statistics included), then the
                         optimizer slots

Integrity: every member carries the ZIP CRC-32 and every array its SHA-256 in
the manifest, so a truncated or corrupted file is detected before anything is
built and reported as a ValueError naming the problem; so are a wrong format
version, an unknown layer class and shape mismatches.

Exact resume: the file also holds the optimizer state (slots + iterations) and
the random streams — the library generator (`fastgrad._config`: shuffling,
initialisation, fresh seeds) and each Dropout layer's (seed, offset) — so that
`set_seed(s); fit; save; load; fit` gives bitwise the same parameters as an
uninterrupted `set_seed(s); fit; fit`. `load_model(restore_rng=False)` leaves
the process's library generator alone.

Writes are atomic: the file is written to a temporary file in the same
directory, flushed to disk, then renamed over the target (os.replace), so a
crash never leaves a half-written model under the target name.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile

import numpy as np

__all__ = ["save_model", "load_model", "save_weights", "load_weights", "FORMAT_VERSION"]

MODEL_FORMAT = "fastgrad-model"
WEIGHTS_FORMAT = "fastgrad-weights"
FORMAT_VERSION = 1
_MANIFEST = "fastgrad.json"
_DTYPES = {"<f4": np.dtype("<f4"), "<f8": np.dtype("<f8"), "<i8": np.dtype("<i8"), "|u1": np.dtype("|u1"),
           "|i1": np.dtype("|i1"), "<i4": np.dtype("<i4")}  # int8 / int32: quantized models


# ====================================================================== writing
#: model classes by name, for load_model: fastgrad.models registers Model and
#: Sequential (and every Model subclass) here, so saving never imports models
MODEL_CLASSES: dict = {}


def register_model_class(cls, name=None):
    MODEL_CLASSES[name or cls.__name__] = cls
    return cls


def _array_entry(arrays, name, a):
    a = np.ascontiguousarray(a)
    dt = a.dtype.newbyteorder("<") if a.dtype.itemsize > 1 else a.dtype
    if dt.str not in _DTYPES:
        raise TypeError(f"save: array {name!r} has unsupported dtype {a.dtype}")
    data = a.astype(dt, copy=False).tobytes()
    member = f"arrays/{len(arrays):04d}.bin"
    arrays.append((member, data))
    return {"name": name, "member": member, "shape": list(a.shape), "dtype": dt.str,
            "sha256": hashlib.sha256(data).hexdigest()}


def _write_atomic(path, manifest, arrays):
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=d)
    try:
        # mkstemp creates 0600; give the file the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as z:
                z.writestr(_MANIFEST, json.dumps(manifest, indent=1, sort_keys=False))
                for member, data in arrays:
                    z.writestr(member, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename durable (best effort; not all platforms allow it)
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _check_target(filepath, overwrite, what):
    if not isinstance(filepath, (str, os.PathLike)):
        raise TypeError(f"{what}: filepath must be a str or os.PathLike, got {filepath!r}")
    path = os.fspath(filepath)
    if os.path.isdir(path):
        raise ValueError(f"{what}: {path!r} is a directory; give a file name such as 'model.fgm'")
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{what}: {path!r} exists and overwrite=False")
    return path


def _weight_names(model):
    store = getattr(model, "_store", None)
    if store is not None and hasattr(store, "weight_names"):
        return list(store.weight_names())
    return [f"weight_{i}" for i in range(len(model.get_weights()))]


def _require_built(model, what):
    if not getattr(model, "built", False):
        raise ValueError(f"{what}: the model is not built (no weights yet); give the first layer "
                         "input_shape=... or fit it first")


def _rng_state():
    from . import _config
    bg = _config.rng().bit_generator
    return {"seed": _config.get_seed(), "bit_generator": type(bg).__name__, "state": bg.state}


def _layer_rng_states(model):
    out = {}
    for layer in model.layers:
        get = getattr(layer, "get_rng_state", None)
        if get is not None:
            out[layer.name] = get()
    return out


def save_model(model, filepath, overwrite=True, include_optimizer=True):
    """Write `model` (architecture, compile config, weights, optimizer state and
    random-stream state) to one file at `filepath`, atomically."""
    what = "save_model"
    path = _check_target(filepath, overwrite, what)
    _require_built(model, what)
    from ._version import __version__
    arrays = []
    weights = model.get_weights()
    entries = [_array_entry(arrays, n, w) for n, w in zip(_weight_names(model), weights)]
    compile_cfg = model.get_compile_config() if hasattr(model, "get_compile_config") else None
    opt_state = None
    opt = getattr(model, "optimizer", None)
    if include_optimizer and opt is not None and compile_cfg is not None:
        st = opt.get_state()
        # a model sharing a bigger buffer (a sub-model, engine/params.py) saves its slots in
        # the layout of its own buffer, which is what load_model builds
        store = getattr(model, "_store", None)
        compact = getattr(store, "compact", None)
        inits = opt._active_slots() if hasattr(opt, "_active_slots") else {}
        if compact is not None:
            st = {k: (v if k == "iterations" else compact(v, inits.get(k) or 0.0))
                  for k, v in st.items()}
        opt_state = {"iterations": int(st.get("iterations", 0)),
                     "slots": [_array_entry(arrays, k, v) for k, v in st.items() if k != "iterations"]}
    manifest = {
        "format": MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        "fastgrad_version": __version__,
        "model": {"class_name": type(model).__name__, "config": model.get_config()},
        "compile_config": compile_cfg,
        "weights": entries,
        "optimizer_state": opt_state,
        "rng": _rng_state(),
        "layer_rng": _layer_rng_states(model),
    }
    try:
        json.dumps(manifest)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: the model's configuration is not serialisable ({exc}); custom "
                         "objects need a JSON-friendly get_config()") from None
    _write_atomic(path, manifest, arrays)


def save_weights(model, filepath, overwrite=True):
    """Write only the weights (Keras order, with names) to `filepath`, atomically."""
    what = "save_weights"
    path = _check_target(filepath, overwrite, what)
    _require_built(model, what)
    from ._version import __version__
    arrays = []
    entries = [_array_entry(arrays, n, w) for n, w in zip(_weight_names(model), model.get_weights())]
    manifest = {"format": WEIGHTS_FORMAT, "format_version": FORMAT_VERSION, "fastgrad_version": __version__,
                "weights": entries, "layer_rng": _layer_rng_states(model)}
    _write_atomic(path, manifest, arrays)


# ====================================================================== reading
class _File:
    """A validated container: manifest + array reader (all checks before use)."""

    def __init__(self, filepath, what, formats):
        if not isinstance(filepath, (str, os.PathLike)):
            raise TypeError(f"{what}: filepath must be a str or os.PathLike, got {filepath!r}")
        self.path = path = os.fspath(filepath)
        self.what = what
        if not os.path.exists(path):
            raise FileNotFoundError(f"{what}: no such file: {path!r}")
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except IsADirectoryError:
            raise ValueError(f"{what}: {path!r} is a directory, not a fastgrad model file") from None
        if not raw:
            raise ValueError(f"{what}: {path!r} is empty (truncated or not a fastgrad file)")
        try:
            z = zipfile.ZipFile(io.BytesIO(raw))
        except zipfile.BadZipFile:
            kind = "truncated or corrupted" if raw[:4] == b"PK\x03\x04" else "not a fastgrad model file"
            raise ValueError(f"{what}: {path!r} is {kind} (not a readable fastgrad container)") from None
        try:
            bad = z.testzip()
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
            raise ValueError(f"{what}: {path!r} is truncated or corrupted ({exc})") from None
        if bad is not None:
            raise ValueError(f"{what}: {path!r} is corrupted: checksum (CRC-32) mismatch in member {bad!r}")
        self.zip = z
        names = set(z.namelist())
        if _MANIFEST not in names:
            raise ValueError(f"{what}: {path!r} is not a fastgrad model file (no {_MANIFEST} manifest)")
        try:
            m = json.loads(z.read(_MANIFEST).decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{what}: {path!r} has a corrupted manifest ({exc})") from None
        if not isinstance(m, dict):
            raise ValueError(f"{what}: {path!r} has a corrupted manifest (not a JSON object)")
        fmt = m.get("format")
        if fmt not in formats:
            raise ValueError(f"{what}: {path!r} holds format {fmt!r}; expected one of {list(formats)}")
        ver = m.get("format_version")
        if not isinstance(ver, int) or isinstance(ver, bool):
            raise ValueError(f"{what}: {path!r} has no valid format_version ({ver!r})")
        if ver > FORMAT_VERSION:
            raise ValueError(f"{what}: {path!r} uses format version {ver}, written by a newer fastgrad "
                             f"({m.get('fastgrad_version')}); this fastgrad reads versions <= {FORMAT_VERSION}")
        if ver < 1:
            raise ValueError(f"{what}: {path!r} has an incompatible format version {ver}")
        self.manifest = m
        self._names = names

    def array(self, entry):
        what, path = self.what, self.path
        try:
            member, shape, dt, digest = entry["member"], entry["shape"], entry["dtype"], entry["sha256"]
        except (KeyError, TypeError):
            raise ValueError(f"{what}: {path!r} has a corrupted manifest (bad array entry {entry!r})") from None
        if member not in self._names:
            raise ValueError(f"{what}: {path!r} is missing array member {member!r} ({entry.get('name')})")
        dtype = _DTYPES.get(dt)
        if dtype is None:
            raise ValueError(f"{what}: {path!r}: array {entry.get('name')!r} has unsupported dtype {dt!r}")
        data = self.zip.read(member)
        if hashlib.sha256(data).hexdigest() != digest:
            raise ValueError(f"{what}: {path!r} is corrupted: SHA-256 mismatch in array {entry.get('name')!r}")
        try:
            shape = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            raise ValueError(f"{what}: {path!r}: array {entry.get('name')!r} has a bad shape {shape!r}") from None
        n = int(np.prod(shape)) if shape else 1
        if len(data) != n * dtype.itemsize:
            raise ValueError(f"{what}: {path!r}: array {entry.get('name')!r} holds {len(data)} bytes, "
                             f"expected {n * dtype.itemsize} for shape {shape}")
        return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))

    def weights(self):
        entries = self.manifest.get("weights")
        if not isinstance(entries, list):
            raise ValueError(f"{self.what}: {self.path!r} has a corrupted manifest (no weight list)")
        return [(e.get("name"), self.array(e)) for e in entries]


def _assign_weights(model, named, what, path):
    """Check count and every shape against the model, then set them all."""
    current = model.get_weights()
    names = _weight_names(model)
    if len(named) != len(current):
        raise ValueError(f"{what}: {path!r} holds {len(named)} weight arrays "
                         f"({', '.join(str(n) for n, _ in named)}) but the model has {len(current)} "
                         f"({', '.join(names)})")
    for (saved_name, a), c, name in zip(named, current, names):
        if a.shape != c.shape:
            raise ValueError(f"{what}: shape mismatch for {name}: the model has {c.shape}, "
                             f"{path!r} has {a.shape} (saved as {saved_name})")
    model.set_weights([a for _, a in named])


def _set_layer_rng(model, states, what, path):
    if not isinstance(states, dict):
        return
    for layer in model.layers:
        st = states.get(layer.name)
        if st is not None and hasattr(layer, "set_rng_state"):
            try:
                layer.set_rng_state(st)
            except (ValueError, TypeError, AttributeError) as exc:
                raise ValueError(f"{what}: {path!r}: bad random-stream state for layer {layer.name!r} "
                                 f"({exc})") from None


def _restore_library_rng(st, what, path):
    from . import _config
    if not isinstance(st, dict):
        return
    seed = st.get("seed")
    _config.set_seed(seed if isinstance(seed, int) and seed >= 0 else None)
    bg = _config.rng().bit_generator
    if st.get("bit_generator") != type(bg).__name__:
        raise ValueError(f"{what}: {path!r} stores a {st.get('bit_generator')} generator state; this "
                         f"NumPy uses {type(bg).__name__} (pass restore_rng=False to skip it)")
    try:
        bg.state = st["state"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{what}: {path!r} has a corrupted generator state ({exc})") from None


def _build_model(man, custom_objects, what, path):
    from . import layers as _layers
    from .layers.base import Layer
    spec = man.get("model")
    if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict):
        raise ValueError(f"{what}: {path!r} has a corrupted manifest (no model architecture)")
    kind = spec.get("class_name")
    if kind == "QuantizedModel" or "FakeQuantDense" in json.dumps(spec):
        from . import quantization  # noqa: F401  (registers QuantizedModel / FakeQuantDense)
    if kind not in MODEL_CLASSES:
        raise ValueError(f"{what}: {path!r} holds a model of unknown kind {kind!r}; this fastgrad loads "
                         f"{', '.join(sorted(MODEL_CLASSES))} models")
    cfg = spec["config"]
    _layers._load_all()
    custom = dict(custom_objects or {})
    if kind != "Sequential":
        # graph models: rebuilt through the layer registry by replaying the saved calls
        try:
            return MODEL_CLASSES[kind].from_config(cfg, custom)
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"{what}: {path!r}: the saved graph does not build: {exc}") from None
    model = MODEL_CLASSES["Sequential"](name=cfg.get("name"))
    shape = cfg.get("input_shape")
    layer_specs = cfg.get("layers")
    if not isinstance(layer_specs, list) or not layer_specs:
        raise ValueError(f"{what}: {path!r} has a corrupted manifest (no layers)")
    built_layers = []
    for i, d in enumerate(layer_specs):
        if not isinstance(d, dict) or "class_name" not in d:
            raise ValueError(f"{what}: {path!r} has a corrupted manifest (layer #{i}: {d!r})")
        cname = d["class_name"]
        cls = custom.get(cname) or Layer.registry.get(cname)
        if cls is None:
            raise ValueError(f"{what}: {path!r}: unknown layer kind {cname!r} (layer #{i}); it was saved "
                             "by a newer fastgrad or is a custom layer — pass custom_objects="
                             f"{{'{cname}': YourLayerClass}}")
        try:
            built_layers.append(cls.from_config(dict(d.get("config") or {})))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what}: {path!r}: cannot re-create layer #{i} ({cname}): {exc}") from None
    try:
        if shape is not None:
            model._input_shape = tuple(int(s) for s in shape)
        for layer in built_layers:
            model.add(layer)
        if not model.built:
            model.build(model._input_shape)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: {path!r}: the saved architecture does not build: {exc}") from None
    return model


def load_model(filepath, custom_objects=None, compile=True, restore_rng=True):
    """Re-create a model saved with `model.save(filepath)`: architecture,
    weights, compile config and optimizer state (compile=False: an uncompiled
    model), and (restore_rng=True) the library random generator state, so that
    training continues exactly as if never interrupted."""
    what = "load_model"
    f = _File(filepath, what, (MODEL_FORMAT,))
    man, path = f.manifest, f.path
    named = f.weights()                                   # every checksum verified before building
    opt_state = man.get("optimizer_state")
    slots = None
    if compile and isinstance(opt_state, dict):
        slots = {e.get("name"): f.array(e) for e in opt_state.get("slots") or []}
    model = _build_model(man, custom_objects, what, path)
    _assign_weights(model, named, what, path)
    cc = man.get("compile_config")
    if compile and cc is not None:
        try:
            model.compile_from_config(cc)
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"{what}: {path!r}: cannot restore the compile configuration ({exc}); "
                             "load with compile=False and compile it yourself") from None
        if slots is not None:
            opt = model.optimizer
            store = getattr(model, "_store", None)
            if store is not None and hasattr(opt, "build"):
                opt.build(store.size)
            state = dict(slots)
            state["iterations"] = int(opt_state.get("iterations", 0))
            try:
                opt.set_state(state)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{what}: {path!r}: optimizer state does not fit the model ({exc})") from None
    _set_layer_rng(model, man.get("layer_rng"), what, path)
    if restore_rng:
        _restore_library_rng(man.get("rng"), what, path)
    return model


def load_weights(model, filepath):
    """Load weights saved by save_weights (or a full model file) into `model`;
    every shape is checked before anything is written."""
    what = "load_weights"
    f = _File(filepath, what, (WEIGHTS_FORMAT, MODEL_FORMAT))
    named = f.weights()
    _require_built(model, what)
    _assign_weights(model, named, what, f.path)
    _set_layer_rng(model, f.manifest.get("layer_rng"), what, f.path)
