"""Every public class, function and method of fastgrad carries a numpydoc
docstring that agrees with its signature (docs/typing.md).

"Public" is what a module lists in `__all__` (for the package itself: the
functions of `fastgrad.__all__`), and for a class every method in its own
`__dict__` whose name does not start with "_", plus `__call__`. A method that
overrides one of a base class (fastgrad's or a third party's) inherits that
base's documentation and is not checked again. Properties, constants and
module aliases of an object already seen are skipped.

The checks (numpydoc.validate codes) are in `CHECKS`; `test_checks_are_known`
keeps the list honest against the installed numpydoc. `test_examples_run` runs
the Examples sections as doctests.
"""
from __future__ import annotations

import doctest
import importlib
import inspect

import pytest

numpydoc_validate = pytest.importorskip("numpydoc.validate")

CHECKS = {
    "GL06": "unknown section",
    "GL07": "sections in the wrong order",
    "GL08": "no docstring",
    "SS01": "no summary",
    "SS03": "summary does not end with a period",
    "PR01": "a parameter is not documented",
    "PR02": "a documented parameter does not exist",
    "PR10": "a parameter line is missing the space around its colon",
    "RT01": "a function that returns a value has no Returns section",
    "RT02": "the Returns section names the value instead of its type only",
}

# The modules whose public API this test covers.
MODULES = [
    "fastgrad", "fastgrad.activations", "fastgrad.initializers", "fastgrad.regularizers",
    "fastgrad.losses", "fastgrad.metrics", "fastgrad.optimizers", "fastgrad.optimizers.schedules",
    "fastgrad.callbacks", "fastgrad.saving", "fastgrad.keras_file", "fastgrad.sklearn",
    "fastgrad.quantization", "fastgrad.distribution", "fastgrad.utils", "fastgrad.testing",
    "fastgrad.engine", "fastgrad.backend", "fastgrad.export",
    "fastgrad.layers", "fastgrad.models", "fastgrad.autodiff", "fastgrad.math",
]

# Objects defined in these modules are documented on another branch (docs2); the
# lead empties this set when it is merged.
_NOT_YET: set[str] = set()

# Classes checked without their methods: the backend's Ops classes are the kernel
# interface (docs/architecture.md; backend/contracts.py and tests/test_ops_interface.py
# keep their ~150 methods aligned), and the engine's classes are the training loop's
# machinery, exported for tests and tools, whose methods the loop alone calls.
_CLASS_ONLY = {"fastgrad.backend.NumpyOps", "fastgrad.backend.NativeOps",
               "fastgrad.engine.ParamStore", "fastgrad.engine.Workspace",
               "fastgrad.engine.WorkspaceCache", "fastgrad.engine.Step"}

def _defined_in(obj) -> str:
    return getattr(obj, "__module__", "") or ""


def _pending(obj) -> bool:
    mod = _defined_in(obj)
    return any(mod == m or mod.startswith(m + ".") for m in _NOT_YET)


def _public_objects():
    seen: set[int] = set()
    out = []
    for modname in MODULES:
        mod = importlib.import_module(modname)
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name, None)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if not _defined_in(obj).startswith("fastgrad") or id(obj) in seen:
                continue
            seen.add(id(obj))
            path = f"{modname}.{name}"      # an importable name, also for a class made in a function
            out.append((path, obj))
            if inspect.isclass(obj) and path not in _CLASS_ONLY:
                out.extend(_public_methods(obj, path, seen))
    return out


def _overrides(cls, name: str) -> bool:
    return any(name in vars(base) for base in cls.__mro__[1:] if base is not object)


def _public_methods(cls, path, seen):
    for name, attr in vars(cls).items():
        if name.startswith("_") and name != "__call__":
            continue
        func = attr.__func__ if isinstance(attr, (classmethod, staticmethod)) else attr
        if not inspect.isfunction(func) or id(func) in seen or _overrides(cls, name):
            continue
        seen.add(id(func))
        yield f"{path}.{name}", func


_OBJECTS = _public_objects()


def test_checks_are_known():
    assert set(CHECKS) <= set(numpydoc_validate.ERROR_MSGS)


@pytest.mark.parametrize("path,obj", _OBJECTS, ids=[p for p, _ in _OBJECTS])
def test_docstring(path, obj):
    if _pending(obj):
        pytest.skip("documented on the docs2 branch (_NOT_YET)")
    result = numpydoc_validate.validate(path)
    errors = [f"{code} {msg}" for code, msg in result["errors"]
              if code in CHECKS]
    assert not errors, f"{path}:\n  " + "\n  ".join(errors)


# Modules whose Examples sections run as doctests.
_DOCTEST_MODULES = [
    "fastgrad._config", "fastgrad._threads", "fastgrad.activations", "fastgrad.initializers",
    "fastgrad.regularizers", "fastgrad.losses", "fastgrad.losses_ext", "fastgrad.metrics",
    "fastgrad.metrics_ext", "fastgrad.optimizers.optimizers", "fastgrad.optimizers.optimizers_ext",
    "fastgrad.optimizers.schedules", "fastgrad.callbacks", "fastgrad.saving", "fastgrad.keras_file",
    "fastgrad.sklearn", "fastgrad.quantization", "fastgrad.distribution", "fastgrad.utils",
    "fastgrad.utils.progbar", "fastgrad.utils.plot", "fastgrad.testing", "fastgrad.engine.adapters",
    "fastgrad.models", "fastgrad.math", "fastgrad.autodiff.core", "fastgrad.layers.core",
    "fastgrad.layers.convolutional", "fastgrad.layers.recurrent", "fastgrad.layers.attention",
]


@pytest.mark.parametrize("modname", _DOCTEST_MODULES)
def test_examples_run(modname):
    if modname == "fastgrad.sklearn":
        pytest.importorskip("sklearn")
    mod = importlib.import_module(modname)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder().find(mod, modname):
        runner.run(test)
    assert runner.failures == 0, f"{modname}: {runner.failures} example(s) failed (output above)"
