"""fastgrad's libgomp wait policy (docs/threads.md): asked for with
FASTGRAD_GOMP_SPINCOUNT=short|N, a short GOMP_SPINCOUNT is put in place for the
libgomp fastgrad loads at `import fastgrad`, unless the user chose
OMP_WAIT_POLICY or GOMP_SPINCOUNT, which are never overridden; by default
libgomp's own policy is left alone.

libgomp reads its environment once, when it is loaded, so every case runs in a
fresh interpreter; OMP_DISPLAY_ENV=VERBOSE makes libgomp print the values it
actually uses (on stderr), which is what these tests read."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from fastgrad import _native
from fastgrad import _threads

pytestmark = pytest.mark.skipif(_native.module("runtime") is None or not _native.module("runtime").openmp_compiled(),
                                reason="native runtime with OpenMP not built")

SRC = os.path.dirname(os.path.dirname(os.path.abspath(_threads.__file__)))

PROBE = ("import os, json, fastgrad as fg\n"
         "from fastgrad import _threads\n"
         "info = fg.config_info()['openmp wait']\n"  # loads the native modules if not yet loaded
         "print('RESULT', json.dumps({'policy': _threads.wait_policy(), 'env': os.environ.get('GOMP_SPINCOUNT'),"
         " 'info': info}))\n")


def _run(env_extra, prelude=""):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "FASTGRAD_GOMP_SPINCOUNT", "FASTGRAD_BACKEND")}
    env.update(env_extra)
    env.setdefault("FASTGRAD_BACKEND", "native")
    env["OMP_DISPLAY_ENV"] = "VERBOSE"
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", prelude + PROBE], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    import json
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    spins = re.findall(r"GOMP_SPINCOUNT = '(\d+)'", proc.stderr + proc.stdout)
    policies = re.findall(r"OMP_WAIT_POLICY = '(\w+)'", proc.stderr + proc.stdout)
    if not spins:
        pytest.skip("this libgomp does not display GOMP_SPINCOUNT under OMP_DISPLAY_ENV=VERBOSE")
    return result, spins, policies, proc.stderr


def test_default_leaves_libgomp_alone():
    result, spins, _, _ = _run({})
    assert spins == ["300000"]      # libgomp's documented default
    assert result["policy"]["source"] == "libgomp default"
    assert result["env"] is None


def test_short_sets_short_spin_and_leaves_environment_clean():
    result, spins, _, _ = _run({"FASTGRAD_GOMP_SPINCOUNT": "short"})
    assert spins == [str(_threads.SHORT_SPINCOUNT)]
    assert result["policy"] == {"source": "fastgrad", "spincount": str(_threads.SHORT_SPINCOUNT),
                                "omp_wait_policy": None}
    assert result["env"] is None  # removed once libgomp read it: children see the user's environment
    assert result["info"] == f"GOMP_SPINCOUNT={_threads.SHORT_SPINCOUNT} (fastgrad)"


@pytest.mark.parametrize("value", ["12345", "0", "300000"])
def test_user_spincount_is_never_overridden(value):
    result, spins, _, _ = _run({"GOMP_SPINCOUNT": value, "FASTGRAD_GOMP_SPINCOUNT": "77"})
    assert spins == [value]
    assert result["policy"]["source"] == "user"
    assert result["env"] == value


@pytest.mark.parametrize("policy,spin", [("active", "30000000000"), ("passive", "0")])
def test_user_wait_policy_is_never_overridden(policy, spin):
    result, spins, policies, _ = _run({"OMP_WAIT_POLICY": policy})
    assert spins == [spin]          # libgomp's own value for that policy, not fastgrad's
    assert policies == [policy.upper()]
    assert result["policy"]["source"] == "user"
    assert result["policy"]["omp_wait_policy"] == policy


def test_fastgrad_knob_sets_the_count():
    result, spins, _, _ = _run({"FASTGRAD_GOMP_SPINCOUNT": "77"})
    assert spins == ["77"]
    assert result["policy"]["spincount"] == "77"


def test_fastgrad_knob_default_leaves_libgomp_alone():
    result, spins, _, _ = _run({"FASTGRAD_GOMP_SPINCOUNT": "default"})
    assert spins == ["300000"]      # libgomp's documented default
    assert result["policy"]["source"] == "libgomp default"


def test_bad_knob_warns_and_leaves_the_default():
    result, spins, _, err = _run({"FASTGRAD_GOMP_SPINCOUNT": "-3"})
    assert "FASTGRAD_GOMP_SPINCOUNT='-3'" in err and "RuntimeWarning" in err
    assert spins == ["300000"]


def test_libgomp_loaded_earlier_is_reported_not_pretended():
    # another library loaded the same libgomp first: its environment is read
    # already, so fastgrad must say its default was not applied
    result, spins, _, _ = _run({"FASTGRAD_GOMP_SPINCOUNT": "short"},
                               prelude="import ctypes; ctypes.CDLL('libgomp.so.1')\n")
    assert spins == ["300000"]
    assert result["policy"]["source"].startswith("not applied")
    assert result["env"] is None


def test_spincount_parser():
    assert _threads._fastgrad_spincount({}) is None
    assert _threads._fastgrad_spincount({"FASTGRAD_GOMP_SPINCOUNT": " 5 "}) == 5
    assert _threads._fastgrad_spincount({"FASTGRAD_GOMP_SPINCOUNT": "Short"}) == _threads.SHORT_SPINCOUNT
    assert _threads._fastgrad_spincount({"FASTGRAD_GOMP_SPINCOUNT": "Default"}) is None
    with pytest.warns(RuntimeWarning, match="FASTGRAD_GOMP_SPINCOUNT"):
        assert _threads._fastgrad_spincount({"FASTGRAD_GOMP_SPINCOUNT": "1e3"}) is None


def test_numpy_backend_loads_no_libgomp_then_native_later_gets_the_policy():
    # FASTGRAD_BACKEND=numpy: import fastgrad loads no libgomp; loading the
    # native modules later (set_backend("native"), config_info) still applies
    # the short spin, at the moment libgomp is loaded
    prelude = ("import fastgrad\nfrom fastgrad import _threads\n"
               "assert _threads.wait_policy()['source'].startswith('libgomp not loaded')\n"
               "assert not _threads._libgomp_loaded()\n")
    result, spins, _, _ = _run({"FASTGRAD_BACKEND": "numpy", "FASTGRAD_GOMP_SPINCOUNT": "short"},
                               prelude=prelude)
    assert spins == [str(_threads.SHORT_SPINCOUNT)]
    assert result["policy"]["source"] == "fastgrad" and result["env"] is None
