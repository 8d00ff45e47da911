/* fma_peak.c — measure the fp32 fused-multiply-add peak of this machine:
 * independent FMA chains (enough accumulators to cover the FMA latency times
 * the number of FMA units) in a tight loop, on 1..T threads.
 *
 *   AVX2:    12 ymm accumulators x 8 lanes x 2 flops per FMA
 *   AVX-512: 24 zmm accumulators x 16 lanes x 2 flops (built with -DFG_PEAK_AVX512)
 *
 * Build and run through run_peak.py (cc -O2 -mavx2 -mfma -fopenmp). Prints
 * one line per thread count: "threads=<t> isa=<isa> gflops=<x>". */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(FG_PEAK_AVX512)
typedef __m512 V;
#define NACC 24
#define LANES 16
#define SET1 _mm512_set1_ps
#define FMA _mm512_fmadd_ps
#define ADD _mm512_add_ps
#define REDUCE(v) _mm512_reduce_add_ps(v)
#define ISA "avx512"
#else
typedef __m256 V;
#define NACC 12
#define LANES 8
#define SET1 _mm256_set1_ps
#define FMA _mm256_fmadd_ps
#define ADD _mm256_add_ps
static float REDUCE(__m256 v) {
    float t[8];
    _mm256_storeu_ps(t, v);
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}
#define ISA "avx2"
#endif

static float run(long iters) {
    V acc[NACC];
    for (int i = 0; i < NACC; i++) acc[i] = SET1(0.001f * (float)i);
    const V a = SET1(0.999999f), b = SET1(1e-7f);
    for (long it = 0; it < iters; it++) {
        /* NACC independent chains: the loop is FMA-throughput bound; fully
           unrolled so the accumulators live in registers */
#pragma GCC unroll 32
        for (int i = 0; i < NACC; i++) acc[i] = FMA(acc[i], a, b);
    }
    V s = acc[0];
    for (int i = 1; i < NACC; i++) s = ADD(s, acc[i]);
    return REDUCE(s);
}

int main(int argc, char **argv) {
    int maxt = argc > 1 ? atoi(argv[1]) : omp_get_max_threads();
    long iters = argc > 2 ? atol(argv[2]) : 100000000L;
    volatile float sink = 0;
    sink += run(iters / 10); /* warm up the clock */
    for (int t = 1; t <= maxt; t++) {
        double best = 0;
        for (int rep = 0; rep < 3; rep++) {
            double t0 = omp_get_wtime();
            float s = 0;
#pragma omp parallel num_threads(t) reduction(+ : s)
            s += run(iters);
            double dt = omp_get_wtime() - t0;
            sink += s;
            double gf = (double)t * iters * NACC * LANES * 2 / dt / 1e9;
            if (gf > best) best = gf;
        }
        printf("threads=%d isa=%s gflops=%.1f\n", t, ISA, best);
    }
    return sink == 12345.0f; /* keep the work observable */
}
