"""Learning-rate schedules: values at given steps against hand-written float64
formulas (Keras semantics), config round trips, argument validation, and
PyTorch's schedulers where the two correspond (marker `torch`)."""
import math

import pytest

import fastgrad.optimizers.schedules as S

STEPS = [0, 1, 2, 3, 7, 9, 10, 11, 99, 100, 101, 1000, 12345]


@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_decay(staircase):
    s = S.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5, staircase=staircase)
    for t in STEPS:
        p = t // 10 if staircase else t / 10
        assert s(t) == pytest.approx(0.1 * 0.5 ** p, rel=1e-12, abs=0)
    assert s(0) == 0.1
    assert s(10) == pytest.approx(0.05)
    assert isinstance(s(3), float)


@pytest.mark.parametrize("staircase", [False, True])
def test_inverse_time_decay(staircase):
    s = S.InverseTimeDecay(0.2, decay_steps=4, decay_rate=0.5, staircase=staircase)
    for t in STEPS:
        p = t // 4 if staircase else t / 4
        assert s(t) == pytest.approx(0.2 / (1 + 0.5 * p), rel=1e-12)
    assert s(4) == pytest.approx(0.2 / 1.5)


def test_piecewise_constant_boundaries_are_inclusive_on_the_left_piece():
    s = S.PiecewiseConstantDecay([10, 20], [1.0, 0.5, 0.1])
    expect = {0: 1.0, 9: 1.0, 10: 1.0, 11: 0.5, 20: 0.5, 21: 0.1, 10 ** 6: 0.1}
    for t, v in expect.items():
        assert s(t) == v, t
    assert s(10.5) == 0.5


def _cosine_ref(t, lr0, n, alpha, target=None, warm=0):
    if target is None:
        t = min(t, n)
        return lr0 * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * t / n)) + alpha)
    t = min(t, n + warm)
    if t < warm:
        return lr0 + (target - lr0) * t / warm
    t -= warm
    return target * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * t / n)) + alpha)


@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_cosine_decay(alpha):
    s = S.CosineDecay(0.5, decay_steps=100, alpha=alpha)
    for t in STEPS:
        assert s(t) == pytest.approx(_cosine_ref(t, 0.5, 100, alpha), rel=1e-12, abs=1e-15)
    assert s(0) == pytest.approx(0.5)
    assert s(50) == pytest.approx(0.5 * ((1 - alpha) * 0.5 + alpha))
    assert s(100) == pytest.approx(0.5 * alpha, abs=1e-15)
    assert s(10 ** 6) == pytest.approx(0.5 * alpha, abs=1e-15)


def test_cosine_decay_warmup():
    s = S.CosineDecay(0.0, decay_steps=90, alpha=0.05, warmup_target=1.0, warmup_steps=10)
    assert s(0) == 0.0
    assert s(5) == pytest.approx(0.5)
    assert s(10) == pytest.approx(1.0)
    for t in STEPS:
        assert s(t) == pytest.approx(_cosine_ref(t, 0.0, 90, 0.05, 1.0, 10), rel=1e-12, abs=1e-15)
    assert s(100) == pytest.approx(0.05)
    assert s(5000) == pytest.approx(0.05)


def test_polynomial_decay():
    s = S.PolynomialDecay(1.0, decay_steps=10, end_learning_rate=0.1, power=2.0)
    for t in STEPS:
        tt = min(t, 10)
        assert s(t) == pytest.approx(0.9 * (1 - tt / 10) ** 2 + 0.1, rel=1e-12)
    c = S.PolynomialDecay(1.0, decay_steps=10, end_learning_rate=0.0, power=1.0, cycle=True)
    assert c(0) == 1.0
    assert c(5) == pytest.approx(0.5)
    assert c(15) == pytest.approx(1 - 15 / 20)


@pytest.mark.parametrize("sched", [
    S.ExponentialDecay(0.1, 10, 0.9, staircase=True),
    S.InverseTimeDecay(0.1, 3, 0.2),
    S.PiecewiseConstantDecay([5, 7], [0.3, 0.2, 0.1]),
    S.CosineDecay(0.1, 50, alpha=0.2, warmup_target=0.3, warmup_steps=5),
    S.PolynomialDecay(0.1, 20, 0.01, 0.5, cycle=True),
])
def test_serialize_round_trip(sched):
    import json
    d = json.loads(json.dumps(S.serialize(sched)))
    back = S.deserialize(d)
    assert type(back) is type(sched)
    assert back.get_config() == sched.get_config()
    assert back == sched
    for t in STEPS:
        assert back(t) == sched(t)
    assert S.get(d) == sched
    assert S.get(sched) is sched
    assert type(sched).from_config(sched.get_config())(17) == sched(17)


def test_get_and_deserialize_errors():
    f = lambda step: 0.1  # noqa: E731
    assert S.get(f) is f
    with pytest.raises(ValueError, match="Could not interpret"):
        S.get(0.1)
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'Nope'"):
        S.deserialize({"class_name": "Nope", "config": {}})
    with pytest.raises(ValueError, match="class_name"):
        S.deserialize({"config": {}})

    class Mine(S.LearningRateSchedule):
        def __init__(self, lr):
            self.lr = lr

        def __call__(self, step):
            return self.lr

        def get_config(self):
            return {"lr": self.lr}

    assert S.deserialize({"class_name": "Mine", "config": {"lr": 2.0}}, custom_objects={"Mine": Mine})(3) == 2.0
    S.register(Mine)
    assert S.deserialize(S.serialize(Mine(4.0)))(0) == 4.0


@pytest.mark.parametrize("make, match", [
    (lambda: S.ExponentialDecay(-0.1, 10, 0.5), "initial_learning_rate"),
    (lambda: S.ExponentialDecay(0.1, 0, 0.5), "decay_steps"),
    (lambda: S.ExponentialDecay(0.1, 10, 0.0), "decay_rate"),
    (lambda: S.ExponentialDecay(float("nan"), 10, 0.5), "finite"),
    (lambda: S.InverseTimeDecay(0.1, -1, 0.5), "decay_steps"),
    (lambda: S.InverseTimeDecay(0.1, 1, -0.5), "decay_rate"),
    (lambda: S.PiecewiseConstantDecay([1, 2], [0.1, 0.2]), "len\\(values\\)"),
    (lambda: S.PiecewiseConstantDecay([2, 1], [0.1, 0.2, 0.3]), "strictly increasing"),
    (lambda: S.PiecewiseConstantDecay([1], [0.1, -0.2]), "values\\[1\\]"),
    (lambda: S.CosineDecay(0.1, 0), "decay_steps"),
    (lambda: S.CosineDecay(0.1, 10, alpha=1.5), "alpha"),
    (lambda: S.CosineDecay(0.1, 10, warmup_steps=5), "warmup_target"),
    (lambda: S.CosineDecay(0.1, 10, warmup_target=1.0, warmup_steps=-1), "warmup_steps"),
    (lambda: S.PolynomialDecay(0.1, 10, power=-1), "power"),
])
def test_invalid_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_invalid_types_and_steps():
    with pytest.raises(TypeError, match="decay_steps"):
        S.ExponentialDecay(0.1, "10", 0.5)
    with pytest.raises(TypeError, match="boundaries"):
        S.PiecewiseConstantDecay(5, [0.1])
    s = S.ExponentialDecay(0.1, 10, 0.5)
    with pytest.raises(ValueError, match="step must be >= 0"):
        s(-1)
    with pytest.raises(TypeError, match="step must be a number"):
        s("x")
    import numpy as np
    assert s(np.int64(10)) == pytest.approx(0.05)


# ----------------------------------------------------------------- torch oracle
def _torch_lrs(make_sched, lr0, n):
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr0)
    sched = make_sched(torch, opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.torch
def test_vs_torch_exponential_and_step():
    ours = S.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.9)
    ref = _torch_lrs(lambda t, o: t.optim.lr_scheduler.ExponentialLR(o, gamma=0.9), 0.1, 40)
    assert [ours(i) for i in range(40)] == pytest.approx(ref, rel=1e-12)
    ours = S.ExponentialDecay(0.1, decay_steps=7, decay_rate=0.5, staircase=True)
    ref = _torch_lrs(lambda t, o: t.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5), 0.1, 40)
    assert [ours(i) for i in range(40)] == pytest.approx(ref, rel=1e-12)


@pytest.mark.torch
def test_vs_torch_cosine_annealing():
    ours = S.CosineDecay(0.1, decay_steps=30, alpha=0.1)
    ref = _torch_lrs(lambda t, o: t.optim.lr_scheduler.CosineAnnealingLR(o, T_max=30, eta_min=0.01), 0.1, 31)
    # torch evaluates the cosine recursively: agreement to rounding, not bitwise
    assert [ours(i) for i in range(31)] == pytest.approx(ref, rel=1e-9, abs=1e-12)


@pytest.mark.torch
def test_vs_torch_multistep():
    # Keras boundary b means "values[i+1] from step b+1"; torch milestone m means "from step m"
    ours = S.PiecewiseConstantDecay([4, 9], [0.1, 0.01, 0.001])
    ref = _torch_lrs(lambda t, o: t.optim.lr_scheduler.MultiStepLR(o, milestones=[5, 10], gamma=0.1), 0.1, 20)
    assert [ours(i) for i in range(20)] == pytest.approx(ref, rel=1e-12)


@pytest.mark.torch
def test_vs_torch_linear_warmup_and_inverse_time():
    ours = S.CosineDecay(0.01, decay_steps=1, alpha=1.0, warmup_target=0.1, warmup_steps=10)
    ref = _torch_lrs(lambda t, o: t.optim.lr_scheduler.LinearLR(o, start_factor=0.1, end_factor=1.0,
                                                                 total_iters=10), 0.1, 20)
    assert [ours(i) for i in range(20)] == pytest.approx(ref, rel=1e-9)
    ours = S.InverseTimeDecay(0.1, decay_steps=3, decay_rate=0.5)
    ref = _torch_lrs(lambda t, o: t.optim.lr_scheduler.LambdaLR(o, lambda e: 1 / (1 + 0.5 * e / 3)), 0.1, 20)
    assert [ours(i) for i in range(20)] == pytest.approx(ref, rel=1e-12)
