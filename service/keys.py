"""Optional API keys with scopes: who may call which route.

API_KEYS_FILE names a file (in Kubernetes, a mounted Secret), one key a line:

    NAME SCOPES SHA256HEX        e.g.  batch-job predict,read 9f86d081884c7d65...

SHA256HEX is the SHA-256 of the key, so no key is stored in clear; `#` starts a comment.
Scopes: `predict` (typed routes, V2 infer), `read` (/models, drift and shadow reports, V2
metadata), `metrics` (/metrics). Probes, V2 health, the OpenAPI document and the pages
(/, /ui: their calls carry the key) stay open; any other path needs a valid key (an
unknown route is not revealed to strangers).

Clients send `Authorization: Bearer KEY`. The answer is decided from the headers alone,
before any body is read: 401 with `WWW-Authenticate: Bearer` for a missing, malformed or
unknown key, 403 for a key without the route's scope, both with the service's error body.
The presented key is hashed and compared with every stored hash in constant time.

The file is re-read when it changes (checked at most once a second, on a request), so a
rotated Secret takes effect without a restart. A new version that does not parse (its line
number is logged) or holds no key leaves the keys in force unchanged: never half-loaded.
Unset: the service is open, as before, with one WARNING at start; REQUIRE_API_KEYS=1 makes a
missing, unreadable, malformed or empty file a start-up failure.

`python -m service.keys new NAME --scopes predict,read` prints a new key once, and its line.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from service.errors import error_body
from service.logs import BENTOML_API_LOGGER, KEY_NAME

Scope = Literal["predict", "read", "metrics"]
SCOPES: tuple[Scope, ...] = ("predict", "read", "metrics")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
HASH_PATTERN = re.compile(r"[0-9a-fA-F]{64}")
MAX_KEY_CHARS = 256
"""A longer token is refused unhashed: no key this module makes is longer than 60."""
KEY_PREFIX = "msk_"
RECHECK_SECONDS = 1.0
REALM = 'Bearer realm="model-serving"'

logger = logging.getLogger(BENTOML_API_LOGGER)  # BentoML's handlers and format, as service/logs.py



class KeyFileError(ValueError):
    """The keys file cannot be used; the message names the file and, for a bad line, its number."""


@dataclass(frozen=True)
class Key:
    name: str
    scopes: frozenset[str]
    digest: bytes  # SHA-256 of the key


def parse(text: str, source: str) -> list[Key]:
    """Every key of a keys file, or KeyFileError at the first bad line (none are taken then)."""
    keys: list[Key] = []
    names: set[str] = set()
    digests: set[bytes] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}, line {number}"
        fields = line.split()
        if len(fields) != 3:
            raise KeyFileError(f"{where}: expected 'NAME SCOPES SHA256HEX' (3 fields), found {len(fields)}")
        name, scopes_text, hex_digest = fields
        if not NAME_PATTERN.fullmatch(name):
            raise KeyFileError(f"{where}: the name must be 1-64 letters, digits, '.', '_' or '-', "
                               f"starting with a letter or digit")
        scopes = scopes_text.split(",")
        unknown = [s for s in scopes if s not in SCOPES]
        if unknown or not scopes:
            raise KeyFileError(f"{where}: unknown scope {unknown[0][:20]!r}: scopes are {', '.join(SCOPES)}, "
                               f"separated by commas")
        if not HASH_PATTERN.fullmatch(hex_digest):
            raise KeyFileError(f"{where}: the third field must be the key's SHA-256 as 64 hex digits "
                               f"(python -m service.keys new NAME --scopes ... prints the line)")
        digest = bytes.fromhex(hex_digest)
        if name in names:
            raise KeyFileError(f"{where}: the name {name!r} is used twice")
        if digest in digests:
            raise KeyFileError(f"{where}: the same key is listed twice")
        names.add(name)
        digests.add(digest)
        keys.append(Key(name, frozenset(scopes), digest))
    return keys


def read(path: Path) -> list[Key]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot be read ({exc.__class__.__name__}: {exc})") from None
    return parse(text, str(path))


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    """What changes when the file is replaced or written (a Secret's update swaps a symlink)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size


class KeyRing:
    """The keys of API_KEYS_FILE, re-read when the file changes."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self._identity: tuple[int, int, int, int] | None = None
        self.keys: list[Key] = []
        self._checked = -RECHECK_SECONDS
        self._loaded_at: float | None = None
        self.refresh()

    def refresh(self) -> None:
        """Re-read the file if it changed since the last look (at most once per RECHECK_SECONDS)."""
        now = self._clock()
        if now - self._checked < RECHECK_SECONDS:
            return
        self._checked = now
        identity = _identity(self.path)
        if identity == self._identity:
            return
        self._identity = identity
        first = self._loaded_at is None
        try:
            keys = read(self.path)
            if not keys and not first:  # what a file being rewritten in place looks like
                raise KeyFileError(f"{self.path}: holds no key")
        except KeyFileError as exc:
            logger.error("API keys not (re)loaded, the %d keys in force are kept: %s", len(self.keys), exc)
            return
        self.keys = keys  # one assignment: a request sees the old keys or the new, never a mix
        self._loaded_at = now
        if not first:
            logger.info("API keys reloaded from %s: %d keys (%s)", self.path, len(keys),
                        ", ".join(k.name for k in keys))

    def find(self, token: str) -> Key | None:
        """The key whose hash matches, comparing with every stored hash (constant time)."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found


def required_scope(path: str, typed_routes: frozenset[str]) -> Scope | Literal["open", "any"]:
    """What a path needs: a scope, nothing ("open"), or any valid key (every other path)."""
    path = path.rstrip("/") or "/"
    if path in OPEN_PATHS or path.startswith(("/static_content/", "/ui/")) or _V2_MODEL_READY.fullmatch(path):
        return "open"
    if path in typed_routes or _V2_INFER.fullmatch(path):
        return "predict"
    if path == "/metrics":
        return "metrics"
    if path in ("/models", "/v2") or _MODEL_REPORT.fullmatch(path) or _V2_METADATA.fullmatch(path):
        return "read"
    return "any"


OPEN_PATHS = frozenset({"/", "/ui", "/livez", "/healthz", "/readyz", "/docs.json", "/v2/health/live",
                        "/v2/health/ready"})
_V2_MODEL = r"/v2/models/[^/]+(?:/versions/[^/]+)?"
_V2_MODEL_READY = re.compile(_V2_MODEL + "/ready")
_V2_INFER = re.compile(_V2_MODEL + "/infer")
_V2_METADATA = re.compile(_V2_MODEL)
_MODEL_REPORT = re.compile(r"/models/[^/]+/(?:drift|shadow)")


def api_keys(app: Any, typed_routes: list[str]) -> Any:
    """The middleware BentoML builds in the worker (on its first request, after
    check_at_start): ApiKeyGuard when API_KEYS_FILE is set, else the app itself (no layer,
    no cost)."""
    path = configured()
    return app if path is None else ApiKeyGuard(app, path, typed_routes)


def configured() -> Path | None:
    """API_KEYS_FILE, or None: keys off."""
    name = os.environ.get("API_KEYS_FILE", "").strip()
    return Path(name) if name else None


class ApiKeyGuard:
    """ASGI middleware: the checks of the module docstring, before the app sees the request."""

    def __init__(self, app: Any, path: Path, typed_routes: list[str]) -> None:
        self.app = app
        self.ring = KeyRing(path)  # a file that broke since check_at_start: no key, until it is mended
        self.typed_routes = frozenset(typed_routes)
        self._metrics: KeyMetrics | None = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        needed = required_scope(scope["path"], self.typed_routes)
        if needed == "open":
            await self.app(scope, receive, send)
            return
        if self._metrics is None:  # created in the worker, on first use: never at import
            self._metrics = KeyMetrics()
        self.ring.refresh()
        key, refusal = self._check(scope, needed)
        if key is not None:
            KEY_NAME.set(key.name)  # for the log lines, refused (scope) or not
        if refusal is not None:
            self._metrics.refused(refusal[0])
            await _refuse(scope, send, *refusal[1:])
            return
        assert key is not None
        self._metrics.admitted(key.name)
        await self.app(scope, receive, send)

    def _check(self, scope: dict, needed: str) -> tuple[Key | None, tuple[str, int, str, str] | None]:
        """(the key or None, the refusal or None); a refusal is (reason, status, message,
        WWW-Authenticate)."""
        values = [v for k, v in scope["headers"] if k.lower() == b"authorization"]
        if not values:
            return None, ("missing", 401, "this route needs an API key: send Authorization: Bearer KEY", REALM)
        invalid = f'{REALM}, error="invalid_token"'
        if len(values) > 1:
            return None, ("malformed", 401, "send one Authorization header", f'{REALM}, error="invalid_request"')
        scheme, _, token = values[0].decode("latin-1").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token or len(token) > MAX_KEY_CHARS:
            return None, ("malformed", 401, "the Authorization header must be 'Bearer KEY'",
                          f'{REALM}, error="invalid_request"')
        key = self.ring.find(token)
        if key is None:
            return None, ("unknown", 401, "the API key is not known (or was revoked)", invalid)
        if needed != "any" and needed not in key.scopes:
            return key, ("scope", 403, f"the API key {key.name!r} lacks the scope {needed!r} this route needs",
                          f'{REALM}, error="insufficient_scope", scope="{needed}"')
        return key, None


async def _refuse(scope: dict, send: Callable, status: int, message: str, challenge: str) -> None:
    """The error body, before the request's body is read (so the connection ends if it has one)."""
    body = error_body(message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"www-authenticate", challenge.encode())]
    if any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in scope["headers"]):
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body if scope["method"] != "HEAD" else b""})


class KeyMetrics:
    """Requests admitted per key name, and refusals per reason (missing, malformed, unknown,
    scope): label sets bounded by the keys file and four reasons."""

    def __init__(self) -> None:
        from prometheus_client import Counter

        self._admitted = Counter("api_key_requests", "requests admitted, by the name of their API key", ["key"])
        self._refused = Counter("api_key_refusals", "requests refused for their API key, by reason", ["reason"])
        self._children: dict[str, Any] = {}

    def admitted(self, name: str) -> None:
        child = self._children.get(name)
        if child is None:
            child = self._children[name] = self._admitted.labels(key=name)
        child.inc()

    def refused(self, reason: str) -> None:
        self._refused.labels(reason=reason).inc()


def check_at_start(environ: dict[str, str] | os._Environ[str] = os.environ) -> Path | None:
    """The keys file to enforce, or None for an open service (warned once). KeyFileError
    (the worker does not start) when a file is set but cannot be used, and when
    REQUIRE_API_KEYS=1 and it is unset or empty."""
    required = environ.get("REQUIRE_API_KEYS", "0").strip().lower() in ("1", "true", "yes")
    name = environ.get("API_KEYS_FILE", "").strip()
    if not name:
        if required:
            raise KeyFileError("REQUIRE_API_KEYS=1 but API_KEYS_FILE is not set")
        logger.warning("API_KEYS_FILE is not set: every route is open to anyone who can reach the port")
        return None
    path = Path(name)
    keys = read(path)
    if not keys:
        if required:
            raise KeyFileError(f"{path}: holds no key, and REQUIRE_API_KEYS=1 "
                               f"(python -m service.keys new NAME --scopes predict,read prints a line)")
        logger.warning("%s holds no key: only the open routes answer until one is added", path)
    return path


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def line_for(name: str, scopes: list[str], key: str) -> str:
    line = f"{name} {','.join(scopes)} {hashlib.sha256(key.encode()).hexdigest()}"
    parse(line, "the new line")  # the same rules as the file's
    return line


def append(path: Path, line: str) -> None:
    """Add a key's line to a keys file, refusing (and leaving it as it was) if the result
    would not load: a name or key twice, or a bad line already there."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    parse(text + line + "\n", str(path))
    path.write_text(text + line + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.keys", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="print a new key (once) and its line for API_KEYS_FILE")
    new.add_argument("name", help="who holds the key (shown in logs and metrics)")
    new.add_argument("--scopes", required=True, help=f"comma-separated, of: {', '.join(SCOPES)}")
    new.add_argument("--append", type=Path, metavar="FILE",
                     help="add the line to this keys file (created if missing; the whole file is checked first)")
    check = commands.add_parser("check", help="parse a keys file: its key names and scopes, or the bad line")
    check.add_argument("file", type=Path)
    arguments = parser.parse_args(argv)
    try:
        if arguments.command == "new":
            key = new_key()
            line = line_for(arguments.name, arguments.scopes.split(","), key)
            if arguments.append is not None:
                append(arguments.append, line)
            print(f"key (shown once, give it to {arguments.name}): {key}")
            print(f"line {'added to ' + str(arguments.append) if arguments.append else 'for API_KEYS_FILE'}:\n{line}")
        else:
            keys = read(arguments.file)
            for key in keys:
                print(f"{key.name}: {','.join(s for s in SCOPES if s in key.scopes)}")
            print(f"{len(keys)} keys", file=sys.stderr)
    except KeyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
