"""How much a training step pays for OpenMP fork/join: parallel regions per
step times the cost of one region, next to the step's own time.

    python benchmarks/peak/omp_regions.py                 # all models, 2 threads
    python benchmarks/peak/omp_regions.py mlp cifar --threads 2

Two measurements, both on this machine:
  cost     a throw-away C probe (compiled here with -O2 -fopenmp, like the
           library's OpenMP code; never -march=native) times 50,000 empty
           parallel regions, and regions that hand out 8 blocks with
           `schedule(dynamic, 1)` as FG_PARALLEL_RANGE does, on `threads`
           threads of the system libgomp.
  count    libgomp's GOMP_parallel entry point counted with a perf uprobe
           (needs `perf` and permission to add probes: root, or
           perf_event_paranoid <= 1 plus access to the tracefs), in a child
           process that runs epochs of the model with fit(); the per-step
           count is (count with E epochs - count with 0 epochs) / steps, so
           import and warm-up regions cancel. Without perf the count column
           says so and only the cost is printed.
The step time comes from a separate child run without probes.

Models: mlp (784-128-10, batch 128), mlp512 (784-512-512-10, batch 256),
mlpbn (784-256-BN-relu-128-LayerNorm-10, batch 128), lenet and cifar (the
networks of bench_conv.py, batch 64). This is a measurement script, not a
test; its figures are quoted in docs/threads.md.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))

PROBE_C = r"""
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    int nt = atoi(argv[1]), reps = 50000;
    volatile int sink = 0;
    for (int round = 0; round < 3; round++) {
        double t = omp_get_wtime();
        for (int i = 0; i < reps; i++) {
#pragma omp parallel num_threads(nt)
            { sink++; }
        }
        double empty = (omp_get_wtime() - t) / reps;
        t = omp_get_wtime();
        for (int i = 0; i < reps; i++) {
#pragma omp parallel num_threads(nt)
            {
#pragma omp for schedule(dynamic, 1)
                for (int b = 0; b < 8; b++) sink++;
            }
        }
        double loop = (omp_get_wtime() - t) / reps;
        if (round == 2) printf("%.4f %.4f\n", empty * 1e6, loop * 1e6);
    }
    return 0;
}
"""

CHILD = r"""
import os, sys, time
import numpy as np
sys.path.insert(0, os.path.join(os.environ["FG_ROOT"], "benchmarks"))
import fastgrad as fg
from fastgrad import _config
_config.set_num_threads(int(os.environ["FG_T"]))
L = fg.layers
name, epochs = os.environ["FG_NET"], int(os.environ["FG_E"])
r = np.random.default_rng(0)
if name in ("mlp", "mlp512", "mlpbn"):
    x = r.random((6400, 784), dtype=np.float32); y = r.integers(0, 10, 6400)
    hidden = {"mlp": [L.Dense(128, activation="relu")],
              "mlp512": [L.Dense(512, activation="relu"), L.Dense(512, activation="relu")],
              "mlpbn": [L.Dense(256), L.BatchNormalization(), L.ReLU(), L.Dense(128, activation="relu"),
                        L.LayerNormalization()]}[name]
    bs = 256 if name == "mlp512" else 128
    m = fg.Sequential([fg.Input(shape=(784,))] + hidden + [L.Dense(10, activation="softmax")])
    m.compile(optimizer=fg.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
else:
    import bench_conv as B
    x, y = B._data(640, (32, 32, 3)) if name == "cifar" else B._data(3200, (28, 28, 1))
    m = B.fg_cifar() if name == "cifar" else B.fg_lenet()
    bs = 64
m.fit(x, y, batch_size=bs, epochs=1, verbose=0)
t = time.perf_counter()
for _ in range(epochs):
    m.fit(x, y, batch_size=bs, epochs=1, verbose=0)
dt = time.perf_counter() - t
steps = epochs * ((len(x) + bs - 1) // bs)
print(f"RESULT {steps} {dt / max(steps, 1) * 1e6:.1f}")
"""

MODELS = ["mlp", "mlp512", "mlpbn", "lenet", "cifar"]
PROBE = "probe_libgomp:GOMP_parallel"


def region_cost(threads: int) -> tuple[float, float]:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise SystemExit(f"no C compiler {cc!r} on PATH")
    with tempfile.TemporaryDirectory() as d:
        src, exe = os.path.join(d, "probe.c"), os.path.join(d, "probe")
        with open(src, "w") as f:
            f.write(PROBE_C)
        subprocess.run([cc, "-O2", "-fopenmp", src, "-o", exe], check=True)
        out = subprocess.run([exe, str(threads)], check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


def libgomp_path() -> str | None:
    sys.path.insert(0, os.path.join(ROOT, "src"))
    import fastgrad  # noqa: F401  (loads the extension modules, hence libgomp)
    with open("/proc/self/maps") as f:
        for line in f:
            if "libgomp" in line:
                return line.split()[-1]
    return None


def add_probe() -> bool:
    if shutil.which("perf") is None:
        return False
    lib = libgomp_path()
    if lib is None:
        return False
    listed = subprocess.run(["perf", "probe", "-l"], capture_output=True, text=True).stdout
    if PROBE in listed:
        return True
    r = subprocess.run(["perf", "probe", "-q", "-x", lib, "-a", "GOMP_parallel"], capture_output=True, text=True)
    return r.returncode == 0


def child(name: str, epochs: int, threads: int, count: bool) -> tuple[int, float, int | None]:
    env = dict(os.environ, FG_ROOT=ROOT, FG_NET=name, FG_E=str(epochs), FG_T=str(threads),
               PYTHONPATH=os.path.join(ROOT, "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-c", CHILD]
    if count:
        cmd = ["perf", "stat", "-x", ",", "-e", PROBE] + cmd
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    m = re.search(r"RESULT (\d+) ([0-9.]+)", r.stdout)
    assert m, r.stdout + r.stderr
    n = None
    if count:
        for line in r.stderr.splitlines():
            if PROBE in line:
                n = int(line.split(",")[0])
    return int(m.group(1)), float(m.group(2)), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=MODELS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    a = ap.parse_args()
    empty, loop = region_cost(a.threads)
    print(f"one parallel region on {a.threads} threads: {empty:.2f} us empty, "
          f"{loop:.2f} us with a dynamic 8-block loop")
    can_count = add_probe()
    if not can_count:
        print("perf uprobes unavailable: regions per step not counted")
    print(f"{'model':8} {'step (us)':>10} {'regions/step':>13} {'fork/join (us)':>15} {'share':>7}")
    for name in a.models:
        steps, step_us, _ = child(name, a.epochs, a.threads, False)
        if can_count:
            _, _, n0 = child(name, 0, a.threads, True)
            _, _, n1 = child(name, a.epochs, a.threads, True)
            per = (n1 - n0) / steps
            cost = per * loop
            print(f"{name:8} {step_us:10.1f} {per:13.1f} {cost:15.2f} {cost / step_us:7.2%}")
        else:
            print(f"{name:8} {step_us:10.1f} {'-':>13} {'-':>15} {'-':>7}")


if __name__ == "__main__":
    main()
