"""serving-requirements.txt is the serving stack's one list of versions: the venv installs
under it (Makefile: pip's -c) and the image from it (bentofile.yaml). A new release on PyPI
must change neither; this fails in seconds where the container test would fail after its build."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import yaml
from packaging.requirements import Requirement

PROJECT = Path(__file__).resolve().parents[2]
REQUIREMENTS = PROJECT / "serving-requirements.txt"


def serving_pins() -> dict[str, str]:
    """{package: version} from serving-requirements.txt; each line must be an exact pin."""
    pins = {}
    for line in REQUIREMENTS.read_text().splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            requirement = Requirement(text)
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", f"not an exact pin: {line!r}"
            pins[requirement.name] = specifier.version
    return pins


def test_the_venv_runs_exactly_the_pinned_stack():
    installed = {name: version(name) for name in serving_pins()}
    assert installed == serving_pins(), "the venv differs from serving-requirements.txt: run `make install`"


def test_the_bento_installs_the_same_list():
    python = yaml.safe_load((PROJECT / "bentofile.yaml").read_text())["python"]
    # BentoML ignores `packages` when requirements_txt is set: a second list would be dead.
    assert python == {"requirements_txt": REQUIREMENTS.name}


def test_every_pin_is_within_what_pyproject_allows():
    declared = [Requirement(text) for text in tomllib.loads((PROJECT / "pyproject.toml").read_text())
                ["project"]["dependencies"]]
    pins = serving_pins()
    assert {requirement.name for requirement in declared} <= set(pins), "a serving dependency without a pin"
    for requirement in declared:
        assert requirement.specifier.contains(pins[requirement.name]), (requirement, pins[requirement.name])
