"""What ``celery -A bench.peers.worker_app worker`` loads: the peer's app built from the
environment (``PEER_*``, :class:`bench.peers.settings.PeerSettings`), and a readiness signal.

A Celery worker listens on no port, so once it is ready to take tasks (``worker_ready``) this
module opens one, ``PEER_READY_PORT`` on 127.0.0.1, and accepts and closes connections on it:
whoever started the worker (:mod:`bench.peers.stack`) waits for that port like for any service.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from celery.signals import worker_ready

from bench.peers.celery_peer import make_app
from bench.peers.settings import PeerSettings

settings = PeerSettings()
app = make_app(settings)


def _accept_forever(server: socket.socket) -> None:
    while True:
        connection, _ = server.accept()
        connection.close()


def _announce_ready(**_: Any) -> None:
    if not settings.ready_port:
        return
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", settings.ready_port))
    server.listen(16)
    threading.Thread(target=_accept_forever, args=(server,), daemon=True).start()


worker_ready.connect(_announce_ready, weak=False)
