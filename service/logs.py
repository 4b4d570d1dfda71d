"""Client errors in one log line each, escaped and rate-limited; tracebacks only for faults.

BentoML 1.4 logs every exception of an API call as an ERROR with its traceback (about
1.9 KB), its own validation errors (answered 400) and a client hanging up mid-body
included: a fuzzing run wrote 5.4 MB of such tracebacks. A logging.Filter on the logger
BentoML writes them to turns those records into one INFO line; faults keep theirs.
Every other refusal (the typed routes' and V2's own errors, the request guard's, 404 and
405) is logged by `JsonErrors` (service/errors.py) through `log_answer`, in the same form:
`METHOD PATH answered STATUS: message`.

Text a client controls (field names, paths, filenames) is escaped: no control character
reaches the log (terminal escape sequences, forged line breaks). A run of identical lines
is cut to REPEATS_LOGGED per REPEAT_WINDOW_S, then summed up in the next line logged.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar

BENTOML_API_LOGGER = "bentoml._internal.server.http_app"
"""Where BentoML's `log_exception` writes "Exception on PATH [METHOD]"; the answers this
service logs itself go there too, so they share BentoML's handlers and format."""
REPEATS_LOGGED = 5
REPEAT_WINDOW_S = 60.0
MAX_LINE = 300

CLIENT_CLOSED_REQUEST = 499  # service.errors.CLIENT_CLOSED_REQUEST (which imports this module)
ANSWER_LOGGED: ContextVar[dict[str, bool] | None] = ContextVar("answer_logged", default=None)
"""Set by JsonErrors for each request to a fresh dict: "logged" once BentoML's own record of
the error was logged, so that the answer is not logged twice; "refused" once the request
guard cut the body short (the app then sees a disconnect that is not the client's)."""

KEY_NAME: ContextVar[str | None] = ContextVar("api_key_name", default=None)
"""The name of the API key a request came with (never the key): set by service/keys.py."""


def request_tags() -> str:
    """" (key NAME)" for a request that came with an API key (service/keys.py), else "".
    A traced request's lines end with its trace id too: BentoML's log format adds
    "(trace=...,span=...)" whenever a span is current (service/tracing.py)."""
    key = KEY_NAME.get()
    return f" (key {key})" if key is not None else ""


class ClientErrorsInOneLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        status = client_error_status(error)
        if status is not None:
            path, method = record.args if isinstance(record.args, tuple) and len(record.args) == 2 else ("?", "?")
            record.msg, record.args = "%s %s answered %d: %s%s", (method, escaped(str(path)), status, one_line(error),
                                                                     request_tags())
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
            answer = ANSWER_LOGGED.get()
            if answer is not None:
                if status == CLIENT_CLOSED_REQUEST and answer.get("refused"):
                    return False  # the guard cut the body short and answers (and logs) why
                answer["logged"] = True
        return True


class UnparsableRequestsAsClientErrors(logging.Filter):
    """uvicorn's WARNING "Invalid HTTP request received." is a client's error, answered 400:
    one INFO line in the service's form (no route: the request line could not be read)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == "Invalid HTTP request received.":
            record.msg, record.args = "%s", ("unparsable HTTP request answered 400: the request is not valid HTTP/1.1",)
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class RepeatsLimited(logging.Filter):
    """At most REPEATS_LOGGED identical lines per REPEAT_WINDOW_S; the count of those left
    out is added to the first line logged after the window."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[str, tuple[float, int]] = {}  # line -> (window start, lines in window)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:  # faults are never dropped
            return True
        line, now = record.getMessage(), time.monotonic()
        start, count = self._seen.get(line, (now, 0))
        if now - start > REPEAT_WINDOW_S:
            dropped = count - REPEATS_LOGGED
            start, count = now, 0
            if dropped > 0:
                record.msg, record.args = "%s (and %d more like it in %.0f s, not logged)", (
                    line, dropped, REPEAT_WINDOW_S)
        if len(self._seen) > 1000:  # many different lines: start over rather than grow
            self._seen.clear()
        self._seen[line] = (start, count + 1)
        return count < REPEATS_LOGGED


def install() -> None:
    """Add the filters once (the worker calls this when it starts)."""
    logger = logging.getLogger(BENTOML_API_LOGGER)
    if not any(isinstance(f, ClientErrorsInOneLine) for f in logger.filters):
        logger.addFilter(ClientErrorsInOneLine())
        logger.addFilter(RepeatsLimited())
    uvicorn = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, UnparsableRequestsAsClientErrors) for f in uvicorn.filters):
        uvicorn.addFilter(UnparsableRequestsAsClientErrors())
        uvicorn.addFilter(RepeatsLimited())
    capture_libtiff()
    # The request guard checks multipart bodies and logs its answer; the parser's own
    # warning about the same body would be a second line, without the route.
    logging.getLogger("python_multipart").setLevel(logging.ERROR)


def capture_libtiff() -> None:
    """libtiff's warnings and errors (and libjpeg's inside a TIFF) as INFO lines of the log,
    escaped and rate-limited, instead of bare lines on stderr.

    libtiff prints "JPEGLib: Bogus Huffman table definition" and the like to stderr for a
    damaged TIFF; the file is refused with a 400 all the same. Pillow bundles libtiff and
    exposes no hook, so its handlers are replaced through ctypes (TIFFSetWarningHandler,
    TIFFSetErrorHandler). The message is formatted with vsnprintf where va_list is a
    pointer (x86-64 Linux); elsewhere its format string is logged as it is. No-op when the
    library is not found.
    """
    global _LIBTIFF_HANDLER
    if _LIBTIFF_HANDLER is not None:
        return
    import ctypes
    import glob
    import platform
    from pathlib import Path

    import PIL
    import PIL._imaging  # noqa: F401  (loads the bundled libtiff)

    found = glob.glob(str(Path(PIL.__file__).parent.parent / "pillow.libs" / "libtiff-*.so*"))
    if not found:
        return
    libtiff = ctypes.CDLL(found[0])
    formats = platform.system() == "Linux" and platform.machine() == "x86_64"
    libc = ctypes.CDLL(None)
    libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]
    handler_type = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)

    def handler(module: bytes | None, text: bytes | None, arguments: int | None) -> None:
        message = text or b""
        if formats and text:
            buffer = ctypes.create_string_buffer(MAX_LINE + 1)
            libc.vsnprintf(buffer, len(buffer), text, arguments)
            message = buffer.value
        logging.getLogger(BENTOML_API_LOGGER).info(
            "libtiff %s: %s", escaped((module or b"").decode("utf-8", "replace"), 80),
            escaped(message.decode("utf-8", "replace"), MAX_LINE))

    _LIBTIFF_HANDLER = handler_type(handler)  # kept: libtiff calls it for the life of the process
    for setter in (libtiff.TIFFSetWarningHandler, libtiff.TIFFSetErrorHandler):
        setter.argtypes, setter.restype = [handler_type], ctypes.c_void_p
        setter(_LIBTIFF_HANDLER)


_LIBTIFF_HANDLER = None


def log_answer(method: str, path: str, status: int, message: str) -> None:
    """One INFO line for an error answer the service gave (unless BentoML logged it)."""
    logging.getLogger(BENTOML_API_LOGGER).info("%s %s answered %d: %s%s", escaped(method[:16]),
                                               escaped(path[:200]), status, escaped(message, MAX_LINE),
                                               request_tags())


def escaped(text: str, limit: int | None = None) -> str:
    """The text with every non-printable character (controls, line breaks) as an escape."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def one_line(error: BaseException | None, limit: int = MAX_LINE) -> str:
    """A short description of a client's error, without the input it sent."""
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        text = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors())
    else:
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return escaped(" ".join(text.split()), limit)


def client_error_status(error: BaseException | None) -> int | None:
    """The status BentoML answers for an error the client caused, or None for a fault."""
    from bentoml.exceptions import BentoMLException
    from pydantic import ValidationError
    from starlette.requests import ClientDisconnect

    if isinstance(error, ValidationError):
        return 400
    if isinstance(error, ClientDisconnect):
        return CLIENT_CLOSED_REQUEST
    if isinstance(error, BentoMLException) and error.error_code < 500:
        return int(error.error_code)
    return None
