/* conv_wino.c — Winograd F(2x2, 3x3) convolution for 3x3, stride-1,
 * undilated, ungrouped layers; compiled once per instruction set like
 * conv_tile.c (explicit vector FMAs on avx2 / avx512, multiply-then-add on
 * the SSE2 baseline path, scalars elsewhere). Exported as FG_ISA_FN(...) and
 * dispatched by conv.c (routing: docs/conv_kernels.md) for the forward
 * (bias and ReLU fused in the output transform) and, through the forward on
 * dz with the rotated, transposed kernel, the unit-stride data gradient.
 *
 * Arithmetic: each 2x2 output tile reads a 4x4 input tile d (rows
 * 2 ty - pt + i, columns 2 tx - pl + j, zero outside the input) and
 *   y = A^T [ sum_c (G g_cf G^T) .* (B^T d_c B) ] A      (.* per position)
 * with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],
 *      G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1],
 *      A^T = [1 1 1 0; 0 1 -1 -1]:
 * 16 multiplications per tile and channel pair instead of 36. Only
 * coefficients 0, +-1, +-1/2 appear, so the float32 error stays that of the
 * direct sum (measured in tests/test_conv_winograd.py); F(4x4, 3x3) would
 * multiply it by about ten and is not used.
 *
 * Layout and data flow (no full-size transformed array):
 *   U (16, C, FP)  the kernel transform, per call; FP = F rounded up to a
 *                  whole vector, zero columns past F.
 *   tiles          numbered (n, ty, tx) over the batch; each thread takes an
 *                  equal run of them and cuts it into blocks of at most T
 *                  tiles (T a multiple of the register tiles, sized so V and
 *                  M stay in a 1 MB L2).
 *   per block      V (16, T, C) = the input transform of its tiles (vectors
 *                  along C); for each of the 16 positions the small GEMM
 *                  M[pos] (T x FP) = V[pos] (T x C) . U[pos] (C x FP) with a
 *                  register tile of R tiles x NV vectors of F (per channel:
 *                  NV vector loads of U, R broadcasts of V, R NV FMAs —
 *                  conv_tile.c's forward micro-kernel shape); then the
 *                  output transform (+ bias, ReLU) straight into y (z).
 * V and M live in grow-only buffers of each thread, U in one of the
 * calling thread.
 *
 * Threads: the kernel transform splits channels, the tiles are split in
 * equal runs (one-image predict: 256, 49, 36 tiles -> 128 / 24-25 / 18 each). Every output element comes from one tile computed by one
 * thread: its product sums run over c in order, one FMA chain each,
 * whatever the block size, register tile or thread count; the transforms
 * are fixed sequences of adds. So the bits are identical for any thread
 * count (tested with 1, 2, 3). Across ISAs they differ (FMA vs
 * multiply-add), as for the other kernels.
 *
 * Returns 1 when it ran, 0 when the shape is not its (nothing written),
 * -FG_ERR_NOMEM.
 */
#include "fg_conv.h"

#include <stdlib.h>
#include <string.h>
#if FG_HAVE_OPENMP
#include <omp.h>
#endif
#include "conv_vec.h"

/* register tiles: R tiles x NV vectors, NV <= NVMAX; all R divide RL */
#if FG_VEC_REGS >= 32
#define NVMAX 4
static const int64_t wg_rows[5] = {0, 24, 12, 8, 6};
#elif FG_VEC_REGS >= 16
#define NVMAX 2
static const int64_t wg_rows[5] = {0, 12, 6, 0, 0};
#else
#define NVMAX 2
static const int64_t wg_rows[5] = {0, 4, 2, 0, 0};
#endif

#define GRAIN (1 << 17)          /* multiply-adds per thread below which one thread runs */
#define BLOCK_BYTES (512 * 1024) /* V + M of one block */
#define MAX_T 512

static int64_t gcd64(int64_t a, int64_t b) {
    while (b) {
        const int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* grow-only buffers of the calling thread */
typedef struct {
    float *p;
    size_t n;
} grow_buf;
static _Thread_local grow_buf t_blk; /* a thread's V and M */
static _Thread_local grow_buf t_ker; /* the caller's U and zero row */

static float *grow(grow_buf *b, size_t floats) {
    if (b->n < floats) {
        free(b->p);
        b->p = NULL;
        b->n = 0;
        if (posix_memalign((void **)&b->p, 64, floats * sizeof(float)) != 0) {
            b->p = NULL;
            return NULL;
        }
        b->n = floats;
    }
    return b->p;
}

/* ---- the small GEMMs: out[r * ldo + v W + j] = sum_c vp[r * ldv + c] up[c * ldu + v W + j] ---- */
typedef void (*wg_fn)(float *, int64_t, const float *, int64_t, const float *, int64_t, int64_t);
#define DEF_WG(NAME, NV, R)                                                                                     \
    static void NAME(float *FG_RESTRICT out, int64_t ldo, const float *FG_RESTRICT vp, int64_t ldv,           \
                     const float *FG_RESTRICT up, int64_t ldu, int64_t C) {                                     \
        Z_T acc[R][NV];                                                                                       \
        for (int r = 0; r < R; r++)                                                                           \
            for (int v = 0; v < NV; v++) acc[r][v] = Z_ZERO();                                                \
        for (int64_t c = 0; c < C; c++) {                                                                     \
            Z_T uv[NV];                                                                                       \
            for (int v = 0; v < NV; v++) uv[v] = Z_LD(up + c * ldu + v * Z_W);                                \
            _Pragma("GCC unroll 32") for (int r = 0; r < R; r++) {                                            \
                const Z_T xv = Z_S1(vp[r * ldv + c]);                                                         \
                for (int v = 0; v < NV; v++) acc[r][v] = Z_FMA(xv, uv[v], acc[r][v]);                         \
            }                                                                                                 \
        }                                                                                                     \
        for (int r = 0; r < R; r++)                                                                           \
            for (int v = 0; v < NV; v++) Z_ST(out + r * ldo + v * Z_W, acc[r][v]);                            \
    }
#if FG_VEC_REGS >= 32
DEF_WG(wg_1, 1, 24)
DEF_WG(wg_2, 2, 12)
DEF_WG(wg_3, 3, 8)
DEF_WG(wg_4, 4, 6)
static const wg_fn wg_fns[5] = {NULL, wg_1, wg_2, wg_3, wg_4};
#elif FG_VEC_REGS >= 16
DEF_WG(wg_1, 1, 12)
DEF_WG(wg_2, 2, 6)
static const wg_fn wg_fns[5] = {NULL, wg_1, wg_2, NULL, NULL};
#else
DEF_WG(wg_1, 1, 4)
DEF_WG(wg_2, 2, 2)
static const wg_fn wg_fns[5] = {NULL, wg_1, wg_2, NULL, NULL};
#endif

/* ---- transforms ---- */

/* G g G^T for one lane group: g[ky][kx] -> u[i * 4 + j] */
#define KER_XFORM(T_, ADD, SUB, MUL, HALF, g, u)                                                                \
    do {                                                                                                      \
        T_ t_[4][3];                                                                                          \
        for (int j_ = 0; j_ < 3; j_++) { /* t = G g */                                                        \
            t_[0][j_] = g[0][j_];                                                                             \
            t_[1][j_] = MUL(ADD(ADD(g[0][j_], g[1][j_]), g[2][j_]), HALF);                                    \
            t_[2][j_] = MUL(ADD(SUB(g[0][j_], g[1][j_]), g[2][j_]), HALF);                                    \
            t_[3][j_] = g[2][j_];                                                                             \
        }                                                                                                     \
        for (int i_ = 0; i_ < 4; i_++) { /* u = t G^T */                                                      \
            u[i_ * 4 + 0] = t_[i_][0];                                                                        \
            u[i_ * 4 + 1] = MUL(ADD(ADD(t_[i_][0], t_[i_][1]), t_[i_][2]), HALF);                             \
            u[i_ * 4 + 2] = MUL(ADD(SUB(t_[i_][0], t_[i_][1]), t_[i_][2]), HALF);                             \
            u[i_ * 4 + 3] = t_[i_][2];                                                                        \
        }                                                                                                     \
    } while (0)
#define S_ADD(a, b) ((a) + (b))
#define S_SUB(a, b) ((a) - (b))
#define S_MUL(a, b) ((a) * (b))

/* U[pos][c][f] = (G g G^T)[pos] for channels [c0, c1), zero for F <= f < FP;
 * g[ky][kx] = w[((ky 3 + kx) C + c) F + f] */
static void kernel_transform(float *FG_RESTRICT U, const float *FG_RESTRICT w, int64_t C, int64_t F, int64_t FP,
                             int64_t c0, int64_t c1) {
    const int64_t ps = C * FP;
    const Z_T hv = Z_S1(0.5f);
    for (int64_t c = c0; c < c1; c++) {
        float *u = U + c * FP;
        const float *wc = w + c * F;
        int64_t f = 0;
        for (; f + Z_W <= F; f += Z_W) {
            Z_T g[3][3], v[16];
            for (int k = 0; k < 9; k++) g[k / 3][k % 3] = Z_LD(wc + k * C * F + f);
            KER_XFORM(Z_T, Z_ADD, Z_SUB, Z_MUL, hv, g, v);
            for (int p = 0; p < 16; p++) Z_ST(u + p * ps + f, v[p]);
        }
        for (; f < F; f++) {
            float g[3][3], v[16];
            for (int k = 0; k < 9; k++) g[k / 3][k % 3] = wc[k * C * F + f];
            KER_XFORM(float, S_ADD, S_SUB, S_MUL, 0.5f, g, v);
            for (int p = 0; p < 16; p++) u[p * ps + f] = v[p];
        }
        for (; f < FP; f++)
            for (int p = 0; p < 16; p++) u[p * ps + f] = 0.0f;
    }
}

/* B^T d B for one lane group: d[i][j] -> v[i * 4 + j] */
#define IN_XFORM(T_, ADD, SUB, d, v)                                                                            \
    do {                                                                                                      \
        T_ t_[4][4];                                                                                          \
        for (int j_ = 0; j_ < 4; j_++) {                                                                      \
            t_[0][j_] = SUB(d[0][j_], d[2][j_]);                                                              \
            t_[1][j_] = ADD(d[1][j_], d[2][j_]);                                                              \
            t_[2][j_] = SUB(d[2][j_], d[1][j_]);                                                              \
            t_[3][j_] = SUB(d[1][j_], d[3][j_]);                                                              \
        }                                                                                                     \
        for (int i_ = 0; i_ < 4; i_++) {                                                                      \
            v[i_ * 4 + 0] = SUB(t_[i_][0], t_[i_][2]);                                                        \
            v[i_ * 4 + 1] = ADD(t_[i_][1], t_[i_][2]);                                                        \
            v[i_ * 4 + 2] = SUB(t_[i_][2], t_[i_][1]);                                                        \
            v[i_ * 4 + 3] = SUB(t_[i_][1], t_[i_][3]);                                                        \
        }                                                                                                     \
    } while (0)
/* V[pos][t][c] (pos stride ps) for one tile: src[i * 4 + j] points at its input pixel (or zeros) */
static void input_transform(float *FG_RESTRICT V, int64_t ps, const float *const *src, int64_t C) {
    int64_t c = 0;
    for (; c + Z_W <= C; c += Z_W) {
        Z_T d[4][4], v[16];
        for (int k = 0; k < 16; k++) d[k / 4][k % 4] = Z_LD(src[k] + c);
        IN_XFORM(Z_T, Z_ADD, Z_SUB, d, v);
        for (int p = 0; p < 16; p++) Z_ST(V + p * ps + c, v[p]);
    }
    for (; c < C; c++) {
        float d[4][4], v[16];
        for (int k = 0; k < 16; k++) d[k / 4][k % 4] = src[k][c];
        IN_XFORM(float, S_ADD, S_SUB, d, v);
        for (int p = 0; p < 16; p++) V[p * ps + c] = v[p];
    }
}

/* A^T m A: m[i * 4 + j] -> y[r][q] (r, q < 2) */
#define OUT_XFORM(T_, ADD, SUB, m, y)                                                                           \
    do {                                                                                                      \
        T_ t_[2][4];                                                                                          \
        for (int j_ = 0; j_ < 4; j_++) {                                                                      \
            t_[0][j_] = ADD(ADD(m[j_], m[4 + j_]), m[8 + j_]);                                                \
            t_[1][j_] = SUB(SUB(m[4 + j_], m[8 + j_]), m[12 + j_]);                                           \
        }                                                                                                     \
        for (int i_ = 0; i_ < 2; i_++) {                                                                      \
            y[i_][0] = ADD(ADD(t_[i_][0], t_[i_][1]), t_[i_][2]);                                             \
            y[i_][1] = SUB(SUB(t_[i_][1], t_[i_][2]), t_[i_][3]);                                             \
        }                                                                                                     \
    } while (0)

/* the output transform of one tile: M[pos][f] (pos stride ps) -> dst[r][q] (NULL: off the output),
 * + bias, then y = max(0, .) with relu (pre = the pre-activation, when kept) */
static void output_transform(float *const *dst, float *const *pre, const float *FG_RESTRICT M, int64_t ps,
                             const float *FG_RESTRICT bias, int64_t F, int relu) {
    int64_t f = 0;
    for (; f + Z_W <= F; f += Z_W) {
        Z_T m[16], y[2][2];
        for (int p = 0; p < 16; p++) m[p] = Z_LD(M + p * ps + f);
        OUT_XFORM(Z_T, Z_ADD, Z_SUB, m, y);
        const Z_T bv = bias ? Z_LD(bias + f) : Z_ZERO();
        for (int k = 0; k < 4; k++) {
            if (!dst[k]) continue;
            Z_T v = y[k / 2][k % 2];
            if (bias) v = Z_ADD(v, bv);
            if (pre[k]) Z_ST(pre[k] + f, v);
            if (relu) v = Z_MAX(Z_ZERO(), v);
            Z_ST(dst[k] + f, v);
        }
    }
    for (; f < F; f++) {
        float m[16], y[2][2];
        for (int p = 0; p < 16; p++) m[p] = M[p * ps + f];
        OUT_XFORM(float, S_ADD, S_SUB, m, y);
        for (int k = 0; k < 4; k++) {
            if (!dst[k]) continue;
            float v = y[k / 2][k % 2];
            if (bias) v = v + bias[f];
            if (pre[k]) pre[k][f] = v;
            if (relu) v = 0.0f > v ? 0.0f : v; /* maxps(0, v): NaN and -0 kept */
            dst[k][f] = v;
        }
    }
}

/* y = conv + b, or with relu y = max(0, conv + b) and, when z != NULL, z = conv + b.
 * Shapes: kh = kw = 3, strides 1, dilation 1, groups 1 (else 0 is returned). */
int FG_ISA_FN(fg_conv_wino_fwd)(float *y, float *z, const float *x, const float *w, const float *b,
                                const fg_conv_shape *s, int relu, int nthreads) {
    if (s->groups != 1 || s->kh != 3 || s->kw != 3 || s->sh != 1 || s->sw != 1 || s->dh != 1 || s->dw != 1)
        return 0;
    const int64_t C = s->c, F = s->f, NVT = (F + Z_W - 1) / Z_W, FP = NVT * Z_W;
    const int64_t th = (s->oh + 1) / 2, tw = (s->ow + 1) / 2, tps = th * tw, total = s->n * tps;
    /* f chunks of NVMAX vectors and a narrower last one: RL = a multiple of every R in use */
    const int64_t nv_main = NVT < NVMAX ? NVT : NVMAX, nv_last = NVT % nv_main ? NVT % nv_main : nv_main;
    const int64_t r_main = wg_rows[nv_main], r_last = wg_rows[nv_last];
    const int64_t RL = r_main / gcd64(r_main, r_last) * r_last;
    /* threads take equal runs of tiles; each cuts its run into blocks of at most T tiles, T a
     * multiple of RL with V + M within BLOCK_BYTES (a register tile at least) */
    int nt = fg_threads_for(total * 16 * C * FP, GRAIN, nthreads);
    if (nt > total) nt = (int)total;
    int64_t T = BLOCK_BYTES / (int64_t)sizeof(float) / (16 * (C + FP));
    if (T > MAX_T) T = MAX_T;
    T = T / RL * RL;
    if (T < RL) T = RL;

    float *U = grow(&t_ker, (size_t)(16 * C * FP + C));
    if (!U) return -FG_ERR_NOMEM;
    float *zero = U + 16 * C * FP;
    memset(zero, 0, (size_t)C * sizeof(float));
    const int64_t xs = s->h * s->w * C;
    int status = FG_OK;
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
        kernel_transform(U, w, C, F, FP, C * tid / nth, C * (tid + 1) / nth);
#if FG_HAVE_OPENMP
#pragma omp barrier
#endif
        float *V = grow(&t_blk, (size_t)(16 * T * (C + FP)));
        if (!V) {
#if FG_HAVE_OPENMP
#pragma omp atomic write
#endif
            status = FG_ERR_NOMEM;
        } else {
            float *M = V + 16 * T * C;
            const int64_t vps = T * C, mps = T * FP;
            const int64_t a = total * tid / nth, e = total * (tid + 1) / nth;
            const int64_t nbt = e > a ? (e - a + T - 1) / T : 1;
            const int64_t tb = ((e - a + nbt - 1) / nbt + RL - 1) / RL * RL; /* <= T */
            for (int64_t t0 = a; t0 < e; t0 += tb) {
                const int64_t cnt = e - t0 < tb ? e - t0 : tb;
                /* input transform */
                for (int64_t t = 0; t < cnt; t++) {
                    const int64_t g = t0 + t, n = g / tps, ty = (g % tps) / tw, tx = (g % tps) % tw;
                    const float *src[16];
                    for (int i = 0; i < 4; i++) {
                        const int64_t iy = 2 * ty - s->pt + i;
                        for (int j = 0; j < 4; j++) {
                            const int64_t ix = 2 * tx - s->pl + j;
                            src[i * 4 + j] = iy >= 0 && iy < s->h && ix >= 0 && ix < s->w
                                                 ? x + n * xs + (iy * s->w + ix) * C
                                                 : zero;
                        }
                    }
                    input_transform(V + t * C, vps, src, C);
                }
                const int64_t tr = (cnt + RL - 1) / RL * RL; /* rows the GEMMs read: zeros past cnt */
                if (tr > cnt)
                    for (int p = 0; p < 16; p++) memset(V + p * vps + cnt * C, 0, (size_t)((tr - cnt) * C) * sizeof(float));
                /* 16 GEMMs */
                for (int p = 0; p < 16; p++) {
                    const float *vp = V + p * vps, *up = U + p * C * FP;
                    float *mp = M + p * mps;
                    for (int64_t v0 = 0; v0 < NVT; v0 += nv_main) {
                        const int64_t nv = NVT - v0 < nv_main ? NVT - v0 : nv_main, R = wg_rows[nv];
                        const wg_fn fn = wg_fns[nv];
                        for (int64_t r0 = 0; r0 < tr; r0 += R)
                            fn(mp + r0 * FP + v0 * Z_W, FP, vp + r0 * C, C, up + v0 * Z_W, FP, C);
                    }
                }
                /* output transform */
                for (int64_t t = 0; t < cnt; t++) {
                    const int64_t g = t0 + t, n = g / tps, ty = (g % tps) / tw, tx = (g % tps) % tw;
                    float *dst[4], *pre[4];
                    for (int k = 0; k < 4; k++) {
                        const int64_t oy = 2 * ty + k / 2, ox = 2 * tx + k % 2;
                        const int in = oy < s->oh && ox < s->ow;
                        const int64_t off = ((n * s->oh + oy) * s->ow + ox) * F;
                        dst[k] = in ? y + off : NULL;
                        pre[k] = in && z ? z + off : NULL;
                    }
                    output_transform(dst, pre, M + t * FP, mps, b, F, relu);
                }
            }
        }
        fg_fpstate_leave(fp);
    }
    if (status != FG_OK) return -status;
    return 1;
}
