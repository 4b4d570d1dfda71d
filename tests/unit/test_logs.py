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


def test_client_text_reaches_the_log_escaped():
    line = logs.escaped("field\x1b[31mred\x07\nFAKE 200 OK\u2028é細")
    assert line == "field\\x1b[31mred\\x07\\nFAKE 200 OK\\u2028é細"
    assert line.isprintable()


def test_answers_are_logged_with_their_route_and_repeats_are_cut(caplog, monkeypatch):
    logs.install()
    clock = [1000.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: clock[0])
    caplog.set_level(logging.INFO)
    for _ in range(logs.REPEATS_LOGGED + 7):
        logs.log_answer("POST", "/v2/models/iris/infer", 400, "input 'x' \x1b unknown")
    logs.log_answer("POST", "/iris", 415, "another error")
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("POST /v2/models/iris/infer answered 400: input 'x' \\x1b unknown") == logs.REPEATS_LOGGED
    assert "POST /iris answered 415: another error" in lines
    clock[0] += logs.REPEAT_WINDOW_S + 1
    caplog.clear()
    logs.log_answer("POST", "/v2/models/iris/infer", 400, "input 'x' \x1b unknown")
    (summary,) = [r.getMessage() for r in caplog.records]
    assert summary.endswith("(and 7 more like it in 60 s, not logged)"), summary


def test_faults_are_never_cut(caplog):
    limited = logs.RepeatsLimited()
    records = [logging.LogRecord("x", logging.ERROR, __file__, 1, "fault", None, None) for _ in range(20)]
    assert all(limited.filter(record) for record in records)


def test_an_unparsable_request_is_an_info_line_not_a_warning(caplog):
    logs.install()
    caplog.set_level(logging.INFO)
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    (record,) = caplog.records
    assert record.levelno == logging.INFO and "answered 400" in record.getMessage()


def test_libtiff_messages_are_log_lines_not_bare_stderr(caplog, capfd):
    """A damaged JPEG-in-TIFF made libtiff print "JPEGLib: ..." straight to stderr."""
    import io
    import random

    from PIL import Image

    from service.errors import InvalidInput
    from service.preprocessing import decode_image

    logs.install()
    caplog.set_level(logging.INFO)
    buffer = io.BytesIO()
    Image.linear_gradient("L").resize((64, 64)).convert("RGB").save(buffer, "TIFF", compression="jpeg")
    rng = random.Random(3)
    for _ in range(60):
        damaged = bytearray(buffer.getvalue())
        for _ in range(3):
            damaged[rng.randrange(8, len(damaged))] = rng.randrange(256)
        try:
            decode_image(bytes(damaged))
        except InvalidInput:
            pass
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("libtiff ")]
    assert any("JPEG" in line for line in lines), lines
    assert all(line.isprintable() for line in lines)
    assert "JPEGLib" not in capfd.readouterr().err
