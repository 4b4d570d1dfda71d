"""Convert a Keras model to LiteRT and prove, on held-out inputs, that it answers the same.

The service runs the LiteRT file (service/litert.py) and never imports TensorFlow; the
Keras model stays the trained source of truth. A conversion that changes any label, or a
probability by more than PARITY_MAX_ABS_DIFF, is not saved.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from service.litert import LiteRTModel, runtime_version
from training.parity import Conversion, compare

PARITY_MAX_ABS_DIFF = 1e-5
"""Largest probability difference accepted between Keras and LiteRT (measured: ~5e-7)."""
PARITY_BATCH = 256


def convert(model: Any, keras_file: bytes, inputs: np.ndarray, expected: np.ndarray) -> Conversion:
    """LiteRT bytes for `model`, checked against `expected` = the Keras probabilities on `inputs`."""
    import tensorflow as tf

    content = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    served = LiteRTModel(content, threads=1)
    got = np.concatenate([served(inputs[i:i + PARITY_BATCH]) for i in range(0, len(inputs), PARITY_BATCH)])
    parity = compare(got, expected, PARITY_MAX_ABS_DIFF, "LiteRT", "Keras")
    metadata = {
        "converter": f"tensorflow=={tf.__version__} tf.lite.TFLiteConverter.from_keras_model",
        "runtime": f"ai-edge-litert=={runtime_version()}",
        "keras_sha256": hashlib.sha256(keras_file).hexdigest(),
        "litert_sha256": hashlib.sha256(content).hexdigest(),
        "parity_images": len(inputs),
        "parity_max_abs_diff": parity.max_abs_diff,
    }
    metrics = {"litert_max_abs_diff": parity.max_abs_diff, "litert_changed_labels": float(parity.changed_labels)}
    return Conversion(content, metadata, metrics, parity.failures)
