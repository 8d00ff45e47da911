/* fg_conv.h — the convolution family: 2-D convolution (1-D is H = 1) as
 * implicit GEMM, depthwise convolution and pooling as direct kernels.
 *
 * Layout: channels_last. x (n, h, w, c), y (n, oh, ow, f), a conv kernel in
 * Keras's layout (kh, kw, c / groups, f), a depthwise kernel (kh, kw, c, m)
 * with output channel c * m_count + m. Group g reads input channels
 * [g c/G, (g+1) c/G) and writes output channels [g f/G, (g+1) f/G).
 *   y[n, oy, ox, f] = b[f] + sum_{ky, kx, c} x[n, oy sh + ky dh - pt,
 *                                              ox sw + kx dw - pl, c] w[ky, kx, c, f]
 * (reads outside the input are zero; bottom / right padding is implied by
 * oh / ow). Results are bitwise identical for any thread count: every
 * output element has one owner and its sum runs in a fixed order.
 * Every function returns FG_OK or FG_ERR_ARG (inconsistent shape) /
 * FG_ERR_NOMEM; nothing is printed.
 */
#ifndef FG_CONV_H
#define FG_CONV_H

#include "fg_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fg_conv_shape {
    int64_t n, h, w, c;  /* input */
    int64_t kh, kw, f;   /* kernel window and output channels (pooling: f = c) */
    int64_t oh, ow;      /* output */
    int64_t sh, sw;      /* strides >= 1 */
    int64_t dh, dw;      /* dilation >= 1 (pooling: 1) */
    int64_t pt, pl;      /* top / left zero padding >= 0 */
    int64_t groups;      /* conv: divides c and f; depthwise: c (f = c m) */
} fg_conv_shape;

/* FG_OK when the shape is consistent: positive sizes, oh / ow equal to
 * (h + pt + pb - ((kh-1) dh + 1)) / sh + 1 for some bottom padding pb with
 * 0 <= pb (i.e. oh >= 1 and the last window starts inside the padded
 * input), groups dividing c and f. */
int fg_conv2d_check(const fg_conv_shape *s);

/* y = act(conv(x, w) + b) (b may be NULL); z = conv + b when z != NULL (the
 * pre-activation). y may equal z only for FG_ACT_LINEAR. */
int fg_conv2d_forward(float *y, float *z, const float *x, const float *w, const float *b,
                      const fg_conv_shape *s, int act, int nthreads);
/* dx = the input gradient of conv for dz (n, oh, ow, f) — overwritten. */
int fg_conv2d_backward_data(float *dx, const float *dz, const float *w, const fg_conv_shape *s,
                            int nthreads);
/* dw (kh, kw, c / groups, f) = the filter gradient — overwritten. */
int fg_conv2d_backward_filter(float *dw, const float *dz, const float *x, const fg_conv_shape *s,
                              int nthreads);

/* Depthwise: s->groups == s->c, s->f == c * m. w (kh, kw, c, m). */
int fg_depthwise2d_forward(float *y, float *z, const float *x, const float *w, const float *b,
                           const fg_conv_shape *s, int act, int nthreads);
int fg_depthwise2d_backward_data(float *dx, const float *dz, const float *w, const fg_conv_shape *s,
                                 int nthreads);
int fg_depthwise2d_backward_filter(float *dw, const float *dz, const float *x, const fg_conv_shape *s,
                                   int nthreads);

/* Pooling over kh x kw windows (s->f == s->c, dilation 1, groups ignored);
 * windows never read padding: max over the real elements, average divided by
 * their count. Max backward: the gradient goes to the first maximum of each
 * window in row-major (ky, kx) order (x == y); overlapping windows add. */
int fg_maxpool2d_forward(float *y, const float *x, const fg_conv_shape *s, int nthreads);
int fg_maxpool2d_backward(float *dx, const float *dy, const float *x, const float *y,
                          const fg_conv_shape *s, int nthreads);
int fg_avgpool2d_forward(float *y, const float *x, const fg_conv_shape *s, int nthreads);
int fg_avgpool2d_backward(float *dx, const float *dy, const fg_conv_shape *s, int nthreads);

/* Global average / max over the l = h w spatial positions: x (n, l, c) -> (n, c).
 * avg: sum in position order, then divided by l. max backward: the first maximum. */
int fg_global_avgpool_forward(float *y, const float *x, int64_t n, int64_t l, int64_t c, int nthreads);
int fg_global_avgpool_backward(float *dx, const float *dy, int64_t n, int64_t l, int64_t c, int nthreads);
int fg_global_maxpool_forward(float *y, const float *x, int64_t n, int64_t l, int64_t c, int nthreads);
int fg_global_maxpool_backward(float *dx, const float *dy, const float *x, const float *y, int64_t n,
                               int64_t l, int64_t c, int nthreads);

#ifdef __cplusplus
}
#endif
#endif /* FG_CONV_H */
