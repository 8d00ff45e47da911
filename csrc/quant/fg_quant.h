/* fg_quant.h — the int8 family: quantize / dequantize float32 matrices and
 * the integer GEMM u8 x s8 -> s32 with packed weights and a fused epilogue.
 *
 * Conventions (mirrored bit for bit by fastgrad.backend.numpy_quant):
 * - quantize: q = clip(rint(x / scale) + zero_point, lo, hi) in float32,
 *   rint = round half to even (np.rint), lo/hi = 0/255 (u8) or -128/127 (s8).
 *   Dynamic u8 rows: lo = min(row min, 0), hi = max(row max, 0),
 *   scale = (hi - lo) / 255 (1 when 0), zero_point = clip(rint(-lo / scale), 0, 255).
 *   Dynamic s8 rows (symmetric): scale = max|x| / 127 (1 when 0), zero_point 0.
 *   NaN (and, for the dynamic forms, inf) is refused with FG_ERR_NONFINITE.
 * - dequantize: y = (float)(q - zero_point) * scale.
 * - qgemm: acc[i,j] = sum_k A[i,k] * B[k,j] exactly in int32 (A u8, B s8),
 *   K <= FG_QGEMM_MAX_K so no sum can overflow. Then, with a_zp the zero
 *   point of row i (or of A), d = acc - a_zp * colsum_j (exact, int64), and
 *     FG_QOUT_S32: out = (int32) d
 *     FG_QOUT_F32: y = (float)d * (a_scale_i * b_scale_j) [+ bias_j] [relu]
 *     FG_QOUT_U8 : y = (float)d * mult_j [+ bias_j]; q = clip(rint(y) + out_zp,
 *                  relu ? out_zp : 0, 255)
 *   (float32 operations in that order, no contraction: the NumPy twin gives
 *   the same bits). Scales / zero points of A are per row (stride 1) or one
 *   value (stride 0).
 * - Weights are packed once (fg_qpack_b): panels of 16 columns, K in groups
 *   of 4 (zero padded), the layout every instruction-set path reads.
 * Every path gives the same integers for any thread count (integer sums are
 * exact; each output element has one owner).
 */
#ifndef FG_QUANT_H
#define FG_QUANT_H

#include "fg_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define FG_QGEMM_MAX_K 65536 /* 65536 * 255 * 128 < 2^31 */
#define FG_QPANEL 16         /* columns per packed panel */

/* instruction-set paths of this family (a finer split than FG_ISA_*) */
enum {
    FG_QISA_BASELINE = 0,  /* portable C */
    FG_QISA_AVX2 = 1,      /* u8/s8 widened to s16, vpmaddwd (exact) */
    FG_QISA_AVXVNNI = 2,   /* 256-bit vpdpbusd (AVX-VNNI) */
    FG_QISA_AVX512VNNI = 3, /* 512-bit vpdpbusd (AVX512-VNNI) */
    FG_QISA_COUNT = 4
};
enum { FG_QOUT_S32 = 0, FG_QOUT_F32 = 1, FG_QOUT_U8 = 2 };

int fg_quant_isa_supported(int qisa);
/* -1: follow the global instruction set (best VNNI form under it) */
int fg_quant_isa_set(int qisa);
int fg_quant_isa_active(void);
const char *fg_quant_isa_name(int qisa);

/* bytes of the packed form of a K x N s8 matrix */
int64_t fg_qpack_bytes(int64_t K, int64_t N);
/* packed (fg_qpack_bytes) and colsum (N int32) from B (K x N, ldb) */
int fg_qpack_b(int8_t *packed, int32_t *colsum, const int8_t *B, int64_t ldb, int64_t K, int64_t N);

typedef struct fg_qgemm_args {
    void *out;               /* int32, float or uint8 (M x N, ldo elements) */
    int64_t ldo;
    int out_kind;            /* FG_QOUT_* */
    const uint8_t *A;        /* M x K, lda */
    int64_t lda;
    const int8_t *Bp;        /* packed weights */
    const int32_t *colsum;   /* N (needed when a_zp != NULL) */
    int64_t M, N, K;
    const int32_t *a_zp;     /* NULL: 0 */
    int64_t a_zp_stride;     /* 0 or 1 */
    const float *a_scale;    /* F32 */
    int64_t a_scale_stride;
    const float *b_scale;    /* F32: N */
    const float *mult;       /* U8: N */
    const float *bias;       /* F32 / U8: N or NULL */
    int32_t out_zp;          /* U8 */
    int relu;                /* F32 / U8 */
    /* dynamic quantization fused into the call (Af != NULL): A is ignored;
     * each row of the float Af (M x K, ldaf) is quantized to u8 exactly as
     * fg_quantize_rows_u8 does (its scale / zero point written to q_scale /
     * q_zp, M each) by the thread that owns the row, just before its GEMM;
     * a_zp / a_scale are then those arrays. With af_given, the rows are
     * quantized with the given a_scale / a_zp instead (fg_quantize's rule;
     * q_scale / q_zp unused), and every output kind is allowed. */
    const float *Af;
    int64_t ldaf;
    float *q_scale;
    int32_t *q_zp;
    int af_given;
} fg_qgemm_args;

int fg_qgemm(const fg_qgemm_args *args, int nthreads);

/* dynamic per-row quantization (scale, zp: M values each) */
int fg_quantize_rows_u8(uint8_t *q, int64_t ldq, float *scale, int32_t *zp, const float *x, int64_t ldx,
                        int64_t M, int64_t N, int nthreads);
int fg_quantize_rows_s8(int8_t *q, int64_t ldq, float *scale, const float *x, int64_t ldx,
                        int64_t M, int64_t N, int nthreads);
/* given scale / zero point (per row: stride 1, or one value: stride 0) */
int fg_quantize(void *q, int64_t ldq, int is_s8, const float *x, int64_t ldx, int64_t M, int64_t N,
                const float *scale, int64_t scale_stride, const int32_t *zp, int64_t zp_stride, int nthreads);
int fg_dequantize(float *y, int64_t ldy, const void *q, int64_t ldq, int is_s8, int64_t M, int64_t N,
                  const float *scale, int64_t scale_stride, const int32_t *zp, int64_t zp_stride,
                  int nthreads);

#ifdef __cplusplus
}
#endif
#endif /* FG_QUANT_H */
