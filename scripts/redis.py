"""Redis for the local stack and the tests: the workers' shared limits, leases, budgets and
breaker states when more than one worker runs.

``redis-server`` (Debian's package; ``make run`` and ``make test`` install it when missing)
listens on 127.0.0.1 only, keeps nothing on disk (no RDB snapshots, no append-only file: the
limits it holds are worth nothing after a restart) and works in a folder of its own.
:func:`command` is the argv (``make run`` supervises it like every other process);
:class:`RedisServer` starts one on a free port for a test and stops it cleanly.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from scripts.ports import free_port


def redis_binary() -> str:
    """The ``redis-server`` executable, or RuntimeError saying how to get it."""
    found = shutil.which("redis-server")
    if found is None:
        raise RuntimeError(
            "redis-server is not installed: `make run` and `make test` install Debian's "
            "redis-server (apt-get install redis-server)"
        )
    return found


def command(port: int, work_dir: Path) -> list[str]:
    """The argv of a loopback-only, memory-only ``redis-server`` on ``port``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    return [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(work_dir),
        "--loglevel",
        "warning",
    ]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A ``redis-server`` on a free loopback port in a temporary folder, for one test session.

    ``with RedisServer() as server: server.url`` — stopped (SIGTERM, then SIGKILL after a few
    seconds) and its folder removed on exit.
    """

    def __init__(self, port: int = 0) -> None:
        self.port = port or free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="wealthai-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self._proc = subprocess.Popen(
            command(self.port, Path(self._dir.name)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not _answers(self.port):
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with code {self._proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
