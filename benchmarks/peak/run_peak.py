"""Build and run the fp32 FMA peak probe (fma_peak.c) with the system C compiler.

    python benchmarks/peak/run_peak.py            # AVX2 (+ AVX-512 if the CPU has it)
    python benchmarks/peak/run_peak.py --threads 2 --iters 200000000

The GEMM benchmarks quote their GFLOP/s against these numbers ("% of peak").
Needs `cc` with OpenMP (gcc/clang + libgomp/libomp) on an x86-64 machine.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def cpu_has(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(flag in line.split() for line in f if line.startswith("flags"))
    except OSError:
        return False


def build(out_dir: str, avx512: bool) -> str:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise SystemExit(f"no C compiler {cc!r} on PATH")
    exe = os.path.join(out_dir, "fma_peak_avx512" if avx512 else "fma_peak_avx2")
    flags = ["-O2", "-mavx2", "-mfma", "-fopenmp"]
    if avx512:
        flags += ["-mavx512f", "-DFG_PEAK_AVX512"]
    subprocess.run([cc, *flags, os.path.join(HERE, "fma_peak.c"), "-o", exe], check=True)
    return exe


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--iters", type=int, default=100_000_000)
    args = ap.parse_args(argv)
    isas = [False] + ([True] if cpu_has("avx512f") else [])
    with tempfile.TemporaryDirectory() as tmp:
        for avx512 in isas:
            exe = build(tmp, avx512)
            subprocess.run([exe, str(args.threads), str(args.iters)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
