"""A serving form of a model (LiteRT file, arrays) against the trained model itself: the
same labels and probabilities within a bound on held-out inputs, else it is not saved."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Conversion:
    content: bytes
    metadata: dict[str, Any]
    metrics: dict[str, float]
    failures: list[str] = field(default_factory=list)
    """Why the conversion may not be served; empty when it passed the parity check."""


@dataclass
class Parity:
    max_abs_diff: float
    changed_labels: int
    failures: list[str]


def compare(got: np.ndarray, expected: np.ndarray, allowed: float, served: str, trained: str) -> Parity:
    """`served`'s probabilities `got` against `trained`'s `expected`, on the same inputs."""
    if got.shape != expected.shape:
        return Parity(float("inf"), len(expected), [f"{served} gives shape {got.shape}, {trained} {expected.shape}"])
    max_abs_diff = float(np.abs(got - expected).max())
    changed = int((got.argmax(axis=1) != expected.argmax(axis=1)).sum())
    failures = []
    if changed:
        failures.append(f"{served}: {changed} of {len(expected)} held-out labels change")
    if not max_abs_diff <= allowed:
        failures.append(f"{served}: probabilities differ from {trained}'s by up to {max_abs_diff:.2e} "
                        f"(at most {allowed:.0e} allowed)")
    return Parity(max_abs_diff, changed, failures)
