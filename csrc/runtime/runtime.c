/* runtime.c — the process-level facts every kernel consults: which
 * instruction set to run, whether we are in a forked child, whether to flush
 * denormals, and how the library was built.
 *
 * Each extension module links its own copy of this file (static library), so
 * the state here is per module; src/fastgrad/_native/__init__.py broadcasts
 * every setting to all modules, and detection is deterministic, so the copies
 * always agree. */
#include "fg_common.h"
#include "fg_build_info.h"

#include <stdlib.h>
#include <string.h>
#if FG_HAVE_OPENMP
#include <omp.h>
#endif
#if !defined(_WIN32)
#include <pthread.h>
#endif
#if defined(FG_X86)
#include <immintrin.h>
#endif
/* An x86 CPU, with or without the AVX2 / AVX-512 copies in this build (a
 * baseline-only build, FG_ISA_DISPATCH=OFF or Microsoft's cl, has FG_X86
 * unset): flush-to-zero goes through the MXCSR either way. */
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#define FG_X86_CPU 1
#include <xmmintrin.h>
#endif

static int g_initialized = 0;
static int g_isa = FG_ISA_BASELINE;
static int g_supported[FG_ISA_COUNT] = {1, 0, 0};
static volatile int g_forked_child = 0;
static int g_flush_denormal = 0;

static const char *const g_isa_names[FG_ISA_COUNT] = {"baseline", "avx2", "avx512"};

#if !defined(_WIN32)
/* libgomp's thread pool does not survive fork(): a child that opens a
 * parallel region after its parent used one can hang. Mark the child and let
 * fg_threads_for() keep it serial. */
static void fg_atfork_child(void) { g_forked_child = 1; }
#endif

static void detect(void) {
    g_supported[FG_ISA_BASELINE] = 1;
#if defined(FG_X86) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    /* libgcc's detection also checks that the OS saves the wide registers
     * (XCR0 via xgetbv), so these mean "usable", not just "present". */
    g_supported[FG_ISA_AVX2] = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    g_supported[FG_ISA_AVX512] = g_supported[FG_ISA_AVX2] && __builtin_cpu_supports("avx512f") &&
                                 __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                                 __builtin_cpu_supports("avx512vl");
#endif
}

static int parse_isa(const char *s) {
    for (int i = 0; i < FG_ISA_COUNT; i++)
        if (strcmp(s, g_isa_names[i]) == 0) return i;
    return -1;
}

int fg_runtime_init(void) {
    if (g_initialized) return FG_OK;
    g_initialized = 1;
    detect();
#if !defined(_WIN32)
    pthread_atfork(NULL, NULL, fg_atfork_child);
#endif
    g_isa = g_supported[FG_ISA_AVX512] ? FG_ISA_AVX512 : g_supported[FG_ISA_AVX2] ? FG_ISA_AVX2 : FG_ISA_BASELINE;
    const char *env = getenv("FASTGRAD_ISA");
    if (env && *env && strcmp(env, "auto") != 0) {
        int want = parse_isa(env);
        if (want < 0 || !g_supported[want]) return FG_ERR_ISA;
        g_isa = want;
    }
    return FG_OK;
}

int fg_isa_active(void) { return g_isa; }
int fg_isa_supported(int isa) { return isa >= 0 && isa < FG_ISA_COUNT && g_supported[isa]; }
const char *fg_isa_name(int isa) { return (isa >= 0 && isa < FG_ISA_COUNT) ? g_isa_names[isa] : "unknown"; }

int fg_isa_set(int isa) {
    if (!fg_isa_supported(isa)) return FG_ERR_ISA;
    g_isa = isa;
    return FG_OK;
}

int fg_in_forked_child(void) { return g_forked_child; }

int fg_openmp_compiled(void) { return FG_HAVE_OPENMP; }

int fg_omp_max_threads(void) {
#if FG_HAVE_OPENMP
    if (g_forked_child) return 1;
    return omp_get_max_threads();
#else
    return 1;
#endif
}

const char *fg_build_compiler(void) { return FG_BUILD_COMPILER; }
const char *fg_build_flags(void) { return FG_BUILD_FLAGS; }

void fg_set_flush_denormal(int on) { g_flush_denormal = on ? 1 : 0; }
int fg_get_flush_denormal(void) { return g_flush_denormal; }

/* MXCSR bits: FTZ (15) flushes denormal results, DAZ (6) treats denormal
 * inputs as zero. Saved and restored around each thread's share of a kernel,
 * so the caller's floating-point state is never changed. */
unsigned fg_fpstate_enter(void) {
#if defined(FG_X86_CPU)
    if (!g_flush_denormal) return 0;
    unsigned saved = _mm_getcsr();
    _mm_setcsr(saved | 0x8040u);
    return saved | 0x80000000u; /* high bit marks "restore" */
#else
    return 0;
#endif
}

void fg_fpstate_leave(unsigned saved) {
#if defined(FG_X86_CPU)
    if (saved & 0x80000000u) _mm_setcsr(saved & 0x7fffffffu);
#else
    (void)saved;
#endif
}
