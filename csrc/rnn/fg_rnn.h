/* fg_rnn.h — recurrences of SimpleRNN, LSTM and GRU (Keras 3 layouts), the
 * whole sequence in one call.
 *
 * Conventions (the same as NumpyOps' ops in src/fastgrad/backend/numpy_rnn.py):
 * - n rows (batch), T steps, u units, G gates (SimpleRNN 1, LSTM 4 [i f c o],
 *   GRU 3 [z r h], reset_after=True).
 * - xw (n, T, G*u): the input projection x kernel + bias of every step, made
 *   by the caller with ONE GEMM; indexed by time t.
 * - hs, cs (n, T, u) and gates (n, T, Gs*u) are indexed by processing step s;
 *   t = s, or t = T-1-s when reverse (go_backwards).
 * - mask (n, T) uint8 by time or NULL: a masked step keeps the states and has
 *   zero pre-activation gradients. rmask (n, u) or NULL: recurrent dropout
 *   multiplier applied to h_{s-1} before the recurrent product.
 * - act / rec_act: FG_ACT_LINEAR, _RELU, _SIGMOID or _TANH.
 * - per step: one GEMM (h_{s-1} rk, accumulated onto the step's xw slice) and
 *   a row-parallel gate pass (nonlinearities + state update) over its rows;
 *   backward through time: the gate-gradient pass, then one GEMM for dh_{s-1};
 *   the recurrent kernel's gradient is ONE GEMM over all steps at the end.
 * - scratch: caller-provided float buffers of fg_<cell>_scratch(n, T, u)
 *   floats; no allocation inside.
 * Results are bitwise identical for any thread count (fg_gemm's guarantee;
 * the gate passes give each row to one thread).
 * Backward: dhs (n, T, u) gradient on hs (by step); dhT / dcT final-state
 * gradients or NULL. Outputs dxw (n, T, G*u) by time, drk (u, G*u)
 * overwritten, dh0 / dc0 (n, u); GRU also dbrec (3u) overwritten (or NULL).
 * Returns FG_OK or FG_ERR_ARG. */
#ifndef FG_RNN_H
#define FG_RNN_H

#include <stdint.h>

#include "fg_common.h"

int64_t fg_rnn_scratch(int cell, int64_t n, int64_t T, int64_t u); /* cell: 1 simple, 4 lstm, 3 gru */

int fg_simple_rnn_forward(float *hs, const float *xw, const float *rk, const float *h0, const uint8_t *mask,
                          const float *rmask, int64_t n, int64_t T, int64_t u, int reverse, int act,
                          float *scratch, int nthreads);
int fg_simple_rnn_backward(float *dxw, float *drk, float *dh0, const float *dhs, const float *dhT,
                           const float *rk, const float *h0, const float *hs, const uint8_t *mask,
                           const float *rmask, int64_t n, int64_t T, int64_t u, int reverse, int act,
                           float *scratch, int nthreads);

int fg_lstm_forward(float *hs, float *cs, float *gates, const float *xw, const float *rk, const float *h0,
                    const float *c0, const uint8_t *mask, const float *rmask, int64_t n, int64_t T, int64_t u,
                    int reverse, int act, int rec_act, float *scratch, int nthreads);
int fg_lstm_backward(float *dxw, float *drk, float *dh0, float *dc0, const float *dhs, const float *dhT,
                     const float *dcT, const float *rk, const float *h0, const float *c0, const float *hs,
                     const float *cs, const float *gates, const uint8_t *mask, const float *rmask, int64_t n,
                     int64_t T, int64_t u, int reverse, int act, int rec_act, float *scratch, int nthreads);

int fg_gru_forward(float *hs, float *gates, const float *xw, const float *rk, const float *brec, const float *h0,
                   const uint8_t *mask, const float *rmask, int64_t n, int64_t T, int64_t u, int reverse, int act,
                   int rec_act, float *scratch, int nthreads);
int fg_gru_backward(float *dxw, float *drk, float *dbrec, float *dh0, const float *dhs, const float *dhT,
                    const float *rk, const float *h0, const float *hs, const float *gates, const uint8_t *mask,
                    const float *rmask, int64_t n, int64_t T, int64_t u, int reverse, int act, int rec_act,
                    float *scratch, int nthreads);

/* Embedding backward: dtable (V, D) = 0, then dtable[ids[p]] += dy[p] for p = 0 .. npos-1 in
 * order (one thread: the same bits always). Ids must be in [0, V) (FG_ERR_ARG otherwise, with
 * dtable left zeroed). */
int fg_embedding_backward(float *dtable, const int64_t *ids, const float *dy, int64_t npos, int64_t V,
                          int64_t D);

#endif
