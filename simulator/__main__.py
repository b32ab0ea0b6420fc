"""``python -m simulator``: runs the AI platform simulator until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from common import eventloop
from common.logging import configure
from common.settings import load_settings
from simulator.server import SimulatorServer
from simulator.settings import SimulatorSettings

logger = logging.getLogger(__name__)


async def serve(settings: SimulatorSettings) -> None:
    """Serves until SIGTERM or SIGINT, then lets open requests finish."""
    server = SimulatorServer(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_stop)
    await server.start()
    await server.wait()
    logger.info("AI platform simulator stopped")


def main() -> None:
    settings = load_settings(SimulatorSettings)
    configure("simulator", settings.log_level, settings.log_format)
    eventloop.run(serve(settings))


if __name__ == "__main__":
    main()
