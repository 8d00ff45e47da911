/* rnn.c — SimpleRNN / LSTM / GRU recurrences over a whole sequence (fg_rnn.h).
 *
 * The batch rows are cut into fixed blocks of RB rows (the cut does not depend
 * on the thread count). Rows never interact in a recurrence, forward or
 * backward, so each block runs the WHOLE time loop on one thread, with no
 * barrier per step: per step one fg_gemm over the block's rows (h_{s-1} rk
 * accumulated onto the step's slice of the input projection) and the gate
 * pass that applies the nonlinearities (fg_act_forward's vector bodies, the
 * activation code every fastgrad layer uses) and updates the states while the
 * product's rows are in cache. Backward through time mirrors it: the
 * gate-gradient pass writes the step's pre-activation gradients, one fg_gemm
 * gives dh_{s-1}. The recurrent kernel's gradient (a sum over rows and steps)
 * is one fg_gemm over all steps once every block is done (and GRU's recurrent
 * bias one fixed-order column sum). Blocks run in parallel. The float
 * operations follow NumpyOps' order (backend/numpy_rnn.py); built without
 * contraction. Results are the same bits for any thread count: the blocks'
 * products have the same shapes whatever the thread count, and the final
 * sums are fg_gemm / fg_sum_rows, which are thread-count invariant. */
#include "fg_rnn.h"

#include <string.h>

#include "gemm/fg_gemm.h"
#include "kernels/fg_activation.h"
#include "kernels/fg_reduce.h"

#define RB 32 /* rows per block: the unit of parallel work */

#define FG_TRY(expr)                  \
    do {                              \
        int fg_try_rc_ = (expr);      \
        if (fg_try_rc_ != FG_OK) return fg_try_rc_; \
    } while (0)

static int act_ok(int a) {
    return a == FG_ACT_LINEAR || a == FG_ACT_RELU || a == FG_ACT_SIGMOID || a == FG_ACT_TANH;
}

/* d act / d x from the output y */
static inline float dact(int a, float y) {
    switch (a) {
    case FG_ACT_TANH: return 1.0f - y * y;
    case FG_ACT_SIGMOID: return y * (1.0f - y);
    case FG_ACT_RELU: return y > 0.0f ? 1.0f : 0.0f;
    default: return 1.0f;
    }
}

static inline void act_row(float *y, const float *x, int64_t len, int a) {
    if (a == FG_ACT_LINEAR) {
        if (y != x) memmove(y, x, (size_t)len * sizeof(float));
        return;
    }
    (void)fg_act_forward(y, x, len, a, 1);
}

static inline int masked(const uint8_t *mask, int64_t i, int64_t T, int64_t t) {
    return mask != NULL && mask[i * T + t] == 0;
}

static int args_ok(int64_t n, int64_t T, int64_t u, int act, int rec_act) {
    return n > 0 && T > 0 && u > 0 && act_ok(act) && act_ok(rec_act);
}

int64_t fg_rnn_scratch(int cell, int64_t n, int64_t T, int64_t u) {
    (void)cell;
    return n * T * 4 * u + 8 * n * u + 4 * u * u;
}


/* Blocks of rows: [b * RB, min(n, (b + 1) * RB)); run `body` over them in parallel and
 * return the first non-OK status. */
#define FOR_BLOCKS(n, nthreads, body)                                                   \
    do {                                                                                \
        int64_t nb_ = ((n) + RB - 1) / RB;                                              \
        int nt_ = fg_threads_for(nb_, 1, (nthreads));                                   \
        int rc_ = FG_OK;                                                                \
        _Pragma("omp parallel for num_threads(nt_) schedule(static) if (nt_ > 1)")     \
        for (int64_t b_ = 0; b_ < nb_; b_++) {                                          \
            int64_t i0 = b_ * RB, nr = (n) - i0 < RB ? (n) - i0 : RB;                   \
            int r_ = (body);                                                            \
            if (r_ != FG_OK) {                                                          \
                _Pragma("omp atomic write") rc_ = r_;                                   \
            }                                                                           \
        }                                                                               \
        if (rc_ != FG_OK) return rc_;                                                   \
    } while (0)

/* A of a block's recurrent product: h_{s-1} of rows i0.. (h0 or hs[:, s-1]), times rmask
 * into hp (rows i0.. of an (n, u) buffer) */
static const float *prev_h(int64_t *lda, const float *h0, const float *hs, const float *rmask, float *hp,
                           int64_t i0, int64_t nr, int64_t T, int64_t u, int64_t s) {
    const float *a = s == 0 ? h0 + i0 * u : hs + i0 * T * u + (s - 1) * u;
    int64_t ld = s == 0 ? u : T * u;
    if (rmask == NULL) {
        *lda = ld;
        return a;
    }
    float *o = hp + i0 * u;
    for (int64_t i = 0; i < nr; i++)
        for (int64_t j = 0; j < u; j++) o[i * u + j] = a[i * ld + j] * rmask[(i0 + i) * u + j];
    *lda = u;
    return o;
}

/* HP (n, T, u) by time: the recurrent product's input of each step (h_{s-1} * rmask) */
static void prev_by_time(float *HP, const float *h0, const float *hs, const float *rmask, int64_t n, int64_t T,
                         int64_t u, int reverse, int nthreads) {
    int nt = fg_threads_for(n * T * u, 1 << 14, nthreads);
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
    for (int64_t i = 0; i < n; i++)
        for (int64_t t = 0; t < T; t++) {
            int64_t s = reverse ? T - 1 - t : t;
            const float *src = s == 0 ? h0 + i * u : hs + i * T * u + (s - 1) * u;
            float *dst = HP + i * T * u + t * u;
            if (rmask)
                for (int64_t j = 0; j < u; j++) dst[j] = src[j] * rmask[i * u + j];
            else
                memcpy(dst, src, (size_t)u * sizeof(float));
        }
}

static void copy_rows(float *dst, int64_t ldd, const float *src, int64_t lds, int64_t n, int64_t w) {
    for (int64_t i = 0; i < n; i++) memcpy(dst + i * ldd, src + i * lds, (size_t)w * sizeof(float));
}

/* rkT (G*u, u) = rk^T: the backward's per-step products then read B without transposing */
static void transpose(float *dst, const float *src, int64_t rows, int64_t cols) {
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) dst[j * rows + i] = src[i * cols + j];
}

static void init_carry(float *d, const float *from, int64_t i0, int64_t nr, int64_t u) {
    if (from)
        memcpy(d + i0 * u, from + i0 * u, (size_t)(nr * u) * sizeof(float));
    else
        memset(d + i0 * u, 0, (size_t)(nr * u) * sizeof(float));
}

/* ------------------------------------------------------------------ SimpleRNN */
static int simple_fwd_block(float *hs, const float *xw, const float *rk, const float *h0, const uint8_t *mask,
                            const float *rmask, int64_t i0, int64_t nr, int64_t T, int64_t u, int reverse, int act,
                            float *hp) {
    for (int64_t s = 0; s < T; s++) {
        int64_t t = reverse ? T - 1 - s : s, lda;
        const float *A = prev_h(&lda, h0, hs, rmask, hp, i0, nr, T, u, s);
        float *H = hs + i0 * T * u + s * u;
        copy_rows(H, T * u, xw + i0 * T * u + t * u, T * u, nr, u);
        FG_TRY(fg_gemm(H, T * u, A, lda, rk, u, nr, u, u, 0, 0, 1.0f, 1.0f, 1));
        for (int64_t i = i0; i < i0 + nr; i++) {
            float *h = hs + i * T * u + s * u;
            if (masked(mask, i, T, t)) {
                memcpy(h, s == 0 ? h0 + i * u : h - u, (size_t)u * sizeof(float));
                continue;
            }
            act_row(h, h, u, act);
        }
    }
    return FG_OK;
}

int fg_simple_rnn_forward(float *hs, const float *xw, const float *rk, const float *h0, const uint8_t *mask,
                          const float *rmask, int64_t n, int64_t T, int64_t u, int reverse, int act,
                          float *scratch, int nthreads) {
    if (!hs || !xw || !rk || !h0 || !scratch || !args_ok(n, T, u, act, FG_ACT_LINEAR)) return FG_ERR_ARG;
    FOR_BLOCKS(n, nthreads, simple_fwd_block(hs, xw, rk, h0, mask, rmask, i0, nr, T, u, reverse, act, scratch));
    return FG_OK;
}

static int simple_bwd_block(float *dxw, float *dh, float *tmp, const float *dhs, const float *rkT, const float *hs,
                            const uint8_t *mask, const float *rmask, int64_t i0, int64_t nr, int64_t T, int64_t u,
                            int reverse, int act) {
    for (int64_t s = T - 1; s >= 0; s--) {
        int64_t t = reverse ? T - 1 - s : s;
        for (int64_t i = i0; i < i0 + nr; i++) {
            float *d = dh + i * u, *dz = dxw + i * T * u + t * u;
            const float *h = hs + i * T * u + s * u, *g = dhs + i * T * u + s * u;
            for (int64_t j = 0; j < u; j++) d[j] += g[j];
            if (masked(mask, i, T, t)) {
                memset(dz, 0, (size_t)u * sizeof(float));
                continue;
            }
            for (int64_t j = 0; j < u; j++) dz[j] = d[j] * dact(act, h[j]);
        }
        FG_TRY(fg_gemm(tmp + i0 * u, u, dxw + i0 * T * u + t * u, T * u, rkT, u, nr, u, u, 0, 0, 1.0f, 0.0f, 1));
        for (int64_t i = i0; i < i0 + nr; i++) {
            if (masked(mask, i, T, t)) continue;
            float *d = dh + i * u;
            const float *p = tmp + i * u;
            if (rmask)
                for (int64_t j = 0; j < u; j++) d[j] = p[j] * rmask[i * u + j];
            else
                memcpy(d, p, (size_t)u * sizeof(float));
        }
    }
    return FG_OK;
}

int fg_simple_rnn_backward(float *dxw, float *drk, float *dh0, const float *dhs, const float *dhT,
                           const float *rk, const float *h0, const float *hs, const uint8_t *mask,
                           const float *rmask, int64_t n, int64_t T, int64_t u, int reverse, int act,
                           float *scratch, int nthreads) {
    if (!dxw || !drk || !dh0 || !dhs || !rk || !h0 || !hs || !scratch || !args_ok(n, T, u, act, FG_ACT_LINEAR))
        return FG_ERR_ARG;
    float *tmp = scratch, *HP = scratch + n * u, *rkT = HP + n * T * u;
    transpose(rkT, rk, u, u);
    FOR_BLOCKS(n, nthreads, (init_carry(dh0, dhT, i0, nr, u),
                             simple_bwd_block(dxw, dh0, tmp, dhs, rkT, hs, mask, rmask, i0, nr, T, u, reverse,
                                              act)));
    prev_by_time(HP, h0, hs, rmask, n, T, u, reverse, nthreads);
    return fg_gemm(drk, u, HP, u, dxw, u, u, u, n * T, 1, 0, 1.0f, 0.0f, nthreads);
}

/* ------------------------------------------------------------------ LSTM */
static int lstm_fwd_block(float *hs, float *cs, float *gates, const float *xw, const float *rk, const float *h0,
                          const float *c0, const uint8_t *mask, const float *rmask, int64_t i0, int64_t nr,
                          int64_t T, int64_t u, int reverse, int act, int rec_act, float *hp) {
    const int64_t g4 = 4 * u;
    for (int64_t s = 0; s < T; s++) {
        int64_t t = reverse ? T - 1 - s : s, lda;
        const float *A = prev_h(&lda, h0, hs, rmask, hp, i0, nr, T, u, s);
        float *G = gates + i0 * T * g4 + s * g4;
        copy_rows(G, T * g4, xw + i0 * T * g4 + t * g4, T * g4, nr, g4);
        FG_TRY(fg_gemm(G, T * g4, A, lda, rk, g4, nr, g4, u, 0, 0, 1.0f, 1.0f, 1));
        for (int64_t i = i0; i < i0 + nr; i++) {
            float *g = gates + i * T * g4 + s * g4;
            act_row(g, g, 2 * u, rec_act);
            act_row(g + 2 * u, g + 2 * u, u, act);
            act_row(g + 3 * u, g + 3 * u, u, rec_act);
            float *c = cs + i * T * u + s * u, *h = hs + i * T * u + s * u;
            const float *cp = s == 0 ? c0 + i * u : c - u, *hpv = s == 0 ? h0 + i * u : h - u;
            if (masked(mask, i, T, t)) {
                memcpy(c, cp, (size_t)u * sizeof(float));
                memcpy(h, hpv, (size_t)u * sizeof(float));
                continue;
            }
            const float *gi = g, *gf = g + u, *gg = g + 2 * u, *go = g + 3 * u;
            for (int64_t j = 0; j < u; j++) c[j] = gf[j] * cp[j] + gi[j] * gg[j];
            act_row(h, c, u, act);
            for (int64_t j = 0; j < u; j++) h[j] = go[j] * h[j];
        }
    }
    return FG_OK;
}

int fg_lstm_forward(float *hs, float *cs, float *gates, const float *xw, const float *rk, const float *h0,
                    const float *c0, const uint8_t *mask, const float *rmask, int64_t n, int64_t T, int64_t u,
                    int reverse, int act, int rec_act, float *scratch, int nthreads) {
    if (!hs || !cs || !gates || !xw || !rk || !h0 || !c0 || !scratch || !args_ok(n, T, u, act, rec_act))
        return FG_ERR_ARG;
    FOR_BLOCKS(n, nthreads, lstm_fwd_block(hs, cs, gates, xw, rk, h0, c0, mask, rmask, i0, nr, T, u, reverse, act,
                                           rec_act, scratch));
    return FG_OK;
}

/* one row's gate gradients (same expressions for every call; inlined with constant
 * activations for the default pair, so the same bits either way) */
FG_INLINE void lstm_grad_row(float *restrict dz, float *restrict dcr,
                             const float *restrict d, const float *restrict a,
                             const float *gi, const float *gf, const float *gg,
                             const float *go, const float *cp, int64_t u, int act,
                             int rec_act) {
    for (int64_t j = 0; j < u; j++) {
        float dct = dcr[j] + d[j] * go[j] * dact(act, a[j]);
        dz[j] = dct * gg[j] * dact(rec_act, gi[j]);
        dz[u + j] = dct * cp[j] * dact(rec_act, gf[j]);
        dz[2 * u + j] = dct * gi[j] * dact(act, gg[j]);
        dz[3 * u + j] = d[j] * a[j] * dact(rec_act, go[j]);
        dcr[j] = dct * gf[j];
    }
}

static int lstm_bwd_block(float *dxw, float *dh, float *dc, float *tmp, float *ac, const float *dhs,
                          const float *rkT, const float *c0, const float *cs, const float *gates, const uint8_t *mask,
                          const float *rmask, int64_t i0, int64_t nr, int64_t T, int64_t u, int reverse, int act,
                          int rec_act) {
    const int64_t g4 = 4 * u;
    for (int64_t s = T - 1; s >= 0; s--) {
        int64_t t = reverse ? T - 1 - s : s;
        for (int64_t i = i0; i < i0 + nr; i++) {
            float *d = dh + i * u, *dcr = dc + i * u, *dz = dxw + i * T * g4 + t * g4, *a = ac + i * u;
            const float *gd = dhs + i * T * u + s * u;
            for (int64_t j = 0; j < u; j++) d[j] += gd[j];
            if (masked(mask, i, T, t)) {
                memset(dz, 0, (size_t)g4 * sizeof(float));
                continue;
            }
            const float *g = gates + i * T * g4 + s * g4;
            const float *gi = g, *gf = g + u, *gg = g + 2 * u, *go = g + 3 * u;
            const float *c = cs + i * T * u + s * u;
            const float *cp = s == 0 ? c0 + i * u : c - u;
            act_row(a, c, u, act);
            if (act == FG_ACT_TANH && rec_act == FG_ACT_SIGMOID) /* the default: constants fold, loop vectorizes */
                lstm_grad_row(dz, dcr, d, a, gi, gf, gg, go, cp, u, FG_ACT_TANH, FG_ACT_SIGMOID);
            else
                lstm_grad_row(dz, dcr, d, a, gi, gf, gg, go, cp, u, act, rec_act);
        }
        FG_TRY(fg_gemm(tmp + i0 * u, u, dxw + i0 * T * g4 + t * g4, T * g4, rkT, u, nr, u, g4, 0, 0, 1.0f, 0.0f,
                       1));
        for (int64_t i = i0; i < i0 + nr; i++) {
            if (masked(mask, i, T, t)) continue;
            float *d = dh + i * u;
            const float *p = tmp + i * u;
            if (rmask)
                for (int64_t j = 0; j < u; j++) d[j] = p[j] * rmask[i * u + j];
            else
                memcpy(d, p, (size_t)u * sizeof(float));
        }
    }
    return FG_OK;
}

int fg_lstm_backward(float *dxw, float *drk, float *dh0, float *dc0, const float *dhs, const float *dhT,
                     const float *dcT, const float *rk, const float *h0, const float *c0, const float *hs,
                     const float *cs, const float *gates, const uint8_t *mask, const float *rmask, int64_t n,
                     int64_t T, int64_t u, int reverse, int act, int rec_act, float *scratch, int nthreads) {
    if (!dxw || !drk || !dh0 || !dc0 || !dhs || !rk || !h0 || !c0 || !hs || !cs || !gates || !scratch ||
        !args_ok(n, T, u, act, rec_act))
        return FG_ERR_ARG;
    const int64_t g4 = 4 * u;
    float *tmp = scratch, *ac = scratch + n * u, *HP = scratch + 2 * n * u, *rkT = HP + n * T * u;
    transpose(rkT, rk, u, g4);
    FOR_BLOCKS(n, nthreads, (init_carry(dh0, dhT, i0, nr, u), init_carry(dc0, dcT, i0, nr, u),
                             lstm_bwd_block(dxw, dh0, dc0, tmp, ac, dhs, rkT, c0, cs, gates, mask, rmask, i0, nr, T,
                                            u, reverse, act, rec_act)));
    prev_by_time(HP, h0, hs, rmask, n, T, u, reverse, nthreads);
    return fg_gemm(drk, g4, HP, u, dxw, g4, u, g4, n * T, 1, 0, 1.0f, 0.0f, nthreads);
}

/* ------------------------------------------------------------------ GRU (reset_after=True) */
static int gru_fwd_block(float *hs, float *gates, const float *xw, const float *rk, const float *brec,
                         const float *h0, const uint8_t *mask, const float *rmask, int64_t i0, int64_t nr, int64_t T,
                         int64_t u, int reverse, int act, int rec_act, float *hp, float *hr, float *tmp) {
    const int64_t g3 = 3 * u, g4 = 4 * u;
    for (int64_t s = 0; s < T; s++) {
        int64_t t = reverse ? T - 1 - s : s, lda;
        const float *A = prev_h(&lda, h0, hs, rmask, hp, i0, nr, T, u, s);
        FG_TRY(fg_gemm(hr + i0 * g3, g3, A, lda, rk, g3, nr, g3, u, 0, 0, 1.0f, 0.0f, 1));
        for (int64_t i = i0; i < i0 + nr; i++) {
            float *r3 = hr + i * g3, *g = gates + i * T * g4 + s * g4, *tm = tmp + i * u;
            const float *x = xw + i * T * g3 + t * g3;
            if (brec)
                for (int64_t j = 0; j < g3; j++) r3[j] += brec[j];
            for (int64_t j = 0; j < 2 * u; j++) g[j] = x[j] + r3[j];
            act_row(g, g, 2 * u, rec_act);
            const float *z = g, *r = g + u;
            for (int64_t j = 0; j < u; j++) {
                g[3 * u + j] = r3[2 * u + j];
                tm[j] = r[j] * r3[2 * u + j] + x[2 * u + j];
            }
            float *hh = g + 2 * u;
            act_row(hh, tm, u, act);
            float *h = hs + i * T * u + s * u;
            const float *hpv = s == 0 ? h0 + i * u : h - u;
            if (masked(mask, i, T, t)) {
                memcpy(h, hpv, (size_t)u * sizeof(float));
                continue;
            }
            for (int64_t j = 0; j < u; j++) h[j] = (hpv[j] - hh[j]) * z[j] + hh[j];
        }
    }
    return FG_OK;
}

int fg_gru_forward(float *hs, float *gates, const float *xw, const float *rk, const float *brec, const float *h0,
                   const uint8_t *mask, const float *rmask, int64_t n, int64_t T, int64_t u, int reverse, int act,
                   int rec_act, float *scratch, int nthreads) {
    if (!hs || !gates || !xw || !rk || !h0 || !scratch || !args_ok(n, T, u, act, rec_act)) return FG_ERR_ARG;
    float *hp = scratch, *hr = scratch + n * u, *tmp = scratch + 4 * n * u;
    FOR_BLOCKS(n, nthreads, gru_fwd_block(hs, gates, xw, rk, brec, h0, mask, rmask, i0, nr, T, u, reverse, act,
                                          rec_act, hp, hr, tmp));
    return FG_OK;
}

FG_INLINE void gru_grad_row(float *restrict dx, float *restrict dr,
                            const float *d, const float *z, const float *r,
                            const float *hh, const float *hrh, const float *hpv,
                            int64_t u, int act, int rec_act) {
    for (int64_t j = 0; j < u; j++) {
        float dhh = d[j] * (1.0f - z[j]) * dact(act, hh[j]);
        float dzp = d[j] * (hpv[j] - hh[j]) * dact(rec_act, z[j]);
        float drp = dhh * hrh[j] * dact(rec_act, r[j]);
        dx[j] = dzp;
        dx[u + j] = drp;
        dx[2 * u + j] = dhh;
        dr[j] = dzp;
        dr[u + j] = drp;
        dr[2 * u + j] = dhh * r[j];
    }
}

static int gru_bwd_block(float *dxw, float *dHR, float *dh, float *tmp, const float *dhs, const float *rkT,
                         const float *h0, const float *hs, const float *gates, const uint8_t *mask,
                         const float *rmask, int64_t i0, int64_t nr, int64_t T, int64_t u, int reverse, int act,
                         int rec_act) {
    const int64_t g3 = 3 * u, g4 = 4 * u;
    for (int64_t s = T - 1; s >= 0; s--) {
        int64_t t = reverse ? T - 1 - s : s;
        for (int64_t i = i0; i < i0 + nr; i++) {
            float *d = dh + i * u, *dx = dxw + i * T * g3 + t * g3, *dr = dHR + i * T * g3 + t * g3;
            const float *gd = dhs + i * T * u + s * u;
            for (int64_t j = 0; j < u; j++) d[j] += gd[j];
            if (masked(mask, i, T, t)) {
                memset(dx, 0, (size_t)g3 * sizeof(float));
                memset(dr, 0, (size_t)g3 * sizeof(float));
                continue;
            }
            const float *g = gates + i * T * g4 + s * g4;
            const float *z = g, *r = g + u, *hh = g + 2 * u, *hrh = g + 3 * u;
            const float *hpv = s == 0 ? h0 + i * u : hs + i * T * u + (s - 1) * u;
            if (act == FG_ACT_TANH && rec_act == FG_ACT_SIGMOID)
                gru_grad_row(dx, dr, d, z, r, hh, hrh, hpv, u, FG_ACT_TANH, FG_ACT_SIGMOID);
            else
                gru_grad_row(dx, dr, d, z, r, hh, hrh, hpv, u, act, rec_act);
        }
        FG_TRY(fg_gemm(tmp + i0 * u, u, dHR + i0 * T * g3 + t * g3, T * g3, rkT, u, nr, u, g3, 0, 0, 1.0f, 0.0f, 1));
        for (int64_t i = i0; i < i0 + nr; i++) {
            if (masked(mask, i, T, t)) continue;
            float *d = dh + i * u;
            const float *p = tmp + i * u, *z = gates + i * T * g4 + s * g4;
            for (int64_t j = 0; j < u; j++) {
                float v = rmask ? p[j] * rmask[i * u + j] : p[j];
                d[j] = v + d[j] * z[j];
            }
        }
    }
    return FG_OK;
}

int fg_gru_backward(float *dxw, float *drk, float *dbrec, float *dh0, const float *dhs, const float *dhT,
                    const float *rk, const float *h0, const float *hs, const float *gates, const uint8_t *mask,
                    const float *rmask, int64_t n, int64_t T, int64_t u, int reverse, int act, int rec_act,
                    float *scratch, int nthreads) {
    if (!dxw || !drk || !dh0 || !dhs || !rk || !h0 || !hs || !gates || !scratch || !args_ok(n, T, u, act, rec_act))
        return FG_ERR_ARG;
    const int64_t g3 = 3 * u;
    /* dHR (n, T, 3u) by time: the recurrent product's output gradient; HP (n, T, u) after it */
    float *tmp = scratch, *dHR = scratch + n * u, *HP = dHR + n * T * g3, *rkT = HP + n * T * u;
    transpose(rkT, rk, u, g3);
    FOR_BLOCKS(n, nthreads, (init_carry(dh0, dhT, i0, nr, u),
                             gru_bwd_block(dxw, dHR, dh0, tmp, dhs, rkT, h0, hs, gates, mask, rmask, i0, nr, T, u,
                                           reverse, act, rec_act)));
    prev_by_time(HP, h0, hs, rmask, n, T, u, reverse, nthreads);
    FG_TRY(fg_gemm(drk, g3, HP, u, dHR, g3, u, g3, n * T, 1, 0, 1.0f, 0.0f, nthreads));
    if (dbrec) FG_TRY(fg_sum_rows(dbrec, dHR, n * T, g3, nthreads));
    return FG_OK;
}

/* ------------------------------------------------------------------ Embedding */
int fg_embedding_backward(float *dtable, const int64_t *ids, const float *dy, int64_t npos, int64_t V,
                          int64_t D) {
    if (!dtable || (npos > 0 && (!ids || !dy)) || V <= 0 || D <= 0 || npos < 0) return FG_ERR_ARG;
    memset(dtable, 0, (size_t)(V * D) * sizeof(float));
    for (int64_t p = 0; p < npos; p++) {
        int64_t id = ids[p];
        if (id < 0 || id >= V) return FG_ERR_ARG;
        float *row = dtable + id * D;
        const float *g = dy + p * D;
        for (int64_t j = 0; j < D; j++) row[j] += g[j];
    }
    return FG_OK;
}
