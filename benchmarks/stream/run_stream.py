"""Build and run the STREAM-triad probe (stream_triad.c) with the system C compiler.

    python benchmarks/stream/run_stream.py                 # 1 and 2 threads, 64M floats
    python benchmarks/stream/run_stream.py --threads 2 --n 16777216

benchmarks/bench_kernels.py calls `measure()` to quote relu / optimizer
bandwidth as a fraction of triad bandwidth. Needs `cc` with OpenMP.
"""
from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


@functools.lru_cache(maxsize=None)
def _build() -> str:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise RuntimeError(f"no C compiler {cc!r} on PATH")
    out = tempfile.mkdtemp(prefix="fg_stream_")
    exe = os.path.join(out, "stream_triad")
    # -O2 + the compiler's default target: the loop is bandwidth-bound, not ISA-bound
    subprocess.run([cc, "-O2", "-fopenmp", os.path.join(HERE, "stream_triad.c"), "-o", exe], check=True,
                   capture_output=True)
    return exe


@functools.lru_cache(maxsize=None)
def measure(threads: int = 2, n: int = 64 * 1024 * 1024, reps: int = 10) -> dict:
    """{'threads', 'n', 'triad_GBps', 'triad_wa_GBps', 'best_ms'} from one run of the probe."""
    res = subprocess.run([_build(), str(threads), str(n), str(reps)], check=True, capture_output=True, text=True)
    out = {}
    for tok in res.stdout.split():
        k, v = tok.split("=")
        out[k] = float(v) if "." in v else int(v)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--n", type=int, default=64 * 1024 * 1024)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args(argv)
    for t in args.threads:
        r = measure(t, args.n, args.reps)
        print(f"threads={t}: triad {r['triad_GBps']:.1f} GB/s ({r['triad_wa_GBps']:.1f} GB/s counting "
              f"write-allocate), best {r['best_ms']:.2f} ms for n={args.n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
