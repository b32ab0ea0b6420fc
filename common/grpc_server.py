"""One bootstrap for every gRPC server of the platform.

:class:`ServiceHost` builds a ``grpc.aio`` server with the tracing (when on,
:mod:`common.tracing`), metrics and error interceptors, the gRPC health service and, when
enabled, reflection; serves the process's Prometheus metrics on the metrics port
(:mod:`common.metrics`); binds it (a port already in use stops start-up with a
clear message) with mutual TLS and the caller check of :mod:`common.tls`, or in plaintext when
the settings say so; and on SIGTERM/SIGINT first marks every service NOT_SERVING, lets the
service drain, then stops the server with a grace period so in-flight calls can finish.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from common import tracing
from common.errors import RETRY_AFTER, AppError
from common.metrics import GrpcMetrics, MetricsServer
from common.rpc_handlers import rewrap
from common.settings import GrpcServerSettings
from common.tls import ALLOWED_CALLERS, CallerCheck, Role, identity_for

logger = logging.getLogger(__name__)

# Task documents and records are bounded well below this at the edge; this only stops abuse.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.so_reuseport", 0),
    # gRPC's own default lets one connection carry only 100 calls at once, and each service
    # reaches another over one connection: without this a gateway could hold at most 100 live
    # watches of an orchestrator's tasks at once, and the calls past them would wait, whatever
    # the server's capacity. max_concurrent_rpcs bounds the calls instead.
    ("grpc.max_concurrent_streams", 2**31 - 1),
]

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Servicer = TypeVar("Servicer")


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns a raised :class:`AppError` into its gRPC status; anything else into INTERNAL
    with a generic message (the traceback goes to the log, never to the caller)."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Req, Resp] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        return rewrap(
            handler,
            method,
            answer=lambda inner: _answer_or_abort(inner, method),
            stream=lambda inner: _stream_or_abort(inner, method),
        )


async def _abort_for(
    exc: Exception, context: grpc.aio.ServicerContext[Req, Resp], method: str
) -> NoReturn:
    if isinstance(exc, AppError):
        if exc.retry_after_s is not None:
            context.set_trailing_metadata(((RETRY_AFTER, str(exc.retry_after_s)),))
        await context.abort(exc.grpc_code, exc.message)
    logger.exception("unhandled error in %s", method)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the service log")


def _answer_or_abort(inner: Any, method: str) -> Any:
    """A behaviour answered once (unary, client-streaming) whose errors become statuses."""

    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await inner(request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort_for(exc, context, method)

    return call


def _stream_or_abort(inner: Any, method: str) -> Any:
    """A streaming behaviour whose errors become statuses."""

    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        try:
            async for item in inner(request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await _abort_for(exc, context, method)

    return call


class ServiceHost:
    """A gRPC server for one service: register servicers, start, run until a signal, stop.

    ``role`` is the service's own (its certificate, and who may call it); :attr:`identity`
    is its TLS identity, for the channels the service opens itself (``None`` in plaintext).
    """

    def __init__(self, settings: GrpcServerSettings, service_name: str, role: Role) -> None:
        self.settings = settings
        self.service_name = service_name
        self.role = role
        self.identity = identity_for(settings, role)
        interceptors: list[grpc.aio.ServerInterceptor] = [ErrorInterceptor()]
        if self.identity is not None:
            interceptors.insert(0, CallerCheck(ALLOWED_CALLERS[role]))
        # Outermost, so it counts the status the caller gets, whoever decided it; the trace's
        # span (when tracing is on) wraps even that.
        tracing.setup(service_name)
        interceptors[:0] = [*tracing.server_interceptors(), GrpcMetrics()]
        self.metrics = MetricsServer(settings, service_name)
        self.server = grpc.aio.server(
            interceptors=interceptors,
            options=SERVER_OPTIONS,
            maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        )
        self.health = health_aio.HealthServicer()
        self._full_names: list[str] = []
        self.port = 0

    def add(
        self,
        register: Callable[[Servicer, grpc.aio.Server], None],
        servicer: Servicer,
        name: str,
    ) -> None:
        """Registers a servicer; ``name`` is its full service name (``pkg.v1.Service``)."""
        register(servicer, self.server)
        self._full_names.append(name)

    def bind(self) -> int:
        """Binds the listening port (before :meth:`start`, so the service can be built knowing
        its address); returns the bound port."""
        if self.port:
            return self.port
        address = f"{self.settings.host}:{self.settings.port}"
        try:
            if self.identity is None:
                self.port = self.server.add_insecure_port(address)
            else:
                self.port = self.server.add_secure_port(address, self.identity.server_credentials())
        except RuntimeError as exc:
            raise SystemExit(
                f"{self.service_name}: cannot listen on {address} (port in use or address "
                f"not local): {exc}"
            ) from exc
        return self.port

    async def start(self) -> int:
        """Binds (unless :meth:`bind` did) and starts serving; returns the bound port."""
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if self.settings.grpc_reflection:
            reflection.enable_server_reflection(
                [*self._full_names, reflection.SERVICE_NAME, "grpc.health.v1.Health"], self.server
            )
        self.bind()
        await self.metrics.start()
        await self.server.start()
        for name in ["", *self._full_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        logger.info(
            "%s listening on %s:%d (%s)",
            self.service_name,
            self.settings.host,
            self.port,
            "mutual TLS" if self.identity else "PLAINTEXT",
        )
        return self.port

    async def stop(self, on_drain: Callable[[], Awaitable[None]] | None = None) -> None:
        """Marks every service NOT_SERVING, lets the service drain, then stops the server."""
        await self.health.enter_graceful_shutdown()
        if on_drain is not None:
            await on_drain()
        await self.server.stop(self.settings.shutdown_grace_s)
        await self.metrics.stop()
        logger.info("%s stopped", self.service_name)

    async def run_until_signal(self, on_drain: Callable[[], Awaitable[None]] | None = None) -> None:
        """Serves until SIGTERM or SIGINT, then stops gracefully."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        logger.info("%s received a stop signal; draining", self.service_name)
        await self.stop(on_drain)
