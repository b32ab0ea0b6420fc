"""Free loopback ports for the processes the local stack, the tests and the benchmarks start.

A port found free has to stay free until the process given it binds it, and on a machine where
several test processes start servers at once, two things can take it meanwhile:

- **the kernel**, which hands out ports of its ephemeral range to every ``bind(("", 0))`` and
  every outgoing connection: ports are drawn below that range, where it never looks;
- **another process drawing ports the same way**: each drawn port is locked (a POSIX record
  lock on the port's byte of one shared lock file) for the drawing process's lifetime, and a
  port locked by another process is skipped. The lock needs no clean-up: the kernel drops it
  when the process exits, however it exits.

A process never hands out the same port twice, so the ports it draws stay distinct over its
life (a few thousand in the longest test run, out of about ten thousand).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import tempfile
import threading
from pathlib import Path

# Below: ports services use by default (SeaweedFS's gRPC ports are 18080-19333, for one).
_LOWEST = 20000
_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOCK_FILE = Path(tempfile.gettempdir()) / "wealthai-ports.lock"

_guard = threading.Lock()
_given: set[int] = set()
_lock_fd: int | None = None


def _range() -> range:
    """The ports outside the kernel's ephemeral range to draw from: below it when there is room
    there, otherwise above it."""
    low, high = 32768, 60999
    with contextlib.suppress(OSError, ValueError):
        low, high = (int(n) for n in _EPHEMERAL.read_text().split())
    if low - _LOWEST >= 2000:
        return range(_LOWEST, low)
    return range(high + 1, 65536)


def _locks() -> int | None:
    """The lock file's descriptor, opened once and kept open for the process's lifetime (closing
    any descriptor of the file would drop every lock the process holds on it); None when it
    cannot be opened, and then ports are only checked to be free."""
    global _lock_fd
    if _lock_fd is None:
        with contextlib.suppress(OSError):
            _lock_fd = os.open(_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    return _lock_fd


def _claim(port: int) -> bool:
    """Locks ``port`` for this process; False when another process holds it."""
    fd = _locks()
    if fd is None:
        return True
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
    except OSError:
        return False
    return True


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now, none given before to this process or to
    another one still running."""
    ports = _range()
    found: list[int] = []
    with _guard:
        start = random.randrange(len(ports))
        for i in range(len(ports)):
            port = ports[(start + i) % len(ports)]
            if port in _given or not _claim(port):
                continue
            _given.add(port)  # claimed: never handed out again, bindable or not
            if _bindable(port):
                found.append(port)
                if len(found) == count:
                    return found
    raise RuntimeError(f"fewer than {count} free loopback ports in {ports.start}-{ports.stop - 1}")


def free_port() -> int:
    """One port as :func:`free_ports` gives them."""
    return free_ports(1)[0]
