/* fg_act_vec.h — the per-vector forward activations (one V of the
 * fg_vmath.h vocabulary in, one out) and the range loop that applies them.
 * Shared by the element-wise kernels (activation.c: fg_act_forward) and the
 * fused GEMM epilogue (csrc/gemm/gemm_act.c), so both produce the same bits
 * on every ISA. Include only from ISA-compiled sources built with
 * -ffp-contract=off (the portable v_fma must not be fused by the compiler).
 *
 * Some bodies (gelu, gelu_tanh) choose a path per vector (e.g. the double
 * tail when any lane needs it), so their bits depend on how elements are
 * grouped into vectors: callers that must agree bitwise group from the same
 * start (fg_act_apply_range below, blocks on multiples of 16).
 */
#ifndef FG_ACT_VEC_H
#define FG_ACT_VEC_H

#include "fg_vmath.h"

FG_VINLINE V act_fwd_relu(V x) { return v_max(v_zero(), x); } /* NaN propagates */
FG_VINLINE V act_fwd_sigmoid(V x) { return v_sigmoid(x); }
FG_VINLINE V act_fwd_tanh(V x) { return v_tanh(x); }
FG_VINLINE V act_fwd_exp(V x) { return v_exp(x); }
FG_VINLINE V act_fwd_log(V x) { return v_log(x); }
/* gelu(x) = x Phi(x): near 0 (|x| / sqrt 2 < 0.5) the float Taylor series of
 * erf; in the tails x * Phi in double (vd_gelu_tail), rounded once */
FG_VINLINE V act_fwd_gelu(V x) {
    V az = v_abs(v_mul(x, v_set1(0.70710678118654752f)));
    M big = v_ge(az, v_set1(0.5f)); /* NaN: small branch, propagates */
    /* no lane in the negative tail: Phi = 1 - erfc/2 there, so the float erfc's
     * few-ULP error shrinks below half an ULP of Phi — the float path suffices */
    if (!m_any(v_lt(x, v_set1(-0.70710678f))))
        return v_mul(x, v_phi(x));
    V y = v_zero();
    if (!m_all(big)) y = v_mul(x, v_phi(v_sel(big, x, v_zero())));
    if (m_any(big)) {
        V t0 = v_div(v_set1(1.0f), v_fma(v_min(az, v_set1(14.2f)), v_set1(0.5f), v_set1(1.0f)));
        y = v_sel(big, y, V_VIA_DOUBLE2(vd_gelu_tail, x, t0));
    }
    return v_sel(v_eq(x, v_set1(-INFINITY)), y, v_set1(-0.0f)); /* limit, not -inf*0 */
}
/* 0.5 x (1 + tanh(u)) == x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3):
 * the sigmoid form has no cancellation for negative x */
FG_VINLINE V gelu_tanh_2u(V x) {
    V x2 = v_mul(x, x);
    V inner = v_fma(v_mul(x2, v_set1(0.044715f)), x, x);
    return v_mul(inner, v_set1(1.5957691216057308f)); /* 2 sqrt(2/pi) */
}
/* x * sigmoid(2u) in double, rounded once: the inner cubic makes the float
 * version ill-conditioned for negative x (relative error ~|2u| ulp) */
FG_VINLINE VD vd_gelu_tanh(VD x) {
    VD xc = vd_min(vd_max(x, vd_set1(-1e4)), vd_set1(1e4)); /* keeps x^3 finite; results 0 / x there */
    VD x2 = vd_mul(xc, xc);
    VD u2 = vd_mul(vd_fma(vd_mul(x2, vd_set1(0.044715)), xc, xc), vd_set1(1.5957691216057308)); /* 2u */
    VD e = vd_exp(vd_sub(vd_set1(0.0), vd_abs(u2)));                                           /* e^-|2u| */
    VD num = vd_sel_pos(u2, e, vd_set1(1.0));
    return vd_mul(x, vd_div(num, vd_add(vd_set1(1.0), e)));
}

FG_VINLINE V act_fwd_gelu_tanh(V x) {
    V y;
    if (m_any(v_lt(x, v_set1(-0.5f)))) /* the ill-conditioned side: double */
        y = V_VIA_DOUBLE(vd_gelu_tanh, x);
    else
        y = v_mul(x, v_sigmoid(gelu_tanh_2u(x)));
    y = v_sel(v_isnan(x), y, x);
    return v_sel(v_eq(x, v_set1(-INFINITY)), y, v_set1(-0.0f));
}

/* ---- the activations added after the first five (Keras 3 formulas) ----
 * Every body below is lane-local — each lane's result depends on that lane
 * only, whatever the other lanes hold — so they may run per GEMM tile and on
 * any vector grouping with the same bits (like relu/sigmoid/tanh; unlike
 * gelu/gelu_tanh). Limits at +-inf are exact; NaN propagates. */

/* Broadcast parameters of one call (fg_act_param, defaults filled in). */
typedef struct {
    V alpha;       /* leaky_relu / relu_general: negative slope; elu: alpha */
    V hi;          /* relu_general: max_value (positive part clipped to [0, hi] when has_max) */
    V thr;         /* relu_general: threshold */
    int has_slope; /* relu_general: negative slope != 0 */
    int has_max;   /* relu_general: max_value < +inf */
} fg_act_vp;

/* The parameters Keras uses when an activation is given by name. */
FG_VINLINE fg_act_param fg_act_param_default(int act) {
    fg_act_param q;
    q.alpha = act == FG_ACT_LEAKY_RELU ? 0.2f : act == FG_ACT_ELU ? 1.0f : 0.0f;
    q.max_value = INFINITY;
    q.threshold = 0.0f;
    return q;
}

/* 1 if the parameters are usable for `act` (finite slope / alpha and
 * threshold; max_value >= 0 or +inf); activations without parameters accept any. */
FG_VINLINE int fg_act_param_ok(int act, const fg_act_param *p) {
    if (!p) return 1;
    if (act == FG_ACT_LEAKY_RELU || act == FG_ACT_ELU) return isfinite(p->alpha);
    if (act == FG_ACT_RELU_GENERAL)
        return isfinite(p->alpha) && isfinite(p->threshold) && p->max_value >= 0.0f; /* NaN fails */
    return 1;
}

/* q: resolved parameters (never NULL; see fg_act_param_default) */
FG_VINLINE fg_act_vp fg_act_vparams(const fg_act_param *q) {
    fg_act_vp v;
    v.alpha = v_set1(q->alpha);
    v.hi = v_set1(q->max_value);
    v.thr = v_set1(q->threshold);
    v.has_slope = q->alpha != 0.0f;
    v.has_max = q->max_value < INFINITY;
    return v;
}

#define FG_SELU_ALPHA 1.6732632423543772848170429916717
#define FG_SELU_SCALE 1.0507009873554804934193349852946

/* expm1(x) for x <= 0 (or NaN), within ~1 ULP: x = n ln2 + r (|r| <= ln2/2,
 * Cody-Waite as v_exp), expm1(r) by its Taylor series to r^8 (truncation
 * < 1e-9 relative), expm1(x) = 2^n expm1(r) + (2^n - 1), where 2^n - 1 is
 * exact for n >= -24 and the product by 2^n is exact. x < -20 gives -1. */
FG_VINLINE V v_expm1_neg(V x) {
    V xc = v_max(v_set1(-20.0f), x); /* operand order: NaN passes */
    V n = v_rint(v_mul(xc, v_set1(1.44269504088896341f)));
    V r = v_fnma(n, v_set1(0.693359375f), xc);
    r = v_fnma(n, v_set1(-2.12194440e-4f), r);
    V p = v_set1(1.0f / 40320.0f);
    p = v_fma(p, r, v_set1(1.0f / 5040.0f));
    p = v_fma(p, r, v_set1(1.0f / 720.0f));
    p = v_fma(p, r, v_set1(1.0f / 120.0f));
    p = v_fma(p, r, v_set1(1.0f / 24.0f));
    p = v_fma(p, r, v_set1(1.0f / 6.0f));
    p = v_fma(p, r, v_set1(0.5f));
    V em = v_fma(v_mul(r, r), p, r); /* expm1(r) */
    V s = v_pow2i(v_cvti(n));        /* 2^n, n in [-29, 0] */
    return v_fma(s, em, v_sub(s, v_set1(1.0f)));
}

/* x >= 0 ? x : alpha x  (one product: the same bits as NumPy's float32) */
FG_VINLINE V act_fwd_leaky_relu(V x, V alpha) { return v_sel(v_ge(x, v_zero()), v_mul(x, alpha), x); }

/* x > 0 ? x : alpha expm1(x) */
FG_VINLINE V act_fwd_elu(V x, V alpha) {
    V neg = v_mul(alpha, v_expm1_neg(v_min(v_zero(), x))); /* NaN passes */
    return v_sel(v_gt(x, v_zero()), neg, x);
}

/* scale x (x > 0) or (scale alpha) expm1(x): each constant rounded once to float */
FG_VINLINE V act_fwd_selu(V x) {
    V neg = v_mul(v_set1((float)(FG_SELU_SCALE * FG_SELU_ALPHA)), v_expm1_neg(v_min(v_zero(), x)));
    return v_sel(v_gt(x, v_zero()), neg, v_mul(v_set1((float)FG_SELU_SCALE), x));
}

/* x sigmoid(x) = x / (1 + e^-x) in double, rounded once (a float version has
 * five roundings and reaches 3.4 ULP); the exponent is clamped to 700 (the
 * result has long underflowed there); -inf gives the limit -0. */
FG_VINLINE VD vd_silu(VD x) {
    VD e = vd_exp(vd_min(vd_sub(vd_set1(0.0), x), vd_set1(700.0)));
    return vd_div(x, vd_add(vd_set1(1.0), e)); /* NaN: the quotient is NaN */
}
FG_VINLINE V act_fwd_silu(V x) {
    V y = V_VIA_DOUBLE(vd_silu, x);
    return v_sel(v_eq(x, v_set1(-INFINITY)), y, v_set1(-0.0f));
}

/* log(1 + e), e in [0, 1], in double: log(w) = k ln2 + 2 atanh(s) with
 * s = e / (2 + e) (k = 0, e < sqrt 2 - 1) or s = (e - 1) / (e + 3) (k = 1, w / 2),
 * |s| <= 0.1716; atanh by its series to s^15 (truncation < 2e-11 relative) */
FG_VINLINE VD vd_log1p01(VD e) {
    VD big = vd_sub(e, vd_set1(0.41421356237309503));
    VD num = vd_sel_pos(big, e, vd_sub(e, vd_set1(1.0)));
    VD den = vd_add(e, vd_sel_pos(big, vd_set1(2.0), vd_set1(3.0)));
    VD s = vd_div(num, den);
    VD s2 = vd_mul(s, s);
    VD q = vd_set1(2.0 / 15.0);
    q = vd_fma(q, s2, vd_set1(2.0 / 13.0));
    q = vd_fma(q, s2, vd_set1(2.0 / 11.0));
    q = vd_fma(q, s2, vd_set1(2.0 / 9.0));
    q = vd_fma(q, s2, vd_set1(2.0 / 7.0));
    q = vd_fma(q, s2, vd_set1(2.0 / 5.0));
    q = vd_fma(q, s2, vd_set1(2.0 / 3.0));
    VD at2 = vd_fma(vd_mul(q, s2), s, vd_add(s, s)); /* 2 atanh(s) */
    return vd_add(at2, vd_sel_pos(big, vd_set1(0.0), vd_set1(0.69314718055994531)));
}
/* max(x, 0) + log1p(e^-|x|) in double, rounded once (|x| clamped to 700 in
 * the exponential, where log1p has long underflowed) */
FG_VINLINE VD vd_softplus(VD x) {
    VD a = vd_min(vd_abs(x), vd_set1(700.0));
    return vd_add(vd_max(x, vd_set1(0.0)), vd_log1p01(vd_exp(vd_sub(vd_set1(0.0), a))));
}
/* log(1 + e^x), correctly rounded but for rare ties; NaN passes */
FG_VINLINE V act_fwd_softplus(V x) {
    V y = V_VIA_DOUBLE(vd_softplus, x);
    return v_sel(v_isnan(x), y, x);
}

/* x / (1 + |x|); the limits +-1 at +-inf (not inf/inf) */
FG_VINLINE V act_fwd_softsign(V x) {
    V y = v_div(x, v_add(v_set1(1.0f), v_abs(x)));
    return v_sel(v_eq(v_abs(x), v_set1(INFINITY)), y, v_xor(v_set1(1.0f), v_signbit(x)));
}

/* relu6 = min(max(x, 0), 6); NaN passes */
FG_VINLINE V act_fwd_relu6(V x) { return v_min(v_set1(6.0f), v_max(v_zero(), x)); }

/* relu6(x + 3) / 6 (jax / Keras 3: exact near -3, where x / 6 + 0.5 would cancel) */
FG_VINLINE V act_fwd_hard_sigmoid(V x) { return v_div(act_fwd_relu6(v_add(x, v_set1(3.0f))), v_set1(6.0f)); }

/* x hard_sigmoid(x); -inf gives the limit -0 */
FG_VINLINE V act_fwd_hard_silu(V x) {
    V y = v_mul(x, act_fwd_hard_sigmoid(x));
    return v_sel(v_eq(x, v_set1(-INFINITY)), y, v_set1(-0.0f));
}

/* mish(x) = x tanh(softplus(x)) = x n / (n + 2), n = e (e + 2), e = exp(x), in
 * double (rounded once; a float version loses ~3 ULP over its five roundings).
 * x is clamped to [-700, 20] inside the ratio (at 20 it is 1 to double
 * precision; exp stays in range); -inf gives the limit -0. */
FG_VINLINE VD vd_mish_t(VD xc) { /* tanh(softplus(xc)) */
    VD e = vd_exp(xc);
    VD n = vd_mul(e, vd_add(e, vd_set1(2.0)));
    return vd_div(n, vd_add(n, vd_set1(2.0)));
}
FG_VINLINE VD vd_mish(VD x) {
    VD xc = vd_min(vd_max(x, vd_set1(-700.0)), vd_set1(20.0));
    return vd_mul(x, vd_mish_t(xc)); /* NaN: the product is NaN */
}
FG_VINLINE V act_fwd_mish(V x) {
    V y = V_VIA_DOUBLE(vd_mish, x);
    return v_sel(v_eq(x, v_set1(-INFINITY)), y, v_set1(-0.0f));
}

/* Keras relu(x, negative_slope, max_value, threshold) (FG_ACT_RELU_GENERAL):
 * a = x > thr ? x : 0, clipped to [0, max_value] (only with one),
 * y = a - slope max(thr - x, 0): separate product and difference (no FMA), the
 * same bits as NumPy's float32. NaN passes. */
FG_VINLINE V act_fwd_relu_general(V x, const fg_act_vp *p) {
    V a = v_sel(v_gt(x, p->thr), v_zero(), x);
    if (p->has_max) a = v_min(p->hi, v_max(v_zero(), a));
    if (p->has_slope) a = v_sub(a, v_mul(p->alpha, v_max(v_zero(), v_sub(p->thr, x))));
    return v_sel(v_isnan(x), a, x);
}

/* ---- backward bodies: dx = dy * act'(.) from ref (fg_act_backward_needs_input:
 * x for 1, the forward output y for 0) ---- */
/* dy * (y > 0): the same float product as NumpyOps (so inf/NaN in dy behave alike) */
FG_VINLINE V act_bwd_relu(V dy, V y) { return v_mul(dy, v_sel(v_gt(y, v_zero()), v_zero(), v_set1(1.0f))); }
FG_VINLINE V act_bwd_sigmoid(V dy, V y) { return v_mul(dy, v_mul(y, v_sub(v_set1(1.0f), y))); }
FG_VINLINE V act_bwd_tanh(V dy, V y) { return v_mul(dy, v_fnma(y, y, v_set1(1.0f))); }
/* d/dx x Phi(x) = Phi(x) + x phi(x); |x| clamped in the product so +-inf give 1 / 0 */
FG_VINLINE V act_bwd_gelu(V dy, V x) {
    V xb = v_min(v_max(x, v_set1(-20.0f)), v_set1(20.0f));
    V d = v_fma(xb, v_npdf(x), v_phi(x));
    return v_mul(dy, d);
}
/* d/dx x s(2u) = s + x s (1-s) 2u',  2u' = 2 sqrt(2/pi) (1 + 3*0.044715 x^2) */
FG_VINLINE V act_bwd_gelu_tanh(V dy, V x) {
    V s, c;
    v_sigmoid2(gelu_tanh_2u(x), &s, &c);
    V xb = v_min(v_max(x, v_set1(-1e4f)), v_set1(1e4f)); /* s*c underflows to 0 long before */
    V x2 = v_mul(xb, xb);
    V du = v_mul(v_fma(x2, v_set1(0.134145f), v_set1(1.0f)), v_set1(1.5957691216057308f));
    V d = v_fma(v_mul(xb, v_mul(s, c)), du, s);
    return v_mul(dy, d);
}
/* dy * (x >= 0 ? 1 : alpha) */
FG_VINLINE V act_bwd_leaky_relu(V dy, V x, V alpha) {
    return v_mul(dy, v_sel(v_ge(x, v_zero()), alpha, v_set1(1.0f)));
}
/* dy * (x > 0 ? 1 : alpha e^x) */
FG_VINLINE V act_bwd_elu(V dy, V x, V alpha) {
    V d = v_mul(alpha, v_exp(v_min(v_zero(), x)));
    return v_mul(dy, v_sel(v_gt(x, v_zero()), d, v_set1(1.0f)));
}
/* dy * (x > 0 ? scale : scale alpha e^x) */
FG_VINLINE V act_bwd_selu(V dy, V x) {
    V d = v_mul(v_set1((float)(FG_SELU_SCALE * FG_SELU_ALPHA)), v_exp(v_min(v_zero(), x)));
    return v_mul(dy, v_sel(v_gt(x, v_zero()), d, v_set1((float)FG_SELU_SCALE)));
}
/* d/dx x s(x) = s (1 + x (1 - s)), s and 1 - s from one exp; x clamped to
 * +-200 in the product so +-inf give 1 / 0 */
FG_VINLINE V act_bwd_silu(V dy, V x) {
    V s, c;
    v_sigmoid2(x, &s, &c);
    V xb = v_min(v_max(x, v_set1(-200.0f)), v_set1(200.0f));
    return v_mul(dy, v_mul(s, v_fma(xb, c, v_set1(1.0f))));
}
/* softplus' = sigmoid */
FG_VINLINE V act_bwd_softplus(V dy, V x) { return v_mul(dy, v_sigmoid(x)); }
/* dy / (1 + |x|)^2 */
FG_VINLINE V act_bwd_softsign(V dy, V x) {
    V t = v_add(v_set1(1.0f), v_abs(x));
    return v_div(dy, v_mul(t, t));
}
/* from y: (dy * (0 < y < 1)) / 6 */
FG_VINLINE V act_bwd_hard_sigmoid(V dy, V y) {
    M in = m_andnot(v_le(y, v_zero()), v_lt(y, v_set1(1.0f)));
    return v_div(v_mul(dy, v_sel(in, v_zero(), v_set1(1.0f))), v_set1(6.0f));
}
/* from y: dy * (0 < y < 6) */
FG_VINLINE V act_bwd_relu6(V dy, V y) {
    M in = m_andnot(v_le(y, v_zero()), v_lt(y, v_set1(6.0f)));
    return v_mul(dy, v_sel(in, v_zero(), v_set1(1.0f)));
}
/* from y: dy * y */
FG_VINLINE V act_bwd_exponential(V dy, V y) { return v_mul(dy, y); }
/* d/dx x hs(x) = x <= -3 ? 0 : x >= 3 ? 1 : (2x + 3) / 6 */
FG_VINLINE V act_bwd_hard_silu(V dy, V x) {
    V mid = v_div(v_add(v_add(x, x), v_set1(3.0f)), v_set1(6.0f));
    V d = v_sel(v_le(x, v_set1(-3.0f)), mid, v_zero());
    d = v_sel(v_ge(x, v_set1(3.0f)), d, v_set1(1.0f));
    return v_mul(dy, d);
}
/* d/dx x t(x), t = tanh(softplus(x)) = n / (n + 2):
 *   t + x (1 - t^2) sigmoid(x),  1 - t^2 = 4 (n + 1) / (n + 2)^2,  sigmoid = e / (1 + e)
 * in double, on x clamped to [-700, 20] (the derivative is 1 to double precision above 20) */
FG_VINLINE VD vd_dmish(VD x) {
    VD xc = vd_min(vd_max(x, vd_set1(-700.0)), vd_set1(20.0));
    VD e = vd_exp(xc);
    VD n = vd_mul(e, vd_add(e, vd_set1(2.0)));
    VD n2 = vd_add(n, vd_set1(2.0));
    VD t = vd_div(n, n2);
    VD g = vd_div(vd_mul(vd_mul(vd_set1(4.0), vd_add(n, vd_set1(1.0))), e),
                  vd_mul(vd_mul(n2, n2), vd_add(vd_set1(1.0), e)));
    return vd_fma(xc, g, t);
}
FG_VINLINE V act_bwd_mish(V dy, V x) {
    V d = V_VIA_DOUBLE(vd_dmish, x);
    return v_mul(dy, v_sel(v_isnan(x), d, x));
}
/* dy * (x > thr ? (0 < x < max_value, or 1 without one) : (x < thr ? slope : 0)) */
FG_VINLINE V act_bwd_relu_general(V dy, V x, const fg_act_vp *p) {
    V pos = v_set1(1.0f);
    if (p->has_max) pos = v_sel(m_andnot(v_le(x, v_zero()), v_lt(x, p->hi)), v_zero(), pos);
    V neg = v_sel(v_lt(x, p->thr), v_zero(), p->alpha);
    return v_mul(dy, v_sel(v_gt(x, p->thr), neg, pos));
}

/* 1 if act's per-lane result does not depend on the other lanes of its vector
 * (everything but gelu / gelu_tanh, which choose a path per vector): such
 * activations may be applied per GEMM tile. */
static inline int fg_act_lane_local(int act) { return act != FG_ACT_GELU && act != FG_ACT_GELU_TANH; }

/* Apply FN (a macro of one V, which may use `vp_`) over y[lo:hi] = FN(x[lo:hi])
 * through full vectors from lo and a masked tail; no streaming stores. */
#define FG_ACT_LOOP_(FN)                                                            \
    do {                                                                           \
        int64_t i_ = lo;                                                           \
        for (; i_ + VL <= hi; i_ += VL) v_store(y + i_, FN(v_load(x + i_)));       \
        if (i_ < hi) v_storen(y + i_, FN(v_loadn(x + i_, hi - i_)), hi - i_);      \
    } while (0)

/* The forward of every FG_ACT_* as a macro of one vector (parameters from vp_). */
/* Grain of an activation's forward (fg_threads_for: a second thread from 2 x grain
 * elements), shared by fg_act_forward and the GEMM epilogue. Memory-bound bodies (a
 * few cheap operations per element) go parallel from 128K elements, the
 * exp / log / division-heavy ones from 16K (measurements in activation.c). */
#define FG_ACT_GRAIN_MEM ((int64_t)1 << 16)
#define FG_ACT_GRAIN_TRANS ((int64_t)1 << 13)
static inline int64_t fg_act_fwd_grain(int act) {
    switch (act) {
    case FG_ACT_LINEAR:
    case FG_ACT_RELU:
    case FG_ACT_LEAKY_RELU:
    case FG_ACT_RELU6:
    case FG_ACT_RELU_GENERAL:
    case FG_ACT_HARD_SIGMOID:
    case FG_ACT_HARD_SILU:
    case FG_ACT_SOFTSIGN: return FG_ACT_GRAIN_MEM;
    default: return FG_ACT_GRAIN_TRANS;
    }
}

#define FG_F_RELU(v) act_fwd_relu(v)
#define FG_F_SIGMOID(v) act_fwd_sigmoid(v)
#define FG_F_TANH(v) act_fwd_tanh(v)
#define FG_F_GELU(v) act_fwd_gelu(v)
#define FG_F_GELU_TANH(v) act_fwd_gelu_tanh(v)
#define FG_F_LEAKY_RELU(v) act_fwd_leaky_relu(v, vp_.alpha)
#define FG_F_ELU(v) act_fwd_elu(v, vp_.alpha)
#define FG_F_SELU(v) act_fwd_selu(v)
#define FG_F_SILU(v) act_fwd_silu(v)
#define FG_F_SOFTPLUS(v) act_fwd_softplus(v)
#define FG_F_SOFTSIGN(v) act_fwd_softsign(v)
#define FG_F_HARD_SIGMOID(v) act_fwd_hard_sigmoid(v)
#define FG_F_MISH(v) act_fwd_mish(v)
#define FG_F_EXPONENTIAL(v) act_fwd_exp(v)
#define FG_F_RELU6(v) act_fwd_relu6(v)
#define FG_F_HARD_SILU(v) act_fwd_hard_silu(v)
#define FG_F_RELU_GENERAL(v) act_fwd_relu_general(v, &vp_)

/* One `case FG_ACT_X: STMT(FG_F_X); break;` per activation except linear:
 * STMT is a macro taking the forward macro. */
#define FG_ACT_FORWARD_CASES(STMT)                                    \
    case FG_ACT_RELU: STMT(FG_F_RELU); break;                         \
    case FG_ACT_SIGMOID: STMT(FG_F_SIGMOID); break;                   \
    case FG_ACT_TANH: STMT(FG_F_TANH); break;                         \
    case FG_ACT_GELU: STMT(FG_F_GELU); break;                         \
    case FG_ACT_GELU_TANH: STMT(FG_F_GELU_TANH); break;               \
    case FG_ACT_LEAKY_RELU: STMT(FG_F_LEAKY_RELU); break;             \
    case FG_ACT_ELU: STMT(FG_F_ELU); break;                           \
    case FG_ACT_SELU: STMT(FG_F_SELU); break;                         \
    case FG_ACT_SILU: STMT(FG_F_SILU); break;                         \
    case FG_ACT_SOFTPLUS: STMT(FG_F_SOFTPLUS); break;                 \
    case FG_ACT_SOFTSIGN: STMT(FG_F_SOFTSIGN); break;                 \
    case FG_ACT_HARD_SIGMOID: STMT(FG_F_HARD_SIGMOID); break;         \
    case FG_ACT_MISH: STMT(FG_F_MISH); break;                         \
    case FG_ACT_EXPONENTIAL: STMT(FG_F_EXPONENTIAL); break;           \
    case FG_ACT_RELU6: STMT(FG_F_RELU6); break;                       \
    case FG_ACT_HARD_SILU: STMT(FG_F_HARD_SILU); break;               \
    case FG_ACT_RELU_GENERAL: STMT(FG_F_RELU_GENERAL); break;

/* y[lo:hi] = act(x[lo:hi]) through full vectors from lo, masked tail;
 * no streaming stores. p: parameters (NULL: defaults). FG_ACT_LINEAR (and an
 * unknown code) copies (nothing when y == x). */
FG_VINLINE void fg_act_apply_range(float *y, const float *x, int64_t lo, int64_t hi, int act,
                                   const fg_act_param *p) {
    const fg_act_param q_ = p ? *p : fg_act_param_default(act);
    const fg_act_vp vp_ = fg_act_vparams(&q_);
    (void)vp_;
    switch (act) {
    FG_ACT_FORWARD_CASES(FG_ACT_LOOP_)
    default:
        if (y != x) memcpy(y + lo, x + lo, (size_t)(hi - lo) * sizeof(float));
        break;
    }
}

#endif /* FG_ACT_VEC_H */
