"""Files made to hurt: the loader refuses crafted and damaged files with a
ModelFileError (a ValueError) naming the file and the problem, before it
allocates anything a file did not pay for; stale temporaries of killed saves
are cleaned; a fuzz pass over mutated files finds only clean refusals."""
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import saving
from fastgrad.saving import ModelFileError


def _model(units=8):
    m = fg.Sequential([fg.layers.Dense(units, activation="relu", input_shape=(6,)),
                       fg.layers.BatchNormalization(),
                       fg.layers.Dense(3, activation="softmax")])
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32)
    m.fit(x, np.arange(32) % 3, epochs=1, batch_size=16, verbose=0)
    return m


@pytest.fixture
def saved(tmp_path):
    p = tmp_path / "m.fgm"
    _model().save(p)
    return p


def _members(path):
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def _repack(path, members, compress=None):
    with zipfile.ZipFile(path, "w") as z:
        for n, d in members.items():
            z.writestr(n, d, compress_type=(compress or {}).get(n, zipfile.ZIP_STORED))


def _edit(path, fn):
    mem = _members(path)
    man = json.loads(mem["fastgrad.json"])
    fn(man)
    mem["fastgrad.json"] = json.dumps(man).encode()
    _repack(path, mem)


def test_members_are_npy_files_other_tools_read(saved):
    m = fg.models.load_model(saved)
    with zipfile.ZipFile(saved) as z:
        man = json.loads(z.read("fastgrad.json"))
        arrays = [np.load(io.BytesIO(z.read(e["member"])), allow_pickle=False) for e in man["weights"]]
        assert all(info.compress_type == zipfile.ZIP_STORED for info in z.infolist())
    assert all(e["member"].endswith(".npy") for e in man["weights"])
    for a, w in zip(arrays, m.get_weights()):
        assert np.array_equal(a, w)


def test_format_1_files_still_load(saved, tmp_path):
    """Version 1 stored raw little-endian bytes as arrays/NNNN.bin."""
    ref = fg.models.load_model(saved)
    mem = _members(saved)
    man = json.loads(mem["fastgrad.json"])
    man["format_version"] = 1
    out = {}
    import hashlib
    entries = man["weights"] + (man["optimizer_state"] or {}).get("slots", [])
    for e in entries:
        a = np.load(io.BytesIO(mem[e["member"]]))
        raw = a.astype(np.dtype(e["dtype"])).tobytes()
        e["member"] = e["member"].replace(".npy", ".bin")
        e["sha256"] = hashlib.sha256(raw).hexdigest()
        out[e["member"]] = raw
    out["fastgrad.json"] = json.dumps(man).encode()
    p = tmp_path / "v1.fgm"
    _repack(p, out)
    m = fg.models.load_model(p)
    for a, b in zip(m.get_weights(), ref.get_weights()):
        assert np.array_equal(a, b)


def test_huge_units_refused_before_allocating(saved):
    def edit(man):
        man["model"]["config"]["layers"][0]["config"]["units"] = 2**27
    _edit(saved, edit)
    t = time.perf_counter()
    with pytest.raises(ModelFileError, match=r"asks for \d+ weight values but the file holds"):
        fg.models.load_model(saved)
    assert time.perf_counter() - t < 5.0       # 8 GB of initialisation would take half a minute


def test_graph_model_huge_units_refused(tmp_path):
    inp = fg.Input((5,))
    out = fg.layers.Dense(2)(fg.layers.Dense(4, activation="relu")(inp))
    m = fg.Model(inp, out)
    m.compile("sgd", "mse")
    p = tmp_path / "g.fgm"
    m.save(p)
    def edit(man):
        for layer in man["model"]["config"]["layers"]:
            if layer["class_name"] == "Dense":
                layer["config"]["units"] = 2**26
                break
    _edit(p, edit)
    with pytest.raises(ModelFileError, match="weight values but the file holds"):
        fg.models.load_model(p)


def test_compressed_member_refused(saved):
    mem = _members(saved)
    junk = {n: zipfile.ZIP_DEFLATED for n in mem if n != "fastgrad.json"}
    _repack(saved, mem, junk)
    with pytest.raises(ModelFileError, match="is compressed"):
        fg.models.load_model(saved)


def test_compressed_manifest_bomb_refused_fast(saved):
    mem = _members(saved)
    man = json.loads(mem["fastgrad.json"])
    man["padding"] = " " * (64 << 20)                  # inflates to 64 MB from ~64 KB
    mem["fastgrad.json"] = json.dumps(man).encode()
    _repack(saved, mem, {"fastgrad.json": zipfile.ZIP_DEFLATED})
    assert saved.stat().st_size < 1 << 20
    t = time.perf_counter()
    with pytest.raises(ModelFileError, match="compressed"):
        fg.models.load_model(saved)
    assert time.perf_counter() - t < 2.0


def test_oversized_stored_manifest_refused(saved, monkeypatch):
    monkeypatch.setattr(saving, "_MAX_MANIFEST_BYTES", 1000)
    with pytest.raises(ModelFileError, match="manifest is .* bytes"):
        fg.models.load_model(saved)


def test_unknown_member_refused_and_not_read(saved):
    mem = _members(saved)
    mem["junk.bin"] = b"\0" * 1000
    _repack(saved, mem)
    with pytest.raises(ModelFileError, match="unknown member.*junk.bin"):
        fg.models.load_model(saved)


def test_flipped_compression_field(saved):
    raw = bytearray(saved.read_bytes())
    # central-directory entry of the first array member: compression method at offset 10
    cd = raw.find(b"PK\x01\x02", raw.find(b"arrays/") - 200 if False else 0)
    while cd >= 0:
        name_len = int.from_bytes(raw[cd + 28:cd + 30], "little")
        name = bytes(raw[cd + 46:cd + 46 + name_len])
        if name.startswith(b"arrays/"):
            raw[cd + 10:cd + 12] = (99).to_bytes(2, "little")
            break
        cd = raw.find(b"PK\x01\x02", cd + 4)
    saved.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="compressed|corrupted"):
        fg.models.load_model(saved)


def test_deeply_nested_manifest(saved):
    mem = _members(saved)
    mem["fastgrad.json"] = b"[" * 100000 + b"]" * 100000
    _repack(saved, mem)
    with pytest.raises(ModelFileError, match="nested too deeply|nests deeper"):
        fg.models.load_model(saved)
    man = {"format": "fastgrad-model", "format_version": 2, "x": 0}
    node = man
    for _ in range(300):
        node["x"] = {}
        node = node["x"]
    mem["fastgrad.json"] = json.dumps(man).encode()
    _repack(saved, mem)
    with pytest.raises(ModelFileError, match="nests deeper than 200"):
        fg.models.load_model(saved)


@pytest.mark.parametrize("loss", ["os.system", "builtins.eval", {"class_name": "os.system"}, 7])
def test_compile_config_names_are_not_code(saved, loss):
    def edit(man):
        man["compile_config"]["loss"] = loss
    _edit(saved, edit)
    with pytest.raises(ModelFileError, match="compile configuration"):
        fg.models.load_model(saved)


@pytest.mark.parametrize("seed", [2**80, -1, 1.5, "1"])
def test_bad_library_seed_refused(saved, seed):
    def edit(man):
        man["rng"]["seed"] = seed
    _edit(saved, edit)
    with pytest.raises(ModelFileError, match="bad library seed"):
        fg.models.load_model(saved)


@pytest.mark.parametrize("it", [-1, 1.5, "3", 2**70])
def test_bad_iteration_count(saved, it):
    def edit(man):
        man["optimizer_state"]["iterations"] = it
    _edit(saved, edit)
    with pytest.raises(ModelFileError, match="iteration count"):
        fg.models.load_model(saved)


@pytest.mark.parametrize("shape", [[2**50], [-1, 3], "8", [1.5], [True]])
def test_bad_array_shapes(saved, shape):
    def edit(man):
        man["weights"][0]["shape"] = shape
    _edit(saved, edit)
    with pytest.raises(ModelFileError, match="bad shape|needs .* bytes|exceed"):
        fg.models.load_model(saved)


def test_npy_header_must_match_manifest(saved):
    import hashlib
    mem = _members(saved)
    man = json.loads(mem["fastgrad.json"])
    e = man["weights"][0]
    a = np.load(io.BytesIO(mem[e["member"]]))
    buf = io.BytesIO()
    np.save(buf, a.reshape(-1).astype(np.float32))       # same bytes, other shape in the header
    mem[e["member"]] = buf.getvalue()
    e["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    mem["fastgrad.json"] = json.dumps(man).encode()
    _repack(saved, mem)
    with pytest.raises(ModelFileError, match=".npy header says"):
        fg.models.load_model(saved)


# .keras / .h5 names: tests/test_keras_interop.py (real Keras files or a ValueError)


def test_stale_temporaries_of_dead_writers_removed(tmp_path):
    m = _model()
    target = tmp_path / "m.fgm"
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    dead = tmp_path / f".m.fgm.{p.pid}.abc123.tmp"
    dead.write_bytes(b"x" * 100)
    alive = tmp_path / f".m.fgm.{os.getpid()}.zzz.tmp"
    alive.write_bytes(b"y")
    other = tmp_path / f".other.fgm.{p.pid}.abc.tmp"
    other.write_bytes(b"z")
    m.save(target)
    assert not dead.exists()
    assert alive.exists() and other.exists()       # a live writer's and another target's stay
    fg.models.load_model(target)


def test_sigkill_during_save_leaves_nothing_after_the_next_save(tmp_path):
    """A child saving a large model in a loop is killed; the temporaries it left
    are removed by the next save of the same target."""
    target = tmp_path / "big.fgm"
    code = textwrap.dedent(f"""
        import fastgrad as fg, sys
        m = fg.Sequential([fg.layers.Dense(2048, input_shape=(2048,)), fg.layers.Dense(2048)])
        print("ready", flush=True)
        while True:
            m.save({str(target)!r})
    """)
    left = 0
    for _ in range(4):
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.15)
        child.send_signal(signal.SIGKILL)
        child.wait()
        left += len(list(tmp_path.glob(".big.fgm.*.tmp")))
    m = fg.Sequential([fg.layers.Dense(4, input_shape=(3,))])
    m.save(target)
    assert list(tmp_path.glob(".big.fgm.*.tmp")) == []
    assert fg.models.load_model(target).get_weights()[0].shape == (3, 4)


def test_fuzz_mutated_files_give_clean_errors(saved):
    """Random byte flips, insertions and truncations of a valid file: every load
    either succeeds or raises ModelFileError (never another exception type).
    FASTGRAD_FUZZ_FILES sets the number of files (CI's sanitizer job runs more)."""
    raw = saved.read_bytes()
    rng = np.random.default_rng(1234)
    outcomes = {"ok": 0, "refused": 0}
    n_files = int(os.environ.get("FASTGRAD_FUZZ_FILES", 250))
    for i in range(n_files):
        b = bytearray(raw)
        kind = i % 4
        if kind == 0:
            for _ in range(int(rng.integers(1, 8))):
                b[int(rng.integers(len(b)))] = int(rng.integers(256))
        elif kind == 1:
            pos = int(rng.integers(len(b)))
            b[pos:pos] = bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
        elif kind == 2:
            del b[int(rng.integers(1, len(b))):]
        else:    # flip within the manifest text, where the structure is
            start = raw.find(b'{"format"')
            pos = start + int(rng.integers(0, 2000))
            b[pos] = int(rng.integers(32, 127))
        saved.write_bytes(bytes(b))
        try:
            fg.models.load_model(saved)
            outcomes["ok"] += 1
        except ModelFileError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0.6 * n_files
