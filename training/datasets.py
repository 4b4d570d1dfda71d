"""Load each model's labelled data as (features, class indices), with a fingerprint.

Digits and iris come from scikit-learn's bundled copies; kobe and malaria from DATA_DIR
(downloaded when missing). Images go through service.preprocessing, like the service.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from service.preprocessing import InvalidInput, encoded_image_to_array, typed_frame
from service.specs import IRIS, KOBE, MALARIA
from training import download

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass
class Dataset:
    features: np.ndarray | pd.DataFrame
    labels: np.ndarray
    """Class indices into the spec's class_names."""
    skipped_files: list[str] = field(default_factory=list)
    """Inputs that could not be read (corrupt or not images), kept for the run summary."""
    extra_evaluations: dict[str, Dataset] = field(default_factory=dict)
    """Further held-out sets evaluated on their own (kobe's prod shots)."""

    def __len__(self) -> int:
        return len(self.labels)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        if isinstance(self.features, pd.DataFrame):
            digest.update(pd.util.hash_pandas_object(self.features, index=False).values.tobytes())
        else:
            digest.update(np.ascontiguousarray(self.features).tobytes())
        digest.update(np.ascontiguousarray(self.labels).tobytes())
        return digest.hexdigest()[:16]


def subsample(dataset: Dataset, per_class: int, seed: int) -> Dataset:
    """At most per_class rows of each class, chosen reproducibly (for --quick runs)."""
    rng = np.random.default_rng(seed)
    keep = np.sort(np.concatenate([
        rng.permutation(np.flatnonzero(dataset.labels == c))[:per_class]
        for c in np.unique(dataset.labels)
    ]))
    return Dataset(take_rows(dataset.features, keep), dataset.labels[keep], dataset.skipped_files,
                   {k: subsample(v, per_class, seed) for k, v in dataset.extra_evaluations.items()})


def take_rows(features: np.ndarray | pd.DataFrame, rows: np.ndarray) -> np.ndarray | pd.DataFrame:
    return features.iloc[rows].reset_index(drop=True) if isinstance(features, pd.DataFrame) else features[rows]


def load_digits() -> Dataset:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    return Dataset(bunch.data.astype(np.float64), bunch.target.astype(np.int64))


def load_iris() -> Dataset:
    from sklearn.datasets import load_iris as sklearn_iris

    bunch = sklearn_iris()
    assert [name.replace(" (cm)", "").replace(" ", "_") for name in bunch.feature_names] == IRIS.feature_names
    assert list(bunch.target_names) == list(IRIS.class_names)
    return Dataset(bunch.data.astype(np.float64), bunch.target.astype(np.int64))  # numeric_only: an array


def load_kobe(data_dir: Path) -> Dataset:
    """Dev shots (2PT) for training; prod shots (3PT) as a separate, shifted evaluation."""
    dev = _kobe_frame(download.ensure(download.KOBE_DEV, data_dir))
    prod = _kobe_frame(download.ensure(download.KOBE_PROD, data_dir))
    dataset = dev
    dataset.extra_evaluations["prod"] = prod
    return dataset


def _kobe_frame(path: Path) -> Dataset:
    raw = pd.read_parquet(path)
    missing = [c for c in [*KOBE.feature_names, "shot_made_flag"] if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    labelled = raw.dropna(subset=["shot_made_flag"]).reset_index(drop=True)
    labels = labelled["shot_made_flag"].astype(np.int64).to_numpy()  # 1 = made = class 1
    return Dataset(typed_frame(labelled, KOBE), labels)


def load_malaria(data_dir: Path, per_class: int | None = None, seed: int = 0) -> Dataset:
    """Every image under cell_images/<class>/; unreadable files are skipped and listed."""
    root = download.ensure(download.MALARIA_IMAGES, data_dir)
    spec = MALARIA.image
    assert spec is not None
    rng = np.random.default_rng(seed)
    arrays, labels, skipped = [], [], []
    for index, class_name in enumerate(MALARIA.class_names):
        files = sorted(p for p in (root / class_name).iterdir() if p.is_file())
        if per_class is not None:
            files = [files[i] for i in np.sort(rng.permutation(len(files))[:per_class])]
        for count, path in enumerate(files, 1):
            try:
                arrays.append(encoded_image_to_array(path.read_bytes(), spec))
                labels.append(index)
            except InvalidInput as exc:
                skipped.append(str(path.relative_to(root)))
                print(f"warning: skipping {path.name}: {exc}", file=sys.stderr)
            if count % 5000 == 0 or count == len(files):
                print(f"  {class_name}: read {count}/{len(files)} images", file=sys.stderr)
    if not arrays:
        raise ValueError(f"no readable images under {root}")
    return Dataset(np.stack(arrays), np.asarray(labels, dtype=np.int64), skipped)
