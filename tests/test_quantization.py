"""fg.quantization: dynamic / static post-training quantization, QAT and
convert, the quantized model's predict / evaluate / summary / save / load,
accuracy on scikit-learn's digits, and bad input."""
import os

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import quantization as fq


@pytest.fixture(scope="module")
def digits():
    sk = pytest.importorskip("sklearn.datasets")
    from sklearn.model_selection import train_test_split
    d = sk.load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)


def mlp(inp=64, hidden=(128, 64), out=10, act="softmax"):
    layers = [fg.layers.Dense(hidden[0], activation="relu", input_shape=(inp,))]
    layers += [fg.layers.Dense(h, activation="relu") for h in hidden[1:]]
    layers.append(fg.layers.Dense(out, activation=act))
    return fg.Sequential(layers)


@pytest.fixture(scope="module")
def trained(digits):
    xtr, xte, ytr, yte = digits
    fg.set_seed(0)
    m = mlp()
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    m.fit(xtr, ytr, epochs=30, batch_size=32, verbose=0)
    return m


def acc(model, x, y):
    return float(np.mean(model.predict(x).argmax(1) == y))


# ------------------------------------------------------------------ accuracy
def test_dynamic_accuracy(trained, digits):
    xtr, xte, ytr, yte = digits
    q = fq.quantize_dynamic(trained)
    assert acc(trained, xte, yte) - acc(q, xte, yte) <= 0.005
    loss, a = q.evaluate(xte, yte)
    fl, fa = trained.evaluate(xte, yte, verbose=0)
    assert abs(loss - fl) < 0.02 and abs(a - fa) <= 0.005


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_static_accuracy_within_half_a_point(trained, digits, method):
    xtr, xte, ytr, yte = digits
    q = fq.quantize_static(trained, xtr[:500], method=method)
    r = fq.compare(trained, q, xte, yte)
    assert r["accuracy_drop_pp"] <= 0.5, r
    assert r["top1_agreement"] >= 0.98
    # int8 between the layers: the hidden layers hand u8 on, the last one gives float
    qd = [s for s in q.stages if s.kind == "qdense"]
    assert [s.out_q for s in qd] == [True, True, False]


def test_qat_accuracy_within_a_fifth_of_a_point(trained, digits):
    xtr, xte, ytr, yte = digits
    fg.set_seed(1)
    qat = fq.prepare_qat(trained)
    # fake quantization has no C path: the model trains on the Python step, and says why
    from fastgrad.engine import compiled
    assert "fake quantization" in (compiled.unsupported_reason(qat) or "")
    assert qat.compiled  # the float model's compile configuration came along
    # the usual QAT recipe: fine-tune at a lower learning rate
    qat.compile(optimizer=fg.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    w0 = qat.get_weights()[0].copy()
    qat.fit(xtr, ytr, epochs=3, batch_size=32, verbose=0)
    assert not np.array_equal(w0, qat.get_weights()[0])  # it trained
    q = fq.convert(qat)
    r = fq.compare(trained, q, xte, yte)
    assert r["accuracy_drop_pp"] <= 0.2, r
    # the int8 model does what the QAT model simulated
    assert np.mean(qat.predict(xte, verbose=0).argmax(1) == q.predict(xte).argmax(1)) >= 0.99


# ------------------------------------------------------------------ model API
def test_summary_save_load_and_size(tmp_path, capsys):
    fg.set_seed(3)
    m = mlp(784, (512, 512), 10)
    x = np.random.default_rng(0).random((64, 784), dtype=np.float32)
    for q in (fq.quantize_dynamic(m), fq.quantize_static(m, x)):
        q.summary()
        out = capsys.readouterr().out
        assert "int8 per-channel" in out and ("u8" in out)
        pf, pq = tmp_path / "f.fgm", tmp_path / f"q_{q.mode}.fgm"
        m.save(pf, include_optimizer=False)
        q.save(pq)
        ratio = os.path.getsize(pf) / os.path.getsize(pq)
        assert ratio >= 3.5, ratio
        back = fg.models.load_model(pq)
        assert isinstance(back, fq.QuantizedModel) and back.mode == q.mode
        np.testing.assert_array_equal(back.predict(x), q.predict(x))
        assert back.get_weights()[0].dtype == np.int8


def test_numpy_twin_gives_the_native_bits():
    from conftest import native_available
    if not native_available():
        pytest.skip("native backend not built")
    fg.set_seed(4)
    m = mlp(37, (29, 17), 5, act="linear")
    x = (np.random.default_rng(1).standard_normal((53, 37)) * 2).astype(np.float32)
    for q in (fq.quantize_dynamic(m), fq.quantize_static(m, x, method="percentile")):
        with fg.use_backend("native"):
            a = q.predict(x)
        with fg.use_backend("numpy"):
            b = q.predict(x)
        np.testing.assert_array_equal(a.view(np.int32), b.view(np.int32))


def test_skip_keeps_layers_float_and_fuses_relu():
    fg.set_seed(5)
    m = fg.Sequential([fg.layers.Dense(16, input_shape=(8,)), fg.layers.Activation("relu"),
                       fg.layers.BatchNormalization(name="bn"), fg.layers.Dense(4, name="out")])
    x = np.random.default_rng(2).standard_normal((40, 8)).astype(np.float32)
    with pytest.raises(ValueError, match=r"'bn' \(BatchNormalization\).*skip="):
        fq.quantize_dynamic(m)
    q = fq.quantize_dynamic(m, skip=["bn"])
    kinds = [s.kind for s in q.stages]
    assert kinds == ["qdense", "float", "qdense"]  # the ReLU went into the first GEMM's epilogue
    np.testing.assert_allclose(q.predict(x), m.predict(x, verbose=0), atol=0.1)
    qs = fq.quantize_static(m, x, skip="bn")
    np.testing.assert_allclose(qs.predict(x), m.predict(x, verbose=0), atol=0.1)
    q2 = fq.quantize_dynamic(m, skip=["bn", "out"])
    assert [s.kind for s in q2.stages] == ["qdense", "float", "float"]


# ------------------------------------------------------------------ bad input
def test_bad_input(trained, digits, tmp_path):
    xtr = digits[0]
    unbuilt = fg.Sequential([fg.layers.Dense(3)])
    for f in (fq.quantize_dynamic, lambda m: fq.quantize_static(m, xtr), fq.prepare_qat):
        with pytest.raises(ValueError, match="not built"):
            f(unbuilt)
    with pytest.raises(ValueError, match=r"calibration_data has shape \(10, 63\)"):
        fq.quantize_static(trained, xtr[:10, :63])
    bad = xtr[:20].copy()
    bad[3, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fq.quantize_static(trained, bad)
    with pytest.raises(ValueError, match="method"):
        fq.quantize_static(trained, xtr, method="kl")
    with pytest.raises(ValueError, match="not in the model"):
        fq.quantize_dynamic(trained, skip=["nope"])
    q = fq.quantize_dynamic(trained)
    with pytest.raises(RuntimeError, match="cannot be trained"):
        q.fit(xtr, digits[2])
    with pytest.raises(ValueError, match=r"expected input of shape"):
        q.predict(xtr[:, :10])
    x = xtr[:4].copy()
    x[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        q.predict(x)
    with pytest.raises(ValueError, match="no fake-quantized layer"):
        fq.convert(trained)
    with pytest.raises(ValueError, match="observed no data"):
        fq.convert(fq.prepare_qat(trained))
    with pytest.raises(TypeError, match="QuantizedModel"):
        fq.compare(trained, trained, xtr)


def test_qat_model_saves_and_loads_in_a_fresh_process(tmp_path):
    import subprocess
    import sys
    fg.set_seed(6)
    m = mlp(12, (8,), 3)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(3).random((40, 12), dtype=np.float32)
    y = np.arange(40) % 3
    qat = fq.prepare_qat(m)
    qat.fit(x, y, epochs=1, verbose=0)
    p = tmp_path / "qat.fgm"
    qat.save(p)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "want.npy", qat.predict(x, verbose=0))
    code = (f"import numpy as np, fastgrad as fg; m = fg.models.load_model({str(p)!r}); "
            f"x = np.load({str(tmp_path / 'x.npy')!r}); w = np.load({str(tmp_path / 'want.npy')!r}); "
            "assert type(m.layers[0]).__name__ == 'FakeQuantDense'; "
            "assert np.array_equal(m.predict(x, verbose=0), w); "
            "from fastgrad import quantization as fq; q = fq.convert(m); print(q.mode)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "static"
