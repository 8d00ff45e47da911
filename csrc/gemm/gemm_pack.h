/* gemm_pack.h — packing of A and B into contiguous slivers (BLIS layout).
 *
 * A sliver is W consecutive rows of op(A) (W = MR) or columns of op(B)
 * (W = NR), stored k-major: dst[k * W + w], so the micro-kernel reads it with
 * unit stride. Rows/columns past the matrix edge are zero-filled, so one
 * micro-kernel serves every tile. Transposes are absorbed here:
 *   - "copy" packing: the W values for one k are contiguous in the source
 *     (op(A) = A^T, i.e. trans_a; or op(B) = B): dst row k = src[k*ld + 0..W)
 *   - "transpose" packing: each of the W source rows is contiguous in k
 *     (A not transposed; B transposed): an 8 x 8 in-register transpose per
 *     8 k values on AVX2/AVX-512, scalar elsewhere.
 * The packed buffers carry FG_PACK_SLACK floats of slack after them, because
 * a 6-wide sliver is written with overlapping 8-wide stores. */
#ifndef FG_GEMM_PACK_H
#define FG_GEMM_PACK_H

#include "gemm_vec.h"

#define FG_PACK_SLACK 16

/* dst[kc x W] <- src rows k = 0..kc-1 (src[k*ld + w], w < nvalid), zero-padded */
FG_INLINE void pack_copy(float *FG_RESTRICT dst, int W, const float *FG_RESTRICT src, int64_t ld,
                         int nvalid, int64_t kc) {
    if (nvalid == W) {
        for (int64_t k = 0; k < kc; k++) {
            const float *s = src + k * ld;
            float *d = dst + k * W;
            for (int w = 0; w < W; w++) d[w] = s[w];
        }
    } else {
        for (int64_t k = 0; k < kc; k++) {
            const float *s = src + k * ld;
            float *d = dst + k * W;
            int w = 0;
            for (; w < nvalid; w++) d[w] = s[w];
            for (; w < W; w++) d[w] = 0.0f;
        }
    }
}

#if defined(__AVX2__)
/* in-register transpose of 8 rows of 8 floats */
FG_INLINE void transpose8x8(__m256 *r) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}
#endif

/* dst[kc x W] <- dst[k*W + w] = src[w*ld + k] for w < nvalid, zero-padded.
 * W is 6, 12, 16 or 32 on the vector paths (a compile-time constant after
 * inlining); rows are handled in groups of 8 (the last group may be 4 or 6
 * wide, written with a 4-wide store or an overlapping 8-wide store). */
FG_INLINE void pack_transpose(float *FG_RESTRICT dst, int W, const float *FG_RESTRICT src, int64_t ld,
                              int nvalid, int64_t kc) {
    int64_t k = 0;
#if defined(__AVX2__)
    if (W % 8 == 0 || W == 6 || W == 12) {
        const int ngroups = (W + 7) / 8;
        /* width 6: stop one k early so the overlap stays inside this sliver
           (another thread may own the next one) */
        const int64_t kend = (W == 6) ? kc - 1 : kc;
        for (; k + 8 <= kend; k += 8) {
            for (int g = 0; g < ngroups; g++) {
                __m256 r[8];
                for (int i = 0; i < 8; i++) {
                    int w = g * 8 + i;
                    r[i] = (w < nvalid) ? _mm256_loadu_ps(src + w * ld + k) : _mm256_setzero_ps();
                }
                transpose8x8(r);
                const int width = W - g * 8 < 8 ? W - g * 8 : 8; /* 8, 6 or 4 */
                float *d = dst + k * W + g * 8;
                if (width == 4) {
                    for (int i = 0; i < 8; i++) _mm_storeu_ps(d + i * W, _mm256_castps256_ps128(r[i]));
                } else {
                    /* width 6 writes 2 floats of garbage past each row; the
                       next row's store (ascending order) overwrites them, and
                       the last lands on row k+8 < kc, written later */
                    for (int i = 0; i < 8; i++) _mm256_storeu_ps(d + i * W, r[i]);
                }
            }
        }
    }
#endif
    for (; k < kc; k++) {
        float *d = dst + k * W;
        int w = 0;
        for (; w < nvalid; w++) d[w] = src[w * ld + k];
        for (; w < W; w++) d[w] = 0.0f;
    }
}

#endif /* FG_GEMM_PACK_H */
