/* conv_vec.h — the vector kinds of the per-ISA convolution kernels
 * (conv_tile.c, conv_wino.c): W lanes of type T with load / store /
 * broadcast / zero / fma / add / sub / max. Included only by sources
 * compiled once per instruction set (the -m flags pick the kind):
 *   avx512: Z = __m512 (16 lanes) and a 256-bit kind Y for F <= 8 output
 *           channels (a zmm would leave half its lanes idle; Zen 4 and Ice
 *           Lake run two ymm FMAs per cycle against one zmm), HAVE_NARROW 1
 *   avx2:   Z = __m256 (8 lanes), fused multiply-add
 *   SSE2:   Z = __m128 (4 lanes), multiply then add (the baseline path)
 *   other:  Z = float
 * Z_MAX(a, b) is maxps: the second operand unless a > b (NaN in b kept).
 */
#ifndef FG_CONV_VEC_H
#define FG_CONV_VEC_H

#if defined(__AVX512F__) || defined(__AVX2__) || defined(__SSE2__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define Z_T __m512
#define Z_W 16
#define Z_LD(p) _mm512_loadu_ps(p)
#define Z_ST(p, v) _mm512_storeu_ps(p, v)
#define Z_S1(a) _mm512_set1_ps(a)
#define Z_ZERO() _mm512_setzero_ps()
#define Z_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define Z_ADD(a, b) _mm512_add_ps(a, b)
#define Z_SUB(a, b) _mm512_sub_ps(a, b)
#define Z_MUL(a, b) _mm512_mul_ps(a, b)
#define Z_MAX(a, b) _mm512_max_ps(a, b)
#define Y_T __m256
#define Y_W 8
#define Y_LD(p) _mm256_loadu_ps(p)
#define Y_ST(p, v) _mm256_storeu_ps(p, v)
#define Y_S1(a) _mm256_set1_ps(a)
#define Y_ZERO() _mm256_setzero_ps()
#define Y_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define Y_ADD(a, b) _mm256_add_ps(a, b)
#define Y_MAX(a, b) _mm256_max_ps(a, b)
#define HAVE_NARROW 1
#define FG_VEC_REGS 32
#elif defined(__AVX2__) && defined(__FMA__)
#define Z_T __m256
#define Z_W 8
#define Z_LD(p) _mm256_loadu_ps(p)
#define Z_ST(p, v) _mm256_storeu_ps(p, v)
#define Z_S1(a) _mm256_set1_ps(a)
#define Z_ZERO() _mm256_setzero_ps()
#define Z_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define Z_ADD(a, b) _mm256_add_ps(a, b)
#define Z_SUB(a, b) _mm256_sub_ps(a, b)
#define Z_MUL(a, b) _mm256_mul_ps(a, b)
#define Z_MAX(a, b) _mm256_max_ps(a, b)
#define FG_VEC_REGS 16
#elif defined(__SSE2__)
#define Z_T __m128
#define Z_W 4
#define Z_LD(p) _mm_loadu_ps(p)
#define Z_ST(p, v) _mm_storeu_ps(p, v)
#define Z_S1(a) _mm_set1_ps(a)
#define Z_ZERO() _mm_setzero_ps()
#define Z_FMA(a, b, c) _mm_add_ps(_mm_mul_ps(a, b), c)
#define Z_ADD(a, b) _mm_add_ps(a, b)
#define Z_SUB(a, b) _mm_sub_ps(a, b)
#define Z_MUL(a, b) _mm_mul_ps(a, b)
#define Z_MAX(a, b) _mm_max_ps(a, b)
#define FG_VEC_REGS 16
#else
#define Z_T float
#define Z_W 1
#define Z_LD(p) (*(p))
#define Z_ST(p, v) (*(p) = (v))
#define Z_S1(a) (a)
#define Z_ZERO() 0.0f
#define Z_FMA(a, b, c) ((a) * (b) + (c))
#define Z_ADD(a, b) ((a) + (b))
#define Z_SUB(a, b) ((a) - (b))
#define Z_MUL(a, b) ((a) * (b))
#define Z_MAX(a, b) ((a) > (b) ? (a) : (b)) /* as maxps: the second operand unless a > b */
#define FG_VEC_REGS 8
#endif
#ifndef HAVE_NARROW
#define HAVE_NARROW 0
#endif

#endif /* FG_CONV_VEC_H */
