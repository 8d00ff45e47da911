# _common.pxi — included by every fastgrad extension module.
#
# Each module carries its own copy of csrc/runtime (static library), so each
# exposes the same small set of runtime setters; fastgrad._native broadcasts a
# setting to all loaded modules. check_status() is the one place a C status
# code becomes a Python exception.

cdef extern from "fg_common.h" nogil:
    enum:
        FG_OK
        FG_ERR_ARG
        FG_ERR_NOMEM
        FG_ERR_ISA
        FG_ERR_NONFINITE
        FG_ERR_LABEL
        FG_ERR_UNSUPPORTED
    int fg_runtime_init()
    int fg_isa_active()
    int fg_isa_supported(int isa)
    int fg_isa_set(int isa)
    const char *fg_isa_name(int isa)
    int fg_in_forked_child()
    int fg_openmp_compiled()
    int fg_omp_max_threads()
    const char *fg_build_compiler()
    const char *fg_build_flags()
    void fg_set_flush_denormal(int on)
    int fg_get_flush_denormal()

_ISA_NAMES = ("baseline", "avx2", "avx512")

def _runtime_init():
    """Detect the CPU and apply FASTGRAD_ISA; raise if that path is unavailable."""
    if fg_runtime_init() != FG_OK:
        import os
        avail = [n for i, n in enumerate(_ISA_NAMES) if fg_isa_supported(i)]
        raise RuntimeError(
            f"FASTGRAD_ISA={os.environ.get('FASTGRAD_ISA')!r} is not available on this "
            f"CPU/build; available: {', '.join(avail)} (or 'auto')")

_runtime_init()

def _isa_set(int isa):
    if fg_isa_set(isa) != FG_OK:
        raise ValueError(f"instruction set {_ISA_NAMES[isa] if 0 <= isa < 3 else isa!r} "
                         "is not available on this CPU/build")

def _isa_active():
    return fg_isa_active()

def _set_flush_denormal(bint on):
    fg_set_flush_denormal(1 if on else 0)

_STATUS_TEXT = {
    FG_ERR_ARG: "invalid argument",
    FG_ERR_NOMEM: "out of memory",
    FG_ERR_ISA: "instruction set not available",
    FG_ERR_NONFINITE: "non-finite value (NaN or inf)",
    FG_ERR_LABEL: "label outside [0, classes)",
    FG_ERR_UNSUPPORTED: "unsupported combination",
}

cdef int check_status(int status, str op, str detail) except -1:
    """Raise the Python exception for a non-zero C status (call with the GIL)."""
    if status == FG_OK:
        return 0
    text = _STATUS_TEXT.get(status, f"status {status}")
    msg = f"{op}: {text}" + (f" ({detail})" if detail else "")
    if status == FG_ERR_NOMEM:
        raise MemoryError(msg)
    raise ValueError(msg)
