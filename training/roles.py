"""Champion and challenger: one truth in two stores.

Each model's role lives in its own BentoML labels (what serving reads, service/versions.py)
and, for the same versions, in MLflow's registry aliases `champion` and `challenger`
(what people and MLflow clients read). Every change goes through `_apply`, which moves
MLflow's aliases first and then the labels, and puts the aliases back if the labels cannot
be written, so the two agree at all times; `status` checks that they do.

Labels on a champion: `role=champion`, `promoted_at`, `promoted_by`, `previous_champion`
(the version it replaced: what `rollback` restores). A champion that is replaced keeps
`retired_at`; one removed by a rollback, `rolled_back_at`.

    python -m training status [NAME] [--json]
    python -m training promote NAME [VERSION]    (default: the challenger)
    python -m training rollback NAME             (the previous champion)
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service import versions
from service.specs import SPECS
from service.versions import CHALLENGER, CHAMPION, ROLE_LABEL
from training.settings import Settings

COMMANDS = ("status", "promote", "rollback")
SHOWN_METRICS = ("accuracy", "f1_macro", "log_loss", "roc_auc")


class RoleError(Exception):
    """A promotion or rollback that may not happen; nothing was changed."""


@dataclass(frozen=True)
class Change:
    """The roles one command gives: every other version of the name loses its role."""

    champion: Any
    challenger: Any | None
    labels: dict[str, dict[str, str]]
    """Labels to add, by version, besides `role` (times, who, what was replaced)."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def who() -> str:
    try:
        return os.environ.get("PROMOTED_BY") or getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        return f"uid {os.getuid()}"


# --- the two stores ------------------------------------------------------------------


def _client(settings: Settings) -> Any:
    from mlflow import MlflowClient

    from training import tracking

    tracking.configure(settings)
    return MlflowClient()


def mlflow_version(client: Any, model: Any) -> str | None:
    """The MLflow registry version registered from the same run as this BentoML model."""
    run_id = model.info.metadata.get("mlflow_run_id")
    if not run_id:
        return None
    found = client.search_model_versions(f"name='{model.tag.name}' and run_id='{run_id}'")
    return str(found[0].version) if found else None


def mlflow_aliases(client: Any, name: str) -> dict[str, str]:
    """MLflow's `champion`/`challenger` aliases of a registered model: alias -> version."""
    from mlflow.exceptions import MlflowException

    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException:  # not registered (yet)
        return {}
    return {alias: str(version) for alias, version in aliases.items() if alias in versions.ROLES}


def _write_labels(model: Any, labels: dict[str, str]) -> None:
    """Replace a stored model's labels, atomically (model.yaml is written aside, then moved)."""
    model.info.labels.clear()
    model.info.labels.update(labels)
    path = Path(model.path) / "model.yaml"
    aside = path.with_suffix(".yaml.new")
    with aside.open("w", encoding="utf8") as stream:
        model.info.dump(stream)
    os.replace(aside, path)


def _apply(settings: Settings, name: str, change: Change) -> None:
    """MLflow's aliases, then the labels: removals first, the new champion last (a server
    starting in between finds no champion and stops, rather than serving a demoted one).
    On any failure the aliases and every label written are put back."""
    client = _client(settings)
    wanted = {CHAMPION: change.champion, CHALLENGER: change.challenger}
    targets: dict[str, str | None] = {}
    for alias, model in wanted.items():
        if model is None:
            targets[alias] = None
            continue
        version = mlflow_version(client, model)
        if version is None:
            raise RoleError(f"{model.tag} has no version in MLflow's registry "
                            f"({settings.mlflow_tracking_uri}): the stores would disagree; nothing changed")
        targets[alias] = version
    writes = []
    for model in versions.full_versions(name):
        labels = {key: value for key, value in model.info.labels.items() if key != ROLE_LABEL}
        labels.update(change.labels.get(str(model.tag.version), {}))
        role = next((alias for alias, chosen in wanted.items()
                     if chosen is not None and chosen.tag == model.tag), None)
        if role is not None:
            labels[ROLE_LABEL] = role
        if labels != model.info.labels:
            writes.append((model, dict(model.info.labels), labels))
    writes.sort(key=lambda write: write[2].get(ROLE_LABEL) == CHAMPION)  # the new champion last
    before = mlflow_aliases(client, name)
    written = []
    try:
        _set_aliases(client, name, targets)
        for model, old, new in writes:
            _write_labels(model, new)
            written.append((model, old))
    except Exception:
        _set_aliases(client, name, {alias: before.get(alias) for alias in versions.ROLES})
        for model, old in reversed(written):
            _write_labels(model, old)
        raise
    for alias, model in wanted.items():
        if model is not None:
            client.set_model_version_tag(name, targets[alias], "bentoml_tag", str(model.tag))


def _set_aliases(client: Any, name: str, targets: dict[str, str | None]) -> None:
    for alias, version in targets.items():
        if version is None:
            if alias in mlflow_aliases(client, name):
                client.delete_registered_model_alias(name, alias)
        else:
            client.set_registered_model_alias(name, alias, version)


# --- the commands ----------------------------------------------------------------------


def role_for_new(name: str) -> str:
    """The role of a full model about to be saved: champion when there is none (or the
    champion was trained for another input schema, which this code cannot serve), else
    challenger. Saved in its labels at once, so a failure later never serves it."""
    current = versions.champion(name)
    if current is None or current.info.metadata.get("spec_fingerprint") != SPECS[name].fingerprint():
        return CHAMPION
    return CHALLENGER


def assign_new(settings: Settings, name: str, tag: str) -> str:
    """Bring both stores in step with a newly saved model's role (role_for_new): MLflow's
    aliases, and the labels of the versions it replaces. Returns the role."""
    import bentoml

    model = bentoml.models.get(tag)
    role = versions.role(model)
    others = [other for other in versions.full_versions(name) if other.tag != model.tag]
    current = versions.champion_of(others)  # the champion it stands beside or replaces
    if role == CHAMPION:
        labels = {str(model.tag.version): {"promoted_at": now(), "promoted_by": who()}}
        if current is not None:
            if current.info.metadata.get("spec_fingerprint") == SPECS[name].fingerprint():
                labels[str(model.tag.version)]["previous_champion"] = str(current.tag.version)
            labels[str(current.tag.version)] = {"retired_at": now()}
        _apply(settings, name, Change(model, None, labels))
    elif role == CHALLENGER and current is not None:
        _apply(settings, name, Change(current, model, {}))
    else:
        raise RoleError(f"{tag} is labelled {role!r} with no champion to stand beside; nothing changed")
    return role


def _servable(target: Any, name: str) -> None:
    """Refuse a version that may not be the champion: quick, or for another input schema."""
    if versions.is_quick(target):
        raise RoleError(f"{target.tag} is a quick (smoke) model: it is never promoted")
    if target.info.metadata.get("spec_fingerprint") != SPECS[name].fingerprint():
        raise RoleError(f"{target.tag} was trained for another input schema: this code cannot serve it")


def promote(settings: Settings, name: str, version: str | None = None) -> str:
    """Make VERSION (default: the challenger) the champion; the champion it replaces is
    what `rollback` restores. Returns the new champion's tag."""
    target = _stored(name, version) if version else versions.with_role(name, CHALLENGER)
    if target is None:
        raise RoleError(f"{name} has no challenger to promote (python -m training status {name})")
    _servable(target, name)
    current = versions.champion(name)
    if current is not None and current.tag == target.tag:
        raise RoleError(f"{target.tag} is already the champion")
    challenger = versions.with_role(name, CHALLENGER)
    keep_challenger = challenger if challenger is not None and challenger.tag != target.tag else None
    labels = {str(target.tag.version): {"promoted_at": now(), "promoted_by": who(),
                                        **({"previous_champion": str(current.tag.version)} if current else {})}}
    if current is not None:
        labels[str(current.tag.version)] = {"retired_at": now()}
    _apply(settings, name, Change(target, keep_challenger, labels))
    return str(target.tag)


def rollback(settings: Settings, name: str) -> str:
    """Make the champion's previous champion the champion again. Returns its tag."""
    current = versions.champion(name)
    previous = current.info.labels.get("previous_champion") if current is not None else None
    if current is None or not previous:
        raise RoleError(f"{name} has no previous champion to roll back to (python -m training status {name})")
    target = _stored(name, previous)
    _servable(target, name)
    challenger = versions.with_role(name, CHALLENGER)
    labels = {str(current.tag.version): {"rolled_back_at": now()},
              previous: {"promoted_at": now(), "promoted_by": who()}}
    _apply(settings, name, Change(target, challenger, labels))
    return str(target.tag)


def status(settings: Settings, names: list[str]) -> dict[str, dict[str, Any]]:
    """Per model: champion and challenger (BentoML tags or None), their metrics, when and by
    whom the champion was promoted, MLflow's aliases and whether both stores agree.
    `labelled` is false for a store from before roles, where the champion is the newest
    full version."""
    client = _client(settings)
    report: dict[str, dict[str, Any]] = {}
    for name in names:
        labelled, challenger = versions.with_role(name, CHAMPION), versions.with_role(name, CHALLENGER)
        champion = labelled or versions.champion(name)  # a store from before roles: the newest full one
        aliases = mlflow_aliases(client, name)
        expected = {alias: mlflow_version(client, model)
                    for alias, model in ((CHAMPION, labelled), (CHALLENGER, challenger)) if model is not None}
        report[name] = {
            "champion": str(champion.tag) if champion else None,
            "challenger": str(challenger.tag) if challenger else None,
            "champion_metrics": _metrics(champion),
            "challenger_metrics": _metrics(challenger),
            "promoted_at": champion.info.labels.get("promoted_at") if champion else None,
            "promoted_by": champion.info.labels.get("promoted_by") if champion else None,
            "previous_champion": (f"{name}:{champion.info.labels['previous_champion']}"
                                  if champion and "previous_champion" in champion.info.labels else None),
            "labelled": labelled is not None or champion is None,
            "mlflow_aliases": aliases,
            "in_step": aliases == expected,
        }
    return report


def _stored(name: str, version: str) -> Any:
    import bentoml

    try:
        return bentoml.models.get(f"{name}:{version}")
    except bentoml.exceptions.NotFound:
        raise RoleError(f"no {name}:{version} in the BentoML store (bentoml models list {name})") from None


def _metrics(model: Any | None) -> dict[str, float] | None:
    if model is None:
        return None
    metrics = model.info.metadata.get("metrics", {})
    return {key: metrics[key] for key in SHOWN_METRICS if key in metrics}


def print_status(report: dict[str, dict[str, Any]]) -> None:
    header = f"{'model':<8} {'role':<10} {'version':<30} " + " ".join(f"{k:>9}" for k in SHOWN_METRICS)
    print(header + "\n" + "-" * len(header))
    for name, entry in report.items():
        for role in versions.ROLES:
            tag, metrics = entry[role], entry[f"{role}_metrics"] or {}
            shown = " ".join(f"{metrics[k]:>9.4f}" if k in metrics else f"{'-':>9}" for k in SHOWN_METRICS)
            print(f"{name:<8} {role:<10} {tag or '-':<30} {shown if tag else ''}")
        if not entry["labelled"]:
            print(f"{'':<8} champion by default: the newest full version (stored before roles; the next "
                  f"training or promote labels it)")
        if entry["promoted_at"]:
            print(f"{'':<8} promoted {entry['promoted_at']} by {entry['promoted_by']}"
                  + (f", replacing {entry['previous_champion']}" if entry["previous_champion"] else ""))
        if not entry["in_step"]:
            print(f"{'':<8} WARNING: MLflow's aliases {entry['mlflow_aliases']} do not match the BentoML store "
                  f"(python -m training promote {name} VERSION sets both)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    shown = commands.add_parser("status", help="champion and challenger of each model")
    shown.add_argument("model", nargs="?", choices=list(SPECS), help="one model (default: all)")
    shown.add_argument("--json", action="store_true", help="JSON for scripts: name -> {champion, challenger, ...}")
    promoted = commands.add_parser("promote", help="make a version (default: the challenger) the champion")
    promoted.add_argument("model", choices=list(SPECS))
    promoted.add_argument("version", nargs="?", help="a stored version (default: the challenger)")
    rolled = commands.add_parser("rollback", help="make the previous champion the champion again")
    rolled.add_argument("model", choices=list(SPECS))
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = Settings.from_env()
    if args.command == "status":
        report = status(settings, [args.model] if args.model else list(SPECS))
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print_status(report)
        return 0 if all(entry["in_step"] for entry in report.values()) else 1
    try:
        if args.command == "promote":
            tag = promote(settings, args.model, args.version)
        else:
            tag = rollback(settings, args.model)
    except RoleError as exc:
        print(f"{args.command} {args.model}: {exc}", file=sys.stderr)
        return 1
    print(f"{tag} is now the {args.model} champion. Serve it: rebuild (bentoml build) and roll out "
          f"(k8s/README.md), or restart `bentoml serve`.")
    return 0
