"""Recurrent layers (Keras 3): SimpleRNN, LSTM, GRU, Bidirectional, TimeDistributed.

Each recurrent layer runs, per batch:

1. the input projection of ALL time steps as one product
   (``ops.dense_forward`` on (N*T, F) rows: ``xw = x kernel + bias``);
2. the recurrence over xw in one op call (``ops.lstm_forward`` /
   ``gru_forward`` / ``simple_rnn_forward``: the C family csrc/rnn on the
   native backend, no Python per time step);
3. backward: one op call through time (``ops.*_backward``) giving the
   pre-activation gradients of every step, then dkernel, dbias and dx with
   one product each (``ops.dense_backward``).

Conventions of the ops: backend/numpy_rnn.py.

Keras semantics kept: weights kernel ``(F, G*U)``, recurrent_kernel ``(U, G*U)``,
bias ``(G*U,)`` (GRU reset_after=True: ``(2, 3U)``); gate orders LSTM [i, f, c, o],
GRU [z, r, h]; ``get_weights() = [kernel, recurrent_kernel, bias]``;
unit_forget_bias; masks (a masked step carries the states through; outputs
of masked steps repeat the previous output, zeros before the first unmasked
step, or zeros everywhere masked with zero_output_for_mask / inside
Bidirectional with return_sequences); go_backwards returns the sequence in
processing order; return_state returns ``[output, *states]``; initial_state;
dropout / recurrent_dropout masks drawn once per batch and shared by all steps
(and gates); stateful with reset_states().

Graph plumbing: a layer called with initial_state has several inputs
(x, states); with return_state its node outputs one packed tensor
(output, then each state, flattened) that hidden ``_RnnPart`` nodes split, so
the symbolic call returns ``[output, *states]`` as Keras does.
"""
from __future__ import annotations

from typing import Any

import numbers

import numpy as np

from .. import initializers as _initializers
from .. import regularizers as _regularizers
from ..backend.numpy_rnn import RNN_ACTIVATIONS
from ..engine.graph import is_symbolic
from ..engine.workspace import Workspace
from .base import Layer, ParamSpec

__all__ = ["SimpleRNN", "LSTM", "GRU", "Bidirectional", "TimeDistributed"]


def _check_rate(cls, name, what, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0.0 <= float(v) < 1.0:
        raise ValueError(f"{cls} {name}: {what} must be a number in [0, 1), got {v!r}")
    return float(v)


class _UnitForgetBias:
    """LSTM bias initializer with unit_forget_bias: [init(U), ones(U), init(2U)]."""

    def __init__(self, base, units):
        self.base, self.units = base, units

    def __call__(self, shape, dtype=None):
        u = self.units
        return np.concatenate([np.asarray(self.base((u,)), np.float32), np.ones(u, np.float32),
                               np.asarray(self.base((2 * u,)), np.float32)]).astype(dtype or np.float32)


class _Outputs(list):
    """The list a symbolic call with several outputs returns ([output, *states]); the
    layer's own graph node output (the packed tensor the parts split) is `_node_output`,
    which a saved graph's replay records (utils/graph_config.py)."""

    def __init__(self, items, node_output):
        super().__init__(items)
        self._node_output = node_output


class _RnnPart(Layer):
    """Hidden layer: one part of a recurrent layer's packed (output, *states) tensor."""

    _mask_any_shape = True

    def __init__(self, start, stop, shape, propagate_mask, name=None):
        super().__init__(name=name)
        self._operator = True
        self.start, self.stop, self.shape = int(start), int(stop), tuple(shape)
        self.propagate_mask = bool(propagate_mask)

    def compute_output_shape(self, input_shape):
        return self.shape

    def compute_mask(self, inputs, mask=None):
        return mask if self.propagate_mask else None

    def forward(self, x, training, ws):
        ws.xshape = x.shape
        return x[:, self.start:self.stop].reshape((x.shape[0],) + self.shape)

    def backward(self, dy, ws, need_dx=True):
        if not need_dx:
            return None
        dx = ws.zeros("dx", ws.xshape, dy.dtype)
        dx[...] = 0
        dx[:, self.start:self.stop] = dy.reshape(dy.shape[0], -1)
        return dx

    def get_config(self):
        cfg = super().get_config()
        cfg.update(start=self.start, stop=self.stop, shape=list(self.shape),
                   propagate_mask=self.propagate_mask)
        return cfg

    @classmethod
    def from_config(cls, config):
        cfg = dict(config)
        cfg.pop("trainable", None)
        return cls(**cfg)


class _RNN(Layer):
    """Shared machinery of SimpleRNN / LSTM / GRU (module docstring)."""

    _gates = 1
    _n_states = 1
    _default_act = "tanh"
    # the recurrence of each kind (SimpleRNN / LSTM / GRU define them)
    _recur_forward: Any
    _recur_backward: Any

    def __init__(self, units: Any, activation: str | None = "tanh",
                 recurrent_activation: str | None = "sigmoid", use_bias: bool = True,
                 kernel_initializer: Any = "glorot_uniform",
                 recurrent_initializer: Any = "orthogonal", bias_initializer: Any = "zeros",
                 kernel_regularizer: Any = None, recurrent_regularizer: Any = None,
                 bias_regularizer: Any = None, activity_regularizer: Any = None,
                 kernel_constraint: Any = None, recurrent_constraint: Any = None,
                 bias_constraint: Any = None, dropout: Any = 0.0, recurrent_dropout: Any = 0.0,
                 seed: Any = None, return_sequences: bool = False, return_state: bool = False,
                 go_backwards: bool = False, stateful: bool = False, unroll: bool = False,
                 zero_output_for_mask: bool = False, name: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        c = f"{type(self).__name__} {self.name}"
        if isinstance(units, bool) or not isinstance(units, numbers.Integral) or units <= 0:
            raise ValueError(f"{c}: units must be a positive integer, got {units!r}")
        self.units = int(units)
        act = "linear" if activation is None else activation
        ract = "linear" if recurrent_activation is None else recurrent_activation
        for what, a in (("activation", act), ("recurrent_activation", ract)):
            if a not in RNN_ACTIVATIONS:
                raise ValueError(f"{c}: {what} {a!r} is not supported; one of "
                                 f"{', '.join(RNN_ACTIVATIONS)}")
        self.activation, self.recurrent_activation = act, ract
        for what, v in (("activity_regularizer", activity_regularizer),
                        ("kernel_constraint", kernel_constraint),
                        ("recurrent_constraint", recurrent_constraint),
                        ("bias_constraint", bias_constraint)):
            if v is not None:
                raise ValueError(f"{c}: {what} is not supported")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializers.get(kernel_initializer, f"{c}: kernel_initializer")
        self.recurrent_initializer = _initializers.get(recurrent_initializer,
                                                       f"{c}: recurrent_initializer")
        self.bias_initializer = _initializers.get(bias_initializer, f"{c}: bias_initializer")
        self.kernel_regularizer = _regularizers.get(kernel_regularizer, f"{c}: kernel_regularizer")
        self.recurrent_regularizer = _regularizers.get(recurrent_regularizer,
                                                       f"{c}: recurrent_regularizer")
        self.bias_regularizer = _regularizers.get(bias_regularizer, f"{c}: bias_regularizer")
        self.dropout = _check_rate(type(self).__name__, self.name, "dropout", dropout)
        self.recurrent_dropout = _check_rate(type(self).__name__, self.name, "recurrent_dropout",
                                             recurrent_dropout)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise ValueError(f"{c}: seed must be None or an integer, got {seed!r}")
        self.seed = None if seed is None else int(seed)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.unroll = bool(unroll)          # accepted; the recurrence is one kernel call anyway
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self._stream_seed = self.seed
        self._offset = 0
        self.states: Any = None             # stateful: the carried states (list of (N, U))
        self._with_initial_state: Any = None  # decided at the first call

    supports_masking = True

    # ------------------------------------------------------------------ shapes
    def _seq_shape(self, input_shape):
        shape = input_shape[0] if self._multi_input else input_shape
        return tuple(shape)

    def _out_shape(self, T):
        return (T, self.units) if self.return_sequences else (self.units,)

    def compute_output_shape(self, input_shape):
        c = f"{type(self).__name__} {self.name}"
        shape = self._seq_shape(input_shape)
        if len(shape) != 2:
            raise ValueError(f"{c}: expects input of shape (batch, timesteps, features), got "
                             f"(batch, {', '.join(map(str, shape))})")
        if shape[0] <= 0:
            raise ValueError(f"{c}: the sequence has length {shape[0]}; it needs at least one "
                             "time step")
        if self._multi_input:
            for k, s in enumerate(input_shape[1:]):
                if tuple(s) != (self.units,):
                    raise ValueError(f"{c}: initial state {k} has shape (batch, "
                                     f"{', '.join(map(str, s))}), expected (batch, {self.units})")
        out = self._out_shape(shape[0])
        if self.return_state:
            return (int(np.prod(out)) + self._n_states * self.units,)
        return out

    def _bias_shape(self):
        return (self._gates * self.units,)

    def _bias_initializer(self):
        return self.bias_initializer

    def param_specs(self):
        f = self._seq_shape(self.input_shape)[-1]
        g = self._gates * self.units
        specs = [ParamSpec("kernel", (f, g), self.kernel_initializer, self.kernel_regularizer),
                 ParamSpec("recurrent_kernel", (self.units, g), self.recurrent_initializer,
                           self.recurrent_regularizer)]
        if self.use_bias:
            specs.append(ParamSpec("bias", self._bias_shape(), self._bias_initializer(),
                                   self.bias_regularizer))
        return specs

    @property
    def kernel(self):
        """The input kernel, shape ``(features, gates * units)``."""
        return self.params["kernel"]

    @property
    def recurrent_kernel(self):
        """The recurrent kernel, shape ``(units, gates * units)``."""
        return self.params["recurrent_kernel"]

    @property
    def bias(self):
        """The bias array, or None without bias."""
        return self.params.get("bias")

    # ------------------------------------------------------------------ calls
    def __call__(self, inputs: Any, initial_state: Any = None,  # type: ignore[override]
                 training: bool | None = False, mask: Any = None, **kwargs: Any) -> Any:
        c = f"{type(self).__name__} {self.name}"
        if initial_state is None and isinstance(inputs, (list, tuple)) and \
                len(inputs) == 1 + self._n_states:
            # [x, *states] in one list: how a saved graph replays an initial_state call
            inputs, initial_state = inputs[0], list(inputs[1:])
        with_state = initial_state is not None
        if self._with_initial_state is None:
            self._with_initial_state = with_state
            self._multi_input = with_state
        elif self._with_initial_state != with_state:
            raise ValueError(f"{c}: called {'with' if with_state else 'without'} initial_state, "
                             f"but it was built {'with' if self._with_initial_state else 'without'}")
        if with_state:
            states = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
            if len(states) != self._n_states:
                raise ValueError(f"{c}: initial_state needs {self._n_states} tensor(s), got "
                                 f"{len(states)}")
            if mask is None:
                mask = getattr(inputs, "_keras_mask", None)
            args = [inputs] + states
            mask = [mask] + [None] * len(states)
        else:
            args = inputs
        out = super().__call__(args, training=training, mask=mask, **kwargs)
        if not self.return_state:
            return out
        return self._split_packed(out)

    def _parts(self):
        T = self._seq_shape(self.input_shape)[0]
        oshape = self._out_shape(T)
        osize = int(np.prod(oshape))
        parts = [(0, osize, oshape, self.return_sequences)]
        for k in range(self._n_states):
            s = osize + k * self.units
            parts.append((s, s + self.units, (self.units,), False))
        return parts

    def _split_packed(self, out):
        parts = self._parts()
        if is_symbolic(out):
            from .base import _unique_name
            names = ["output", "state_h", "state_c"]
            return _Outputs([_RnnPart(a, b, shp, pm, name=_unique_name(f"{self.name}_{names[k]}"))(out)
                             for k, (a, b, shp, pm) in enumerate(parts)], out)
        res = []
        for k, (a, b, shp, pm) in enumerate(parts):
            r = np.ascontiguousarray(out[:, a:b].reshape((out.shape[0],) + shp))
            if pm and getattr(out, "_keras_mask", None) is not None:
                rm: Any = r.view(type(out))
                rm._keras_mask = out._keras_mask
                r = rm
            res.append(r)
        return res

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        return mask if self.return_sequences else None

    # ------------------------------------------------------------------ state
    def reset_rng(self, seed):
        self._stream_seed = self.seed if self.seed is not None else int(seed)
        self._offset = 0

    def _seed(self):
        if self._stream_seed is None:
            from .. import _config
            self._stream_seed = _config.next_seed()
        return self._stream_seed

    def _drop_mask(self, n, width, rate, ws, name, dtype):
        """A (n, width) inverted-dropout multiplier from the layer's counter stream."""
        ones = ws.buf(name + "_one", (n, width), dtype)
        ones[...] = 1
        out = ws.buf(name, (n, width), dtype)
        keep = ws.buf(name + "_keep", (n, width), np.uint8)
        self.ops.dropout(ones, rate, self._seed(), self._offset, out, keep)
        self._offset += n * width
        return out

    def reset_states(self, states=None):
        """Reset the carried states of a stateful layer.

        Parameters
        ----------
        states : ndarray or list of ndarray, optional
            New states, one (batch, units) array per state; None zeroes the
            current ones.

        Raises
        ------
        ValueError
            For the wrong number of states.
        """
        if states is None:
            if self.states is not None:
                for s in self.states:
                    s[...] = 0
            return
        states = list(states) if isinstance(states, (list, tuple)) else [states]
        if len(states) != self._n_states:
            raise ValueError(f"{type(self).__name__} {self.name}: reset_states needs "
                             f"{self._n_states} array(s), got {len(states)}")
        self.states = [np.array(s, dtype=np.float32, copy=True) for s in states]

    reset_state = reset_states

    def _initial(self, n, extra, dt, ws):
        """The initial states: given inputs, a stateful layer's carried ones, or zeros."""
        if extra:
            return [np.ascontiguousarray(e, dtype=dt) for e in extra], True
        if self.stateful:
            if self.states is None:
                self.states = [np.zeros((n, self.units), np.float32) for _ in range(self._n_states)]
            if self.states[0].shape[0] != n:
                raise ValueError(f"{type(self).__name__} {self.name}: stateful layer holds states "
                                 f"for batch size {self.states[0].shape[0]}, called on a batch of "
                                 f"{n}; use one batch size (and shuffle=False), or reset_states()")
            return [s.astype(dt, copy=False) for s in self.states], False
        z = ws.zeros("h0zero", (n, self.units), dt)
        return [z] * self._n_states, False

    # ------------------------------------------------------------------ compute
    def forward(self, x, training, ws, mask=None):
        extra = []
        if isinstance(x, list):
            x, extra = x[0], x[1:]
            mask = mask[0] if isinstance(mask, list) else mask
        n, T, f = x.shape
        u, g = self.units, self._gates * self.units
        dt = x.dtype
        if mask is not None:
            mask = np.ascontiguousarray(mask, dtype=bool)
            if mask.shape != (n, T):
                raise ValueError(f"{type(self).__name__} {self.name}: mask of shape {mask.shape} "
                                 f"does not fit input of shape {x.shape}")
        xd = x
        dmask = None
        if training and self.dropout > 0:
            dmask = self._drop_mask(n, f, self.dropout, ws, "dmask", dt)
            xd = ws.buf("xd", x.shape, dt)
            np.multiply(x, dmask[:, None, :], out=xd)
        rmask = None
        if training and self.recurrent_dropout > 0:
            rmask = self._drop_mask(n, u, self.recurrent_dropout, ws, "rmask", dt)
        xw = ws.buf("xw", (n, T, g), dt)
        w = self.params["kernel"]
        b_in, b_rec = self._biases()
        self.ops.dense_forward(xd.reshape(n * T, f), w, b_in, "linear", xw.reshape(n * T, g), None)
        init, given = self._initial(n, extra, dt, ws)
        finals = self._recur_forward(ws, xw, init, mask, rmask, b_rec, n, T, dt)
        hs = ws.hs
        ws.x, ws.xd, ws.dmask, ws.rmask, ws.mask, ws.init = x, xd, dmask, rmask, mask, init
        ws.given = given
        if self.stateful:
            for s, fin in zip(self.states, finals):
                s[...] = fin
        # outputs from the states
        sel = None
        if mask is not None:
            mproc = mask[:, ::-1] if self.go_backwards else mask
            if self.zero_output_for_mask and self.return_sequences:
                sel = mproc
            else:
                sel = np.logical_or.accumulate(mproc, axis=1)     # seen an unmasked step yet
        ws.sel = sel
        if self.return_sequences:
            y = hs if sel is None else hs * sel[:, :, None]
            out = y
        else:
            y = hs[:, -1]
            if sel is not None:
                y = y * sel[:, -1:]
            out = y
        if not self.return_state:
            if out is hs:
                return hs
            o = ws.buf("y", out.shape, dt)
            o[...] = out
            return o
        osize = int(np.prod(out.shape[1:]))
        packed = ws.buf("packed", (n, osize + self._n_states * u), dt)
        packed[:, :osize] = out.reshape(n, osize)
        for k, fin in enumerate(finals):
            packed[:, osize + k * u: osize + (k + 1) * u] = fin
        return packed

    def backward(self, dy, ws, need_dx=True):
        x, xd = ws.x, ws.xd
        n, T, f = x.shape
        u, g = self.units, self._gates * self.units
        dt = dy.dtype
        dfin: list = [None] * self._n_states
        if self.return_state:
            osize = int(np.prod(self._out_shape(T)))
            dout = dy[:, :osize].reshape((n,) + self._out_shape(T))
            for k in range(self._n_states):
                dfin[k] = np.ascontiguousarray(dy[:, osize + k * u: osize + (k + 1) * u])
        else:
            dout = dy
        dhs = ws.buf("dhs", (n, T, u), dt)
        sel = ws.sel
        if self.return_sequences:
            if sel is None:
                dhs[...] = dout
            else:
                np.multiply(dout, sel[:, :, None], out=dhs)
        else:
            dhs[...] = 0
            dhs[:, -1] = dout if sel is None else dout * sel[:, -1:]
        dxw = ws.buf("dxw", (n, T, g), dt)
        dinit = self._recur_backward(ws, dhs, dfin, dxw, n, T, dt)
        dx = ws.buf("dx", x.shape, dt) if need_dx else None
        w = self.params["kernel"]
        gb = self._bias_grad_in()
        self.ops.dense_backward(dxw.reshape(n * T, g), xd.reshape(n * T, f), w, None, "linear", None,
                                None if dx is None else dx.reshape(n * T, f), self.grads["kernel"],
                                gb, need_dx)
        if dx is not None and ws.dmask is not None:
            dx *= ws.dmask[:, None, :]
        if not self._multi_input:
            return dx
        return [dx] + [np.array(d, copy=True) if need_dx else None for d in dinit]

    def _biases(self):
        b = self.params.get("bias")
        return b, None

    def _bias_grad_in(self):
        return self.grads["bias"] if self.use_bias else False

    # ------------------------------------------------------------------ config
    def get_config(self):
        cfg = super().get_config()
        cfg.update(units=self.units, activation=self.activation, use_bias=self.use_bias,
                   kernel_initializer=_initializers.serialize(self.kernel_initializer),
                   recurrent_initializer=_initializers.serialize(self.recurrent_initializer),
                   bias_initializer=_initializers.serialize(self.bias_initializer),
                   kernel_regularizer=_regularizers.serialize(self.kernel_regularizer),
                   recurrent_regularizer=_regularizers.serialize(self.recurrent_regularizer),
                   bias_regularizer=_regularizers.serialize(self.bias_regularizer),
                   dropout=self.dropout, recurrent_dropout=self.recurrent_dropout, seed=self.seed,
                   return_sequences=self.return_sequences, return_state=self.return_state,
                   go_backwards=self.go_backwards, stateful=self.stateful, unroll=self.unroll,
                   zero_output_for_mask=self.zero_output_for_mask)
        return cfg

    def describe(self):
        d = super().describe()
        d.update(units=self.units, activation=self.activation,
                 return_sequences=self.return_sequences, return_state=self.return_state,
                 go_backwards=self.go_backwards, stateful=self.stateful)
        return d


class SimpleRNN(_RNN):
    """Fully connected recurrent layer: ``h_t = activation(x_t @ kernel + h_{t-1} @ recurrent_kernel + bias)``.

    The input has shape (batch, timesteps, features). Weights follow Keras:
    ``kernel`` (features, units), ``recurrent_kernel`` (units, units),
    ``bias`` (units,).

    Parameters
    ----------
    units : int
        Dimensionality of the output (and state).
    activation : str or None, default "tanh"
        Activation of the state (None: linear).
    **kwargs
        The arguments shared by the recurrent layers (Keras 3 names and
        defaults), then the base layer arguments (``name``, ``input_shape``,
        ...; see ``Layer``):

        - ``use_bias`` (True): whether the layer has a bias.
        - ``kernel_initializer`` ("glorot_uniform"), ``recurrent_initializer``
          ("orthogonal"), ``bias_initializer`` ("zeros").
        - ``kernel_regularizer``, ``recurrent_regularizer``,
          ``bias_regularizer`` (None): penalties added to the loss.
        - ``dropout``, ``recurrent_dropout`` (0.0): dropout rates in ``[0, 1)``
          on the inputs and on the recurrent state; the masks are drawn once
          per batch and shared by all steps.
        - ``seed`` (None): seed of the dropout masks.
        - ``return_sequences`` (False): return the output of every step,
          (batch, timesteps, units), instead of the last, (batch, units).
        - ``return_state`` (False): also return the final states, as
          ``[output, *states]``.
        - ``go_backwards`` (False): process the sequence in reverse.
        - ``stateful`` (False): carry the final states over to the next batch
          (see ``reset_states``).
        - ``unroll`` (False): accepted; the recurrence is one kernel call.
        - ``zero_output_for_mask`` (False): masked steps output zeros.

        Activity regularizers and constraints are not supported.

    Raises
    ------
    ValueError
        For non-positive ``units``, an unsupported activation, a rate outside
        ``[0, 1)``, a constraint or an activity regularizer.
    """

    _gates = 1

    def __init__(self, units: Any, activation: str | None = "tanh", **kwargs: Any) -> None:
        kwargs.pop("recurrent_activation", None)
        super().__init__(units, activation=activation, **kwargs)

    def _recur_forward(self, ws, xw, init, mask, rmask, b_rec, n, T, dt):
        hs = ws.buf("hs", (n, T, self.units), dt)
        self.ops.simple_rnn_forward(xw, self.params["recurrent_kernel"], init[0], mask,
                                    self.go_backwards, rmask, self.activation, hs)
        ws.hs = hs
        return [hs[:, -1]]

    def _recur_backward(self, ws, dhs, dfin, dxw, n, T, dt):
        dh0 = ws.buf("dh0", (n, self.units), dt)
        self.ops.simple_rnn_backward(dhs, dfin[0], dxw, self.params["recurrent_kernel"], ws.init[0],
                                     ws.hs, ws.mask, self.go_backwards, ws.rmask, self.activation,
                                     dxw, self.grads["recurrent_kernel"], dh0)
        return [dh0]

    def get_config(self):
        cfg = super().get_config()
        return cfg


class LSTM(_RNN):
    """Long short-term memory layer (Keras 3).

    The input has shape (batch, timesteps, features). Gates are ordered
    ``[i, f, c, o]`` in the weights ``kernel`` (features, 4 * units),
    ``recurrent_kernel`` (units, 4 * units) and ``bias`` (4 * units,); the
    states are ``[h, c]``. A mask (``Embedding(mask_zero=True)``, ``Masking``)
    makes masked steps carry the states through. The recurrence over all time
    steps runs in one backend kernel call.

    Parameters
    ----------
    units : int
        Dimensionality of the output (and of each state).
    activation : str or None, default "tanh"
        Activation of the cell input and output (None: linear).
    recurrent_activation : str or None, default "sigmoid"
        Activation of the gates.
    unit_forget_bias : bool, default True
        Initialize the forget gate's bias to one.
    implementation : int, default 2
        Accepted for Keras compatibility; unused.
    **kwargs
        The arguments shared by the recurrent layers (Keras 3 names and
        defaults), then the base layer arguments (``name``, ``input_shape``,
        ...; see ``Layer``):

        - ``use_bias`` (True): whether the layer has a bias.
        - ``kernel_initializer`` ("glorot_uniform"), ``recurrent_initializer``
          ("orthogonal"), ``bias_initializer`` ("zeros").
        - ``kernel_regularizer``, ``recurrent_regularizer``,
          ``bias_regularizer`` (None): penalties added to the loss.
        - ``dropout``, ``recurrent_dropout`` (0.0): dropout rates in ``[0, 1)``
          on the inputs and on the recurrent state; the masks are drawn once
          per batch and shared by all steps.
        - ``seed`` (None): seed of the dropout masks.
        - ``return_sequences`` (False): return the output of every step,
          (batch, timesteps, units), instead of the last, (batch, units).
        - ``return_state`` (False): also return the final states, as
          ``[output, *states]``.
        - ``go_backwards`` (False): process the sequence in reverse.
        - ``stateful`` (False): carry the final states over to the next batch
          (see ``reset_states``).
        - ``unroll`` (False): accepted; the recurrence is one kernel call.
        - ``zero_output_for_mask`` (False): masked steps output zeros.

        Activity regularizers and constraints are not supported.

    Raises
    ------
    ValueError
        For non-positive ``units``, an unsupported activation, a rate outside
        ``[0, 1)``, a constraint or an activity regularizer.

    Examples
    --------
    >>> import numpy as np
    >>> import fastgrad as fg
    >>> lstm = fg.layers.LSTM(8, return_sequences=True)
    >>> lstm(np.zeros((2, 5, 3), dtype=np.float32)).shape
    (2, 5, 8)
    >>> [w.shape for w in lstm.get_weights()]
    [(3, 32), (8, 32), (32,)]
    >>> out, h, c = fg.layers.LSTM(4, return_state=True)(np.zeros((2, 5, 3), dtype=np.float32))
    >>> out.shape, h.shape, c.shape
    ((2, 4), (2, 4), (2, 4))
    """

    _gates = 4
    _n_states = 2

    def __init__(self, units: Any, activation: str | None = "tanh",
                 recurrent_activation: str | None = "sigmoid", unit_forget_bias: bool = True,
                 implementation: Any = 2, **kwargs: Any) -> None:
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation,
                         **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)

    def _bias_initializer(self):
        if self.unit_forget_bias:
            return _UnitForgetBias(self.bias_initializer, self.units)
        return self.bias_initializer

    def _recur_forward(self, ws, xw, init, mask, rmask, b_rec, n, T, dt):
        u = self.units
        hs = ws.buf("hs", (n, T, u), dt)
        cs = ws.buf("cs", (n, T, u), dt)
        gates = ws.buf("gates", (n, T, 4 * u), dt)
        self.ops.lstm_forward(xw, self.params["recurrent_kernel"], init[0], init[1], mask,
                              self.go_backwards, rmask, self.activation, self.recurrent_activation,
                              hs, cs, gates)
        ws.hs, ws.cs, ws.gates = hs, cs, gates
        return [hs[:, -1], cs[:, -1]]

    def _recur_backward(self, ws, dhs, dfin, dxw, n, T, dt):
        u = self.units
        dh0 = ws.buf("dh0", (n, u), dt)
        dc0 = ws.buf("dc0", (n, u), dt)
        self.ops.lstm_backward(dhs, dfin[0], dfin[1], dxw,
                               self.params["recurrent_kernel"], ws.init[0], ws.init[1], ws.hs, ws.cs,
                               ws.gates, ws.mask, self.go_backwards, ws.rmask, self.activation,
                               self.recurrent_activation, dxw, self.grads["recurrent_kernel"], dh0,
                               dc0)
        return [dh0, dc0]

    def get_config(self):
        cfg = super().get_config()
        cfg.update(recurrent_activation=self.recurrent_activation,
                   unit_forget_bias=self.unit_forget_bias)
        return cfg


class GRU(_RNN):
    """Gated recurrent unit layer (Keras 3).

    The input has shape (batch, timesteps, features); gates are ordered
    ``[z, r, h]``. With ``reset_after=True`` (the default) the bias has shape
    (2, 3 * units) and the candidate is
    ``act(x @ W_h + b_h + r * (h @ R_h + b'_h))``; with ``reset_after=False``
    (Keras's original GRU) the bias has shape (3 * units,), the candidate is
    ``act(x @ W_h + b_h + (r * h) @ R_h)``, and it runs on the NumPy
    reference on every backend.

    Parameters
    ----------
    units : int
        Dimensionality of the output (and state).
    activation : str or None, default "tanh"
        Activation of the candidate state (None: linear).
    recurrent_activation : str or None, default "sigmoid"
        Activation of the gates.
    reset_after : bool, default True
        Apply the reset gate after the recurrent product.
    implementation : int, default 2
        Accepted for Keras compatibility; unused.
    **kwargs
        The arguments shared by the recurrent layers (Keras 3 names and
        defaults), then the base layer arguments (``name``, ``input_shape``,
        ...; see ``Layer``):

        - ``use_bias`` (True): whether the layer has a bias.
        - ``kernel_initializer`` ("glorot_uniform"), ``recurrent_initializer``
          ("orthogonal"), ``bias_initializer`` ("zeros").
        - ``kernel_regularizer``, ``recurrent_regularizer``,
          ``bias_regularizer`` (None): penalties added to the loss.
        - ``dropout``, ``recurrent_dropout`` (0.0): dropout rates in ``[0, 1)``
          on the inputs and on the recurrent state; the masks are drawn once
          per batch and shared by all steps.
        - ``seed`` (None): seed of the dropout masks.
        - ``return_sequences`` (False): return the output of every step,
          (batch, timesteps, units), instead of the last, (batch, units).
        - ``return_state`` (False): also return the final states, as
          ``[output, *states]``.
        - ``go_backwards`` (False): process the sequence in reverse.
        - ``stateful`` (False): carry the final states over to the next batch
          (see ``reset_states``).
        - ``unroll`` (False): accepted; the recurrence is one kernel call.
        - ``zero_output_for_mask`` (False): masked steps output zeros.

        Activity regularizers and constraints are not supported.

    Raises
    ------
    ValueError
        For non-positive ``units``, an unsupported activation, a rate outside
        ``[0, 1)``, a non-boolean ``reset_after``, a constraint or an activity regularizer.
    """

    _gates = 3

    def __init__(self, units: Any, activation: str | None = "tanh",
                 recurrent_activation: str | None = "sigmoid", reset_after: Any = True,
                 implementation: Any = 2, **kwargs: Any) -> None:
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation,
                         **kwargs)
        if not isinstance(reset_after, (bool, np.bool_)):
            raise ValueError(f"GRU {self.name}: reset_after must be True or False, got "
                             f"{reset_after!r}")
        self.reset_after = bool(reset_after)

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _biases(self):
        b = self.params.get("bias")
        if b is None:
            return None, None
        if not self.reset_after:
            return b, None
        return b[0], b[1]

    def _bias_grad_in(self):
        if not self.use_bias:
            return False
        return self.grads["bias"][0] if self.reset_after else self.grads["bias"]

    def _recur_forward(self, ws, xw, init, mask, rmask, b_rec, n, T, dt):
        u = self.units
        if not self.reset_after:
            hs = ws.buf("hs", (n, T, u), dt)
            gates = ws.buf("gates", (n, T, 4 * u), dt)
            self.ops.gru_v1_forward(xw, self.params["recurrent_kernel"], init[0], mask,
                                    self.go_backwards, rmask, self.activation,
                                    self.recurrent_activation, hs, gates)
            ws.hs, ws.gates = hs, gates
            return [hs[:, -1]]
        hs = ws.buf("hs", (n, T, u), dt)
        gates = ws.buf("gates", (n, T, 4 * u), dt)
        self.ops.gru_forward(xw, self.params["recurrent_kernel"], b_rec, init[0], mask,
                             self.go_backwards, rmask, self.activation, self.recurrent_activation,
                             hs, gates)
        ws.hs, ws.gates, ws.b_rec = hs, gates, b_rec
        return [hs[:, -1]]

    def _recur_backward(self, ws, dhs, dfin, dxw, n, T, dt):
        dh0 = ws.buf("dh0", (n, self.units), dt)
        if not self.reset_after:
            self.ops.gru_v1_backward(dhs, dfin[0], dxw, self.params["recurrent_kernel"],
                                     ws.init[0], ws.hs, ws.gates, ws.mask, self.go_backwards,
                                     ws.rmask, self.activation, self.recurrent_activation, dxw,
                                     self.grads["recurrent_kernel"], dh0)
            return [dh0]
        dbrec = self.grads["bias"][1] if self.use_bias else None
        self.ops.gru_backward(dhs, dfin[0], dxw, self.params["recurrent_kernel"], ws.b_rec,
                              ws.init[0], ws.hs, ws.gates, ws.mask, self.go_backwards, ws.rmask,
                              self.activation, self.recurrent_activation, dxw,
                              self.grads["recurrent_kernel"], dbrec, dh0)
        return [dh0]

    def get_config(self):
        cfg = super().get_config()
        cfg.update(recurrent_activation=self.recurrent_activation, reset_after=self.reset_after)
        return cfg


# ---------------------------------------------------------------------- wrappers
class _Wrapper(Layer):
    """A layer holding sub-layers whose parameters it lays out (prefixed names)."""

    def _subs(self):
        raise NotImplementedError

    def _prefixes(self):
        raise NotImplementedError

    def param_specs(self):
        specs = []
        for p, l in zip(self._prefixes(), self._subs()):
            specs += [ParamSpec(p + s.name, s.shape, s.initializer, s.regularizer)
                      for s in l.param_specs()]
        return specs

    def state_specs(self):
        from .base import StateSpec
        specs = []
        for p, l in zip(self._prefixes(), self._subs()):
            specs += [StateSpec(p + s.name, s.shape, s.initializer) for s in l.state_specs()]
        return specs

    def bind(self, params, grads, state):
        super().bind(params, grads, state)
        for p, l in zip(self._prefixes(), self._subs()):
            pick = lambda d: {k[len(p):]: v for k, v in d.items() if k.startswith(p)}  # noqa: E731
            l.bind(pick(params), pick(grads), pick(state))
            l.offsets = {k[len(p):]: v for k, v in self.offsets.items() if k.startswith(p)}

    def reset_rng(self, seed):
        for k, l in enumerate(self._subs()):
            l.reset_rng(int(seed) + 7919 * k)

    def _sync(self):
        for l in self._subs():
            l._ops = self._ops

    @staticmethod
    def _sub_ws(ws, name):
        w = getattr(ws, name, None)
        if w is None:
            w = Workspace()
            setattr(ws, name, w)
        return w


_MERGE_MODES = ("concat", "sum", "mul", "ave", None)


class Bidirectional(_Wrapper):
    """Run a recurrent layer forwards and a copy backwards, and merge the outputs.

    Parameters
    ----------
    layer : SimpleRNN, LSTM or GRU
        The forward layer; its configuration is copied for both directions.
    merge_mode : {"concat", "sum", "mul", "ave", None}, default "concat"
        How the two outputs are combined; None returns a list of both.
    weights : None
        Not supported (use ``set_weights``); must be None.
    backward_layer : SimpleRNN, LSTM or GRU, optional
        The backward layer (default: a copy of ``layer`` with
        ``go_backwards`` flipped).
    name : str, optional
        Layer name (default ``bidirectional_`` + the layer's name).
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        When ``layer`` is not a recurrent layer or is stateful, for an unknown
        ``merge_mode``, or ``weights`` given.
    """

    def __init__(self, layer: Layer, merge_mode: str | None = "concat", weights: Any = None,
                 backward_layer: Layer | None = None, name: str | None = None,
                 **kwargs: Any) -> None:
        if not isinstance(layer, _RNN):
            raise ValueError(f"Bidirectional: layer must be a SimpleRNN, LSTM or GRU, got "
                             f"{type(layer).__name__}")
        super().__init__(name=name or f"bidirectional_{layer.name}", **kwargs)
        if merge_mode not in _MERGE_MODES:
            raise ValueError(f"Bidirectional {self.name}: merge_mode must be one of "
                             f"{_MERGE_MODES}, got {merge_mode!r}")
        if weights is not None:
            raise ValueError(f"Bidirectional {self.name}: weights= is not supported; use "
                             "set_weights")
        if layer.stateful:
            raise ValueError(f"Bidirectional {self.name}: stateful inner layers are not supported")
        self.merge_mode = merge_mode
        cfg = layer.get_config()
        cfg["name"] = "forward_" + layer.name
        self.forward_layer = type(layer).from_config(cfg)
        if backward_layer is None:
            bcfg = layer.get_config()
            bcfg["name"] = "backward_" + layer.name
            bcfg["go_backwards"] = not layer.go_backwards
            self.backward_layer = type(layer).from_config(bcfg)
        else:
            if not isinstance(backward_layer, _RNN) or \
                    backward_layer.return_sequences != layer.return_sequences or \
                    backward_layer.return_state != layer.return_state or \
                    backward_layer._n_states != layer._n_states or backward_layer.stateful:
                raise ValueError(f"Bidirectional {self.name}: backward_layer must be a recurrent "
                                 "layer of the same kind with the same return_sequences and "
                                 "return_state, not stateful")
            self.backward_layer = backward_layer
        self.return_sequences = layer.return_sequences
        # return_state (Keras): [output, *forward states, *backward states]; the node
        # outputs one packed tensor split by hidden _RnnPart nodes, as _RNN does
        self.return_state = bool(layer.return_state)
        # Keras: inside Bidirectional the masked steps of a returned sequence are zeros
        for l in (self.forward_layer, self.backward_layer):
            l.zero_output_for_mask = self.return_sequences
            l._with_initial_state = False
        self._layer_config = {"class_name": type(layer).__name__, "config": layer.get_config()}

    supports_masking = True

    def _subs(self):
        return [self.forward_layer, self.backward_layer]

    def _prefixes(self):
        return ["forward_", "backward_"]

    def compute_output_shape(self, input_shape):
        fs = self.forward_layer.build(input_shape)
        bs = self.backward_layer.build(input_shape)
        if fs != bs:
            raise ValueError(f"Bidirectional {self.name}: forward and backward layers give shapes "
                             f"{fs} and {bs}")
        if self.return_state:
            fs = self.forward_layer._out_shape(self.forward_layer._seq_shape(input_shape)[0])
            self._inner_shape = tuple(fs)
            parts = self._state_parts()
            return (parts[-1][1],)
        if self.merge_mode == "concat":
            return tuple(fs[:-1]) + (2 * fs[-1],)
        if self.merge_mode is None:
            return tuple(fs[:-1]) + (2 * fs[-1],)       # both halves, split by the call
        return tuple(fs)

    def _state_parts(self):
        """[(start, stop, shape, propagate_mask)] of the packed tensor of return_state:
        the merged output (merge_mode None: the forward then the backward output),
        then the forward layer's states, then the backward layer's."""
        fs = self._inner_shape
        rs = self.return_sequences
        n = int(np.prod(fs))
        if self.merge_mode is None:
            parts = [(0, n, fs, rs), (n, 2 * n, fs, rs)]
        elif self.merge_mode == "concat":
            ms = tuple(fs[:-1]) + (2 * fs[-1],)
            parts = [(0, 2 * n, ms, rs)]
        else:
            parts = [(0, n, fs, rs)]
        s = parts[-1][1]
        u = self.forward_layer.units
        for _ in range(2 * self.forward_layer._n_states):
            parts.append((s, s + u, (u,), False))
            s += u
        return parts

    def compute_mask(self, inputs, mask=None):
        return mask if self.return_sequences else None

    def __call__(self, inputs, training=False, mask=None, **kwargs):
        out = super().__call__(inputs, training=training, mask=mask, **kwargs)
        if self.return_state:
            parts = self._state_parts()
            if is_symbolic(out):
                from .base import _unique_name
                names = (["forward", "backward"] if self.merge_mode is None else ["output"])
                names += [f"{d}_{s}" for d in ("forward", "backward")
                          for s in ("state_h", "state_c")[:self.forward_layer._n_states]]
                return _Outputs([_RnnPart(a, b, shp, pm,
                                          name=_unique_name(f"{self.name}_{names[k]}"))(out)
                                 for k, (a, b, shp, pm) in enumerate(parts)], out)
            res = []
            for a, b, shp, pm in parts:
                r = np.ascontiguousarray(out[:, a:b].reshape((out.shape[0],) + shp))
                if pm and getattr(out, "_keras_mask", None) is not None:
                    rm: Any = r.view(type(out))
                    rm._keras_mask = out._keras_mask
                    r = rm
                res.append(r)
            return res
        if self.merge_mode is not None:
            return out
        u = self.forward_layer.units
        shp = self.forward_layer.output_shape
        if is_symbolic(out):
            flat = out
            outs = []
            for k in range(2):
                from .base import _unique_name
                outs.append(_HalfPart(k, u, shp, self.return_sequences,
                                      name=_unique_name(f"{self.name}_{('forward', 'backward')[k]}"))(flat))
            return _Outputs(outs, out)
        return [np.ascontiguousarray(out[..., :u]), np.ascontiguousarray(out[..., u:])]

    def _unpack_inner(self, p):
        """An inner layer's packed (output, *states) -> (output, [states])."""
        n = p.shape[0]
        fs = self._inner_shape
        k = int(np.prod(fs))
        u = self.forward_layer.units
        states = [p[:, k + j * u:k + (j + 1) * u] for j in range(self.forward_layer._n_states)]
        return p[:, :k].reshape((n,) + fs), states

    def forward(self, x, training, ws, mask=None):
        self._sync()
        yf = self.forward_layer.forward(x, training, self._sub_ws(ws, "wf"), mask=mask)
        yb = self.backward_layer.forward(x, training, self._sub_ws(ws, "wb"), mask=mask)
        if self.return_state:
            yf, sf = self._unpack_inner(yf)
            yb, sb = self._unpack_inner(yb)
        if self.return_sequences:
            yb = yb[:, ::-1]
        ws.yf, ws.yb = yf, yb
        mode = self.merge_mode
        if self.return_state:
            n = x.shape[0] if not isinstance(x, list) else x[0].shape[0]
            parts = self._state_parts()
            packed = ws.buf("packed", (n, parts[-1][1]), yf.dtype)
            a, b = parts[0][0], parts[0][1]
            if mode is None:
                packed[:, a:b] = yf.reshape(n, -1)
                packed[:, parts[1][0]:parts[1][1]] = yb.reshape(n, -1)
            elif mode == "concat":
                u = yf.shape[-1]
                view = packed[:, a:b].reshape((n,) + parts[0][2])
                view[..., :u] = yf
                view[..., u:] = yb
            else:
                view = packed[:, a:b].reshape((n,) + parts[0][2])
                if mode == "sum":
                    np.add(yf, yb, out=view)
                elif mode == "mul":
                    np.multiply(yf, yb, out=view)
                else:
                    np.add(yf, yb, out=view)
                    view *= view.dtype.type(0.5)
            for (a, b, _, _), st in zip(parts[-2 * len(sf):], sf + sb):
                packed[:, a:b] = st
            return packed
        if mode in ("concat", None):
            y = ws.buf("y", yf.shape[:-1] + (2 * yf.shape[-1],), yf.dtype)
            u = yf.shape[-1]
            y[..., :u] = yf
            y[..., u:] = yb
        else:
            y = ws.buf("y", yf.shape, yf.dtype)
            if mode == "sum":
                np.add(yf, yb, out=y)
            elif mode == "mul":
                np.multiply(yf, yb, out=y)
            else:
                np.add(yf, yb, out=y)
                y *= y.dtype.type(0.5)
        return y

    def backward(self, dy, ws, need_dx=True):
        self._sync()
        mode = self.merge_mode
        dsf: Any = None
        dsb: Any = None
        if self.return_state:
            parts = self._state_parts()
            n = dy.shape[0]
            S = self.forward_layer._n_states
            dst = [dy[:, a:b] for a, b, _, _ in parts[-2 * S:]]
            dsf, dsb = dst[:S], dst[S:]
            if mode is None:
                dyf = np.ascontiguousarray(dy[:, parts[0][0]:parts[0][1]]).reshape(
                    (n,) + parts[0][2])
                dyb = np.ascontiguousarray(dy[:, parts[1][0]:parts[1][1]]).reshape(
                    (n,) + parts[1][2])
                mode = "split"
            else:
                dy = np.ascontiguousarray(dy[:, parts[0][0]:parts[0][1]]).reshape(
                    (n,) + parts[0][2])
        if mode == "split":
            pass
        elif mode in ("concat", None):
            u = dy.shape[-1] // 2
            dyf, dyb = np.ascontiguousarray(dy[..., :u]), np.ascontiguousarray(dy[..., u:])
        elif mode == "sum":
            dyf, dyb = dy, dy.copy()
        elif mode == "mul":
            dyf, dyb = dy * ws.yb, dy * ws.yf
        else:
            dyf = dy * dy.dtype.type(0.5)
            dyb = dyf.copy()
        if self.return_sequences:
            dyb = np.ascontiguousarray(dyb[:, ::-1])
        if self.return_state:      # the inner layers' packed (output, *states) gradients
            n = dyf.shape[0]
            dyf = np.concatenate([dyf.reshape(n, -1)] + list(dsf), axis=1)
            dyb = np.concatenate([dyb.reshape(n, -1)] + list(dsb), axis=1)
        dxf = self.forward_layer.backward(dyf, self._sub_ws(ws, "wf"), need_dx)
        if need_dx:
            dxf = np.array(dxf, copy=True)
        dxb = self.backward_layer.backward(dyb, self._sub_ws(ws, "wb"), need_dx)
        if not need_dx:
            return None
        dxf += dxb
        return dxf

    def get_config(self):
        cfg = super().get_config()
        cfg.update(layer=self._layer_config, merge_mode=self.merge_mode)
        return cfg

    @classmethod
    def from_config(cls, config):
        cfg = dict(config)
        from . import deserialize
        cfg["layer"] = deserialize(cfg["layer"])
        if cfg.get("input_shape") is not None:
            cfg["input_shape"] = tuple(cfg["input_shape"])
        return cls(**cfg)


class _HalfPart(Layer):
    """Hidden layer: one direction's half of a Bidirectional(merge_mode=None) output."""

    def __init__(self, k, units, shape, propagate_mask, name=None):
        super().__init__(name=name)
        self._operator = True
        self.k, self.units, self.shape = int(k), int(units), tuple(shape)
        self.supports_masking = bool(propagate_mask)

    def compute_output_shape(self, input_shape):
        return self.shape

    def forward(self, x, training, ws):
        ws.xshape = x.shape
        u = self.units
        return np.ascontiguousarray(x[..., self.k * u:(self.k + 1) * u])

    def backward(self, dy, ws, need_dx=True):
        if not need_dx:
            return None
        dx = ws.zeros("dx", ws.xshape, dy.dtype)
        dx[...] = 0
        u = self.units
        dx[..., self.k * u:(self.k + 1) * u] = dy
        return dx

    def get_config(self):
        cfg = super().get_config()
        cfg.update(k=self.k, units=self.units, shape=list(self.shape),
                   propagate_mask=self.supports_masking)
        return cfg

    @classmethod
    def from_config(cls, config):
        cfg = dict(config)
        cfg.pop("trainable", None)
        return cls(**cfg)


class TimeDistributed(_Wrapper):
    """Apply a layer to every time step.

    ``(batch, T, ...)`` becomes ``(batch, T, *layer output shape)``; the
    layer's weights are shared by all steps.

    Parameters
    ----------
    layer : Layer
        A single-input layer.
    name : str, optional
        Layer name (default ``time_distributed_`` + the layer's name).
    **kwargs
        Base layer arguments (``name``, ``input_shape``, ``trainable``, ...;
        see ``Layer``).

    Raises
    ------
    ValueError
        When ``layer`` is not a single-input layer.
    """

    supports_masking = True

    def __init__(self, layer: Layer, name: str | None = None, **kwargs: Any) -> None:
        if not isinstance(layer, Layer) or layer._multi_input:
            raise ValueError(f"TimeDistributed: layer must be a single-input Layer, got {layer!r}")
        super().__init__(name=name or f"time_distributed_{layer.name}", **kwargs)
        self.layer = layer

    def _subs(self):
        return [self.layer]

    def _prefixes(self):
        return [""]

    def compute_output_shape(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"TimeDistributed {self.name}: expects input of shape (batch, time, "
                             f"...), got (batch, {', '.join(map(str, input_shape))})")
        inner = self.layer.build(tuple(input_shape[1:]))
        return (input_shape[0],) + tuple(inner)

    def forward(self, x, training, ws):
        self._sync()
        n, T = x.shape[:2]
        y = self.layer.forward(x.reshape((n * T,) + x.shape[2:]), training, self._sub_ws(ws, "inner"))
        ws.nt = (n, T)
        return y.reshape((n, T) + y.shape[1:])

    def backward(self, dy, ws, need_dx=True):
        self._sync()
        n, T = ws.nt
        dx = self.layer.backward(np.ascontiguousarray(dy).reshape((n * T,) + dy.shape[2:]),
                                 self._sub_ws(ws, "inner"), need_dx)
        if dx is None:
            return None
        return dx.reshape((n, T) + dx.shape[1:])

    def get_config(self):
        cfg = super().get_config()
        cfg["layer"] = {"class_name": type(self.layer).__name__, "config": self.layer.get_config()}
        return cfg

    @classmethod
    def from_config(cls, config):
        cfg = dict(config)
        from . import deserialize
        cfg["layer"] = deserialize(cfg["layer"])
        if cfg.get("input_shape") is not None:
            cfg["input_shape"] = tuple(cfg["input_shape"])
        return cls(**cfg)
