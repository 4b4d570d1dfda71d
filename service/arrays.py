"""The scikit-learn models served from plain arrays, with numpy alone.

Importing scikit-learn costs a worker 1.2-1.6 s at start-up (it imports SciPy, pandas and
pyarrow), and its predict_proba spends most of a one-row call on per-call checks. Each
fitted model is therefore also written, at training time, as the arrays its prediction
needs (training/arrays.py), and checked there against scikit-learn's own predict_proba:
a model whose arrays give other labels, or probabilities more than 1e-9 apart, is not
saved. The pickled scikit-learn model stays in the store as the source of truth.

Three kinds, one function each, taking the arrays and returning rows -> probabilities:
- "softmax_linear": a scaled multinomial logistic regression (iris);
- "calibrated_rbf_svm": an RBF SVC, one-vs-one, calibrated with one sigmoid per class (digits);
- "boosted_trees": binary gradient-boosted trees with categorical splits (kobe), whose
  input is the model matrix (preprocessing.MODEL_MATRICES) with category codes first.

Why numpy and not a model runtime (decided by measurement, docs/benchmarks.md): ONNX
Runtime misses the 1e-9 parity for the SVM (its support vectors are float32: 3.6e-8 off)
and is 4-6x slower on it; skl2onnx cannot convert the kobe trees (categorical splits);
treelite mishandles unknown category codes and brings SciPy back (146 MB, 142 ms import).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping

import numpy as np

Arrays = Mapping[str, np.ndarray]
Predictor = Callable[[np.ndarray], np.ndarray]


def save(kind: str, arrays: Arrays) -> bytes:
    """The .npz file content (no pickles: it loads with allow_pickle=False)."""
    buffer = io.BytesIO()
    np.savez(buffer, kind=np.array(kind), **arrays)
    return buffer.getvalue()


def read(content: bytes) -> tuple[str, dict[str, np.ndarray]]:
    with np.load(io.BytesIO(content), allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    return str(arrays.pop("kind")), arrays


def predictor(kind: str, arrays: Arrays) -> Predictor:
    """rows (float64 array) -> probabilities (rows, classes)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of stored arrays {kind!r} (known: {', '.join(KINDS)})")
    return KINDS[kind](arrays)


def softmax_linear(arrays: Arrays) -> Predictor:
    """softmax(((x - mean) / scale) @ weights + intercept), in scikit-learn's order of operations."""
    mean, scale = arrays["mean"], arrays["scale"]
    weights, intercept = np.ascontiguousarray(arrays["weights"]), arrays["intercept"]

    def predict_proba(rows: np.ndarray) -> np.ndarray:
        scores = ((np.asarray(rows, dtype=np.float64) - mean) / scale) @ weights + intercept
        scores -= scores.max(axis=1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=1, keepdims=True)
        return scores

    return predict_proba


def calibrated_rbf_svm(arrays: Arrays) -> Predictor:
    """libsvm's one-vs-one decisions, scikit-learn's one-vs-rest transform of them, then a
    sigmoid per class, normalised (sklearn.calibration with ensemble=False)."""
    support = np.ascontiguousarray(arrays["support_vectors"])
    support_norms = np.einsum("ij,ij->i", support, support)
    gamma = float(arrays["gamma"])
    pair_weights, pair_intercept = arrays["pair_weights"], arrays["pair_intercept"]
    first, second = arrays["pair_first"], arrays["pair_second"]  # (pairs, classes) one-hot
    margin = first - second
    slope, offset = arrays["calibration_a"], arrays["calibration_b"]
    classes = first.shape[1]

    def predict_proba(rows: np.ndarray) -> np.ndarray:
        x = np.asarray(rows, dtype=np.float64)
        distances = np.einsum("ij,ij->i", x, x)[:, None] + support_norms - 2.0 * (x @ support.T)
        np.maximum(distances, 0.0, out=distances)
        decisions = np.exp(-gamma * distances) @ pair_weights + pair_intercept  # > 0: first class wins
        votes = (decisions >= 0) @ first + (decisions < 0) @ second
        confidence = decisions @ margin
        one_vs_rest = votes + confidence / (3 * (np.abs(confidence) + 1))
        probabilities = 1.0 / (1.0 + np.exp(slope * one_vs_rest + offset))
        total = probabilities.sum(axis=1, keepdims=True)
        probabilities = np.divide(probabilities, total, out=np.full_like(probabilities, 1 / classes),
                                  where=total != 0)
        probabilities[(probabilities > 1.0) & (probabilities <= 1.0 + 1e-5)] = 1.0
        return probabilities

    return predict_proba


TREE_ROWS_PER_STEP = 64
"""Rows decided together: kobe's 3,000 nodes x 64 rows stay in the CPU's cache (1,000 rows
at once took 1.5x longer a row than in blocks of 64)."""


def boosted_trees(arrays: Arrays) -> Predictor:
    """All splits of all trees decided at once for each row, then every tree walked down
    its decided children, one level per step (a leaf is its own child).

    The leading columns are category codes: each becomes its position among the values
    seen in training (unknown: NaN, i.e. missing), as the estimator's own OrdinalEncoder
    does. A numeric split sends NaN the missing way and goes left when the value is <=
    its threshold; a categorical split looks its position up in a table written at
    training from scikit-learn's bitsets (the last column is "missing"). The leaf values
    are summed in tree order after the baseline, as scikit-learn does, so the sums are
    the same to the last bit.

    Up to 64 rows (every adaptive batch) this is faster than scikit-learn's compiled
    walk (one row: 0.13 against 0.8 ms); a request of 1,000 records takes about 20 us a
    row against its 7.
    """
    known = [values[:count] for values, count in zip(arrays["category_values"], arrays["category_counts"], strict=True)]
    numeric, categorical = arrays["numeric_nodes"], arrays["categorical_nodes"]
    numeric_feature, threshold = arrays["numeric_feature"], arrays["threshold"]
    numeric_missing_left = arrays["numeric_missing_left"]
    categorical_feature, category_goes_left = arrays["categorical_feature"], arrays["category_goes_left"]
    missing_column = category_goes_left.shape[1] - 1
    table_row = np.arange(len(categorical))
    left, right, value = arrays["left"], arrays["right"], arrays["value"]
    roots, depth, baseline = arrays["roots"], int(arrays["depth"]), float(arrays["baseline"])

    def predict_proba(rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.float64)
        if len(rows) <= TREE_ROWS_PER_STEP:
            return predict_block(rows)
        return np.concatenate([predict_block(rows[start:start + TREE_ROWS_PER_STEP])
                               for start in range(0, len(rows), TREE_ROWS_PER_STEP)])

    def predict_block(rows: np.ndarray) -> np.ndarray:
        x = np.array(rows, dtype=np.float64)  # a copy: the caller's matrix is left as it was
        for column, values in enumerate(known):
            codes = x[:, column]
            position = np.searchsorted(values, codes).clip(max=max(len(values) - 1, 0))
            found = values[position] == codes if len(values) else np.zeros(len(codes), bool)
            x[:, column] = np.where(found, position, missing_column)
        goes_left = np.zeros((len(x), len(left)), bool)
        data = x[:, numeric_feature]
        goes_left[:, numeric] = np.where(np.isnan(data), numeric_missing_left, data <= threshold)
        goes_left[:, categorical] = category_goes_left[table_row, x[:, categorical_feature].astype(np.intp)]
        child = np.where(goes_left, left, right)
        node = np.repeat(roots[None, :], len(x), axis=0)
        for _ in range(depth):
            node = np.take_along_axis(child, node, axis=1)
        leaves = np.concatenate([np.full((len(x), 1), baseline), value[node]], axis=1)
        raw = np.cumsum(leaves, axis=1)[:, -1]  # sequential, in tree order
        positive = 1.0 / (1.0 + np.exp(-raw))
        return np.stack([1.0 - positive, positive], axis=1)

    return predict_proba


KINDS: dict[str, Callable[[Arrays], Predictor]] = {
    "softmax_linear": softmax_linear,
    "calibrated_rbf_svm": calibrated_rbf_svm,
    "boosted_trees": boosted_trees,
}
