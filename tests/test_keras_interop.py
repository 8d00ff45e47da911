"""Keras 3 `.keras` interchange (fastgrad.keras_file, docs/keras_interop.md).

Tests that need only h5py write and read Keras-layout files with fastgrad alone; the
tests marked by `_keras()` compare against Keras 3 itself (KERAS_BACKEND=torch) and are
skipped where Keras is not installed."""
import io
import json
import os
import sys
import zipfile

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import layers as L
from fastgrad.saving import ModelFileError

h5py = pytest.importorskip("h5py")


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except Exception as exc:          # not installed, or its backend is missing
        pytest.skip(f"keras not importable ({exc})")
    if int(keras.__version__.split(".")[0]) < 3:
        pytest.skip("needs Keras 3")
    return keras


def _rnd(*shape, seed=0):
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------- fastgrad models
def fg_mlp():
    m = fg.Sequential([L.Dense(8, activation="relu", input_shape=(4,)), L.BatchNormalization(),
                       L.Dropout(0.2), L.Dense(6, activation="tanh"), L.LayerNormalization(),
                       L.Dense(3, activation="softmax")])
    m.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    m.fit(_rnd(32, 4), np.eye(3, dtype=np.float32)[np.arange(32) % 3], epochs=2, verbose=0)
    return m, _rnd(5, 4)


def fg_cnn():
    m = fg.Sequential([L.Conv2D(4, 3, padding="same", activation="relu", input_shape=(8, 8, 3)),
                       L.MaxPooling2D(), L.SeparableConv2D(5, 3), L.DepthwiseConv2D(2),
                       L.Conv2DTranspose(3, 3, strides=2), L.AveragePooling2D(2),
                       L.ZeroPadding2D(1), L.UpSampling2D(), L.Cropping2D(1),
                       L.GlobalMaxPooling2D(), L.Dense(2)])
    return m, _rnd(2, 8, 8, 3)


def fg_conv1d():
    m = fg.Sequential([L.Conv1D(4, 3, activation="relu", input_shape=(10, 3)), L.MaxPooling1D(),
                       L.AveragePooling1D(2, padding="same"), L.Flatten(), L.Dense(2),
                       L.PReLU(), L.LeakyReLU(), L.ELU(), L.ReLU(), L.Softmax()])
    return m, _rnd(3, 10, 3)


def fg_rnn():
    m = fg.Sequential([L.LSTM(4, return_sequences=True, input_shape=(5, 3)),
                       L.Bidirectional(L.GRU(3, return_sequences=True)),
                       L.Bidirectional(L.SimpleRNN(2), merge_mode="sum"),
                       L.RepeatVector(2), L.GRU(3, reset_after=False, return_sequences=True),
                       L.TimeDistributed(L.Dense(2)), L.Flatten(), L.Dense(1)])
    return m, _rnd(2, 5, 3)


def fg_embedding():
    m = fg.Sequential([L.Embedding(20, 4, input_shape=(6,)), L.LSTM(3), L.Dense(2)])
    return m, np.random.default_rng(1).integers(0, 20, (3, 6)).astype(np.int32)


def fg_functional():
    a = fg.Input((5,), name="a")
    b = fg.Input((5,), name="b")
    x = L.Dense(5, name="da")(a)
    s = L.Add()([x, b])
    d = L.Subtract()([s, a])
    m_ = L.Multiply()([d, b])
    mx = L.Maximum()([m_, a])
    av = L.Average()([mx, L.Minimum()([a, b])])
    c = L.Concatenate()([av, a + b])
    dot = L.Dot(axes=1)([x, b])
    o1 = L.Dense(2, activation="sigmoid", name="o1")(c)
    o2 = L.Dense(1, name="o2")(L.Concatenate()([dot, L.Activation("relu")(c)]))
    m = fg.Model([a, b], [o1, o2])
    m.compile("sgd", ["mse", "mae"])
    return m, [_rnd(3, 5), _rnd(3, 5, seed=1)]


def fg_mha():
    q = fg.Input((6, 8), name="q")
    kv = fg.Input((4, 8), name="kv")
    h = L.MultiHeadAttention(2, 4, name="self_attn")(q, q)
    h = L.LayerNormalization()(h + q)
    c = L.MultiHeadAttention(2, 3, value_dim=5, name="cross")(h, kv)
    att = L.Attention()([c, kv, kv])
    add = L.AdditiveAttention()([c, kv])
    o = L.GlobalAveragePooling1D()(L.Concatenate()([att, add]))
    return fg.Model([q, kv], L.Dense(2)(o)), [_rnd(2, 6, 8), _rnd(2, 4, 8, seed=3)]


def fg_reshape():
    m = fg.Sequential([L.Reshape((3, 4), input_shape=(12,)), L.Permute((2, 1)),
                       L.Masking(0.0), L.Identity(), L.Flatten(), L.Dense(2)])
    return m, _rnd(3, 12)


def fg_dict_io():
    x = fg.Input((3,), name="x")
    y = fg.Input((3,), name="y")
    h = L.Dense(4, name="h")(L.Concatenate()([x, y]))
    m = fg.Model({"x": x, "y": y}, {"o": L.Dense(1, name="o")(h), "p": L.Dense(2, name="p")(h)})
    return m, {"x": _rnd(2, 3), "y": _rnd(2, 3, seed=5)}


FG_MODELS = [fg_mlp, fg_cnn, fg_conv1d, fg_rnn, fg_embedding, fg_functional, fg_mha, fg_reshape,
             fg_dict_io]


def _outs(p):
    if isinstance(p, dict):
        return [np.asarray(p[k]) for k in sorted(p)]
    return [np.asarray(x) for x in p] if isinstance(p, (list, tuple)) else [np.asarray(p)]


def _close(a, b, tol=1e-5):
    a, b = _outs(a), _outs(b)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol)


# ---------------------------------------------------------------- h5py only
@pytest.mark.parametrize("make", FG_MODELS, ids=lambda f: f.__name__)
def test_fastgrad_keras_fastgrad_round_trip(tmp_path, make):
    m, x = make()
    p = tmp_path / "m.keras"
    m.save(p)
    with zipfile.ZipFile(p) as z:
        assert sorted(z.namelist()) == ["config.json", "metadata.json", "model.weights.h5"]
        cfg = json.loads(z.read("config.json"))
    assert cfg["class_name"] in ("Sequential", "Functional")
    back = fg.models.load_model(p)
    assert [l.name for l in back.layers] == [l.name for l in m.layers]
    assert [type(l).__name__ for l in back.layers] == [type(l).__name__ for l in m.layers]
    for a, b in zip(back.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(a, b)
    _close(back.predict(x), m.predict(x), 0)
    assert back.compiled == m.compiled


def test_h5_layout_is_keras(tmp_path):
    m, _ = fg_rnn()
    p = tmp_path / "m.keras"
    m.save(p)
    with zipfile.ZipFile(p) as z:
        f = h5py.File(io.BytesIO(z.read("model.weights.h5")), "r")
    w = m.get_weights()
    np.testing.assert_array_equal(f["layers/lstm/cell/vars/0"][()], w[0])     # kernel (3, 16)
    assert f["layers/lstm/cell/vars/1"].shape == (4, 16)
    assert f["layers/bidirectional/forward_layer/cell/vars/0"].shape == (4, 9)
    assert f["layers/bidirectional/backward_layer/cell/vars/2"].shape == (2, 9)
    assert f["layers/bidirectional_1/backward_layer/cell/vars/0"].shape == (6, 2)
    assert f["layers/gru/cell/vars/2"].shape == (9,)                          # reset_after=False
    assert f["layers/time_distributed/layer/vars/0"].shape == (3, 2)
    assert f["layers/dense/vars/1"].shape == (1,)
    assert f["vars"].attrs["name"] == m.name


def test_functional_layout_and_graph(tmp_path):
    m, x = fg_mha()
    p = tmp_path / "m.keras"
    m.save(p)
    with zipfile.ZipFile(p) as z:
        cfg = json.loads(z.read("config.json"))
        f = h5py.File(io.BytesIO(z.read("model.weights.h5")), "r")
    assert f["layers/multi_head_attention/query_dense/vars/0"].shape == (8, 2, 4)
    assert f["layers/multi_head_attention_1/output_dense/vars/0"].shape == (2, 5, 8)
    assert "input_layer" in f["layers"] and "input_layer_1" in f["layers"]
    node = [e for e in cfg["config"]["layers"] if e["name"] == "cross"][0]["inbound_nodes"][0]
    assert node["args"][1]["config"]["keras_history"] == ["kv", 0, 0]
    ops = [e for e in cfg["config"]["layers"] if e["module"] == "keras.src.ops.numpy"]
    assert [e["class_name"] for e in ops] == ["Add"]          # h + q: a Keras operation


def test_compile_config_round_trip(tmp_path):
    m, _ = fg_mlp()
    m.save(tmp_path / "m.keras")
    back = fg.models.load_model(tmp_path / "m.keras")
    assert back.get_compile_config()["optimizer"]["class_name"] == "Adam"
    assert back.get_compile_config()["loss"] == m.get_compile_config()["loss"]
    back2 = fg.models.load_keras(tmp_path / "m.keras", compile=False)
    assert not back2.compiled


def test_keras_weights_file_round_trip(tmp_path):
    m, x = fg_functional()
    p = tmp_path / "w.weights.h5"
    m.save_weights(p)
    with h5py.File(p, "r") as f:
        assert f["layers/dense/vars/0"].shape == (5, 5)        # "da": the first Dense
    other = fg.models.clone_model(m)
    other.load_weights(p)
    _close(other.predict(x), m.predict(x), 0)


def test_old_fastgrad_file_named_keras_still_loads(tmp_path):
    m, x = fg_mlp()
    m.save(tmp_path / "m.fgm")
    os.replace(tmp_path / "m.fgm", tmp_path / "old.keras")
    _close(fg.models.load_model(tmp_path / "old.keras").predict(x), m.predict(x), 0)


# ---------------------------------------------------------------- refusals
def test_layer_without_keras_equivalent_is_refused(tmp_path):
    x = fg.Input((6, 4))
    y = L.PositionEmbedding(6)(x)
    m = fg.Model(x, L.Dense(2)(y))
    p = tmp_path / "m.keras"
    with pytest.raises(ValueError, match=r"PositionEmbedding.*no Keras 3 equivalent.*'\.fgm'"):
        m.save(p)
    assert not p.exists() and not list(tmp_path.iterdir())
    m.save(tmp_path / "m.fgm")                          # fastgrad's format takes it


def test_lambda_is_refused(tmp_path):
    m = fg.Sequential([L.Dense(2, input_shape=(3,)), L.Lambda(lambda t: t * 2)])
    with pytest.raises(ValueError, match="Lambda.*'.fgm'"):
        m.save(tmp_path / "m.keras")


@pytest.mark.parametrize("name", ["m.h5", "m.hdf5", "m.weights.h5"])
def test_legacy_h5_model_save_is_refused(tmp_path, name):
    m, _ = fg_mlp()
    with pytest.raises(ValueError, match="legacy HDF5.*'.keras'.*'.fgm'"):
        m.save(tmp_path / name)
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize("name", ["w.h5", "w.keras", "w.hdf5"])
def test_weights_need_weights_h5_suffix(tmp_path, name):
    m, _ = fg_mlp()
    with pytest.raises(ValueError, match=r"'\.weights\.h5'.*'\.fgw'"):
        m.save_weights(tmp_path / name)


def test_without_h5py(tmp_path, monkeypatch):
    m, _ = fg_mlp()
    m.save(tmp_path / "ok.keras")
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ValueError, match=r"needs h5py.*pip install h5py.*'\.fgm'"):
        m.save(tmp_path / "m.keras")
    assert not (tmp_path / "m.keras").exists()
    with pytest.raises(ImportError, match="pip install h5py"):
        fg.models.load_model(tmp_path / "ok.keras")


# ---------------------------------------------------------------- crafted files
def _archive(tmp_path, edit_config=None, edit_h5=None, name="m.keras"):
    m, _ = fg_mlp()
    p = tmp_path / name
    m.save(p)
    with zipfile.ZipFile(p) as z:
        mem = {n: z.read(n) for n in z.namelist()}
    if edit_config:
        cfg = json.loads(mem["config.json"])
        edit_config(cfg)
        mem["config.json"] = json.dumps(cfg).encode()
    if edit_h5:
        buf = io.BytesIO(mem["model.weights.h5"])
        with h5py.File(buf, "a") as f:
            edit_h5(f, tmp_path)
        mem["model.weights.h5"] = buf.getvalue()
    with zipfile.ZipFile(p, "w") as z:
        for n, d in mem.items():
            z.writestr(n, d)
    return p


def _layers(cfg):
    return cfg["config"]["layers"]


def test_unknown_layer_class_named(tmp_path):
    def edit(cfg):
        _layers(cfg)[1]["class_name"] = "MyCustomLayer"
    with pytest.raises(ModelFileError, match="layer 'dense\\w*' has Keras class 'MyCustomLayer', which fastgrad does not load"):
        fg.models.load_model(_archive(tmp_path, edit))


def test_lambda_in_file_refused(tmp_path):
    def edit(cfg):
        _layers(cfg)[1] = {"module": "keras.layers", "class_name": "Lambda",
                           "config": {"name": "evil", "function": {"class_name": "__lambda__",
                                                                   "config": {"code": "payload"}}}}
    with pytest.raises(ModelFileError, match="'Lambda', which fastgrad does not load"):
        fg.models.load_model(_archive(tmp_path, edit))


def test_unsupported_option_named(tmp_path):
    def edit(cfg):
        _layers(cfg)[1]["config"]["kernel_constraint"] = {"module": "keras.constraints",
                                                          "class_name": "NonNeg", "config": {}}
    with pytest.raises(ModelFileError, match="dense.*kernel_constraint"):
        fg.models.load_model(_archive(tmp_path, edit))


def test_mixed_precision_refused(tmp_path):
    def edit(cfg):
        _layers(cfg)[1]["config"]["dtype"] = {"module": "keras", "class_name": "DTypePolicy",
                                              "config": {"name": "mixed_float16"}}
    with pytest.raises(ModelFileError, match="dtype.*float32"):
        fg.models.load_model(_archive(tmp_path, edit))


def test_huge_config_refused_before_allocation(tmp_path):
    def edit(cfg):
        _layers(cfg)[1]["config"]["units"] = 2 ** 27
    with pytest.raises(ModelFileError, match="asks for .* weight values"):
        fg.models.load_model(_archive(tmp_path, edit))


def test_weight_shape_mismatch(tmp_path):
    def edit(f, _):
        del f["layers/dense/vars/0"]
        f["layers/dense/vars"].create_dataset("0", data=np.zeros((5, 8), np.float32))
    with pytest.raises(ModelFileError, match=r"'dense\w*' \(Dense\): weight #0 has shape \(5, 8\).*\(4, 8\)"):
        fg.models.load_model(_archive(tmp_path, edit_h5=edit))


def test_external_link_refused(tmp_path):
    def edit(f, d):
        with h5py.File(d / "other.h5", "w") as o:
            o.create_dataset("x", data=np.zeros((4, 8), np.float32))
        del f["layers/dense/vars/0"]
        f["layers/dense/vars/0"] = h5py.ExternalLink(str(d / "other.h5"), "x")
    with pytest.raises(ModelFileError, match="ExternalLink"):
        fg.models.load_model(_archive(tmp_path, edit_h5=edit))


def test_string_dataset_refused(tmp_path):
    def edit(f, _):
        f["layers/dense/vars"].create_dataset("7", data=np.array([b"x"]))
    with pytest.raises(ModelFileError, match="not a plain numeric array"):
        fg.models.load_model(_archive(tmp_path, edit_h5=edit))


def test_missing_weights_group(tmp_path):
    def edit(f, _):
        f.move("layers/dense_1", "layers/elsewhere")
    with pytest.raises(ModelFileError, match="no weights group 'layers/dense_1/vars'"):
        fg.models.load_model(_archive(tmp_path, edit_h5=edit))


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04garbage"])
def test_not_an_archive(tmp_path, content):
    p = tmp_path / "m.keras"
    p.write_bytes(content)
    with pytest.raises(ModelFileError):
        fg.models.load_model(p)


def test_bad_json_and_missing_members(tmp_path):
    p = tmp_path / "m.keras"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("config.json", b"{not json")
        z.writestr("model.weights.h5", b"")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        fg.models.load_keras(p)
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("config.json", b'{"class_name": "Sequential", "config": {"layers": []}}')
    with pytest.raises(ModelFileError, match="no layers"):
        fg.models.load_keras(p)
    m, _ = fg_mlp()
    m.save(p)
    with zipfile.ZipFile(p) as z:
        cfg = z.read("config.json")
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("config.json", cfg)
    with pytest.raises(ModelFileError, match="no 'model.weights.h5'"):
        fg.models.load_keras(p)


def test_subclassed_and_nested_models_refused(tmp_path):
    def edit(cfg):
        cfg["class_name"] = "MyModel"
    with pytest.raises(ModelFileError, match="'MyModel'.*subclassed"):
        fg.models.load_model(_archive(tmp_path, edit))

    def nest(cfg):
        _layers(cfg)[1] = {"module": "keras", "class_name": "Sequential",
                           "config": {"name": "inner", "layers": []}}
    with pytest.raises(ModelFileError, match="nested Sequential"):
        fg.models.load_model(_archive(tmp_path, nest))


def test_uncompilable_compile_config_warns(tmp_path):
    def edit(cfg):
        cfg["compile_config"]["optimizer"]["config"]["use_ema"] = True
    with pytest.warns(UserWarning, match="loaded uncompiled.*use_ema"):
        m = fg.models.load_model(_archive(tmp_path, edit))
    assert not m.compiled


# ---------------------------------------------------------------- against Keras itself
def k_mlp(keras):
    Lk = keras.layers
    m = keras.Sequential([keras.Input((4,)), Lk.Dense(8, activation="relu"),
                          Lk.BatchNormalization(), Lk.Dropout(0.1), Lk.Dense(6, activation="gelu"),
                          Lk.LayerNormalization(), Lk.Dense(3, activation="softmax")])
    m.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    m.fit(_rnd(16, 4), np.eye(3)[np.arange(16) % 3], epochs=2, verbose=0)
    return m, _rnd(5, 4)


def k_cnn(keras):
    Lk = keras.layers
    m = keras.Sequential([keras.Input((8, 8, 3)), Lk.Conv2D(4, 3, padding="same", activation="relu"),
                          Lk.MaxPooling2D(), Lk.SeparableConv2D(5, 3), Lk.DepthwiseConv2D(2),
                          Lk.Conv2DTranspose(2, 3, strides=2), Lk.GlobalAveragePooling2D(),
                          Lk.Dense(2)])
    return m, _rnd(2, 8, 8, 3)


def k_rnn(keras):
    Lk = keras.layers
    m = keras.Sequential([keras.Input((5, 3)), Lk.LSTM(4, return_sequences=True),
                          Lk.Bidirectional(Lk.GRU(3, return_sequences=True)),
                          Lk.Bidirectional(Lk.SimpleRNN(2), merge_mode="mul"), Lk.Dense(1)])
    return m, _rnd(2, 5, 3)


def k_functional(keras):
    Lk = keras.layers
    a = keras.Input((5,), name="a")
    b = keras.Input((5,), name="b")
    x = Lk.Add()([Lk.Dense(5)(a), b])
    y = Lk.Concatenate()([x, Lk.Multiply()([a, b]), a - b])
    o1 = Lk.Dense(1, name="out")(y)
    o2 = Lk.Dense(2, activation="softmax", name="cls")(Lk.Maximum()([x, a]))
    return keras.Model([a, b], [o1, o2]), [_rnd(3, 5), _rnd(3, 5, seed=1)]


def k_mha(keras):
    Lk = keras.layers
    q = keras.Input((6, 8))
    h = Lk.MultiHeadAttention(2, 4)(q, q)
    h = Lk.LayerNormalization()(h + q)
    h = Lk.MultiHeadAttention(2, 4)(h, q, use_causal_mask=True)
    return keras.Model(q, Lk.GlobalAveragePooling1D()(h)), _rnd(2, 6, 8)


def k_embedding(keras):
    Lk = keras.layers
    m = keras.Sequential([keras.Input((6,)), Lk.Embedding(20, 4), Lk.GRU(3), Lk.Dense(2)])
    return m, np.random.default_rng(1).integers(0, 20, (3, 6)).astype(np.int32)


K_MODELS = [k_mlp, k_cnn, k_rnn, k_functional, k_mha, k_embedding]


@pytest.mark.parametrize("make", K_MODELS, ids=lambda f: f.__name__)
def test_keras_to_fastgrad(tmp_path, make):
    keras = _keras()
    km, x = make(keras)
    p = tmp_path / "k.keras"
    km.save(p)
    fm = fg.models.load_keras(p)
    assert [l.name for l in fm.layers if type(l).__name__ != "InputLayer"] == \
        [l.name for l in km.layers if type(l).__name__ != "InputLayer"]
    _close(fm.predict(x), km.predict(x, verbose=0))
    # and back: fastgrad writes it, Keras reads it
    fm.save(tmp_path / "back.keras")
    km2 = keras.saving.load_model(tmp_path / "back.keras")
    _close(km2.predict(x, verbose=0), km.predict(x, verbose=0))


@pytest.mark.parametrize("make", FG_MODELS, ids=lambda f: f.__name__)
def test_fastgrad_to_keras(tmp_path, make):
    keras = _keras()
    m, x = make()
    p = tmp_path / "m.keras"
    m.save(p)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # "Skipping variable loading for optimizer"
        km = keras.saving.load_model(p)
    _close(km.predict(x, verbose=0), m.predict(x))
    if m.compiled:
        assert km.optimizer is not None and km.loss is not None


def test_weights_files_both_ways(tmp_path):
    keras = _keras()
    km, x = k_rnn(keras)
    km.save(tmp_path / "k.keras")
    km.save_weights(tmp_path / "k.weights.h5")
    fm = fg.models.load_keras(tmp_path / "k.keras")
    fm.set_weights([np.zeros_like(w) for w in fm.get_weights()])
    fm.load_weights(tmp_path / "k.weights.h5")
    _close(fm.predict(x), km.predict(x, verbose=0))
    fm.save_weights(tmp_path / "f.weights.h5")
    km2 = keras.models.clone_model(km)
    km2.load_weights(tmp_path / "f.weights.h5")
    _close(km2.predict(x, verbose=0), km.predict(x, verbose=0))
