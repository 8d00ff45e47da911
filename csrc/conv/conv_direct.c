/* conv_direct.c — direct kernels of the convolution family, compiled once
 * per instruction set (the channel loops are what the compiler vectorises;
 * -ffp-contract=off keeps them plain multiply-then-add chains). Exported as
 * FG_ISA_FN(...) and dispatched by conv.c.
 *
 * Threads: work is split by output rows (n, oy) for the forward kernels, by
 * sample for the scatter-shaped backward kernels (overlapping windows add
 * into the same dx, so one sample has one owner), and by channel for the
 * depthwise filter gradient (each dw element sums over every pixel, in pixel
 * order, on one thread). So each output element has one owner and a fixed
 * order of operations: the bits do not depend on the thread count.
 */
#include "fg_conv.h"

#include <string.h>
#if FG_HAVE_OPENMP
#include <omp.h>
#endif

#define GRAIN (1 << 17) /* multiply-adds (window reads) per thread below which one thread runs: a
                        * parallel region costs microseconds, and a scheduler slice when the
                        * machine is oversubscribed */

/* for (i = 0; i < n; i++) body(i), over nt threads (static blocks) */
#if FG_HAVE_OPENMP
#define PAR_FOR(nt, i, n, body)                                  \
    do {                                                         \
        if ((nt) > 1) {                                          \
            _Pragma("omp parallel num_threads(nt)")              \
            {                                                    \
                unsigned fp_ = fg_fpstate_enter();               \
                _Pragma("omp for schedule(static)")              \
                for (int64_t i = 0; i < (n); i++) { body; }      \
                fg_fpstate_leave(fp_);                           \
            }                                                    \
        } else {                                                 \
            unsigned fp_ = fg_fpstate_enter();                   \
            for (int64_t i = 0; i < (n); i++) { body; }          \
            fg_fpstate_leave(fp_);                               \
        }                                                        \
    } while (0)
#else
#define PAR_FOR(nt, i, n, body)                                  \
    do {                                                         \
        unsigned fp_ = fg_fpstate_enter();                       \
        for (int64_t i = 0; i < (n); i++) { body; }              \
        fg_fpstate_leave(fp_);                                   \
    } while (0)
#endif

static int threads_for(int64_t units, int64_t work, int nthreads) {
    int nt = fg_threads_for(work, GRAIN, nthreads);
    if (nt > units) nt = (int)(units > 0 ? units : 1);
    return nt < 1 ? 1 : nt;
}

/* ---- depthwise ---- */

/* one output row (n, oy): z[ox, c*M + m] = sum_{ky,kx} x[.., c] w[ky,kx,c,m] (+ b) */
static void dw_fwd_row(float *FG_RESTRICT zrow, const float *FG_RESTRICT x, const float *FG_RESTRICT w,
                       const float *FG_RESTRICT b, const fg_conv_shape *s, int64_t n, int64_t oy) {
    const int64_t C = s->c, F = s->f, M = F / C;
    for (int64_t ox = 0; ox < s->ow; ox++) {
        float *FG_RESTRICT z = zrow + ox * F;
        for (int64_t j = 0; j < F; j++) z[j] = 0.0f;
        for (int64_t ky = 0; ky < s->kh; ky++) {
            const int64_t iy = oy * s->sh + ky * s->dh - s->pt;
            if (iy < 0 || iy >= s->h) continue;
            for (int64_t kx = 0; kx < s->kw; kx++) {
                const int64_t ix = ox * s->sw + kx * s->dw - s->pl;
                if (ix < 0 || ix >= s->w) continue;
                const float *FG_RESTRICT xp = x + ((n * s->h + iy) * s->w + ix) * C;
                const float *FG_RESTRICT wp = w + (ky * s->kw + kx) * F;
                if (M == 1) {
                    for (int64_t c = 0; c < C; c++) z[c] = z[c] + xp[c] * wp[c];
                } else {
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t m = 0; m < M; m++) z[c * M + m] = z[c * M + m] + xp[c] * wp[c * M + m];
                }
            }
        }
        if (b)
            for (int64_t j = 0; j < F; j++) z[j] = z[j] + b[j];
    }
}

void FG_ISA_FN(fg_dw_fwd)(float *z, const float *x, const float *w, const float *b, const fg_conv_shape *s,
                          int nthreads) {
    const int64_t rows = s->n * s->oh;
    const int nt = threads_for(rows, rows * s->ow * s->f * s->kh * s->kw, nthreads);
    PAR_FOR(nt, r, rows, dw_fwd_row(z + r * s->ow * s->f, x, w, b, s, r / s->oh, r % s->oh));
}

/* one input row (n, iy): dx[ix, c] = sum_{ky,kx,m} dz[oy, ox, c*M+m] w[ky,kx,c,m] over the taps landing on it */
static void dw_bwd_data_row(float *FG_RESTRICT dxrow, const float *FG_RESTRICT dz, const float *FG_RESTRICT w,
                            const fg_conv_shape *s, int64_t n, int64_t iy) {
    const int64_t C = s->c, F = s->f, M = F / C;
    for (int64_t ix = 0; ix < s->w; ix++) {
        float *FG_RESTRICT d = dxrow + ix * C;
        for (int64_t c = 0; c < C; c++) d[c] = 0.0f;
        for (int64_t ky = 0; ky < s->kh; ky++) {
            const int64_t ty = iy + s->pt - ky * s->dh;
            if (ty < 0 || ty % s->sh) continue;
            const int64_t oy = ty / s->sh;
            if (oy >= s->oh) continue;
            for (int64_t kx = 0; kx < s->kw; kx++) {
                const int64_t tx = ix + s->pl - kx * s->dw;
                if (tx < 0 || tx % s->sw) continue;
                const int64_t ox = tx / s->sw;
                if (ox >= s->ow) continue;
                const float *FG_RESTRICT g = dz + ((n * s->oh + oy) * s->ow + ox) * F;
                const float *FG_RESTRICT wp = w + (ky * s->kw + kx) * F;
                if (M == 1) {
                    for (int64_t c = 0; c < C; c++) d[c] = d[c] + g[c] * wp[c];
                } else {
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t m = 0; m < M; m++) d[c] = d[c] + g[c * M + m] * wp[c * M + m];
                }
            }
        }
    }
}

void FG_ISA_FN(fg_dw_bwd_data)(float *dx, const float *dz, const float *w, const fg_conv_shape *s, int nthreads) {
    const int64_t rows = s->n * s->h;
    const int nt = threads_for(rows, s->n * s->oh * s->ow * s->f * s->kh * s->kw, nthreads);
    PAR_FOR(nt, r, rows, dw_bwd_data_row(dx + r * s->w * s->c, dz, w, s, r / s->h, r % s->h));
}

/* dw[ky,kx,c,m] for c in [c0, c1): sums over every output pixel in order */
static void dw_bwd_filter_block(float *FG_RESTRICT dw, const float *FG_RESTRICT dz, const float *FG_RESTRICT x,
                                const fg_conv_shape *s, int64_t c0, int64_t c1) {
    const int64_t C = s->c, F = s->f, M = F / C;
    for (int64_t t = 0; t < s->kh * s->kw; t++)
        for (int64_t j = c0 * M; j < c1 * M; j++) dw[t * F + j] = 0.0f;
    for (int64_t n = 0; n < s->n; n++)
        for (int64_t oy = 0; oy < s->oh; oy++)
            for (int64_t ox = 0; ox < s->ow; ox++) {
                const float *FG_RESTRICT g = dz + ((n * s->oh + oy) * s->ow + ox) * F;
                for (int64_t ky = 0; ky < s->kh; ky++) {
                    const int64_t iy = oy * s->sh + ky * s->dh - s->pt;
                    if (iy < 0 || iy >= s->h) continue;
                    for (int64_t kx = 0; kx < s->kw; kx++) {
                        const int64_t ix = ox * s->sw + kx * s->dw - s->pl;
                        if (ix < 0 || ix >= s->w) continue;
                        const float *FG_RESTRICT xp = x + ((n * s->h + iy) * s->w + ix) * C;
                        float *FG_RESTRICT d = dw + (ky * s->kw + kx) * F;
                        if (M == 1) {
                            for (int64_t c = c0; c < c1; c++) d[c] = d[c] + xp[c] * g[c];
                        } else {
                            for (int64_t c = c0; c < c1; c++)
                                for (int64_t m = 0; m < M; m++) d[c * M + m] = d[c * M + m] + xp[c] * g[c * M + m];
                        }
                    }
                }
            }
}

#define DW_CBLOCK 16 /* channels per work unit of the filter gradient */

void FG_ISA_FN(fg_dw_bwd_filter)(float *dw, const float *dz, const float *x, const fg_conv_shape *s, int nthreads) {
    const int64_t blocks = (s->c + DW_CBLOCK - 1) / DW_CBLOCK;
    const int nt = threads_for(blocks, s->n * s->oh * s->ow * s->f * s->kh * s->kw, nthreads);
    PAR_FOR(nt, bi, blocks,
            dw_bwd_filter_block(dw, dz, x, s, bi * DW_CBLOCK,
                                (bi + 1) * DW_CBLOCK < s->c ? (bi + 1) * DW_CBLOCK : s->c));
}

/* ---- pooling ---- */

static void pool_fwd_row(float *FG_RESTRICT yrow, const float *FG_RESTRICT x, const fg_conv_shape *s, int64_t n,
                         int64_t oy, int is_max) {
    const int64_t C = s->c;
    const int64_t ys = oy * s->sh - s->pt;
    const int64_t y0 = ys > 0 ? ys : 0, y1 = ys + s->kh < s->h ? ys + s->kh : s->h;
    for (int64_t ox = 0; ox < s->ow; ox++) {
        const int64_t xs = ox * s->sw - s->pl;
        const int64_t x0 = xs > 0 ? xs : 0, x1 = xs + s->kw < s->w ? xs + s->kw : s->w;
        float *FG_RESTRICT y = yrow + ox * C;
        int first = 1;
        for (int64_t iy = y0; iy < y1; iy++)
            for (int64_t ix = x0; ix < x1; ix++) {
                const float *FG_RESTRICT xp = x + ((n * s->h + iy) * s->w + ix) * C;
                if (first) {
                    for (int64_t c = 0; c < C; c++) y[c] = xp[c];
                    first = 0;
                } else if (is_max) {
                    for (int64_t c = 0; c < C; c++) y[c] = (xp[c] > y[c] || xp[c] != xp[c]) ? xp[c] : y[c]; /* NaN propagates */
                } else {
                    for (int64_t c = 0; c < C; c++) y[c] = y[c] + xp[c];
                }
            }
        if (!is_max) {
            const float cnt = (float)((y1 - y0) * (x1 - x0));
            for (int64_t c = 0; c < C; c++) y[c] = y[c] / cnt;
        }
    }
}

void FG_ISA_FN(fg_pool_fwd)(float *y, const float *x, const fg_conv_shape *s, int is_max, int nthreads) {
    const int64_t rows = s->n * s->oh;
    const int nt = threads_for(rows, rows * s->ow * s->c * s->kh * s->kw, nthreads);
    PAR_FOR(nt, r, rows, pool_fwd_row(y + r * s->ow * s->c, x, s, r / s->oh, r % s->oh, is_max));
}

#define FG_POOL_VEC_C 1024 /* channels of the vectorised max backward (a stack row of gradients) */

static void pool_bwd_sample(float *FG_RESTRICT dx, const float *FG_RESTRICT dy, const float *FG_RESTRICT x,
                            const float *FG_RESTRICT y, const fg_conv_shape *s, int is_max) {
    const int64_t C = s->c;
    float left[FG_POOL_VEC_C];
    memset(dx, 0, (size_t)(s->h * s->w * C) * sizeof(float));
    for (int64_t oy = 0; oy < s->oh; oy++) {
        const int64_t ys = oy * s->sh - s->pt;
        const int64_t y0 = ys > 0 ? ys : 0, y1 = ys + s->kh < s->h ? ys + s->kh : s->h;
        for (int64_t ox = 0; ox < s->ow; ox++) {
            const int64_t xs = ox * s->sw - s->pl;
            const int64_t x0 = xs > 0 ? xs : 0, x1 = xs + s->kw < s->w ? xs + s->kw : s->w;
            const float *FG_RESTRICT g = dy + (oy * s->ow + ox) * C;
            if (is_max && C <= FG_POOL_VEC_C) {
                /* the window's positions in row-major order; a channel's gradient goes to its first
                 * hit and is then used up (later positions add +0: dx starts at +0 and a sum from +0
                 * is never -0, so adding +0 changes no bits). Branch-free over channels: vectorised. */
                const float *FG_RESTRICT yv = y + (oy * s->ow + ox) * C;
                for (int64_t c = 0; c < C; c++) left[c] = g[c];
                for (int64_t iy = y0; iy < y1; iy++)
                    for (int64_t ix = x0; ix < x1; ix++) {
                        const float *FG_RESTRICT xv = x + (iy * s->w + ix) * C;
                        float *FG_RESTRICT d = dx + (iy * s->w + ix) * C;
                        for (int64_t c = 0; c < C; c++) {
                            const int hit = (xv[c] == yv[c]) | ((yv[c] != yv[c]) & (xv[c] != xv[c]));
                            d[c] = d[c] + (hit ? left[c] : 0.0f);
                            left[c] = hit ? 0.0f : left[c];
                        }
                    }
            } else if (is_max) {
                const float *FG_RESTRICT yv = y + (oy * s->ow + ox) * C;
                for (int64_t c = 0; c < C; c++) {
                    int64_t at = -1;
                    for (int64_t iy = y0; iy < y1 && at < 0; iy++)
                        for (int64_t ix = x0; ix < x1; ix++)
                            if (x[(iy * s->w + ix) * C + c] == yv[c] ||
                                (yv[c] != yv[c] && x[(iy * s->w + ix) * C + c] != x[(iy * s->w + ix) * C + c])) {
                                at = (iy * s->w + ix) * C + c;
                                break;
                            }
                    if (at >= 0) dx[at] = dx[at] + g[c];
                }
            } else {
                const float cnt = (float)((y1 - y0) * (x1 - x0));
                for (int64_t iy = y0; iy < y1; iy++)
                    for (int64_t ix = x0; ix < x1; ix++) {
                        float *FG_RESTRICT d = dx + (iy * s->w + ix) * C;
                        for (int64_t c = 0; c < C; c++) d[c] = d[c] + g[c] / cnt;
                    }
            }
        }
    }
}

void FG_ISA_FN(fg_pool_bwd)(float *dx, const float *dy, const float *x, const float *y, const fg_conv_shape *s,
                            int is_max, int nthreads) {
    const int64_t xs = s->h * s->w * s->c, ys = s->oh * s->ow * s->c;
    const int nt = threads_for(s->n, s->n * ys * s->kh * s->kw, nthreads);
    PAR_FOR(nt, n, s->n,
            pool_bwd_sample(dx + n * xs, dy + n * ys, is_max ? x + n * xs : NULL, is_max ? y + n * ys : NULL, s,
                            is_max));
}

/* ---- global pooling: x (n, l, c) -> (n, c) ---- */

static void gpool_fwd_one(float *FG_RESTRICT y, const float *FG_RESTRICT x, int64_t l, int64_t c, int is_max) {
    for (int64_t j = 0; j < c; j++) y[j] = x[j];
    for (int64_t t = 1; t < l; t++) {
        const float *FG_RESTRICT xp = x + t * c;
        if (is_max)
            for (int64_t j = 0; j < c; j++) y[j] = (xp[j] > y[j] || xp[j] != xp[j]) ? xp[j] : y[j];
        else
            for (int64_t j = 0; j < c; j++) y[j] = y[j] + xp[j];
    }
    if (!is_max) {
        const float cnt = (float)l;
        for (int64_t j = 0; j < c; j++) y[j] = y[j] / cnt;
    }
}

void FG_ISA_FN(fg_gpool_fwd)(float *y, const float *x, int64_t n, int64_t l, int64_t c, int is_max, int nthreads) {
    const int nt = threads_for(n, n * l * c, nthreads);
    PAR_FOR(nt, i, n, gpool_fwd_one(y + i * c, x + i * l * c, l, c, is_max));
}

static void gpool_bwd_one(float *FG_RESTRICT dx, const float *FG_RESTRICT dy, const float *FG_RESTRICT x,
                          const float *FG_RESTRICT y, int64_t l, int64_t c, int is_max) {
    if (is_max) {
        memset(dx, 0, (size_t)(l * c) * sizeof(float));
        for (int64_t j = 0; j < c; j++)
            for (int64_t t = 0; t < l; t++)
                if (x[t * c + j] == y[j] || (y[j] != y[j] && x[t * c + j] != x[t * c + j])) {
                    dx[t * c + j] = dy[j];
                    break;
                }
    } else {
        const float cnt = (float)l;
        for (int64_t t = 0; t < l; t++)
            for (int64_t j = 0; j < c; j++) dx[t * c + j] = dy[j] / cnt;
    }
}

void FG_ISA_FN(fg_gpool_bwd)(float *dx, const float *dy, const float *x, const float *y, int64_t n, int64_t l,
                             int64_t c, int is_max, int nthreads) {
    const int nt = threads_for(n, n * l * c, nthreads);
    PAR_FOR(nt, i, n,
            gpool_bwd_one(dx + i * l * c, dy + i * c, is_max ? x + i * l * c : NULL, is_max ? y + i * c : NULL, l,
                          c, is_max));
}
