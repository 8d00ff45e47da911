"""Data-parallel training (fastgrad.distribution) under `mpiexec -n N`.

The `mpi` tests spawn `mpiexec -n N python tests/_mpi_worker.py MODE OUTDIR ...`
(oversubscribed on small machines) and compare what each rank saved with one
process without a distribution; they are skipped when mpi4py or mpiexec is
missing. The split step (grad_step + apply_update) that DataParallel drives is
checked against the fused step in-process, without MPI."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import fastgrad as fg

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_mpi_worker.py")
sys.path.insert(0, HERE)
import _mpi_worker as W  # noqa: E402


def _mpiexec():
    exe = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return exe if os.path.exists(exe) else shutil.which("mpiexec")


def _have_mpi():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return _mpiexec() is not None


needs_mpi = pytest.mark.skipif(not _have_mpi(), reason="mpi4py / mpiexec not installed "
                                                       "(pip install \"fastgrad[mpi]\")")


def _env(**extra):
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(fg.__file__))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(n, mode, out, *args, timeout=240, check=True, **env):
    """mpiexec -n n worker; n == 0: one plain process without DataParallel.
    Returns (completed process, seconds, [per-rank npz dicts])."""
    os.makedirs(out, exist_ok=True)
    cmd = [sys.executable, WORKER, mode, str(out), *map(str, args)]
    if n:
        cmd = [_mpiexec(), "-n", str(n)] + cmd
    else:
        env["FG_TEST_NO_DIST"] = 1
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=_env(**env), capture_output=True, text=True, timeout=timeout,
                       cwd=out)
    dt = time.perf_counter() - t0
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    res = []
    for r in range(max(n, 1)):
        f = os.path.join(out, f"{mode}-rank{r}.npz")
        if os.path.exists(f):
            with np.load(f) as d:
                res.append({k: d[k] for k in d.files})
    return p, dt, res


def rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


# ====================================================================== no MPI needed
def test_api_defaults():
    assert fg.distribution.distribution() is None
    assert fg.distribution.rank() == 0 and fg.distribution.world_size() == 1
    assert fg.distribution.list_devices() == ["cpu:0"]
    with pytest.raises(TypeError, match="DataParallel"):
        fg.distribution.set_distribution("data")


def test_importing_fastgrad_does_not_import_mpi4py():
    code = "import sys, fastgrad; fastgrad.distribution.world_size(); print('mpi4py' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def test_missing_mpi4py_is_a_clear_error(monkeypatch):
    import builtins
    real = builtins.__import__

    def fake(name, *a, **k):
        if name.startswith("mpi4py"):
            raise ImportError("No module named 'mpi4py'")
        return real(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ImportError, match=r"fastgrad\[mpi\]"):
        fg.distribution.DataParallel()


def test_shards_cover_the_batch():
    for rows in (1, 3, 8, 13):
        for n in (1, 2, 3, 4):
            parts = [fg.distribution.shard(5, 5 + rows, r, n) for r in range(n)]
            assert parts[0][0] == 5 and parts[-1][1] == 5 + rows
            assert all(parts[i][1] == parts[i + 1][0] for i in range(n - 1))
            assert max(h - l for l, h in parts) - min(h - l for l, h in parts) <= 1


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("python_step", [False, True])
@pytest.mark.parametrize("kind", ["sequential", "graph", "reg"])
def test_split_step_gives_the_fused_steps_bits(kind, python_step, threads, monkeypatch):
    """grad_step + apply_update (the two halves DataParallel runs around the gradient
    reduction; fg_net_train_grad + fg_net_apply_update in C) == train, bitwise."""
    import fastgrad.engine.compiled as compiled
    monkeypatch.setattr(compiled, "enabled", not python_step)
    fg.set_num_threads(threads)
    x, y = W.data()
    a, b = W.mlp(kind), W.mlp(kind)
    for m in (a, b):
        m.fit(x[:8], y[:8], batch_size=8, epochs=1, verbose=0)   # build; same start
    b.set_weights(a.get_weights())
    b.optimizer.set_state(a.optimizer.get_state())
    ex_a, ex_b = a._executor(), b._executor()
    assert (type(ex_a).__name__ == "Step") == python_step
    data = a._prepare_data(x, y, None, None, "t")
    perm = np.random.default_rng(1).permutation(len(x)).astype(np.int64)
    sa = ex_a.train(data, perm, 0, 5, 32)
    rows = []
    for k in range(5):
        bad, row = ex_b.grad_step(data, np.ascontiguousarray(perm[k * 32:(k + 1) * 32]), 32)
        assert not bad
        ex_b.apply_update()
        rows.append(row)
    assert np.array_equal(a.flat_params, b.flat_params)
    assert np.array_equal(sa[:, :2], np.array(rows)[:, :2])
    assert a.optimizer.iterations == b.optimizer.iterations


@pytest.mark.parametrize("kind", ["sequential", "graph", "reg"])
def test_scaled_gradients_equal_on_both_executors(kind, monkeypatch):
    """grad_step(..., scale): the loss gradients times scale (a shard's share of the global
    batch) -- the C plan (fg_net_train_grad's grad_scale) gives the Python Step's bits,
    and the gradients are ~scale x the unscaled ones."""
    import fastgrad.engine.compiled as compiled
    x, y = W.data()
    grads = {}
    for py in (False, True):
        monkeypatch.setattr(compiled, "enabled", not py)
        m = W.mlp(kind)
        m.fit(x[:8], y[:8], batch_size=8, epochs=1, verbose=0)
        ex = m._executor()
        if not py and type(ex).__name__ == "Step":
            pytest.skip("the compiled step is not built")
        data = m._prepare_data(x, y, None, None, "t")
        perm = np.arange(24, dtype=np.int64)
        ex.grad_step(data, perm, 24)
        g1 = m.flat_grads.copy()
        bad, row = ex.grad_step(data, perm, 24, 24 / 64)
        assert not bad and row[1] == 24
        grads[py] = m.flat_grads.copy()
        np.testing.assert_allclose(grads[py], g1 * (24 / 64), rtol=1e-5,
                                   atol=1e-6 * float(np.abs(g1).max()))
    assert np.array_equal(grads[False], grads[True])


def test_apply_update_refuses_bad_arguments():
    x, y = W.data()
    m = W.mlp()
    m.fit(x[:8], y[:8], batch_size=8, epochs=1, verbose=0)
    plan = m._executor()
    if type(plan).__name__ == "Step":
        pytest.skip("the compiled step is not built")
    with pytest.raises(ValueError, match="apply_update"):
        plan.net.apply_update(0.1, 0, 1)            # optimizer steps count from 1
    with pytest.raises(ValueError, match="apply_update"):
        plan.net.apply_update(-1.0, 1, 1)


# ====================================================================== under mpiexec
@pytest.mark.mpi
@needs_mpi
@pytest.mark.parametrize("kind,opt,py", [("sequential", "adam", 0), ("graph", "sgd", 0),
                                         ("sequential", "sgd", 1), ("reg", "adam", 0),
                                         ("reg", "adam", 1)])
def test_ranks_equal_one_process(tmp_path, kind, opt, py):
    """100 steps of batch 32 on N = 2 and 4 ranks give one process's weights to float32
    rounding; every rank holds the same bits; a rerun gives the same bits."""
    _, _, (ref,) = run(0, "train", tmp_path / "one", kind, opt, 100, 32, FG_TEST_PYTHON_STEP=py)
    for n in (2, 4):
        _, _, res = run(n, "train", tmp_path / f"n{n}", kind, opt, 100, 32, FG_TEST_PYTHON_STEP=py)
        assert len(res) == n
        for r in range(1, n):
            assert np.array_equal(res[r]["params"], res[0]["params"]), f"rank {r} differs"
            assert np.array_equal(res[r]["loss"], res[0]["loss"])
        assert int(res[0]["iters"]) == int(ref["iters"]) == 100
        assert rel(res[0]["params"], ref["params"]) < 1e-5, (n, rel(res[0]["params"], ref["params"]))
        np.testing.assert_allclose(res[0]["loss"], ref["loss"], rtol=1e-5)
        if not py and kind == "sequential":
            _, _, again = run(n, "train", tmp_path / f"again{n}", kind, opt, 100, 32)
            assert np.array_equal(again[0]["params"], res[0]["params"])


@pytest.mark.mpi
@needs_mpi
@pytest.mark.parametrize("metrics", ["one", "two"])
def test_metrics_history_evaluate_predict_aggregated(tmp_path, metrics):
    """Sample weights, a short last batch (500 = 10 x 48 + 20), validation data:
    History, evaluate and predict on 2 ranks equal one process's ("one": the accuracy
    computed in C; "two": accuracy + top-2, updated in Python from captured outputs)."""
    _, _, (ref,) = run(0, "metrics", tmp_path / "one", metrics)
    _, _, res = run(2, "metrics", tmp_path / "two", metrics)
    names = ["accuracy", "val_accuracy"] + (["top2", "val_top2"] if metrics == "two" else [])
    for r in (0, 1):
        d = res[r]
        assert rel(d["params"], ref["params"]) < 1e-5
        for k in ("loss", "val_loss", "ev"):
            np.testing.assert_allclose(d[k], ref[k], rtol=1e-5, err_msg=k)
        for k in names:
            np.testing.assert_allclose(d[k], ref[k], atol=2.5e-3, err_msg=k)
        np.testing.assert_allclose(d["pred"], ref["pred"], rtol=1e-4, atol=1e-6)
    for k in ["loss", "val_loss", "ev", "pred"] + names:
        assert np.array_equal(res[0][k], res[1][k]), k


@pytest.mark.mpi
@needs_mpi
def test_writers_on_rank_zero_and_same_decisions(tmp_path):
    p, _, res = run(2, "writers", tmp_path)
    files = sorted(os.listdir(tmp_path))
    assert "r0-log.csv" in files and "r0-ckpt-1.fgm" in files
    assert not [f for f in files if f.startswith("r1-")], files
    assert p.stdout.count("Epoch 1/5") == 1          # one progress bar
    # EarlyStopping (min_delta 10) stops after epoch 2 everywhere; ReduceLROnPlateau halved lr
    assert int(res[0]["epochs"]) == int(res[1]["epochs"]) == 2
    assert float(res[0]["lr"]) == float(res[1]["lr"]) == 0.005
    assert np.array_equal(res[0]["params"], res[1]["params"])


@pytest.mark.mpi
@needs_mpi
def test_batchnorm_dropout_ranks_hold_the_same_bits(tmp_path):
    """Per-shard batch statistics and dropout masks differ between ranks; the reduced
    gradients and the moving statistics averaged after each epoch keep every rank's
    weights (get_weights: moving statistics included) bitwise equal."""
    _, _, res = run(2, "bn", tmp_path)
    assert np.array_equal(res[0]["state"], res[1]["state"])
    assert np.array_equal(res[0]["params"], res[1]["params"])
    assert np.all(np.isfinite(res[0]["loss"])) and res[0]["loss"][1] < res[0]["loss"][0]


@pytest.mark.mpi
@needs_mpi
def test_nonfinite_loss_raised_alike_on_every_rank(tmp_path):
    _, _, (ref,) = run(0, "nonfinite", tmp_path / "one")
    _, _, res = run(2, "nonfinite", tmp_path / "two")
    # a non-finite loss, or (NonFiniteParametersError) the overflowing update before it
    assert "loss is" in str(ref["msg"]) or "weights became NaN or inf" in str(ref["msg"])
    assert str(res[0]["msg"]) == str(res[1]["msg"])
    assert str(res[0]["msg"]).split(" (samples")[0].split(" (")[0] == \
        str(ref["msg"]).split(" (samples")[0].split(" (")[0]
    assert np.array_equal(res[0]["params"], res[1]["params"])


@pytest.mark.mpi
@needs_mpi
def test_batch_size_must_divide(tmp_path):
    _, _, res = run(2, "badbatch", tmp_path)
    assert "multiple of 2" in str(res[0]["msg"]) and "batch_size=25" in str(res[1]["msg"])


@pytest.mark.mpi
@needs_mpi
@pytest.mark.parametrize("mode,expect", [
    ("kill", "BAD TERMINATION"),
    ("raise", "rank 1 of 2 failed in fit: RuntimeError: injected failure on rank 1"),
    ("hang", "did not complete within 3 s"),
])
def test_rank_failure_ends_the_job(tmp_path, mode, expect):
    """SIGKILL of rank 1, an exception on rank 1 only, rank 1 stalled: the job ends with
    a non-zero status and a message naming the cause, in bounded time."""
    p, dt, _ = run(2, mode, tmp_path, check=False, timeout=120, FG_TEST_TIMEOUT=3)
    assert p.returncode != 0
    assert expect in p.stdout + p.stderr, p.stdout + p.stderr
    assert dt < 60


@pytest.mark.mpi
@needs_mpi
def test_resume_with_another_number_of_ranks(tmp_path):
    """2 epochs on 2 ranks with a checkpoint, then 2 more from that file on 1 process
    and on 4 ranks: the same weights to float32 rounding (optimizer state restored)."""
    ck = tmp_path / "ck.fgm"
    run(2, "save", tmp_path / "s", 2, ck)
    _, _, (one,) = run(0, "resume", tmp_path / "a", ck, 4)
    _, _, four = run(4, "resume", tmp_path / "b", ck, 4)
    assert int(one["iters"]) == int(four[0]["iters"]) == 4 * 10
    assert rel(four[0]["params"], one["params"]) < 1e-5
    assert all(np.array_equal(f["params"], four[0]["params"]) for f in four)
