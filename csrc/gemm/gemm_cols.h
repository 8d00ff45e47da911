/* gemm_cols.h — the skinny path vectorised along M, for products with few
 * columns (the 10-class output layer: 128x10 = (128x128) . (128x10) and its
 * dW = X^T dZ). The row-wise unpacked path (gemm_small.h) puts the N = 10
 * columns of a C row in one 16-lane vector (AVX-512) or two 8-lane ones
 * (AVX2), wasting 37.5% of every multiply-add; here the lanes run along the
 * rows of C instead, i.e. it computes C^T = op(B)^T op(A)^T:
 *
 *   for each panel of P = MV * VW rows of C (P = 32 on AVX-512, 16 on AVX2):
 *     column k of op(A) over the panel's rows: MV vectors, contiguous when
 *       A is stored transposed (K x M), else from a transposing copy of the
 *       panel (P x K -> K x P, L1-resident, pack_panel_t)
 *     for each group of NJ <= G columns j of C:
 *       acc[v][j] (MV x NJ vectors) += opA[k][rows of v] * B[k][j]   (k in order)
 *       transpose acc (VW x VW blocks, in registers) into rows of C and hand
 *       each row to the shared epilogue (ep_vec: alpha, beta, bias, Z)
 *
 * Every lane does useful work; each B element is one broadcast shared by MV
 * multiply-adds. Each C element is still one FMA chain over k in order, and
 * the epilogue is the row path's, so results do not depend on the tiling and
 * the path is single-threaded like gemm_small.h.
 *
 * Only the AVX2 and AVX-512 copies have it (FG_HAVE_COLS); the baseline copy
 * keeps the row path. Switch points: cols_wins() in gemm_driver.c. */
#ifndef FG_GEMM_COLS_H
#define FG_GEMM_COLS_H

#include "gemm_internal.h"
#include "gemm_ukernel.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#define FG_HAVE_COLS 1

/* MV vectors of rows per panel, at most G columns per group: MV x G
 * accumulators + MV A vectors + 1 broadcast must fit the register file. */
#if defined(__AVX512F__)
#ifndef FG_COLS_MV
#define FG_COLS_MV 2
#endif
#ifndef FG_COLS_G
#define FG_COLS_G 12
#endif
#else
#ifndef FG_COLS_MV
#define FG_COLS_MV 2
#endif
#ifndef FG_COLS_G
#define FG_COLS_G 6
#endif
#endif
#define FG_COLS_P (FG_COLS_MV * FG_VW)
#ifndef FG_PRAGMA_UNROLL
#define FG_PRAGMA_UNROLL(n)
#endif

/* ---- VW x VW transpose: t holds VW vectors (stride VW floats), row r of the
 * input is t[r*VW ..]; o[c] receives column c ---- */
#if defined(__AVX512F__)
FG_INLINE void tr_block(vf o[16], const float *t) {
    __m512 r[16], s[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_load_ps(t + 16 * i);
    for (int i = 0; i < 16; i += 2) { /* pairs of rows interleaved per 128-bit lane */
        s[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        s[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) { /* lane L of r[i+q]: column 4L+q of rows i..i+3 */
        r[i + 0] = _mm512_shuffle_ps(s[i], s[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(s[i], s[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(s[i + 1], s[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(s[i + 1], s[i + 3], 0xEE);
    }
    for (int h = 0; h < 16; h += 8) /* 128-bit lanes: rows 0-7 / 8-15 halves */
        for (int q = 0; q < 4; q++) {
            s[h + q] = _mm512_shuffle_f32x4(r[h + q], r[h + 4 + q], 0x88);
            s[h + 4 + q] = _mm512_shuffle_f32x4(r[h + q], r[h + 4 + q], 0xDD);
        }
    for (int q = 0; q < 8; q++) {
        o[q] = _mm512_shuffle_f32x4(s[q], s[8 + q], 0x88);
        o[q + 8] = _mm512_shuffle_f32x4(s[q], s[8 + q], 0xDD);
    }
}
#else
FG_INLINE void tr_block(vf o[8], const float *t) {
    __m256 r[8], s[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_load_ps(t + 8 * i);
    for (int i = 0; i < 8; i += 2) {
        s[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        s[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        r[i + 0] = _mm256_shuffle_ps(s[i], s[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(s[i], s[i + 2], 0xEE);
        r[i + 2] = _mm256_shuffle_ps(s[i + 1], s[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(s[i + 1], s[i + 3], 0xEE);
    }
    for (int q = 0; q < 4; q++) {
        o[q] = _mm256_permute2f128_ps(r[q], r[4 + q], 0x20);
        o[q + 4] = _mm256_permute2f128_ps(r[q], r[4 + q], 0x31);
    }
}
#endif

/* d[c * ldd + r] = s[r * lds + c] for an 8 x 8 block. Each 128-bit half of
 * a load holds 4 columns of one row (rows r and r + 4 share a register), so
 * two in-lane shuffle stages finish the transpose (16 shuffles instead of 24
 * with a cross-lane stage). */
FG_INLINE void tr8x8(float *d, int64_t ldd, const float *s, int64_t lds) {
    __m256 x[8], t[4];
    for (int h = 0; h < 2; h++)     /* columns 0..3, then 4..7 */
        for (int i = 0; i < 4; i++) /* rows i (low half) and i + 4 (high half) */
            x[4 * h + i] = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(s + i * lds + 4 * h)),
                                                _mm_loadu_ps(s + (i + 4) * lds + 4 * h), 1);
    for (int h = 0; h < 2; h++) {
        t[0] = _mm256_unpacklo_ps(x[4 * h], x[4 * h + 1]);
        t[1] = _mm256_unpackhi_ps(x[4 * h], x[4 * h + 1]);
        t[2] = _mm256_unpacklo_ps(x[4 * h + 2], x[4 * h + 3]);
        t[3] = _mm256_unpackhi_ps(x[4 * h + 2], x[4 * h + 3]);
        float *o = d + 4 * h * ldd;
        _mm256_storeu_ps(o, _mm256_shuffle_ps(t[0], t[2], 0x44));
        _mm256_storeu_ps(o + ldd, _mm256_shuffle_ps(t[0], t[2], 0xEE));
        _mm256_storeu_ps(o + 2 * ldd, _mm256_shuffle_ps(t[1], t[3], 0x44));
        _mm256_storeu_ps(o + 3 * ldd, _mm256_shuffle_ps(t[1], t[3], 0xEE));
    }
}

/* D[c * ldd + r] = S[r * lds + c] for r < rows, c < cols (8 x 8 blocks, then
 * the edges element by element) */
static void transpose_blocked(float *FG_RESTRICT D, int64_t ldd, const float *FG_RESTRICT S, int64_t lds,
                              int64_t rows, int64_t cols) {
    const int64_t r8 = rows & ~(int64_t)7, c8 = cols & ~(int64_t)7;
    for (int64_t r = 0; r < r8; r += 8) {
        for (int64_t c = 0; c < c8; c += 8) tr8x8(D + c * ldd + r, ldd, S + r * lds + c, lds);
        for (int64_t c = c8; c < cols; c++)
            for (int64_t i = r; i < r + 8; i++) D[c * ldd + i] = S[i * lds + c];
    }
    for (int64_t r = r8; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) D[c * ldd + r] = S[r * lds + c];
}

/* Pt[k * P + r] = A[r * lda + k] for r < rows, k < K; rows rows..P-1 zero
 * (so the kernel may load whole vectors) */
static void pack_panel_t(float *FG_RESTRICT Pt, const float *FG_RESTRICT A, int64_t lda, int rows, int64_t K) {
    const int P = FG_COLS_P;
    transpose_blocked(Pt, P, A, lda, rows, K);
    if (rows < P)
        for (int64_t k = 0; k < K; k++)
            for (int r = rows; r < P; r++) Pt[k * P + r] = 0.0f;
}

#define CO_J(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
#define CO_DECL(j) vf c0_##j = vf_zero(), c1_##j = vf_zero();
#define CO_FMA(j)                                       \
    if ((j) < NJ) {                                     \
        const vf bj = vf_set1(b[j]);                    \
        c0_##j = vf_fma(a0, bj, c0_##j);                \
        if (MV > 1) c1_##j = vf_fma(a1, bj, c1_##j);    \
    }
#define CO_SAVE(j)                                                   \
    if ((j) < NJ) {                                                  \
        vf_storeu(t0 + (j) * FG_VW, c0_##j);                         \
        if (MV > 1) vf_storeu(t1 + (j) * FG_VW, c1_##j);             \
    }

/* C[i0 : i0+rows, j0 : j0+NJ] from the panel's op(A)^T (at[k * lat + r],
 * r < MV VW, readable; rows <= MV VW of them are stored) and B[k * ldb + j0 ..]. */
FG_INLINE void cols_tile(const fg_gemm_problem *p, const fg_ep *ep, const float *at, int64_t lat, int64_t i0,
                         int rows, int64_t j0, const int NJ, const int MV) {
    const fg_ep e = *ep;
    const float *b = p->B + j0;
    const int64_t ldb = p->ldb, K = p->K;
    CO_J(CO_DECL)
    FG_PRAGMA_UNROLL(2) /* the k loop is ~20 instructions: halve its overhead */
    for (int64_t k = 0; k < K; k++) {
        const vf a0 = vf_loadu(at);
        const vf a1 = MV > 1 ? vf_loadu(at + FG_VW) : vf_zero();
        CO_J(CO_FMA)
        at += lat;
        b += ldb;
    }
    /* t[v][j * VW + r] = acc of row v VW + r, column j; columns NJ.. zero */
    _Alignas(64) float tbuf[2][16 * FG_VW];
    float *t0 = tbuf[0], *t1 = tbuf[1];
    CO_J(CO_SAVE)
    /* locals: the intrinsic stores below may alias anything, *p included */
    float *const C = p->C, *const Z = p->Z;
    const int64_t ldc = p->ldc, ldz = p->ldz;
    const float *const bias = p->bias;
    const int nblk = (NJ + FG_VW - 1) / FG_VW; /* VW x VW blocks per vector */
    for (int v = 0; v < MV; v++) {
        float *t = tbuf[v];
        const int vr = rows - v * FG_VW < FG_VW ? rows - v * FG_VW : FG_VW; /* valid rows */
        if (vr <= 0) break;
        if (NJ < nblk * FG_VW) memset(t + NJ * FG_VW, 0, (size_t)(nblk * FG_VW - NJ) * FG_VW * sizeof(float));
        for (int cb = 0; cb < nblk; cb++) {
            vf o[FG_VW];
            tr_block(o, t + cb * FG_VW * FG_VW);
            const int ncol = NJ - cb * FG_VW < FG_VW ? NJ - cb * FG_VW : FG_VW;
            const int64_t jc = j0 + cb * FG_VW;
            for (int r = 0; r < vr; r++) {
                const int64_t i = i0 + v * FG_VW + r;
                float *c_ = C + i * ldc + jc;
                float *z_ = Z ? Z + i * ldz + jc : NULL;
                const float *b_ = bias ? bias + jc : NULL;
                if (ncol == FG_VW)
                    ep_vec(c_, z_, b_, o[r], &e);
                else
                    ep_vec_part(c_, z_, b_, o[r], ncol, &e);
            }
        }
    }
    if (e.act != FG_ACT_LINEAR) FG_ISA_FN(fg_gemm_act_tile)(C + i0 * ldc + j0, ldc, rows, NJ, e.act);
}

#define CO_CASE(n) \
    case n: cols_tile(p, &ep, at, lat, i0, rows, j0, n, FG_COLS_MV); break;

/* The whole product on the calling thread; op(B) = B (rows contiguous).
 * pack: P x K floats, 64-byte aligned (op(A)^T panels). */
static void gemm_cols(const fg_gemm_problem *p, float *pack) {
    const fg_ep ep = {p->alpha, p->beta, 1, p->act};
    const int64_t ngroups = (p->N + FG_COLS_G - 1) / FG_COLS_G;
    for (int64_t i0 = 0; i0 < p->M; i0 += FG_COLS_P) { /* panels of P rows */
        const int rows = (int)(p->M - i0 < FG_COLS_P ? p->M - i0 : FG_COLS_P);
        const float *at;
        int64_t lat;
        if (p->trans_a && rows == FG_COLS_P) { /* op(A)^T rows are rows of A: read in place */
            at = p->A + i0;
            lat = p->lda;
        } else if (p->trans_a) { /* bottom edge: a zero-padded copy, no reads past M */
            for (int64_t k = 0; k < p->K; k++) {
                const float *src = p->A + k * p->lda + i0;
                for (int r = 0; r < FG_COLS_P; r++) pack[k * FG_COLS_P + r] = r < rows ? src[r] : 0.0f;
            }
            at = pack;
            lat = FG_COLS_P;
        } else {
            pack_panel_t(pack, p->A + i0 * p->lda, p->lda, rows, p->K);
            at = pack;
            lat = FG_COLS_P;
        }
        /* balanced column groups: N = 10 on AVX2 runs as 5 + 5 */
        int64_t j0 = 0;
        for (int64_t g = 0; g < ngroups; g++) {
            const int64_t j1 = p->N * (g + 1) / ngroups;
            switch ((int)(j1 - j0)) { /* one instance per group width up to G */
                CO_CASE(1) CO_CASE(2) CO_CASE(3) CO_CASE(4)
#if FG_COLS_G > 4
                CO_CASE(5) CO_CASE(6)
#endif
#if FG_COLS_G > 6
                CO_CASE(7) CO_CASE(8)
#endif
#if FG_COLS_G > 8
                CO_CASE(9) CO_CASE(10) CO_CASE(11) CO_CASE(12)
#endif
#if FG_COLS_G > 12
                CO_CASE(13) CO_CASE(14) CO_CASE(15) CO_CASE(16)
#endif
            default: break;
            }
            j0 = j1;
        }
    }
}
#undef CO_CASE

#else
#define FG_HAVE_COLS 0
#define FG_COLS_P 1
#endif

#endif /* FG_GEMM_COLS_H */
