/* gemm_vec.h — a minimal float-vector vocabulary for the GEMM micro-kernels,
 * packing and epilogue stores, instantiated per ISA:
 *   AVX-512: vf = __m512 (16 lanes); AVX2: vf = __m256 (8); baseline: float.
 * Included only by ISA-compiled files; everything here is static inline.
 * No activation math here: the fused epilogue's activation is the kernels
 * family's own code (csrc/kernels/fg_act_vec.h, applied by gemm_act.c).
 */
#ifndef FG_GEMM_VEC_H
#define FG_GEMM_VEC_H

#include <stdint.h>
#include <string.h>
#include "fg_common.h"

#if defined(__AVX512F__) || defined(__AVX2__) || defined(__SSE2__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define FG_VW 16
typedef __m512 vf;
FG_INLINE vf vf_set1(float x) { return _mm512_set1_ps(x); }
FG_INLINE vf vf_zero(void) { return _mm512_setzero_ps(); }
FG_INLINE vf vf_loadu(const float *p) { return _mm512_loadu_ps(p); }
FG_INLINE void vf_storeu(float *p, vf x) { _mm512_storeu_ps(p, x); }
FG_INLINE vf vf_add(vf a, vf b) { return _mm512_add_ps(a, b); }
FG_INLINE vf vf_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
FG_INLINE vf vf_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
/* first n (< 16) floats at p, zero above; no access past p + n */
FG_INLINE vf vf_loadu_part(const float *p, int n) { return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p); }
FG_INLINE void vf_storeu_part(float *p, vf x, int n) { _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), x); }
#elif defined(__AVX2__)
#define FG_VW 8
typedef __m256 vf;
FG_INLINE vf vf_set1(float x) { return _mm256_set1_ps(x); }
FG_INLINE vf vf_zero(void) { return _mm256_setzero_ps(); }
FG_INLINE vf vf_loadu(const float *p) { return _mm256_loadu_ps(p); }
FG_INLINE void vf_storeu(float *p, vf x) { _mm256_storeu_ps(p, x); }
FG_INLINE vf vf_add(vf a, vf b) { return _mm256_add_ps(a, b); }
FG_INLINE vf vf_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
FG_INLINE vf vf_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
FG_INLINE vf vf_loadu_part(const float *p, int n) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx));
}
FG_INLINE void vf_storeu_part(float *p, vf x, int n) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_maskstore_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx), x);
}
#else
/* baseline: one lane, plain C (the compiler may still vectorise loops around it) */
#define FG_VW 1
typedef float vf;
FG_INLINE vf vf_set1(float x) { return x; }
FG_INLINE vf vf_zero(void) { return 0.0f; }
FG_INLINE vf vf_loadu(const float *p) { return *p; }
FG_INLINE void vf_storeu(float *p, vf x) { *p = x; }
FG_INLINE vf vf_add(vf a, vf b) { return a + b; }
FG_INLINE vf vf_mul(vf a, vf b) { return a * b; }
FG_INLINE vf vf_fma(vf a, vf b, vf c) { return a * b + c; }
FG_INLINE vf vf_loadu_part(const float *p, int n) { return n > 0 ? *p : 0.0f; }
FG_INLINE void vf_storeu_part(float *p, vf x, int n) {
    if (n > 0) *p = x;
}
#endif

#endif /* FG_GEMM_VEC_H */
