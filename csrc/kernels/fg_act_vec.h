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

/* y[lo:hi] = act(x[lo:hi]) through full vectors from lo, masked tail;
 * no streaming stores. FG_ACT_LINEAR copies (nothing when y == x). */
FG_VINLINE void fg_act_apply_range(float *y, const float *x, int64_t lo, int64_t hi, int act) {
#define FG_ACT_LOOP_(FN)                                                            \
    do {                                                                           \
        int64_t i = lo;                                                            \
        for (; i + VL <= hi; i += VL) v_store(y + i, FN(v_load(x + i)));           \
        if (i < hi) v_storen(y + i, FN(v_loadn(x + i, hi - i)), hi - i);           \
    } while (0)
    switch (act) {
    case FG_ACT_RELU: FG_ACT_LOOP_(act_fwd_relu); break;
    case FG_ACT_SIGMOID: FG_ACT_LOOP_(act_fwd_sigmoid); break;
    case FG_ACT_TANH: FG_ACT_LOOP_(act_fwd_tanh); break;
    case FG_ACT_GELU: FG_ACT_LOOP_(act_fwd_gelu); break;
    case FG_ACT_GELU_TANH: FG_ACT_LOOP_(act_fwd_gelu_tanh); break;
    default:
        if (y != x) memcpy(y + lo, x + lo, (size_t)(hi - lo) * sizeof(float));
        break;
    }
#undef FG_ACT_LOOP_
}

#endif /* FG_ACT_VEC_H */
