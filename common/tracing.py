"""OpenTelemetry tracing: off unless ``OTEL_TRACES_EXPORTER`` turns it on, one trace per task.

Configured by the standard variables only. ``OTEL_TRACES_EXPORTER`` unset or ``none``: nothing
is set up, no interceptor or middleware is installed and the SDK is not even imported, so
tracing costs nothing. ``otlp``: spans go in batches to an OTLP/HTTP (protobuf) endpoint
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, headers, timeout,
``OTEL_BSP_*`` batching, ``OTEL_TRACES_SAMPLER``, ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES`` as the SDK reads them); ``console``: spans printed to stdout, for
debugging. Anything else stops start-up naming the variable.

How one task becomes one trace:

- the gateway opens a server span per request (:class:`HttpTracing`), continuing the caller's
  ``traceparent`` header when it sends one;
- every gRPC client call carries the current span's W3C ``traceparent`` in its metadata
  (:func:`client_interceptors`, installed by :func:`common.channels.open_channel`), and every
  gRPC server continues it in a server span of its own (:class:`ServerTracing`, installed by
  :class:`common.grpc_server.ServiceHost`); a call that arrives without one (lease renewals,
  load probes, health checks) opens no span, so background work does not flood the traces;
- the orchestrator stores the submission's ``traceparent`` in the task record, and every run
  of the task — right after submission, after a takeover on another replica, after a retry —
  runs in a span continuing it (:func:`continued`), so the sections' calls to the workers and
  to storage_svc join the trace the submission started.

Log lines carry the current trace and span ids (:func:`current_ids`, read by
:mod:`common.logging`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

import grpc

from common.metrics import call_code, failure_code, method_of, route_of
from common.rpc_handlers import rewrap

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

# The OpenTelemetry modules are imported where they are used, which only tracing that is on
# reaches: with it off, a service does not even load them.

TRACEPARENT = "traceparent"
EXPORTERS = ("none", "otlp", "console")
# Server-side codes that mean the server failed (OpenTelemetry's gRPC conventions); others are
# the caller's business (NOT_FOUND, INVALID_ARGUMENT …) and leave the span's status unset.
_SERVER_ERRORS = frozenset(
    {
        "UNKNOWN",
        "DEADLINE_EXCEEDED",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
    }
)
# Health probes: a span every few seconds per pod would bury the tasks' traces.
_UNTRACED_PATHS = frozenset({"/ping"})

_tracer: Tracer | None = None


def setup(service: str) -> bool:
    """Turns tracing on for this process if ``OTEL_TRACES_EXPORTER`` asks for it (once: later
    calls change nothing); returns whether tracing is on."""
    if _tracer is not None:
        return True
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "none"
    if exporter not in EXPORTERS:
        raise SystemExit(
            f"{service}: OTEL_TRACES_EXPORTER={exporter!r} is not supported: use one of "
            + ", ".join(EXPORTERS)
        )
    if exporter == "none":
        return False
    use(_provider(service, exporter))
    return True


def _provider(service: str, exporter: str) -> Any:
    """A tracer provider exporting in batches; the SDK is imported only here."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    span_exporter: SpanExporter
    if exporter == "console":
        span_exporter = ConsoleSpanExporter()
    else:
        names = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
        variable = next((name for name in names if os.environ.get(name)), "")
        protocol = os.environ[variable] if variable else "http/protobuf"
        if protocol != "http/protobuf":
            raise SystemExit(
                f"{service}: {variable}={protocol!r} is not supported: use http/protobuf, "
                "the collector's port 4318"
            )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter()
    # OTEL_SERVICE_NAME, when set, names the service; else the platform's own name for it.
    named = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service}
    provider = TracerProvider(resource=Resource.create(named))
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    return provider


def use(provider: TracerProvider | None) -> None:
    """Sends this process's spans to ``provider`` from now on (``None``: tracing off). The
    seam :func:`setup` goes through; tests pass a provider of their own."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer("wealthai")


def enabled() -> bool:
    return _tracer is not None


def current_ids() -> tuple[str, str]:
    """The current trace and span ids as hex, or two empty strings outside a span (or with
    tracing off)."""
    if _tracer is None:
        return "", ""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return "", ""
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


def current_traceparent() -> str:
    """The W3C ``traceparent`` of the current span ("" outside a span or with tracing off):
    what a task record keeps so that every later run of the task joins the same trace."""
    if _tracer is None:
        return ""
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT, "")


@contextlib.contextmanager
def continued(traceparent: str, name: str, task_id: str) -> Iterator[None]:
    """A span named ``name`` of the task ``task_id`` continuing the trace of ``traceparent``
    (a new trace when it is empty), current for the block; nothing with tracing off."""
    if _tracer is None:
        yield
        return
    from opentelemetry import propagate

    parent = propagate.extract({TRACEPARENT: traceparent}) if traceparent else None
    with _tracer.start_as_current_span(
        name, context=parent, attributes={"wealthai.task_id": task_id}
    ):
        yield


# -- gRPC --------------------------------------------------------------------------------------


def _traced(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    """``details`` with the current span's context added to the call's metadata."""
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if not carrier:
        return details
    metadata = grpc.aio.Metadata(*tuple(details.metadata or ()))
    for key, value in carrier.items():
        metadata.add(key, value)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_traced(client_call_details), request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_traced(client_call_details), request)


class _StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(_traced(client_call_details), request_iterator)


class _StreamStream(grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(_traced(client_call_details), request_iterator)


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """What a channel needs to carry the trace to the servers it calls (none with tracing
    off, so channels then work exactly as without tracing)."""
    if _tracer is None:
        return []
    return [_UnaryUnary(), _UnaryStream(), _StreamUnary(), _StreamStream()]


def _end(span: Span, code: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("rpc.grpc.status_code", grpc.StatusCode[code].value[0])
    if code in _SERVER_ERRORS:
        span.set_status(Status(StatusCode.ERROR, code))


class ServerTracing(grpc.aio.ServerInterceptor):
    """Continues the caller's trace in a server span around each call that carries one."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind

        handler = await continuation(handler_call_details)
        metadata = handler_call_details.invocation_metadata or ()
        carrier = {m[0]: m[1] for m in metadata if isinstance(m[1], str)}
        if handler is None or TRACEPARENT not in carrier:
            return handler
        parent = propagate.extract(carrier)
        full = handler_call_details.method
        service, _, method = full.lstrip("/").rpartition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
        tracer = self._tracer

        def answer(inner: Any) -> Any:
            async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                with tracer.start_as_current_span(
                    full.lstrip("/"), context=parent, kind=SpanKind.SERVER, attributes=attributes
                ) as span:
                    try:
                        result = await inner(request, context)
                    except BaseException as exc:
                        _end(span, failure_code(exc, context))
                        raise
                    _end(span, call_code(context, grpc.StatusCode.OK))
                    return result

            return call

        def stream(inner: Any) -> Any:
            async def call(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                with tracer.start_as_current_span(
                    full.lstrip("/"), context=parent, kind=SpanKind.SERVER, attributes=attributes
                ) as span:
                    try:
                        async for item in inner(request, context):
                            yield item
                    except BaseException as exc:
                        _end(span, failure_code(exc, context))
                        raise
                    _end(span, call_code(context, grpc.StatusCode.OK))

            return call

        return rewrap(handler, full, answer=answer, stream=stream)


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The server side of :func:`client_interceptors` (none with tracing off)."""
    return [] if _tracer is None else [ServerTracing(_tracer)]


# -- the gateway -------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class HttpTracing:
    """ASGI middleware: a server span per request, continuing the caller's ``traceparent``
    header when there is one, named after the route template once the router has matched it."""

    def __init__(self, app: ASGIApp) -> None:
        if _tracer is None:
            raise RuntimeError("tracing is off: add HttpTracing only when tracing.enabled()")
        self.app = app
        self._tracer = _tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in _UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind, Status, StatusCode

        headers = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope.get("headers") or []
            if key in (b"traceparent", b"tracestate")
        }
        method = method_of(scope)
        status = 500

        async def send_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with self._tracer.start_as_current_span(
            method,
            context=propagate.extract(headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method},
        ) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                route = route_of(scope)
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR, str(status)))
