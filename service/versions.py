"""Which stored version of each model is served, built and scored: one rule, used by the
service, `bentoml build` and batch scoring. (`python -m training --only-missing` asks
whether a full model of the current spec is stored: full_versions, pins aside.)

- `NAME_MODEL_VERSION` set: exactly that version (a quick one too: asking by its exact
  version is the only way to serve one).
- In a built image (BentoML's `BENTO_PATH`, models under it): the version the image holds,
  chosen when it was built.
- Otherwise the newest *full* version: a smoke run (`--quick`) never becomes what is
  served or built, whatever BentoML's `latest` points at.

Quick models are saved as `NAME:quick-...` so `bentoml models list` shows them as such.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

QUICK_PREFIX = "quick-"
"""Version prefix of models trained with `--quick` (tests and smoke runs)."""


class NoServableModel(LookupError):
    """The store holds no version of a model that may be served without being pinned."""


def pinned_version(name: str) -> str | None:
    """NAME_MODEL_VERSION: the exact version to use, or None."""
    return os.environ.get(f"{name.upper()}_MODEL_VERSION") or None


def is_quick(model: Any) -> bool:
    """A bentoml.Model saved by a `--quick` run (by its label; older stores lack the prefix)."""
    return model.info.labels.get("quick") == "true" or str(model.tag.version).startswith(QUICK_PREFIX)


def quick_version() -> str:
    """A fresh version string for a quick model: BentoML's own, with the prefix."""
    from bentoml import Tag

    return QUICK_PREFIX + str(Tag("model").make_new_version().version)


def _in_built_image(models: list[Any]) -> bool:
    bento_path = os.environ.get("BENTO_PATH")
    return bool(bento_path and models) and all(
        Path(model.path).resolve().is_relative_to(Path(bento_path).resolve()) for model in models)


def stored_versions(name: str) -> list[Any]:
    """Every stored version of a model (bentoml.Model), newest first."""
    import bentoml

    try:
        stored = bentoml.models.list(name)
    except bentoml.exceptions.NotFound:  # BentoML's answer for a name with no version at all
        return []
    return sorted(stored, key=lambda model: model.info.creation_time, reverse=True)


def full_versions(name: str) -> list[Any]:
    """The stored full (not quick) versions of a model, newest first."""
    return [model for model in stored_versions(name) if not is_quick(model)]


def quick_versions(name: str) -> list[Any]:
    """The stored quick versions of a model, newest first."""
    return [model for model in stored_versions(name) if is_quick(model)]


def served_tag(name: str) -> str:
    """The tag (`name:version`) to serve; NoServableModel says what to do when there is none."""
    if (version := pinned_version(name)) is not None:
        return f"{name}:{version}"
    stored = stored_versions(name)
    if _in_built_image(stored):
        return str(stored[0].tag)
    full = [model for model in stored if not is_quick(model)]
    if full:
        return str(full[0].tag)
    home = os.environ.get("BENTOML_HOME", "~/bentoml")
    quick = ", ".join(str(model.tag) for model in stored[:3])
    raise NoServableModel(
        f"no full {name} model in the BentoML store ({home})"
        + (f"; quick ones ({quick}) are served only when pinned, e.g. "
           f"{name.upper()}_MODEL_VERSION={stored[0].tag.version}" if stored else "")
        + f". Train it: python -m training {name}")
