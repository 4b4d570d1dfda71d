"""Fetch a data file from its public source when DATA_DIR lacks it, verifying sha256.

Archives are unpacked in place. Without a network the error names the file, where it
comes from and how to supply it by hand.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """A file of the data layout and where it comes from."""

    path: str
    """Path inside DATA_DIR that must exist after fetching (a file or a folder)."""
    url: str
    sha256: str
    unpack_to: str | None = None
    """For archives: the folder inside DATA_DIR to extract into."""


class DataUnavailable(RuntimeError):
    """A data file is missing and could not be downloaded."""


class ChecksumMismatch(DataUnavailable):
    """A download did not match its published sha256; it was discarded."""


KOBE_DEV = RemoteFile(
    path="kobe/dataset_kobe_dev.parquet",
    url="https://raw.githubusercontent.com/tciodaro/eng_ml/main/data/dataset_kobe_dev.parquet",
    sha256="3a177adbf7e4ef40cb770940a3aa52ee4880372352d4cf676a94a2d274a36b07",
)
KOBE_PROD = RemoteFile(
    path="kobe/dataset_kobe_prod.parquet",
    url="https://raw.githubusercontent.com/tciodaro/eng_ml/main/data/dataset_kobe_prod.parquet",
    sha256="98e4a0c2ed17d350f84fd356bfdcce9b707e931ec37909999489a3d36cf9d05e",
)
# The NIH release (RGB, full size); checksum as published by TensorFlow Datasets.
MALARIA_IMAGES = RemoteFile(
    path="malaria/cell_images",
    url="https://data.lhncbc.nlm.nih.gov/public/Malaria/cell_images.zip",
    sha256="0a949556b2414159b5100192609805376654c4266d8d187be9b1922fad43c668",
    unpack_to="malaria",
)


def ensure(remote: RemoteFile, data_dir: Path) -> Path:
    """Path of `remote` inside data_dir, downloading (and unpacking) it if missing."""
    target = data_dir / remote.path
    if target.exists():
        return target
    print(f"{remote.path} is not in {data_dir}; downloading {remote.url}", file=sys.stderr)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
            downloaded = Path(tmp) / Path(remote.url).name
            fetch(remote.url, downloaded, remote.sha256)
            if remote.unpack_to is not None:
                unpack(downloaded, data_dir / remote.unpack_to)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                downloaded.replace(target)
    except ChecksumMismatch:
        raise
    except (OSError, urllib.error.URLError) as exc:
        raise DataUnavailable(
            f"{remote.path} is missing from DATA_DIR={data_dir} and could not be downloaded "
            f"from {remote.url} ({exc}). Download it yourself (sha256 {remote.sha256})"
            + (f", unpack it into {data_dir / remote.unpack_to}" if remote.unpack_to else
               f" to {target}")
            + ", or point DATA_DIR / --data-dir at a folder that has it."
        ) from exc
    if not target.exists():
        raise DataUnavailable(f"{remote.url} did not contain {remote.path}")
    return target


def fetch(url: str, destination: Path, sha256: str, timeout: float = 30.0) -> Path:
    """Stream url to destination with progress; raise ChecksumMismatch on a bad digest."""
    digest = hashlib.sha256()
    partial = destination.with_suffix(destination.suffix + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as response, partial.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        done, shown = 0, -1
        while chunk := response.read(CHUNK_BYTES):
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            percent = done * 100 // total if total else -1
            if percent // 10 != shown // 10:
                shown = percent
                size = f"{done / 1e6:.1f} MB" + (f" of {total / 1e6:.1f} MB ({percent}%)" if total else "")
                print(f"  {destination.name}: {size}", file=sys.stderr)
    if digest.hexdigest() != sha256:
        partial.unlink()
        raise ChecksumMismatch(
            f"{url}: sha256 {digest.hexdigest()} does not match the expected {sha256}; "
            "the download was discarded"
        )
    partial.replace(destination)
    return destination


def unpack(archive: Path, destination: Path) -> None:
    """Extract a zip, refusing members that would land outside destination."""
    destination.mkdir(parents=True, exist_ok=True)
    root = destination.resolve()
    with zipfile.ZipFile(archive) as bundle:
        members = bundle.infolist()
        for member in members:
            if not (root / member.filename).resolve().is_relative_to(root):
                raise DataUnavailable(f"{archive.name}: unsafe path {member.filename!r}")
        for index, member in enumerate(members, 1):
            bundle.extract(member, root)
            if index % 5000 == 0 or index == len(members):
                print(f"  unpacked {index}/{len(members)} files", file=sys.stderr)
    shutil.rmtree(root / "__MACOSX", ignore_errors=True)
