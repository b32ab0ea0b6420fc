"""The Celery peer as the benchmark runs it: every process on free loopback ports, started and
stopped like the platform's (:class:`scripts.devstack.Stack`, one log file each).

In start order: the S3 server (SeaweedFS, or moto), the S3 counting proxy in front of it
(:mod:`bench.s3count`: the peer's S3 requests are counted as the platform's are), the platform
stand-in (:mod:`bench.standin`, process name ``simulator``), ``redis-server`` (broker and result
backend, memory only: :mod:`scripts.redis`), the Celery worker (``celery -A
bench.peers.worker_app worker --pool threads --concurrency 300 --prefetch-multiplier 1``;
it reports ready on a port of its own) and the front (:mod:`bench.peers.front`), which the load
clients call with the stack's API key. The caller's passwords cross Redis sealed with a key
made for this stack.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.peers.settings import new_seal_key
from bench.stack import proxy_spec, running_pids, standin_spec
from scripts import redis, seaweedfs
from scripts.devstack import Ports, Proc, Stack
from scripts.ports import free_ports

CONCURRENCY = 300  # worker threads, sized for tasks that mostly wait on the platform
BUCKET = "peer-tasks"


class PeerStack(Stack):
    """The Celery peer and what it needs, on free ports under ``base``."""

    def __init__(
        self,
        base: Path,
        *,
        env: dict[str, str] | None = None,
        s3_server: str = "seaweedfs",
        seed: int = 1,
        concurrency: int = CONCURRENCY,
        poll_s: float = 2.0,
    ) -> None:
        front, standin, s3, proxy, control, redis_port, ready, *seaweed = free_ports(
            7 + len(seaweedfs.PORT_FLAGS)
        )
        ports = Ports(
            gateway=front,
            orchestrators=[],
            storage=0,
            simulator=standin,
            s3=s3,
            workers=[],
            seaweed=seaweed,
            redis=redis_port,
        )
        super().__init__(
            ports,
            base / "state",
            log_dir=base / "logs",
            env=env,
            s3_server=s3_server,
            shared_limits=False,
        )
        self.proxy_port, self.control_port, self.ready_port = proxy, control, ready
        self.seed, self.concurrency, self.poll_s = seed, concurrency, poll_s
        self._seal_key = new_seal_key()

    def peer_env(self) -> dict[str, str]:
        """The ``PEER_*`` settings of the worker and the front."""
        return {
            "PEER_REDIS_URL": f"redis://127.0.0.1:{self.ports.redis}/0",
            "PEER_S3_ENDPOINT_URL": f"http://127.0.0.1:{self.proxy_port}",
            "PEER_BUCKET": BUCKET,
            "PEER_PLATFORM_URL": f"http://127.0.0.1:{self.ports.simulator}",
            "PEER_API_KEY": self.admin_key,
            "PEER_SEAL_KEY": self._seal_key,
            "PEER_CONCURRENCY": str(self.concurrency),
            "PEER_POLL_S": f"{self.poll_s:g}",
            "PEER_READY_PORT": str(self.ready_port),
        }

    def specs(self) -> list[Proc]:
        env = self._base_env()
        p = self.ports
        peer = {**env, **self.peer_env()}
        worker = [sys.executable, "-m", "celery", "-A", "bench.peers.worker_app", "worker"]
        worker += ["--pool", "threads", "--concurrency", str(self.concurrency)]
        worker += ["--prefetch-multiplier", "1", "--queues", "peer", "--loglevel", "WARNING"]
        # One worker: nothing to gossip with, synchronise with or send heartbeats to.
        worker += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        front = [sys.executable, "-m", "bench.peers.front", "--port", str(p.gateway)]
        return [
            self._s3_spec(env),
            proxy_spec(self.proxy_port, p.s3, self.control_port, env),
            standin_spec(p.simulator, str(self.seed), env),
            Proc("redis", p.redis, redis.command(p.redis, self.state_dir / "redis"), env, True),
            Proc("celery", self.ready_port, worker, peer),
            Proc("front", p.gateway, front, peer),
        ]

    def pids(self) -> dict[str, int]:
        """Process id of every running process of the stack, by name."""
        return running_pids(self)
