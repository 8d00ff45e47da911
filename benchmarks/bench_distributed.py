"""Data-parallel benchmarks (fastgrad.distribution), run through mpiexec.

    python benchmarks/bench_distributed.py [--rows 12000] [--epochs 2] [--bs 128]

runs, on this machine:
  1. the 784-512-512-10 MLP (Adam, batch 128, synthetic MNIST-shaped data), one
     epoch timed after one warm-up epoch, as
       a) 1 rank x 2 threads  (plain process, fg.set_num_threads(2))
       b) 2 ranks x 1 thread  (mpiexec -n 2, DataParallel)
     and prints their ratio a/b (target >= 0.9) and the time rank 0 waited in
     collectives;
  2. one gradient reduction (Communicator.allreduce_grads: reduce-scatter with a
     fixed summation order + allgather) and MPI's own Allreduce, vs buffer size,
     on 2 ranks (median of repeats).

Under pytest (CI runs benchmarks with --benchmark-disable) a small version runs
when mpi4py and mpiexec are installed, so the script cannot rot.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def _mpiexec():
    import shutil
    exe = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return exe if os.path.exists(exe) else shutil.which("mpiexec")


# ---------------------------------------------------------------------- workers
def worker_mlp(rows, epochs, bs, threads, dist):
    import fastgrad as fg
    fg.set_num_threads(threads)
    d = None
    if dist:
        d = fg.distribution.DataParallel()
        fg.distribution.set_distribution(d)
    rng = np.random.default_rng(0)
    x = rng.random((rows, 784), dtype=np.float32)
    y = rng.integers(0, 10, rows)
    fg.set_seed(1)
    m = fg.Sequential([fg.layers.Input((784,)), fg.layers.Dense(512, activation="relu"),
                       fg.layers.Dense(512, activation="relu"),
                       fg.layers.Dense(10, activation="softmax")])
    m.compile(optimizer=fg.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    m.fit(x, y, batch_size=bs, epochs=1, verbose=0)              # warm-up
    times, comm = [], []
    for _ in range(epochs):
        c0 = d.comms.comm_seconds if d else 0.0
        t0 = time.perf_counter()
        m.fit(x, y, batch_size=bs, epochs=1, verbose=0)
        times.append(time.perf_counter() - t0)
        comm.append((d.comms.comm_seconds - c0) if d else 0.0)
    rank = d.rank if d else 0
    if rank == 0:
        print(json.dumps(dict(kind="mlp", ranks=d.world_size if d else 1, threads=threads,
                              rows=rows, bs=bs, epoch_s=min(times), comm_s=comm[int(np.argmin(times))],
                              params=int(m._store.size))), flush=True)


def worker_allreduce(sizes, reps):
    import fastgrad as fg
    from mpi4py import MPI
    d = fg.distribution.DataParallel()
    c = d.comms
    out = []
    for n in sizes:
        g = np.ones(n, dtype=np.float32)
        r = np.empty_like(g)
        t_fg, t_mpi = [], []
        for k in range(reps + 2):
            d.comm.Barrier()
            t0 = time.perf_counter()
            c.allreduce_grads(g)
            t1 = time.perf_counter()
            d.comm.Barrier()
            t2 = time.perf_counter()
            d.comm.Allreduce([g, MPI.FLOAT], [r, MPI.FLOAT], op=MPI.SUM)
            t3 = time.perf_counter()
            if k >= 2:
                t_fg.append(t1 - t0)
                t_mpi.append(t3 - t2)
        out.append(dict(floats=n, bytes=4 * n, fastgrad_s=float(np.median(t_fg)),
                        mpi_allreduce_s=float(np.median(t_mpi))))
    if d.rank == 0:
        print(json.dumps(dict(kind="allreduce", ranks=d.world_size, rows=out)), flush=True)


# ---------------------------------------------------------------------- cost model
#: measured on this session's machine (docs/distributed.md), in CPU time of one thread
#: (time.process_time: the shared machine's load inflates wall time, not CPU time):
#: forward + backward of the 784-512-512-10 MLP per sample (grad_step, batch 128:
#: 26.0 us; batch 64: 33.7 us), its Adam update of 669,712 parameters (0.44 ms);
#: MPICH's shared-memory allreduce latency (1 KiB, 2 ranks: 3.8-4.6 us) and
#: fastgrad's fixed per-step cost above it (guard, statistics allgather, Python: ~15 us)
MODEL = dict(core_s_per_sample=26.0e-6, adam_s_per_param=0.44e-3 / 669712,
             loopback_alpha_s=4.2e-6, fixed_s=15e-6)
MODELS = {   # name: (parameters, forward+backward FLOPs per sample relative to MLP-A)
    "MLP 784-512-512-10": (669712, 1.0),
    "MLP 784-256-128-10": (235152, 8.2 / 26.0),     # measured: 8.2 us / sample at batch 128
}
NETWORKS = {"10 Gb/s (TCP, alpha 25 us)": (10e9 / 8 * 0.9, 25e-6),
            "100 Gb/s (RDMA, alpha 3 us)": (100e9 / 8 * 0.9, 3e-6)}


def step_time(n, params, rel_flops, batch, bw, alpha, cores=16):
    """Seconds per optimizer step on n nodes of `cores` cores (ideal scaling inside a
    node), global batch `batch`: compute of batch/n rows + the update (memory-bound,
    taken as 4 cores' worth) + the ring allreduce 2 (n-1)/n S / bw + 2 (n-1) alpha +
    fastgrad's fixed per-step cost."""
    m = MODEL
    compute = m["core_s_per_sample"] * rel_flops * batch / n / cores
    update = m["adam_s_per_param"] * params / min(cores, 4)
    comm = 0.0 if n == 1 else (2 * (n - 1) / n * 4 * params / bw + 2 * (n - 1) * alpha
                               + m["fixed_s"])
    return compute + update + comm, compute, comm


def cost_model_tables(batches=(1024, 8192), nodes=(1, 2, 4, 8, 16, 32, 64, 128, 256)):
    lines = []
    for name, (params, rel) in MODELS.items():
        for net, (bw, alpha) in NETWORKS.items():
            for batch in batches:
                lines.append(f"\n{name} ({4 * params / 1e6:.2f} MB of gradients), {net}, "
                             f"global batch {batch}:\n")
                lines.append("| nodes | step ms | compute ms | allreduce ms | samples/s | efficiency |")
                lines.append("|---:|---:|---:|---:|---:|---:|")
                t1 = step_time(1, params, rel, batch, bw, alpha)[0]
                for n in nodes:
                    if batch % n:
                        continue
                    t, c, a = step_time(n, params, rel, batch, bw, alpha)
                    lines.append(f"| {n} | {t * 1e3:.2f} | {c * 1e3:.2f} | {a * 1e3:.2f} | "
                                 f"{batch / t:,.0f} | {t1 / (n * t):.0%} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------- driver
def _run(cmd, env):
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd} failed:\n{p.stdout}\n{p.stderr}")
    return [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]


def drive(rows, epochs, bs, sizes, reps, ranks=2, rounds=1):
    env = dict(os.environ)
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        env.pop(k, None)
    env["OMP_NUM_THREADS"] = "1"
    me = [sys.executable, os.path.abspath(__file__), "--worker"]
    mpi = [_mpiexec(), "-n", str(ranks)]
    a = b = None
    for _ in range(rounds):      # interleaved, best of `rounds` each (a shared machine)
        ra = _run(me + ["mlp", str(rows), str(epochs), str(bs), str(ranks), "0"],
                  dict(env, OMP_NUM_THREADS=str(ranks)))[0]
        rb = _run(mpi + me + ["mlp", str(rows), str(epochs), str(bs), "1", "1"], env)[0]
        a = ra if a is None or ra["epoch_s"] < a["epoch_s"] else a
        b = rb if b is None or rb["epoch_s"] < b["epoch_s"] else b
    ar = _run(mpi + me + ["allreduce", ",".join(map(str, sizes)), str(reps)], env)[0]
    return a, b, ar


def main(argv=None):
    if argv and argv[0] == "--worker":
        if argv[1] == "mlp":
            rows, epochs, bs, threads, dist = map(int, argv[2:7])
            return worker_mlp(rows, epochs, bs, threads, bool(dist))
        return worker_allreduce([int(s) for s in argv[2].split(",")], int(argv[3]))
    if argv and argv[0] == "--model":
        print(cost_model_tables())
        return None
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=12000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--bs", type=int, default=128)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    sizes = [1 << k for k in range(8, 24, 2)] + [669712]
    a, b, ar = drive(args.rows, args.epochs, args.bs, sorted(sizes), args.reps,
                     rounds=args.rounds)
    print(f"MLP 784-512-512-10 ({a['params']} parameters), {args.rows} rows, batch {args.bs}, Adam")
    print(f"  (best of {args.rounds} interleaved runs each, {args.epochs} timed epochs per run)")
    print(f"  1 rank x 2 threads : {a['epoch_s']:.3f} s/epoch")
    print(f"  2 ranks x 1 thread : {b['epoch_s']:.3f} s/epoch  (rank 0 waited "
          f"{b['comm_s']:.3f} s in collectives)")
    print(f"  ratio (1x2)/(2x1)  : {a['epoch_s'] / b['epoch_s']:.3f}  (target >= 0.9)")
    print("one gradient reduction on 2 ranks (median):")
    print(f"  {'floats':>9} {'bytes':>10} {'fastgrad us':>12} {'MPI_Allreduce us':>17}")
    for r in ar["rows"]:
        print(f"  {r['floats']:>9} {r['bytes']:>10} {r['fastgrad_s'] * 1e6:>12.1f} "
              f"{r['mpi_allreduce_s'] * 1e6:>17.1f}")
    print(json.dumps(dict(mlp_1x2=a, mlp_2x1=b, allreduce=ar)))


def test_bench_distributed_smoke():
    """A tiny run of the whole driver (skipped without mpi4py / mpiexec)."""
    import pytest
    pytest.importorskip("mpi4py")
    if _mpiexec() is None:
        pytest.skip("mpiexec not installed")
    a, b, ar = drive(rows=512, epochs=1, bs=64, sizes=[1024, 4096], reps=2)
    assert a["rows"] == b["rows"] == 512 and b["ranks"] == 2
    assert [r["floats"] for r in ar["rows"]] == [1024, 4096]


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src")) if os.environ.get(
        "FG_BENCH_SRC") else None
    main(sys.argv[1:])
