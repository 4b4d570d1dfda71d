"""An OTLP/HTTP trace receiver: the collector end of the tracing tests and benchmarks
(tests/service/test_tracing.py; docs/benchmarks.md, "Who may call"), so the service exports
over a real socket to something that decodes what it sends.

    .venv/bin/python -m loadtests.otlp_sink --port 4318 &
    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 .venv/bin/bentoml serve

Every POST to /v1/traces is decoded (protobuf, as the exporter sends it, gzip or not) and
its spans counted, or kept (`Sink(keep=True)`); GET / answers {"requests": N, "spans": M}.
"""

from __future__ import annotations

import argparse
import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Sink:
    """The receiver, serving on 127.0.0.1 (a free port unless given) from a thread of its own."""

    def __init__(self, port: int = 0, keep: bool = False) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        self.keep = keep
        self.requests = 0
        self.span_count = 0
        self.spans: list[dict[str, Any]] = []
        """Kept spans: name, trace_id, span_id, parent_id (hex), start, end (ns), attributes, path."""
        self.resources: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        sink = self
        answer = ExportTraceServiceResponse().SerializeToString()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                sink._received(ExportTraceServiceRequest.FromString(body), self.path)
                self._send(answer, "application/x-protobuf")

            def do_GET(self) -> None:  # noqa: N802
                with sink._lock:
                    body = json.dumps({"requests": sink.requests, "spans": sink.span_count}).encode()
                self._send(body, "application/json")

            def _send(self, body: bytes, media_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", media_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def _received(self, request: Any, path: str) -> None:
        with self._lock:
            self.requests += 1
            for resource_spans in request.resource_spans:
                if self.keep:
                    self.resources.append({a.key: _value(a.value) for a in resource_spans.resource.attributes})
                for scope_spans in resource_spans.scope_spans:
                    self.span_count += len(scope_spans.spans)
                    if self.keep:
                        self.spans.extend({
                            "name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                            "parent_id": span.parent_span_id.hex(), "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano, "path": path,
                            "attributes": {a.key: _value(a.value) for a in span.attributes}}
                            for span in scope_spans.spans)

    def shutdown(self) -> None:
        self._http.shutdown()


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args()
    sink = Sink(args.port)
    print(f"OTLP/HTTP sink on {sink.url}/v1/traces", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
