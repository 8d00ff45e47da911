"""Build and run ukernel_probe.c (the packed GEMM's time split, in C) per ISA.

    python benchmarks/peak/run_ukernel_probe.py                 # 1024^3, 2 threads, avx2 + avx512
    python benchmarks/peak/run_ukernel_probe.py 2048 2048 2048 --isa avx2
    python benchmarks/peak/run_ukernel_probe.py 1024 1024 1024 -D FG_KC=384 -D FG_MC=96

Compiles with the library's flags for the ISA copies (cmake/FastgradISA.cmake,
-O3 -fno-math-errno -fno-trapping-math, OpenMP), never -march=native. Extra
-D options override the blocking (FG_MC, FG_KC, FG_NC, FG_UKR_UNROLL) to try
choices without touching the library build.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "..", "..", "csrc")
FLAGS = {
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma", "-mf16c"],
}


def cpu_has(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(flag in line.split() for line in f if line.startswith("flags"))
    except OSError:
        return False


def build(out_dir: str, isa: str, defines: list[str]) -> str:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise SystemExit(f"no C compiler {cc!r} on PATH")
    exe = os.path.join(out_dir, f"ukernel_probe_{isa}")
    cmd = [cc, "-std=c11", "-D_GNU_SOURCE", "-O3", "-fno-math-errno", "-fno-trapping-math", "-fopenmp",
           *FLAGS[isa], "-DFG_HAVE_OPENMP=1", "-DFG_X86=1", "-DFG_ISA_ID=9", "-I", CSRC, "-I", os.path.join(CSRC, "gemm"),
           *[f"-D{d}" for d in defines], os.path.join(HERE, "ukernel_probe.c"), "-o", exe, "-lm"]
    subprocess.run(cmd, check=True)
    return exe


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shape", nargs="*", type=int, help="M N K (default 1024 1024 1024)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--isa", action="append", choices=sorted(FLAGS))
    ap.add_argument("--trans", default="nn", help="nn, tn (A^T), nt (B^T)")
    ap.add_argument("-D", dest="defines", action="append", default=[])
    args = ap.parse_args(argv)
    M, N, K = (args.shape + [1024, 1024, 1024][len(args.shape):])[:3]
    isas = args.isa or (["avx2"] + (["avx512"] if cpu_has("avx512f") else []))
    with tempfile.TemporaryDirectory() as tmp:
        for isa in isas:
            exe = build(tmp, isa, args.defines)
            subprocess.run([exe, str(M), str(N), str(K), str(args.threads),
                            str(int(args.trans[0] == "t")), str(int(args.trans[1] == "t"))], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
