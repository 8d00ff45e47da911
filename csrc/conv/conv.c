/* conv.c — convolution as implicit GEMM (compiled once; the arithmetic is
 * the GEMM driver's, dispatched per ISA through fg_gemm_ex).
 *
 * No im2col matrix is ever built: the "patch matrix" is a virtual GEMM
 * operand whose packing callback gathers patches straight into the GEMM's
 * packed panels (an MR x KC sliver of A, or a KC x NR sliver of B, in the
 * driver's per-thread packing buffer). Per group g (Cg = c/G, Fg = f/G):
 *
 *   forward   Y[p, f]      = P[p, (ky,kx,ci)] . W[(ky,kx,ci), f]
 *             M = n oh ow pixels, K = kh kw Cg, N = Fg; A = P (virtual,
 *             pack_fwd_a), B = the kernel as stored (rows (ky,kx,ci)),
 *             bias + activation fused in the GEMM's epilogue.
 *   filter    dW[(ky,kx,ci), f] = P^T . dZ
 *             M = kh kw Cg, K = n oh ow, N = Fg; A = P^T (virtual,
 *             pack_flt_a), B = dZ as stored.
 *   data      dX[q, ci]    = D[q, (ky,kx,fo)] . Wt[(ky,kx,fo), ci]
 *             M = n h w input pixels, K = kh kw Fg, N = Cg; A = D (virtual,
 *             pack_dat_a: D[q, (ky,kx,fo)] = dz at the output pixel whose
 *             window puts tap (ky,kx) on q, or 0), B = the kernel with its
 *             two last axes swapped (virtual, pack_dat_b). A gather, not a
 *             col2im scatter: every dX element has one owner.
 * A 1x1 stride-1 unpadded ungrouped convolution is a plain GEMM on the
 * stored arrays.
 *
 * Determinism: the GEMM splits M or N between threads, never K, and its K
 * blocks depend on K and the ISA only, so each output element is one FMA
 * chain per K block in k order whatever the thread count.
 */
#include "fg_conv.h"
#include "gemm/fg_gemm.h"
#include "kernels/fg_activation.h"

#include <stdlib.h>
#include <string.h>
#if FG_HAVE_OPENMP
#include <omp.h>
#endif

int fg_conv2d_check(const fg_conv_shape *s) {
    if (!s) return FG_ERR_ARG;
    if (s->n < 0 || s->h < 1 || s->w < 1 || s->c < 1 || s->kh < 1 || s->kw < 1 || s->f < 1) return FG_ERR_ARG;
    if (s->oh < 1 || s->ow < 1 || s->sh < 1 || s->sw < 1 || s->dh < 1 || s->dw < 1) return FG_ERR_ARG;
    if (s->pt < 0 || s->pl < 0 || s->groups < 1) return FG_ERR_ARG;
    if (s->c % s->groups != 0 || s->f % s->groups != 0) return FG_ERR_ARG;
    /* the last window must still overlap the padded input's top-left part:
       oh = (h + pt + pb - keff) / sh + 1 for some pb >= 0 */
    if ((s->oh - 1) * s->sh + (s->kh - 1) * s->dh + 1 < 1) return FG_ERR_ARG;
    return FG_OK;
}

/* ---- packing callbacks (see fg_gemm_pack_fn) ---- */

typedef struct {
    const fg_conv_shape *s;
    const float *src; /* x (forward, filter), dz (data A), w (data B) */
    int64_t cg, c0;   /* channels of the group and the first one (input for fwd/flt, output for data A) */
    int64_t fg, f0;   /* data B: output channels of the group and the first one */
} pack_ctx;

#define FG_CONV_MAXW 64 /* >= every MR / NR */

/* Valid positions of a strided run: [*lo, *hi) within [0, seg) of
 * i -> p0 + i * st lying in [0, n). */
static inline void run_range(int64_t p0, int64_t st, int64_t n, int64_t seg, int64_t *lo, int64_t *hi) {
    int64_t a = p0 >= 0 ? 0 : (-p0 + st - 1) / st;
    int64_t b = p0 > n - 1 ? 0 : (n - 1 - p0) / st + 1;
    if (a > seg) a = seg;
    if (b > seg) b = seg;
    if (b < a) b = a;
    *lo = a;
    *hi = b;
}

/* d[i * ds] for i < seg: 0 outside [lo, hi), src[i * ss] inside */
static inline void put_run(float *FG_RESTRICT d, int64_t ds, const float *FG_RESTRICT src, int64_t ss, int64_t lo,
                           int64_t hi, int64_t seg) {
    int64_t i = 0;
    for (; i < lo; i++) d[i * ds] = 0.0f;
    if (ss == 1 && ds == 1)
        for (; i < hi; i++) d[i] = src[i];
    else
        for (; i < hi; i++) d[i * ds] = src[i * ss];
    for (; i < seg; i++) d[i * ds] = 0.0f;
}

static void zero_rows(float *dst, int W, int nv, int64_t kc) {
    if (nv >= W) return;
    for (int64_t k = 0; k < kc; k++)
        for (int i = nv; i < W; i++) dst[k * W + i] = 0.0f;
}

/* forward A: rows = output pixels m, columns k = (ky, kx, ci). The W rows
 * are cut into runs of consecutive output pixels of one output row; in a
 * run, one tap (ky, kx, ci) reads the input at a constant stride (c sw), so
 * each packed k-row is a strided copy between two zero-filled ends. */
static void pack_fwd_a(const void *vctx, float *dst, int W, int64_t m0, int nv, int64_t k0, int64_t kc) {
    const pack_ctx *cx = (const pack_ctx *)vctx;
    const fg_conv_shape *s = cx->s;
    const int64_t ohw = s->oh * s->ow, cg = cx->cg, C = s->c, xs = C * s->sw;
    zero_rows(dst, W, nv, kc);
    for (int64_t i0 = 0; i0 < nv;) {
        const int64_t m = m0 + i0, n = m / ohw, r = m % ohw, oy = r / s->ow, ox0 = r % s->ow;
        const int64_t seg = nv - i0 < s->ow - ox0 ? nv - i0 : s->ow - ox0;
        const int64_t ihb = oy * s->sh - s->pt, iwb = ox0 * s->sw - s->pl;
        const float *xn = cx->src + n * s->h * s->w * C + cx->c0;
        int64_t t = k0 / cg, cc = k0 % cg;
        int64_t ky = t / s->kw, kx = t % s->kw;
        for (int64_t k = 0; k < kc;) {
            const int64_t run = cg - cc < kc - k ? cg - cc : kc - k;
            const int64_t ih = ihb + ky * s->dh, iw0 = iwb + kx * s->dw;
            int64_t lo = 0, hi = 0;
            if (ih >= 0 && ih < s->h) run_range(iw0, s->sw, s->w, seg, &lo, &hi);
            for (int64_t j = 0; j < run; j++) {
                const float *src = hi > lo ? xn + (ih * s->w + iw0) * C + cc + j : NULL;
                put_run(dst + (k + j) * W + i0, 1, src, xs, lo, hi, seg);
            }
            k += run;
            cc = 0;
            if (++kx == s->kw) {
                kx = 0;
                ky++;
            }
        }
        i0 += seg;
    }
}

/* filter A = P^T: rows r = (ky, kx, ci), columns k = output pixels p. The kc
 * pixels are cut into runs of one output row; for one row r a run reads the
 * input at a constant stride (c sw) and writes the packed column r at
 * stride W. */
static void pack_flt_a(const void *vctx, float *dst, int W, int64_t r0, int nv, int64_t p0, int64_t kc) {
    const pack_ctx *cx = (const pack_ctx *)vctx;
    const fg_conv_shape *s = cx->s;
    const int64_t cg = cx->cg, C = s->c, xs = C * s->sw, ohw = s->oh * s->ow;
    int64_t offy[FG_CONV_MAXW], offx[FG_CONV_MAXW], ch[FG_CONV_MAXW];
    for (int i = 0; i < nv; i++) {
        const int64_t r = r0 + i, t = r / cg;
        ch[i] = cx->c0 + r % cg;
        offy[i] = (t / s->kw) * s->dh;
        offx[i] = (t % s->kw) * s->dw;
    }
    zero_rows(dst, W, nv, kc);
    for (int64_t k = 0; k < kc;) {
        const int64_t p = p0 + k, n = p / ohw, rr = p % ohw, oy = rr / s->ow, ox0 = rr % s->ow;
        const int64_t seg = kc - k < s->ow - ox0 ? kc - k : s->ow - ox0;
        const int64_t ihb = oy * s->sh - s->pt, iwb = ox0 * s->sw - s->pl;
        const float *xn = cx->src + n * s->h * s->w * C;
        for (int i = 0; i < nv; i++) {
            const int64_t ih = ihb + offy[i], iw0 = iwb + offx[i];
            int64_t lo = 0, hi = 0;
            if (ih >= 0 && ih < s->h) run_range(iw0, s->sw, s->w, seg, &lo, &hi);
            const float *src = hi > lo ? xn + (ih * s->w + iw0) * C + ch[i] : NULL;
            put_run(dst + k * W + i, W, src, xs, lo, hi, seg);
        }
        k += seg;
    }
}

/* data A, general strides: rows = input pixels q, columns k = (ky, kx, fo);
 * the dz element of the output pixel whose window puts tap (ky, kx) on q,
 * or 0 */
static void pack_dat_a_strided(const void *vctx, float *dst, int W, int64_t q0, int nv, int64_t k0, int64_t kc) {
    const pack_ctx *cx = (const pack_ctx *)vctx;
    const fg_conv_shape *s = cx->s;
    const int64_t hw = s->h * s->w, fgc = cx->cg; /* cg holds Fg here */
    int64_t iy[FG_CONV_MAXW], ix[FG_CONV_MAXW];
    const float *base[FG_CONV_MAXW];
    const float *ptr[FG_CONV_MAXW];
    for (int i = 0; i < nv; i++) {
        const int64_t q = q0 + i, n = q / hw, r = q % hw;
        iy[i] = r / s->w + s->pt;
        ix[i] = r % s->w + s->pl;
        base[i] = cx->src + n * s->oh * s->ow * s->f + cx->c0;
    }
    int64_t t = k0 / fgc, ff = k0 % fgc;
    int64_t ky = t / s->kw, kx = t % s->kw;
    int64_t k = 0;
    while (k < kc) {
        const int64_t run = fgc - ff < kc - k ? fgc - ff : kc - k;
        for (int i = 0; i < W; i++) {
            ptr[i] = NULL;
            if (i >= nv) continue;
            const int64_t ty = iy[i] - ky * s->dh, tx = ix[i] - kx * s->dw;
            if (ty < 0 || tx < 0 || ty % s->sh != 0 || tx % s->sw != 0) continue;
            const int64_t oy = ty / s->sh, ox = tx / s->sw;
            if (oy < s->oh && ox < s->ow) ptr[i] = base[i] + (oy * s->ow + ox) * s->f + ff;
        }
        for (int64_t j = 0; j < run; j++) {
            float *d = dst + (k + j) * W;
            for (int i = 0; i < W; i++) d[i] = ptr[i] ? ptr[i][j] : 0.0f;
        }
        k += run;
        ff = 0;
        if (++kx == s->kw) {
            kx = 0;
            ky++;
        }
    }
}

/* data A: with unit strides a run of input pixels of one input row meets,
 * for one tap, a run of consecutive output pixels: a strided copy of dz
 * (stride f) between two zero-filled ends, as in pack_fwd_a. */
static void pack_dat_a(const void *vctx, float *dst, int W, int64_t q0, int nv, int64_t k0, int64_t kc) {
    const pack_ctx *cx = (const pack_ctx *)vctx;
    const fg_conv_shape *s = cx->s;
    if (s->sh != 1 || s->sw != 1) {
        pack_dat_a_strided(vctx, dst, W, q0, nv, k0, kc);
        return;
    }
    const int64_t hw = s->h * s->w, fgc = cx->cg, F = s->f;
    zero_rows(dst, W, nv, kc);
    for (int64_t i0 = 0; i0 < nv;) {
        const int64_t q = q0 + i0, n = q / hw, r = q % hw, iy = r / s->w, ix0 = r % s->w;
        const int64_t seg = nv - i0 < s->w - ix0 ? nv - i0 : s->w - ix0;
        const float *dzn = cx->src + n * s->oh * s->ow * F + cx->c0;
        int64_t t = k0 / fgc, ff = k0 % fgc;
        int64_t ky = t / s->kw, kx = t % s->kw;
        for (int64_t k = 0; k < kc;) {
            const int64_t run = fgc - ff < kc - k ? fgc - ff : kc - k;
            const int64_t oy = iy + s->pt - ky * s->dh, ox0 = ix0 + s->pl - kx * s->dw;
            int64_t lo = 0, hi = 0;
            if (oy >= 0 && oy < s->oh) run_range(ox0, 1, s->ow, seg, &lo, &hi);
            for (int64_t j = 0; j < run; j++) {
                const float *src = hi > lo ? dzn + (oy * s->ow + ox0) * F + ff + j : NULL;
                put_run(dst + (k + j) * W + i0, 1, src, F, lo, hi, seg);
            }
            k += run;
            ff = 0;
            if (++kx == s->kw) {
                kx = 0;
                ky++;
            }
        }
        i0 += seg;
    }
}

/* data B: op(B)[(ky, kx, fo), ci] = w[ky, kx, ci, f0 + fo]; columns ci */
static void pack_dat_b(const void *vctx, float *dst, int W, int64_t j0, int nv, int64_t k0, int64_t kc) {
    const pack_ctx *cx = (const pack_ctx *)vctx;
    const fg_conv_shape *s = cx->s;
    const int64_t cg = cx->cg, fgc = cx->fg;
    int64_t t = k0 / fgc, ff = k0 % fgc;
    for (int64_t k = 0; k < kc; k++) {
        const float *src = cx->src + (t * cg + j0) * s->f + cx->f0 + ff;
        float *d = dst + k * W;
        int j = 0;
        for (; j < nv; j++) d[j] = src[j * s->f];
        for (; j < W; j++) d[j] = 0.0f;
        if (++ff == fgc) {
            ff = 0;
            t++;
        }
    }
}

static int is_pointwise(const fg_conv_shape *s) {
    return s->kh == 1 && s->kw == 1 && s->sh == 1 && s->sw == 1 && s->pt == 0 && s->pl == 0 && s->groups == 1 &&
           s->oh == s->h && s->ow == s->w;
}

/* ---- register-tiled direct kernels (conv_tile.c, per ISA) ----
 * forward: every ungrouped, non-pointwise convolution whose kernel (padded to
 * whole vectors) stays small enough to stream from L2 per tile of pixels;
 * filter gradient: few input channels (c < FG_TILE_MAX_C: K = kh kw c is
 * short, the GEMM's packing would dominate; with more channels the GEMM,
 * which blocks its pixel sum, wins); data gradient with unit strides: the
 * forward kernel run on dz with the kernel rotated by 180 degrees and its
 * channel axes swapped (a transposed convolution is a convolution).
 * The choice depends on the shape and ISA only; FASTGRAD_CONV_DIRECT=0 keeps
 * the implicit GEMM everywhere. The kernels return 1 when they ran, 0 when
 * the shape is not theirs (too many output channels for their registers),
 * -status on failure. */
#define FG_TILE_MAX_C 16
#define FG_TILE_MAX_KF (1 << 16) /* kh kw c (f rounded up to 64) floats of kernel */

FG_DECLARE_ISA(int, fg_conv_tile_fwd, (float *, float *, const float *, const float *, const float *,
                                       const fg_conv_shape *, int, int))
FG_DECLARE_ISA(int, fg_conv_tile_flt, (float *, const float *, const float *, const fg_conv_shape *, int))

/* ---- Winograd F(2x2, 3x3) (conv_wino.c, per ISA) ----
 * 3x3 kernels with unit strides, no dilation, no groups, and enough channels
 * on both sides that the 16 small GEMMs per block of tiles beat the direct
 * kernels (few channels: the transforms cost as much as the products saved;
 * the RGB first layer stays direct). Used by the forward and by the
 * unit-stride data gradient (a forward over dz with the rotated, transposed
 * kernel). */
#define FG_WINO_MIN_C 16
#define FG_WINO_MIN_F 16
#define FG_WINO_MIN_TILES 16 /* 2x2 output tiles in the batch: below, the kernel transform costs more than it saves */

FG_DECLARE_ISA(int, fg_conv_wino_fwd, (float *, float *, const float *, const float *, const float *,
                                       const fg_conv_shape *, int, int))

static int direct_enabled(void);

/* FASTGRAD_CONV_WINOGRAD=0 turns Winograd off (so does FASTGRAD_CONV_DIRECT=0: the implicit GEMM
 * everywhere); =2 runs it on every 3x3 stride-1 shape whatever its size (for tests) */
static int wino_mode(void) {
    const char *e = getenv("FASTGRAD_CONV_WINOGRAD");
    if (!direct_enabled() || (e && e[0] == '0' && e[1] == 0)) return 0;
    return e && e[0] == '2' && e[1] == 0 ? 2 : 1;
}

static int wino_ok(const fg_conv_shape *s) {
    if (s->groups != 1 || s->kh != 3 || s->kw != 3 || s->sh != 1 || s->sw != 1 || s->dh != 1 || s->dw != 1) return 0;
    const int mode = wino_mode();
    if (mode != 1) return mode == 2;
    if (s->c < FG_WINO_MIN_C || s->f < FG_WINO_MIN_F) return 0;
    return s->n * ((s->oh + 1) / 2) * ((s->ow + 1) / 2) >= FG_WINO_MIN_TILES;
}

static int direct_enabled(void) {
    const char *e = getenv("FASTGRAD_CONV_DIRECT");
    return !(e && e[0] == '0' && e[1] == 0);
}

static int direct_fwd_ok(const fg_conv_shape *s) {
    if (s->groups != 1 || is_pointwise(s)) return 0;
    if (s->kh * s->kw * s->c * ((s->f + 63) / 64 * 64) > FG_TILE_MAX_KF) return 0;
    return direct_enabled();
}

/* the data gradient as a forward convolution: stride 1, and the rotated kernel's padding
 * (kh - 1) dh - pt must not be negative */
static int transposed_shape(const fg_conv_shape *s, fg_conv_shape *t) {
    if (s->groups != 1 || s->sh != 1 || s->sw != 1 || is_pointwise(s)) return 0;
    const int64_t pt = (s->kh - 1) * s->dh - s->pt, pl = (s->kw - 1) * s->dw - s->pl;
    if (pt < 0 || pl < 0) return 0;
    *t = (fg_conv_shape){.n = s->n, .h = s->oh, .w = s->ow, .c = s->f, .kh = s->kh, .kw = s->kw, .f = s->c,
                         .oh = s->h, .ow = s->w, .sh = 1, .sw = 1, .dh = s->dh, .dw = s->dw, .pt = pt, .pl = pl,
                         .groups = 1};
    return 1;
}

/* 2 when Winograd runs the data gradient, 1 when conv_tile does, 0 otherwise (t = the forward shape) */
static int direct_data_shape(const fg_conv_shape *s, fg_conv_shape *t) {
    if (!transposed_shape(s, t)) return 0;
    if (wino_ok(t)) return 2;
    if (s->c < FG_TILE_MAX_C) return 0;
    return direct_fwd_ok(t);
}

static int backward_data_direct(float *dx, const float *dz, const float *w, const fg_conv_shape *s,
                                const fg_conv_shape *t, int wino, int nthreads) {
    const int64_t KK = s->kh * s->kw, C = s->c, F = s->f;
    float *wt = (float *)malloc((size_t)(KK * C * F) * sizeof(float));
    if (!wt) return -FG_ERR_NOMEM;
    /* wt[ky', kx', f, ci] = w[kh-1-ky', kw-1-kx', ci, f], in 16 x 16 blocks (cache lines on both sides) */
    for (int64_t k = 0; k < KK; k++) {
        const float *src = w + (KK - 1 - k) * C * F;
        float *d = wt + k * F * C;
        for (int64_t c0 = 0; c0 < C; c0 += 16)
            for (int64_t f0 = 0; f0 < F; f0 += 16) {
                const int64_t c1 = c0 + 16 < C ? c0 + 16 : C, f1 = f0 + 16 < F ? f0 + 16 : F;
                for (int64_t f = f0; f < f1; f++)
                    for (int64_t ci = c0; ci < c1; ci++) d[f * C + ci] = src[ci * F + f];
            }
    }
    int r = wino ? FG_DISPATCH(fg_conv_wino_fwd)(dx, NULL, dz, wt, NULL, t, 0, nthreads)
                 : FG_DISPATCH(fg_conv_tile_fwd)(dx, NULL, dz, wt, NULL, t, 0, nthreads);
    free(wt);
    return r;
}

int fg_conv2d_forward(float *y, float *z, const float *x, const float *w, const float *b,
                      const fg_conv_shape *s, int act, int nthreads) {
    if (fg_conv2d_check(s) != FG_OK || !fg_act_valid(act)) return FG_ERR_ARG;
    if (z == y && act != FG_ACT_LINEAR) return FG_ERR_ARG;
    if (s->n == 0) return FG_OK;
    if (!y || !x || !w) return FG_ERR_ARG;
    const int wino = wino_ok(s);
    if (wino || direct_fwd_ok(s)) {
        /* ReLU is fused in the tiled kernel's store (Winograd: its output transform); other
         * activations take an element-wise pass */
        const int relu = act == FG_ACT_RELU;
        float *zz = relu ? y : z ? z : y;
        int r = wino ? FG_DISPATCH(fg_conv_wino_fwd)(zz, relu ? z : NULL, x, w, b, s, relu, nthreads)
                     : FG_DISPATCH(fg_conv_tile_fwd)(zz, relu ? z : NULL, x, w, b, s, relu, nthreads);
        if (r < 0) return -r;
        if (r == 1) {
            if (!relu && (act != FG_ACT_LINEAR || zz != y))
                return fg_act_forward(y, zz, s->n * s->oh * s->ow * s->f, act, nthreads);
            return FG_OK;
        }
    }
    const int64_t G = s->groups, cg = s->c / G, fg = s->f / G;
    const int64_t M = s->n * s->oh * s->ow, K = s->kh * s->kw * cg;
    for (int64_t g = 0; g < G; g++) {
        pack_ctx cx = {s, x, cg, g * cg, fg, g * fg};
        fg_gemm_operand A = {x, s->c, 0, NULL, NULL};
        if (!is_pointwise(s)) {
            A.pack = pack_fwd_a;
            A.ctx = &cx;
        }
        fg_gemm_operand B = {w + g * fg, s->f, 0, NULL, NULL};
        int st = fg_gemm_ex(y + g * fg, s->f, z ? z + g * fg : NULL, s->f, &A, &B, b ? b + g * fg : NULL, M, fg, K,
                            1.0f, 0.0f, act, nthreads);
        if (st != FG_OK) return st;
    }
    return FG_OK;
}

/* ---- data gradient with few input channels: GEMM + col2im per sample ----
 * With Cg input channels per group the implicit GEMM of the data gradient
 * has N = Cg columns: below a vector tile most lanes idle. Then each sample
 * runs D = dz_n . W^T (rows oh ow, columns (ky, kx, ci): a wide GEMM) into a
 * per-thread buffer of one sample's patches, and adds D back onto dx_n tap
 * by tap, pixels in order. Samples are split between threads (one owner
 * each, a fixed order inside), so the bits do not depend on the thread count. */
#define FG_COL2IM_MAX_CG 16

static _Thread_local float *t_col;
static _Thread_local size_t t_col_len;

static float *col_buffer(size_t floats) {
    if (t_col_len < floats) {
        free(t_col);
        t_col = NULL;
        t_col_len = 0;
        if (posix_memalign((void **)&t_col, 64, floats * sizeof(float)) != 0) {
            t_col = NULL;
            return NULL;
        }
        t_col_len = floats;
    }
    return t_col;
}

static int col2im_sample(float *dxn, const float *dzn, const float *w, const fg_conv_shape *s) {
    const int64_t G = s->groups, cg = s->c / G, fg = s->f / G, KK = s->kh * s->kw * cg, P = s->oh * s->ow;
    float *col = col_buffer((size_t)(P * KK));
    if (!col) return FG_ERR_NOMEM;
    memset(dxn, 0, (size_t)(s->h * s->w * s->c) * sizeof(float));
    for (int64_t g = 0; g < G; g++) {
        fg_gemm_operand A = {dzn + g * fg, s->f, 0, NULL, NULL};
        fg_gemm_operand B = {w + g * fg, s->f, 1, NULL, NULL}; /* (KK x Fg), ld f: op(B) = its transpose */
        int st = fg_gemm_ex(col, KK, NULL, 0, &A, &B, NULL, P, KK, fg, 1.0f, 0.0f, FG_ACT_LINEAR, 1);
        if (st != FG_OK) return st;
        for (int64_t oy = 0; oy < s->oh; oy++)
            for (int64_t ox = 0; ox < s->ow; ox++) {
                const float *cp = col + (oy * s->ow + ox) * KK;
                for (int64_t ky = 0; ky < s->kh; ky++) {
                    const int64_t ih = oy * s->sh - s->pt + ky * s->dh;
                    if (ih < 0 || ih >= s->h) continue;
                    for (int64_t kx = 0; kx < s->kw; kx++) {
                        const int64_t iw = ox * s->sw - s->pl + kx * s->dw;
                        if (iw < 0 || iw >= s->w) continue;
                        float *d = dxn + (ih * s->w + iw) * s->c + g * cg;
                        const float *c = cp + (ky * s->kw + kx) * cg;
                        for (int64_t ci = 0; ci < cg; ci++) d[ci] = d[ci] + c[ci];
                    }
                }
            }
    }
    return FG_OK;
}

static int backward_data_col2im(float *dx, const float *dz, const float *w, const fg_conv_shape *s, int nthreads) {
    const int64_t xs = s->h * s->w * s->c, ys = s->oh * s->ow * s->f;
    int nt = fg_threads_for(s->n * ys * s->kh * s->kw * (s->c / s->groups), 1 << 19, nthreads);
    if (nt > s->n) nt = (int)s->n;
    int status = FG_OK;
#if FG_HAVE_OPENMP
    if (nt > 1) {
#pragma omp parallel num_threads(nt)
        {
            unsigned fp = fg_fpstate_enter();
            int mine = FG_OK;
#pragma omp for schedule(static)
            for (int64_t n = 0; n < s->n; n++)
                if (mine == FG_OK) mine = col2im_sample(dx + n * xs, dz + n * ys, w, s);
            fg_fpstate_leave(fp);
            if (mine != FG_OK) {
#pragma omp critical(fg_conv_status)
                status = mine;
            }
        }
        return status;
    }
#endif
    unsigned fp = fg_fpstate_enter();
    for (int64_t n = 0; n < s->n && status == FG_OK; n++) status = col2im_sample(dx + n * xs, dz + n * ys, w, s);
    fg_fpstate_leave(fp);
    return status;
}

int fg_conv2d_backward_data(float *dx, const float *dz, const float *w, const fg_conv_shape *s, int nthreads) {
    if (fg_conv2d_check(s) != FG_OK) return FG_ERR_ARG;
    if (s->n == 0) return FG_OK;
    if (!dx || !dz || !w) return FG_ERR_ARG;
    fg_conv_shape t;
    const int route = direct_data_shape(s, &t);
    if (route) {
        int r = backward_data_direct(dx, dz, w, s, &t, route == 2, nthreads);
        if (r < 0) return -r;
        if (r == 1) return FG_OK;
    }
    if (s->c / s->groups < FG_COL2IM_MAX_CG && !is_pointwise(s)) return backward_data_col2im(dx, dz, w, s, nthreads);
    const int64_t G = s->groups, cg = s->c / G, fg = s->f / G;
    const int64_t M = s->n * s->h * s->w, K = s->kh * s->kw * fg;
    for (int64_t g = 0; g < G; g++) {
        pack_ctx ca = {s, dz, fg, g * fg, 0, 0};          /* A: cg/c0 hold Fg / f0 */
        pack_ctx cb = {s, w, cg, 0, fg, g * fg};
        fg_gemm_operand A = {dz, s->f, 0, NULL, NULL}, B = {w, s->f, 1, NULL, NULL};
        if (!is_pointwise(s)) {
            A.pack = pack_dat_a;
            A.ctx = &ca;
            B.pack = pack_dat_b;
            B.ctx = &cb;
        }
        int st = fg_gemm_ex(dx + g * cg, s->c, NULL, 0, &A, &B, NULL, M, cg, K, 1.0f, 0.0f, FG_ACT_LINEAR, nthreads);
        if (st != FG_OK) return st;
    }
    return FG_OK;
}

int fg_conv2d_backward_filter(float *dw, const float *dz, const float *x, const fg_conv_shape *s, int nthreads) {
    if (fg_conv2d_check(s) != FG_OK) return FG_ERR_ARG;
    if (!dw) return FG_ERR_ARG;
    const int64_t G = s->groups, cg = s->c / G, fg = s->f / G;
    const int64_t M = s->kh * s->kw * cg, K = s->n * s->oh * s->ow;
    if (K == 0) {
        memset(dw, 0, (size_t)(M * s->f) * sizeof(float));
        return FG_OK;
    }
    if (!dz || !x) return FG_ERR_ARG;
    if (direct_fwd_ok(s)) {
        int r = FG_DISPATCH(fg_conv_tile_flt)(dw, dz, x, s, nthreads);
        if (r < 0) return -r;
        if (r == 1) return FG_OK;
    }
    for (int64_t g = 0; g < G; g++) {
        pack_ctx cx = {s, x, cg, g * cg, fg, g * fg};
        fg_gemm_operand A = {x, s->c, 1, NULL, NULL};
        if (!is_pointwise(s)) {
            A.pack = pack_flt_a;
            A.ctx = &cx;
        }
        fg_gemm_operand B = {dz + g * fg, s->f, 0, NULL, NULL};
        int st = fg_gemm_ex(dw + g * fg, s->f, NULL, 0, &A, &B, NULL, M, fg, K, 1.0f, 0.0f, FG_ACT_LINEAR, nthreads);
        if (st != FG_OK) return st;
    }
    return FG_OK;
}

/* ---- direct kernels: per-ISA copies in conv_direct.c ---- */

FG_DECLARE_ISA(void, fg_dw_fwd, (float *, const float *, const float *, const float *, const fg_conv_shape *, int))
FG_DECLARE_ISA(void, fg_dw_bwd_data, (float *, const float *, const float *, const fg_conv_shape *, int))
FG_DECLARE_ISA(void, fg_dw_bwd_filter, (float *, const float *, const float *, const fg_conv_shape *, int))
FG_DECLARE_ISA(void, fg_pool_fwd, (float *, const float *, const fg_conv_shape *, int, int))
FG_DECLARE_ISA(void, fg_pool_bwd, (float *, const float *, const float *, const float *, const fg_conv_shape *, int,
                                   int))
FG_DECLARE_ISA(void, fg_gpool_fwd, (float *, const float *, int64_t, int64_t, int64_t, int, int))
FG_DECLARE_ISA(void, fg_gpool_bwd, (float *, const float *, const float *, const float *, int64_t, int64_t, int64_t,
                                    int, int))

static int dw_ok(const fg_conv_shape *s) {
    return fg_conv2d_check(s) == FG_OK && s->groups == s->c && s->f % s->c == 0;
}

int fg_depthwise2d_forward(float *y, float *z, const float *x, const float *w, const float *b,
                           const fg_conv_shape *s, int act, int nthreads) {
    if (!dw_ok(s) || !fg_act_valid(act)) return FG_ERR_ARG;
    if (z == y && act != FG_ACT_LINEAR) return FG_ERR_ARG;
    if (s->n == 0) return FG_OK;
    if (!y || !x || !w) return FG_ERR_ARG;
    /* z (or y when no z is kept) = conv + b, then y = act(z) by the kernels family */
    float *zz = z ? z : y;
    FG_DISPATCH(fg_dw_fwd)(zz, x, w, b, s, nthreads);
    if (act != FG_ACT_LINEAR || zz != y) {
        int st = fg_act_forward(y, zz, s->n * s->oh * s->ow * s->f, act, nthreads);
        if (st != FG_OK) return st;
    }
    return FG_OK;
}

int fg_depthwise2d_backward_data(float *dx, const float *dz, const float *w, const fg_conv_shape *s, int nthreads) {
    if (!dw_ok(s)) return FG_ERR_ARG;
    if (s->n == 0) return FG_OK;
    if (!dx || !dz || !w) return FG_ERR_ARG;
    FG_DISPATCH(fg_dw_bwd_data)(dx, dz, w, s, nthreads);
    return FG_OK;
}

int fg_depthwise2d_backward_filter(float *dw, const float *dz, const float *x, const fg_conv_shape *s,
                                   int nthreads) {
    if (!dw_ok(s) || !dw) return FG_ERR_ARG;
    if (s->n > 0 && (!dz || !x)) return FG_ERR_ARG;
    FG_DISPATCH(fg_dw_bwd_filter)(dw, dz, x, s, nthreads);
    return FG_OK;
}

/* pooling windows must overlap the input (the average divides by a count >= 1) */
static int pool_ok(const fg_conv_shape *s) {
    if (fg_conv2d_check(s) != FG_OK || s->f != s->c || s->dh != 1 || s->dw != 1) return 0;
    if (s->pt >= s->kh || s->pl >= s->kw) return 0;
    if ((s->oh - 1) * s->sh - s->pt >= s->h || (s->ow - 1) * s->sw - s->pl >= s->w) return 0;
    return 1;
}

int fg_maxpool2d_forward(float *y, const float *x, const fg_conv_shape *s, int nthreads) {
    if (!pool_ok(s)) return FG_ERR_ARG;
    if (s->n == 0) return FG_OK;
    if (!y || !x) return FG_ERR_ARG;
    FG_DISPATCH(fg_pool_fwd)(y, x, s, 1, nthreads);
    return FG_OK;
}

int fg_avgpool2d_forward(float *y, const float *x, const fg_conv_shape *s, int nthreads) {
    if (!pool_ok(s)) return FG_ERR_ARG;
    if (s->n == 0) return FG_OK;
    if (!y || !x) return FG_ERR_ARG;
    FG_DISPATCH(fg_pool_fwd)(y, x, s, 0, nthreads);
    return FG_OK;
}

int fg_maxpool2d_backward(float *dx, const float *dy, const float *x, const float *y, const fg_conv_shape *s,
                          int nthreads) {
    if (!pool_ok(s)) return FG_ERR_ARG;
    if (s->n == 0) return FG_OK;
    if (!dx || !dy || !x || !y) return FG_ERR_ARG;
    FG_DISPATCH(fg_pool_bwd)(dx, dy, x, y, s, 1, nthreads);
    return FG_OK;
}

int fg_avgpool2d_backward(float *dx, const float *dy, const fg_conv_shape *s, int nthreads) {
    if (!pool_ok(s)) return FG_ERR_ARG;
    if (s->n == 0) return FG_OK;
    if (!dx || !dy) return FG_ERR_ARG;
    FG_DISPATCH(fg_pool_bwd)(dx, dy, NULL, NULL, s, 0, nthreads);
    return FG_OK;
}

static int gpool_ok(int64_t n, int64_t l, int64_t c) { return n >= 0 && l >= 1 && c >= 1; }

int fg_global_avgpool_forward(float *y, const float *x, int64_t n, int64_t l, int64_t c, int nthreads) {
    if (!gpool_ok(n, l, c) || (n > 0 && (!y || !x))) return FG_ERR_ARG;
    FG_DISPATCH(fg_gpool_fwd)(y, x, n, l, c, 0, nthreads);
    return FG_OK;
}
int fg_global_maxpool_forward(float *y, const float *x, int64_t n, int64_t l, int64_t c, int nthreads) {
    if (!gpool_ok(n, l, c) || (n > 0 && (!y || !x))) return FG_ERR_ARG;
    FG_DISPATCH(fg_gpool_fwd)(y, x, n, l, c, 1, nthreads);
    return FG_OK;
}
int fg_global_avgpool_backward(float *dx, const float *dy, int64_t n, int64_t l, int64_t c, int nthreads) {
    if (!gpool_ok(n, l, c) || (n > 0 && (!dx || !dy))) return FG_ERR_ARG;
    FG_DISPATCH(fg_gpool_bwd)(dx, dy, NULL, NULL, n, l, c, 0, nthreads);
    return FG_OK;
}
int fg_global_maxpool_backward(float *dx, const float *dy, const float *x, const float *y, int64_t n, int64_t l,
                               int64_t c, int nthreads) {
    if (!gpool_ok(n, l, c) || (n > 0 && (!dx || !dy || !x || !y))) return FG_ERR_ARG;
    FG_DISPATCH(fg_gpool_bwd)(dx, dy, x, y, n, l, c, 1, nthreads);
    return FG_OK;
}
