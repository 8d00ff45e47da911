"""Nadam, Adamax, Adadelta, Ftrl, Lion and Adam / AdamW with amsgrad: float64
references of Keras 3's update_step for many steps, torch.optim where it has the
same rule (torch marker), C vs NumPy (bitwise) over shapes / instruction sets /
thread counts, the compiled plan against the Python step (bitwise), config and
state round trips, and bad hyper-parameters."""
import math

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _native, _threads
from fastgrad.backend import NumpyOps
from fastgrad.engine import compiled
from fastgrad.optimizers import Adadelta, Adam, Adamax, AdamW, Ftrl, Lion, Nadam

NATIVE = _native.available("lossopt")
RT = _native.module("runtime")
ISAS = RT.isa_supported() if RT is not None else []


# ---------------------------------------------------------------- float64 references
class Ref:
    """Keras 3's update_step in float64 (keras/src/optimizers/*.py), decoupled
    weight decay applied first as Optimizer._apply_weight_decay does."""

    def __init__(self, kind, n, **hp):
        self.kind, self.hp, self.t = kind, hp, 0
        z = np.zeros(n)
        self.m, self.v, self.vh = z.copy(), z.copy(), z.copy()
        self.acc = np.full(n, hp.get("initial_accumulator_value", 0.1))
        self.lin = z.copy()
        self.u_product = 1.0

    def step(self, p, g):
        h, lr = self.hp, self.hp["lr"]
        b1, b2 = h.get("beta_1", 0.9), h.get("beta_2", 0.999)
        eps = h.get("epsilon", 1e-7)
        p = p * (1 - lr * h.get("weight_decay", 0.0))
        t = self.t + 1
        k = self.kind
        if k == "nadam":
            ut = b1 * (1 - 0.5 * 0.96 ** t)
            ut1 = b1 * (1 - 0.5 * 0.96 ** (t + 1))
            self.u_product *= ut
            up1 = self.u_product * ut1
            self.m += (g - self.m) * (1 - b1)
            self.v += (g * g - self.v) * (1 - b2)
            mh = ut1 * self.m / (1 - up1) + (1 - ut) * g / (1 - self.u_product)
            vh = self.v / (1 - b2 ** t)
            p = p - mh * lr / (np.sqrt(vh) + eps)
        elif k == "adamax":
            self.m += (g - self.m) * (1 - b1)
            self.v = np.maximum(b2 * self.v, np.abs(g))
            p = p - lr * self.m / ((1 - b1 ** t) * (self.v + eps))
        elif k == "adadelta":
            rho = h.get("rho", 0.95)
            self.m = rho * self.m + (1 - rho) * g * g
            d = -np.sqrt(self.v + eps) * g / np.sqrt(self.m + eps)
            self.v = rho * self.v + (1 - rho) * d * d
            p = p + lr * d
        elif k == "ftrl":
            lp = h.get("learning_rate_power", -0.5)
            l1 = h.get("l1_regularization_strength", 0.0)
            l2 = h.get("l2_regularization_strength", 0.0) + h.get("beta", 0.0) / (2 * lr)
            gs = g + 2 * h.get("l2_shrinkage_regularization_strength", 0.0) * p
            na = self.acc + g * g
            self.lin += gs - (na ** -lp - self.acc ** -lp) / lr * p
            q = na ** -lp / lr + 2 * l2
            p = (np.clip(self.lin, -l1, l1) - self.lin) / q
            self.acc = na
        elif k == "lion":
            b2 = h.get("beta_2", 0.99)
            p = p - lr * np.sign(self.m * b1 + g * (1 - b1))
            self.m = self.m * b2 + g * (1 - b2)
        elif k == "amsgrad":
            alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            self.m += (g - self.m) * (1 - b1)
            self.v += (g * g - self.v) * (1 - b2)
            self.vh = np.maximum(self.vh, self.v)
            p = p - self.m * alpha / (np.sqrt(self.vh) + eps)
        self.t = t
        return p


def run_fastgrad(opt, n, steps, seed=0, ops=None):
    """param trajectory of `opt` over random gradients (float32 flat buffers)."""
    r = np.random.default_rng(seed)
    p = r.standard_normal(n).astype(np.float32)
    p0 = p.copy()
    grads = [r.standard_normal(n).astype(np.float32) for _ in range(steps)]
    ops = ops or NumpyOps()
    for g in grads:
        opt.apply_gradients(ops, p, g.copy())
    return p0, grads, p


CASES = [
    ("nadam", lambda: Nadam(0.01), {"lr": 0.01}),
    ("nadam", lambda: Nadam(0.003, beta_1=0.8, beta_2=0.99, epsilon=1e-5, weight_decay=0.01),
     {"lr": 0.003, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-5, "weight_decay": 0.01}),
    ("adamax", lambda: Adamax(0.01), {"lr": 0.01}),
    ("adamax", lambda: Adamax(0.02, beta_1=0.7, weight_decay=0.1), {"lr": 0.02, "beta_1": 0.7,
                                                                    "weight_decay": 0.1}),
    ("adadelta", lambda: Adadelta(1.0), {"lr": 1.0}),
    ("adadelta", lambda: Adadelta(0.5, rho=0.9, epsilon=1e-6), {"lr": 0.5, "rho": 0.9, "epsilon": 1e-6}),
    ("ftrl", lambda: Ftrl(0.1), {"lr": 0.1}),
    ("ftrl", lambda: Ftrl(0.05, l1_regularization_strength=0.01, l2_regularization_strength=0.02,
                          l2_shrinkage_regularization_strength=0.03, beta=0.5,
                          initial_accumulator_value=0.3),
     {"lr": 0.05, "l1_regularization_strength": 0.01, "l2_regularization_strength": 0.02,
      "l2_shrinkage_regularization_strength": 0.03, "beta": 0.5, "initial_accumulator_value": 0.3}),
    ("ftrl", lambda: Ftrl(0.1, learning_rate_power=-0.7), {"lr": 0.1, "learning_rate_power": -0.7}),
    ("lion", lambda: Lion(0.001), {"lr": 0.001}),
    ("lion", lambda: Lion(0.003, beta_1=0.95, beta_2=0.98, weight_decay=0.1),
     {"lr": 0.003, "beta_1": 0.95, "beta_2": 0.98, "weight_decay": 0.1}),
    ("amsgrad", lambda: Adam(0.01, amsgrad=True), {"lr": 0.01}),
    ("amsgrad", lambda: AdamW(0.01, amsgrad=True), {"lr": 0.01, "weight_decay": 0.004}),
]


@pytest.mark.parametrize("kind,make,hp", CASES)
def test_numpy_follows_the_float64_keras_formula_for_many_steps(kind, make, hp):
    n, steps = 257, 60
    p0, grads, p = run_fastgrad(make(), n, steps)
    ref = Ref(kind, n, **hp)
    q = p0.astype(np.float64)
    for g in grads:
        q = ref.step(q, g.astype(np.float64))
    # float32 state and parameters against float64: rounding only (Lion: 60 float32
    # subtractions of lr; no sign of the interpolation flips for these gradients)
    np.testing.assert_allclose(p, q, rtol=1e-4 if kind != "lion" else 1e-5, atol=1e-5)


# ---------------------------------------------------------------- C vs NumPy
needs_native = pytest.mark.skipif(not NATIVE, reason="lossopt extension not built")


@needs_native
@pytest.mark.parametrize("kind,make,hp", CASES)
def test_c_matches_numpy_bitwise_on_every_isa_and_thread_count(kind, make, hp):
    from fastgrad.backend.native_ops import NativeOps
    orig = _native.get_isa()
    try:
        for n in (1, 7, 16, 33, 1031, 70001):
            _, _, pn = run_fastgrad(make(), n, 5, seed=n)
            for isa in ISAS:
                _native.set_isa(isa)
                for nt in (1, 2, 3):
                    _threads.set_num_threads(nt)
                    opt = make()
                    _, _, pc = run_fastgrad(opt, n, 5, seed=n, ops=NativeOps())
                    if kind == "ftrl" and hp.get("learning_rate_power", -0.5) != -0.5:
                        np.testing.assert_allclose(pc, pn, rtol=1e-5, atol=1e-6)   # pow: libm vs NumPy, then (clip(l) - l) / q cancels
                    else:
                        assert np.array_equal(pc, pn), (n, isa, nt)
    finally:
        _native.set_isa(orig)
        _threads.set_num_threads(None)


@needs_native
def test_c_kernel_refuses_bad_arguments():
    L = _native.module("lossopt")
    p = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match="invalid argument"):
        L.optx_update("ftrl_update", "ftrl", p, p.copy(), [p.copy(), p.copy()], 0.0, 1, 0.0, True, 1)
    with pytest.raises(ValueError, match="invalid argument"):
        L.optx_update("nadam_update", "nadam", p, p.copy(), [p.copy()], 0.1, 1, 0.0, True, 1)
    with pytest.raises(ValueError, match="step"):
        L.optx_update("lion_update", "lion", p, p.copy(), [p.copy()], 0.1, 0, 0.0, True, 1)
    with pytest.raises(ValueError, match="overlaps"):
        L.optx_update("lion_update", "lion", p, p.copy(), [p], 0.1, 1, 0.0, True, 1)


# ---------------------------------------------------------------- compiled == Python
def _train(make_opt, on, threads, clip=None):
    from fastgrad import _config
    r = np.random.default_rng(1)
    x = r.standard_normal((90, 8)).astype(np.float32)
    y = r.integers(0, 3, 90)
    fg.set_seed(4)
    m = fg.Sequential([fg.Input((8,)), fg.layers.Dense(16, activation="relu",
                                                      kernel_regularizer=fg.regularizers.L2(1e-3)),
                       fg.layers.Dense(3, activation="softmax")])
    opt = make_opt()
    if clip:
        setattr(opt, clip[0], clip[1])
    m.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    saved = compiled.enabled
    compiled.enabled = on
    try:
        _config.set_num_threads(threads)
        h = m.fit(x, y, batch_size=16, epochs=3, verbose=0)
        if on:
            assert compiled.unsupported_reason(m) is None
    finally:
        compiled.enabled = saved
        _config.set_num_threads(None)
    return h.history, m.get_weights(), m.optimizer.get_state()


@pytest.mark.skipif(not _native.available("step", "lossopt"), reason="native step not built")
@pytest.mark.parametrize("kind,make,hp", CASES)
# 0.7 and 0.3 are not float32 numbers: both executors clip with float32(threshold)
@pytest.mark.parametrize("clip", [None, ("clipnorm", 0.3), ("global_clipnorm", 0.7), ("clipvalue", 0.05)])
def test_compiled_step_gives_the_python_steps_bits(kind, make, hp, clip):
    from fastgrad import _config
    _config.set_backend("native")
    hp_, wp, sp = _train(make, False, 1, clip)
    for t in ((1, 2, 3) if clip is None else (2,)):
        hc, wc, sc = _train(make, True, t, clip)
        # the reported loss may differ in the last bits by the L2 penalty's rounding
        # (docs/architecture.md: C sums l * w^2 with l in float32); the training is bitwise
        assert hc["accuracy"] == hp_["accuracy"], (kind, t)
        np.testing.assert_allclose(hc["loss"], hp_["loss"], rtol=1e-8)
        assert all(np.array_equal(a, b) for a, b in zip(wp, wc)), (kind, t)
        assert set(sc) == set(sp) and all(np.array_equal(sc[k], sp[k]) for k in sp if k != "iterations")


# ---------------------------------------------------------------- torch.optim oracle
@pytest.mark.torch
@pytest.mark.parametrize("kind", ["nadam", "adamax", "adadelta", "amsgrad"])
def test_against_torch_optim(kind):
    """torch.optim in float64 where it has Keras's rule: NAdam with momentum_decay=1
    (torch's mu_t = b1 (1 - 0.5 * 0.96^(t * momentum_decay)); Keras uses 0.96^t, so
    torch's default 0.004 differs), Adadelta, Adam(amsgrad) and Adamax with eps=1e-12
    (torch puts eps inside the max / after the bias correction, Keras beside u / the
    uncorrected sqrt(v): equal up to eps)."""
    torch = pytest.importorskip("torch")
    n, steps = 50, 40
    r = np.random.default_rng(3)
    p0 = r.standard_normal(n)
    grads = [r.standard_normal(n) for _ in range(steps)]
    if kind == "nadam":
        ours = Nadam(0.01, epsilon=1e-12)
        mk = lambda ps: torch.optim.NAdam(ps, lr=0.01, eps=1e-12, momentum_decay=1.0)
    elif kind == "adamax":
        ours = Adamax(0.01, epsilon=1e-12)
        mk = lambda ps: torch.optim.Adamax(ps, lr=0.01, eps=1e-12)
    elif kind == "adadelta":
        ours = Adadelta(1.0, rho=0.9, epsilon=1e-6)
        mk = lambda ps: torch.optim.Adadelta(ps, lr=1.0, rho=0.9, eps=1e-6)
    else:
        ours = Adam(0.01, amsgrad=True, epsilon=1e-12)
        mk = lambda ps: torch.optim.Adam(ps, lr=0.01, eps=1e-12, amsgrad=True)
    tp = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    topt = mk([tp])
    p = p0.copy()             # NumpyOps runs the same rule in float64 for float64 buffers
    ours.build(p.size)        # ... with float64 state too (the update contract: one dtype)
    ours.slots = {k: v.astype(np.float64) for k, v in ours.slots.items()}
    for g in grads:
        topt.zero_grad()
        tp.grad = torch.tensor(g, dtype=torch.float64)
        topt.step()
        ours.apply_gradients(NumpyOps(), p, g.copy())
    # (NumpyOps rounds beta / rho to float32, as the C kernels take them: ~1e-8 apart)
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- config, state, errors
@pytest.mark.parametrize("kind,make,hp", CASES)
def test_config_and_state_round_trip(kind, make, hp):
    o = make()
    o2 = fg.optimizers.deserialize(fg.optimizers.serialize(o))
    assert type(o2) is type(o) and o2.get_config() == o.get_config()
    _, _, p1 = run_fastgrad(o, 20, 3)
    st = o.get_state()
    o3 = make()
    o3.set_state(st)
    r = np.random.default_rng(9)
    g = r.standard_normal(20).astype(np.float32)
    a, b = p1.copy(), p1.copy()
    o.apply_gradients(NumpyOps(), a, g.copy())
    o3.apply_gradients(NumpyOps(), b, g.copy())
    assert np.array_equal(a, b)


def test_names_and_defaults():
    for name, cls in [("nadam", Nadam), ("adamax", Adamax), ("adadelta", Adadelta), ("ftrl", Ftrl),
                      ("lion", Lion), ("Nadam", Nadam)]:
        assert type(fg.optimizers.get(name)) is cls
    assert Nadam().get_config()["beta_2"] == 0.999 and Nadam().learning_rate == 0.001
    assert Adadelta().rho == 0.95 and Adadelta().learning_rate == 0.001
    assert Lion().beta_2 == 0.99
    f = Ftrl()
    assert (f.learning_rate_power, f.initial_accumulator_value) == (-0.5, 0.1)
    assert Adam(amsgrad=True).get_config()["amsgrad"] is True
    o = Adam(amsgrad=True)
    o.build(5)
    assert sorted(o.slots) == ["m", "v", "vhat"]
    o = Ftrl(initial_accumulator_value=0.25)
    o.build(3)
    assert np.all(o.slots["accumulator"] == 0.25) and np.all(o.slots["linear"] == 0)


@pytest.mark.parametrize("make,match", [
    (lambda: Nadam(beta_1=1.0), "Nadam: beta_1"),
    (lambda: Adamax(epsilon=-1), "Adamax: epsilon"),
    (lambda: Adadelta(rho=1.5), "Adadelta: rho"),
    (lambda: Ftrl(learning_rate_power=0.5), "Ftrl: learning_rate_power"),
    (lambda: Ftrl(l1_regularization_strength=-1), "Ftrl: l1_regularization_strength"),
    (lambda: Ftrl(learning_rate=0.0), "Ftrl: learning_rate must be > 0"),
    (lambda: Lion(beta_1=0.0), "Lion: beta_1"),
    (lambda: Lion(clipnorm=1.0, clipvalue=1.0), "only one of"),
    (lambda: Nadam(weight_decay=-1), "weight_decay"),
])
def test_bad_hyper_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_save_and_load_resume_exactly(tmp_path):
    r = np.random.default_rng(0)
    x = r.standard_normal((40, 5)).astype(np.float32)
    y = r.standard_normal((40, 2)).astype(np.float32)
    for make in (lambda: Nadam(0.01), lambda: Ftrl(0.1, l1_regularization_strength=0.001),
                 lambda: Adam(0.01, amsgrad=True), lambda: Lion(0.001)):
        fg.set_seed(3)
        a = fg.Sequential([fg.Input((5,)), fg.layers.Dense(6, activation="tanh"), fg.layers.Dense(2)])
        a.compile(optimizer=make(), loss="huber")
        a.fit(x, y, epochs=1, batch_size=8, verbose=0)
        a.save(tmp_path / "m.fgm")
        a.fit(x, y, epochs=1, batch_size=8, verbose=0)
        b = fg.models.load_model(tmp_path / "m.fgm")
        assert type(b.optimizer) is type(a.optimizer)
        b.fit(x, y, epochs=1, batch_size=8, verbose=0)
        assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))


def test_nadam_cost_does_not_grow_with_the_step():
    """u_prod_t is an exact product over the first 1000 steps and b1^(t-1000)
    after (every later factor is exactly b1 in double): a late step costs what
    an early one does, and both backends agree there."""
    import time
    from fastgrad.backend.native_ops import NativeOps
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(50).astype(np.float32)
    g = rng.standard_normal(50).astype(np.float32)
    out = {}
    for ops in (NumpyOps(), NativeOps()):
        p, m, v = p0.copy(), np.full(50, 0.1, np.float32), np.full(50, 0.2, np.float32)
        t0 = time.perf_counter()
        ops.nadam_update(p, g, m, v, lr=0.01, step=10**12)
        assert time.perf_counter() - t0 < 0.5
        out[type(ops).__name__] = p
    np.testing.assert_allclose(out["NativeOps"], out["NumpyOps"], rtol=1e-6, atol=1e-7)
    # the closed-form tail equals the step-by-step product where both can run
    b1 = float(np.float32(0.9))
    seq = 1.0
    for s in range(1, 3001):
        seq *= b1 * (1.0 - 0.5 * 0.96 ** s)
    head = 1.0
    for s in range(1, 1001):
        head *= b1 * (1.0 - 0.5 * 0.96 ** s)
    assert abs(head * b1 ** 2000 - seq) <= 1e-12 * abs(seq)
