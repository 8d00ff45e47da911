/* ukernel_probe.c — where the packed GEMM's time goes, in C, no Python:
 *   peak    the FMA peak of this binary's ISA (MR x NR/VW accumulator chains)
 *   ukr     the micro-kernel alone on one packed A sliver (MR x kc) and one
 *           packed B sliver (kc x NR), both L1-resident, C tile read+written
 *   macro   macro_kernel on one real MC x kc A block and a kc x nc B panel
 *           (what gemm_serial does between two packings)
 *   split   gemm_serial's loops on one thread with a timer around every
 *           pack_b / pack_a / macro_kernel call: packing share of the total
 *   full    fg_gemm_run (the driver as the library runs it) on 1 and T threads
 * Every figure is the minimum over repetitions (shared, noisy machine).
 *
 * It #includes csrc/gemm/gemm_driver.c, so it measures the library's own
 * micro-kernel, packing and driver loops with the library's compile flags
 * (built by run_ukernel_probe.py: -O3 -fno-math-errno -fno-trapping-math plus
 * the ISA flags of cmake/FastgradISA.cmake). Blocking can be overridden at
 * build time (-DFG_KC=... -DFG_MC=... -DFG_NC=... -DFG_UKR_UNROLL=...).
 *
 *   ukernel_probe M N K T   -> lines "key value" (GFLOP/s, ms, %)
 */
#if defined(__AVX512F__)
#define FG_ISA_SUFFIX _avx512
#elif defined(__AVX2__)
#define FG_ISA_SUFFIX _avx2
#else
#define FG_ISA_SUFFIX _baseline
#endif
#include "gemm/gemm_driver.c"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* the library pieces the driver links against, stubbed (no activation,
   no flush-denormal, never a forked child) */
void FG_ISA_FN(fg_gemm_act_tile)(float *c, int64_t ldc, int rows, int cols, int act) {
    (void)c, (void)ldc, (void)rows, (void)cols, (void)act;
}
int FG_ISA_FN(fg_gemm_act)(float *C, int64_t ldc, int64_t M, int64_t N, int act, int nthreads) {
    (void)C, (void)ldc, (void)M, (void)N, (void)act, (void)nthreads;
    return FG_OK;
}
unsigned fg_fpstate_enter(void) { return 0; }
void fg_fpstate_leave(unsigned saved) { (void)saved; }
int fg_in_forked_child(void) { return 0; }

/* one-thread figures use this thread's CPU time (time it was preempted by
   the neighbours does not count); the multi-thread full run uses wall time */
static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static double wall(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float *falloc(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, (n + 64) * sizeof(float)) != 0) abort();
    float *f = (float *)p;
    for (size_t i = 0; i < n + 64; i++) f[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
    return f;
}

/* per-calling-thread grow-only workspace, like gemm.c's */
static _Thread_local void *g_ws;
static _Thread_local size_t g_ws_bytes;
static void *probe_ws(size_t bytes) {
    if (g_ws_bytes >= bytes) return g_ws;
    free(g_ws);
    if (posix_memalign(&g_ws, 64, bytes) != 0) return NULL;
    g_ws_bytes = bytes;
    return g_ws;
}

static volatile float g_sink;

/* FMA peak with the micro-kernel's own accumulator count */
static double peak_gflops(void) {
    double best = 1e30;
    const long iters = 50000; /* short reps, many: some land in an uncontended slice */
    for (int rep = 0; rep < 400; rep++) {
        vf acc[FG_MR * 2];
        for (int i = 0; i < FG_MR * 2; i++) acc[i] = vf_set1(0.001f * (float)i);
        const vf a = vf_set1(0.999999f), b = vf_set1(1e-7f);
        double t = now();
        for (long it = 0; it < iters; it++) {
#pragma GCC unroll 32
            for (int i = 0; i < FG_MR * 2; i++) acc[i] = vf_fma(acc[i], a, b);
        }
        t = now() - t;
        float s[FG_VW];
        vf_storeu(s, acc[0]);
        for (int i = 1; i < FG_MR * 2; i++) {
            float u[FG_VW];
            vf_storeu(u, acc[i]);
            s[0] += u[0];
        }
        g_sink = s[0];
        if (t < best) best = t;
    }
    return 2.0 * FG_VW * FG_MR * 2 * (double)iters / best / 1e9;
}

/* micro-kernel alone: one A sliver, one B sliver, a C tile; all in L1 */
static double ukr_gflops(int64_t kc) {
    float *a = falloc((size_t)(FG_MR * kc)), *b = falloc((size_t)(FG_NR * kc));
    float *c = falloc(FG_MR * FG_NR);
    const fg_ep ep = {1.0f, 1.0f, 0, FG_ACT_LINEAR};
    const int inner = (int)(4000000 / (kc * FG_MR * FG_NR)) + 1;
    double best = 1e30;
    for (int rep = 0; rep < 200; rep++) {
        double t = now();
        for (int i = 0; i < inner; i++) FG_UKERNEL(kc, a, b, c, FG_NR, NULL, 0, NULL, &ep, c);
        t = now() - t;
        if (t < best) best = t;
    }
    g_sink = c[0];
    free(a), free(b), free(c);
    return 2.0 * FG_MR * FG_NR * (double)kc * inner / best / 1e9;
}

/* macro_kernel on a real A block (mc x kc) and B panel (kc x nc), C mc x nc
 * with row stride ldc: the inner two loops of the driver, packed data warm */
static double macro_gflops(int64_t mc, int64_t nc, int64_t kc, int64_t ldc) {
    fg_gemm_problem p;
    memset(&p, 0, sizeof p);
    float *Ap = falloc((size_t)(ALIGN_UP(mc, FG_MR) * kc + FG_PACK_SLACK));
    float *Bp = falloc((size_t)(ALIGN_UP(nc, FG_NR) * kc + FG_PACK_SLACK));
    p.C = falloc((size_t)(mc * ldc));
    p.ldc = ldc;
    const fg_ep ep = {1.0f, 1.0f, 0, FG_ACT_LINEAR};
    double best = 1e30;
    for (int rep = 0; rep < 60; rep++) {
        double t = now();
        macro_kernel(&p, Ap, Bp, 0, mc, 0, nc, kc, 0, CEIL_DIV(nc, FG_NR), &ep, NULL);
        t = now() - t;
        if (t < best) best = t;
    }
    free(Ap), free(Bp), free(p.C);
    return 2.0 * (double)mc * nc * kc / best / 1e9;
}

/* macro_kernel for several (MC, KC) pairs at the same MC x KC budget,
 * interleaved round by round so all see the same neighbours; min per pair */
static void macro_sweep(int64_t nc, int64_t ldc) {
    enum { NCFG = 5 };
    const int64_t kcs[NCFG] = {128, 192, 256, 320, 384};
    double best[NCFG];
    fg_gemm_problem p;
    memset(&p, 0, sizeof p);
    const int64_t amax = 512 * 384, bmax = (ALIGN_UP(nc, FG_NR) + FG_NR) * 384;
    float *Ap = falloc((size_t)amax), *Bp = falloc((size_t)bmax);
    p.C = falloc((size_t)(512 * ldc));
    p.ldc = ldc;
    const fg_ep ep = {1.0f, 1.0f, 0, FG_ACT_LINEAR};
    for (int i = 0; i < NCFG; i++) best[i] = 1e30;
    for (int rep = 0; rep < 150; rep++)
        for (int i = 0; i < NCFG; i++) {
            const int64_t kc = kcs[i], mc = ALIGN_UP(FG_MC * FG_KC / kc, FG_MR);
            double t = now();
            macro_kernel(&p, Ap, Bp, 0, mc, 0, nc, kc, 0, CEIL_DIV(nc, FG_NR), &ep, NULL);
            t = now() - t;
            t /= 2.0 * (double)mc * nc * kc;
            if (t < best[i]) best[i] = t;
        }
    for (int i = 0; i < NCFG; i++)
        printf("macro_sweep kc%lld mc%lld nc%lld ldc%lld %.1f\n", (long long)kcs[i],
               (long long)ALIGN_UP(FG_MC * FG_KC / kcs[i], FG_MR), (long long)nc, (long long)ldc, 1.0 / best[i] / 1e9);
    free(Ap), free(Bp), free(p.C);
}

/* macro_kernel with C warm (L2) vs C flushed to memory before each call:
 * what bringing C in costs the driver (where each K block re-reads C) */
static void macro_coldc(int64_t mc, int64_t nc, int64_t kc, int64_t ldc) {
    fg_gemm_problem p;
    memset(&p, 0, sizeof p);
    float *Ap = falloc((size_t)(ALIGN_UP(mc, FG_MR) * kc + FG_PACK_SLACK));
    float *Bp = falloc((size_t)(ALIGN_UP(nc, FG_NR) * kc + FG_PACK_SLACK));
    p.C = falloc((size_t)(mc * ldc));
    p.ldc = ldc;
    const fg_ep ep = {1.0f, 1.0f, 0, FG_ACT_LINEAR};
    double best[2] = {1e30, 1e30};
    for (int rep = 0; rep < 200; rep++)
        for (int cold = 0; cold < 2; cold++) {
            if (cold) {
                for (int64_t i = 0; i < mc; i++)
                    for (int64_t j = 0; j < nc; j += 16) _mm_clflush(p.C + i * ldc + j);
                _mm_mfence();
            }
            double t = now();
            macro_kernel(&p, Ap, Bp, 0, mc, 0, nc, kc, 0, CEIL_DIV(nc, FG_NR), &ep, NULL);
            t = now() - t;
            if (t < best[cold]) best[cold] = t;
        }
    printf("macro_c_warm %.1f macro_c_cold %.1f (mc %lld nc %lld kc %lld)\n", 2.0 * mc * nc * kc / best[0] / 1e9,
           2.0 * mc * nc * kc / best[1] / 1e9, (long long)mc, (long long)nc, (long long)kc);
    free(Ap), free(Bp), free(p.C);
}

/* gemm_serial with timers: returns total, fills pack_b / pack_a / macro time */
static double serial_split(const fg_gemm_problem *p, double *tb, double *ta, double *tm) {
    const int64_t M = p->M, N = p->N, K = p->K;
    const int64_t nkb = CEIL_DIV(K, FG_KC), kc_std = CEIL_DIV(K, nkb);
    const int64_t mc_std = balanced_block(M, FG_MC, FG_MR);
    const int64_t nc_std = balanced_block(N, FG_NC, FG_NR);
    float *Ap = probe_ws((size_t)(FG_MC * kc_std + FG_PACK_SLACK + FG_NC * kc_std + FG_PACK_SLACK + 64) * 4);
    float *Bp = Ap + ALIGN_UP(FG_MC * kc_std + FG_PACK_SLACK, 16);
    *tb = *ta = *tm = 0;
    double t0 = now();
    for (int64_t jc = 0; jc < N; jc += nc_std) {
        const int64_t nc = N - jc < nc_std ? N - jc : nc_std;
        const int64_t ns = CEIL_DIV(nc, FG_NR);
        for (int64_t kb = 0; kb < nkb; kb++) {
            const int64_t pc = kb * kc_std;
            const int64_t kc = K - pc < kc_std ? K - pc : kc_std;
            const fg_ep ep = {p->alpha, kb == 0 ? p->beta : 1.0f, kb == nkb - 1, p->act};
            double t = now();
            pack_b(p, Bp, jc, nc, pc, kc, 0, ns);
            *tb += now() - t;
            for (int64_t ic = 0; ic < M; ic += mc_std) {
                const int64_t mc = M - ic < mc_std ? M - ic : mc_std;
                t = now();
                pack_a(p, Ap, ic, mc, pc, kc, 0, CEIL_DIV(mc, FG_MR));
                double t1 = now();
                const next_a pf = next_a_block(p, ic, mc, mc_std, pc, kc, kc_std);
                macro_kernel(p, Ap, Bp, ic, mc, jc, nc, kc, 0, ns, &ep, &pf);
                *ta += t1 - t;
                *tm += now() - t1;
            }
        }
    }
    return now() - t0;
}

int main(int argc, char **argv) {
    const int64_t M = argc > 1 ? atoll(argv[1]) : 1024, N = argc > 2 ? atoll(argv[2]) : 1024;
    const int64_t K = argc > 3 ? atoll(argv[3]) : 1024;
    const int T = argc > 4 ? atoi(argv[4]) : 2;
    const int ta = argc > 5 ? atoi(argv[5]) : 0, tb = argc > 6 ? atoi(argv[6]) : 0;
    const double fl = 2.0 * (double)M * N * K;
    printf("isa %s MR %d NR %d MC %d KC %d NC %d unroll %d pf_next %d\n",
#if defined(__AVX512F__)
           "avx512",
#else
           "avx2",
#endif
           FG_MR, FG_NR, FG_MC, FG_KC, FG_NC, FG_UKR_UNROLL, FG_UKR_PF_NEXT);
    const int only_full = getenv("PROBE_FULL") != NULL; /* just the full runs (A/B loops) */
    const double pk = only_full ? 1.0 : peak_gflops();
    printf("peak_1t %.1f\n", pk);
    const int64_t kcs[] = {64, 128, 192, 256, 320, 384, 512};
    for (size_t i = 0; i < (only_full ? 0 : sizeof kcs / sizeof kcs[0]); i++) {
        double g = ukr_gflops(kcs[i]);
        printf("ukr_kc%lld %.1f (%.1f%%)\n", (long long)kcs[i], g, 100 * g / pk);
    }
    if (!only_full) {
        const int64_t nkb = CEIL_DIV(K, FG_KC), kc = CEIL_DIV(K, nkb);
        const int64_t mc = balanced_block(M, FG_MC, FG_MR), nc = balanced_block(N, FG_NC, FG_NR);
        double g = macro_gflops(mc, nc, kc, N);
        printf("macro_mc%lld_nc%lld_kc%lld %.1f (%.1f%%)\n", (long long)mc, (long long)nc, (long long)kc, g,
               100 * g / pk);
    }
    if (getenv("PROBE_COLDC")) {
        const int64_t nkb = CEIL_DIV(K, FG_KC), kc = CEIL_DIV(K, nkb);
        macro_coldc(balanced_block(M, FG_MC, FG_MR), balanced_block(N, FG_NC, FG_NR), kc, N);
        return 0;
    }
    if (getenv("PROBE_SWEEP")) {
        macro_sweep(N < FG_NC ? N : FG_NC, N);
        macro_sweep(N < FG_NC ? N : FG_NC, N + 16);
        return 0;
    }
    fg_gemm_problem p;
    memset(&p, 0, sizeof p);
    p.M = M, p.N = N, p.K = K, p.alpha = 1.0f, p.beta = 0.0f, p.act = FG_ACT_LINEAR, p.path = 1;
    p.trans_a = ta, p.trans_b = tb;
    p.A = falloc((size_t)(M * K));
    p.B = falloc((size_t)(K * N));
    p.C = falloc((size_t)(M * N));
    p.lda = ta ? M : K, p.ldb = tb ? K : N, p.ldc = N;
    if (!only_full) {
        double best = 1e30, bb = 0, ba = 0, bm = 0;
        for (int rep = 0; rep < (fl < 4e9 ? 30 : 8); rep++) {
            double b, a, m, t = serial_split(&p, &b, &a, &m);
            if (t < best) best = t, bb = b, ba = a, bm = m;
        }
        printf("split_1t total_ms %.2f gflops %.1f (%.1f%%) pack_b %.1f%% pack_a %.1f%% macro %.1f%% "
               "(macro alone %.1f GFLOP/s) other %.1f%%\n",
               1e3 * best, fl / best / 1e9, 100 * fl / best / 1e9 / pk, 100 * bb / best, 100 * ba / best,
               100 * bm / best, fl / bm / 1e9, 100 * (best - bb - ba - bm) / best);
    }
    for (int nt = 1; nt <= T; nt += (T > 1 ? T - 1 : 1)) {
        double best = 1e30;
        for (int rep = 0; rep < (fl < 4e9 ? 60 : 12); rep++) {
            double t = nt == 1 ? now() : wall();
            if (FG_ISA_FN(fg_gemm_run)(&p, nt, probe_ws) != FG_OK) return 1;
            t = (nt == 1 ? now() : wall()) - t;
            if (t < best) best = t;
        }
        printf("full_%dt ms %.2f gflops %.1f (%.1f%% of %d x 1-thread peak)\n", nt, 1e3 * best, fl / best / 1e9,
               100 * fl / best / 1e9 / (pk * nt), nt);
        if (nt == T) break;
    }
    return 0;
}
