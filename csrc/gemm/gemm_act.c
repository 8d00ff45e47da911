/* gemm_act.c — the activation of the fused dense epilogue, compiled per ISA
 * with -ffp-contract=off like csrc/kernels. It applies the kernels family's
 * own per-vector activations (kernels/fg_act_vec.h, the code behind
 * fg_act_forward) over the finished C, grouping elements into vectors exactly
 * as fg_act_forward does for a contiguous array (from the first element,
 * thread blocks on multiples of 16 elements). So fused gemm + bias + act is
 * bitwise equal to gemm + bias followed by fg_act_forward on the same ISA, for
 * any thread count (fg_act_forward's streaming stores start only at 4M
 * elements, FG_NT_MIN, and only when not in place: there the vector grouping
 * follows the output's alignment and may differ in the last ULP for gelu /
 * gelu_tanh). Every FG_ACT_* code is applied with its by-name parameters
 * (fg_act_param_default). Exports fg_gemm_act_<isa>; everything else is static.
 */
#include "gemm_internal.h"
#include "kernels/fg_act_vec.h"

/* c[rows x cols, ldc] = act(c) in place, row by row (one finished tile) */
void FG_ISA_FN(fg_gemm_act_tile)(float *c, int64_t ldc, int rows, int cols, int act) {
    for (int r = 0; r < rows; r++) fg_act_apply_range(c + r * ldc, c + r * ldc, 0, cols, act, NULL);
}

/* C[M x N, ldc] = act(C) in place */
int FG_ISA_FN(fg_gemm_act)(float *C, int64_t ldc, int64_t M, int64_t N, int act, int nthreads) {
    if (act == FG_ACT_LINEAR || M <= 0 || N <= 0) return FG_OK;
    const int64_t grain = fg_act_fwd_grain(act);
    int nt = fg_threads_for(M * N, grain, nthreads);
    if (ldc == N) { /* contiguous: one flat range, as fg_act_forward sees it */
        const int64_t n = M * N;
#define BODY_(lo, hi) fg_act_apply_range(C, C, lo, hi, act, NULL)
        FG_PARALLEL_RANGE(n, 16, nt, BODY_);
#undef BODY_
    } else { /* strided: row by row, each row grouped from its first element */
#define BODY_(lo, hi)                                                            \
    for (int64_t r_ = (lo); r_ < (hi); r_++) fg_act_apply_range(C + r_ * ldc, C + r_ * ldc, 0, N, act, NULL)
        FG_PARALLEL_RANGE(M, 1, nt, BODY_);
#undef BODY_
    }
    return FG_OK;
}
