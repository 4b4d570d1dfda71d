"""Which stored version of each model is served, shadowed, built and scored: one rule,
used by the service, `bentoml build`, batch scoring and training (the relative gate
compares with the champion; `--only-missing` asks whether it fits the current spec).

Served (served_tag):
- `NAME_MODEL_VERSION` set: exactly that version (a quick one too: asking by its exact
  version is the only way to serve one).
- In a built image (BentoML's `BENTO_PATH`, models under it): the champion the image
  holds, chosen when it was built (never the shadow it may also hold).
- Otherwise the *champion*: the version whose label `role` is `champion` (training and
  `python -m training promote/rollback` set it, training/roles.py); in a store from before
  roles, the newest full version. A smoke run (`--quick`) never gets a role, and BentoML's
  `latest` is not used.

Shadowed (shadow_tag): `NAME_SHADOW_VERSION=challenger` (the version labelled so) or an
exact version; unset, none.

The roles live in each model's own labels (model.yaml), so they travel into a built image
and serving needs no MLflow; training/roles.py keeps MLflow's aliases in step.
Quick models are saved as `NAME:quick-...` so `bentoml models list` shows them as such.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger("bentoml.service.model_serving")

QUICK_PREFIX = "quick-"
"""Version prefix of models trained with `--quick` (tests and smoke runs)."""


ROLE_LABEL = "role"
CHAMPION = "champion"
CHALLENGER = "challenger"
ROLES = (CHAMPION, CHALLENGER)


class NoServableModel(LookupError):
    """The store holds no version of a model that may be served without being pinned."""


def pinned_version(name: str) -> str | None:
    """NAME_MODEL_VERSION: the exact version to use, or None."""
    return os.environ.get(f"{name.upper()}_MODEL_VERSION") or None


def shadow_setting(name: str) -> str | None:
    """NAME_SHADOW_VERSION: `challenger` or an exact version to shadow the served one, or None."""
    return os.environ.get(f"{name.upper()}_SHADOW_VERSION") or None


def role(model: Any) -> str | None:
    """`champion`, `challenger` or None, from the model's labels."""
    value = model.info.labels.get(ROLE_LABEL)
    return value if value in ROLES else None


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


def with_role(name: str, wanted: str) -> Any | None:
    """The stored version labelled `wanted` (champion or challenger), or None."""
    return next((model for model in full_versions(name) if role(model) == wanted), None)


HISTORY_LABELS = ("promoted_at", "retired_at", "rolled_back_at")
"""Labels training/roles.py leaves on versions that were champions."""


def champion(name: str) -> Any | None:
    """The champion (bentoml.Model): labelled so; in a store from before roles (no version
    has a role or a role's history), the newest full version. None otherwise: a store with
    roles but no champion never falls back to a retired or rolled-back version."""
    return champion_of(full_versions(name))


def champion_of(full: list[Any]) -> Any | None:
    """champion()'s rule over given full versions, newest first."""
    labelled = next((model for model in full if role(model) == CHAMPION), None)
    if labelled is not None or any(role(model) or set(HISTORY_LABELS) & set(model.info.labels) for model in full):
        return labelled
    return full[0] if full else None


def served_tag(name: str) -> str:
    """The tag (`name:version`) to serve; NoServableModel says what to do when there is none."""
    if (version := pinned_version(name)) is not None:
        return f"{name}:{version}"
    stored = stored_versions(name)
    if _in_built_image(stored):
        return str(_held_champion(name, stored, shadow_setting(name)).tag)
    if (best := champion(name)) is not None:
        return str(best.tag)
    if any(not is_quick(model) for model in stored):
        raise NoServableModel(f"no {name} version is labelled champion (python -m training status {name}); "
                              f"make one: python -m training promote {name} VERSION")
    home = os.environ.get("BENTOML_HOME", "~/bentoml")
    quick = ", ".join(str(model.tag) for model in stored[:3])
    raise NoServableModel(
        f"no full {name} model in the BentoML store ({home})"
        + (f"; quick ones ({quick}) are served only when pinned, e.g. "
           f"{name.upper()}_MODEL_VERSION={stored[0].tag.version}" if stored else "")
        + f". Train it: python -m training {name}")


def _held_champion(name: str, held: list[Any], shadow: str | None) -> Any:
    """What an image holding `held` serves when shadowing `shadow` (NAME_SHADOW_VERSION):
    never the shadow nor a labelled challenger (unless it is all the image holds); the one
    labelled champion among the rest, else the only one (a pinned build)."""
    served = [model for model in held
              if role(model) != CHALLENGER and str(model.tag.version) != shadow] or held
    labelled = [model for model in served if role(model) == CHAMPION]
    if labelled or len(served) == 1:
        return (labelled or served)[0]
    raise NoServableModel(
        f"the image holds {', '.join(str(model.tag) for model in held)} and none is labelled champion: set "
        f"{name.upper()}_MODEL_VERSION or {name.upper()}_SHADOW_VERSION as when it was built")


def silently_wrong_in_image(name: str, served: Any, shadow: Any) -> str | None:
    """Why an image holding `served` and its `shadow` would serve the shadow without a word
    when the run-time NAME_SHADOW_VERSION is unset or as now (an image that cannot tell
    stops at start instead, which is loud), or None."""
    for setting in (None, shadow_setting(name)):
        try:
            chosen = _held_champion(name, [served, shadow], setting)
        except NoServableModel:
            continue
        if chosen.tag != served.tag:
            return (f"an image holding {served.tag} and {shadow.tag} would serve {chosen.tag} when "
                    f"{name.upper()}_SHADOW_VERSION={setting or '(unset)'}; shadow the challenger instead")
    return None


def shadow_tag(name: str) -> str | None:
    """The tag to shadow the served model with (NAME_SHADOW_VERSION), or None when off, or
    when it asks for the challenger and there is none (after a promotion: the image or
    store holds none; logged, and the service runs unshadowed)."""
    setting = shadow_setting(name)
    if setting is None:
        return None
    if setting != CHALLENGER:
        return f"{name}:{setting}"
    if (model := with_role(name, CHALLENGER)) is None:
        logger.warning("%s_SHADOW_VERSION=challenger, but no %s version is the challenger "
                       "(python -m training status %s): not shadowing", name.upper(), name, name)
        return None
    return str(model.tag)
