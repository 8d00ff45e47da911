/* gemm_driver.c — the Goto/BLIS GEMM driver, compiled once per instruction
 * set (see cmake/FastgradISA.cmake); exports fg_gemm_run_<isa> and
 * fg_gemm_blocking_<isa>, everything else is static.
 *
 * Five loops around the micro-kernel (gemm_ukernel.h):
 *   jc  over N in NC-wide panels        (B panel: KC x NC, L3-resident)
 *   pc  over K in KC-deep blocks        (K is never split between threads)
 *   ic  over M in MC-tall blocks        (A block: MC x KC, L2-resident)
 *   jr  over the NC panel in NR slivers (B sliver: KC x NR, L1-resident)
 *   ir  over the MC block in MR slivers (micro-kernel: MR x NR of C)
 * The K blocks are balanced (all equal but the last, which is smaller by
 * less than one per block), and their size depends only on K and the ISA,
 * so every C element sees the same sequence of operations for any thread
 * count: results are bitwise identical for nthreads = 1, 2, 3, ...
 *
 * Threads (one OpenMP parallel region per call):
 *   - split over M ("M mode", when op(A) has at least as many MR slivers as
 *     op(B) has NR slivers): each thread packs its own A blocks from a
 *     contiguous, MR-aligned range of rows; the B panel is packed
 *     cooperatively (each thread a share of its slivers), then a barrier.
 *   - split over NR slivers of the B panel ("N mode", small M such as an
 *     MLP batch of 128): each thread packs and uses only its own B slivers;
 *     the A block is packed cooperatively, then a barrier.
 *
 * Blocking (MC, KC, NC) — why these numbers:
 *   AVX2 6x16 (Zen 3 target: 32 KiB L1d, 512 KiB L2/core, 32 MiB L3):
 *     KC = 256: one B sliver (256 x 16 x 4 B = 16 KiB) plus an A sliver
 *     (6 KiB) stay in L1 while the micro-kernel streams them.
 *     MC = 144: the A block (144 x 256 x 4 B = 144 KiB) uses under a third
 *     of L2, leaving room for the B slivers passing through.
 *     NC = 4080: the B panel (256 x 4080 x 4 B = 4 MiB) sits in L3.
 *     (BLIS uses the same numbers for its Zen sgemm.)
 *   AVX-512 12x32 (dev box: Sapphire Rapids, 48 KiB L1d, 2 MiB L2/core):
 *     KC = 256: B sliver 32 KiB + A sliver 12 KiB in the 48 KiB L1d;
 *     MC = 192: A block 192 KiB; NC = 3072: B panel 3 MiB.
 *   baseline 4x8: KC = 256, MC = 128, NC = 2048.
 * MC >= 128 keeps an MLP batch of 128 in one A block.
 */
#include "gemm_internal.h"
#include "gemm_pack.h"
#include "gemm_ukernel.h"
#include "gemm_small.h"

#include <string.h>
#if FG_HAVE_OPENMP
#include <omp.h>
#endif

#if defined(__AVX512F__)
#define FG_MC 192
#define FG_KC 256
#define FG_NC 3072
#elif defined(__AVX2__)
#define FG_MC 144
#define FG_KC 256
#define FG_NC 4080
#else
#define FG_MC 128
#define FG_KC 256
#define FG_NC 2048
#endif

/* Where the unpacked path (gemm_small.h) wins over packing. Measured on the
 * dev box (Sapphire Rapids, thread CPU time, single thread each; both paths,
 * us; "packed" already includes its packing):
 *                      AVX-512 packed / small    AVX2 packed / small
 *   128x10x128 (M,N,K)        11.6 / 4.9              12.4 / 12.9
 *   128x10x128, A^T           16.2 / 8.6              16.7 / 12.9
 *   784x10x128, A^T          100  / 57               101  / 90
 *   128x16x128                14.3 / 7.4              11.7 / 13.7
 *   128x32x128                13.7 / 10.0             20.7 / 18.2
 *   1x128x784                 43.5 / 3.9              39.8 / 6.3
 *   8x128x784                 53.2 / 21.9             56.4 / 41.9
 *   16x128x784                86.0 / 38.1             81.1 / 84.1
 *   32x128x784               118  / 75               137  / 167
 * so: fewer columns than one NR sliver, fewer rows than two MR slivers, or a
 * tiny product (packing overhead ~0.2 us). Bigger products are left to the
 * packed path, which can also use threads. op(B) must be B (rows contiguous). */
static int small_wins(int64_t M, int64_t N, int64_t K) {
    const int64_t work = M * N * K;
    if (work > ((int64_t)1 << 24)) return 0;
    return N < FG_NR || M < 2 * FG_MR || work <= 32768;
}

/* work (multiply-adds) per thread below which another thread does not pay */
#define FG_GEMM_GRAIN (1 << 19)

#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))
#define ALIGN_UP(a, b) (CEIL_DIV(a, b) * (b))

typedef struct {
    const fg_gemm_problem *p;
    int64_t kc_std, nkb;  /* K blocks: nkb blocks of kc_std (last smaller) */
    int64_t mc_std;       /* M block height (multiple of MR) */
    int64_t nc_std;       /* N panel width (multiple of NR) */
    int mode_m;           /* 1: threads split M; 0: threads split NR slivers */
    float *Bp;            /* packed B panel: CEIL(nc_std/NR) slivers of kc_std x NR */
    float *Ap;            /* packed A blocks: one per thread (M mode) or shared */
    int64_t ap_stride;    /* floats between per-thread A blocks */
} fg_plan;

/* Balanced split of n into blocks of at most bmax, each a multiple of q. */
static int64_t balanced_block(int64_t n, int64_t bmax, int64_t q) {
    if (n <= 0) return q;
    int64_t nb = CEIL_DIV(n, bmax);
    return ALIGN_UP(CEIL_DIV(n, nb), q);
}

static inline void barrier(int nth) {
#if FG_HAVE_OPENMP
    if (nth > 1) {
#pragma omp barrier
    }
#else
    (void)nth;
#endif
}

/* pack rows [i0, i0+mc) x [p0, p0+kc) of op(A), slivers [s0, s1), into Ap */
static void pack_a(const fg_gemm_problem *p, float *Ap, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
                   int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; s++) {
        int64_t r0 = s * FG_MR;
        int nv = (int)(mc - r0 < FG_MR ? mc - r0 : FG_MR);
        float *dst = Ap + s * FG_MR * kc;
        if (p->trans_a) /* A stored K x M: the MR values of one k are contiguous */
            pack_copy(dst, FG_MR, p->A + p0 * p->lda + i0 + r0, p->lda, nv, kc);
        else
            pack_transpose(dst, FG_MR, p->A + (i0 + r0) * p->lda + p0, p->lda, nv, kc);
    }
}

/* pack columns [j0, j0+nc) x rows [p0, p0+kc) of op(B), slivers [s0, s1), into Bp */
static void pack_b(const fg_gemm_problem *p, float *Bp, int64_t j0, int64_t nc, int64_t p0, int64_t kc,
                   int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; s++) {
        int64_t c0 = s * FG_NR;
        int nv = (int)(nc - c0 < FG_NR ? nc - c0 : FG_NR);
        float *dst = Bp + s * FG_NR * kc;
        if (p->trans_b) /* B stored N x K: each column of op(B) is contiguous in k */
            pack_transpose(dst, FG_NR, p->B + (j0 + c0) * p->ldb + p0, p->ldb, nv, kc);
        else
            pack_copy(dst, FG_NR, p->B + p0 * p->ldb + j0 + c0, p->ldb, nv, kc);
    }
}

/* C block [i0, i0+mc) x [j0 + s0*NR, j0 + min(s1*NR, nc)) from packed A and B */
static void macro_kernel(const fg_gemm_problem *p, const float *Ap, const float *Bp, int64_t i0, int64_t mc,
                         int64_t j0, int64_t nc, int64_t kc, int64_t s0, int64_t s1, const fg_ep *ep) {
    const int with_bias = ep->final && p->bias != NULL;
    const int with_z = ep->final && p->Z != NULL;
    for (int64_t s = s0; s < s1; s++) {      /* jr: NR slivers of the B panel */
        const int64_t j = j0 + s * FG_NR;
        const int nr = (int)(j0 + nc - j < FG_NR ? j0 + nc - j : FG_NR);
        const float *b = Bp + s * FG_NR * kc;
        for (int64_t r = 0; r < mc; r += FG_MR) { /* ir: MR slivers of the A block */
            const int mr = (int)(mc - r < FG_MR ? mc - r : FG_MR);
            const float *a = Ap + r * kc;
            float *c = p->C + (i0 + r) * p->ldc + j;
            float *z = with_z ? p->Z + (i0 + r) * p->ldz + j : NULL;
            const float *bias = with_bias ? p->bias + j : NULL;
            if (mr == FG_MR && nr == FG_NR) {
                FG_UKERNEL(kc, a, b, c, p->ldc, z, p->ldz, bias, ep);
                continue;
            }
            /* edge tile: run the full tile on a local copy, write back the valid part */
            _Alignas(64) float tc[FG_MR * FG_NR];
            _Alignas(64) float tz[FG_MR * FG_NR];
            _Alignas(64) float tb[FG_NR];
            memset(tc, 0, sizeof tc);
            if (ep->cbeta != 0.0f)
                for (int i = 0; i < mr; i++) memcpy(tc + i * FG_NR, c + i * p->ldc, (size_t)nr * sizeof(float));
            if (bias) {
                memset(tb, 0, sizeof tb);
                memcpy(tb, bias, (size_t)nr * sizeof(float));
            }
            FG_UKERNEL(kc, a, b, tc, FG_NR, z ? tz : NULL, FG_NR, bias ? tb : NULL, ep);
            for (int i = 0; i < mr; i++) {
                memcpy(c + i * p->ldc, tc + i * FG_NR, (size_t)nr * sizeof(float));
                if (z) memcpy(z + i * p->ldz, tz + i * FG_NR, (size_t)nr * sizeof(float));
            }
        }
    }
}

/* one thread's share of the whole product (tid of nth) */
static void run_thread(const fg_plan *pl, int tid, int nth) {
    const fg_gemm_problem *p = pl->p;
    const int64_t M = p->M, N = p->N, K = p->K;
    for (int64_t jc = 0; jc < N; jc += pl->nc_std) {     /* jc: NC panels of op(B) */
        const int64_t nc = N - jc < pl->nc_std ? N - jc : pl->nc_std;
        const int64_t ns = CEIL_DIV(nc, FG_NR);
        for (int64_t kb = 0; kb < pl->nkb; kb++) {       /* pc: KC blocks of K */
            const int64_t pc = kb * pl->kc_std;
            const int64_t kc = K - pc < pl->kc_std ? K - pc : pl->kc_std;
            fg_ep ep = {p->alpha, kb == 0 ? p->beta : 1.0f, kb == pl->nkb - 1, p->act};
            if (pl->mode_m) {
                pack_b(p, pl->Bp, jc, nc, pc, kc, ns * tid / nth, ns * (tid + 1) / nth);
                barrier(nth);
                const int64_t mt = CEIL_DIV(M, FG_MR);
                const int64_t lo = mt * tid / nth * FG_MR;
                int64_t hi = mt * (tid + 1) / nth * FG_MR;
                if (hi > M) hi = M;
                float *Ap = pl->Ap + tid * pl->ap_stride;
                for (int64_t ic = lo; ic < hi; ic += pl->mc_std) { /* ic: MC blocks of this thread's rows */
                    const int64_t mc = hi - ic < pl->mc_std ? hi - ic : pl->mc_std;
                    pack_a(p, Ap, ic, mc, pc, kc, 0, CEIL_DIV(mc, FG_MR));
                    macro_kernel(p, Ap, pl->Bp, ic, mc, jc, nc, kc, 0, ns, &ep);
                }
                barrier(nth); /* the B panel is repacked next */
            } else {
                const int64_t s0 = ns * tid / nth, s1 = ns * (tid + 1) / nth;
                pack_b(p, pl->Bp, jc, nc, pc, kc, s0, s1); /* own slivers only */
                for (int64_t ic = 0; ic < M; ic += pl->mc_std) { /* ic: MC blocks of op(A) */
                    const int64_t mc = M - ic < pl->mc_std ? M - ic : pl->mc_std;
                    const int64_t ms = CEIL_DIV(mc, FG_MR);
                    pack_a(p, pl->Ap, ic, mc, pc, kc, ms * tid / nth, ms * (tid + 1) / nth);
                    barrier(nth);
                    macro_kernel(p, pl->Ap, pl->Bp, ic, mc, jc, nc, kc, s0, s1, &ep);
                    barrier(nth); /* the A block is repacked next */
                }
            }
        }
    }
}

/* Unpacked single-thread path or the packed driver? Decided by shape only
 * (never by the thread count), so results stay thread-count independent. */
static int use_small(const fg_gemm_problem *p) {
    if (p->path) return p->path == 2 && !p->trans_b;
    if (p->trans_b) return 0;
    return small_wins(p->M, p->N, p->K);
}

int FG_ISA_FN(fg_gemm_run)(const fg_gemm_problem *p, int nthreads, fg_gemm_ws_fn ws) {
    const int64_t M = p->M, N = p->N, K = p->K;
    if (use_small(p)) {
        unsigned fp = fg_fpstate_enter();
        gemm_small(p);
        fg_fpstate_leave(fp);
        return FG_OK;
    }
    fg_plan pl;
    pl.p = p;
    pl.nkb = K > 0 ? CEIL_DIV(K, FG_KC) : 1; /* K == 0 still runs one (empty) block: C = beta C + epilogue */
    pl.kc_std = K > 0 ? CEIL_DIV(K, pl.nkb) : 0;
    pl.mc_std = balanced_block(M, FG_MC, FG_MR);
    pl.nc_std = balanced_block(N, FG_NC, FG_NR);
    pl.mode_m = CEIL_DIV(M, FG_MR) >= CEIL_DIV(N, FG_NR);

    int nt = fg_threads_for(M * N * (K > 0 ? K : 1), FG_GEMM_GRAIN, nthreads);
    /* no more threads than there are units to split */
    const int64_t units = pl.mode_m ? CEIL_DIV(M, FG_MR) : CEIL_DIV(pl.nc_std, FG_NR);
    if (nt > units) nt = (int)units;
    if (nt < 1) nt = 1;
#if !FG_HAVE_OPENMP
    nt = 1;
#endif

    const int64_t kcap = pl.kc_std > 0 ? pl.kc_std : 1;
    const int64_t b_floats = ALIGN_UP(CEIL_DIV(pl.nc_std, FG_NR) * FG_NR * kcap + FG_PACK_SLACK, 16);
    pl.ap_stride = ALIGN_UP(pl.mc_std * kcap + FG_PACK_SLACK, 16);
    const int64_t nbuf_a = pl.mode_m ? nt : 1;
    float *w = (float *)ws((size_t)(b_floats + nbuf_a * pl.ap_stride) * sizeof(float));
    if (!w) return FG_ERR_NOMEM;
    pl.Bp = w;
    pl.Ap = w + b_floats;

#if FG_HAVE_OPENMP
    if (nt > 1) {
#pragma omp parallel num_threads(nt)
        {
            unsigned fp = fg_fpstate_enter();
            /* the team may be smaller than asked (nested region, limits) */
            run_thread(&pl, omp_get_thread_num(), omp_get_num_threads());
            fg_fpstate_leave(fp);
        }
        return FG_OK;
    }
#endif
    unsigned fp = fg_fpstate_enter();
    run_thread(&pl, 0, 1);
    fg_fpstate_leave(fp);
    return FG_OK;
}

void FG_ISA_FN(fg_gemm_blocking)(int *mr, int *nr, int *mc, int *kc, int *nc) {
    if (mr) *mr = FG_MR;
    if (nr) *nr = FG_NR;
    if (mc) *mc = FG_MC;
    if (kc) *kc = FG_KC;
    if (nc) *nc = FG_NC;
}
