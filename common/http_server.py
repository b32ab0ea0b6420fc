"""Serves an ASGI app with uvicorn inside the running event loop.

The gateway and the simulator run this way: the entry point (on SIGTERM/SIGINT) or a test
fixture decides when the server stops, and a port already in use is reported as one clear line
instead of uvicorn's traceback.

uvicorn bounds how long a kept-alive connection may sit idle between requests, but not how long
a request's headers may take: a connection that sends nothing, or half a header, is held for
ever, and each one counts against ``limit_concurrency``, so a few hundred of them would shut
everyone else out. :class:`HeaderBoundProtocol` closes a connection whose request headers are
not all in ``header_timeout_s`` after it opened, or after the request's first byte (as a proxy's
client header timeout does); the time a body takes is the app's to bound
(``gateway.app.BodyGuard``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import Any, Literal

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 60.0


class HeaderBoundProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, closing a connection whose request headers are not complete
    ``header_timeout_s`` after the connection opened or the request began (module docstring)."""

    header_timeout_s = HEADER_TIMEOUT_S
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        logger.debug("closed a connection: no request headers within %gs", self.header_timeout_s)
        self.transport.close()


def header_bound(timeout_s: float) -> type[HeaderBoundProtocol]:
    """The protocol class for a server whose request headers must come within ``timeout_s``."""
    return type("HeaderBoundProtocol", (HeaderBoundProtocol,), {"header_timeout_s": timeout_s})


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling (which re-raises SIGINT after shutdown)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """One ASGI app listening on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        *,
        name: str,
        access_log: bool = False,
        lifespan: Literal["on", "off"] = "on",
        grace_s: float | None = None,
        limit_concurrency: int | None = None,
        header_timeout_s: float = HEADER_TIMEOUT_S,
    ) -> None:
        """``limit_concurrency``: connections and tasks served at once; more are answered 503.
        ``header_timeout_s``: longest a request's headers may take (module docstring)."""
        self.name = name
        self.host = host
        self.port = port
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=access_log,
            lifespan=lifespan,
            http=header_bound(header_timeout_s),
            ws="none",
            timeout_graceful_shutdown=int(grace_s) if grace_s else None,
            limit_concurrency=limit_concurrency,
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def start(self) -> str:
        """Starts serving; returns the base URL once the socket listens."""
        if self.port and not can_bind(self.host, self.port):
            raise RuntimeError(f"{self.name}: cannot listen on {self.host}:{self.port}: in use")
        self._task = asyncio.create_task(self._server.serve(), name=self.name)
        while not self._server.started:
            if self._task.done():
                with contextlib.suppress(SystemExit):
                    await self._task
                raise RuntimeError(
                    f"{self.name}: cannot listen on {self.host}:{self.port} "
                    "(port in use or address not local)"
                )
            await asyncio.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{port}"
        logger.info("%s listening on %s", self.name, self.url)
        return self.url

    async def wait(self) -> None:
        """Returns when the server has stopped (after :meth:`request_stop`)."""
        if self._task is not None:
            await self._task

    def request_stop(self) -> None:
        """Asks the server to stop; :meth:`wait` returns once open requests are done."""
        self._server.should_exit = True

    async def stop(self) -> None:
        self.request_stop()
        await self.wait()


def can_bind(host: str, port: int) -> bool:
    """True when a server could listen on ``host:port`` now (connections in TIME_WAIT do not
    count, as servers bind with SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True
