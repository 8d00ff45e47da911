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

/* Pre-packed op(B), for products that reuse one B with many A (a Dense
 * kernel over the chunks of one predict call): fg_gemm_packb packs all of
 * op(B) (K x N; B stored as in fg_gemm) for the active ISA's driver once;
 * fg_gemm_prepacked / fg_dense_forward_prepacked then skip packing B. The
 * results are bitwise those of fg_gemm / fg_dense_forward with the stored B
 * (same packed values, same K blocks; shapes that take the unpacked paths
 * read the stored B, so it must stay alive and unchanged until
 * fg_gemm_packed_free). If the active ISA changes after packing, the stored B
 * is used. Memory: about K x N floats. */
typedef struct fg_gemm_packed fg_gemm_packed;
int fg_gemm_packb(fg_gemm_packed **out, const float *B, int64_t ldb, int64_t N, int64_t K, int trans_b,
                  int nthreads);
void fg_gemm_packed_free(fg_gemm_packed *pk);
/* C[M, N] = alpha op(A) @ op(B) + beta C with op(B) pre-packed (N, K from it) */
int fg_gemm_prepacked(float *C, int64_t ldc, const float *A, int64_t lda, int trans_a, const fg_gemm_packed *B,
                      int64_t M, float alpha, float beta, int nthreads);
/* fg_dense_forward with W (K x N, not transposed) pre-packed */
int fg_dense_forward_prepacked(float *Y, int64_t ldy, float *Z, int64_t ldz, const float *X, int64_t ldx,
                               const fg_gemm_packed *W, const float *b, int64_t M, int act, int nthreads);

/* Threads sharing one packed B panel: mode 1 always (when rows are split),
 * -1 never, 0 by shape (the default; FASTGRAD_GEMM_SHARE=1 / 0 at first use
 * sets 1 / -1). Results are the same bits either way. For tests/benchmarks. */
void fg_gemm_set_share(int mode);

/* The register tile (MR x NR) of the active instruction set, for tests and
 * benchmarks that probe edge cases. */
void fg_gemm_tile(int *mr, int *nr, int *mc, int *kc, int *nc);

/* The machine's measured fp32 FMA peak on the active instruction set, in
 * GFLOP/s for nthreads threads together: independent vector FMA chains
 * (gemm_peak.c), calibrated to ~20 ms, best of three runs. Takes ~0.1 s;
 * callers cache it (fastgrad._native.gemm.peak_gflops). */
double fg_gemm_peak_gflops(int nthreads);

#ifdef __cplusplus
}
#endif
#endif /* FG_GEMM_H */
