"""NumpyOps and NativeOps expose the same public ops with the same signatures,
and NativeOps falls back to NumpyOps for what the C does not take."""
import inspect

import numpy as np
import pytest

from fastgrad.backend import NumpyOps
from conftest import native_available


def _public(cls):
    return {n: m for n, m in inspect.getmembers(cls, callable) if not n.startswith("_")}


@pytest.mark.skipif(not native_available(), reason="native backend not built")
def test_same_methods_and_signatures():
    from fastgrad.backend import NativeOps
    np_ops, nat_ops = _public(NumpyOps), _public(NativeOps)
    assert set(np_ops) == set(nat_ops), set(np_ops) ^ set(nat_ops)
    for name in np_ops:
        assert inspect.signature(np_ops[name]) == inspect.signature(nat_ops[name]), name


@pytest.mark.skipif(not native_available(), reason="native backend not built")
def test_native_overrides_something_of_every_family():
    from fastgrad.backend import NativeOps
    for name in ("gemm", "dense_forward", "relu", "sigmoid", "softmax",
                 "sparse_softmax_crossentropy", "adam_update", "sgd_update", "sum_rows"):
        assert getattr(NativeOps, name) is not getattr(NumpyOps, name), name


@pytest.mark.skipif(not native_available(), reason="native backend not built")
def test_native_falls_back_for_float64():
    from fastgrad.backend import NativeOps
    nat, ref = NativeOps(), NumpyOps()
    x = np.linspace(-3, 3, 17)
    np.testing.assert_array_equal(nat.relu(x), ref.relu(x))
    a = np.random.default_rng(0).standard_normal((5, 7))
    np.testing.assert_allclose(nat.gemm(a, a, trans_b=True), a @ a.T)


def test_fg_ops_is_active_backend():
    import fastgrad as fg
    with fg.use_backend("numpy"):
        assert fg.get_backend() == "numpy"
        assert type(fg.ops).__name__ == "NumpyOps"
