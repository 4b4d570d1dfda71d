"""The files the docs' commands upload exist (`curl -F images=@PATH`, run from the project root)."""

from __future__ import annotations

import re
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
DOCS = [PROJECT / "README.md", *sorted((PROJECT / "docs").glob("*.md")), *sorted(PROJECT.glob("*/README.md"))]


def test_every_file_a_documented_command_uploads_exists():
    uploads = {(doc.name, path) for doc in DOCS for path in re.findall(r"=@([^\s'\"]+)", doc.read_text())}
    assert ("README.md", "examples/cell1.png") in uploads
    missing = sorted((doc, path) for doc, path in uploads if not (PROJECT / path).is_file())
    assert not missing, missing


def test_the_offline_bentofile_snippet_runs_as_written(tmp_path):
    """docker/README.md's by-hand command (it failed with KeyError: 'docker'), run from the
    project root with its output path moved into tmp_path."""
    import subprocess
    import sys

    import yaml

    text = (PROJECT / "docker" / "README.md").read_text()
    (command,) = re.findall(r"^\s*(\.venv/bin/python -c '.*bentofile\.offline\.yaml.*')$", text, re.MULTILINE)
    program = command.split("-c ", 1)[1].strip("'").replace("/tmp/bentofile.offline.yaml",
                                                              str(tmp_path / "offline.yaml"))
    subprocess.run([sys.executable, "-c", program], cwd=PROJECT, check=True)
    written = yaml.safe_load((tmp_path / "offline.yaml").read_text())
    original = yaml.safe_load((PROJECT / "bentofile.yaml").read_text())
    assert written["docker"]["base_image"] == "local/python-base:bookworm"
    assert {k: v for k, v in written.items() if k != "docker"} == {k: v for k, v in original.items() if k != "docker"}


def test_make_run_serves_this_machine_only_unless_told():
    import subprocess

    def serve_line(*args: str) -> str:
        printed = subprocess.run(["make", "-n", "run", *args], cwd=PROJECT, capture_output=True, text=True).stdout
        return [line for line in printed.splitlines() if "bentoml serve" in line][-1]

    assert serve_line().endswith("bentoml serve --host 127.0.0.1")
    assert serve_line("SERVE_HOST=0.0.0.0").endswith("bentoml serve --host 0.0.0.0")
