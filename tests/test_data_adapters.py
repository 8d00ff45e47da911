"""Data from anywhere (issue 13): integer / bool x cast as Keras casts it; fit /
evaluate / predict on generators, iterators, PyDataset, DataLoaders, torch
tensors, pandas objects and memmaps (engine/adapters.py), each training to the
same weights as the same data in memory (same order, same batch size)."""
import time
import warnings

import numpy as np
import pytest

import fastgrad as fg
from fastgrad.engine import data as _data
from fastgrad.layers import Dense
from fastgrad.models import Sequential
from fastgrad.utils import PyDataset

N, D, C, BS = 300, 12, 3, 32


def _xy(n=N, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, D)).astype(np.float32), rng.integers(0, C, n)


X, Y = _xy()


def _model(seed=3, metrics=("accuracy",), optimizer="adam"):
    fg.set_seed(seed)
    m = Sequential([Dense(16, activation="relu", input_shape=(D,)),
                    Dense(C, activation="softmax")])
    m.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy",
              metrics=list(metrics))
    return m


def _reference(epochs=2, **kw):
    m = _model(**kw)
    h = m.fit(X, Y, batch_size=BS, epochs=epochs, shuffle=False, verbose=0)
    return m.get_weights(), h.history


def _same_history(h, ref):
    # the in-memory loop sums a chunk's losses as a dot product, the stream loop
    # batch by batch: the means agree to rounding
    assert set(h) == set(ref)
    for k in ref:
        np.testing.assert_allclose(h[k], ref[k], rtol=1e-12)


def _same(m, ref):
    for a, b in zip(m.get_weights(), ref):
        assert np.array_equal(a, b)


def _gen(x=X, y=Y, loops=True, sw=None):
    while True:
        for s in range(0, len(x), BS):
            yield (x[s:s + BS], y[s:s + BS]) if sw is None else \
                (x[s:s + BS], y[s:s + BS], sw[s:s + BS])
        if not loops:
            return


class _DS(PyDataset):
    def __init__(self, x=X, y=Y, **kw):
        super().__init__(**kw)
        self.x, self.y = x, y
        self.ends = 0
        self.seen = []

    def __len__(self):
        return (len(self.x) + BS - 1) // BS

    def __getitem__(self, i):
        self.seen.append(i)
        return self.x[i * BS:(i + 1) * BS], self.y[i * BS:(i + 1) * BS]

    def on_epoch_end(self):
        self.ends += 1


STEPS = (N + BS - 1) // BS


# ------------------------------------------------------------------ casting
def test_xor_tutorial_verbatim():
    X = [[0, 0], [0, 1], [1, 0], [1, 1]]
    y = [0, 1, 1, 0]
    fg.set_seed(0)
    model = Sequential()
    model.add(Dense(8, activation="relu", input_shape=(2,)))
    model.add(Dense(1, activation="sigmoid"))
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(X, y, epochs=1000, verbose=0)
    p = model.predict(X)
    assert p.shape == (4, 1)
    assert np.array_equal((p[:, 0] > 0.5).astype(int), y)
    # int arrays: the same model state as the lists
    assert model.evaluate(np.array(X), np.array(y), verbose=0)[1] == 1.0


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, bool, np.float64, np.float16])
def test_int_bool_x_cast_like_float32(dtype):
    xi = (np.abs(X) * 3).astype(dtype)
    m1 = _model()
    m1.fit(xi, Y, batch_size=BS, epochs=1, shuffle=False, verbose=0)
    m2 = _model()
    m2.fit(xi.astype(np.float32), Y, batch_size=BS, epochs=1, shuffle=False, verbose=0)
    _same(m1, m2.get_weights())
    assert np.array_equal(m1.predict(xi), m1.predict(xi.astype(np.float32)))


def test_cast_x_declared_dtype():
    xi = np.array([[1, 2], [3, 4]], np.int64)
    assert _data.cast_x(xi, None, "t").dtype == np.float32
    ids = _data.cast_x(xi, "int32", "t")
    assert ids.dtype == np.int32 and np.array_equal(ids, xi)
    assert _data.cast_x(np.array([[1.0, 2.0]]), "int32", "t").dtype == np.int32
    with pytest.raises(ValueError, match="non-integer value 1.5"):
        _data.cast_x(np.array([[1.5, 2.0]]), "int32", "t")
    with pytest.raises(ValueError, match="outside the range"):
        _data.cast_x(np.array([[1 << 40]]), "int32", "t")
    with pytest.raises(ValueError, match="NaN or inf"):
        _data.cast_x(np.array([[np.nan]]), None, "t")
    with pytest.raises(ValueError, match="out of float32 range"):
        _data.cast_x(np.array([[1e300]]), None, "t")
    with pytest.raises(TypeError, match="complex"):
        _data.cast_x(np.ones((2, 2), complex), None, "t")


def test_input_layer_dtype_attribute_honoured():
    m = _model()
    m.build((None, D))
    m._seq_layers[0].dtype = "int32"       # as an integer-typed input (Embedding ids) declares
    try:
        xs = m._prepare_xs(np.ones((2, D), np.int64), "t")
        assert xs[0].dtype == np.int32
    finally:
        del m._seq_layers[0].dtype
    assert m._prepare_xs(np.ones((2, D), np.int64), "t")[0].dtype == np.float32


def test_nan_still_refused():
    x = X.copy()
    x[5, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf \(first at index \(5, 2\)"):
        _model().fit(x, Y, verbose=0)


# ------------------------------------------------------------------ same weights
@pytest.mark.parametrize("backend", ["native", "numpy"])
def test_generator_same_weights(backend):
    with fg.use_backend(backend):
        ref, hist = _reference()
        m = _model()
        h = m.fit(_gen(), steps_per_epoch=STEPS, epochs=2, verbose=0)
        _same(m, ref)
        _same_history(h.history, hist)


@pytest.mark.parametrize("workers", [1, 3])
def test_pydataset_same_weights_and_epoch_end(workers):
    ref, hist = _reference()
    ds = _DS(workers=workers, use_multiprocessing=True, max_queue_size=2)
    m = _model()
    h = m.fit(ds, epochs=2, shuffle=False, verbose=0)
    _same(m, ref)
    _same_history(h.history, hist)
    assert ds.ends == 2


def test_pydataset_shuffle_visits_batches_in_seeded_random_order():
    ds = _DS()
    _model().fit(ds, epochs=1, verbose=0)           # shuffle=True (default), as Keras 3
    first = list(ds.seen)
    assert sorted(first) == list(range(STEPS)) and first != list(range(STEPS))
    ds2 = _DS()
    _model().fit(ds2, epochs=1, verbose=0)
    assert ds2.seen == first                        # fg.set_seed reproduces it


def test_iterator_and_iterable_same_weights():
    ref, _ = _reference(epochs=1)
    batches = [(X[s:s + BS], Y[s:s + BS]) for s in range(0, N, BS)]
    m = _model()
    m.fit(iter(batches), epochs=1, verbose=0)
    _same(m, ref)
    ref2, _ = _reference(epochs=2)
    m = _model()
    m.fit(_Reiterable(batches), epochs=2, verbose=0)   # iterated afresh each epoch
    _same(m, ref2)


class _Reiterable:
    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


def test_memmap_same_weights_not_copied(tmp_path):
    path = tmp_path / "x.dat"
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=X.shape)
    mm[:] = X
    mm.flush()
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=X.shape)
    ref, _ = _reference()
    m = _model()
    m.fit(mm, Y, batch_size=BS, epochs=2, shuffle=False, verbose=0)
    _same(m, ref)
    data = m._prepare_data(mm, Y, None, None, "fit")
    assert np.shares_memory(data.xs[0], mm)       # used in place: no copy per call or epoch


def test_generator_sample_weight_and_class_weight():
    sw = np.linspace(0.1, 2.0, N).astype(np.float32)
    m1 = _model()
    m1.fit(X, Y, sample_weight=sw, batch_size=BS, epochs=1, shuffle=False, verbose=0)
    m2 = _model()
    m2.fit(_gen(sw=sw, loops=False), epochs=1, verbose=0)
    _same(m2, m1.get_weights())
    cw = {0: 0.5, 1: 2.0}
    m1 = _model()
    m1.fit(X, Y, class_weight=cw, batch_size=BS, epochs=1, shuffle=False, verbose=0)
    m2 = _model()
    m2.fit(_gen(loops=False), class_weight=cw, epochs=1, verbose=0)
    _same(m2, m1.get_weights())


def test_validation_and_evaluate_predict_from_streams():
    xv, yv = _xy(100, seed=5)
    m1 = _model()
    h1 = m1.fit(X, Y, batch_size=BS, epochs=2, shuffle=False, verbose=0,
                validation_data=(xv, yv), validation_batch_size=BS)
    m2 = _model()
    h2 = m2.fit(_gen(), steps_per_epoch=STEPS, epochs=2, verbose=0,
                validation_data=_DS(xv, yv))
    _same(m2, m1.get_weights())
    for k in ("val_loss", "val_accuracy"):
        np.testing.assert_allclose(h2.history[k], h1.history[k], rtol=1e-6)
    # arrays for x, a looping generator for validation with validation_steps
    m3 = _model()
    h3 = m3.fit(X, Y, batch_size=BS, epochs=2, shuffle=False, verbose=0,
                validation_data=_gen(xv, yv), validation_steps=4)
    _same(m3, m1.get_weights())
    np.testing.assert_allclose(h3.history["val_loss"], h1.history["val_loss"], rtol=1e-6)
    ev = m1.evaluate(xv, yv, batch_size=BS, verbose=0)
    np.testing.assert_allclose(m1.evaluate(_DS(xv, yv), verbose=0), ev, rtol=1e-6)
    np.testing.assert_allclose(m1.evaluate(_gen(xv, yv), steps=4, verbose=0), ev, rtol=1e-6)
    p = m1.predict(xv)
    np.testing.assert_array_equal(m1.predict(_DS(xv, yv)), p)
    np.testing.assert_array_equal(m1.predict((xv[s:s + 7] for s in range(0, 100, 7))), p)
    np.testing.assert_array_equal(m1.predict(_gen(xv, yv), steps=4, verbose=0), p)


def test_unbuilt_sequential_builds_from_first_batch():
    fg.set_seed(3)
    m = Sequential([Dense(16, activation="relu"), Dense(C, activation="softmax")])
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    m.fit(_gen(loops=False), epochs=1, verbose=0)
    assert m.built and m.input_shape == (None, D)


def test_callbacks_and_progress_bar_unknown_length(capsys):
    seen = []

    class Rec(fg.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append((batch, sorted(logs)))

    m = _model()
    h = m.fit(_gen(loops=False), epochs=1, verbose=1, callbacks=[Rec()])
    assert [b for b, _ in seen] == list(range(STEPS))
    assert seen[-1][1] == ["accuracy", "loss"]
    assert set(h.history) == {"loss", "accuracy"}
    out = capsys.readouterr().out
    assert f"{STEPS}/{STEPS}" in out


def test_prefetch_reads_ahead_while_training():
    consumed = []

    def gen():
        for i, b in enumerate(_gen(loops=False)):
            consumed.append(i)
            yield b

    ahead = []

    class Slow(fg.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 2:
                time.sleep(0.3)                 # the prefetch thread has time to fill its queue
                ahead.append(len(consumed))

    _model().fit(gen(), epochs=1, verbose=0, callbacks=[Slow()])
    assert ahead[0] >= 4                        # batches 3 and 4 were read before step 2 ran


# ------------------------------------------------------------------ torch / pandas
@pytest.mark.torch
def test_torch_dataloader_and_tensors_same_weights():
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader, TensorDataset
    ref, hist = _reference()
    dl = DataLoader(TensorDataset(torch.from_numpy(X), torch.from_numpy(Y)), batch_size=BS,
                    shuffle=False)
    m = _model()
    h = m.fit(dl, epochs=2, verbose=0)
    _same(m, ref)
    _same_history(h.history, hist)
    m = _model()
    m.fit(torch.from_numpy(X).requires_grad_(False), torch.from_numpy(Y), batch_size=BS,
          epochs=2, shuffle=False, verbose=0)
    _same(m, ref)
    np.testing.assert_array_equal(m.predict(dl), m.predict(X))


def test_pandas_same_weights():
    pd = pytest.importorskip("pandas")
    ref, _ = _reference()
    m = _model()
    m.fit(pd.DataFrame(X), pd.Series(Y), batch_size=BS, epochs=2, shuffle=False, verbose=0)
    _same(m, ref)


# ------------------------------------------------------------------ bad input
def _batches_then(bad_at, bad):
    for i, b in enumerate(_gen(loops=False)):
        yield bad if i == bad_at else b


def test_bad_shape_names_batch():
    bad = (np.ones((BS, D + 1), np.float32), Y[:BS])
    with pytest.raises(ValueError, match=r"fit: batch 2 of the generator.*per-sample shape"):
        _model().fit(_batches_then(2, bad), epochs=1, verbose=0)


def test_nan_in_batch_names_batch():
    x = X[:BS].copy()
    x[3, 1] = np.inf
    with pytest.raises(ValueError, match=r"batch 4 of the generator: x contains NaN or inf"):
        _model().fit(_batches_then(4, (x, Y[:BS])), epochs=1, verbose=0)


def test_inconsistent_structure_names_batch():
    bad = (X[:BS], Y[:BS], np.ones(BS, np.float32))
    with pytest.raises(ValueError, match=r"batch 1 of the generator has structure .*"
                                         r"sample_weight: array.*first batch had"):
        _model().fit(_batches_then(1, bad), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"batch 0 .*\(x, y\)"):
        _model().fit(iter([(X, Y, None, None)]), epochs=1, verbose=0)


def test_batch_without_y_and_bad_labels():
    with pytest.raises(ValueError, match=r"batch 0 of the generator.*y is required"):
        _model().fit((X[s:s + BS] for s in range(0, N, BS)), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"batch 1 of the PyDataset.*label 7"):
        _model().fit(_DS(X, np.where(np.arange(N) == 40, 7, Y)), shuffle=False, epochs=1,
                     verbose=0)


def test_generator_error_propagates():
    def gen():
        yield X[:BS], Y[:BS]
        raise RuntimeError("disk gone")
    with pytest.raises(RuntimeError, match="disk gone"):
        _model().fit(gen(), epochs=1, verbose=0)


def test_argument_errors():
    m = _model()
    with pytest.raises(ValueError, match="y must not be given"):
        m.fit(_gen(), Y, steps_per_epoch=2, verbose=0)
    with pytest.raises(ValueError, match="validation_split needs in-memory arrays"):
        m.fit(_gen(), steps_per_epoch=2, validation_split=0.2, verbose=0)
    with pytest.raises(ValueError, match="sample_weight"):
        m.fit(_gen(), steps_per_epoch=2, sample_weight=np.ones(N), verbose=0)
    with pytest.raises(ValueError, match="steps_per_epoch applies to a generator"):
        m.fit(X, Y, steps_per_epoch=3, verbose=0)
    with pytest.raises(ValueError, match="validation_steps applies"):
        m.fit(X, Y, validation_data=(X, Y), validation_steps=3, verbose=0)
    with pytest.raises(ValueError, match="steps_per_epoch must be a positive integer"):
        m.fit(_gen(), steps_per_epoch=0, verbose=0)
    with pytest.raises(ValueError, match="yielded no batch"):
        m.fit(iter([]), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="steps applies"):
        m.predict(X, steps=2)


def test_one_shot_generator_runs_out_warns_and_stops():
    m = _model()
    with pytest.warns(UserWarning, match="ran out of data at epoch 2"):
        h = m.fit(_gen(loops=False), epochs=3, verbose=0)
    assert len(h.history["loss"]) == 1
    with pytest.warns(UserWarning, match="before steps_per_epoch=20"):
        h = _model().fit(_gen(loops=False), steps_per_epoch=20, epochs=2, verbose=0)
    assert len(h.history["loss"]) == 1


def test_validation_generator_exhausted_is_an_error():
    with pytest.raises(ValueError, match=r"validation_data: the generator yielded no batch at "
                                         r"epoch 2.*validation_steps"):
        _model().fit(X, Y, epochs=2, verbose=0, validation_data=_gen(loops=False))


def test_pydataset_argument_checks():
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        _DS(workers=0)

    class NoLen(PyDataset):
        pass
    with pytest.raises(TypeError, match="len\\(\\) of PyDataset NoLen failed"):
        _model().fit(NoLen(), verbose=0)


@pytest.mark.parametrize("shuffle", [False, True])
def test_uint8_memmap_read_batchwise_same_weights(tmp_path, shuffle):
    import tracemalloc
    n = 40000
    rng = np.random.default_rng(1)
    xu = rng.integers(0, 256, (n, D), dtype=np.uint8)
    y = rng.integers(0, C, n)
    path = tmp_path / "x.u8"
    mm = np.memmap(path, dtype=np.uint8, mode="w+", shape=xu.shape)
    mm[:] = xu
    mm.flush()
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=xu.shape)
    m1 = _model()
    h1 = m1.fit(xu.astype(np.float32), y, batch_size=BS, epochs=2, shuffle=shuffle, verbose=0)
    m2 = _model()
    yl = y.tolist()
    tracemalloc.start()
    h2 = m2.fit(mm, yl, batch_size=BS, epochs=2, shuffle=shuffle, verbose=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    _same(m2, m1.get_weights())
    _same_history(h2.history, h1.history)
    assert peak < n * D * 4 / 2            # never the whole file as float32
    with pytest.raises(ValueError, match="x and y have different lengths"):
        _model().fit(mm, y[:-1], verbose=0)
