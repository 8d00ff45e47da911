/* fg_attn.h — attention kernels (float32, row-major, heads as an axis).
 *
 * Shapes: q (G, Tq, D), k (G, Tk, D), v (G, Tk, Dv), scores / weights
 * (G, Tq, Tk), out (G, Tq, Dv) with G = B * H groups, group g belonging to
 * sample b = g / H. Masks are never a full (G, Tq, Tk) array:
 *   key_valid   (B, Tk) uint8 or NULL: key j of sample b may be attended;
 *   query_valid (B, Tq) uint8 or NULL: query row i of sample b is real;
 *   mask        (B, Tq, Tk) uint8 or NULL: explicit mask shared by the heads;
 *   causal      keep j <= i.
 * A row's weights are softmax(scale * s) over its allowed entries, 0
 * elsewhere; a row with none is all zeros (out 0, lse -inf).
 * Every output row is owned by one thread and summed in a fixed order, so
 * results are bitwise identical for any thread count. Exponentials are the
 * kernels' vector exp (fg_exp), so ISA paths agree to a few ulp.
 */
#ifndef FG_ATTN_H
#define FG_ATTN_H

#include "fg_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* C[g] = alpha * op(A[g]) @ op(B[g]) + beta * C[g], g < G; the matrices of
 * group g start at A + g * sa (etc.), with leading dimensions lda, ldb, ldc
 * as fg_gemm. Threads run over groups (one fg_gemm each) when G is large,
 * else inside fg_gemm; fg_gemm's bits do not depend on its thread count. */
int fg_bmm(float *C, int64_t sc, int64_t ldc, const float *A, int64_t sa, int64_t lda,
           const float *B, int64_t sb, int64_t ldb, int64_t G, int64_t M, int64_t N, int64_t K,
           int trans_a, int trans_b, float alpha, float beta, int nthreads);

/* P = masked softmax of scale * S over the last axis; S, P (B*H, Tq, Tk);
 * P may equal S. */
int fg_attn_softmax_forward(float *P, const float *S, int64_t B, int64_t H, int64_t Tq, int64_t Tk,
                            float scale, const uint8_t *key_valid, const uint8_t *query_valid,
                            const uint8_t *mask, int causal, int nthreads);

/* dS = scale * P * (dP - sum_j dP * P), rows of Tk; dS may equal dP. */
int fg_attn_softmax_backward(float *dS, const float *dP, const float *P, int64_t rows, int64_t Tk,
                             float scale, int nthreads);

/* Blocked attention (online softmax over blocks of keys): O (G, Tq, Dv),
 * lse (G, Tq) the log-sum-exp of each row's scaled allowed scores. Memory:
 * one (64 x 128) score tile per thread, never (Tq, Tk). */
int fg_flash_forward(float *O, float *lse, const float *Q, const float *K, const float *V,
                     int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D, int64_t Dv,
                     float scale, const uint8_t *key_valid, const uint8_t *query_valid, int causal,
                     int nthreads);

/* Gradients of fg_flash_forward by recomputation from lse: dQ, dK, dV. */
int fg_flash_backward(float *dQ, float *dK, float *dV, const float *dO, const float *Q,
                      const float *K, const float *V, const float *O, const float *lse,
                      int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D, int64_t Dv,
                      float scale, const uint8_t *key_valid, const uint8_t *query_valid, int causal,
                      int nthreads);

#ifdef __cplusplus
}
#endif
#endif /* FG_ATTN_H */
