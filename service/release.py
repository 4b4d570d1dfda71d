"""What this server is: the project's version (the API's, in /docs.json) and the build's
(`service_version` in /metrics, `x-build` in /docs.json).

A built image is a bento: its version is the image tag (docker/containerize.sh, unless
given another), so a scrape or a client can tell which build answered. Served from the source tree, the build
is `PROJECT_VERSION+dev`: never mistaken for an image.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "bento-model-serving"
NOT_A_BENTO = "not available"
"""BentoML's bento_version outside a bento."""


def project_version() -> str:
    """pyproject.toml's version: from the installed package, else from the file (a bento
    holds the sources, not the installed package)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        found = re.search(r'^version = "([^"]+)"', pyproject.read_text(), re.M) if pyproject.is_file() else None
        return found.group(1) if found else "0+unknown"


def build_version(bento_version: str | None) -> str:
    """The bento's version, or `PROJECT_VERSION+dev` when not served from a bento."""
    if bento_version and bento_version != NOT_A_BENTO:
        return bento_version
    return f"{project_version()}+dev"
