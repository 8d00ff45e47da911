/* attn_kernels.c — fused masked softmax and blocked (flash-style) attention,
 * compiled once per instruction set (FG_ISA_FN). Exponentials are the
 * kernels' vector exp (fg_exp, csrc/kernels) over each row; sums run in a
 * fixed order without contraction (-ffp-contract=off); every row has one
 * owner, so every thread count gives the same bits. The products inside the
 * blocked kernels are fg_gemm calls on one thread (bits independent of the
 * thread count). Across ISA paths the results agree to the vector exp's
 * rounding (a few ulp), not bitwise. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fg_attn.h"
#include "gemm/fg_gemm.h"
#include "kernels/fg_activation.h"

#define BQ 64   /* query rows per tile */

/* Vectorised row sums: the lanes' partial sums are combined in an order
 * fixed by the vector width (so by the ISA path), never by the thread count. */
#if defined(_OPENMP)
#define FG_PRAGMA_(x) _Pragma(#x)
#define FG_SIMD_SUM(v) FG_PRAGMA_(omp simd reduction(+:v))
#define FG_SIMD _Pragma("omp simd")
#else
#define FG_SIMD_SUM(v)
#define FG_SIMD
#endif
#define BK 128  /* keys per tile */

static inline int nthreads_for(int64_t units, int64_t unit_work, int64_t grain, int nthreads) {
    int nt = fg_threads_for(units * unit_work, grain, nthreads);
    if (nt > units) nt = (int)units;
    return nt < 1 ? 1 : nt;
}

/* ---------------------------------------------------------------- softmax */
static void softmax_rows(float *P, const float *S, int64_t r0, int64_t r1, int64_t H, int64_t Tq,
                         int64_t Tk, float scale, const uint8_t *kv, const uint8_t *qv,
                         const uint8_t *mask, int causal) {
    for (int64_t r = r0; r < r1; r++) {
        const int64_t i = r % Tq, g = r / Tq, b = g / H;
        const float *s = S + r * Tk;
        float *p = P + r * Tk;
        const uint8_t *kb = kv ? kv + b * Tk : NULL;
        const uint8_t *mb = mask ? mask + (b * Tq + i) * Tk : NULL;
        int64_t jend = causal ? (i + 1 < Tk ? i + 1 : Tk) : Tk;
        if (qv && !qv[b * Tq + i]) jend = 0;
        float m = -INFINITY;
        for (int64_t j = 0; j < jend; j++) {
            if ((kb && !kb[j]) || (mb && !mb[j])) continue;
            float z = s[j] * scale;
            if (z > m) m = z;
        }
        if (m == -INFINITY) {  /* nothing allowed (or only -inf scores) */
            memset(p, 0, (size_t)Tk * sizeof(float));
            continue;
        }
        for (int64_t j = 0; j < jend; j++)
            p[j] = ((kb && !kb[j]) || (mb && !mb[j])) ? -INFINITY : s[j] * scale - m;
        fg_exp(p, p, jend, 1);   /* the kernels' vector exp (exp(-inf) = 0) */
        float tot = 0.0f;
        FG_SIMD_SUM(tot)
        for (int64_t j = 0; j < jend; j++) tot += p[j];
        for (int64_t j = jend; j < Tk; j++) p[j] = 0.0f;
        if (tot == 0.0f) tot = 1.0f;
        for (int64_t j = 0; j < jend; j++) p[j] = p[j] / tot;
    }
}

int FG_ISA_FN(fg_attn_softmax_forward_k)(float *P, const float *S, int64_t B, int64_t H, int64_t Tq,
                                         int64_t Tk, float scale, const uint8_t *kv,
                                         const uint8_t *qv, const uint8_t *mask, int causal,
                                         int nthreads) {
    const int64_t rows = B * H * Tq;
    if (rows == 0 || Tk == 0) return FG_OK;
    int nt = nthreads_for(rows, Tk, 16384, nthreads);
    if (nt <= 1) {
        unsigned fs = fg_fpstate_enter();
        softmax_rows(P, S, 0, rows, H, Tq, Tk, scale, kv, qv, mask, causal);
        fg_fpstate_leave(fs);
        return FG_OK;
    }
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt)
#endif
    {
        unsigned fs = fg_fpstate_enter();
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
        for (int64_t c = 0; c < nt; c++) {
            int64_t r0 = rows * c / nt, r1 = rows * (c + 1) / nt;
            softmax_rows(P, S, r0, r1, H, Tq, Tk, scale, kv, qv, mask, causal);
        }
        fg_fpstate_leave(fs);
    }
    return FG_OK;
}

static void softmax_back_rows(float *dS, const float *dP, const float *P, int64_t r0, int64_t r1,
                              int64_t Tk, float scale) {
    for (int64_t r = r0; r < r1; r++) {
        const float *dp = dP + r * Tk, *p = P + r * Tk;
        float *ds = dS + r * Tk;
        float dot = 0.0f;
        FG_SIMD_SUM(dot)
        for (int64_t j = 0; j < Tk; j++) dot += dp[j] * p[j];
        FG_SIMD
        for (int64_t j = 0; j < Tk; j++) ds[j] = (dp[j] - dot) * p[j] * scale;
    }
}

int FG_ISA_FN(fg_attn_softmax_backward_k)(float *dS, const float *dP, const float *P, int64_t rows,
                                          int64_t Tk, float scale, int nthreads) {
    if (rows == 0 || Tk == 0) return FG_OK;
    int nt = nthreads_for(rows, Tk, 32768, nthreads);
    if (nt <= 1) {
        softmax_back_rows(dS, dP, P, 0, rows, Tk, scale);
        return FG_OK;
    }
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static)
#endif
    for (int64_t c = 0; c < nt; c++)
        softmax_back_rows(dS, dP, P, rows * c / nt, rows * (c + 1) / nt, Tk, scale);
    return FG_OK;
}

/* ---------------------------------------------------------------- flash */
/* Mask one (nq x nk) score tile in place: -inf where not allowed. */
static void mask_tile(float *S, int64_t nq, int64_t nk, int64_t i0, int64_t j0, const uint8_t *kb,
                      int causal) {
    for (int64_t a = 0; a < nq; a++) {
        float *s = S + a * BK;
        for (int64_t c = 0; c < nk; c++)
            if ((kb && !kb[j0 + c]) || (causal && j0 + c > i0 + a)) s[c] = -INFINITY;
    }
}

/* One (group, query tile): the online softmax over all key tiles. */
static int flash_fwd_tile(float *O, float *lse, const float *Q, const float *K, const float *V,
                          int64_t i0, int64_t nq, int64_t Tk, int64_t D, int64_t Dv, float scale,
                          const uint8_t *kb, const uint8_t *qb, int causal, float *S, float *m,
                          float *l) {
    for (int64_t a = 0; a < nq; a++) { m[a] = -INFINITY; l[a] = 0.0f; }
    memset(O + i0 * Dv, 0, (size_t)(nq * Dv) * sizeof(float));
    int64_t kend = causal ? (i0 + nq < Tk ? i0 + nq : Tk) : Tk;
    for (int64_t j0 = 0; j0 < kend; j0 += BK) {
        int64_t nk = kend - j0 < BK ? kend - j0 : BK;
        int st = fg_gemm(S, BK, Q + i0 * D, D, K + j0 * D, D, nq, nk, D, 0, 1, scale, 0.0f, 1);
        if (st != FG_OK) return st;
        mask_tile(S, nq, nk, i0, j0, kb, causal);
        for (int64_t a = 0; a < nq; a++) {
            float *s = S + a * BK;
            float mx = m[a];
            for (int64_t c = 0; c < nk; c++) if (s[c] > mx) mx = s[c];
            if (mx == -INFINITY) {           /* nothing allowed so far in this row */
                for (int64_t c = 0; c < nk; c++) s[c] = 0.0f;
                continue;
            }
            float alpha = m[a] == -INFINITY ? 0.0f : expf(m[a] - mx);
            for (int64_t c = 0; c < nk; c++) s[c] = s[c] - mx;   /* -inf stays -inf */
            fg_exp(s, s, nk, 1);
            float tot = 0.0f;
            FG_SIMD_SUM(tot)
            for (int64_t c = 0; c < nk; c++) tot += s[c];
            l[a] = l[a] * alpha + tot;
            m[a] = mx;
            if (alpha != 1.0f) {
                float *o = O + (i0 + a) * Dv;
                for (int64_t d = 0; d < Dv; d++) o[d] *= alpha;
            }
        }
        st = fg_gemm(O + i0 * Dv, Dv, S, BK, V + j0 * Dv, Dv, nq, Dv, nk, 0, 0, 1.0f, 1.0f, 1);
        if (st != FG_OK) return st;
    }
    for (int64_t a = 0; a < nq; a++) {
        float *o = O + (i0 + a) * Dv;
        if (l[a] == 0.0f || (qb && !qb[i0 + a])) {
            for (int64_t d = 0; d < Dv; d++) o[d] = 0.0f;
            lse[i0 + a] = -INFINITY;
        } else {
            for (int64_t d = 0; d < Dv; d++) o[d] = o[d] / l[a];
            lse[i0 + a] = m[a] + logf(l[a]);
        }
    }
    return FG_OK;
}

int FG_ISA_FN(fg_flash_forward_k)(float *O, float *lse, const float *Q, const float *K,
                                  const float *V, int64_t B, int64_t H, int64_t Tq, int64_t Tk,
                                  int64_t D, int64_t Dv, float scale, const uint8_t *kv,
                                  const uint8_t *qv, int causal, int nthreads) {
    const int64_t G = B * H, nqt = (Tq + BQ - 1) / BQ, units = G * nqt;
    int nt = nthreads_for(units, BQ * (Tk + 1) * (D + Dv + 1), 65536, nthreads);
    int status = FG_OK;
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
    {
        unsigned fs = fg_fpstate_enter();
        float *S = (float *)malloc(sizeof(float) * (BQ * BK + 2 * BQ));
        if (!S) {
#if defined(_OPENMP)
#pragma omp critical(fg_flash_status)
#endif
            status = FG_ERR_NOMEM;
        }
#if defined(_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t u = 0; u < units; u++) {
            if (!S) continue;
            int64_t g = u / nqt, i0 = (u % nqt) * BQ, b = g / H;
            int64_t nq = Tq - i0 < BQ ? Tq - i0 : BQ;
            int st = flash_fwd_tile(O + g * Tq * Dv, lse + g * Tq, Q + g * Tq * D, K + g * Tk * D,
                                    V + g * Tk * Dv, i0, nq, Tk, D, Dv, scale,
                                    kv ? kv + b * Tk : NULL, qv ? qv + b * Tq : NULL, causal, S,
                                    S + BQ * BK, S + BQ * BK + BQ);
            if (st != FG_OK) {
#if defined(_OPENMP)
#pragma omp critical(fg_flash_status)
#endif
                status = st;
            }
        }
        free(S);
        fg_fpstate_leave(fs);
    }
    return status;
}

/* One group's backward: dQ, dK, dV of that group only (so groups run in
 * parallel and every sum has one owner and a fixed order). */
static int flash_bwd_group(float *dQ, float *dK, float *dV, const float *dO, const float *Q,
                           const float *K, const float *V, const float *O, const float *lse,
                           int64_t Tq, int64_t Tk, int64_t D, int64_t Dv, float scale,
                           const uint8_t *kb, int causal, float *S, float *dP, float *Di) {
    for (int64_t i = 0; i < Tq; i++) {
        float acc = 0.0f;
        FG_SIMD_SUM(acc)
        for (int64_t d = 0; d < Dv; d++) acc += dO[i * Dv + d] * O[i * Dv + d];
        Di[i] = acc;
    }
    memset(dQ, 0, (size_t)(Tq * D) * sizeof(float));
    for (int64_t j0 = 0; j0 < Tk; j0 += BK) {
        int64_t nk = Tk - j0 < BK ? Tk - j0 : BK;
        memset(dK + j0 * D, 0, (size_t)(nk * D) * sizeof(float));
        memset(dV + j0 * Dv, 0, (size_t)(nk * Dv) * sizeof(float));
        int64_t istart = causal ? (j0 / BQ) * BQ : 0;
        for (int64_t i0 = istart; i0 < Tq; i0 += BQ) {
            int64_t nq = Tq - i0 < BQ ? Tq - i0 : BQ;
            int st = fg_gemm(S, BK, Q + i0 * D, D, K + j0 * D, D, nq, nk, D, 0, 1, scale, 0.0f, 1);
            if (st != FG_OK) return st;
            mask_tile(S, nq, nk, i0, j0, kb, causal);
            for (int64_t a = 0; a < nq; a++) {
                float L = lse[i0 + a];
                float *s = S + a * BK;
                for (int64_t c = 0; c < nk; c++)
                    s[c] = (L == -INFINITY || s[c] == -INFINITY) ? -INFINITY : s[c] - L;
                fg_exp(s, s, nk, 1);
            }
            /* dV_j += P^T dO_i */
            st = fg_gemm(dV + j0 * Dv, Dv, S, BK, dO + i0 * Dv, Dv, nk, Dv, nq, 1, 0, 1.0f, 1.0f, 1);
            if (st != FG_OK) return st;
            /* dP = dO_i V_j^T */
            st = fg_gemm(dP, BK, dO + i0 * Dv, Dv, V + j0 * Dv, Dv, nq, nk, Dv, 0, 1, 1.0f, 0.0f, 1);
            if (st != FG_OK) return st;
            for (int64_t a = 0; a < nq; a++) {
                float *dp = dP + a * BK;
                const float *p = S + a * BK;
                float di = Di[i0 + a];
                for (int64_t c = 0; c < nk; c++) dp[c] = (dp[c] - di) * p[c] * scale;
            }
            /* dK_j += dS^T Q_i ; dQ_i += dS K_j */
            st = fg_gemm(dK + j0 * D, D, dP, BK, Q + i0 * D, D, nk, D, nq, 1, 0, 1.0f, 1.0f, 1);
            if (st != FG_OK) return st;
            st = fg_gemm(dQ + i0 * D, D, dP, BK, K + j0 * D, D, nq, D, nk, 0, 0, 1.0f, 1.0f, 1);
            if (st != FG_OK) return st;
        }
    }
    return FG_OK;
}

int FG_ISA_FN(fg_flash_backward_k)(float *dQ, float *dK, float *dV, const float *dO,
                                   const float *Q, const float *K, const float *V, const float *O,
                                   const float *lse, int64_t B, int64_t H, int64_t Tq, int64_t Tk,
                                   int64_t D, int64_t Dv, float scale, const uint8_t *kv,
                                   const uint8_t *qv, int causal, int nthreads) {
    (void)qv; /* masked query rows have lse = -inf: their weights recompute to 0 */
    const int64_t G = B * H;
    int nt = nthreads_for(G, (Tq + 1) * (Tk + 1) * (D + Dv + 1), 65536, nthreads);
    int status = FG_OK;
#if defined(_OPENMP)
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
    {
        unsigned fs = fg_fpstate_enter();
        float *S = (float *)malloc(sizeof(float) * (2 * BQ * BK + (size_t)Tq + 1));
        if (!S) {
#if defined(_OPENMP)
#pragma omp critical(fg_flash_status)
#endif
            status = FG_ERR_NOMEM;
        }
#if defined(_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
        for (int64_t g = 0; g < G; g++) {
            if (!S) continue;
            int64_t b = g / H;
            int st = flash_bwd_group(dQ + g * Tq * D, dK + g * Tk * D, dV + g * Tk * Dv,
                                     dO + g * Tq * Dv, Q + g * Tq * D, K + g * Tk * D,
                                     V + g * Tk * Dv, O + g * Tq * Dv, lse + g * Tq, Tq, Tk, D, Dv,
                                     scale, kv ? kv + b * Tk : NULL, causal, S, S + BQ * BK,
                                     S + 2 * BQ * BK);
            if (st != FG_OK) {
#if defined(_OPENMP)
#pragma omp critical(fg_flash_status)
#endif
                status = st;
            }
        }
        free(S);
        fg_fpstate_leave(fs);
    }
    return status;
}
