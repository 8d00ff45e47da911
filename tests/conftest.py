"""Shared test set-up: the torch oracle marker skips itself when PyTorch is
absent, and helpers to run a test on every backend / instruction set."""
import contextlib
import importlib.util
import os

import numpy as np
import pytest

HAVE_TORCH = importlib.util.find_spec("torch") is not None


def pytest_collection_modifyitems(config, items):
    if HAVE_TORCH:
        return
    skip = pytest.mark.skip(reason="PyTorch not installed (optional oracle)")
    for item in items:
        if "torch" in item.keywords:
            item.add_marker(skip)


def native_available():
    from fastgrad.backend import native_available as avail
    return avail()


def backends():
    """Backends to parametrize over: numpy always, native when built."""
    return ["numpy", "native"] if native_available() else ["numpy"]


def isa_paths():
    """Instruction-set paths this machine can run (empty without native)."""
    from fastgrad import _native
    rt = _native.module("runtime")
    return rt.isa_supported() if rt else []


@pytest.fixture
def each_isa(request):
    """Yield once per instruction-set path, restoring the original after."""
    from fastgrad import _native
    orig = _native.get_isa()
    yield
    if orig:
        _native.set_isa(orig)


@pytest.fixture(autouse=True)
def _restore_global_settings():
    """Tests may change threads/backend/instruction set; put them back (some
    tests restore the best ISA rather than the one FASTGRAD_ISA chose, and a
    later test comparing bits with a fresh process would then differ)."""
    from fastgrad import _config, _native, _threads
    saved = (_threads.explicit_num_threads(), _config._global["backend"], _native.get_isa())
    yield
    _threads.set_num_threads(saved[0])
    _config._global["backend"] = saved[1]
    if saved[2] and _native.get_isa() != saved[2]:
        _native.set_isa(saved[2])


@pytest.fixture
def native_backend():
    """Run the test on the native backend (``_restore_global_settings`` puts the
    previous backend and thread count back). Modules of compiled-plan tests
    use it through ``pytest.mark.usefixtures("native_backend")``."""
    import fastgrad as fg
    fg.set_backend("native")


@contextlib.contextmanager
def compiled_enabled(on):
    """Turn the compiled plan on or off (``compiled.enabled``) for a block, so a
    test can compare the plan with the Python executor."""
    from fastgrad.engine import compiled
    saved = compiled.enabled
    compiled.enabled = on
    try:
        yield
    finally:
        compiled.enabled = saved


def rng(seed=0):
    return np.random.default_rng(seed)
