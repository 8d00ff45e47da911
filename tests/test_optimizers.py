"""Optimizers: several steps against hand-written float64 Keras-3 updates,
weight decay, clipping, schedules, state round trip, hyper-parameter
validation, and (marker `torch`) torch.optim as an oracle."""
import math

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _config
from fastgrad.optimizers import SGD, Adagrad, RMSprop, Adam, AdamW

from conftest import backends

N = 37


class Ref:
    """float64 Keras 3 update rules (the documented semantics)."""

    def __init__(self, kind, **hp):
        self.kind, self.hp, self.t = kind, hp, 0
        self.s = {}

    def step(self, p, g, lr):
        hp, s = self.hp, self.s
        wd = hp.get("weight_decay") or 0.0
        p = p * (1 - lr * wd) if wd else p.copy()
        k = self.kind
        if k == "sgd":
            mu = hp.get("momentum", 0.0)
            if mu:
                v = s.get("v", np.zeros_like(p))
                v = mu * v - lr * g
                s["v"] = v
                p = p + (mu * v - lr * g if hp.get("nesterov") else v)
            else:
                p = p - lr * g
        elif k == "adagrad":
            a = s.get("a", np.full_like(p, hp.get("initial_accumulator_value", 0.1)))
            a = a + g * g
            s["a"] = a
            p = p - lr * g / np.sqrt(a + hp.get("epsilon", 1e-7))
        elif k == "rmsprop":
            rho, eps, mu = hp.get("rho", 0.9), hp.get("epsilon", 1e-7), hp.get("momentum", 0.0)
            v = rho * s.get("v", np.zeros_like(p)) + (1 - rho) * g * g
            s["v"] = v
            if hp.get("centered"):
                mg = rho * s.get("mg", np.zeros_like(p)) + (1 - rho) * g
                s["mg"] = mg
                den = v - mg * mg + eps
            else:
                den = v + eps
            inc = lr * g / np.sqrt(den)
            if mu:
                m = mu * s.get("m", np.zeros_like(p)) + inc
                s["m"] = m
                p = p - m
            else:
                p = p - inc
        elif k == "adam":
            b1, b2, eps = hp.get("beta_1", 0.9), hp.get("beta_2", 0.999), hp.get("epsilon", 1e-7)
            t = self.t + 1
            m = s.get("m", np.zeros_like(p)) + (g - s.get("m", np.zeros_like(p))) * (1 - b1)
            v = s.get("v", np.zeros_like(p)) + (g * g - s.get("v", np.zeros_like(p))) * (1 - b2)
            s["m"], s["v"] = m, v
            alpha = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            p = p - alpha * m / (np.sqrt(v) + eps)
        self.t += 1
        return p


CONFIGS = [
    ("sgd", SGD, dict(learning_rate=0.1)),
    ("sgd", SGD, dict(learning_rate=0.05, momentum=0.9)),
    ("sgd", SGD, dict(learning_rate=0.05, momentum=0.8, nesterov=True)),
    ("sgd", SGD, dict(learning_rate=0.05, momentum=0.9, weight_decay=0.1)),
    ("adagrad", Adagrad, dict(learning_rate=0.1)),
    ("adagrad", Adagrad, dict(learning_rate=0.1, initial_accumulator_value=0.5, epsilon=1e-3)),
    ("rmsprop", RMSprop, dict(learning_rate=0.01)),
    ("rmsprop", RMSprop, dict(learning_rate=0.01, rho=0.8, momentum=0.5)),
    ("rmsprop", RMSprop, dict(learning_rate=0.01, centered=True, epsilon=1e-3)),
    ("rmsprop", RMSprop, dict(learning_rate=0.01, centered=True, momentum=0.9, weight_decay=0.01)),
    ("adam", Adam, dict(learning_rate=0.01)),
    ("adam", Adam, dict(learning_rate=0.02, beta_1=0.8, beta_2=0.99, epsilon=1e-4)),
    ("adam", Adam, dict(learning_rate=0.01, weight_decay=0.05)),
    ("adam", AdamW, dict(learning_rate=0.01)),   # weight_decay defaults to 0.004
]


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("kind,cls,hp", CONFIGS)
def test_update_matches_float64_reference(backend, kind, cls, hp):
    rng = np.random.default_rng(len(str(hp)))
    opt = cls(**hp)
    ref_hp = dict(hp)
    if cls is AdamW:
        ref_hp["weight_decay"] = 0.004
    ref = Ref(kind, **ref_hp)
    p = rng.standard_normal(N).astype(np.float32)
    p64 = p.astype(np.float64)
    ops = _config.get_ops(backend)
    for _ in range(6):
        g = rng.standard_normal(N).astype(np.float32)
        opt.apply_gradients(ops, p, g.copy())
        p64 = ref.step(p64, g.astype(np.float64), hp["learning_rate"])
    assert opt.iterations == 6
    np.testing.assert_allclose(p, p64, rtol=2e-5, atol=2e-6)


def test_learning_rate_schedule_and_assignment():
    rng = np.random.default_rng(0)
    sched = fg.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    opt = SGD(learning_rate=sched)
    assert opt.learning_rate is sched
    p = np.zeros(N, np.float32)
    ops = _config.get_ops("numpy")
    g = np.ones(N, np.float32)
    for _ in range(3):
        opt.apply_gradients(ops, p, g.copy())
    np.testing.assert_allclose(p, -(0.1 + 0.05 + 0.025), rtol=1e-6)
    # callbacks (ReduceLROnPlateau) assign floats
    opt2 = Adam(0.01)
    opt2.learning_rate = 0.001
    assert opt2.learning_rate == 0.001
    opt2.learning_rate = np.float32(0.5)
    assert opt2.learning_rate == 0.5
    with pytest.raises(ValueError):
        opt2.learning_rate = -1.0
    del rng


@pytest.mark.parametrize("mode", ["clipnorm", "global_clipnorm", "clipvalue"])
def test_clipping(mode):
    ops = _config.get_ops("numpy")
    opt = SGD(1.0, **{mode: 1.0})
    p = np.zeros(6, np.float32)
    g = np.array([3, 4, 0, 0, 0, 0.5], np.float32)
    views = [g[:3], g[3:]]
    opt.apply_gradients(ops, p, g, views)
    if mode == "clipnorm":        # per tensor: [3,4,0] -> norm 1; [0,0,.5] unchanged
        np.testing.assert_allclose(-p, [0.6, 0.8, 0, 0, 0, 0.5], rtol=1e-6)
    elif mode == "global_clipnorm":
        n = math.sqrt(25.25)
        np.testing.assert_allclose(-p, np.array([3, 4, 0, 0, 0, 0.5]) / n, rtol=1e-6)
    else:
        np.testing.assert_allclose(-p, [1, 1, 0, 0, 0, 0.5], rtol=1e-6)


def test_clipnorm_in_model_is_per_tensor():
    m = fg.Sequential([fg.layers.Dense(3, input_shape=(4,))])
    m.compile(optimizer=SGD(1.0, clipnorm=1e-3), loss="mse")
    before = m.get_weights()
    x = np.ones((8, 4), np.float32) * 10
    m.train_on_batch(x, np.zeros((8, 3), np.float32) + 100)
    after = m.get_weights()
    for b, a in zip(before, after):
        assert np.linalg.norm(a - b) == pytest.approx(1e-3, rel=1e-3)


def test_state_round_trip_resumes_exactly():
    rng = np.random.default_rng(1)
    ops = _config.get_ops("numpy")
    p = rng.standard_normal(N).astype(np.float32)
    grads = [rng.standard_normal(N).astype(np.float32) for _ in range(6)]
    a = Adam(0.01)
    pa = p.copy()
    for g in grads:
        a.apply_gradients(ops, pa, g.copy())
    b = Adam(0.01)
    pb = p.copy()
    for g in grads[:3]:
        b.apply_gradients(ops, pb, g.copy())
    st = b.get_state()
    assert st["iterations"] == 3 and set(st) == {"iterations", "m", "v"}
    c = Adam(0.01)
    c.set_state(st)
    for g in grads[3:]:
        c.apply_gradients(ops, pb, g.copy())
    np.testing.assert_array_equal(pa, pb)
    with pytest.raises(ValueError, match="slots"):
        Adam().set_state({"iterations": 1, "m": np.zeros(3)})
    with pytest.raises(ValueError, match="sizes|match"):
        c.set_state({"iterations": 1, "m": np.zeros(3), "v": np.zeros(3)})


@pytest.mark.parametrize("make", [
    lambda: SGD(learning_rate=-0.1),
    lambda: SGD(momentum=1.5),
    lambda: SGD(momentum=-0.1),
    lambda: Adam(beta_1=1.0),
    lambda: Adam(beta_2=-0.1),
    lambda: Adam(epsilon=-1.0),
    lambda: Adam(learning_rate=float("nan")),
    lambda: RMSprop(rho=2.0),
    lambda: Adagrad(initial_accumulator_value=-1.0),
    lambda: Adam(clipnorm=0.0),
    lambda: Adam(clipnorm=1.0, clipvalue=1.0),
    lambda: SGD(weight_decay=-0.1),
    lambda: Adam(amsgrad=True, beta_1=1.5),
])
def test_invalid_hyper_parameters(make):
    with pytest.raises(ValueError):
        make()


def test_get_names_and_config():
    for name, cls in [("sgd", SGD), ("adam", Adam), ("AdamW", AdamW), ("rmsprop", RMSprop),
                      ("adagrad", Adagrad)]:
        assert type(fg.optimizers.get(name)) is cls
    with pytest.raises(ValueError, match="unknown optimizer"):
        fg.optimizers.get("adamax2")
    with pytest.raises(TypeError):
        SGD(lr_typo=3)
    o = RMSprop(0.003, rho=0.8, centered=True, clipnorm=2.0)
    c = fg.optimizers.deserialize(fg.optimizers.serialize(o))
    assert c.get_config() == o.get_config()
    s = SGD(fg.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9))
    c = fg.optimizers.deserialize(fg.optimizers.serialize(s))
    assert c.learning_rate(10) == pytest.approx(0.09)
    # Keras defaults
    assert SGD().learning_rate == 0.01 and Adam().learning_rate == 0.001
    assert Adagrad().initial_accumulator_value == 0.1 and AdamW().weight_decay == 0.004


def test_frozen_layer_is_not_updated():
    m = fg.Sequential([fg.layers.Dense(4, activation="tanh", input_shape=(3,)),
                       fg.layers.Dense(2)])
    m.layers[0].trainable = False
    m.compile(optimizer=AdamW(0.1), loss="mse")
    w0 = m.get_weights()
    x = np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32)
    m.fit(x, np.ones((16, 2), np.float32), epochs=2, verbose=0)
    w1 = m.get_weights()
    np.testing.assert_array_equal(w0[0], w1[0])
    np.testing.assert_array_equal(w0[1], w1[1])
    assert not np.array_equal(w0[2], w1[2])


# ------------------------------------------------------------------ torch oracle
@pytest.mark.torch
@pytest.mark.parametrize("case", ["sgd", "sgd_mom", "nesterov", "adagrad", "rmsprop",
                                  "rmsprop_centered_mom", "adam", "adamw"])
def test_matches_torch_optim(case):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal(N)
    grads = [rng.standard_normal(N) for _ in range(8)]
    tiny = 1e-12   # eps placement differs (Keras: inside sqrt / "epsilon hat"); make it vanish
    if case == "sgd":
        ours, theirs = SGD(0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)
    elif case == "sgd_mom":
        ours, theirs = SGD(0.1, momentum=0.9), lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9)
    elif case == "nesterov":
        ours = SGD(0.1, momentum=0.9, nesterov=True)
        theirs = lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True)
    elif case == "adagrad":
        ours = Adagrad(0.1, initial_accumulator_value=0.1, epsilon=tiny)
        theirs = lambda ps: torch.optim.Adagrad(ps, lr=0.1, initial_accumulator_value=0.1, eps=tiny)
    elif case == "rmsprop":
        ours = RMSprop(0.01, rho=0.9, epsilon=tiny)
        theirs = lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=tiny)
    elif case == "rmsprop_centered_mom":
        ours = RMSprop(0.01, rho=0.9, momentum=0.5, centered=True, epsilon=tiny)
        theirs = lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=tiny, momentum=0.5,
                                                centered=True)
    elif case == "adam":
        ours = Adam(0.01, epsilon=tiny)
        theirs = lambda ps: torch.optim.Adam(ps, lr=0.01, eps=tiny)
    else:
        ours = AdamW(0.01, weight_decay=0.1, epsilon=tiny)
        theirs = lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1, eps=tiny)
    tp = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    topt = theirs([tp])
    p = p0.astype(np.float32)
    ops = _config.get_ops("numpy")
    for g in grads:
        tp.grad = torch.tensor(g, dtype=torch.float64)
        topt.step()
        ours.apply_gradients(ops, p, g.astype(np.float32))
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-4, atol=1e-5)


DECAYING = [(SGD, dict(learning_rate=0.05, momentum=0.9)),
            (SGD, dict(learning_rate=0.05, momentum=0.8, nesterov=True)),
            (RMSprop, dict(learning_rate=0.01, momentum=0.5, centered=True)),
            (Adam, dict(learning_rate=0.01)),
            (AdamW, dict(learning_rate=0.01))]


@pytest.mark.parametrize("cls,hp", DECAYING, ids=lambda v: getattr(v, "__name__", ""))
def test_decaying_state_underflows_to_zero_not_into_denormals(cls, hp):
    """A dead unit (gradient 0 from some step on) makes momentum / m / v decay
    geometrically. Under plain IEEE arithmetic the state would end in the
    denormal range and stay there (x86 arithmetic on it ~20x slower); the
    rule is that state below the smallest normal float is stored as 0, on
    both backends alike."""
    tiny = np.finfo(np.float32).tiny
    runs = {}
    for backend in backends():
        ops = _config.get_ops(backend)
        rng = np.random.default_rng(1)
        opt = cls(**hp)
        p = rng.standard_normal(N).astype(np.float32)
        for step in range(1500):
            g = rng.standard_normal(N).astype(np.float32) if step < 3 else np.zeros(N, np.float32)
            g[:5] = 1e-3                      # live units keep a normal state throughout
            opt.apply_gradients(ops, p, g)
        states = {k: np.array(v) for k, v in opt.slots.items()}
        decaying = [a for k, a in states.items() if "accum" not in k]
        assert decaying
        for a in decaying:
            dead = np.abs(a[5:])
            assert not np.any((dead > 0) & (dead < tiny)), "denormal optimizer state"
            assert np.all(np.abs(a[:5]) >= tiny) and np.all(a[:5] != 0)
        assert any(np.all(a[5:] == 0) for a in decaying)       # the dead units' state reached 0
        runs[backend] = (p.copy(), states)
    if len(runs) == 2:   # the backends agree (to float32 rounding: the NumPy one keeps lr in double)
        (p0, s0), (p1, s1) = runs.values()
        np.testing.assert_allclose(p1, p0, rtol=1e-4)
        for k in s0:
            assert np.array_equal(s0[k] == 0, s1[k] == 0), k
            np.testing.assert_allclose(s1[k], s0[k], rtol=1e-3, err_msg=k)
