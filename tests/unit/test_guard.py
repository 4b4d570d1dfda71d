"""The request guard on its own (service/guard.py): multipart bodies checked as they stream,
bodies in flight within the budget, codings refused, HEAD answered like GET."""

from __future__ import annotations

import asyncio
import json

import pytest

from service.guard import MAX_FILENAME_BYTES, MultipartCheck, RequestGuard

BOUNDARY = "b0undary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def part(name: str = "images", filename: str | None = "cell.png", data: bytes = b"PNGDATA") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"


END = f"--{BOUNDARY}--\r\n".encode()


def check(body: bytes, chunk: int = 7) -> tuple[MultipartCheck, bytes]:
    """Feed the body in small pieces, as a socket would; the bytes handed on."""
    checker = MultipartCheck(CONTENT_TYPE, "images", max_parts=3)
    pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)] or [b""]
    passed = b"".join(checker.feed(piece, last=i == len(pieces) - 1) for i, piece in enumerate(pieces))
    return checker, passed


def test_a_good_body_passes_unchanged():
    body = part() + part(filename="other.jpg") + END
    checker, passed = check(body)
    assert checker.problem is None and passed == body and checker.parts == 2


def test_a_preamble_is_dropped_as_rfc_2046_says():
    body = part() + END
    checker, passed = check(b"This is a message in MIME format.\r\n" + body)
    assert checker.problem is None and passed == body


@pytest.mark.parametrize("body,fragment", [
    (part(), "ends before its closing boundary --b0undary--"),
    (b"no parts at all", "boundary --b0undary never appears"),
    (part(name="photo") + END, "unexpected multipart field 'photo'"),
    (part(filename=None) + END, "must be a file upload"),
    (part(filename="x" * (MAX_FILENAME_BYTES + 1)) + END, f"{MAX_FILENAME_BYTES + 1} bytes is too long"),
    (part(filename="dir/" * 100 + "cell.png") + END, None),  # the temporary file takes the base name only
    (part() * 4 + END, "at most 3 parts"),
    (f"--{BOUNDARY}\r\nContent-Type: image/png\r\n\r\nx\r\n".encode() + END, "no Content-Disposition"),
])
def test_what_is_wrong_with_a_body_is_said(body, fragment):
    checker, _ = check(body)
    if fragment is None:
        assert checker.problem is None
    else:
        assert checker.problem is not None and fragment in checker.problem, checker.problem


def test_a_content_type_without_boundary_is_a_problem_at_once():
    assert "names no boundary" in MultipartCheck("multipart/form-data", "images", 3).problem


# --- the guard as ASGI middleware ---------------------------------------------------------


class HeldApp:
    """Reads the whole body, then waits for `release` before answering 200 with its size."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send):
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.bodies.append(b"".join(chunks))
        await self.release.wait()
        body = str(len(self.bodies[-1])).encode() if scope["method"] != "GET" else b"hello"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


async def call(guard, method="POST", path="/iris", headers=(), chunks=(b"",)):
    pending = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent = []

    async def receive():
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path,
             "headers": [(k.encode(), v.encode()) for k, v in headers]}
    await guard(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body


def guard_for(app, budget=100, limit=60):
    return RequestGuard(app, max_body_bytes=limit, max_bytes_in_flight=budget,
                        content_types={"/iris": "application/json", "/malaria": "multipart/form-data"})


def test_bodies_in_flight_over_the_budget_get_503_until_one_is_answered():
    async def scenario():
        app = HeldApp()
        guard = guard_for(app)
        json_headers = [("content-type", "application/json"), ("content-length", "50")]
        first = asyncio.create_task(call(guard, headers=json_headers, chunks=[b"x" * 50]))
        second = asyncio.create_task(call(guard, headers=json_headers, chunks=[b"x" * 50]))
        await asyncio.sleep(0.01)
        assert guard.bytes_in_flight == 100
        status, headers, body = await call(guard, headers=[("content-type", "application/json"),
                                                           ("content-length", "10")], chunks=[b"y" * 10])
        assert status == 503 and headers[b"retry-after"] == b"1" and b"in flight" in body
        app.release.set()
        assert [(await first)[0], (await second)[0]] == [200, 200]
        assert guard.bytes_in_flight == 0, "released when answered"
        status, _, body = await call(guard, headers=[("content-type", "application/json"),
                                                     ("content-length", "10")], chunks=[b"y" * 10])
        assert (status, body) == (200, b"10")
        app.release.clear()
        held = asyncio.create_task(call(guard, headers=json_headers, chunks=[b"x" * 50]))
        await asyncio.sleep(0.01)
        chunked = asyncio.create_task(call(guard, headers=[("content-type", "application/json")],
                                           chunks=[b"z" * 30, b"z" * 30]))
        await asyncio.sleep(0.01)
        app.release.set()
        assert (await chunked)[0] == 503, "a chunked body is admitted as its bytes arrive"
        assert (await held)[0] == 200 and guard.bytes_in_flight == 0

    asyncio.run(scenario())


def test_a_budget_smaller_than_one_body_is_refused():
    with pytest.raises(ValueError, match="MAX_BYTES_IN_FLIGHT"):
        RequestGuard(None, max_body_bytes=100, max_bytes_in_flight=99, content_types={})


@pytest.mark.parametrize("headers,status,fragment", [
    ([("content-type", "application/json"), ("content-encoding", "gzip")], 415, "Content-Encoding 'gzip'"),
    ([("content-type", "application/json"), ("transfer-encoding", "gzip, chunked")], 501, "'gzip, chunked'"),
    ([("content-type", "application/json"), ("content-encoding", "identity")], 200, ""),
    ([("content-type", "application/json"), ("transfer-encoding", "chunked")], 200, ""),
])
def test_codings_are_refused_unless_plain(headers, status, fragment):
    async def scenario():
        app = HeldApp()
        app.release.set()
        return await call(guard_for(app), headers=headers, chunks=[b"{}"])

    answer_status, _, body = asyncio.run(scenario())
    assert answer_status == status and fragment in body.decode()


def test_a_bad_multipart_body_is_answered_400_and_never_reaches_the_app_whole():
    async def scenario():
        app = HeldApp()
        app.release.set()
        body = part(name="photo") + END
        answer = await call(guard_for(app, budget=1000, limit=1000), path="/malaria",
                            headers=[("content-type", CONTENT_TYPE)], chunks=[body[:40], body[40:]])
        return answer, app.bodies, body

    (status, headers, answer), seen, sent = asyncio.run(scenario())
    assert status == 400 and "'photo'" in json.loads(answer)["error"] and headers[b"connection"] == b"close"
    assert seen == [sent[:40]], "the app got what streamed before the problem, then a disconnect"


def test_head_is_answered_like_get_without_a_body():
    async def scenario():
        app = HeldApp()
        app.release.set()
        return await call(guard_for(app), method="HEAD", path="/models")

    status, headers, body = asyncio.run(scenario())
    assert (status, headers[b"content-length"], body) == (200, b"5", b"")
