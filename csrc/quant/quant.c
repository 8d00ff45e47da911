/* quant.c — entry points of the int8 family (compiled once): argument
 * checks, weight packing, the per-thread A-panel workspace, and the choice
 * of the path (baseline / avx2 / avxvnni / avx512vnni) for each call. */
#include "quant/quant_internal.h"

#include <stdlib.h>
#include <string.h>
#if !defined(_WIN32)
#include <pthread.h>
#endif

/* ---- path choice ---- */
static int g_qisa = -1; /* -1: follow the global ISA */
static int g_qsup[FG_QISA_COUNT];
static int g_qinit = 0;
static const char *const g_qnames[FG_QISA_COUNT] = {"baseline", "avx2", "avxvnni", "avx512vnni"};

static void qinit(void) {
    if (g_qinit) return;
    g_qinit = 1;
    g_qsup[FG_QISA_BASELINE] = 1;
#if defined(FG_X86) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    g_qsup[FG_QISA_AVX2] = fg_isa_supported(FG_ISA_AVX2);
    g_qsup[FG_QISA_AVXVNNI] = g_qsup[FG_QISA_AVX2] && __builtin_cpu_supports("avxvnni");
    g_qsup[FG_QISA_AVX512VNNI] = fg_isa_supported(FG_ISA_AVX512) && __builtin_cpu_supports("avx512vnni");
#endif
    const char *env = getenv("FASTGRAD_QISA");
    if (env && *env && strcmp(env, "auto") != 0)
        for (int i = 0; i < FG_QISA_COUNT; i++)
            if (strcmp(env, g_qnames[i]) == 0 && g_qsup[i]) g_qisa = i;
}

int fg_quant_isa_supported(int q) {
    qinit();
    return q >= 0 && q < FG_QISA_COUNT && g_qsup[q];
}

int fg_quant_isa_set(int q) {
    qinit();
    if (q == -1) {
        g_qisa = -1;
        return FG_OK;
    }
    if (!fg_quant_isa_supported(q)) return FG_ERR_ISA;
    g_qisa = q;
    return FG_OK;
}

int fg_quant_isa_active(void) {
    qinit();
    if (g_qisa >= 0) return g_qisa;
    switch (fg_isa_active()) {
    case FG_ISA_AVX512:
        if (g_qsup[FG_QISA_AVX512VNNI]) return FG_QISA_AVX512VNNI;
        /* fall through */
    case FG_ISA_AVX2:
        return g_qsup[FG_QISA_AVXVNNI] ? FG_QISA_AVXVNNI : FG_QISA_AVX2;
    default: return FG_QISA_BASELINE;
    }
}

const char *fg_quant_isa_name(int q) { return (q >= 0 && q < FG_QISA_COUNT) ? g_qnames[q] : "unknown"; }

#if defined(FG_X86)
#define QDISPATCH(name)                                                       \
    (fg_quant_isa_active() == FG_QISA_AVX512VNNI ? name##_avx512vnni          \
     : fg_quant_isa_active() == FG_QISA_AVXVNNI  ? name##_avxvnni             \
     : fg_quant_isa_active() == FG_QISA_AVX2     ? name##_avx2                \
                                                 : name##_baseline)
#else
#define QDISPATCH(name) name##_baseline
#endif

/* ---- per-calling-thread grow-only workspace (A panels) ---- */
typedef struct {
    void *ptr;
    size_t bytes;
} qws;

static void qws_release(qws *w) {
    free(w->ptr);
    w->ptr = NULL;
    w->bytes = 0;
}

static void *qws_grow(qws *w, size_t bytes) {
    if (w->bytes >= bytes) return w->ptr;
    qws_release(w);
    bytes = (bytes + 4095) & ~(size_t)4095;
    if (posix_memalign(&w->ptr, 64, bytes) != 0) w->ptr = NULL;
    if (!w->ptr) return NULL;
    w->bytes = bytes;
    return w->ptr;
}

static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_key_ok = 0;
static void qws_destroy(void *p) {
    qws_release((qws *)p);
    free(p);
}
static void key_init(void) { g_key_ok = pthread_key_create(&g_key, qws_destroy) == 0; }

static void *qworkspace(size_t bytes) {
    pthread_once(&g_once, key_init);
    if (!g_key_ok) return NULL;
    qws *w = (qws *)pthread_getspecific(g_key);
    if (!w) {
        w = (qws *)calloc(1, sizeof *w);
        if (!w) return NULL;
        if (pthread_setspecific(g_key, w) != 0) {
            free(w);
            return NULL;
        }
    }
    return qws_grow(w, bytes);
}

/* ---- packing ---- */
int64_t fg_qpack_bytes(int64_t K, int64_t N) {
    if (K < 0 || N < 0) return -1;
    const int64_t panels = (N + FG_QPANEL - 1) / FG_QPANEL, groups = (K + 3) / 4;
    return panels * groups * FG_QPANEL * 4 + 64; /* + slack for vector over-reads */
}

int fg_qpack_b(int8_t *packed, int32_t *colsum, const int8_t *B, int64_t ldb, int64_t K, int64_t N) {
    if (K < 0 || N < 0 || K > FG_QGEMM_MAX_K) return FG_ERR_ARG;
    if (!packed || (N > 0 && !colsum) || (K > 0 && N > 0 && (!B || ldb < N))) return FG_ERR_ARG;
    const int64_t bytes = fg_qpack_bytes(K, N);
    memset(packed, 0, (size_t)bytes);
    const int64_t groups = (K + 3) / 4;
    for (int64_t j = 0; j < N; j++) {
        const int64_t p = j / FG_QPANEL, c = j % FG_QPANEL;
        int8_t *dst = packed + p * groups * FG_QPANEL * 4 + c * 4;
        int32_t s = 0;
        for (int64_t k = 0; k < K; k++) {
            const int8_t v = B[k * ldb + j];
            dst[(k / 4) * FG_QPANEL * 4 + (k % 4)] = v;
            s += v;
        }
        colsum[j] = s;
    }
    return FG_OK;
}

/* ---- qgemm ---- */
int fg_qgemm(const fg_qgemm_args *a, int nthreads) {
    if (!a) return FG_ERR_ARG;
    if (a->M < 0 || a->N < 0 || a->K < 0 || a->K > FG_QGEMM_MAX_K) return FG_ERR_ARG;
    if (a->out_kind < FG_QOUT_S32 || a->out_kind > FG_QOUT_U8) return FG_ERR_ARG;
    if (a->M == 0 || a->N == 0) return FG_OK;
    if (!a->out || a->ldo < a->N || !a->Bp) return FG_ERR_ARG;
    if (a->Af && a->af_given) {
        if (a->ldaf < a->K || !a->a_scale || (a->a_scale_stride != 0 && a->a_scale_stride != 1)) return FG_ERR_ARG;
        if (a->a_zp && (!a->colsum || (a->a_zp_stride != 0 && a->a_zp_stride != 1))) return FG_ERR_ARG;
        if (a->out_kind == FG_QOUT_F32 && !a->b_scale) return FG_ERR_ARG;
        if (a->out_kind == FG_QOUT_U8 && (!a->mult || a->out_zp < 0 || a->out_zp > 255)) return FG_ERR_ARG;
        return QDISPATCH(fg_qgemm_run)(a, nthreads, qworkspace);
    }
    if (a->Af) {
        if (a->ldaf < a->K || !a->q_scale || !a->q_zp || a->a_zp || a->a_scale) return FG_ERR_ARG;
        if (a->out_kind == FG_QOUT_U8 || !a->colsum) return FG_ERR_ARG;
        fg_qgemm_args d = *a;
        d.A = NULL;
        d.lda = a->K;
        d.a_zp = a->q_zp;
        d.a_zp_stride = 1;
        d.a_scale = a->q_scale;
        d.a_scale_stride = 1;
        if (d.out_kind == FG_QOUT_F32 && !d.b_scale) return FG_ERR_ARG;
        return QDISPATCH(fg_qgemm_run)(&d, nthreads, qworkspace);
    }
    if (a->K > 0 && (!a->A || a->lda < a->K)) return FG_ERR_ARG;
    if (a->a_zp && (!a->colsum || (a->a_zp_stride != 0 && a->a_zp_stride != 1))) return FG_ERR_ARG;
    if (a->out_kind == FG_QOUT_F32 &&
        (!a->a_scale || !a->b_scale || (a->a_scale_stride != 0 && a->a_scale_stride != 1)))
        return FG_ERR_ARG;
    if (a->out_kind == FG_QOUT_U8 && (!a->mult || a->out_zp < 0 || a->out_zp > 255)) return FG_ERR_ARG;
    return QDISPATCH(fg_qgemm_run)(a, nthreads, qworkspace);
}

/* ---- quantize / dequantize ---- */
static int mat_ok(const void *p, int64_t M, int64_t N, int64_t ld) {
    if (M < 0 || N < 0) return 0;
    if (M == 0 || N == 0) return 1;
    return p != NULL && ld >= N;
}

int fg_quantize_rows_u8(uint8_t *q, int64_t ldq, float *scale, int32_t *zp, const float *x, int64_t ldx,
                        int64_t M, int64_t N, int nthreads) {
    if (!mat_ok(q, M, N, ldq) || !mat_ok(x, M, N, ldx) || (M > 0 && (!scale || !zp))) return FG_ERR_ARG;
    if (M == 0) return FG_OK;
    return QDISPATCH(fg_qquant_run)(q, ldq, 0, 0, scale, 1, zp, 1, x, ldx, M, N, nthreads);
}

int fg_quantize_rows_s8(int8_t *q, int64_t ldq, float *scale, const float *x, int64_t ldx, int64_t M,
                        int64_t N, int nthreads) {
    if (!mat_ok(q, M, N, ldq) || !mat_ok(x, M, N, ldx) || (M > 0 && !scale)) return FG_ERR_ARG;
    if (M == 0) return FG_OK;
    return QDISPATCH(fg_qquant_run)(q, ldq, 1, 1, scale, 1, NULL, 0, x, ldx, M, N, nthreads);
}

int fg_quantize(void *q, int64_t ldq, int is_s8, const float *x, int64_t ldx, int64_t M, int64_t N,
                const float *scale, int64_t scale_stride, const int32_t *zp, int64_t zp_stride, int nthreads) {
    if (!mat_ok(q, M, N, ldq) || !mat_ok(x, M, N, ldx) || !scale) return FG_ERR_ARG;
    if ((scale_stride != 0 && scale_stride != 1) || (zp && zp_stride != 0 && zp_stride != 1)) return FG_ERR_ARG;
    if (M == 0 || N == 0) return FG_OK;
    return QDISPATCH(fg_qquant_run)(q, ldq, 2, is_s8 != 0, (float *)scale, scale_stride, (int32_t *)zp,
                                    zp_stride, x, ldx, M, N, nthreads);
}

int fg_dequantize(float *y, int64_t ldy, const void *q, int64_t ldq, int is_s8, int64_t M, int64_t N,
                  const float *scale, int64_t scale_stride, const int32_t *zp, int64_t zp_stride,
                  int nthreads) {
    if (!mat_ok(y, M, N, ldy) || !mat_ok(q, M, N, ldq) || !scale) return FG_ERR_ARG;
    if ((scale_stride != 0 && scale_stride != 1) || (zp && zp_stride != 0 && zp_stride != 1)) return FG_ERR_ARG;
    if (M == 0 || N == 0) return FG_OK;
    return QDISPATCH(fg_qdequant_run)(y, ldy, q, ldq, is_s8 != 0, M, N, scale, scale_stride, zp, zp_stride,
                                      nthreads);
}
