"""Client errors in one log line; tracebacks only for real faults.

BentoML 1.4 logs every exception of an API call as an ERROR with its traceback (about
1.9 KB), its own validation errors (answered 400) and a client hanging up mid-body
included: a fuzzing run wrote 5.4 MB of such tracebacks. A logging.Filter on the logger
BentoML writes them to turns those records into one INFO line; faults keep theirs.
"""

from __future__ import annotations

import logging

from service.errors import CLIENT_CLOSED_REQUEST

BENTOML_API_LOGGER = "bentoml._internal.server.http_app"
"""Where BentoML's `log_exception` writes "Exception on PATH [METHOD]"."""


class ClientErrorsInOneLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        status = client_error_status(error)
        if status is not None:
            path, method = record.args if isinstance(record.args, tuple) and len(record.args) == 2 else ("?", "?")
            record.msg, record.args = "%s %s answered %d: %s", (method, path, status, one_line(error))
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


def install() -> None:
    """Add the filter once (the worker calls this when it starts)."""
    logger = logging.getLogger(BENTOML_API_LOGGER)
    if not any(isinstance(f, ClientErrorsInOneLine) for f in logger.filters):
        logger.addFilter(ClientErrorsInOneLine())


def one_line(error: BaseException | None, limit: int = 300) -> str:
    """A short description of a client's error, without the input it sent."""
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        text = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors())
    else:
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
