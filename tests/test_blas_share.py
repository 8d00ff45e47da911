"""fastgrad runs NumPy's OpenBLAS jobs on its own OpenMP team
(csrc/runtime/blas_share.c, fg.share_blas_threads): NumPy's results must stay
OpenBLAS's own bits, for every dtype, shape and OpenBLAS thread count, from
several Python threads at once, in forked children and on the fallback path;
and the switch must be reversible and honour FASTGRAD_SHARE_BLAS_THREADS=0."""
from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastgrad as fg
from fastgrad import _native

threadpoolctl = pytest.importorskip("threadpoolctl")

rt = _native.module("runtime")
pytestmark = pytest.mark.skipif(rt is None, reason="native backend not built")


def _shareable_openblas():
    """NumPy's OpenBLAS when it is a pthreads build new enough for the callback API."""
    for p in threadpoolctl.threadpool_info():
        if p.get("internal_api") != "openblas" or p.get("threading_layer") != "pthreads":
            continue
        ver = tuple(int(x) for x in p.get("version", "0.0.0").split(".")[:3])
        if ver >= (0, 3, 27):
            return p["filepath"]
    return None


NUMPY_OPENBLAS = _shareable_openblas()
needs_share = pytest.mark.skipif(
    NUMPY_OPENBLAS is None or not rt.blas_share_state()[0],
    reason="no pthreads OpenBLAS >= 0.3.27 loaded, or not Linux/glibc")


@pytest.fixture
def shared():
    before = rt.blas_share_state()[1]
    paths = fg.share_blas_threads(True)
    yield paths
    fg.share_blas_threads(before)


def _operands(dtype, m, k, n, seed):
    rng = np.random.default_rng(seed)
    def draw(*shape):
        x = rng.standard_normal(shape)
        if np.issubdtype(dtype, np.complexfloating):
            x = x + 1j * rng.standard_normal(shape)
        return x.astype(dtype)
    return draw(m, k), draw(k, n)


SHAPES = [(1, 1, 1), (7, 13, 5), (64, 64, 64), (127, 253, 131), (384, 384, 384), (1000, 31, 517),
          (3, 2000, 3), (512, 512, 1)]


@needs_share
def test_numpy_openblas_is_routed(shared):
    assert os.path.realpath(NUMPY_OPENBLAS) in {os.path.realpath(p) for p in shared}
    info = fg.config_info()
    assert "fastgrad's OpenMP team" in info["blas threads"]


@needs_share
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
@pytest.mark.parametrize("blas_threads", [1, 2, 3])
def test_matmul_bits_equal_openblas_own_threads(dtype, blas_threads):
    """The same jobs on other threads: the same bits as OpenBLAS's own server."""
    try:
        with threadpoolctl.threadpool_limits(blas_threads, user_api="blas"):
            results = {}
            for mode in (False, True):
                fg.share_blas_threads(mode)
                results[mode] = [np.matmul(*_operands(dtype, m, k, n, i)) for i, (m, k, n) in enumerate(SHAPES)]
            for i, (own, ours) in enumerate(zip(results[False], results[True])):
                np.testing.assert_array_equal(ours, own, err_msg=f"shape {SHAPES[i]}")
                a, b = _operands(dtype, *SHAPES[i], i)
                ref = a.astype(np.complex128 if np.iscomplexobj(a) else np.float64) @ b
                tol = 1e-4 if dtype in (np.float32, np.complex64) else 1e-12
                np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol * np.abs(ref).max())
    finally:
        fg.share_blas_threads(True)


@needs_share
def test_linalg_through_the_shared_pool(shared):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((300, 300)) + 300 * np.eye(300)
    b = rng.standard_normal((300, 7))
    x = np.linalg.solve(a, b)
    np.testing.assert_allclose(a @ x, b, atol=1e-9)
    np.testing.assert_allclose(np.linalg.inv(a) @ a, np.eye(300), atol=1e-9)
    spd = a @ a.T
    c = np.linalg.cholesky(spd)
    np.testing.assert_allclose(c @ c.T, spd, rtol=1e-10, atol=1e-6)
    w, v = np.linalg.eigh(spd)
    np.testing.assert_allclose((v * w) @ v.T, spd, rtol=1e-9, atol=1e-5)
    u, s, vt = np.linalg.svd(a[:200, :150], full_matrices=False)
    np.testing.assert_allclose((u * s) @ vt, a[:200, :150], atol=1e-9)


@needs_share
def test_concurrent_callers_from_python_threads(shared):
    """NumPy releases the GIL: concurrent matmuls take turns on the team, each
    correct, alongside fastgrad's own kernels in another thread."""
    errors = []
    model = fg.Sequential([fg.layers.Dense(64, activation="relu", input_shape=(100,)), fg.layers.Dense(3)])
    xs = np.random.default_rng(0).standard_normal((500, 100)).astype(np.float32)
    ref_pred = model.predict(xs, verbose=0)

    def numpy_worker(seed):
        try:
            a, b = _operands(np.float64, 256, 256, 256, seed)
            ref = np.einsum("ij,jk->ik", a, b)
            for _ in range(30):
                np.testing.assert_allclose(a @ b, ref, rtol=1e-10, atol=1e-10)
        except Exception as exc:  # noqa: BLE001 — collected and re-raised below
            errors.append(exc)

    def fastgrad_worker():
        try:
            for _ in range(20):
                np.testing.assert_array_equal(model.predict(xs, verbose=0), ref_pred)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=numpy_worker, args=(s,)) for s in range(4)]
    threads.append(threading.Thread(target=fastgrad_worker))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "a thread did not finish: deadlock in the shared pool"
    assert not errors, errors


@needs_share
def test_pthread_fallback_gives_the_same_bits(shared):
    a, b = _operands(np.float32, 384, 384, 384, 0)
    team = a @ b
    rt._blas_share_force_pthreads(True)
    try:
        fallback = a @ b
        c, d = _operands(np.float64, 127, 253, 131, 1)
        np.testing.assert_allclose(c @ d, np.einsum("ij,jk->ik", c, d), rtol=1e-12, atol=1e-12)
    finally:
        rt._blas_share_force_pthreads(False)
    np.testing.assert_array_equal(fallback, team)


def _child_matmul(q):
    a, b = _operands(np.float64, 300, 300, 300, 5)
    q.put(float(np.abs(a @ b - np.einsum("ij,jk->ik", a, b)).max()))


@needs_share
@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_forked_child_uses_numpy_without_hanging(shared):
    # the parent has used the team for both libraries: libgomp's pool does not
    # survive fork, so the child must get OpenBLAS's own threads back
    a, b = _operands(np.float64, 300, 300, 300, 5)
    a @ b
    fg.Sequential([fg.layers.Dense(8, input_shape=(4,))]).predict(np.ones((256, 4), np.float32), verbose=0)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_matmul, args=(q,))
    p.start()
    p.join(timeout=60)
    if p.is_alive():
        p.kill()
        pytest.fail("forked child hung in a NumPy matmul")
    assert p.exitcode == 0
    assert q.get(timeout=5) < 1e-10


@needs_share
def test_switch_off_and_on():
    try:
        assert fg.share_blas_threads(False) == []
        assert not rt.blas_share_state()[1]
        assert "keeps its own threads" in fg.config_info()["blas threads"]
        assert fg.share_blas_threads(True)
        assert rt.blas_share_state()[1]
    finally:
        fg.share_blas_threads(True)


@needs_share
@pytest.mark.parametrize("value, expect", [("0", False), ("1", True), ("", True)])
def test_environment_switch_at_import(value, expect):
    env = dict(os.environ, FASTGRAD_SHARE_BLAS_THREADS=value)
    code = ("import numpy as np, fastgrad as fg; from fastgrad import _native; "
            "print(_native.module('runtime').blas_share_state()[1]); "
            "a = np.ones((300, 300)); assert (a @ a == 300).all()")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(expect)
