"""scripts.ports: free ports outside the kernel's ephemeral range, never one given to another
running process."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts import ports

SMALL = range(24000, 24012)


@pytest.fixture
def small_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Draws from 12 ports, locked in a lock file of the test's own, by a fresh process state."""
    lock_file = tmp_path / "ports.lock"
    monkeypatch.setattr(ports, "_range", lambda: SMALL)
    monkeypatch.setattr(ports, "_LOCK_FILE", lock_file)
    monkeypatch.setattr(ports, "_lock_fd", None)
    monkeypatch.setattr(ports, "_given", set())
    yield lock_file


def test_ports_are_distinct_free_and_outside_the_ephemeral_range() -> None:
    low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    drawn = ports.free_ports(50)

    assert len(set(drawn)) == 50
    assert all(not low <= port <= high for port in drawn)
    for port in drawn[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_a_process_never_gets_a_port_twice(small_range: Path) -> None:
    first = ports.free_ports(6)
    second = ports.free_ports(6)

    assert sorted(first + second) == list(SMALL)
    with pytest.raises(RuntimeError, match="fewer than 1 free loopback ports in 24000-24011"):
        ports.free_port()


def test_a_port_in_use_is_skipped(small_range: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", SMALL[3]))
        busy.listen()

        drawn = ports.free_ports(11)

    assert SMALL[3] not in drawn


def test_ports_another_running_process_drew_are_skipped(small_range: Path) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from scripts import ports; "
            f"ports._range = lambda: range({SMALL.start}, {SMALL.stop}); "
            f"ports._LOCK_FILE = Path({str(small_range)!r}); "
            "print(*ports.free_ports(5), flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    try:
        assert child.stdout is not None
        theirs = {int(p) for p in child.stdout.readline().split()}
        assert len(theirs) == 5

        mine = set(ports.free_ports(7))

        assert mine == set(SMALL) - theirs
    finally:
        child.communicate("")  # the child exits; its locks go with it

    ports._given.clear()  # this process may hand its own ports out again: every one is free
    assert set(ports.free_ports(12)) == set(SMALL)
