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

#include <string.h>

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

/* forward A: rows = output pixels m, columns k = (ky, kx, ci) */
static void pack_fwd_a(const void *vctx, float *dst, int W, int64_t m0, int nv, int64_t k0, int64_t kc) {
    const pack_ctx *cx = (const pack_ctx *)vctx;
    const fg_conv_shape *s = cx->s;
    const int64_t ohw = s->oh * s->ow, cg = cx->cg;
    int64_t ih0[FG_CONV_MAXW], iw0[FG_CONV_MAXW];
    const float *base[FG_CONV_MAXW];
    const float *ptr[FG_CONV_MAXW];
    for (int i = 0; i < nv; i++) {
        const int64_t m = m0 + i, n = m / ohw, r = m % ohw;
        ih0[i] = (r / s->ow) * s->sh - s->pt;
        iw0[i] = (r % s->ow) * s->sw - s->pl;
        base[i] = cx->src + n * s->h * s->w * s->c + cx->c0;
    }
    int64_t t = k0 / cg, cc = k0 % cg;
    int64_t ky = t / s->kw, kx = t % s->kw;
    int64_t k = 0;
    while (k < kc) {
        const int64_t run = cg - cc < kc - k ? cg - cc : kc - k;
        for (int i = 0; i < W; i++) {
            ptr[i] = NULL;
            if (i >= nv) continue;
            const int64_t ih = ih0[i] + ky * s->dh, iw = iw0[i] + kx * s->dw;
            if (ih >= 0 && ih < s->h && iw >= 0 && iw < s->w) ptr[i] = base[i] + (ih * s->w + iw) * s->c + cc;
        }
        for (int64_t j = 0; j < run; j++) {
            float *d = dst + (k + j) * W;
            for (int i = 0; i < W; i++) d[i] = ptr[i] ? ptr[i][j] : 0.0f;
        }
        k += run;
        cc = 0;
        if (++kx == s->kw) {
            kx = 0;
            ky++;
        }
    }
}

/* filter A = P^T: rows r = (ky, kx, ci), columns k = output pixels p */
static void pack_flt_a(const void *vctx, float *dst, int W, int64_t r0, int nv, int64_t p0, int64_t kc) {
    const pack_ctx *cx = (const pack_ctx *)vctx;
    const fg_conv_shape *s = cx->s;
    const int64_t cg = cx->cg;
    int64_t oy_[FG_CONV_MAXW], ox_[FG_CONV_MAXW], ch[FG_CONV_MAXW];
    for (int i = 0; i < nv; i++) {
        const int64_t r = r0 + i, t = r / cg;
        ch[i] = cx->c0 + r % cg;
        oy_[i] = (t / s->kw) * s->dh;
        ox_[i] = (t % s->kw) * s->dw;
    }
    const int64_t ohw = s->oh * s->ow;
    int64_t n = p0 / ohw, oy = (p0 % ohw) / s->ow, ox = p0 % s->ow;
    for (int64_t k = 0; k < kc; k++) {
        const int64_t ihb = oy * s->sh - s->pt, iwb = ox * s->sw - s->pl;
        const float *base = cx->src + n * s->h * s->w * s->c;
        float *d = dst + k * W;
        int i = 0;
        for (; i < nv; i++) {
            const int64_t ih = ihb + oy_[i], iw = iwb + ox_[i];
            d[i] = (ih >= 0 && ih < s->h && iw >= 0 && iw < s->w) ? base[(ih * s->w + iw) * s->c + ch[i]] : 0.0f;
        }
        for (; i < W; i++) d[i] = 0.0f;
        if (++ox == s->ow) {
            ox = 0;
            if (++oy == s->oh) {
                oy = 0;
                n++;
            }
        }
    }
}

/* data A: rows = input pixels q, columns k = (ky, kx, fo); the dz element of
 * the output pixel whose window puts tap (ky, kx) on q, or 0 */
static void pack_dat_a(const void *vctx, float *dst, int W, int64_t q0, int nv, int64_t k0, int64_t kc) {
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

int fg_conv2d_forward(float *y, float *z, const float *x, const float *w, const float *b,
                      const fg_conv_shape *s, int act, int nthreads) {
    if (fg_conv2d_check(s) != FG_OK || !fg_act_valid(act)) return FG_ERR_ARG;
    if (z == y && act != FG_ACT_LINEAR) return FG_ERR_ARG;
    if (s->n == 0) return FG_OK;
    if (!y || !x || !w) return FG_ERR_ARG;
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

int fg_conv2d_backward_data(float *dx, const float *dz, const float *w, const fg_conv_shape *s, int nthreads) {
    if (fg_conv2d_check(s) != FG_OK) return FG_ERR_ARG;
    if (s->n == 0) return FG_OK;
    if (!dx || !dz || !w) return FG_ERR_ARG;
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
