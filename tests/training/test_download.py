"""The download path, against a real local HTTP server serving the real files."""

import hashlib
import http.server
import threading
import zipfile
from functools import partial
from pathlib import Path

import pytest

from training import download
from training.download import ChecksumMismatch, DataUnavailable, RemoteFile


@pytest.fixture()
def file_server(tmp_path):
    """Serve tmp_path/www over HTTP on a free loopback port."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_published_kobe_checksums_match_the_real_files(settings):
    assert sha256(settings.data_dir / download.KOBE_DEV.path) == download.KOBE_DEV.sha256
    assert sha256(settings.data_dir / download.KOBE_PROD.path) == download.KOBE_PROD.sha256


def test_missing_file_is_downloaded_and_verified(settings, file_server, tmp_path):
    www, url = file_server
    real = settings.data_dir / download.KOBE_DEV.path
    (www / real.name).write_bytes(real.read_bytes())
    remote = RemoteFile(download.KOBE_DEV.path, f"{url}/{real.name}", download.KOBE_DEV.sha256)
    data_dir = tmp_path / "data"

    path = download.ensure(remote, data_dir)

    assert path == data_dir / "kobe" / "dataset_kobe_dev.parquet"
    assert sha256(path) == download.KOBE_DEV.sha256
    assert list(path.parent.iterdir()) == [path]  # no partial files left behind
    assert download.ensure(remote, data_dir) == path  # present now: no second download


def test_wrong_checksum_is_rejected_and_nothing_is_kept(settings, file_server, tmp_path):
    www, url = file_server
    real = settings.data_dir / download.KOBE_PROD.path
    (www / real.name).write_bytes(real.read_bytes())
    remote = RemoteFile(download.KOBE_PROD.path, f"{url}/{real.name}", "0" * 64)
    data_dir = tmp_path / "data"

    with pytest.raises(ChecksumMismatch, match="does not match"):
        download.ensure(remote, data_dir)
    assert not (data_dir / remote.path).exists()
    assert not any(p.is_file() for p in data_dir.rglob("*"))


def test_archive_is_unpacked_into_the_data_layout(malaria_image_paths, file_server, tmp_path):
    www, url = file_server
    archive = www / "cell_images.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for class_name, paths in malaria_image_paths.items():
            for path in paths[:5]:
                bundle.write(path, f"cell_images/{class_name}/{path.name}")
    remote = RemoteFile("malaria/cell_images", f"{url}/cell_images.zip", sha256(archive), unpack_to="malaria")

    root = download.ensure(remote, tmp_path / "data")

    assert root == tmp_path / "data" / "malaria" / "cell_images"
    assert len(list((root / "Parasitized").glob("*.png"))) == 5
    assert len(list((root / "Uninfected").glob("*.png"))) == 5


def test_archive_with_paths_outside_the_folder_is_refused(file_server, tmp_path):
    www, url = file_server
    archive = www / "evil.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("../../escaped.txt", "gotcha")
    remote = RemoteFile("malaria/cell_images", f"{url}/evil.zip", sha256(archive), unpack_to="malaria")
    with pytest.raises(DataUnavailable, match="unsafe path"):
        download.ensure(remote, tmp_path / "data")
    assert not (tmp_path / "escaped.txt").exists()


def test_unreachable_source_gives_a_clear_error_naming_the_file(tmp_path):
    remote = RemoteFile("kobe/dataset_kobe_dev.parquet", "http://127.0.0.1:9/nothing.parquet", "0" * 64)
    with pytest.raises(DataUnavailable) as caught:
        download.ensure(remote, tmp_path / "data")
    message = str(caught.value)
    assert "kobe/dataset_kobe_dev.parquet" in message
    assert "DATA_DIR" in message and "127.0.0.1:9" in message


def test_http_error_gives_the_same_clear_error(file_server, tmp_path):
    _, url = file_server
    remote = RemoteFile("kobe/dataset_kobe_dev.parquet", f"{url}/absent.parquet", "0" * 64)
    with pytest.raises(DataUnavailable, match="404"):
        download.ensure(remote, tmp_path / "data")
