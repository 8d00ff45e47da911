/* conv_tile.c — register-tiled direct convolution for few input channels,
 * compiled once per instruction set (explicit vector FMAs on avx2 / avx512,
 * multiply-then-add on the baseline path). Exported as FG_ISA_FN(...) and
 * dispatched by conv.c for ungrouped convolutions with c < 16 input channels
 * (LeNet's 1 and 6, an RGB image's 3), where the implicit GEMM spends as much
 * time packing its short K = kh kw c panels as multiplying.
 *
 * Layout: the input, zero-padded once per call into a buffer (n, hp, wp, c)
 * when the convolution pads (so the kernels never test bounds), is read as
 * x[pixel base + tap offset]: a pixel's base is ((oy sh) wp + ox sw) c and a
 * tap t = (ky, kx, ci) adds ((ky dh) wp + kx dw) c + ci.
 *
 *   forward  a tile of R consecutive output pixels of one sample x NV vectors
 *            of output channels: per tap one vector load of the (zero-padded
 *            to a multiple of the vector) kernel row and R broadcasts of x,
 *            R NV FMAs into registers; then + bias. Each output element is one
 *            chain over taps in (ky, kx, ci) order.
 *   filter   dW: a tile of R taps x one vector of output channels, summing
 *            over every pixel of every sample in (n, oy, ox) order: per pixel
 *            one load of dz and R broadcasts of x. Each dW element is one
 *            chain over pixels.
 * Threads split tiles (forward: (sample, pixel tile); filter: (tap tile,
 * channel vector)); an element's chain never depends on the split, so the
 * bits are the same for any thread count. Across ISAs they differ (FMA vs
 * multiply-add, as for the GEMM).
 */
#include "fg_conv.h"

#include <stdlib.h>
#include <string.h>
#if FG_HAVE_OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__) || defined(__AVX2__) || defined(__SSE2__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
typedef __m512 vf;
#define VL 16
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, v) _mm512_storeu_ps(p, v)
#define VSET1(a) _mm512_set1_ps(a)
#define VZERO() _mm512_setzero_ps()
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VADD(a, b) _mm512_add_ps(a, b)
#define FWD_R1 16
#define FWD_R2 12
#define FWD_R3 8
#define FWD_R4 6
#define FLT_R 24
#elif defined(__AVX2__) && defined(__FMA__)
typedef __m256 vf;
#define VL 8
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps(p, v)
#define VSET1(a) _mm256_set1_ps(a)
#define VZERO() _mm256_setzero_ps()
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VADD(a, b) _mm256_add_ps(a, b)
#define FWD_R1 12
#define FWD_R2 6
#define FWD_R3 4
#define FWD_R4 3
#define FLT_R 12
#elif defined(__SSE2__)
typedef __m128 vf;
#define VL 4
#define VLOAD(p) _mm_loadu_ps(p)
#define VSTORE(p, v) _mm_storeu_ps(p, v)
#define VSET1(a) _mm_set1_ps(a)
#define VZERO() _mm_setzero_ps()
#define VFMA(a, b, c) _mm_add_ps(_mm_mul_ps(a, b), c)
#define VADD(a, b) _mm_add_ps(a, b)
#define FWD_R1 12
#define FWD_R2 6
#define FWD_R3 4
#define FWD_R4 3
#define FLT_R 12
#else
typedef float vf;
#define VL 1
#define VLOAD(p) (*(p))
#define VSTORE(p, v) (*(p) = (v))
#define VSET1(a) (a)
#define VZERO() 0.0f
#define VFMA(a, b, c) ((a) * (b) + (c))
#define VADD(a, b) ((a) + (b))
#define FWD_R1 8
#define FWD_R2 4
#define FWD_R3 4
#define FWD_R4 2
#define FLT_R 8
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

/* out[r * FP + f] (r < R) = sum_t x[base[r] + toff[t]] wp[t * FP + f] */
#define DEF_FWD_TILE(NV, R)                                                                                     \
    static void fwd_tile_##NV(float *FG_RESTRICT out, const float *FG_RESTRICT xb, const int64_t *base,          \
                              const int64_t *FG_RESTRICT toff, const float *FG_RESTRICT wp, int64_t K) {          \
        vf acc[R][NV];                                                                                          \
        const float *xr[R];                                                                                     \
        for (int r = 0; r < R; r++) {                                                                           \
            xr[r] = xb + base[r];                                                                               \
            for (int v = 0; v < NV; v++) acc[r][v] = VZERO();                                                   \
        }                                                                                                       \
        for (int64_t t = 0; t < K; t++) {                                                                       \
            const int64_t o = toff[t];                                                                          \
            vf wv[NV];                                                                                          \
            for (int v = 0; v < NV; v++) wv[v] = VLOAD(wp + t * (NV * VL) + v * VL);                            \
            _Pragma("GCC unroll 32") for (int r = 0; r < R; r++) {                                              \
                const vf xv = VSET1(xr[r][o]);                                                                  \
                for (int v = 0; v < NV; v++) acc[r][v] = VFMA(xv, wv[v], acc[r][v]);                           \
            }                                                                                                   \
        }                                                                                                       \
        for (int r = 0; r < R; r++)                                                                             \
            for (int v = 0; v < NV; v++) VSTORE(out + r * (NV * VL) + v * VL, acc[r][v]);                       \
    }
DEF_FWD_TILE(1, FWD_R1)
DEF_FWD_TILE(2, FWD_R2)
DEF_FWD_TILE(3, FWD_R3)
DEF_FWD_TILE(4, FWD_R4)

typedef void (*fwd_tile_fn)(float *, const float *, const int64_t *, const int64_t *, const float *, int64_t);

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

/* 1 when handled (z = conv + b written), 0 when the shape is not this kernel's (nothing written),
 * or -FG_ERR_NOMEM */
int FG_ISA_FN(fg_conv_tile_fwd)(float *z, const float *x, const float *w, const float *b, const fg_conv_shape *s,
                                int nthreads) {
    const int64_t F = s->f, NV = (F + VL - 1) / VL, FP = NV * VL, K = s->kh * s->kw * s->c, P = s->oh * s->ow;
    if (s->groups != 1 || NV > 4) return 0;
    const int64_t R = fwd_rows[NV];
    const fwd_tile_fn fn = fwd_fns[NV];
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
    const int64_t tiles = (P + R - 1) / R, units = s->n * tiles, xs = pd.hp * pd.wp * s->c;
    if (nt > units) nt = (int)units;
    const int has_b = b != NULL;
#if FG_HAVE_OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
    {
        unsigned fp = fg_fpstate_enter();
        float out[MAXR * 4 * VL];
        int64_t base[MAXR];
#if FG_HAVE_OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t u = 0; u < units; u++) {
            const int64_t n = u / tiles, p0 = (u % tiles) * R;
            const int64_t nv = P - p0 < R ? P - p0 : R;
            for (int64_t r = 0; r < R; r++) {
                const int64_t p = p0 + (r < nv ? r : nv - 1), oy = p / s->ow, ox = p % s->ow;
                base[r] = ((oy * s->sh) * pd.wp + ox * s->sw) * s->c;
            }
            fn(out, pd.x + n * xs, base, toff, wp, K);
            float *zr = z + (n * P + p0) * F;
            for (int64_t r = 0; r < nv; r++) {
                float *o = out + r * FP;
                if (has_b)
                    for (int64_t v = 0; v < NV; v++) VSTORE(o + v * VL, VADD(VLOAD(o + v * VL), VLOAD(bp + v * VL)));
                memcpy(zr + r * F, o, (size_t)F * sizeof(float));
            }
        }
        fg_fpstate_leave(fp);
    }
    free(toff);
    free(wp);
    return 1;
}

/* ---- filter gradient ---- */

/* dw[t0 + r, f0 .. f0 + VL) (r < R) = sum over samples and pixels of x[pixel base + toff[r]] dz[pixel, f0 ..] */
static void flt_tile(float *FG_RESTRICT out, const float *FG_RESTRICT xpad, const float *FG_RESTRICT dz,
                     const int64_t *FG_RESTRICT toff, const fg_conv_shape *s, int64_t hp, int64_t wp, int64_t f0) {
    vf acc[FLT_R];
    int64_t o[FLT_R];
    for (int r = 0; r < FLT_R; r++) {
        acc[r] = VZERO();
        o[r] = toff[r];
    }
    const int64_t F = s->f, C = s->c, xsx = s->sw * C;
    const float *end = dz + s->n * s->oh * s->ow * F; /* one past dz */
    for (int64_t n = 0; n < s->n; n++) {
        const float *xn = xpad + n * hp * wp * C;
        for (int64_t oy = 0; oy < s->oh; oy++) {
            const float *xp = xn + (oy * s->sh) * wp * C;
            const float *dp = dz + ((n * s->oh + oy) * s->ow) * F + f0;
            for (int64_t ox = 0; ox < s->ow; ox++, xp += xsx, dp += F) {
                vf d;
                if (dp + VL <= end) {
                    d = VLOAD(dp);
                } else { /* a row read VL wide would run past dz: the last pixels when F % VL != 0 */
                    float tmp[VL] = {0};
                    memcpy(tmp, dp, (size_t)(end - dp) * sizeof(float));
                    d = VLOAD(tmp);
                }
                _Pragma("GCC unroll 32") for (int r = 0; r < FLT_R; r++) acc[r] = VFMA(VSET1(xp[o[r]]), d, acc[r]);
            }
        }
    }
    for (int r = 0; r < FLT_R; r++) VSTORE(out + r * VL, acc[r]);
}

int FG_ISA_FN(fg_conv_tile_flt)(float *dw, const float *dz, const float *x, const fg_conv_shape *s, int nthreads) {
    const int64_t F = s->f, NV = (F + VL - 1) / VL, K = s->kh * s->kw * s->c, P = s->oh * s->ow;
    if (s->groups != 1 || NV > 4) return 0;
    const int64_t tt = (K + FLT_R - 1) / FLT_R, units = tt * NV;
    int nt = fg_threads_for(s->n * P * K * NV * VL, GRAIN, nthreads);
    if (nt > units) nt = (int)units;
    int64_t *toff = (int64_t *)malloc((size_t)(tt * FLT_R) * sizeof(int64_t));
    padded pd;
    if (!toff || pad_input(&pd, x, s, nt) != FG_OK) {
        free(toff);
        return -FG_ERR_NOMEM;
    }
    tap_offsets(toff, s, pd.wp);
    for (int64_t t = K; t < tt * FLT_R; t++) toff[t] = toff[K - 1]; /* a valid read, result dropped */
#if FG_HAVE_OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1)
#endif
    {
        unsigned fp = fg_fpstate_enter();
        float out[FLT_R * VL];
#if FG_HAVE_OPENMP
#pragma omp for schedule(static)
#endif
        for (int64_t u = 0; u < units; u++) {
            const int64_t t0 = (u / NV) * FLT_R, f0 = (u % NV) * VL;
            flt_tile(out, pd.x, dz, toff + t0, s, pd.hp, pd.wp, f0);
            const int64_t nr = K - t0 < FLT_R ? K - t0 : FLT_R, nf = F - f0 < VL ? F - f0 : VL;
            for (int64_t r = 0; r < nr; r++) memcpy(dw + (t0 + r) * F + f0, out + r * VL, (size_t)nf * sizeof(float));
        }
        fg_fpstate_leave(fp);
    }
    free(toff);
    return 1;
}
