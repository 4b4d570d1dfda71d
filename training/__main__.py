"""python -m training {digits,iris,kobe,malaria,all} [--data-dir DIR] [--quick] [--only-missing] [--accept-worse]
python -m training status [NAME] [--json] | promote NAME [VERSION] | rollback NAME

Training saves a model that passes its gates as the challenger (the first of a name as the
champion); promote, rollback and status are training/roles.py."""

from __future__ import annotations

import argparse
import os
import sys

from service.specs import SPECS
from training import roles
from training.download import DataUnavailable
from training.settings import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=[*SPECS, "all"], help="which model to train")
    parser.add_argument("--data-dir", help="data folder (default: $DATA_DIR or ./data)")
    parser.add_argument("--quick", action="store_true",
                        help="train on a small subset with a lenient gate (tests, smoke runs)")
    parser.add_argument("--only-missing", action="store_true",
                        help="skip models whose champion was trained under the current spec "
                             "(quick versions count only with --quick)")
    parser.add_argument("--accept-worse", action="store_true",
                        help="save a candidate that is worse than the champion on its primary metric "
                             "(the relative gate; recorded in MLflow and the model's metadata)")
    parser.add_argument("--seed", type=int, default=42)
    return parser.parse_args(argv)


def in_store(name: str, quick: bool = False) -> bool:
    """What the service would serve is stored and trained under the spec's current
    fingerprint: the champion (a smoke run never makes a full one "present"); for a
    --quick run, the newest quick one counts too."""
    from service import versions

    candidates = [versions.champion(name)] + (versions.quick_versions(name)[:1] if quick else [])
    return any(model is not None and model.info.metadata.get("spec_fingerprint") == SPECS[name].fingerprint()
               for model in candidates)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in roles.COMMANDS:
        return roles.main(argv)
    args = parse_args(argv)
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    settings = Settings.from_env(args.data_dir, seed=args.seed)
    names = list(SPECS) if args.model == "all" else [args.model]
    if args.only_missing:
        names = [name for name in names if not in_store(name, args.quick)]
        if not names:
            print("every model is already in the BentoML store; nothing to train", file=sys.stderr)
            return 0

    from training.pipeline import RunResult, train_model

    results: list[RunResult] = []
    errors: dict[str, str] = {}
    for name in names:
        try:
            results.append(train_model(name, settings, quick=args.quick, accept_worse=args.accept_worse))
        except DataUnavailable as exc:
            errors[name] = str(exc)
            print(f"[{name}] ERROR: {exc}", file=sys.stderr)
    print_summary(results, errors)
    return 0 if not errors and all(r.passed for r in results) else 1


def print_summary(results: list, errors: dict[str, str]) -> None:
    header = f"{'model':<8} {'gate':<6} {'time':>7}  {'tag':<32} {'role':<10} metrics"
    print("\n" + header + "\n" + "-" * len(header))
    for r in results:
        shown = " ".join(f"{k}={r.metrics[k]:.4f}" for k in ("accuracy", "f1_macro", "log_loss", "roc_auc")
                         if k in r.metrics)
        print(f"{r.name:<8} {'pass' if r.passed else 'FAIL':<6} {r.seconds:>6.0f}s  {r.tag or '-':<32} "
              f"{r.role or '-':<10} {shown}")
        for failure in r.gate_failures:
            print(f"{'':<8} gate: {failure}")
        if r.skipped_files:
            print(f"{'':<8} {r.skipped_files} unreadable input files skipped (listed in the MLflow run)")
    for name, message in errors.items():
        print(f"{name:<8} {'ERROR':<6} {'':>7}  {message}")


if __name__ == "__main__":
    sys.exit(main())
