"""Held-out metrics, a no-skill baseline and the plots/reports logged with every run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: plots are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn import metrics as skm  # noqa: E402


def classification_metrics(labels: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """accuracy, f1_macro, log_loss, roc_auc (and f1 of the positive class when binary)."""
    n_classes = proba.shape[1]
    predicted = proba.argmax(axis=1)
    classes = list(range(n_classes))
    result = {
        "accuracy": skm.accuracy_score(labels, predicted),
        "f1_macro": skm.f1_score(labels, predicted, average="macro", labels=classes, zero_division=0),
        "log_loss": skm.log_loss(labels, np.clip(proba, 1e-15, 1), labels=classes),
    }
    if len(np.unique(labels)) == n_classes:
        result["roc_auc"] = (
            skm.roc_auc_score(labels, proba[:, 1]) if n_classes == 2
            else skm.roc_auc_score(labels, proba, multi_class="ovr", labels=classes)
        )
    if n_classes == 2:
        result["f1"] = skm.f1_score(labels, predicted, zero_division=0)
    return {name: float(value) for name, value in result.items()}


def baseline_metrics(train_labels: np.ndarray, labels: np.ndarray, n_classes: int) -> dict[str, float]:
    """What predicting the training base rate scores: the bar any model must clear."""
    prior = np.bincount(train_labels, minlength=n_classes) / len(train_labels)
    proba = np.tile(prior, (len(labels), 1))
    return {
        "baseline_accuracy": float(skm.accuracy_score(labels, proba.argmax(axis=1))),
        "baseline_log_loss": float(skm.log_loss(labels, proba, labels=list(range(n_classes)))),
    }


def write_reports(
    labels: np.ndarray, proba: np.ndarray, class_names: tuple[str, ...], metrics: dict[str, float],
    folder: Path, prefix: str = "test",
) -> list[Path]:
    """Confusion matrix and ROC plots (PNG), classification report (text), metrics (CSV)."""
    folder.mkdir(parents=True, exist_ok=True)
    predicted = proba.argmax(axis=1)
    classes = list(range(len(class_names)))
    paths = [folder / f"{prefix}_confusion_matrix.png", folder / f"{prefix}_roc.png",
             folder / f"{prefix}_classification_report.txt", folder / f"{prefix}_metrics.csv"]

    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * len(classes), 1 + 0.6 * len(classes)))
    skm.ConfusionMatrixDisplay.from_predictions(
        labels, predicted, labels=classes, display_labels=list(class_names), ax=ax,
        colorbar=False, xticks_rotation=45,
    )
    ax.set_title(f"{prefix}: confusion matrix")
    fig.tight_layout()
    fig.savefig(paths[0], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    shown = [1] if len(classes) == 2 else classes
    for c in shown:
        if 0 < (labels == c).sum() < len(labels):
            skm.RocCurveDisplay.from_predictions(labels == c, proba[:, c], name=class_names[c], ax=ax)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="no skill")
    ax.set_title(f"{prefix}: ROC" + (" (one vs rest)" if len(classes) > 2 else ""))
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(paths[1], dpi=100)
    plt.close(fig)

    paths[2].write_text(skm.classification_report(
        labels, predicted, labels=classes, target_names=list(class_names), zero_division=0, digits=4,
    ))
    pd.DataFrame(sorted(metrics.items()), columns=["metric", "value"]).to_csv(paths[3], index=False)
    return paths
