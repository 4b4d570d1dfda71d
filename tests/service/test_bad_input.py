"""Bad input gets a clear 4xx JSON answer, never a 500, and the service keeps serving."""

from __future__ import annotations

import base64
import gzip
import io
import json
import socket

import pytest
import requests
from PIL import Image

from service.specs import IRIS, MALARIA
from tests.service.metrics import request_counts

pytestmark = pytest.mark.slow

GOOD_IRIS = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
JSON = {"Content-Type": "application/json"}
IRIS_TENSOR = {"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}
REST = b'"sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]}'


def png(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def iris(**changes) -> dict:
    record = {**GOOD_IRIS, **changes}
    return {"records": [{k: v for k, v in record.items() if v is not ...}]}


def kobe_row(settings, **changes) -> dict:
    import json

    import pandas as pd

    row = json.loads(pd.read_parquet(settings.data_dir / "kobe" / "dataset_kobe_dev.parquet")
                     .head(1).to_json(orient="records"))[0]
    return {"records": [{**row, **changes}]}


def nested(depth: int, inner: str = "1") -> bytes:
    return ("[" * depth + inner + "]" * depth).encode()


def v2_input(data: bytes) -> bytes:
    """A V2 iris request whose `input` tensor [1, 4] holds `data`."""
    return b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": ' + data + b"}]}"


def assert_client_error(response: requests.Response, status: int, *fragments: str) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert isinstance(body, dict) and body["error"], body
    text = response.text
    for fragment in fragments:
        assert fragment in text, (fragment, text)


CASES = {
    "malformed JSON": ("/iris", dict(data=b'{"records": [{', headers=JSON), 400, ["json_invalid"]),
    "JSON array instead of object": ("/iris", dict(data=b"[1, 2]", headers=JSON), 400, []),
    "text/plain body": ("/iris", dict(data=b"{}", headers={"Content-Type": "text/plain"}), 415, ["application/json"]),
    "JSON to a multipart endpoint": ("/malaria", dict(json={"images": []}), 415, ["multipart/form-data"]),
    "no records key": ("/iris", dict(json={"rows": [GOOD_IRIS]}), 400, ["records"]),
    "missing field": ("/iris", dict(json=iris(petal_width=...)), 400, ["petal_width", "missing"]),
    "extra field": ("/iris", dict(json=iris(colour="blue")), 400, ["colour", "extra"]),
    "wrong type": ("/iris", dict(json=iris(sepal_length="long")), 400, ["sepal_length"]),
    "boolean for a number": ("/iris", dict(json=iris(sepal_length=[1])), 400, ["sepal_length"]),
    "NaN": ("/iris", dict(data=b'{"records": [{"sepal_length": NaN, ' + REST, headers=JSON), 400, ["sepal_length"]),
    "Infinity": ("/iris", dict(data=b'{"records": [{"sepal_length": Infinity, ' + REST, headers=JSON), 400,
                 ["sepal_length"]),
    "out of range": ("/iris", dict(json=iris(petal_width=-3)), 400, ["petal_width", "greater than or equal"]),
    "empty list": ("/iris", dict(json={"records": []}), 400, ["records", "at least 1"]),
    "too many records": ("/iris", dict(json={"records": [GOOD_IRIS] * (IRIS.max_records_per_call + 1)}), 400,
                         ["records", "at most"]),
    "pixels of the wrong length": ("/digits/pixels", dict(json={"pixels": [[0] * 63]}), 400, ["pixels"]),
    "pixel out of range": ("/digits/pixels", dict(json={"pixels": [[17] * 64]}), 400, ["pixels"]),
    "not base64": ("/malaria/base64", dict(json={"images": ["***not base64***"]}), 400, ["images[0]", "base64"]),
    "base64 of text": ("/malaria/base64", dict(json={"images": [base64.b64encode(b"hello").decode()]}), 400,
                       ["images[0]", "PNG, JPEG, WebP, BMP, TIFF or GIF"]),
    "non-image upload": ("/malaria", dict(files=[("images", ("notes.txt", b"just text", "text/plain"))]), 400,
                         ["images[0]", "PNG, JPEG, WebP, BMP, TIFF or GIF"]),
    "no image in upload": ("/malaria", dict(files=[("other", ("a.txt", b"x", "text/plain"))]), 400, ["images"]),
    "images part without a filename (BentoML would fetch it as a URL)": (
        "/malaria", dict(files=[("images", (None, b"http://127.0.0.1:1/cell.png"))]), 400, ["images", "filename"]),
    "a file under another field name": ("/digits", dict(files=[("images", ("a.png", b"x", "image/png")),
                                                               ("photo", ("b.png", b"x", "image/png"))]), 400,
                                         ["'photo'", "images"]),
    "multipart without a boundary": ("/malaria", dict(data=b"--x\r\n", headers={"Content-Type": "multipart/form-data"}),
                                     400, ["boundary"]),
    "multipart with a wrong boundary": ("/malaria", dict(data=b"no parts here", headers={
        "Content-Type": "multipart/form-data; boundary=abc"}), 400, ["multipart"]),
    "a filename too long for a temporary file": ("/malaria", dict(
        files=[("images", ("\u7d30" * 82 + ".png", b"x", "image/png"))]), 400, ["filename", "250 bytes"]),
    "too many parts": ("/malaria", dict(files=[("images", (f"{i}.png", b"x", "image/png")) for i in range(1001)]), 400,
                       ["1000"]),
    "JSON nested 10,000 deep": ("/iris", dict(data=b'{"records": ' + nested(10_000) + b"}", headers=JSON), 400,
                                ["recursion limit"]),
    "V2 body nested 10,000 deep": ("/v2/models/iris/infer", dict(data=nested(10_000), headers=JSON), 400,
                                   ["malformed JSON"]),
    "V2 data nested 1,000 deep": ("/v2/models/iris/infer", dict(data=v2_input(nested(1_000)), headers=JSON), 400,
                                  ["malformed JSON"]),
    "V2 data nested deeper than its shape": ("/v2/models/iris/infer", dict(data=v2_input(nested(50)), headers=JSON),
                                             400, ["must follow the shape"]),
    "V2 output requested twice": ("/v2/models/iris/infer", dict(json={"inputs": [IRIS_TENSOR],
                                                                      "outputs": [{"name": "label"}] * 2}),
                                  400, ["twice"]),
    "V2 unknown model": ("/v2/models/no-such-model/infer", dict(json={"inputs": []}), 404, ["no-such-model"]),
    "a gzip-compressed body": ("/iris", dict(data=gzip.compress(b"{}"), headers={
        **JSON, "Content-Encoding": "gzip"}), 415, ["Content-Encoding 'gzip'"]),
    "V2 as text/plain": ("/v2/models/iris/infer", dict(data=b"{}", headers={"Content-Type": "text/plain"}), 415,
                         ["application/json"]),
    "V2 empty outputs": ("/v2/models/iris/infer", dict(json={"inputs": [IRIS_TENSOR], "outputs": []}), 400,
                         ["'outputs' is empty"]),
    "multipart without its closing boundary": ("/malaria", dict(
        data=b'--b\r\nContent-Disposition: form-data; name="images"; filename="a.png"\r\n\r\nxx\r\n',
        headers={"Content-Type": "multipart/form-data; boundary=b"}), 400, ["closing boundary --b--"]),
    "base64 mixing two alphabets": ("/malaria/base64", dict(json={"images": ["ab+c-d=="]}), 400,
                                    ["images[0]", "mixes the standard"]),
    "too many images": ("/malaria/base64", dict(json={"images": ["AAAA"] * (MALARIA.max_records_per_call + 1)}),
                        400, ["images", "at most"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_request_gets_a_clear_4xx(server, case):
    route, request, status, fragments = CASES[case]
    assert_client_error(requests.post(server.url + route, **request), status, *fragments)


def test_unknown_category_is_named_with_a_few_allowed_values(server, settings):
    """The field, how many values it takes and three of them: not all 57 (1.3 KB per field;
    a row with several unseen values made a 5 KB error)."""
    row = kobe_row(settings, action_type="Moonshot", season="1970-71", opponent="XYZ")
    response = requests.post(f"{server.url}/kobe", json=row)
    assert_client_error(response, 400, "action_type", "57 values", "'Alley Oop Dunk Shot'", "season", "opponent")
    assert "Turnaround Jump Shot" not in response.text and len(response.content) < 2000, response.text


def test_fractional_integer_is_refused(server, settings):
    response = requests.post(f"{server.url}/kobe", json=kobe_row(settings, period=2.5))
    assert_client_error(response, 400, "period")


def test_corrupt_and_truncated_images_are_named_by_position(server, malaria_image_paths):
    good = malaria_image_paths["Parasitized"][0].read_bytes()
    files = [("images", ("good.png", good, "image/png")),
             ("images", ("cut.png", good[: len(good) // 2], "image/png"))]
    assert_client_error(requests.post(f"{server.url}/malaria", files=files), 400, "images[1]")


def test_decompression_bomb_is_refused(server):
    bomb = png(Image.new("L", (6000, 6000)), optimize=True)
    response = requests.post(f"{server.url}/malaria", files=[("images", ("bomb.png", bomb, "image/png"))])
    assert_client_error(response, 400, "images[0]", "6000x6000")


def test_oversized_body_is_refused_with_413(server):
    from service.service import MAX_BODY_BYTES

    big = b"A" * (MAX_BODY_BYTES + 1024)
    response = requests.post(f"{server.url}/malaria/base64", data=b'{"images": ["' + big + b'"]}', headers=JSON)
    assert_client_error(response, 413, "limit")

    def chunks():  # no Content-Length: the limit must hold on the bytes received
        yield b'{"images": ["'
        for _ in range(MAX_BODY_BYTES // (1 << 20) + 2):
            yield b"A" * (1 << 20)
        yield b'"]}'

    response = requests.post(f"{server.url}/malaria/base64", data=chunks(), headers=JSON)
    assert_client_error(response, 413, "limit")


def test_the_service_keeps_serving_after_bad_input(server):
    for case in CASES.values():
        route, request, _, _ = case
        requests.post(server.url + route, **request)
    response = requests.post(f"{server.url}/iris", json={"records": [GOOD_IRIS]})
    assert response.status_code == 200
    counts = request_counts(server.url)
    assert counts, "no request counter in /metrics"
    # /readyz answered 503 while the models loaded; no other request may have had a 5xx.
    assert [key for key, value in counts.items() if key[1] >= 500 and value > 0 and key[0] != "/readyz"] == []


def test_every_refusal_has_the_one_error_body(server):
    """Typed, V2, metadata, drift, unmatched paths, 405, 413, 415: the status that fits and
    {"error": "...", "detail": ...}, never FastAPI's {"detail": ...} or Starlette's text."""
    url = server.url
    big = b"x" * (16 * 1024 * 1024 + 1)
    answers = {
        400: [requests.post(f"{url}/iris", json=iris(petal_width=-1)),
              requests.post(f"{url}/v2/models/iris/infer", json={"inputs": []})],
        404: [requests.get(f"{url}/no/such/path"), requests.get(f"{url}/v2/models/resnet"),
              requests.post(f"{url}/v2/models/iris/versions/nope/infer", json={"inputs": [IRIS_TENSOR]}),
              requests.get(f"{url}/models/resnet/drift")],
        405: [requests.delete(f"{url}/iris"), requests.get(f"{url}/v2/models/iris/infer"),
              requests.post(f"{url}/models")],
        413: [requests.post(f"{url}/iris", data=big, headers=JSON)],
        415: [requests.post(f"{url}/iris", data=b"{}", headers={"Content-Type": "text/plain"})],
    }
    for status, responses in answers.items():
        for response in responses:
            where = f"{response.request.method} {response.request.url}"
            assert response.status_code == status, where
            assert response.headers["content-type"].startswith("application/json"), where
            body = response.json()
            assert isinstance(body.get("error"), str) and body["error"], where
            assert set(body) <= {"error", "detail"}, where
    assert answers[400][0].json()["detail"][0]["loc"], "schema errors locate the field"
    assert "DELETE" in answers[405][0].json()["error"]


def raw_exchange(server, request: bytes) -> bytes:
    """Send bytes as they are; what the server answers before it closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_what_is_not_http_gets_the_error_body(server):
    answer = raw_exchange(server, b"HELLO \x01\x02 nonsense\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"application/json" in head
    assert "not valid HTTP" in json.loads(body)["error"]


def test_a_transfer_coding_other_than_chunked_is_501(server):
    body = b'{"records": []}'
    request = (b"POST /iris HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n"
               + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
    answer = raw_exchange(server, request)
    assert answer.startswith(b"HTTP/1.1 501") and b"Transfer-Encoding" in answer


def test_a_multipart_preamble_is_skipped_as_rfc_2046_says(server, malaria_image_paths):
    cell = malaria_image_paths["Parasitized"][0].read_bytes()
    body = (b"This is a multi-part message in MIME format.\r\n--b\r\n"
            b'Content-Disposition: form-data; name="images"; filename="cell.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + cell + b"\r\n--b--\r\n")
    with_preamble = requests.post(f"{server.url}/malaria", data=body,
                                  headers={"Content-Type": "multipart/form-data; boundary=b"})
    plain = requests.post(f"{server.url}/malaria", files=[("images", ("cell.png", cell, "image/png"))])
    assert with_preamble.status_code == 200, with_preamble.text
    assert with_preamble.json() == plain.json()


@pytest.mark.parametrize("path", ["/models", "/livez", "/readyz", "/docs.json", "/v2/models/iris", "/metrics"])
def test_head_is_answered_wherever_get_is(server, path):
    head, get = requests.head(server.url + path), requests.get(server.url + path)
    assert head.status_code == get.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
