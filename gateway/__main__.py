"""``python -m gateway``: serves the REST API with uvicorn."""

from __future__ import annotations

import socket
import sys

import uvicorn

from common.logging import configure
from common.settings import load_settings
from gateway.app import create_app
from gateway.settings import GatewaySettings


def main() -> None:
    settings = load_settings(GatewaySettings)
    configure("gateway", settings.log_level, settings.log_format)
    # Bind first so a port in use is reported plainly instead of as a traceback.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sys.exit(f"gateway: cannot listen on {settings.host}:{settings.port}: {exc.strerror}")
    config = uvicorn.Config(
        create_app(settings),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
