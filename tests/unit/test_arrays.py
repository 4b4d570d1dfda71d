"""The scikit-learn models as arrays (training/arrays.py writes them, service/arrays.py runs
them): the same probabilities as scikit-learn on real and on odd inputs, and a model the
arrays cannot express is refused rather than served wrong."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import load_digits, load_iris
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import SVC

from service import arrays as served
from training import arrays

IRIS_X, IRIS_Y = load_iris(return_X_y=True)
DIGITS_X, DIGITS_Y = load_digits(return_X_y=True)


def served_from(model, rows, matrix=None):
    """Export the model, check parity on `rows`, and load the file as the service does."""
    expected = model.predict_proba(rows)
    conversion = arrays.convert(model, rows, expected, matrix)
    assert not conversion.failures, conversion.failures
    assert conversion.metadata["parity_max_abs_diff"] <= arrays.PARITY_MAX_ABS_DIFF
    return served.predictor(*served.read(conversion.content))


def test_a_scaled_logistic_regression():
    model = Pipeline([("scale", StandardScaler()), ("logreg", LogisticRegression(C=10.0, max_iter=1000))])
    model.fit(IRIS_X, IRIS_Y)
    odd = np.random.default_rng(1).uniform(-5, 30, size=(300, 4))  # far outside the training data
    predict = served_from(model, np.vstack([IRIS_X, odd]))
    np.testing.assert_allclose(predict(odd), model.predict_proba(odd), rtol=0, atol=1e-12)
    assert predict(IRIS_X[:1]).shape == (1, 3)


def test_a_calibrated_rbf_svm_on_digits():
    model = CalibratedClassifierCV(SVC(C=10.0, gamma=0.001, random_state=0), ensemble=False)
    model.fit(DIGITS_X[:900], DIGITS_Y[:900])
    rng = np.random.default_rng(2)
    odd = np.vstack([rng.uniform(0, 16, size=(200, 64)), np.zeros((1, 64)), np.full((1, 64), 16.0),
                     rng.integers(0, 17, size=(50, 64))])
    predict = served_from(model, np.vstack([DIGITS_X[900:], odd]))
    for rows in (odd, DIGITS_X[900:901], DIGITS_X[900:]):
        got, expected = predict(rows), model.predict_proba(rows)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))


def categorical_data(rows: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two category-code columns (sparse codes, as kobe's), then two numbers with NaNs."""
    rng = np.random.default_rng(seed)
    codes_a = rng.choice([0.0, 2.0, 5.0, 7.0, 40.0], size=rows)
    codes_b = rng.choice(np.arange(12.0), size=rows)
    numbers = rng.normal(size=(rows, 2))
    numbers[rng.random((rows, 2)) < 0.05] = np.nan
    x = np.column_stack([codes_a, codes_b, numbers])
    logit = (codes_a == 5) * 1.5 - (codes_b % 3 == 0) + numbers[:, 0] * np.nan_to_num(numbers[:, 1])
    return x, (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)


def test_boosted_trees_with_categorical_splits_on_unknown_missing_and_odd_codes():
    x, y = categorical_data()
    model = HistGradientBoostingClassifier(max_iter=60, max_leaf_nodes=15, categorical_features=[0, 1],
                                           random_state=0).fit(x, y)
    predict = served_from(model, x)
    rng = np.random.default_rng(3)
    odd = categorical_data(500, seed=4)[0]
    # Unknown, missing, negative, fractional and out-of-range codes: scikit-learn treats
    # them all as missing; so must the arrays.
    odd[:, :2] = rng.choice([-1.0, np.nan, 0.5, 999.0, 3.0, 0.0, 5.0, 11.0, 300.0], size=(500, 2))
    for rows in (x, odd, odd[:1], x[:64], x[:65]):  # one block of rows, and more than one
        np.testing.assert_allclose(predict(rows), model.predict_proba(rows), rtol=0, atol=1e-15)
    before = odd.copy()
    predict(odd)
    np.testing.assert_array_equal(odd, before)  # the caller's matrix is left as it was


def test_boosted_trees_without_categorical_features():
    x, y = categorical_data()
    model = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(x, y)
    predict = served_from(model, x)
    np.testing.assert_allclose(predict(x), model.predict_proba(x), rtol=0, atol=1e-15)


def test_a_pipeline_starting_with_the_model_matrix_exports_the_rest():
    def matrix(rows):
        return np.asarray(rows, np.float64) * 2.0

    x, y = categorical_data()
    model = Pipeline([("features", FunctionTransformer(matrix)),
                      ("boost", HistGradientBoostingClassifier(max_iter=20, categorical_features=[0, 1]))]).fit(x, y)
    predict = served_from(model, x, matrix)
    np.testing.assert_allclose(predict(matrix(x)), model.predict_proba(x), rtol=0, atol=1e-15)
    other = Pipeline([("features", FunctionTransformer(lambda rows: rows)), ("boost", model[-1])])
    with pytest.raises(arrays.NotExportable, match="does not start with FunctionTransformer"):
        arrays.convert(other, x, other.predict_proba(x), matrix)


def test_models_the_arrays_cannot_express_are_refused():
    binary = LogisticRegression().fit(IRIS_X, IRIS_Y == 0)  # a sigmoid, not a softmax
    two_scalers = Pipeline([("a", StandardScaler()), ("b", StandardScaler()),
                            ("lr", LogisticRegression())]).fit(IRIS_X, IRIS_Y)
    linear_kernel = CalibratedClassifierCV(SVC(kernel="linear"), ensemble=False).fit(IRIS_X, IRIS_Y)
    not_categorical_first = HistGradientBoostingClassifier(max_iter=5, categorical_features=[1])
    not_categorical_first.fit(*categorical_data())
    for model in (binary, two_scalers, linear_kernel, not_categorical_first, SVC(probability=True).fit(IRIS_X, IRIS_Y)):
        with pytest.raises(arrays.NotExportable):
            arrays.export(model)


def test_arrays_that_answer_differently_are_not_saved():
    model = LogisticRegression(max_iter=1000).fit(IRIS_X, IRIS_Y)
    shifted = model.predict_proba(IRIS_X)[:, ::-1]  # what scikit-learn "said": other labels
    changed = int((shifted.argmax(axis=1) != model.predict_proba(IRIS_X).argmax(axis=1)).sum())
    conversion = arrays.convert(model, IRIS_X, shifted)
    assert changed > 0
    assert any(f"the arrays: {changed} of {len(IRIS_X)} held-out labels change" == failure
               for failure in conversion.failures), conversion.failures
    assert any("the arrays: probabilities differ from scikit-learn's" in failure for failure in conversion.failures)


def test_another_scikit_learn_is_refused(monkeypatch):
    import sklearn

    model = LogisticRegression(max_iter=1000).fit(IRIS_X, IRIS_Y)
    monkeypatch.setattr(sklearn, "__version__", "1.10.0")
    with pytest.raises(arrays.NotExportable, match=f"written for scikit-learn {arrays.EXPORTED_SKLEARN}"):
        arrays.convert(model, IRIS_X, model.predict_proba(IRIS_X))


def test_the_file_holds_no_pickles_and_an_unknown_kind_is_refused():
    content = served.save("softmax_linear", {"mean": np.zeros(2)})
    kind, stored = served.read(content)  # np.load(allow_pickle=False) inside
    assert kind == "softmax_linear" and list(stored) == ["mean"]
    with pytest.raises(ValueError, match="unknown kind of stored arrays 'forest'"):
        served.predictor("forest", stored)
