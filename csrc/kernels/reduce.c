/* reduce.c — column sums (bias gradients), the global sum of squares, and
 * in-place rescaling / clipping. Compiled once per instruction set.
 *
 * These are written as plain C loops that the compiler vectorises for each
 * ISA copy. With -ffp-contract=off every copy performs the same IEEE
 * operations in the same order, so the reductions give the same bits on every
 * ISA and, with the fixed chunking of fg_vmath.h, for every thread count. */
#include "fg_reduce.h"
#include "fg_vmath.h"

/* measured on the 2-core dev box: below ~128K floats a second thread costs more
 * (team wake-up + join, ~5-10 us) than it saves on a memory-bound pass */
#define GRAIN_MEM ((int64_t)1 << 16)
#define SUMSQ_MIN_CHUNK 4096

/* out[c0:c1] = sum over rows of x[:, c0:c1], row order, tiles of 1024 columns (4 KiB in L1) */
static void sum_rows_cols(float *FG_RESTRICT out, const float *FG_RESTRICT x, int64_t rows, int64_t cols,
                          int64_t c0, int64_t c1) {
    for (int64_t t0 = c0; t0 < c1; t0 += 1024) {
        int64_t t1 = t0 + 1024 < c1 ? t0 + 1024 : c1;
        float *FG_RESTRICT o = out + t0;
        const int64_t w = t1 - t0;
        memcpy(o, x + t0, (size_t)w * sizeof(float));
        for (int64_t r = 1; r < rows; r++) {
            const float *FG_RESTRICT xr = x + r * cols + t0;
            for (int64_t j = 0; j < w; j++) o[j] += xr[j];
        }
    }
}

/* x: (rows, cols) -> out: (cols,) */
int FG_ISA_FN(fg_sum_rows)(float *out, const float *x, int64_t rows, int64_t cols, int nthreads) {
    if (rows < 0 || cols < 0) return FG_ERR_ARG;
    if (cols == 0) return FG_OK;
    if (rows == 0) {
        memset(out, 0, (size_t)cols * sizeof(float));
        return FG_OK;
    }
    /* threads split the columns, so each column keeps its sequential row order */
    int nt = fg_threads_for(rows * cols, GRAIN_MEM, nthreads);
    int64_t col_blocks = (cols + 15) / 16;
    if (nt > col_blocks) nt = (int)col_blocks;
#define BODY_(lo, hi) sum_rows_cols(out, x, rows, cols, lo, hi)
    FG_PARALLEL_RANGE(cols, 16, nt, BODY_);
#undef BODY_
    return FG_OK;
}

/* sum of x[lo:hi]^2 in double: 16 lane accumulators (element i goes to lane
 * (i - lo) % 16), squares exact in double, lanes combined in a fixed tree */
static double sumsq_chunk(const float *FG_RESTRICT x, int64_t lo, int64_t hi) {
    double acc[16] = {0};
    int64_t i = lo;
    for (; i + 16 <= hi; i += 16)
        for (int l = 0; l < 16; l++) acc[l] += (double)x[i + l] * (double)x[i + l];
    for (int l = 0; i < hi; i++, l++) acc[l] += (double)x[i] * (double)x[i];
    for (int l = 0; l < 8; l++) acc[l] += acc[l + 8];
    for (int l = 0; l < 4; l++) acc[l] += acc[l + 4];
    for (int l = 0; l < 2; l++) acc[l] += acc[l + 2];
    return acc[0] + acc[1];
}

/* x: (n,) -> *out = sum x^2 */
int FG_ISA_FN(fg_sumsq)(double *out, const float *x, int64_t n, int nthreads) {
    if (n < 0) return FG_ERR_ARG;
    *out = 0.0;
    if (n == 0) return FG_OK;
    double partial[FG_MAX_CHUNKS];
    int64_t cs = fg_chunk_size(n, SUMSQ_MIN_CHUNK);
    int64_t nchunks = (n + cs - 1) / cs;
    int nt = fg_threads_for(n, GRAIN_MEM, nthreads);
    if (nt > nchunks) nt = (int)nchunks;
#define BODY_(c0, c1)                                                                 \
    for (int64_t c = (c0); c < (c1); c++) {                                           \
        int64_t lo_c = c * cs, hi_c = lo_c + cs < n ? lo_c + cs : n;                  \
        partial[c] = sumsq_chunk(x, lo_c, hi_c);                                      \
    }
    FG_PARALLEL_RANGE(nchunks, 1, nt, BODY_);
#undef BODY_
    double s = 0.0;
    for (int64_t c = 0; c < nchunks; c++) s += partial[c];
    *out = s;
    return FG_OK;
}

static void scale_range(float *FG_RESTRICT x, float s, int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) x[i] *= s;
}

/* OR over x[lo, hi) of (exponent field + 1 ulp of exponent): bit 31 is set
 * exactly when some exponent is all ones (NaN or inf). Integer and/add/or
 * only, so every ISA copy vectorises it and no FP exception can be raised. */
static uint32_t nonfinite_bits(const float *FG_RESTRICT x, int64_t lo, int64_t hi) {
    const uint32_t *FG_RESTRICT u = (const uint32_t *)(const void *)x;
    uint32_t acc = 0;
    for (int64_t i = lo; i < hi; i++) acc |= (u[i] & 0x7f800000u) + 0x00800000u;
    return acc & 0x80000000u;
}

/* x: (n,) -> *ok */
int FG_ISA_FN(fg_all_finite)(int *ok, const float *x, int64_t n, int nthreads) {
    if (n < 0 || !ok) return FG_ERR_ARG;
    uint32_t bad = 0;
    int nt = fg_threads_for(n, GRAIN_MEM, nthreads);
#define BODY_(lo, hi)                                 \
    do {                                              \
        uint32_t b_ = nonfinite_bits(x, lo, hi);      \
        if (b_) {                                     \
            _Pragma("omp atomic") bad |= b_;          \
        }                                             \
    } while (0)
    FG_PARALLEL_RANGE(n, 16, nt, BODY_);
#undef BODY_
    *ok = bad == 0;
    return FG_OK;
}

/* x: (n,) in place */
int FG_ISA_FN(fg_scale)(float *x, int64_t n, float s, int nthreads) {
    if (n < 0) return FG_ERR_ARG;
    if (n == 0) return FG_OK;
    int nt = fg_threads_for(n, GRAIN_MEM, nthreads);
#define BODY_(lo, hi) scale_range(x, s, lo, hi)
    FG_PARALLEL_RANGE(n, 16, nt, BODY_);
#undef BODY_
    return FG_OK;
}

static void clip_range(float *FG_RESTRICT x, float lo_v, float hi_v, int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) {
        float v = x[i];
        v = v < lo_v ? lo_v : v; /* NaN compares false: stays NaN */
        v = v > hi_v ? hi_v : v;
        x[i] = v;
    }
}

/* x: (n,) in place */
int FG_ISA_FN(fg_clip_value)(float *x, int64_t n, float lo, float hi, int nthreads) {
    if (n < 0 || lo > hi) return FG_ERR_ARG;
    if (n == 0) return FG_OK;
    int nt = fg_threads_for(n, GRAIN_MEM, nthreads);
#define BODY_(a, b) clip_range(x, lo, hi, a, b)
    FG_PARALLEL_RANGE(n, 16, nt, BODY_);
#undef BODY_
    return FG_OK;
}
