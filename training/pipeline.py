"""One training run, the same for every model: load -> split -> fit -> evaluate -> track
-> gate -> register. Model-specific steps come from training.trainers."""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from service import versions
from service.drift import Profile
from service.specs import Gate
from training import evaluation, roles, tracking
from training.datasets import Dataset, take_rows
from training.settings import Settings
from training.trainers import TRAINERS, Export, Trainer

VALID_FRACTION = 0.15
TEST_FRACTION = 0.15


@dataclass
class RunResult:
    name: str
    passed: bool
    metrics: dict[str, float]
    seconds: float
    mlflow_run_id: str
    tag: str | None = None
    """BentoML tag of the saved model; None when the gate kept it out of the store."""
    gate_failures: list[str] = field(default_factory=list)
    skipped_files: int = 0
    role: str | None = None
    """`champion` or `challenger` for a saved full model (training/roles.py); None otherwise."""
    fitted_model: Any = field(default=None, repr=False)
    """The fitted model in memory (for callers that keep using it)."""


def split(data: Dataset, seed: int) -> tuple[Dataset, Dataset, Dataset]:
    """Stratified train/validation/test with a fixed seed; test is never used to choose."""
    rows = np.arange(len(data))
    rest, test = train_test_split(rows, test_size=TEST_FRACTION, stratify=data.labels, random_state=seed)
    train, valid = train_test_split(rest, test_size=VALID_FRACTION / (1 - TEST_FRACTION),
                                    stratify=data.labels[rest], random_state=seed)
    return tuple(Dataset(take_rows(data.features, r), data.labels[r]) for r in (train, valid, test))  # type: ignore[return-value]


def train_model(name: str, settings: Settings, quick: bool = False, gate: Gate | None = None,
                accept_worse: bool = False) -> RunResult:
    """Train, evaluate and track one model; save it to BentoML only if it passes its gate and,
    unless `accept_worse` (recorded), is not worse than the champion (the relative gate)."""
    import mlflow

    trainer = TRAINERS[name]
    spec = trainer.spec
    gate = gate or (spec.quick_gate if quick else spec.gate)
    started = time.perf_counter()
    experiment_id = tracking.configure(settings)

    _say(f"[{name}] loading data")
    data = trainer.load(settings, quick)
    train, valid, test = split(data, settings.seed)
    _say(f"[{name}] {len(train)} train / {len(valid)} validation / {len(test)} test rows"
         + (f", {len(data.skipped_files)} unreadable files skipped" if data.skipped_files else ""))

    with mlflow.start_run(experiment_id=experiment_id, run_name=f"{name}{'-quick' if quick else ''}") as run:
        mlflow.set_tags({"model": name, "quick": str(quick).lower(), "code_version": tracking.code_version(),
                         "dataset_fingerprint": data.fingerprint()})
        mlflow.log_params({"seed": settings.seed, "quick": quick, "train_rows": len(train),
                           "valid_rows": len(valid), "test_rows": len(test),
                           "skipped_files": len(data.skipped_files), "gate": str(gate)})
        if data.skipped_files:
            mlflow.log_text("\n".join(data.skipped_files), "skipped_files.txt")

        _say(f"[{name}] fitting")
        fitted = trainer.fit(train, valid, quick, settings.seed)
        mlflow.log_params({f"model_{k}": v for k, v in fitted.params.items()})

        metrics = _evaluate(trainer, fitted.model, train, test, "test")
        mlflow.log_metrics(metrics)
        extra = {key: _evaluate(trainer, fitted.model, train, held_out, key)
                 for key, held_out in data.extra_evaluations.items()}
        for key, values in extra.items():
            mlflow.log_metrics({f"{key}_{metric}": value for metric, value in values.items()})

        failures = gate.failures(metrics)
        export = trainer.export(fitted.model, test) if not failures else Export()
        failures += export.failures
        comparison = None
        if not failures and not quick:  # a smoke run never competes with full models
            comparison = _compare_with_champion(trainer, gate, metrics, test, accept_worse)
            if comparison is not None and not comparison["accepted"]:
                failures.append(comparison["reason"])
        if not failures:  # the reference the service's drift monitor compares traffic with
            profile = Profile.from_training(spec, train.features, trainer.predict_proba(fitted.model, train.features))
            export.metadata["drift_profile"] = profile.to_json()
            mlflow.log_dict(profile.to_json(), "drift_profile.json")
        _log_export(export)
        passed = not failures
        mlflow.set_tag("gate", "passed" if passed else "failed")
        if failures:
            mlflow.log_text("\n".join(failures), "gate_failures.txt")
        # A quick model is a smoke run: tracked, never a candidate in the registry.
        trainer.log_to_mlflow(fitted.model, registered_name=name if passed and not quick else None)

        tag, role = None, None
        if passed:
            metadata = _bento_metadata(trainer, run.info.run_id, settings, data, metrics, extra, quick)
            if comparison is not None:
                metadata["comparison"] = comparison
            labels = {"task": spec.task, "quick": str(quick).lower(), "gate": "passed"}
            if not quick:  # a smoke run never gets a role
                role = labels[versions.ROLE_LABEL] = roles.role_for_new(name)
            stored_as = f"{name}:{versions.quick_version()}" if quick else name
            tag = str(trainer.save_to_bentoml(fitted.model, stored_as, labels, metadata | export.metadata, export).tag)
            mlflow.set_tags({"bentoml_tag": tag, **({"role": role} if role else {})})
    if role is not None:
        try:
            roles.assign_new(settings, name, tag)
        except Exception as exc:  # noqa: BLE001 - saved already: say so, and what is out of step
            failures.append(f"saved as {tag} ({role}), but the roles are out of step "
                            f"(python -m training status {name}): {type(exc).__name__}: {exc}")

    seconds = time.perf_counter() - started
    passed = not failures
    if passed:
        _say(f"[{name}] saved {tag} in {seconds:.0f} s" + (f" as the {role}" if role else "")
             + (f" (python -m training promote {name} makes it the champion)" if role == versions.CHALLENGER else ""))
    elif tag is not None:
        _say(f"[{name}] {'; '.join(failures)}")
    else:
        _say(f"[{name}] FAILED its quality gate, not saved: {'; '.join(failures)}")
    return RunResult(name, passed, metrics, seconds, run.info.run_id, tag, failures,
                     skipped_files=len(data.skipped_files), role=role, fitted_model=fitted.model)


def _compare_with_champion(trainer: Trainer, gate: Gate, metrics: dict[str, float], test: Dataset,
                         accept_worse: bool) -> dict[str, Any] | None:
    """The relative gate: the candidate against the champion (what is served unless
    pinned) on the candidate's test rows, so both are judged on the same data even when it
    changed. None when there is nothing to compare with."""
    import mlflow

    spec = trainer.spec
    champion = versions.champion(spec.name)
    if champion is None:
        _say(f"[{spec.name}] no champion stored yet: nothing to compare with")
        return None
    if champion.info.metadata.get("spec_fingerprint") != spec.fingerprint():
        _say(f"[{spec.name}] {champion.tag} was trained for another input schema: not compared")
        mlflow.set_tag("relative_gate", "not comparable")
        return {"champion": str(champion.tag), "accepted": True, "reason": "another input schema"}
    champion_metrics = evaluation.classification_metrics(test.labels,
                                                         trainer.stored_predict_proba(champion, test.features))
    lost = gate.lost_by(metrics, champion_metrics)
    better = gate.beats(metrics, champion_metrics)
    verdict = "passed" if better else ("overridden" if accept_worse else "failed")
    rows = [f"{'metric':<10} {'champion':>10} {'candidate':>10} {'change':>10}"]
    for key in sorted(set(metrics) & set(champion_metrics)):
        if not key.startswith("baseline"):
            mark = "  <- compared" if key == gate.primary else ""
            rows.append(f"{key:<10} {champion_metrics[key]:>10.4f} {metrics[key]:>10.4f} "
                        f"{metrics[key] - champion_metrics[key]:>+10.4f}{mark}")
    table = "\n".join([f"{spec.name}: candidate vs the champion {champion.tag} on the same {len(test)} test rows",
                       *rows, f"relative gate: {verdict} ({gate.primary} worse by {max(lost, 0):.4f}, "
                              f"tolerance {gate.tolerance})"])
    _say(table)
    mlflow.log_text(table, "comparison.txt")
    mlflow.log_metrics({f"champion_{key}": value for key, value in champion_metrics.items()})
    mlflow.set_tags({"compared_with": str(champion.tag), "relative_gate": verdict})
    reason = (f"worse than the champion {champion.tag} on {gate.primary} by {lost:.4f} "
              f"(tolerance {gate.tolerance}; --accept-worse overrides)")
    return {"champion": str(champion.tag), "metric": gate.primary, "tolerance": gate.tolerance,
            "champion_metrics": champion_metrics, "candidate_metrics": dict(metrics), "lost_by": lost,
            "accepted": better or accept_worse, "override": accept_worse and not better,
            "reason": reason if not better else "not worse"}


def _evaluate(trainer: Trainer, model: Any, train: Dataset, held_out: Dataset, prefix: str) -> dict[str, float]:
    import mlflow

    proba = trainer.predict_proba(model, held_out.features)
    n_classes = len(trainer.spec.class_names)
    metrics = {**evaluation.classification_metrics(held_out.labels, proba),
               **evaluation.baseline_metrics(train.labels, held_out.labels, n_classes)}
    with tempfile.TemporaryDirectory() as tmp:
        evaluation.write_reports(held_out.labels, proba, trainer.spec.class_names, metrics, Path(tmp), prefix)
        mlflow.log_artifacts(tmp, artifact_path="evaluation")
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    _say(f"[{trainer.spec.name}] {prefix}: {shown}")
    return metrics


def _log_export(export: Export) -> None:
    """The serving files and their parity figures, beside the model in the MLflow run."""
    import mlflow

    mlflow.log_metrics(export.metrics)
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in export.files.items():
            (Path(tmp) / name).write_bytes(content)
        if export.files:
            mlflow.log_artifacts(tmp, artifact_path="serving")


def _bento_metadata(trainer: Trainer, run_id: str, settings: Settings, data: Dataset,
                    metrics: dict[str, float], extra: dict[str, dict[str, float]], quick: bool) -> dict[str, Any]:
    """Everything the service needs to serve and describe the model, as plain JSON."""
    spec = trainer.spec
    return {
        "metrics": metrics,
        **{f"{key}_metrics": values for key, values in extra.items()},
        "mlflow_run_id": run_id,
        "mlflow_tracking_uri": settings.mlflow_tracking_uri,
        "class_names": list(spec.class_names),
        "schema": spec.schema(),
        "spec_fingerprint": spec.fingerprint(),
        "dataset_fingerprint": data.fingerprint(),
        "code_version": tracking.code_version(),
        "quick": quick,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
