/* gemm_peak.c — the machine's fp32 FMA throughput, measured (compiled per
 * ISA): fg_gemm_peak_<isa>(nthreads, iters) runs `iters` steps of FG_PEAK_CHAINS
 * independent fused multiply-add chains on full vectors on each of nthreads
 * threads at once and returns the GFLOP/s of the whole team (2 flops per lane
 * per FMA): the sum of each thread's rate over its own CPU time, so a thread
 * preempted on a shared machine does not lower the figure (SMT siblings on
 * one core still split it). The baseline copy is scalar C (one lane).
 *
 * Twelve chains cover the FMA latency x throughput product of current x86
 * cores (4 cycles x 2 pipes = 8 in flight on AVX2; Zen 4 runs a 512-bit FMA
 * as two 256-bit halves, Sapphire Rapids has two 512-bit pipes). The chains
 * never reach denormals or overflow: x <- x * m + a with m slightly below 1
 * converges to a / (1 - m).
 *
 * The benchmarks quote "% of peak" / "the FLOP bound" against this number
 * (fastgrad._native.gemm.peak_gflops, cached per process, overridable with
 * FASTGRAD_PEAK_GFLOPS) instead of a constant for one machine. */
#include "gemm_internal.h"
#include "gemm_vec.h"

#include <time.h>
#if FG_HAVE_OPENMP
#include <omp.h>
#endif

#define FG_PEAK_CHAINS 12

/* Seconds of this thread's CPU time (POSIX), else wall time: on a shared
 * machine a thread preempted mid-run must not make the peak look lower. */
static double thread_s(void) {
    struct timespec ts;
#if defined(CLOCK_THREAD_CPUTIME_ID)
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0) return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#endif
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* one thread's chains; the returned sum keeps the compiler from dropping them */
static float fma_chains(int64_t iters) {
    const vf m = vf_set1(0.999f), a = vf_set1(1e-3f);
    vf x0 = vf_set1(0.1f), x1 = vf_set1(0.2f), x2 = vf_set1(0.3f), x3 = vf_set1(0.4f);
    vf x4 = vf_set1(0.5f), x5 = vf_set1(0.6f), x6 = vf_set1(0.7f), x7 = vf_set1(0.8f);
    vf x8 = vf_set1(0.9f), x9 = vf_set1(1.0f), x10 = vf_set1(1.1f), x11 = vf_set1(1.2f);
    for (int64_t i = 0; i < iters; i++) {
        x0 = vf_fma(x0, m, a);
        x1 = vf_fma(x1, m, a);
        x2 = vf_fma(x2, m, a);
        x3 = vf_fma(x3, m, a);
        x4 = vf_fma(x4, m, a);
        x5 = vf_fma(x5, m, a);
        x6 = vf_fma(x6, m, a);
        x7 = vf_fma(x7, m, a);
        x8 = vf_fma(x8, m, a);
        x9 = vf_fma(x9, m, a);
        x10 = vf_fma(x10, m, a);
        x11 = vf_fma(x11, m, a);
    }
    vf s = vf_add(vf_add(vf_add(x0, x1), vf_add(x2, x3)), vf_add(vf_add(x4, x5), vf_add(x6, x7)));
    s = vf_add(s, vf_add(vf_add(x8, x9), vf_add(x10, x11)));
    float out[FG_VW];
    memcpy(out, &s, sizeof out);
    float t = 0.0f;
    for (int i = 0; i < FG_VW; i++) t += out[i];
    return t;
}

/* one thread: GFLOP/s over its own CPU time */
static double one_thread(int64_t iters, volatile float *sink) {
    const double t0 = thread_s();
    const float r = fma_chains(iters);
    const double dt = thread_s() - t0;
    *sink = r;
    return dt > 0.0 ? (double)iters * FG_PEAK_CHAINS * FG_VW * 2.0 / dt * 1e-9 : 0.0;
}

double FG_ISA_FN(fg_gemm_peak)(int nthreads, int64_t iters) {
    if (nthreads < 1) nthreads = 1;
    if (iters < 1) iters = 1;
    volatile float sink = 0.0f;
    double total = 0.0;
#if FG_HAVE_OPENMP
    /* more threads than processors add no FMA units (and CPU-time rates would
       count each one as a whole core) */
    if (nthreads > omp_get_num_procs()) nthreads = omp_get_num_procs();
    if (nthreads > 1) {
        /* all threads run at once (shared caches, power and clock limits);
           the team's rate is the sum of its threads' rates */
#pragma omp parallel num_threads(nthreads) reduction(+ : total)
        {
            volatile float mine = 0.0f;
            total += one_thread(iters, &mine);
#pragma omp critical(fg_gemm_peak_sink)
            sink = sink + mine;
        }
        (void)sink;
        return total;
    }
#endif
    total = one_thread(iters, &sink);
    (void)sink;
    return total;
}
