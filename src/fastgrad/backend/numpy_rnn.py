"""NumPy op pairs of the sequence layers (a mixin of NumpyOps): Embedding's
gather / scatter-add, Masking, and the recurrences of SimpleRNN, LSTM and GRU.

These are the reference the C family csrc/rnn/ is tested against (same names,
same signatures in backend/native_rnn.py).

Recurrence conventions (all three cells)
----------------------------------------
The layer computes the input projection of every time step with ONE product
(``xw = x @ kernel + bias``, (N, T, G*U), through ``ops.dense_forward``); the
ops here run only the recurrence over it.

- ``xw`` (N, T, G*U) is indexed by TIME t; state arrays (``hs``, ``cs``,
  ``gates``) by PROCESSING STEP s: t = s, or t = T-1-s when ``reverse``
  (Keras's go_backwards, whose output sequence is in processing order).
- ``mask`` (N, T) bool/uint8 by time, or None. A masked step carries the
  state through unchanged (h_s = h_{s-1}, c_s = c_{s-1}) and its gate
  pre-activation gradients are zero.
- ``rmask`` (N, U) or None: recurrent dropout, multiplied into h_{s-1} before
  the recurrent product (the same mask at every step, as Keras's cells).
- ``hs[:, s]`` is the state AFTER step s (what the layer turns into outputs).
- Backward ops take ``dhs`` (N, T, U): the gradient on hs (the layer maps the
  output gradient onto it), plus the gradients of the final states, and write
  ``dxw`` (N, T, G*U) by time (the gradient of the pre-activations, from which
  the layer gets dkernel, dbias and dx with one product each), ``drk`` (the
  recurrent kernel's gradient, overwritten) and the initial states' gradients.

Gate layouts are Keras's: LSTM [i, f, c, o], GRU [z, r, h] with
reset_after=True (bias (2, 3U): input bias row 0 (inside xw), recurrent bias
row 1: hh = act(xw_h + r * (h R_h + b_rec_h))).
"""
from __future__ import annotations

import numpy as np

__all__ = ["RnnNumpyOps", "RNN_ACTIVATIONS"]


def _sigmoid(x, out):
    # 1 / (1 + exp(-x)), stable for both signs
    np.negative(x, out=out)
    np.exp(out, out=out)
    out += 1.0
    np.reciprocal(out, out=out)
    return out


def _act_fwd(name, x, out):
    if name == "tanh":
        return np.tanh(x, out=out)
    if name == "sigmoid":
        with np.errstate(over="ignore"):
            return _sigmoid(x, out)
    if name == "relu":
        return np.maximum(x, 0, out=out)
    if name == "linear":
        if out is not x:
            np.copyto(out, x)
        return out
    raise ValueError(f"recurrent activation {name!r} is not supported "
                     f"(one of {', '.join(RNN_ACTIVATIONS)})")


def _act_grad(name, y):
    """d act / d x expressed through the output y."""
    if name == "tanh":
        return 1.0 - y * y
    if name == "sigmoid":
        return y * (1.0 - y)
    if name == "relu":
        return (y > 0).astype(y.dtype)
    return np.ones_like(y)


#: activations the recurrent ops take (the C kernels take the same four)
RNN_ACTIVATIONS = ("tanh", "sigmoid", "relu", "linear")


def _mask_col(mask, t, dtype):
    return None if mask is None else mask[:, t].astype(bool)


class RnnNumpyOps:
    """Sequence-layer ops (module docstring); mixed into NumpyOps."""

    # ------------------------------------------------------------ embedding
    def embedding_forward(self, ids, table, out):
        """out[...] = table[ids] (ids: integer array of any shape, already range-checked)."""
        np.take(table, ids, axis=0, out=out)
        return out

    def embedding_backward(self, ids, dy, dtable):
        """dtable = sum over the positions of each id of dy (overwrites dtable)."""
        dtable[...] = 0
        d = dtable.shape[1]
        flat = ids.reshape(-1)
        if flat.size == 0:
            return dtable
        # deterministic segment sums: positions of each id in their original order
        order = np.argsort(flat, kind="stable")
        sid = flat[order]
        starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
        dtable[sid[starts]] = np.add.reduceat(dy.reshape(-1, d)[order], starts, axis=0)
        return dtable

    # ------------------------------------------------------------ simple rnn
    def simple_rnn_forward(self, xw, rk, h0, mask, reverse, rmask, act, hs):
        """h_s = act(xw_t + h_{s-1} rk) (xw holds x kernel + bias)."""
        n, T, u = xw.shape
        h = h0
        pre = np.empty((n, u), xw.dtype)
        for s in range(T):
            t = T - 1 - s if reverse else s
            hp = h if rmask is None else h * rmask
            np.matmul(hp, rk, out=pre)
            pre += xw[:, t]
            _act_fwd(act, pre, hs[:, s])
            m = _mask_col(mask, t, xw.dtype)
            if m is not None:
                hs[:, s][~m] = h[~m]
            h = hs[:, s]
        return hs

    def simple_rnn_backward(self, dhs, dhT, xw, rk, h0, hs, mask, reverse, rmask, act,
                            dxw, drk, dh0):
        n, T, u = xw.shape
        dh = dhT.copy() if dhT is not None else np.zeros((n, u), xw.dtype)
        drk[...] = 0
        for s in range(T - 1, -1, -1):
            t = T - 1 - s if reverse else s
            dh += dhs[:, s]
            hprev = h0 if s == 0 else hs[:, s - 1]
            dz = dh * _act_grad(act, hs[:, s])
            m = _mask_col(mask, t, xw.dtype)
            if m is not None:
                dz[~m] = 0
            dxw[:, t] = dz
            hp = hprev if rmask is None else hprev * rmask
            drk += hp.T @ dz
            dprev = dz @ rk.T
            if rmask is not None:
                dprev *= rmask
            if m is not None:
                dprev[~m] = dh[~m]
            dh = dprev
        dh0[...] = dh
        return dxw

    # ------------------------------------------------------------ lstm
    def lstm_forward(self, xw, rk, h0, c0, mask, reverse, rmask, act, rec_act, hs, cs, gates):
        """Keras LSTM: z = xw_t + h_{s-1} rk, i,f,o = rec_act(z_i,f,o), g = act(z_c),
        c = f c_{s-1} + i g, h = o act(c). gates[:, s] keeps [i, f, g, o]."""
        n, T, g4 = xw.shape
        u = g4 // 4
        h, c = h0, c0
        z = np.empty((n, g4), xw.dtype)
        ac = np.empty((n, u), xw.dtype)
        for s in range(T):
            t = T - 1 - s if reverse else s
            hp = h if rmask is None else h * rmask
            np.matmul(hp, rk, out=z)
            z += xw[:, t]
            gs = gates[:, s]
            _act_fwd(rec_act, z[:, :2 * u], gs[:, :2 * u])
            _act_fwd(act, z[:, 2 * u:3 * u], gs[:, 2 * u:3 * u])
            _act_fwd(rec_act, z[:, 3 * u:], gs[:, 3 * u:])
            i, f, gg, o = gs[:, :u], gs[:, u:2 * u], gs[:, 2 * u:3 * u], gs[:, 3 * u:]
            cn = cs[:, s]
            np.multiply(f, c, out=cn)
            cn += i * gg
            _act_fwd(act, cn, ac)
            np.multiply(o, ac, out=hs[:, s])
            m = _mask_col(mask, t, xw.dtype)
            if m is not None:
                hs[:, s][~m] = h[~m]
                cs[:, s][~m] = c[~m]
            h, c = hs[:, s], cs[:, s]
        return hs

    def lstm_backward(self, dhs, dhT, dcT, xw, rk, h0, c0, hs, cs, gates, mask, reverse, rmask,
                      act, rec_act, dxw, drk, dh0, dc0):
        n, T, g4 = xw.shape
        u = g4 // 4
        dt = xw.dtype
        dh = dhT.copy() if dhT is not None else np.zeros((n, u), dt)
        dc = dcT.copy() if dcT is not None else np.zeros((n, u), dt)
        drk[...] = 0
        dz = np.empty((n, g4), dt)
        ac = np.empty((n, u), dt)
        for s in range(T - 1, -1, -1):
            t = T - 1 - s if reverse else s
            dh += dhs[:, s]
            hprev = h0 if s == 0 else hs[:, s - 1]
            cprev = c0 if s == 0 else cs[:, s - 1]
            gs = gates[:, s]
            i, f, gg, o = gs[:, :u], gs[:, u:2 * u], gs[:, 2 * u:3 * u], gs[:, 3 * u:]
            _act_fwd(act, cs[:, s], ac)
            dct = dc + dh * o * _act_grad(act, ac)
            dz[:, :u] = dct * gg * _act_grad(rec_act, i)
            dz[:, u:2 * u] = dct * cprev * _act_grad(rec_act, f)
            dz[:, 2 * u:3 * u] = dct * i * _act_grad(act, gg)
            dz[:, 3 * u:] = dh * ac * _act_grad(rec_act, o)
            dcp = dct * f
            m = _mask_col(mask, t, dt)
            if m is not None:
                dz[~m] = 0
            dxw[:, t] = dz
            hp = hprev if rmask is None else hprev * rmask
            drk += hp.T @ dz
            dhp = dz @ rk.T
            if rmask is not None:
                dhp *= rmask
            if m is not None:
                dhp[~m] = dh[~m]
                dcp[~m] = dc[~m]
            dh, dc = dhp, dcp
        dh0[...] = dh
        dc0[...] = dc
        return dxw

    # ------------------------------------------------------------ gru (reset_after=True)
    def gru_forward(self, xw, rk, brec, h0, mask, reverse, rmask, act, rec_act, hs, gates):
        """Keras GRU, reset_after=True: hr = h_{s-1} rk + brec; z = rec_act(xw_z + hr_z),
        r = rec_act(xw_r + hr_r), hh = act(xw_h + r hr_h), h = z h_{s-1} + (1 - z) hh.
        gates[:, s] keeps [z, r, hh, hr_h] (4U)."""
        n, T, g3 = xw.shape
        u = g3 // 3
        h = h0
        hr = np.empty((n, g3), xw.dtype)
        tmp = np.empty((n, u), xw.dtype)
        for s in range(T):
            t = T - 1 - s if reverse else s
            hp = h if rmask is None else h * rmask
            np.matmul(hp, rk, out=hr)
            if brec is not None:
                hr += brec
            gs = gates[:, s]
            x = xw[:, t]
            np.add(x[:, :2 * u], hr[:, :2 * u], out=gs[:, :2 * u])
            _act_fwd(rec_act, gs[:, :2 * u], gs[:, :2 * u])
            z, r = gs[:, :u], gs[:, u:2 * u]
            gs[:, 3 * u:] = hr[:, 2 * u:]
            np.multiply(r, hr[:, 2 * u:], out=tmp)
            tmp += x[:, 2 * u:]
            _act_fwd(act, tmp, gs[:, 2 * u:3 * u])
            hh = gs[:, 2 * u:3 * u]
            hn = hs[:, s]
            # h = z h + (1 - z) hh  ==  hh + z (h - hh)
            np.subtract(h, hh, out=hn)
            hn *= z
            hn += hh
            m = _mask_col(mask, t, xw.dtype)
            if m is not None:
                hn[~m] = h[~m]
            h = hn
        return hs

    def gru_backward(self, dhs, dhT, xw, rk, brec, h0, hs, gates, mask, reverse, rmask, act,
                     rec_act, dxw, drk, dbrec, dh0):
        n, T, g3 = xw.shape
        u = g3 // 3
        dt = xw.dtype
        dh = dhT.copy() if dhT is not None else np.zeros((n, u), dt)
        drk[...] = 0
        if dbrec is not None:
            dbrec[...] = 0
        dhr = np.empty((n, g3), dt)
        for s in range(T - 1, -1, -1):
            t = T - 1 - s if reverse else s
            dh += dhs[:, s]
            hprev = h0 if s == 0 else hs[:, s - 1]
            gs = gates[:, s]
            z, r, hh, hrh = gs[:, :u], gs[:, u:2 * u], gs[:, 2 * u:3 * u], gs[:, 3 * u:]
            dhh = dh * (1.0 - z) * _act_grad(act, hh)          # d pre-act of hh
            dzp = dh * (hprev - hh) * _act_grad(rec_act, z)
            drp = dhh * hrh * _act_grad(rec_act, r)
            m = _mask_col(mask, t, dt)
            d = dxw[:, t]
            d[:, :u] = dzp
            d[:, u:2 * u] = drp
            d[:, 2 * u:] = dhh
            dhr[:, :2 * u] = d[:, :2 * u]
            np.multiply(dhh, r, out=dhr[:, 2 * u:])
            if m is not None:
                d[~m] = 0
                dhr[~m] = 0
            hp = hprev if rmask is None else hprev * rmask
            drk += hp.T @ dhr
            if dbrec is not None:
                dbrec += dhr.sum(axis=0)
            dhp = dhr @ rk.T
            if rmask is not None:
                dhp *= rmask
            dhp += dh * z
            if m is not None:
                dhp[~m] = dh[~m]
            dh = dhp
        dh0[...] = dh
        return dxw
