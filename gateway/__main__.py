"""``python -m gateway``: serves the REST API until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys

from common import eventloop, tracing
from common.http_server import HttpServer
from common.logging import configure
from common.metrics import MetricsServer
from common.settings import load_settings
from gateway.app import create_app
from gateway.settings import GatewaySettings


async def serve(settings: GatewaySettings) -> None:
    server = HttpServer(
        create_app(settings),
        settings.host,
        settings.port,
        name="gateway",
        grace_s=settings.shutdown_grace_s,
        limit_concurrency=settings.max_concurrency,
        header_timeout_s=settings.header_timeout_s,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_stop)
    try:
        await server.start()
    except RuntimeError as exc:
        sys.exit(str(exc))
    # Its own port and no API key: reachable only from the host, or in a cluster from the
    # monitoring namespace (README, "Metrics and traces").
    metrics = MetricsServer(settings, "gateway")
    await metrics.start()
    try:
        await server.wait()
    finally:
        await metrics.stop()


def main() -> None:
    settings = load_settings(GatewaySettings)
    configure("gateway", settings.log_level, settings.log_format)
    tracing.setup("gateway")
    eventloop.run_service(serve(settings))


if __name__ == "__main__":
    main()
