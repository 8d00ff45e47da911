# cython: language_level=3
"""fastgrad._native.step — binding of csrc/step: the compiled training step and
inference path of a whole Sequential (one C call per chunk of batches).

`Net` owns one fg_net (the C plan + its workspaces). It keeps references to
every buffer the C side points into (flat params / grads, optimizer slots),
so they stay alive and at fixed addresses while the Net exists; the Python
side (fastgrad.engine.compiled) rebuilds the Net when the model swaps them.

The hot wrappers (train_chunk, predict_small) validate with C-level checks
only (dtype / contiguity / shape through the NumPy C API), then release the
GIL once for the whole chunk.
"""

cimport numpy as cnp
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy, memset

include "_common.pxi"

cnp.import_array()

cdef extern from "step/fg_step.h" nogil:
    enum:
        FG_ERR_BUSY
        FG_ACT_NONE
        FG_STAT_COUNT
    ctypedef struct fg_layer_desc:
        int kind
        int act
        int out_act
        int trainable
        int64_t in_ "in"
        int64_t out
        int64_t w_off
        int64_t b_off
        float l1_w
        float l2_w
        float l1_b
        float l2_b
        float rate
        uint64_t seed
        float eps
        float bn_momentum
        float bn_rest
        float *moving_mean
        float *moving_var
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
        float clipnorm
        float global_clipnorm
        float clipvalue
        float *s1
        float *s2
        float *s3
    ctypedef struct fg_net:
        pass
    int fg_net_create(fg_net **net, const fg_layer_desc *layers, int n_layers, int64_t in_features,
                      float *params, float *grads, int64_t n_params, int loss, const fg_optim_desc *opt)
    void fg_net_free(fg_net *net)
    int fg_net_set_accuracy(fg_net *net, int kind, float threshold)
    int fg_net_set_accuracy_weighted(fg_net *net, int weighted)
    int fg_net_capture_outputs(fg_net *net, float *out, int64_t capacity_rows)
    int fg_net_set_adaptive_threads(fg_net *net, int on)
    int fg_net_train_chunk(fg_net *net, int64_t *n_done, double *stats, const float *x, int64_t x_rows,
                           const void *y, int y_kind, const float *sample_weight, const int64_t *perm,
                           int64_t n_perm, int64_t start_batch, int64_t n_batches, int64_t batch_size,
                           const float *lr, int64_t iteration0, uint64_t *drop_offsets, int nthreads)
    int fg_net_evaluate(fg_net *net, int64_t *n_done, double *stats, const float *x, int64_t x_rows,
                        const void *y, int y_kind, const float *sample_weight, const int64_t *perm,
                        int64_t n_perm, int64_t start_batch, int64_t n_batches, int64_t batch_size,
                        int nthreads)
    int fg_net_predict(fg_net *net, float *out, const float *x, int64_t rows, int nthreads)
    int64_t fg_net_workspace_bytes(const fg_net *net)

cdef extern from "stdlib.h" nogil:
    void *calloc(size_t n, size_t size)
    void free(void *p)

#: stats columns of train_chunk / evaluate
STAT_LOSS, STAT_ACC, STAT_WEIGHT, STAT_ROWS = 0, 1, 2, 3
TARGET_INT32, TARGET_INT64, TARGET_FLOAT32 = 1, 2, 3
#: predict_small serves up to this many rows from a preallocated output
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


cdef struct _batch_data:
    # pointers into the caller's arrays, filled by Net._check_data once validated
    const float *x
    const void *y
    float *sw
    int64_t *perm


cdef class Net:
    """A compiled Sequential (see fastgrad.engine.compiled for the description format).

    Net(layers, in_features, params, grads, loss, optimizer=None)
      layers: list of dicts with keys kind, act, out_act, trainable, in, out, w_off, b_off,
              l1_w, l2_w, l1_b, l2_b, rate, seed, eps, bn_momentum, bn_rest (ints / floats)
              and moving_mean / moving_var (float32 arrays, batch norm); see csrc/step/fg_step.h
      params, grads: the model's flat float32 buffers (grads may be None for inference)
      loss: FG_LOSS_* code (0: inference only)
      optimizer: dict with kind, nesterov, centered, decoupled, momentum, beta1, beta2, rho,
                 eps, weight_decay, clipnorm, global_clipnorm, clipvalue and slot arrays
                 s1, s2, s3 (float32, n_params each, or None)
    """
    cdef fg_net *net
    cdef readonly int64_t in_features, out_features, n_layers, n_params
    cdef object _keep           # arrays the C side points into
    cdef object _capture        # the output-capture buffer, while set
    cdef cnp.ndarray _small_out  # preallocated predict_small output (SMALL_ROWS x out)

    def __cinit__(self):
        self.net = NULL

    def __init__(self, list layers, int64_t in_features, params, grads, int loss, optimizer=None):
        cdef int L = len(layers)
        cdef int64_t n = -1
        if L <= 0:
            raise ValueError("step.Net: at least one layer is needed")
        cdef float *p = _fptr(params, "step.Net", "params", -1)
        n = cnp.PyArray_SIZE(<cnp.ndarray>params)
        cdef float *g = _fptr(grads, "step.Net", "grads", n)
        cdef fg_layer_desc *descs = <fg_layer_desc *>calloc(L, sizeof(fg_layer_desc))
        cdef fg_optim_desc od
        cdef fg_optim_desc *odp = NULL
        cdef int st
        cdef fg_net *net = NULL
        if descs == NULL:
            raise MemoryError("step.Net: out of memory")
        keep = [params, grads]
        try:
            for i, d in enumerate(layers):
                descs[i].kind = d["kind"]
                descs[i].act = d["act"]
                descs[i].out_act = d.get("out_act", FG_ACT_NONE)
                descs[i].trainable = 1 if d.get("trainable", True) else 0
                descs[i].in_ = d["in"]
                descs[i].out = d["out"]
                descs[i].w_off = d.get("w_off", -1)
                descs[i].b_off = d.get("b_off", -1)
                descs[i].l1_w = d.get("l1_w", 0.0)
                descs[i].l2_w = d.get("l2_w", 0.0)
                descs[i].l1_b = d.get("l1_b", 0.0)
                descs[i].l2_b = d.get("l2_b", 0.0)
                descs[i].rate = d.get("rate", 0.0)
                descs[i].seed = d.get("seed", 0) & 0xFFFFFFFFFFFFFFFF
                descs[i].eps = d.get("eps", 0.0)
                descs[i].bn_momentum = d.get("bn_momentum", 0.0)
                descs[i].bn_rest = d.get("bn_rest", 0.0)
                descs[i].moving_mean = _fptr(d.get("moving_mean"), "step.Net", "moving_mean", d["out"])
                descs[i].moving_var = _fptr(d.get("moving_var"), "step.Net", "moving_var", d["out"])
                keep += [d.get("moving_mean"), d.get("moving_var")]
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
                od.clipnorm = optimizer.get("clipnorm") or 0.0
                od.global_clipnorm = optimizer.get("global_clipnorm") or 0.0
                od.clipvalue = optimizer.get("clipvalue") or 0.0
                od.s1 = _fptr(optimizer.get("s1"), "step.Net", "optimizer slot s1", n)
                od.s2 = _fptr(optimizer.get("s2"), "step.Net", "optimizer slot s2", n)
                od.s3 = _fptr(optimizer.get("s3"), "step.Net", "optimizer slot s3", n)
                keep += [optimizer.get("s1"), optimizer.get("s2"), optimizer.get("s3")]
                odp = &od
            st = fg_net_create(&net, descs, L, in_features, p, g, n, loss, odp)
        finally:
            free(descs)
        _raise(st, "step.Net", f"{L} layers, {in_features} input features, {n} parameters, loss {loss}")
        self.net = net
        self._keep = keep
        self.in_features = in_features
        self.out_features = layers[L - 1]["out"]
        self.n_layers = L
        self.n_params = n
        self._small_out = cnp.PyArray_EMPTY(2, [SMALL_ROWS, self.out_features], cnp.NPY_FLOAT32, 0)

    def __dealloc__(self):
        if self.net != NULL:
            fg_net_free(self.net)
            self.net = NULL

    def set_accuracy(self, int kind, float threshold=0.5, bint weighted=True):
        """The accuracy metric to accumulate; weighted=False ignores the sample weights."""
        _raise(fg_net_set_accuracy(self.net, kind, threshold), "step.Net.set_accuracy",
               f"kind {kind}")
        _raise(fg_net_set_accuracy_weighted(self.net, weighted), "step.Net.set_accuracy",
               f"weighted {weighted}")

    def capture_outputs(self, out):
        """Copy every batch's last-layer output of the following train_chunk / evaluate
        calls into `out` (float32 C-contiguous, rows x out_features: its capacity), rows
        in batch order from the start of each call; None switches it off."""
        cdef float *p = NULL
        cdef int64_t rows = 0
        if out is not None:
            if not _f32c(out) or cnp.PyArray_SIZE(<cnp.ndarray>out) % self.out_features:
                raise TypeError(f"capture_outputs: out must be a C-contiguous float32 array of "
                                f"rows x {self.out_features}")
            p = <float *>cnp.PyArray_DATA(<cnp.ndarray>out)
            rows = cnp.PyArray_SIZE(<cnp.ndarray>out) // self.out_features
        _raise(fg_net_capture_outputs(self.net, p, rows), "step.Net.capture_outputs", f"{rows} rows")
        self._capture = out

    def set_adaptive_threads(self, bint on):
        """Let train_chunk pick nthreads or one thread, whichever is faster now (default on;
        results are the same bits either way)."""
        _raise(fg_net_set_adaptive_threads(self.net, 1 if on else 0), "step.Net.set_adaptive_threads", "")

    @property
    def workspace_bytes(self):
        return fg_net_workspace_bytes(self.net)

    cdef int _check_data(self, str op, object x, object y, int y_kind, object sw, object perm,
                         int64_t *x_rows, int64_t *n_perm, _batch_data *d) except -1:
        if not _f32c(x) or cnp.PyArray_NDIM(<cnp.ndarray>x) < 1:
            raise TypeError(f"{op}: x must be a C-contiguous float32 array")
        x_rows[0] = cnp.PyArray_DIM(<cnp.ndarray>x, 0)
        if cnp.PyArray_SIZE(<cnp.ndarray>x) != x_rows[0] * self.in_features:
            raise ValueError(f"{op}: x has shape {(<object>x).shape}, expected ({x_rows[0]}, "
                             f"{self.in_features}) per-sample features")
        if not cnp.PyArray_Check(y) or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>y):
            raise TypeError(f"{op}: y must be a C-contiguous numpy array")
        cdef int t = cnp.PyArray_TYPE(<cnp.ndarray>y)
        cdef int64_t per = 1 if y_kind != TARGET_FLOAT32 else self.out_features
        if (y_kind == TARGET_INT32 and t != cnp.NPY_INT32) or (y_kind == TARGET_INT64 and t != cnp.NPY_INT64) \
                or (y_kind == TARGET_FLOAT32 and t != cnp.NPY_FLOAT32) or y_kind < 1 or y_kind > 3:
            raise TypeError(f"{op}: y has dtype {(<object>y).dtype}, which does not match target kind {y_kind}")
        if cnp.PyArray_SIZE(<cnp.ndarray>y) != x_rows[0] * per:
            raise ValueError(f"{op}: y has shape {(<object>y).shape}, expected {x_rows[0]} x {per} values")
        if sw is not None:
            _fptr(sw, op, "sample_weight", x_rows[0])
        if perm is None:
            n_perm[0] = x_rows[0]
        else:
            if not (cnp.PyArray_Check(perm) and cnp.PyArray_TYPE(<cnp.ndarray>perm) == cnp.NPY_INT64
                    and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>perm)):
                raise TypeError(f"{op}: perm must be a C-contiguous int64 array")
            n_perm[0] = cnp.PyArray_SIZE(<cnp.ndarray>perm)
        d.x = <const float *>cnp.PyArray_DATA(<cnp.ndarray>x)
        d.y = cnp.PyArray_DATA(<cnp.ndarray>y)
        d.sw = <float *>cnp.PyArray_DATA(<cnp.ndarray>sw) if sw is not None else NULL
        d.perm = <int64_t *>cnp.PyArray_DATA(<cnp.ndarray>perm) if perm is not None else NULL
        return 0

    def train_chunk(self, x, y, int y_kind, sw, perm, int64_t start_batch, int64_t n_batches,
                    int64_t batch_size, lr, int64_t iteration0, drop_offsets, stats, int nthreads):
        """Run n_batches training steps (IN x, y, sw, perm, lr; INOUT drop_offsets; OUT stats).

        lr: float32 (n_batches,) learning rates; stats: float64 (n_batches, 4), C-contiguous.
        Returns (status, n_done) and never raises for a C status: the caller first books the
        n_done applied steps, then calls check(status, ...). FG_ERR_NONFINITE (4): batch
        n_done's loss was NaN/inf (that batch not applied)."""
        cdef int64_t x_rows = 0, n_perm = 0, n_done = 0
        cdef _batch_data d
        self._check_data("train_chunk", x, y, y_kind, sw, perm, &x_rows, &n_perm, &d)
        cdef const float *plr = _fptr(lr, "train_chunk", "lr", n_batches)
        if not (cnp.PyArray_Check(stats) and cnp.PyArray_TYPE(<cnp.ndarray>stats) == cnp.NPY_FLOAT64
                and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>stats)
                and cnp.PyArray_SIZE(<cnp.ndarray>stats) >= n_batches * FG_STAT_COUNT):
            raise TypeError("train_chunk: stats must be a C-contiguous float64 array of "
                            f"{n_batches} x {FG_STAT_COUNT}")
        cdef uint64_t *pdo = NULL
        if drop_offsets is not None:
            if not (cnp.PyArray_Check(drop_offsets) and cnp.PyArray_TYPE(<cnp.ndarray>drop_offsets) == cnp.NPY_UINT64
                    and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>drop_offsets)
                    and cnp.PyArray_SIZE(<cnp.ndarray>drop_offsets) == self.n_layers):
                raise TypeError(f"train_chunk: drop_offsets must be a uint64 array of {self.n_layers}")
            pdo = <uint64_t *>cnp.PyArray_DATA(<cnp.ndarray>drop_offsets)
        cdef double *ps = <double *>cnp.PyArray_DATA(<cnp.ndarray>stats)
        cdef int st
        with nogil:
            st = fg_net_train_chunk(self.net, &n_done, ps, d.x, x_rows, d.y, y_kind, d.sw, d.perm, n_perm,
                                    start_batch, n_batches, batch_size, plr, iteration0, pdo, nthreads)
        return st, n_done

    def evaluate(self, x, y, int y_kind, sw, perm, int64_t start_batch, int64_t n_batches,
                 int64_t batch_size, stats, int nthreads):
        """Loss / accuracy statistics of n_batches batches (OUT stats, float64 (n_batches, 4)).
        Returns (status, n_done) like train_chunk."""
        cdef int64_t x_rows = 0, n_perm = 0, n_done = 0
        cdef _batch_data d
        self._check_data("evaluate", x, y, y_kind, sw, perm, &x_rows, &n_perm, &d)
        if not (cnp.PyArray_Check(stats) and cnp.PyArray_TYPE(<cnp.ndarray>stats) == cnp.NPY_FLOAT64
                and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>stats)
                and cnp.PyArray_SIZE(<cnp.ndarray>stats) >= n_batches * FG_STAT_COUNT):
            raise TypeError("evaluate: stats must be a C-contiguous float64 array of "
                            f"{n_batches} x {FG_STAT_COUNT}")
        cdef double *ps = <double *>cnp.PyArray_DATA(<cnp.ndarray>stats)
        cdef int st
        with nogil:
            st = fg_net_evaluate(self.net, &n_done, ps, d.x, x_rows, d.y, y_kind, d.sw, d.perm, n_perm,
                                 start_batch, n_batches, batch_size, nthreads)
        if st != FG_OK and st != FG_ERR_NONFINITE:
            _raise(st, "evaluate", f"batch {start_batch + n_done} of size {batch_size}, {n_perm} samples")
        return st, n_done

    def predict(self, x, out, int nthreads):
        """out = model(x) (IN x (rows, in_features) float32 C-contiguous; OUT out (rows, out_features))."""
        if not _f32c(x) or not _f32c(out):
            raise TypeError("predict: x and out must be C-contiguous float32 arrays")
        cdef int64_t rows = cnp.PyArray_DIM(<cnp.ndarray>x, 0) if cnp.PyArray_NDIM(<cnp.ndarray>x) else 0
        if cnp.PyArray_SIZE(<cnp.ndarray>x) != rows * self.in_features:
            raise ValueError(f"predict: x has shape {(<object>x).shape}, expected (rows, {self.in_features})")
        if cnp.PyArray_SIZE(<cnp.ndarray>out) != rows * self.out_features:
            raise ValueError(f"predict: out has shape {(<object>out).shape}, expected ({rows}, {self.out_features})")
        if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out):
            raise ValueError("predict: out is read-only")
        cdef const float *px = <const float *>cnp.PyArray_DATA(<cnp.ndarray>x)
        cdef float *po = <float *>cnp.PyArray_DATA(<cnp.ndarray>out)
        cdef int st
        with nogil:
            st = fg_net_predict(self.net, po, px, rows, nthreads)
        _raise(st, "predict", f"{rows} rows")
        return out

    def predict_small(self, x, int nthreads=1):
        """Outputs for a few rows (<= SMALL_ROWS) as a NEW array, computed into a
        preallocated buffer (no workspace allocation; the copy is the only one).
        x: C-contiguous float32 (rows, *input_shape)."""
        if not _f32c(x) or cnp.PyArray_NDIM(<cnp.ndarray>x) < 1:
            raise TypeError("predict_small: x must be a C-contiguous float32 array")
        cdef int64_t rows = cnp.PyArray_DIM(<cnp.ndarray>x, 0)
        if rows > SMALL_ROWS or cnp.PyArray_SIZE(<cnp.ndarray>x) != rows * self.in_features:
            raise ValueError(f"predict_small: x has shape {(<object>x).shape}; expected at most "
                             f"{SMALL_ROWS} rows of {self.in_features} features")
        cdef const float *px = <const float *>cnp.PyArray_DATA(<cnp.ndarray>x)
        cdef float *po = <float *>cnp.PyArray_DATA(self._small_out)
        cdef int st
        with nogil:
            st = fg_net_predict(self.net, po, px, rows, nthreads)
        _raise(st, "predict_small", f"{rows} rows")
        cdef cnp.npy_intp dims[2]
        dims[0] = rows
        dims[1] = self.out_features
        res = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT32, 0)
        memcpy(cnp.PyArray_DATA(<cnp.ndarray>res), po, rows * self.out_features * sizeof(float))
        return res
