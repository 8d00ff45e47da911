/* stream_triad.c — STREAM-style triad a[i] = b[i] + s * c[i] over float32
 * arrays, the memory-bandwidth yardstick for fastgrad's memory-bound kernels
 * (relu, optimizer updates): "relu reaches X% of triad bandwidth".
 *
 *   usage: stream_triad [threads] [n_floats] [reps]
 *   prints: threads=T n=N triad_GBps=G triad_wa_GBps=W best_ms=M
 * triad_GBps counts 12 bytes per element (2 reads + 1 write), triad_wa_GBps
 * 16 (the write-allocate read of `a` too). Arrays are first-touched by the
 * threads that later use them, OpenMP static schedule, best of `reps`. */
#include <stdio.h>
#include <stdlib.h>
#include <omp.h>

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : omp_get_max_threads();
    long n = argc > 2 ? atol(argv[2]) : 64L * 1024 * 1024;
    int reps = argc > 3 ? atoi(argv[3]) : 10;
    if (threads < 1 || n < 1024 || reps < 1) {
        fprintf(stderr, "usage: %s [threads>=1] [n_floats>=1024] [reps>=1]\n", argv[0]);
        return 2;
    }
    float *a = aligned_alloc(64, (size_t)n * sizeof(float));
    float *b = aligned_alloc(64, (size_t)n * sizeof(float));
    float *c = aligned_alloc(64, (size_t)n * sizeof(float));
    if (!a || !b || !c) {
        fprintf(stderr, "out of memory for n=%ld\n", n);
        return 1;
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long i = 0; i < n; i++) {
        a[i] = 0.0f;
        b[i] = 1.0f;
        c[i] = 2.0f;
    }
    const float s = 3.0f;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = omp_get_wtime();
#pragma omp parallel for num_threads(threads) schedule(static)
        for (long i = 0; i < n; i++) a[i] = b[i] + s * c[i];
        double t = omp_get_wtime() - t0;
        if (t < best) best = t;
    }
    double check = 0.0;
    for (long i = 0; i < n; i += 4096) check += a[i];
    if (check != 7.0 * (double)((n + 4095) / 4096)) {
        fprintf(stderr, "triad result wrong\n");
        return 1;
    }
    printf("threads=%d n=%ld triad_GBps=%.2f triad_wa_GBps=%.2f best_ms=%.3f\n", threads, n,
           12.0 * (double)n / best / 1e9, 16.0 * (double)n / best / 1e9, best * 1e3);
    free(a);
    free(b);
    free(c);
    return 0;
}
