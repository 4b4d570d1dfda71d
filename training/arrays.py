"""Write a fitted scikit-learn model as the arrays service/arrays.py serves it from, and
prove on held-out rows that they answer as scikit-learn does.

The arrays are read from fitted attributes of scikit-learn 1.9.1 (some of them private:
libsvm's pairwise layout, the boosted trees' node records and bitsets); another version
is refused, so an upgrade is a deliberate step: check the attributes, then raise
EXPORTED_SKLEARN. A model that is not one of the served kinds, or whose arrays change a
label or a probability by more than PARITY_MAX_ABS_DIFF, is not saved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from service import arrays as served
from service.specs import ModelSpec
from training.parity import Conversion, compare

EXPORTED_SKLEARN = "1.9.1"
PARITY_MAX_ABS_DIFF = 1e-9
"""Largest probability difference accepted (measured: ~1e-16; the sums run in another order)."""


def spread_rows(spec: ModelSpec, rows: int = 256) -> np.ndarray:
    """Rows spread over every feature's valid range (and its two ends), for the parity check."""
    low = np.array([f.minimum for f in spec.numeric_features])
    high = np.array([f.maximum for f in spec.numeric_features])
    spread = np.random.default_rng(0).uniform(low, high, size=(rows, len(low)))
    return np.vstack([low, high, spread])


class NotExportable(ValueError):
    """The model is not one the service can run from arrays."""


def convert(model: Any, inputs: Any, expected: np.ndarray, matrix: Callable | None = None) -> Conversion:
    """The arrays file for `model`, checked against `expected` = model.predict_proba(inputs).

    `matrix`: the function a kobe-like pipeline starts with (FunctionTransformer); the
    arrays then hold the rest of it and take its output, as the service calls them.
    """
    import sklearn

    if sklearn.__version__ != EXPORTED_SKLEARN:
        raise NotExportable(f"written for scikit-learn {EXPORTED_SKLEARN}, found {sklearn.__version__}")
    estimator, rows = model, inputs
    if matrix is not None:
        steps = getattr(model, "steps", None)
        if not steps or getattr(steps[0][1], "func", None) is not matrix:
            raise NotExportable(f"the pipeline does not start with FunctionTransformer({matrix.__name__})")
        rest = model[1:]
        estimator = rest.steps[0][1] if len(rest.steps) == 1 else rest
        rows = matrix(inputs)
    kind, exported = export(estimator)
    content = served.save(kind, exported)
    got = served.predictor(*served.read(content))(np.asarray(rows, dtype=np.float64))
    parity = compare(got, expected, PARITY_MAX_ABS_DIFF, "the arrays", "scikit-learn")
    metadata = {"kind": kind, "exported_from": f"scikit-learn=={sklearn.__version__}",
                "input": matrix.__name__ if matrix is not None else "features",
                "parity_rows": len(rows), "parity_max_abs_diff": parity.max_abs_diff}
    return Conversion(content, metadata, {"arrays_max_abs_diff": parity.max_abs_diff,
                                          "arrays_changed_labels": float(parity.changed_labels)}, parity.failures)


def export(estimator: Any) -> tuple[str, dict[str, np.ndarray]]:
    name = type(estimator).__name__
    if name == "Pipeline" or name == "LogisticRegression":
        return "softmax_linear", _softmax_linear(estimator)
    if name == "CalibratedClassifierCV":
        return "calibrated_rbf_svm", _calibrated_rbf_svm(estimator)
    if name == "HistGradientBoostingClassifier":
        return "boosted_trees", _boosted_trees(estimator)
    raise NotExportable(f"no array form for {name}")


def _softmax_linear(model: Any) -> dict[str, np.ndarray]:
    steps = [step for _, step in getattr(model, "steps", [("model", model)])]
    *scalers, classifier = steps
    if type(classifier).__name__ != "LogisticRegression" or len(scalers) > 1 or (
            scalers and type(scalers[0]).__name__ != "StandardScaler"):
        raise NotExportable(f"expected [StandardScaler ->] LogisticRegression, found {steps}")
    weights = np.asarray(classifier.coef_, dtype=np.float64).T
    if weights.shape[1] < 2:
        raise NotExportable("a binary logistic regression is a sigmoid, not a softmax")
    features = weights.shape[0]
    scaler = scalers[0] if scalers else None
    mean = getattr(scaler, "mean_", None)
    scale = getattr(scaler, "scale_", None)
    return {"mean": np.zeros(features) if mean is None else np.asarray(mean, np.float64),
            "scale": np.ones(features) if scale is None else np.asarray(scale, np.float64),
            "weights": weights, "intercept": np.asarray(classifier.intercept_, np.float64)}


def _calibrated_rbf_svm(model: Any) -> dict[str, np.ndarray]:
    if len(model.calibrated_classifiers_) != 1:
        raise NotExportable("expected CalibratedClassifierCV(ensemble=False): one calibrated classifier")
    calibrated = model.calibrated_classifiers_[0]
    svc = calibrated.estimator
    classes = len(model.classes_)
    if (type(svc).__name__ != "SVC" or svc.kernel != "rbf" or svc._sparse or svc.decision_function_shape != "ovr"
            or calibrated.method != "sigmoid" or classes < 3
            or not np.array_equal(svc.classes_, model.classes_)):
        raise NotExportable("expected a dense multi-class RBF SVC with sigmoid calibration")
    # libsvm: support vectors grouped by class; the decision of pair (i, j) sums class i's
    # vectors with their coefficient row j-1 and class j's with row i, plus the intercept.
    starts = np.concatenate([[0], np.cumsum(svc.n_support_)])
    pairs = [(i, j) for i in range(classes) for j in range(i + 1, classes)]
    pair_weights = np.zeros((len(svc.support_vectors_), len(pairs)))
    for p, (i, j) in enumerate(pairs):
        pair_weights[starts[i]:starts[i + 1], p] = svc.dual_coef_[j - 1, starts[i]:starts[i + 1]]
        pair_weights[starts[j]:starts[j + 1], p] = svc.dual_coef_[i, starts[j]:starts[j + 1]]
    one_hot = np.eye(classes)
    return {
        "support_vectors": np.asarray(svc.support_vectors_, np.float64),
        "gamma": np.array(float(svc._gamma)),
        "pair_weights": pair_weights,
        "pair_intercept": np.asarray(svc.intercept_, np.float64),
        "pair_first": one_hot[[i for i, _ in pairs]],
        "pair_second": one_hot[[j for _, j in pairs]],
        "calibration_a": np.array([c.a_ for c in calibrated.calibrators], np.float64),
        "calibration_b": np.array([c.b_ for c in calibrated.calibrators], np.float64),
    }


def _boosted_trees(model: Any) -> dict[str, np.ndarray]:
    if model.n_trees_per_iteration_ != 1 or type(model._loss).__name__ != "HalfBinomialLoss":
        raise NotExportable("expected binary gradient-boosted trees (log loss)")
    categorical = np.asarray(model.is_categorical_ if model.is_categorical_ is not None else
                             np.zeros(model.n_features_in_, bool))
    leading = int(categorical.sum())
    if not categorical[:leading].all():
        raise NotExportable("the categorical columns must come first (the estimator's encoder puts them there)")
    if leading:
        known = [np.asarray(values, np.float64) for values in
                 model._preprocessor.named_transformers_["encoder"].categories_]
        known = [values[~np.isnan(values)] for values in known]  # missing is NaN either way
        if any(np.any(np.diff(values) <= 0) for values in known):
            raise NotExportable("the category values are not sorted")
    else:
        known = []
    width = max([len(values) for values in known], default=0)
    category_values = np.full((len(known), width), np.nan)
    for column, values in enumerate(known):
        category_values[column, :len(values)] = values
    known_categories, category_slot = model._bin_mapper.make_known_categories_bitsets()

    trees = [predictor for (predictor,) in model._predictors]
    offsets = np.concatenate([[0], np.cumsum([len(tree.nodes) for tree in trees])])
    nodes = np.concatenate([tree.nodes for tree in trees])
    tree_of_node = np.repeat(np.arange(len(trees)), np.diff(offsets))
    leaf = nodes["is_leaf"].astype(bool)
    here = np.arange(len(nodes))
    is_categorical = nodes["is_categorical"].astype(bool) & ~leaf
    numeric_nodes = np.flatnonzero(~leaf & ~is_categorical)
    categorical_nodes = np.flatnonzero(is_categorical)
    # A categorical split, for each category position (and, last, missing or unknown), as
    # _predictor.pyx decides it: left if in the split's bitset, right if another known
    # category, else the missing way.
    goes_left = np.empty((len(categorical_nodes), width + 1), bool)
    for row, index in enumerate(categorical_nodes):
        node, tree = nodes[index], trees[tree_of_node[index]]
        missing_left = bool(node["missing_go_to_left"])
        goes_left[row] = missing_left
        for code in range(width):
            if _in_bitset(tree.raw_left_cat_bitsets[node["bitset_idx"]], code):
                goes_left[row, code] = True
            elif _in_bitset(known_categories[category_slot[node["feature_idx"]]], code):
                goes_left[row, code] = False
    return {
        "category_values": category_values,
        "category_counts": np.array([len(values) for values in known], np.int64),
        "numeric_nodes": numeric_nodes.astype(np.int64),
        "numeric_feature": nodes["feature_idx"][numeric_nodes].astype(np.int64),
        "threshold": nodes["num_threshold"][numeric_nodes].astype(np.float64),
        "numeric_missing_left": nodes["missing_go_to_left"][numeric_nodes].astype(bool),
        "categorical_nodes": categorical_nodes.astype(np.int64),
        "categorical_feature": nodes["feature_idx"][categorical_nodes].astype(np.int64),
        "category_goes_left": goes_left,
        "left": np.where(leaf, here, nodes["left"] + offsets[tree_of_node]).astype(np.int64),
        "right": np.where(leaf, here, nodes["right"] + offsets[tree_of_node]).astype(np.int64),
        "value": nodes["value"].astype(np.float64),
        "roots": offsets[:-1].astype(np.int64),
        "depth": np.array(int(nodes["depth"].max())),
        "baseline": np.array(float(np.asarray(model._baseline_prediction).ravel()[0])),
    }


def _in_bitset(bitset: np.ndarray, code: int) -> bool:
    """sklearn/utils/_bitset.pyx: 256 bits in eight uint32 words."""
    return bool((int(bitset[code // 32]) >> (code % 32)) & 1)
