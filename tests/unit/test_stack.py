"""serving-requirements.txt is the serving stack's one list of versions: the venv installs
under it (Makefile: pip's -c) and the image from it (bentofile.yaml); dev-constraints.txt
pins the rest of the venv (tools/lock.py). A new release on PyPI must change neither; this
fails in seconds where the container test would fail after its build."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = Path(__file__).resolve().parents[2]
REQUIREMENTS = PROJECT / "serving-requirements.txt"
LOCK = PROJECT / "dev-constraints.txt"


def exact_pins(path: Path) -> dict[str, str]:
    """{package: version} of a requirements file whose every requirement is an exact pin."""
    pins = {}
    for line in path.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text and not text.startswith("-c "):
            requirement = Requirement(text)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"not an exact pin: {line!r}"
            pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def serving_pins() -> dict[str, str]:
    return exact_pins(REQUIREMENTS)


def test_the_venv_runs_exactly_the_pinned_stack():
    installed = {name: version(name) for name in serving_pins()}
    assert installed == serving_pins(), "the venv differs from serving-requirements.txt: run `make install`"


def test_the_venv_runs_exactly_the_locked_rest():
    locked = exact_pins(LOCK)
    assert {name: version(name) for name in locked} == locked, "the venv differs from dev-constraints.txt"


def test_the_lock_brings_in_the_serving_pins_and_repeats_none():
    assert f"-c {REQUIREMENTS.name}" in LOCK.read_text().splitlines()
    assert not set(exact_pins(LOCK)) & set(serving_pins())


def test_the_bento_installs_the_same_list():
    python = yaml.safe_load((PROJECT / "bentofile.yaml").read_text())["python"]
    # BentoML ignores `packages` when requirements_txt is set: a second list would be dead.
    assert python == {"requirements_txt": REQUIREMENTS.name}


def test_every_pin_is_within_what_pyproject_allows():
    declared = [Requirement(text) for text in tomllib.loads((PROJECT / "pyproject.toml").read_text())
                ["project"]["dependencies"]]
    pins = serving_pins()
    assert {canonicalize_name(requirement.name) for requirement in declared} <= set(pins), "a dependency unpinned"
    for requirement in declared:
        pinned = pins[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(pinned), (requirement, pinned)
