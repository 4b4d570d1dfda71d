"""API keys (service/keys.py): the file's rules, reloading, the route -> scope map, the CLI."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest

from service import keys, v2_app
from service.keys import KeyFileError, KeyRing, check_at_start, parse, required_scope
from service.logs import BENTOML_API_LOGGER
from service.routes import ROUTES

TYPED = frozenset(route.path for route in ROUTES)


def line(name: str, scopes: str, key: str) -> str:
    return f"{name} {scopes} {hashlib.sha256(key.encode()).hexdigest()}"


def test_a_file_with_comments_and_blank_lines():
    text = f"# who may call\n\n{line('batch-job', 'predict,read', 'k1')}  # nightly\n{line('prom', 'metrics', 'k2')}\n"
    found = parse(text, "keys")
    assert [(k.name, sorted(k.scopes)) for k in found] == [("batch-job", ["predict", "read"]), ("prom", ["metrics"])]
    assert found[0].digest == hashlib.sha256(b"k1").digest()


@pytest.mark.parametrize(("bad", "says"), [
    ("batch-job predict", "3 fields"),
    ("batch-job predict,write " + "a" * 64, "unknown scope 'write'"),
    ("batch-job predict, " + "a" * 64, "unknown scope ''"),
    ("batch-job predict,," + " " + "a" * 64, "unknown scope ''"),
    ("batch-job predict " + "a" * 63, "64 hex digits"),
    ("batch-job predict " + "g" * 64, "64 hex digits"),
    ("-job predict " + "a" * 64, "the name"),
    ("x" * 65 + " predict " + "a" * 64, "the name"),
])
def test_a_bad_line_is_refused_with_its_number(bad, says):
    text = f"# header\n{line('good', 'read', 'k')}\n{bad}\n"
    with pytest.raises(KeyFileError) as refused:
        parse(text, "keys.txt")
    assert "keys.txt, line 3" in str(refused.value) and says in str(refused.value)


def test_a_name_or_a_key_twice_is_refused():
    with pytest.raises(KeyFileError, match="line 2: the name 'a' is used twice"):
        parse(f"{line('a', 'read', 'k1')}\n{line('a', 'read', 'k2')}", "f")
    with pytest.raises(KeyFileError, match="line 2: the same key is listed twice"):
        parse(f"{line('a', 'read', 'k1')}\n{line('b', 'predict', 'k1')}", "f")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def swap(folder: Path, text: str, generation: int) -> None:
    """What the kubelet does to a mounted Secret: a new folder, then one symlink renamed over."""
    data = folder / f"..{generation}"
    data.mkdir()
    (data / "api-keys").write_text(text)
    (folder / "..data_tmp").symlink_to(data.name)
    os.replace(folder / "..data_tmp", folder / "..data")


def test_a_rotated_secret_is_read_within_a_second_and_a_bad_one_never_half_loaded(tmp_path, caplog):
    swap(tmp_path, line("a", "predict", "ka") + "\n", 1)
    (tmp_path / "api-keys").symlink_to("..data/api-keys")
    clock = Clock()
    ring = KeyRing(tmp_path / "api-keys", clock)
    assert ring.find("ka").name == "a" and ring.find("kb") is None

    swap(tmp_path, line("a", "predict", "ka") + "\n" + line("b", "read", "kb") + "\n", 2)
    clock.now = 0.5
    ring.refresh()
    assert ring.find("kb") is None  # not looked at yet: at most once a second
    clock.now = 1.1
    ring.refresh()
    assert ring.find("kb").name == "b"

    # A broken version (a good first line, a bad second): nothing of it is taken.
    swap(tmp_path, line("c", "read", "kc") + "\nbroken line\n", 3)
    clock.now = 2.2
    with caplog.at_level(logging.ERROR, logger=BENTOML_API_LOGGER):
        ring.refresh()
    assert ring.find("kc") is None and ring.find("kb").name == "b"
    assert "line 2" in caplog.text and "2 keys in force are kept" in caplog.text

    # An empty version (what a file rewritten in place looks like for a moment): kept too.
    swap(tmp_path, "", 4)
    clock.now = 3.3
    ring.refresh()
    assert ring.find("ka").name == "a"

    swap(tmp_path, line("b", "read", "kb") + "\n", 5)  # a revoked
    clock.now = 4.4
    ring.refresh()
    assert ring.find("ka") is None and ring.find("kb").name == "b"


def test_a_file_that_broke_before_the_first_request_admits_nobody(tmp_path):
    path = tmp_path / "keys"
    path.write_text("not a key line\n")
    assert KeyRing(path).keys == []


@pytest.mark.parametrize(("path", "scope"), [
    *[(route.path, "predict") for route in ROUTES],
    ("/v2/models/iris/infer", "predict"), ("/v2/models/iris/versions/abc/infer", "predict"),
    ("/models", "read"), ("/models/iris/drift", "read"), ("/models/kobe/shadow", "read"), ("/models/", "read"),
    ("/v2", "read"), ("/v2/models/iris", "read"), ("/v2/models/iris/versions/abc", "read"),
    ("/metrics", "metrics"),
    ("/livez", "open"), ("/readyz", "open"), ("/healthz", "open"), ("/v2/health/live", "open"),
    ("/v2/health/ready", "open"), ("/v2/models/iris/ready", "open"), ("/v2/models/iris/versions/x/ready", "open"),
    ("/docs.json", "open"), ("/", "open"), ("/static_content/swagger-ui.css", "open"), ("/ui", "open"),
    ("/ui/ui.js", "open"),
    ("/nothing", "any"), ("/models/iris/other", "any"), ("/v2/models/iris/infer/x", "any"), ("/livez/x", "any"),
    ("/v2/models//infer", "any"), ("//metrics", "any"),
])
def test_every_route_has_its_scope(path, scope):
    assert required_scope(path, TYPED) == scope


def test_every_v2_route_is_classified():
    for path in v2_app.PATHS:
        concrete = path.replace("{name}", "iris").replace("{version}", "1")
        assert required_scope(concrete, TYPED) in ("open", "read", "predict"), path


def test_check_at_start(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=BENTOML_API_LOGGER):
        assert check_at_start({}) is None
    assert "every route is open" in caplog.text
    with pytest.raises(KeyFileError, match="REQUIRE_API_KEYS=1 but API_KEYS_FILE is not set"):
        check_at_start({"REQUIRE_API_KEYS": "1"})
    empty = tmp_path / "empty"
    empty.write_text("# nobody yet\n")
    assert check_at_start({"API_KEYS_FILE": str(empty)}) == empty
    with pytest.raises(KeyFileError, match="holds no key, and REQUIRE_API_KEYS=1"):
        check_at_start({"API_KEYS_FILE": str(empty), "REQUIRE_API_KEYS": "1"})
    with pytest.raises(KeyFileError, match="cannot be read"):
        check_at_start({"API_KEYS_FILE": str(tmp_path / "missing")})
    bad = tmp_path / "bad"
    bad.write_text("a b\n")
    with pytest.raises(KeyFileError, match="line 1"):
        check_at_start({"API_KEYS_FILE": str(bad)})


def test_new_prints_a_key_once_and_a_line_that_admits_it(tmp_path, capsys):
    assert keys.main(["new", "batch-job", "--scopes", "predict,read"]) == 0
    out = capsys.readouterr().out.splitlines()
    key = out[0].rsplit(" ", 1)[1]
    assert key.startswith(keys.KEY_PREFIX) and len(key) <= keys.MAX_KEY_CHARS
    assert key not in out[2]
    path = tmp_path / "keys"
    path.write_text(out[2] + "\n")
    found = KeyRing(path).find(key)
    assert found is not None and found.name == "batch-job" and found.scopes == {"predict", "read"}
    assert keys.main(["check", str(path)]) == 0
    assert capsys.readouterr().out == "batch-job: predict,read\n"
    assert keys.main(["new", "x", "--scopes", "predict,admin"]) == 1
    assert "unknown scope 'admin'" in capsys.readouterr().err
    path.write_text("oops\n")
    assert keys.main(["check", str(path)]) == 1
    assert "line 1" in capsys.readouterr().err


def test_the_documented_key_commands_run_as_written(tmp_path):
    """README's and k8s/README's `python -m service.keys` commands, in a copy's folder: the
    key each prints (or keeps in a variable, `KEY=$(... | sed ...)`) is admitted by the file
    it wrote, which holds its hash and never the key; `check` reads that file back."""
    import re
    import subprocess
    import sys

    from tests.documented import all_commands

    written = [c.text for c in all_commands() if re.match(r"(\w+=\$\()?\.venv/bin/python -m service\.keys ", c.text)]
    assert len(written) >= 3, written
    (tmp_path / "k8s").mkdir()
    for command in written:
        shell = command.replace(".venv/bin/python", sys.executable, 1)
        variable = re.match(r"(\w+)=\$\(", command)
        if variable:  # the documented command keeps the key in a variable: show what it holds
            shell += f'; echo "documented variable: ${variable.group(1)}"'
        done = subprocess.run(["bash", "-c", shell], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (command, done.stderr)
        printed = re.search(r"(?:key \(shown once, give it to \S+\)|documented variable): (\S*)", done.stdout)
        if printed:
            key = printed.group(1)
            assert key, (command, "no key kept")
            path = tmp_path / re.search(r"--append (\S+)", command).group(1)
            found = KeyRing(path).find(key)
            name = re.search(r"service\.keys new (\S+)", command).group(1)
            assert found is not None and found.name == name and key not in path.read_text(), command
        else:
            assert "batch-job: predict,read" in done.stdout
