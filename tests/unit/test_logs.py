"""Client errors in one log line, faults with their traceback (service/logs.py)."""

from __future__ import annotations

import logging

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from service import logs


def test_client_errors_are_logged_in_one_line_and_faults_with_their_traceback(caplog):
    from bentoml._internal.server.http_app import log_exception

    logs.install()
    logs.install()  # once only
    assert sum(isinstance(f, logs.ClientErrorsInOneLine)
               for f in logging.getLogger(logs.BENTOML_API_LOGGER).filters) == 1
    request = Request({"type": "http", "method": "POST", "path": "/iris", "headers": [], "query_string": b""})

    class Record(BaseModel):
        width: float

    caplog.set_level(logging.INFO)
    for error in (ClientDisconnect(), RuntimeError("a bug")):
        try:
            raise error
        except Exception:
            log_exception(request)  # what BentoML calls for every exception of an API call
    try:
        Record.model_validate({"width": "wide"})
    except ValidationError:
        log_exception(request)

    disconnect, fault, invalid = caplog.records
    assert disconnect.exc_info is None and "POST /iris answered 499" in disconnect.getMessage()
    assert fault.levelno == logging.ERROR and fault.exc_info is not None
    assert invalid.exc_info is None and invalid.levelno == logging.INFO
    assert invalid.getMessage() == "POST /iris answered 400: width: Input should be a valid number, unable to " \
                                   "parse string as a number"
