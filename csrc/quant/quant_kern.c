/* quant_kern.c — the int8 kernels, compiled once per path of this family:
 *   baseline    portable C (4 x 16 tile)
 *   avx2        no VNNI: A widened to s16 when packed, B widened with
 *               vpmovsxbw, vpmaddwd (s16 x s16 pairs -> s32), 6 x 8 tile
 *   avxvnni     256-bit vpdpbusd (AVX-VNNI, VEX), 6 x 16 tile
 *   avx512vnni  512-bit vpdpbusd (AVX512-VNNI), 8 x 32 tile
 * FG_QSUFFIX names the copy, FG_QPATH (0..3) selects its code; everything
 * but the three exported runners is static.
 *
 * Why not vpmaddubsw on AVX2: it multiplies u8 x s8 and adds adjacent pairs
 * into s16 with saturation; 255 * 127 * 2 = 64770 > 32767, so a pair of
 * large activations and weights saturates and the result is no longer the
 * exact product (ONNX Runtime answers this with 7-bit "reduce_range"
 * weights). Here both operands are widened to s16 first and multiplied with
 * vpmaddwd, whose pair sums (|a b| <= 255 * 128, two of them) fit s32 with
 * room to spare: exact for every u8 / s8 value, at half the multiply-adds of
 * vpmaddubsw per instruction.
 *
 * Exactness: every path sums the same integer products; int32 cannot
 * overflow for K <= FG_QGEMM_MAX_K, so the results are identical on every
 * path and thread count. The float epilogue is built with -ffp-contract=off
 * and does the NumPy twin's float32 operations in the same order. */
#include "quant/quant_internal.h"

#include <math.h>
#include <string.h>
#if FG_HAVE_OPENMP
#include <omp.h>
#endif
#if FG_QPATH > 0
#include <immintrin.h>
#endif

#define QFN(name) FG_CAT(name, FG_QSUFFIX)

#if FG_QPATH == 3
#define MR 8
#define NR 32
#elif FG_QPATH == 2
#define MR 6
#define NR 16
#elif FG_QPATH == 1
#define MR 4 /* 8 accumulators + 2 widened B + 1 A: 6 rows spilled to the stack */
#define NR 8
#else
#define MR 4
#define NR 16
#endif

#if FG_QPATH == 1
typedef int16_t aelem; /* A packed pre-widened to s16 */
#else
typedef uint8_t aelem;
#endif

#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))
#define PSTRIDE(G) ((G) * FG_QPANEL * 4) /* bytes of one packed panel */

/* Pack rows [i0, i0 + rows) of A into Ap[g][MR][4] (zero padded in k and rows). */
static void pack_a(aelem *FG_RESTRICT Ap, const uint8_t *FG_RESTRICT A, int64_t lda, int64_t i0, int rows,
                   int64_t K, int64_t G) {
    const int64_t gfull = K / 4;
    for (int r = 0; r < MR; r++) {
        aelem *dst = Ap + r * 4;
        if (r >= rows) {
            for (int64_t g = 0; g < G; g++)
                for (int kk = 0; kk < 4; kk++) dst[g * MR * 4 + kk] = 0;
            continue;
        }
        const uint8_t *a = A + (i0 + r) * lda;
        for (int64_t g = 0; g < gfull; g++) {
#if FG_QPATH == 1
            for (int kk = 0; kk < 4; kk++) dst[g * MR * 4 + kk] = (int16_t)a[g * 4 + kk];
#else
            memcpy(dst + g * MR * 4, a + g * 4, 4);
#endif
        }
        if (gfull < G)
            for (int kk = 0; kk < 4; kk++) {
                const int64_t k = gfull * 4 + kk;
                dst[gfull * MR * 4 + kk] = (aelem)(k < K ? a[k] : 0);
            }
    }
}

/* ---- micro-kernels: t[r * NR + c] = sum_k A[r, k] B[k, c] over all K ----
 * `b` points at this column group's bytes in group 0 of its panel. */
#if FG_QPATH == 3
FG_INLINE void kern(const int rows, const int np, const aelem *Ap, const int8_t *b, int64_t pstride, int64_t G,
                    int32_t *t) {
    __m512i acc0[MR], acc1[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) acc0[r] = acc1[r] = _mm512_setzero_si512();
    for (int64_t g = 0; g < G; g++) {
        const __m512i b0 = _mm512_loadu_si512((const void *)(b + g * 64));
        const __m512i b1 = np > 1 ? _mm512_loadu_si512((const void *)(b + pstride + g * 64)) : b0;
        const aelem *a = Ap + g * MR * 4;
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            if (r >= rows) break;
            int32_t w;
            memcpy(&w, a + r * 4, 4);
            const __m512i av = _mm512_set1_epi32(w);
            acc0[r] = _mm512_dpbusd_epi32(acc0[r], av, b0);
            if (np > 1) acc1[r] = _mm512_dpbusd_epi32(acc1[r], av, b1);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        if (r >= rows) break;
        _mm512_storeu_si512((void *)(t + r * NR), acc0[r]);
        if (np > 1) _mm512_storeu_si512((void *)(t + r * NR + 16), acc1[r]);
    }
}
#elif FG_QPATH == 2
FG_INLINE void kern(const int rows, const int np, const aelem *Ap, const int8_t *b, int64_t pstride, int64_t G,
                    int32_t *t) {
    (void)np;
    (void)pstride;
    __m256i acc0[MR], acc1[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) acc0[r] = acc1[r] = _mm256_setzero_si256();
    for (int64_t g = 0; g < G; g++) {
        const __m256i b0 = _mm256_loadu_si256((const __m256i *)(b + g * 64));
        const __m256i b1 = _mm256_loadu_si256((const __m256i *)(b + g * 64 + 32));
        const aelem *a = Ap + g * MR * 4;
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            if (r >= rows) break;
            int32_t w;
            memcpy(&w, a + r * 4, 4);
            const __m256i av = _mm256_set1_epi32(w);
            acc0[r] = _mm256_dpbusd_avx_epi32(acc0[r], av, b0);
            acc1[r] = _mm256_dpbusd_avx_epi32(acc1[r], av, b1);
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        if (r >= rows) break;
        _mm256_storeu_si256((__m256i *)(t + r * NR), acc0[r]);
        _mm256_storeu_si256((__m256i *)(t + r * NR + 8), acc1[r]);
    }
}
#elif FG_QPATH == 1
/* 8 columns (half a panel): bytes c*4 + kk, c < 8. Widened, the first 16
 * bytes give s16 lanes (c0 k0..3, c1 k0..3, c2.., c3..); vpmaddwd with the
 * row's (a0, a1, a2, a3) broadcast gives s32 lanes (c0 k01, c0 k23, c1 k01,
 * ...), summed pairwise at the end. */
FG_INLINE void kern(const int rows, const int np, const aelem *Ap, const int8_t *b, int64_t pstride, int64_t G,
                    int32_t *t) {
    (void)np;
    (void)pstride;
    __m256i acc0[MR], acc1[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) acc0[r] = acc1[r] = _mm256_setzero_si256();
    for (int64_t g = 0; g < G; g++) {
        const __m256i b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + g * 64)));
        const __m256i b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + g * 64 + 16)));
        const aelem *a = Ap + g * MR * 4;
#pragma GCC unroll 8
        for (int r = 0; r < MR; r++) {
            if (r >= rows) break;
            int64_t w;
            memcpy(&w, a + r * 4, 8);
            const __m256i av = _mm256_set1_epi64x(w);
            acc0[r] = _mm256_add_epi32(acc0[r], _mm256_madd_epi16(av, b0));
            acc1[r] = _mm256_add_epi32(acc1[r], _mm256_madd_epi16(av, b1));
        }
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++) {
        if (r >= rows) break;
        /* hadd: [c0 c1 c4 c5 | c2 c3 c6 c7] -> permute to c0..c7 */
        const __m256i h = _mm256_hadd_epi32(acc0[r], acc1[r]);
        _mm256_storeu_si256((__m256i *)(t + r * NR), _mm256_permute4x64_epi64(h, 0xD8));
    }
}
#else
FG_INLINE void kern(const int rows, const int np, const aelem *Ap, const int8_t *b, int64_t pstride, int64_t G,
                    int32_t *t) {
    (void)np;
    (void)pstride;
    int32_t acc[MR][NR];
    memset(acc, 0, sizeof acc);
    for (int64_t g = 0; g < G; g++) {
        const int8_t *bg = b + g * 64;
        const aelem *a = Ap + g * MR * 4;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < NR; c++) {
                int32_t s = 0;
                for (int kk = 0; kk < 4; kk++) s += (int32_t)a[r * 4 + kk] * (int32_t)bg[c * 4 + kk];
                acc[r][c] += s;
            }
    }
    for (int r = 0; r < rows; r++) memcpy(t + r * NR, acc[r], sizeof acc[r]);
}
#endif

/* one tile: run the kernel specialised on the row count (and, for the
 * 512-bit path, on one or two panels) */
static void tile(int rows, int np, const aelem *Ap, const int8_t *b, int64_t pstride, int64_t G, int32_t *t) {
#if FG_QPATH == 3
#define KCASE(n)                                          \
    case n:                                               \
        if (np > 1)                                       \
            kern(n, 2, Ap, b, pstride, G, t);             \
        else                                              \
            kern(n, 1, Ap, b, pstride, G, t);             \
        return;
    switch (rows) { KCASE(1) KCASE(2) KCASE(3) KCASE(4) KCASE(5) KCASE(6) KCASE(7) default: KCASE(8) }
#elif FG_QPATH == 1 || FG_QPATH == 2
#define KCASE(n)                                  \
    case n: kern(n, np, Ap, b, pstride, G, t); return;
#if MR == 4
    switch (rows) { KCASE(1) KCASE(2) KCASE(3) default: KCASE(4) }
#else
    switch (rows) { KCASE(1) KCASE(2) KCASE(3) KCASE(4) KCASE(5) default: KCASE(6) }
#endif
#else
    kern(rows, np, Ap, b, pstride, G, t);
#endif
#undef KCASE
}

/* round half to even for |v| <= 2^22 (default rounding mode, no fast-math) */
static inline float rint_small(float v) {
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    return (v + magic) - magic;
}

static inline float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

static void epilogue(const fg_qgemm_args *p, const int32_t *FG_RESTRICT t, int64_t i0, int rows, int64_t j0,
                     int nr) {
    for (int r = 0; r < rows; r++) {
        const int64_t i = i0 + r;
        const int32_t *ti = t + r * NR;
        const uint32_t za = p->a_zp ? (uint32_t)p->a_zp[i * p->a_zp_stride] : 0u;
        int32_t d[NR];
        if (za) {
            const int32_t *cs = p->colsum + j0;
            for (int c = 0; c < nr; c++) d[c] = (int32_t)((uint32_t)ti[c] - za * (uint32_t)cs[c]);
        } else {
            for (int c = 0; c < nr; c++) d[c] = ti[c];
        }
        if (p->out_kind == FG_QOUT_S32) {
            memcpy((int32_t *)p->out + i * p->ldo + j0, d, (size_t)nr * sizeof(int32_t));
        } else if (p->out_kind == FG_QOUT_F32) {
            float *o = (float *)p->out + i * p->ldo + j0;
            const float sa = p->a_scale[i * p->a_scale_stride];
            const float *sb = p->b_scale + j0;
            const float *bias = p->bias ? p->bias + j0 : NULL;
            for (int c = 0; c < nr; c++) {
                const float s = sa * sb[c];
                float y = (float)d[c] * s;
                if (bias) y = y + bias[c];
                if (p->relu) y = y > 0.0f ? y : 0.0f;
                o[c] = y;
            }
        } else {
            uint8_t *o = (uint8_t *)p->out + i * p->ldo + j0;
            const float *m = p->mult + j0;
            const float *bias = p->bias ? p->bias + j0 : NULL;
            const float zo = (float)p->out_zp, lo = p->relu ? zo : 0.0f;
            for (int c = 0; c < nr; c++) {
                float y = (float)d[c] * m[c];
                if (bias) y = y + bias[c];
                y = rint_small(clampf(y, -1024.0f, 1024.0f)) + zo;
                o[c] = (uint8_t)clampf(y, lo, 255.0f);
            }
        }
    }
}

static int quant_row(void *q, int mode, int is_s8, float *scale_io, int32_t *zp_io, int64_t i, int64_t sstride,
                     int64_t zstride, const float *FG_RESTRICT x, int64_t N);

int QFN(fg_qquant_run)(void *q, int64_t ldq, int mode, int is_s8, float *scale_io, int64_t sstride,
                       int32_t *zp_io, int64_t zstride, const float *x, int64_t ldx, int64_t M, int64_t N,
                       int nthreads);

/* rows [r0, r1) x column groups [c0, c1) of the output. With p->Af (fused
 * dynamic quantization) the rows of each block are quantized into `ubuf`
 * (MR x K bytes) first; a row with NaN / inf sets *bad. */
static void run_block(const fg_qgemm_args *p, aelem *Ap, uint8_t *ubuf, int64_t r0, int64_t r1, int64_t c0,
                      int64_t c1, int *bad) {
    const int64_t G = CEIL_DIV(p->K, 4);
    const int64_t pstride = PSTRIDE(G);
    _Alignas(64) int32_t t[MR * NR];
    for (int64_t i = r0; i < r1; i += MR) {
        const int rows = (int)(r1 - i < MR ? r1 - i : MR);
        if (p->Af) {
            for (int r = 0; r < rows; r++) {
                const float *xr = p->Af + (i + r) * p->ldaf;
                const int st = p->af_given
                                   ? quant_row(ubuf + r * p->K, 2, 0, (float *)p->a_scale, (int32_t *)p->a_zp, i + r,
                                               p->a_scale_stride, p->a_zp_stride, xr, p->K)
                                   : quant_row(ubuf + r * p->K, 0, 0, p->q_scale, p->q_zp, i + r, 1, 1, xr, p->K);
                if (st != FG_OK) *bad = 1;
            }
            pack_a(Ap, ubuf, p->K, 0, rows, p->K, G);
        } else {
            pack_a(Ap, p->A, p->lda, i, rows, p->K, G);
        }
        for (int64_t cg = c0; cg < c1; cg++) {
            const int64_t j = cg * NR;
            const int nr = (int)(p->N - j < NR ? p->N - j : NR);
#if NR >= FG_QPANEL
            const int8_t *b = p->Bp + (j / FG_QPANEL) * pstride;
            const int np = CEIL_DIV(nr, FG_QPANEL);
#else
            const int8_t *b = p->Bp + (j / FG_QPANEL) * pstride + (j % FG_QPANEL) * 4;
            const int np = 1;
#endif
            if (G == 0)
                memset(t, 0, sizeof t);
            else
                tile(rows, np, Ap, b, pstride, G, t);
            epilogue(p, t, i, rows, j, nr);
        }
    }
}

#define QGEMM_GRAIN (1 << 20)

int QFN(fg_qgemm_run)(const fg_qgemm_args *p, int nthreads, fg_qws_fn ws) {
    const int64_t M = p->M, N = p->N, K = p->K;
    const int64_t G = CEIL_DIV(K, 4);
    const int64_t rb = CEIL_DIV(M, MR), cgs = CEIL_DIV(N, NR);
    int nt = fg_threads_for(M * N * (K > 0 ? K : 1), QGEMM_GRAIN, nthreads);
#if !FG_HAVE_OPENMP
    nt = 1;
#endif
    const int split_rows = rb >= cgs || rb >= 4 * (int64_t)nt;
    const int64_t units = split_rows ? rb : cgs;
    if (nt > units) nt = (int)units;
    if (nt < 1) nt = 1;
    /* per thread: the A panel, then (fused quantization) MR u8 rows */
    const int64_t ap_bytes = (((G > 0 ? G : 1) * MR * 4 + 64) * (int64_t)sizeof(aelem) + 63) / 64 * 64;
    const int64_t ub_bytes = p->Af ? (MR * K + 64 + 63) / 64 * 64 : 0;
    /* fused quantization with threads split over columns: every thread would
     * quantize every row, so quantize them all first (rows split) */
    const int prepass = p->Af && nt > 1 && !split_rows;
    const int64_t pre_bytes = prepass ? (M * K + 63) / 64 * 64 : 0;
    char *w = (char *)ws((size_t)(nt * (ap_bytes + ub_bytes) + pre_bytes));
    if (!w) return FG_ERR_NOMEM;
    fg_qgemm_args q = *p;
    int bad = 0;
    if (prepass) {
        uint8_t *all = (uint8_t *)(w + nt * (ap_bytes + ub_bytes));
        int st = p->af_given ? QFN(fg_qquant_run)(all, K, 2, 0, (float *)p->a_scale, p->a_scale_stride,
                                                  (int32_t *)p->a_zp, p->a_zp_stride, p->Af, p->ldaf, M, K,
                                                  nthreads)
                             : QFN(fg_qquant_run)(all, K, 0, 0, p->q_scale, 1, p->q_zp, 1, p->Af, p->ldaf, M, K,
                                                  nthreads);
        if (st != FG_OK) return st;
        q.Af = NULL;
        q.A = all;
        q.lda = K;
    }
#if FG_HAVE_OPENMP
    if (nt > 1) {
#pragma omp parallel num_threads(nt) reduction(| : bad)
        {
            const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
            const int64_t lo = units * tid / nth, hi = units * (tid + 1) / nth;
            aelem *Ap = (aelem *)(w + tid * (ap_bytes + ub_bytes));
            uint8_t *ub = (uint8_t *)(w + tid * (ap_bytes + ub_bytes) + ap_bytes);
            if (hi > lo) {
                if (split_rows)
                    run_block(&q, Ap, ub, lo * MR, hi * MR < M ? hi * MR : M, 0, cgs, &bad);
                else
                    run_block(&q, Ap, ub, 0, M, lo, hi, &bad);
            }
        }
        return bad ? FG_ERR_NONFINITE : FG_OK;
    }
#endif
    run_block(&q, (aelem *)w, (uint8_t *)(w + ap_bytes), 0, M, 0, cgs, &bad);
    return bad ? FG_ERR_NONFINITE : FG_OK;
}

/* ---- quantize / dequantize: row by row, rows split between threads ---- */
/* min(0, row min), max(0, row max); 0 if the row holds NaN or inf. min / max
 * are exact, so the vector grouping changes nothing (the compiler does not
 * vectorise the scalar form without -ffast-math, hence the intrinsics). */
static int row_range(const float *FG_RESTRICT x, int64_t N, float *mn_out, float *mx_out) {
    float mn = 0.0f, mx = 0.0f;
    int64_t j = 0;
    int bad = 0;
#if FG_QPATH > 0
    __m256 vmn = _mm256_setzero_ps(), vmx = _mm256_setzero_ps(), vbad = _mm256_setzero_ps();
    for (; j + 8 <= N; j += 8) {
        const __m256 v = _mm256_loadu_ps(x + j);
        vmn = _mm256_min_ps(vmn, v);
        vmx = _mm256_max_ps(vmx, v);
        /* v - v is 0 for finite v, NaN for NaN / inf */
        vbad = _mm256_or_ps(vbad, _mm256_cmp_ps(_mm256_sub_ps(v, v), _mm256_setzero_ps(), _CMP_NEQ_UQ));
    }
    bad = _mm256_movemask_ps(vbad) != 0;
    _Alignas(32) float a[8], b[8];
    _mm256_store_ps(a, vmn);
    _mm256_store_ps(b, vmx);
    for (int l = 0; l < 8; l++) {
        mn = a[l] < mn ? a[l] : mn;
        mx = b[l] > mx ? b[l] : mx;
    }
#endif
    for (; j < N; j++) {
        const float v = x[j];
        bad |= !(v - v == 0.0f);
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    }
    *mn_out = mn;
    *mx_out = mx;
    return !bad;
}

static int quant_row(void *q, int mode, int is_s8, float *scale_io, int32_t *zp_io, int64_t i, int64_t sstride,
                     int64_t zstride, const float *FG_RESTRICT x, int64_t N) {
    float scale;
    float zp = 0.0f;
    int bad = 0;
    if (mode == 2) {
        for (int64_t j = 0; j < N; j++) bad |= x[j] != x[j];
        if (bad) return FG_ERR_NONFINITE;
        scale = scale_io[i * sstride];
        if (zp_io) zp = (float)zp_io[i * zstride];
    } else {
        float mn, mx;
        if (!row_range(x, N, &mn, &mx)) return FG_ERR_NONFINITE;
        if (mode == 0) {
            scale = (mx - mn) / 255.0f;
            if (scale == 0.0f) scale = 1.0f;
            zp = rint_small(clampf(-mn / scale, 0.0f, 255.0f));
            scale_io[i] = scale;
            zp_io[i] = (int32_t)zp;
        } else {
            const float amax = mx > -mn ? mx : -mn;
            scale = amax / 127.0f;
            if (scale == 0.0f) scale = 1.0f;
            scale_io[i] = scale;
        }
    }
    int64_t j0 = 0;
#if FG_QPATH > 0
    /* the same float32 operations as the scalar loop, 8 lanes at a time:
     * x / scale (IEEE division), clamp, round half to even, + zp, clamp */
    {
        const __m256 vs = _mm256_set1_ps(scale), vz = _mm256_set1_ps(zp);
        const __m256 big = _mm256_set1_ps(4096.0f), nbig = _mm256_set1_ps(-4096.0f);
        const __m256 lo = _mm256_set1_ps(is_s8 ? -128.0f : 0.0f), hi = _mm256_set1_ps(is_s8 ? 127.0f : 255.0f);
        for (; j0 + 8 <= N; j0 += 8) {
            __m256 v = _mm256_div_ps(_mm256_loadu_ps(x + j0), vs);
            v = _mm256_min_ps(_mm256_max_ps(v, nbig), big);
            v = _mm256_add_ps(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), vz);
            v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
            const __m256i iv = _mm256_cvtps_epi32(v); /* integral already: exact */
            const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(iv), _mm256_extracti128_si256(iv, 1));
            const __m128i w8 = is_s8 ? _mm_packs_epi16(w16, w16) : _mm_packus_epi16(w16, w16);
            _mm_storel_epi64((__m128i *)((char *)q + j0), w8);
        }
    }
#endif
    if (is_s8) {
        int8_t *o = (int8_t *)q;
        for (int64_t j = j0; j < N; j++) {
            const float v = rint_small(clampf(x[j] / scale, -4096.0f, 4096.0f)) + zp;
            o[j] = (int8_t)clampf(v, -128.0f, 127.0f);
        }
    } else {
        uint8_t *o = (uint8_t *)q;
        for (int64_t j = j0; j < N; j++) {
            const float v = rint_small(clampf(x[j] / scale, -4096.0f, 4096.0f)) + zp;
            o[j] = (uint8_t)clampf(v, 0.0f, 255.0f);
        }
    }
    return FG_OK;
}

#define ELEM_GRAIN (1 << 16)

int QFN(fg_qquant_run)(void *q, int64_t ldq, int mode, int is_s8, float *scale_io, int64_t sstride,
                       int32_t *zp_io, int64_t zstride, const float *x, int64_t ldx, int64_t M, int64_t N,
                       int nthreads) {
    int status = FG_OK;
    const int nt = fg_threads_for(M * N, ELEM_GRAIN, nthreads);
#if FG_HAVE_OPENMP
    if (nt > 1) {
        int bad = 0;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(| : bad)
        for (int64_t i = 0; i < M; i++) {
            char *qi = (char *)q + i * ldq;
            bad |= quant_row(qi, mode, is_s8, scale_io, zp_io, i, sstride, zstride, x + i * ldx, N) != FG_OK;
        }
        return bad ? FG_ERR_NONFINITE : FG_OK;
    }
#endif
    (void)nt;
    for (int64_t i = 0; i < M; i++) {
        int s = quant_row((char *)q + i * ldq, mode, is_s8, scale_io, zp_io, i, sstride, zstride, x + i * ldx, N);
        if (s != FG_OK) status = s;
    }
    return status;
}

static void dequant_row(float *FG_RESTRICT y, const void *q, int is_s8, float scale, int32_t zp, int64_t N) {
    if (is_s8) {
        const int8_t *s = (const int8_t *)q;
        for (int64_t j = 0; j < N; j++) y[j] = (float)((int32_t)s[j] - zp) * scale;
    } else {
        const uint8_t *u = (const uint8_t *)q;
        for (int64_t j = 0; j < N; j++) y[j] = (float)((int32_t)u[j] - zp) * scale;
    }
}

int QFN(fg_qdequant_run)(float *y, int64_t ldy, const void *q, int64_t ldq, int is_s8, int64_t M, int64_t N,
                         const float *scale, int64_t sstride, const int32_t *zp, int64_t zstride,
                         int nthreads) {
    const int nt = fg_threads_for(M * N, ELEM_GRAIN, nthreads);
#if FG_HAVE_OPENMP
    if (nt > 1) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t i = 0; i < M; i++)
            dequant_row(y + i * ldy, (const char *)q + i * ldq, is_s8, scale[i * sstride],
                        zp ? zp[i * zstride] : 0, N);
        return FG_OK;
    }
#endif
    (void)nt;
    for (int64_t i = 0; i < M; i++)
        dequant_row(y + i * ldy, (const char *)q + i * ldq, is_s8, scale[i * sstride], zp ? zp[i * zstride] : 0,
                    N);
    return FG_OK;
}
