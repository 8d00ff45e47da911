"""The Layer protocol: what a layer must provide so a model can own its memory.

A model (fastgrad.models.Sequential) drives every layer through the same small
protocol; layers never allocate parameters themselves and never import native
code — they compute only through `self.ops` (the active backend's Ops object).

Life of a layer
---------------
1. ``__init__(**hyper_parameters, name=None, input_shape=None)``
   Stores hyper-parameters only.  `input_shape` (shape WITHOUT the batch axis)
   is accepted on any layer and used by the model when it is the first layer.
2. ``build(input_shape) -> output_shape``
   Called once by the model with the per-sample input shape (tuple, no batch
   axis).  Validates it (raise ValueError naming the layer and the shape),
   records ``self.input_shape`` / ``self.output_shape``, sets ``self.built``.
   The base implementation does the bookkeeping and calls
   ``compute_output_shape``; override ``compute_output_shape`` (and call
   ``super().build`` if you override ``build``).
3. ``param_specs() -> list[ParamSpec]``  (trainable, after build)
   ``ParamSpec(name, shape, initializer, regularizer)`` in Keras weight order
   (Dense: kernel, bias).  The model lays all trainable parameters of all
   layers end to end in ONE contiguous float32 buffer (and gradients in a twin
   buffer) and fills them with ``initializer(shape)``.
   ``state_specs() -> list[StateSpec]``  (non-trainable, after build)
   ``StateSpec(name, shape, initializer)``, e.g. BatchNorm moving_mean /
   moving_variance.  Held by the model outside the trainable buffer (one
   float32 array each) but part of get_weights()/set_weights()/save, placed
   after the layer's trainable weights (Keras order).
4. ``bind(params, grads, state)``
   Three dicts name -> numpy array.  ``params[name]`` / ``grads[name]`` are
   views into the model's flat buffers, ``state[name]`` the state arrays.
   The base implementation stores them as ``self.params``, ``self.grads``,
   ``self.state``.  Layers must keep writing INTO these arrays (out=...,
   ``a[...] = ...``), never rebind them.
5. ``forward(x, training, ws) -> y``
   x: float32 C-contiguous ``(batch, *input_shape)``.  ``ws`` is this layer's
   Workspace for the current batch size (see engine.workspace.Workspace):
   ``ws.buf(name, shape, dtype=np.float32)`` returns an array allocated on
   first use and reused on every later step with that batch size, and ``ws``
   accepts plain attributes for anything the backward pass needs (e.g.
   ``ws.x = x``).  y must be a workspace array (or x itself for identity
   layers / a reshaped view for Flatten); it stays valid until the next
   forward with the same batch size.  A steady-state step allocates nothing.
6. ``backward(dy, ws, need_dx=True) -> dx or None``
   dy: gradient w.r.t. this layer's output ``(batch, *output_shape)``, float32.
   Writes this batch's parameter gradients INTO ``self.grads[...]``
   (overwriting, not accumulating: the model calls every layer's backward
   once per step) and returns dx (a workspace array) unless need_dx is False
   (the first layer: the model never needs dL/dx).  Layers may overwrite dy.
7. ``get_config() -> dict`` / ``from_config(config)``: JSON-friendly
   hyper-parameters; ``from_config(get_config())`` rebuilds an equivalent
   (unbuilt) layer.  Every Layer subclass is registered by class name
   (``Layer.registry``) so saved models can be reloaded.
8. ``lower(ctx) -> dict`` (optional): the layer as a node of the compiled
   C plan, from its own state — kind name (a row of csrc/step/layer_table.c),
   activation code, parameter offsets in the flat buffer, hyper-parameters —
   through the helpers of ``ctx`` (engine/compiled.py ``LowerContext``: codes
   from the C headers, regularizer coefficients, trainability). A layer
   without ``lower`` (or raising ``ctx.unsupported(...)``) makes the model run
   on the Python executor, with the same results. No other module reads a
   layer's private fields.
   ``describe() -> dict``: the layer as plain data for people and tools:
   kind, name, shapes, hyper-parameters and each array's offset and shape in
   the flat buffer.  Subclasses extend ``super().describe()``.
9. Multi-input layers (merge layers) set ``_multi_input = True``: ``build`` /
   ``compute_output_shape`` take a list of shapes, ``forward`` a list of
   arrays, ``backward`` returns a list of dx that never alias each other (at
   most one may be dy itself).
10. ``__call__``: on symbolic tensors (fg.Input, another layer's output) it
    records a node of the model graph (engine/graph.py); on arrays it runs
    forward eagerly, building the layer (weights included) if needed.

Output-activation fusion
------------------------
When the model's loss is a cross-entropy on probabilities and its last layer
ends in the matching activation (softmax / sigmoid), the model asks that layer
to emit logits instead (``split_output_activation()`` returns the activation
name it removed, or None if it cannot) and computes the fused, numerically
stable loss on the logits; predict() re-applies the activation.
``merge_output_activation()`` undoes the split (recompile with another loss).

Extra hooks
-----------
- ``trainable`` (bool attribute): False freezes the layer; the model then
  zeroes its gradient views after backward (its parameters stay in the flat
  buffer, so the optimizer step is still one call).
- ``reset_rng(seed)``: layers with randomness (Dropout) derive their streams
  from it; the model calls it at build time with ``fastgrad._config.next_seed()``.
- ``ops``: the Ops object; the model sets it once per fit/evaluate/predict
  (attribute ``_ops``); otherwise it is the active backend's.
"""
from __future__ import annotations

import re
from typing import Any, NamedTuple, Sequence

import numpy as np

__all__ = ["Layer", "ParamSpec", "StateSpec", "get_layer_class", "deserialize_layer",
           "MaskedArray", "symbolic_mask"]


class MaskedArray(np.ndarray):
    """An eager layer output that carries a mask.

    What an eager layer call returns when its output has a mask: the output array
    with the mask as ``_keras_mask`` (a boolean (batch, time) array), as Keras's eager
    tensors carry it. NumPy operations on it do NOT carry the mask on (a slice or a sum
    is another tensor); pass it explicitly with ``layer(x, mask=m)`` then.

    Parameters
    ----------
    shape, dtype, buffer, offset, strides, order : optional
        As for ``numpy.ndarray``; a MaskedArray is normally made with
        ``array.view(MaskedArray)``.
    """

    _keras_mask: Any

    def __array_finalize__(self, obj: Any) -> None:
        self._keras_mask = None


def symbolic_mask(tensor: Any, shape: Sequence[int | None]) -> Any:
    """Make the symbolic mask of a symbolic tensor.

    This is what ``compute_mask`` returns while the model graph is built.

    Parameters
    ----------
    tensor : SymbolicTensor
        The tensor the mask belongs to.
    shape : sequence of int or None
        Full shape of the mask, batch axis first.

    Returns
    -------
    SymbolicTensor
        A boolean symbolic tensor that records which tensor it masks.
    """
    from ..engine.graph import SymbolicTensor
    m = SymbolicTensor(tuple(shape), node=None, name=f"{tensor.name}_mask"
                       if tensor.name else None, dtype="bool")
    m._mask_of = tensor
    return m


def attach_masks(layer, node, masks):
    """Record on a new graph node the masks its inputs get and whether its output carries one.

    Parameters
    ----------
    layer : Layer
        The called layer (its ``compute_mask`` decides the output mask).
    node : Node
        The new ``engine.graph.Node``.
    masks : list
        Per input, a symbolic mask or None.
    """
    ts = node.inputs
    node.mask_srcs = [None if m is None else m._mask_of for m in masks]
    sym_in = ts if layer._multi_input else ts[0]
    sym_mask = list(masks) if layer._multi_input else masks[0]
    out_mask = layer.compute_mask(sym_in, sym_mask)
    if out_mask is not None:
        node.output._keras_mask = symbolic_mask(node.output, out_mask.shape)
        node.has_out_mask = True


def _check_mask_shape(layer, mshape, xshape):
    if getattr(layer, "_mask_any_shape", False):
        return
    mshape, xshape = tuple(mshape), tuple(xshape)
    ok = 1 <= len(mshape) <= len(xshape) and all(
        a is None or b is None or a == b for a, b in zip(mshape, xshape[:len(mshape)]))
    if not ok:
        raise ValueError(f"{type(layer).__name__} layer {layer.name!r}: mask of shape {mshape} does "
                         f"not fit input of shape {xshape} (the mask covers the input's leading "
                         "axes: (batch, time))")


def _check_masks(layer, mask, xs, multi):
    """Eager masks as boolean arrays (None kept), shapes checked against the inputs."""
    if multi:
        if mask is None:
            return [None] * len(xs)
        if not isinstance(mask, (list, tuple)) or len(mask) != len(xs):
            raise ValueError(f"{type(layer).__name__} layer {layer.name!r}: mask must be a list of "
                             f"{len(xs)} masks (None where an input has none)")
        return [_check_masks(layer, m, [x], False) for m, x in zip(mask, xs)]
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.dtype != bool:
        if m.dtype.kind not in "iuf":
            raise TypeError(f"{type(layer).__name__} layer {layer.name!r}: mask must be a boolean "
                            f"array, got dtype {m.dtype}")
        m = m != 0
    _check_mask_shape(layer, m.shape, xs[0].shape)
    return np.ascontiguousarray(m)


class ParamSpec(NamedTuple):
    """Declaration of a trainable parameter, which lives in the model's flat float32 buffer.

    Parameters
    ----------
    name : str
        Weight name within the layer (``"kernel"``, ``"bias"``, ...).
    shape : tuple of int
        Shape of the parameter.
    initializer : callable
        Called with the shape, returns the initial float array
        (see ``fastgrad.initializers``).
    regularizer : Regularizer or None, default None
        Penalty added to the loss (see ``fastgrad.regularizers``).
    """
    name: str
    shape: tuple
    initializer: Any          # callable shape -> float array (fastgrad.initializers)
    regularizer: Any = None   # fastgrad.regularizers.Regularizer or None


class StateSpec(NamedTuple):
    """Declaration of a non-trainable array such as BatchNormalization's moving statistics.

    Parameters
    ----------
    name : str
        Weight name within the layer (``"moving_mean"``, ...).
    shape : tuple of int
        Shape of the array.
    initializer : callable
        Called with the shape, returns the initial float array.
    """
    name: str
    shape: tuple
    initializer: Any


_name_counts: dict = {}


def _unique_name(base: str) -> str:
    n = _name_counts.get(base, 0)
    _name_counts[base] = n + 1
    return base if n == 0 else f"{base}_{n}"


def _snake(name: str) -> str:
    """Keras's to_snake_case: Conv2D -> conv2d, ReLU -> re_lu, Conv2DTranspose -> conv2d_transpose."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    name = re.sub("([a-z])([A-Z])", r"\1_\2", name)
    return name.lower()


def _as_shape(shape: Any, what: str) -> Any:
    if shape is None:
        return None
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise TypeError(f"{what}: expected a tuple of positive integers, got {shape!r}") from None
    if any(s <= 0 for s in shape):
        raise ValueError(f"{what}: every dimension must be positive, got {shape}")
    return shape


class Layer:
    """Base class of every fastgrad layer.

    A layer stores hyper-parameters; the model that owns it allocates its
    weights and drives it through ``build``, ``param_specs``, ``bind``,
    ``forward`` and ``backward`` (the protocol is described in the
    ``fastgrad.layers.base`` module docstring). A subclass may instead define
    ``call`` with ``fastgrad.math`` operations; its gradient is then derived
    automatically. The keyword arguments below are accepted by every layer.

    Parameters
    ----------
    name : str, optional
        Layer name; by default the snake-case class name made unique with a
        numeric suffix (``dense``, ``dense_1``, ...).
    input_shape : tuple of int, optional
        Per-sample input shape (without the batch axis); used when the layer is
        the first layer of a ``Sequential`` model.
    input_dim : int, optional
        Shorthand for ``input_shape=(input_dim,)``.
    trainable : bool, default True
        False freezes the layer's weights.
    dtype : str, optional
        Only ``None`` and ``"float32"`` are supported.
    batch_input_shape : tuple, optional
        Input shape with the batch axis first (the batch axis is dropped).
    activity_regularizer : str, dict or Regularizer, optional
        Penalty on the layer's output, added to the loss.
    **kwargs
        Any other keyword argument is an error.

    Raises
    ------
    TypeError
        For an unknown keyword argument or a name that is not a string.
    ValueError
        For a dtype other than float32, or both ``input_shape`` and
        ``input_dim`` given.
    """

    registry: dict = {}

    # instance attributes (set in __init__ and build; declared here so that type
    # checkers know them before they analyse __init__)
    name: str
    trainable: bool
    built: bool
    activity_regularizer: Any
    input_shape: Any             # per-sample shapes (tuples; lists for merge layers) once built
    output_shape: Any
    params: dict
    grads: dict
    state: dict
    offsets: dict
    _declared_input_shape: Any
    _ops: Any
    _fused_activation: Any
    _inbound_nodes: list

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        Layer.registry[cls.__name__] = cls
        user_build = cls.__dict__.get("build")
        if user_build is not None and not getattr(user_build, "_fg_wrapped", False):
            # a layer written as `call` (autodiff/traced.py): the engine's build(shape)
            # runs the user's build((None,) + shape) and one probe trace
            def build(self, input_shape, *a, _user=user_build, **k):
                if self._fg_traced() and not self.__dict__.get("_fg_in_user_build"):
                    from ..autodiff import traced
                    return traced.engine_build(self, input_shape, _user)
                return _user(self, input_shape, *a, **k)
            setattr(build, "_fg_wrapped", True)
            build.__doc__ = user_build.__doc__
            setattr(build, "__wrapped__", user_build)
            setattr(cls, "build", build)
        if cls.call is not Layer.call and getattr(cls, "lower", None) is None:
            # a traced layer whose program has a C kind (matmul + bias + activation:
            # the dense kind) runs on the compiled plan
            def lower(self, ctx):
                """Describe this traced layer as a node of the compiled C plan.

                Parameters
                ----------
                ctx : LowerContext
                    Codes, regularizer coefficients and trainability.

                Returns
                -------
                dict
                    The plan node; ``ctx.unsupported`` is raised when the
                    program has no C kind (the model then runs on Python).
                """
                from ..autodiff import traced
                return traced.lower(self, ctx)
            setattr(cls, "lower", lower)
        import inspect
        try:
            cls._forward_takes_mask = "mask" in inspect.signature(cls.forward).parameters
        except (TypeError, ValueError):
            cls._forward_takes_mask = False

    #: Keras masking (docs/sequence.md, "Masks"): True when the layer passes the mask of
    #: its input on to its output unchanged (element-wise layers, Dense, normalisation,
    #: Dropout) -- or, when it overrides ``compute_mask``, makes its own output mask. A layer
    #: CONSUMES a mask when its ``forward`` has a ``mask`` parameter (detected per class).
    supports_masking = False
    _forward_takes_mask = False

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        """Compute the mask of this layer's output (Keras's ``compute_mask``).

        Masks are boolean (batch, time) arrays at run time, or symbolic masks
        (``engine.graph.SymbolicTensor`` of dtype bool) while the model graph is
        built; None means no mask.

        Parameters
        ----------
        inputs : ndarray, SymbolicTensor or list
            The layer's input(s).
        mask : ndarray, SymbolicTensor, list or None, default None
            The mask of the input(s).

        Returns
        -------
        ndarray, SymbolicTensor or None
            The output mask. The default passes ``mask`` on when
            ``supports_masking`` is True and returns None otherwise.
        """
        return mask if self.supports_masking else None

    def __init__(self, name: str | None = None, input_shape: Any = None,
                 input_dim: int | None = None, trainable: bool = True, dtype: Any = None,
                 batch_input_shape: Any = None, activity_regularizer: Any = None,
                 **kwargs: Any) -> None:
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unexpected keyword argument(s) "
                            f"{', '.join(sorted(kwargs))}")
        if dtype not in (None, "float32", np.float32):
            raise ValueError(f"{type(self).__name__}: only dtype float32 is supported, got {dtype!r}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"{type(self).__name__}: name must be a string, got {name!r}")
        self.name = name or _unique_name(_snake(type(self).__name__))
        if input_dim is not None:
            if input_shape is not None:
                raise ValueError(f"{self.name}: give input_shape or input_dim, not both")
            input_shape = (input_dim,)
        if batch_input_shape is not None and input_shape is None:
            input_shape = tuple(batch_input_shape)[1:]
        self._declared_input_shape = _as_shape(input_shape, f"{self.name}: input_shape")
        self.trainable = bool(trainable)
        from .. import regularizers as _regularizers
        # Keras: regularizer(output) / batch size joins the loss (engine/step.py); the
        # compiled plan has no C path for it (the model trains on the Python step)
        self.activity_regularizer = _regularizers.get(activity_regularizer,
                                                      f"{self.name}: activity_regularizer")
        self.built = False
        # per-sample shapes (tuples; lists of tuples for merge layers) once built
        self.input_shape = None
        self.output_shape = None
        self.params = {}
        self.grads = {}
        self.state = {}
        self.offsets = {}           # param name -> offset (float32 elements) in the flat buffer
        self._ops = None
        self._fused_activation = None
        self._inbound_nodes = []    # engine.graph.Node per symbolic call

    # ------------------------------------------------------------------ ops
    @property
    def ops(self) -> Any:
        """The backend ``Ops`` object this layer computes with."""
        ops = self._ops
        if ops is None:
            from .. import _config
            ops = _config.get_ops()
        return ops

    @ops.setter
    def ops(self, value: Any) -> None:
        self._ops = value

    # ------------------------------------------------------------------ traced layers
    def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
        """Compute the layer's output with ``fastgrad.math`` and other layers.

        A subclass that defines ``call`` is traced and its gradient derived
        (see docs/autodiff.md). Built-in layers implement ``forward`` and
        ``backward`` instead.

        Parameters
        ----------
        inputs : tensor or list of tensors
            The layer's input(s).
        training : bool, optional
            True in training mode (Dropout and BatchNormalization behave
            differently).
        mask : tensor, optional
            The input's mask.

        Returns
        -------
        tensor
            The layer's output.

        Raises
        ------
        NotImplementedError
            In the base class.
        """
        raise NotImplementedError(f"{type(self).__name__}.call")

    @classmethod
    def _fg_is_traced_class(cls) -> bool:
        return cls.call is not Layer.call

    def _fg_traced(self) -> bool:
        return type(self).call is not Layer.call

    def _fg_owner(self):
        """The object whose attributes hold the sub-layers (self)."""
        return self

    def _fg_call_fn(self):
        return self.call

    def add_weight(self, shape: Any = None, initializer: Any = None, regularizer: Any = None,
                   trainable: bool = True, name: str | None = None, dtype: Any = None,
                   constraint: Any = None, **kwargs: Any) -> Any:
        """Declare a weight of this layer (Keras's ``add_weight``).

        Called in ``build`` (or ``__init__``) of a layer written with ``call``.
        Trainable weights live in the model's flat buffer, non-trainable ones
        with the layer's state.

        Parameters
        ----------
        shape : tuple of int, optional
            Shape of the weight (default: a scalar).
        initializer : str, dict or callable, optional
            Initializer (default ``"glorot_uniform"``).
        regularizer : str, dict or Regularizer, optional
            Penalty added to the loss.
        trainable : bool, default True
            False makes a non-trainable (state) weight.
        name : str, optional
            Weight name within the layer.
        dtype : str, optional
            Only float32 is supported.
        constraint : optional
            Accepted for Keras compatibility.
        **kwargs
            Any other keyword argument is an error.

        Returns
        -------
        Variable
            The weight.

        Raises
        ------
        TypeError
            For an unknown keyword argument.
        """
        if kwargs:
            raise TypeError(f"{self.name}: add_weight: unexpected keyword argument(s) "
                            f"{', '.join(sorted(kwargs))}")
        from ..autodiff import traced
        return traced.add_weight(self, shape, initializer, regularizer, trainable, name, dtype,
                                 constraint)

    @property
    def trainable_weights(self) -> list:
        """The trainable weights as fg.Variables (views into the flat buffer)."""
        from ..autodiff import traced
        if not self.built:
            return []
        return [v for v in traced.layer_variables(self) if self.trainable]

    @property
    def trainable_variables(self) -> list:
        """The trainable weights as fg.Variables (same as ``trainable_weights``)."""
        return self.trainable_weights

    # ------------------------------------------------------------------ build
    def compute_output_shape(self, input_shape: Any) -> Any:
        """Compute the per-sample output shape for a per-sample input shape.

        Parameters
        ----------
        input_shape : tuple of int or list of tuples
            Input shape without the batch axis (a list for merge layers).

        Returns
        -------
        tuple of int
            Output shape without the batch axis. The default is the input
            shape; a layer written with ``call`` is built to find it.
        """
        if self._fg_traced():
            if not self.built:
                self.build(input_shape)
            return tuple(self.output_shape)
        return tuple(input_shape)

    def build(self, input_shape: Any) -> Any:
        """Validate the input shape and record the input and output shapes.

        Called once by the model (or at the first call on data).

        Parameters
        ----------
        input_shape : tuple of int or list of tuples
            Per-sample input shape (no batch axis); a list for merge layers.

        Returns
        -------
        tuple of int
            The per-sample output shape.

        Raises
        ------
        ValueError
            When the shape does not suit the layer.
        """
        if self._fg_traced():
            if self.__dict__.get("_fg_in_user_build"):
                return None                  # super().build(input_shape) in a user's build
            from ..autodiff import traced
            return traced.engine_build(self, input_shape, None)
        if self._multi_input and isinstance(input_shape, list):
            input_shape = [_as_shape(s, f"{self.name}: input shape") for s in input_shape]
        else:
            input_shape = _as_shape(input_shape, f"{self.name}: input shape")
        out = tuple(self.compute_output_shape(input_shape))
        self.input_shape = input_shape
        self.output_shape = out
        self.built = True
        return out

    def param_specs(self) -> list:
        """List the layer's trainable parameters (after ``build``).

        Returns
        -------
        list of ParamSpec
            The trainable parameters in Keras weight order.
        """
        if "_fg_specs" in self.__dict__ or "_fg_subs" in self.__dict__:
            from ..autodiff import traced
            return traced.param_specs(self)
        return []

    def state_specs(self) -> list:
        """List the layer's non-trainable arrays (after ``build``).

        Returns
        -------
        list of StateSpec
            The non-trainable arrays in Keras weight order.
        """
        if "_fg_specs" in self.__dict__ or "_fg_subs" in self.__dict__:
            from ..autodiff import traced
            return traced.state_specs(self)
        return []

    def bind(self, params: dict, grads: dict, state: dict) -> None:
        """Attach the arrays the model allocated for this layer.

        Parameters
        ----------
        params : dict
            Name to parameter array (a view into the model's flat buffer).
        grads : dict
            Name to gradient array (a view into the gradient buffer).
        state : dict
            Name to non-trainable array.
        """
        if "_fg_specs" in self.__dict__ or "_fg_subs" in self.__dict__:
            from ..autodiff import traced
            traced.bind(self, params, grads, state)
            return
        self.params = params
        self.grads = grads
        self.state = state

    def reset_rng(self, seed: int) -> None:
        """Reseed the layer's random streams (the default does nothing).

        Parameters
        ----------
        seed : int
            Seed the streams are derived from.
        """

    def count_params(self) -> int:
        """Count the layer's weights (trainable and non-trainable).

        Returns
        -------
        int
            Number of scalars in all the layer's weights.

        Raises
        ------
        ValueError
            When the layer is not built.
        """
        if not self.built:
            raise ValueError(f"{self.name}: count_params() needs a built layer "
                             "(give input_shape or call the model on data first)")
        return int(sum(int(np.prod(s.shape)) for s in self.param_specs()) +
                   sum(int(np.prod(s.shape)) for s in self.state_specs()))

    # ------------------------------------------------------------------ compute
    def forward(self, x: Any, training: bool, ws: Any) -> Any:
        """Compute the layer's output for a batch.

        Parameters
        ----------
        x : ndarray or list of ndarray
            float32, C-contiguous input of shape (batch, ...) (a list for
            merge layers).
        training : bool
            True in training mode.
        ws : Workspace
            This layer's workspace for the current batch size; it keeps what
            ``backward`` needs.

        Returns
        -------
        ndarray
            The output (a workspace array, valid until the next forward with
            the same batch size).

        Raises
        ------
        NotImplementedError
            In the base class, for a layer without ``call``.
        """
        if self._fg_traced():
            from ..autodiff import traced
            return traced.forward(self, x, training, ws)
        raise NotImplementedError(f"{type(self).__name__}.forward: a layer implements "
                                  "call() (traced, gradient derived) or forward()/backward()")

    def backward(self, dy: Any, ws: Any, need_dx: bool = True) -> Any:
        """Propagate the gradient of the loss back through the layer.

        Writes the parameter gradients into ``self.grads``.

        Parameters
        ----------
        dy : ndarray
            Gradient with respect to the layer's output (may be overwritten).
        ws : Workspace
            The workspace ``forward`` used.
        need_dx : bool, default True
            False when the caller does not need the input gradient.

        Returns
        -------
        ndarray, list of ndarray or None
            Gradient with respect to the input(s), or None when ``need_dx``
            is False.

        Raises
        ------
        NotImplementedError
            In the base class, for a layer without ``call``.
        """
        if self._fg_traced():
            from ..autodiff import traced
            return traced.backward(self, dy, ws, need_dx)
        raise NotImplementedError(f"{type(self).__name__}.backward")

    #: True for layers called on a list of tensors (merge layers): build /
    #: compute_output_shape / forward get lists, backward returns a list
    _multi_input = False

    def _eager_inputs(self, inputs):
        """The arrays an eager call runs on (float32, C-contiguous); Embedding overrides
        this to take integer token ids."""
        return np.ascontiguousarray(inputs, dtype=np.float32)

    def __call__(self, inputs: Any, training: bool | None = None, mask: Any = None,
                 **kwargs: Any) -> Any:
        """Apply the layer to symbolic tensors or to arrays.

        On symbolic tensors (``fg.Input``, another layer's output) this adds a
        node to the model graph and returns its output tensor (the functional
        API). On arrays it runs ``forward`` eagerly with a throw-away workspace;
        the layer is built from the arrays' per-sample shapes first if needed.

        Parameters
        ----------
        inputs : array_like, SymbolicTensor or list
            The input(s); a list for merge layers.
        training : bool, optional
            Training mode for an eager call (default False).
        mask : array_like or SymbolicTensor, optional
            The input's mask (docs/sequence.md); by default the one the input
            carries (``inputs._keras_mask``, set by ``Embedding(mask_zero=True)``,
            ``Masking`` and the layers that propagate masks).
        **kwargs
            Any other keyword argument is an error.

        Returns
        -------
        ndarray or SymbolicTensor
            The output; a ``MaskedArray`` when an eager output has a mask.

        Raises
        ------
        TypeError
            For an unknown keyword argument or mixed symbolic and array inputs.
        ValueError
            When the inputs do not match the shape the layer was built for.
        """
        from ..engine import graph as _graph
        from ..autodiff import core as _ad
        if kwargs:
            raise TypeError(f"{self.name}: unexpected keyword argument(s) "
                            f"{', '.join(sorted(kwargs))} in the call")
        if self._fg_traced() and isinstance(inputs, (list, tuple)) and not self._multi_input \
                and not self.built:
            self._multi_input = True
        if _ad._TRACERS and _has(inputs, _ad.TraceTensor):
            from ..autodiff import traced
            return traced.call_in_trace(self, inputs, training, _ad._TRACERS[-1])
        if _graph.is_symbolic(inputs):
            return self._call_symbolic(inputs, mask)
        if training is None:
            training = False
        from ..engine.workspace import Workspace
        multi = self._multi_input
        if _ad._TAPES and any(t._recording for t in _ad._TAPES):
            from ..autodiff import traced
            xs = list(inputs) if multi else [inputs]
            arrs = [traced._f32(x.value if isinstance(x, _ad.Variable) else x) for x in xs]
            traced.ensure_built(self, arrs)
            return traced.eager_call_on_tape(self, xs, training)
        if multi:
            inputs = [x.value if isinstance(x, _ad.Variable) else x for x in inputs] \
                if isinstance(inputs, (list, tuple)) else inputs
        elif isinstance(inputs, _ad.Variable):
            inputs = inputs.value
        if multi:
            if isinstance(inputs, np.ndarray) or not isinstance(inputs, (list, tuple)):
                got = (f"one array of shape {inputs.shape}" if isinstance(inputs, np.ndarray)
                       else type(inputs).__name__)
                raise ValueError(f"{type(self).__name__} layer {self.name!r} should be called on "
                                 f"a list of inputs; got {got}")
            if mask is None:
                mask = [getattr(x, "_keras_mask", None) for x in inputs]
            xs = [self._eager_inputs(x) for x in inputs]
        else:
            if mask is None:
                mask = getattr(inputs, "_keras_mask", None)
            xs = [self._eager_inputs(inputs)]
        if any(x.ndim < 1 for x in xs):
            raise ValueError(f"{type(self).__name__} layer {self.name!r}: inputs need a batch "
                             f"axis; got shapes {[x.shape for x in xs]}")
        shapes = [tuple(x.shape[1:]) for x in xs]
        shape = shapes if multi else shapes[0]
        if not self.built:
            self.build(shape)
            if self.param_specs() or self.state_specs():
                # weights of a layer used on its own (Keras builds them at the first call);
                # a model that takes the layer later starts from them
                from ..engine.params import ParamStore
                from .. import _config
                ParamStore([self], fresh=True).initialize()
                self.reset_rng(_config.next_seed())
        else:
            cur = [tuple(s) for s in self.input_shape] if multi else tuple(self.input_shape)
            if cur != shape:
                raise ValueError(f"{type(self).__name__} layer {self.name!r} was built for input "
                                 f"shape {cur}, called on {shape} (batch axis excluded)")
        x_in = xs if multi else xs[0]
        mask = _check_masks(self, mask, xs, multi)
        forward: Any = self.forward     # a layer that consumes masks takes mask=
        if self._forward_takes_mask:
            y = forward(x_in, training, Workspace(), mask=mask)
        else:
            y = forward(x_in, training, Workspace())
        y = np.array(y, copy=True)
        out_mask = self.compute_mask(x_in, mask)
        if out_mask is not None:
            ym = y.view(MaskedArray)
            ym._keras_mask = np.asarray(out_mask, dtype=bool)
            return ym
        return y

    def _call_symbolic(self, inputs, mask=None):
        from ..engine.graph import Node, SymbolicTensor
        if self._multi_input:
            if not isinstance(inputs, (list, tuple)):
                raise TypeError(f"{type(self).__name__} {self.name}: expects a list of tensors, "
                                f"got {type(inputs).__name__}")
            ts = list(inputs)
        else:
            if isinstance(inputs, (list, tuple)):
                if len(inputs) != 1:
                    raise TypeError(f"{type(self).__name__} {self.name}: takes one input tensor, "
                                    f"got a list of {len(inputs)}")
                inputs = inputs[0]
            ts = [inputs]
        for t in ts:
            if not isinstance(t, SymbolicTensor):
                raise TypeError(f"{self.name}: cannot mix symbolic tensors and "
                                f"{type(t).__name__} in one call")
        shapes = [tuple(t.shape[1:]) for t in ts]
        arg = shapes if self._multi_input else shapes[0]
        if not self.built:
            out = self.build(arg)
        else:
            cur = [tuple(s) for s in self.input_shape] if self._multi_input else \
                tuple(self.input_shape)
            want = [tuple(s) for s in arg] if self._multi_input else tuple(arg)
            if cur != want:
                fmt = (lambda s: str([(None,) + tuple(x) for x in s])) if self._multi_input \
                    else (lambda s: str((None,) + tuple(s)))
                raise ValueError(f"{type(self).__name__} {self.name}: this layer was built for "
                                 f"input shape {fmt(cur)} and is now called on {fmt(want)}; a "
                                 "shared layer needs the same input shape at every call")
            out = self.output_shape
        batch = ts[0].shape[0] if all(t.shape[0] == ts[0].shape[0] for t in ts) else None
        # masks: the explicit `mask` argument, else the masks the inputs carry
        if mask is None:
            masks = [t._keras_mask for t in ts]
        else:
            masks = list(mask) if self._multi_input else [mask]
            if len(masks) != len(ts):
                raise ValueError(f"{type(self).__name__} {self.name}: mask is a list of "
                                 f"{len(masks)}, the layer takes {len(ts)} inputs")
        for t, m in zip(ts, masks):
            if m is None:
                continue
            if not isinstance(m, SymbolicTensor) or m._mask_of is None:
                raise TypeError(f"{type(self).__name__} {self.name}: a symbolic call's mask must "
                                "be a tensor's symbolic mask (tensor._keras_mask, made by "
                                f"Embedding(mask_zero=True), Masking, ...), got {m!r}")
            _check_mask_shape(self, m.shape, t.shape)
        node = Node(self, ts, self._multi_input, out, batch)
        attach_masks(self, node, masks)
        return node.output

    @property
    def output(self) -> Any:
        """The output tensor of this layer's single call (Keras `layer.output`)."""
        return self._single_node("output").output

    @property
    def input(self) -> Any:
        """The input tensor(s) of this layer's single call (Keras ``layer.input``)."""
        n = self._single_node("input")
        return n.inputs if n.multi else (n.inputs[0] if n.inputs else n.output)

    def _single_node(self, what):
        if not self._inbound_nodes:
            raise AttributeError(f"layer {self.name!r} has never been called on a symbolic "
                                 f"tensor, so it has no {what}")
        return self._inbound_nodes[0]

    # ------------------------------------------------------------------ fusion
    def split_output_activation(self) -> str | None:
        """Make the layer emit logits instead of probabilities.

        Returns
        -------
        str or None
            The name of the removed activation, or None if this layer has no
            fusable output activation.
        """
        return None

    def merge_output_activation(self) -> None:
        """Undo split_output_activation()."""
        self._fused_activation = None

    # ------------------------------------------------------------------ weights
    def get_weights(self) -> list:
        """Return copies of this layer's weights.

        Returns
        -------
        list of ndarray
            The parameters, then the state arrays, in Keras order.
        """
        return [np.array(w, copy=True) for w in self.weights]

    @property
    def weights(self) -> list:
        """The layer's weight arrays (views, not copies), in Keras order."""
        if "_fg_all" in self.__dict__:
            from ..autodiff import traced
            return traced.all_weights(self)
        return ([self.params[s.name] for s in self.param_specs()] +
                [self.state[s.name] for s in self.state_specs()])

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict:
        """Return the layer's hyper-parameters.

        Returns
        -------
        dict
            JSON-friendly configuration; ``from_config`` rebuilds an
            equivalent (unbuilt) layer from it.
        """
        cfg = {"name": self.name, "trainable": self.trainable}
        if getattr(self, "activity_regularizer", None) is not None:
            from .. import regularizers as _regularizers
            cfg["activity_regularizer"] = _regularizers.serialize(self.activity_regularizer)
        if self._declared_input_shape is not None:
            cfg["input_shape"] = list(self._declared_input_shape)
        return cfg

    @classmethod
    def from_config(cls, config: dict) -> Any:
        """Create a layer from its configuration.

        Parameters
        ----------
        config : dict
            The output of ``get_config``.

        Returns
        -------
        Layer
            A new, unbuilt layer.
        """
        cfg = dict(config)
        if cfg.get("input_shape") is not None:
            cfg["input_shape"] = tuple(cfg["input_shape"])
        return cls(**cfg)

    def describe(self) -> dict:
        """Describe the layer as plain data.

        Returns
        -------
        dict
            Kind, class, name, shapes, trainability and each weight's offset
            and shape in the flat buffer.
        """
        d = {
            "kind": _snake(type(self).__name__),
            "class": type(self).__name__,
            "name": self.name,
            "input_shape": self.input_shape,
            "output_shape": self.output_shape,
            "trainable": self.trainable,
            "params": {s.name: {"offset": self.offsets.get(s.name), "shape": tuple(s.shape)}
                       for s in self.param_specs()} if self.built else {},
            "state": {s.name: {"shape": tuple(s.shape)} for s in self.state_specs()}
            if self.built else {},
        }
        return d

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"


def _has(x: Any, cls: Any) -> bool:
    if isinstance(x, cls):
        return True
    if isinstance(x, (list, tuple)):
        return any(isinstance(t, cls) for t in x)
    return False


def get_layer_class(name: str) -> Any:
    """Look up a layer class by its class name.

    Parameters
    ----------
    name : str
        Class name, e.g. ``"Dense"``.

    Returns
    -------
    type
        The registered ``Layer`` subclass.

    Raises
    ------
    ValueError
        When no layer class has that name.
    """
    try:
        return Layer.registry[name]
    except KeyError:
        raise ValueError(f"unknown layer class {name!r}; known: "
                         f"{', '.join(sorted(Layer.registry))}") from None


def deserialize_layer(d: dict) -> Layer:
    """Rebuild a layer from its serialized form.

    Parameters
    ----------
    d : dict
        ``{"class_name": ..., "config": ...}`` as written by
        ``fastgrad.layers.serialize``.

    Returns
    -------
    Layer
        A new, unbuilt layer.
    """
    return get_layer_class(d["class_name"]).from_config(d["config"])
