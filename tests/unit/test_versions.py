"""service/versions.py's rules on stand-in stored models: which version an image serves,
when a store has no champion, and which builds would serve the wrong one."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from service import versions
from service.versions import NoServableModel


@dataclass
class Tag:
    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass
class Info:
    labels: dict
    creation_time: datetime
    metadata: dict = field(default_factory=dict)


@dataclass
class Stored:
    tag: Tag
    info: Info


def stored(version: str, age: int, **labels: str) -> Stored:
    return Stored(Tag("iris", version), Info(dict(labels), datetime(2026, 12, 1, tzinfo=UTC) - timedelta(days=age)))


@pytest.fixture()
def store(monkeypatch):
    models: list[Stored] = []
    monkeypatch.setattr(versions, "stored_versions", lambda name: sorted(
        models, key=lambda m: m.info.creation_time, reverse=True))
    monkeypatch.delenv("IRIS_MODEL_VERSION", raising=False)
    monkeypatch.delenv("IRIS_SHADOW_VERSION", raising=False)
    return models


def test_the_labelled_champion_is_served_not_the_newest(store):
    store += [stored("old", 3, role="champion"), stored("new", 1, role="challenger"),
              stored("quick-x", 0, quick="true")]
    assert versions.served_tag("iris") == "iris:old"


def test_a_store_from_before_roles_serves_its_newest_full_version(store):
    store += [stored("a", 3), stored("b", 1), stored("quick-x", 0, quick="true")]
    assert versions.served_tag("iris") == "iris:b"


def test_a_store_with_roles_but_no_champion_stops_instead_of_serving_a_demoted_version(store):
    store += [stored("a", 3, retired_at="2026-12-01"), stored("b", 1, rolled_back_at="2026-12-02")]
    with pytest.raises(NoServableModel, match="promote iris VERSION"):
        versions.served_tag("iris")


def test_shadowing_the_challenger_without_one_is_off_not_fatal(store, monkeypatch):
    store += [stored("a", 3, role="champion")]
    monkeypatch.setenv("IRIS_SHADOW_VERSION", "challenger")
    assert versions.shadow_tag("iris") is None
    store += [stored("b", 1, role="challenger")]
    assert versions.shadow_tag("iris") == "iris:b"
    monkeypatch.setenv("IRIS_SHADOW_VERSION", "exact")
    assert versions.shadow_tag("iris") == "iris:exact"


@pytest.mark.parametrize(("held", "shadow", "served"), [
    ([("champ", {"role": "champion"}), ("chall", {"role": "challenger"})], None, "champ"),
    ([("champ", {"role": "champion"}), ("chall", {"role": "challenger"})], "challenger", "champ"),
    ([("pinned", {}), ("chall", {"role": "challenger"})], None, "pinned"),
    ([("pinned", {}), ("other", {})], "other", "pinned"),
    ([("only", {"role": "challenger"})], None, "only"),  # built with the challenger pinned
])
def test_an_image_serves_its_champion_never_its_shadow(held, shadow, served):
    models = [stored(version, age, **labels) for age, (version, labels) in enumerate(held)]
    assert str(versions._held_champion("iris", models, shadow).tag) == f"iris:{served}"


def test_an_image_that_cannot_tell_stops_at_start():
    with pytest.raises(NoServableModel, match="none is labelled champion"):
        versions._held_champion("iris", [stored("a", 1), stored("b", 2)], None)


def test_a_build_that_an_image_would_serve_wrongly_is_refused(monkeypatch):
    pinned, champion = stored("pinned", 2), stored("champ", 1, role="champion")
    monkeypatch.setenv("IRIS_SHADOW_VERSION", "champ")  # shadowing the champion with an old pin
    reason = versions.silently_wrong_in_image("iris", pinned, champion)
    assert reason is not None and "would serve iris:champ" in reason
    monkeypatch.setenv("IRIS_SHADOW_VERSION", "challenger")
    challenger = stored("chall", 0, role="challenger")
    assert versions.silently_wrong_in_image("iris", champion, challenger) is None
