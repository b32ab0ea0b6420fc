"""The platform as the benchmark runs it: :class:`scripts.devstack.Stack` on free loopback
ports, with the S3 counting proxy (:mod:`bench.s3count`) between storage_svc and S3.

The S3 server stays on the port the stack starts it on (moto, or SeaweedFS with ``s3_server``);
the proxy is one more process of the stack (started right after it, stopped with the rest) and
storage_svc's ``STORAGE_S3_ENDPOINT_URL`` points at it. With ``standin`` the AI platform is the
light stand-in (:mod:`bench.standin`) instead of the simulator, under the same process name. With
more than one worker the stack also starts Redis for the workers' shared limits
(:class:`scripts.devstack.Stack`). Every service logs at WARNING, so logging stays off the hot
path.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Protocol

from scripts import seaweedfs
from scripts.devstack import Ports, Proc, Stack
from scripts.ports import free_ports

QUIET = {f"{svc}_LOG_LEVEL": "WARNING" for svc in ("GATEWAY", "ORCH", "STORAGE", "WORKER", "SIM")}


def proxy_spec(listen: int, upstream: int, control: int, env: dict[str, str]) -> Proc:
    """The S3 counting proxy: ``listen`` forwards to the S3 server on ``upstream``."""
    argv = [sys.executable, "-m", "bench.s3count", "--listen", str(listen)]
    argv += ["--upstream", str(upstream), "--control", str(control)]
    return Proc("s3count", listen, argv, env, quiet=True)


def standin_spec(port: int, seed: str, env: dict[str, str]) -> Proc:
    """The platform stand-in, named ``simulator`` like the process it replaces."""
    argv = [sys.executable, "-m", "bench.standin", "--port", str(port), "--seed", seed]
    return Proc("simulator", port, argv, env, quiet=True)


def running_pids(stack: Stack) -> dict[str, int]:
    """Process id of every running process of ``stack``, by name."""
    return {
        name: proc.popen.pid
        for name, proc in stack.procs.items()
        if proc.popen is not None and proc.popen.poll() is None
    }


class Measured(Protocol):
    """What the benchmark's measure needs of a running stack (the platform's or a peer's):
    ``ports.gateway`` takes the clients' calls with ``admin_key``, ``ports.simulator`` is the
    AI platform (simulator or stand-in), ``control_port`` the S3 proxy's counts."""

    ports: Ports
    control_port: int

    @property
    def admin_key(self) -> str: ...

    def pids(self) -> dict[str, int]: ...


class BenchStack(Stack):
    """A :class:`Stack` whose storage_svc reaches S3 through the counting proxy."""

    def __init__(
        self,
        base: Path,
        *,
        orchestrators: int,
        workers: int,
        env: dict[str, str],
        s3_server: str = "moto",
        standin: bool = False,
    ) -> None:
        count = 6 + orchestrators + workers + len(seaweedfs.PORT_FLAGS)
        gateway, storage, sim, s3, proxy, control, *rest = free_ports(count)
        orchs, rest = rest[:orchestrators], rest[orchestrators:]
        ports = Ports(gateway, orchs, storage, sim, s3, rest[:workers], seaweed=rest[workers:])
        super().__init__(
            ports, base / "state", log_dir=base / "logs", env=QUIET | env, s3_server=s3_server
        )
        self.proxy_port, self.control_port = proxy, control
        self.standin = standin

    def specs(self) -> list[Proc]:
        specs = super().specs()
        for n, spec in enumerate(specs):
            if spec.name == "storage":
                spec.env["STORAGE_S3_ENDPOINT_URL"] = f"http://127.0.0.1:{self.proxy_port}"
            if spec.name == "simulator" and self.standin:
                seed = self.extra_env.get("SIM_SEED", "1")
                specs[n] = standin_spec(self.ports.simulator, seed, spec.env)
        proxy = proxy_spec(self.proxy_port, self.ports.s3, self.control_port, specs[0].env)
        return [specs[0], proxy, *specs[1:]]

    def pids(self) -> dict[str, int]:
        """Process id of every running process of the stack, by name."""
        return running_pids(self)

    @property
    def services(self) -> list[str]:
        """The platform's own processes (not S3, Redis, the simulator or the proxy)."""
        return [n for n in self.procs if n not in ("s3", "redis", "simulator", "s3count")]
