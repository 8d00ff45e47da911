"""Models: the functional ``Model`` (a graph of layer calls) and ``Sequential``
(a chain graph), with Keras's compile / fit / evaluate / predict::

    inputs = fg.Input(shape=(784,))
    h = fg.layers.Dense(128, activation="relu")(inputs)
    outputs = fg.layers.Dense(10, activation="softmax")(h)
    model = fg.Model(inputs, outputs)

How a model holds its memory and runs (engine/):

- the graph (engine/graph.py) orders the layer calls (nodes) and numbers the
  tensors (slots); a Sequential builds its chain graph when its input shape
  is known;
- a ParamStore lays every trainable parameter of every layer end to end in
  ONE float32 buffer (gradients in a twin buffer) and binds each layer to
  views into them; a shared layer has one set of views however often it is
  called;
- compile() resolves per output the loss, its weight and the metrics, and
  where a cross-entropy on probabilities meets an output layer ending in the
  matching softmax / sigmoid, moves that activation into the loss (fused,
  stable kernels on the logits; predict re-applies it);
- fit/evaluate/predict validate and convert the data ONCE per call
  (engine/data.py), then ONE loop (here) drives an executor: the compiled C
  plan (engine/compiled.py) when the model has a C path, else the Python
  Step (engine/step.py). Both implement train / evaluate / predict over
  chunks of batches and give the same numbers (docs/architecture.md).

Input conversion: float64 (or float16) and non-contiguous x are converted to
C-contiguous float32 once per call, as Keras does; integer / bool / complex /
object x raise TypeError (cast explicitly).
"""
from __future__ import annotations

import functools
import math
import numbers
import time
import warnings
from typing import Any, Callable

import numpy as np

from . import _config
from . import _threads
from . import distribution as _distribution
from . import losses as _losses
from . import metrics as _metrics
from . import optimizers as _optimizers
from . import saving as _saving
from .engine import adapters as _adapters
from .engine import data as _data
from .engine.graph import Graph, GraphError, Node, SymbolicTensor, flatten_structure, is_symbolic
from .engine.params import ParamStore
from .engine.step import NonFiniteLossError, NonFiniteParametersError, Step
from .engine.interrupt import deferred_sigint
from .layers.base import Layer, attach_masks
from .layers.core import InputLayer

_F32 = np.dtype(np.float32)

__all__ = ["Sequential", "Model", "load_model", "load_keras", "clone_model", "model_from_json", "NotCompiledError"]

#: seconds of training per executor call when only the progress bar listens to batches
_PROGBAR_CHUNK_S = 0.05

#: changes of any layer's output-activation fusion (Model._claim_fusion)
_FUSION_EPOCH = [0]


class _CompiledHook:
    """engine.compiled, imported only once the native backend is in use (so the
    NumPy backend never loads the extension modules); kept once imported, as
    inference_plan is on predict_on_batch's per-call path."""

    _mod = None

    @classmethod
    def _module(cls):
        if cls._mod is None:
            from .engine import compiled
            cls._mod = compiled
        return cls._mod

    def train_plan(self, model):
        if _config.get_backend() != "native":
            return None
        return self._module().train_plan(model)

    def inference_plan(self, model):
        backend = _config.get_backend()
        if backend != "native":
            return None
        return self._module().inference_plan(model, backend)


_compiled = _CompiledHook()


def _blas_limited(method):
    """Run `method` under _config.blas_thread_limit() (NumPy backend only)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with _config.blas_thread_limit():
            return method(self, *args, **kwargs)
    return wrapper


class NotCompiledError(RuntimeError, ValueError):
    """Raised by fit, evaluate and the batch methods before ``compile``."""


def _unique_model_name(base="sequential", _counts={}):
    n = _counts.get(base, 0)
    _counts[base] = n + 1
    return base if n == 0 else f"{base}_{n}"


def _copy_metric(m):
    return type(m).from_config(m.get_config())


class Model:
    """A model: a graph of layer calls from inputs to outputs (Keras's functional API).

    Build the graph by calling layers on ``fg.Input`` tensors, then wrap it:
    ``fg.Model(inputs, outputs)``. A subclass that defines ``call`` (layers
    created in ``__init__``) is a subclassed model: it is traced at its first
    call and its gradient derived (docs/autodiff.md). All trainable parameters
    live in one contiguous float32 buffer.

    Parameters
    ----------
    inputs : SymbolicTensor, list or dict of them
        The model's inputs (from ``fg.Input``).
    outputs : SymbolicTensor, list or dict of them
        The model's outputs; ``predict`` returns the same structure.
    name : str, optional
        Model name (default ``functional``, made unique).
    trainable : bool, default True
        False freezes every layer.
    **kwargs
        Any other keyword argument is an error.

    Raises
    ------
    TypeError
        For an unknown keyword argument, a name that is not a string, or only
        one of ``inputs`` and ``outputs``.
    GraphError
        When the outputs are not reachable from the inputs.

    Examples
    --------
    >>> import numpy as np
    >>> import fastgrad as fg
    >>> inputs = fg.Input(shape=(4,))
    >>> h = fg.layers.Dense(8, activation="relu")(inputs)
    >>> outputs = fg.layers.Dense(1)(h)
    >>> model = fg.Model(inputs, outputs)
    >>> model.count_params()
    49
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> x = np.zeros((10, 4), dtype=np.float32)
    >>> model.predict(x).shape
    (10, 1)
    """

    registry = _saving.MODEL_CLASSES       # class name -> model class (load_model)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        _saving.register_model_class(cls)

    def __init__(self, inputs: Any = None, outputs: Any = None, name: str | None = None,
                 trainable: bool = True, **kwargs: Any) -> None:
        if kwargs:
            raise TypeError(f"Model: unexpected keyword argument(s) {', '.join(sorted(kwargs))}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"{type(self).__name__}: name must be a string, got {name!r}")
        self._init_state(name or _unique_model_name("functional" if type(self) is Model
                                                    else _snake(type(self).__name__)))
        self._fg_call_layer: Any = None
        if inputs is None and outputs is None and type(self) is not Model and \
                type(self).call is not Model.call:
            # a subclassed model (layers in __init__, computation in call): one traced node
            from .autodiff.subclass import ModelCall
            self._fg_call_layer = ModelCall(self)
        elif type(self) is Model or inputs is not None or outputs is not None:
            if inputs is None or outputs is None:
                raise TypeError("Model: give inputs and outputs, e.g. fg.Model(inputs, outputs) "
                                "with tensors from fg.Input(...) and layer calls")
            self._init_graph(inputs, outputs)
        if not trainable:
            self.trainable = False

    def _init_state(self, name: str) -> None:
        self.name = name
        self._graph: Any = None
        self._layers: list = []
        self._input_kind: str = "single"
        self._input_keys: Any = None
        self._output_kind: str = "single"
        self._output_keys: Any = None
        self.built = False
        self.compiled = False
        self.optimizer: Any = None
        self.loss: Any = None
        self._losses: list = []      # per output: Loss or None
        self._loss_weights: list = []  # per output: float
        self.metrics: list = []
        self._metric_output: list = []     # per metric: output index
        self._metric_weighted: list = []   # per metric: honours sample/class weights
        self._metric_specs: Any = None
        self._compile_args: Any = None
        self._metrics_resolved = False
        self._output_activations: list = []  # per output: activation moved into the loss, or None
        self._fused_layers: list = []
        self._fusion_epoch = -1
        self._store: Any = None
        self._step: Any = None
        self.stop_training = False
        self.history: Any = None
        self._trainable = True

    @property
    def trainable(self) -> bool:
        """Whether the model's layers are trainable.

        Setting ``model.trainable = False`` freezes every layer of the model and
        True unfreezes them all (as in Keras, the flag propagates to the layers),
        e.g. to freeze a trained base under a new head.
        """
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        """`model.trainable = False` freezes every layer of the model, True unfreezes
        them all (Keras: the flag propagates to the layers), e.g. to freeze a
        trained base under a new head: ``base.trainable = False``."""
        self._trainable = bool(value)
        for layer in self.layers:
            layer.trainable = self._trainable

    # ================================================================== structure
    def _init_graph(self, inputs, outputs):
        ins, self._input_kind, self._input_keys = flatten_structure(inputs, f"{self.name}: inputs")
        outs, self._output_kind, self._output_keys = flatten_structure(outputs,
                                                                       f"{self.name}: outputs")
        self._set_graph(Graph(ins, outs, owner=f"Model {self.name!r}"))
        self._layers = list(self._graph.all_layers)
        self._build_store(fresh=False)

    def _set_graph(self, graph):
        self._graph = graph

    def _build_store(self, fresh):
        self._release_fusion()
        self._store = ParamStore(self._graph.layers, fresh=fresh)
        self._store.initialize()
        self._store.register(self)
        for layer in self._graph.layers:
            if not getattr(layer, "_rng_seeded", False) or fresh:
                layer.reset_rng(_config.next_seed())
                layer._rng_seeded = True
        self.built = True
        if self.compiled:
            self._setup_loss_fusion()
            self.optimizer.build(self._store.size)
        self._step = None

    def _store_moved(self, old_root, new_root):
        """The root store holding this model's weights was re-laid out (another
        model joined new layers to them, engine/params.py): use a view of the
        new root, with the optimizer's slots moved to the new offsets."""
        old = self._store
        if old is None or old.root is not old_root:
            return
        self._store = ParamStore(self._graph.layers)
        self._store.register(self)
        self._step = None
        opt = self.optimizer
        if opt is not None and opt.slots and opt._n == old_root.size:
            from .engine.params import remap_flat
            inits = opt._active_slots()
            opt.slots = {k: remap_flat(v, old_root.entries, new_root.entries, new_root.size,
                                       inits.get(k) or 0.0) for k, v in opt.slots.items()}
            opt._n = new_root.size
            opt._views_cache = None

    @property
    def layers(self) -> list:
        """The layers in Keras's order.

        Merges made by Python's ``+ - *`` on symbolic tensors are graph
        operations and are not listed (as Keras 3's ops). A subclassed model lists
        the layers it holds as attributes.
        """
        cl = self.__dict__.get("_fg_call_layer")
        if cl is not None:
            from .autodiff import traced
            return cl.__dict__.get("_fg_subs") or traced.tracked_sublayers(cl)
        return [l for l in self._layers if not getattr(l, "_operator", False)]

    # ================================================================== subclassing / tapes
    def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
        """Compute a subclassed model's output (override it; docs/autodiff.md).

        Parameters
        ----------
        inputs : tensor or list of tensors
            The model's input(s).
        training : bool, optional
            Training mode.
        mask : tensor, optional
            The input mask.

        Returns
        -------
        tensor
            The model's output.

        Raises
        ------
        NotImplementedError
            In the base class.
        """
        raise NotImplementedError(f"{type(self).__name__}.call")

    def add_weight(self, *args: Any, **kwargs: Any) -> Any:
        """Declare a weight of a subclassed model itself (Keras's ``Model.add_weight``).

        Parameters
        ----------
        *args
            As ``Layer.add_weight``.
        **kwargs
            As ``Layer.add_weight``.

        Returns
        -------
        Variable
            The weight.

        Raises
        ------
        TypeError
            For a model that does not define ``call``.
        """
        cl = self.__dict__.get("_fg_call_layer")
        if cl is None:
            raise TypeError(f"{self.name}: add_weight is for subclassed models (define call)")
        return cl.add_weight(*args, **kwargs)

    def _fg_build_subclass(self, shape):
        shape = tuple(shape)
        if shape and shape[0] is None:
            shape = shape[1:]
        inp = InputLayer(input_shape=shape, name=f"{self.name}_input")
        out = self._fg_call_layer(inp.output)
        self._set_graph(Graph([inp.output], [out], owner=f"Model {self.name!r}"))
        self._layers = list(self._graph.all_layers)
        self._build_store(fresh=False)

    def _tape_call(self, inputs, training):
        from .autodiff import subclass
        return subclass.model_tape_call(self, inputs, training)

    @property
    def inputs(self) -> list | None:
        """The input tensors (a list), or None before the model has a graph."""
        return list(self._graph.inputs) if self._graph is not None else None

    @property
    def outputs(self) -> list | None:
        """The output tensors (a list), or None before the model has a graph."""
        return list(self._graph.outputs) if self._graph is not None else None

    @property
    def input(self) -> Any:
        """The input tensor(s) in the structure given to the constructor."""
        ins = self.inputs
        if ins is None:
            raise AttributeError(f"{self.name}: the model has no inputs yet (not built)")
        if self._input_kind == "dict":
            return dict(zip(self._input_keys, ins))
        return ins[0] if self._input_kind == "single" else ins

    @property
    def output(self) -> Any:
        """The output tensor(s) in the structure given to the constructor."""
        outs = self.outputs
        if outs is None:
            raise AttributeError(f"{self.name}: the model has no outputs yet (not built)")
        if self._output_kind == "dict":
            return dict(zip(self._output_keys, outs))
        return outs[0] if self._output_kind == "single" else outs

    @property
    def input_names(self) -> list:
        """The names of the inputs (dict keys, or the input layers' names)."""
        if self._input_keys is not None:
            return list(self._input_keys)
        return [l.name for l in self._graph.input_layers] if self._graph else []

    @property
    def output_names(self) -> list:
        """The names of the outputs (dict keys, or the output layers' names)."""
        if self._output_keys is not None:
            return list(self._output_keys)
        return [t._node.layer.name for t in self._graph.outputs] if self._graph else []

    @property
    def n_outputs(self) -> int:
        """The number of outputs."""
        return len(self._graph.outputs) if self._graph is not None else 1

    @property
    def input_shape(self) -> Any:
        """The input shape with the batch axis (a list for several inputs), or None."""
        if self._graph is None:
            return None
        shapes = [tuple(t.shape) for t in self._graph.inputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def output_shape(self) -> Any:
        """The output shape with the batch axis (a list for several outputs), or None."""
        if self._graph is None:
            return None
        shapes = [tuple(t.shape) for t in self._graph.outputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def _input_shapes(self):
        return [tuple(t.shape[1:]) for t in self._graph.inputs]

    @property
    def _output_shapes(self):
        return [tuple(t.shape[1:]) for t in self._graph.outputs]

    def reset_states(self) -> None:
        """Reset the carried states of the stateful recurrent layers.

        Keras's ``model.reset_state()``: calls each layer's ``reset_states()``.
        """
        for layer in self.layers:
            fn = getattr(layer, "reset_states", None)
            if callable(fn):
                fn()

    reset_state = reset_states

    def get_layer(self, name: str | None = None, index: int | None = None) -> Layer:
        """Return a layer by name or by index.

        Parameters
        ----------
        name : str, optional
            The layer's name.
        index : int, optional
            The layer's position in ``model.layers``.

        Returns
        -------
        Layer
            The layer.

        Raises
        ------
        ValueError
            When not exactly one of ``name`` and ``index`` is given, or no layer
            matches.
        """
        layers = self.layers
        if (name is None) == (index is None):
            raise ValueError("get_layer: give exactly one of name or index")
        if index is not None:
            if not isinstance(index, (int, np.integer)) or not -len(layers) <= index < len(layers):
                raise ValueError(f"get_layer: index {index!r} out of range for "
                                 f"{len(layers)} layers")
            return layers[index]
        for layer in layers:
            if layer.name == name:
                return layer
        raise ValueError(f"get_layer: no layer named {name!r}; layers: "
                         f"{', '.join(l.name for l in layers)}")

    def build(self, input_shape: Any = None) -> None:
        """Build the model for an input shape.

        A functional model is built from its inputs; a subclassed model is built
        here (or at its first call).

        Parameters
        ----------
        input_shape : tuple, optional
            Input shape (a leading None batch axis is dropped).

        Raises
        ------
        ValueError
            When the shape is missing for a subclassed model, or for an unbuilt
            functional model.
        """
        if self.__dict__.get("_fg_call_layer") is not None:
            if not self.built:
                if input_shape is None:
                    raise ValueError(f"{self.name}: build needs the input shape")
                self._fg_build_subclass(input_shape)
            return
        if not self.built:
            raise ValueError(f"{self.name}: a functional model is built from its inputs")

    # ------------------------------------------------------------------ fusion
    # A fused output layer emits logits: that is state of the LAYER, which other
    # models may share (a sub-model over the same graph, a model calling this one
    # on new inputs, a new head). Each model re-asserts the state it needs before
    # it runs (_claim_fusion): its own fused layers split, every other layer of
    # its graph whole; _FUSION_EPOCH[0] counts changes, so the common case (no
    # other model touched them) costs one comparison.
    def _release_fusion(self):
        for layer in self._fused_layers:
            if layer is not None:
                layer.merge_output_activation()
        self._fused_layers = []
        self._output_activations = []
        _FUSION_EPOCH[0] += 1

    def _claim_fusion(self):
        if self._fusion_epoch == _FUSION_EPOCH[0] or self._graph is None:
            return
        mine = {id(l) for l in self._fused_layers if l is not None}
        for layer in self._graph.layers:
            split = getattr(layer, "_fused_activation", None) is not None
            if id(layer) in mine:
                if not split:
                    layer.split_output_activation()
            elif split:
                layer.merge_output_activation()
        _FUSION_EPOCH[0] += 1
        self._fusion_epoch = _FUSION_EPOCH[0]

    def _setup_loss_fusion(self):
        """Per output: move a softmax/sigmoid into a cross-entropy loss when the
        output's layer is called once and its output feeds nothing else."""
        self._release_fusion()
        g = self._graph
        acts: list = []
        fused: list = []
        out_count: dict = {}
        for s in g.output_slots:
            out_count[s] = out_count.get(s, 0) + 1
        for k, slot in enumerate(g.output_slots):
            loss = self._losses[k] if k < len(self._losses) else None
            act = None if loss is None else loss.fusable_activation
            layer = None
            if act is not None and slot >= g.n_inputs and out_count[slot] == 1 \
                    and not g.consumers[slot]:
                node = g.nodes[slot - g.n_inputs]
                cand = node.layer
                if len(g.nodes_of[id(cand)]) == 1 and all(l is not cand for l in fused) and \
                        getattr(cand, "_fused_activation", None) == act:
                    acts.append(act)             # already split for another model sharing it
                    fused.append(cand)
                    continue
                if len(g.nodes_of[id(cand)]) == 1 and getattr(cand, "_run_act", None) == act \
                        and all(l is not cand for l in fused):
                    removed = cand.split_output_activation()
                    if removed is not None:
                        layer = cand
                        acts.append(removed)
                        fused.append(cand)
                        continue
            acts.append(None)
            fused.append(None)
        self._output_activations = acts
        self._fused_layers = fused
        _FUSION_EPOCH[0] += 1
        self._fusion_epoch = _FUSION_EPOCH[0]

    @property
    def _output_activation(self):
        """The activation the loss took over on the (single) output, or None."""
        acts = self._output_activations
        return acts[0] if len(acts) == 1 else None

    @property
    def _fused_layer(self):
        f = self._fused_layers
        return f[0] if len(f) == 1 else None

    # ================================================================== compile
    def _per_output(self, spec, what, default=None, allow_single=True):
        """A compile argument given once, as a list or as a dict by output name,
        as one entry per output."""
        names = self.output_names
        k = len(names)
        if isinstance(spec, dict):
            unknown = [key for key in spec if key not in names]
            if unknown:
                raise ValueError(f"compile: {what} has keys {unknown} that are not output names "
                                 f"of {self.name} (outputs: {names})")
            return [spec.get(n, default) for n in names]
        if isinstance(spec, (list, tuple)) and k > 1:
            if len(spec) != k:
                raise ValueError(f"compile: {what} is a list of {len(spec)} but the model has "
                                 f"{k} outputs ({names}); give one entry per output or a dict")
            return list(spec)
        if isinstance(spec, (list, tuple)) and k == 1 and len(spec) == 1 and what == "loss":
            return list(spec)
        if not allow_single:
            raise ValueError(f"compile: {what} must be a list or dict for {k} outputs")
        return [spec] * k

    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, metrics: Any = None,
                loss_weights: Any = None, weighted_metrics: Any = None,
                run_eagerly: bool | None = None, steps_per_execution: int = 1,
                jit_compile: bool | None = None, **kwargs: Any) -> None:
        """Configure the model for training.

        As in Keras 3, ``metrics`` are unweighted (``sample_weight`` and
        ``class_weight`` do not affect them) and ``weighted_metrics`` use the
        sample weights; the loss is always weighted. A weighted metric whose name
        collides with an unweighted one is logged as ``"weighted_<name>"``. A
        cross-entropy on probabilities after a softmax / sigmoid output layer runs
        as one fused, stable kernel on the logits.

        Parameters
        ----------
        optimizer : str, dict or Optimizer, default "rmsprop"
            The optimizer, by name or as an object.
        loss : str, callable or Loss, or a list / dict of them, optional
            The loss; for several outputs a list, or a dict by output name.
        metrics : list or dict, optional
            Metric names or objects; per output a list of lists or a dict.
            ``"accuracy"`` is resolved from the loss.
        loss_weights : list or dict of float, optional
            Weights of the per-output losses: the total loss is
            ``sum_k w_k * loss_k``.
        weighted_metrics : list or dict, optional
            Metrics that use the sample weights.
        run_eagerly : bool, optional
            Accepted for Keras compatibility; unused.
        steps_per_execution : int, default 1
            Accepted for Keras compatibility; unused.
        jit_compile : bool, optional
            Accepted for Keras compatibility; unused.
        **kwargs
            Any other keyword argument is an error.

        Raises
        ------
        TypeError
            For an unknown keyword argument.
        ValueError
            For unknown optimizers, losses or metrics, or per-output arguments
            that do not match the outputs.
        """
        if kwargs:
            raise TypeError(f"compile: unexpected keyword argument(s) {', '.join(sorted(kwargs))}")
        opt = _optimizers.get(optimizer, "compile: optimizer")
        k = self._n_outputs_for_compile()
        if k == 1:
            if isinstance(loss, dict):
                vals = list(loss.values())
                if len(vals) != 1:
                    raise ValueError(f"compile: loss dict {list(loss)} for a model with one output")
                if self._graph is not None and list(loss)[0] not in self.output_names:
                    raise ValueError(f"compile: loss has key {list(loss)[0]!r}, which is not the "
                                     f"output name ({self.output_names})")
                loss = vals[0]
            elif isinstance(loss, (list, tuple)):
                if len(loss) != 1:
                    raise ValueError(f"compile: loss is a list of {len(loss)} but the model has "
                                     "one output")
                loss = loss[0]
            losses: list = [_losses.get(loss, "compile: loss")]
            if loss_weights is not None:
                lw = loss_weights
                if isinstance(lw, dict):
                    lw = list(lw.values())
                if isinstance(lw, (list, tuple)):
                    if len(lw) != 1:
                        raise ValueError(f"compile: loss_weights has {len(lw)} entries for one "
                                         "output")
                    lw = lw[0]
                weights = [self._check_weight(lw)]
            else:
                weights = [1.0]
        else:
            specs = self._per_output(loss, "loss", default=None)
            losses = [None if s is None else _losses.get(s, f"compile: loss for output "
                                                            f"{self.output_names[i]!r}")
                      for i, s in enumerate(specs)]
            if all(l is None for l in losses):
                raise ValueError(f"compile: no loss for any output of {self.name} "
                                 f"({self.output_names})")
            if loss_weights is None:
                weights = [1.0] * k
            else:
                weights = [self._check_weight(w) for w in
                           self._per_output(loss_weights, "loss_weights", default=1.0,
                                            allow_single=False)]
        plain = self._metric_lists(metrics, "metrics", k)
        weighted = self._metric_lists(weighted_metrics, "weighted_metrics", k)
        for lst in plain + weighted:       # fail now on unknown names
            for m in lst:
                if not (isinstance(m, str) and m.strip().lower() in ("accuracy", "acc")):
                    _metrics.get(m, "compile: metrics")
        self._release_fusion()
        self.optimizer = opt
        self._losses = losses
        self._loss_weights = weights
        self.loss = losses[0] if k == 1 else loss
        self._metric_specs = (plain, weighted)
        self._metric_weighted = ([False] * sum(map(len, plain)) +
                                 [True] * sum(map(len, weighted)))
        self._compile_args = {"loss": loss, "metrics": metrics, "weighted_metrics": weighted_metrics,
                              "loss_weights": loss_weights}
        self.metrics = []
        self._metric_output = []
        self._metrics_resolved = False
        self.compiled = True
        if self.built:
            self._setup_loss_fusion()
            self.optimizer.build(self._store.size)
        self._step = None

    def _n_outputs_for_compile(self):
        return len(self._graph.outputs) if self._graph is not None else 1

    @staticmethod
    def _check_weight(w):
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) or w < 0:
            raise ValueError(f"compile: loss weights must be finite numbers >= 0, got {w!r}")
        return float(w)

    def _metric_lists(self, spec, what, k):
        """Per output, the list of metric specs."""
        if spec is None:
            return [[] for _ in range(k)]
        if isinstance(spec, (str, _metrics.Metric)):
            spec = [spec]
        if isinstance(spec, dict):
            names = self.output_names
            unknown = [key for key in spec if key not in names]
            if unknown:
                raise ValueError(f"compile: {what} has keys {unknown} that are not output names "
                                 f"(outputs: {names})")
            out = []
            for n in names:
                v = spec.get(n)
                out.append([] if v is None else [v] if isinstance(v, (str, _metrics.Metric))
                           else list(v))
            return out
        if not isinstance(spec, (list, tuple)):
            raise TypeError(f"compile: {what} must be a list, got {type(spec).__name__}")
        spec = list(spec)
        if k > 1 and len(spec) == k:
            # one entry per output, as Keras 3 reads a list as long as the outputs
            # (["accuracy", "mae"]: accuracy on the first output, mae on the second)
            return [[] if s is None else list(s) if isinstance(s, (list, tuple)) else [s]
                    for s in spec]
        if k == 1:
            return [spec]
        # any other flat list: every metric on every output (each output its own copy;
        # Keras 3 refuses a list whose length is not the number of outputs)
        return [[_copy_metric(m) if isinstance(m, _metrics.Metric) and i else m for m in spec]
                for i in range(k)]

    def _resolve_metrics(self):
        if self._metrics_resolved:
            return
        plain, weighted = self._metric_specs if self._metric_specs else ([[]], [[]])
        k = self.n_outputs
        multi = k > 1
        names = self.output_names
        ms, outs, wflags = [], [], []
        for w_flag, per in ((False, plain), (True, weighted)):
            for i, specs in enumerate(per):
                loss = self._losses[i] if i < len(self._losses) else None
                if specs and loss is None:
                    raise ValueError(f"compile: output {names[i]!r} has metrics but no loss")
                y_sparse = loss is not None and loss.target_kind == "sparse"
                for s in specs:
                    m = _metrics.resolve(s, loss, self._output_shapes[i], y_sparse)
                    if multi:
                        m.name = f"{names[i]}_{m.name}"
                    ms.append(m)
                    outs.append(i)
                    wflags.append(w_flag)
        plain_names = {m.name for m, w in zip(ms, wflags) if not w}
        for m, w in zip(ms, wflags):
            if w and m.name in plain_names:
                m.name = "weighted_" + m.name     # Keras's name for a colliding weighted metric
        all_names = [m.name for m in ms]
        if len(set(all_names)) != len(all_names):
            raise ValueError(f"compile: metric names must be unique, got {all_names}")
        self.metrics, self._metric_output, self._metric_weighted = ms, outs, wflags
        self._metrics_resolved = True

    @property
    def _loss_names(self) -> list:
        """History names of the per-output losses (none for one output)."""
        if self.n_outputs == 1:
            return []
        return [f"{n}_loss" for n, l in zip(self.output_names, self._losses) if l is not None]

    @property
    def metrics_names(self) -> list:
        """The names of the logged values: ``loss``, the per-output losses, the metrics."""
        return ["loss"] + self._loss_names + [m.name for m in self.metrics]

    def _update_metrics(self, outs, ys, sws):
        """Update the compiled metrics from one or more batches: outs[k] the raw
        output k (logits where a fused loss took over the activation), ys[k],
        sws[k] its targets and sample weights. Both executors call this."""
        acts = self._output_activations
        ops = None
        for m, k, weighted in zip(self.metrics, self._metric_output, self._metric_weighted):
            w = sws[k] if weighted else None
            act = acts[k] if k < len(acts) else None
            if act is None:
                m.update_state(ys[k], outs[k], w)
            else:
                if ops is None:
                    ops = _config.get_ops()
                m.update_state_logits(ys[k], outs[k], act, w, ops)

    # ================================================================== data
    def _require_compiled(self, what):
        if not self.compiled:
            raise NotCompiledError(f"{what}: the model must be compiled first — call "
                                   "model.compile(optimizer=..., loss=...)")

    def _structure(self, data, names, kind_of, what, role):
        """`data` (one array, a list or a dict by name) as a list, one per name."""
        k = len(names)
        if isinstance(data, dict):
            missing = [n for n in names if n not in data]
            extra = [key for key in data if key not in names]
            if extra:
                raise ValueError(f"{what}: {role} has keys {extra} that are not {kind_of} names "
                                 f"of {self.name} ({names})")
            if missing and role == "x":
                raise ValueError(f"{what}: {role} has no entry for {kind_of} {missing[0]!r} "
                                 f"({kind_of}s: {names})")
            return [data.get(n) for n in names]
        if k == 1:
            if isinstance(data, (list, tuple)) and len(data) == 1 and \
                    isinstance(data[0], np.ndarray) and data[0].ndim >= 1:
                return [data[0]]
            return [data]
        if isinstance(data, (list, tuple)) and len(data) == k and \
                all(a is None or isinstance(a, np.ndarray) or hasattr(a, "__array__") or
                    isinstance(a, (list, tuple)) for a in data):
            return list(data)
        if role == "sample_weight" and data is not None:
            return [data] * k
        got = (f"a {type(data).__name__} of {len(data)}" if isinstance(data, (list, tuple))
               else type(data).__name__)
        raise ValueError(f"{what}: the model has {k} {kind_of}s ({names}); give {role} as a list "
                         f"of {k} arrays or a dict by name, got {got}")

    def _prepare_xs(self, x, what, finite=True):
        """The inputs as a list of validated float32 arrays, equal row counts."""
        if self._graph is None and getattr(self, "_pending", None) is None:
            raise ValueError(f"{what}: the model has no layers")
        names = self.input_names
        parts = self._structure(x, names, "input", what, "x")
        xs = []
        for i, (name, a, shape, dt) in enumerate(zip(names, parts, self._input_shapes,
                                                     self._input_dtypes())):
            label = what if len(names) == 1 else f"{what}: input {name!r}"
            xs.append(_data.as_x(a, label, shape, self._first_layer_name(name), finite, dt,
                                 ids=self._input_takes_ids(i)))
        n = xs[0].shape[0]
        for name, a in zip(names, xs):
            if a.shape[0] != n:
                raise ValueError(f"{what}: inputs have different numbers of samples: "
                                 + ", ".join(f"{nm!r} {b.shape[0]}" for nm, b in zip(names, xs)))
        return xs

    def _first_layer_name(self, input_name):
        return input_name

    def _input_consumers(self, i):
        g = self._graph
        if g is None:
            return []
        return [g.nodes[j].layer for j in g.consumers[i]]

    def _input_takes_ids(self, i):
        """Input i feeds only layers that take integer ids (Embedding)."""
        layers = self._input_consumers(i)
        return bool(layers) and all(getattr(l, "_takes_ids", False) for l in layers)

    def _input_layers(self):
        g = self._graph
        return list(getattr(g, "input_layers", None) or []) if g is not None else []

    def _input_dtypes(self):
        """Per input, the dtype its data is cast to (engine.data.cast_x): the
        declared `dtype` of the input layer (Input(dtype=...)) where it has one,
        else None (float32)."""
        layers = self._input_layers()
        k = len(self.input_names)
        if len(layers) != k:
            return [None] * k
        out = []
        for l in layers:
            dt = getattr(l, "dtype", None)
            out.append(None if dt is None or _data.input_dtype(dt) == np.float32 else dt)
        return out

    def _prepare_data(self, x, y, sample_weight, class_weight, what):
        """(ArrayData, n) with targets per output that has a loss."""
        xs = self._prepare_xs(x, what)
        n = xs[0].shape[0]
        k = self.n_outputs
        names = self.output_names
        if y is None:
            raise ValueError(f"{what}: y is required to compute the loss")
        yl = self._structure(y, names, "output", what, "y")
        swl = ([None] * k if sample_weight is None else
               self._structure(sample_weight, names, "output", what, "sample_weight"))
        if class_weight is not None and k > 1:
            raise ValueError(f"{what}: class_weight is only supported for models with one output; "
                             "use sample_weight per output")
        ys: list = []
        sws: list = []
        for i in range(k):
            loss = self._losses[i]
            label = what if k == 1 else f"{what}: output {names[i]!r}"
            if loss is None:
                ys.append(None)
                sws.append(None)
                continue
            if yl[i] is None:
                raise ValueError(f"{what}: no target for output {names[i]!r}, which has a loss")
            ya = _data.as_y(yl[i], loss, self._output_shapes[i], n, label)
            sw = _data.as_sample_weight(swl[i], n, label)
            cw = _data.class_weight_to_sample_weight(class_weight, ya, loss,
                                                     self._output_shapes[i], label)
            ys.append(ya)
            sws.append(_data.combine_weights(sw, cw))
        return _data.ArrayData(xs, ys, sws)

    # ================================================================== executors
    def _get_step(self):
        self._claim_fusion()
        flags = tuple(l.trainable for l in self._store.layers)
        if flags != self._store.trainable_flags:
            self._store.refresh_trainable()
        st = self._step
        if st is None or st.training != self.compiled:
            st = self._step = Step(self)
        st.set_ops(_config.get_ops())
        return st

    def _executor(self):
        """The compiled plan when the model has a C path, else the Python Step."""
        st = self._get_step()
        plan = _compiled.train_plan(self)
        return plan if plan is not None else st

    def _release(self):
        """Drop workspace references to the caller's arrays after a call."""
        st = self._step
        if st is not None:
            st.drop_refs()

    def _prepare_xy(self, x, y, sample_weight, class_weight, what):
        """(x, y, sample_weight) validated, for a one-input one-output model
        (tests and tools that drive an executor by hand)."""
        self._ensure_built_for(x, what)
        data = self._prepare_data(x, y, sample_weight, class_weight, what)
        self._finish_build()
        return data.xs[0], data.ys[0], data.sws[0]

    def _logs(self, loss_mean, prefix="", out_losses=None):
        logs = {prefix + "loss": loss_mean}
        if out_losses is not None:
            for name, v in zip(self._loss_names, out_losses):
                logs[prefix + name] = v
        for m in self.metrics:
            r = m.result()
            if type(r) is not float:
                r = float(r) if np.ndim(r) == 0 else r
            logs[prefix + m.name] = r
        return logs

    # ================================================================== fit
    @_blas_limited
    def fit(self, x: Any = None, y: Any = None, batch_size: int | None = 32, epochs: int = 1,
            verbose: int | str = 1, callbacks: Any = None, validation_split: float = 0.0,
            validation_data: Any = None, shuffle: bool = True, class_weight: dict | None = None,
            sample_weight: Any = None, initial_epoch: int = 0, steps_per_epoch: int | None = None,
            validation_steps: int | None = None, validation_batch_size: int | None = None,
            validation_freq: Any = 1) -> Any:
        """Train the model for a number of epochs.

        The data is validated and converted once; a loss that becomes NaN or inf
        raises ``NonFiniteLossError`` (a ``FloatingPointError``) naming the epoch
        and batch, with the parameters of the last good step.

        Parameters
        ----------
        x : array_like, list or dict of arrays, or a data stream
            Input data: one array for a one-input model, a list or a dict by input
            name for several inputs (pandas objects and torch tensors are read
            as arrays), or a stream of batches (a generator, an iterable or a
            ``fastgrad.utils.PyDataset``) yielding ``(x, y)`` or
            ``(x, y, sample_weight)``. float64 and non-contiguous arrays are
            converted to C-contiguous float32 once per call.
        y : array_like, list or dict of arrays, optional
            Targets, in the structure of the outputs (None with a stream).
        batch_size : int, default 32
            Number of samples per gradient step.
        epochs : int, default 1
            Index of the epoch to stop at (training runs from ``initial_epoch``).
        verbose : {0, 1, 2, "auto"}, default 1
            0 silent, 1 progress bar, 2 one line per epoch.
        callbacks : list of Callback, optional
            Callbacks called during training (``fastgrad.callbacks``).
        validation_split : float, default 0.0
            Fraction of the data (taken from the end, before shuffling) held out
            for validation.
        validation_data : tuple, optional
            ``(x_val, y_val)`` or ``(x_val, y_val, sample_weight_val)``, evaluated
            at the end of each epoch.
        shuffle : bool, default True
            Shuffle the samples before each epoch.
        class_weight : dict, optional
            Class index to weight, scaling the loss of each sample (one output).
        sample_weight : array_like, optional
            Per-sample loss weights.
        initial_epoch : int, default 0
            Epoch to start at (to resume a run).
        steps_per_epoch : int, optional
            Batches per epoch of a data stream.
        validation_steps : int, optional
            Batches of a validation stream per evaluation.
        validation_batch_size : int, optional
            Batch size of the validation (default ``batch_size``).
        validation_freq : int or list of int, default 1
            Validate every n epochs, or at the listed epochs (1-based).

        Returns
        -------
        History
            ``history.history`` holds per-epoch lists of ``"loss"``, the
            per-output losses, the metrics and their ``"val_"`` versions.

        Raises
        ------
        NotCompiledError
            When the model is not compiled.
        ValueError
            For invalid arguments or data that does not match the model.
        TypeError
            For integer, boolean, complex or object input data.
        NonFiniteLossError
            When the loss becomes NaN or inf.
        """
        what = "fit"
        self._require_compiled(what)
        # an OpenBLAS loaded since import (SciPy's) joins fastgrad's thread team too
        _threads.refresh_blas_share()
        batch_size = _data.check_batch_size(batch_size, what)
        if isinstance(epochs, bool) or not isinstance(epochs, (numbers.Integral, np.integer)) \
                or epochs < 0:
            raise ValueError(f"fit: epochs must be a non-negative integer, got {epochs!r}")
        if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, (numbers.Integral,
                                                                              np.integer)) \
                or initial_epoch < 0:
            raise ValueError(f"fit: initial_epoch must be a non-negative integer, got "
                             f"{initial_epoch!r}")
        if verbose == "auto":
            verbose = 1
        if verbose not in (0, 1, 2):
            raise ValueError(f"fit: verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
        if not isinstance(validation_split, numbers.Real) or not 0.0 <= float(validation_split) < 1.0:
            raise ValueError(f"fit: validation_split must be in [0, 1), got {validation_split!r}")
        stream_x = _adapters.is_stream(x)
        stream_val = validation_data is not None and _adapters.is_stream(validation_data)
        steps_per_epoch = _adapters.check_steps(steps_per_epoch, what, "steps_per_epoch")
        validation_steps = _adapters.check_steps(validation_steps, what, "validation_steps")
        if steps_per_epoch is not None and not stream_x:
            raise ValueError("fit: steps_per_epoch applies to a generator, iterator, PyDataset "
                             "or DataLoader x; with in-memory arrays leave it None (an epoch is "
                             "one pass over the arrays)")
        if validation_steps is not None and not stream_val:
            raise ValueError("fit: validation_steps applies to validation_data given as a "
                             "generator, iterator, PyDataset or DataLoader; leave it None")
        if shuffle not in (True, False, "batch"):
            raise ValueError(f"fit: shuffle must be True or False, got {shuffle!r}")
        val_freq = validation_freq
        if isinstance(val_freq, bool) or not (
                (isinstance(val_freq, (numbers.Integral, np.integer)) and int(val_freq) >= 1)
                or (hasattr(val_freq, "__contains__") and not isinstance(val_freq, str))):
            raise ValueError(f"fit: validation_freq must be a positive integer or a list of "
                             f"epochs, got {validation_freq!r}")
        if not stream_x and _needs_batchwise(x, validation_split, self):
            # a memmap of another dtype: convert a batch at a time, not the whole file
            x = _adapters.ArrayBatches(x, y, sample_weight, batch_size)
            y = sample_weight = None
            stream_x = True
        if stream_x:
            return self._fit_stream(x, y, batch_size, epochs, verbose, callbacks,
                                    validation_split, validation_data, stream_val, shuffle,
                                    class_weight, sample_weight, initial_epoch, steps_per_epoch,
                                    validation_steps, validation_batch_size, val_freq)
        self._ensure_built_for(x, what)
        data = self._prepare_data(x, y, sample_weight, class_weight, what)
        n = data.n
        val = None
        if stream_val:
            val = self._val_stream(validation_data, validation_steps)
        elif validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("fit: validation_data must be a tuple (x_val, y_val) or "
                                 "(x_val, y_val, sample_weight_val)")
            vx, vy = validation_data[0], validation_data[1]
            vsw = validation_data[2] if len(validation_data) == 3 else None
            val = self._prepare_data(vx, vy, vsw, None, "fit: validation_data")
        elif validation_split:
            split_at = int(math.floor(n * (1.0 - validation_split)))
            if split_at == 0 or split_at == n:
                raise ValueError(f"fit: validation_split={validation_split} leaves "
                                 f"{split_at} training and {n - split_at} validation samples "
                                 f"out of {n}")
            data, val = data.split(split_at)
            n = split_at
        val_bs = _data.check_batch_size(validation_batch_size, what, batch_size)
        dist = _distribution.active()
        if dist is not None and isinstance(val, _adapters.Stream):
            raise ValueError("fit: under DataParallel, validation_data must be in-memory arrays "
                             "(generators, PyDatasets and DataLoaders are not sharded)")
        if dist is not None and batch_size % dist.world_size:
            raise ValueError(f"fit: batch_size={batch_size} is the global batch of DataParallel "
                             f"over {dist.world_size} ranks and must be a multiple of "
                             f"{dist.world_size} (each rank computes batch_size / "
                             f"{dist.world_size} rows)")
        self._finish_build()
        self._resolve_metrics()
        self.optimizer.build(self._store.size)
        steps = (n + batch_size - 1) // batch_size
        if dist is not None:
            try:
                _dist_fit_begin(self, dist, n, batch_size, epochs, initial_epoch,
                                0 if val is None else val.n, shuffle)
            except _distribution.DistributedTimeout as exc:
                dist.comms.abort(exc, "fit")
            except _distribution.DistributedError:
                raise                     # the ranks disagree: raised by every rank alike
            except Exception as exc:      # noqa: BLE001 -- one rank alone: end the job
                dist.comms.abort(exc, "fit")
        from .callbacks import CallbackList
        names = self.metrics_names
        if dist is not None and dist.rank != 0:
            callbacks = _rank_zero_filtered(callbacks)
        cbs = CallbackList(callbacks, add_history=True,
                           add_progbar=verbose != 0 and (dist is None or dist.rank == 0),
                           model=self, verbose=verbose, epochs=epochs, steps=steps,
                           do_validation=val is not None,
                           metrics=names + ([f"val_{k}" for k in names] if val is not None
                                            else []))
        self.history = cbs.history
        batch_hooks = cbs.has_batch_hooks("train")
        progbar_only = batch_hooks and _only_progbar(cbs)
        if dist is not None:
            # every rank must run the same collectives: batch hooks on any rank make
            # every rank run batch by batch (chunks of rank 0's size for the progress bar)
            flags = dist.comms.allgather([batch_hooks, batch_hooks and not progbar_only],
                                         "the callbacks' batch hooks")
            batch_hooks = bool(flags[:, 0].any())
            progbar_only = batch_hooks and not bool(flags[:, 1].any())
            try:
                with deferred_sigint() as interrupt:
                    return self._fit_loop(cbs, data, val, n, steps, batch_size, epochs,
                                          initial_epoch, shuffle, val_bs, val_freq, batch_hooks,
                                          progbar_only, dist, interrupt)
            except NonFiniteLossError:
                raise                     # raised by every rank alike
            except BaseException as exc:  # noqa: BLE001 -- one rank alone: end the job
                dist.comms.abort(exc, "fit")
        with deferred_sigint() as interrupt:
            return self._fit_loop(cbs, data, val, n, steps, batch_size, epochs, initial_epoch,
                                  shuffle, val_bs, val_freq, batch_hooks, progbar_only, None,
                                  interrupt)

    def _fit_loop(self, cbs, data, val, *args):
        try:
            return self._fit_epochs(cbs, data, val, *args)
        finally:
            if isinstance(val, _adapters.Stream):
                val.close()

    # ------------------------------------------------------------------ data streams
    def _stream_converter(self, class_weight=None, targets=True):
        """convert(x, y, sample_weight, label) -> a validated one-batch ArrayData."""
        k = self.n_outputs
        backend = _config.get_backend()     # a use_backend block is per thread: carry it over

        def convert(x, y, sw, label):
            with _config.use_backend(backend):
                if targets:
                    return self._prepare_data(x, y, sw, class_weight, label)
                return _data.ArrayData(self._prepare_xs(x, label), [None] * k, [None] * k)
        return convert

    def _val_stream(self, validation_data, validation_steps):
        return _adapters.Stream(validation_data, "fit: validation_data", validation_steps,
                                self._stream_converter())

    def _stream_build(self, stream, what):
        """Build the model from the stream's first batch (a Sequential without an
        input shape), as fit does from arrays."""
        if isinstance(stream.src, _adapters._ArraySource):
            self._ensure_built_for(stream.src.ab.x[:1], what)
            self._finish_build()
            return
        raw = stream.peek_first()
        try:
            x0 = _adapters.unpack(raw)[0]
        except ValueError as exc:
            raise ValueError(f"{what}: batch 0 of the {stream.name}: {exc}") from None
        if isinstance(x0, (list, tuple)) and len(x0) == 1:
            x0 = x0[0]
        self._ensure_built_for(_data._to_array(x0, f"{what}: batch 0 of the {stream.name}: x")
                               if not isinstance(x0, dict) else x0, what)
        self._finish_build()

    def _fit_stream(self, x, y, batch_size, epochs, verbose, callbacks, validation_split,
                    validation_data, stream_val, shuffle, class_weight, sample_weight,
                    initial_epoch, steps_per_epoch, validation_steps, validation_batch_size,
                    val_freq):
        """fit on a generator / iterator / PyDataset / DataLoader (engine/adapters.py):
        one training step per batch, the next batch read and validated by a prefetch
        thread while the C step runs."""
        what = "fit"
        name = _adapters.describe(x)
        if y is not None:
            raise ValueError(f"fit: x is a {name}, which yields (x, y) batches itself; "
                             "y must not be given")
        if sample_weight is not None:
            raise ValueError(f"fit: x is a {name}; give sample weights as the third element "
                             "of its batches (x, y, sample_weight), not as sample_weight")
        if validation_split:
            raise ValueError(f"fit: validation_split needs in-memory arrays; x is a {name} — "
                             "give validation_data instead")
        if validation_batch_size is not None:
            _data.check_batch_size(validation_batch_size, what)
        if _distribution.active() is not None:
            raise ValueError(f"fit: under DataParallel, x must be in-memory arrays (a {name} "
                             "is not sharded across ranks)")
        stream = _adapters.Stream(x, what, steps_per_epoch,
                                  self._stream_converter(class_weight), shuffle=shuffle is True)
        val = None
        try:
            self._stream_build(stream, what)
            if validation_data is not None:
                if stream_val:
                    val = self._val_stream(validation_data, validation_steps)
                else:
                    if not isinstance(validation_data, (tuple, list)) or \
                            len(validation_data) not in (2, 3):
                        raise ValueError("fit: validation_data must be a tuple (x_val, y_val) or "
                                         "(x_val, y_val, sample_weight_val), or a generator / "
                                         "PyDataset / DataLoader")
                    val = self._prepare_data(validation_data[0], validation_data[1],
                                             validation_data[2] if len(validation_data) == 3
                                             else None, None, "fit: validation_data")
            val_bs = _data.check_batch_size(validation_batch_size, what, batch_size)
            self._resolve_metrics()
            self.optimizer.build(self._store.size)
            from .callbacks import CallbackList
            names = self.metrics_names
            cbs = CallbackList(callbacks, add_history=True, add_progbar=verbose != 0,
                               model=self, verbose=verbose, epochs=epochs,
                               steps=stream.known_steps, do_validation=val is not None,
                               metrics=names + ([f"val_{k}" for k in names] if val is not None
                                                else []))
            self.history = cbs.history
            with deferred_sigint() as interrupt:
                self._fit_stream_epochs(cbs, stream, val, val_bs, epochs, initial_epoch,
                                        val_freq, interrupt)
        finally:
            stream.close()
            if isinstance(val, _adapters.Stream):
                val.close()
        return self.history if self.history is not None else cbs.history

    def _fit_stream_epochs(self, cbs, stream, val, val_bs, epochs, initial_epoch, val_freq,
                           interrupt):
        metrics = self.metrics
        n_out_losses = len(self._loss_names)
        hooks = cbs.has_batch_hooks("train")
        self.stop_training = False
        cbs.on_train_begin()
        epoch_logs = {}
        for epoch in range(initial_epoch, epochs):
            for m in metrics:
                m.reset_state()
            ex = self._executor()
            total, seen = 0.0, 0
            out_tot = np.zeros(n_out_losses)
            cbs.on_epoch_begin(epoch)
            for b, data in stream.epoch():
                if hooks:
                    cbs.on_train_batch_begin(b)
                try:
                    stats = ex.train(data, None, 0, 1, data.n)
                except NonFiniteLossError as exc:
                    self._raise_if_params_nonfinite("fit", f"before epoch {epoch + 1}, batch {b}")
                    raise NonFiniteLossError(
                        f"fit: loss is {exc.loss} at epoch {epoch + 1}, batch {b} of the "
                        f"{stream.name} ({data.n} samples); training stopped before applying "
                        "that step, so the model keeps the parameters of the last good step — "
                        "lower the learning rate, add clipnorm, or check the data") from None
                total += float(stats[:, 0] @ stats[:, 1])
                seen += int(stats[:, 1].sum())
                if n_out_losses:
                    out_tot += stats[:, 2:2 + n_out_losses].T @ stats[:, 1]
                if hooks:
                    cbs.on_train_batch_end(b, self._logs(total / seen, "", out_tot / seen
                                                         if n_out_losses else None))
                interrupt.check()
                if self.stop_training:
                    break
            if stream.ran_out:
                _adapters.warn_ran_out("fit", stream.name, stream.steps, epoch)
                self.stop_training = True
                if seen == 0:
                    break
            self._raise_if_params_nonfinite("fit", f"at the end of epoch {epoch + 1}")
            epoch_logs = self._logs(total / max(seen, 1), "",
                                    out_tot / max(seen, 1) if n_out_losses else None)
            if val is not None and self._due(epoch, val_freq):
                vlogs = (self._evaluate_stream(val, cbs, epoch)
                         if isinstance(val, _adapters.Stream)
                         else self._evaluate_data(val, val_bs, cbs))
                epoch_logs.update({"val_" + k: v for k, v in vlogs.items()})
            cbs.on_epoch_end(epoch, epoch_logs)
            interrupt.check()
            if self.stop_training:
                break
        cbs.on_train_end(epoch_logs)
        self._release()

    def _evaluate_stream(self, stream, cbs, epoch=None):
        """Loss/metrics over a stream's epoch, batch by batch; fires test hooks on cbs."""
        ex = self._executor()
        for m in self.metrics:
            m.reset_state()
        hooks = cbs is not None and cbs.has_batch_hooks("test")
        if cbs is not None:
            cbs.on_test_begin()
        n_out_losses = len(self._loss_names)
        out_tot = np.zeros(n_out_losses)
        total, seen = 0.0, 0
        for b, data in stream.epoch():
            if hooks:
                cbs.on_test_batch_begin(b)
            stats = ex.evaluate(data, 0, 1, data.n)
            total += float(stats[0, 0]) * float(stats[0, 1])
            seen += int(stats[0, 1])
            if n_out_losses:
                out_tot += stats[:, 2:2 + n_out_losses].T @ stats[:, 1]
            if hooks:
                cbs.on_test_batch_end(b, self._logs(total / seen, "", out_tot / seen
                                                    if n_out_losses else None))
        if seen == 0:
            when = f" at epoch {epoch + 1}" if epoch is not None else ""
            raise ValueError(f"{stream.what}: the {stream.name} yielded no batch{when} — a "
                             "generator is read once: give validation_steps / steps with a "
                             "generator that loops, or use a PyDataset / DataLoader")
        if stream.ran_out and stream.steps is not None:
            warnings.warn(f"{stream.what}: the {stream.name} ran out of data after {seen} "
                          f"samples, before {stream.steps} steps", UserWarning, stacklevel=3)
        logs = self._logs(total / seen, "", [float(v) for v in out_tot / seen]
                          if n_out_losses else None)
        if cbs is not None:
            cbs.on_test_end(logs)
        return logs

    def _fit_epochs(self, cbs, data, val, n, steps, batch_size, epochs, initial_epoch, shuffle,
                    val_bs, val_freq, batch_hooks, progbar_only, dist, interrupt):
        """fit's epochs (dist: the active DataParallel, or None). Ctrl-C is honoured
        at step boundaries (interrupt.check, engine/interrupt.py)."""
        # without batch listeners, chunks are timed as for the progress bar, so a
        # Ctrl-C waits for at most ~_PROGBAR_CHUNK_S of C work, not a whole epoch
        # (not across ranks: their chunks must agree, and rank 0 sets them)
        adaptive = progbar_only or (not batch_hooks and dist is None)
        gm: Any = (lambda: _distribution.global_metrics(dist.comms, self.metrics)) if dist else None
        metrics = self.metrics
        n_out_losses = len(self._loss_names)
        self.stop_training = False
        cbs.on_train_begin()
        epoch_logs = {}
        for epoch in range(initial_epoch, epochs):
            for m in metrics:
                m.reset_state()
            ex = self._executor()
            if dist is not None:
                ex = _distribution.DataParallelExecutor(ex, dist, self)
            total, seen = 0.0, 0
            out_tot = np.zeros(n_out_losses)
            cbs.on_epoch_begin(epoch)
            perm = _config.rng().permutation(n) if shuffle else None
            if perm is not None and perm.dtype != np.int64:
                perm = perm.astype(np.int64)
            if dist is not None and perm is not None:
                dist.comms.bcast(perm, "the epoch's permutation")    # rank 0's, everywhere
            # Batch callbacks see every batch, one executor call each -- unless the
            # only listener is the progress bar, which draws at most every 0.25 s:
            # then chunks of ~_PROGBAR_CHUNK_S run per call and the bar hears of
            # the last batch of each chunk (what it would draw anyway).
            limit = ex.max_batches_per_call(batch_size)
            per_call = 1 if (batch_hooks or (adaptive and interrupt.active)) else min(steps, limit)
            b = 0
            while b < steps:
                nb = min(per_call, steps - b)
                if batch_hooks:
                    cbs.on_train_batch_begin(b)
                t0 = time.perf_counter() if adaptive else 0.0
                try:
                    stats = ex.train(data, perm, b, nb, batch_size)
                except NonFiniteLossError as exc:
                    bad = exc.batch
                    s = bad * batch_size
                    e = min(s + batch_size, n)
                    self._raise_if_params_nonfinite("fit", f"before epoch {epoch + 1}, batch "
                                                    f"{bad}")
                    raise NonFiniteLossError(
                        f"fit: loss is {exc.loss} at epoch {epoch + 1}, batch {bad} (samples "
                        f"{s}..{e - 1}); training stopped before applying that step, so the model "
                        "keeps the parameters of the last good step — lower the learning rate, "
                        "add clipnorm, or check the data") from None
                done = stats.shape[0]
                # batch by batch, in order: the epoch's mean must not depend on how the
                # batches were grouped into C calls (the chunks are timed, so they vary)
                for k in range(done):
                    total += float(stats[k, 0]) * float(stats[k, 1])
                    if n_out_losses:
                        out_tot += stats[k, 2:2 + n_out_losses] * stats[k, 1]
                seen += int(stats[:, 1].sum())
                b += done
                if batch_hooks:
                    if dist is not None:
                        with gm():
                            blogs = self._logs(total / seen, "", out_tot / seen if n_out_losses
                                               else None)
                    else:
                        blogs = self._logs(total / seen, "", out_tot / seen if n_out_losses
                                           else None)
                    cbs.on_train_batch_end(b - 1, blogs)
                    if adaptive:
                        per_batch = (time.perf_counter() - t0) / max(done, 1)
                        per_call = max(1, min(4096, limit,
                                              int(_PROGBAR_CHUNK_S / max(per_batch, 1e-7))))
                    if dist is not None:
                        # stop on every rank when any asks; rank 0's chunk size everywhere
                        agreed = dist.comms.allgather([bool(self.stop_training), per_call],
                                                      "stop_training")
                        self.stop_training = bool(agreed[:, 0].any())
                        per_call = int(agreed[0, 1])
                    if self.stop_training:
                        break
                elif adaptive:
                    per_batch = (time.perf_counter() - t0) / max(done, 1)
                    per_call = max(1, min(4096, limit,
                                          int(_PROGBAR_CHUNK_S / max(per_batch, 1e-7))))
                interrupt.check()
            # an update that overflowed on the epoch's last step shows no non-finite loss
            # (no step follows it): one finiteness pass over the weights per epoch
            self._raise_if_params_nonfinite("fit", f"at the end of epoch {epoch + 1}")
            if dist is not None:
                with gm():
                    epoch_logs = self._logs(total / max(seen, 1), "",
                                            out_tot / max(seen, 1) if n_out_losses else None)
                _dist_average_state(self, dist)
            else:
                epoch_logs = self._logs(total / max(seen, 1), "",
                                        out_tot / max(seen, 1) if n_out_losses else None)
            if val is not None and self._due(epoch, val_freq):
                vlogs = (self._evaluate_stream(val, cbs, epoch)
                         if isinstance(val, _adapters.Stream)
                         else self._evaluate_data(val, val_bs, cbs))
                epoch_logs.update({"val_" + k: v for k, v in vlogs.items()})
            cbs.on_epoch_end(epoch, epoch_logs)
            if dist is not None:
                agreed = dist.comms.allgather([bool(self.stop_training)], "stop_training")
                self.stop_training = bool(agreed[:, 0].any())
            interrupt.check()
            if self.stop_training:
                break
        cbs.on_train_end(epoch_logs)
        self._release()
        return self.history if self.history is not None else cbs.history

    def _raise_if_params_nonfinite(self, what, when):
        """NonFiniteParametersError when an optimizer update overflowed: the loss
        of the step was finite, its update was not (e.g. SGD with lr=1e30)."""
        store = self._store
        if store is None or _data.all_finite(store.params):
            return
        bad = [f"{e.layer.name}/{e.spec.name}" for e in store.entries
               if not _data.all_finite(np.ascontiguousarray(e.param))]
        raise NonFiniteParametersError(
            f"{what}: the weights became NaN or inf {when}: an optimizer update overflowed "
            f"although its loss was finite ({', '.join(bad[:6])}{' ...' if len(bad) > 6 else ''}); "
            "the model now holds these non-finite weights — reload a checkpoint "
            "(callbacks.ModelCheckpoint, model.save) and lower the learning rate or add clipnorm")

    def _ensure_built_for(self, x, what):
        """A Sequential without an input shape takes it from the data (functional
        models are built from their inputs): checked here, built by
        _finish_build once everything else validated (bad data leaves the
        model unbuilt). A subclassed model is built here from the data."""
        if self.__dict__.get("_fg_call_layer") is not None and not self.built:
            if isinstance(x, (list, tuple)) and len(x) == 1:
                x = x[0]
            if isinstance(x, dict) and len(x) == 1:
                x = next(iter(x.values()))
            from .autodiff.core import Variable
            if isinstance(x, Variable):
                x = x.value
            xa = _data.as_x(np.asarray(x) if not isinstance(x, np.ndarray) else x, what)
            self._fg_build_subclass(tuple(xa.shape[1:]))

    def _finish_build(self):
        pass

    @staticmethod
    def _due(epoch, freq):
        if isinstance(freq, (numbers.Integral, np.integer)):
            return (epoch + 1) % int(freq) == 0
        return (epoch + 1) in freq

    # ================================================================== evaluate
    def _evaluate_data(self, data, batch_size, cbs):
        """Loss/metrics over validated data; fires test hooks on cbs."""
        dist = _distribution.active()
        if dist is not None:
            try:
                return self._evaluate_shard(data, batch_size, cbs, dist)
            except BaseException as exc:  # noqa: BLE001 -- one rank alone: end the job
                dist.comms.abort(exc, "evaluate")
        return self._evaluate_local(data, batch_size, cbs)

    def _evaluate_shard(self, data, batch_size, cbs, dist):
        """Under DataParallel: this rank evaluates its contiguous shard of the rows
        (batches of batch_size / N rows), then the loss sums and the metric states are
        summed over the ranks in rank order (test batch hooks hear this rank's shard)."""
        n = data.n
        lo, hi = _distribution.shard(0, n, dist.rank, dist.world_size)
        local = data.split(lo)[1].split(hi - lo)[0]
        for m in self.metrics:
            m.reset_state()
        n_out_losses = len(self._loss_names)
        vec = np.zeros(1 + n_out_losses)
        if cbs is not None:
            cbs.on_test_begin()
        if hi > lo:
            self._evaluate_local(local, max(1, batch_size // dist.world_size), cbs, sums=vec)
        tot = dist.comms.sum(vec, "the evaluation losses")
        with _distribution.global_metrics(dist.comms, self.metrics):
            logs = self._logs(float(tot[0] / n), "", [float(v) for v in tot[1:] / n]
                              if n_out_losses else None)
        if cbs is not None:
            cbs.on_test_end(logs)
        return logs

    def _evaluate_local(self, data, batch_size, cbs, sums=None):
        """Loss/metrics over validated data; fires test hooks on cbs. sums (a shard
        under DataParallel): receives [sum of loss * rows, per-output sums...] instead,
        with no test begin / end hooks and the metrics left accumulated."""
        ex = self._executor()
        if sums is None:
            for m in self.metrics:
                m.reset_state()
        n = data.n
        steps = (n + batch_size - 1) // batch_size
        hooks = cbs is not None and cbs.has_batch_hooks("test")
        if cbs is not None and sums is None:
            cbs.on_test_begin()
        n_out_losses = len(self._loss_names)
        out_tot = np.zeros(n_out_losses)
        total, seen = 0.0, 0
        per_call = 1 if hooks else min(steps, ex.max_batches_per_call(batch_size))
        b = 0
        while b < steps:
            nb = min(per_call, steps - b)
            if hooks:
                cbs.on_test_batch_begin(b)
            stats = ex.evaluate(data, b, nb, batch_size)
            for k in range(stats.shape[0]):
                total += float(stats[k, 0]) * float(stats[k, 1])
            seen += int(stats[:, 1].sum())
            if n_out_losses:
                out_tot += stats[:, 2:2 + n_out_losses].T @ stats[:, 1]
            b += stats.shape[0]
            if hooks:
                cbs.on_test_batch_end(b - 1, self._logs(total / seen, "", out_tot / seen
                                                        if n_out_losses else None))
        if sums is not None:
            sums[0] = total
            sums[1:] = out_tot
            return None
        logs = self._logs(total / n, "", [float(v) for v in out_tot / n] if n_out_losses else None)
        if cbs is not None:
            cbs.on_test_end(logs)
        return logs

    @_blas_limited
    def evaluate(self, x: Any = None, y: Any = None, batch_size: int | None = 32,
                 verbose: int | str = "auto", sample_weight: Any = None, steps: int | None = None,
                 callbacks: Any = None, return_dict: bool = False) -> Any:
        """Compute the loss and metrics on data.

        Parameters
        ----------
        x : array_like, list or dict of arrays, or a data stream
            Input data: one array for a one-input model, a list or a dict by input
            name for several inputs (pandas objects and torch tensors are read
            as arrays), or a stream of batches (a generator, an iterable or a
            ``fastgrad.utils.PyDataset``) yielding ``(x, y)`` or
            ``(x, y, sample_weight)``. float64 and non-contiguous arrays are
            converted to C-contiguous float32 once per call.
        y : array_like, list or dict of arrays, optional
            Targets, in the structure of the outputs (None with a stream).
        batch_size : int, default 32
            Number of samples per batch.
        verbose : {0, 1, 2, "auto"}, default "auto"
            "auto" and 1 show a progress bar, 0 is silent.
        sample_weight : array_like, optional
            Per-sample loss weights.
        steps : int, optional
            Batches to draw from a data stream.
        callbacks : list of Callback, optional
            Callbacks called during evaluation.
        return_dict : bool, default False
            Return a dict by name instead of a list.

        Returns
        -------
        float, list of float or dict
            The loss alone when there is nothing else, else ``[loss, ...]``
            ordered as ``metrics_names`` (or a dict with ``return_dict=True``).

        Raises
        ------
        NotCompiledError
            When the model is not compiled.
        ValueError
            For invalid arguments or data.
        """
        what = "evaluate"
        self._require_compiled(what)
        if verbose == "auto":
            verbose = 1
        if verbose not in (0, 1, 2):
            raise ValueError(f"evaluate: verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
        batch_size = _data.check_batch_size(batch_size, what)
        steps = _adapters.check_steps(steps, what, "steps")
        if _adapters.is_stream(x):
            return self._evaluate_stream_call(x, y, sample_weight, steps, verbose, callbacks,
                                              return_dict)
        if steps is not None:
            raise ValueError("evaluate: steps applies to a generator, iterator, PyDataset or "
                             "DataLoader x; with in-memory arrays leave it None")
        self._ensure_built_for(x, what)
        data = self._prepare_data(x, y, sample_weight, None, what)
        self._finish_build()
        self._resolve_metrics()
        cbs = None
        dist = _distribution.active()
        if dist is not None and dist.rank != 0:      # writers (the progress bar) on rank 0
            verbose, callbacks = 0, _rank_zero_filtered(callbacks)
        if callbacks is not None or verbose:
            from .callbacks import CallbackList
            cbs = CallbackList(callbacks, add_progbar=bool(verbose), model=self,
                               verbose=verbose, epochs=1,
                               steps=(data.n + batch_size - 1) // batch_size)
        logs = self._evaluate_data(data, batch_size, cbs)
        self._release()
        if return_dict:
            return logs
        vals = list(logs.values())
        return vals[0] if len(vals) == 1 else vals

    def _evaluate_stream_call(self, x, y, sample_weight, steps, verbose, callbacks, return_dict):
        what = "evaluate"
        name = _adapters.describe(x)
        if y is not None or sample_weight is not None:
            raise ValueError(f"evaluate: x is a {name}, which yields (x, y[, sample_weight]) "
                             "batches itself; y and sample_weight must not be given")
        if _distribution.active() is not None:
            raise ValueError(f"evaluate: under DataParallel, x must be in-memory arrays (a {name} "
                             "is not sharded across ranks)")
        stream = _adapters.Stream(x, what, steps, self._stream_converter())
        try:
            self._stream_build(stream, what)
            self._resolve_metrics()
            cbs = None
            if callbacks is not None or verbose:
                from .callbacks import CallbackList
                cbs = CallbackList(callbacks, add_progbar=bool(verbose), model=self,
                                   verbose=verbose, epochs=1, steps=stream.known_steps)
            logs = self._evaluate_stream(stream, cbs)
        finally:
            stream.close()
        self._release()
        if return_dict:
            return logs
        vals = list(logs.values())
        return vals[0] if len(vals) == 1 else vals

    def _predict_stream(self, x, steps, verbose, callbacks):
        """predict over a generator / iterator / PyDataset / DataLoader: the x of each
        batch (a y in it is ignored, as Keras does), outputs concatenated."""
        what = "predict"
        name = _adapters.describe(x)
        if _distribution.active() is not None:
            raise ValueError(f"predict: under DataParallel, x must be in-memory arrays (a {name} "
                             "is not sharded across ranks)")
        stream = _adapters.Stream(x, what, steps, self._stream_converter(targets=False))
        parts = []
        try:
            self._stream_build(stream, what)
            cbs = None
            if callbacks is not None or verbose:
                from .callbacks import CallbackList
                cbs = CallbackList(callbacks, add_progbar=bool(verbose), model=self,
                                   verbose=verbose, epochs=1, steps=stream.known_steps)
                cbs.on_predict_begin()
            self._claim_fusion()
            plan = _compiled.inference_plan(self)
            step: Any = None if plan is not None else self._get_step()
            for b, data in stream.epoch():
                if cbs is not None:
                    cbs.on_predict_batch_begin(b)
                if plan is not None:
                    outs = plan.predict_list(data.xs)
                    if data.n <= getattr(plan, "_small", 1 << 30):   # may be reused buffers
                        outs = [np.array(o) for o in outs]
                else:
                    outs = [np.empty((data.n,) + s, dtype=np.float32)
                            for s in self._output_shapes]
                    step.predict(data.xs, outs)
                parts.append(outs)
                if cbs is not None:
                    cbs.on_predict_batch_end(b, {"outputs": self._shape_outputs(outs)})
            if stream.ran_out and stream.steps is not None:
                warnings.warn(f"predict: the {name} ran out of data before steps={stream.steps} "
                              "batches", UserWarning, stacklevel=3)
            if cbs is not None:
                cbs.on_predict_end()
        finally:
            stream.close()
        self._release()
        if not parts:
            raise ValueError(f"predict: the {name} yielded no batch")
        return self._shape_outputs([np.concatenate([p[k] for p in parts], axis=0)
                                    for k in range(len(parts[0]))])

    # ================================================================== predict
    def _default_predict_batch(self, n):
        widest = max([int(np.prod(s)) for s in self._graph.slot_shapes] + [1])
        return int(max(32, min(1024, (1 << 22) // max(widest, 1), n)))

    def _shape_outputs(self, outs):
        if self._output_kind == "dict":
            return dict(zip(self._output_keys, outs))
        if self._output_kind == "list" and len(outs) > 1:
            return list(outs)
        return outs[0]           # one output, also from a list of one (Keras unpacks it)

    def _plan_predict(self, plan, x, what, rows_call):
        """Run the compiled inference plan, which checks the rows for NaN/inf in
        C as it reads them (no separate scan here); when it reports one, the
        Python check names the first bad element."""
        xs = self._prepare_xs(x, what, finite=False)
        try:
            outs = rows_call(xs)
        except ValueError:                # FG_ERR_NONFINITE, or another refusal
            for xa, a in zip(xs, self._structure(x, self.input_names, "input", what, "x")):
                _data.raise_if_nonfinite(xa, a, what)
            raise
        return self._shape_outputs(outs)

    def predict(self, x: Any, batch_size: int | None = None, verbose: int | str = 0,
                steps: int | None = None, callbacks: Any = None) -> Any:
        """Compute the model's outputs for input data.

        Parameters
        ----------
        x : array_like, list or dict of arrays, or a data stream
            Input data: one array for a one-input model, a list or a dict by input
            name for several inputs (pandas objects and torch tensors are read
            as arrays), or a stream of batches (a generator, an iterable or a
            ``fastgrad.utils.PyDataset``) yielding ``(x, y)`` or
            ``(x, y, sample_weight)``. float64 and non-contiguous arrays are
            converted to C-contiguous float32 once per call.
        batch_size : int, optional
            Number of samples per batch (None picks a large batch of at most 1024
            rows).
        verbose : {0, 1, 2, "auto"}, default 0
            0 silent; any other value shows a progress bar.
        steps : int, optional
            Batches to draw from a data stream.
        callbacks : list of Callback, optional
            Callbacks called during prediction.

        Returns
        -------
        ndarray, list or dict of ndarray
            New float32 arrays in the structure of the model's outputs
            (probabilities for a softmax / sigmoid model).

        Raises
        ------
        ValueError
            For invalid arguments or data.
        """
        what = "predict"
        steps = _adapters.check_steps(steps, what, "steps")
        if _adapters.is_stream(x):
            return self._predict_stream(x, steps, verbose, callbacks)
        if steps is not None:
            raise ValueError("predict: steps applies to a generator, iterator, PyDataset or "
                             "DataLoader x; with in-memory arrays leave it None")
        self._ensure_built_for(x, what)
        self._finish_build()
        dist = _distribution.active()
        if dist is not None and not self.__dict__.get("_dist_local"):
            return self._predict_shard(x, batch_size, verbose, callbacks, dist)
        if callbacks is None and not verbose:
            self._claim_fusion()
            plan = _compiled.inference_plan(self)
            if plan is not None:
                if batch_size is not None:
                    _data.check_batch_size(batch_size, what, 1)
                return self._plan_predict(plan, x, what, plan.predict_list)
        xs = self._prepare_xs(x, what)
        n = xs[0].shape[0]
        batch_size = _data.check_batch_size(batch_size, what, self._default_predict_batch(n))
        step = self._get_step()
        outs = [np.empty((n,) + s, dtype=np.float32) for s in self._output_shapes]
        cbs = None
        if callbacks is not None or verbose:
            from .callbacks import CallbackList
            cbs = CallbackList(callbacks, add_progbar=bool(verbose), model=self, verbose=verbose,
                               epochs=1, steps=(n + batch_size - 1) // batch_size)
            cbs.on_predict_begin()
        for b, s in enumerate(range(0, n, batch_size)):
            e = min(s + batch_size, n)
            if cbs is not None:
                cbs.on_predict_batch_begin(b)
            step.predict([x_[s:e] for x_ in xs], [o[s:e] for o in outs])
            if cbs is not None:
                cbs.on_predict_batch_end(b, {"outputs": self._shape_outputs([o[s:e]
                                                                             for o in outs])})
        if cbs is not None:
            cbs.on_predict_end()
        self._release()
        return self._shape_outputs(outs)

    def _predict_shard(self, x, batch_size, verbose, callbacks, dist):
        """Under DataParallel: this rank predicts its contiguous shard of the rows, then
        the outputs are gathered (every rank returns them all). Callbacks and the
        progress bar run on rank 0's shard."""
        xs = self._prepare_xs(x, "predict", finite=False)
        n = xs[0].shape[0]
        N = dist.world_size
        bounds = [_distribution.shard(0, n, r, N) for r in range(N)]
        lo, hi = bounds[dist.rank]
        try:
            if hi > lo:
                self.__dict__["_dist_local"] = True
                try:
                    res = self.predict([a[lo:hi] for a in xs], batch_size=batch_size,
                                       verbose=verbose if dist.rank == 0 else 0,
                                       callbacks=callbacks if dist.rank == 0 else None)
                finally:
                    self.__dict__["_dist_local"] = False
                if isinstance(res, dict):
                    outs = [res[k] for k in self._output_keys]
                elif isinstance(res, list):
                    outs = res
                else:
                    outs = [res]
            else:
                outs = [np.empty((0,) + tuple(s), dtype=np.float32) for s in self._output_shapes]
            counts = [h - l for l, h in bounds]
            full = [dist.comms.allgatherv_rows(np.ascontiguousarray(o, dtype=np.float32), counts,
                                               "the predictions") for o in outs]
        except BaseException as exc:  # noqa: BLE001 -- one rank alone: end the job
            dist.comms.abort(exc, "predict")
        return self._shape_outputs(full)

    def predict_on_batch(self, x: Any) -> Any:
        """Compute the outputs for one batch (no batching loop).

        Parameters
        ----------
        x : array_like, list or dict of arrays
            One batch of input data.

        Returns
        -------
        ndarray, list or dict of ndarray
            New arrays in the structure of the model's outputs.
        """
        self._ensure_built_for(x, "predict_on_batch")
        self._finish_build()
        self._claim_fusion()
        plan = _compiled.inference_plan(self)
        if plan is not None:
            return self._plan_predict(plan, x, "predict_on_batch", plan.predict_list)
        xs = self._prepare_xs(x, "predict_on_batch")
        n = xs[0].shape[0]
        outs = [np.empty((n,) + s, dtype=np.float32) for s in self._output_shapes]
        self._get_step().predict(xs, outs)
        return self._shape_outputs(outs)

    def __call__(self, inputs: Any, training: bool | None = False) -> Any:
        """Apply the model to symbolic tensors or to arrays.

        On symbolic tensors, the model's graph is applied to them (its layers are
        shared, so the weights are too) and the output tensor(s) returned. On
        arrays this is ``predict_on_batch``; inside a ``GradientTape`` the call is
        recorded for differentiation.

        Parameters
        ----------
        inputs : array_like, SymbolicTensor, or a list or dict of them
            The input(s).
        training : bool, default False
            Training mode (Dropout, BatchNormalization).

        Returns
        -------
        ndarray, SymbolicTensor, or a list or dict of them
            The output(s).
        """
        if is_symbolic(inputs):
            if self.__dict__.get("_fg_call_layer") is not None and not self.built:
                t = inputs if isinstance(inputs, SymbolicTensor) else list(inputs)[0]
                self._fg_build_subclass(tuple(t.shape[1:]))
            return self._call_symbolic(inputs)
        from .autodiff import core as _ad
        if _ad._TRACERS and _ad_has_trace(inputs):
            from .autodiff import subclass
            return subclass.model_in_trace(self, inputs, training)
        if training or _ad._recording():
            return self._tape_call(inputs, training)
        return self.predict_on_batch(inputs)

    def _call_symbolic(self, inputs):
        g = self._graph
        if g is None:
            raise ValueError(f"{self.name}: the model is not built; give it an input shape")
        names = self.input_names
        ts = self._structure(inputs, names, "input", f"{self.name}(...)", "x")
        vals = {}
        for t_old, t_new, shape in zip(g.inputs, ts, self._input_shapes):
            if not isinstance(t_new, SymbolicTensor):
                raise TypeError(f"{self.name}: called on a mix of symbolic tensors and "
                                f"{type(t_new).__name__}")
            if tuple(t_new.shape[1:]) != shape:
                raise ValueError(f"{self.name}: expects input of shape {(None,) + shape}, "
                                 f"got {t_new.shape}")
            vals[id(t_old)] = t_new
        for gn in g.nodes:
            node = gn.node
            args = [vals[id(t)] for t in node.inputs]
            vals[id(node.output)] = gn.layer(args if gn.multi else args[0])
        outs = [vals[id(t)] for t in g.outputs]
        return self._shape_outputs(outs)

    # ================================================================== *_on_batch
    def train_on_batch(self, x: Any, y: Any = None, sample_weight: Any = None,
                       class_weight: dict | None = None, return_dict: bool = False) -> Any:
        """Run one optimizer step on a single batch.

        Parameters
        ----------
        x : array_like, list or dict of arrays
            One batch of input data.
        y : array_like, list or dict of arrays, optional
            Its targets.
        sample_weight : array_like, optional
            Per-sample loss weights.
        class_weight : dict, optional
            Class index to loss weight.
        return_dict : bool, default False
            Return a dict by name instead of a list.

        Returns
        -------
        float, list of float or dict
            The batch loss (and metrics), as ``evaluate`` returns them.

        Raises
        ------
        NotCompiledError
            When the model is not compiled.
        NonFiniteLossError
            When the loss is NaN or inf (the step is not applied).
        """
        what = "train_on_batch"
        self._require_compiled(what)
        self._ensure_built_for(x, what)
        data = self._prepare_data(x, y, sample_weight, class_weight, what)
        self._finish_build()
        self._resolve_metrics()
        self.optimizer.build(self._store.size)
        for m in self.metrics:
            m.reset_state()
        ex = self._executor()
        try:
            with deferred_sigint():
                stats = ex.train(data, None, 0, 1, data.n)
        except NonFiniteLossError as exc:
            self._raise_if_params_nonfinite("train_on_batch", "before this batch")
            raise NonFiniteLossError(f"train_on_batch: loss is {exc.loss}; the step was not "
                                     "applied") from None
        self._raise_if_params_nonfinite("train_on_batch", "after this batch")
        self._release()
        return self._batch_result(stats[0], return_dict)

    def test_on_batch(self, x: Any, y: Any = None, sample_weight: Any = None,
                      return_dict: bool = False) -> Any:
        """Compute the loss and metrics on a single batch.

        Parameters
        ----------
        x : array_like, list or dict of arrays
            One batch of input data.
        y : array_like, list or dict of arrays, optional
            Its targets.
        sample_weight : array_like, optional
            Per-sample loss weights.
        return_dict : bool, default False
            Return a dict by name instead of a list.

        Returns
        -------
        float, list of float or dict
            The batch loss (and metrics), as ``evaluate`` returns them.

        Raises
        ------
        NotCompiledError
            When the model is not compiled.
        """
        what = "test_on_batch"
        self._require_compiled(what)
        self._ensure_built_for(x, what)
        data = self._prepare_data(x, y, sample_weight, None, what)
        self._finish_build()
        self._resolve_metrics()
        for m in self.metrics:
            m.reset_state()
        stats = self._get_step().evaluate(data, 0, 1, data.n)
        self._release()
        return self._batch_result(stats[0], return_dict)

    def _batch_result(self, row, return_dict):
        k = len(self._loss_names)
        logs = self._logs(float(row[0]), "", [float(v) for v in row[2:2 + k]] if k else None)
        if return_dict:
            return logs
        vals = list(logs.values())
        return vals[0] if len(vals) == 1 else vals

    # ================================================================== weights
    def _require_built(self, what):
        if not self.built:
            raise ValueError(f"{what}: the model is not built yet; give the first layer "
                             "input_shape=... or call build()/fit() first")

    @property
    def weights(self) -> list:
        """The live weight arrays (views into the flat buffer), in Keras order."""
        return self._store.weight_arrays() if self.built else []

    def get_weights(self) -> list:
        """Return copies of all weights.

        Returns
        -------
        list of ndarray
            Per layer (``model.layers`` order) its parameters, then its state
            (Dense: kernel, bias; BatchNormalization: gamma, beta, moving_mean,
            moving_variance).
        """
        return [np.array(w, copy=True) for w in self.weights]

    def set_weights(self, weights: Any) -> None:
        """Set all weights; everything is validated before anything is written.

        Parameters
        ----------
        weights : list of array_like
            Arrays in the order and shapes of ``get_weights``.

        Raises
        ------
        ValueError
            For the wrong number of arrays, a wrong shape, NaN or inf, or an
            unbuilt model.
        TypeError
            For a non-numeric dtype.
        """
        self._require_built("set_weights")
        cur = self._store.weight_arrays()
        names = self._store.weight_names()
        weights = list(weights)
        if len(weights) != len(cur):
            raise ValueError(f"set_weights: expected {len(cur)} arrays ({', '.join(names)}), "
                             f"got {len(weights)}")
        conv = []
        for name, w, c in zip(names, weights, cur):
            a = np.asarray(w)
            if a.shape != c.shape:
                raise ValueError(f"set_weights: {name} has shape {c.shape}, got {a.shape}")
            if a.dtype.kind not in "fiu":
                raise TypeError(f"set_weights: {name} has unsupported dtype {a.dtype}")
            a = a.astype(np.float32)
            if not np.isfinite(a).all():
                raise ValueError(f"set_weights: {name} contains NaN or inf")
            conv.append(a)
        for a, c in zip(conv, cur):
            c[...] = a

    def count_params(self) -> int:
        """Count the model's weights.

        Returns
        -------
        int
            Number of scalars in all weights (trainable and non-trainable).

        Raises
        ------
        ValueError
            When the model is not built.
        """
        self._require_built("count_params")
        return int(sum(w.size for w in self.weights))

    @property
    def trainable_weights(self) -> list:
        """The trainable weights as fg.Variables whose values are views into the
        flat parameter buffer (GradientTape sources, optimizer.apply_gradients)."""
        if not self.built:
            return []
        from .autodiff.subclass import store_variables
        return store_variables(self._store)

    trainable_variables = trainable_weights

    @property
    def losses(self) -> list:
        """The weights' regularization penalties as differentiable scalars (Keras's
        model.losses; add them to the loss in a custom training loop)."""
        if not self.built:
            return []
        from .autodiff.subclass import regularization_losses
        return regularization_losses(self._store.entries)

    @property
    def non_trainable_weights(self) -> list:
        """The weights of frozen layers and the non-trainable state arrays."""
        if not self.built:
            return []
        return ([e.param for e in self._store.entries if not e.layer.trainable] +
                [a for _, _, a in self._store.state_entries])

    @property
    def flat_params(self) -> np.ndarray:
        """The single float32 buffer holding every trainable parameter."""
        self._require_built("flat_params")
        return self._store.params

    @property
    def flat_grads(self) -> np.ndarray:
        """The float32 buffer of the gradients, the twin of ``flat_params``."""
        self._require_built("flat_grads")
        return self._store.grads

    def refresh_trainable(self) -> None:
        """Call after changing a layer's `trainable` flag between fits."""
        if self.built:
            self._store.refresh_trainable()

    # ================================================================== info
    def summary(self, print_fn: Callable[..., Any] | None = None, line_length: int | None = None,
                positions: Any = None) -> None:
        """Print a summary of the layers.

        Shows each layer's name (type), output shape and parameter count, and for
        graphs with branches the "Connected to" column.

        Parameters
        ----------
        print_fn : callable, optional
            Called with each line (default ``print``).
        line_length : int, optional
            Accepted for Keras compatibility; unused.
        positions : list, optional
            Accepted for Keras compatibility; unused.
        """
        from .utils.summary import print_summary
        print_summary(self, print_fn or print)

    def get_config(self) -> dict:
        """Return the model's architecture as a JSON-friendly dict.

        Returns
        -------
        dict
            The configuration; ``from_config`` rebuilds the model (new weights).
        """
        if self.__dict__.get("_fg_call_layer") is not None:
            # a subclassed model: Keras's base config (override get_config for
            # constructor arguments), plus the input shape it was built for
            cfg = {"name": self.name, "trainable": self.trainable}
            if self.built:
                cfg["build_input_shape"] = list(self._input_shapes[0])
            return cfg
        from .utils.graph_config import functional_config
        return functional_config(self)

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Any:
        """Create a model from its configuration.

        Parameters
        ----------
        config : dict
            The output of ``get_config``.
        custom_objects : dict, optional
            Name to class or function, for objects defined outside fastgrad.

        Returns
        -------
        Model
            A new model with fresh weights.
        """
        if cls is not Model and cls.call is not Model.call:
            cfg = dict(config)
            shape = cfg.pop("build_input_shape", None)
            model = cls(**cfg)
            if shape is not None:
                model.build(tuple(shape))
            return model
        from .utils.graph_config import functional_from_config
        return functional_from_config(cls, config, custom_objects)

    def to_json(self, **kwargs: Any) -> str:
        """Return the architecture as JSON (Keras's ``to_json``).

        Parameters
        ----------
        **kwargs
            Passed to ``json.dumps``.

        Returns
        -------
        str
            The JSON text; ``fastgrad.models.model_from_json`` rebuilds the model
            with fresh weights.
        """
        import json
        return json.dumps({"class_name": type(self).__name__, "config": self.get_config()},
                          **kwargs)

    def get_compile_config(self) -> dict | None:
        """Return the arguments of ``compile`` as a JSON-friendly dict.

        Returns
        -------
        dict or None
            The compile configuration, or None when the model is not compiled.
        """
        if not self.compiled:
            return None

        def ser(spec):
            if spec is None:
                return None
            if isinstance(spec, str):
                return spec
            if isinstance(spec, _metrics.Metric):
                return {"class_name": type(spec).__name__, "config": spec.get_config()}
            if isinstance(spec, dict):
                return {"__dict__": {k: ser(v) for k, v in spec.items()}}
            if isinstance(spec, (list, tuple)):
                return [ser(s) for s in spec]
            return spec

        def ser_loss(spec):
            if spec is None:
                return None
            if isinstance(spec, dict):
                return {"__dict__": {k: ser_loss(v) for k, v in spec.items()}}
            if isinstance(spec, (list, tuple)):
                return [ser_loss(s) for s in spec]
            return _losses.serialize(_losses.get(spec, "compile"))

        args = self._compile_args or {}
        lw = args.get("loss_weights")
        return {"optimizer": _optimizers.serialize(self.optimizer),
                "loss": ser_loss(args.get("loss")),
                "loss_weights": ({"__dict__": dict(lw)} if isinstance(lw, dict) else
                                 list(lw) if isinstance(lw, (list, tuple)) else lw),
                "metrics": ser(args.get("metrics")),
                "weighted_metrics": ser(args.get("weighted_metrics"))}

    def compile_from_config(self, config: dict) -> None:
        """Compile the model from the output of ``get_compile_config``.

        Parameters
        ----------
        config : dict
            The compile configuration.
        """
        def deser(spec):
            if spec is None:
                return None
            if isinstance(spec, dict):
                if "__dict__" in spec:
                    return {k: deser(v) for k, v in spec["__dict__"].items()}
                if "class_name" in spec:
                    cls: Any = _metrics._CLASSES[spec["class_name"]]
                    return cls.from_config(spec["config"])
            if isinstance(spec, list):
                return [deser(s) for s in spec]
            return spec

        def deser_loss(spec):
            if spec is None:
                return None
            if isinstance(spec, dict) and "__dict__" in spec:
                return {k: deser_loss(v) for k, v in spec["__dict__"].items()}
            if isinstance(spec, list):
                return [deser_loss(s) for s in spec]
            return _losses.deserialize(spec)

        lw = config.get("loss_weights")
        if isinstance(lw, dict) and "__dict__" in lw:
            lw = lw["__dict__"]
        self.compile(optimizer=_optimizers.deserialize(config["optimizer"]),
                     loss=deser_loss(config["loss"]), loss_weights=lw,
                     metrics=deser(config.get("metrics")),
                     weighted_metrics=deser(config.get("weighted_metrics")))

    def describe(self) -> dict:
        """Describe the model as plain data.

        Returns
        -------
        dict
            The graph, the layers with their parameter offsets in the flat
            buffer, the losses and the fused output activations.

        Raises
        ------
        ValueError
            When the model is not built.
        """
        self._require_built("describe")
        single = self.n_outputs == 1
        return {"name": self.name,
                "input_shape": (self._input_shapes[0] if len(self._input_shapes) == 1
                                else self._input_shapes),
                "n_params": int(self._store.size),
                "graph": self._graph.describe(),
                "layers": [l.describe() for l in self._graph.layers],
                "loss": (None if not self._losses else
                         _losses.serialize(self._losses[0]) if single and self._losses[0]
                         else [None if l is None else _losses.serialize(l) for l in self._losses]),
                "loss_on_logits": (self._output_activation is not None or
                                   bool(getattr(self.loss, "from_logits", False))) if single else
                [a is not None or bool(getattr(l, "from_logits", False))
                 for a, l in zip(self._output_activations or [None] * self.n_outputs,
                                 self._losses or [None] * self.n_outputs)],
                "output_activation": self._output_activation if single else
                list(self._output_activations),
                "optimizer": None if self.optimizer is None else
                _optimizers.serialize(self.optimizer)}

    # ================================================================== saving (saving.py)
    def save(self, filepath: Any, *args: Any, **kwargs: Any) -> None:
        """Save the model to a file (see ``fastgrad.saving.save_model``).

        Parameters
        ----------
        filepath : str or path-like
            Destination; a ``.keras`` name writes a Keras 3 file.
        *args
            Passed to ``fastgrad.saving.save_model`` (``overwrite``,
            ``include_optimizer``).
        **kwargs
            Passed to ``fastgrad.saving.save_model``.
        """
        _saving.save_model(self, filepath, *args, **kwargs)

    def save_weights(self, filepath: Any, *args: Any, **kwargs: Any) -> None:
        """Save only the weights to a file.

        Parameters
        ----------
        filepath : str or path-like
            Destination.
        *args
            Passed to ``fastgrad.saving.save_weights`` (``overwrite``).
        **kwargs
            Passed to ``fastgrad.saving.save_weights``.
        """
        _saving.save_weights(self, filepath, *args, **kwargs)

    def load_weights(self, filepath: Any, *args: Any, **kwargs: Any) -> None:
        """Load weights saved by ``save_weights`` (or a full model file).

        Every shape is checked before anything is written.

        Parameters
        ----------
        filepath : str or path-like
            The file.
        *args
            Passed to ``fastgrad.saving.load_weights``.
        **kwargs
            Passed to ``fastgrad.saving.load_weights``.
        """
        _saving.load_weights(self, filepath, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r} layers={len(self.layers)}>"


# ====================================================================== data parallel
def _needs_batchwise(x, validation_split, model):
    """A memmap x that is not float32 C-contiguous (one-input models, no
    validation_split, not under DataParallel): fit reads it batch by batch."""
    return (isinstance(x, np.memmap) and x.ndim >= 2 and not validation_split
            and len(model.input_names) == 1 and _distribution.active() is None
            and not (x.dtype == np.float32 and x.flags.c_contiguous)
            and x.dtype.kind in "iubf")


def _dist_fit_begin(model, dist, n, batch_size, epochs, initial_epoch, n_val, shuffle):
    """The ranks agree on the job, then take rank 0's parameters, non-trainable state
    and optimizer state (slots, iterations)."""
    c = dist.comms
    store = model._store.root
    opt = model.optimizer
    c.agree([n, batch_size, epochs, initial_epoch, n_val, bool(shuffle), store.size,
             len(opt.slots)], "fit's arguments (samples, batch_size, epochs, initial_epoch, "
                              "validation samples, shuffle, parameters, optimizer slots)")
    c.bcast(store.params, "the initial parameters")
    for _, _, arr in getattr(store, "state_entries", ()):
        c.bcast(arr, "the non-trainable state")
    for name in sorted(opt.slots):
        c.bcast(opt.slots[name], f"the optimizer slot {name!r}")
    it = np.array([opt.iterations], dtype=np.int64)
    c.bcast(it, "the optimizer iterations")
    opt.iterations = int(it[0])


def _dist_average_state(model, dist):
    """Non-trainable state (BatchNorm moving statistics, updated from each rank's
    shard) replaced by its mean over the ranks (summed in rank order): the same bits
    on every rank."""
    entries = getattr(model._store.root, "state_entries", ())
    if not entries:
        return
    vec = np.concatenate([a.reshape(-1).astype(np.float64) for _, _, a in entries])
    tot = dist.comms.sum(vec, "the non-trainable state") / dist.world_size
    pos = 0
    for _, _, a in entries:
        a[...] = tot[pos:pos + a.size].reshape(a.shape)
        pos += a.size


def _rank_zero_filtered(callbacks):
    """callbacks without those that write (rank_zero_only), for ranks other than 0."""
    if callbacks is None:
        return None
    from .callbacks import Callback
    lst = [callbacks] if isinstance(callbacks, Callback) else list(callbacks)
    return [cb for cb in lst if not getattr(cb, "rank_zero_only", False)]


def _snake(name):
    from .layers.base import _snake as s
    return s(name)


def _ad_has_trace(x):
    from .autodiff.core import TraceTensor
    if isinstance(x, TraceTensor):
        return True
    if isinstance(x, (list, tuple)):
        return any(isinstance(t, TraceTensor) for t in x)
    return False


def _only_progbar(cbs):
    """True when the progress bar is the only callback with train-batch hooks."""
    try:
        pb = cbs._progbar
        live = cbs._live["on_train_batch_begin"] + cbs._live["on_train_batch_end"]
    except (AttributeError, KeyError, TypeError):
        return False
    return pb is not None and bool(live) and all(getattr(f, "__self__", None) is pb for f in live)


class Sequential(Model):
    """A linear stack of layers.

    A chain graph, built once the input shape is known: from the first
    layer's ``input_shape``, a leading ``fg.Input``, or the first data.

    Parameters
    ----------
    layers : list of Layer, optional
        The layers (an ``fg.Input`` tensor may come first).
    name : str, optional
        Model name (default ``sequential``, made unique).
    trainable : bool, default True
        False freezes every layer.

    Examples
    --------
    >>> import numpy as np
    >>> import fastgrad as fg
    >>> model = fg.Sequential([fg.layers.Dense(16, activation="relu", input_shape=(4,)),
    ...                        fg.layers.Dense(3, activation="softmax")])
    >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
    ...               metrics=["accuracy"])
    >>> x = np.random.rand(64, 4).astype("float32")
    >>> y = np.random.randint(0, 3, size=64)
    >>> history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    >>> sorted(history.history)
    ['accuracy', 'loss']
    >>> model.predict(x[:2]).shape
    (2, 3)
    """

    def __init__(self, layers: Any = None, name: str | None = None, trainable: bool = True) -> None:
        super().__init__(name=name)
        self._seq_layers: list = []
        self._input_shape: Any = None
        self._input_layer_name: Any = None
        self._pending: Any = None
        if layers is not None:
            if isinstance(layers, (Layer, SymbolicTensor)):
                layers = [layers]
            for layer in layers:
                self.add(layer)
        if not trainable:
            self.trainable = False

    # ------------------------------------------------------------------ structure
    @property
    def layers(self) -> list:
        """The layers, in order."""
        return list(self._seq_layers)

    def add(self, layer: Any) -> None:
        """Append a layer (or, first, an ``fg.Input`` tensor).

        Parameters
        ----------
        layer : Layer or SymbolicTensor
            The layer to append.

        Raises
        ------
        TypeError
            For anything but a layer (or an input tensor first).
        ValueError
            When the layer does not fit the model's current output shape.
        """
        if isinstance(layer, SymbolicTensor):
            node = layer._node
            if node is None or not node.is_input:
                raise TypeError("Sequential.add: a tensor can only be added when it comes from "
                                "fg.Input(...); add layers instead")
            layer = node.layer
        if isinstance(layer, Model):
            raise TypeError("Sequential.add: nesting a model in a Sequential is not supported; "
                            "add its layers, or use the functional API (model(x))")
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a fastgrad Layer, got {layer!r}")
        if isinstance(layer, InputLayer):
            if self._seq_layers:
                raise ValueError("Sequential.add: an InputLayer must come first")
            self._input_shape = layer._declared_input_shape
            self._input_layer_name = layer.name
            return
        if any(l is layer for l in self._seq_layers):
            raise ValueError(f"Sequential.add: layer {layer.name!r} is already in the model")
        if any(l.name == layer.name for l in self._seq_layers):
            raise ValueError(f"Sequential.add: a layer named {layer.name!r} is already in the model")
        if not self._seq_layers and self._input_shape is None:
            self._input_shape = layer._declared_input_shape
        self._seq_layers.append(layer)
        self._invalidate()
        if self._input_shape is not None:
            self.build(self._input_shape)

    def pop(self) -> Layer:
        """Remove the last layer.

        Returns
        -------
        Layer
            The removed layer.

        Raises
        ------
        ValueError
            When the model has no layers.
        """
        if not self._seq_layers:
            raise ValueError("Sequential.pop: the model has no layers")
        layer = self._seq_layers.pop()
        self._invalidate()
        if self._seq_layers and self._input_shape is not None:
            self.build(self._input_shape)
        return layer

    def _invalidate(self):
        self._release_fusion()
        self.built = False
        self._graph = None
        self._step = None

    def build(self, input_shape: Any = None) -> None:
        """Build every layer for per-sample `input_shape` (no batch axis; a
        leading None is dropped) and allocate the flat buffers (layers that had
        weights keep them)."""
        if input_shape is None:
            input_shape = self._input_shape
        if input_shape is None:
            raise ValueError(f"{self.name}: cannot build without an input shape; give the first "
                             "layer input_shape=... or call fit/predict on data")
        shape = tuple(input_shape)
        if shape and shape[0] is None:
            shape = shape[1:]
        if not self._seq_layers:
            raise ValueError(f"{self.name}: the model has no layers")
        self._release_fusion()
        inp = InputLayer(input_shape=shape, name=self._input_layer_name or f"{self.name}_input")
        t = inp.output
        for layer in self._seq_layers:
            layer._inbound_nodes = []
            out = layer.build(t.shape[1:] if not layer._multi_input else [t.shape[1:]])
            node = Node(layer, [t], layer._multi_input, out)
            attach_masks(layer, node, [t._keras_mask])
            t = node.output
        self._input_shape = shape
        self._graph = Graph([inp.output], [t], owner=f"Sequential {self.name!r}")
        self._layers = list(self._seq_layers)
        self._build_store(fresh=True)

    def _ensure_built_for(self, x, what):
        if self.built:
            return
        if not self._seq_layers:
            raise ValueError(f"{what}: the model has no layers")
        if isinstance(x, (list, tuple)) and len(x) == 1 and isinstance(x[0], np.ndarray):
            x = x[0]
        if isinstance(x, dict) and len(x) == 1:
            x = next(iter(x.values()))
        xa = _data.as_x(x, what, ids=self._input_takes_ids(0))
        shape = tuple(xa.shape[1:])
        self._pending = (shape, self._infer_output_shape(shape))   # shape errors now

    def _finish_build(self):
        if not self.built:
            self.build(self._pending[0])
        self._pending = None

    def _infer_output_shape(self, input_shape):
        s = tuple(input_shape)
        for layer in self._seq_layers:
            s = tuple(layer.compute_output_shape(s))
        return s

    def _first_layer_name(self, input_name):
        return self._seq_layers[0].name if self._seq_layers else input_name

    @property
    def input_names(self) -> list:
        """The name of the input, in a list."""
        return ["input"]

    @property
    def output_names(self) -> list:
        """The last layer's name, in a list."""
        return [self._seq_layers[-1].name] if self._seq_layers else ["output"]

    @property
    def n_outputs(self) -> int:
        """The number of outputs (1)."""
        return 1

    def _n_outputs_for_compile(self):
        return 1

    @property
    def input_shape(self) -> Any:
        """The input shape with the batch axis, or None when unknown."""
        return None if self._input_shape is None else (None,) + tuple(self._input_shape)

    @property
    def output_shape(self) -> Any:
        """The output shape with the batch axis, or None before the model is built."""
        if not self.built:
            return None
        return (None,) + tuple(self._seq_layers[-1].output_shape)

    @property
    def _input_shapes(self):
        if self._input_shape is None and self._pending is not None:
            return [self._pending[0]]
        return [tuple(self._input_shape)]

    @property
    def _output_shapes(self):
        if not self.built and self._pending is not None:
            return [self._pending[1]]
        return [tuple(self._seq_layers[-1].output_shape)]

    def _input_layers(self):
        return self._seq_layers[:1]

    def _prepare_xs(self, x, what, finite=True):
        if not self._seq_layers:
            raise ValueError(f"{what}: the model has no layers")
        return super()._prepare_xs(x, what, finite)

    def _input_consumers(self, i):
        return self._seq_layers[:1]

    def _structure(self, data, names, kind_of, what, role):
        if role == "x" and isinstance(data, dict):
            if len(data) != 1:
                raise ValueError(f"{what}: a Sequential takes one input, got a dict with keys "
                                 f"{list(data)}")
            return list(data.values())
        if role in ("y", "sample_weight") and isinstance(data, dict):
            if len(data) != 1:
                raise ValueError(f"{what}: a Sequential has one output, got {role} with keys "
                                 f"{list(data)}")
            return list(data.values())
        return super()._structure(data, names, kind_of, what, role)

    def get_config(self) -> dict:
        return {"name": self.name,
                "input_shape": None if self._input_shape is None else list(self._input_shape),
                "layers": [{"class_name": type(l).__name__, "config": l.get_config()}
                           for l in self._seq_layers]}

    @classmethod
    def from_config(cls, config: dict, custom_objects: dict | None = None) -> Any:
        from . import layers as _layers
        model = cls(name=config.get("name"))
        shape = config.get("input_shape")
        if shape is not None:
            model._input_shape = tuple(shape)
        for d in config.get("layers", []):
            model.add(_layers.deserialize(d, custom_objects))
        if not model.built and model._input_shape is not None and model._seq_layers:
            model.build(model._input_shape)
        return model


_saving.register_model_class(Model)
_saving.register_model_class(Model, "Functional")


def load_model(filepath: Any, *args: Any, **kwargs: Any) -> Any:
    """Load a model saved with ``model.save``.

    A Keras 3 ``.keras`` file is imported with ``load_keras``.

    Parameters
    ----------
    filepath : str or path-like
        The file.
    *args
        Passed to ``fastgrad.saving.load_model`` (``custom_objects``,
        ``compile``, ``restore_rng``).
    **kwargs
        Passed to ``fastgrad.saving.load_model``.

    Returns
    -------
    Model
        The model with its weights (and compile configuration and optimizer
        state).
    """
    return _saving.load_model(filepath, *args, **kwargs)


def load_keras(filepath: Any, compile: bool = True) -> Any:
    """Import a Keras 3 ``.keras`` file.

    Sequential and functional models of supported layers: configuration,
    weights and compile configuration (see ``fastgrad.keras_file`` and
    docs/keras_interop.md). Needs h5py.

    Parameters
    ----------
    filepath : str or path-like
        The ``.keras`` file.
    compile : bool, default True
        Compile the model with the file's compile configuration.

    Returns
    -------
    Model
        The imported model.
    """
    from . import keras_file
    return keras_file.load_keras(filepath, compile=compile)


def clone_model(model: Model, input_tensors: Any = None,
                clone_function: Callable[[Layer], Layer] | None = None) -> Model:
    """Create a model with the same architecture and new layers (fresh weights).

    As ``keras.models.clone_model``: rebuilt from ``model.get_config()``
    through the layer registry.

    Parameters
    ----------
    model : Model
        The model to clone.
    input_tensors : None
        Not supported (call the clone on new inputs instead); must be None.
    clone_function : callable, optional
        ``clone_function(layer) -> new layer`` replaces the default for
        Sequential models.

    Returns
    -------
    Model
        The clone.

    Raises
    ------
    TypeError
        When ``model`` is not a fastgrad model.
    ValueError
        For ``input_tensors``, or ``clone_function`` with a functional model.
    """
    if input_tensors is not None:
        raise ValueError("clone_model: input_tensors is not supported; call the clone on "
                         "new inputs instead (clone(new_inputs))")
    if not isinstance(model, Model):
        raise TypeError(f"clone_model: expected a fastgrad model, got {type(model).__name__}")
    if isinstance(model, Sequential) and clone_function is not None:
        clone = Sequential(name=model.name)
        if model._input_shape is not None:
            clone._input_shape = tuple(model._input_shape)
        for layer in model.layers:
            clone.add(clone_function(layer))
        if not clone.built and clone._input_shape is not None:
            clone.build(clone._input_shape)
        return clone
    if clone_function is not None:
        raise ValueError("clone_model: clone_function is supported for Sequential models")
    return type(model).from_config(model.get_config())


def model_from_json(json_string: str, custom_objects: dict | None = None) -> Any:
    """Rebuild a model (with new weights) from ``Model.to_json``.

    Parameters
    ----------
    json_string : str
        The JSON text.
    custom_objects : dict, optional
        Name to class or function, for objects defined outside fastgrad.

    Returns
    -------
    Model
        The model.

    Raises
    ------
    ValueError
        For text that is not a model description, or an unknown model class.
    """
    import json
    try:
        d = json.loads(json_string)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model_from_json: not a JSON model description ({exc})") from None
    if not isinstance(d, dict) or "class_name" not in d or "config" not in d:
        raise ValueError("model_from_json: expected {\"class_name\": ..., \"config\": ...} as "
                         "written by model.to_json()")
    cls = _saving.MODEL_CLASSES.get(d["class_name"])
    if cls is None:
        raise ValueError(f"model_from_json: unknown model class {d['class_name']!r}")
    return cls.from_config(d["config"], custom_objects)
