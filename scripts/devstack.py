"""The local platform: every service as a real process on loopback, on the embedded default.

``make run`` (``python -m scripts.devstack``) starts SeaweedFS as the S3 server (data kept on
disk under the state folder, ``scripts/seaweedfs.py``), the AI-platform simulator, storage_svc,
the orchestrator, two section workers and the gateway, and — because more than one worker runs
— Redis, where the workers share their limits, budgets and breaker states
(``WORKER_LIMITS_URL``; ``scripts/redis.py``), prints where they are and how to submit
a task, restarts any of them that exits (with backoff; the others keep serving) and stops them
all on Ctrl-C. The end-to-end tests start the same :class:`Stack` on free ports, on moto or
SeaweedFS, supervised or not.

Ports come from the same variables the services read (``GATEWAY_PORT``, ``ORCH_PORT``,
``STORAGE_PORT``, ``SIM_PORT``) plus ``DEVSTACK_S3_PORT``, ``DEVSTACK_WORKER_PORTS`` and
``DEVSTACK_ORCH_PORTS`` (comma-separated, one replica per port), ``DEVSTACK_SEAWEED_PORTS``
(SeaweedFS's own nine, in ``scripts.seaweedfs.PORT_FLAGS`` order), ``DEVSTACK_REDIS_PORT``,
``DEVSTACK_METRICS_PORT``
(the first of the services' Prometheus ports: gateway, storage_svc, the orchestrators, then the
workers, one each, counting up; 0 turns them off) and ``DEVSTACK_DIR`` (state
kept between runs: the credential key, the admin API key, under ``tls/`` the local CA and the
services' certificates, made on first start, every gRPC hop being mutual TLS with them; and
under ``s3/`` SeaweedFS's data).

The gateway's admin key is ``GATEWAY_ADMIN_KEY`` when set; otherwise one is made on the first
start, kept in ``<state>/admin.key`` (mode 0600) and printed with the example calls.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from common.http_server import can_bind
from common.metrics import DEFAULT_PORTS
from common.tls import CA_CERT, Identity, Role, ensure_certificates
from gateway.models import EXAMPLE_DATA
from orchestrator.credentials import new_key
from scripts import redis, seaweedfs
from scripts.ports import free_port, free_ports

ROOT = Path(__file__).resolve().parent.parent
S3_SERVERS = ("moto", "seaweedfs")
# make run's first poll of the local simulator (its median answer takes 0.2 s).
LOCAL_FIRST_POLL = "0.2"

# Supervision: the first restart waits RESTART_DELAY_MIN_S, each further one twice as long up to
# RESTART_DELAY_MAX_S; a process that stayed up RESTART_RESET_AFTER_S starts over from the first.
RESTART_DELAY_MIN_S = 0.5
RESTART_DELAY_MAX_S = 10.0
RESTART_RESET_AFTER_S = 30.0
# The first metrics port: the gateway's own default (common.metrics.DEFAULT_PORTS), and with one
# orchestrator the others' defaults too.
DEFAULT_METRICS_PORT = DEFAULT_PORTS["gateway"]
# The environment variable prefix of each kind of service process.
ENV_PREFIXES = {
    "gateway": "GATEWAY",
    "storage": "STORAGE",
    "orchestrator": "ORCH",
    "worker": "WORKER",
}

logger = logging.getLogger(__name__)


def listens(port: int) -> bool:
    """Whether something accepts connections on loopback ``port``."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for_port(port: int, proc: subprocess.Popen[bytes], name: str, timeout: float) -> None:
    """Waits until ``port`` accepts connections; fails early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode} while starting")
        if listens(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on port {port} within {timeout:.0f}s")


def with_parent(argv: list[str]) -> list[str]:
    """``argv`` run so that it dies with this process (:mod:`scripts.with_parent`); the thread
    that starts it must outlive it."""
    return [sys.executable, "-S", "-m", "scripts.with_parent", str(os.getpid()), *argv]


@contextlib.contextmanager
def seaweedfs_server(data: Path, log: IO[bytes] | None = None) -> Iterator[str]:
    """A SeaweedFS (``weed mini``) on free loopback ports, its data in ``data`` and its output
    in ``log`` (else dropped), stopped on leaving and with this process; yields its S3
    endpoint. Clients sign with :data:`scripts.seaweedfs.ACCESS_KEY` and ``SECRET_KEY``."""
    ports = Ports.free()
    config = seaweedfs.write_config(data / "s3.json")
    argv = seaweedfs.command(ports.s3, ports.seaweed, data / "data", config)
    output = log if log is not None else subprocess.DEVNULL
    weed = subprocess.Popen(with_parent(argv), cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for_port(ports.s3, weed, "SeaweedFS", timeout=60)
        yield f"http://127.0.0.1:{ports.s3}"
    finally:
        weed.terminate()
        weed.wait(timeout=30)


@dataclass
class Ports:
    gateway: int = 8000
    orchestrators: list[int] = field(default_factory=lambda: [50071])
    storage: int = 50051
    simulator: int = 8100
    s3: int = 9000
    workers: list[int] = field(default_factory=lambda: [50061, 50062])
    # SeaweedFS's own ports (master, volume, filer, admin; then their gRPC ports and S3's).
    seaweed: list[int] = field(default_factory=lambda: list(seaweedfs.DEFAULT_PORTS))
    # Redis, when the workers share their limits (several workers); 0 picks a free port.
    redis: int = 0
    # Prometheus metrics port of each process by name ("gateway", "worker-2" ...); a process
    # not named here serves no metrics.
    metrics: dict[str, int] = field(default_factory=dict)

    def service_names(self) -> list[str]:
        """The names of the platform's own processes, in the order metrics ports are given."""
        return [
            "gateway",
            "storage",
            *(f"orchestrator-{i + 1}" for i in range(len(self.orchestrators))),
            *(f"worker-{i + 1}" for i in range(len(self.workers))),
        ]

    def number_metrics(self, first: int) -> None:
        """Gives every service process a metrics port, from ``first`` counting up (0: none)."""
        names = self.service_names()
        self.metrics = {name: first + i for i, name in enumerate(names)} if first else {}

    @classmethod
    def from_env(cls) -> Ports:
        env = os.environ
        ports = cls()
        ports.gateway = int(env.get("GATEWAY_PORT", ports.gateway))
        if raw := env.get("DEVSTACK_ORCH_PORTS", env.get("ORCH_PORT")):
            ports.orchestrators = [int(p) for p in raw.split(",") if p.strip()]
        ports.storage = int(env.get("STORAGE_PORT", ports.storage))
        ports.simulator = int(env.get("SIM_PORT", ports.simulator))
        ports.s3 = int(env.get("DEVSTACK_S3_PORT", ports.s3))
        if raw := env.get("DEVSTACK_WORKER_PORTS"):
            ports.workers = [int(p) for p in raw.split(",") if p.strip()]
        if raw := env.get("DEVSTACK_SEAWEED_PORTS"):
            ports.seaweed = [int(p) for p in raw.split(",") if p.strip()]
        ports.redis = int(env.get("DEVSTACK_REDIS_PORT", 6379))
        ports.number_metrics(int(env.get("DEVSTACK_METRICS_PORT", DEFAULT_METRICS_PORT)))
        return ports

    @classmethod
    def free(cls, *, workers: int = 2, orchestrators: int = 1) -> Ports:
        """Every port a free one (for tests and benchmarks running beside ``make run``)."""
        gateway, storage, simulator, s3, *rest = free_ports(
            4 + workers + orchestrators + len(seaweedfs.PORT_FLAGS)
        )
        return cls(
            gateway=gateway,
            orchestrators=rest[:orchestrators],
            storage=storage,
            simulator=simulator,
            s3=s3,
            workers=rest[orchestrators : orchestrators + workers],
            seaweed=rest[orchestrators + workers :],
        )


@dataclass
class Proc:
    name: str
    port: int
    argv: list[str]
    env: dict[str, str]
    quiet: bool = False  # output goes to a file even on a terminal (moto logs every request)
    popen: subprocess.Popen[bytes] | None = None
    other_ports: list[int] = field(default_factory=list)  # checked free before start, too
    started_at: float = 0.0  # monotonic time of the last launch
    restart_delay: float = RESTART_DELAY_MIN_S  # the wait before its next restart


class Stack:
    """Starts and stops the whole platform as local processes.

    ``s3_server`` is ``"moto"`` (in memory: gone when it stops) or ``"seaweedfs"`` (on disk
    under ``<state_dir>/s3``). ``shared_limits`` (default: when more than one worker runs)
    starts Redis and points every worker's ``WORKER_LIMITS_URL`` at it, so the workers' limits,
    budgets and breakers hold across them. With ``supervise``, a process that exits while the
    stack runs is restarted after a delay (:data:`RESTART_DELAY_MIN_S` doubling to
    :data:`RESTART_DELAY_MAX_S`) by a thread of the stack, with a log line; without it, a
    process killed stays down until the caller calls :meth:`launch` for it again.
    """

    def __init__(
        self,
        ports: Ports,
        state_dir: Path,
        *,
        log_dir: Path | None = None,
        env: dict[str, str] | None = None,
        bucket: str = "wealth-ai-tasks",
        s3_server: str = "moto",
        supervise: bool = False,
        shared_limits: bool | None = None,
    ) -> None:
        if s3_server not in S3_SERVERS:
            raise ValueError(f"s3_server must be one of {', '.join(S3_SERVERS)}")
        self.ports = ports
        self.state_dir = state_dir
        self.log_dir = log_dir
        self.extra_env = env or {}
        self.bucket = bucket
        self.s3_server = s3_server
        self.supervise = supervise
        self.shared_limits = len(ports.workers) > 1 if shared_limits is None else shared_limits
        self.procs: dict[str, Proc] = {}
        self.tls_dir = state_dir / "tls"
        self.s3_dir = state_dir / "s3"
        self._stopping = threading.Event()
        self._launching = threading.Lock()  # no (re)start once stop() has begun
        self._supervisor: threading.Thread | None = None

    # -- configuration ----------------------------------------------------------------------

    def _credential_key(self) -> str:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        key_file = self.state_dir / "credential.key"
        if not key_file.exists():
            key_file.write_text(new_key())
            key_file.chmod(0o600)
        return key_file.read_text().strip()

    def _platform_accounts(self) -> str:
        """The platform service accounts file (``ORCH_PLATFORM_ACCOUNTS_FILE``): one account
        for every tenant, made on first start with a random password (the simulator takes any
        password unless ``SIM_PASSWORD`` is set), then kept."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / "platform-accounts.json"
        if not path.exists():
            account = {
                "tenant": "wealth",
                "username": "prism-service@example.com",
                "password": (
                    self.extra_env.get("SIM_PASSWORD")
                    or os.environ.get("SIM_PASSWORD")
                    or secrets.token_urlsafe(24)
                ),
            }
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump({"*": account}, out, indent=2)
        return str(path)

    @property
    def admin_key(self) -> str:
        """The gateway's admin API key: ``GATEWAY_ADMIN_KEY`` (of the stack's environment, else
        the process's), or the one kept in the state folder, made on first use."""
        given = self.extra_env.get("GATEWAY_ADMIN_KEY") or os.environ.get("GATEWAY_ADMIN_KEY")
        if given:
            return given
        self.state_dir.mkdir(parents=True, exist_ok=True)
        key_file = self.state_dir / "admin.key"
        if not key_file.exists():
            # Created 0600 before the key is written, so it is never readable by others.
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(f"wak_admin_{secrets.token_urlsafe(32)}\n")
        return key_file.read_text().strip()

    def _certificates(self) -> str:
        """The local CA and every role's certificate (made on first start, then kept)."""
        ensure_certificates(self.tls_dir)
        return str(self.tls_dir)

    def identity(self, role: Role) -> Identity:
        """A certificate of the stack's CA, to call its services as ``role``."""
        return Identity.load(Path(self._certificates()), role)

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": str(ROOT),
                # The local S3 server's credentials (moto accepts any); real deployments use
                # the AWS chain instead.
                "AWS_ACCESS_KEY_ID": seaweedfs.ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": seaweedfs.SECRET_KEY,
                "AWS_DEFAULT_REGION": "us-east-1",
            }
        )
        env.update(self.extra_env)
        return env

    def specs(self) -> list[Proc]:
        """Every process of the stack, in start order."""
        py = sys.executable
        p = self.ports
        env = self._base_env()
        workers = ",".join(f"127.0.0.1:{port}" for port in p.workers)
        tls = self._certificates()
        specs = [self._s3_spec(env)]
        worker_env: dict[str, str] = {}
        if self.shared_limits:
            if not p.redis:
                p.redis = free_port()
            argv = redis.command(p.redis, self.state_dir / "redis")
            specs.append(Proc("redis", p.redis, argv, env, quiet=True))
            worker_env["WORKER_LIMITS_URL"] = f"redis://127.0.0.1:{p.redis}/0"
        specs += [
            Proc("simulator", p.simulator, [py, "-m", "simulator"], {"SIM_PORT": str(p.simulator)}),
            Proc(
                "storage",
                p.storage,
                [py, "-m", "storage_svc"],
                {
                    "STORAGE_PORT": str(p.storage),
                    "STORAGE_S3_ENDPOINT_URL": f"http://127.0.0.1:{p.s3}",
                    "STORAGE_S3_BUCKET": self.bucket,
                    "STORAGE_TLS_DIR": tls,
                },
            ),
        ]
        specs += [
            Proc(
                f"worker-{i + 1}",
                port,
                [py, "-m", "section_worker"],
                {
                    "WORKER_PORT": str(port),
                    "WORKER_PLATFORM_URL": f"http://127.0.0.1:{p.simulator}",
                    "WORKER_STORAGE_TARGET": f"127.0.0.1:{p.storage}",
                    "WORKER_TLS_DIR": tls,
                    **worker_env,
                },
            )
            for i, port in enumerate(p.workers)
        ]
        specs += [
            Proc(
                f"orchestrator-{i + 1}",
                port,
                [py, "-m", "orchestrator"],
                {
                    "ORCH_PORT": str(port),
                    "ORCH_REPLICA_NAME": f"orchestrator-{i + 1}",
                    "ORCH_STORAGE_TARGET": f"127.0.0.1:{p.storage}",
                    "ORCH_WORKER_TARGETS": workers,
                    "ORCH_CREDENTIAL_KEY": self._credential_key(),
                    "ORCH_PLATFORM_ACCOUNTS_FILE": self._platform_accounts(),
                    "ORCH_CONFIG_PATH": str(ROOT / "config.json"),
                    "ORCH_TLS_DIR": tls,
                },
            )
            for i, port in enumerate(p.orchestrators)
        ]
        orchestrators = ",".join(f"127.0.0.1:{port}" for port in p.orchestrators)
        specs.append(
            Proc(
                "gateway",
                p.gateway,
                [py, "-m", "gateway"],
                {
                    "GATEWAY_PORT": str(p.gateway),
                    "GATEWAY_ORCHESTRATOR_TARGET": f"ipv4:{orchestrators}",
                    "GATEWAY_STORAGE_TARGET": f"127.0.0.1:{p.storage}",
                    "GATEWAY_ADMIN_KEY": self.admin_key,
                    "GATEWAY_TLS_DIR": tls,
                },
            )
        )
        for spec in specs:
            spec.env = {**env, **spec.env, **self.extra_env}
            if (prefix := ENV_PREFIXES.get(spec.name.split("-")[0])) is not None:
                # Off unless given a port: replicas must not race for the services' defaults.
                metrics_port = p.metrics.get(spec.name, 0)
                spec.env[f"{prefix}_METRICS_PORT"] = str(metrics_port)
                spec.other_ports += [metrics_port] if metrics_port else []
        return specs

    def _s3_spec(self, env: dict[str, str]) -> Proc:
        p = self.ports
        if self.s3_server == "moto":
            argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(p.s3)]
            return Proc("s3", p.s3, argv, env, quiet=True)
        config = seaweedfs.write_config(self.state_dir / "seaweedfs-s3.json")
        argv = seaweedfs.command(p.s3, p.seaweed, self.s3_dir, config)
        return Proc("s3", p.s3, argv, env, quiet=True, other_ports=list(p.seaweed))

    # -- processes --------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        specs = self.specs()
        busy = [
            f"{s.name} port {port}"
            for s in specs
            for port in [s.port, *s.other_ports]
            if not can_bind("127.0.0.1", port)
        ]
        if busy:
            raise RuntimeError(
                "already in use: "
                + ", ".join(busy)
                + " (stop what uses them or set GATEWAY_PORT, ORCH_PORT, STORAGE_PORT, "
                "SIM_PORT, DEVSTACK_S3_PORT, DEVSTACK_WORKER_PORTS, DEVSTACK_ORCH_PORTS, "
                "DEVSTACK_SEAWEED_PORTS, DEVSTACK_REDIS_PORT, DEVSTACK_METRICS_PORT)"
            )
        self._stopping.clear()
        try:
            for spec in specs:
                self.procs[spec.name] = spec
                self.launch(spec.name, timeout)
        except BaseException:
            self.stop()
            raise
        if self.supervise:
            # Restarted children die with this thread (with_parent ties them to the thread that
            # launched them), so it lives until stop() has stopped them.
            self._supervisor = threading.Thread(
                target=self._supervise, name="devstack-supervisor", daemon=True
            )
            self._supervisor.start()

    def launch(self, name: str, timeout: float = 30.0) -> None:
        """(Re)starts one process of the stack and waits until it listens."""
        spec = self._spawn(name)
        assert spec.popen is not None
        logger.info("%s started (pid %d)", name, spec.popen.pid)
        wait_for_port(spec.port, spec.popen, name, timeout)

    def _spawn(self, name: str) -> Proc:
        spec = self.procs[name]
        log: IO[bytes] | None = None
        log_dir = self.log_dir or (self.state_dir if spec.quiet else None)
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115
        try:
            # Each child dies with the launcher (scripts/with_parent.py): launch from a thread
            # that outlives it (the main thread, or one long-lived thread).
            spec.popen = subprocess.Popen(
                with_parent(spec.argv),
                env=spec.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT if log is not None else None,
            )
        finally:
            if log is not None:
                log.close()  # the child holds its own copy
        spec.started_at = time.monotonic()
        return spec

    def _supervise(self) -> None:
        """Restarts every process that exits, each after its own backoff, until stop()."""
        due: dict[str, float] = {}  # name -> when it is restarted
        coming_up: set[str] = set()  # restarted, not yet listening
        while not self._stopping.wait(0.2):
            now = time.monotonic()
            for proc in self.procs.values():
                if proc.name in due or proc.popen is None:
                    continue
                code = proc.popen.poll()
                if code is None:
                    if proc.name in coming_up and listens(proc.port):
                        coming_up.discard(proc.name)
                        logger.info("%s is back on port %d", proc.name, proc.port)
                    continue
                if self._stopping.is_set():
                    return
                if now - proc.started_at >= RESTART_RESET_AFTER_S:
                    proc.restart_delay = RESTART_DELAY_MIN_S
                delay = proc.restart_delay
                proc.restart_delay = min(delay * 2, RESTART_DELAY_MAX_S)
                coming_up.discard(proc.name)
                due[proc.name] = now + delay
                logger.warning("%s exited with code %d; restarting in %g s", proc.name, code, delay)
            for name, at in list(due.items()):
                if at > now:
                    continue
                with self._launching:
                    if self._stopping.is_set():
                        return
                    del due[name]
                    try:
                        spec = self._spawn(name)
                    except OSError as exc:  # e.g. the binary vanished: try again later
                        logger.error("%s could not be started: %s", name, exc)
                        due[name] = now + self.procs[name].restart_delay
                        continue
                assert spec.popen is not None
                coming_up.add(name)
                logger.info("%s restarted (pid %d)", name, spec.popen.pid)

    def request_stop(self) -> None:
        """Ends supervision at once (safe from a signal handler); :meth:`stop` stops the rest."""
        self._stopping.set()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Sends ``sig`` to one process and reaps it."""
        popen = self.procs[name].popen
        if popen and popen.poll() is None:
            popen.send_signal(sig)
            popen.wait(timeout=30)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to every process (last started first), SIGKILL to any still up after grace.

        Supervision ends first, so nothing is restarted while the stack stops."""
        with self._launching:
            self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
            self._supervisor = None
        live = [p for p in reversed(self.procs.values()) if p.popen and p.popen.poll() is None]
        for proc in live:
            assert proc.popen is not None
            proc.popen.terminate()
        deadline = time.monotonic() + grace
        for proc in live:
            assert proc.popen is not None
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()

    def log_tail(self, name: str, lines: int = 40) -> str:
        if self.log_dir is None:
            return ""
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _data(stack: Stack) -> str:
    if stack.s3_server == "moto":
        return "S3 data is in moto's memory: gone when the stack stops."
    return f"""S3 data (tasks, API keys, every object) is kept on disk in {stack.s3_dir}/
  and survives restarts. To wipe it: stop make run, then `make run-clean`
  (rm -rf {stack.s3_dir})."""


def _banner(stack: Stack, admin_key: str, key_file: Path | None) -> str:
    ports, tls_dir = stack.ports, stack.tls_dir
    s3_name = "SeaweedFS" if stack.s3_server == "seaweedfs" else "moto"
    base = f"http://127.0.0.1:{ports.gateway}"
    example = json.dumps({"username": "user@example.com", "password": "xxx", "data": EXAMPLE_DATA})
    auth = '-H "Authorization: Bearer $KEY"'
    where = f"kept in {key_file}" if key_file else "from GATEWAY_ADMIN_KEY"
    new_key = json.dumps({"name": "ann", "tenant": "acme", "role": "client"})
    workers = ", ".join(f"127.0.0.1:{p}" for p in ports.workers)
    orchestrators = ", ".join(f"127.0.0.1:{p}" for p in ports.orchestrators)
    extras = _limits(stack) + _metrics(stack)
    return f"""
Wealth AI Task Platform is running.
  gateway (REST)   {base}   docs: {base}/docs   health: {base}/ping
  orchestrator     {orchestrators} (gRPC)
  section workers  {workers} (gRPC)
  storage_svc      127.0.0.1:{ports.storage} (gRPC) -> S3 ({s3_name}) http://127.0.0.1:{ports.s3}
  AI simulator     http://127.0.0.1:{ports.simulator}   calls: /_sim/stats
{extras}  gRPC is mutual TLS; local CA {tls_dir / CA_CERT}, certificates in {tls_dir}/
{_data(stack)}

Every call but /ping and /docs needs an API key. The admin key ({where}):
  KEY={shlex.quote(admin_key)}
Give a client its own key (shown once):
  curl -s -X POST {base}/admin/keys {auth} -H 'Content-Type: application/json' -d '{new_key}'
Submit the example task:
  curl -s -X POST {base}/task/submit {auth} -H 'Content-Type: application/json' -d '{example}'
Then:
  curl -s {auth} {base}/task/<task_id>/status
  curl -s {auth} {base}/task/<task_id>/result

{_supervision(stack)}Ctrl-C stops everything.
"""


def _limits(stack: Stack) -> str:
    if not stack.shared_limits:
        return "  limits           in each worker's memory (one worker)\n"
    return (
        f"  Redis            127.0.0.1:{stack.ports.redis}: the workers' shared limits, "
        "budgets and breakers (nothing on disk)\n"
    )


def _metrics(stack: Stack) -> str:
    if not stack.ports.metrics:
        return ""
    listed = ", ".join(f"{name} :{port}" for name, port in stack.ports.metrics.items())
    return f"  metrics          http://127.0.0.1:<port>/metrics for {listed}\n"


def _supervision(stack: Stack) -> str:
    if not stack.supervise:
        return ""
    return (
        f"A service that exits is restarted after {RESTART_DELAY_MIN_S:g} s, doubling to "
        f"{RESTART_DELAY_MAX_S:g} s while it keeps exiting;\n  the others keep serving. "
    )


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s make run: %(message)s", datefmt="%H:%M:%S"
    )
    ports = Ports.from_env()
    state = Path(os.environ.get("DEVSTACK_DIR", ROOT / ".run"))
    # The local simulator answers in about 0.2 s; the workers' default first poll (2 s, for a
    # platform whose latencies are not known yet) would make every local task wait for it.
    polling = {"WORKER_POLL_INITIAL_S": os.environ.get("WORKER_POLL_INITIAL_S", LOCAL_FIRST_POLL)}
    stack = Stack(ports, state, s3_server="seaweedfs", supervise=True, env=polling)
    stop_requested = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True
        # Ctrl-C reaches the children too: none of them may be restarted from now on.
        stack.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        stack.start()
    except RuntimeError as exc:
        sys.exit(f"make run: {exc}")
    given = os.environ.get("GATEWAY_ADMIN_KEY")
    key_file = None if given else state / "admin.key"
    print(_banner(stack, stack.admin_key, key_file), flush=True)
    try:
        while not stop_requested:
            time.sleep(0.3)
    finally:
        print("stopping every service...", flush=True)
        stack.stop()
        print("stopped.", flush=True)


if __name__ == "__main__":
    main()
