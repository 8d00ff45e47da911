"""fastgrad inside scikit-learn: a Pipeline with a grid search over the network's
size and learning rate on the digits data, then the test score.

    python examples/sklearn_digits.py
"""
import time

from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fastgrad.sklearn import FastgradClassifier


def main():
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    pipe = make_pipeline(StandardScaler(), FastgradClassifier(epochs=30, random_state=0))
    grid = GridSearchCV(pipe, {"fastgradclassifier__hidden_layer_sizes": [(32,), (128,)],
                               "fastgradclassifier__learning_rate": [1e-3, 1e-2]}, cv=3)
    t = time.perf_counter()
    grid.fit(X_tr, y_tr)
    print(f"grid search: {time.perf_counter() - t:.1f} s, best {grid.best_params_} "
          f"(cv accuracy {grid.best_score_:.3f})")
    print(f"test accuracy: {grid.score(X_te, y_te):.3f}")


if __name__ == "__main__":
    main()
