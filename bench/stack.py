"""The platform as the benchmark runs it: :class:`scripts.devstack.Stack` on free loopback
ports, with the S3 counting proxy (:mod:`bench.s3count`) between storage_svc and moto.

moto stays on the port the stack starts it on; the proxy is one more process of the stack
(started right after moto, stopped with the rest) and storage_svc's
``STORAGE_S3_ENDPOINT_URL`` points at it. With more than one worker the stack also starts
Redis for the workers' shared limits (:class:`scripts.devstack.Stack`). Every service logs at
WARNING, so logging stays off the hot path.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from scripts.devstack import Ports, Proc, Stack

QUIET = {f"{svc}_LOG_LEVEL": "WARNING" for svc in ("GATEWAY", "ORCH", "STORAGE", "WORKER", "SIM")}


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in ports:
            ports.append(port)
    return ports


class BenchStack(Stack):
    """A :class:`Stack` whose storage_svc reaches S3 through the counting proxy."""

    def __init__(
        self,
        base: Path,
        *,
        orchestrators: int,
        workers: int,
        env: dict[str, str],
    ) -> None:
        gateway, storage, sim, s3, proxy, control, *rest = free_ports(6 + orchestrators + workers)
        ports = Ports(gateway, rest[:orchestrators], storage, sim, s3, rest[orchestrators:])
        super().__init__(ports, base / "state", log_dir=base / "logs", env=QUIET | env)
        self.proxy_port, self.control_port = proxy, control

    def specs(self) -> list[Proc]:
        specs = super().specs()
        argv = [sys.executable, "-m", "bench.s3count", "--listen", str(self.proxy_port)]
        argv += ["--upstream", str(self.ports.s3), "--control", str(self.control_port)]
        for spec in specs:
            if spec.name == "storage":
                spec.env["STORAGE_S3_ENDPOINT_URL"] = f"http://127.0.0.1:{self.proxy_port}"
        proxy = Proc("s3count", self.proxy_port, argv, specs[0].env, quiet=True)
        return [specs[0], proxy, *specs[1:]]

    def pids(self) -> dict[str, int]:
        """Process id of every running process of the stack, by name."""
        return {
            name: proc.popen.pid
            for name, proc in self.procs.items()
            if proc.popen is not None and proc.popen.poll() is None
        }

    @property
    def services(self) -> list[str]:
        """The platform's own processes (not moto, Redis, the simulator or the proxy)."""
        return [n for n in self.procs if n not in ("s3", "redis", "simulator", "s3count")]
