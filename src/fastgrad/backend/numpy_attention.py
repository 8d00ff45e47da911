"""AttentionNumpyOps: the NumPy reference of the attention ops (mixin of NumpyOps).

Layout: heads are an explicit axis. q (B, H, Tq, D), k (B, H, Tk, D),
v (B, H, Tk, Dv), scores / weights (B, H, Tq, Tk), out (B, H, Tq, Dv).

Masks (never a full (B, H, Tq, Tk) array unless the caller has one):
- ``key_valid``   (B, Tk) bool/uint8: key j of sample b may be attended to
  (a padding mask of the value / key sequence; Keras's value_mask);
- ``query_valid`` (B, Tq): query row i of sample b is real (Keras's
  query_mask); a padded query row gets all-zero weights;
- ``mask``        (B, Tq, Tk) or (Tq, Tk): an explicit attention mask
  (Keras's attention_mask, 1 = attend), the same for every head;
- ``causal``: query i attends to keys j <= i (Keras's use_causal_mask: the
  lower triangle of the (Tq, Tk) matrix, anchored at the top left).
An entry is attended iff every given mask allows it. The weights of a row are
softmax(scale * s) over its allowed entries and 0 elsewhere; a row with no
allowed entry is all zeros (Keras 3's Softmax multiplies by the mask after the
softmax, so a fully masked row is zero there too; torch gives NaN).

Dropout on the weights uses the library's counter-based stream
(``dropout(p, rate, seed, offset)``): the dropped weights multiply v, the
stored (undropped) weights drive the softmax backward.

The flash-style pair works on blocks of ``block`` keys with an online
softmax: memory is O((Tq + Tk) * D) plus one (Tq, block) tile per (b, h),
never (Tq, Tk); its backward recomputes the weights from the row
log-sum-exp ``lse`` (B, H, Tq) kept by the forward (-inf for an empty row).
It takes key_valid / query_valid / causal (no explicit mask, no dropout).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["AttentionNumpyOps", "attention_allowed"]


def _bool(m, what, shape):
    if m is None:
        return None
    m = np.asarray(m)
    if m.dtype != np.bool_:
        if m.dtype.kind not in "biuf":
            raise TypeError(f"attention: {what} must be a boolean / 0-1 array, got dtype {m.dtype}")
        m = m != 0
    if m.shape != shape:
        raise ValueError(f"attention: {what} has shape {m.shape}, expected {shape}")
    return m


def _check_qkv(q, k, v):
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"attention: q, k, v must be 4-D (batch, heads, time, dim); got shapes "
                         f"{q.shape}, {k.shape}, {v.shape}")
    B, H, Tq, D = q.shape
    if k.shape[:2] != (B, H) or v.shape[:3] != k.shape[:3] or k.shape[3] != D:
        raise ValueError(f"attention: shapes do not fit: q {q.shape}, k {k.shape}, v {v.shape}; "
                         "need q (B, H, Tq, D), k (B, H, Tk, D), v (B, H, Tk, Dv)")
    for a in (q, k, v):
        if a.dtype not in (np.float32, np.float64):
            raise TypeError(f"attention: expected float32 or float64 arrays, got {a.dtype}")
    return B, H, Tq, k.shape[2], D, v.shape[3]


def attention_allowed(B, Tq, Tk, key_valid=None, query_valid=None, mask=None, causal=False):
    """The boolean (B, 1, Tq, Tk) array of attended entries (None: all)."""
    kv = _bool(key_valid, "key_valid", (B, Tk))
    qv = _bool(query_valid, "query_valid", (B, Tq))
    if mask is not None:
        m = np.asarray(mask)
        if m.shape == (Tq, Tk):
            m = np.broadcast_to(m, (B, Tq, Tk))
        mask = _bool(m, "mask", (B, Tq, Tk))
    if kv is None and qv is None and mask is None and not causal:
        return None
    allowed = np.ones((B, 1, Tq, Tk), dtype=bool)
    if kv is not None:
        allowed &= kv[:, None, None, :]
    if qv is not None:
        allowed &= qv[:, None, :, None]
    if mask is not None:
        allowed &= mask[:, None]
    if causal:
        allowed &= np.tril(np.ones((Tq, Tk), dtype=bool))
    return allowed


class AttentionNumpyOps:
    """bmm, masked scaled softmax, scaled dot-product attention and its
    flash-style (blocked) twin; float32 and float64."""

    # ------------------------------------------------------------ batched GEMM
    def bmm(self, a, b, out=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0):
        """out[g] = alpha * op(a[g]) @ op(b[g]) + beta * out[g] over the leading
        axis g of 3-D a and b (op = transpose of the last two axes when the flag
        is set). beta == 0: out is not read."""
        if a.ndim != 3 or b.ndim != 3:
            raise ValueError(f"bmm: expected 3-D a and b (batch, rows, cols), got shapes "
                             f"{a.shape} and {b.shape}")
        if a.dtype not in (np.float32, np.float64) or b.dtype not in (np.float32, np.float64):
            raise TypeError(f"bmm: expected float32 or float64 arrays, got {a.dtype}, {b.dtype}")
        A = a.transpose(0, 2, 1) if trans_a else a
        Bm = b.transpose(0, 2, 1) if trans_b else b
        if A.shape[0] != Bm.shape[0] or A.shape[2] != Bm.shape[1]:
            raise ValueError(f"bmm: shapes do not fit: op(a) {A.shape}, op(b) {Bm.shape}; need "
                             "(G, M, K) and (G, K, N)")
        shape = (A.shape[0], A.shape[1], Bm.shape[2])
        if out is None:
            out = np.empty(shape, dtype=np.result_type(a, b))
            beta = 0.0
        elif out.shape != shape:
            raise ValueError(f"bmm: out has shape {out.shape}, expected {shape}")
        if beta == 0.0:
            np.matmul(A, Bm, out=out)
            if alpha != 1.0:
                out *= alpha
        else:
            prod = np.matmul(A, Bm)
            if alpha != 1.0:
                prod *= alpha
            if beta != 1.0:
                out *= beta
            out += prod
        return out

    # ------------------------------------------------------------ masked softmax
    def attention_softmax(self, s, out=None, scale=1.0, key_valid=None, query_valid=None, mask=None,
                          causal=False):
        """Weights p = softmax over the last axis of scale * s (B, H, Tq, Tk),
        restricted to the allowed entries (module docstring); 0 elsewhere."""
        if s.ndim != 4:
            raise ValueError(f"attention_softmax: scores must be (B, H, Tq, Tk), got {s.shape}")
        B, H, Tq, Tk = s.shape
        out = self._out(out, s)
        allowed = attention_allowed(B, Tq, Tk, key_valid, query_valid, mask, causal)
        dt = s.dtype.type
        np.multiply(s, dt(scale), out=out)
        if allowed is not None:
            np.copyto(out, dt(-np.inf), where=~allowed)
        if Tk == 0:
            return out
        m = out.max(axis=-1, keepdims=True)
        m[~np.isfinite(m)] = 0
        out -= m
        np.exp(out, out=out)
        tot = out.sum(axis=-1, keepdims=True)
        tot[tot == 0] = 1
        out /= tot
        return out

    def attention_softmax_backward(self, dp, p, out=None, scale=1.0):
        """ds = scale * p * (dp - sum_j dp * p): the gradient w.r.t. the raw
        scores s of attention_softmax (masked entries have p = 0, so ds = 0)."""
        if dp.shape != p.shape:
            raise ValueError(f"attention_softmax_backward: dp {dp.shape} and p {p.shape} differ")
        out = self._out(out, dp)
        dot = np.einsum("...j,...j->...", dp, p)[..., None]
        np.subtract(dp, dot, out=out)
        out *= p
        if scale != 1.0:
            out *= p.dtype.type(scale)
        return out

    # ------------------------------------------------------------ attention
    def attention_forward(self, q, k, v, out=None, weights=None, scale=None, key_valid=None,
                          query_valid=None, mask=None, causal=False, dropout_rate=0.0, seed=0,
                          offset=0, dropped=None, keep=None):
        """out = dropout(softmax_masked(scale q k^T)) v. `weights` (B, H, Tq, Tk)
        receives the softmax (needed by the backward; allocated when None);
        with dropout_rate > 0 `dropped` / `keep` receive the dropped weights and
        the uint8 keep flags. scale defaults to 1 / sqrt(D). Returns out."""
        B, H, Tq, Tk, D, Dv = _check_qkv(q, k, v)
        if scale is None:
            scale = 1.0 / math.sqrt(D) if D else 1.0
        dt = np.result_type(q, k, v)
        if weights is None:
            weights = np.empty((B, H, Tq, Tk), dtype=dt)
        if out is None:
            out = np.empty((B, H, Tq, Dv), dtype=dt)
        G = B * H
        s = weights.reshape(G, Tq, Tk)
        self.bmm(q.reshape(G, Tq, D), k.reshape(G, Tk, D), out=s, trans_b=True)
        self.attention_softmax(weights, weights, scale, key_valid, query_valid, mask, causal)
        p = weights
        if dropout_rate > 0.0:
            if dropped is None:
                dropped = np.empty_like(weights)
            if keep is None:
                keep = np.empty(weights.shape, dtype=np.uint8)
            self.dropout(weights, dropout_rate, seed, offset, dropped, keep)
            p = dropped
        self.bmm(p.reshape(G, Tq, Tk), v.reshape(G, Tk, Dv), out=out.reshape(G, Tq, Dv))
        return out

    def attention_backward(self, dout, q, k, v, weights, scale=None, dropout_rate=0.0, dropped=None,
                           keep=None, dq=None, dk=None, dv=None, dp=None):
        """Gradients (dq, dk, dv) of attention_forward from dout (B, H, Tq, Dv)
        and the forward's weights (and dropped / keep with dropout). dp is an
        optional (B, H, Tq, Tk) scratch."""
        B, H, Tq, Tk, D, Dv = _check_qkv(q, k, v)
        if scale is None:
            scale = 1.0 / math.sqrt(D) if D else 1.0
        G = B * H
        dt = dout.dtype
        dq = np.empty(q.shape, dt) if dq is None else dq
        dk = np.empty(k.shape, dt) if dk is None else dk
        dv = np.empty(v.shape, dt) if dv is None else dv
        dp = np.empty(weights.shape, dt) if dp is None else dp
        pd = dropped if dropout_rate > 0.0 else weights
        do = dout.reshape(G, Tq, Dv)
        self.bmm(pd.reshape(G, Tq, Tk), do, out=dv.reshape(G, Tk, Dv), trans_a=True)
        self.bmm(do, v.reshape(G, Tk, Dv), out=dp.reshape(G, Tq, Tk), trans_b=True)
        if dropout_rate > 0.0:
            self.backprop_dropout(dp, keep, dropout_rate, dp)
        self.attention_softmax_backward(dp, weights, dp, scale)
        ds = dp.reshape(G, Tq, Tk)
        self.bmm(ds, k.reshape(G, Tk, D), out=dq.reshape(G, Tq, D))
        self.bmm(ds, q.reshape(G, Tq, D), out=dk.reshape(G, Tk, D), trans_a=True)
        return dq, dk, dv

    # ------------------------------------------------------------ flash-style
    def flash_attention_forward(self, q, k, v, out=None, lse=None, scale=None, key_valid=None,
                                query_valid=None, causal=False, block=128):
        """attention_forward without dropout or explicit mask, over blocks of
        `block` keys with an online softmax (memory linear in the sequence
        length). lse (B, H, Tq) receives each row's log-sum-exp of the scaled
        allowed scores (-inf for an empty row). Returns out."""
        B, H, Tq, Tk, D, Dv = _check_qkv(q, k, v)
        if scale is None:
            scale = 1.0 / math.sqrt(D) if D else 1.0
        if block < 1:
            raise ValueError(f"flash_attention_forward: block must be >= 1, got {block}")
        dt = np.result_type(q, k, v)
        out = np.empty((B, H, Tq, Dv), dt) if out is None else out
        lse = np.empty((B, H, Tq), dt) if lse is None else lse
        kv = _bool(key_valid, "key_valid", (B, Tk))
        qv = _bool(query_valid, "query_valid", (B, Tq))
        m = np.full((B, H, Tq, 1), -np.inf, dt)
        l = np.zeros((B, H, Tq, 1), dt)
        out[...] = 0
        rows = np.arange(Tq)[:, None]
        for j0 in range(0, Tk, block):
            j1 = min(Tk, j0 + block)
            s = np.matmul(q, k[:, :, j0:j1].transpose(0, 1, 3, 2)) * dt.type(scale)
            if kv is not None:
                s = np.where(kv[:, None, None, j0:j1], s, -np.inf)
            if causal:
                s = np.where(np.arange(j0, j1)[None, :] <= rows, s, -np.inf)
            mn = np.maximum(m, s.max(axis=-1, keepdims=True))
            safe = np.where(np.isfinite(mn), mn, 0)
            alpha = np.exp(m - safe)
            pblk = np.exp(s - safe)
            l = l * alpha + pblk.sum(axis=-1, keepdims=True)
            out *= alpha
            out += np.matmul(pblk, v[:, :, j0:j1])
            m = mn
        if qv is not None:
            l = np.where(qv[:, None, :, None], l, 0)
        empty = l == 0
        out /= np.where(empty, 1, l)
        out[np.broadcast_to(empty, out.shape)] = 0
        with np.errstate(divide="ignore"):
            lse[...] = np.where(empty, -np.inf, m + np.log(np.where(empty, 1, l)))[..., 0]
        return out

    def flash_attention_backward(self, dout, q, k, v, out, lse, scale=None, key_valid=None,
                                 query_valid=None, causal=False, dq=None, dk=None, dv=None,
                                 block=128):
        """Gradients of flash_attention_forward, recomputing each block's
        weights from lse (never a (Tq, Tk) array). Returns (dq, dk, dv)."""
        B, H, Tq, Tk, D, Dv = _check_qkv(q, k, v)
        if scale is None:
            scale = 1.0 / math.sqrt(D) if D else 1.0
        dt = dout.dtype
        dq = np.empty(q.shape, dt) if dq is None else dq
        dk = np.empty(k.shape, dt) if dk is None else dk
        dv = np.empty(v.shape, dt) if dv is None else dv
        kv = _bool(key_valid, "key_valid", (B, Tk))
        dq[...] = 0
        Di = np.einsum("bhid,bhid->bhi", dout, out)[..., None]
        lse_s = np.where(np.isfinite(lse), lse, np.inf)[..., None]   # empty rows -> p = 0
        rows = np.arange(Tq)[:, None]
        for j0 in range(0, Tk, block):
            j1 = min(Tk, j0 + block)
            kb, vb = k[:, :, j0:j1], v[:, :, j0:j1]
            s = np.matmul(q, kb.transpose(0, 1, 3, 2)) * dt.type(scale)
            if kv is not None:
                s = np.where(kv[:, None, None, j0:j1], s, -np.inf)
            if causal:
                s = np.where(np.arange(j0, j1)[None, :] <= rows, s, -np.inf)
            p = np.exp(s - lse_s)
            dv[:, :, j0:j1] = np.matmul(p.transpose(0, 1, 3, 2), dout)
            dpb = np.matmul(dout, vb.transpose(0, 1, 3, 2))
            ds = p * (dpb - Di) * dt.type(scale)
            dq += np.matmul(ds, kb)
            dk[:, :, j0:j1] = np.matmul(ds.transpose(0, 1, 3, 2), q)
        return dq, dk, dv

    # ------------------------------------------------------------ additive scores
    def additive_scores_forward(self, q, k, scale, out=None, t=None, inner=False):
        """Scores of additive (Bahdanau) attention, q (B, Tq, D), k (B, Tk, D):
        inner=False: out[b,i,j] = sum_d scale_d tanh(q[b,i,d] + k[b,j,d])
        (scale (D,) or None = ones; Keras AdditiveAttention);
        inner=True:  out[b,i,j] = sum_d tanh(scale * (q[b,i,d] + k[b,j,d]))
        (scale a (1,) array or None; Keras Attention(score_mode="concat")).
        t (B, Tq, Tk, D) receives the tanh values for the backward."""
        if q.ndim != 3 or k.ndim != 3 or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
            raise ValueError(f"additive_scores_forward: q {q.shape} and k {k.shape} must be "
                             "(B, Tq, D) and (B, Tk, D)")
        B, Tq, D = q.shape
        Tk = k.shape[1]
        dt = np.result_type(q, k)
        out = np.empty((B, Tq, Tk), dt) if out is None else out
        t = np.empty((B, Tq, Tk, D), dt) if t is None else t
        np.add(q[:, :, None, :], k[:, None, :, :], out=t)
        if inner and scale is not None:
            t *= dt.type(scale.reshape(())[()])
        np.tanh(t, out=t)
        if not inner and scale is not None:
            np.matmul(t, scale.astype(dt, copy=False), out=out)
        else:
            np.sum(t, axis=-1, out=out)
        return out

    def additive_scores_backward(self, ds, q, k, scale, t, dq=None, dk=None, dscale=None,
                                 inner=False):
        """Gradients of additive_scores_forward from ds (B, Tq, Tk): dq, dk and,
        when dscale is given (shape of scale), the scale's gradient."""
        dt = ds.dtype
        dq = np.empty(q.shape, dt) if dq is None else dq
        dk = np.empty(k.shape, dt) if dk is None else dk
        g = 1.0 - t * t                                  # tanh'
        if inner:
            g *= ds[..., None]                           # d/d(scale * u)
            if dscale is not None:
                u = q[:, :, None, :] + k[:, None, :, :]
                dscale[...] = np.vdot(g, u)
            if scale is not None:
                g *= dt.type(scale.reshape(())[()])
        else:
            if dscale is not None:
                dscale[...] = np.einsum("bij,bijd->d", ds, t)
            g *= ds[..., None]
            if scale is not None:
                g *= scale.astype(dt, copy=False)
        np.sum(g, axis=2, out=dq)
        np.sum(g, axis=1, out=dk)
        return dq, dk
