"""iris is served from its coefficients only where they give scikit-learn's probabilities."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from service.linear import linear_predictor

X, Y = load_iris(return_X_y=True)
PROBE = np.random.default_rng(1).uniform(0, 30, size=(300, 4))


def test_a_scaled_logistic_regression_gives_scikit_learns_probabilities():
    model = Pipeline([("scale", StandardScaler()), ("logreg", LogisticRegression(C=10.0, max_iter=1000))]).fit(X, Y)
    predict = linear_predictor(model, PROBE)
    assert predict is not None
    rows = np.vstack([X, PROBE[::-1], np.zeros((1, 4))])
    np.testing.assert_allclose(predict(rows), model.predict_proba(rows), rtol=0, atol=1e-12)
    assert predict(X[:1]).shape == (1, 3)


def test_other_models_keep_scikit_learn():
    svc = Pipeline([("scale", StandardScaler()), ("svc", SVC(probability=True))]).fit(X, Y)
    binary = LogisticRegression().fit(X, Y == 0)  # a sigmoid, not a softmax
    two_scalers = Pipeline([("a", StandardScaler()), ("b", StandardScaler()), ("lr", LogisticRegression())]).fit(X, Y)
    assert linear_predictor(svc, PROBE) is None
    assert linear_predictor(binary, PROBE) is None
    assert linear_predictor(two_scalers, PROBE) is None


def test_coefficients_that_disagree_with_predict_proba_keep_scikit_learn(caplog):
    fitted = Pipeline([("scale", StandardScaler()), ("logreg", LogisticRegression())]).fit(X, Y)
    odd = SimpleNamespace(steps=fitted.steps, predict_proba=lambda rows: np.full((len(rows), 3), 1 / 3))
    assert linear_predictor(odd, PROBE) is None
    assert "keeps scikit-learn's predict_proba" in caplog.text
