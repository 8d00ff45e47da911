"""ConvNumpyOps — convolution, pooling and the shape-only image ops in NumPy.

The contract (signatures, shapes, semantics) is written down in
docs/conv.md ("Ops"); in short: channels_last, Keras kernel layouts
(conv (kh, kw, C/groups, F), depthwise (kh, kw, C, M), transposed
(kh, kw, F, C)), explicit pads (top, bottom, left, right) that the layers
compute with Keras's `same` rule (`same_pads`), strides, dilation, groups and
the fused bias + activation epilogue of `dense_forward`.

Speed (this is the benchmark baseline): a convolution is im2col + one GEMM per
chunk of the batch (the patch matrix of a chunk is at most `_COL_ELEMS`
elements, so no full im2col buffer is ever made); the patch copy runs one
strided slice per kernel tap, with the channels innermost (contiguous). Convs
with one input channel per group (depthwise) run directly, tap by tap. The
input gradient is the GEMM dz @ W^T scattered back tap by tap (col2im); the
weight gradient is col^T @ dz. Pooling runs tap by tap over strided views.
"""
from __future__ import annotations

import numpy as np

__all__ = ["ConvNumpyOps", "same_pads", "conv_out_size"]


def same_pads(n, k, stride, dilation=1):
    """Keras / TF `same` padding of one axis: (lo, hi), the odd pixel at the end."""
    keff = (k - 1) * dilation + 1
    out = -(-n // stride)
    total = max((out - 1) * stride + keff - n, 0)
    return total // 2, total - total // 2


def conv_out_size(n, k, stride, dilation, lo, hi):
    """Output length of a window of k taps (dilation d) over n padded by lo/hi."""
    return (n + lo + hi - ((k - 1) * dilation + 1)) // stride + 1


def _pair(v, op, what, n=2):
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        v = (int(v),) * n
    try:
        v = tuple(int(a) for a in v)
    except TypeError:
        raise ValueError(f"{op}: {what} must be an int or a tuple of {n} ints, got {v!r}") from None
    if len(v) != n:
        raise ValueError(f"{op}: {what} must have {n} entries, got {v!r}")
    return v


def _positive(v, op, what):
    if any(a < 1 for a in v):
        raise ValueError(f"{op}: {what} must be positive, got {v}")
    return v


def _check_float(op, *arrays):
    for a in arrays:
        if a is not None and a is not False and a.dtype not in (np.float32, np.float64):
            raise TypeError(f"{op}: expected float32 or float64 arrays, got {a.dtype}")


def _check_out(op, name, arr, shape):
    if arr is not None and arr is not False and tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} has shape {tuple(arr.shape)}, expected {tuple(shape)}")


def _taps(lo, n_out, k, s, d):
    """For each tap t of an axis: slice into the padded axis."""
    return [slice(t * d, t * d + (n_out - 1) * s + 1, s) for t in range(k)]


class ConvNumpyOps:
    """Mixin of NumpyOps: the conv / pooling ops (see the module docstring)."""

    #: largest patch matrix (elements) built at once; batches are cut into chunks below it
    _COL_ELEMS = 1 << 22
    #: input gradient of stride-1 convs by a correlation with the flipped kernel (True), by
    #: GEMM + scatter per tap (False), or chosen by the channel counts (None)
    _dx_by_correlation = None

    # ------------------------------------------------------------ geometry
    def _conv_geometry(self, op, x, kh, kw, strides, pads, dilation, allow_negative_end=False):
        if x.ndim != 4:
            raise ValueError(f"{op}: x must be 4-D (batch, height, width, channels), got shape {x.shape}")
        sh, sw = _positive(_pair(strides, op, "strides"), op, "strides")
        dh, dw = _positive(_pair(dilation, op, "dilation"), op, "dilation")
        pt, pb, pl, pr = _pair(pads, op, "pads", 4)
        if pt < 0 or pl < 0 or (not allow_negative_end and (pb < 0 or pr < 0)):
            raise ValueError(f"{op}: pads must be >= 0, got {(pt, pb, pl, pr)}")
        H, W = x.shape[1], x.shape[2]
        oh = conv_out_size(H, kh, sh, dh, pt, pb)
        ow = conv_out_size(W, kw, sw, dw, pl, pr)
        if oh < 1 or ow < 1 or H + pt + pb < 1 or W + pl + pr < 1:
            raise ValueError(f"{op}: kernel {(kh, kw)} (dilation {(dh, dw)}) is larger than the padded "
                             f"input {(H + pt + pb, W + pl + pr)} (input {(H, W)}, pads {(pt, pb, pl, pr)})")
        return (sh, sw), (pt, pb, pl, pr), (dh, dw), (oh, ow)

    def _padded(self, x, pads, fill, slot):
        """x padded by pads (bottom/right may be negative: rows cropped) — x itself when no pad."""
        pt, pb, pl, pr = pads
        N, H, W, C = x.shape
        if pads == (0, 0, 0, 0):
            return x
        hp, wp = H + pt + pb, W + pl + pr
        xp = self._scratch((N, hp, wp, C), x.dtype, slot)
        hc, wc = min(H, H + pb), min(W, W + pr)
        if pt or pb > 0:
            xp[:, :pt] = fill
            xp[:, pt + hc:] = fill
        if pl or pr > 0:
            xp[:, :, :pl] = fill
            xp[:, :, pl + wc:] = fill
        xp[:, pt:pt + hc, pl:pl + wc] = x[:, :hc, :wc]
        return xp

    @staticmethod
    def _im2col(xp, n0, n1, c0, c1, kshape, strides, dilation, oshape, col):
        """col (n1-n0, oh, ow, kh, kw, c1-c0) = the patches of xp[n0:n1, ..., c0:c1]: one copy
        from a strided view (the (kw, C) runs are contiguous in xp when dilation_w is 1)."""
        src = xp[n0:n1, :, :, c0:c1]
        sn, sh, sw, sc = src.strides
        v = np.lib.stride_tricks.as_strided(
            src, (n1 - n0, oshape[0], oshape[1], kshape[0], kshape[1], c1 - c0),
            (sn, sh * strides[0], sw * strides[1], sh * dilation[0], sw * dilation[1], sc), writeable=False)
        np.copyto(col, v)
        return col

    def _chunk_rows(self, n, per_row):
        return max(1, min(n, self._COL_ELEMS // max(per_row, 1)))

    # ------------------------------------------------------------ raw convolution (no bias/act)
    def _conv_raw(self, x, w, strides, pads, dilation, groups, out):
        """out (N, OH, OW, F) = conv(x, w) with w (kh, kw, C/G, F)."""
        kh, kw, cg, F = w.shape
        N, H, W, C = x.shape
        (sh, sw), pads, (dh, dw), (oh, ow) = strides, pads, dilation, out.shape[1:3]
        G = groups
        fg = F // G
        if kh == kw == 1 and (sh, sw) == (1, 1) and pads == (0, 0, 0, 0) and G == 1:
            np.matmul(x.reshape(-1, C), w.reshape(C, F), out=out.reshape(-1, F))
            return out
        xp = self._padded(x, pads, 0, "conv_xp")
        th, tw = _taps(0, oh, kh, sh, dh), _taps(0, ow, kw, sw, dw)
        if cg == 1 and G > 1:             # one input channel per group (depthwise): direct, tap by tap
            out5 = out.reshape(N, oh, ow, G, fg)
            tmp = self._scratch(out5.shape, out.dtype, "conv_dw_tmp")
            first = True
            for i in range(kh):
                for j in range(kw):
                    xs = xp[:, th[i], tw[j], :, None]          # (N, oh, ow, C, 1)
                    wt = w[i, j, 0].reshape(G, fg)
                    if first:
                        np.multiply(xs, wt, out=out5)
                        first = False
                    else:
                        np.multiply(xs, wt, out=tmp)
                        out5 += tmp
            return out
        K = kh * kw * cg
        rows = self._chunk_rows(N, oh * ow * K)
        wg = [np.ascontiguousarray(w[..., g * fg:(g + 1) * fg]).reshape(K, fg) for g in range(G)]
        for n0 in range(0, N, rows):
            n1 = min(N, n0 + rows)
            m = (n1 - n0) * oh * ow
            col = self._scratch((n1 - n0, oh, ow, kh, kw, cg), x.dtype, "conv_col")
            o2 = out[n0:n1].reshape(m, F)
            for g in range(G):
                self._im2col(xp, n0, n1, g * cg, (g + 1) * cg, (kh, kw), (sh, sw), (dh, dw), (oh, ow), col)
                if G == 1:
                    np.matmul(col.reshape(m, K), wg[0], out=o2)
                else:
                    o2[:, g * fg:(g + 1) * fg] = col.reshape(m, K) @ wg[g]
        return out

    def _conv_dx_raw(self, dz, w, x_shape, strides, pads, dilation, groups, dx):
        """dx (x_shape) = adjoint of _conv_raw applied to dz."""
        kh, kw, cg, F = w.shape
        N, H, W, C = x_shape
        (sh, sw), (pt, pb, pl, pr), (dh, dw), (oh, ow) = strides, pads, dilation, dz.shape[1:3]
        G = groups
        fg = F // G
        if kh == kw == 1 and (sh, sw) == (1, 1) and (pt, pb, pl, pr) == (0, 0, 0, 0) and G == 1:
            np.matmul(dz.reshape(-1, F), w.reshape(C, F).T, out=dx.reshape(-1, C))
            return dx
        hp, wp = H + pt + pb, W + pl + pr
        dxp = self._scratch((N, hp, wp, C), dx.dtype, "conv_dxp")
        th, tw = _taps(0, oh, kh, sh, dh), _taps(0, ow, kw, sw, dw)
        corr = self._dx_by_correlation
        if corr is None:        # measured: the correlation's patches hold F channels, the scatter's C
            corr = cg < 4 or fg < cg
        if corr and (sh, sw) == (1, 1) and not (cg == 1 and G > 1):
            # dxp = correlation of dz padded by the dilated kernel extent with the flipped,
            # transposed kernel (kh, kw, F/G, C): one im2col + GEMM instead of a scatter per tap
            eh, ew = (kh - 1) * dh, (kw - 1) * dw
            P = self._scratch((N, oh + 2 * eh, ow + 2 * ew, F), dz.dtype, "conv_dzp")
            if eh:
                P[:, :eh] = 0
                P[:, eh + oh:] = 0
            if ew:
                P[:, :, :ew] = 0
                P[:, :, ew + ow:] = 0
            P[:, eh:eh + oh, ew:ew + ow] = dz
            wf = w[::-1, ::-1]
            wt = np.concatenate([wf[:, :, :, g * fg:(g + 1) * fg].transpose(0, 1, 3, 2) for g in range(G)],
                                axis=3) if G > 1 else wf.transpose(0, 1, 3, 2)
            self._conv_raw(P, np.ascontiguousarray(wt), (1, 1), (0, 0, 0, 0), (dh, dw), G, dxp)
            hc, wc = min(H, H + pb), min(W, W + pr)
            if hc < H or wc < W:
                dx[...] = 0
            dx[:, :hc, :wc] = dxp[:, pt:pt + hc, pl:pl + wc]
            return dx
        dxp[...] = 0
        if cg == 1:
            dz5 = dz.reshape(N, oh, ow, G, fg)
            tmp = self._scratch((N, oh, ow, G, fg), dx.dtype, "conv_dw_tmp")
            for i in range(kh):
                for j in range(kw):
                    np.multiply(dz5, w[i, j, 0].reshape(G, fg), out=tmp)
                    dxp[:, th[i], tw[j], :] += tmp.sum(axis=-1)
        else:
            K = kh * kw * cg
            rows = self._chunk_rows(N, oh * ow * K)
            wg = [np.ascontiguousarray(w[..., g * fg:(g + 1) * fg]).reshape(K, fg) for g in range(G)]
            for n0 in range(0, N, rows):
                n1 = min(N, n0 + rows)
                m = (n1 - n0) * oh * ow
                d2 = dz[n0:n1].reshape(m, F)
                dcol = self._scratch((n1 - n0, oh, ow, kh, kw, cg), dx.dtype, "conv_col")
                for g in range(G):
                    dg = d2 if G == 1 else d2[:, g * fg:(g + 1) * fg]
                    np.matmul(dg, wg[g].T, out=dcol.reshape(m, K))
                    for i in range(kh):
                        for j in range(kw):
                            dxp[n0:n1, th[i], tw[j], g * cg:(g + 1) * cg] += dcol[:, :, :, i, j, :]
        hc, wc = min(H, H + pb), min(W, W + pr)
        if hc < H or wc < W:
            dx[...] = 0
        dx[:, :hc, :wc] = dxp[:, pt:pt + hc, pl:pl + wc]
        return dx

    def _conv_dw_raw(self, x, dz, kshape, strides, pads, dilation, groups, dw):
        """dw (kh, kw, C/G, F) = gradient of _conv_raw's weights for output gradient dz."""
        kh, kw, cg, F = kshape
        N, H, W, C = x.shape
        (sh, sw), pads, (dh, dwl), (oh, ow) = strides, pads, dilation, dz.shape[1:3]
        G = groups
        fg = F // G
        if kh == kw == 1 and (sh, sw) == (1, 1) and pads == (0, 0, 0, 0) and G == 1:
            np.matmul(x.reshape(-1, C).T, dz.reshape(-1, F), out=dw.reshape(C, F))
            return dw
        xp = self._padded(x, pads, 0, "conv_xp")
        th, tw = _taps(0, oh, kh, sh, dh), _taps(0, ow, kw, sw, dwl)
        if cg == 1 and G > 1:
            dz5 = dz.reshape(N, oh, ow, G, fg)
            for i in range(kh):
                for j in range(kw):
                    xs = xp[:, th[i], tw[j], :]
                    dw[i, j, 0] = np.einsum("nhwg,nhwgf->gf", xs, dz5, optimize=True).reshape(F)
            return dw
        K = kh * kw * cg
        rows = self._chunk_rows(N, oh * ow * K)
        dwg = [self._scratch((K, fg), dw.dtype, ("conv_dwg", g)) for g in range(G)]
        for n0 in range(0, N, rows):
            n1 = min(N, n0 + rows)
            m = (n1 - n0) * oh * ow
            d2 = dz[n0:n1].reshape(m, F)
            col = self._scratch((n1 - n0, oh, ow, kh, kw, cg), x.dtype, "conv_col")
            for g in range(G):
                self._im2col(xp, n0, n1, g * cg, (g + 1) * cg, (kh, kw), (sh, sw), (dh, dwl), (oh, ow), col)
                dg = d2 if G == 1 else d2[:, g * fg:(g + 1) * fg]
                if n0 == 0:
                    np.matmul(col.reshape(m, K).T, dg, out=dwg[g])
                else:
                    dwg[g] += col.reshape(m, K).T @ dg
        for g in range(G):
            dw[..., g * fg:(g + 1) * fg] = dwg[g].reshape(kh, kw, cg, fg)
        return dw

    # ------------------------------------------------------------ epilogue
    def _epilogue(self, op, z, b, activation, out):
        if b is not None:
            z += b
        if activation != "linear" or z is not out:
            self.activation(activation, z, out=out)
        return out

    def _check_act(self, op, activation):
        from .numpy_ops import ACTIVATIONS
        if activation not in ACTIVATIONS or activation in ("softmax", "log_softmax"):
            raise ValueError(f"{op}: unknown or non-element-wise activation {activation!r}")

    def _act_backward(self, dy, y, activation, preact):
        if activation == "linear":
            return dy
        return self.backprop_activation(activation, dy, y, preact,
                                        out=self._scratch(dy.shape, dy.dtype, "conv_dz"))

    # ------------------------------------------------------------ conv2d
    def _conv_check(self, op, x, w, b, groups):
        _check_float(op, x, w, b)
        if w.ndim != 4:
            raise ValueError(f"{op}: kernel must be 4-D (kh, kw, in/groups, filters), got shape {w.shape}")
        if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or groups < 1:
            raise ValueError(f"{op}: groups must be a positive integer, got {groups!r}")
        if x.ndim == 4:
            C, F = x.shape[3], w.shape[3]
            if C != w.shape[2] * groups or F % groups:
                raise ValueError(f"{op}: input with {C} channels, kernel {w.shape} and groups={groups} do "
                                 f"not match (need channels == kernel.shape[2] * groups and filters % groups == 0)")
        if b is not None and b is not False and b.shape != (w.shape[3],):
            raise ValueError(f"{op}: bias has shape {b.shape}, expected ({w.shape[3]},)")

    def conv2d_forward(self, x, w, b=None, strides=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1,
                       activation="linear", out=None, preact=None):
        """y = act(conv(x, w) + b); x (N,H,W,C), w (kh,kw,C/groups,F) -> (N,OH,OW,F)."""
        op = "conv2d_forward"
        self._check_act(op, activation)
        self._conv_check(op, x, w, b, groups)
        s, p, d, (oh, ow) = self._conv_geometry(op, x, w.shape[0], w.shape[1], strides, pads, dilation)
        shape = (x.shape[0], oh, ow, w.shape[3])
        _check_out(op, "out", out, shape)
        _check_out(op, "preact", preact, shape)
        if out is None:
            out = np.empty(shape, dtype=np.result_type(x, w))
        z = preact if preact is not None else out
        self._conv_raw(x, w, s, p, d, int(groups), z)
        return self._epilogue(op, z, b, activation, out)

    def conv2d_backward(self, dy, x, w, y, strides=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1,
                        activation="linear", preact=None, dx=None, dw=None, db=None, need_dx=True):
        """Backward of conv2d_forward: dz = act'(.) dy; dw, db (db=False: no bias) are
        overwritten; dx when need_dx. Returns (dx or None, dw, db or None)."""
        op = "conv2d_backward"
        self._conv_check(op, x, w, None, groups)
        s, p, d, (oh, ow) = self._conv_geometry(op, x, w.shape[0], w.shape[1], strides, pads, dilation)
        oshape = (x.shape[0], oh, ow, w.shape[3])
        _check_out(op, "dy", dy, oshape)
        _check_out(op, "dw", dw, w.shape)
        _check_out(op, "dx", dx, x.shape)
        dz = self._act_backward(dy, y, activation, preact)
        if dw is None:
            dw = np.empty(w.shape, dtype=dy.dtype)
        self._conv_dw_raw(x, dz, w.shape, s, p, d, int(groups), dw)
        if db is not False:
            db = np.sum(dz.reshape(-1, w.shape[3]), axis=0, out=db)
        else:
            db = None
        if need_dx:
            if dx is None:
                dx = np.empty(x.shape, dtype=dy.dtype)
            self._conv_dx_raw(dz, w, x.shape, s, p, d, int(groups), dx)
        else:
            dx = None
        return dx, dw, db

    # ------------------------------------------------------------ conv1d (2-D with H = 1)
    @staticmethod
    def _view(a, shape):
        return None if a is None or a is False else a.reshape(shape)

    def conv1d_forward(self, x, w, b=None, stride=1, pads=(0, 0), dilation=1, groups=1,
                       activation="linear", out=None, preact=None):
        """x (N,L,C), w (k,C/groups,F) -> (N,OL,F); see conv2d_forward."""
        op = "conv1d_forward"
        if x.ndim != 3 or w.ndim != 3:
            raise ValueError(f"{op}: expected x (batch, steps, channels) and kernel (k, in/groups, filters), "
                             f"got shapes {x.shape} and {w.shape}")
        pl, pr = _pair(pads, op, "pads")
        s, d = _pair(stride, op, "stride", 1)[0], _pair(dilation, op, "dilation", 1)[0]
        o4 = None if out is None else out[:, None]
        p4 = None if preact is None else preact[:, None]
        if (out is not None and out.ndim != 3) or (preact is not None and preact.ndim != 3):
            raise ValueError(f"{op}: out / preact must be 3-D")
        y = self.conv2d_forward(x[:, None], w[None], b, (1, s), (0, 0, pl, pr), (1, d), groups,
                                activation, o4, p4)
        return y[:, 0]

    def conv1d_backward(self, dy, x, w, y, stride=1, pads=(0, 0), dilation=1, groups=1,
                        activation="linear", preact=None, dx=None, dw=None, db=None, need_dx=True):
        op = "conv1d_backward"
        if x.ndim != 3 or w.ndim != 3 or dy.ndim != 3:
            raise ValueError(f"{op}: expected 3-D dy, x and kernel, got {dy.shape}, {x.shape}, {w.shape}")
        pl, pr = _pair(pads, op, "pads")
        s, d = _pair(stride, op, "stride", 1)[0], _pair(dilation, op, "dilation", 1)[0]
        dx4 = None if dx is None else dx[:, None]
        dw4 = None if dw is None else dw[None]
        gx, gw, gb = self.conv2d_backward(dy[:, None], x[:, None], w[None], None if y is None else y[:, None],
                                          (1, s), (0, 0, pl, pr), (1, d), groups, activation,
                                          None if preact is None else preact[:, None], dx4, dw4, db, need_dx)
        return (None if gx is None else gx[:, 0]), gw[0], gb

    # ------------------------------------------------------------ depthwise
    def _depthwise_check(self, op, x, w):
        if w.ndim != 4:
            raise ValueError(f"{op}: depthwise kernel must be 4-D (kh, kw, channels, multiplier), got {w.shape}")
        if x.ndim == 4 and x.shape[3] != w.shape[2]:
            raise ValueError(f"{op}: input has {x.shape[3]} channels, depthwise kernel {w.shape} expects "
                             f"{w.shape[2]}")

    def depthwise_conv2d_forward(self, x, w, b=None, strides=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
                                 activation="linear", out=None, preact=None):
        """x (N,H,W,C), w (kh,kw,C,M) -> (N,OH,OW,C*M), channel c*M + m (Keras)."""
        op = "depthwise_conv2d_forward"
        self._depthwise_check(op, x, w)
        kh, kw, C, M = w.shape
        return self.conv2d_forward(x, w.reshape(kh, kw, 1, C * M), b, strides, pads, dilation, C,
                                   activation, out, preact)

    def depthwise_conv2d_backward(self, dy, x, w, y, strides=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
                                  activation="linear", preact=None, dx=None, dw=None, db=None, need_dx=True):
        op = "depthwise_conv2d_backward"
        self._depthwise_check(op, x, w)
        kh, kw, C, M = w.shape
        _check_out(op, "dw", dw, w.shape)
        gx, gw, gb = self.conv2d_backward(dy, x, w.reshape(kh, kw, 1, C * M), y, strides, pads, dilation, C,
                                          activation, preact, dx,
                                          None if dw is None else dw.reshape(kh, kw, 1, C * M), db, need_dx)
        return gx, gw.reshape(w.shape), gb

    # ------------------------------------------------------------ transposed
    def _transpose_geometry(self, op, x, w, strides, pads, dilation):
        _check_float(op, x, w)
        if x.ndim != 4 or w.ndim != 4:
            raise ValueError(f"{op}: expected x (N,H,W,C) and kernel (kh,kw,filters,C), got {x.shape}, {w.shape}")
        if x.shape[3] != w.shape[3]:
            raise ValueError(f"{op}: input has {x.shape[3]} channels, kernel {w.shape} expects {w.shape[3]}")
        kh, kw = w.shape[:2]
        sh, sw = _positive(_pair(strides, op, "strides"), op, "strides")
        dh, dw = _positive(_pair(dilation, op, "dilation"), op, "dilation")
        pt, pb, pl, pr = _pair(pads, op, "pads", 4)
        if pt < 0 or pl < 0:
            raise ValueError(f"{op}: top/left pads must be >= 0, got {(pt, pb, pl, pr)}")
        H, W = x.shape[1:3]
        oh = (H - 1) * sh + (kh - 1) * dh + 1 - pt - pb
        ow = (W - 1) * sw + (kw - 1) * dw + 1 - pl - pr
        if oh < 1 or ow < 1:
            raise ValueError(f"{op}: pads {(pt, pb, pl, pr)} leave no output for input {(H, W)} and kernel "
                             f"{(kh, kw)}")
        return (sh, sw), (pt, pb, pl, pr), (dh, dw), (x.shape[0], oh, ow, w.shape[2])

    def conv2d_transpose_forward(self, x, w, b=None, strides=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
                                 activation="linear", out=None, preact=None):
        """x (N,H,W,C), w (kh,kw,F,C) -> (N,OH,OW,F), OH = (H-1)*sh + (kh-1)*dh + 1 - top - bottom."""
        op = "conv2d_transpose_forward"
        self._check_act(op, activation)
        s, p, d, shape = self._transpose_geometry(op, x, w, strides, pads, dilation)
        if b is not None and b.shape != (w.shape[2],):
            raise ValueError(f"{op}: bias has shape {b.shape}, expected ({w.shape[2]},)")
        _check_out(op, "out", out, shape)
        _check_out(op, "preact", preact, shape)
        if out is None:
            out = np.empty(shape, dtype=np.result_type(x, w))
        z = preact if preact is not None else out
        self._conv_dx_raw(x, w, shape, s, p, d, 1, z)
        return self._epilogue(op, z, b, activation, out)

    def conv2d_transpose_backward(self, dy, x, w, y, strides=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
                                  activation="linear", preact=None, dx=None, dw=None, db=None, need_dx=True):
        op = "conv2d_transpose_backward"
        s, p, d, shape = self._transpose_geometry(op, x, w, strides, pads, dilation)
        _check_out(op, "dy", dy, shape)
        _check_out(op, "dw", dw, w.shape)
        _check_out(op, "dx", dx, x.shape)
        dz = self._act_backward(dy, y, activation, preact)
        if dw is None:
            dw = np.empty(w.shape, dtype=dy.dtype)
        self._conv_dw_raw(dz, x, w.shape, s, p, d, 1, dw)
        if db is not False:
            db = np.sum(dz.reshape(-1, w.shape[2]), axis=0, out=db)
        else:
            db = None
        if need_dx:
            if dx is None:
                dx = np.empty(x.shape, dtype=dy.dtype)
            self._conv_raw(dz, w, s, p, d, 1, dx)
        else:
            dx = None
        return dx, dw, db

    # ------------------------------------------------------------ pooling
    def _pool_geometry(self, op, x, pool, strides, pads):
        _check_float(op, x)
        ph, pw = _positive(_pair(pool, op, "pool_size"), op, "pool_size")
        s, p, d, o = self._conv_geometry(op, x, ph, pw, strides, pads, (1, 1))
        return (ph, pw), s, p, o

    def max_pool2d_forward(self, x, pool=(2, 2), strides=None, pads=(0, 0, 0, 0), out=None):
        """Max over each window; padding is never the maximum (it is not read)."""
        op = "max_pool2d_forward"
        strides = pool if strides is None else strides
        (ph, pw), (sh, sw), p, (oh, ow) = self._pool_geometry(op, x, pool, strides, pads)
        shape = (x.shape[0], oh, ow, x.shape[3])
        _check_out(op, "out", out, shape)
        if out is None:
            out = np.empty(shape, dtype=x.dtype)
        xp = self._padded(x, p, -np.inf, "pool_xp")
        th, tw = _taps(0, oh, ph, sh, 1), _taps(0, ow, pw, sw, 1)
        np.copyto(out, xp[:, th[0], tw[0]])
        for i in range(ph):
            for j in range(pw):
                if i or j:
                    np.maximum(out, xp[:, th[i], tw[j]], out=out)
        return out

    def max_pool2d_backward(self, dy, x, y, pool=(2, 2), strides=None, pads=(0, 0, 0, 0), dx=None):
        """dx: each window's dy goes to its first maximum (row-major tap order)."""
        op = "max_pool2d_backward"
        strides = pool if strides is None else strides
        (ph, pw), (sh, sw), p, (oh, ow) = self._pool_geometry(op, x, pool, strides, pads)
        shape = (x.shape[0], oh, ow, x.shape[3])
        _check_out(op, "dy", dy, shape)
        _check_out(op, "y", y, shape)
        _check_out(op, "dx", dx, x.shape)
        if dx is None:
            dx = np.empty(x.shape, dtype=dy.dtype)
        xp = self._padded(x, p, -np.inf, "pool_xp")
        N, H, W, C = x.shape
        pt, pb, pl, pr = p
        dxp = self._scratch(xp.shape, dy.dtype, "pool_dxp") if xp is not x else dx
        dxp[...] = 0
        th, tw = _taps(0, oh, ph, sh, 1), _taps(0, ow, pw, sw, 1)
        taken = self._scratch(shape, np.bool_, "pool_taken")
        taken[...] = False
        hit = self._scratch(shape, np.bool_, "pool_hit")
        g = self._scratch(shape, dy.dtype, "pool_g")
        ynan = np.isnan(y)
        for i in range(ph):
            for j in range(pw):
                xs = xp[:, th[i], tw[j]]
                np.equal(xs, y, out=hit)
                if ynan.any():
                    hit |= ynan & np.isnan(xs)
                hit &= ~taken
                taken |= hit
                np.multiply(dy, hit, out=g)
                dxp[:, th[i], tw[j]] += g
        if dxp is not dx:
            dx[...] = dxp[:, pt:pt + H, pl:pl + W]
        return dx

    @staticmethod
    def _window_counts(n, k, s, lo, n_out):
        start = np.arange(n_out) * s - lo
        return np.minimum(start + k, n) - np.maximum(start, 0)

    def avg_pool2d_forward(self, x, pool=(2, 2), strides=None, pads=(0, 0, 0, 0), out=None):
        """Mean over each window's real (unpadded) elements (Keras/TF `same`)."""
        op = "avg_pool2d_forward"
        strides = pool if strides is None else strides
        (ph, pw), (sh, sw), p, (oh, ow) = self._pool_geometry(op, x, pool, strides, pads)
        shape = (x.shape[0], oh, ow, x.shape[3])
        _check_out(op, "out", out, shape)
        if out is None:
            out = np.empty(shape, dtype=x.dtype)
        xp = self._padded(x, p, 0, "pool_xp")
        th, tw = _taps(0, oh, ph, sh, 1), _taps(0, ow, pw, sw, 1)
        np.copyto(out, xp[:, th[0], tw[0]])
        for i in range(ph):
            for j in range(pw):
                if i or j:
                    out += xp[:, th[i], tw[j]]
        if p == (0, 0, 0, 0):
            out *= x.dtype.type(1.0 / (ph * pw))
        else:
            cnt = np.outer(self._window_counts(x.shape[1], ph, sh, p[0], oh),
                           self._window_counts(x.shape[2], pw, sw, p[2], ow)).astype(x.dtype)
            out /= cnt[None, :, :, None]
        return out

    def avg_pool2d_backward(self, dy, input_hw, pool=(2, 2), strides=None, pads=(0, 0, 0, 0), dx=None):
        op = "avg_pool2d_backward"
        strides = pool if strides is None else strides
        H, W = _pair(input_hw, op, "input_hw")
        N, C = dy.shape[0], dy.shape[3]
        probe = np.lib.stride_tricks.as_strided(np.zeros(1, dy.dtype), (N, H, W, C), (0, 0, 0, 0))
        (ph, pw), (sh, sw), p, (oh, ow) = self._pool_geometry(op, probe, pool, strides, pads)
        _check_out(op, "dy", dy, (N, oh, ow, C))
        _check_out(op, "dx", dx, (N, H, W, C))
        if dx is None:
            dx = np.empty((N, H, W, C), dtype=dy.dtype)
        pt, pb, pl, pr = p
        g = self._scratch(dy.shape, dy.dtype, "pool_g")
        if p == (0, 0, 0, 0):
            np.multiply(dy, dy.dtype.type(1.0 / (ph * pw)), out=g)
            dxp = dx
        else:
            cnt = np.outer(self._window_counts(H, ph, sh, pt, oh),
                           self._window_counts(W, pw, sw, pl, ow)).astype(dy.dtype)
            np.divide(dy, cnt[None, :, :, None], out=g)
            dxp = self._scratch((N, H + pt + pb, W + pl + pr, C), dy.dtype, "pool_dxp")
        dxp[...] = 0
        th, tw = _taps(0, oh, ph, sh, 1), _taps(0, ow, pw, sw, 1)
        for i in range(ph):
            for j in range(pw):
                dxp[:, th[i], tw[j]] += g
        if dxp is not dx:
            dx[...] = dxp[:, pt:pt + H, pl:pl + W]
        return dx

    # 1-D pooling: H = 1 views of the 2-D ops
    def _pool1d_args(self, op, x, pool, stride, pads):
        if x.ndim != 3:
            raise ValueError(f"{op}: x must be 3-D (batch, steps, channels), got shape {x.shape}")
        p = _pair(pool, op, "pool_size", 1)[0]
        s = p if stride is None else _pair(stride, op, "strides", 1)[0]
        pl, pr = _pair(pads, op, "pads")
        return (1, p), (1, s), (0, 0, pl, pr)

    def max_pool1d_forward(self, x, pool=2, stride=None, pads=(0, 0), out=None):
        a = self._pool1d_args("max_pool1d_forward", x, pool, stride, pads)
        return self.max_pool2d_forward(x[:, None], *a, out=None if out is None else out[:, None])[:, 0]

    def max_pool1d_backward(self, dy, x, y, pool=2, stride=None, pads=(0, 0), dx=None):
        a = self._pool1d_args("max_pool1d_backward", x, pool, stride, pads)
        return self.max_pool2d_backward(dy[:, None], x[:, None], y[:, None], *a,
                                        dx=None if dx is None else dx[:, None])[:, 0]

    def avg_pool1d_forward(self, x, pool=2, stride=None, pads=(0, 0), out=None):
        a = self._pool1d_args("avg_pool1d_forward", x, pool, stride, pads)
        return self.avg_pool2d_forward(x[:, None], *a, out=None if out is None else out[:, None])[:, 0]

    def avg_pool1d_backward(self, dy, length, pool=2, stride=None, pads=(0, 0), dx=None):
        a = self._pool1d_args("avg_pool1d_backward", dy, pool, stride, pads)
        return self.avg_pool2d_backward(dy[:, None], (1, int(length)), *a,
                                        dx=None if dx is None else dx[:, None])[:, 0]

    # ------------------------------------------------------------ global pooling
    def _global_args(self, op, x_shape, mask):
        if len(x_shape) < 3:
            raise ValueError(f"{op}: x must have a batch, at least one spatial and a channel axis, "
                             f"got shape {tuple(x_shape)}")
        if mask is not None:
            mask = np.asarray(mask)
            if len(x_shape) != 3 or mask.shape != tuple(x_shape[:2]):
                raise ValueError(f"{op}: mask of shape {mask.shape} does not fit input {tuple(x_shape)} "
                                 "(a mask is (batch, steps) for 3-D input)")
            mask = mask.astype(bool, copy=False)
        return mask

    def global_avg_pool_forward(self, x, out=None, mask=None):
        """(N, ..., C) -> (N, C) mean over the spatial axes (masked steps excluded; an
        all-masked row gives 0)."""
        op = "global_avg_pool_forward"
        _check_float(op, x)
        mask = self._global_args(op, x.shape, mask)
        N, C = x.shape[0], x.shape[-1]
        _check_out(op, "out", out, (N, C))
        x3 = x.reshape(N, -1, C)
        if out is None:
            out = np.empty((N, C), dtype=x.dtype)
        if mask is None:
            np.sum(x3, axis=1, out=out)
            out *= x.dtype.type(1.0 / x3.shape[1])
        else:
            m = mask.astype(x.dtype)
            np.einsum("nlc,nl->nc", x3, m, out=out)
            out /= np.maximum(m.sum(axis=1), 1)[:, None]
        return out

    def global_avg_pool_backward(self, dy, x_shape, dx=None, mask=None):
        op = "global_avg_pool_backward"
        mask = self._global_args(op, x_shape, mask)
        N, C = x_shape[0], x_shape[-1]
        _check_out(op, "dy", dy, (N, C))
        _check_out(op, "dx", dx, x_shape)
        if dx is None:
            dx = np.empty(tuple(x_shape), dtype=dy.dtype)
        d3 = dx.reshape(N, -1, C)
        if mask is None:
            d3[...] = (dy * dy.dtype.type(1.0 / d3.shape[1]))[:, None, :]
        else:
            m = mask.astype(dy.dtype)
            g = dy / np.maximum(m.sum(axis=1), 1)[:, None]
            np.multiply(g[:, None, :], m[:, :, None], out=d3)
        return dx

    def global_max_pool_forward(self, x, out=None, mask=None):
        """(N, ..., C) -> (N, C) max over the spatial axes (masked steps excluded; an
        all-masked row gives 0)."""
        op = "global_max_pool_forward"
        _check_float(op, x)
        mask = self._global_args(op, x.shape, mask)
        N, C = x.shape[0], x.shape[-1]
        _check_out(op, "out", out, (N, C))
        x3 = x.reshape(N, -1, C)
        if out is None:
            out = np.empty((N, C), dtype=x.dtype)
        if mask is None:
            np.max(x3, axis=1, out=out)
        else:
            np.max(np.where(mask[:, :, None], x3, -np.inf), axis=1, out=out)
            out[~mask.any(axis=1)] = 0
        return out

    def global_max_pool_backward(self, dy, x, y, dx=None, mask=None):
        op = "global_max_pool_backward"
        mask = self._global_args(op, x.shape, mask)
        N, C = x.shape[0], x.shape[-1]
        _check_out(op, "dy", dy, (N, C))
        _check_out(op, "dx", dx, x.shape)
        if dx is None:
            dx = np.empty(x.shape, dtype=dy.dtype)
        x3 = x.reshape(N, -1, C)
        hit = (x3 == y[:, None, :]) | (np.isnan(x3) & np.isnan(y)[:, None, :])
        if mask is not None:
            hit &= mask[:, :, None]
        first = np.argmax(hit, axis=1)                      # (N, C): first maximum
        found = np.take_along_axis(hit, first[:, None, :], axis=1)[:, 0]
        d3 = dx.reshape(N, -1, C)
        d3[...] = 0
        np.put_along_axis(d3, first[:, None, :], np.where(found, dy, 0)[:, None, :], axis=1)
        return dx

    # ------------------------------------------------------------ padding / cropping / upsampling
    def pad2d_forward(self, x, pads, out=None):
        op = "pad2d_forward"
        if x.ndim != 4:
            raise ValueError(f"{op}: x must be 4-D, got shape {x.shape}")
        pt, pb, pl, pr = pads = _pair(pads, op, "pads", 4)
        if min(pads) < 0:
            raise ValueError(f"{op}: pads must be >= 0, got {pads}")
        N, H, W, C = x.shape
        shape = (N, H + pt + pb, W + pl + pr, C)
        _check_out(op, "out", out, shape)
        if out is None:
            out = np.empty(shape, dtype=x.dtype)
        out[...] = 0
        out[:, pt:pt + H, pl:pl + W] = x
        return out

    def pad2d_backward(self, dy, pads, dx=None):
        pt, pb, pl, pr = _pair(pads, "pad2d_backward", "pads", 4)
        N, H, W, C = dy.shape
        inner = dy[:, pt:H - pb, pl:W - pr]
        if dx is None:
            return np.ascontiguousarray(inner)
        _check_out("pad2d_backward", "dx", dx, inner.shape)
        dx[...] = inner
        return dx

    def crop2d_forward(self, x, crops, out=None):
        op = "crop2d_forward"
        ct, cb, cl, cr = crops = _pair(crops, op, "crops", 4)
        if x.ndim != 4 or min(crops) < 0 or ct + cb >= x.shape[1] or cl + cr >= x.shape[2]:
            raise ValueError(f"{op}: cannot crop {crops} (top, bottom, left, right) from input of shape "
                             f"{x.shape}")
        return self.pad2d_backward(x, crops, out)

    def crop2d_backward(self, dy, crops, dx=None):
        return self.pad2d_forward(dy, crops, dx)

    def upsample_nearest2d_forward(self, x, size=(2, 2), out=None):
        op = "upsample_nearest2d_forward"
        sh, sw = _positive(_pair(size, op, "size"), op, "size")
        if x.ndim != 4:
            raise ValueError(f"{op}: x must be 4-D, got shape {x.shape}")
        N, H, W, C = x.shape
        shape = (N, H * sh, W * sw, C)
        _check_out(op, "out", out, shape)
        if out is None:
            out = np.empty(shape, dtype=x.dtype)
        out.reshape(N, H, sh, W, sw, C)[...] = x[:, :, None, :, None, :]
        return out

    def upsample_nearest2d_backward(self, dy, size=(2, 2), dx=None):
        op = "upsample_nearest2d_backward"
        sh, sw = _positive(_pair(size, op, "size"), op, "size")
        N, H2, W2, C = dy.shape
        if H2 % sh or W2 % sw:
            raise ValueError(f"{op}: dy shape {dy.shape} is not a multiple of size {(sh, sw)}")
        shape = (N, H2 // sh, W2 // sw, C)
        _check_out(op, "dx", dx, shape)
        if dx is None:
            dx = np.empty(shape, dtype=dy.dtype)
        # the sh x sw copies summed in row-major (i, j) order from the first one, a fixed
        # order the compiled plan's upsample2d kind repeats (np.sum's order over two
        # strided axes depends on the sizes)
        d6 = dy.reshape(N, shape[1], sh, shape[2], sw, C)
        dx[...] = d6[:, :, 0, :, 0]
        for i in range(sh):
            for j in range(sw):
                if i or j:
                    np.add(dx, d6[:, :, i, :, j], out=dx)
        return dx

    # ------------------------------------------------------------ spatial dropout
    def spatial_dropout_forward(self, x, rate, seed, offset=0, out=None, mask=None):
        """One keep flag per (sample, channel) (the `dropout` hash over an (N, C) index
        space); y = x keep / (1 - rate). mask (N, C) uint8 receives the flags."""
        op = "spatial_dropout_forward"
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"{op}: rate must be in [0, 1), got {rate}")
        if x.ndim < 3:
            raise ValueError(f"{op}: x must have a batch, spatial and channel axis, got shape {x.shape}")
        rate = float(np.float32(rate))
        N, C = x.shape[0], x.shape[-1]
        _check_out(op, "out", out, x.shape)
        _check_out(op, "mask", mask, (N, C))
        keep = self._dropout_keep(N * C, rate, int(seed), int(offset)).reshape(N, C)
        if mask is not None:
            mask[...] = keep
        if out is None:
            out = np.empty(x.shape, dtype=x.dtype)
        scale = (keep * (1.0 / (1.0 - rate))).astype(x.dtype)
        bshape = (N,) + (1,) * (x.ndim - 2) + (C,)
        np.multiply(x, scale.reshape(bshape), out=out)
        return out

    def spatial_dropout_backward(self, dy, mask, rate, out=None):
        rate = float(np.float32(rate))
        N, C = dy.shape[0], dy.shape[-1]
        _check_out("spatial_dropout_backward", "mask", mask, (N, C))
        if out is None:
            out = np.empty(dy.shape, dtype=dy.dtype)
        scale = (np.asarray(mask, dtype=bool) * (1.0 / (1.0 - rate))).astype(dy.dtype)
        np.multiply(dy, scale.reshape((N,) + (1,) * (dy.ndim - 2) + (C,)), out=out)
        return out
