"""A scaled logistic regression (iris) served from its coefficients.

scikit-learn's predict_proba on one row spends most of its time on per-call checks
(validate_data, estimator tags, DataFrame detection, the pipeline's routing): about a
third of the iris route's CPU at concurrency 1 (py-spy), for arithmetic that is a few
numpy operations: softmax(((x - mean) / scale) @ coef.T + intercept). `linear_predictor`
extracts those arrays from a fitted Pipeline(StandardScaler, LogisticRegression) and
serves them only if they give scikit-learn's own probabilities on rows spread over the
features' valid ranges (to 1e-12); any other model, or a mismatch, keeps scikit-learn.
The stored model is unchanged: scikit-learn's object stays the source of truth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

logger = logging.getLogger("bentoml.service.model_serving")

PARITY_ATOL = 1e-12


def linear_predictor(model: Any, probe: np.ndarray) -> Callable[[np.ndarray], np.ndarray] | None:
    """rows -> probabilities from the model's coefficients, or None (not such a model, or
    not equal to model.predict_proba on `probe`, rows spread over the valid ranges)."""
    steps = [step for _, step in getattr(model, "steps", [("model", model)])]
    *scalers, classifier = steps
    if type(classifier).__name__ != "LogisticRegression" or len(scalers) > 1:
        return None
    if scalers and type(scalers[0]).__name__ != "StandardScaler":
        return None
    mean = getattr(scalers[0], "mean_", None) if scalers else None
    scale = getattr(scalers[0], "scale_", None) if scalers else None
    weights = np.ascontiguousarray(classifier.coef_.T, dtype=np.float64)
    intercept = np.asarray(classifier.intercept_, dtype=np.float64)
    if weights.shape[1] < 2:  # binary: predict_proba is a sigmoid, not a softmax
        return None

    def predict_proba(rows: np.ndarray) -> np.ndarray:
        # scikit-learn's order of operations (scale, then weights), so the results match.
        x = np.asarray(rows, dtype=np.float64)
        if mean is not None:
            x = x - mean
        if scale is not None:
            x = x / scale
        scores = x @ weights + intercept
        scores -= scores.max(axis=1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=1, keepdims=True)
        return scores

    expected = model.predict_proba(probe)
    got = predict_proba(probe)
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=0, atol=PARITY_ATOL):
        logger.warning("%s keeps scikit-learn's predict_proba: its coefficients gave up to %.1e different "
                       "probabilities", type(classifier).__name__, float(np.max(np.abs(got - expected))))
        return None
    return predict_proba
