"""The launcher behind ``make run``: a port in use is reported before anything starts."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from scripts.devstack import Ports, Stack
from tests.helpers import free_port


def test_a_port_in_use_is_named_and_nothing_is_started(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        ports = Ports(
            gateway=taken,
            orchestrators=[free_port()],
            storage=free_port(),
            simulator=free_port(),
            s3=free_port(),
            workers=[free_port()],
        )
        stack = Stack(ports, tmp_path)
        with pytest.raises(RuntimeError, match=rf"gateway port {taken}.*GATEWAY_PORT"):
            stack.start()
        assert stack.procs == {}


def test_ports_come_from_the_services_own_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_PORT", "18000")
    monkeypatch.setenv("DEVSTACK_WORKER_PORTS", "19001,19002,19003")
    ports = Ports.from_env()
    assert ports.gateway == 18000
    assert ports.workers == [19001, 19002, 19003]
