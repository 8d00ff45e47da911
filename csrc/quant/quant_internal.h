/* quant_internal.h — shared between the once-compiled entry points (quant.c)
 * and the per-path kernels (quant_kern.c, compiled four times with
 * FG_QSUFFIX = _baseline / _avx2 / _avxvnni / _avx512vnni). */
#ifndef FG_QUANT_INTERNAL_H
#define FG_QUANT_INTERNAL_H
#include "quant/fg_quant.h"

typedef void *(*fg_qws_fn)(size_t bytes);

#define FG_QDECL(ret, name, args) \
    ret name##_baseline args;     \
    ret name##_avx2 args;         \
    ret name##_avxvnni args;      \
    ret name##_avx512vnni args;

FG_QDECL(int, fg_qgemm_run, (const fg_qgemm_args *p, int nthreads, fg_qws_fn ws))
/* mode 0: dynamic u8 rows (writes scale, zp), 1: dynamic s8 rows (writes scale),
 * 2: given scale / zp (is_s8 picks the type) */
FG_QDECL(int, fg_qquant_run, (void *q, int64_t ldq, int mode, int is_s8, float *scale_io, int64_t sstride,
                              int32_t *zp_io, int64_t zstride, const float *x, int64_t ldx, int64_t M,
                              int64_t N, int nthreads))
FG_QDECL(int, fg_qdequant_run, (float *y, int64_t ldy, const void *q, int64_t ldq, int is_s8, int64_t M,
                                int64_t N, const float *scale, int64_t sstride, const int32_t *zp,
                                int64_t zstride, int nthreads))
#endif
