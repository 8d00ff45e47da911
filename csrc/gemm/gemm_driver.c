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
 * Threads (one OpenMP parallel region per call): each thread runs the five
 * loops on its own block of C — an MR-aligned range of rows, or, when op(B)
 * has more NR slivers than op(A) has MR slivers (small M such as an MLP
 * batch of 128), an NR-aligned range of columns — with its own A buffer; B
 * panels are packed once by the whole team into a shared buffer (one barrier
 * per panel, gemm_shared) when rows are split and op(B) is big, else by each
 * thread for itself, no barriers (see run_tiles).
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
 *     KC = 256 (512 since the Zen 4 tuning below): B sliver 32 KiB + A sliver 12 KiB in the 48 KiB L1d;
 *     MC = 192: A block 192 KiB; NC = 3072: B panel 3 MiB.
 *   baseline 4x8: KC = 256, MC = 128, NC = 2048.
 * MC >= 128 keeps an MLP batch of 128 in one A block.
 * Measured on the dev box (benchmarks/peak/run_ukernel_probe.py: C only, one
 * thread, thread CPU time, min of many reps; peak = this binary's FMA loop,
 * AVX-512 ~179, AVX2 ~96-103 GFLOP/s):
 *   micro-kernel in L1, kc 128/192/256/384:  AVX-512 96/97/97/97% of peak,
 *     AVX2 94/95/95/96% — KC = 256 is not too tight for the 48 KiB L1d;
 *   macro kernel, MC x KC = 49152 floats, KC 128/192/256/320/384 (interleaved
 *     runs, GFLOP/s): AVX-512 157/166/169/169/169, AVX2 88/93/92/93/90, so
 *     KC stays 256 (192 or 384 within noise, 128 loses 5-7%);
 *   1024^3 split: packing B 2-4% + packing A 2-3.5% of the time, macro
 *     kernel the rest; whole driver AVX-512 147-151 (82-84%), AVX2 ~84
 *     (81-87%); 2 threads (quiet minute, wall time) AVX-512 294 (82% of
 *     2 x 179), AVX2 169; 2048^3 2 threads AVX-512 ~290 (81%), AVX2 144.
 *     At 2 threads each thread packs all of B (split by rows): its B
 *     packing share doubles to 4-7% of its time (512x1024x1024 probe).
 *     C re-read per K block (L3) cost the AVX-512 macro kernel 6-12%
 *     before the next-tile prefetch (gemm_ukernel.h, PREFETCH_NEXT).
 *   NC 1024/1536 instead of 3072 for 2048^3 (B panel in L2): within noise.
 *   Zen 4 (32 KiB L1d, 1 MiB L2/core, AVX-512 as 2 x 256 bits), AVX-512
 *   KC 256 -> 512 (ukernel_probe, one thread, thread CPU time; shared box):
 *   2048^3 91.1% -> 92.8% of peak, 256x1024x1024 85.0% -> 88.8%: the
 *   C block is re-read and re-written once per K block, half as often; the
 *   64 KiB B sliver no longer fits L1 but streams from L2 (micro-kernel in
 *   L1 at kc 512: 98.4%). The A block (192 x 512 = 384 KiB) still fits L2.
 *   AVX2 6x16 on the same Zen 4, KC 256 -> 512: 2048^3 88.4% -> 92.4%,
 *   256x1024x1024 92.5% -> 93.5% (KC 384 and MC 120 within noise).
 *   The K blocks depend on K and the ISA only, as before.
 */
#include "gemm_internal.h"
#include "gemm_pack.h"
#include "gemm_ukernel.h"
#include "gemm_small.h"
#include "gemm_cols.h"

#include <string.h>
#include <stdint.h>
#if FG_HAVE_OPENMP
#include <omp.h>
#endif

#if defined(__AVX512F__)
#define FG_MC_DEF 192
#define FG_KC_DEF 512
#define FG_NC_DEF 3072
#elif defined(__AVX2__)
#define FG_MC_DEF 144
#define FG_KC_DEF 512
#define FG_NC_DEF 4080
#else
#define FG_MC_DEF 128
#define FG_KC_DEF 256
#define FG_NC_DEF 2048
#endif
/* overridable for tuning (benchmarks/peak/ukernel_probe.c) */
#ifndef FG_MC
#define FG_MC FG_MC_DEF
#endif
#ifndef FG_KC
#define FG_KC FG_KC_DEF
#endif
#ifndef FG_NC
#define FG_NC FG_NC_DEF
#endif

/* Where the unpacked path (gemm_small.h) wins over packing. Measured on the
 * dev box (Sapphire Rapids; thread CPU time, one thread each; us; "packed"
 * includes its packing):
 *                      AVX-512 packed / small    AVX2 packed / small
 *   128x10x128 (M,N,K)        11.3 / 4.5              10.3 / 7.8
 *   128x10x128, A^T           14.8 / 6.1              13.5 / 8.2
 *   784x10x128, A^T           96   / 53               74   / 49
 *   128x16x128                14.8 / 4.1               9.6 / 7.5
 *   128x32x128                10.0 / 6.7              16.6 / 15.9
 *   1x128x784                 37.1 / 3.1              30.4 / 5.5
 *   8x128x784                 41.4 / 16.0             52.2 / 31.4
 *   16x128x784                49.0 / 20.2             59.2 / 64.6
 *   32x128x784                80.5 / 53.1            101   / 133
 * so: at most 32 columns, fewer rows than two MR slivers, or a tiny product
 * (packing overhead ~0.2 us); up to 4M multiply-adds, above which the packed
 * path's threads win. op(B) must be B (rows contiguous). */
#if defined(__AVX512F__) || defined(__AVX2__)
#define FG_SMALL_MAX_N 32
#else
#define FG_SMALL_MAX_N (FG_NR - 1)
#endif
#ifndef FG_SMALL_MAX_K
#define FG_SMALL_MAX_K 12
#endif
static int small_wins(int64_t M, int64_t N, int64_t K) {
    const int64_t work = M * N * K;
    if (work > ((int64_t)1 << 22)) return 0;
    return N <= FG_SMALL_MAX_N || M < 2 * FG_MR || work <= 32768;
}

/* op(B) = B^T (the dX = dZ W^T of a dense backward): the unpacked path
 * after one transposing copy of B (N K floats) when K is tiny (10 classes)
 * or small_wins() holds anyway. Measured (thread CPU time, best of 3,
 * GFLOP/s packed -> unpacked): AVX-512 128x128x10 64 -> 69, 128x128x16
 * 90 -> 81; AVX2 128x128x10 42 -> 43, 128x128x16 49 -> 44: a small gain at
 * K = 10 only, hence K <= 12. */
static int small_wins_bt(int64_t M, int64_t N, int64_t K) {
    const int64_t work = M * N * K;
    if (work > ((int64_t)1 << 22)) return 0;
    return K <= FG_SMALL_MAX_K || small_wins(M, N, K);
}

/* Unpacked products with few columns: lanes along M (gemm_cols.h) instead
 * of along N (gemm_small.h)? Measured on the dev box (Sapphire Rapids, one
 * thread, best of 15 interleaved; t(along N) / t(along M), > 1: along M wins):
 *                         AVX2                    AVX-512
 *   M,K \ N            2    4    8   10   12   16     2    4    8   10   12   16
 *   A     8,128      .56  .56  .45  .59  .47  .44   .60  .57  .55  .47  .38  .38
 *   A    32,128     1.25 1.16  .74 1.25  .88 1.02  1.33 1.32 1.16 1.14 1.05  .91
 *   A   128,10       .80  .78  .53 1.04  .91  .54  1.04  .92  .96  .94 1.04  .65
 *   A   128,32      1.17 1.09   -  1.02  .97   -   1.56 1.46   -  1.24 1.12   -
 *   A   128,128     1.47 1.37  .77 1.29  .88  .80  1.75 1.60 1.50 1.20 1.08  .84
 *   A^T  16,10      1.05 1.12  .90 1.02 1.10  .82  1.20 1.20 1.08 1.04  .82  .79
 *   A^T 128,1       1.26 1.21  .67 1.05 1.49  .69  1.37 1.44 1.62 1.57 1.72  .82
 *   A^T 128,128     2.55 1.81 1.15 1.58 1.18  .86  4.13 2.58 2.48 2.24 1.59 1.19
 *   A^T 784,128     3.12 2.02 1.46 1.66 1.20  .88  3.86 2.98 2.52 2.04 1.93 1.29
 * so: N <= 16 and not a whole number of vectors (then every lane along N is
 * used already), at least one full panel of rows (16 / 32); with A^T (read
 * in place) that is enough, with A the transposing copy and the epilogue's
 * transposes need K >= 32 to pay, and on AVX2 (column groups of 6) the row
 * path must waste more than 30% of its lanes (N = 12 at 75% loses). */
#if FG_HAVE_COLS
static int cols_wins(int64_t M, int64_t N, int64_t K, int trans_a) {
    if (N > 16 || N % FG_VW == 0 || M < FG_COLS_P) return 0;
    if (trans_a) return 1;
    if (K < 32) return 0;
#if defined(__AVX512F__)
    return 1;
#else
    const int64_t lanes = (N + FG_VW - 1) / FG_VW * FG_VW; /* lanes the row path spends */
    return 10 * N < 7 * lanes;
#endif
}
#endif

/* work (multiply-adds) per thread below which another thread does not pay */
#define FG_GEMM_GRAIN (1 << 19)

#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))
#define ALIGN_UP(a, b) (CEIL_DIV(a, b) * (b))

/* Balanced split of n into blocks of at most bmax, each a multiple of q. */
static int64_t balanced_block(int64_t n, int64_t bmax, int64_t q) {
    if (n <= 0) return q;
    int64_t nb = CEIL_DIV(n, bmax);
    return ALIGN_UP(CEIL_DIV(n, nb), q);
}

/* Copy packing (op(A) = A^T, op(B) = B) of slivers [s0, s1) runs FG_PACK_KB
 * rows of k at a time across all the slivers: each source row is then read
 * front to back (one sequential stream per row) instead of one NR- or
 * MR-wide piece of each of kc rows per sliver, a strided walk that, with
 * ld a multiple of 1024 floats, maps every row to the same L1 set and a new
 * page. With a prefetch of the next chunk's rows (FG_PACK_PF), measured on
 * Zen 4 (ukernel_probe split, one thread, KC 512): 256x1024x1024 B packing
 * 7.6% -> 5.5% of the time; the conv dW 576x64x8192 (A^T) A packing 31% ->
 * 27.5% (there A streams from memory: the rest is bandwidth). */
#ifndef FG_PACK_KB
#define FG_PACK_KB 8
#endif
#ifndef FG_PACK_PF
#define FG_PACK_PF 1
#endif
static void pack_copy_slivers(float *dst, int W, const float *src, int64_t ld, int64_t n, int64_t kc, int64_t s0,
                              int64_t s1) {
    const int64_t wlo = s0 * W, whi = s1 * W < n ? s1 * W : n;
    for (int64_t k0 = 0; k0 < kc; k0 += FG_PACK_KB) {
        const int64_t kb = kc - k0 < FG_PACK_KB ? kc - k0 : FG_PACK_KB;
#if FG_PACK_PF
        /* the next chunk's rows, one prefetch per cache line */
        for (int64_t k = k0 + FG_PACK_KB; k < k0 + 2 * FG_PACK_KB && k < kc; k++)
            for (int64_t w = wlo; w < whi; w += 16) __builtin_prefetch(src + k * ld + w, 0, 3);
#else
        (void)wlo, (void)whi;
#endif
        for (int64_t s = s0; s < s1; s++) {
            const int64_t w0 = s * W;
            const int nv = (int)(n - w0 < W ? n - w0 : W);
            pack_copy(dst + s * W * kc + k0 * W, W, src + k0 * ld + w0, ld, nv, kb);
        }
    }
}

/* pack rows [i0, i0+mc) x [p0, p0+kc) of op(A), slivers [s0, s1), into Ap */
static void pack_a(const fg_gemm_problem *p, float *Ap, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
                   int64_t s0, int64_t s1) {
    if (!p->pack_a && p->trans_a) { /* A stored K x M: the MR values of one k are contiguous */
        pack_copy_slivers(Ap, FG_MR, p->A + p0 * p->lda + i0, p->lda, mc, kc, s0, s1);
        return;
    }
    for (int64_t s = s0; s < s1; s++) {
        int64_t r0 = s * FG_MR;
        int nv = (int)(mc - r0 < FG_MR ? mc - r0 : FG_MR);
        float *dst = Ap + s * FG_MR * kc;
        if (p->pack_a)
            p->pack_a(p->pack_a_ctx, dst, FG_MR, p->a_off + i0 + r0, nv, p0, kc);
        else if (p->trans_a) /* A stored K x M: the MR values of one k are contiguous */
            pack_copy(dst, FG_MR, p->A + p0 * p->lda + i0 + r0, p->lda, nv, kc);
        else
            pack_transpose(dst, FG_MR, p->A + (i0 + r0) * p->lda + p0, p->lda, nv, kc);
    }
}

/* pack columns [j0, j0+nc) x rows [p0, p0+kc) of op(B), slivers [s0, s1), into Bp */
static void pack_b(const fg_gemm_problem *p, float *Bp, int64_t j0, int64_t nc, int64_t p0, int64_t kc,
                   int64_t s0, int64_t s1) {
    if (!p->pack_b && !p->trans_b) { /* B stored K x N: the NR values of one k are contiguous */
        pack_copy_slivers(Bp, FG_NR, p->B + p0 * p->ldb + j0, p->ldb, nc, kc, s0, s1);
        return;
    }
    for (int64_t s = s0; s < s1; s++) {
        int64_t c0 = s * FG_NR;
        int nv = (int)(nc - c0 < FG_NR ? nc - c0 : FG_NR);
        float *dst = Bp + s * FG_NR * kc;
        if (p->pack_b)
            p->pack_b(p->pack_b_ctx, dst, FG_NR, p->b_off + j0 + c0, nv, p0, kc);
        else if (p->trans_b) /* B stored N x K: each column of op(B) is contiguous in k */
            pack_transpose(dst, FG_NR, p->B + (j0 + c0) * p->ldb + p0, p->ldb, nv, kc);
        else
            pack_copy(dst, FG_NR, p->B + p0 * p->ldb + j0 + c0, p->ldb, nv, kc);
    }
}

/* The source of the A block packed after this one, prefetched into L2 while
 * the macro kernel runs (op(A) = A^T copied by pack_a only: rows of `width`
 * contiguous floats, `rows` of them, ld apart). Copy packing is a pass of
 * its own that waits on memory when A is large and used by few B slivers:
 * the conv dW shape 576x64x8192 (A^T streams 19 MB through 2 slivers) spent
 * 27.5% of its time there. Spread over the block's micro-kernel calls, the
 * lines arrive while the FMAs run. Zen 4, one thread, ukernel_probe split,
 * 5 interleaved runs each: pack_a 29-30% -> 16-18% of the time, the macro
 * kernel 114 -> 108 GFLOP/s (the prefetches take slots), in all 77-91 ->
 * 86-91 GFLOP/s: the gain is in the runs where memory is contended
 * (bench_gemm compare conv-dW: 82-90 -> 87-93). An A that fits L2 (the
 * MLP dW 784x128x128) loses ~1% and is left alone (FG_PF_A_MIN). No effect
 * on the arithmetic. */
#ifndef FG_PF_A_MIN
#define FG_PF_A_MIN (1 << 18) /* floats: only an A bigger than a 1 MiB L2 */
#endif
typedef struct {
    const float *src;
    int64_t ld, width, rows;
} next_a;

static next_a next_a_block(const fg_gemm_problem *p, int64_t ic, int64_t mc, int64_t mc_std, int64_t pc,
                           int64_t kc, int64_t kc_std) {
    next_a n = {NULL, 0, 0, 0};
    if (p->pack_a || !p->trans_a || p->M * p->K < FG_PF_A_MIN) return n;
    if (ic + mc < p->M) {
        n.src = p->A + pc * p->lda + ic + mc;
        n.width = p->M - ic - mc < mc_std ? p->M - ic - mc : mc_std;
        n.rows = kc;
    } else if (pc + kc < p->K) {
        n.src = p->A + (pc + kc) * p->lda;
        n.width = p->M < mc_std ? p->M : mc_std;
        n.rows = p->K - pc - kc < kc_std ? p->K - pc - kc : kc_std;
    }
    n.ld = p->lda;
    return n;
}

/* rows [r0, r1) of the next A block's source, one prefetch per cache line */
static void prefetch_rows(const next_a *n, int64_t r0, int64_t r1) {
    for (int64_t k = r0; k < r1; k++) {
        const char *a = (const char *)(n->src + k * n->ld), *e = (const char *)(n->src + k * n->ld + n->width);
        for (const char *q = (const char *)((uintptr_t)a & ~(uintptr_t)63); q < e; q += 64) __builtin_prefetch(q, 0, 2);
    }
}

/* C block [i0, i0+mc) x [j0 + s0*NR, j0 + min(s1*NR, nc)) from packed A and B
 * (pf: the next A block to prefetch meanwhile, NULL or empty: none) */
static void macro_kernel(const fg_gemm_problem *p, const float *Ap, const float *Bp, int64_t i0, int64_t mc,
                         int64_t j0, int64_t nc, int64_t kc, int64_t s0, int64_t s1, const fg_ep *ep,
                         const next_a *pf) {
    const int with_bias = ep->final && p->bias != NULL;
    const int with_z = ep->final && p->Z != NULL;
    const int64_t calls = (s1 - s0) * CEIL_DIV(mc, FG_MR);
    const int prefetch = pf && pf->src && calls > 0;
    int64_t call = 0;
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
            /* the tile after this one: the next MR rows, or the top of the next sliver */
            const float *cn = r + FG_MR < mc ? c + FG_MR * p->ldc : p->C + i0 * p->ldc + j + FG_NR;
            if (prefetch) {
                prefetch_rows(pf, pf->rows * call / calls, pf->rows * (call + 1) / calls);
                call++;
            }
            if (mr == FG_MR && nr == FG_NR) {
                FG_UKERNEL(kc, a, b, c, p->ldc, z, p->ldz, bias, ep, cn);
                continue;
            }
            /* edge tile: the shortest kernel covering mr rows (ukernel_rows), on C
               itself when it covers exactly mr rows and all NR columns, else on a
               local copy whose valid part is written back */
            int mk = FG_MR;
            fg_ukernel_fn kern = FG_UKERNEL;
            for (int t = 1; t < FG_MR; t++) {
                fg_ukernel_fn k2 = ukernel_rows(t);
                if (k2 && t >= mr) {
                    kern = k2;
                    mk = t;
                    break;
                }
            }
            if (mk == mr && nr == FG_NR) {
                kern(kc, a, b, c, p->ldc, z, p->ldz, bias, ep, cn);
                continue;
            }
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
            kern(kc, a, b, tc, FG_NR, z ? tz : NULL, FG_NR, bias ? tb : NULL, ep, tc);
            for (int i = 0; i < mr; i++) {
                memcpy(c + i * p->ldc, tc + i * FG_NR, (size_t)nr * sizeof(float));
                if (z) memcpy(z + i * p->ldz, tz + i * FG_NR, (size_t)nr * sizeof(float));
            }
        }
    }
}

/* The packed B sliver run of K block kb, columns from jc (a multiple of NR)
 * of a pre-packed op(B) (fg_gemm_packb): no packing at all. */
static const float *prepacked_b(const fg_gemm_problem *p, int64_t kc_std, int64_t kb, int64_t jc, int64_t kc) {
    return p->Bpk + kb * kc_std * p->bpk_n + (p->b_off + jc) / FG_NR * FG_NR * kc;
}

/* The five loops on one thread over a sub-problem (a row or column range of
 * the caller's C, with A/B/bias/Z offset accordingly). Ap and Bp are this
 * thread's own packing buffers (MC x KC and KC x NC at most; Bp unused with
 * a pre-packed B). */
static void gemm_serial(const fg_gemm_problem *p, int64_t kc_std, int64_t nkb, float *Ap, float *Bp) {
    const int64_t M = p->M, N = p->N, K = p->K;
    const int64_t mc_std = balanced_block(M, FG_MC, FG_MR);
    const int64_t nc_std = balanced_block(N, FG_NC, FG_NR);
    for (int64_t jc = 0; jc < N; jc += nc_std) {         /* jc: NC panels of op(B) */
        const int64_t nc = N - jc < nc_std ? N - jc : nc_std;
        const int64_t ns = CEIL_DIV(nc, FG_NR);
        for (int64_t kb = 0; kb < nkb; kb++) {             /* pc: KC blocks of K */
            const int64_t pc = kb * kc_std;
            const int64_t kc = K - pc < kc_std ? K - pc : kc_std;
            const fg_ep ep = {p->alpha, kb == 0 ? p->beta : 1.0f, kb == nkb - 1, p->act};
            const float *Bk;
            if (p->Bpk) {
                Bk = prepacked_b(p, kc_std, kb, jc, kc);
            } else {
                pack_b(p, Bp, jc, nc, pc, kc, 0, ns);
                Bk = Bp;
            }
            for (int64_t ic = 0; ic < M; ic += mc_std) {   /* ic: MC blocks of op(A) */
                const int64_t mc = M - ic < mc_std ? M - ic : mc_std;
                pack_a(p, Ap, ic, mc, pc, kc, 0, CEIL_DIV(mc, FG_MR));
                const next_a pf = next_a_block(p, ic, mc, mc_std, pc, kc, kc_std);
                macro_kernel(p, Ap, Bk, ic, mc, jc, nc, kc, 0, ns, &ep, &pf);
            }
        }
    }
}

#if FG_HAVE_OPENMP
/* Thread tid of nth with a shared B panel (rows split): for each NC panel
 * and K block the team packs one B panel together (each thread a contiguous
 * share of its NR slivers) into one of two shared buffers, meets at a
 * barrier, then each thread runs its own rows (sub-problem `mine`, its own A
 * blocks) against it. Two buffers alternate, so one barrier per panel is
 * enough: a thread packing panel i+1 has passed barrier i, which every
 * thread reaches only after finishing panel i-1 — the panel that buffer held.
 * The K blocks and each C element's FMA chain are those of gemm_serial, so
 * the bits are the same. Every thread runs every barrier (even with no rows). */
static void gemm_shared(const fg_gemm_problem *p, const fg_gemm_problem *mine, int tid, int nth, int64_t kc_std,
                        int64_t nkb, float *Ap, float *const Bsh[2]) {
    const int64_t N = p->N, K = p->K, M = mine->M;
    const int64_t mc_std = balanced_block(M > 0 ? M : 1, FG_MC, FG_MR);
    const int64_t nc_std = balanced_block(N, FG_NC, FG_NR);
    int64_t it = 0;
    for (int64_t jc = 0; jc < N; jc += nc_std) {
        const int64_t nc = N - jc < nc_std ? N - jc : nc_std;
        const int64_t ns = CEIL_DIV(nc, FG_NR);
        for (int64_t kb = 0; kb < nkb; kb++, it++) {
            const int64_t pc = kb * kc_std;
            const int64_t kc = K - pc < kc_std ? K - pc : kc_std;
            const fg_ep ep = {p->alpha, kb == 0 ? p->beta : 1.0f, kb == nkb - 1, p->act};
            float *Bp = Bsh[it & 1];
            pack_b(p, Bp, jc, nc, pc, kc, ns * tid / nth, ns * (tid + 1) / nth);
#pragma omp barrier
            for (int64_t ic = 0; ic < M; ic += mc_std) {
                const int64_t mc = M - ic < mc_std ? M - ic : mc_std;
                pack_a(mine, Ap, ic, mc, pc, kc, 0, CEIL_DIV(mc, FG_MR));
                const next_a pf = next_a_block(mine, ic, mc, mc_std, pc, kc, kc_std);
                macro_kernel(mine, Ap, Bp, ic, mc, jc, nc, kc, 0, ns, &ep, &pf);
            }
        }
    }
}
#endif

/* The sub-problem of thread tid of nth: a range of rows of C (split_m) or of
 * columns, cut at MR / NR multiples. */
static fg_gemm_problem sub_problem(const fg_gemm_problem *p, int split_m, int tid, int nth) {
    fg_gemm_problem q = *p;
    if (split_m) {
        const int64_t units = CEIL_DIV(p->M, FG_MR);
        int64_t lo = units * tid / nth * FG_MR, hi = units * (tid + 1) / nth * FG_MR;
        if (hi > p->M) hi = p->M;
        if (lo > hi) lo = hi;
        q.M = hi - lo;
        q.C += lo * p->ldc;
        if (q.Z) q.Z += lo * p->ldz;
        if (p->pack_a)
            q.a_off += lo;
        else
            q.A += p->trans_a ? lo : lo * p->lda;
    } else {
        const int64_t units = CEIL_DIV(p->N, FG_NR);
        int64_t lo = units * tid / nth * FG_NR, hi = units * (tid + 1) / nth * FG_NR;
        if (hi > p->N) hi = p->N;
        if (lo > hi) lo = hi;
        q.N = hi - lo;
        q.C += lo;
        if (q.Z) q.Z += lo;
        if (q.bias) q.bias += lo;
        if (p->pack_b || p->Bpk)
            q.b_off += lo;
        if (!p->pack_b)
            q.B += p->trans_b ? lo * p->ldb : lo;
    }
    return q;
}

/* Split rows or columns between nt threads? The one whose busiest thread
 * does the least: its padded tile area plus what it packs (its share of the
 * split operand and all of the other one), per unit of K. E.g. an MLP batch
 * of 128 rows x 128 columns on AVX-512 splits the 4 column slivers 2/2
 * rather than the 11 row slivers 6/5. */
static int choose_split(int64_t M, int64_t N, int nt) {
    const int64_t um = CEIL_DIV(M, FG_MR), un = CEIL_DIV(N, FG_NR);
    const int64_t rows = CEIL_DIV(um, nt) * FG_MR, cols = CEIL_DIV(un, nt) * FG_NR;
    const int64_t cost_m = rows * un * FG_NR + un * FG_NR + rows;
    const int64_t cost_n = cols * um * FG_MR + um * FG_MR + cols;
    return cost_m <= cost_n;
}

/* Unpacked single-thread path or the packed driver? Decided by shape only
 * (never by the thread count), so results stay thread-count independent. */
static int use_small(const fg_gemm_problem *p) {
    if (p->pack_a || p->pack_b) return 0; /* virtual operands: packed path only */
    if (p->path) return p->path >= 2;
    if (p->trans_b) return small_wins_bt(p->M, p->N, p->K);
    return small_wins(p->M, p->N, p->K);
}

/* op(B) = B^T for the unpacked path: copy it once into row-major K x N
 * (Bt[k*N + j] = B[j*ldb + k]); 8 x 8 register transposes on AVX2 / AVX-512
 * (the 10-class dX: 128 x 10 -> 10 x 128 went from ~0.9 us, a fifth of the
 * product, to ~0.2 us), else 16 x 16 blocks so both sides stay in cache */
static void transpose_b(float *FG_RESTRICT Bt, const float *FG_RESTRICT B, int64_t ldb, int64_t N, int64_t K) {
#if FG_HAVE_COLS
    transpose_blocked(Bt, N, B, ldb, N, K);
#else
    for (int64_t j0 = 0; j0 < N; j0 += 16)
        for (int64_t k0 = 0; k0 < K; k0 += 16) {
            const int64_t j1 = j0 + 16 < N ? j0 + 16 : N, k1 = k0 + 16 < K ? k0 + 16 : K;
            for (int64_t j = j0; j < j1; j++)
                for (int64_t k = k0; k < k1; k++) Bt[k * N + j] = B[j * ldb + k];
        }
#endif
}

/* Rows split between nt threads: share one packed B panel (gemm_shared)
 * instead of each thread packing all of op(B)? Sharing saves (nt-1) K N
 * packed floats per call and keeps one copy of the panel in the shared L3,
 * for one barrier per KC x NC panel. FASTGRAD_GEMM_SHARE=0/1 forces it. */
#ifndef FG_SHARE_MIN_KN
#define FG_SHARE_MIN_KN (256 * 256)
#endif
static int share_wins(const fg_gemm_problem *p, int64_t M, int64_t N, int64_t K, int nt) {
    (void)M, (void)nt;
    if (p->share) return p->share > 0;
    return K * N >= FG_SHARE_MIN_KN;
}

/* Threads: each thread computes a disjoint block of C — a range of rows
 * (when op(A) has at least as many MR slivers as op(B) has NR slivers) or a
 * range of NR-column slivers — with its own A packing buffer. Its B panels:
 *   - shared (rows split and share_wins): the team packs each B panel once
 *     into a shared buffer, one barrier per panel (gemm_shared);
 *   - else each thread packs what it needs itself, no barriers inside the
 *     call, only the join at the end; the price is packing the shared
 *     operand once per thread (B panels when splitting rows, A blocks when
 *     splitting columns): (nt-1) K N or (nt-1) M K extra copies against
 *     M N K / nt multiply-adds per thread. Barriers cost microseconds each,
 *     and whole scheduler time slices when the machine is oversubscribed,
 *     hence only for big enough B panels;
 *   - pre-packed B (fg_gemm_prepacked): nothing to pack, no barriers. */
static int run_tiles(const fg_gemm_problem *p, int nthreads, fg_gemm_ws_fn ws) {
    const int64_t M = p->M, N = p->N, K = p->K;
    if (use_small(p)) {
        fg_gemm_problem q = *p;
#if FG_HAVE_COLS
        /* along M (gemm_cols.h) or along N (gemm_small.h)? */
        const int cols = p->path == 3 || (p->path == 0 && cols_wins(M, N, K, p->trans_a));
#else
        const int cols = 0;
#endif
        /* one workspace call: op(B)'s row-major copy, then op(A)'s panel */
        const int64_t b_floats = p->trans_b ? ALIGN_UP(N * K, 16) : 0;
        const int64_t a_floats = cols ? FG_COLS_P * K : 0;
        float *w = NULL;
        if (b_floats + a_floats > 0) {
            w = (float *)ws((size_t)(b_floats + a_floats + 16) * sizeof(float));
            if (!w) return FG_ERR_NOMEM;
        }
        if (p->trans_b) { /* the unpacked paths read rows of op(B): transpose it first */
            transpose_b(w, p->B, p->ldb, N, K);
            q.B = w;
            q.ldb = N;
            q.trans_b = 0;
        }
        unsigned fp = fg_fpstate_enter();
#if FG_HAVE_COLS
        if (cols)
            gemm_cols(&q, w ? w + b_floats : NULL);
        else
#endif
            gemm_small(&q);
        fg_fpstate_leave(fp);
        return FG_OK;
    }
    /* K blocks depend on K only: the same for every thread count. K == 0
       still runs one empty block (C = beta C, then the epilogue). */
    const int64_t nkb = K > 0 ? CEIL_DIV(K, FG_KC) : 1;
    const int64_t kc_std = K > 0 ? CEIL_DIV(K, nkb) : 0;
    int nt = fg_threads_for(M * N * (K > 0 ? K : 1), FG_GEMM_GRAIN, nthreads);
    if (nt < 1) nt = 1;
    const int split_m = choose_split(M, N, nt);
    const int64_t units = split_m ? CEIL_DIV(M, FG_MR) : CEIL_DIV(N, FG_NR);
    if (nt > units) nt = (int)units;
#if !FG_HAVE_OPENMP
    nt = 1;
#endif

    const int share = nt > 1 && split_m && !p->Bpk && share_wins(p, M, N, K, nt);

    /* per-thread buffers: one A block and one B panel (none with a pre-packed
       B; with a shared B two panels for the team), 64-byte aligned */
    const int64_t kcap = kc_std > 0 ? kc_std : 1;
    const int64_t mpad = ALIGN_UP(split_m ? CEIL_DIV(M, nt) + FG_MR : M, FG_MR);
    const int64_t npad = ALIGN_UP(split_m ? N : CEIL_DIV(N, nt) + FG_NR, FG_NR);
    const int64_t a_floats = ALIGN_UP((mpad < FG_MC ? mpad : FG_MC) * kcap + FG_PACK_SLACK, 16);
    const int64_t b_floats = p->Bpk ? 0 : ALIGN_UP((npad < FG_NC ? npad : FG_NC) * kcap + FG_PACK_SLACK, 16);
    const int64_t total = share ? nt * a_floats + 2 * b_floats : nt * (a_floats + b_floats);
    float *w = (float *)ws((size_t)total * sizeof(float));
    if (!w) return FG_ERR_NOMEM;

#if FG_HAVE_OPENMP
    if (share) {
        float *const Bsh[2] = {w + nt * a_floats, w + nt * a_floats + b_floats};
#pragma omp parallel num_threads(nt)
        {
            unsigned fp = fg_fpstate_enter();
            const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
            fg_gemm_problem q = sub_problem(p, 1, tid, nth);
            gemm_shared(p, &q, tid, nth, kc_std, nkb, w + tid * a_floats, Bsh);
            fg_fpstate_leave(fp);
        }
        return FG_OK;
    }
    if (nt > 1) {
#pragma omp parallel num_threads(nt)
        {
            unsigned fp = fg_fpstate_enter();
            /* the team may be smaller than asked (nested region, limits) */
            const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
            fg_gemm_problem q = sub_problem(p, split_m, tid, nth);
            float *mine = w + tid * (a_floats + b_floats);
            if (q.M > 0 && q.N > 0) gemm_serial(&q, kc_std, nkb, mine, mine + a_floats);
            fg_fpstate_leave(fp);
        }
        return FG_OK;
    }
#endif
    unsigned fp = fg_fpstate_enter();
    gemm_serial(p, kc_std, nkb, w, w + a_floats);
    fg_fpstate_leave(fp);
    return FG_OK;
}

/* The activation uses the kernels family's code (gemm_act.c), so fused
 * gemm + bias + act == gemm + bias, then fg_act_forward, bit for bit on every
 * ISA: lane-local ones (fg_gemm_act_in_tile) per finished tile (still in L1), gelu / gelu_tanh
 * (whose vectors take one path for all lanes) after the whole product over
 * the finished C in place, grouped into vectors as fg_act_forward groups them. */
int FG_ISA_FN(fg_gemm_run)(const fg_gemm_problem *p, int nthreads, fg_gemm_ws_fn ws) {
    fg_gemm_problem q = *p;
    if (!fg_gemm_act_in_tile(p->act)) q.act = FG_ACT_LINEAR;
    int st = run_tiles(&q, nthreads, ws);
    if (q.act == p->act) return st;
    if (st != FG_OK || p->act == FG_ACT_LINEAR) return st;
    return FG_ISA_FN(fg_gemm_act)(p->C, p->ldc, p->M, p->N, p->act, nthreads);
}

void FG_ISA_FN(fg_gemm_blocking)(int *mr, int *nr, int *mc, int *kc, int *nc) {
    if (mr) *mr = FG_MR;
    if (nr) *nr = FG_NR;
    if (mc) *mc = FG_MC;
    if (kc) *kc = FG_KC;
    if (nc) *nc = FG_NC;
}

/* ---- pre-packed op(B) (fg_gemm_packb): K blocks as run_tiles cuts them, each
 * holding all NR slivers of op(B) side by side (kc x NR each, zero-padded). */
int64_t FG_ISA_FN(fg_gemm_packb_size)(int64_t N, int64_t K, int64_t *kc_std, int64_t *nkb, int64_t *npad) {
    const int64_t nb = K > 0 ? CEIL_DIV(K, FG_KC) : 1;
    const int64_t kcs = K > 0 ? CEIL_DIV(K, nb) : 0;
    const int64_t np = ALIGN_UP(N, FG_NR);
    if (kc_std) *kc_std = kcs;
    if (nkb) *nkb = nb;
    if (npad) *npad = np;
    return np * K + FG_PACK_SLACK;
}

void FG_ISA_FN(fg_gemm_packb_run)(float *dst, const float *B, int64_t ldb, int64_t N, int64_t K, int trans_b,
                                  int nthreads) {
    int64_t kc_std, nkb, npad;
    FG_ISA_FN(fg_gemm_packb_size)(N, K, &kc_std, &nkb, &npad);
    fg_gemm_problem p;
    memset(&p, 0, sizeof p);
    p.B = B;
    p.ldb = ldb;
    p.trans_b = trans_b != 0;
    p.N = N;
    p.K = K;
    const int64_t ns = npad / FG_NR;
    int nt = fg_threads_for(N * K, (int64_t)1 << 18, nthreads);
    (void)nt;
#if FG_HAVE_OPENMP
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1)
#endif
    for (int64_t kb = 0; kb < nkb; kb++) {
        const int64_t pc = kb * kc_std;
        const int64_t kc = K - pc < kc_std ? K - pc : kc_std;
        pack_b(&p, dst + pc * npad, 0, N, pc, kc, 0, ns);
    }
}
