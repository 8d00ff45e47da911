/* fg_gemm.h — the GEMM family: packed single-precision matrix multiply and
 * the fused dense-layer forward (bias + activation applied in the
 * micro-kernel's final store, so the output is written once).
 *
 * All matrices are row-major with explicit leading dimensions (the distance
 * in floats between consecutive rows), so a caller can pass views into
 * larger matrices. Results are bitwise identical for every thread count: the
 * K dimension is never split between threads and the K blocking depends only
 * on the shape and the instruction set.
 */
#ifndef FG_GEMM_H
#define FG_GEMM_H

#include "fg_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* C[M,N] = alpha * op(A) @ op(B) + beta * C, op(A) is M x K, op(B) is K x N,
 * row-major; A is stored as (M x K, lda) or, if trans_a, as (K x M, lda);
 * likewise B: (K x N, ldb) or, if trans_b, (N x K, ldb).
 * beta == 0 means C is not read (NaN in C does not propagate). C must not
 * overlap A or B (the Python binding refuses that).
 * Small products (<= 32 columns, a few rows, or tiny) take an unpacked
 * single-thread path — vectorised along M for a few columns (N <= 16, e.g.
 * a 10-class output layer: gemm_cols.h), else along N (gemm_small.h); the
 * rest the packed, threaded one (gemm_driver.c). All paths sum each element
 * as one FMA chain over k in order (the packed one per K block).
 * Returns FG_OK, FG_ERR_ARG (negative size, leading dimension too small, NULL
 * pointer) or FG_ERR_NOMEM (packing workspace could not be allocated). */
int fg_gemm(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb,
            int64_t M, int64_t N, int64_t K, int trans_a, int trans_b, float alpha, float beta,
            int nthreads);

/* Fused dense forward: Z = X @ W + b (X: M x K, ldx; W: K x N, ldw, Keras
 * layout in x out; b: N floats or NULL); Y = act(Z) with act any FG_ACT_*
 * code (with its by-name parameters: leaky_relu slope 0.2, elu alpha 1).
 * If Z != NULL the pre-activation is stored too (needed by the backward of
 * the activations where fg_act_backward_needs_input); Y may equal Z only for
 * FG_ACT_LINEAR (else FG_ERR_ARG).
 * The activation is fg_act_forward's own vector code (csrc/kernels/fg_act_vec.h,
 * applied over the finished Y by gemm_act.c): Y is bitwise equal to
 * fg_act_forward(Z) on every ISA and thread count (contiguous Y; with
 * ldy != N row by row), with the kernels' accuracy (fg_vmath.h). */
int fg_dense_forward(float *Y, int64_t ldy, float *Z, int64_t ldz, const float *X, int64_t ldx,
                     const float *W, int64_t ldw, const float *b, int64_t M, int64_t N, int64_t K,
                     int act, int nthreads);

/* Implicit GEMM: an operand that exists only as a packing callback.
 * pack(ctx, dst, W, idx0, nvalid, k0, kc) writes dst[k * W + w] for
 * k < kc, w < W: element (idx0 + w, k0 + k) of op(A) (rows of op(A)) or
 * element (k0 + k, idx0 + w) of op(B) (columns of op(B)), and 0 for
 * w >= nvalid. It is called from several threads at once on disjoint dst,
 * so it must only read ctx. dst has FG_GEMM_PACK_SLACK floats of slack. */
typedef void (*fg_gemm_pack_fn)(const void *ctx, float *dst, int W, int64_t idx0, int nvalid, int64_t k0,
                                int64_t kc);
#define FG_GEMM_PACK_SLACK 16

/* One operand of fg_gemm_ex: a stored matrix (p, ld, trans as in fg_gemm)
 * or, when pack != NULL, a virtual one (p, ld, trans ignored). */
typedef struct fg_gemm_operand {
    const float *p;
    int64_t ld;
    int trans;
    fg_gemm_pack_fn pack;
    const void *ctx;
} fg_gemm_operand;

/* C = act(alpha op(A) op(B) + beta C + bias) (Z = the pre-activation when
 * not NULL), as fg_gemm / fg_dense_forward, with either operand virtual.
 * Always the packed, threaded driver: each C element is one FMA chain over
 * k per K block (K blocks depend on K and the ISA only), so the bits do not
 * depend on the thread count. act: any FG_ACT_* code. */
int fg_gemm_ex(float *C, int64_t ldc, float *Z, int64_t ldz, const fg_gemm_operand *A,
               const fg_gemm_operand *B, const float *bias, int64_t M, int64_t N, int64_t K, float alpha,
               float beta, int act, int nthreads);

/* The register tile (MR x NR) of the active instruction set, for tests and
 * benchmarks that probe edge cases. */
void fg_gemm_tile(int *mr, int *nr, int *mc, int *kc, int *nc);

#ifdef __cplusplus
}
#endif
#endif /* FG_GEMM_H */
