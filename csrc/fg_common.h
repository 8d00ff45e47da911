/* fg_common.h — conventions shared by every fastgrad kernel.
 *
 * - Names are fg_<family>_<op>[_forward|_backward]; outputs first, then const
 *   inputs, then sizes (and leading dimensions where a matrix may be a view).
 * - Every exported kernel returns an int status (FG_OK or an FG_ERR_* code).
 *   C never prints, exits or aborts; the Cython layer turns a status into a
 *   Python exception whose message names the op and the shapes.
 * - Thread count is an explicit argument (`nthreads`, resolved in Python).
 *   A kernel calls fg_threads_for() to drop to one thread for small work or in
 *   a forked child, and runs a plain serial loop (no omp pragma at all) when
 *   that returns 1, so a child of a fork never touches the OpenMP pool.
 * - Sums are taken in a fixed order (fixed-size chunks, partials combined in
 *   chunk order), so results do not depend on the thread count.
 *
 * ISA dispatch: files compiled per instruction set (ISA_SOURCES in CMake) see
 * FG_ISA_SUFFIX and define their exported kernels as FG_ISA_FN(name), which
 * expands to name_baseline / name_avx2 / name_avx512. A dispatcher compiled
 * once picks one with FG_DISPATCH(name) from fg_isa_active().
 */
#ifndef FG_COMMON_H
#define FG_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status codes (mirrored in src/fastgrad/_native/_status.pxi) ---- */
enum {
    FG_OK = 0,
    FG_ERR_ARG = 1,       /* invalid size / argument combination */
    FG_ERR_NOMEM = 2,     /* allocation failed */
    FG_ERR_ISA = 3,       /* requested instruction set not available */
    FG_ERR_NONFINITE = 4, /* NaN/inf met where the op forbids it */
    FG_ERR_LABEL = 5,     /* class label outside [0, classes) */
    FG_ERR_UNSUPPORTED = 6
};

/* ---- activations, shared by the fused dense epilogue (gemm/) and the
 * element-wise kernels (kernels/). Codes are stable: append new ones just
 * above FG_ACT_COUNT, never renumber. fastgrad._native reads them from here
 * (cdef extern); fastgrad.backend.numpy_ops.ACTIVATIONS mirrors them for the
 * NumPy backend (a test compares the two). Formulas follow Keras 3; the
 * parametrised ones take an fg_act_param (NULL: the defaults noted here, the
 * values Keras uses when the activation is given by name). */
enum {
    FG_ACT_LINEAR = 0,
    FG_ACT_RELU = 1,          /* max(x, 0) */
    FG_ACT_SIGMOID = 2,       /* 1 / (1 + exp(-x)) */
    FG_ACT_TANH = 3,
    FG_ACT_GELU = 4,          /* exact: 0.5 x (1 + erf(x / sqrt 2)) */
    FG_ACT_GELU_TANH = 5,     /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
    FG_ACT_LEAKY_RELU = 6,    /* x >= 0 ? x : alpha x            (alpha: negative_slope, default 0.2) */
    FG_ACT_ELU = 7,           /* x > 0 ? x : alpha (exp(x) - 1)  (alpha default 1.0) */
    FG_ACT_SELU = 8,          /* scale * elu(x, alpha), alpha = 1.6732632423543772, scale = 1.0507009873554805 */
    FG_ACT_SILU = 9,          /* x * sigmoid(x) (Keras alias: swish) */
    FG_ACT_SOFTPLUS = 10,     /* log(1 + exp(x)), as max(x, 0) + log1p(exp(-|x|)) */
    FG_ACT_SOFTSIGN = 11,     /* x / (1 + |x|); +-1 at +-inf */
    FG_ACT_HARD_SIGMOID = 12, /* relu6(x + 3) / 6 (Keras 3) */
    FG_ACT_MISH = 13,         /* x * tanh(softplus(x)) */
    FG_ACT_EXPONENTIAL = 14,  /* exp(x) */
    FG_ACT_RELU6 = 15,        /* min(max(x, 0), 6) */
    FG_ACT_HARD_SILU = 16,    /* x * hard_sigmoid(x) (Keras alias: hard_swish) */
    FG_ACT_RELU_GENERAL = 17, /* Keras relu(x, negative_slope, max_value, threshold):
                               *   a = x > threshold ? x : 0; a = clip(a, 0, max_value) if max_value is finite;
                               *   y = a - negative_slope * max(threshold - x, 0)
                               * (alpha = negative_slope, max_value, threshold; default: plain relu) */
    FG_ACT_COUNT              /* one past the last code (not an activation) */
};

/* Parameters of the parametrised activations (unused fields are ignored). */
typedef struct fg_act_param {
    float alpha;     /* leaky_relu / relu_general: negative slope; elu: alpha */
    float max_value; /* relu_general: upper clip, +INFINITY for none */
    float threshold; /* relu_general: threshold */
} fg_act_param;

static inline int fg_act_valid(int act) { return act >= FG_ACT_LINEAR && act < FG_ACT_COUNT; }

/* Which array an activation's backward reads (fg_act_backward's `ref`):
 * 1 = the forward INPUT x (gelu, gelu_tanh, leaky_relu, elu, selu, silu,
 * softplus, softsign, mish, hard_silu, relu_general), 0 = the forward OUTPUT
 * y (linear, relu, sigmoid, tanh, hard_sigmoid, exponential, relu6). A layer
 * keeps the pre-activation only where this says 1. The single source of this
 * rule (fastgrad.activations.backward_needs_input mirrors it, tested). */
static inline int fg_act_backward_needs_input(int act) {
    switch (act) {
    case FG_ACT_GELU:
    case FG_ACT_GELU_TANH:
    case FG_ACT_LEAKY_RELU:
    case FG_ACT_ELU:
    case FG_ACT_SELU:
    case FG_ACT_SILU:
    case FG_ACT_SOFTPLUS:
    case FG_ACT_SOFTSIGN:
    case FG_ACT_MISH:
    case FG_ACT_HARD_SILU:
    case FG_ACT_RELU_GENERAL: return 1;
    default: return 0;
    }
}

/* ---- instruction sets ---- */
enum { FG_ISA_BASELINE = 0, FG_ISA_AVX2 = 1, FG_ISA_AVX512 = 2, FG_ISA_COUNT = 3 };

#if defined(_MSC_VER)
#define FG_RESTRICT __restrict
#define FG_INLINE static __forceinline
#else
#define FG_RESTRICT __restrict__
#define FG_INLINE static inline __attribute__((always_inline))
#endif

#define FG_CAT_(a, b) a##b
#define FG_CAT(a, b) FG_CAT_(a, b)
#ifdef FG_ISA_SUFFIX
#define FG_ISA_FN(name) FG_CAT(name, FG_ISA_SUFFIX)
#endif

/* ---- runtime (csrc/runtime/runtime.c) ---- */
/* Detect the CPU, apply FASTGRAD_ISA; idempotent. FG_ERR_ISA if forced to an
 * unavailable path (the path is then left at the best available one). */
int fg_runtime_init(void);
int fg_isa_active(void);                 /* FG_ISA_* in use */
int fg_isa_supported(int isa);           /* 1 if this CPU (and build) has it */
int fg_isa_set(int isa);                 /* FG_OK or FG_ERR_ISA */
const char *fg_isa_name(int isa);        /* "baseline", "avx2", "avx512" */
int fg_in_forked_child(void);            /* 1 after fork() of a process that used threads */
int fg_openmp_compiled(void);
int fg_omp_max_threads(void);            /* omp_get_max_threads(), 1 without OpenMP */
const char *fg_build_compiler(void);
const char *fg_build_flags(void);
/* Flush-to-zero/denormals-are-zero for the duration of a kernel: kernels call
 * fg_fpstate_enter() at the top of each thread's work and fg_fpstate_leave()
 * at its end; both are no-ops unless fg_set_flush_denormal(1) was called. */
void fg_set_flush_denormal(int on);
int fg_get_flush_denormal(void);
unsigned fg_fpstate_enter(void);
void fg_fpstate_leave(unsigned saved);

/* Number of threads to use for `work` units when one thread should handle at
 * least `grain` units, capped by the caller's `nthreads`. */
static inline int fg_threads_for(int64_t work, int64_t grain, int nthreads) {
    if (nthreads <= 1 || work < 2 * grain || fg_in_forked_child()) return 1;
    int64_t t = work / grain;
    return (int)(t < nthreads ? t : nthreads);
}

/* Pick the ISA copy of an exported kernel. On non-x86 builds only the
 * baseline copy exists. */
#if defined(FG_X86)
#define FG_DISPATCH(name)                                                  \
    (fg_isa_active() == FG_ISA_AVX512 ? FG_CAT(name, _avx512)              \
     : fg_isa_active() == FG_ISA_AVX2 ? FG_CAT(name, _avx2)                \
                                      : FG_CAT(name, _baseline))
#define FG_DECLARE_ISA(ret, name, args) \
    ret FG_CAT(name, _baseline) args;   \
    ret FG_CAT(name, _avx2) args;       \
    ret FG_CAT(name, _avx512) args;
#else
#define FG_DISPATCH(name) FG_CAT(name, _baseline)
#define FG_DECLARE_ISA(ret, name, args) ret FG_CAT(name, _baseline) args;
#endif

#ifdef __cplusplus
}
#endif
#endif /* FG_COMMON_H */
