# cython: language_level=3
"""fastgrad._native.runtime — build and CPU facts, ISA and denormal settings."""

include "_common.pxi"

def isa_supported():
    """Names of the instruction-set paths this CPU and build can run."""
    return [n for i, n in enumerate(_ISA_NAMES) if fg_isa_supported(i)]

def isa_active_name():
    return fg_isa_name(fg_isa_active()).decode()

def openmp_compiled():
    return bool(fg_openmp_compiled())

def omp_max_threads():
    """omp_get_max_threads() of the calling thread: honours OMP_NUM_THREADS and
    threadpoolctl limits; 1 without OpenMP or in a forked child."""
    return fg_omp_max_threads()

def in_forked_child():
    return bool(fg_in_forked_child())

def build_compiler():
    return fg_build_compiler().decode()

def build_flags():
    return fg_build_flags().decode()

def get_flush_denormal():
    return bool(fg_get_flush_denormal())
