"""scikit-learn estimators over fastgrad models: ``FastgradClassifier`` and
``FastgradRegressor``.

    from fastgrad.sklearn import FastgradClassifier
    clf = FastgradClassifier(hidden_layer_sizes=(64,), epochs=50, random_state=0)
    clf.fit(X, y).score(X_test, y_test)

The estimators follow scikit-learn's conventions (``get_params``/``set_params``
from ``BaseEstimator``, nothing but assignments in ``__init__``, fitted state in
attributes ending in ``_``), so ``clone``, ``Pipeline``, ``GridSearchCV`` and
``cross_val_score`` work, and pass ``sklearn.utils.estimator_checks.check_estimator``
(the checks expected to fail are listed in ``EXPECTED_FAILED_CHECKS``).

The network is, by default, scikit-learn's MLP: ``hidden_layer_sizes`` Dense
layers with ``activation`` and an output layer (softmax for classification,
linear for regression). ``model`` replaces it: a callable ``model(meta) ->
fastgrad model`` (``meta`` is a dict, see ``_meta``) or a ``fastgrad.Model`` used
as a template (its architecture is cloned with fresh weights at each ``fit``;
the object given is never trained). A model returned uncompiled is compiled
with ``optimizer``/``learning_rate``/``loss``/``metrics``; a compiled one is used
as compiled.

Randomness: with ``random_state`` an int (or a ``RandomState``), ``fit`` draws
every random number (initial weights, layer random streams, the shuffling of
each epoch, the early-stopping split) from a generator of the estimator's own,
``numpy.random.default_rng(random_state)``, put in place of fastgrad's library
generator for the duration of the call and then put back: the global state
(``fg.set_seed``) is neither read nor advanced. With ``random_state=None`` the
library generator is used (and advanced), so ``fg.set_seed`` governs. The swap
is process-wide for the duration of the call: do not fit estimators from two
threads of one process at once (joblib's default process-based backend, as
used by ``GridSearchCV(n_jobs=...)``, is fine).
"""
from __future__ import annotations

import contextlib
import numbers
import os
import tempfile
import warnings

import numpy as np
from typing import Any

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.preprocessing import LabelEncoder
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets, type_of_target
    from sklearn.utils.validation import check_is_fitted, validate_data, _check_sample_weight
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("fastgrad.sklearn needs scikit-learn >= 1.6 (pip install scikit-learn); "
                      f"importing it failed: {exc}") from exc

from . import _config

__all__ = ["FastgradClassifier", "FastgradRegressor", "EXPECTED_FAILED_CHECKS"]

#: Checks of ``check_estimator`` these estimators are expected to fail, with the reason
#: (pass as ``check_estimator(est, expected_failed_checks=EXPECTED_FAILED_CHECKS)``).
EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data":
        "mini-batch training: a sample of weight 2 and the same sample twice fall in different "
        "batches and shuffles, so the fitted weights differ (scikit-learn's MLP and SGD models "
        "fail it for the same reason)",
}


_TEMPLATE_TAG = "__fastgrad_model_template__"


@contextlib.contextmanager
def _library_rng(generator):
    """Make `generator` fastgrad's library generator for the block (None: leave it)."""
    if generator is None:
        yield
        return
    saved = _config._rng
    _config._rng = generator
    try:
        yield
    finally:
        _config._rng = saved


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class _FastgradEstimator(BaseEstimator):
    """Shared machinery of FastgradClassifier / FastgradRegressor."""

    _task: str | None = None

    def __init__(self, model=None, hidden_layer_sizes=(100,), activation="relu",
                 optimizer="adam", learning_rate=0.001, alpha=0.0001, batch_size="auto",
                 epochs=200, shuffle=True, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, tol=1e-4, loss=None, metrics=None, verbose=0,
                 random_state=None, **model_params):
        self.model = model
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.alpha = alpha
        self.batch_size = batch_size
        self.epochs = epochs
        self.shuffle = shuffle
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.loss = loss
        self.metrics = metrics
        self.verbose = verbose
        self.random_state = random_state
        # Routed parameters (scikeras's convention): any other keyword becomes an
        # estimator parameter of that name, seen by get_params / set_params (so
        # GridSearchCV can search it) and passed to a model-building function that
        # names it; the default MLP takes ``hidden_units``. Checked at fit.
        for key, value in model_params.items():
            setattr(self, key, value)
        self._routed_params = tuple(sorted(model_params))

    # ------------------------------------------------------------ routed parameters
    def get_params(self, deep=True):
        params = super().get_params(deep=deep)
        for key in getattr(self, "_routed_params", ()):
            params[key] = getattr(self, key)
        return params

    def _routed(self):
        """The routed parameters as a dict, their names checked."""
        name = type(self).__name__
        out = {}
        for key in getattr(self, "_routed_params", ()):
            if key.startswith("_") or key.endswith("_") or hasattr(type(self), key):
                raise ValueError(f"{name}: {key!r} cannot be a model parameter (it names an "
                                 "attribute of the estimator or a fitted attribute)")
            out[key] = getattr(self, key)
        return out

    # ------------------------------------------------------------ checks
    def _check_params(self):
        name = type(self).__name__
        routed = self._routed()
        hl = self.hidden_layer_sizes
        if self.model is None:
            unknown = sorted(set(routed) - {"hidden_units"})
            if unknown:
                raise ValueError(f"{name}: unknown parameter(s) {unknown} for the default MLP "
                                 "(parameters beyond the constructor's go to a model-building "
                                 "function given as model=...)")
            if "hidden_units" in routed:      # routed alias: units of the hidden layer(s)
                hl = routed["hidden_units"]
        if isinstance(hl, (numbers.Integral, np.integer)) and not isinstance(hl, bool):
            hl = (hl,)
        try:
            hl = tuple(hl)
        except TypeError:
            raise ValueError(f"{name}: hidden_layer_sizes must be a tuple of positive integers, "
                             f"got {hl!r}") from None
        for h in hl:
            _positive_int(h, f"{name}: each of hidden_layer_sizes")
        _positive_int(self.epochs, f"{name}: epochs")
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            _positive_int(self.batch_size, f"{name}: batch_size ('auto' or)")
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not (lr > 0 and np.isfinite(lr)):
            raise ValueError(f"{name}: learning_rate must be a positive number, got {lr!r}")
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, numbers.Real) or not (a >= 0 and np.isfinite(a)):
            raise ValueError(f"{name}: alpha must be a non-negative number, got {a!r}")
        vf = self.validation_fraction
        if self.early_stopping and (not isinstance(vf, numbers.Real) or not 0 < vf < 1):
            raise ValueError(f"{name}: validation_fraction must be in (0, 1), got {vf!r}")
        _positive_int(self.n_iter_no_change, f"{name}: n_iter_no_change")
        if not isinstance(self.tol, numbers.Real) or self.tol < 0:
            raise ValueError(f"{name}: tol must be a non-negative number, got {self.tol!r}")
        if self.verbose not in (0, 1, 2, True, False):
            raise ValueError(f"{name}: verbose must be 0, 1 or 2, got {self.verbose!r}")
        return hl

    def _batch_size_for(self, n):
        return min(200, n) if isinstance(self.batch_size, str) else min(int(self.batch_size), n)

    # ------------------------------------------------------------ the model
    def _meta(self, n_features, n_outputs):
        return {"task": self._task, "n_features_in": n_features, "n_outputs": n_outputs,
                "n_classes": getattr(self, "_n_classes", None),
                "classes": getattr(self, "classes_", None),
                "hidden_layer_sizes": tuple(self._check_params()),
                "activation": self.activation}

    def _default_model(self, n_features, n_outputs, hidden):
        from . import layers, regularizers, Sequential, Input
        reg = None
        if self.alpha:
            # scikit-learn's MLP adds 0.5 * alpha * ||W||^2 / batch rows to each batch's mean
            # loss; Keras's L2(l) adds l * ||W||^2, so l = 0.5 * alpha / batch rows.
            reg = regularizers.L2(0.5 * float(self.alpha) / self._batch_rows)
        out_act = "softmax" if self._task == "classification" else "linear"
        act = self.activation
        if isinstance(act, str):      # scikit-learn's MLP names for two Keras activations
            act = {"logistic": "sigmoid", "identity": "linear"}.get(act, act)
        seq = [Input((n_features,))]
        seq += [layers.Dense(h, activation=act, kernel_regularizer=reg)
                for h in hidden]
        seq.append(layers.Dense(n_outputs, activation=out_act, kernel_regularizer=reg))
        return Sequential(seq)

    def _optimizer(self):
        from . import optimizers
        opt = self.optimizer
        if isinstance(opt, str):
            cls = type(optimizers.get(opt, f"{type(self).__name__}: optimizer"))
            return cls(learning_rate=float(self.learning_rate))
        if isinstance(opt, optimizers.Optimizer):     # a copy: the parameter is never mutated
            return optimizers.deserialize(optimizers.serialize(opt))
        return optimizers.get(opt, f"{type(self).__name__}: optimizer")

    def _build_model(self, n_features, n_outputs):
        from . import models
        hidden = self._check_params()
        spec = self.model
        if spec is None:
            model = self._default_model(n_features, n_outputs, hidden)
        elif isinstance(spec, models.Model):
            model = models.clone_model(spec)
            if getattr(spec, "optimizer", None) is not None and spec.get_compile_config():
                model.compile_from_config(spec.get_compile_config())
        elif callable(spec):
            model = spec(self._meta(n_features, n_outputs), **self._build_kwargs(spec))
            if not isinstance(model, models.Model):
                raise TypeError(f"{type(self).__name__}: model(meta) must return a fastgrad "
                                f"model, got {type(model).__name__}")
        else:
            raise TypeError(f"{type(self).__name__}: model must be None, a callable "
                            f"model(meta) -> fastgrad.Model or a fastgrad.Model, got {spec!r}")
        if getattr(model, "optimizer", None) is None:
            model.compile(optimizer=self._optimizer(), loss=self._loss_for(model),
                          metrics=self.metrics)
        return model

    def _build_kwargs(self, fn):
        """The routed parameters a model-building function takes (all of them when it
        has ``**kwargs``); one it cannot take is an error, not silently dropped."""
        import inspect
        routed = self._routed()
        if not routed:
            return {}
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return routed
        ps = sig.parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in ps):
            return routed
        names = {p.name for p in ps if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        unknown = sorted(set(routed) - names)
        if unknown:
            raise ValueError(f"{type(self).__name__}: parameter(s) {unknown} are not arguments "
                             f"of the model-building function {getattr(fn, '__name__', fn)!r}")
        return routed

    def _model_outputs(self, model):
        shape = model.output_shape
        return shape[-1] if shape else None

    # ------------------------------------------------------------ training
    def _rng_for_fit(self):
        """The generator this fit draws from (None: the library generator)."""
        rs = self.random_state
        if rs is None:
            return None
        if isinstance(rs, (numbers.Integral, np.integer)) and not isinstance(rs, bool):
            return np.random.default_rng(int(rs))
        return np.random.default_rng(check_random_state(rs).randint(0, 2**31 - 1))

    def _callbacks(self, validating):
        from .callbacks import EarlyStopping
        return [EarlyStopping(monitor="val_loss" if validating else "loss",
                              min_delta=float(self.tol), patience=int(self.n_iter_no_change),
                              restore_best_weights=validating)]

    def _train(self, X, y_enc, sample_weight, epochs, fresh, generator):
        n = X.shape[0]
        with _library_rng(generator):
            bs = self._batch_size_for(n)
            val = None
            x_tr, y_tr, sw_tr = X, y_enc, sample_weight
            if fresh and self.early_stopping:
                from sklearn.model_selection import train_test_split
                strat = y_enc if self._task == "classification" else None
                seed = int(_config.rng().integers(0, 2**31 - 1))
                parts = train_test_split(X, y_enc, np.arange(n),
                                         test_size=self.validation_fraction,
                                         random_state=seed, stratify=strat)
                x_tr, x_va, y_tr, y_va, i_tr, i_va = parts
                sw_tr = None if sample_weight is None else sample_weight[i_tr]
                val = (x_va, y_va) if sample_weight is None else (x_va, y_va, sample_weight[i_va])
            cbs = self._callbacks(val is not None) if fresh else []
            verbose = int(self.verbose)
            hist = self.model_.fit(x_tr, y_tr, batch_size=bs, epochs=epochs, verbose=verbose,
                                   shuffle=bool(self.shuffle), sample_weight=sw_tr,
                                   validation_data=val, callbacks=cbs)
        h = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
        if fresh or not hasattr(self, "history_"):
            self.history_ = h
        else:
            for k, vals in h.items():
                self.history_.setdefault(k, []).extend(vals)
        self.loss_curve_ = list(self.history_.get("loss", []))
        self.n_iter_ = (0 if fresh else getattr(self, "n_iter_", 0)) + len(h.get("loss", []))
        return self

    def _new_model(self, n_rows, n_features, generator):
        with _library_rng(generator):
            self._batch_rows = self._batch_size_for(n_rows)
            self.model_ = self._build_model(n_features, self._n_model_outputs)
        self._rng_ = generator
        self._check_outputs()

    def _check_sw(self, sample_weight, X):
        if sample_weight is None:
            return None
        return _check_sample_weight(sample_weight, X, dtype=np.float32)

    def _predict_raw(self, X):
        check_is_fitted(self, "model_")
        X = validate_data(self, X, reset=False, dtype=np.float32)
        return self.model_.predict(X, verbose=0)

    # ------------------------------------------------------------ clone and pickling
    def __sklearn_clone__(self):
        """clone(): as BaseEstimator's, except that a fastgrad model given as ``model``
        (a template, never trained) is passed on as is (fastgrad models do not deepcopy)."""
        from . import models
        if not isinstance(self.model, models.Model):
            return super().__sklearn_clone__()
        from sklearn.base import clone
        params = self.get_params(deep=False)
        template = params.pop("model")
        return type(self)(model=template, **{k: clone(v, safe=False) for k, v in params.items()})

    def __getstate__(self):
        state = self.__dict__.copy()
        from . import models
        if isinstance(state.get("model"), models.Model):
            # a template travels as its architecture and compile configuration (its weights
            # are never used: fit clones it with fresh ones)
            t = state["model"]
            compiled = getattr(t, "optimizer", None) is not None
            state["model"] = (_TEMPLATE_TAG, type(t).__name__, t.get_config(),
                              t.get_compile_config() if compiled else None)
        model = state.pop("model_", None)
        if model is not None:
            with tempfile.TemporaryDirectory(prefix="fastgrad-sklearn-") as d:
                path = os.path.join(d, "model.fgm")
                model.save(path)
                with open(path, "rb") as f:
                    state["_model_fgm_bytes"] = f.read()
        return state

    def __setstate__(self, state):
        state = dict(state)
        raw = state.pop("_model_fgm_bytes", None)
        t = state.get("model")
        if isinstance(t, tuple) and len(t) == 4 and t[0] == _TEMPLATE_TAG:
            from .saving import MODEL_CLASSES
            template = MODEL_CLASSES[t[1]].from_config(t[2])
            if t[3]:
                template.compile_from_config(t[3])
            state["model"] = template
        self.__dict__.update(state)
        if raw is not None:
            from .saving import load_model
            with tempfile.TemporaryDirectory(prefix="fastgrad-sklearn-") as d:
                path = os.path.join(d, "model.fgm")
                with open(path, "wb") as f:
                    f.write(raw)
                # restore_rng=False: unpickling must not reset the library generator
                self.model_ = load_model(path, restore_rng=False)


class FastgradClassifier(ClassifierMixin, _FastgradEstimator):
    """A scikit-learn classifier that trains a fastgrad network.

    By default the network of ``sklearn.neural_network.MLPClassifier``:
    `hidden_layer_sizes` Dense layers with `activation` and a softmax output,
    sparse categorical cross-entropy, Adam. Parameters follow MLPClassifier
    where they mean the same, with Keras names where fastgrad's differ.

    Parameters
    ----------
    model : callable, Model or None, default None
        The network: None for the default MLP; a callable ``model(meta)``
        returning a fastgrad model (``meta`` holds n_features, n_outputs, ...);
        or a fastgrad Model used as a template (cloned with fresh weights at
        each ``fit``; the object given is never trained).
    hidden_layer_sizes : tuple of int, default (100,)
        Units of the default network's hidden Dense layers.
    activation : str, default "relu"
        Activation of the hidden layers.
    optimizer : str or Optimizer, default "adam"
        Optimizer of a model that comes uncompiled.
    learning_rate : float, default 0.001
        The optimizer's step (MLP's ``learning_rate_init``).
    alpha : float, default 0.0001
        MLP's L2 penalty: an L2 kernel regularizer of ``0.5 * alpha / batch_size``
        on every Dense layer of the default network.
    batch_size : int or "auto", default "auto"
        Rows per batch ("auto": ``min(200, n_samples)``, as MLP).
    epochs : int, default 200
        Most passes over the data (MLP's ``max_iter``).
    shuffle : bool, default True
        Shuffle the rows each epoch.
    early_stopping : bool, default False
        Hold out `validation_fraction` (stratified for a classifier) and stop
        when the validation loss has not improved by `tol` for
        `n_iter_no_change` epochs, restoring the best weights; without it,
        training stops when the training loss stalls the same way.
    validation_fraction : float, default 0.1
        Share of the rows held out with `early_stopping`, in (0, 1).
    n_iter_no_change : int, default 10
        Epochs without improvement before stopping.
    tol : float, default 1e-4
        Least improvement that counts.
    loss : str, Loss or None, default None
        Loss of a model that comes uncompiled (None: "sparse_categorical_crossentropy").
    metrics : list or None, default None
        Metrics of a model that comes uncompiled.
    verbose : {0, 1, 2}, default 0
        ``fit``'s verbosity.
    random_state : int, RandomState or None, default None
        With a value, every random number of ``fit`` comes from a generator of
        the estimator's own (fastgrad's global seed is neither read nor
        advanced); None uses fastgrad's library generator.
    **model_params
        Routed parameters (scikeras's convention): each becomes an estimator
        parameter of that name (seen by ``get_params`` / ``set_params``) and
        is passed to a model-building function that names it; the default
        network takes ``hidden_units``.

    Attributes
    ----------
    classes_ : numpy.ndarray
        The class labels.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : numpy.ndarray
        Column names, when ``fit`` got a DataFrame.
    model_ : Model
        The trained fastgrad model.
    history_ : History
        The last ``fit``'s history.
    loss_curve_ : list of float
        Training loss per epoch.
    n_iter_ : int
        Epochs run.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from fastgrad.sklearn import FastgradClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = FastgradClassifier(hidden_layer_sizes=(16,), epochs=5, random_state=0).fit(X, y)
    >>> clf.predict(X[:3]).shape
    (3,)
    """

    _task = "classification"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.multi_label = False
        return tags

    def _loss_for(self, model):
        if self.loss is not None:
            return self.loss
        if self._n_classes == 2 and self._model_outputs(model) == 1:
            return "binary_crossentropy"
        return "sparse_categorical_crossentropy"

    def _encode(self, y):
        if self._model_outputs(self.model_) == 1 and self._n_classes == 2:
            return y.astype(np.float32).reshape(-1, 1)
        return y.astype(np.int32)

    def _set_classes(self, classes):
        self._label_encoder = LabelEncoder().fit(classes)
        self.classes_ = self._label_encoder.classes_
        self._n_classes = len(self.classes_)
        if self._n_classes < 2:
            raise ValueError(f"{type(self).__name__}: the training labels hold only one class "
                             f"({self.classes_[0]!r}); a classifier needs at least 2 classes")
        self._n_model_outputs = self._n_classes

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> FastgradClassifier:
        """Train a new network for up to ``epochs`` epochs.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features)
            The input rows.
        y : array_like of shape (n_samples,)
            Class labels.
        sample_weight : array_like of shape (n_samples,) or None, default None
            Weight of each row.

        Returns
        -------
        FastgradClassifier
            The estimator itself.
        """
        self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float32, y_numeric=False)
        check_classification_targets(y)
        sample_weight = self._check_sw(sample_weight, X)
        self._set_classes(y)
        y_idx = self._label_encoder.transform(y)
        self._new_model(X.shape[0], X.shape[1], self._rng_for_fit())
        return self._train(X, self._encode(y_idx), sample_weight, int(self.epochs), True,
                           self._rng_)

    def _check_outputs(self):
        out = self._model_outputs(self.model_)
        if out != self._n_classes and not (out == 1 and self._n_classes == 2):
            raise ValueError(f"{type(self).__name__}: the model has {out} outputs for "
                             f"{self._n_classes} classes; it needs {self._n_classes} "
                             "(softmax probabilities)" +
                             (" or 1 (a sigmoid)" if self._n_classes == 2 else ""))

    def partial_fit(self, X: Any, y: Any, classes: Any = None,
                    sample_weight: Any = None) -> FastgradClassifier:
        """Train one epoch, continuing the current network (a new one on the first call).

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features)
            The input rows.
        y : array_like of shape (n_samples,)
            Class labels.
        classes : array_like or None, default None
            Every label of the problem: required on the first call, and must
            match ``classes_`` afterwards.
        sample_weight : array_like of shape (n_samples,) or None, default None
            Weight of each row.

        Returns
        -------
        FastgradClassifier
            The estimator itself.
        """
        first = not hasattr(self, "model_") or self.model_ is None
        if first:
            if classes is None:
                raise ValueError(f"{type(self).__name__}.partial_fit: classes must be given on "
                                 "the first call (every label of the problem)")
            self._check_params()
            X, y = validate_data(self, X, y, dtype=np.float32, reset=True)
            check_classification_targets(y)
            self._set_classes(np.asarray(classes))
        else:
            if classes is not None and not np.array_equal(np.unique(classes), self.classes_):
                raise ValueError(f"{type(self).__name__}.partial_fit: classes={classes!r} is not "
                                 f"the classes_ of the first call {self.classes_!r}")
            X, y = validate_data(self, X, y, dtype=np.float32, reset=False)
            check_classification_targets(y)
        unseen = np.setdiff1d(np.unique(y), self.classes_)
        if unseen.size:
            raise ValueError(f"{type(self).__name__}.partial_fit: labels {unseen.tolist()!r} are "
                             f"not among classes {self.classes_.tolist()!r}")
        sample_weight = self._check_sw(sample_weight, X)
        y_idx = self._label_encoder.transform(y)
        if first:
            self._new_model(X.shape[0], X.shape[1], self._rng_for_fit())
        return self._train(X, self._encode(y_idx), sample_weight, 1, False, self._rng_)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities of each row.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features)
            The input rows.

        Returns
        -------
        numpy.ndarray of shape (n_samples, n_classes)
            Probabilities in the order of ``classes_``.
        """
        p = np.asarray(self._predict_raw(X), dtype=np.float64)
        if p.ndim == 1 or p.shape[1] == 1:
            p = p.reshape(-1, 1)
            p = np.hstack([1.0 - p, p])
        s = p.sum(axis=1, keepdims=True)
        return p / np.where(s > 0, s, 1.0)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features)
            The input rows.

        Returns
        -------
        numpy.ndarray of shape (n_samples,)
            Labels from ``classes_``.
        """
        proba = self.predict_proba(X)      # first: an unfitted estimator raises NotFittedError
        return self.classes_[np.argmax(proba, axis=1)]


class FastgradRegressor(RegressorMixin, _FastgradEstimator):
    """A scikit-learn regressor that trains a fastgrad network.

    By default the network of ``sklearn.neural_network.MLPRegressor``:
    `hidden_layer_sizes` Dense layers with `activation` and a linear output,
    mean squared error, Adam. ``y`` may have several columns (one output unit
    each); predictions keep the shape of the ``y`` given to ``fit``.

    Parameters
    ----------
    model : callable, Model or None, default None
        The network: None for the default MLP; a callable ``model(meta)``
        returning a fastgrad model (``meta`` holds n_features, n_outputs, ...);
        or a fastgrad Model used as a template (cloned with fresh weights at
        each ``fit``; the object given is never trained).
    hidden_layer_sizes : tuple of int, default (100,)
        Units of the default network's hidden Dense layers.
    activation : str, default "relu"
        Activation of the hidden layers.
    optimizer : str or Optimizer, default "adam"
        Optimizer of a model that comes uncompiled.
    learning_rate : float, default 0.001
        The optimizer's step (MLP's ``learning_rate_init``).
    alpha : float, default 0.0001
        MLP's L2 penalty: an L2 kernel regularizer of ``0.5 * alpha / batch_size``
        on every Dense layer of the default network.
    batch_size : int or "auto", default "auto"
        Rows per batch ("auto": ``min(200, n_samples)``, as MLP).
    epochs : int, default 200
        Most passes over the data (MLP's ``max_iter``).
    shuffle : bool, default True
        Shuffle the rows each epoch.
    early_stopping : bool, default False
        Hold out `validation_fraction` (stratified for a classifier) and stop
        when the validation loss has not improved by `tol` for
        `n_iter_no_change` epochs, restoring the best weights; without it,
        training stops when the training loss stalls the same way.
    validation_fraction : float, default 0.1
        Share of the rows held out with `early_stopping`, in (0, 1).
    n_iter_no_change : int, default 10
        Epochs without improvement before stopping.
    tol : float, default 1e-4
        Least improvement that counts.
    loss : str, Loss or None, default None
        Loss of a model that comes uncompiled (None: "mean_squared_error").
    metrics : list or None, default None
        Metrics of a model that comes uncompiled.
    verbose : {0, 1, 2}, default 0
        ``fit``'s verbosity.
    random_state : int, RandomState or None, default None
        With a value, every random number of ``fit`` comes from a generator of
        the estimator's own (fastgrad's global seed is neither read nor
        advanced); None uses fastgrad's library generator.
    **model_params
        Routed parameters (scikeras's convention): each becomes an estimator
        parameter of that name (seen by ``get_params`` / ``set_params``) and
        is passed to a model-building function that names it; the default
        network takes ``hidden_units``.

    Attributes
    ----------
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : numpy.ndarray
        Column names, when ``fit`` got a DataFrame.
    model_ : Model
        The trained fastgrad model.
    history_ : History
        The last ``fit``'s history.
    loss_curve_ : list of float
        Training loss per epoch.
    n_iter_ : int
        Epochs run.
    """

    _task = "regression"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def _loss_for(self, model):
        return "mse" if self.loss is None else self.loss

    def _prepare_y(self, y, reset):
        y = np.asarray(y, dtype=np.float32)
        if reset:
            self._y_ndim = y.ndim
            self._n_model_outputs = 1 if y.ndim == 1 else y.shape[1]
        elif (1 if y.ndim == 1 else y.shape[1]) != self._n_model_outputs:
            raise ValueError(f"{type(self).__name__}.partial_fit: y has "
                             f"{1 if y.ndim == 1 else y.shape[1]} targets, the model "
                             f"{self._n_model_outputs}")
        return y.reshape(len(y), -1)

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> FastgradRegressor:
        """Train a new network for up to ``epochs`` epochs.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features)
            The input rows.
        y : array_like of shape (n_samples,) or (n_samples, n_targets)
            Targets.
        sample_weight : array_like of shape (n_samples,) or None, default None
            Weight of each row.

        Returns
        -------
        FastgradRegressor
            The estimator itself.
        """
        self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float32, multi_output=True, y_numeric=True)
        sample_weight = self._check_sw(sample_weight, X)
        y2 = self._prepare_y(y, True)
        self._new_model(X.shape[0], X.shape[1], self._rng_for_fit())
        return self._train(X, y2, sample_weight, int(self.epochs), True, self._rng_)

    def _check_outputs(self):
        out = self._model_outputs(self.model_)
        if out != self._n_model_outputs:
            raise ValueError(f"{type(self).__name__}: the model has {out} outputs for "
                             f"{self._n_model_outputs} targets")

    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> FastgradRegressor:
        """Train one epoch, continuing the current network (a new one on the first call).

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features)
            The input rows.
        y : array_like of shape (n_samples,) or (n_samples, n_targets)
            Targets.
        sample_weight : array_like of shape (n_samples,) or None, default None
            Weight of each row.

        Returns
        -------
        FastgradRegressor
            The estimator itself.
        """
        first = not hasattr(self, "model_") or self.model_ is None
        if first:
            self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float32, multi_output=True, y_numeric=True,
                             reset=first)
        sample_weight = self._check_sw(sample_weight, X)
        y2 = self._prepare_y(y, first)
        if first:
            self._new_model(X.shape[0], X.shape[1], self._rng_for_fit())
        return self._train(X, y2, sample_weight, 1, False, self._rng_)

    def predict(self, X: Any) -> np.ndarray:
        """Predict the targets of each row.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features)
            The input rows.

        Returns
        -------
        numpy.ndarray of shape (n_samples,) or (n_samples, n_targets)
            Predictions, shaped as ``y`` was in ``fit``.
        """
        p = np.asarray(self._predict_raw(X), dtype=np.float64)
        p = p.reshape(p.shape[0], -1)
        return p.ravel() if self._y_ndim == 1 else p
