/* gemm_vec.h — a minimal float-vector vocabulary for the GEMM epilogue, so
 * the activation math below is written once and instantiated per ISA:
 *   AVX-512: vf = __m512 (16 lanes); AVX2: vf = __m256 (8); baseline: float.
 * Included only by ISA-compiled files; everything here is static inline.
 *
 * Activation math (the fused dense epilogue). Own code, kept independent of
 * the kernels/ family; every function is finite-safe for all inputs and
 * propagates NaN:
 *   exp(x), x <= 88:  Cephes-style: n = round(x log2 e), r = x - n ln2 (two
 *       constants), degree-6 polynomial, scaled by 2^n built in the exponent
 *       bits (in two steps for subnormal results). Error about 1 ulp.
 *   sigmoid(x) = 1/(1+e) for x >= 0, e/(1+e) for x < 0, e = exp(-|x|): no
 *       overflow, full relative accuracy in both tails (~2 ulp).
 *   tanh(x): |x| < 0.625: odd polynomial (Cephes tanhf); else
 *       sign(x) (1-e)/(1+e), e = exp(-2|x|). ~2 ulp.
 *   gelu(x) = x Phi(x), Phi(x) = 1 - erfc(z)/2 (x >= 0) or erfc(z)/2 (x < 0),
 *       z = |x|/sqrt 2, erfc by the Chebyshev-fitted form of Numerical
 *       Recipes (erfcc: t exp(-z^2) exp(P(t)), t = 1/(1+z/2), relative error
 *       < 1.2e-7 for z >= 0), with z^2 = x^2/2 formed exactly via FMA where
 *       available. Writing the negative tail through erfc keeps relative
 *       accuracy where 0.5 x (1 + erf) would cancel: <= ~10 ulp overall
 *       (<= 8 for |x| < 10; measured max 7.1 at x = -3.47). x < -30
 *       gives -0 (so gelu(-inf) = -0, not NaN).
 *   gelu_tanh(x) = 0.5 x (1 + tanh u) = x sigmoid(2u),
 *       u = sqrt(2/pi) (x + 0.044715 x^3); the sigmoid form has no
 *       cancellation for negative x. u is formed in float32, so for large
 *       negative x the error grows like |x u'(x)| ulp (the conditioning of
 *       the formula). x < -30 gives -0.
 */
#ifndef FG_GEMM_VEC_H
#define FG_GEMM_VEC_H

#include <stdint.h>
#include <string.h>
#include "fg_common.h"

#if defined(__AVX512F__) || defined(__AVX2__) || defined(__SSE2__)
#include <immintrin.h>
#endif

#if defined(_MSC_VER)
#define FG_NOINLINE __declspec(noinline)
#else
#define FG_NOINLINE __attribute__((noinline))
#endif

#if defined(__AVX512F__)
#define FG_VW 16
#define FG_VFMA 1
typedef __m512 vf;
typedef __mmask16 vm;
FG_INLINE vf vf_set1(float x) { return _mm512_set1_ps(x); }
FG_INLINE vf vf_zero(void) { return _mm512_setzero_ps(); }
FG_INLINE vf vf_loadu(const float *p) { return _mm512_loadu_ps(p); }
FG_INLINE void vf_storeu(float *p, vf x) { _mm512_storeu_ps(p, x); }
FG_INLINE vf vf_add(vf a, vf b) { return _mm512_add_ps(a, b); }
FG_INLINE vf vf_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
FG_INLINE vf vf_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
FG_INLINE vf vf_div(vf a, vf b) { return _mm512_div_ps(a, b); }
FG_INLINE vf vf_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
FG_INLINE vf vf_fms(vf a, vf b, vf c) { return _mm512_fmsub_ps(a, b, c); } /* a*b - c */
/* max(x, 0) that keeps NaN: vmaxps returns its second operand on NaN. */
FG_INLINE vf vf_relu(vf x) { return _mm512_max_ps(_mm512_setzero_ps(), x); }
FG_INLINE vf vf_max(vf a, vf b) { return _mm512_max_ps(a, b); }
FG_INLINE vf vf_min(vf a, vf b) { return _mm512_min_ps(a, b); }
FG_INLINE vf vf_abs(vf x) {
    return _mm512_castsi512_ps(_mm512_and_epi32(_mm512_castps_si512(x), _mm512_set1_epi32(0x7fffffff)));
}
/* first n (< 16) floats at p, zero above; no access past p + n */
FG_INLINE vf vf_loadu_part(const float *p, int n) { return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p); }
FG_INLINE void vf_storeu_part(float *p, vf x, int n) { _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), x); }
FG_INLINE vm vf_lt(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
FG_INLINE vm vf_ge(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
FG_INLINE vm vf_isnan(vf a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
FG_INLINE vf vf_sel(vm m, vf t, vf f) { return _mm512_mask_blend_ps(m, f, t); }
/* 2^n for integral n in [-126, 127] held in a float vector */
FG_INLINE vf vf_pow2i(vf n) {
    __m512i i = _mm512_cvtps_epi32(n);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(i, _mm512_set1_epi32(127)), 23));
}
/* copy the sign bit of s onto |x| */
FG_INLINE vf vf_copysign(vf x, vf s) {
    const __m512i sb = _mm512_set1_epi32((int)0x80000000u);
    return _mm512_castsi512_ps(_mm512_or_epi32(_mm512_andnot_epi32(sb, _mm512_castps_si512(x)),
                                               _mm512_and_epi32(sb, _mm512_castps_si512(s))));
}
#elif defined(__AVX2__)
#define FG_VW 8
#define FG_VFMA 1
typedef __m256 vf;
typedef __m256 vm;
FG_INLINE vf vf_set1(float x) { return _mm256_set1_ps(x); }
FG_INLINE vf vf_zero(void) { return _mm256_setzero_ps(); }
FG_INLINE vf vf_loadu(const float *p) { return _mm256_loadu_ps(p); }
FG_INLINE void vf_storeu(float *p, vf x) { _mm256_storeu_ps(p, x); }
FG_INLINE vf vf_add(vf a, vf b) { return _mm256_add_ps(a, b); }
FG_INLINE vf vf_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
FG_INLINE vf vf_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
FG_INLINE vf vf_div(vf a, vf b) { return _mm256_div_ps(a, b); }
FG_INLINE vf vf_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
FG_INLINE vf vf_fms(vf a, vf b, vf c) { return _mm256_fmsub_ps(a, b, c); }
FG_INLINE vf vf_relu(vf x) { return _mm256_max_ps(_mm256_setzero_ps(), x); }
FG_INLINE vf vf_max(vf a, vf b) { return _mm256_max_ps(a, b); }
FG_INLINE vf vf_min(vf a, vf b) { return _mm256_min_ps(a, b); }
FG_INLINE vf vf_abs(vf x) { return _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))); }
FG_INLINE vf vf_loadu_part(const float *p, int n) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx));
}
FG_INLINE void vf_storeu_part(float *p, vf x, int n) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_maskstore_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), idx), x);
}
FG_INLINE vm vf_lt(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
FG_INLINE vm vf_ge(vf a, vf b) { return _mm256_cmp_ps(a, b, _CMP_GE_OQ); }
FG_INLINE vm vf_isnan(vf a) { return _mm256_cmp_ps(a, a, _CMP_UNORD_Q); }
FG_INLINE vf vf_sel(vm m, vf t, vf f) { return _mm256_blendv_ps(f, t, m); }
FG_INLINE vf vf_pow2i(vf n) {
    __m256i i = _mm256_cvtps_epi32(n);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(i, _mm256_set1_epi32(127)), 23));
}
FG_INLINE vf vf_copysign(vf x, vf s) {
    const __m256 sb = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    return _mm256_or_ps(_mm256_andnot_ps(sb, x), _mm256_and_ps(sb, s));
}
#else
/* baseline: one lane, plain C (the compiler may still vectorise loops around it) */
#define FG_VW 1
#define FG_VFMA 0
typedef float vf;
typedef int vm;
FG_INLINE vf vf_set1(float x) { return x; }
FG_INLINE vf vf_zero(void) { return 0.0f; }
FG_INLINE vf vf_loadu(const float *p) { return *p; }
FG_INLINE void vf_storeu(float *p, vf x) { *p = x; }
FG_INLINE vf vf_add(vf a, vf b) { return a + b; }
FG_INLINE vf vf_sub(vf a, vf b) { return a - b; }
FG_INLINE vf vf_mul(vf a, vf b) { return a * b; }
FG_INLINE vf vf_div(vf a, vf b) { return a / b; }
FG_INLINE vf vf_fma(vf a, vf b, vf c) { return a * b + c; }
FG_INLINE vf vf_fms(vf a, vf b, vf c) { return a * b - c; }
FG_INLINE vf vf_relu(vf x) { return x > 0.0f ? x : (x != x ? x : 0.0f); }
FG_INLINE vf vf_max(vf a, vf b) { return a > b ? a : b; }
FG_INLINE vf vf_min(vf a, vf b) { return a < b ? a : b; }
FG_INLINE vf vf_abs(vf x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    u &= 0x7fffffffu;
    memcpy(&x, &u, 4);
    return x;
}
FG_INLINE vf vf_loadu_part(const float *p, int n) { return n > 0 ? *p : 0.0f; }
FG_INLINE void vf_storeu_part(float *p, vf x, int n) {
    if (n > 0) *p = x;
}
FG_INLINE vm vf_lt(vf a, vf b) { return a < b; }
FG_INLINE vm vf_ge(vf a, vf b) { return a >= b; }
FG_INLINE vm vf_isnan(vf a) { return a != a; }
FG_INLINE vf vf_sel(vm m, vf t, vf f) { return m ? t : f; }
FG_INLINE vf vf_pow2i(vf n) {
    uint32_t u = (uint32_t)((int32_t)n + 127) << 23;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
FG_INLINE vf vf_copysign(vf x, vf s) {
    uint32_t ux, us;
    memcpy(&ux, &x, 4);
    memcpy(&us, &s, 4);
    ux = (ux & 0x7fffffffu) | (us & 0x80000000u);
    memcpy(&x, &ux, 4);
    return x;
}
#endif

/* round to nearest integer for |x| < 2^22 without libm or SSE4.1:
 * adding and subtracting 1.5 * 2^23 leaves the rounded value (IEEE
 * round-to-nearest; the build never enables fast-math, so this is kept). */
FG_INLINE vf vf_round_small(vf x) {
    const vf magic = vf_set1(12582912.0f);
    return vf_sub(vf_add(x, magic), magic);
}

/* exp(x) for x <= 88 (larger x is clamped). Results in the subnormal range
 * (x < -87.34) are scaled in two steps, 2^n = 2^n1 2^n2, so they are rounded
 * once; x < -104 gives 0. NaN handling is left to the callers (they
 * re-select x where x is NaN). */
FG_INLINE vf vf_exp(vf x) {
    const vm under = vf_lt(x, vf_set1(-104.0f));
    x = vf_min(vf_max(x, vf_set1(-104.0f)), vf_set1(88.0f));
    vf n = vf_round_small(vf_mul(x, vf_set1(1.44269504088896341f)));
    vf r = vf_fma(n, vf_set1(-0.693359375f), x);
    r = vf_fma(n, vf_set1(2.12194440e-4f), r);
    vf p = vf_set1(1.9875691500e-4f);
    p = vf_fma(p, r, vf_set1(1.3981999507e-3f));
    p = vf_fma(p, r, vf_set1(8.3334519073e-3f));
    p = vf_fma(p, r, vf_set1(4.1665795894e-2f));
    p = vf_fma(p, r, vf_set1(1.6666665459e-1f));
    p = vf_fma(p, r, vf_set1(5.0000001201e-1f));
    vf y = vf_fma(vf_mul(p, r), r, vf_add(r, vf_set1(1.0f)));
    vf n1 = vf_max(n, vf_set1(-126.0f)); /* 2^n1 is a normal number */
    y = vf_mul(vf_mul(y, vf_pow2i(n1)), vf_pow2i(vf_sub(n, n1)));
    return vf_sel(under, vf_zero(), y);
}

FG_INLINE vf vf_sigmoid(vf x) {
    vf e = vf_exp(vf_sub(vf_zero(), vf_abs(x)));
    vf num = vf_sel(vf_ge(x, vf_zero()), vf_set1(1.0f), e);
    vf r = vf_div(num, vf_add(vf_set1(1.0f), e));
    return vf_sel(vf_isnan(x), x, r);
}

FG_INLINE vf vf_tanh(vf x) {
    vf a = vf_abs(x);
    /* small |x|: x + x z P(z), z = x^2 (Cephes tanhf) */
    vf z = vf_mul(x, x);
    vf p = vf_set1(-5.70498872745e-3f);
    p = vf_fma(p, z, vf_set1(2.06390887954e-2f));
    p = vf_fma(p, z, vf_set1(-5.37397155531e-2f));
    p = vf_fma(p, z, vf_set1(1.33314422036e-1f));
    p = vf_fma(p, z, vf_set1(-3.33332819422e-1f));
    vf small = vf_fma(vf_mul(p, z), x, x);
    /* large |x|: (1 - e) / (1 + e), e = exp(-2|x|) */
    vf e = vf_exp(vf_mul(a, vf_set1(-2.0f)));
    vf big = vf_div(vf_sub(vf_set1(1.0f), e), vf_add(vf_set1(1.0f), e));
    big = vf_copysign(big, x);
    vf r = vf_sel(vf_lt(a, vf_set1(0.625f)), small, big);
    return vf_sel(vf_isnan(x), x, r);
}

/* gelu via erfc(|x| / sqrt 2) (Numerical Recipes' erfcc form, relative
 * error < 1.2e-7): erfc = t exp(P(t)) exp(-x^2/2), t = 1/(1 + z/2). The big
 * exponent -x^2/2 is formed exactly (x^2 = hi + lo, lo by FMA or Dekker's
 * split; halving is exact) and kept out of the polynomial's sum, so its
 * rounding does not become relative error; the tiny factor exp(-hi/2) is
 * applied last, so results near the subnormal range are rounded once. */
FG_INLINE vf vf_gelu(vf x) {
    vf a = vf_min(vf_abs(x), vf_set1(30.0f)); /* beyond 30 the result is x or -0 */
    vf z = vf_mul(a, vf_set1(0.70710678118654752f));
    vf t = vf_div(vf_set1(1.0f), vf_fma(z, vf_set1(0.5f), vf_set1(1.0f)));
    vf p = vf_set1(0.17087277f);
    p = vf_fma(p, t, vf_set1(-0.82215223f));
    p = vf_fma(p, t, vf_set1(1.48851587f));
    p = vf_fma(p, t, vf_set1(-1.13520398f));
    p = vf_fma(p, t, vf_set1(0.27886807f));
    p = vf_fma(p, t, vf_set1(-0.18628806f));
    p = vf_fma(p, t, vf_set1(0.09678418f));
    p = vf_fma(p, t, vf_set1(0.37409196f));
    p = vf_fma(p, t, vf_set1(1.00002368f));
    p = vf_fma(p, t, vf_set1(-1.26551223f));
    vf hi = vf_mul(a, a);
#if FG_VFMA
    vf lo = vf_fms(a, a, hi); /* a*a - hi, exactly */
#else
    /* Dekker: a = ah + al with 12-bit halves, then a*a - hi exactly */
    vf c = vf_mul(a, vf_set1(4097.0f));
    vf ah = vf_sub(c, vf_sub(c, a));
    vf al = vf_sub(a, ah);
    vf lo = vf_add(vf_add(vf_sub(vf_mul(ah, ah), hi), vf_mul(vf_add(ah, ah), al)), vf_mul(al, al));
#endif
    /* q = t exp(P) (1 - lo/2): erfc = q exp(-hi/2), exp(-(hi+lo)/2) ~ exp(-hi/2)(1 - lo/2) */
    vf q = vf_mul(t, vf_exp(p));
    q = vf_sub(q, vf_mul(q, vf_mul(lo, vf_set1(0.5f))));
    vf e = vf_exp(vf_mul(hi, vf_set1(-0.5f)));
    vf neg = vf_mul(vf_mul(vf_mul(x, vf_set1(0.5f)), q), e);               /* x Phi(x), x < 0 */
    vf pos = vf_mul(x, vf_sub(vf_set1(1.0f), vf_mul(vf_mul(q, vf_set1(0.5f)), e))); /* x >= 0 */
    vf r = vf_sel(vf_ge(x, vf_zero()), pos, neg);
    r = vf_sel(vf_lt(x, vf_set1(-30.0f)), vf_set1(-0.0f), r);
    return vf_sel(vf_isnan(x), x, r);
}

FG_INLINE vf vf_gelu_tanh(vf x) {
    /* 2u = 2 sqrt(2/pi) (x + 0.044715 x^3) */
    vf x3 = vf_mul(vf_mul(x, x), x);
    vf u2 = vf_mul(vf_fma(x3, vf_set1(0.044715f), x), vf_set1(1.5957691216057308f));
    vf r = vf_mul(x, vf_sigmoid(u2));
    r = vf_sel(vf_lt(x, vf_set1(-30.0f)), vf_set1(-0.0f), r);
    return vf_sel(vf_isnan(x), x, r);
}

FG_INLINE vf vf_activate(vf x, int act) {
    switch (act) {
    case FG_ACT_RELU: return vf_relu(x);
    case FG_ACT_SIGMOID: return vf_sigmoid(x);
    case FG_ACT_TANH: return vf_tanh(x);
    case FG_ACT_GELU: return vf_gelu(x);
    case FG_ACT_GELU_TANH: return vf_gelu_tanh(x);
    default: return x;
    }
}

#endif /* FG_GEMM_VEC_H */
