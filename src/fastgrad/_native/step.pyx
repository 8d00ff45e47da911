# cython: language_level=3
"""fastgrad._native.step — binding of csrc/step: the compiled training step and
inference path of a model graph (one C call per chunk of batches).

Codes come from the C headers (`cdef extern`), never typed here as numbers:
LAYER_KINDS (the C layer table's own names), ACTIVATIONS, MERGE_OPS, LOSSES,
OPTIMIZERS, ACCURACY, TARGET_*, STAT_*. A node description is a dict whose
keys are C field names (see fg_node_desc_set_* in csrc/step/fg_step.h): the
binding routes each value by the field's type and mirrors no layer struct.

`Net` owns one fg_net (the C plan + its workspaces). It keeps references to
every buffer the C side points into (flat params / grads, optimizer slots,
batch-norm statistics), so they stay alive and at fixed addresses while the
Net exists; fastgrad.engine.compiled rebuilds the Net when the model swaps
them. The hot wrappers (train_chunk, evaluate, predict_small) validate with
C-level checks only (dtype / contiguity / size through the NumPy C API), then
release the GIL once for the whole chunk.
"""

cimport numpy as cnp
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy, memset

include "_common.pxi"
include "_act.pxi"

cnp.import_array()

cdef extern from "step/fg_step.h" nogil:
    enum:
        FG_ERR_BUSY
        FG_ACT_SOFTMAX
        FG_ACT_LOG_SOFTMAX
        FG_ACT_NONE
        FG_MERGE_ADD
        FG_MERGE_SUBTRACT
        FG_MERGE_MULTIPLY
        FG_MERGE_AVERAGE
        FG_MERGE_MAXIMUM
        FG_MERGE_MINIMUM
        FG_LOSS_NONE
        FG_LOSS_SPARSE_SOFTMAX_XENT
        FG_LOSS_SOFTMAX_XENT
        FG_LOSS_SIGMOID_BCE
        FG_LOSS_MSE
        FG_LOSS_MAE
        FG_LOSS_MAPE
        FG_LOSS_MSLE
        FG_LOSS_HUBER
        FG_LOSS_LOGCOSH
        FG_LOSS_POISSON
        FG_LOSS_HINGE
        FG_LOSS_SQHINGE
        FG_LOSS_KLD
        FG_LOSS_CATHINGE
        FG_LOSS_COSINE
        FG_OPT_SGD
        FG_OPT_ADAM
        FG_OPT_RMSPROP
        FG_OPT_ADAGRAD
        FG_OPT_NADAM
        FG_OPT_ADAMAX
        FG_OPT_ADADELTA
        FG_OPT_FTRL
        FG_OPT_LION
        FG_OPT_AMSGRAD
        FG_TARGET_INT32
        FG_TARGET_INT64
        FG_TARGET_FLOAT32
        FG_MAX_RANK
        FG_ACC_NONE
        FG_ACC_SPARSE
        FG_ACC_CATEGORICAL
        FG_ACC_BINARY
        FG_STAT_LOSS
        FG_STAT_ACC
        FG_STAT_WEIGHT
        FG_STAT_ROWS
        FG_STAT_COUNT
    ctypedef struct fg_shape:
        pass
    ctypedef struct fg_node_desc:
        pass
    ctypedef struct fg_graph_desc:
        int n_inputs
        const fg_shape *inputs
        int n_nodes
        const fg_node_desc *nodes
        int n_in_slots
        const int *in_slots
        int n_outputs
        const int *outputs
        int n_streams
    ctypedef struct fg_loss_desc:
        int kind
        double weight
        float param
    ctypedef struct fg_optim_desc:
        int kind
        int nesterov
        int centered
        int decoupled
        float momentum
        float beta1
        float beta2
        float rho
        float eps
        float weight_decay
        float lr_power
        float l1
        float l2
        float l2_shrinkage
        float beta
        float clipnorm
        float global_clipnorm
        float clipvalue
        int own_arrays_only
        float *s1
        float *s2
        float *s3
    ctypedef struct fg_net:
        pass
    void fg_node_desc_init(fg_node_desc *d)
    int fg_node_desc_field_type(const char *name)
    int fg_node_desc_set_int(fg_node_desc *d, const char *name, int64_t value)
    int fg_node_desc_set_float(fg_node_desc *d, const char *name, double value)
    int fg_node_desc_set_array(fg_node_desc *d, const char *name, float *data, int64_t len)
    int fg_node_desc_set_shape(fg_node_desc *d, int rank, const int64_t *dims)
    int fg_shape_set(fg_shape *s, int rank, const int64_t *dims)
    const char *fg_layer_kind_name(int kind)
    int fg_layer_kind_count()
    int fg_net_create(fg_net **net, int *bad_node, const fg_graph_desc *g, float *params, float *grads,
                      int64_t n_params, const fg_loss_desc *losses, const fg_optim_desc *opt)
    void fg_net_free(fg_net *net)
    int fg_net_set_accuracy(fg_net *net, int kind, float threshold)
    int fg_net_set_accuracy_weighted(fg_net *net, int weighted)
    int fg_net_capture_outputs(fg_net *net, int output, float *out, int64_t capacity_rows)
    int fg_net_stat_width(const fg_net *net)
    int fg_net_set_adaptive_threads(fg_net *net, int on)
    int fg_net_train_chunk(fg_net *net, int64_t *n_done, double *stats, const float *const *x,
                           int64_t x_rows, const void *const *y, const int *y_kind,
                           const float *const *sample_weight, const int64_t *perm, int64_t n_perm,
                           int64_t start_batch, int64_t n_batches, int64_t batch_size, const float *lr,
                           int64_t iteration0, uint64_t *drop_offsets, int nthreads)
    int fg_net_train_grad(fg_net *net, double *stats, const float *const *x, int64_t x_rows,
                          const void *const *y, const int *y_kind, const float *const *sample_weight,
                          const int64_t *perm, int64_t n_perm, int64_t start_batch, int64_t batch_size,
                          float grad_scale, uint64_t *drop_offsets, int nthreads)
    int fg_net_apply_update(fg_net *net, float lr, int64_t iteration, int nthreads)
    int fg_net_evaluate(fg_net *net, int64_t *n_done, double *stats, const float *const *x, int64_t x_rows,
                        const void *const *y, const int *y_kind, const float *const *sample_weight,
                        const int64_t *perm, int64_t n_perm, int64_t start_batch, int64_t n_batches,
                        int64_t batch_size, int nthreads)
    int fg_net_predict(fg_net *net, float *const *out, const float *const *x, int64_t rows, int nthreads)
    int64_t fg_net_workspace_bytes(const fg_net *net)

cdef extern from "stdlib.h" nogil:
    void *calloc(size_t n, size_t size)
    void free(void *p)

# ---- codes, from the headers
#: layer kind name (as the C layer table spells it) -> its code (1 + its row in the table)
LAYER_KINDS = {fg_layer_kind_name(k).decode(): k for k in range(1, fg_layer_kind_count())
               if fg_layer_kind_name(k) != NULL}
#: activation name (fastgrad.activations' spelling) -> code the step runs: every
#: element-wise FG_ACT_* of _act.pxi (by name: Keras's default parameters) and the softmaxes
ACTIVATIONS = dict(ACTIVATIONS, softmax=FG_ACT_SOFTMAX, log_softmax=FG_ACT_LOG_SOFTMAX)
ACT_NONE = FG_ACT_NONE
#: merge kind (NumpyOps.merge_forward's spelling) -> FG_MERGE_*
MERGE_OPS = {"add": FG_MERGE_ADD, "subtract": FG_MERGE_SUBTRACT, "multiply": FG_MERGE_MULTIPLY,
             "average": FG_MERGE_AVERAGE, "maximum": FG_MERGE_MAXIMUM, "minimum": FG_MERGE_MINIMUM}
LOSSES = {"none": FG_LOSS_NONE, "sparse_softmax_xent": FG_LOSS_SPARSE_SOFTMAX_XENT, "softmax_xent": FG_LOSS_SOFTMAX_XENT,
          "sigmoid_bce": FG_LOSS_SIGMOID_BCE, "mse": FG_LOSS_MSE,
          "mae": FG_LOSS_MAE, "mape": FG_LOSS_MAPE, "msle": FG_LOSS_MSLE, "huber": FG_LOSS_HUBER,
          "log_cosh": FG_LOSS_LOGCOSH, "poisson": FG_LOSS_POISSON, "hinge": FG_LOSS_HINGE,
          "squared_hinge": FG_LOSS_SQHINGE, "kld": FG_LOSS_KLD, "categorical_hinge": FG_LOSS_CATHINGE,
          "cosine_similarity": FG_LOSS_COSINE}
OPTIMIZERS = {"sgd": FG_OPT_SGD, "adam": FG_OPT_ADAM, "rmsprop": FG_OPT_RMSPROP,
              "adagrad": FG_OPT_ADAGRAD, "nadam": FG_OPT_NADAM, "adamax": FG_OPT_ADAMAX,
              "adadelta": FG_OPT_ADADELTA, "ftrl": FG_OPT_FTRL, "lion": FG_OPT_LION,
              "adam_amsgrad": FG_OPT_AMSGRAD}
ACCURACY = {"none": FG_ACC_NONE, "sparse": FG_ACC_SPARSE, "categorical": FG_ACC_CATEGORICAL,
            "binary": FG_ACC_BINARY}
TARGET_INT32, TARGET_INT64, TARGET_FLOAT32 = FG_TARGET_INT32, FG_TARGET_INT64, FG_TARGET_FLOAT32
#: columns of the per-batch statistics (then one loss per output)
STAT_LOSS, STAT_ACC, STAT_WEIGHT, STAT_ROWS, STAT_COUNT = (
    FG_STAT_LOSS, FG_STAT_ACC, FG_STAT_WEIGHT, FG_STAT_ROWS, FG_STAT_COUNT)
ERR_NONFINITE = FG_ERR_NONFINITE
MAX_RANK = FG_MAX_RANK
#: predict_small serves up to this many rows from preallocated outputs
SMALL_ROWS = 64


cdef int _raise(int status, str op, str detail) except -1:
    if status == FG_ERR_BUSY:
        raise RuntimeError(f"{op}: this compiled model is already running in another thread "
                           "(a compiled plan runs one call at a time)")
    return check_status(status, op, detail)


def check(int status, str op, str detail=""):
    """Raise the exception for a C status returned by train_chunk / evaluate (0: nothing)."""
    _raise(status, op, detail)


cdef inline bint _f32c(object a):
    return (cnp.PyArray_Check(a) and cnp.PyArray_TYPE(<cnp.ndarray>a) == cnp.NPY_FLOAT32
            and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>a))


cdef inline float *_fptr(object a, str op, str name, int64_t size) except? NULL:
    """Data pointer of a C-contiguous float32 array with `size` elements (None -> NULL)."""
    if a is None:
        return NULL
    if not _f32c(a):
        raise TypeError(f"{op}: {name} must be a C-contiguous float32 array")
    if size >= 0 and cnp.PyArray_SIZE(<cnp.ndarray>a) != size:
        raise ValueError(f"{op}: {name} has {cnp.PyArray_SIZE(<cnp.ndarray>a)} elements, expected {size}")
    return <float *>cnp.PyArray_DATA(<cnp.ndarray>a)


cdef int _set_shape_of(fg_shape *s, object shape, str what) except -1:
    cdef int64_t dims[64]
    shape = tuple(shape)
    if not 1 <= len(shape) <= FG_MAX_RANK:
        raise ValueError(f"step.Net: {what} has shape {shape}: per-sample rank must be 1..{FG_MAX_RANK}")
    for i, v in enumerate(shape):
        dims[i] = v
    if fg_shape_set(s, len(shape), dims) != FG_OK:
        raise ValueError(f"step.Net: {what} has an invalid shape {shape}")
    return 0


cdef int _fill_node(fg_node_desc *d, dict node, int in_off, str who, list keep) except -1:
    """The C description of one node from its dict (keys: C field names, plus
    inputs / shape / name, which the graph layout handles)."""
    cdef int64_t dims[64]
    cdef int st = FG_OK
    cdef int t
    fg_node_desc_init(d)
    shape = tuple(node["shape"])
    if not 1 <= len(shape) <= FG_MAX_RANK:
        raise ValueError(f"step.Net: {who}: output shape {shape}: per-sample rank must be 1..{FG_MAX_RANK}")
    for i, v in enumerate(shape):
        dims[i] = v
    if fg_node_desc_set_shape(d, len(shape), dims) != FG_OK:
        raise ValueError(f"step.Net: {who}: invalid output shape {shape}")
    fg_node_desc_set_int(d, b"n_in", len(node["inputs"]))
    fg_node_desc_set_int(d, b"in_off", in_off)
    for key, value in node.items():
        if key in ("inputs", "shape", "name"):
            continue
        bkey = key.encode()
        t = fg_node_desc_field_type(bkey)
        if t == 0:
            raise ValueError(f"step.Net: {who}: unknown description field {key!r}")
        if value is None:
            continue
        if t == 1:
            st = fg_node_desc_set_int(d, bkey, int(value))
        elif t == 2:
            st = fg_node_desc_set_float(d, bkey, float(value))
        else:
            p = _fptr(value, "step.Net", f"{who}: {key}", -1)
            st = fg_node_desc_set_array(d, bkey, p, cnp.PyArray_SIZE(<cnp.ndarray>value))
            keep.append(value)
        if st != FG_OK:
            raise ValueError(f"step.Net: {who}: field {key!r} cannot take {value!r}")
    return 0


cdef struct _batch_ptrs:
    # per-call pointer arrays, allocated with the Net (n_inputs / n_outputs entries)
    const float **x
    const void **y
    int *y_kind
    const float **sw
    float **out
    # per-sample sizes of the inputs / outputs (for the hot checks)
    int64_t *in_size
    int64_t *out_size


cdef class Net:
    """A compiled model graph (see fastgrad.engine.compiled for the description format).

    Net(graph, params, grads, losses=None, optimizer=None)
      graph: dict with
        inputs:  per-sample shape (tuple) of each model input (slots 0 .. n-1)
        nodes:   one dict per node in topological order: kind (a LAYER_KINDS code),
                 inputs (list of slots), shape (per-sample output shape), name (for
                 messages) and C fields (act, w_off, ...; see csrc/step/fg_step.h)
        outputs: output slots;  n_streams: dropout streams (drop_offsets entries)
      params, grads: the model's flat float32 buffers (grads may be None for inference)
      losses: one (LOSSES code, weight[, param]) per output (LOSSES["none"]: no loss on it), or None
              (inference only)
      optimizer: dict with kind, nesterov, centered, decoupled, momentum, beta1, beta2, rho,
                 eps, weight_decay, clipnorm, global_clipnorm, clipvalue and slot arrays
                 s1, s2, s3 (float32, n_params each, or None)
    """
    cdef fg_net *net
    cdef readonly int n_inputs, n_outputs, n_nodes, n_streams, stat_width
    cdef readonly int64_t n_params
    cdef readonly tuple in_sizes, out_sizes, in_shapes, out_shapes
    cdef object _keep           # arrays the C side points into
    cdef object _capture        # the output-capture buffers, while set
    cdef list _small_out        # preallocated predict_small outputs (SMALL_ROWS x out)
    cdef _batch_ptrs _p

    def __cinit__(self):
        self.net = NULL
        memset(&self._p, 0, sizeof(self._p))

    def __init__(self, dict graph, params, grads, losses=None, optimizer=None):
        inputs = [tuple(s) for s in graph["inputs"]]
        nodes = list(graph["nodes"])
        outputs = [int(s) for s in graph["outputs"]]
        cdef int NI = len(inputs), NN = len(nodes), NO = len(outputs)
        if NI < 1 or NN < 1 or NO < 1:
            raise ValueError(f"step.Net: a graph needs inputs, nodes and outputs "
                             f"({NI} inputs, {NN} nodes, {NO} outputs)")
        if losses is not None and len(losses) != NO:
            raise ValueError(f"step.Net: {len(losses)} losses for {NO} outputs")
        cdef float *p = _fptr(params, "step.Net", "params", -1)
        cdef int64_t n = cnp.PyArray_SIZE(<cnp.ndarray>params)
        cdef float *g = _fptr(grads, "step.Net", "grads", n)
        cdef int n_slots_flat = sum(len(d["inputs"]) for d in nodes)
        cdef fg_shape *shapes = <fg_shape *>calloc(NI, sizeof(fg_shape))
        cdef fg_node_desc *descs = <fg_node_desc *>calloc(NN, sizeof(fg_node_desc))
        cdef int *slots = <int *>calloc(max(n_slots_flat, 1), sizeof(int))
        cdef int *outs = <int *>calloc(NO, sizeof(int))
        cdef fg_loss_desc *ld = <fg_loss_desc *>calloc(NO, sizeof(fg_loss_desc))
        cdef fg_graph_desc gd
        cdef fg_optim_desc od
        cdef fg_optim_desc *odp = NULL
        cdef int st = FG_OK, bad = -1, off = 0
        cdef fg_net *net = NULL
        keep = [params, grads]
        try:
            if not (shapes and descs and slots and outs and ld):
                raise MemoryError("step.Net: out of memory")
            for j, s in enumerate(inputs):
                _set_shape_of(&shapes[j], s, f"input {j}")
            for i, d in enumerate(nodes):
                who = f"node {i} ({d.get('name', '?')})"
                _fill_node(&descs[i], d, off, who, keep)
                for s in d["inputs"]:
                    slots[off] = s
                    off += 1
            for k, s in enumerate(outputs):
                outs[k] = s
            if losses is not None:
                for k, e in enumerate(losses):
                    ld[k].kind = e[0]
                    ld[k].weight = e[1]
                    ld[k].param = e[2] if len(e) > 2 else 0.0
            if optimizer is not None:
                memset(&od, 0, sizeof(od))
                od.kind = optimizer["kind"]
                od.nesterov = 1 if optimizer.get("nesterov") else 0
                od.centered = 1 if optimizer.get("centered") else 0
                od.decoupled = 1 if optimizer.get("decoupled", True) else 0
                od.momentum = optimizer.get("momentum", 0.0)
                od.beta1 = optimizer.get("beta1", 0.9)
                od.beta2 = optimizer.get("beta2", 0.999)
                od.rho = optimizer.get("rho", 0.9)
                od.eps = optimizer.get("eps", 1e-7)
                od.weight_decay = optimizer.get("weight_decay", 0.0)
                od.lr_power = optimizer.get("lr_power", -0.5)
                od.l1 = optimizer.get("l1", 0.0)
                od.l2 = optimizer.get("l2", 0.0)
                od.l2_shrinkage = optimizer.get("l2_shrinkage", 0.0)
                od.beta = optimizer.get("beta", 0.0)
                od.clipnorm = optimizer.get("clipnorm") or 0.0
                od.global_clipnorm = optimizer.get("global_clipnorm") or 0.0
                od.clipvalue = optimizer.get("clipvalue") or 0.0
                od.own_arrays_only = 1 if optimizer.get("own_arrays_only") else 0
                od.s1 = _fptr(optimizer.get("s1"), "step.Net", "optimizer slot s1", n)
                od.s2 = _fptr(optimizer.get("s2"), "step.Net", "optimizer slot s2", n)
                od.s3 = _fptr(optimizer.get("s3"), "step.Net", "optimizer slot s3", n)
                keep += [optimizer.get("s1"), optimizer.get("s2"), optimizer.get("s3")]
                odp = &od
            gd.n_inputs = NI
            gd.inputs = shapes
            gd.n_nodes = NN
            gd.nodes = descs
            gd.n_in_slots = n_slots_flat
            gd.in_slots = slots
            gd.n_outputs = NO
            gd.outputs = outs
            gd.n_streams = int(graph.get("n_streams", 0))
            st = fg_net_create(&net, &bad, &gd, p, g, n, ld if losses is not None else NULL, odp)
        finally:
            free(shapes)
            free(descs)
            free(slots)
            free(outs)
            free(ld)
        if st != FG_OK and 0 <= bad < NN:
            d = nodes[bad]
            ins = [inputs[s] if 0 <= s < NI else (tuple(nodes[s - NI]["shape"]) if NI <= s < NI + NN else "?")
                   for s in d["inputs"]]
            fields = {k: v for k, v in d.items() if k not in ("name", "inputs", "shape")
                      and not hasattr(v, "shape")}
            raise ValueError(
                f"step.Net: layer {d.get('name', '?')!r} (node {bad}, kind "
                f"{fg_layer_kind_name(d['kind']).decode() if 0 < d['kind'] < fg_layer_kind_count() else d['kind']}) "
                f"has an invalid description: inputs {list(d['inputs'])} of shapes {ins} -> output "
                f"{tuple(d['shape'])}, {fields}, {n} parameters")
        _raise(st, "step.Net", f"{NI} inputs, {NN} nodes, outputs {outputs}, {n} parameters, "
                               f"losses {losses}")
        self.net = net
        self._keep = keep
        self.n_inputs, self.n_outputs, self.n_nodes = NI, NO, NN
        self.n_streams = gd.n_streams
        self.n_params = n
        self.stat_width = fg_net_stat_width(net)
        shape_of = lambda s: inputs[s] if s < NI else tuple(nodes[s - NI]["shape"])
        self.in_shapes = tuple(inputs)
        self.out_shapes = tuple(shape_of(s) for s in outputs)
        self.in_sizes = tuple(_prod(s) for s in self.in_shapes)
        self.out_sizes = tuple(_prod(s) for s in self.out_shapes)
        self._p.x = <const float **>calloc(NI, sizeof(float *))
        self._p.y = <const void **>calloc(NO, sizeof(void *))
        self._p.y_kind = <int *>calloc(NO, sizeof(int))
        self._p.sw = <const float **>calloc(NO, sizeof(float *))
        self._p.out = <float **>calloc(NO, sizeof(float *))
        self._p.in_size = <int64_t *>calloc(NI, sizeof(int64_t))
        self._p.out_size = <int64_t *>calloc(NO, sizeof(int64_t))
        if not (self._p.x and self._p.y and self._p.y_kind and self._p.sw and self._p.out
                and self._p.in_size and self._p.out_size):
            raise MemoryError("step.Net: out of memory")
        for j in range(NI):
            self._p.in_size[j] = self.in_sizes[j]
        for k in range(NO):
            self._p.out_size[k] = self.out_sizes[k]
        self._small_out = [cnp.PyArray_EMPTY(2, [SMALL_ROWS, c], cnp.NPY_FLOAT32, 0) for c in self.out_sizes]

    def __dealloc__(self):
        if self.net != NULL:
            fg_net_free(self.net)
            self.net = NULL
        free(self._p.x)
        free(self._p.y)
        free(self._p.y_kind)
        free(self._p.sw)
        free(self._p.out)
        free(self._p.in_size)
        free(self._p.out_size)

    def set_accuracy(self, int kind, float threshold=0.5, bint weighted=True):
        """The accuracy metric to accumulate (single-output models); weighted=False ignores
        the sample weights."""
        _raise(fg_net_set_accuracy(self.net, kind, threshold), "step.Net.set_accuracy",
               f"kind {kind}, {self.n_outputs} outputs")
        _raise(fg_net_set_accuracy_weighted(self.net, weighted), "step.Net.set_accuracy",
               f"weighted {weighted}")

    def capture_outputs(self, outs):
        """Copy every batch's outputs of the following train_chunk / evaluate calls into
        outs[k] (float32 C-contiguous, rows x out_sizes[k]: its capacity), rows in batch
        order from the start of each call; None switches capturing off."""
        cdef float *p = NULL
        cdef int64_t rows = 0
        for k in range(self.n_outputs):
            a = outs[k] if outs is not None else None
            p = NULL
            rows = 0
            if a is not None:
                c = self.out_sizes[k]
                if not _f32c(a) or cnp.PyArray_SIZE(<cnp.ndarray>a) % c:
                    raise TypeError(f"capture_outputs: outs[{k}] must be a C-contiguous float32 array "
                                    f"of rows x {c}")
                p = <float *>cnp.PyArray_DATA(<cnp.ndarray>a)
                rows = cnp.PyArray_SIZE(<cnp.ndarray>a) // c
            _raise(fg_net_capture_outputs(self.net, k, p, rows), "step.Net.capture_outputs",
                   f"output {k}, {rows} rows")
        self._capture = outs

    def set_adaptive_threads(self, bint on):
        """Let train_chunk pick nthreads or one thread, whichever is faster now (default on;
        results are the same bits either way)."""
        _raise(fg_net_set_adaptive_threads(self.net, 1 if on else 0), "step.Net.set_adaptive_threads", "")

    @property
    def workspace_bytes(self):
        return fg_net_workspace_bytes(self.net)

    cdef int _check_inputs(self, str op, object xs, int64_t *rows) except -1:
        cdef int j
        cdef int64_t r
        if len(xs) != self.n_inputs:
            raise ValueError(f"{op}: {len(xs)} input arrays for {self.n_inputs} model inputs")
        for j in range(self.n_inputs):
            x = xs[j]
            if not _f32c(x) or cnp.PyArray_NDIM(<cnp.ndarray>x) < 1:
                raise TypeError(f"{op}: input {j} must be a C-contiguous float32 array")
            r = cnp.PyArray_DIM(<cnp.ndarray>x, 0)
            if j == 0:
                rows[0] = r
            if r != rows[0] or cnp.PyArray_SIZE(<cnp.ndarray>x) != r * self._p.in_size[j]:
                raise ValueError(f"{op}: input {j} has shape {(<object>x).shape}, expected "
                                 f"({rows[0]}, {', '.join(map(str, self.in_shapes[j]))})")
            self._p.x[j] = <const float *>cnp.PyArray_DATA(<cnp.ndarray>x)
        return 0

    cdef int _check_data(self, str op, object xs, object ys, object y_kinds, object sws, object perm,
                         int64_t *x_rows, int64_t *n_perm) except -1:
        self._check_inputs(op, xs, x_rows)
        if len(ys) != self.n_outputs or len(y_kinds) != self.n_outputs:
            raise ValueError(f"{op}: {len(ys)} target arrays for {self.n_outputs} outputs")
        if sws is not None and len(sws) != self.n_outputs:
            raise ValueError(f"{op}: {len(sws)} sample-weight entries for {self.n_outputs} outputs")
        cdef int t, yk
        cdef int64_t per
        for k in range(self.n_outputs):
            y = ys[k]
            yk = y_kinds[k]
            sw = sws[k] if sws is not None else None
            self._p.sw[k] = _fptr(sw, op, f"sample_weight[{k}]", x_rows[0])
            if y is None:          # an output without a loss
                self._p.y[k] = NULL
                self._p.y_kind[k] = 0
                continue
            if not cnp.PyArray_Check(y) or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>y):
                raise TypeError(f"{op}: y[{k}] must be a C-contiguous numpy array")
            t = cnp.PyArray_TYPE(<cnp.ndarray>y)
            per = 1 if yk != FG_TARGET_FLOAT32 else self._p.out_size[k]
            if (yk == FG_TARGET_INT32 and t != cnp.NPY_INT32) or (yk == FG_TARGET_INT64 and t != cnp.NPY_INT64) \
                    or (yk == FG_TARGET_FLOAT32 and t != cnp.NPY_FLOAT32) or yk < 1 or yk > 3:
                raise TypeError(f"{op}: y[{k}] has dtype {(<object>y).dtype}, which does not match "
                                f"target kind {yk}")
            if cnp.PyArray_SIZE(<cnp.ndarray>y) != x_rows[0] * per:
                raise ValueError(f"{op}: y[{k}] has shape {(<object>y).shape}, expected {x_rows[0]} x "
                                 f"{per} values")
            self._p.y[k] = cnp.PyArray_DATA(<cnp.ndarray>y)
            self._p.y_kind[k] = yk
        if perm is None:
            n_perm[0] = x_rows[0]
        else:
            if not (cnp.PyArray_Check(perm) and cnp.PyArray_TYPE(<cnp.ndarray>perm) == cnp.NPY_INT64
                    and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>perm)):
                raise TypeError(f"{op}: perm must be a C-contiguous int64 array")
            n_perm[0] = cnp.PyArray_SIZE(<cnp.ndarray>perm)
        return 0

    cdef double *_stats_ptr(self, str op, object stats, int64_t n_batches) except NULL:
        if not (cnp.PyArray_Check(stats) and cnp.PyArray_TYPE(<cnp.ndarray>stats) == cnp.NPY_FLOAT64
                and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>stats)
                and cnp.PyArray_SIZE(<cnp.ndarray>stats) >= n_batches * self.stat_width):
            raise TypeError(f"{op}: stats must be a C-contiguous float64 array of "
                            f"{n_batches} x {self.stat_width}")
        return <double *>cnp.PyArray_DATA(<cnp.ndarray>stats)

    def train_chunk(self, xs, ys, y_kinds, sws, perm, int64_t start_batch, int64_t n_batches,
                    int64_t batch_size, lr, int64_t iteration0, drop_offsets, stats, int nthreads):
        """Run n_batches training steps (IN xs, ys, y_kinds, sws, perm, lr; INOUT drop_offsets;
        OUT stats). xs: one array per input; ys / y_kinds / sws: one per output (sws may be
        None). lr: float32 (n_batches,); stats: float64 (n_batches, stat_width).
        Returns (status, n_done) and never raises for a C status: the caller first books the
        n_done applied steps, then calls check(status, ...). FG_ERR_NONFINITE: batch
        n_done's loss was NaN/inf (that batch not applied)."""
        cdef int64_t x_rows = 0, n_perm = 0, n_done = 0
        self._check_data("train_chunk", xs, ys, y_kinds, sws, perm, &x_rows, &n_perm)
        cdef const float *plr = _fptr(lr, "train_chunk", "lr", n_batches)
        cdef double *ps = self._stats_ptr("train_chunk", stats, n_batches)
        cdef uint64_t *pdo = NULL
        if drop_offsets is not None:
            if not (cnp.PyArray_Check(drop_offsets) and cnp.PyArray_TYPE(<cnp.ndarray>drop_offsets) == cnp.NPY_UINT64
                    and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>drop_offsets)
                    and cnp.PyArray_SIZE(<cnp.ndarray>drop_offsets) == self.n_streams):
                raise TypeError(f"train_chunk: drop_offsets must be a uint64 array of {self.n_streams}")
            pdo = <uint64_t *>cnp.PyArray_DATA(<cnp.ndarray>drop_offsets)
        cdef const int64_t *pp = <int64_t *>cnp.PyArray_DATA(<cnp.ndarray>perm) if perm is not None else NULL
        cdef int st
        with nogil:
            st = fg_net_train_chunk(self.net, &n_done, ps, self._p.x, x_rows, self._p.y, self._p.y_kind,
                                    self._p.sw, pp, n_perm, start_batch, n_batches, batch_size, plr,
                                    iteration0, pdo, nthreads)
        return st, n_done

    def train_grad(self, xs, ys, y_kinds, sws, perm, int64_t start_batch, int64_t batch_size,
                   float grad_scale, drop_offsets, stats, int nthreads):
        """The first half of one training step (fastgrad.distribution): batch start_batch
        of perm, forward, loss and backward into the flat gradients, the loss gradients
        scaled by grad_scale (this shard's share of the global batch); no regularizer
        gradients, clipping or update (apply_update does those). stats: float64, one row.
        Returns the status (0, or ERR_NONFINITE: the loss was NaN/inf, no backward ran);
        raises for any other."""
        cdef int64_t x_rows = 0, n_perm = 0
        self._check_data("train_grad", xs, ys, y_kinds, sws, perm, &x_rows, &n_perm)
        cdef double *ps = self._stats_ptr("train_grad", stats, 1)
        cdef uint64_t *pdo = NULL
        if drop_offsets is not None:
            if not (cnp.PyArray_Check(drop_offsets) and cnp.PyArray_TYPE(<cnp.ndarray>drop_offsets) == cnp.NPY_UINT64
                    and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>drop_offsets)
                    and cnp.PyArray_SIZE(<cnp.ndarray>drop_offsets) == self.n_streams):
                raise TypeError(f"train_grad: drop_offsets must be a uint64 array of {self.n_streams}")
            pdo = <uint64_t *>cnp.PyArray_DATA(<cnp.ndarray>drop_offsets)
        cdef const int64_t *pp = <int64_t *>cnp.PyArray_DATA(<cnp.ndarray>perm) if perm is not None else NULL
        cdef int st
        with nogil:
            st = fg_net_train_grad(self.net, ps, self._p.x, x_rows, self._p.y, self._p.y_kind, self._p.sw,
                                   pp, n_perm, start_batch, batch_size, grad_scale, pdo, nthreads)
        if st != FG_OK and st != FG_ERR_NONFINITE:
            _raise(st, "train_grad", f"batch {start_batch} of size {batch_size}, {n_perm} samples, "
                   f"grad_scale {grad_scale}")
        return st

    def apply_update(self, float lr, int64_t iteration, int nthreads):
        """The second half of one training step: regularizer gradients, clipping and the
        optimizer kernel over the flat buffers (optimizer step `iteration` >= 1)."""
        cdef int st
        with nogil:
            st = fg_net_apply_update(self.net, lr, iteration, nthreads)
        if st != FG_OK:
            _raise(st, "apply_update", f"learning rate {lr}, iteration {iteration}")
        return st

    def evaluate(self, xs, ys, y_kinds, sws, perm, int64_t start_batch, int64_t n_batches,
                 int64_t batch_size, stats, int nthreads):
        """Loss / accuracy statistics of n_batches batches (OUT stats, float64
        (n_batches, stat_width)). Returns (status, n_done) like train_chunk."""
        cdef int64_t x_rows = 0, n_perm = 0, n_done = 0
        self._check_data("evaluate", xs, ys, y_kinds, sws, perm, &x_rows, &n_perm)
        cdef double *ps = self._stats_ptr("evaluate", stats, n_batches)
        cdef const int64_t *pp = <int64_t *>cnp.PyArray_DATA(<cnp.ndarray>perm) if perm is not None else NULL
        cdef int st
        with nogil:
            st = fg_net_evaluate(self.net, &n_done, ps, self._p.x, x_rows, self._p.y, self._p.y_kind,
                                 self._p.sw, pp, n_perm, start_batch, n_batches, batch_size, nthreads)
        if st != FG_OK and st != FG_ERR_NONFINITE:
            _raise(st, "evaluate", f"batch {start_batch + n_done} of size {batch_size}, {n_perm} samples")
        return st, n_done

    def predict(self, xs, outs, int nthreads):
        """outs[k] = output k of the model on xs (IN xs: one float32 C-contiguous array per
        input, (rows, *shape); OUT outs: one per output, (rows, *shape))."""
        cdef int64_t rows = 0
        self._check_inputs("predict", xs, &rows)
        if len(outs) != self.n_outputs:
            raise ValueError(f"predict: {len(outs)} output arrays for {self.n_outputs} outputs")
        for k in range(self.n_outputs):
            o = outs[k]
            if not _f32c(o):
                raise TypeError(f"predict: outs[{k}] must be a C-contiguous float32 array")
            if cnp.PyArray_SIZE(<cnp.ndarray>o) != rows * self.out_sizes[k]:
                raise ValueError(f"predict: outs[{k}] has shape {(<object>o).shape}, expected "
                                 f"({rows}, {', '.join(map(str, self.out_shapes[k]))})")
            if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>o):
                raise ValueError(f"predict: outs[{k}] is read-only")
            self._p.out[k] = <float *>cnp.PyArray_DATA(<cnp.ndarray>o)
        cdef int st
        with nogil:
            st = fg_net_predict(self.net, self._p.out, self._p.x, rows, nthreads)
        _raise(st, "predict", f"{rows} rows")
        return outs

    def predict_small(self, xs, int nthreads=1):
        """Outputs for a few rows (<= SMALL_ROWS) as NEW arrays (one per output, (rows, size)),
        computed into preallocated buffers (no workspace allocation; the copy is the only one)."""
        cdef int64_t rows = 0
        cdef int k
        self._check_inputs("predict_small", xs, &rows)
        if rows > SMALL_ROWS:
            raise ValueError(f"predict_small: {rows} rows; at most {SMALL_ROWS}")
        for k in range(self.n_outputs):
            self._p.out[k] = <float *>cnp.PyArray_DATA(<cnp.ndarray>self._small_out[k])
        cdef int st
        with nogil:
            st = fg_net_predict(self.net, self._p.out, self._p.x, rows, nthreads)
        if st != FG_OK:
            _raise(st, "predict_small", f"{rows} rows")
        cdef cnp.npy_intp dims[2]
        res = []
        for k in range(self.n_outputs):
            dims[0] = rows
            dims[1] = self._p.out_size[k]
            r = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT32, 0)
            memcpy(cnp.PyArray_DATA(<cnp.ndarray>r), self._p.out[k], rows * dims[1] * sizeof(float))
            res.append(r)
        return res


cdef int64_t _prod(tuple t):
    cdef int64_t n = 1
    for v in t:
        n *= v
    return n


def node_field_type(str name):
    """The type of fg_node_desc field `name` as desc.c's field table has it:
    "int", "float", "array", or None for no such field (layers' lower()
    dictionaries may use exactly these keys besides inputs/shape/name)."""
    return {1: "int", 2: "float", 3: "array"}.get(fg_node_desc_field_type(name.encode()))
