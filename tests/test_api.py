"""Top-level API: backend selection, fg.ops, threads, seed, show_config and
the `python -m fastgrad info/demo` commands."""
import io
import os
import subprocess
import sys

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _config

from conftest import native_available



def _env(**kw):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(fg.__path__[0])] +
                                        [p for p in [env.get("PYTHONPATH")] if p])
    env.update(kw)
    return env


def test_public_names():
    for name in ["Sequential", "Model", "Input", "layers", "losses", "metrics", "optimizers",
                 "initializers", "regularizers", "activations", "callbacks", "set_backend",
                 "get_backend", "use_backend", "set_num_threads", "get_num_threads", "set_seed",
                 "show_config", "load_model", "__version__"]:
        assert hasattr(fg, name), name
    assert fg.layers.Dense and fg.layers.Activation and fg.layers.Flatten
    assert fg.losses.SparseCategoricalCrossentropy and fg.optimizers.AdamW
    assert fg.metrics.AUC and fg.initializers.HeNormal and fg.regularizers.L1L2


def test_ops_follows_active_backend():
    with fg.use_backend("numpy"):
        assert fg.ops is _config.get_ops("numpy")
        assert fg.ops.name == "numpy"
        assert fg.get_backend() == "numpy"
    if native_available():
        with fg.use_backend("native"):
            assert fg.ops.name == "native"
            from fastgrad.backend import NativeOps
            assert isinstance(fg.ops, NativeOps)


def test_set_backend_validation_and_switch():
    with pytest.raises(ValueError, match="unknown backend"):
        fg.set_backend("cuda")
    fg.set_backend("numpy")
    assert fg.get_backend() == "numpy" and fg.ops.name == "numpy"
    # a model follows the backend active at each call
    m = fg.Sequential([fg.layers.Dense(2, input_shape=(3,))])
    m.predict(np.ones((1, 3), np.float32))
    assert m.layers[0].ops.name == "numpy"


def test_env_backend_selection():
    code = "import fastgrad as fg; print(fg.get_backend(), fg.ops.name)"
    r = subprocess.run([sys.executable, "-c", code], env=_env(FASTGRAD_BACKEND="numpy"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["numpy", "numpy"]
    r = subprocess.run([sys.executable, "-c", code], env=_env(FASTGRAD_BACKEND="bogus"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "FASTGRAD_BACKEND" in r.stderr


def test_threads():
    fg.set_num_threads(3)
    assert fg.get_num_threads() == 3
    fg.set_num_threads(None)
    assert fg.get_num_threads() >= 1
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError):
            fg.set_num_threads(bad)


def test_seed():
    fg.set_seed(5)
    assert fg.get_seed() == 5
    a = fg.Sequential([fg.layers.Dense(4, input_shape=(3,))]).get_weights()
    fg.set_seed(5)
    b = fg.Sequential([fg.layers.Dense(4, input_shape=(3,))]).get_weights()
    np.testing.assert_array_equal(a[0], b[0])
    with pytest.raises(ValueError):
        fg.set_seed(-1)


def test_show_config():
    buf = io.StringIO()
    fg.show_config(file=buf)
    out = buf.getvalue()
    for key in ("fastgrad:", "backend:", "threads:"):
        assert key in out
    info = fg.config_info()
    assert info["fastgrad"] == fg.__version__
    if fg._native.module("runtime") is not None:
        for key in ("isa", "openmp compiled", "compiler", "flags"):
            assert key in info


def test_cli_info():
    r = subprocess.run([sys.executable, "-m", "fastgrad", "info"], env=_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "fastgrad:" in r.stdout and "threads:" in r.stdout


def test_cli_demo():
    pytest.importorskip("sklearn")
    r = subprocess.run([sys.executable, "-m", "fastgrad", "demo", "--epochs", "2"], env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stdout
    if native_available():
        assert "speed:" in r.stdout and "NumPy backend" in r.stdout


def test_cli_demo_numpy_backend_and_bad_args():
    pytest.importorskip("sklearn")
    r = subprocess.run([sys.executable, "-m", "fastgrad", "demo", "--epochs", "1",
                        "--backend", "numpy"], env=_env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "numpy" in r.stdout
    r = subprocess.run([sys.executable, "-m", "fastgrad", "demo", "--epochs", "0"], env=_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0


def test_cli_demo_without_sklearn_says_so(tmp_path):
    # a stub package that fails to import stands in for a missing scikit-learn
    (tmp_path / "sklearn").mkdir()
    (tmp_path / "sklearn" / "__init__.py").write_text("raise ImportError('no sklearn here')\n")
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    r = subprocess.run([sys.executable, "-m", "fastgrad", "demo", "--epochs", "1"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "scikit-learn" in r.stderr


def test_numpy_backend_loads_no_extension_module():
    code = ("import sys, numpy as np, fastgrad as fg\n"
            "m = fg.Sequential([fg.layers.Dense(3, activation='softmax', input_shape=(4,))])\n"
            "m.compile('adam', 'sparse_categorical_crossentropy', metrics=['accuracy'])\n"
            "m.fit(np.ones((8, 4), np.float32), np.zeros(8, int), epochs=2, verbose=0)\n"
            "m.evaluate(np.ones((8, 4), np.float32), np.zeros(8, int), verbose=0)\n"
            "m.predict(np.ones((2, 4), np.float32)); m.predict_on_batch(np.ones((1, 4), np.float32))\n"
            "print(sorted(k for k in sys.modules if k.startswith('fastgrad._native.')))\n")
    r = subprocess.run([sys.executable, "-c", code], env=_env(FASTGRAD_BACKEND="numpy"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
