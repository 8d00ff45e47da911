"""BatchNormalization -> ReLU fused in the compiled plan (engine/compiled.py
_fuse_norm_relu, csrc/step/layer_batchnorm.c, fg_batchnorm_*_act in
csrc/kernels/norm.c): the batchnorm node applies the relu in its forward and
the relu's backward mask in its backward, and the ReLU node becomes a linear
pass-through. The plan must give the Python executor's bits (which runs the
two layers one after the other) for 1, 2 and 3 threads and on every
instruction-set path, in training, evaluate and predict; and it must fuse only
a plain relu that alone reads a batch norm's output which is no model output.
"""
import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _config
from fastgrad import _native
from fastgrad.engine import compiled

from conftest import compiled_enabled, isa_paths, native_available

pytestmark = [
    pytest.mark.skipif(
        not native_available() or fg._native.module("step") is None or fg._native.module("conv") is None,
        reason="native backend / step / conv modules not built"),
    pytest.mark.usefixtures("native_backend"),
]

L = fg.layers


def conv_bn_relu():
    """The bench_conv CIFAR pattern (Conv2D -> BN -> ReLU()) and a dense one
    (Dense -> BN(no center) -> Activation("relu")): both fused."""
    a = fg.Input(shape=(7, 6, 3))
    h = L.ReLU()(L.BatchNormalization(momentum=0.8)(L.Conv2D(5, 3, padding="same")(a)))
    h = L.MaxPooling2D()(h)
    h = L.Dense(6)(L.Flatten()(h))
    h = L.Activation("relu")(L.BatchNormalization(center=False, epsilon=1e-5)(h))
    return fg.Model(a, L.Dense(3, activation="softmax")(h)), (7, 6, 3), [True, True]


def no_affine():
    """BN without gamma and beta, and BN with gamma only, each -> ReLU (fused)."""
    a = fg.Input(shape=(5, 4, 2))
    h = L.ReLU()(L.BatchNormalization(center=False, scale=False)(L.Conv2D(4, 2)(a)))
    h = L.ReLU()(L.BatchNormalization(center=False)(L.Conv2D(3, 2, use_bias=False)(h)))
    return fg.Model(a, L.Dense(3, activation="softmax")(L.GlobalAveragePooling2D()(h))), (5, 4, 2), [True, True]


def wide():
    """16, 32 and 48 channels: the batch-norm kernels' column tile of 32
    (a specialised copy) and generic ones, depending on the thread count."""
    a = fg.Input(shape=(5, 5, 3))
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(a)))
    h = L.ReLU()(L.BatchNormalization(scale=False)(L.Conv2D(32, 3)(h)))
    h = L.Dense(48)(L.Flatten()(h))
    h = L.Activation("relu")(L.BatchNormalization()(h))
    return fg.Model(a, L.Dense(3, activation="softmax")(h)), (5, 5, 3), [True, True, True]


def frozen_bn():
    """A frozen BatchNormalization (moving statistics in training, as Keras) -> ReLU: fused."""
    a = fg.Input(shape=(6, 6, 2))
    h = L.Conv2D(4, 3, padding="same")(a)
    h = L.ReLU()(L.BatchNormalization(name="frozen_bn")(h))
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(3, 3)(h)))
    m = fg.Model(a, L.Dense(3, activation="softmax")(L.GlobalAveragePooling2D()(h)))
    m.get_layer("frozen_bn").trainable = False
    return m, (6, 6, 2), [True, True]


def bn_also_read_elsewhere():
    """The BN output feeds the ReLU and an Add (and a second ReLU after another BN
    feeds two consumers through the ReLU's output, which is fine): the first is
    not fused (the Add needs the un-rectified values), the second is."""
    a = fg.Input(shape=(6, 5, 3))
    b = L.BatchNormalization()(L.Conv2D(4, 3, padding="same")(a))
    h = L.Add()([L.ReLU()(b), b])
    r = L.ReLU()(L.BatchNormalization()(L.Conv2D(4, 3, padding="same")(h)))
    h = L.Concatenate()([r, L.Conv2D(2, 1)(r)])
    return fg.Model(a, L.Dense(3, activation="softmax")(L.GlobalAveragePooling2D()(h))), (6, 5, 3), [False, True]


def relu_variants():
    """ReLU(max_value=6), LeakyReLU, ReLU(negative_slope), ReLU(threshold),
    Activation("relu6") after BN: none fused (not the plain relu)."""
    a = fg.Input(shape=(10,))
    h = L.ReLU(max_value=6.0)(L.BatchNormalization()(L.Dense(8)(a)))
    h = L.LeakyReLU()(L.BatchNormalization()(L.Dense(8)(h)))
    h = L.ReLU(negative_slope=0.1)(L.BatchNormalization()(L.Dense(8)(h)))
    h = L.ReLU(threshold=0.25)(L.BatchNormalization()(L.Dense(8)(h)))
    h = L.Activation("relu6")(L.BatchNormalization()(L.Dense(8)(h)))
    h = L.Activation("tanh")(L.BatchNormalization()(L.Dense(8)(h)))
    return fg.Model(a, L.Dense(3, activation="softmax")(h)), (10,), [False] * 6


def bn_is_an_output():
    """A BN output that is also a model output is not fused; a ReLU that is the
    model output (after a BN only it reads) is."""
    a = fg.Input(shape=(9,))
    b = L.BatchNormalization()(L.Dense(6)(a))
    h = L.ReLU()(b)
    out2 = L.ReLU()(L.BatchNormalization()(L.Dense(4)(h)))
    return fg.Model(a, [b, out2]), (9,), [False, True]


MODELS = {"conv_bn_relu": conv_bn_relu, "no_affine": no_affine, "wide": wide, "frozen_bn": frozen_bn,
          "bn_also_read_elsewhere": bn_also_read_elsewhere, "relu_variants": relu_variants,
          "bn_is_an_output": bn_is_an_output}


def _build(name):
    m, shape, fused = MODELS[name]()
    if len(m.outputs) > 1:
        m.compile(optimizer=fg.optimizers.Adam(0.01), loss=["mse", "mse"])
    else:
        m.compile(optimizer=fg.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return m, shape, fused


def _data(m, shape, n=37, seed=0):
    r = np.random.default_rng(seed)
    x = r.standard_normal((n,) + shape).astype(np.float32)
    if len(m.outputs) > 1:
        return x, [r.standard_normal((n,) + tuple(o.shape[1:])).astype(np.float32) for o in m.outputs]
    return x, r.integers(0, 3, n)


def _bn_acts(m):
    """(batchnorm act is relu, its reader is linear) per batchnorm node of the plan, in node order."""
    mod = _native.module("step")
    spec = compiled._analyse(m, True)
    nodes = spec["graph"]["nodes"]
    n_in = len(spec["graph"]["inputs"])
    out = []
    for i, d in enumerate(nodes):
        if d["kind"] != mod.LAYER_KINDS["batchnorm"]:
            continue
        fused = d["act"] == mod.ACTIVATIONS["relu"]
        if fused:
            readers = [r for r in nodes if n_in + i in r["inputs"]]
            assert len(readers) == 1 and readers[0]["act"] == mod.ACTIVATIONS["linear"]
        out.append(fused)
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fuses_only_a_plain_relu_that_alone_reads_the_norm(name):
    m, _, fused = _build(name)
    with compiled_enabled(True):
        assert _bn_acts(m) == fused
        saved = compiled.fuse_bn_relu
        compiled.fuse_bn_relu = False
        try:
            assert _bn_acts(m) == [False] * len(fused)
        finally:
            compiled.fuse_bn_relu = saved


def _run(name, on, threads, epochs=2):
    _config.set_num_threads(threads)
    fg.set_seed(3)
    m, shape, _ = _build(name)
    x, y = _data(m, shape)
    with compiled_enabled(on):
        fg.set_seed(11)
        h = m.fit(x, y, batch_size=8, epochs=epochs, verbose=0)
        ev = m.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
        # one batch of 21 rows, as the plan's one chunk: the conv kernels' bits may
        # depend on the rows per call (a Conv2D's predict of 8-row batches differs
        # from a 21-row chunk in the last bit on some shapes / ISAs, fusion or not)
        pr = m.predict(x[:21], batch_size=32, verbose=0)
        plan = m.__dict__.get("_fg_train_plan", (None, None))[1]
        if on:
            assert plan is not None, compiled.unsupported_reason(m)
        else:
            assert plan is None
    states = [np.copy(v) for layer in m.layers for v in getattr(layer, "state", {}).values()]
    return m, h.history, ev, pr, states


def _same(got, ref, where):
    assert all(np.array_equal(u, v) for u, v in zip(got[0].get_weights(), ref[0].get_weights())), where
    # logs in order (per-output keys carry the layer names, which differ between builds)
    assert list(got[1].values()) == list(ref[1].values()), where
    assert list(got[2].values()) == list(ref[2].values()), where
    prs = (got[3], ref[3]) if isinstance(ref[3], list) else ([got[3]], [ref[3]])
    assert all(np.array_equal(u, v) for u, v in zip(*prs)), where
    assert all(np.array_equal(u, v) for u, v in zip(got[4], ref[4])), where


@pytest.mark.parametrize("name", sorted(MODELS))
def test_plan_matches_python_step_bitwise(name):
    """Weights, moving statistics, training logs, evaluate and predict: the
    Python executor's bits (BN then ReLU as two layers) for 1, 2 and 3 threads."""
    ref = _run(name, False, 1)
    for threads in (1, 2, 3):
        _same(_run(name, True, threads), ref, threads)


@pytest.mark.parametrize("name", ["conv_bn_relu", "no_affine", "wide", "frozen_bn"])
def test_plan_matches_python_step_on_every_isa(name, each_isa):
    for isa in isa_paths():
        _native.set_isa(isa)
        ref = _run(name, False, 2, epochs=1)
        _same(_run(name, True, 2, epochs=1), ref, isa)


def test_signed_zero_and_exact_zero_through_the_fused_relu():
    """Constant channels normalise to exactly 0 (x - mean = 0); a negative gamma
    makes that -0 (kept by relu: max(0, -0) is -0 as fg_act_forward computes
    it) and the backward mask is 0 there: still the unfused bits."""
    def build():
        fg.set_seed(4)
        a = fg.Input(shape=(4, 4, 3))
        h = L.ReLU()(L.BatchNormalization(center=False, name="bn")(a))
        h = L.ReLU()(L.BatchNormalization(name="bn2")(L.Conv2D(3, 1)(h)))
        m = fg.Model(a, L.Dense(2, activation="softmax")(L.Flatten()(h)))
        m.compile(optimizer=fg.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
        m.get_layer("bn").params["gamma"][...] = np.array([-1.0, 2.0, -0.5], np.float32)
        return m

    r = np.random.default_rng(1)
    x = r.standard_normal((16, 4, 4, 3)).astype(np.float32)
    x[..., 0] = 1.25            # constant channel: normalised to 0 * rstd * gamma = -0
    x[:, :2, :, 1] = 0.5
    y = r.integers(0, 2, 16)
    outs = []
    for on in (False, True):
        m = build()
        with compiled_enabled(on):
            if on:
                assert _bn_acts(m) == [True, True]
            m.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
            p = m.predict(x, verbose=0)
        outs.append((m.get_weights(), p))
    assert all(np.array_equal(u, v) for u, v in zip(outs[0][0], outs[1][0]))
    assert np.array_equal(outs[0][1], outs[1][1])


def test_batchnorm_kind_refuses_other_activations():
    """The batchnorm kind's check takes linear or relu only (nothing else is fused)."""
    m, _, _ = _build("conv_bn_relu")
    mod = _native.module("step")
    with compiled_enabled(True):
        spec = compiled._analyse(m, True)
        bn = [d for d in spec["graph"]["nodes"] if d["kind"] == mod.LAYER_KINDS["batchnorm"]][0]
        bn["act"] = mod.ACTIVATIONS["relu6"]
        with pytest.raises(compiled.NoCPath, match=bn["name"]):
            compiled._make_net(m, spec, True)
