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
