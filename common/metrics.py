"""Prometheus metrics of every service: the endpoint that serves them and the generic ones.

Each service serves the process's default registry (prometheus-client) over plain HTTP on its
own metrics port (:class:`MetricsServer`, ``<PREFIX>_METRICS_HOST`` / ``<PREFIX>_METRICS_PORT``):
the process collector's CPU, memory and file descriptors, the interpreter's garbage collector,
the generic request metrics below and the domain metrics each service defines next to its code
(``orchestrator/metrics.py``, ``section_worker/metrics.py``, ``storage_svc/s3calls.py``, the
protection layer's). The endpoint has no authentication: it binds to 127.0.0.1 by default and
in a cluster only the monitoring namespace may reach it (``deploy/k8s/networkpolicies.yaml``).
Its metrics name tenants and assets, never a task's content, a key or a token.

Generic metrics:

- every gRPC server (:class:`GrpcMetrics`, installed once by
  :class:`common.grpc_server.ServiceHost`): calls and latency per gRPC service, method and
  status code, calls in progress per service and method;
- the gateway (:class:`HttpMetrics`): requests and latency per route *template*
  (``/task/{task_id}/status``, never the raw path), method and status; requests in progress
  per method.

Label values are bounded: methods are the registered ones (any other counts as ``unknown``),
routes the application's templates (anything else is ``unmatched``), HTTP methods the standard
ones (anything else is ``other``), codes and statuses the protocols' own.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram, make_asgi_app

from common.http_server import HttpServer
from common.rpc_handlers import rewrap
from common.settings import ServiceSettings, env_names

# Where each service serves its metrics unless <PREFIX>_METRICS_PORT says otherwise; make run
# gives its processes the same numbers in this order, then one port per further replica.
DEFAULT_PORTS = {"gateway": 9100, "storage_svc": 9101, "orchestrator": 9102, "section_worker": 9103}

# From a millisecond read of a small object to a section's stream of several minutes.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)

GRPC_REQUESTS = Counter(
    "wealthai_grpc_server_requests_total",
    "gRPC calls served, by gRPC service, method and status code.",
    ["service", "method", "code"],
)
GRPC_DURATION = Histogram(
    "wealthai_grpc_server_request_duration_seconds",
    "Time from a call's arrival to its status (a stream's whole life), by service, method and "
    "status code.",
    ["service", "method", "code"],
    buckets=LATENCY_BUCKETS,
)
GRPC_IN_FLIGHT = Gauge(
    "wealthai_grpc_server_requests_in_flight",
    "gRPC calls being served now (open streams included), by service and method.",
    ["service", "method"],
)
HTTP_REQUESTS = Counter(
    "wealthai_http_requests_total",
    "REST requests answered by the gateway, by method, route template and HTTP status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "wealthai_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer (an event stream's whole life), "
    "by method, route template and HTTP status.",
    ["method", "route", "status"],
    buckets=LATENCY_BUCKETS,
)
HTTP_IN_FLIGHT = Gauge(
    "wealthai_http_requests_in_flight",
    "REST requests being answered now (open event streams included), by method (the route is "
    "known only once the router has matched the request).",
    ["method"],
)

UNKNOWN = "unknown"
UNMATCHED = "unmatched"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# -- the endpoint ------------------------------------------------------------------------------


class MetricsServer:
    """The Prometheus endpoint of one process (off when its port is 0).

    It is served from the service's own event loop, so the collectors that read a service's
    state at scrape time (``orchestrator/metrics.py``) read it between two steps of its work,
    never in the middle of one; a scrape costs the loop a few milliseconds.
    """

    def __init__(self, settings: ServiceSettings, service: str) -> None:
        self.host = settings.metrics_host
        port = settings.metrics_port
        self.port = DEFAULT_PORTS.get(service, 0) if port is None else port
        self.service = service
        self._variable = env_names(type(settings), "metrics_port")[0]
        self._server: HttpServer | None = None

    async def start(self) -> None:
        """Starts serving; a port that cannot be bound stops start-up naming the variable."""
        if not self.port or self._server is not None:
            return
        server = HttpServer(
            make_asgi_app(), self.host, self.port, name=f"{self.service} metrics", lifespan="off"
        )
        try:
            await server.start()
        except RuntimeError as exc:
            raise SystemExit(f"{exc} (set {self._variable}; 0 turns the endpoint off)") from None
        self._server = server

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.stop()


# -- gRPC servers ------------------------------------------------------------------------------


def split_method(full_method: str) -> tuple[str, str]:
    """``/wealthai.storage.v1.StorageService/GetTask`` → (``wealthai.storage.v1.StorageService``,
    ``GetTask``)."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return (service or UNKNOWN), (method or UNKNOWN)


@functools.cache
def _in_flight(service: str, method: str) -> Gauge:
    # Label sets are bounded (registered methods, status codes), so these caches are too; they
    # spare each call the registry's label lookups.
    return GRPC_IN_FLIGHT.labels(service, method)


@functools.cache
def _ended(service: str, method: str, code: str) -> tuple[Counter, Histogram]:
    return GRPC_REQUESTS.labels(service, method, code), GRPC_DURATION.labels(service, method, code)


class _CallTimer:
    """Counts and times one call: in progress from the start, done with the code it ended on."""

    def __init__(self, service: str, method: str) -> None:
        self.labels = (service, method)
        self.started = time.perf_counter()
        _in_flight(service, method).inc()

    def done(self, code: str) -> None:
        _in_flight(*self.labels).dec()
        requests, duration = _ended(*self.labels, code)
        requests.inc()
        duration.observe(time.perf_counter() - self.started)


def call_code(context: grpc.aio.ServicerContext[Any, Any], default: grpc.StatusCode) -> str:
    """The status a call ends with: the one set or aborted with, else ``default``."""
    code = context.code()
    return (code if isinstance(code, grpc.StatusCode) else default).name


def failure_code(exc: BaseException, context: grpc.aio.ServicerContext[Any, Any]) -> str:
    if isinstance(exc, grpc.aio.AbortError):
        return call_code(context, grpc.StatusCode.UNKNOWN)
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED.name
    return grpc.StatusCode.UNKNOWN.name  # what gRPC answers for an exception it gets


def _timed_answer(inner: Any, service: str, method: str) -> Any:
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        timer = _CallTimer(service, method)
        try:
            answer = await inner(request, context)
        except BaseException as exc:
            timer.done(failure_code(exc, context))
            raise
        timer.done(call_code(context, grpc.StatusCode.OK))
        return answer

    return call


def _timed_stream(inner: Any, service: str, method: str) -> Any:
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        timer = _CallTimer(service, method)
        try:
            async for item in inner(request, context):
                yield item
        except BaseException as exc:
            timer.done(failure_code(exc, context))
            raise
        timer.done(call_code(context, grpc.StatusCode.OK))

    return call


class GrpcMetrics(grpc.aio.ServerInterceptor):
    """Counts and times every call a gRPC server serves (the outermost interceptor, so the code
    is the one the caller gets, refusals of the caller check included)."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:  # no such method: not labelled by its name, which the caller chose
            GRPC_REQUESTS.labels(UNKNOWN, UNKNOWN, grpc.StatusCode.UNIMPLEMENTED.name).inc()
            return None
        service, method = split_method(handler_call_details.method)
        return rewrap(
            handler,
            handler_call_details.method,
            answer=lambda inner: _timed_answer(inner, service, method),
            stream=lambda inner: _timed_stream(inner, service, method),
        )


# -- the gateway -------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def route_of(scope: Scope) -> str:
    """The template of the route that served a request (set by the router), or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


def method_of(scope: Scope) -> str:
    method = str(scope.get("method", ""))
    return method if method in HTTP_METHODS else "other"


class HttpMetrics:
    """ASGI middleware: counts and times every HTTP request by route template and status.

    A request that raises before answering counts as 500, as the server then answers.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = method_of(scope)
        status = 500

        async def send_status(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        in_flight = HTTP_IN_FLIGHT.labels(method)
        in_flight.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            in_flight.dec()
            labels = (method, route_of(scope), str(status))
            HTTP_REQUESTS.labels(*labels).inc()
            HTTP_DURATION.labels(*labels).observe(time.perf_counter() - started)
