/* fg_vmath.h — private to csrc/kernels: one vector vocabulary for three
 * instruction sets, the vectorised math functions written in it, and the
 * thread-partition helpers every kernel in this family uses.
 *
 * Included only by the ISA-compiled sources (ISA_SOURCES), so the same text
 * becomes an AVX-512 copy (V = __m512, 16 lanes), an AVX2+FMA copy (V =
 * __m256, 8 lanes) and a portable copy (V = float, 1 lane; the compiler
 * auto-vectorises what it can with SSE2). Everything here is `static`, so no
 * wide copy of a helper can leak into the baseline through the linker.
 *
 * Kernels are written once against this vocabulary:
 *   full vectors:  v_load / v_store;  tail (< VL elements): v_loadn / v_storen
 *   (masked: lanes past the end read as 0 and are never written).
 *
 * Math functions (all within ~1-2 ULP of correctly rounded float32 for every
 * input, NaN propagates, limits exact for +-inf; the tests sweep float32 bit
 * patterns against float64 references):
 *   v_exp      Cody-Waite reduction x = n ln2 + r, Cephes degree-6 polynomial,
 *              2^n applied with one rounding (AVX-512 scalef; elsewhere as
 *              2^(n/2) * 2^(n - n/2)) so results that overflow or fall into the
 *              denormal range round correctly without branches.
 *   v_log      Cephes logf: mantissa in [sqrt(1/2), sqrt 2), degree-9 polynomial,
 *              denormal inputs rescaled by 2^23 first.
 *   v_tanh     |x| < 0.625: odd polynomial (Cephes); else 1 - 2/(e^{2|x|}+1)
 *              with its own bounded-range exp and a refined reciprocal estimate.
 *   v_sigmoid  e = exp(-|x|); (x >= 0 ? 1 : e) / (1 + e): no overflow, no
 *              cancellation, exact 0/1 limits, accurate deep in the tails.
 *   v_phi      standard normal CDF Phi(x) = 0.5 erfc(-x/sqrt 2) in float (for
 *              the GELU derivative): Taylor series of erf near 0, and for
 *              |x|/sqrt 2 >= 0.5 the Numerical Recipes erfc form
 *              t exp(-a^2 + P(t)) (fractional error < 1.2e-7) with a^2 carried as
 *              an exact hi+lo pair, so Phi keeps relative accuracy in the tail.
 *   vd_gelu_tail  x Phi(x) in double for the GELU forward tails (own degree-9
 *              fit of log erfcx, error 5e-9), rounded once: GELU is within
 *              2 ULP everywhere (1.8 measured over a float32 sweep).
 * Measured maximum errors over every 3701st float32 bit pattern, against
 * float64 (in spacings at the exact value; 0.5 = correctly rounded):
 *   exp 0.97, log 0.74, sigmoid 2.04, gelu 1.82, gelu_tanh 2.36;
 *   tanh over all 2^32 inputs: 1.53 (AVX-512), 1.36 (AVX2), 1.34 (portable).
 *
 * Explicit FMAs (v_fma) are used where they help accuracy; the AVX copies
 * fuse them, the portable copy rounds the product. The kernels library is
 * compiled with -ffp-contract=off so the compiler adds no fusions of its own:
 * reductions written with exact products give the same bits on every ISA.
 */
#ifndef FG_VMATH_H
#define FG_VMATH_H

#include "fg_common.h"

#include <math.h>
#include <string.h>
#if FG_HAVE_OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#elif defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h> /* the portable path's v_max / v_min */
#endif

#if defined(_MSC_VER) && !defined(__clang__)
#define FG_VINLINE static __forceinline
#else
#define FG_VINLINE static inline __attribute__((always_inline, unused))
#endif

/* =========================================================================
 * The vector vocabulary
 * ========================================================================= */
#if defined(__AVX512F__)

#define VL 16
typedef __m512 V;
typedef __m512i VI;
typedef __mmask16 M;
FG_VINLINE V v_set1(float a) { return _mm512_set1_ps(a); }
FG_VINLINE V v_zero(void) { return _mm512_setzero_ps(); }
FG_VINLINE V v_load(const float *p) { return _mm512_loadu_ps(p); }
FG_VINLINE void v_store(float *p, V a) { _mm512_storeu_ps(p, a); }
FG_VINLINE M v_tailmask(int64_t n) { return (__mmask16)((1u << n) - 1u); }
FG_VINLINE V v_loadn(const float *p, int64_t n) { return _mm512_maskz_loadu_ps(v_tailmask(n), p); }
FG_VINLINE void v_storen(float *p, V a, int64_t n) { _mm512_mask_storeu_ps(p, v_tailmask(n), a); }
FG_VINLINE M v_firstn(int64_t n) { return v_tailmask(n); } /* lanes < n */
FG_VINLINE V v_add(V a, V b) { return _mm512_add_ps(a, b); }
FG_VINLINE V v_sub(V a, V b) { return _mm512_sub_ps(a, b); }
FG_VINLINE V v_mul(V a, V b) { return _mm512_mul_ps(a, b); }
FG_VINLINE V v_div(V a, V b) { return _mm512_div_ps(a, b); }
FG_VINLINE V v_sqrt(V a) { return _mm512_sqrt_ps(a); }
FG_VINLINE V v_fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }   /* a*b + c */
FG_VINLINE V v_fnma(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); } /* c - a*b */
FG_VINLINE V v_max(V a, V b) { return _mm512_max_ps(a, b); } /* b if either is NaN */
FG_VINLINE V v_min(V a, V b) { return _mm512_min_ps(a, b); } /* b if either is NaN */
FG_VINLINE V v_abs(V a) { return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_set1_epi32(0x7fffffff))); }
FG_VINLINE V v_signbit(V a) { return _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(a), _mm512_set1_epi32((int)0x80000000u))); }
FG_VINLINE V v_xor(V a, V b) { return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), _mm512_castps_si512(b))); }
FG_VINLINE M v_lt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
FG_VINLINE M v_le(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LE_OQ); }
FG_VINLINE M v_gt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
FG_VINLINE M v_ge(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
FG_VINLINE M v_eq(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
FG_VINLINE M v_isnan(V a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
FG_VINLINE M m_or(M a, M b) { return (M)(a | b); }
FG_VINLINE M m_andnot(M a, M b) { return (M)(~a & b); } /* b and not a */
FG_VINLINE int m_any(M m) { return m != 0; }
FG_VINLINE int m_all(M m) { return m == 0xFFFF; }
FG_VINLINE V v_sel(M m, V f, V t) { return _mm512_mask_blend_ps(m, f, t); } /* m ? t : f */
FG_VINLINE VI v_cvti(V a) { return _mm512_cvttps_epi32(a); }                /* integral input */
FG_VINLINE V v_cvtf(VI a) { return _mm512_cvtepi32_ps(a); }
FG_VINLINE VI vi_set1(int a) { return _mm512_set1_epi32(a); }
FG_VINLINE VI vi_add(VI a, VI b) { return _mm512_add_epi32(a, b); }
FG_VINLINE VI vi_sub(VI a, VI b) { return _mm512_sub_epi32(a, b); }
FG_VINLINE VI vi_srai(VI a, int s) { return _mm512_srai_epi32(a, (unsigned)s); }
FG_VINLINE VI vi_slli(VI a, int s) { return _mm512_slli_epi32(a, (unsigned)s); }
FG_VINLINE VI vi_srli(VI a, int s) { return _mm512_srli_epi32(a, (unsigned)s); }
FG_VINLINE VI vi_and(VI a, VI b) { return _mm512_and_si512(a, b); }
FG_VINLINE VI vi_or(VI a, VI b) { return _mm512_or_si512(a, b); }
FG_VINLINE VI vi_sel(M m, VI f, VI t) { return _mm512_mask_blend_epi32(m, f, t); }
FG_VINLINE VI v_asi(V a) { return _mm512_castps_si512(a); }
/* lane l -> l * stride; gather of p[idx[l]] for lanes < n (others 0) */
FG_VINLINE VI vi_iota_mul(int stride) {
    return _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                              _mm512_set1_epi32(stride));
}
FG_VINLINE V v_gathern(const float *p, VI idx, int64_t n) {
    if (n >= VL) return _mm512_i32gather_ps(idx, p, 4);
    return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), v_tailmask(n), idx, p, 4);
}
FG_VINLINE V vi_asf(VI a) { return _mm512_castsi512_ps(a); }
/* horizontal sum in a fixed tree (lanes k and k+8, then k+4, k+2, k+1) */
FG_VINLINE float v_hsum(V a) {
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    return _mm_cvtss_f32(s1);
}
FG_VINLINE float v_hmax(V a) { return _mm512_reduce_max_ps(a); }

#elif defined(__AVX2__)

#define VL 8
typedef __m256 V;
typedef __m256i VI;
typedef __m256 M;
FG_VINLINE V v_set1(float a) { return _mm256_set1_ps(a); }
FG_VINLINE V v_zero(void) { return _mm256_setzero_ps(); }
FG_VINLINE V v_load(const float *p) { return _mm256_loadu_ps(p); }
FG_VINLINE void v_store(float *p, V a) { _mm256_storeu_ps(p, a); }
FG_VINLINE __m256i v_tailmask(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
FG_VINLINE V v_loadn(const float *p, int64_t n) { return _mm256_maskload_ps(p, v_tailmask(n)); }
FG_VINLINE void v_storen(float *p, V a, int64_t n) { _mm256_maskstore_ps(p, v_tailmask(n), a); }
FG_VINLINE M v_firstn(int64_t n) { return _mm256_castsi256_ps(v_tailmask(n)); }
FG_VINLINE V v_add(V a, V b) { return _mm256_add_ps(a, b); }
FG_VINLINE V v_sub(V a, V b) { return _mm256_sub_ps(a, b); }
FG_VINLINE V v_mul(V a, V b) { return _mm256_mul_ps(a, b); }
FG_VINLINE V v_div(V a, V b) { return _mm256_div_ps(a, b); }
FG_VINLINE V v_sqrt(V a) { return _mm256_sqrt_ps(a); }
FG_VINLINE V v_fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
FG_VINLINE V v_fnma(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }
FG_VINLINE V v_max(V a, V b) { return _mm256_max_ps(a, b); }
FG_VINLINE V v_min(V a, V b) { return _mm256_min_ps(a, b); }
FG_VINLINE V v_abs(V a) { return _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }
FG_VINLINE V v_signbit(V a) { return _mm256_and_ps(a, _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u))); }
FG_VINLINE V v_xor(V a, V b) { return _mm256_xor_ps(a, b); }
FG_VINLINE M v_lt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
FG_VINLINE M v_le(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_LE_OQ); }
FG_VINLINE M v_gt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
FG_VINLINE M v_ge(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
FG_VINLINE M v_eq(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
FG_VINLINE M v_isnan(V a) { return _mm256_cmp_ps(a, a, _CMP_UNORD_Q); }
FG_VINLINE M m_or(M a, M b) { return _mm256_or_ps(a, b); }
FG_VINLINE M m_andnot(M a, M b) { return _mm256_andnot_ps(a, b); }
FG_VINLINE int m_any(M m) { return _mm256_movemask_ps(m) != 0; }
FG_VINLINE int m_all(M m) { return _mm256_movemask_ps(m) == 0xFF; }
FG_VINLINE V v_sel(M m, V f, V t) { return _mm256_blendv_ps(f, t, m); }
FG_VINLINE VI v_cvti(V a) { return _mm256_cvttps_epi32(a); }
FG_VINLINE V v_cvtf(VI a) { return _mm256_cvtepi32_ps(a); }
FG_VINLINE VI vi_set1(int a) { return _mm256_set1_epi32(a); }
FG_VINLINE VI vi_add(VI a, VI b) { return _mm256_add_epi32(a, b); }
FG_VINLINE VI vi_sub(VI a, VI b) { return _mm256_sub_epi32(a, b); }
FG_VINLINE VI vi_srai(VI a, int s) { return _mm256_srai_epi32(a, s); }
FG_VINLINE VI vi_slli(VI a, int s) { return _mm256_slli_epi32(a, s); }
FG_VINLINE VI vi_srli(VI a, int s) { return _mm256_srli_epi32(a, s); }
FG_VINLINE VI vi_and(VI a, VI b) { return _mm256_and_si256(a, b); }
FG_VINLINE VI vi_or(VI a, VI b) { return _mm256_or_si256(a, b); }
FG_VINLINE VI vi_sel(M m, VI f, VI t) {
    return _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(f), _mm256_castsi256_ps(t), m));
}
FG_VINLINE VI v_asi(V a) { return _mm256_castps_si256(a); }
FG_VINLINE VI vi_iota_mul(int stride) {
    return _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(stride));
}
FG_VINLINE V v_gathern(const float *p, VI idx, int64_t n) {
    if (n >= VL) return _mm256_i32gather_ps(p, idx, 4);
    return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), p, idx, _mm256_castsi256_ps(v_tailmask(n)), 4);
}
FG_VINLINE V vi_asf(VI a) { return _mm256_castsi256_ps(a); }
FG_VINLINE float v_hsum(V a) { /* lanes k and k+4, then k+2, k+1 */
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    return _mm_cvtss_f32(s1);
}
FG_VINLINE float v_hmax(V a) {
    __m128 s4 = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    __m128 s2 = _mm_max_ps(s4, _mm_movehl_ps(s4, s4));
    __m128 s1 = _mm_max_ss(s2, _mm_shuffle_ps(s2, s2, 1));
    return _mm_cvtss_f32(s1);
}

#else /* portable: one lane; plain C the compiler may auto-vectorise */

#define VL 1
typedef float V;
typedef int32_t VI;
typedef int M;
FG_VINLINE V v_set1(float a) { return a; }
FG_VINLINE V v_zero(void) { return 0.0f; }
FG_VINLINE V v_load(const float *p) { return *p; }
FG_VINLINE void v_store(float *p, V a) { *p = a; }
FG_VINLINE V v_loadn(const float *p, int64_t n) { return n > 0 ? *p : 0.0f; }
FG_VINLINE void v_storen(float *p, V a, int64_t n) { if (n > 0) *p = a; }
FG_VINLINE M v_firstn(int64_t n) { return n > 0; }
FG_VINLINE V v_add(V a, V b) { return a + b; }
FG_VINLINE V v_sub(V a, V b) { return a - b; }
FG_VINLINE V v_mul(V a, V b) { return a * b; }
FG_VINLINE V v_div(V a, V b) { return a / b; }
FG_VINLINE V v_sqrt(V a) { return sqrtf(a); }
FG_VINLINE V v_fma(V a, V b, V c) { return a * b + c; } /* not fused (-ffp-contract=off) */
FG_VINLINE V v_fnma(V a, V b, V c) { return c - a * b; }
#if defined(__x86_64__) || defined(_M_X64)
/* maxss / minss themselves (SSE is part of x86-64's baseline): the same answer
 * as the vector paths' maxps / minps in every case, including under the MXCSR's
 * DAZ (fg_set_flush_denormal), where a C select would hand back a denormal
 * operand's raw bits (max(0, 1e-40) = 1e-40 instead of the 0 maxps gives). */
#if defined(__GNUC__)
/* the instruction itself (inline asm): the compiler may not rewrite it as a
 * C max, whose NaN and signed-zero cases it is free to reorder */
FG_VINLINE V v_max(V a, V b) { __asm__("maxss %1, %0" : "+x"(a) : "x"(b)); return a; }
FG_VINLINE V v_min(V a, V b) { __asm__("minss %1, %0" : "+x"(a) : "x"(b)); return a; }
#else
FG_VINLINE V v_max(V a, V b) { return _mm_cvtss_f32(_mm_max_ss(_mm_set_ss(a), _mm_set_ss(b))); }
FG_VINLINE V v_min(V a, V b) { return _mm_cvtss_f32(_mm_min_ss(_mm_set_ss(a), _mm_set_ss(b))); }
#endif
#else
FG_VINLINE V v_max(V a, V b) { return a > b ? a : b; } /* b if either is NaN, like maxps */
FG_VINLINE V v_min(V a, V b) { return a < b ? a : b; }
#endif
FG_VINLINE uint32_t f2u_(float a) { uint32_t u; memcpy(&u, &a, 4); return u; }
FG_VINLINE float u2f_(uint32_t u) { float a; memcpy(&a, &u, 4); return a; }
FG_VINLINE V v_abs(V a) { return u2f_(f2u_(a) & 0x7fffffffu); }
FG_VINLINE V v_signbit(V a) { return u2f_(f2u_(a) & 0x80000000u); }
FG_VINLINE V v_xor(V a, V b) { return u2f_(f2u_(a) ^ f2u_(b)); }
FG_VINLINE M v_lt(V a, V b) { return a < b; }
FG_VINLINE M v_le(V a, V b) { return a <= b; }
FG_VINLINE M v_gt(V a, V b) { return a > b; }
FG_VINLINE M v_ge(V a, V b) { return a >= b; }
FG_VINLINE M v_eq(V a, V b) { return a == b; }
FG_VINLINE M v_isnan(V a) { return a != a; }
FG_VINLINE M m_or(M a, M b) { return a | b; }
FG_VINLINE M m_andnot(M a, M b) { return !a && b; }
FG_VINLINE int m_any(M m) { return m != 0; }
FG_VINLINE int m_all(M m) { return m != 0; }
FG_VINLINE V v_sel(M m, V f, V t) { return m ? t : f; }
FG_VINLINE VI v_cvti(V a) { return (int32_t)a; }
FG_VINLINE V v_cvtf(VI a) { return (float)a; }
FG_VINLINE VI vi_set1(int a) { return a; }
FG_VINLINE VI vi_add(VI a, VI b) { return (VI)((uint32_t)a + (uint32_t)b); }
FG_VINLINE VI vi_sub(VI a, VI b) { return (VI)((uint32_t)a - (uint32_t)b); }
FG_VINLINE VI vi_srai(VI a, int s) { return a >> s; } /* arithmetic on gcc/clang */
FG_VINLINE VI vi_slli(VI a, int s) { return (VI)((uint32_t)a << s); }
FG_VINLINE VI vi_srli(VI a, int s) { return (VI)((uint32_t)a >> s); }
FG_VINLINE VI vi_and(VI a, VI b) { return a & b; }
FG_VINLINE VI vi_or(VI a, VI b) { return a | b; }
FG_VINLINE VI vi_sel(M m, VI f, VI t) { return m ? t : f; }
FG_VINLINE VI v_asi(V a) { return (VI)f2u_(a); }
FG_VINLINE VI vi_iota_mul(int stride) { (void)stride; return 0; }
FG_VINLINE V v_gathern(const float *p, VI idx, int64_t n) { return n > 0 ? p[idx] : 0.0f; }
FG_VINLINE V vi_asf(VI a) { return u2f_((uint32_t)a); }
FG_VINLINE float v_hsum(V a) { return a; }
FG_VINLINE float v_hmax(V a) { return a; }

#endif

/* Non-temporal stores for outputs much larger than the last-level cache: the
 * store skips the read-for-ownership of the destination line (12 -> 8 bytes of
 * traffic per element for y = f(x)). Only for y != x (in place, the line is
 * already cached) and n >= FG_NT_MIN elements (16 MiB of output). */
#define FG_NT_MIN ((int64_t)1 << 22)
FG_VINLINE void v_stream(float *p, V a) { /* p aligned to VL floats */
#if defined(__AVX512F__)
    _mm512_stream_ps(p, a);
#elif defined(__AVX2__)
    _mm256_stream_ps(p, a);
#else
    *p = a;
#endif
}
FG_VINLINE void v_sfence(void) {
#if VL > 1
    _mm_sfence();
#endif
}
/* elements before p + i reaches VL-float alignment (p is float-aligned) */
FG_VINLINE int64_t v_align_head(const float *p) {
    uintptr_t mis = ((uintptr_t)p) & (uintptr_t)(VL * sizeof(float) - 1);
    return mis ? (int64_t)((VL * sizeof(float) - mis) / sizeof(float)) : 0;
}

/* ---- double-precision halves (for the GELU tail) ----------------------
 * A float vector V splits into two double vectors VD (lanes 0..VL/2-1 and
 * VL/2..VL-1; the portable copy has one lane and uses a plain double). */
#if defined(__AVX512F__)
typedef __m512d VD;
typedef __m512i VDI;
FG_VINLINE VD vd_lo(V a) { return _mm512_cvtps_pd(_mm512_castps512_ps256(a)); }
FG_VINLINE VD vd_hi(V a) { return _mm512_cvtps_pd(_mm512_extractf32x8_ps(a, 1)); }
FG_VINLINE V v_from_vd(VD lo, VD hi) {
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(lo)), _mm512_cvtpd_ps(hi), 1);
}
FG_VINLINE VD vd_set1(double a) { return _mm512_set1_pd(a); }
FG_VINLINE VD vd_add(VD a, VD b) { return _mm512_add_pd(a, b); }
FG_VINLINE VD vd_sub(VD a, VD b) { return _mm512_sub_pd(a, b); }
FG_VINLINE VD vd_mul(VD a, VD b) { return _mm512_mul_pd(a, b); }
FG_VINLINE VD vd_div(VD a, VD b) { return _mm512_div_pd(a, b); }
FG_VINLINE VD vd_fma(VD a, VD b, VD c) { return _mm512_fmadd_pd(a, b, c); }
FG_VINLINE VD vd_fnma(VD a, VD b, VD c) { return _mm512_fnmadd_pd(a, b, c); }
FG_VINLINE VD vd_min(VD a, VD b) { return _mm512_min_pd(a, b); }
FG_VINLINE VD vd_max(VD a, VD b) { return _mm512_max_pd(a, b); }
FG_VINLINE VD vd_abs(VD a) { return _mm512_abs_pd(a); }
FG_VINLINE VD vd_sel_pos(VD x, VD f, VD t) { /* x > 0 ? t : f */
    return _mm512_mask_blend_pd(_mm512_cmp_pd_mask(x, _mm512_setzero_pd(), _CMP_GT_OQ), f, t);
}
FG_VINLINE VDI vd_asi(VD a) { return _mm512_castpd_si512(a); }
FG_VINLINE VD vdi_asd(VDI a) { return _mm512_castsi512_pd(a); }
FG_VINLINE VDI vdi_sub(VDI a, VDI b) { return _mm512_sub_epi64(a, b); }
FG_VINLINE VDI vdi_add(VDI a, VDI b) { return _mm512_add_epi64(a, b); }
FG_VINLINE VDI vdi_set1(int64_t a) { return _mm512_set1_epi64(a); }
FG_VINLINE VDI vdi_slli(VDI a, int s) { return _mm512_slli_epi64(a, (unsigned)s); }
#elif defined(__AVX2__)
typedef __m256d VD;
typedef __m256i VDI;
FG_VINLINE VD vd_lo(V a) { return _mm256_cvtps_pd(_mm256_castps256_ps128(a)); }
FG_VINLINE VD vd_hi(V a) { return _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)); }
FG_VINLINE V v_from_vd(VD lo, VD hi) {
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm256_cvtpd_ps(lo)), _mm256_cvtpd_ps(hi), 1);
}
FG_VINLINE VD vd_set1(double a) { return _mm256_set1_pd(a); }
FG_VINLINE VD vd_add(VD a, VD b) { return _mm256_add_pd(a, b); }
FG_VINLINE VD vd_sub(VD a, VD b) { return _mm256_sub_pd(a, b); }
FG_VINLINE VD vd_mul(VD a, VD b) { return _mm256_mul_pd(a, b); }
FG_VINLINE VD vd_div(VD a, VD b) { return _mm256_div_pd(a, b); }
FG_VINLINE VD vd_fma(VD a, VD b, VD c) { return _mm256_fmadd_pd(a, b, c); }
FG_VINLINE VD vd_fnma(VD a, VD b, VD c) { return _mm256_fnmadd_pd(a, b, c); }
FG_VINLINE VD vd_min(VD a, VD b) { return _mm256_min_pd(a, b); }
FG_VINLINE VD vd_max(VD a, VD b) { return _mm256_max_pd(a, b); }
FG_VINLINE VD vd_abs(VD a) { return _mm256_andnot_pd(_mm256_set1_pd(-0.0), a); }
FG_VINLINE VD vd_sel_pos(VD x, VD f, VD t) {
    return _mm256_blendv_pd(f, t, _mm256_cmp_pd(x, _mm256_setzero_pd(), _CMP_GT_OQ));
}
FG_VINLINE VDI vd_asi(VD a) { return _mm256_castpd_si256(a); }
FG_VINLINE VD vdi_asd(VDI a) { return _mm256_castsi256_pd(a); }
FG_VINLINE VDI vdi_sub(VDI a, VDI b) { return _mm256_sub_epi64(a, b); }
FG_VINLINE VDI vdi_add(VDI a, VDI b) { return _mm256_add_epi64(a, b); }
FG_VINLINE VDI vdi_set1(int64_t a) { return _mm256_set1_epi64x(a); }
FG_VINLINE VDI vdi_slli(VDI a, int s) { return _mm256_slli_epi64(a, s); }
#else
typedef double VD;
typedef int64_t VDI;
FG_VINLINE VD vd_lo(V a) { return (double)a; }
FG_VINLINE VD vd_hi(V a) { return (double)a; }
FG_VINLINE V v_from_vd(VD lo, VD hi) { (void)hi; return (float)lo; }
FG_VINLINE VD vd_set1(double a) { return a; }
FG_VINLINE VD vd_add(VD a, VD b) { return a + b; }
FG_VINLINE VD vd_sub(VD a, VD b) { return a - b; }
FG_VINLINE VD vd_mul(VD a, VD b) { return a * b; }
FG_VINLINE VD vd_div(VD a, VD b) { return a / b; }
FG_VINLINE VD vd_fma(VD a, VD b, VD c) { return a * b + c; }
FG_VINLINE VD vd_fnma(VD a, VD b, VD c) { return c - a * b; }
FG_VINLINE VD vd_min(VD a, VD b) { return a < b ? a : b; }
FG_VINLINE VD vd_max(VD a, VD b) { return a > b ? a : b; }
FG_VINLINE VD vd_abs(VD a) { return fabs(a); }
FG_VINLINE VD vd_sel_pos(VD x, VD f, VD t) { return x > 0.0 ? t : f; }
FG_VINLINE VDI vd_asi(VD a) { int64_t i; memcpy(&i, &a, 8); return i; }
FG_VINLINE VD vdi_asd(VDI a) { double d; memcpy(&d, &a, 8); return d; }
FG_VINLINE VDI vdi_sub(VDI a, VDI b) { return (VDI)((uint64_t)a - (uint64_t)b); }
FG_VINLINE VDI vdi_add(VDI a, VDI b) { return (VDI)((uint64_t)a + (uint64_t)b); }
FG_VINLINE VDI vdi_set1(int64_t a) { return a; }
FG_VINLINE VDI vdi_slli(VDI a, int s) { return (VDI)((uint64_t)a << s); }
#endif

/* FN (a VD -> VD function) applied to both double halves of x, rounded back to float */
#if VL > 1
#define V_VIA_DOUBLE(FN, x) v_from_vd(FN(vd_lo(x)), FN(vd_hi(x)))
#define V_VIA_DOUBLE2(FN, x, y) v_from_vd(FN(vd_lo(x), vd_lo(y)), FN(vd_hi(x), vd_hi(y)))
#else
#define V_VIA_DOUBLE(FN, x) ((float)FN((double)(x)))
#define V_VIA_DOUBLE2(FN, x, y) ((float)FN((double)(x), (double)(y)))
#endif

/* exp(x) in double for x in [-708, 700] to ~5e-9 relative (0.1 ULP of the
 * float results it feeds): x = n ln2 + r, |r| <= ln2/2, Taylor polynomial of
 * degree 7, 2^n from its bits */
FG_VINLINE VD vd_exp(VD x) {
    const VD magic = vd_set1(6755399441055744.0); /* 1.5 * 2^52: round-to-nearest into the low bits */
    x = vd_max(x, vd_set1(-708.0));
    VD t = vd_add(vd_mul(x, vd_set1(1.4426950408889634)), magic);
    VD n = vd_sub(t, magic);
    VD r = vd_fma(n, vd_set1(-0.6931471803691238), x);  /* ln2 hi (exact product: 32-bit mantissa) */
    r = vd_fma(n, vd_set1(-1.9082149292705877e-10), r); /* ln2 lo */
    VD p = vd_set1(1.0 / 5040.0);
    p = vd_fma(p, r, vd_set1(1.0 / 720.0));
    p = vd_fma(p, r, vd_set1(1.0 / 120.0));
    p = vd_fma(p, r, vd_set1(1.0 / 24.0));
    p = vd_fma(p, r, vd_set1(1.0 / 6.0));
    p = vd_fma(p, r, vd_set1(0.5));
    p = vd_fma(p, r, vd_set1(1.0));
    p = vd_fma(p, r, vd_set1(1.0));
    VDI ni = vdi_sub(vd_asi(t), vd_asi(magic)); /* n as int64 */
    VD scale = vdi_asd(vdi_slli(vdi_add(ni, vdi_set1(1023)), 52));
    return vd_mul(p, scale);
}

/* x * Phi(x) in double for |x| / sqrt 2 >= 0.5 (the erfc tail):
 * erfc(a) = t exp(-a^2 + g(t)), t = 1 / (1 + a/2), a = |x| / sqrt 2, with g a
 * degree-9 fit of log(erfcx(a)) - log(t) over a in [0.5, 20/sqrt 2]
 * (absolute error 5e-9, so erfc is good to ~5e-9 = 0.1 float ULP); a^2 = x^2 / 2
 * is exact in double. One rounding to float at the end: the GELU tail is
 * correctly rounded but for ties within ~1e-11. |x| is clamped to 20, where
 * Phi is 0 or 1 in float. t0: float estimate of 1 / (1 + a/2). */
FG_VINLINE VD vd_gelu_tail(VD x, VD t0) {
    VD xc = vd_min(vd_max(x, vd_set1(-20.0)), vd_set1(20.0));
    VD a2 = vd_mul(vd_mul(xc, xc), vd_set1(0.5));
    VD a = vd_mul(vd_abs(xc), vd_set1(0.70710678118654752));
    /* t = 1 / d from the float estimate t0 (rel. error ~1e-7) and one Newton step
     * (error ~1e-14): a double divide costs far more than the float one */
    VD d = vd_fma(a, vd_set1(0.5), vd_set1(1.0));
    VD t = vd_fma(t0, vd_fnma(d, t0, vd_set1(1.0)), t0);
    VD u = vd_mul(vd_sub(t, vd_set1(0.4619496715496477)), vd_set1(1.0 / 0.3380503284503523));
    VD g = vd_set1(1.3617528159112223e-05);
    g = vd_fma(g, u, vd_set1(-2.2792688157536659e-05));
    g = vd_fma(g, u, vd_set1(-0.0001304233925626251));
    g = vd_fma(g, u, vd_set1(0.00027890301237757666));
    g = vd_fma(g, u, vd_set1(0.0010913279325571652));
    g = vd_fma(g, u, vd_set1(-0.0027238280120937658));
    g = vd_fma(g, u, vd_set1(-0.013411713378905505));
    g = vd_fma(g, u, vd_set1(0.026360903269345638));
    g = vd_fma(g, u, vd_set1(0.44936460304977166));
    g = vd_fma(g, u, vd_set1(-0.72268817740920732));
    VD hec = vd_mul(vd_mul(t, vd_exp(vd_sub(g, a2))), vd_set1(0.5)); /* erfc(a) / 2 */
    VD phi = vd_sel_pos(x, hec, vd_sub(vd_set1(1.0), hec));
    return vd_mul(x, phi);
}

/* exact product: hi + lo == a*b (hi = fl(a*b)) */
FG_VINLINE void v_two_prod(V a, V b, V *hi, V *lo) {
#if VL > 1
    *hi = v_mul(a, b);
#if defined(__AVX512F__)
    *lo = _mm512_fmsub_ps(a, b, *hi);
#else
    *lo = _mm256_fmsub_ps(a, b, *hi);
#endif
#else
    double p = (double)a * (double)b; /* exact: 24+24 bits < 53 */
    *hi = (float)p;
    *lo = (float)(p - (double)*hi);
#endif
}

/* =========================================================================
 * Math functions
 * ========================================================================= */

/* round to nearest even, |x| < 2^22 (the magic-number trick; exact in IEEE) */
FG_VINLINE V v_rint(V x) {
    const V magic = v_set1(12582912.0f); /* 1.5 * 2^23 */
    return v_sub(v_add(x, magic), magic);
}

/* 2^n for integer n in [-126, 127] */
FG_VINLINE V v_pow2i(VI n) { return vi_asf(vi_slli(vi_add(n, vi_set1(127)), 23)); }

/* y * 2^n for integral n in [-150, 129], y in [0.5, 2] (or NaN), rounded once:
 * overflow gives inf, the denormal range is rounded correctly */
FG_VINLINE V v_ldexp(V y, V n) {
#if defined(__AVX512F__)
    return _mm512_scalef_ps(y, n);
#else
    VI ni = v_cvti(n);
    VI n1 = vi_srai(ni, 1);
    VI n2 = vi_sub(ni, n1);
    return v_mul(v_mul(y, v_pow2i(n1)), v_pow2i(n2)); /* the first product is exact */
#endif
}

FG_VINLINE V v_exp(V x) {
    /* clamp so that n stays in [-150, 129]; the result still overflows to inf
     * above ln(FLT_MAX) and underflows through the denormals to 0 */
    V xc = v_min(v_set1(89.0f), v_max(v_set1(-104.0f), x)); /* operand order: NaN passes through */
    V n = v_rint(v_mul(xc, v_set1(1.44269504088896341f)));
    V r = v_fnma(n, v_set1(0.693359375f), xc);     /* n*C1 exact (9-bit C1) */
    r = v_fnma(n, v_set1(-2.12194440e-4f), r);
    V p = v_set1(1.9875691500E-4f);
    p = v_fma(p, r, v_set1(1.3981999507E-3f));
    p = v_fma(p, r, v_set1(8.3334519073E-3f));
    p = v_fma(p, r, v_set1(4.1665795894E-2f));
    p = v_fma(p, r, v_set1(1.6666665459E-1f));
    p = v_fma(p, r, v_set1(5.0000001201E-1f));
    V r2 = v_mul(r, r);
    V y = v_add(v_fma(p, r2, r), v_set1(1.0f));
    return v_ldexp(y, n); /* NaN: r, y and the result are NaN */
}

FG_VINLINE V v_log(V x) {
    M tiny = v_lt(x, v_set1(1.17549435e-38f)); /* denormal, zero or negative */
    V xs = v_sel(tiny, x, v_mul(x, v_set1(8388608.0f)));
    VI bits = v_asi(xs);
    VI e = vi_sub(vi_and(vi_srli(bits, 23), vi_set1(0xff)), vi_set1(126));
    e = vi_sel(tiny, e, vi_sub(e, vi_set1(23)));
    V m = vi_asf(vi_or(vi_and(bits, vi_set1(0x007fffff)), vi_set1(0x3f000000))); /* [0.5, 1) */
    M lo = v_lt(m, v_set1(0.707106781186547524f));
    V ef = v_cvtf(e);
    ef = v_sel(lo, ef, v_sub(ef, v_set1(1.0f)));
    m = v_sel(lo, v_sub(m, v_set1(1.0f)), v_sub(v_add(m, m), v_set1(1.0f)));
    V z = v_mul(m, m);
    V p = v_set1(7.0376836292E-2f);
    p = v_fma(p, m, v_set1(-1.1514610310E-1f));
    p = v_fma(p, m, v_set1(1.1676998740E-1f));
    p = v_fma(p, m, v_set1(-1.2420140846E-1f));
    p = v_fma(p, m, v_set1(1.4249322787E-1f));
    p = v_fma(p, m, v_set1(-1.6668057665E-1f));
    p = v_fma(p, m, v_set1(2.0000714765E-1f));
    p = v_fma(p, m, v_set1(-2.4999993993E-1f));
    p = v_fma(p, m, v_set1(3.3333331174E-1f));
    V y = v_mul(v_mul(p, m), z);
    y = v_fma(ef, v_set1(-2.12194440e-4f), y);
    y = v_fnma(v_set1(0.5f), z, y);
    V r = v_add(m, y);
    r = v_fma(ef, v_set1(0.693359375f), r);
    /* specials: x < 0 or NaN -> NaN, 0 -> -inf, +inf -> +inf */
    r = v_sel(v_eq(x, v_set1(INFINITY)), r, x);
    r = v_sel(v_eq(x, v_zero()), r, v_set1(-INFINITY));
    r = v_sel(m_or(v_lt(x, v_zero()), v_isnan(x)), r, v_set1(NAN));
    return r;
}

/* ---- tanh ---------------------------------------------------------------
 * |x| < 0.625: x + x^3 P(x^2) (Cephes). Otherwise, with a = min(|x|, 9.1) (at
 * 9.0109 tanh already rounds to 1): 1 - 2/(e^{2a} + 1), where
 *   e^{2a} = 2^n e^{2r}, a = n ln2/2 + r, |r| <= ln2/4: one fused reduction step
 *     (a is bounded, so the error n (ln2/2 - fl(ln2/2)) < 3e-8 relative moves
 *     the result by < 0.03 ULP); n comes out of the rounding add already biased
 *     for the exponent field, so 2^(n-1) is a single shift;
 *   e^{2r}: own degree-6 fit (relative error 3e-9);
 *   h = (e^{2a} + 1)/2 = p 2^(n-1) + 1/2 in one rounding (the product is exact);
 *   1/h: hardware reciprocal estimate refined by one Newton step (AVX-512:
 *     14 bits -> ~0.5 ULP) or one third-order step (AVX2: 12 bits); portable:
 *     a division.
 * No exp call with its overflow handling and no division: about 20 vector
 * operations where the previous exp + divide version took 26 and a divide. The
 * sign is put back last (tanh(-0) = -0, NaN passes, +-inf -> +-1). Vectors that
 * are all small or all large evaluate one branch only.
 * Max error over all 2^32 float32 inputs, vs float64 (spacings at the exact
 * value): AVX-512 1.53, AVX2 1.36, portable 1.34. */
FG_VINLINE V v_tanh_big_(V a) { /* tanh(a), a in [0.625, 9.1] or NaN */
    const V magic = v_set1(12583038.0f);                /* 1.5 * 2^23 + 126: exponent bias - 1 */
    V t = v_fma(a, v_set1(2.885390081777927f), magic);  /* 2a/ln2 rounded, n + 126 in the low bits */
    V n = v_sub(t, magic);
#if VL > 1
    V r = v_fnma(n, v_set1(0.3465735912322998f), a);    /* a - n ln2/2, one rounding */
#else /* no fused multiply-add: Cody-Waite with a 16-bit head (exact product) */
    V r = v_fnma(n, v_set1(0.3465728759765625f), a);
    r = v_fnma(n, v_set1(7.143034e-7f), r);
#endif
    V p = v_set1(0.08841352164745331f);                  /* e^{2r} = sum c_k (2r)^k, as c_k 2^k */
    p = v_fma(p, r, v_set1(0.2677987217903137f));
    p = v_fma(p, r, v_set1(0.6666942238807678f));
    p = v_fma(p, r, v_set1(1.3333216905593872f));
    p = v_fma(p, r, v_set1(1.999999761581421f));
    p = v_fma(p, r, v_set1(2.0f));
    p = v_fma(p, r, v_set1(1.0f));
    V h = v_fma(p, vi_asf(vi_slli(v_asi(t), 23)), v_set1(0.5f)); /* p 2^(n-1) + 1/2 */
#if defined(__AVX512F__)
    V q0 = _mm512_rcp14_ps(h);                          /* relative error < 2^-14 */
    V w = v_fnma(h, q0, v_set1(2.0f));                  /* 1 + e, e = 1 - h q0 */
    return v_fnma(q0, w, v_set1(1.0f));                 /* 1 - q0 (1 + e) */
#elif defined(__AVX2__)
    V q0 = _mm256_rcp_ps(h);                            /* relative error < 1.5 * 2^-12 */
    V e = v_fnma(h, q0, v_set1(1.0f));
    return v_sub(v_set1(1.0f), v_fma(q0, v_fma(e, e, e), q0)); /* 1 - q0 (1 + e + e^2) */
#else
    return 1.0f - 1.0f / h;
#endif
}

/* y (sign bit clear, or NaN) with the sign of x */
FG_VINLINE V v_tanh_sign_(V y, V x) {
#if defined(__AVX512F__)
    return _mm512_castsi512_ps(_mm512_ternarylogic_epi32(_mm512_castps_si512(y), _mm512_castps_si512(x),
                                                         _mm512_set1_epi32((int)0x80000000u), 0xF8)); /* y | (x & sign) */
#else
    return v_xor(y, v_signbit(x));
#endif
}

/* tanh(a) for a = |x| < 0.625: a + a^3 P(a^2) (Cephes); on |x| so that
 * tanh(-0) gets its sign from x afterwards */
FG_VINLINE V v_tanh_small_(V a) {
    V z = v_mul(a, a);
    V p = v_set1(-5.70498872745E-3f);
    p = v_fma(p, z, v_set1(2.06390887954E-2f));
    p = v_fma(p, z, v_set1(-5.37397155531E-2f));
    p = v_fma(p, z, v_set1(1.33314422036E-1f));
    p = v_fma(p, z, v_set1(-3.33332819422E-1f));
    return v_fma(v_mul(p, z), a, a);
}

FG_VINLINE V v_tanh(V x) {
    V a = v_abs(x);
    M small = v_lt(a, v_set1(0.625f)); /* NaN: large branch */
#if VL > 1
    V y;
    if (!m_any(small)) {
        y = v_tanh_big_(v_min(v_set1(9.1f), a)); /* operand order: NaN passes */
    } else {
        y = v_tanh_small_(a);
        if (!m_all(small)) y = v_sel(small, v_tanh_big_(v_min(v_set1(9.1f), a)), y);
    }
#else /* branch-free, so that the compiler can vectorise the element loop (SSE2, NEON) */
    V y = v_sel(small, v_tanh_big_(v_min(v_set1(9.1f), a)), v_tanh_small_(a));
#endif
    return v_tanh_sign_(y, x);
}

/* sigmoid and its complement from one exp: s = 1/(1+e^-x), c = 1 - s */
FG_VINLINE void v_sigmoid2(V x, V *s, V *c) {
    V e = v_exp(v_sub(v_zero(), v_abs(x)));
    V one = v_set1(1.0f);
    V d = v_add(one, e);
    M pos = v_ge(x, v_zero());
    *s = v_div(v_sel(pos, e, one), d);
    *c = v_div(v_sel(pos, one, e), d);
}

FG_VINLINE V v_sigmoid(V x) {
    V e = v_exp(v_sub(v_zero(), v_abs(x)));
    V one = v_set1(1.0f);
    return v_div(v_sel(v_ge(x, v_zero()), e, one), v_add(one, e));
}

/* Phi(x) = 0.5 erfc(-x / sqrt 2), accurate in relative terms for all x */
FG_VINLINE V v_phi(V x) {
    const V one = v_set1(1.0f), half = v_set1(0.5f);
    V zz = v_mul(x, v_set1(0.70710678118654752f)); /* z = x / sqrt 2 */
    V az = v_abs(zz);
    M big = v_ge(az, v_set1(0.5f)); /* NaN goes to the small branch */
    V res_small = v_zero();
    if (!m_all(big)) {
    /* |z| < 0.5: erf(z) = 2/sqrt(pi) * (z - z^3/3 + z^5/10 - ...), Taylor to z^15 */
    V z2 = v_mul(zz, zz);
    V q = v_set1(-1.0f / 75600.0f);
    q = v_fma(q, z2, v_set1(1.0f / 9360.0f));
    q = v_fma(q, z2, v_set1(-1.0f / 1320.0f));
    q = v_fma(q, z2, v_set1(1.0f / 216.0f));
    q = v_fma(q, z2, v_set1(-1.0f / 42.0f));
    q = v_fma(q, z2, v_set1(1.0f / 10.0f));
    q = v_fma(q, z2, v_set1(-1.0f / 3.0f));
    V erfz = v_mul(v_fma(v_mul(q, z2), zz, zz), v_set1(1.12837916709551257f));
    res_small = v_fma(half, erfz, half);
    if (!m_any(big)) return res_small;
    }
    /* |z| >= 0.5: erfc(a) = t exp(-a^2 + P(t)), t = 1/(1 + a/2); a^2 = x^2/2 = hi + lo exactly */
    V t = v_div(one, v_fma(half, az, one));
    V P = v_set1(0.17087277f);
    P = v_fma(P, t, v_set1(-0.82215223f));
    P = v_fma(P, t, v_set1(1.48851587f));
    P = v_fma(P, t, v_set1(-1.13520398f));
    P = v_fma(P, t, v_set1(0.27886807f));
    P = v_fma(P, t, v_set1(-0.18628806f));
    P = v_fma(P, t, v_set1(0.09678418f));
    P = v_fma(P, t, v_set1(0.37409196f));
    P = v_fma(P, t, v_set1(1.00002368f));
    P = v_fma(P, t, v_set1(-1.26551223f));
    V hi, lo; /* |x| clamped to 20: erfc(20/sqrt 2) underflows anyway, and x^2 stays finite */
    V xb = v_min(v_max(x, v_set1(-20.0f)), v_set1(20.0f));
    v_two_prod(xb, xb, &hi, &lo);
    hi = v_mul(hi, half);
    lo = v_mul(lo, half);
    V ec = v_mul(v_mul(t, v_exp(v_sub(P, lo))), v_exp(v_sub(v_zero(), hi)));
    V hec = v_mul(half, ec);
    V res_big = v_sel(v_gt(x, v_zero()), hec, v_sub(one, hec));
    return v_sel(big, res_small, res_big);
}

/* log1p(u) for u > -1: log(w) * u / (w - 1) with w = fl(1 + u) (Goldberg's
 * correction of the rounding of w), u itself where w rounds to 1 */
FG_VINLINE V v_log1p(V u) {
    V w = v_add(v_set1(1.0f), u);
    V d = v_sub(w, v_set1(1.0f));
    V r = v_mul(v_log(w), v_div(u, d));
    return v_sel(v_eq(d, v_zero()), r, u);
}

/* standard normal density exp(-x^2/2)/sqrt(2 pi), x^2 carried exactly */
FG_VINLINE V v_npdf(V x) {
    V hi, lo;
    V xb = v_min(v_max(x, v_set1(-20.0f)), v_set1(20.0f)); /* exp(-200) == 0 already */
    v_two_prod(xb, xb, &hi, &lo);
    V h = v_mul(hi, v_set1(0.5f));
    V l = v_mul(lo, v_set1(0.5f));
    V e = v_exp(v_sub(v_zero(), h));
    return v_mul(v_fnma(e, l, e), v_set1(0.398942280401432678f)); /* e*(1 - l) */
}

/* =========================================================================
 * Threads
 * ========================================================================= */
/* Work is cut into blocks (boundaries on multiples of `align`, e.g. 16 floats =
 * 64 bytes) handed out dynamically: every output still has exactly one owner
 * and the blocks depend only on n and nt, so results are the same for any
 * assignment of blocks to threads — and on a shared, busy machine a thread that
 * was descheduled does not hold the others up at the join (a static split
 * made 2 threads slower than 1 under load). About 4 blocks per thread, at least
 * `min_block` units each so the hand-out cost stays negligible. */
FG_VINLINE int64_t fg_block(int64_t n, int64_t align, int nt, int64_t min_block) {
    int64_t b = (n + 4 * (int64_t)nt - 1) / (4 * (int64_t)nt);
    if (b < min_block) b = min_block;
    return (b + align - 1) / align * align;
}

/* Run BODY(lo, hi) over [0, n) on `nt` threads (serial when nt == 1, with
 * no OpenMP construct at all), with the denormal state set per thread.
 * Element ranges use min_block 8192 (align > 1); row / chunk ranges 1. */
#if !FG_HAVE_OPENMP
#define FG_PARALLEL_RANGE(n, align, nt, BODY) \
    do {                                      \
        (void)(nt);                           \
        unsigned fs_ = fg_fpstate_enter();    \
        BODY(0, (n));                         \
        fg_fpstate_leave(fs_);                \
    } while (0)
#else
#define FG_PARALLEL_RANGE(n, align, nt, BODY)                                       \
    do {                                                                            \
        if ((nt) <= 1) {                                                            \
            unsigned fs_ = fg_fpstate_enter();                                      \
            BODY(0, (n));                                                           \
            fg_fpstate_leave(fs_);                                                  \
        } else {                                                                    \
            const int64_t n_ = (n);                                                 \
            const int64_t blk_ = fg_block(n_, (align), nt, (align) > 1 ? 8192 : 1); \
            const int64_t nblk_ = (n_ + blk_ - 1) / blk_;                           \
            _Pragma("omp parallel num_threads(nt)") {                               \
                unsigned fs_ = fg_fpstate_enter();                                  \
                _Pragma("omp for schedule(dynamic, 1)")                             \
                for (int64_t b_ = 0; b_ < nblk_; b_++) {                            \
                    int64_t lo_ = b_ * blk_, hi_ = lo_ + blk_ < n_ ? lo_ + blk_ : n_; \
                    BODY(lo_, hi_);                                                 \
                }                                                                   \
                fg_fpstate_leave(fs_);                                              \
            }                                                                       \
        }                                                                           \
    } while (0)
#endif

/* Fixed-order reductions: a reduction over n units is cut into at most
 * FG_MAX_CHUNKS chunks whose size depends only on n (never on the thread
 * count); each chunk's partial is computed by one thread, and the partials
 * are added in chunk order afterwards. */
#define FG_MAX_CHUNKS 256

/* Row sums in float vector lanes are flushed into a double every FG_SUM_BLOCK
 * elements (a multiple of every VL), bounding the float error for long rows. */
#define FG_SUM_BLOCK 256
FG_VINLINE int64_t fg_chunk_size(int64_t n, int64_t min_chunk) {
    int64_t c = (n + FG_MAX_CHUNKS - 1) / FG_MAX_CHUNKS;
    if (c < min_chunk) c = min_chunk;
    return (c + 15) & ~(int64_t)15;
}

#endif /* FG_VMATH_H */
