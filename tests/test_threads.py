"""Thread policy of the kernels family: fork safety, threadpoolctl limits,
thread-count determinism through the Ops API, and flush-denormal handling."""
import multiprocessing as mp
import platform
import os
import subprocess
import sys

import numpy as np
import pytest

import fastgrad._config as config
from fastgrad import _native
from fastgrad.backend import NumpyOps

K = _native.module("kernels")
RT = _native.module("runtime")
pytestmark = pytest.mark.skipif(K is None, reason="native kernels module not built")

if K is not None:
    from fastgrad.backend import native_kernels
    from fastgrad.backend.native_kernels import KernelsMixin

    class Ops(KernelsMixin, NumpyOps):
        pass


N_BIG = 1 << 20  # well above every grain: really runs on several threads


def _work(nthreads):
    x = np.linspace(-5, 5, N_BIG, dtype=np.float32)
    y = np.empty_like(x)
    K.act_forward(x, y, 2, nthreads)  # sigmoid
    s = K.sumsq(y, nthreads)
    g = np.empty_like(x)
    K.act_backward(y, x, g, 4, nthreads)  # gelu backward
    return float(s), float(g.sum(dtype=np.float64))


def _child(conn):
    try:
        res = _work(2)
        conn.send(("ok", res, RT.in_forked_child(), RT.omp_max_threads()))
    except BaseException as exc:  # pragma: no cover - reported to the parent
        conn.send(("error", repr(exc), None, None))
    finally:
        conn.close()


@pytest.mark.skipif(not hasattr(mp, "get_context") or "fork" not in mp.get_all_start_methods(),
                    reason="fork start method not available")
def test_fork_child_runs_kernels_after_parent_used_threads():
    """libgomp's pool does not survive fork(): the child must run serially and finish."""
    parent = _work(2)  # the parent has an OpenMP team now
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(send,))
    p.start()
    send.close()
    p.join(timeout=60)
    if p.is_alive():  # a hang is the failure this test exists for
        p.kill()
        p.join()
        pytest.fail("forked child hung in a kernel")
    assert p.exitcode == 0
    status, res, in_child, omp_threads = recv.recv()
    assert status == "ok", res
    assert in_child is True and omp_threads == 1
    assert res == parent  # same bits as the threaded parent
    assert RT.in_forked_child() is False


def test_threadpoolctl_limits_fastgrad():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not RT.openmp_compiled():
        pytest.skip("built without OpenMP")
    config.set_num_threads(None)
    seen = []

    class Spy:
        """Records the thread count NativeOps passes to the C kernels."""

        def __getattr__(self, name):
            fn = getattr(K, name)

            def wrapper(*args):
                seen.append(args[-1])
                return fn(*args)
            return wrapper

    ops = Ops()
    x = np.ones(1000, np.float32)
    orig = native_kernels._K
    native_kernels._K = Spy()
    try:
        with threadpoolctl.threadpool_limits(limits=1):
            assert config.get_num_threads() == 1
            ops.relu(x)
        with threadpoolctl.threadpool_limits(limits=2, user_api="openmp"):
            assert config.get_num_threads() == 2
            ops.relu(x)
        config.set_num_threads(3)  # an explicit choice wins over the OpenMP default
        with threadpoolctl.threadpool_limits(limits=1):
            assert config.get_num_threads() == 3
            ops.relu(x)
    finally:
        native_kernels._K = orig
        config.set_num_threads(None)
    assert seen == [1, 2, 3]
    for limit in (1, 2):  # the mixin's fast resolver agrees with fastgrad._config
        with threadpoolctl.threadpool_limits(limits=limit, user_api="openmp"):
            assert native_kernels.get_num_threads() == config.get_num_threads() == limit
    info = [d for d in threadpoolctl.threadpool_info() if d["user_api"] == "openmp"]
    assert info, "threadpoolctl does not see fastgrad's OpenMP runtime"


def test_threadpoolctl_sees_fastgrad_at_import():
    """A limit entered right after `import fastgrad`, before any op ran, is seen:
    the compiled modules (and so the OpenMP runtime) load with the package."""
    pytest.importorskip("threadpoolctl")
    if not RT.openmp_compiled():
        pytest.skip("built without OpenMP")
    code = (
        "import fastgrad as fg, threadpoolctl\n"
        "libs = [d for d in threadpoolctl.threadpool_info() if d['user_api'] == 'openmp']\n"
        "assert libs, 'no OpenMP runtime visible after import fastgrad'\n"
        "with threadpoolctl.threadpool_limits(limits=1):\n"
        "    assert fg.get_num_threads() == 1, fg.get_num_threads()\n"
        "print('ok')\n")
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_ops_bitwise_for_any_thread_count():
    r = np.random.default_rng(0)
    x = (r.standard_normal((2048, 129)) * 3).astype(np.float32)
    lab = r.integers(0, 129, 2048)
    flat = r.standard_normal(300001).astype(np.float32)
    grad = r.standard_normal(300001).astype(np.float32)

    def run():
        ops = Ops()
        out = [ops.gelu(x), ops.tanh(x), ops.softmax(x), ops.log_softmax(x), ops.sum_rows(x),
               ops.backprop_gelu(x, x), ops.sparse_softmax_crossentropy(x, lab)[1],
               np.float64(ops.sparse_softmax_crossentropy(x, lab)[0]),
               np.float64(ops.mse(x, x * 0.5)[0]), np.float64(ops.global_norm(flat))]
        p, m, v = flat.copy(), np.zeros_like(flat), np.zeros_like(flat)
        for step in (1, 2, 3):
            ops.adam_update(p, grad, m, v, lr=0.01, step=step, weight_decay=0.01, decoupled=True)
        out += [p, m, v, ops.dropout(flat, 0.4, 77, 5)]
        return out

    results = []
    for nt in (1, 2, 3):
        config.set_num_threads(nt)
        results.append(run())
    config.set_num_threads(None)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386", "x86"),
                    reason="flush-to-zero is implemented through the x86 MXCSR")
@pytest.mark.parametrize("nthreads", [1, 2])
def test_flush_denormal(nthreads):
    tiny = np.float32(1e-40)  # a float32 denormal
    n = N_BIG if nthreads > 1 else 64
    x = np.full(n, tiny, np.float32)
    try:
        _native.set_flush_denormal(True)
        assert RT.get_flush_denormal()
        y = x.copy()
        K.scale(y, 1.0, nthreads)
        assert not y.any()  # flushed, on every thread
        r = np.empty_like(x)
        K.act_forward(x, r, 1, nthreads)  # relu
        assert not r.any()
        # the caller's floating-point state is untouched: NumPy still makes denormals
        assert np.multiply(tiny, np.float32(1.0)) == tiny
        _native.set_flush_denormal(False)
        y = x.copy()
        K.scale(y, 1.0, nthreads)
        assert np.all(y == tiny)
        K.act_forward(x, r, 1, nthreads)
        assert np.all(r == tiny)
    finally:
        _native.set_flush_denormal(False)


def test_denormal_inputs_are_exact_without_flush():
    x = np.array([1e-40, -1e-40, 1e-45, 3e-39], np.float32)
    y = np.empty_like(x)
    K.act_forward(x, y, 3, 1)  # tanh(x) == x for tiny x
    np.testing.assert_array_equal(y, x)
    K.exp(x, y, 1)
    np.testing.assert_array_equal(y, np.ones_like(x))


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64", "i686", "i386", "x86"),
                    reason="flush-to-zero is implemented through the x86 MXCSR")
def test_public_set_flush_denormal_through_ops():
    import fastgrad as fg
    x = np.full(1000, np.float32(1e-40))
    try:
        fg.set_flush_denormal(True)
        assert fg.get_flush_denormal()
        with fg.use_backend("native") as ops:
            assert not ops.relu(x).any()
        assert np.multiply(np.float32(1e-40), np.float32(1.0)) != 0   # caller unaffected
    finally:
        fg.set_flush_denormal(False)
    assert not fg.get_flush_denormal()
    with fg.use_backend("native") as ops:
        assert np.all(ops.relu(x) == np.float32(1e-40))


def test_numpy_backend_fit_caps_blas_threads_at_fastgrad_setting():
    """fg.set_num_threads governs the NumPy backend's BLAS pool during fit/evaluate
    (and the caller's BLAS setting is restored afterwards)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import fastgrad as fg

    def blas_threads():
        return [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]

    if not blas_threads():
        pytest.skip("NumPy has no BLAS pool that threadpoolctl can see")
    before = blas_threads()
    seen = []
    fg.set_seed(0)
    x = np.random.default_rng(0).standard_normal((64, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    with fg.use_backend("numpy"):
        m = fg.Sequential([fg.layers.Dense(4, activation="relu", input_shape=(5,)),
                           fg.layers.Dense(2, activation="softmax")])
        m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        fg.set_num_threads(1)
        cb = fg.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(blas_threads()))
        m.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[cb])
    assert seen and all(n == 1 for n in seen[0])
    assert blas_threads() == before
