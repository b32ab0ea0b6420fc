"""The simulator app served inside the running event loop.

Used by ``python -m simulator`` and by test fixtures, which need the real HTTP server on a
loopback port but in their own loop so they can start and stop it per test.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from common.http_server import HttpServer
from simulator.app import create_app
from simulator.settings import SimulatorSettings


class SimulatorServer(HttpServer):
    """One simulator listening on ``settings.host:settings.port`` (port 0 picks a free one)."""

    def __init__(
        self,
        settings: SimulatorSettings,
        *,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.app = create_app(settings, wall_clock=wall_clock)
        super().__init__(
            self.app,
            settings.host,
            settings.port,
            name="AI platform simulator",
            access_log=settings.access_log,
            lifespan="off",
        )
