"""Serves the simulator app with uvicorn inside the running event loop.

Used by ``python -m simulator`` and by test fixtures, which need the real HTTP server on a
loopback port but in their own loop so they can start and stop it per test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

import uvicorn

from simulator.app import create_app
from simulator.settings import SimulatorSettings

logger = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: whoever runs the simulator decides when it
    stops (the entry point on SIGTERM/SIGINT, a test fixture at the end of a test)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class SimulatorServer:
    """One simulator listening on ``settings.host:settings.port`` (port 0 picks a free one)."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=settings.access_log,
            lifespan="off",
            http="h11",
            ws="none",
        )
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def start(self) -> str:
        """Starts serving; returns the base URL once the socket listens."""
        self._task = asyncio.create_task(self._server.serve(), name="simulator")
        while not self._server.started:
            if self._task.done():
                await self._task  # re-raises why start-up failed (uvicorn logged it)
                raise RuntimeError("simulator stopped during start-up")
            await asyncio.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{self.settings.host}:{port}"
        logger.info("AI platform simulator listening on %s", self.url)
        return self.url

    async def wait(self) -> None:
        """Returns when the server has stopped (after a signal or :meth:`stop`)."""
        if self._task is not None:
            await self._task

    def request_stop(self) -> None:
        """Asks the server to stop; :meth:`wait` returns once it has."""
        self._server.should_exit = True

    async def stop(self) -> None:
        """Stops serving and waits until open connections are closed."""
        self.request_stop()
        await self.wait()
