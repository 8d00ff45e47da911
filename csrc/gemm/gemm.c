/* gemm.c — public entry points of the GEMM family (compiled once): argument
 * checks, the per-thread packing workspace, and dispatch to the driver copy
 * of the active instruction set (gemm_driver.c, compiled per ISA). */
#include "fg_gemm.h"
#include "gemm_internal.h"

#include <stdlib.h>
#include <time.h>
#if !defined(_WIN32)
#include <pthread.h>
#endif

/* ---- packing workspace ----
 * One grow-only, 64-byte aligned buffer per *calling* thread: concurrent
 * GEMMs from different Python threads never share packing buffers and need
 * no lock; the OpenMP workers of one call use disjoint slices of their
 * caller's buffer. Freed when the calling thread exits. */
typedef struct {
    void *ptr;
    size_t bytes;
} fg_ws;

static void ws_release(fg_ws *w) {
#if defined(_WIN32)
    _aligned_free(w->ptr);
#else
    free(w->ptr);
#endif
    w->ptr = NULL;
    w->bytes = 0;
}

static int ws_grow(fg_ws *w, size_t bytes) {
    if (w->bytes >= bytes) return 1;
    ws_release(w);
    bytes = (bytes + 4095) & ~(size_t)4095; /* round up: fewer regrowths */
#if defined(_WIN32)
    w->ptr = _aligned_malloc(bytes, 64);
#else
    if (posix_memalign(&w->ptr, 64, bytes) != 0) w->ptr = NULL;
#endif
    if (!w->ptr) return 0;
    w->bytes = bytes;
    return 1;
}

#if defined(_WIN32)
static _Thread_local fg_ws g_ws; /* leaked at thread exit on Windows */
static void *gemm_workspace(size_t bytes) { return ws_grow(&g_ws, bytes) ? g_ws.ptr : NULL; }
#else
static pthread_key_t g_ws_key;
static pthread_once_t g_ws_once = PTHREAD_ONCE_INIT;
static int g_ws_key_ok = 0;

static void ws_destroy(void *p) {
    ws_release((fg_ws *)p);
    free(p);
}
static void ws_key_init(void) { g_ws_key_ok = pthread_key_create(&g_ws_key, ws_destroy) == 0; }

static void *gemm_workspace(size_t bytes) {
    pthread_once(&g_ws_once, ws_key_init);
    if (!g_ws_key_ok) return NULL;
    fg_ws *w = (fg_ws *)pthread_getspecific(g_ws_key);
    if (!w) {
        w = (fg_ws *)calloc(1, sizeof *w);
        if (!w) return NULL;
        if (pthread_setspecific(g_ws_key, w) != 0) {
            free(w);
            return NULL;
        }
    }
    return ws_grow(w, bytes) ? w->ptr : NULL;
}
#endif

/* ---- FASTGRAD_GEMM_SHARE: read once; fg_gemm_set_share overrides (tests) */
static int g_share = 2; /* 2: not read yet */

int fg_gemm_share_mode(void) {
    int m = g_share;
    if (m == 2) {
        const char *e = getenv("FASTGRAD_GEMM_SHARE");
        m = (e && e[0] == '0' && e[1] == 0) ? -1 : (e && e[0] == '1' && e[1] == 0) ? 1 : 0;
        g_share = m; /* benign race: every thread computes the same value */
    }
    return m;
}

void fg_gemm_set_share(int mode) { g_share = mode < 0 ? -1 : mode > 0 ? 1 : 0; }

static int dims_ok(int64_t M, int64_t N, int64_t K) { return M >= 0 && N >= 0 && K >= 0; }

/* A matrix stored as rows x cols needs ld >= cols (and a pointer when it has elements). */
static int mat_ok(const void *p, int64_t rows, int64_t cols, int64_t ld) {
    if (rows == 0 || cols == 0) return ld >= 0;
    return p != NULL && ld >= cols;
}

int fg_gemm(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb,
            int64_t M, int64_t N, int64_t K, int trans_a, int trans_b, float alpha, float beta,
            int nthreads) {
    return fg_gemm_path(C, ldc, A, lda, B, ldb, M, N, K, trans_a, trans_b, alpha, beta, nthreads, 0);
}

int fg_gemm_path(float *C, int64_t ldc, const float *A, int64_t lda, const float *B, int64_t ldb,
                 int64_t M, int64_t N, int64_t K, int trans_a, int trans_b, float alpha, float beta,
                 int nthreads, int path) {
    if (!dims_ok(M, N, K)) return FG_ERR_ARG;
    if (!mat_ok(C, M, N, ldc)) return FG_ERR_ARG;
    if (!(trans_a ? mat_ok(A, K, M, lda) : mat_ok(A, M, K, lda))) return FG_ERR_ARG;
    if (!(trans_b ? mat_ok(B, N, K, ldb) : mat_ok(B, K, N, ldb))) return FG_ERR_ARG;
    if (M == 0 || N == 0) return FG_OK;
    fg_gemm_problem p = {C, ldc, NULL, 0, A, lda, B, ldb, NULL, M, N, K,
                         trans_a != 0, trans_b != 0, alpha, beta, FG_ACT_LINEAR, path,
                         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0};
    p.share = fg_gemm_share_mode();
    return FG_DISPATCH(fg_gemm_run)(&p, nthreads, gemm_workspace);
}

int fg_dense_forward(float *Y, int64_t ldy, float *Z, int64_t ldz, const float *X, int64_t ldx,
                     const float *W, int64_t ldw, const float *b, int64_t M, int64_t N, int64_t K,
                     int act, int nthreads) {
    if (!dims_ok(M, N, K)) return FG_ERR_ARG;
    if (!fg_act_valid(act)) return FG_ERR_ARG;
    if (!mat_ok(Y, M, N, ldy) || !mat_ok(X, M, K, ldx) || !mat_ok(W, K, N, ldw)) return FG_ERR_ARG;
    if (Z && !mat_ok(Z, M, N, ldz)) return FG_ERR_ARG;
    if (Z == Y && act != FG_ACT_LINEAR) return FG_ERR_ARG; /* Y would overwrite Z */
    if (M == 0 || N == 0) return FG_OK;
    fg_gemm_problem p = {Y, ldy, (Z == Y) ? NULL : Z, ldz, X, ldx, W, ldw, b, M, N, K,
                         0, 0, 1.0f, 0.0f, act, 0, NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0};
    p.share = fg_gemm_share_mode();
    return FG_DISPATCH(fg_gemm_run)(&p, nthreads, gemm_workspace);
}

int fg_gemm_ex(float *C, int64_t ldc, float *Z, int64_t ldz, const fg_gemm_operand *A,
               const fg_gemm_operand *B, const float *bias, int64_t M, int64_t N, int64_t K, float alpha,
               float beta, int act, int nthreads) {
    if (!dims_ok(M, N, K) || !A || !B) return FG_ERR_ARG;
    if (!fg_act_valid(act)) return FG_ERR_ARG;
    if (!mat_ok(C, M, N, ldc)) return FG_ERR_ARG;
    if (Z && !mat_ok(Z, M, N, ldz)) return FG_ERR_ARG;
    if (Z == C && act != FG_ACT_LINEAR) return FG_ERR_ARG;
    if (!A->pack && !(A->trans ? mat_ok(A->p, K, M, A->ld) : mat_ok(A->p, M, K, A->ld))) return FG_ERR_ARG;
    if (!B->pack && !(B->trans ? mat_ok(B->p, N, K, B->ld) : mat_ok(B->p, K, N, B->ld))) return FG_ERR_ARG;
    if (M == 0 || N == 0) return FG_OK;
    fg_gemm_problem p = {C, ldc, (Z == C) ? NULL : Z, ldz, A->p, A->ld, B->p, B->ld, bias, M, N, K,
                         A->trans != 0, B->trans != 0, alpha, beta, act, 1,
                         A->pack, A->ctx, 0, B->pack, B->ctx, 0, NULL, 0, 0};
    p.share = fg_gemm_share_mode();
    return FG_DISPATCH(fg_gemm_run)(&p, nthreads, gemm_workspace);
}

/* ---- pre-packed B */
int fg_gemm_packb(fg_gemm_packed **out, const float *B, int64_t ldb, int64_t N, int64_t K, int trans_b,
                  int nthreads) {
    if (!out) return FG_ERR_ARG;
    *out = NULL;
    if (!dims_ok(N, N, K) || !(trans_b ? mat_ok(B, N, K, ldb) : mat_ok(B, K, N, ldb))) return FG_ERR_ARG;
    fg_gemm_packed *pk = (fg_gemm_packed *)calloc(1, sizeof *pk);
    if (!pk) return FG_ERR_NOMEM;
    pk->isa = fg_isa_active();
    pk->N = N;
    pk->K = K;
    pk->B = B;
    pk->ldb = ldb;
    pk->trans_b = trans_b != 0;
    const int64_t floats = FG_DISPATCH(fg_gemm_packb_size)(N, K, &pk->kc_std, &pk->nkb, &pk->npad);
    fg_ws w = {NULL, 0};
    if (!ws_grow(&w, (size_t)floats * sizeof(float))) {
        free(pk);
        return FG_ERR_NOMEM;
    }
    pk->data = (float *)w.ptr;
    if (N > 0 && K > 0) FG_DISPATCH(fg_gemm_packb_run)(pk->data, B, ldb, N, K, trans_b != 0, nthreads);
    *out = pk;
    return FG_OK;
}

void fg_gemm_packed_free(fg_gemm_packed *pk) {
    if (!pk) return;
    fg_ws w = {pk->data, 1};
    ws_release(&w);
    free(pk);
}

/* the problem with op(B) from pk: its packed copy when the active ISA is the
 * one it was packed for, else (FASTGRAD_ISA changed since) the stored B */
static void use_packed(fg_gemm_problem *p, const fg_gemm_packed *pk) {
    if (pk->isa == fg_isa_active() && pk->data) {
        p->Bpk = pk->data;
        p->bpk_n = pk->npad;
    }
}

int fg_gemm_prepacked(float *C, int64_t ldc, const float *A, int64_t lda, int trans_a, const fg_gemm_packed *B,
                      int64_t M, float alpha, float beta, int nthreads) {
    if (!B || M < 0) return FG_ERR_ARG;
    const int64_t N = B->N, K = B->K;
    if (!mat_ok(C, M, N, ldc)) return FG_ERR_ARG;
    if (!(trans_a ? mat_ok(A, K, M, lda) : mat_ok(A, M, K, lda))) return FG_ERR_ARG;
    if (M == 0 || N == 0) return FG_OK;
    fg_gemm_problem p = {C, ldc, NULL, 0, A, lda, B->B, B->ldb, NULL, M, N, K,
                         trans_a != 0, B->trans_b, alpha, beta, FG_ACT_LINEAR, 0,
                         NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0};
    use_packed(&p, B);
    return FG_DISPATCH(fg_gemm_run)(&p, nthreads, gemm_workspace);
}

int fg_dense_forward_prepacked(float *Y, int64_t ldy, float *Z, int64_t ldz, const float *X, int64_t ldx,
                               const fg_gemm_packed *W, const float *b, int64_t M, int act, int nthreads) {
    if (!W || W->trans_b || M < 0) return FG_ERR_ARG;
    const int64_t N = W->N, K = W->K;
    if (!fg_act_valid(act)) return FG_ERR_ARG;
    if (!mat_ok(Y, M, N, ldy) || !mat_ok(X, M, K, ldx)) return FG_ERR_ARG;
    if (Z && !mat_ok(Z, M, N, ldz)) return FG_ERR_ARG;
    if (Z == Y && act != FG_ACT_LINEAR) return FG_ERR_ARG;
    if (M == 0 || N == 0) return FG_OK;
    fg_gemm_problem p = {Y, ldy, (Z == Y) ? NULL : Z, ldz, X, ldx, W->B, W->ldb, b, M, N, K,
                         0, 0, 1.0f, 0.0f, act, 0, NULL, NULL, 0, NULL, NULL, 0, NULL, 0, 0};
    use_packed(&p, W);
    return FG_DISPATCH(fg_gemm_run)(&p, nthreads, gemm_workspace);
}

void fg_gemm_tile(int *mr, int *nr, int *mc, int *kc, int *nc) {
    FG_DISPATCH(fg_gemm_blocking)(mr, nr, mc, kc, nc);
}

/* Calibrate to >= 10 ms per run, then the best of three runs (a shared or
 * frequency-ramping machine only ever makes a run slower). */
static double peak_now(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC); /* C11: also on Windows */
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double fg_gemm_peak_gflops(int nthreads) {
    if (nthreads < 1) nthreads = 1;
    int64_t iters = 1 << 14;
    double g = 0.0;
    for (int i = 0; i < 12; i++) { /* warm-up + calibration */
        const double t0 = peak_now();
        g = FG_DISPATCH(fg_gemm_peak)(nthreads, iters);
        if (peak_now() - t0 > 0.01) break;
        iters *= 2;
    }
    for (int r = 0; r < 3; r++) {
        const double x = FG_DISPATCH(fg_gemm_peak)(nthreads, iters);
        if (x > g) g = x;
    }
    return g;
}
