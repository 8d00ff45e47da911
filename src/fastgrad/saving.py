"""Saving and loading models: one self-checking file per model.

`model.save(path)` / `fastgrad.models.load_model(path)` (and the weights-only
`save_weights` / `load_weights`) write a ZIP container (stored, not
compressed) holding

    fastgrad.json        manifest: format name + version, the architecture
                         (model config: every layer's class name and config),
                         the compile config (loss / optimizer / metrics), the
                         list of arrays with name, shape, dtype and SHA-256,
                         and the random-stream state needed to resume
    arrays/NNNN.npy      one array each in NumPy's .npy format (little-endian,
                         C order; `np.load` and other tools read them): the
                         weights in Keras order (BatchNorm moving statistics
                         included), then the optimizer slots
                         (format version 1 stored raw bytes as arrays/NNNN.bin;
                         such files still load)

Integrity: every member carries the ZIP CRC-32 and every array its SHA-256 in
the manifest, so a truncated or corrupted file is detected before anything is
built and reported as a `ModelFileError` (a ValueError) naming the file and the
problem; so are a wrong format version, an unknown layer class and shape
mismatches.

Files made to hurt: the reader trusts nothing in the file before checking it.
It refuses compressed members (the writer never compresses), members the
manifest does not name, a manifest over 16 MiB or nested over 200 levels, and
array sizes that do not add up to the file's size; it reads only the members
the manifest names, and it compares the parameter count the architecture
would allocate with the arrays the file holds before allocating any weight
(a manifest asking for `units=2**27` is refused in microseconds, not after
gigabytes of initialisation). Every failure is a `ModelFileError`.

Exact resume: the file also holds the optimizer state (slots + iterations) and
the random streams — the library generator (`fastgrad._config`: shuffling,
initialisation, fresh seeds) and each Dropout layer's (seed, offset) — so that
`set_seed(s); fit; save; load; fit` gives bitwise the same parameters as an
uninterrupted `set_seed(s); fit; fit`. `load_model(restore_rng=False)` leaves
the process's library generator alone.

Writes are atomic: the file is written to a temporary file in the same
directory (".NAME.<pid>.<random>.tmp"), flushed to disk, then renamed over the
target (os.replace), so a crash never leaves a half-written model under the
target name. A process killed while saving leaves its temporary file behind;
the next save of the same target removes the temporaries whose writing
process is gone.

fastgrad's own extensions are `.fgm` (models) and `.fgw` (weights); any name
but the Keras ones below gets fastgrad's format. Keras names hold Keras files
(fastgrad.keras_file, needs h5py; docs/keras_interop.md)::

    model.save("x.keras")            a real Keras 3 file (keras.saving.load_model reads it),
                                     or a ValueError naming '.fgm' when the model has a layer
                                     without a Keras equivalent or h5py is missing
    model.save("x.h5" / "x.hdf5")    refused: Keras's legacy HDF5 model format is not written
    model.save_weights("x.weights.h5")  a Keras 3 weights file (model.load_weights reads it
                                     in Keras and in fastgrad); other ".h5" / ".keras" names
                                     are refused, as Keras 3 refuses them
    load_model("x.keras")            imports a Keras 3 file (fastgrad.keras_file.load_keras);
                                     a '.keras' file written by fastgrad < 0.2 (fastgrad's
                                     format under that name) still loads
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from typing import Any
from struct import error as struct_error

import numpy as np

__all__ = ["save_model", "load_model", "save_weights", "load_weights", "FORMAT_VERSION",
           "ModelFileError"]

MODEL_FORMAT = "fastgrad-model"
WEIGHTS_FORMAT = "fastgrad-weights"
FORMAT_VERSION = 2
_MANIFEST = "fastgrad.json"
_MAX_MANIFEST_BYTES = 16 << 20
_MAX_JSON_DEPTH = 200
_MAX_MEMBERS = 1 << 16


class ModelFileError(ValueError):
    """A model or weights file that is damaged, crafted or not a fastgrad file.

    The message names the file and the problem.
    """


_DTYPES = {"<f4": np.dtype("<f4"), "<f8": np.dtype("<f8"), "<i8": np.dtype("<i8"), "|u1": np.dtype("|u1"),
           "|i1": np.dtype("|i1"), "<i4": np.dtype("<i4")}  # int8 / int32: quantized models


# ====================================================================== writing
#: model classes by name, for load_model: fastgrad.models registers Model and
#: Sequential (and every Model subclass) here, so saving never imports models
MODEL_CLASSES: dict = {}


def register_model_class(cls: type, name: str | None = None) -> type:
    """Make a model class known to :func:`load_model` by name.

    Parameters
    ----------
    cls : type
        The Model subclass.
    name : str or None, default None
        The name in files (None: the class name).

    Returns
    -------
    type
        `cls` itself.
    """
    MODEL_CLASSES[name or cls.__name__] = cls
    return cls


def _array_entry(arrays, name, a):
    a = np.ascontiguousarray(a)
    dt = a.dtype.newbyteorder("<") if a.dtype.itemsize > 1 else a.dtype
    if dt.str not in _DTYPES:
        raise TypeError(f"save: array {name!r} has unsupported dtype {a.dtype}")
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a.astype(dt, copy=False), version=(1, 0), allow_pickle=False)
    data = buf.getvalue()
    member = f"arrays/{len(arrays):04d}.npy"
    arrays.append((member, data))
    return {"name": name, "member": member, "shape": list(a.shape), "dtype": dt.str,
            "sha256": hashlib.sha256(data).hexdigest()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True             # exists but not ours, or cannot tell: keep its file
    return True


def _remove_stale_temporaries(d, base):
    """Delete ".BASE.<pid>.*.tmp" files whose writing process no longer exists
    (a save killed with SIGKILL), so repeated crashes do not pile up files."""
    prefix = "." + base + "."
    try:
        names = os.listdir(d)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        try:
            os.unlink(os.path.join(d, name))
        except OSError:
            pass


def _write_atomic(path, manifest, arrays):
    members = [(_MANIFEST, json.dumps(manifest, indent=1, sort_keys=False).encode())]
    _write_members_atomic(path, members + list(arrays))


def _write_members_atomic(path, members):
    """A stored (uncompressed) ZIP of (name, bytes) members, written atomically."""
    def write(f):
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as z:
            for member, data in members:
                z.writestr(member, data)
    _replace_atomic(path, write)


def _write_bytes_atomic(path, data):
    _replace_atomic(path, lambda f: f.write(data))


def _replace_atomic(path, write):
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    _remove_stale_temporaries(d, base)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.{os.getpid()}.", suffix=".tmp", dir=d)
    try:
        # mkstemp creates 0600; give the file the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
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


def _keras_kind(filepath):
    """'keras', 'weights.h5', 'h5' for Keras's file names, else None."""
    if not isinstance(filepath, (str, os.PathLike)):
        return None
    low = os.fspath(filepath).lower()
    if low.endswith(".keras"):
        return "keras"
    if low.endswith(".weights.h5"):
        return "weights.h5"
    if low.endswith((".h5", ".hdf5")):
        return "h5"
    return None


def _is_fastgrad_zip(path):
    try:
        with zipfile.ZipFile(path) as z:
            return _MANIFEST in z.namelist()
    except (OSError, zipfile.BadZipFile, ValueError, EOFError, NotImplementedError, struct_error):
        return False


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


def save_model(model: Any, filepath: str | os.PathLike, overwrite: bool = True,
               include_optimizer: bool = True) -> None:
    """Write a model to one file, atomically (``model.save``).

    fastgrad's format (".fgm" or any other name) holds the architecture, the
    compile configuration, the weights, the optimizer state and the random
    stream state; a ".keras" name writes a Keras 3 file instead.

    Parameters
    ----------
    model : Model
        A built model.
    filepath : str or path-like
        The file; ".keras" selects the Keras 3 format.
    overwrite : bool, default True
        Replace an existing file (False: raise instead).
    include_optimizer : bool, default True
        Save the optimizer and its state.

    Raises
    ------
    ValueError
        If the model is not built, the name asks for Keras's legacy HDF5
        format, or the file exists and `overwrite` is False.
    """
    what = "save_model"
    kind = _keras_kind(filepath)
    if kind == "keras":
        from . import keras_file
        keras_file.save_keras(model, filepath, overwrite, include_optimizer)
        return
    if kind in ("h5", "weights.h5"):
        raise ValueError(f"save_model: {os.fspath(filepath)!r}: fastgrad does not write Keras's "
                         "legacy HDF5 model format; use the extension '.keras' (a Keras 3 file, "
                         "needs h5py) or '.fgm' (fastgrad's own format)")
    path = _check_target(filepath, overwrite, what)
    _require_built(model, what)
    from ._version import __version__
    arrays: list = []
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


def save_weights(model: Any, filepath: str | os.PathLike, overwrite: bool = True) -> None:
    """Write only the weights (Keras order, with names) to a file, atomically.

    Parameters
    ----------
    model : Model
        A built model.
    filepath : str or path-like
        The file; a ".weights.h5" name writes Keras 3's weights format.
    overwrite : bool, default True
        Replace an existing file (False: raise instead).

    Raises
    ------
    ValueError
        If the model is not built, the name is another Keras format, or the
        file exists and `overwrite` is False.
    """
    what = "save_weights"
    kind = _keras_kind(filepath)
    if kind == "weights.h5":
        from . import keras_file
        keras_file.save_keras_weights(model, filepath, overwrite)
        return
    if kind is not None:
        raise ValueError(f"save_weights: {os.fspath(filepath)!r}: a Keras weights file name must "
                         "end in '.weights.h5' (as in Keras 3); use that, or '.fgw' for "
                         "fastgrad's own weights format (model.save('x.keras') writes a whole "
                         "Keras model)")
    path = _check_target(filepath, overwrite, what)
    _require_built(model, what)
    from ._version import __version__
    arrays: list = []
    entries = [_array_entry(arrays, n, w) for n, w in zip(_weight_names(model), model.get_weights())]
    manifest = {"format": WEIGHTS_FORMAT, "format_version": FORMAT_VERSION, "fastgrad_version": __version__,
                "weights": entries, "layer_rng": _layer_rng_states(model)}
    _write_atomic(path, manifest, arrays)


# ====================================================================== reading
def _json_depth_ok(obj: Any, limit: int) -> bool:
    """True when `obj` nests at most `limit` levels (iterative: no recursion)."""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if d > limit:
            return False
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o)
    return True


class _File:
    """A validated container: manifest + array reader (all checks before use).

    Only the central directory and the manifest are read here; an array
    member is read (and its CRC-32 and SHA-256 checked) when asked for, and
    only members the manifest names can be asked for."""

    def __init__(self, filepath, what, formats):
        if not isinstance(filepath, (str, os.PathLike)):
            raise TypeError(f"{what}: filepath must be a str or os.PathLike, got {filepath!r}")
        self.path = path = os.fspath(filepath)
        self.what = what
        if not os.path.exists(path):
            raise FileNotFoundError(f"{what}: no such file: {path!r}")
        if os.path.isdir(path):
            raise ModelFileError(f"{what}: {path!r} is a directory, not a fastgrad model file")
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as exc:
            raise ModelFileError(f"{what}: {path!r} cannot be read ({exc})") from None
        if not raw:
            raise ModelFileError(f"{what}: {path!r} is empty (truncated or not a fastgrad file)")
        self.size = len(raw)
        try:
            z = zipfile.ZipFile(io.BytesIO(raw))
            infos = z.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
                NotImplementedError, struct_error) as exc:
            kind = "truncated or corrupted" if raw[:4] == b"PK\x03\x04" else "not a fastgrad model file"
            raise ModelFileError(f"{what}: {path!r} is {kind} (not a readable fastgrad container: "
                                 f"{exc})") from None
        if len(infos) > _MAX_MEMBERS:
            raise ModelFileError(f"{what}: {path!r} has {len(infos)} members; a fastgrad file has "
                                 f"at most {_MAX_MEMBERS}")
        self.zip = z
        self._info = {}
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED:
                raise ModelFileError(f"{what}: {path!r}: member {info.filename!r} is compressed "
                                     f"(method {info.compress_type}); fastgrad writes stored members "
                                     "only and refuses others")
            if info.file_size != info.compress_size or info.file_size > self.size:
                raise ModelFileError(f"{what}: {path!r}: member {info.filename!r} claims "
                                     f"{info.file_size} bytes in a file of {self.size}")
            if info.filename in self._info:
                raise ModelFileError(f"{what}: {path!r}: member {info.filename!r} appears twice")
            self._info[info.filename] = info
        if sum(i.file_size for i in infos) > self.size:
            raise ModelFileError(f"{what}: {path!r}: the members' sizes add up to more than the file")
        if _MANIFEST not in self._info:
            raise ModelFileError(f"{what}: {path!r} is not a fastgrad model file (no {_MANIFEST} "
                                 "manifest)")
        if self._info[_MANIFEST].file_size > _MAX_MANIFEST_BYTES:
            raise ModelFileError(f"{what}: {path!r}: the manifest is {self._info[_MANIFEST].file_size} "
                                 f"bytes; more than the {_MAX_MANIFEST_BYTES} a fastgrad file may hold")
        text = self._read(_MANIFEST)
        try:
            m = json.loads(text.decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise ModelFileError(f"{what}: {path!r} has a corrupted manifest ({why})") from None
        if not isinstance(m, dict):
            raise ModelFileError(f"{what}: {path!r} has a corrupted manifest (not a JSON object)")
        if not _json_depth_ok(m, _MAX_JSON_DEPTH):
            raise ModelFileError(f"{what}: {path!r}: the manifest nests deeper than "
                                 f"{_MAX_JSON_DEPTH} levels")
        fmt = m.get("format")
        if fmt not in formats:
            raise ModelFileError(f"{what}: {path!r} holds format {fmt!r}; expected one of "
                                 f"{list(formats)}")
        ver = m.get("format_version")
        if not isinstance(ver, int) or isinstance(ver, bool):
            raise ModelFileError(f"{what}: {path!r} has no valid format_version ({ver!r})")
        if ver > FORMAT_VERSION:
            raise ModelFileError(f"{what}: {path!r} uses format version {ver}, written by a newer "
                                 f"fastgrad ({m.get('fastgrad_version')}); this fastgrad reads "
                                 f"versions <= {FORMAT_VERSION}")
        if ver < 1:
            raise ModelFileError(f"{what}: {path!r} has an incompatible format version {ver}")
        self.version = ver
        self.manifest = m
        self._check_entries()

    def _fail(self, msg):
        raise ModelFileError(f"{self.what}: {self.path!r}: {msg}")

    def _read(self, member):
        try:
            return self.zip.read(self._info[member])
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError,
                struct_error) as exc:
            raise ModelFileError(f"{self.what}: {self.path!r} is corrupted: member {member!r} "
                                 f"cannot be read ({exc})") from None

    def _entries(self):
        m = self.manifest
        weights = m.get("weights")
        if not isinstance(weights, list):
            self._fail("corrupted manifest (no weight list)")
        entries = list(weights)
        opt = m.get("optimizer_state")
        if opt is not None:
            if not isinstance(opt, dict) or not isinstance(opt.get("slots") or [], list):
                self._fail("corrupted manifest (bad optimizer_state)")
            entries += list(opt.get("slots") or [])
        return entries

    def _check_entries(self):
        """Every array entry well formed, its member present and of the size its
        shape and dtype say; no member the manifest does not name."""
        named = {_MANIFEST}
        total = 0
        self.weight_elements = 0
        n_weights = len(self.manifest.get("weights") or [])
        for i, e in enumerate(self._entries()):
            if not isinstance(e, dict):
                self._fail(f"corrupted manifest (bad array entry {e!r:.80})")
            member, shape, dt = e.get("member"), e.get("shape"), e.get("dtype")
            name = e.get("name")
            if not isinstance(member, str) or not isinstance(e.get("sha256"), str):
                self._fail(f"corrupted manifest (bad array entry for {name!r:.80})")
            if member not in self._info:
                self._fail(f"missing array member {member!r} ({name!r:.80})")
            if member in named:
                self._fail(f"array member {member!r} is named twice")
            named.add(member)
            if dt not in _DTYPES:
                self._fail(f"array {name!r:.80} has unsupported dtype {dt!r:.40}")
            if (not isinstance(shape, list) or len(shape) > 32
                    or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40
                               for d in shape)):
                self._fail(f"array {name!r:.80} has a bad shape {shape!r:.80}")
            n = 1
            for d in shape:
                n *= d
            nbytes = n * _DTYPES[dt].itemsize
            size = self._info[member].file_size
            if nbytes > size:
                self._fail(f"array {name!r:.80} of shape {tuple(shape)} needs {nbytes} bytes; its "
                           f"member holds {size}")
            total += nbytes
            if i < n_weights:
                self.weight_elements += n
        if total > self.size:
            self._fail(f"the arrays' declared sizes ({total} bytes) exceed the file ({self.size} bytes)")
        unknown = sorted(set(self._info) - named)
        if unknown:
            self._fail(f"unknown member(s) {', '.join(repr(u) for u in unknown[:5])}"
                       f"{' ...' if len(unknown) > 5 else ''}; a fastgrad file holds only its "
                       "manifest and the arrays it names")

    def array(self, entry):
        name = entry.get("name")
        member, dt = entry["member"], entry["dtype"]
        shape = tuple(entry["shape"])
        dtype = _DTYPES[dt]
        data = self._read(member)
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ModelFileError(f"{self.what}: {self.path!r} is corrupted: SHA-256 mismatch in "
                                 f"array {name!r}")
        n = 1
        for d in shape:
            n *= d
        if member.endswith(".npy"):
            buf = io.BytesIO(data)
            try:
                major, minor = np.lib.format.read_magic(buf)
                if (major, minor) not in ((1, 0), (2, 0)):
                    raise ValueError(f"npy version {(major, minor)}")
                hdr = (np.lib.format.read_array_header_1_0 if major == 1
                       else np.lib.format.read_array_header_2_0)(buf, max_header_size=4096)
            except (ValueError, SyntaxError, TypeError) as exc:
                self._fail(f"array {name!r}: bad .npy header ({exc})")
            h_shape, fortran, h_dtype = hdr
            if tuple(h_shape) != shape or fortran or h_dtype != dtype:
                self._fail(f"array {name!r}: its .npy header says shape {h_shape}, dtype {h_dtype}"
                           f", fortran_order={fortran}; the manifest says {shape}, {dtype}")
            data = data[buf.tell():]
        if len(data) != n * dtype.itemsize:
            self._fail(f"array {name!r} holds {len(data)} bytes, expected {n * dtype.itemsize} "
                       f"for shape {shape}")
        return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))

    def weights(self):
        return [(e.get("name"), self.array(e)) for e in self.manifest["weights"]]


def _assign_weights(model, named, what, path):
    """Check count and every shape against the model, then set them all."""
    current = model.get_weights()
    names = _weight_names(model)
    if len(named) != len(current):
        raise ModelFileError(f"{what}: {path!r} holds {len(named)} weight arrays "
                         f"({', '.join(str(n) for n, _ in named)}) but the model has {len(current)} "
                         f"({', '.join(names)})")
    for (saved_name, a), c, name in zip(named, current, names):
        if a.shape != c.shape or a.dtype != c.dtype:
            raise ModelFileError(f"{what}: shape mismatch for {name}: the model has {c.shape}, "
                             f"{path!r} has {a.shape} (saved as {saved_name}, {a.dtype})")
    model.set_weights([a for _, a in named])


def _set_layer_rng(model, states, what, path):
    if not isinstance(states, dict):
        return
    for layer in model.layers:
        st = states.get(layer.name)
        if st is not None and hasattr(layer, "set_rng_state"):
            try:
                layer.set_rng_state(st)
            except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as exc:
                raise ModelFileError(f"{what}: {path!r}: bad random-stream state for layer {layer.name!r} "
                                 f"({exc})") from None


def _restore_library_rng(st, what, path):
    from . import _config
    if not isinstance(st, dict):
        return
    seed = st.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)
                             or not 0 <= seed < 2**64):
        raise ModelFileError(f"{what}: {path!r}: bad library seed {seed!r:.40} (expected an integer "
                             "in [0, 2**64) or null)")
    _config.set_seed(seed)
    bg = _config.rng().bit_generator
    if st.get("bit_generator") != type(bg).__name__:
        raise ModelFileError(f"{what}: {path!r} stores a {st.get('bit_generator')!r:.40} generator state; this "
                         f"NumPy uses {type(bg).__name__} (pass restore_rng=False to skip it)")
    try:
        bg.state = st["state"]
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ModelFileError(f"{what}: {path!r} has a corrupted generator state ({exc})") from None


def _build_model(man, custom_objects, what, path):
    from . import layers as _layers
    from .layers.base import Layer
    from .engine import params as _params
    spec = man.get("model")
    if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict):
        raise ModelFileError(f"{what}: {path!r} has a corrupted manifest (no model architecture)")
    kind = spec.get("class_name")
    if kind == "QuantizedModel" or "FakeQuantDense" in json.dumps(spec):
        from . import quantization  # noqa: F401  (registers QuantizedModel / FakeQuantDense)
    if kind not in MODEL_CLASSES:
        raise ModelFileError(f"{what}: {path!r} holds a model of unknown kind {kind!r}; this fastgrad loads "
                         f"{', '.join(sorted(MODEL_CLASSES))} models")
    cfg = spec["config"]
    _layers._load_all()
    custom = dict(custom_objects or {})
    if kind != "Sequential":
        # graph models: rebuilt through the layer registry by replaying the saved calls
        try:
            return MODEL_CLASSES[kind].from_config(cfg, custom)
        except _params.AllocationRefused:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise ModelFileError(f"{what}: {path!r}: the saved graph does not build: {exc}") from None
    model = MODEL_CLASSES["Sequential"](name=cfg.get("name"))
    shape = cfg.get("input_shape")
    layer_specs = cfg.get("layers")
    if not isinstance(layer_specs, list) or not layer_specs:
        raise ModelFileError(f"{what}: {path!r} has a corrupted manifest (no layers)")
    built_layers = []
    for i, d in enumerate(layer_specs):
        if not isinstance(d, dict) or "class_name" not in d:
            raise ModelFileError(f"{what}: {path!r} has a corrupted manifest (layer #{i}: {d!r})")
        cname = d["class_name"]
        cls = custom.get(cname) or Layer.registry.get(cname)
        if cls is None:
            raise ModelFileError(f"{what}: {path!r}: unknown layer kind {cname!r} (layer #{i}); it was saved "
                             "by a newer fastgrad or is a custom layer — pass custom_objects="
                             f"{{'{cname}': YourLayerClass}}")
        try:
            built_layers.append(cls.from_config(dict(d.get("config") or {})))
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"{what}: {path!r}: cannot re-create layer #{i} ({cname}): {exc}") from None
    try:
        if shape is not None:
            model._input_shape = tuple(int(s) for s in shape)
        for layer in built_layers:
            model.add(layer)
        if not model.built:
            model.build(model._input_shape)
    except _params.AllocationRefused:
        raise
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{what}: {path!r}: the saved architecture does not build: {exc}") from None
    return model


#: what building a model from a file's configuration may raise when the
#: configuration is damaged or crafted (all become ModelFileError)
_CONFIG_ERRORS = (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError,
                  RecursionError, LookupError, ZeroDivisionError)


def _build_within(f, custom_objects, what):
    """Build the saved architecture, refusing before allocation a model whose
    parameters and states would exceed the arrays the file holds."""
    from .engine import params as _params
    try:
        with _params.allocation_limit(f.weight_elements):
            return _build_model(f.manifest, custom_objects, what, f.path)
    except _params.AllocationRefused as exc:
        raise ModelFileError(f"{what}: {f.path!r}: the saved configuration asks for {exc.elements} "
                             f"weight values but the file holds {f.weight_elements}; the "
                             "configuration and the weights do not belong together") from None
    except ModelFileError:
        raise
    except _CONFIG_ERRORS as exc:
        raise ModelFileError(f"{what}: {f.path!r}: the saved architecture does not build "
                             f"({type(exc).__name__}: {exc})") from None


def load_model(filepath: str | os.PathLike, custom_objects: dict | None = None, compile: bool = True,
               restore_rng: bool = True) -> Any:
    """Re-create a model saved with ``model.save(filepath)``.

    Architecture, weights, compile configuration and optimizer state, and
    the library's random generator state, so that training continues exactly
    as if never interrupted. A Keras 3 ".keras" file is imported with
    :func:`fastgrad.keras_file.load_keras`.

    Parameters
    ----------
    filepath : str or path-like
        The file.
    custom_objects : dict or None, default None
        Names of user classes and functions (layers, losses, metrics) in the file.
    compile : bool, default True
        Compile the model as it was saved (False: an uncompiled model).
    restore_rng : bool, default True
        Restore fastgrad's random generator state.

    Returns
    -------
    Model
        The model.

    Raises
    ------
    ModelFileError
        If the file is damaged, crafted or not a model file.
    """
    what = "load_model"
    if (isinstance(filepath, (str, os.PathLike)) and os.path.isfile(filepath)
            and not _is_fastgrad_zip(filepath)):
        from . import keras_file
        if _keras_kind(filepath) == "keras" or keras_file.is_keras_archive(filepath):
            return keras_file.load_keras(filepath, custom_objects=custom_objects, compile=compile)
    f = _File(filepath, what, (MODEL_FORMAT,))
    man, path = f.manifest, f.path
    named = f.weights()                                   # every checksum verified before building
    opt_state = man.get("optimizer_state")
    slots = None
    if compile and isinstance(opt_state, dict):
        it = opt_state.get("iterations", 0)
        if not isinstance(it, int) or isinstance(it, bool) or not 0 <= it < 2**62:
            raise ModelFileError(f"{what}: {path!r}: bad optimizer iteration count {it!r:.40}")
        slots = {e.get("name"): f.array(e) for e in opt_state.get("slots") or []}
    model = _build_within(f, custom_objects, what)
    _assign_weights(model, named, what, path)
    cc = man.get("compile_config")
    if compile and cc is not None:
        if not isinstance(cc, dict):
            raise ModelFileError(f"{what}: {path!r}: corrupted compile configuration")
        try:
            model.compile_from_config(cc)
        except _CONFIG_ERRORS as exc:
            raise ModelFileError(f"{what}: {path!r}: cannot restore the compile configuration "
                                 f"({type(exc).__name__}: {exc}); load with compile=False and "
                                 "compile it yourself") from None
        if slots is not None:
            opt = model.optimizer
            store = getattr(model, "_store", None)
            if store is not None and hasattr(opt, "build"):
                opt.build(store.size)
            state = dict(slots)
            state["iterations"] = int(opt_state.get("iterations", 0))
            try:
                opt.set_state(state)
            except _CONFIG_ERRORS as exc:
                raise ModelFileError(f"{what}: {path!r}: optimizer state does not fit the model "
                                     f"({exc})") from None
    _set_layer_rng(model, man.get("layer_rng"), what, path)
    if restore_rng:
        _restore_library_rng(man.get("rng"), what, path)
    return model


def load_weights(model: Any, filepath: str | os.PathLike) -> None:
    """Load weights saved by :func:`save_weights` (or a full model file) into a model.

    Every shape is checked before anything is written. A Keras ".weights.h5"
    file is read with :func:`fastgrad.keras_file.load_keras_weights`.

    Parameters
    ----------
    model : Model
        A built model with the same layers.
    filepath : str or path-like
        The file.

    Raises
    ------
    ModelFileError
        If the file is damaged or not a weights file.
    ValueError
        If the weights do not fit the model.
    """
    what = "load_weights"
    if _keras_kind(filepath) in ("weights.h5", "h5") and os.path.isfile(filepath):
        from . import keras_file
        keras_file.load_keras_weights(model, filepath)
        return
    f = _File(filepath, what, (WEIGHTS_FORMAT, MODEL_FORMAT))
    named = f.weights()
    _require_built(model, what)
    _assign_weights(model, named, what, f.path)
    _set_layer_rng(model, f.manifest.get("layer_rng"), what, f.path)
