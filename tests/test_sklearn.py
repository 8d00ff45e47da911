"""fastgrad.sklearn: FastgradClassifier / FastgradRegressor under scikit-learn's
estimator checks, in Pipeline / GridSearchCV / cross_val_score, partial_fit,
pickling, determinism and bad input."""
import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn", minversion="1.6")

from sklearn.base import clone                                     # noqa: E402
from sklearn.datasets import load_digits, make_classification, make_regression  # noqa: E402
from sklearn.exceptions import NotFittedError                      # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline                         # noqa: E402
from sklearn.preprocessing import StandardScaler                   # noqa: E402
from sklearn.utils.estimator_checks import check_estimator         # noqa: E402

import fastgrad as fg                                              # noqa: E402
from fastgrad import _config                                       # noqa: E402
from fastgrad.sklearn import (EXPECTED_FAILED_CHECKS, FastgradClassifier,  # noqa: E402
                              FastgradRegressor)


def small(cls, **kw):
    """An estimator small and quick enough for the estimator checks."""
    params = dict(hidden_layer_sizes=(16,), epochs=30, learning_rate=0.01)
    params.update(kw)
    return cls(**params)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X.astype(np.float32) / 16.0, y


@pytest.fixture(scope="module")
def blobs():
    X, y = make_classification(n_samples=300, n_features=8, n_informative=5, n_classes=3,
                               random_state=0)
    return X.astype(np.float32), y


@pytest.mark.parametrize("est", [small(FastgradClassifier), small(FastgradRegressor)],
                         ids=["classifier", "regressor"])
def test_check_estimator(est):
    results = check_estimator(est, expected_failed_checks=EXPECTED_FAILED_CHECKS, on_fail=None,
                              on_skip=None)
    failed = [(r["check_name"], repr(r["exception"])[:300]) for r in results
              if r["status"] == "failed"]
    assert not failed, failed
    ran = {r["check_name"] for r in results if r["status"] == "passed"}
    # the checks that exercise the estimators' substance ran and passed
    for name in ("check_fit_idempotent", "check_estimators_pickle", "check_estimators_unfitted",
                 "check_n_features_in_after_fitting", "check_estimators_nan_inf",
                 "check_methods_subset_invariance", "check_pipeline_consistency",
                 "check_supervised_y_2d", "check_dtype_object"):
        assert name in ran, name
    xfail = {r["check_name"] for r in results if r["status"] == "xfail"}
    assert xfail <= set(EXPECTED_FAILED_CHECKS)


def test_default_constructor_matches_mlp_names():
    from sklearn.neural_network import MLPClassifier
    ours = FastgradClassifier().get_params()
    mlp = MLPClassifier().get_params()
    for name in ("hidden_layer_sizes", "activation", "alpha", "batch_size", "shuffle",
                 "early_stopping", "validation_fraction", "n_iter_no_change", "tol", "verbose",
                 "random_state"):
        assert ours[name] == mlp[name], name
    assert ours["learning_rate"] == mlp["learning_rate_init"]
    assert ours["epochs"] == mlp["max_iter"]


def test_digits_accuracy_and_attributes(digits):
    X, y = digits
    clf = FastgradClassifier(hidden_layer_sizes=(64,), epochs=30, random_state=0).fit(X, y)
    assert clf.score(X, y) > 0.95
    assert list(clf.classes_) == list(range(10))
    assert clf.n_features_in_ == 64
    assert 1 <= clf.n_iter_ <= 30 and len(clf.loss_curve_) == clf.n_iter_
    p = clf.predict_proba(X[:5])
    assert p.shape == (5, 10) and p.dtype == np.float64
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    assert isinstance(clf.model_, fg.Model)


def test_gridsearch_on_digits(digits):
    X, y = digits
    grid = GridSearchCV(FastgradClassifier(epochs=15, random_state=0),
                        {"hidden_layer_sizes": [(16,), (64,)], "learning_rate": [1e-3, 1e-2]},
                        cv=3)
    grid.fit(X, y)
    assert set(grid.best_params_) == {"hidden_layer_sizes", "learning_rate"}
    assert grid.best_score_ > 0.85
    assert len(grid.cv_results_["mean_test_score"]) == 4
    # the bigger, faster-learning net is the better one after 15 epochs
    assert grid.best_params_["learning_rate"] == 1e-2


def _build_mlp(meta, hidden_units=16):
    return fg.Sequential([fg.Input((meta["n_features_in"],)),
                          fg.layers.Dense(hidden_units, activation="relu"),
                          fg.layers.Dense(meta["n_classes"], activation="softmax")])


@pytest.mark.parametrize("with_builder", [False, True])
def test_gridsearch_over_routed_hidden_units(digits, with_builder):
    """scikeras's convention: an extra constructor keyword is an estimator parameter,
    passed to a model-building function that names it (the default MLP takes
    ``hidden_units``), so GridSearchCV can search it."""
    X, y = digits
    kw = dict(model=_build_mlp) if with_builder else {}
    est = FastgradClassifier(epochs=10, random_state=0, hidden_units=8, **kw)
    assert est.get_params()["hidden_units"] == 8
    c = clone(est)
    assert c.hidden_units == 8 and c.get_params()["epochs"] == 10
    grid = GridSearchCV(est, {"hidden_units": [8, 32], "learning_rate": [1e-3, 1e-2]}, cv=3)
    grid.fit(X, y)
    assert set(grid.best_params_) == {"hidden_units", "learning_rate"}
    assert grid.best_score_ > 0.85
    best = grid.best_estimator_.model_
    assert best.layers[-2].units == grid.best_params_["hidden_units"]


def test_routed_parameter_errors(digits):
    X, y = digits
    with pytest.raises(ValueError, match="unknown parameter.*'depth'.*default MLP"):
        FastgradClassifier(epochs=1, depth=3).fit(X[:50], y[:50])
    with pytest.raises(ValueError, match="'width'.*not arguments of the model-building function"):
        FastgradClassifier(model=_build_mlp, epochs=1, width=3).fit(X[:50], y[:50])
    with pytest.raises(ValueError, match="'predict'.*cannot be a model parameter"):
        FastgradClassifier(model=_build_mlp, epochs=1, predict=3).fit(X[:50], y[:50])
    with pytest.raises(ValueError, match="Invalid parameter"):
        FastgradClassifier().set_params(hidden_units=4)


def test_pipeline_and_cross_val_score(digits):
    X, y = digits
    pipe = make_pipeline(StandardScaler(),
                         FastgradClassifier(hidden_layer_sizes=(32,), epochs=15, learning_rate=0.01,
                                            random_state=0))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.85
    pipe.fit(X, y)
    assert pipe.score(X, y) > 0.95


def test_regressor_multi_output_and_shapes():
    X, Y = make_regression(n_samples=300, n_features=6, n_targets=3, noise=0.1, random_state=0)
    Y = Y / np.abs(Y).max()
    reg = FastgradRegressor(hidden_layer_sizes=(32,), epochs=100, learning_rate=0.01,
                            random_state=0).fit(X, Y)
    assert reg.predict(X).shape == (300, 3)
    assert reg.score(X, Y) > 0.9
    reg1 = clone(reg).fit(X, Y[:, 0])
    assert reg1.predict(X).shape == (300,)
    reg2 = clone(reg).fit(X, Y[:, :1])
    assert reg2.predict(X).shape == (300, 1)
    assert reg.model_.output_shape[-1] == 3


def test_string_labels_and_binary(blobs):
    X, y = blobs
    labels = np.array(["cat", "dog", "emu"])[y]
    clf = small(FastgradClassifier, random_state=0).fit(X, labels)
    assert list(clf.classes_) == ["cat", "dog", "emu"]
    assert set(clf.predict(X)) <= {"cat", "dog", "emu"}
    assert clf.score(X, labels) > 0.7
    yb = np.where(y == 0, -1, 7)
    clf = small(FastgradClassifier, random_state=0).fit(X, yb)
    assert list(clf.classes_) == [-1, 7]
    assert clf.predict_proba(X).shape == (300, 2)


def test_random_state_determinism_leaves_global_generator(blobs):
    X, y = blobs
    fg.set_seed(123)
    before = _config.rng().bit_generator.state
    a = small(FastgradClassifier, random_state=7).fit(X, y)
    assert _config.rng().bit_generator.state == before      # not read, not advanced
    b = small(FastgradClassifier, random_state=7).fit(X, y)
    c = small(FastgradClassifier, random_state=8).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))
    # random_state=None: the library generator (fg.set_seed) decides
    fg.set_seed(5)
    d = small(FastgradClassifier).fit(X, y)
    fg.set_seed(5)
    e = small(FastgradClassifier).fit(X, y)
    np.testing.assert_array_equal(d.predict_proba(X), e.predict_proba(X))
    assert _config.rng().bit_generator.state != before


def test_partial_fit_classifier(blobs):
    X, y = blobs
    clf = small(FastgradClassifier, random_state=0)
    with pytest.raises(ValueError, match="classes must be given"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[:100], y[:100], classes=[0, 1, 2])
    assert clf.n_iter_ == 1
    w0 = [w.copy() for w in clf.model_.get_weights()]
    for _ in range(20):
        clf.partial_fit(X, y)
    assert clf.n_iter_ == 21 and len(clf.loss_curve_) == 21
    assert not np.array_equal(w0[0], clf.model_.get_weights()[0])
    assert clf.score(X, y) > 0.7
    with pytest.raises(ValueError, match="not among classes"):
        clf.partial_fit(X[:3], [0, 1, 5])
    with pytest.raises(ValueError, match="features"):
        clf.partial_fit(X[:, :3], y)
    # a partial_fit sequence with one random_state is reproducible
    other = small(FastgradClassifier, random_state=0)
    other.partial_fit(X[:100], y[:100], classes=[0, 1, 2])
    for _ in range(20):
        other.partial_fit(X, y)
    np.testing.assert_array_equal(other.predict_proba(X), clf.predict_proba(X))


def test_partial_fit_regressor():
    X, y = make_regression(n_samples=200, n_features=4, noise=0.1, random_state=1)
    y = y / np.abs(y).max()
    reg = small(FastgradRegressor, random_state=0)
    for _ in range(40):
        reg.partial_fit(X, y)
    assert reg.n_iter_ == 40 and reg.score(X, y) > 0.8
    with pytest.raises(ValueError, match="targets"):
        reg.partial_fit(X, np.c_[y, y])


def test_sample_weight_changes_fit(blobs):
    X, y = blobs
    sw = np.where(y == 0, 10.0, 0.1)
    a = small(FastgradClassifier, random_state=0).fit(X, y)
    b = small(FastgradClassifier, random_state=0).fit(X, y, sample_weight=sw)
    c = small(FastgradClassifier, random_state=0).fit(X, y, sample_weight=np.ones(len(y)))
    np.testing.assert_array_equal(a.predict_proba(X), c.predict_proba(X))
    assert (b.predict(X) == 0).mean() > (a.predict(X) == 0).mean()
    with pytest.raises(ValueError):
        small(FastgradClassifier).fit(X, y, sample_weight=np.ones(5))


def test_pickle_and_clone_fitted(blobs):
    X, y = blobs
    clf = small(FastgradClassifier, random_state=0).fit(X, y)
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    back.partial_fit(X, y)          # the optimizer state came along: training continues
    assert back.n_iter_ == clf.n_iter_ + 1
    fresh = clone(clf)
    assert not hasattr(fresh, "model_") and fresh.get_params() == clf.get_params()


def _mlp_builder(meta):
    # a module-level function: estimators holding it pickle
    m = fg.Sequential([fg.Input((meta["n_features_in"],)),
                       fg.layers.Dense(24, activation="tanh"),
                       fg.layers.Dense(meta["n_outputs"], activation="softmax")])
    return m


def test_model_callable_and_model_template(blobs):
    X, y = blobs
    clf = FastgradClassifier(model=_mlp_builder, epochs=20, learning_rate=0.01,
                             random_state=0).fit(X, y)
    assert clf.model_.layers[0].units == 24 and clf.score(X, y) > 0.7
    assert pickle.loads(pickle.dumps(clf)).score(X, y) == clf.score(X, y)
    # a compiled model returned by the callable is used as compiled
    def compiled(meta):
        m = _mlp_builder(meta)
        m.compile(optimizer=fg.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
        return m
    clf2 = FastgradClassifier(model=compiled, epochs=5, random_state=0).fit(X, y)
    assert type(clf2.model_.optimizer).__name__ == "SGD"
    # a fastgrad model as template: cloned (fresh weights), never trained itself
    template = _mlp_builder({"n_features_in": 8, "n_outputs": 3})
    w = [a.copy() for a in template.get_weights()]
    est = FastgradClassifier(model=template, epochs=5, random_state=0)
    est.fit(X, y)
    for a, b in zip(w, template.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert est.model_ is not template
    twin = clone(est)
    assert twin.model is template                 # a template is shared, never trained
    twin.fit(X, y)
    np.testing.assert_array_equal(twin.predict_proba(X), est.predict_proba(X))
    est2 = pickle.loads(pickle.dumps(est))        # the template pickles as its configuration
    assert isinstance(est2.model, fg.Model) and est2.model is not template
    np.testing.assert_array_equal(est2.predict_proba(X), est.predict_proba(X))
    est2.fit(X, y)
    np.testing.assert_array_equal(est2.predict_proba(X), est.predict_proba(X))


def test_binary_sigmoid_model(blobs):
    X, y = blobs
    yb = (y == 1).astype(int)
    def sigmoid(meta):
        assert meta["n_classes"] == 2 and meta["task"] == "classification"
        return fg.Sequential([fg.Input((meta["n_features_in"],)), fg.layers.Dense(8, "relu"),
                              fg.layers.Dense(1, activation="sigmoid")])
    clf = FastgradClassifier(model=sigmoid, epochs=30, learning_rate=0.01,
                             random_state=0).fit(X, yb)
    assert clf.model_.loss is not None
    p = clf.predict_proba(X)
    assert p.shape == (300, 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert clf.score(X, yb) > 0.7


def test_mlp_activation_names(blobs):
    X, y = blobs
    clf = small(FastgradClassifier, activation="logistic", epochs=2).fit(X, y)
    assert clf.model_.layers[0].get_config()["activation"] == "sigmoid"


def test_early_stopping(digits):
    X, y = digits
    clf = FastgradClassifier(hidden_layer_sizes=(32,), epochs=500, early_stopping=True,
                             n_iter_no_change=3, random_state=0).fit(X, y)
    assert clf.n_iter_ < 500
    assert "val_loss" in clf.history_ and len(clf.history_["val_loss"]) == clf.n_iter_


def test_bad_input(blobs):
    X, y = blobs
    with pytest.raises(NotFittedError):
        FastgradClassifier().predict(X)
    fitted = small(FastgradClassifier, epochs=2).fit(X, y)
    with pytest.raises(ValueError, match="8 features"):
        fitted.predict(X[:, :5])
    Xn = X.copy()
    Xn[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        small(FastgradClassifier).fit(Xn, y)
    with pytest.raises(ValueError, match="Unknown label type"):
        small(FastgradClassifier).fit(X, y + 0.5)
    with pytest.raises(ValueError, match="class"):
        small(FastgradClassifier).fit(X, np.zeros(len(y)))
    for bad in [dict(hidden_layer_sizes=(0,)), dict(epochs=0), dict(learning_rate=-1.0),
                dict(batch_size=0), dict(alpha=-1.0), dict(hidden_layer_sizes="ab")]:
        est = small(FastgradClassifier, **bad)                   # constructing never raises
        with pytest.raises(ValueError, match="FastgradClassifier"):
            est.fit(X, y)
    with pytest.raises(ValueError, match="unknown optimizer"):
        small(FastgradClassifier, optimizer="nope").fit(X, y)
    with pytest.raises(TypeError, match="model"):
        small(FastgradClassifier, model=42).fit(X, y)
    with pytest.raises(ValueError, match="outputs for 3 classes"):
        FastgradClassifier(model=lambda meta: _mlp_builder({"n_features_in": 8,
                                                            "n_outputs": 4})).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        small(FastgradRegressor).fit(X, y.astype(float)).predict(X[:, :2])


def test_integer_features_and_float64_inputs(blobs):
    X, y = blobs
    Xi = np.rint(X * 4).astype(np.int64)
    clf = small(FastgradClassifier, random_state=0).fit(Xi, y)
    assert clf.predict(Xi).shape == (300,)
    clf64 = small(FastgradClassifier, random_state=0).fit(X.astype(np.float64), y)
    clf32 = small(FastgradClassifier, random_state=0).fit(X, y)
    np.testing.assert_array_equal(clf64.predict_proba(X), clf32.predict_proba(X))


def test_dataframe_feature_names(blobs):
    pd = pytest.importorskip("pandas")
    X, y = blobs
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    clf = small(FastgradClassifier, random_state=0).fit(df, y)
    assert list(clf.feature_names_in_) == list(df.columns)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf.predict(df)
