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
