"""Shared benchmark setup: a quiet start for every benchmark.

OpenBLAS (NumPy) worker threads busy-wait for about 2^28 cycles (~0.1 s)
after each call, and PyTorch's OpenMP workers spin for a while too. On a
2-core machine a benchmark that starts right after another library's calls
finds both cores taken, and its first rounds measure the neighbour. Each
benchmark therefore starts after a short pause (FASTGRAD_BENCH_SETTLE
seconds, default 0.3; 0 under --benchmark-disable, where nothing is timed).
Rounds within one benchmark run the same library back to back, as a user's
loop would, so no pause is put between them.
"""
import os
import time

import pytest


@pytest.fixture(autouse=True)
def _settle(request):
    disabled = request.config.getoption("benchmark_disable", default=False)
    if not disabled and "benchmark" in request.fixturenames:
        time.sleep(float(os.environ.get("FASTGRAD_BENCH_SETTLE", "0.3")))
    yield


def _machine_info() -> dict:
    """What a saved run needs to be compared honestly across machines: the CPU,
    fastgrad's instruction-set path, threads and build flags, and the comparison
    libraries' versions and BLAS (threadpoolctl). Computed once per session."""
    if _MACHINE:
        return _MACHINE
    import platform

    import numpy as np

    import fastgrad as fg
    info = {"cpu": platform.processor() or platform.machine()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cfg = fg.config_info()
    for key in ("isa", "threads", "flags", "compiler", "backend"):
        if key in cfg:
            info[f"fastgrad_{key}"] = str(cfg[key])
    info["numpy"] = np.__version__
    try:
        from threadpoolctl import threadpool_info
        info["blas"] = "; ".join(f"{p.get('internal_api')} {p.get('version')} "
                                 f"{p.get('architecture')} ({p.get('num_threads')} threads)"
                                 for p in threadpool_info() if p.get("user_api") == "blas")
    except ImportError:
        pass
    info["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE", "")
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = "not installed"
    _MACHINE.update(info)
    return _MACHINE


_MACHINE: dict = {}


@pytest.fixture(autouse=True)
def _record_machine(request):
    """Every benchmark's extra_info names the machine and libraries it ran on."""
    if "benchmark" in request.fixturenames:
        bench = request.getfixturevalue("benchmark")
        for k, v in _machine_info().items():
            bench.extra_info.setdefault(k, v)
    yield
