"""Sequential: structure, flat buffers, weights order, config, predict,
evaluate/train_on_batch return values, regularisation, weights, workspaces
reused (no allocation in a steady-state step), callbacks order."""
import tracemalloc

import numpy as np
import pytest

import fastgrad as fg

from conftest import backends

@pytest.fixture(params=["compiled", "python"])
def executor(request, monkeypatch):
    """Native backend through the compiled step, or forced through the Python Step."""
    from fastgrad.engine import compiled
    monkeypatch.setattr(compiled, "enabled", request.param == "compiled")
    return request.param



def _mlp(seed=0, **compile_kw):
    fg.set_seed(seed)
    m = fg.Sequential([fg.layers.Dense(16, activation="relu", input_shape=(8,)),
                       fg.layers.Dense(12, activation="tanh"),
                       fg.layers.Dense(3, activation="softmax")])
    if compile_kw is not None:
        m.compile(**{"optimizer": "adam", "loss": "sparse_categorical_crossentropy",
                     "metrics": ["accuracy"], **compile_kw})
    return m


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)
    return x, y


def test_flat_buffer_layout_and_views():
    m = _mlp()
    assert m.count_params() == 8 * 16 + 16 + 16 * 12 + 12 + 12 * 3 + 3
    flat = m.flat_params
    assert flat.dtype == np.float32 and flat.flags.c_contiguous and flat.ctypes.data % 64 == 0
    off = 0
    for layer in m.layers:
        for name in ("kernel", "bias"):
            off = -(-off // 16) * 16            # each array starts on a 64-byte boundary
            v = layer.params[name]
            assert np.shares_memory(v, flat)
            assert layer.offsets[name] == off
            np.testing.assert_array_equal(flat[off:off + v.size], v.reshape(-1))
            assert np.shares_memory(layer.grads[name], m.flat_grads)
            off += v.size
    assert flat.size == -(-off // 16) * 16
    # weights order: kernel, bias per layer
    shapes = [w.shape for w in m.get_weights()]
    assert shapes == [(8, 16), (16,), (16, 12), (12,), (12, 3), (3,)]
    # writes through set_weights land in the flat buffer
    new = [np.full(s, i, np.float32) for i, s in enumerate(shapes)]
    m.set_weights(new)
    assert flat[0] == 0 and flat[off - 1] == 5 and not flat[off:].any()


def test_get_layer():
    m = _mlp()
    assert m.get_layer(index=0) is m.layers[0]
    assert m.get_layer(name=m.layers[2].name) is m.layers[2]
    with pytest.raises(ValueError, match="no layer named"):
        m.get_layer("nope")
    with pytest.raises(ValueError, match="out of range"):
        m.get_layer(index=5)


def test_deferred_build_and_input_layer():
    m = fg.Sequential([fg.layers.Dense(4, activation="relu"), fg.layers.Dense(2)])
    assert not m.built
    with pytest.raises(ValueError, match="not built"):
        m.count_params()
    m.compile(optimizer="sgd", loss="mse")
    x = np.ones((5, 3), np.float32)
    m.fit(x, np.zeros((5, 2), np.float32), verbose=0)
    assert m.built and m.input_shape == (None, 3) and m.output_shape == (None, 2)
    m2 = fg.Sequential([fg.Input(shape=(3,)), fg.layers.Dense(4)])
    assert m2.built and len(m2.layers) == 1 and m2.count_params() == 16
    m3 = fg.Sequential()
    m3.add(fg.layers.InputLayer(input_shape=(2, 3)))
    m3.add(fg.layers.Flatten())
    m3.add(fg.layers.Dense(2))
    assert m3.predict(np.ones((4, 2, 3), np.float32)).shape == (4, 2)
    m3.pop()
    assert m3.output_shape == (None, 6)


def test_predict_matches_manual_forward():
    m = _mlp()
    x, _ = _data(50)
    w = m.get_weights()
    h = np.maximum(x @ w[0] + w[1], 0)
    h = np.tanh(h @ w[2] + w[3])
    z = h @ w[4] + w[5]
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(m.predict(x), p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.predict(x, batch_size=7), p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m.predict_on_batch(x[:1]), p[:1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(m(x[:3]), p[:3], rtol=1e-5, atol=1e-6)
    out = m.predict(x)
    out2 = m.predict(x)
    assert out is not out2 and not np.shares_memory(out, out2)   # fresh arrays


def test_evaluate_and_batch_return_values():
    m = _mlp()
    x, y = _data()
    r = m.evaluate(x, y)
    assert isinstance(r, list) and len(r) == 2
    d = m.evaluate(x, y, return_dict=True)
    assert list(d) == ["loss", "accuracy"] and d["loss"] == pytest.approx(r[0])
    assert m.metrics_names == ["loss", "accuracy"]
    t = m.train_on_batch(x, y)
    assert isinstance(t, list) and len(t) == 2
    assert m.optimizer.iterations == 1
    assert isinstance(m.test_on_batch(x, y, return_dict=True), dict)
    m2 = _mlp(metrics=None)
    assert isinstance(m2.evaluate(x, y), float)
    # evaluate's loss is the mean over samples regardless of batch size
    assert m.evaluate(x, y, batch_size=7)[0] == pytest.approx(m.evaluate(x, y, batch_size=64)[0],
                                                              rel=1e-5)
    # accuracy agrees with predict
    acc = (m.predict(x).argmax(1) == y).mean()
    assert m.evaluate(x, y)[1] == pytest.approx(acc)


def test_history_and_validation():
    m = _mlp()
    x, y = _data(100)
    h = m.fit(x, y, epochs=3, batch_size=16, verbose=0, validation_split=0.2)
    assert h is m.history
    assert set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 3 for v in h.history.values())
    # the validation part is the last 20%: evaluate on it reproduces val_loss of the last epoch
    assert m.evaluate(x[80:], y[80:], batch_size=16)[0] == pytest.approx(h.history["val_loss"][-1],
                                                                         rel=1e-5)
    h2 = m.fit(x, y, epochs=4, batch_size=16, verbose=0, validation_data=(x[:10], y[:10]),
               validation_freq=2)
    assert len(h2.history["val_loss"]) == 2 and len(h2.history["loss"]) == 4
    h3 = m.fit(x, y, epochs=5, initial_epoch=3, verbose=0)
    assert h3.epoch == [3, 4]


def test_callback_order():
    calls = []

    class Rec(fg.callbacks.Callback):
        pass

    names = ["on_train_begin", "on_epoch_begin", "on_train_batch_begin", "on_train_batch_end",
             "on_test_begin", "on_test_batch_begin", "on_test_batch_end", "on_test_end",
             "on_epoch_end", "on_train_end"]
    for n in names:
        setattr(Rec, n, (lambda nm: lambda self, *a, **k: calls.append((nm, a)))(n))
    m = _mlp()
    x, y = _data(20)
    m.fit(x, y, epochs=2, batch_size=10, verbose=0, validation_data=(x[:5], y[:5]),
          callbacks=[Rec()])
    seq = [c[0] for c in calls]
    epoch = ["on_epoch_begin", "on_train_batch_begin", "on_train_batch_end",
             "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_batch_begin",
             "on_test_batch_end", "on_test_end", "on_epoch_end"]
    assert seq == ["on_train_begin"] + epoch * 2 + ["on_train_end"]
    end_logs = [c[1][1] for c in calls if c[0] == "on_epoch_end"]
    assert set(end_logs[0]) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    batch_logs = [c[1][1] for c in calls if c[0] == "on_train_batch_end"]
    assert "loss" in batch_logs[0]


def test_stop_training_from_callback():
    class Stop(fg.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    m = _mlp()
    x, y = _data()
    h = m.fit(x, y, epochs=10, verbose=0, callbacks=[Stop()])
    assert len(h.history["loss"]) == 2


def test_early_stopping_and_reduce_lr_work_with_the_model():
    m = _mlp(optimizer=fg.optimizers.Adam(0.01))
    x, y = _data(80)
    es = fg.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0)
    h = m.fit(x, y, epochs=10, verbose=0, callbacks=[es])
    assert len(h.history["loss"]) == 2
    rl = fg.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10.0)
    m.fit(x, y, epochs=3, verbose=0, callbacks=[rl])
    assert m.optimizer.learning_rate < 0.01


def test_steady_state_step_allocates_no_arrays():
    m = _mlp()
    x, y = _data(256)
    m.fit(x, y, epochs=1, batch_size=32, verbose=0)          # warm: workspaces exist
    step = m._step
    wss = step.cache.get(32)
    ptrs = [{k: a.ctypes.data for k, a in ws._bufs.items()} for ws in wss]
    tracemalloc.start()
    m.fit(x, y, epochs=2, batch_size=32, verbose=0, shuffle=False)
    snap = tracemalloc.take_snapshot()
    tracemalloc.stop()
    assert [{k: a.ctypes.data for k, a in ws._bufs.items()} for ws in wss] == ptrs
    # nothing of batch size survives in memory from the steady-state steps
    big = [s for s in snap.statistics("lineno") if s.size > 32 * 16 * 4 and
           "fastgrad" in str(s.traceback) and "engine/data.py" not in str(s.traceback)]
    assert not big, big


def test_regularization_in_loss_and_gradient():
    fg.set_seed(0)
    reg = fg.regularizers.L2(0.5)
    m = fg.Sequential([fg.layers.Dense(3, input_shape=(4,), kernel_regularizer=reg,
                                       bias_initializer="ones")])
    m.compile(optimizer=fg.optimizers.SGD(0.1), loss="mse")
    x = np.zeros((5, 4), np.float32)
    y = np.zeros((5, 3), np.float32)
    w = m.get_weights()[0]
    loss = m.test_on_batch(x, y)
    assert loss == pytest.approx(1.0 + 0.5 * (w.astype(np.float64) ** 2).sum(), rel=1e-5)
    m.train_on_batch(x, y)
    # x = 0: the data gradient of the kernel is 0, only the penalty 2*l2*w moves it
    np.testing.assert_allclose(m.get_weights()[0], w - 0.1 * (2 * 0.5 * w), rtol=1e-5)


def test_sample_weight_and_class_weight():
    m = _mlp()
    x, y = _data(32)
    base = m.evaluate(x, y, batch_size=32)[0]
    assert m.evaluate(x, y, sample_weight=np.full(32, 2.0))[0] == pytest.approx(2 * base, rel=1e-5)
    m2 = _mlp()
    m3 = _mlp()
    m2.fit(x, y, epochs=1, verbose=0, shuffle=False, class_weight={0: 2.0, 1: 2.0, 2: 2.0})
    m3.fit(x, y, epochs=1, verbose=0, shuffle=False, sample_weight=np.full(32, 2.0))
    for a, b in zip(m2.get_weights(), m3.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_get_config_round_trip_and_summary(capsys):
    m = _mlp()
    cfg = m.get_config()
    m2 = fg.Sequential.from_config(cfg)
    assert m2.get_config() == cfg and m2.count_params() == m.count_params()
    m.summary()
    out = capsys.readouterr().out
    assert "Total params: 387" in out and "Dense" in out
    cc = m.get_compile_config()
    m2.compile_from_config(cc)
    assert type(m2.optimizer) is type(m.optimizer) and m2.loss.name == m.loss.name


@pytest.mark.parametrize("backend", backends())
def test_metrics_unweighted_weighted_metrics_weighted(backend):
    # Keras 3: compile(metrics=) ignore sample/class weights, weighted_metrics= use them
    x, y = _data(40)
    sw = np.random.default_rng(3).random(40) + (y == 0) * 5.0
    with fg.use_backend(backend):
        m = _mlp(metrics=["accuracy", "sparse_top_k_categorical_accuracy"],
                 weighted_metrics=["accuracy"])
        hits = (np.argmax(m.predict(x), axis=1) == y).astype(np.float64)
        logs = m.evaluate(x, y, sample_weight=sw, batch_size=16, verbose=0, return_dict=True)
        assert m.metrics_names == ["loss", "accuracy", "sparse_top_k_categorical_accuracy",
                                   "weighted_accuracy"]
        assert logs["accuracy"] == pytest.approx(hits.mean(), rel=1e-9)
        assert logs["weighted_accuracy"] == pytest.approx(np.dot(hits, sw) / sw.sum(), rel=1e-6)
        assert logs["accuracy"] != pytest.approx(logs["weighted_accuracy"])
        base = m.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
        assert base["accuracy"] == logs["accuracy"]
        assert base["weighted_accuracy"] == pytest.approx(base["accuracy"], rel=1e-9)
        # train_on_batch with class_weight: metrics computed before the update
        cw = {0: 4.0, 1: 1.0, 2: 0.5}
        hits = (np.argmax(m.predict(x), axis=1) == y).astype(np.float64)
        w = np.array([cw[int(c)] for c in y])
        r = m.train_on_batch(x, y, class_weight=cw, return_dict=True)
        assert r["accuracy"] == pytest.approx(hits.mean(), rel=1e-9)
        assert r["weighted_accuracy"] == pytest.approx(np.dot(hits, w) / w.sum(), rel=1e-6)
        # only weighted_metrics: logged under the plain name, weighted
        m2 = _mlp(metrics=None, weighted_metrics=["accuracy"])
        hits = (np.argmax(m2.predict(x), axis=1) == y).astype(np.float64)
        h = m2.fit(x, y, epochs=1, batch_size=40, verbose=0, shuffle=False, sample_weight=sw)
        assert h.history["accuracy"][0] == pytest.approx(np.dot(hits, sw) / sw.sum(), rel=1e-6)
        m3 = _mlp(metrics=["accuracy"])
        h = m3.fit(x, y, epochs=1, batch_size=40, verbose=0, shuffle=False, sample_weight=sw)
        assert h.history["accuracy"][0] == pytest.approx(hits.mean(), rel=1e-9)


def test_compile_config_keeps_weighted_metrics():
    m = _mlp(metrics=["mae"], weighted_metrics=["accuracy", fg.metrics.MeanSquaredError()])
    cc = m.get_compile_config()
    assert cc["metrics"] == ["mae"] and cc["weighted_metrics"][0] == "accuracy"
    m2 = _mlp(metrics=None)
    m2.compile_from_config(cc)
    assert m2.get_compile_config() == cc
    assert m2._metric_weighted == [False, True, True]
    m2.compile_from_config({k: v for k, v in cc.items() if k != "weighted_metrics"})
    assert m2._metric_weighted == [False]


def test_recompile_switches_fusion():
    m = _mlp()
    assert m.describe()["output_activation"] == "softmax"
    m.compile(optimizer="sgd", loss="mse")
    assert m.describe()["output_activation"] is None
    assert m.layers[-1]._run_act == "softmax"
    x, _ = _data(5)
    np.testing.assert_allclose(m.predict(x).sum(1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("backend", backends())
def test_thread_counts_give_identical_training(backend, executor):
    x, y = _data(200)
    res = []
    with fg.use_backend(backend):
        for nt in (1, 2, 3):
            fg.set_num_threads(nt)
            m = _mlp(seed=3)
            m.fit(x, y, epochs=2, batch_size=50, verbose=0)
            res.append(m.get_weights())
    fg.set_num_threads(None)
    for other in res[1:]:
        for a, b in zip(res[0], other):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ metrics
def test_accuracy_resolution_follows_loss():
    M = fg.metrics
    assert type(M.resolve("accuracy", fg.losses.get("binary_crossentropy"), (1,), False)) is \
        M.BinaryAccuracy
    assert type(M.resolve("acc", fg.losses.get("sparse_categorical_crossentropy"), (5,), True)) is \
        M.SparseCategoricalAccuracy
    assert type(M.resolve("accuracy", fg.losses.get("categorical_crossentropy"), (5,), False)) is \
        M.CategoricalAccuracy
    assert type(M.resolve("accuracy", fg.losses.get("mse"), (1,), False)) is M.BinaryAccuracy
    assert M.resolve("mae", fg.losses.get("mse"), (1,), False).name == "mae"


def test_metric_values_against_references():
    rng = np.random.default_rng(0)
    n, k = 200, 6
    logits = rng.standard_normal((n, k))
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, k, n)
    sw = rng.uniform(0, 2, n)
    M = fg.metrics
    m = M.SparseCategoricalAccuracy()
    m.update_state(y[:50], p[:50])
    m.update_state(y[50:], p[50:])
    assert m.result() == pytest.approx((p.argmax(1) == y).mean())
    m.reset_state()
    m.update_state(y, p, sample_weight=sw)
    assert m.result() == pytest.approx(((p.argmax(1) == y) * sw).sum() / sw.sum())
    m2 = M.SparseCategoricalAccuracy()
    m2.update_state_logits(y, logits, "softmax", sample_weight=sw)
    assert m2.result() == pytest.approx(m.result())
    c = M.CategoricalAccuracy()
    c.update_state(np.eye(k)[y], p)
    assert c.result() == pytest.approx((p.argmax(1) == y).mean())
    top = M.SparseTopKCategoricalAccuracy(k=3)
    top.update_state(y, p)
    ranks = (p > p[np.arange(n), y][:, None]).sum(1)
    assert top.result() == pytest.approx((ranks < 3).mean())
    top2 = M.TopKCategoricalAccuracy(k=3)
    top2.update_state(np.eye(k)[y], p)
    assert top2.result() == pytest.approx(top.result())
    t = rng.standard_normal((n, 2))
    mae, mse = M.MeanAbsoluteError(), M.MeanSquaredError()
    mae.update_state(t, p[:, :2])
    mse.update_state(t, p[:, :2])
    assert mae.result() == pytest.approx(np.abs(t - p[:, :2]).mean())
    assert mse.result() == pytest.approx(((t - p[:, :2]) ** 2).mean())


def test_binary_metrics_against_sklearn():
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    s = np.clip(y * 0.3 + rng.uniform(0, 0.7, 500), 0, 1)
    M = fg.metrics
    b = M.BinaryAccuracy()
    b.update_state(y, s)
    assert b.result() == pytest.approx(((s > 0.5) == y).mean())
    pr, rc = M.Precision(), M.Recall()
    for mm in (pr, rc):
        mm.update_state(y[:200], s[:200])
        mm.update_state(y[200:], s[200:])
    assert pr.result() == pytest.approx(skm.precision_score(y, s > 0.5))
    assert rc.result() == pytest.approx(skm.recall_score(y, s > 0.5))
    auc = M.AUC()
    auc.update_state(y, s)
    assert auc.result() == pytest.approx(skm.roc_auc_score(y, s), abs=5e-3)
    logits = np.log(s + 1e-9) - np.log(1 - s + 1e-9)
    b2 = M.BinaryAccuracy()
    b2.update_state_logits(y.reshape(-1, 1), logits.reshape(-1, 1), "sigmoid")
    assert b2.result() == pytest.approx(b.result())


def test_metrics_in_fit_logs():
    m = _mlp(metrics=["accuracy", fg.metrics.SparseTopKCategoricalAccuracy(k=2)])
    x, y = _data(64)
    h = m.fit(x, y, epochs=1, verbose=0, validation_data=(x, y))
    assert set(h.history) == {"loss", "accuracy", "sparse_top_k_categorical_accuracy", "val_loss",
                              "val_accuracy", "val_sparse_top_k_categorical_accuracy"}
    ev = m.evaluate(x, y, return_dict=True, verbose=0)
    assert ev["sparse_top_k_categorical_accuracy"] >= ev["accuracy"]


@pytest.mark.torch
@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("hidden,out_act,loss", [
    ("relu", "softmax", "sparse_categorical_crossentropy"),
    ("tanh", "softmax", "categorical_crossentropy"),
    ("gelu", "sigmoid", "binary_crossentropy"),
    ("sigmoid", None, "mse"),
])
def test_model_gradients_match_torch(backend, hidden, out_act, loss, executor):
    """Loss and every parameter gradient of one step against PyTorch (float64)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    n, fin, h, k = 33, 7, 9, 4
    x = rng.standard_normal((n, fin)).astype(np.float32)
    if loss == "sparse_categorical_crossentropy":
        y = rng.integers(0, k, n)
    elif loss == "binary_crossentropy":
        y = rng.integers(0, 2, (n, k)).astype(np.float32)
    else:
        y = rng.standard_normal((n, k)).astype(np.float32) if loss == "mse" else \
            np.eye(k, dtype=np.float32)[rng.integers(0, k, n)]
    with fg.use_backend(backend):
        fg.set_seed(0)
        m = fg.Sequential([fg.layers.Dense(h, activation=hidden, input_shape=(fin,)),
                           fg.layers.Dense(k, activation=out_act)])
        m.compile(optimizer=fg.optimizers.SGD(0.0), loss=loss)
        w = m.get_weights()
        ours = m.train_on_batch(x, y)
        grads = [g.copy() for g in (m.layers[0].grads["kernel"], m.layers[0].grads["bias"],
                                    m.layers[1].grads["kernel"], m.layers[1].grads["bias"])]
    tw = [torch.tensor(a.astype(np.float64), requires_grad=True) for a in w]
    tx = torch.tensor(x.astype(np.float64))
    act = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
           "gelu": torch.nn.functional.gelu}[hidden]
    z = act(tx @ tw[0] + tw[1]) @ tw[2] + tw[3]
    if loss == "sparse_categorical_crossentropy":
        tl = torch.nn.functional.cross_entropy(z, torch.tensor(y))
    elif loss == "categorical_crossentropy":
        tl = torch.nn.functional.cross_entropy(z, torch.tensor(y.astype(np.float64)))
    elif loss == "binary_crossentropy":
        tl = torch.nn.functional.binary_cross_entropy_with_logits(
            z, torch.tensor(y.astype(np.float64)))
    else:
        tl = torch.nn.functional.mse_loss(torch.sigmoid(z) if out_act == "sigmoid" else z,
                                          torch.tensor(y.astype(np.float64)))
    tl.backward()
    assert ours == pytest.approx(tl.item(), rel=1e-5)
    for g, t in zip(grads, tw):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-4, atol=1e-6)


class _Scale(fg.layers.Layer):
    """A user-defined layer through the public protocol: y = x * s (per feature)."""

    def param_specs(self):
        return [fg.layers.ParamSpec("s", self.input_shape, fg.initializers.Ones())]

    def forward(self, x, training, ws):
        y = ws.buf("y", x.shape, x.dtype)
        np.multiply(x, self.params["s"], out=y)
        ws.x = x
        return y

    def backward(self, dy, ws, need_dx=True):
        np.sum(dy * ws.x, axis=0, out=self.grads["s"])
        if not need_dx:
            return None
        dx = ws.buf("dx", dy.shape, dy.dtype)
        np.multiply(dy, self.params["s"], out=dx)
        return dx


@pytest.mark.parametrize("backend", backends())
def test_custom_layer_trains_through_the_protocol(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 3)).astype(np.float32)
    y = (x * np.array([2.0, -1.0, 0.5], np.float32)).astype(np.float32)
    with fg.use_backend(backend):
        m = fg.Sequential([_Scale(input_shape=(3,))])
        m.compile(optimizer=fg.optimizers.SGD(0.2), loss="mse")
        assert m.count_params() == 3 and m.layers[0].offsets == {"s": 0}
        m.fit(x, y, epochs=40, batch_size=32, verbose=0)
        np.testing.assert_allclose(m.get_weights()[0], [2.0, -1.0, 0.5], atol=1e-3)
        cfg = m.get_config()
        assert cfg["layers"][0]["class_name"] == "_Scale"
        clone = fg.Sequential.from_config(cfg)
        assert clone.count_params() == 3


@pytest.mark.parametrize("backend", backends())
def test_model_does_not_keep_caller_data_alive(backend, executor):
    import gc
    import weakref
    with fg.use_backend(backend):
        m = _mlp()
        for call in ("fit", "evaluate", "predict", "train_on_batch"):
            x, y = _data(100)
            ref = weakref.ref(x)
            if call == "fit":
                m.fit(x, y, epochs=1, verbose=0, shuffle=False, validation_split=0.2)
            elif call == "predict":
                m.predict(x)
            else:
                getattr(m, call)(x, y)
            del x
            gc.collect()
            assert ref() is None, call
