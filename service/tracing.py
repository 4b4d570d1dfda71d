"""OpenTelemetry tracing, opt-in through the standard OTEL_* variables.

On when an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) and neither OTEL_SDK_DISABLED=true nor
OTEL_TRACES_EXPORTER=none says otherwise. The OpenTelemetry SDK itself reads the rest:
OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (default parentbased_always_on),
OTEL_SERVICE_NAME (default "model-serving"), OTEL_RESOURCE_ATTRIBUTES, the exporter's
headers and timeout, the batch processor's OTEL_BSP_*. Spans go out over OTLP/HTTP
(protobuf), the one exporter the image carries.

A traced request has a server span (ServerSpans; an incoming W3C `traceparent` is its
parent), and under it: "read and validate" (the body read and checked
against the route's schema, from the request's start until the route runs), "preprocess"
(decoding and resizing images, records to rows), "batch wait" (queued for the model's
batcher) and "model call" (attributes: the model's tag, the rows and requests in the batch).
A traced request's log lines (its one-line client error among them) end with its trace
id: BentoML's log format adds "(trace=...,span=...,sampled=...)" whenever a span is current.

Off, nothing is added: no middleware, and the span helpers return after one check.
What it costs on, per request: docs/benchmarks.md ("Who may call").
BentoML's own tracing middleware stays switched off (service.py), as before: its sampler
and exporter are configured through BentoML's own settings rather than OTEL_*.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

EXCLUDED_PATHS = re.compile(r"^/(?:livez|healthz|readyz|metrics|docs\.json|ui|)$|^/v2/health/|/ready$"
                            r"|^/(?:static_content|ui)/")
"""Probes, scrapes and the pages: never traced."""
DEFAULT_SERVICE_NAME = "model-serving"
SAMPLERS = ("always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
            "parentbased_traceidratio")
"""The samplers the OpenTelemetry specification names for OTEL_TRACES_SAMPLER (the SDK
only logs an unknown one, and samples everything)."""

_state: dict[str, Any] = {}


class TracingSettingsError(ValueError):
    """OTEL_* asks for something this service cannot do."""


def wanted(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """Whether the environment turns tracing on (see the module docstring)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() in ("none", ""):
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def check_at_start(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Refuse settings the service would silently ignore (`bentoml serve` stops with the reason)."""
    if not wanted(environ):
        return
    exporter = environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporter != "otlp":
        raise TracingSettingsError(f"OTEL_TRACES_EXPORTER={exporter!r}: this service exports over OTLP only")
    protocols = {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", ""),
                 "OTEL_EXPORTER_OTLP_PROTOCOL": environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")}
    for name, protocol in protocols.items():
        if protocol.strip() and protocol.strip() != "http/protobuf":
            raise TracingSettingsError(f"{name}={protocol!r}: this service exports OTLP over HTTP "
                                       f"(http/protobuf, port 4318 by convention), not gRPC")
    name = environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    if name not in SAMPLERS:
        raise TracingSettingsError(f"OTEL_TRACES_SAMPLER={name!r} is not one of {', '.join(SAMPLERS)}")
    if name.endswith("traceidratio"):
        argument = environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0")
        try:
            ratio = float(argument)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise TracingSettingsError(f"OTEL_TRACES_SAMPLER_ARG={argument!r}: a ratio from 0 to 1")


def enabled() -> bool:
    """Tracing is on in this process (decided once)."""
    on = _state.get("on")
    if on is None:
        on = _state["on"] = wanted()
    return on


def tracer() -> Any:
    """The service's tracer, on a provider of its own (made on first use, in the worker)."""
    found = _state.get("tracer")
    if found is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from service import release

        attributes = {"service.version": release.project_version()}
        if not os.environ.get("OTEL_SERVICE_NAME"):
            attributes["service.name"] = DEFAULT_SERVICE_NAME
        provider = TracerProvider(resource=Resource.create(attributes))  # sampler: OTEL_TRACES_SAMPLER
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # endpoint etc.: OTEL_EXPORTER_*
        _state["provider"] = provider
        found = _state["tracer"] = provider.get_tracer("service")
    return found


def traced(app: Any) -> Any:
    """The middleware BentoML builds in the worker: ServerSpans when tracing is on, else the
    app itself (no layer, no cost)."""
    return ServerSpans(app, tracer()) if enabled() else app


class ServerSpans:
    """ASGI middleware: one server span per request, the parent of the spans below it.

    OpenTelemetry's own ASGI middleware cost iris 23% of its requests/s at concurrency 32
    with 1% of requests sampled (0.2 ms of CPU a request, mostly attributes and wrappers
    for the 99% never recorded; this one: 0.08 ms, docs/benchmarks.md). This one reads the caller's context
    (`traceparent`, `tracestate`: the propagators of OTEL_PROPAGATORS), starts the span
    named by the route template (`POST /v2/models/{name}/infer`: bounded, like the
    metrics' labels, service/patches.py), and wraps `send` only when the span records.
    """

    def __init__(self, app: Any, tracer: Any) -> None:
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind, StatusCode

        self.app = app
        self.tracer = tracer
        self._extract = propagate.extract
        self._server, self._error = SpanKind.SERVER, StatusCode.ERROR
        self._routes: Any = None
        from service.patches import UNMATCHED_ROUTE, RouteLabels

        self._route_labels, self._unmatched = RouteLabels, UNMATCHED_ROUTE

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or EXCLUDED_PATHS.search(scope["path"]):
            await self.app(scope, receive, send)
            return
        carrier = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
                   if key in (b"traceparent", b"tracestate", b"baggage")}
        if self._routes is None:
            self._routes = self._route_labels(getattr(scope.get("app"), "routes", []))
        route = self._routes(scope)
        method = scope["method"]
        attributes = {"http.request.method": method, "url.path": scope["path"]}
        if route != self._unmatched:
            attributes["http.route"] = route
        with self.tracer.start_as_current_span(
                f"{method} {route}" if route != self._unmatched else method,
                context=self._extract(carrier) if carrier else None, kind=self._server,
                attributes=attributes) as span:
            if not span.is_recording():
                await self.app(scope, receive, send)
                return

            async def traced_send(message: dict) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                    if message["status"] >= 500:
                        span.set_status(self._error)
                await send(message)

            await self.app(scope, receive, traced_send)


def recording() -> bool:
    """The current request is traced (sampled): worth recording its spans."""
    if not enabled():
        return False
    return bool(_current_span().is_recording())


def _current_span() -> Any:
    """OpenTelemetry's current span (the API module is looked up once, not per request)."""
    get = _state.get("current_span")
    if get is None:
        from opentelemetry import trace

        get = _state["current_span"] = trace.get_current_span
    return get()


def request_read(model: str) -> None:
    """The "read and validate" span: from the request's start to now (the route runs)."""
    if not enabled():
        return
    request = _current_span()
    started = getattr(request, "start_time", None)
    if started is None or not request.is_recording():
        return
    span = tracer().start_span("read and validate", start_time=started, attributes={"model": model})
    span.end()


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[None]:
    """A child span of the current one around the block, when the request is traced."""
    if not recording():
        yield
        return
    with tracer().start_as_current_span(name, attributes=attributes):
        yield


@dataclass
class ModelCall:
    """When one batch's model call ran (epoch ns), and what it held."""

    requests: int
    rows: int
    started_ns: int = 0
    ended_ns: int = 0


def batch_spans(model_tag: str, enqueued_ns: int, call: ModelCall) -> None:
    """The "batch wait" and "model call" spans of one traced request, after the fact."""
    attributes = {"model": model_tag, "batch.requests": call.requests, "batch.rows": call.rows}
    wait = tracer().start_span("batch wait", start_time=enqueued_ns, attributes={"model": model_tag})
    wait.end(end_time=max(call.started_ns, enqueued_ns))
    model = tracer().start_span("model call", start_time=call.started_ns, attributes=attributes)
    model.end(end_time=call.ended_ns)


def now_ns() -> int:
    return time.time_ns()
