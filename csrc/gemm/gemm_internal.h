/* gemm_internal.h — what the once-compiled entry points (gemm.c) and the
 * per-ISA driver (gemm_driver.c) share: the problem description and the
 * workspace callback. Not part of the public API. */
#ifndef FG_GEMM_INTERNAL_H
#define FG_GEMM_INTERNAL_H

#include <stddef.h>
#include "fg_common.h"
#include "fg_gemm.h"

typedef struct fg_gemm_problem {
    float *C;          /* output (M x N, ldc); the accumulator between K blocks */
    int64_t ldc;
    float *Z;          /* pre-activation output (M x N, ldz) or NULL */
    int64_t ldz;
    const float *A;    /* M x K (or K x M if trans_a), lda */
    int64_t lda;
    const float *B;    /* K x N (or N x K if trans_b), ldb */
    int64_t ldb;
    const float *bias; /* N floats or NULL */
    int64_t M, N, K;
    int trans_a, trans_b;
    float alpha, beta;
    int act;           /* FG_ACT_* applied at the final store */
    int path;          /* 0: choose by shape; 1: packed; 2: unpacked, lanes along N
                          (gemm_small.h); 3: unpacked, lanes along M (gemm_cols.h;
                          the AVX2/AVX-512 copies, else as 2) — tests/tuning */
    /* Virtual operands (implicit GEMM, fg_gemm_ex): when set, op(A) / op(B)
       is never read through A / B but packed by the callback; a_off / b_off
       are the row of op(A) / column of op(B) this (sub-)problem starts at.
       Such problems always take the packed path. */
    fg_gemm_pack_fn pack_a;
    const void *pack_a_ctx;
    int64_t a_off;
    fg_gemm_pack_fn pack_b;
    const void *pack_b_ctx;
    int64_t b_off;
    /* Pre-packed op(B) (fg_gemm_packb, same ISA): K block kb starts at
       Bpk + kb * kc_std * bpk_n, its NR-column sliver s at + s * NR * kc;
       b_off is the column this (sub-)problem starts at. B / ldb / trans_b
       still describe the stored matrix (the unpacked paths read it). */
    const float *Bpk;
    int64_t bpk_n;     /* columns of the packed op(B), padded to NR */
    /* threads share one packed B panel (see run_tiles): 0 by shape, 1 always,
       -1 never (FASTGRAD_GEMM_SHARE / fg_gemm_set_share) */
    int share;
} fg_gemm_problem;

/* The whole of op(B) (K x N) packed for the active ISA's driver. */
struct fg_gemm_packed {
    int isa;            /* FG_ISA_* it was packed for */
    int64_t N, K, kc_std, nkb, npad;
    const float *B;     /* the stored matrix (for the unpacked paths) */
    int64_t ldb;
    int trans_b;
    float *data;        /* npad * K floats (+ slack), 64-byte aligned */
};

/* -1 / 0 / 1: FASTGRAD_GEMM_SHARE=0 / unset / 1 (or fg_gemm_set_share) */
int fg_gemm_share_mode(void);

/* Returns a 64-byte aligned buffer of at least `bytes`, owned by the calling
 * thread and reused across calls (grow-only), or NULL if allocation failed. */
typedef void *(*fg_gemm_ws_fn)(size_t bytes);

/* fg_gemm with the path forced (0 auto, 1 packed, 2 unpacked along N,
 * 3 unpacked along M): lets tests run every shape through every path. */
int fg_gemm_path(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb,
                 int64_t M, int64_t N, int64_t K, int trans_a, int trans_b, float alpha, float beta,
                 int nthreads, int path);

/* Per-ISA driver (gemm_driver.c): runs the whole problem on up to nthreads. */
FG_DECLARE_ISA(int, fg_gemm_run, (const fg_gemm_problem *p, int nthreads, fg_gemm_ws_fn ws))
/* Per-ISA fused-epilogue activation (gemm_act.c): C[M x N, ldc] = act(C) in
 * place, with the kernels family's vector code (bitwise fg_act_forward). */
FG_DECLARE_ISA(int, fg_gemm_act, (float *C, int64_t ldc, int64_t M, int64_t N, int act, int nthreads))
/* The same code on one tile: c[r * ldc + j] = act(c[...]) for r < rows,
 * j < cols, each row grouped into vectors from its first element. Only for
 * activations whose per-element result does not depend on the grouping. */
FG_DECLARE_ISA(void, fg_gemm_act_tile, (float *c, int64_t ldc, int rows, int cols, int act))
/* Every activation but gelu / gelu_tanh is lane-local (each lane's result
 * depends on that lane alone; kernels/fg_act_vec.h), so it can run per tile;
 * gelu / gelu_tanh pick one path per vector and run over the finished C. */
static inline int fg_gemm_act_in_tile(int act) {
    return act != FG_ACT_LINEAR && act != FG_ACT_GELU && act != FG_ACT_GELU_TANH;
}
/* FMA throughput of nthreads threads running `iters` steps of independent
 * vector FMA chains (gemm_peak.c): GFLOP/s of the team, wall clock. */
FG_DECLARE_ISA(double, fg_gemm_peak, (int nthreads, int64_t iters))
/* Floats of the packed op(B) of a K x N product (fg_gemm_packed.data) and its
 * K blocking; then the packing itself (all of op(B), B stored as in fg_gemm). */
FG_DECLARE_ISA(int64_t, fg_gemm_packb_size, (int64_t N, int64_t K, int64_t *kc_std, int64_t *nkb, int64_t *npad))
FG_DECLARE_ISA(void, fg_gemm_packb_run, (float *dst, const float *B, int64_t ldb, int64_t N, int64_t K, int trans_b,
                                         int nthreads))
/* MR, NR, MC, KC, NC of that ISA's driver. */
FG_DECLARE_ISA(void, fg_gemm_blocking, (int *mr, int *nr, int *mc, int *kc, int *nc))

#endif /* FG_GEMM_INTERNAL_H */
