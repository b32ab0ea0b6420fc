"""The local platform: every service as a real process on loopback, on the embedded default.

``make run`` (``python -m scripts.devstack``) starts a moto S3 server, the AI-platform
simulator, storage_svc, the orchestrator, two section workers and the gateway, prints where
they are and how to submit a task, and stops them all on Ctrl-C. The end-to-end tests start the
same :class:`Stack` on free ports.

Ports come from the same variables the services read (``GATEWAY_PORT``, ``ORCH_PORT``,
``STORAGE_PORT``, ``SIM_PORT``) plus ``DEVSTACK_S3_PORT``, ``DEVSTACK_WORKER_PORTS`` and
``DEVSTACK_ORCH_PORTS`` (comma-separated, one replica per port) and ``DEVSTACK_DIR`` (state kept
between runs: the credential key, the admin API key, and under ``tls/`` the local CA and the
services' certificates, made on first start; every gRPC hop is mutual TLS with them).

The gateway's admin key is ``GATEWAY_ADMIN_KEY`` when set; otherwise one is made on the first
start, kept in ``<state>/admin.key`` (mode 0600) and printed with the example calls.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from common.http_server import can_bind
from common.tls import CA_CERT, Identity, Role, ensure_certificates
from gateway.models import EXAMPLE_DATA
from orchestrator.credentials import new_key

ROOT = Path(__file__).resolve().parent.parent


def wait_for_port(port: int, proc: subprocess.Popen[bytes], name: str, timeout: float) -> None:
    """Waits until ``port`` accepts connections; fails early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode} while starting")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on port {port} within {timeout:.0f}s")


@dataclass
class Ports:
    gateway: int = 8000
    orchestrators: list[int] = field(default_factory=lambda: [50071])
    storage: int = 50051
    simulator: int = 8100
    s3: int = 9000
    workers: list[int] = field(default_factory=lambda: [50061, 50062])

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
        return ports


@dataclass
class Proc:
    name: str
    port: int
    argv: list[str]
    env: dict[str, str]
    quiet: bool = False  # output goes to a file even on a terminal (moto logs every request)
    popen: subprocess.Popen[bytes] | None = None


class Stack:
    """Starts and stops the whole platform as local processes."""

    def __init__(
        self,
        ports: Ports,
        state_dir: Path,
        *,
        log_dir: Path | None = None,
        env: dict[str, str] | None = None,
        bucket: str = "wealth-ai-tasks",
    ) -> None:
        self.ports = ports
        self.state_dir = state_dir
        self.log_dir = log_dir
        self.extra_env = env or {}
        self.bucket = bucket
        self.procs: dict[str, Proc] = {}
        self.tls_dir = state_dir / "tls"

    # -- configuration ----------------------------------------------------------------------

    def _credential_key(self) -> str:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        key_file = self.state_dir / "credential.key"
        if not key_file.exists():
            key_file.write_text(new_key())
            key_file.chmod(0o600)
        return key_file.read_text().strip()

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
                # moto accepts any credentials; real deployments use the AWS chain instead.
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local-secret",
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
        specs = [
            Proc(
                "s3",
                p.s3,
                [py, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(p.s3)],
                env,
                quiet=True,
            ),
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
                    "WORKER_TLS_DIR": tls,
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
                    "GATEWAY_ADMIN_KEY": self.admin_key,
                    "GATEWAY_TLS_DIR": tls,
                },
            )
        )
        for spec in specs:
            spec.env = {**env, **spec.env, **self.extra_env}
        return specs

    # -- processes --------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        specs = self.specs()
        busy = [f"{s.name} port {s.port}" for s in specs if not can_bind("127.0.0.1", s.port)]
        if busy:
            raise RuntimeError(
                "already in use: "
                + ", ".join(busy)
                + " (stop what uses them or set GATEWAY_PORT, ORCH_PORT, STORAGE_PORT, "
                "SIM_PORT, DEVSTACK_S3_PORT, DEVSTACK_WORKER_PORTS, DEVSTACK_ORCH_PORTS)"
            )
        try:
            for spec in specs:
                self.procs[spec.name] = spec
                self.launch(spec.name, timeout)
        except BaseException:
            self.stop()
            raise

    def launch(self, name: str, timeout: float = 30.0) -> None:
        """(Re)starts one process of the stack and waits until it listens."""
        spec = self.procs[name]
        log: IO[bytes] | None = None
        log_dir = self.log_dir or (self.state_dir if spec.quiet else None)
        if log_dir is not None:
            log_dir.mkdir(parents=True, exist_ok=True)
            log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115
        try:
            # Each child dies with the launcher (scripts/with_parent.py): launch from a thread
            # that outlives it (the main thread, or one long-lived thread).
            guard = [sys.executable, "-S", "-m", "scripts.with_parent", str(os.getpid())]
            spec.popen = subprocess.Popen(
                guard + spec.argv,
                env=spec.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT if log is not None else None,
            )
        finally:
            if log is not None:
                log.close()  # the child holds its own copy
        wait_for_port(spec.port, spec.popen, name, timeout)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Sends ``sig`` to one process and reaps it."""
        popen = self.procs[name].popen
        if popen and popen.poll() is None:
            popen.send_signal(sig)
            popen.wait(timeout=30)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to every process (last started first), SIGKILL to any still up after grace."""
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


def _banner(ports: Ports, admin_key: str, key_file: Path | None, tls_dir: Path) -> str:
    base = f"http://127.0.0.1:{ports.gateway}"
    example = json.dumps({"username": "user@example.com", "password": "xxx", "data": EXAMPLE_DATA})
    auth = "-H 'Authorization: Bearer $KEY'"
    where = f"kept in {key_file}" if key_file else "from GATEWAY_ADMIN_KEY"
    new_key = json.dumps({"name": "ann", "tenant": "acme", "role": "client"})
    workers = ", ".join(f"127.0.0.1:{p}" for p in ports.workers)
    orchestrators = ", ".join(f"127.0.0.1:{p}" for p in ports.orchestrators)
    return f"""
Wealth AI Task Platform is running.
  gateway (REST)   {base}   docs: {base}/docs   health: {base}/ping
  orchestrator     {orchestrators} (gRPC)
  section workers  {workers} (gRPC)
  storage_svc      127.0.0.1:{ports.storage} (gRPC) -> S3 (moto) http://127.0.0.1:{ports.s3}
  AI simulator     http://127.0.0.1:{ports.simulator}   calls: /_sim/stats
  gRPC is mutual TLS; local CA {tls_dir / CA_CERT}, certificates in {tls_dir}/

Every call but /ping and /docs needs an API key. The admin key ({where}):
  KEY={shlex.quote(admin_key)}
Give a client its own key (shown once):
  curl -s -X POST {base}/admin/keys {auth} -H 'Content-Type: application/json' -d '{new_key}'
Submit the example task:
  curl -s -X POST {base}/task/submit {auth} -H 'Content-Type: application/json' -d '{example}'
Then:
  curl -s {auth} {base}/task/<task_id>/status
  curl -s {auth} {base}/task/<task_id>/result

Ctrl-C stops everything.
"""


def main() -> None:
    ports = Ports.from_env()
    state = Path(os.environ.get("DEVSTACK_DIR", ROOT / ".run"))
    stack = Stack(ports, state)
    stop_requested = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        stack.start()
    except RuntimeError as exc:
        sys.exit(f"make run: {exc}")
    given = os.environ.get("GATEWAY_ADMIN_KEY")
    key_file = None if given else state / "admin.key"
    print(_banner(ports, stack.admin_key, key_file, stack.tls_dir), flush=True)
    try:
        while not stop_requested:
            for proc in stack.procs.values():
                if proc.popen and proc.popen.poll() is not None:
                    print(f"{proc.name} exited with code {proc.popen.returncode}; stopping")
                    stop_requested = True
            time.sleep(0.3)
    finally:
        print("stopping every service...", flush=True)
        stack.stop()
        print("stopped.", flush=True)


if __name__ == "__main__":
    main()
