"""State after Ctrl-C and after a diverging update.

SIGINT is sent to a training child process at random moments; after the
KeyboardInterrupt the model must be exactly the state after the last
completed step (weights, optimizer slots and iterations, batch-end callbacks,
random streams): the same bits as an uninterrupted run stopped after that
many steps, and it goes on training identically. An optimizer update that
overflows although its loss was finite raises NonFiniteParametersError."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastgrad as fg
import fastgrad._config as cfg
from fastgrad.engine.step import NonFiniteLossError, NonFiniteParametersError

from conftest import backends

_SETUP = textwrap.dedent("""
    import json, sys, numpy as np, fastgrad as fg
    import fastgrad._config as cfg
    backend, use_cb = sys.argv[1], sys.argv[2] == "1"
    cfg.set_backend(backend)
    fg.set_seed(0)
    r = np.random.default_rng(0)
    x = r.normal(size=(640, 20)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    m = fg.Sequential([fg.layers.Dense(32, activation="relu", input_shape=(20,)),
                       fg.layers.Dropout(0.2), fg.layers.Dense(3, activation="softmax")])
    m.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    count = [0]

    class Count(fg.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            count[0] += 1

    def state():
        opt = m.optimizer.get_state()
        return {"it": int(m.optimizer.iterations), "cb": count[0],
                "w": [w.tobytes().hex() for w in m.get_weights()],
                "slots": {k: np.asarray(v).tobytes().hex() for k, v in opt.items()
                          if k != "iterations"}}
""")

_CHILD = _SETUP + textwrap.dedent("""
    print("ready", flush=True)
    try:
        m.fit(x, y, epochs=100000, batch_size=32, verbose=0, callbacks=[Count()] if use_cb else None)
    except KeyboardInterrupt:
        pass
    before = state()
    m.fit(x, y, epochs=1, batch_size=32, verbose=0)      # goes on from the interrupted state
    print(json.dumps({"before": before, "after": state()}), flush=True)
""")

_REFERENCE = _SETUP + textwrap.dedent("""
    steps = int(sys.argv[3])

    class Stop(fg.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(m.optimizer.iterations) >= steps:
                self.model.stop_training = True

    if steps:
        m.fit(x, y, epochs=100000, batch_size=32, verbose=0, callbacks=[Count(), Stop()])
    before = state()
    m.fit(x, y, epochs=1, batch_size=32, verbose=0)
    print(json.dumps({"before": before, "after": state()}), flush=True)
""")


def _env():
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.parametrize("backend", backends())
def test_sigint_at_random_moments_leaves_a_completed_step(backend):
    rng = np.random.default_rng(7)
    trials = 6 if backend == "native" else 3
    for t in range(trials):
        use_cb = t % 2
        child = subprocess.Popen([sys.executable, "-c", _CHILD, backend, str(use_cb)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=_env())
        assert child.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.2, 0.8)))
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        got = json.loads(out.strip().splitlines()[-1])
        steps = got["before"]["it"]
        if use_cb:
            assert got["before"]["cb"] == steps        # every counted step had its callback
        ref = subprocess.run([sys.executable, "-c", _REFERENCE, backend, "0", str(steps)],
                             capture_output=True, text=True, env=_env(), timeout=120)
        assert ref.returncode == 0, ref.stderr
        want = json.loads(ref.stdout.strip().splitlines()[-1])
        assert got["before"]["w"] == want["before"]["w"], f"trial {t}: weights != {steps} steps"
        assert got["before"]["slots"] == want["before"]["slots"], f"trial {t}: optimizer slots"
        assert got["after"]["w"] == want["after"]["w"], f"trial {t}: training after the interrupt"


@pytest.fixture(params=backends())
def backend(request):
    with cfg.use_backend(request.param):
        yield request.param


def _overflow_model(lr=1e38):
    fg.set_seed(1)
    m = fg.Sequential([fg.layers.Dense(8, activation="relu", input_shape=(4,)),
                       fg.layers.Dense(1)])
    m.compile(fg.optimizers.SGD(learning_rate=lr), "mse")
    return m


def _data(n=64):
    r = np.random.default_rng(0)
    x = r.normal(size=(n, 4)).astype(np.float32)
    return x, (x.sum(1, keepdims=True) * 1e4).astype(np.float32)


def test_overflowing_update_is_reported_not_hidden(backend):
    m = _overflow_model()
    x, y = _data()
    with pytest.raises(NonFiniteParametersError, match="weights became NaN or inf.*overflowed") as ei:
        m.fit(x, y, epochs=3, batch_size=16, verbose=0)
    assert "dense" in str(ei.value)
    assert isinstance(ei.value, NonFiniteLossError)           # still caught by the old handlers
    assert not all(np.isfinite(w).all() for w in m.get_weights())


def test_overflow_on_the_last_step_is_caught_at_epoch_end(backend):
    m = _overflow_model()
    x, y = _data(16)
    with pytest.raises(NonFiniteParametersError, match="at the end of epoch 1"):
        m.fit(x, y, epochs=1, batch_size=16, verbose=0)


def test_train_on_batch_reports_an_overflowing_update(backend):
    m = _overflow_model()
    x, y = _data(16)
    with pytest.raises(NonFiniteParametersError, match="train_on_batch.*after this batch"):
        m.train_on_batch(x, y)


def test_non_finite_loss_keeps_the_last_good_step(backend):
    """The promise for a non-finite loss stays true: that step is not applied."""
    m = _overflow_model(lr=1e-3)
    x, y = _data(32)
    m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    good = [w.copy() for w in m.get_weights()]
    x_bad = x.copy()
    x_bad[20] = 3e38                      # finite input that overflows the forward pass
    with pytest.raises(NonFiniteLossError, match="batch 1") as ei:
        m.fit(x_bad, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    assert not isinstance(ei.value, NonFiniteParametersError)
    w = m.get_weights()
    assert all(np.isfinite(a).all() for a in w)
    assert not all(np.array_equal(a, b) for a, b in zip(w, good))   # batch 0 was applied
