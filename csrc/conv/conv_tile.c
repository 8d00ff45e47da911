/* conv_tile.c — register-tiled direct convolution, compiled once per
 * instruction set (explicit vector FMAs on avx2 / avx512, multiply-then-add
 * on the baseline path). Exported as FG_ISA_FN(...) and dispatched by conv.c
 * (routing: docs/conv_kernels.md) for ungrouped, non-pointwise convolutions
 * whose kernel fits L2: no patch packing at all, which is what the implicit
 * GEMM pays most for on short K = kh kw c (LeNet, an RGB first layer), and
 * register tiles shaped for F = 6 .. 64 output channels.
 *
 * Layout: the input, zero-padded once per call into a buffer (n, hp, wp, c)
 * when the convolution pads (so the kernels never test bounds), is read as
 * x[pixel base + tap offset]: a pixel's base is ((oy sh) wp + ox sw) c and a
 * tap t = (ky, kx, ci) adds ((ky dh) wp + kx dw) c + ci.
 *
 *   forward  a tile of R consecutive output pixels of one sample x NV vectors
 *            of output channels: per tap one vector load of the (zero-padded
 *            to a multiple of the vector) kernel row and R broadcasts of x,
 *            R NV FMAs into registers; then + bias and, fused, ReLU. Each
 *            output element is one chain over taps in (ky, kx, ci) order.
 *            With c sw = 1 the tile is R pixels of one output row, broadcast
 *            off one pointer. conv.c also runs the unit-stride data gradient
 *            through it (dz with the rotated, transposed kernel).
 *   filter   dW: a tile of R taps x NV vectors of output channels, summing
 *            over every pixel of every sample in (n, oy, ox) order: per pixel
 *            NV loads of dz and R broadcasts of x. Each dW element is one
 *            chain over pixels, kept in a running-sum buffer between samples.
 * Threads split tiles (forward: (sample, pixel tile); filter: (tap tile,
 * channel vectors)); an element's chain never depends on the split, so the
 * bits are the same for any thread count. Across ISAs they differ (FMA vs
 * multiply-add, as for the GEMM).
 */
#include "fg_conv.h"

#include <stdlib.h>
#include <string.h>
#if FG_HAVE_OPENMP
#include <omp.h>
#endif
#include "conv_vec.h"

/* Vector kinds (Z, and Y on avx512): conv_vec.h. Register tiles per ISA: */
#if defined(__AVX512F__)
#define FWD_R1 16
#define FWD_R2 14
#define FWD_R3 8
#define FWD_R4 6
#define FLT_RA 24
#define FLT_RB 13
#define FLT_RC 9
#define FLT_R2 8
#elif (defined(__AVX2__) && defined(__FMA__)) || defined(__SSE2__)
#define FWD_R1 12
#define FWD_R2 6
#define FWD_R3 4
#define FWD_R4 3
#define FLT_RA 13
#define FLT_RB 9
#define FLT_RC 7
#define FLT_R2 6
#else
#define FWD_R1 8
#define FWD_R2 4
#define FWD_R3 4
#define FWD_R4 2
#define FLT_RA 8
#define FLT_RB 6
#define FLT_RC 4
#define FLT_R2 4
#endif

#define GRAIN (1 << 17) /* multiply-adds per thread below which one thread runs */

/* grow-only buffer of the calling thread: the padded input */
static _Thread_local float *t_pad;
static _Thread_local size_t t_pad_len;

static float *pad_buffer(size_t floats) {
    if (t_pad_len < floats) {
        free(t_pad);
        t_pad = NULL;
        t_pad_len = 0;
        if (posix_memalign((void **)&t_pad, 64, floats * sizeof(float)) != 0) {
            t_pad = NULL;
            return NULL;
        }
        t_pad_len = floats;
    }
    return t_pad;
}

typedef struct {
    const float *x; /* (n, hp, wp, c) */
    int64_t hp, wp;
} padded;

/* x padded with zeros to (hp, wp) per sample, or x itself when no padding is needed */
static int pad_input(padded *pd, const float *x, const fg_conv_shape *s, int nt) {
    const int64_t C = s->c;
    int64_t hp = (s->oh - 1) * s->sh + (s->kh - 1) * s->dh + 1, wp = (s->ow - 1) * s->sw + (s->kw - 1) * s->dw + 1;
    if (hp < s->h + s->pt) hp = s->h + s->pt;
    if (wp < s->w + s->pl) wp = s->w + s->pl;
    pd->hp = hp;
    pd->wp = wp;
    if (s->pt == 0 && s->pl == 0 && hp == s->h && wp == s->w) {
        pd->x = x;
        return FG_OK;
    }
    float *buf = pad_buffer((size_t)(s->n * hp * wp * C));
    if (!buf) return FG_ERR_NOMEM;
    const int64_t rows = s->n * hp;
    (void)nt;
#if FG_HAVE_OPENMP
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
    for (int64_t r = 0; r < rows; r++) {
        const int64_t n = r / hp, iy = r % hp - s->pt;
        float *d = buf + r * wp * C;
        if (iy < 0 || iy >= s->h) {
            memset(d, 0, (size_t)(wp * C) * sizeof(float));
            continue;
        }
        memset(d, 0, (size_t)(s->pl * C) * sizeof(float));
        memcpy(d + s->pl * C, x + ((n * s->h + iy) * s->w) * C, (size_t)(s->w * C) * sizeof(float));
        memset(d + (s->pl + s->w) * C, 0, (size_t)((wp - s->pl - s->w) * C) * sizeof(float));
    }
    pd->x = buf;
    return FG_OK;
}

/* ---- forward ---- */

/* store v (+ bias when has_b, then max(0, .) when relu: the element-wise kernels' v_max(0, z)) */
#define EPI(K_, v, bias, has_b, relu)                          \
    do {                                                       \
        if (has_b) v = K_##_ADD(v, K_##_LD(bias));             \
        if (relu) v = K_##_MAX(K_##_ZERO(), v);                \
    } while (0)

/* out[r * FP + f] (r < R, FP = NV W) = sum_t x[base[r] + toff[t]] wp[t * FP + f] (+ bias, relu) */
#define DEF_FWD_TILE(NAME, K_, NV, R)                                                                           \
    static void NAME(float *FG_RESTRICT out, const float *FG_RESTRICT xb, const int64_t *base,                  \
                     const int64_t *FG_RESTRICT toff, const float *FG_RESTRICT wp, int64_t K,             \
                     const float *FG_RESTRICT bias, int has_b, int relu) {                                       \
        K_##_T acc[R][NV];                                                                                      \
        const float *xr[R];                                                                                     \
        for (int r = 0; r < R; r++) {                                                                           \
            xr[r] = xb + base[r];                                                                               \
            for (int v = 0; v < NV; v++) acc[r][v] = K_##_ZERO();                                               \
        }                                                                                                       \
        for (int64_t t = 0; t < K; t++) {                                                                       \
            const int64_t o = toff[t];                                                                          \
            K_##_T wv[NV];                                                                                      \
            for (int v = 0; v < NV; v++) wv[v] = K_##_LD(wp + t * (NV * K_##_W) + v * K_##_W);                  \
            _Pragma("GCC unroll 32") for (int r = 0; r < R; r++) {                                              \
                const K_##_T xv = K_##_S1(xr[r][o]);                                                            \
                for (int v = 0; v < NV; v++) acc[r][v] = K_##_FMA(xv, wv[v], acc[r][v]);                        \
            }                                                                                                   \
        }                                                                                                       \
        for (int r = 0; r < R; r++)                                                                             \
            for (int v = 0; v < NV; v++) {                                                                      \
                EPI(K_, acc[r][v], bias + v * K_##_W, has_b, relu);                                             \
                K_##_ST(out + r * (NV * K_##_W) + v * K_##_W, acc[r][v]);                                       \
            }                                                                                                   \
    }
DEF_FWD_TILE(fwd_tile_1, Z, 1, FWD_R1)
DEF_FWD_TILE(fwd_tile_2, Z, 2, FWD_R2)
DEF_FWD_TILE(fwd_tile_3, Z, 3, FWD_R3)
DEF_FWD_TILE(fwd_tile_4, Z, 4, FWD_R4)
#if HAVE_NARROW
DEF_FWD_TILE(fwd_tile_y, Y, 1, 16)
#endif

typedef void (*fwd_tile_fn)(float *, const float *, const int64_t *, const int64_t *, const float *, int64_t,
                            const float *, int, int);

/* One input channel and unit stride (an image's first layer): the R pixels of a tile within one
 * output row are R consecutive floats of the input, so a broadcast is x0[o + r] off one pointer
 * (no pointer per pixel). One vector of output channels. */
#define DEF_FWD_ROW(NAME, K_, R)                                                                                \
    static void NAME(float *FG_RESTRICT out, const float *FG_RESTRICT x0, const int64_t *FG_RESTRICT toff,      \
                     const float *FG_RESTRICT wp, int64_t K, const float *FG_RESTRICT bias, int has_b, int relu) { \
        K_##_T acc[R];                                                                                          \
        for (int r = 0; r < R; r++) acc[r] = K_##_ZERO();                                                       \
        for (int64_t t = 0; t < K; t++) {                                                                       \
            const float *xt = x0 + toff[t];                                                                     \
            const K_##_T wv = K_##_LD(wp + t * K_##_W);                                                         \
            _Pragma("GCC unroll 32") for (int r = 0; r < R; r++) acc[r] = K_##_FMA(K_##_S1(xt[r]), wv, acc[r]);  \
        }                                                                                                       \
        for (int r = 0; r < R; r++) {                                                                           \
            EPI(K_, acc[r], bias, has_b, relu);                                                                 \
            K_##_ST(out + r * K_##_W, acc[r]);                                                                  \
        }                                                                                                       \
    }
typedef void (*fwd_row_fn)(float *, const float *, const int64_t *, const float *, int64_t, const float *, int, int);
#define N_ROW 5
static const int64_t row_rows[N_ROW] = {8, 10, 12, 14, 16};
DEF_FWD_ROW(row_z8, Z, 8)
DEF_FWD_ROW(row_z10, Z, 10)
DEF_FWD_ROW(row_z12, Z, 12)
DEF_FWD_ROW(row_z14, Z, 14)
DEF_FWD_ROW(row_z16, Z, 16)
static const fwd_row_fn row_z[N_ROW] = {row_z8, row_z10, row_z12, row_z14, row_z16};
#if HAVE_NARROW
DEF_FWD_ROW(row_y8, Y, 8)
DEF_FWD_ROW(row_y10, Y, 10)
DEF_FWD_ROW(row_y12, Y, 12)
DEF_FWD_ROW(row_y14, Y, 14)
DEF_FWD_ROW(row_y16, Y, 16)
static const fwd_row_fn row_y[N_ROW] = {row_y8, row_y10, row_y12, row_y14, row_y16};
#endif

static const int64_t fwd_rows[5] = {0, FWD_R1, FWD_R2, FWD_R3, FWD_R4};
static const fwd_tile_fn fwd_fns[5] = {NULL, fwd_tile_1, fwd_tile_2, fwd_tile_3, fwd_tile_4};

#define MAXR 32

/* tap offsets (ky, kx, ci) into a padded sample */
static void tap_offsets(int64_t *toff, const fg_conv_shape *s, int64_t wp) {
    int64_t t = 0;
    for (int64_t ky = 0; ky < s->kh; ky++)
        for (int64_t kx = 0; kx < s->kw; kx++)
            for (int64_t ci = 0; ci < s->c; ci++) toff[t++] = ((ky * s->dh) * wp + kx * s->dw) * s->c + ci;
}

/* y = conv + b, or with relu: y = max(0, conv + b) and, when z != NULL, z = conv + b (ReLU fused
 * in the store: the same bits as the element-wise kernels' v_max(0, z), NaN and -0 kept).
 * Returns 1 when handled, 0 when the shape is not this kernel's (nothing written), or
 * -FG_ERR_NOMEM. */
int FG_ISA_FN(fg_conv_tile_fwd)(float *y, float *z, const float *x, const float *w, const float *b,
                                const fg_conv_shape *s, int relu, int nthreads) {
    const int64_t F = s->f, K = s->kh * s->kw * s->c, P = s->oh * s->ow;
    int64_t NV = (F + Z_W - 1) / Z_W, FP = NV * Z_W;
    if (s->groups != 1 || NV > 4) return 0;
    int64_t R = fwd_rows[NV];
    fwd_tile_fn fn = fwd_fns[NV];
    const fwd_row_fn *rows = NV == 1 ? row_z : NULL;
#if HAVE_NARROW
    if (F <= Y_W) {
        FP = Y_W;
        R = 16;
        fn = fwd_tile_y;
        rows = row_y;
    }
#endif
    /* row tiles (c sw == 1, one vector): the height covering an output row in the fewest pixels */
    fwd_row_fn rfn = NULL;
    int64_t RR = 0;
    if (rows && s->c * s->sw == 1) {
        int64_t best = -1;
        for (int i = 0; i < N_ROW && row_rows[i] <= R; i++) { /* a partial row tile runs the general tile */
            const int64_t cost = (s->ow + row_rows[i] - 1) / row_rows[i] * row_rows[i];
            if (best < 0 || cost <= best) {
                best = cost;
                RR = row_rows[i];
                rfn = rows[i];
            }
        }
    }
    int64_t *toff = (int64_t *)malloc((size_t)K * sizeof(int64_t));
    float *wp = NULL;
    if (!toff || posix_memalign((void **)&wp, 64, (size_t)(K * FP + FP) * sizeof(float)) != 0) {
        free(toff);
        return -FG_ERR_NOMEM;
    }
    float *bp = wp + K * FP;
    for (int64_t t = 0; t < K; t++)
        for (int64_t f = 0; f < FP; f++) wp[t * FP + f] = f < F ? w[t * F + f] : 0.0f;
    for (int64_t f = 0; f < FP; f++) bp[f] = (b && f < F) ? b[f] : 0.0f;
    int nt = fg_threads_for(s->n * P * K * FP, GRAIN, nthreads);
    padded pd;
    if (pad_input(&pd, x, s, nt) != FG_OK) {
        free(toff);
        free(wp);
        return -FG_ERR_NOMEM;
    }
    tap_offsets(toff, s, pd.wp);
    /* units: (sample, tile of R pixels), or with row tiles (sample, output row, tile of RR pixels) */
    const int64_t tpr = rfn ? (s->ow + RR - 1) / RR : 0, tiles = rfn ? s->oh * tpr : (P + R - 1) / R;
    const int64_t units = s->n * tiles, xs = pd.hp * pd.wp * s->c;
    if (nt > units) nt = (int)units;
    const int has_b = b != NULL, tile_relu = relu && !z;
#if FG_HAVE_OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
    {
        unsigned fp = fg_fpstate_enter();
        float out[MAXR * 4 * Z_W];
        int64_t base[MAXR];
#if FG_HAVE_OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t u = 0; u < units; u++) {
            const int64_t n = u / tiles;
            int64_t p0, nv;
            if (rfn) {
                const int64_t oy = (u % tiles) / tpr, ox0 = (u % tiles) % tpr * RR;
                p0 = oy * s->ow + ox0;
                nv = s->ow - ox0 < RR ? s->ow - ox0 : RR;
            } else {
                p0 = (u % tiles) * R;
                nv = P - p0 < R ? P - p0 : R;
            }
            float *zr = y + (n * P + p0) * F;
            float *pre = z ? z + (n * P + p0) * F : NULL;
            /* a full tile with F a whole number of vectors is stored straight into y */
            const int direct = FP == F && nv == (rfn ? RR : R);
            float *dst = direct ? zr : out;
            if (rfn && nv == RR) {
                const int64_t oy = p0 / s->ow, ox0 = p0 % s->ow;
                rfn(dst, pd.x + n * xs + (oy * s->sh) * pd.wp + ox0, toff, wp, K, bp, has_b, tile_relu);
            } else {
                for (int64_t r = 0; r < R; r++) {
                    const int64_t p = p0 + (r < nv ? r : nv - 1), oy = p / s->ow, ox = p % s->ow;
                    base[r] = ((oy * s->sh) * pd.wp + ox * s->sw) * s->c;
                }
                fn(dst, pd.x + n * xs, base, toff, wp, K, bp, has_b, tile_relu);
            }
            if (relu && pre) { /* training: z = the stored pre-activation, y = max(0, z) */
                for (int64_t r = 0; r < nv; r++) {
                    const float *o = dst + r * FP;
                    float *d = zr + r * F, *zp = pre + r * F; /* d may be o itself */
                    for (int64_t f = 0; f < F; f++) {
                        const float v = o[f];
                        zp[f] = v;
                        d[f] = 0.0f > v ? 0.0f : v;
                    }
                }
            } else if (!direct) {
                for (int64_t r = 0; r < nv; r++) memcpy(zr + r * F, out + r * FP, (size_t)F * sizeof(float));
            }
        }
        fg_fpstate_leave(fp);
    }
    free(toff);
    free(wp);
    return 1;
}

/* ---- filter gradient ---- */

/* acc[r * ld + v W + j] (r < R, v < NV, j < W) += sum over the pixels of one sample (xn, dzn) of
 * x[pixel base + toff[r]] dz[pixel, f0 + v W + j], pixels in (oy, ox) order. The running sums are
 * loaded and stored around each sample: one chain per element, the same bits as one long chain. */
typedef void (*flt_tile_fn)(float *, int64_t, const float *, const float *, const int64_t *, const fg_conv_shape *,
                            int64_t, int64_t);
#define DEF_FLT_TILE(NAME, K_, NV, R)                                                                           \
    static void NAME(float *FG_RESTRICT accp, int64_t ld, const float *FG_RESTRICT xn,                          \
                     const float *FG_RESTRICT dzn, const int64_t *FG_RESTRICT toff, const fg_conv_shape *s,      \
                     int64_t wp, int64_t f0) {                                                                   \
        K_##_T acc[R][NV];                                                                                      \
        int64_t o[R];                                                                                           \
        for (int r = 0; r < R; r++) {                                                                           \
            for (int v = 0; v < NV; v++) acc[r][v] = K_##_LD(accp + r * ld + v * K_##_W);                       \
            o[r] = toff[r];                                                                                     \
        }                                                                                                       \
        const int64_t F = s->f, C = s->c, xsx = s->sw * C;                                                      \
        for (int64_t oy = 0; oy < s->oh; oy++) {                                                                \
            const float *xp = xn + (oy * s->sh) * wp * C;                                                       \
            const float *dp = dzn + oy * s->ow * F + f0;                                                        \
            for (int64_t ox = 0; ox < s->ow; ox++, xp += xsx, dp += F) {                                        \
                K_##_T d[NV];                                                                                   \
                for (int v = 0; v < NV; v++) d[v] = K_##_LD(dp + v * K_##_W);                                   \
                _Pragma("GCC unroll 32") for (int r = 0; r < R; r++) {                                          \
                    const K_##_T xv = K_##_S1(xp[o[r]]);                                                        \
                    for (int v = 0; v < NV; v++) acc[r][v] = K_##_FMA(xv, d[v], acc[r][v]);                     \
                }                                                                                               \
            }                                                                                                   \
        }                                                                                                       \
        for (int r = 0; r < R; r++)                                                                             \
            for (int v = 0; v < NV; v++) K_##_ST(accp + r * ld + v * K_##_W, acc[r][v]);                       \
    }
DEF_FLT_TILE(flt_tile_a, Z, 1, FLT_RA)
DEF_FLT_TILE(flt_tile_b, Z, 1, FLT_RB)
DEF_FLT_TILE(flt_tile_c, Z, 1, FLT_RC)
DEF_FLT_TILE(flt_tile_2, Z, 2, FLT_R2)
#if HAVE_NARROW
DEF_FLT_TILE(flt_tile_ya, Y, 1, 24)
DEF_FLT_TILE(flt_tile_yb, Y, 1, 13)
DEF_FLT_TILE(flt_tile_yc, Y, 1, 9)
#endif

#ifndef FLT_MAX_F
#if Z_W == 8
#define FLT_MAX_F 64 /* AVX2: up to 8 vectors of filters, run as pairs */
#else
#define FLT_MAX_F (4 * Z_W)
#endif
#endif
int FG_ISA_FN(fg_conv_tile_flt)(float *dw, const float *dz, const float *x, const fg_conv_shape *s, int nthreads) {
    const int64_t F = s->f, K = s->kh * s->kw * s->c, P = s->oh * s->ow;
    int64_t W = Z_W, NVT = (F + Z_W - 1) / Z_W, NV = 1;
    if (s->groups != 1 || NVT * Z_W > FLT_MAX_F) return 0;
    int64_t rows[3] = {FLT_RA, FLT_RB, FLT_RC};
    flt_tile_fn fns[3] = {flt_tile_a, flt_tile_b, flt_tile_c};
    int nchoice = 3;
#if HAVE_NARROW
    if (F <= Y_W) {
        W = Y_W;
        NVT = 1;
        rows[0] = 24, rows[1] = 13, rows[2] = 9;
        fns[0] = flt_tile_ya, fns[1] = flt_tile_yb, fns[2] = flt_tile_yc;
    }
#endif
    if (NVT % 2 == 0 && s->c >= 16) { /* pairs of vectors: half the broadcasts per FMA */
        NV = 2;
        rows[0] = FLT_R2;
        fns[0] = flt_tile_2;
        nchoice = 1;
    }
    /* the tile height wasting the fewest rows on the last tile of taps (ties: the taller) */
    int best = 0;
    for (int i = 1; i < nchoice; i++)
        if ((K + rows[i] - 1) / rows[i] * rows[i] < (K + rows[best] - 1) / rows[best] * rows[best]) best = i;
    const int64_t R = rows[best];
    const flt_tile_fn fn = fns[best];
    const int64_t tt = (K + R - 1) / R, nu = NVT / NV, units = tt * nu, ld = NVT * W;
    int nt = fg_threads_for(s->n * P * K * NVT * W, GRAIN, nthreads);
    if (nt > units) nt = (int)units;
    int64_t *toff = (int64_t *)malloc((size_t)(tt * R) * sizeof(int64_t));
    float *acc = NULL; /* (tt R) x ld running sums */
    /* dz rows are read NV W wide: past the last row of the last sample when F % (NV W) != 0, so that
     * sample is read from a copy with a zero tail */
    const int64_t sz = P * F;
    float *last = NULL;
    padded pd;
    if (!toff || posix_memalign((void **)&acc, 64, (size_t)(tt * R * ld) * sizeof(float)) != 0 ||
        posix_memalign((void **)&last, 64, (size_t)(sz + ld) * sizeof(float)) != 0 ||
        pad_input(&pd, x, s, nt) != FG_OK) {
        free(toff);
        free(acc);
        free(last);
        return -FG_ERR_NOMEM;
    }
    memcpy(last, dz + (s->n - 1) * sz, (size_t)sz * sizeof(float));
    memset(last + sz, 0, (size_t)ld * sizeof(float));
    memset(acc, 0, (size_t)(tt * R * ld) * sizeof(float));
    tap_offsets(toff, s, pd.wp);
    for (int64_t t = K; t < tt * R; t++) toff[t] = toff[K - 1]; /* a valid read, result dropped */
#if FG_HAVE_OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
    {
        unsigned fp = fg_fpstate_enter();
#if FG_HAVE_OPENMP
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
#else
        const int tid = 0, nth = 1;
#endif
        const int64_t u0 = units * tid / nth, u1 = units * (tid + 1) / nth;
        /* sample by sample (its x and dz stay in cache across this thread's tiles) */
        for (int64_t n = 0; n < s->n; n++) {
            const float *xn = pd.x + n * pd.hp * pd.wp * s->c, *dzn = n == s->n - 1 ? last : dz + n * sz;
            for (int64_t u = u0; u < u1; u++) {
                const int64_t t0 = (u / nu) * R, f0 = (u % nu) * NV * W;
                fn(acc + t0 * ld + f0, ld, xn, dzn, toff + t0, s, pd.wp, f0);
            }
        }
        fg_fpstate_leave(fp);
    }
    for (int64_t t = 0; t < K; t++) memcpy(dw + t * F, acc + t * ld, (size_t)F * sizeof(float));
    free(toff);
    free(acc);
    free(last);
    return 1;
}
