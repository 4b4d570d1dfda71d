"""OpenTelemetry tracing on a real server (service/tracing.py), exported over OTLP/HTTP to a
real receiver: the spans of a traced request, their parent-child links, an incoming W3C
traceparent honoured, the trace id in the client-error log; nothing traced when off."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from loadtests.otlp_sink import Sink
from service.tracing import TracingSettingsError, check_at_start, wanted
from tests.servers import Server

IRIS = {"records": [{"sepal_length": 6.3, "sepal_width": 3.3, "petal_length": 6.0, "petal_width": 2.5}]}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Receiver(Sink):
    """The OTLP/HTTP receiver of loadtests/otlp_sink.py, keeping every span."""

    def __init__(self) -> None:
        super().__init__(keep=True)

    def trace(self, trace_id: str, names: set[str], timeout: float = 20) -> list[dict[str, Any]]:
        """The spans of a trace, once they include `names`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [s for s in self.spans if s["trace_id"] == trace_id]
            if names <= {s["name"] for s in found}:
                return found
            time.sleep(0.1)
        raise AssertionError(f"spans of {trace_id}: {[s['name'] for s in self.spans if s['trace_id'] == trace_id]}")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.shutdown()


@pytest.fixture(scope="module")
def traced_server(quick_models, receiver) -> Iterator[Server]:
    server = Server({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100",
                     "OTEL_SERVICE_NAME": "serving-under-test"})
    try:
        server.wait("/readyz")
        yield server
    finally:
        server.stop()


def by_name(spans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    named: dict[str, dict[str, Any]] = {}
    for span in spans:
        assert span["name"] not in named, f"two {span['name']} spans"
        named[span["name"]] = span
    return named


def test_a_traced_request_has_its_spans_under_the_callers_parent(traced_server, receiver):
    answer = requests.post(traced_server.url + "/iris", json=IRIS, timeout=10,
                           headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    assert answer.status_code == 200, answer.text
    spans = by_name(receiver.trace(TRACE_ID, {"POST /iris", "read and validate", "preprocess", "batch wait",
                                              "model call"}))
    request = spans["POST /iris"]
    assert request["parent_id"] == PARENT_ID and request["path"] == "/v1/traces"
    for child in ("read and validate", "preprocess", "batch wait", "model call"):
        span = spans[child]
        assert span["parent_id"] == request["span_id"], child
        assert request["start"] <= span["start"] <= span["end"] <= request["end"], child
    assert spans["read and validate"]["end"] <= spans["preprocess"]["start"]
    assert spans["preprocess"]["end"] <= spans["batch wait"]["start"] <= spans["batch wait"]["end"]
    assert spans["batch wait"]["end"] <= spans["model call"]["start"]
    model = spans["model call"]["attributes"]
    assert model["model"] == answer.json()["predictions"][0]["model"]
    assert model["batch.rows"] >= 1 and model["batch.requests"] >= 1
    assert {"service.name": "serving-under-test"}.items() <= receiver.resources[-1].items()


def test_a_batch_of_concurrent_requests_is_named_in_each_trace(traced_server, receiver):
    """Requests that share a model call each get a model call span with the batch's size."""
    ids = [f"{i:032x}" for i in range(1, 17)]

    def send(trace_id: str) -> None:
        files = [("images", (f"c{j}.png", Path("examples/cells/cell1.png").read_bytes(), "image/png"))
                 for j in range(4)]
        answer = requests.post(traced_server.url + "/malaria", files=files, timeout=30,
                               headers={"traceparent": f"00-{trace_id}-{PARENT_ID}-01"})
        assert answer.status_code == 200, answer.text

    threads = [threading.Thread(target=send, args=(trace_id,)) for trace_id in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    calls = [by_name(receiver.trace(trace_id, {"model call", "preprocess"}))["model call"] for trace_id in ids]
    assert all(call["attributes"]["batch.rows"] == 4 * call["attributes"]["batch.requests"] for call in calls)
    assert max(call["attributes"]["batch.requests"] for call in calls) > 1  # some were batched together


def test_an_unsampled_caller_is_not_traced_and_probes_never_are(traced_server, receiver):
    unsampled = "0af7651916cd43dd8448eb211c80319c"
    requests.post(traced_server.url + "/iris", json=IRIS, timeout=10,
                  headers={"traceparent": f"00-{unsampled}-{PARENT_ID}-00"})
    for path in ("/livez", "/readyz", "/metrics"):
        requests.get(traced_server.url + path, timeout=10)
    marker = "11111111111111111111111111111111"
    requests.post(traced_server.url + "/iris", json=IRIS, timeout=10,
                  headers={"traceparent": f"00-{marker}-{PARENT_ID}-01"})
    receiver.trace(marker, {"model call"})  # exported after the others
    assert not [s for s in receiver.spans if s["trace_id"] == unsampled]
    names = {s["name"] for s in receiver.spans}
    assert not {"GET /livez", "GET /readyz", "GET /metrics"} & names


def test_the_client_error_log_names_the_trace(traced_server, receiver):
    trace_id = "22222222222222222222222222222222"
    answer = requests.post(traced_server.url + "/iris", json={"records": [{"sepal_length": "x"}]}, timeout=10,
                           headers={"traceparent": f"00-{trace_id}-{PARENT_ID}-01"})
    assert answer.status_code == 400
    receiver.trace(trace_id, {"POST /iris"})
    time.sleep(0.3)
    lines = [line for line in traced_server.log.read_text().splitlines() if "POST /iris answered 400" in line]
    assert lines and f"(trace={trace_id},span=" in lines[-1], lines[-1:]


def test_settings_it_cannot_honour_stop_the_server():
    assert not wanted({}) and not wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"})
    assert not wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_TRACES_EXPORTER": "none"})
    assert wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x/v1/traces"})
    good = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}
    check_at_start({**good, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.01"})
    for bad, says in [({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "not gRPC"),
                      ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTLP only"),
                      ({"OTEL_TRACES_SAMPLER": "sometimes"}, "is not one of"),
                      ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, "from 0 to 1"),
                      ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"}, "from 0 to 1")]:
        with pytest.raises(TracingSettingsError, match=says):
            check_at_start({**good, **bad})


def test_off_by_default_no_span_is_made(server):
    """The session's plain server has no OTEL_* settings: no trace id in its error lines."""
    requests.post(server.url + "/iris", json={"records": [{"sepal_length": "x"}]}, timeout=10,
                  headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    time.sleep(0.3)
    lines = [line for line in server.log.read_text().splitlines() if "POST /iris answered 400" in line]
    assert lines and "trace" not in lines[-1]
