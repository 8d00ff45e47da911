"""model.save / load_model: bitwise round trips, exact resume of training,
atomic writes, and clear errors for truncated, corrupted or incompatible files."""
import json
import os
import zipfile

import numpy as np
import pytest

import fastgrad as fg
import fastgrad._config as cfg
from fastgrad import saving
from fastgrad.optimizers import schedules

from conftest import backends


def data(n=96, d=10, classes=3, seed=0):
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, d)).astype(np.float32)
    y = (np.abs(x[:, 0]) * 2 + x[:, 1]).astype(np.int64) % classes
    return x, y


def make_model(optimizer="adam", dropout=0.25, compile=True, d=10):
    m = fg.Sequential([
        fg.layers.Dense(16, activation="relu", input_shape=(d,), kernel_regularizer="l2"),
        fg.layers.Dropout(dropout),
        fg.layers.BatchNormalization(momentum=0.9),
        fg.layers.Dense(12, activation="tanh"),
        fg.layers.LayerNormalization(),
        fg.layers.Dense(3, activation="softmax"),
    ])
    if compile:
        m.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


@pytest.fixture(params=backends())
def backend(request):
    with cfg.use_backend(request.param):
        yield request.param


def same_weights(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(wa, wb))


# ====================================================================== round trips
def test_save_load_keeps_weighted_metrics(tmp_path):
    fg.set_seed(1)
    x, y = data()
    m = make_model(compile=False)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
              weighted_metrics=["accuracy", "sparse_top_k_categorical_accuracy"])
    sw = np.linspace(0.1, 2.0, x.shape[0])
    m.fit(x, y, epochs=1, batch_size=16, verbose=0, sample_weight=sw)
    m.save(tmp_path / "w.fgm")
    m2 = fg.models.load_model(tmp_path / "w.fgm")
    assert m2.get_compile_config() == m.get_compile_config()
    assert m2.get_compile_config()["weighted_metrics"] == ["accuracy", "sparse_top_k_categorical_accuracy"]
    a = m.evaluate(x, y, sample_weight=sw, verbose=0, return_dict=True)
    b = m2.evaluate(x, y, sample_weight=sw, verbose=0, return_dict=True)
    assert list(b) == ["loss", "accuracy", "weighted_accuracy",
                       "sparse_top_k_categorical_accuracy"] and a == b


def test_save_load_predict_bitwise(tmp_path, backend):
    fg.set_seed(1)
    x, y = data()
    m = make_model()
    m.fit(x, y, epochs=2, batch_size=16, verbose=0)
    path = tmp_path / "m.fgm"
    m.save(path)
    m2 = fg.models.load_model(path)
    assert same_weights(m, m2)
    assert np.array_equal(m.predict(x), m2.predict(x))
    assert np.array_equal(m.predict_on_batch(x[:5]), m2.predict_on_batch(x[:5]))
    assert [type(l).__name__ for l in m2.layers] == [type(l).__name__ for l in m.layers]
    assert [l.name for l in m2.layers] == [l.name for l in m.layers]
    assert m2.get_config() == m.get_config()
    assert m2.get_compile_config() == m.get_compile_config()
    assert m2.evaluate(x, y, verbose=0) == m.evaluate(x, y, verbose=0)
    st1, st2 = m.optimizer.get_state(), m2.optimizer.get_state()
    assert st1.keys() == st2.keys() and st1["iterations"] == st2["iterations"] == 12
    assert all(np.array_equal(st1[k], st2[k]) for k in st1 if k != "iterations")
    assert m2.layers[1].get_rng_state() == m.layers[1].get_rng_state()
    assert fg.load_model is not None and np.array_equal(fg.load_model(path).predict(x), m.predict(x))


@pytest.mark.parametrize("opt", ["sgd", "rmsprop", "adagrad",
                                 lambda: fg.optimizers.SGD(momentum=0.9, nesterov=True),
                                 lambda: fg.optimizers.Adam(learning_rate=schedules.CosineDecay(0.01, 40,
                                                                                                alpha=0.1)),
                                 lambda: fg.optimizers.RMSprop(centered=True, momentum=0.5)])
def test_resume_training_is_bitwise_identical(tmp_path, opt, backend):
    """seed; fit; save; fit  ==  seed; fit; save; load; fit  (shuffling, dropout, optimizer state)."""
    x, y = data(seed=3)
    make_opt = opt if callable(opt) else (lambda: opt)
    fg.set_seed(7)
    a = make_model(optimizer=make_opt())
    a.fit(x, y, epochs=2, batch_size=10, verbose=0, validation_split=0.2)
    path = tmp_path / "ckpt.fgm"
    a.save(path)
    a.fit(x, y, epochs=2, batch_size=10, verbose=0, validation_split=0.2)   # uninterrupted run
    cfg.set_seed(12345)                     # whatever happens in between ...
    cfg.rng().normal(size=17)
    b = fg.models.load_model(path)          # ... is undone by the saved generator state
    b.fit(x, y, epochs=2, batch_size=10, verbose=0, validation_split=0.2)
    assert same_weights(a, b)
    assert b.optimizer.iterations == a.optimizer.iterations
    assert np.array_equal(a.predict(x), b.predict(x))


def test_resume_after_learning_rate_change(tmp_path):
    x, y = data()
    fg.set_seed(2)
    a = make_model(optimizer=fg.optimizers.SGD(0.1))
    a.fit(x, y, epochs=1, batch_size=8, verbose=0)
    a.optimizer.learning_rate = 0.0125          # e.g. set by ReduceLROnPlateau
    a.save(tmp_path / "m.fgm")
    a.fit(x, y, epochs=1, batch_size=8, verbose=0)
    b = fg.models.load_model(tmp_path / "m.fgm")     # restores the generator: same shuffles as a's
    assert b.optimizer.learning_rate == 0.0125
    b.fit(x, y, epochs=1, batch_size=8, verbose=0)
    assert same_weights(a, b)


def test_uncompiled_and_compile_false(tmp_path):
    fg.set_seed(0)
    x, _ = data()
    m = make_model(compile=False)
    m.save(tmp_path / "u.fgm")
    u = fg.models.load_model(tmp_path / "u.fgm")
    assert not u.compiled and np.array_equal(u.predict(x), m.predict(x))
    m = make_model()
    m.save(tmp_path / "c.fgm")
    c = fg.models.load_model(tmp_path / "c.fgm", compile=False)
    assert not c.compiled and same_weights(m, c)


def test_restore_rng_false_leaves_the_library_generator_alone(tmp_path):
    fg.set_seed(0)
    m = make_model()
    m.save(tmp_path / "m.fgm")
    cfg.set_seed(99)
    fg.models.load_model(tmp_path / "m.fgm", restore_rng=False)
    # loading builds layers (their initialisers draw), but no saved state is forced on the generator
    assert cfg.get_seed() == 99
    fg.models.load_model(tmp_path / "m.fgm")
    assert cfg.get_seed() == 0


def test_save_load_weights(tmp_path):
    fg.set_seed(0)
    x, y = data()
    m = make_model()
    m.fit(x, y, epochs=1, batch_size=32, verbose=0)
    m.save_weights(tmp_path / "w.fgw")
    fg.set_seed(5)
    other = make_model()
    assert not same_weights(m, other)
    other.load_weights(tmp_path / "w.fgw")
    assert same_weights(m, other)
    assert np.array_equal(other.predict(x), m.predict(x))
    # a full model file also provides weights
    third = make_model()
    m.save(tmp_path / "m.fgm")
    saving.load_weights(third, tmp_path / "m.fgm")
    assert same_weights(m, third)
    with pytest.raises(ValueError, match="holds format 'fastgrad-weights'"):
        fg.models.load_model(tmp_path / "w.fgw")


def test_overwrite_and_bad_targets(tmp_path):
    m = make_model()
    p = tmp_path / "m.fgm"
    m.save(p)
    with pytest.raises(FileExistsError, match="overwrite=False"):
        saving.save_model(m, p, overwrite=False)
    with pytest.raises(ValueError, match="is a directory"):
        m.save(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        fg.models.load_model(tmp_path / "missing.fgm")
    unbuilt = fg.Sequential([fg.layers.Dense(2)])
    with pytest.raises(ValueError, match="not built"):
        unbuilt.save(tmp_path / "x.fgm")


def test_write_is_atomic(tmp_path, monkeypatch):
    fg.set_seed(0)
    m = make_model()
    p = tmp_path / "m.fgm"
    m.save(p)
    before = p.read_bytes()
    m2 = make_model()

    real = zipfile.ZipFile.writestr
    calls = {"n": 0}

    def failing(self, name, data, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(self, name, data, *a, **k)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", failing)
    with pytest.raises(OSError, match="disk full"):
        m2.save(p)
    monkeypatch.undo()
    assert p.read_bytes() == before                       # the old model is intact
    assert os.listdir(tmp_path) == ["m.fgm"]              # no temporary left behind
    assert same_weights(fg.models.load_model(p), m)


# ====================================================================== damaged / incompatible files
@pytest.fixture
def saved(tmp_path):
    fg.set_seed(0)
    m = make_model()
    x, y = data()
    m.fit(x, y, epochs=1, batch_size=32, verbose=0)
    p = tmp_path / "m.fgm"
    m.save(p)
    return p


def rewrite(path, edit_manifest=None, drop=None, replace=None):
    """Re-pack the container with an edited manifest / dropped or replaced members (valid CRCs)."""
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    man = json.loads(members["fastgrad.json"])
    if edit_manifest:
        edit_manifest(man)
    members["fastgrad.json"] = json.dumps(man).encode()
    for n in drop or []:
        members.pop(n)
    for n, d in (replace or {}).items():
        members[n] = d
    with zipfile.ZipFile(path, "w") as z:
        for n, d in members.items():
            z.writestr(n, d)


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_file(saved, keep):
    raw = saved.read_bytes()
    saved.write_bytes(raw[:int(len(raw) * keep)])
    with pytest.raises(ValueError, match="empty|truncated|not a readable|corrupted"):
        fg.models.load_model(saved)


def test_not_a_model_file(tmp_path):
    p = tmp_path / "x.fgm"
    p.write_bytes(b"hello, this is not a zip file" * 10)
    with pytest.raises(ValueError, match="not a fastgrad model file"):
        fg.models.load_model(p)
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("something.txt", "hi")
    with pytest.raises(ValueError, match="no fastgrad.json manifest"):
        fg.models.load_model(p)


def test_corrupted_member_bytes(saved):
    with zipfile.ZipFile(saved) as z:
        infos = z.infolist()
    raw = bytearray(saved.read_bytes())
    for info in infos:
        # data starts after the 30-byte local header, the name and the extra field
        name_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little")
        extra_len = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
        start = info.header_offset + 30 + name_len + extra_len
        for pos in (start, start + info.compress_size // 2, start + info.compress_size - 1):
            bad = bytearray(raw)
            bad[pos] ^= 0x10
            saved.write_bytes(bytes(bad))
            with pytest.raises(ValueError, match="corrupted"):
                fg.models.load_model(saved)


def test_sha256_mismatch_with_valid_crc(saved):
    with zipfile.ZipFile(saved) as z:
        man = json.loads(z.read("fastgrad.json"))
        member = man["weights"][0]["member"]
        data_ = bytearray(z.read(member))
    data_[0] ^= 1
    rewrite(saved, replace={member: bytes(data_)})
    with pytest.raises(ValueError, match="SHA-256 mismatch in array 'dense.*kernel'"):
        fg.models.load_model(saved)


def test_newer_or_bad_version(saved):
    rewrite(saved, lambda m: m.update(format_version=99))
    with pytest.raises(ValueError, match="format version 99, written by a newer fastgrad"):
        fg.models.load_model(saved)
    rewrite(saved, lambda m: m.update(format_version="1"))
    with pytest.raises(ValueError, match="no valid format_version"):
        fg.models.load_model(saved)
    rewrite(saved, lambda m: m.update(format="keras"))
    with pytest.raises(ValueError, match="holds format 'keras'"):
        fg.models.load_model(saved)


def test_unknown_layer_kind(saved):
    def edit(m):
        m["model"]["config"]["layers"][1]["class_name"] = "FancyAttention"
    rewrite(saved, edit)
    with pytest.raises(ValueError, match="unknown layer kind 'FancyAttention' \\(layer #1\\).*custom_objects"):
        fg.models.load_model(saved)
    # custom_objects resolves it
    out = fg.models.load_model(saved, custom_objects={"FancyAttention": fg.layers.Dropout})
    assert isinstance(out.layers[1], fg.layers.Dropout)


def test_shape_mismatch(saved):
    def edit(m):
        m["model"]["config"]["layers"][0]["config"]["units"] = 5
    rewrite(saved, edit)
    with pytest.raises(ValueError, match="shape mismatch for dense.*kernel: the model has \\(10, 5\\)"):
        fg.models.load_model(saved)
    # a configuration asking for more values than the file holds is refused before building
    def grow(m):
        m["model"]["config"]["layers"][0]["config"]["units"] = 17
    rewrite(saved, grow)
    with pytest.raises(fg.saving.ModelFileError, match="asks for .* weight values but the file holds"):
        fg.models.load_model(saved)
    other = fg.Sequential([fg.layers.Dense(4, input_shape=(10,))])
    with pytest.raises(ValueError, match="holds 12 weight arrays.*but the model has 2"):
        other.load_weights(saved)


def test_missing_member_and_broken_manifest(saved):
    with zipfile.ZipFile(saved) as z:
        man = json.loads(z.read("fastgrad.json"))
    rewrite(saved, drop=[man["weights"][2]["member"]])
    with pytest.raises(ValueError, match="missing array member"):
        fg.models.load_model(saved)
    with zipfile.ZipFile(saved, "w") as z:
        z.writestr("fastgrad.json", "{not json")
    with pytest.raises(ValueError, match="corrupted manifest"):
        fg.models.load_model(saved)


def test_optimizer_state_mismatch(saved):
    def edit(m):
        m["compile_config"]["optimizer"] = {"class_name": "SGD", "config": {"learning_rate": 0.1}}
    rewrite(saved, edit)
    with pytest.raises(ValueError, match="optimizer state does not fit"):
        fg.models.load_model(saved)
    assert not fg.models.load_model(saved, compile=False).compiled


def test_file_is_a_plain_zip_with_json_manifest(saved):
    with zipfile.ZipFile(saved) as z:
        man = json.loads(z.read("fastgrad.json"))
        assert z.testzip() is None
    assert man["format"] == "fastgrad-model" and man["format_version"] == saving.FORMAT_VERSION
    names = [w["name"].split("/")[1] for w in man["weights"]]
    assert names == ["kernel", "bias", "gamma", "beta", "moving_mean", "moving_variance", "kernel", "bias",
                     "gamma", "beta", "kernel", "bias"]
    assert man["compile_config"]["loss"] and man["optimizer_state"]["iterations"] == 3
    assert set(man["layer_rng"]) == {man["model"]["config"]["layers"][1]["config"]["name"]}
