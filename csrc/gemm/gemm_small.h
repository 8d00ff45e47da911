/* gemm_small.h — the unpacked path for skinny products (op(B) = B, not
 * transposed): C rows are accumulated in registers straight from the rows
 * of B, with op(A) elements broadcast from wherever they lie (A or A^T), and
 * the whole K range is summed in one pass (C is read and written once).
 * No packing, one thread: for outputs this small, packing and thread
 * start-up cost more than the product (switch points: small_wins() in
 * gemm_driver.c).
 *
 * Tile: R rows x NV vectors of C (NV * VW columns); the last vector of a row
 * may be partial (masked load of B, masked store of C). Each C element is one
 * FMA chain over k in order, as in the packed path. */
#ifndef FG_GEMM_SMALL_H
#define FG_GEMM_SMALL_H

#include "gemm_internal.h"
#include "gemm_ukernel.h"

/* per-(row, vector) accumulators as named variables: R and NV are constants
 * after inlining, so the unused ones vanish and the rest live in registers */
#define SM_RV(X, v)                                                                          \
    X(0, v) X(1, v) X(2, v) X(3, v) X(4, v) X(5, v) X(6, v) X(7, v) X(8, v) X(9, v) X(10, v) \
    X(11, v) X(12, v) X(13, v) X(14, v) X(15, v)
#define SM_ALL(X) SM_RV(X, 0) SM_RV(X, 1) SM_RV(X, 2) SM_RV(X, 3)
#define SM_DECL(r, v) vf c##r##_##v = vf_zero();
#define SM_FMA(r, v) \
    if ((r) < R && (v) < NV) c##r##_##v = vf_fma(a##r, b##v, c##r##_##v);
#define SM_STORE(r, v)                                                                               \
    if ((r) < R && (v) < NV) {                                                                       \
        float *c_ = p->C + (i0 + (r)) * p->ldc + j0 + (v) * FG_VW;                                   \
        float *z_ = p->Z ? p->Z + (i0 + (r)) * p->ldz + j0 + (v) * FG_VW : NULL;                     \
        const float *b_ = p->bias ? p->bias + j0 + (v) * FG_VW : NULL;                               \
        if ((v) < NV - 1 || FULL)                                                                    \
            ep_vec(c_, z_, b_, c##r##_##v, &e);                                                      \
        else                                                                                         \
            ep_vec_part(c_, z_, b_, c##r##_##v, last, &e);                                           \
    }
#define SM_BLOAD(v)                                                                                  \
    vf b##v = vf_zero();                                                                             \
    if ((v) < NV) b##v = ((v) < NV - 1 || FULL) ? vf_loadu(b + (v) * FG_VW)                          \
                                                   : vf_loadu_part(b + (v) * FG_VW, last);
/* one row per step: broadcast its op(A) value, then its NV multiply-adds,
 * so only one broadcast is live at a time (GCC keeps source order on x86;
 * all R broadcasts first spilled accumulators at 6 rows x 2 vectors on AVX2) */
#define SM_ROW(r, v_unused)                              \
    if ((r) < R) {                                       \
        const vf a##r = vf_set1(a[(r) * as_i]);          \
        SM_FMA(r, 0) SM_FMA(r, 1) SM_FMA(r, 2) SM_FMA(r, 3) \
    }

/* C[i0 : i0+R, j0 : j0+ncols] (ncols in ((NV-1) VW, NV VW]) from op(A) rows
 * i0.. and B columns j0.. FULL (a constant): ncols == NV VW, so the last
 * vector needs no masks (a masked load in the k loop cost the 10-class dX
 * on AVX2 ~10%). */
FG_INLINE void small_tile(const fg_gemm_problem *p, const fg_ep *ep, int64_t i0, int64_t j0, int ncols,
                          const int R, const int NV, const int FULL) {
    const fg_ep e = *ep;
    const int last = FULL ? FG_VW : ncols - (NV - 1) * FG_VW; /* valid columns of the last vector */
    const float *b = p->B + j0;
    /* op(A)(i, k) = A[i*lda + k] or, transposed, A[k*lda + i] */
    const int64_t as_i = p->trans_a ? 1 : p->lda, as_k = p->trans_a ? p->lda : 1;
    const int64_t ldb = p->ldb;
    const float *a = p->A + i0 * as_i;
    SM_ALL(SM_DECL)
    for (int64_t k = 0; k < p->K; k++) {
        SM_BLOAD(0) SM_BLOAD(1) SM_BLOAD(2) SM_BLOAD(3)
        SM_RV(SM_ROW, 0)
        b += ldb;
        a += as_k;
    }
    SM_ALL(SM_STORE)
    if (e.act != FG_ACT_LINEAR) FG_ISA_FN(fg_gemm_act_tile)(p->C + i0 * p->ldc + j0, p->ldc, R, ncols, e.act);
}

/* rows per tile for NV vectors: what fits the register file with B and A */
/* R1 = 16 on AVX-512: A^T broadcasts then use whole cache lines (128x10x128
 * with A^T: 43 -> 69 GFLOP/s); 12 instead of 8 gained nothing on AVX2 */
#if defined(__AVX512F__)
#ifndef FG_SMALL_R1
#define FG_SMALL_R1 16
#endif
#define FG_SMALL_R2 8
#define FG_SMALL_R3 6
#define FG_SMALL_R4 5
#elif defined(__AVX2__)
/* 16 ymm registers and no embedded broadcast: accumulators + B vectors +
 * the tail mask + one register per broadcast A value must fit, or GCC
 * spills an accumulator and the loop runs at half speed */
#ifndef FG_SMALL_R1
#define FG_SMALL_R1 8
#endif
/* 6 rows x 2 vectors = 12 accumulators + 2 B + 1 broadcast (one row's
 * broadcast live at a time, SM_ROW): 128x32x128 np/fg 1.13 -> 1.33,
 * 128x16x128 1.46 -> 1.62, the 10-class dX 1.00 -> 1.06 (one thread, three
 * interleaved runs); fewer than 12 rows run as 4-row tiles (8 rows as 6 + 2
 * lost 20%) */
#ifndef FG_SMALL_R2
#define FG_SMALL_R2 6
#endif
#define FG_SMALL_R3 2
#define FG_SMALL_R4 2
#else
#define FG_SMALL_R1 4
#define FG_SMALL_R2 4
#define FG_SMALL_R3 4
#define FG_SMALL_R4 4
#endif

#define SMALL_ROWS_F(NV, RB, F)                                                             \
    do {                                                                                    \
        int64_t i = 0;                                                                      \
        for (; i + (RB) <= p->M; i += (RB)) small_tile(p, &ep, i, j0, ncols, (RB), NV, F); \
        if ((RB) > 8 && p->M - i >= 8) {                                                    \
            small_tile(p, &ep, i, j0, ncols, 8, NV, F);                                     \
            i += 8;                                                                         \
        }                                                                                   \
        switch (p->M - i) {                                                                 \
        case 7: small_tile(p, &ep, i, j0, ncols, 7, NV, F); break;                          \
        case 6: small_tile(p, &ep, i, j0, ncols, 6, NV, F); break;                          \
        case 5: small_tile(p, &ep, i, j0, ncols, 5, NV, F); break;                          \
        case 4: small_tile(p, &ep, i, j0, ncols, 4, NV, F); break;                          \
        case 3: small_tile(p, &ep, i, j0, ncols, 3, NV, F); break;                          \
        case 2: small_tile(p, &ep, i, j0, ncols, 2, NV, F); break;                          \
        case 1: small_tile(p, &ep, i, j0, ncols, 1, NV, F); break;                          \
        default: break;                                                                     \
        }                                                                                   \
    } while (0)
#define SMALL_ROWS(NV, RB)                                                   \
    do {                                                                     \
        if ((RB) == 6 && p->M < 12) { /* 8 rows: 4 + 4, not 6 + 2 */         \
            if (ncols == (NV) * FG_VW) SMALL_ROWS_F(NV, 4, 1);               \
            else SMALL_ROWS_F(NV, 4, 0);                                     \
        } else if (ncols == (NV) * FG_VW) SMALL_ROWS_F(NV, RB, 1);           \
        else SMALL_ROWS_F(NV, RB, 0);                                        \
    } while (0)

#if defined(__AVX2__) || defined(__AVX512F__)
/* One row of C (M = 1: a single-sample dense forward, predict_on_batch) over
 * 8 whole vectors of columns: 8 independent FMA chains per pass over k. With
 * the 4-vector tiles below the 1x128x784 product was FMA-latency bound, two
 * passes over B at ~6.5 us; one 8-vector pass streams B once at L2 speed
 * (~3 us on AVX-512, measured in a C harness). Same FMA chain per element
 * and the same epilogue as small_tile, so the bits are those of that path. */
#define FG_ROW1_NV 8
static void small_row1(const fg_gemm_problem *p, const fg_ep *ep, int64_t j0) {
    const fg_ep e = *ep;
    const int64_t as_k = p->trans_a ? p->lda : 1, ldb = p->ldb;
    const float *a = p->A, *b = p->B + j0;
    vf c0 = vf_zero(), c1 = vf_zero(), c2 = vf_zero(), c3 = vf_zero();
    vf c4 = vf_zero(), c5 = vf_zero(), c6 = vf_zero(), c7 = vf_zero();
    for (int64_t k = 0; k < p->K; k++) {
        const vf av = vf_set1(*a);
        c0 = vf_fma(av, vf_loadu(b), c0);
        c1 = vf_fma(av, vf_loadu(b + FG_VW), c1);
        c2 = vf_fma(av, vf_loadu(b + 2 * FG_VW), c2);
        c3 = vf_fma(av, vf_loadu(b + 3 * FG_VW), c3);
        c4 = vf_fma(av, vf_loadu(b + 4 * FG_VW), c4);
        c5 = vf_fma(av, vf_loadu(b + 5 * FG_VW), c5);
        c6 = vf_fma(av, vf_loadu(b + 6 * FG_VW), c6);
        c7 = vf_fma(av, vf_loadu(b + 7 * FG_VW), c7);
        b += ldb;
        a += as_k;
    }
    float *c = p->C + j0, *z = p->Z ? p->Z + j0 : NULL;
    const float *bias = p->bias ? p->bias + j0 : NULL;
#define ROW1_STORE(v, acc) \
    ep_vec(c + (v) * FG_VW, z ? z + (v) * FG_VW : NULL, bias ? bias + (v) * FG_VW : NULL, acc, &e);
    ROW1_STORE(0, c0) ROW1_STORE(1, c1) ROW1_STORE(2, c2) ROW1_STORE(3, c3)
    ROW1_STORE(4, c4) ROW1_STORE(5, c5) ROW1_STORE(6, c6) ROW1_STORE(7, c7)
#undef ROW1_STORE
    if (e.act != FG_ACT_LINEAR) FG_ISA_FN(fg_gemm_act_tile)(c, p->ldc, 1, FG_ROW1_NV * FG_VW, e.act);
}
#endif

/* the whole product on the calling thread (op(B) = B: rows contiguous) */
static void gemm_small(const fg_gemm_problem *p) {
    const fg_ep ep = {p->alpha, p->beta, 1, p->act};
    int64_t j_first = 0; /* columns before it are done */
#if defined(__AVX2__) || defined(__AVX512F__)
    if (p->M == 1)
        for (; j_first + FG_ROW1_NV * FG_VW <= p->N; j_first += FG_ROW1_NV * FG_VW) small_row1(p, &ep, j_first);
#endif
#if defined(__AVX2__) && !defined(__AVX512F__)
    /* AVX2: with rows to share each B load, 4 rows x 2 vectors (6 loads per 8
       FMAs) beat 2 rows x 4 vectors (GCC re-reads B per row: 10 loads per 8
       FMAs). Measured (one thread, CPU time, us, 4 -> 2 vectors): 128x128x10
       B^T (the 10-class dX) 7.7 -> 7.0, 128x32x128 23.5 -> 14.0, 128x24x128
       12.7 -> 11.4, 8x128x784 34 -> 23; a single row keeps 4 vectors (4
       independent FMA chains instead of 2: 1x128x784 7.3 vs 14.8). AVX-512
       keeps 4 (2 lost there: dX 5.0 -> 6.7). */
    const int64_t chunk = (p->M >= 4 ? 2 : 4) * FG_VW;
#else
    const int64_t chunk = 4 * FG_VW;
#endif
    for (int64_t j0 = j_first; j0 < p->N; j0 += chunk) { /* column chunks of up to 4 vectors */
        const int ncols = (int)(p->N - j0 < chunk ? p->N - j0 : chunk);
        switch ((ncols + FG_VW - 1) / FG_VW) {
        case 1: SMALL_ROWS(1, FG_SMALL_R1); break;
        case 2: SMALL_ROWS(2, FG_SMALL_R2); break;
        case 3: SMALL_ROWS(3, FG_SMALL_R3); break;
        default: SMALL_ROWS(4, FG_SMALL_R4); break;
        }
    }
}

#endif /* FG_GEMM_SMALL_H */
