"""Best-of GEMM timings for noisy shared machines (not a pytest file).

    PYTHONPATH=src python benchmarks/peak/gemm_best_of.py avx512
    OPENBLAS_CORETYPE=Haswell PYTHONPATH=src python benchmarks/peak/gemm_best_of.py avx2  # AVX2 vs AVX2

Minimum over many single calls, one library at a time with a pause between
them (OpenBLAS and torch workers spin after their calls and would starve the
next library's second thread). On an oversubscribed box the minimum is the
uncontended time; medians there measure the neighbours. Prints a Markdown
table: fastgrad native (the binding), np.matmul(out=) under threadpoolctl
limits, torch.matmul(out=) when importable.
"""
import numpy as np, time, sys
import fastgrad._native as nat
from threadpoolctl import threadpool_limits
g = nat.module("gemm")
isa = sys.argv[1] if len(sys.argv) > 1 else "avx2"
nat.set_isa(isa)
try:
    import torch
except ImportError:
    torch = None
rng = np.random.default_rng(0)
shapes = [("1024^3",1024,1024,1024,0,0,2),("2048^3",2048,2048,2048,0,0,2),("256x1024x1024",256,1024,1024,0,0,2),("1024^3 1T",1024,1024,1024,0,0,1),
 ("mlp fwd 128x128x784",128,128,784,0,0,2),("mlp dW 784x128x128 A^T",784,128,128,1,0,2),("mlp dX 128x784x128 B^T",128,784,128,0,1,2),
 ("mlp fwd 1T",128,128,784,0,0,1),("mlp dW 1T",784,128,128,1,0,1),("mlp dX 1T",128,784,128,0,1,1),
 ("skinny fwd 128x10x128",128,10,128,0,0,2),("skinny dW 128x10x128 A^T",128,10,128,1,0,2),("skinny dX 128x128x10 B^T",128,128,10,0,1,2)]
sel = sys.argv[2:]
print(f"| shape (M,N,K) | threads | fastgrad GF/s | numpy GF/s | torch GF/s | fg/numpy | fg/torch |")
print("|---|---:|---:|---:|---:|---:|---:|")
for name,M,N,K,ta,tb,nt in shapes:
    if sel and not any(s in name for s in sel): continue
    A = rng.standard_normal((K,M) if ta else (M,K)).astype(np.float32)
    B = rng.standard_normal((N,K) if tb else (K,N)).astype(np.float32)
    C = np.empty((M,N),np.float32)
    fl = 2*M*N*K
    opA = A.T if ta else A; opB = B.T if tb else B
    fns = [lambda: g.gemm(A,B,C,ta,tb,1.0,0.0,nt), lambda: np.matmul(opA,opB,out=C)]
    if torch is not None:
        torch.set_num_threads(nt)
        tA, tB, tC = torch.from_numpy(opA), torch.from_numpy(opB), torch.from_numpy(C)
        fns.append(lambda: torch.matmul(tA, tB, out=tC))
    best = [1e9]*len(fns)
    budget = min(3.0, max(0.3, fl/1e9*0.05))
    # one library at a time (OpenBLAS and torch workers spin for a while
    # after a call and would steal the second core from the next library),
    # a pause between them, two passes
    with threadpool_limits(nt):
        for rep in range(2):
            for i, f in enumerate(fns):
                time.sleep(0.25)
                f()
                t_end = time.perf_counter() + budget / 2
                n = 0
                while time.perf_counter() < t_end or n < 5:
                    t = time.perf_counter(); f(); t = time.perf_counter() - t
                    best[i] = min(best[i], t)
                    n += 1
    gf = [fl/b/1e9 for b in best]
    tg = f"{gf[2]:.1f}" if len(gf) > 2 else "-"
    rt = f"{best[2]/best[0]:.2f}" if len(gf) > 2 else "-"
    print(f"| {name} | {nt} | {gf[0]:.1f} | {gf[1]:.1f} | {tg} | {best[1]/best[0]:.2f} | {rt} |", flush=True)
