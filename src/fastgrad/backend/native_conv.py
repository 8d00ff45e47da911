"""ConvMixin: NumpyOps' convolution and pooling ops backed by csrc/conv
(module fastgrad._native.conv).

The C path takes float32 C-contiguous arrays (inputs, kernels, bias and any
given out / preact / dx / dw / db) and an element-wise activation; anything
else goes to `super()`, i.e. ConvNumpyOps, which also produces every error
message (the geometry and shape checks below are NumpyOps' own helpers, so a
bad argument raises the same ValueError on both backends).

  conv2d            implicit GEMM (csrc/conv/conv.c): forward with bias +
                    activation fused, filter and data gradients; conv1d is
                    NumpyOps' H = 1 view of it
  depthwise_conv2d  direct kernels (conv_direct.c)
  conv2d_transpose  the implicit-GEMM kernels with roles swapped: forward = the
                    data gradient of the conv it transposes (then NumpyOps'
                    bias + activation epilogue), input gradient = that conv's
                    forward, kernel gradient = its filter gradient
  max / avg pool2d  direct kernels (1-D pooling: NumpyOps' H = 1 views)
  global pools      direct kernels (without a mask)
The thread count is resolved per call and passed down; results do not
depend on it.
"""
from __future__ import annotations

import numpy as np

from .. import _native
from .._threads import get_num_threads
from .numpy_conv import _check_out, _pair

_C = _native.module("conv")
_G = _native.module("gemm")
_ACT = dict(_G.ACTIVATIONS) if _G is not None else {}


def _f32c(*arrays):
    """Every array (None / False skipped) float32 and C-contiguous?"""
    for a in arrays:
        if a is None or a is False:
            continue
        if not isinstance(a, np.ndarray) or a.dtype != np.float32 or not a.flags.c_contiguous:
            return False
    return True


def _pool_fits(x_hw, pool, s, p, o):
    """The C pooling kernels need every window to overlap the input."""
    (H, W), (ph, pw), (sh, sw), (pt, pb, pl, pr), (oh, ow) = x_hw, pool, s, p, o
    return pt < ph and pl < pw and (oh - 1) * sh - pt < H and (ow - 1) * sw - pl < W


class ConvMixin:
    """conv2d / depthwise / pooling forward and backward in C (float32)."""

    # ------------------------------------------------------------ conv2d
    def _conv_shape(self, x_shape, w_shape, s, p, d, o, groups, f):
        N, H, W, C = x_shape
        return (N, H, W, C, w_shape[0], w_shape[1], f, o[0], o[1], s[0], s[1], d[0], d[1], p[0], p[2], groups)

    def conv2d_forward(self, x, w, b=None, strides=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1,
                       activation="linear", out=None, preact=None):
        code = _ACT.get(activation)
        if code is None or not _f32c(x, w, b, out, preact) or x.ndim != 4 or w.ndim != 4:
            return super().conv2d_forward(x, w, b, strides, pads, dilation, groups, activation, out, preact)
        op = "conv2d_forward"
        self._conv_check(op, x, w, b, groups)
        s, p, d, o = self._conv_geometry(op, x, w.shape[0], w.shape[1], strides, pads, dilation)
        shape = (x.shape[0], o[0], o[1], w.shape[3])
        _check_out(op, "out", out, shape)
        _check_out(op, "preact", preact, shape)
        if out is None:
            out = np.empty(shape, np.float32)
        _C.conv2d_forward(out, preact, x, w, b, self._conv_shape(x.shape, w.shape, s, p, d, o, int(groups),
                                                                 w.shape[3]),
                          code, get_num_threads())
        return out

    def _dz(self, dy, y, activation, preact):
        dz = self._act_backward(dy, y, activation, preact)
        return dz if dz.flags.c_contiguous else np.ascontiguousarray(dz)

    def conv2d_backward(self, dy, x, w, y, strides=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1,
                        activation="linear", preact=None, dx=None, dw=None, db=None, need_dx=True):
        if (activation not in _ACT or not _f32c(dy, x, w, y, preact, dx, dw, db) or x.ndim != 4
                or w.ndim != 4):
            return super().conv2d_backward(dy, x, w, y, strides, pads, dilation, groups, activation, preact,
                                           dx, dw, db, need_dx)
        op = "conv2d_backward"
        self._conv_check(op, x, w, None, groups)
        s, p, d, o = self._conv_geometry(op, x, w.shape[0], w.shape[1], strides, pads, dilation)
        F = w.shape[3]
        _check_out(op, "dy", dy, (x.shape[0], o[0], o[1], F))
        _check_out(op, "dw", dw, w.shape)
        _check_out(op, "dx", dx, x.shape)
        shp = self._conv_shape(x.shape, w.shape, s, p, d, o, int(groups), F)
        nt = get_num_threads()
        dz = self._dz(dy, y, activation, preact)
        if dw is None:
            dw = np.empty(w.shape, np.float32)
        _C.conv2d_backward_filter(dw, dz, x, shp, nt)
        db = None if db is False else self.sum_rows(dz.reshape(-1, F), out=db)
        if need_dx:
            if dx is None:
                dx = np.empty(x.shape, np.float32)
            _C.conv2d_backward_data(dx, dz, w, shp, nt)
        else:
            dx = None
        return dx, dw, db

    # ------------------------------------------------------------ depthwise
    def depthwise_conv2d_forward(self, x, w, b=None, strides=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
                                 activation="linear", out=None, preact=None):
        code = _ACT.get(activation)
        if code is None or not _f32c(x, w, b, out, preact) or x.ndim != 4 or w.ndim != 4:
            return super().depthwise_conv2d_forward(x, w, b, strides, pads, dilation, activation, out, preact)
        op = "depthwise_conv2d_forward"
        self._depthwise_check(op, x, w)
        kh, kw, C, M = w.shape
        self._conv_check(op, x, w.reshape(kh, kw, 1, C * M), b, C)
        s, p, d, o = self._conv_geometry(op, x, kh, kw, strides, pads, dilation)
        shape = (x.shape[0], o[0], o[1], C * M)
        _check_out(op, "out", out, shape)
        _check_out(op, "preact", preact, shape)
        if out is None:
            out = np.empty(shape, np.float32)
        _C.conv2d_forward(out, preact, x, w, b, self._conv_shape(x.shape, w.shape, s, p, d, o, C, C * M),
                          code, get_num_threads(), True)
        return out

    def depthwise_conv2d_backward(self, dy, x, w, y, strides=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
                                  activation="linear", preact=None, dx=None, dw=None, db=None, need_dx=True):
        if (activation not in _ACT or not _f32c(dy, x, w, y, preact, dx, dw, db) or x.ndim != 4
                or w.ndim != 4):
            return super().depthwise_conv2d_backward(dy, x, w, y, strides, pads, dilation, activation, preact,
                                                     dx, dw, db, need_dx)
        op = "depthwise_conv2d_backward"
        self._depthwise_check(op, x, w)
        kh, kw, C, M = w.shape
        s, p, d, o = self._conv_geometry(op, x, kh, kw, strides, pads, dilation)
        _check_out(op, "dy", dy, (x.shape[0], o[0], o[1], C * M))
        _check_out(op, "dw", dw, w.shape)
        _check_out(op, "dx", dx, x.shape)
        shp = self._conv_shape(x.shape, w.shape, s, p, d, o, C, C * M)
        nt = get_num_threads()
        dz = self._dz(dy, y, activation, preact)
        if dw is None:
            dw = np.empty(w.shape, np.float32)
        _C.conv2d_backward_filter(dw, dz, x, shp, nt, True)
        db = None if db is False else self.sum_rows(dz.reshape(-1, C * M), out=db)
        if need_dx:
            if dx is None:
                dx = np.empty(x.shape, np.float32)
            _C.conv2d_backward_data(dx, dz, w, shp, nt, True)
        else:
            dx = None
        return dx, dw, db

    # ------------------------------------------------------------ transposed
    def _transpose_shape(self, x_shape, w_shape, s, p, d, out_shape):
        """The conv whose input gradient the transposed conv is: input (N, OH, OW, F),
        output (N, H, W, C), kernel (kh, kw, F, C) read as a conv kernel."""
        N, H, W, C = x_shape
        return (N, out_shape[1], out_shape[2], w_shape[2], w_shape[0], w_shape[1], C, H, W, s[0], s[1], d[0], d[1],
                p[0], p[2], 1)

    def conv2d_transpose_forward(self, x, w, b=None, strides=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
                                 activation="linear", out=None, preact=None):
        if activation not in _ACT or not _f32c(x, w, b, out, preact) or x.ndim != 4 or w.ndim != 4:
            return super().conv2d_transpose_forward(x, w, b, strides, pads, dilation, activation, out, preact)
        op = "conv2d_transpose_forward"
        self._check_act(op, activation)
        s, p, d, shape = self._transpose_geometry(op, x, w, strides, pads, dilation)
        if b is not None and b.shape != (w.shape[2],):
            raise ValueError(f"{op}: bias has shape {b.shape}, expected ({w.shape[2]},)")
        _check_out(op, "out", out, shape)
        _check_out(op, "preact", preact, shape)
        if out is None:
            out = np.empty(shape, np.float32)
        z = preact if preact is not None else out
        # the data gradient of the conv, then NumpyOps' epilogue (bias add, activation kernel)
        _C.conv2d_backward_data(z, x, w, self._transpose_shape(x.shape, w.shape, s, p, d, shape),
                                get_num_threads())
        return self._epilogue(op, z, b, activation, out)

    def conv2d_transpose_backward(self, dy, x, w, y, strides=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1),
                                  activation="linear", preact=None, dx=None, dw=None, db=None, need_dx=True):
        if (activation not in _ACT or not _f32c(dy, x, w, y, preact, dx, dw, db) or x.ndim != 4
                or w.ndim != 4):
            return super().conv2d_transpose_backward(dy, x, w, y, strides, pads, dilation, activation, preact,
                                                     dx, dw, db, need_dx)
        op = "conv2d_transpose_backward"
        s, p, d, shape = self._transpose_geometry(op, x, w, strides, pads, dilation)
        _check_out(op, "dy", dy, shape)
        _check_out(op, "dw", dw, w.shape)
        _check_out(op, "dx", dx, x.shape)
        shp = self._transpose_shape(x.shape, w.shape, s, p, d, shape)
        nt = get_num_threads()
        dz = self._dz(dy, y, activation, preact)
        if dw is None:
            dw = np.empty(w.shape, np.float32)
        # roles swapped: the conv's output gradient is x, its input dz
        _C.conv2d_backward_filter(dw, x, dz, shp, nt)
        db = None if db is False else self.sum_rows(dz.reshape(-1, w.shape[2]), out=db)
        if need_dx:
            if dx is None:
                dx = np.empty(x.shape, np.float32)
            _C.conv2d_forward(dx, None, dz, w, None, shp, _ACT["linear"], nt)
        else:
            dx = None
        return dx, dw, db

    # ------------------------------------------------------------ pooling
    def _pool_shape(self, op, x_shape, pool, strides, pads):
        """(shape tuple, output shape), or None when the C kernels do not apply."""
        probe = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), tuple(x_shape), (0,) * len(x_shape))
        (ph, pw), s, p, o = self._pool_geometry(op, probe, pool, strides, pads)
        N, H, W, C = x_shape
        if not _pool_fits((H, W), (ph, pw), s, p, o):
            return None, None
        return (N, H, W, C, ph, pw, C, o[0], o[1], s[0], s[1], 1, 1, p[0], p[2], 1), (N, o[0], o[1], C)

    def _pool_forward(self, is_max, x, pool, strides, pads, out):
        name = "max_pool2d_forward" if is_max else "avg_pool2d_forward"
        sup = getattr(super(), name)
        if not _f32c(x, out) or x.ndim != 4:
            return sup(x, pool, strides, pads, out)
        strides = pool if strides is None else strides
        shp, oshape = self._pool_shape(name, x.shape, pool, strides, pads)
        if shp is None:
            return sup(x, pool, strides, pads, out)
        _check_out(name, "out", out, oshape)
        if out is None:
            out = np.empty(oshape, np.float32)
        return _C.pool2d_forward(out, x, shp, is_max, get_num_threads())

    def max_pool2d_forward(self, x, pool=(2, 2), strides=None, pads=(0, 0, 0, 0), out=None):
        return self._pool_forward(True, x, pool, strides, pads, out)

    def avg_pool2d_forward(self, x, pool=(2, 2), strides=None, pads=(0, 0, 0, 0), out=None):
        return self._pool_forward(False, x, pool, strides, pads, out)

    def max_pool2d_backward(self, dy, x, y, pool=(2, 2), strides=None, pads=(0, 0, 0, 0), dx=None):
        op = "max_pool2d_backward"
        if not _f32c(dy, x, y, dx) or x.ndim != 4:
            return super().max_pool2d_backward(dy, x, y, pool, strides, pads, dx)
        strides = pool if strides is None else strides
        shp, oshape = self._pool_shape(op, x.shape, pool, strides, pads)
        if shp is None:
            return super().max_pool2d_backward(dy, x, y, pool, strides, pads, dx)
        _check_out(op, "dy", dy, oshape)
        _check_out(op, "y", y, oshape)
        _check_out(op, "dx", dx, x.shape)
        if dx is None:
            dx = np.empty(x.shape, np.float32)
        return _C.pool2d_backward(dx, dy, x, y, shp, True, get_num_threads())

    def avg_pool2d_backward(self, dy, input_hw, pool=(2, 2), strides=None, pads=(0, 0, 0, 0), dx=None):
        op = "avg_pool2d_backward"
        if not _f32c(dy, dx) or dy.ndim != 4:
            return super().avg_pool2d_backward(dy, input_hw, pool, strides, pads, dx)
        strides = pool if strides is None else strides
        H, W = _pair(input_hw, op, "input_hw")
        x_shape = (dy.shape[0], H, W, dy.shape[3])
        shp, oshape = self._pool_shape(op, x_shape, pool, strides, pads)
        if shp is None:
            return super().avg_pool2d_backward(dy, input_hw, pool, strides, pads, dx)
        _check_out(op, "dy", dy, oshape)
        _check_out(op, "dx", dx, x_shape)
        if dx is None:
            dx = np.empty(x_shape, np.float32)
        return _C.pool2d_backward(dx, dy, None, None, shp, False, get_num_threads())

    # ------------------------------------------------------------ global pooling
    def global_avg_pool_forward(self, x, out=None, mask=None):
        if mask is not None or not _f32c(x, out) or x.ndim < 3 or x.size == 0:
            return super().global_avg_pool_forward(x, out=out, mask=mask)
        N, C = x.shape[0], x.shape[-1]
        _check_out("global_avg_pool_forward", "out", out, (N, C))
        if out is None:
            out = np.empty((N, C), np.float32)
        return _C.global_pool_forward(out, x, N, x.size // (N * C), C, False, get_num_threads())

    def global_max_pool_forward(self, x, out=None, mask=None):
        if mask is not None or not _f32c(x, out) or x.ndim < 3 or x.size == 0:
            return super().global_max_pool_forward(x, out=out, mask=mask)
        N, C = x.shape[0], x.shape[-1]
        _check_out("global_max_pool_forward", "out", out, (N, C))
        if out is None:
            out = np.empty((N, C), np.float32)
        return _C.global_pool_forward(out, x, N, x.size // (N * C), C, True, get_num_threads())

    def global_avg_pool_backward(self, dy, x_shape, dx=None, mask=None):
        x_shape = tuple(x_shape)
        if mask is not None or not _f32c(dy, dx) or len(x_shape) < 3 or int(np.prod(x_shape)) == 0:
            return super().global_avg_pool_backward(dy, x_shape, dx=dx, mask=mask)
        N, C = x_shape[0], x_shape[-1]
        _check_out("global_avg_pool_backward", "dy", dy, (N, C))
        _check_out("global_avg_pool_backward", "dx", dx, x_shape)
        if dx is None:
            dx = np.empty(x_shape, np.float32)
        return _C.global_pool_backward(dx, dy, None, None, N, int(np.prod(x_shape[1:-1])), C, False,
                                       get_num_threads())

    def global_max_pool_backward(self, dy, x, y, dx=None, mask=None):
        if mask is not None or not _f32c(dy, x, y, dx) or x.ndim < 3 or x.size == 0:
            return super().global_max_pool_backward(dy, x, y, dx=dx, mask=mask)
        N, C = x.shape[0], x.shape[-1]
        _check_out("global_max_pool_backward", "dy", dy, (N, C))
        _check_out("global_max_pool_backward", "y", y, (N, C))
        _check_out("global_max_pool_backward", "dx", dx, x.shape)
        if dx is None:
            dx = np.empty(x.shape, np.float32)
        return _C.global_pool_backward(dx, dy, x, y, N, x.size // (N * C), C, True, get_num_threads())
