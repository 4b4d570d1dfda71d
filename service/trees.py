"""Kobe's gradient-boosted trees without the category encoder they run on every call.

A HistGradientBoostingClassifier fitted with categorical features keeps a ColumnTransformer
with an OrdinalEncoder and calls it, through joblib, on every predict: about 80% of a
one-row kobe call (profiled with scikit-learn 1.9.1). The encoder only maps each category
value to its position among the values seen in training (unknown or missing: NaN, which
the trees treat as missing). `fold_category_encoder` turns that map into lookup tables
applied to the model matrix, and predicts with a copy of the estimator whose
`_preprocessor` is None, the state scikit-learn itself uses when a model has no
categorical features. Exactly the same probabilities (tests/unit/test_runtime.py).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

logger = logging.getLogger("bentoml.service.model_serving")

FOLDED_SKLEARN = "1.9.1"
"""The scikit-learn version whose HistGradientBoosting internals this was written against."""


def fold_category_encoder(estimator: Any) -> tuple[Any, Callable[[np.ndarray], np.ndarray]] | None:
    """(estimator without its encoder, matrix -> encoded matrix), or None where it does not
    apply: another scikit-learn, another estimator, or categorical columns not leading."""
    import sklearn

    if sklearn.__version__ != FOLDED_SKLEARN:
        logger.warning("the trees keep scikit-learn's per-call category encoder: written for %s, found %s",
                       FOLDED_SKLEARN, sklearn.__version__)
        return None
    preprocessor = getattr(estimator, "_preprocessor", None)
    categorical = getattr(estimator, "is_categorical_", None)
    if preprocessor is None or categorical is None:
        return None
    leading = int(categorical.sum())
    if not categorical[:leading].all():  # the encoder's output puts categorical columns first
        return None
    known = [np.asarray(values, np.float64) for values in preprocessor.named_transformers_["encoder"].categories_]
    known = [values[~np.isnan(values)] for values in known]  # missing is NaN either way

    def encode(matrix: np.ndarray) -> np.ndarray:
        encoded = np.array(matrix, dtype=np.float64)
        for column, values in enumerate(known):
            codes = encoded[:, column]
            position = np.searchsorted(values, codes).clip(max=max(len(values) - 1, 0))
            found = values[position] == codes if len(values) else np.zeros(len(codes), bool)
            encoded[:, column] = np.where(found, position, np.nan)
        return encoded

    bare = copy.copy(estimator)
    bare._preprocessor = None
    return bare, encode
