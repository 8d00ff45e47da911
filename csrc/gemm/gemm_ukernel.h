/* gemm_ukernel.h — the register-blocked micro-kernels, one per instruction
 * set, each named by its tile (MR x NR of C held in registers):
 *   AVX-512  12 x 32  (24 zmm accumulators, 2 B loads + 12 broadcasts per k)
 *   AVX2      6 x 16  (12 ymm accumulators, 2 B loads + 6 broadcasts per k)
 *   baseline  4 x 8   (plain C; the compiler vectorises what it can)
 * A micro-kernel computes acc = Ap . Bp over kc (Ap: kc x MR sliver, Bp:
 * kc x NR sliver, both packed) with one fused multiply-add chain per element
 * in k order, then hands each row of acc to the epilogue (ep_vec), which
 * writes C (and Z) once. Every C element therefore sees the same operations
 * whichever tile or thread computes it. */
#ifndef FG_GEMM_UKERNEL_H
#define FG_GEMM_UKERNEL_H

#include "gemm_internal.h"
#include "gemm_vec.h"

/* What the store at the end of a micro-kernel does (see ep_vec). */
typedef struct {
    float alpha; /* scales op(A) op(B) */
    float cbeta; /* multiplier of the old C (beta on the first K block, 1 on
                    later blocks); 0 means C is not read */
    int final;   /* last K block: add bias, store Z, apply a lane-local activation */
    int act;     /* FG_ACT_*, applied per tile (fg_gemm_act_in_tile), or LINEAR */
} fg_ep;

typedef void (*fg_ukernel_fn)(int64_t kc, const float *a, const float *b, float *c, int64_t ldc, float *z,
                              int64_t ldz, const float *bias, const fg_ep *ep, const float *cn);

/* c = alpha acc + cbeta c (+ bias on the final block); z = the same value
 * (the pre-activation). The activation is the kernels family's vector code
 * (gemm_act.c): the lane-local ones (all but gelu / gelu_tanh), whose
 * per-element results do not depend on how elements are grouped into
 * vectors, are applied to each
 * finished tile while it is in L1 (fg_gemm_act_tile, out of line); gelu and
 * gelu_tanh over the whole finished C (fg_gemm_act). Either way the result is
 * bitwise fg_act_forward's. Callers pass a local copy of the fg_ep, so its
 * fields stay in registers
 * across the stores to C. */
FG_INLINE void ep_vec(float *c, float *z, const float *bias, vf acc, const fg_ep *ep) {
    vf x = vf_mul(acc, vf_set1(ep->alpha));
    if (ep->cbeta != 0.0f) x = vf_fma(vf_set1(ep->cbeta), vf_loadu(c), x);
    if (ep->final) {
        if (bias) x = vf_add(x, vf_loadu(bias));
        if (z) vf_storeu(z, x);
    }
    vf_storeu(c, x);
}

/* ep_vec for the first n (< VW) lanes only: masked loads and stores */
FG_INLINE void ep_vec_part(float *c, float *z, const float *bias, vf acc, int n, const fg_ep *ep) {
    vf x = vf_mul(acc, vf_set1(ep->alpha));
    if (ep->cbeta != 0.0f) x = vf_fma(vf_set1(ep->cbeta), vf_loadu_part(c, n), x);
    if (ep->final) {
        if (bias) x = vf_add(x, vf_loadu_part(bias, n));
        if (z) vf_storeu_part(z, x, n);
    }
    vf_storeu_part(c, x, n);
}

/* The C tile is touched only at the end; ask for its lines up front so the
 * epilogue's loads and stores do not wait on memory. */
#if defined(__AVX2__)
#define PREFETCH_C(r)                                             \
    _mm_prefetch((const char *)(c + (r) * ldc), _MM_HINT_T0);     \
    _mm_prefetch((const char *)(c + (r) * ldc + FG_NR - 1), _MM_HINT_T0);
/* cn: the C tile the caller computes next (a hint; any address, prefetches
 * never fault). Its rows are asked into L2 during the first MR k steps, so
 * PREFETCH_C of the next call finds them there instead of in L3/memory.
 * In the driver every K block re-reads the C block (MC x NC, not L2-sized
 * with the B panel): measured on the dev box (AVX-512, macro kernel 180 x
 * 1024 x 256, one thread) C flushed to memory cost 6-12% against C in L2. */
#define PREFETCH_NEXT(r)                                            \
    _mm_prefetch((const char *)(cn + (r) * ldc), _MM_HINT_T1);      \
    _mm_prefetch((const char *)(cn + (r) * ldc + FG_NR - 1), _MM_HINT_T1);
#endif
#ifndef FG_UKR_PF_NEXT
#if defined(__AVX512F__)
#define FG_UKR_PF_NEXT 1
#else
#define FG_UKR_PF_NEXT 0
#endif
#endif
/* k-loop unrolling: measured +6% on the AVX2 6x16 kernel (in-L2 96x512x256),
 * no gain on the AVX-512 one */
#ifndef FG_UKR_UNROLL
#if defined(__AVX512F__)
#define FG_UKR_UNROLL 1
#else
#define FG_UKR_UNROLL 4
#endif
#endif
#define FG_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define FG_PRAGMA_UNROLL(n) FG_PRAGMA(clang loop unroll_count(n))
#define FG_UNROLL FG_PRAGMA_UNROLL(FG_UKR_UNROLL)
#elif defined(__GNUC__)
#define FG_PRAGMA_UNROLL(n) FG_PRAGMA(GCC unroll n)
#define FG_UNROLL FG_PRAGMA_UNROLL(FG_UKR_UNROLL)
#else
#define FG_UNROLL
#endif

/* One micro-kernel body per row count: ROWS lists the rows (X(0) X(1) ...),
 * NROWS their number. The full tile uses all MR rows; the bottom edge of C
 * (M not a multiple of MR) uses a shorter copy on the same packed A sliver
 * (stride MR per k) instead of computing MR rows into a scratch tile: with
 * MR = 12, M = 256 or 128 would otherwise spend 3% of the work on padding.
 * Each element's FMA chain is the same in every copy, so the bits are too. */
#if defined(__AVX512F__)
#define FG_MR 12
#define FG_NR 32
#define STEP512(r)                                  \
    {                                               \
        __m512 ar = _mm512_set1_ps(a[r]);           \
        c##r##0 = _mm512_fmadd_ps(ar, b0, c##r##0); \
        c##r##1 = _mm512_fmadd_ps(ar, b1, c##r##1); \
    }
#define DECL512(r) __m512 c##r##0 = _mm512_setzero_ps(), c##r##1 = _mm512_setzero_ps();
#define STORE512(r)                                                                \
    ep_vec(c + (r) * ldc, z ? z + (r) * ldz : NULL, bias, c##r##0, ep);            \
    ep_vec(c + (r) * ldc + 16, z ? z + (r) * ldz + 16 : NULL, bias ? bias + 16 : NULL, c##r##1, ep);
/* C[NROWS x 32] (ldc) op= Ap[kc x 12] (first NROWS of each 12) . Bp[kc x 32] */
#define UKERNEL512(name, ROWS, NROWS)                                                                     \
    static void name(int64_t kc, const float *FG_RESTRICT a, const float *FG_RESTRICT b, float *c,       \
                     int64_t ldc, float *z, int64_t ldz, const float *bias, const fg_ep *ep,             \
                     const float *cn) {                                                                   \
        ROWS(DECL512)                                                                                     \
        ROWS(PREFETCH_C)                                                                                  \
        int64_t k = 0;                                                                                    \
        if (FG_UKR_PF_NEXT) {                                                                             \
            /* the next tile's C rows towards L2, one row per k step (see PREFETCH_NEXT) */              \
            for (const int64_t kp = kc < FG_MR ? kc : FG_MR; k < kp; k++) {                               \
                PREFETCH_NEXT(k)                                                                          \
                __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);                               \
                ROWS(STEP512)                                                                             \
                a += 12;                                                                                  \
                b += 32;                                                                                  \
            }                                                                                             \
        }                                                                                                 \
        FG_UNROLL                                                                                         \
        for (; k < kc; k++) {                                                                             \
            __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);                                   \
            ROWS(STEP512)                                                                                 \
            a += 12;                                                                                      \
            b += 32;                                                                                      \
        }                                                                                                 \
        const fg_ep e = *ep; /* not aliased by C: fields stay in registers */                             \
        ep = &e;                                                                                          \
        ROWS(STORE512)                                                                                    \
        if (e.final && e.act != FG_ACT_LINEAR) FG_ISA_FN(fg_gemm_act_tile)(c, ldc, NROWS, FG_NR, e.act);  \
    }
#define ROWS12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define ROWS8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define ROWS4(X) X(0) X(1) X(2) X(3)
UKERNEL512(ukernel_12x32, ROWS12, 12)
UKERNEL512(ukernel_8x32, ROWS8, 8)
UKERNEL512(ukernel_4x32, ROWS4, 4)
#define FG_UKERNEL ukernel_12x32
/* the kernel for the bottom edge: `mr` (< MR) rows, or NULL (full tile on scratch) */
FG_INLINE fg_ukernel_fn ukernel_rows(int mr) { return mr == 4 ? ukernel_4x32 : mr == 8 ? ukernel_8x32 : NULL; }

#elif defined(__AVX2__)
#define FG_MR 6
#define FG_NR 16
#define STEP256(r)                                  \
    {                                               \
        __m256 ar = _mm256_broadcast_ss(a + (r));   \
        c##r##0 = _mm256_fmadd_ps(ar, b0, c##r##0); \
        c##r##1 = _mm256_fmadd_ps(ar, b1, c##r##1); \
    }
#define DECL256(r) __m256 c##r##0 = _mm256_setzero_ps(), c##r##1 = _mm256_setzero_ps();
#define STORE256(r)                                                                \
    ep_vec(c + (r) * ldc, z ? z + (r) * ldz : NULL, bias, c##r##0, ep);            \
    ep_vec(c + (r) * ldc + 8, z ? z + (r) * ldz + 8 : NULL, bias ? bias + 8 : NULL, c##r##1, ep);
/* C[NROWS x 16] (ldc) op= Ap[kc x 6] (first NROWS of each 6) . Bp[kc x 16] */
#define UKERNEL256(name, ROWS, NROWS)                                                                     \
    static void name(int64_t kc, const float *FG_RESTRICT a, const float *FG_RESTRICT b, float *c,       \
                     int64_t ldc, float *z, int64_t ldz, const float *bias, const fg_ep *ep,             \
                     const float *cn) {                                                                   \
        ROWS(DECL256)                                                                                     \
        ROWS(PREFETCH_C)                                                                                  \
        int64_t k = 0;                                                                                    \
        if (FG_UKR_PF_NEXT) {                                                                             \
            for (const int64_t kp = kc < FG_MR ? kc : FG_MR; k < kp; k++) {                               \
                PREFETCH_NEXT(k)                                                                          \
                __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);                                \
                ROWS(STEP256)                                                                             \
                a += 6;                                                                                   \
                b += 16;                                                                                  \
            }                                                                                             \
        }                                                                                                 \
        FG_UNROLL                                                                                         \
        for (; k < kc; k++) {                                                                             \
            __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);                                    \
            ROWS(STEP256)                                                                                 \
            a += 6;                                                                                       \
            b += 16;                                                                                      \
        }                                                                                                 \
        const fg_ep e = *ep; /* not aliased by C: fields stay in registers */                             \
        ep = &e;                                                                                          \
        ROWS(STORE256)                                                                                    \
        if (e.final && e.act != FG_ACT_LINEAR) FG_ISA_FN(fg_gemm_act_tile)(c, ldc, NROWS, FG_NR, e.act);  \
    }
#define ROWS6(X) X(0) X(1) X(2) X(3) X(4) X(5)
#define ROWS4(X) X(0) X(1) X(2) X(3)
#define ROWS2(X) X(0) X(1)
UKERNEL256(ukernel_6x16, ROWS6, 6)
UKERNEL256(ukernel_4x16, ROWS4, 4)
UKERNEL256(ukernel_2x16, ROWS2, 2)
#define FG_UKERNEL ukernel_6x16
FG_INLINE fg_ukernel_fn ukernel_rows(int mr) { return mr == 2 ? ukernel_2x16 : mr == 4 ? ukernel_4x16 : NULL; }

#else
#define FG_MR 4
#define FG_NR 8
/* C[4 x 8] (ldc) op= Ap[kc x 4] . Bp[kc x 8] */
static void ukernel_4x8(int64_t kc, const float *FG_RESTRICT a, const float *FG_RESTRICT b, float *c,
                        int64_t ldc, float *z, int64_t ldz, const float *bias, const fg_ep *ep,
                        const float *cn) {
    (void)cn;
    float acc[4][8] = {{0}};
    for (int64_t k = 0; k < kc; k++) {
        for (int r = 0; r < 4; r++)
            for (int j = 0; j < 8; j++) acc[r][j] += a[r] * b[j];
        a += 4;
        b += 8;
    }
    const fg_ep e = *ep;
    ep = &e;
    for (int r = 0; r < 4; r++)
        for (int j = 0; j < 8; j++)
            ep_vec(c + r * ldc + j, z ? z + r * ldz + j : NULL, bias ? bias + j : NULL, acc[r][j], ep);
    if (e.final && e.act != FG_ACT_LINEAR) FG_ISA_FN(fg_gemm_act_tile)(c, ldc, 4, 8, e.act);
}
#define FG_UKERNEL ukernel_4x8
FG_INLINE fg_ukernel_fn ukernel_rows(int mr) {
    (void)mr;
    return NULL;
}
#endif

#endif /* FG_GEMM_UKERNEL_H */
