"""Keras's original GRU recurrence (reset_after=False), NumPy reference.

Per step (gate blocks [z, r, h] of the kernels, as Keras):
    hp = h_{s-1} (times the recurrent dropout mask, if any)
    z  = rec_act(xw_z + hp rk_z),   r = rec_act(xw_r + hp rk_r)
    hh = act(xw_h + (r * hp) rk_h)          # the reset gate BEFORE the matmul
    h  = z h_{s-1} + (1 - z) hh
xw = x kernel + bias (the single (3U,) bias is all on the input side). Masks,
reverse and the recurrent dropout mask follow gru_forward's conventions
(backend/numpy_rnn.py): a masked step carries h through; rmask multiplies the
state fed to the recurrent products, not the carried state. There is no C
kernel: NativeOps inherits these (the native backend runs this op in NumPy).
"""
from __future__ import annotations

import numpy as np

from .numpy_rnn import _act_fwd, _act_grad, _mask_col


class GruV1NumpyOps:
    def gru_v1_forward(self, xw, rk, h0, mask, reverse, rmask, act, rec_act, hs, gates):
        """hs (n, T, U) the states in processing order; gates[:, s] keeps
        [z, r, hh, r * hp] (4U) for the backward."""
        n, T, g3 = xw.shape
        u = g3 // 3
        if rk.shape != (u, g3) or h0.shape != (n, u):
            raise ValueError(f"gru_v1_forward: recurrent kernel {rk.shape} / initial state "
                             f"{h0.shape} do not fit xw {xw.shape} (expected ({u}, {g3}) and "
                             f"({n}, {u}))")
        h = h0
        rzr = rk[:, :2 * u]
        rkh = rk[:, 2 * u:]
        tmp = np.empty((n, u), xw.dtype)
        for s in range(T):
            t = T - 1 - s if reverse else s
            hp = h if rmask is None else h * rmask
            gs = gates[:, s]
            x = xw[:, t]
            np.matmul(hp, rzr, out=gs[:, :2 * u])
            gs[:, :2 * u] += x[:, :2 * u]
            _act_fwd(rec_act, gs[:, :2 * u], gs[:, :2 * u])
            z, r = gs[:, :u], gs[:, u:2 * u]
            rh = gs[:, 3 * u:]
            np.multiply(r, hp, out=rh)
            np.matmul(rh, rkh, out=tmp)
            tmp += x[:, 2 * u:]
            hh = gs[:, 2 * u:3 * u]
            _act_fwd(act, tmp, hh)
            hn = hs[:, s]
            np.subtract(h, hh, out=hn)
            hn *= z
            hn += hh
            m = _mask_col(mask, t, xw.dtype)
            if m is not None:
                hn[~m] = h[~m]
            h = hn
        return hs

    def gru_v1_backward(self, dhs, dhT, xw, rk, h0, hs, gates, mask, reverse, rmask, act,
                        rec_act, dxw, drk, dh0):
        """dxw (n, T, 3U) the pre-activation gradients (at time index t), drk
        (U, 3U) overwritten, dh0 (n, U). dhs: gradients of the states in
        processing order; dhT: of the final state (or None)."""
        n, T, g3 = xw.shape
        u = g3 // 3
        dt = xw.dtype
        dh = dhT.copy() if dhT is not None else np.zeros((n, u), dt)
        drk[...] = 0
        rzr = rk[:, :2 * u]
        rkh = rk[:, 2 * u:]
        for s in range(T - 1, -1, -1):
            t = T - 1 - s if reverse else s
            dh += dhs[:, s]
            hprev = h0 if s == 0 else hs[:, s - 1]
            hp = hprev if rmask is None else hprev * rmask
            gs = gates[:, s]
            z, r, hh, rh = gs[:, :u], gs[:, u:2 * u], gs[:, 2 * u:3 * u], gs[:, 3 * u:]
            m = _mask_col(mask, t, dt)
            d = dxw[:, t]
            d[:, 2 * u:] = dh * (1.0 - z) * _act_grad(act, hh)       # d pre-act of hh
            d[:, :u] = dh * (hprev - hh) * _act_grad(rec_act, z)
            if m is not None:
                d[~m, :u] = 0
                d[~m, 2 * u:] = 0
            drh = d[:, 2 * u:] @ rkh.T
            d[:, u:2 * u] = drh * hp * _act_grad(rec_act, r)
            drk[:, :2 * u] += hp.T @ d[:, :2 * u]
            drk[:, 2 * u:] += rh.T @ d[:, 2 * u:]
            dhp = d[:, :2 * u] @ rzr.T
            dhp += drh * r
            if rmask is not None:
                dhp *= rmask
            dhp += dh * z
            if m is not None:
                dhp[~m] = dh[~m]
            dh = dhp
        dh0[...] = dh
        return dxw
