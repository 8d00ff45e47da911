/* attn.c — the attention family's entry points compiled once: the batched
 * GEMM (a loop of fg_gemm calls) and the dispatchers of the per-ISA kernels
 * in attn_kernels.c. */
#include "fg_attn.h"
#include "gemm/fg_gemm.h"

FG_DECLARE_ISA(int, fg_attn_softmax_forward_k, (float *, const float *, int64_t, int64_t, int64_t,
                                                int64_t, float, const uint8_t *, const uint8_t *,
                                                const uint8_t *, int, int))
FG_DECLARE_ISA(int, fg_attn_softmax_backward_k, (float *, const float *, const float *, int64_t,
                                                 int64_t, float, int))
FG_DECLARE_ISA(int, fg_flash_forward_k, (float *, float *, const float *, const float *,
                                         const float *, int64_t, int64_t, int64_t, int64_t, int64_t,
                                         int64_t, float, const uint8_t *, const uint8_t *, int, int))
FG_DECLARE_ISA(int, fg_flash_backward_k, (float *, float *, float *, const float *, const float *,
                                          const float *, const float *, const float *,
                                          const float *, int64_t, int64_t, int64_t, int64_t,
                                          int64_t, int64_t, float, const uint8_t *,
                                          const uint8_t *, int, int))

int fg_bmm(float *C, int64_t sc, int64_t ldc, const float *A, int64_t sa, int64_t lda,
           const float *B, int64_t sb, int64_t ldb, int64_t G, int64_t M, int64_t N, int64_t K,
           int trans_a, int trans_b, float alpha, float beta, int nthreads) {
    if (G < 0 || M < 0 || N < 0 || K < 0) return FG_ERR_ARG;
    if (G == 0 || M == 0 || N == 0) return FG_OK;
    if (!C || ((!A || !B) && K > 0)) return FG_ERR_ARG;
    /* one product per thread when there are enough of them; small products
     * are not worth a thread each */
    int64_t work = M * N * (K > 0 ? K : 1);
    int nt = G >= 2 ? fg_threads_for(G * work, 32768, nthreads) : 1;
    if (nt > G) nt = (int)G;
    if (nt <= 1) {
        for (int64_t g = 0; g < G; g++) {
            int st = fg_gemm(C + g * sc, ldc, A + g * sa, lda, B + g * sb, ldb, M, N, K, trans_a,
                             trans_b, alpha, beta, G == 1 ? nthreads : (work >= 262144 ? nthreads : 1));
            if (st != FG_OK) return st;
        }
        return FG_OK;
    }
    int status = FG_OK;
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static)
#endif
    for (int64_t g = 0; g < G; g++) {
        int st = fg_gemm(C + g * sc, ldc, A + g * sa, lda, B + g * sb, ldb, M, N, K, trans_a,
                         trans_b, alpha, beta, 1);
        if (st != FG_OK) {
#if defined(_OPENMP)
#pragma omp critical(fg_bmm_status)
#endif
            status = st;
        }
    }
    return status;
}

int fg_attn_softmax_forward(float *P, const float *S, int64_t B, int64_t H, int64_t Tq, int64_t Tk,
                            float scale, const uint8_t *key_valid, const uint8_t *query_valid,
                            const uint8_t *mask, int causal, int nthreads) {
    if (B < 0 || H < 0 || Tq < 0 || Tk < 0 || ((!P || !S) && B * H * Tq * Tk > 0)) return FG_ERR_ARG;
    return FG_DISPATCH(fg_attn_softmax_forward_k)(P, S, B, H, Tq, Tk, scale, key_valid,
                                                  query_valid, mask, causal, nthreads);
}

int fg_attn_softmax_backward(float *dS, const float *dP, const float *P, int64_t rows, int64_t Tk,
                             float scale, int nthreads) {
    if (rows < 0 || Tk < 0 || ((!dS || !dP || !P) && rows * Tk > 0)) return FG_ERR_ARG;
    return FG_DISPATCH(fg_attn_softmax_backward_k)(dS, dP, P, rows, Tk, scale, nthreads);
}

int fg_flash_forward(float *O, float *lse, const float *Q, const float *K, const float *V,
                     int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D, int64_t Dv,
                     float scale, const uint8_t *key_valid, const uint8_t *query_valid, int causal,
                     int nthreads) {
    if (B < 0 || H < 0 || Tq < 0 || Tk < 0 || D < 0 || Dv < 0) return FG_ERR_ARG;
    if (B * H * Tq == 0) return FG_OK;
    if (!O || !lse || !Q || (Tk > 0 && (!K || !V))) return FG_ERR_ARG;
    return FG_DISPATCH(fg_flash_forward_k)(O, lse, Q, K, V, B, H, Tq, Tk, D, Dv, scale, key_valid,
                                           query_valid, causal, nthreads);
}

int fg_flash_backward(float *dQ, float *dK, float *dV, const float *dO, const float *Q,
                      const float *K, const float *V, const float *O, const float *lse,
                      int64_t B, int64_t H, int64_t Tq, int64_t Tk, int64_t D, int64_t Dv,
                      float scale, const uint8_t *key_valid, const uint8_t *query_valid, int causal,
                      int nthreads) {
    if (B < 0 || H < 0 || Tq < 0 || Tk < 0 || D < 0 || Dv < 0) return FG_ERR_ARG;
    if (B * H == 0) return FG_OK;
    if (!dQ || !dK || !dV || !dO || !Q || !K || !V || !O || !lse) return FG_ERR_ARG;
    return FG_DISPATCH(fg_flash_backward_k)(dQ, dK, dV, dO, Q, K, V, O, lse, B, H, Tq, Tk, D, Dv,
                                            scale, key_valid, query_valid, causal, nthreads);
}
