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


cdef extern from "runtime/fg_blas_share.h" nogil:
    int fg_blas_share_set(int enable)
    int fg_blas_share_enabled()
    int fg_blas_share_count()
    const char *fg_blas_share_path(int i)
    int fg_blas_share_supported()
    void fg_blas_share_force_pthreads(int on)

def _blas_share_force_pthreads(bint on):
    """Tests only: run shared OpenBLAS calls on the pthread fallback."""
    fg_blas_share_force_pthreads(1 if on else 0)

def blas_share_set(bint enable):
    """Route the loaded OpenBLAS libraries' parallel jobs to fastgrad's OpenMP
    team (enable) or give them their own threads back; returns the paths of
    the libraries routed (csrc/runtime/blas_share.c)."""
    cdef int n
    with nogil:
        n = fg_blas_share_set(1 if enable else 0)
    return [fg_blas_share_path(i).decode() for i in range(n)]

def blas_share_state():
    """(supported, enabled, paths routed)."""
    n = fg_blas_share_count()
    return (bool(fg_blas_share_supported()), bool(fg_blas_share_enabled()),
            [fg_blas_share_path(i).decode() for i in range(n)])
