"""serving-requirements.txt is the serving stack's one list of versions: the venv installs
under it (Makefile: pip's -c) and the image from it (bentofile.yaml); dev-constraints.txt
pins the rest of the venv (tools/lock.py). A new release on PyPI must change neither; this
fails in seconds where the container test would fail after its build."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tools.lock import LOCK, SERVING, exact_pins

PROJECT = Path(__file__).resolve().parents[2]


def test_the_venv_runs_exactly_the_pinned_stack():
    pins = exact_pins(SERVING)
    assert {name: version(name) for name in pins} == pins, "the venv differs from serving-requirements.txt"


def test_the_venv_runs_exactly_the_locked_rest():
    locked = exact_pins(LOCK)
    assert {name: version(name) for name in locked} == locked, "the venv differs from dev-constraints.txt"


def test_the_lock_brings_in_the_serving_pins_and_repeats_none():
    assert f"-c {SERVING.name}" in LOCK.read_text().splitlines()
    assert not set(exact_pins(LOCK)) & set(exact_pins(SERVING))


def test_the_bento_installs_the_same_list():
    python = yaml.safe_load((PROJECT / "bentofile.yaml").read_text())["python"]
    # BentoML ignores `packages` when requirements_txt is set: a second list would be dead.
    assert python == {"requirements_txt": SERVING.name}


def test_every_pin_is_within_what_pyproject_allows():
    declared = [Requirement(text) for text in tomllib.loads((PROJECT / "pyproject.toml").read_text())
                ["project"]["dependencies"]]
    pins = exact_pins(SERVING)
    assert {canonicalize_name(requirement.name) for requirement in declared} <= set(pins), "a dependency unpinned"
    for requirement in declared:
        pinned = pins[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(pinned), (requirement, pinned)


def test_a_requirement_that_is_not_an_exact_pin_is_refused(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("-c other.txt\nPrometheus_Client==0.26.0  # a comment\n")
    assert exact_pins(path) == {"prometheus-client": "0.26.0"}
    path.write_text("pandas>=3.1\n")
    with pytest.raises(ValueError, match="not an exact pin"):
        exact_pins(path)
