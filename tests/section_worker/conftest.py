"""Fixtures for the section worker tests: a real simulator on loopback, platform clients,
in-process workers on port 0 reached through real gRPC channels, and a real storage_svc serving
files over moto for the jobs that read and write files."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest

from common.channels import open_channel
from common.grpc_server import ServiceHost
from common.tls import Role
from section_worker.files import FileClient
from section_worker.jobs import JobRunner
from section_worker.platform_client import Credentials, PlatformClient
from section_worker.servicer import build_host
from section_worker.settings import WorkerSettings
from simulator.server import SimulatorServer
from simulator.settings import SimulatorSettings
from storage_svc.file_servicer import FILE_SERVICE_NAME, FileServicer
from storage_svc.files import FileStore
from tests.storage_svc import conftest as storage_svc_fixtures
from wealthai.storage.v1 import files_pb2_grpc
from wealthai.worker.v1 import worker_pb2_grpc

# storage_svc's fixtures, here under the names pytest finds them by.
moto_url = storage_svc_fixtures.moto_url
aws_env = storage_svc_fixtures.aws_env
s3_url = storage_svc_fixtures.s3_url
aws_session = storage_svc_fixtures.aws_session
make_settings = storage_svc_fixtures.make_settings
make_store = storage_svc_fixtures.make_store
store = storage_svc_fixtures.store
clock = storage_svc_fixtures.clock
file_store = storage_svc_fixtures.files

PASSWORD = "correct-horse-battery"
CREDENTIALS = Credentials("acme", "alice@example.com", PASSWORD)
ASSET = "c7b75809-063a-4f9c-80a8-496e88ed4894"
FAILING_ASSET = "0edec5d8-a1db-44c7-bdf5-3b028be0efc6"


@dataclass
class Sim:
    """The simulator the worker talks to, with its control endpoints at hand."""

    url: str
    http: httpx.AsyncClient

    async def stats(self) -> dict[str, Any]:
        return dict((await self.http.get("/_sim/stats")).json())

    async def configure(self, **changes: Any) -> None:
        answer = await self.http.patch("/_sim/config", json=changes)
        assert answer.status_code == 200, answer.text

    async def reset(self) -> None:
        assert (await self.http.post("/_sim/reset")).status_code == 200

    def total_calls(self, stats: dict[str, Any]) -> int:
        return sum(int(n) for n in stats["calls"].values())

    async def token(self) -> str:
        """An access token for CREDENTIALS, fetched as the orchestrator's worker would."""
        answer = await self.http.get(
            f"/accesstoken/{CREDENTIALS.tenant}",
            auth=(CREDENTIALS.username, CREDENTIALS.password),
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    """A simulator that knows one password and answers after ~30 ms."""
    settings = SimulatorSettings(
        port=0,
        password=PASSWORD,
        latency_median_s=0.03,
        latency_sigma=0.0,
        fail_assets=[FAILING_ASSET],
        seed=3,
    )
    server = SimulatorServer(settings)
    url = await server.start()
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        yield Sim(url, http)
    await server.stop()


@pytest.fixture
async def token(sim: Sim) -> str:
    """A valid access token of CREDENTIALS (the simulator's default lifetime, an hour)."""
    return await sim.token()


def worker_settings(sim: Sim, overrides: dict[str, Any]) -> WorkerSettings:
    """Settings of a worker of the tests against ``sim``, fast polls and retries; ``overrides``
    replace them."""
    values: dict[str, Any] = {
        "port": 0,
        "platform_url": sim.url,
        "poll_initial_s": 0.02,
        "poll_max_s": 0.05,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "max_retries": 2,
        "request_timeout_s": 2.0,
        "job_timeout_s": 5.0,
        "shutdown_grace_s": 0.5,
        # Unit tests of the worker itself; tests/common/test_tls.py covers mutual TLS.
        "tls_mode": "plaintext",
    }
    values.update(overrides)
    return WorkerSettings(**values)


MakeClient = Callable[..., PlatformClient]


@pytest.fixture
async def make_client(sim: Sim) -> AsyncIterator[MakeClient]:
    """Factory: a platform client for the simulator (settings overridable); closed after."""
    made: list[PlatformClient] = []

    def make(**overrides: Any) -> PlatformClient:
        client = PlatformClient(worker_settings(sim, overrides))
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


@pytest.fixture
async def file_client(file_store: FileStore) -> AsyncIterator[FileClient]:
    """The worker's client of a real storage_svc serving ``file_store`` on a free port."""
    host = ServiceHost(file_store.settings, "storage_svc", Role.STORAGE)
    host.add(
        files_pb2_grpc.add_FileServiceServicer_to_server,
        FileServicer(file_store),
        FILE_SERVICE_NAME,
    )
    port = await host.start()
    client = FileClient(f"127.0.0.1:{port}")
    yield client
    await client.close()
    await host.server.stop(None)


@dataclass
class Worker:
    settings: WorkerSettings
    runner: JobRunner
    host: ServiceHost
    stub: Any  # worker_pb2_grpc.SectionWorkerServiceStub


StartWorker = Callable[..., Awaitable[Worker]]


@pytest.fixture
async def start_worker(sim: Sim) -> AsyncIterator[StartWorker]:
    """Factory: an in-process worker on a free port and a stub on a real channel; ``files``
    (a :class:`FileClient`) gives its jobs storage_svc's files."""
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def start(files: FileClient | None = None, **overrides: Any) -> Worker:
        settings = worker_settings(sim, overrides)
        client = PlatformClient(settings)
        runner = JobRunner(client, settings, files=files)
        host = build_host(settings, runner, client)
        port = await host.start()
        channel: grpc.aio.Channel = open_channel(f"127.0.0.1:{port}", None, Role.WORKER)

        async def cleanup() -> None:
            await channel.close()
            await host.stop()
            await client.aclose()

        cleanups.append(cleanup)
        return Worker(settings, runner, host, worker_pb2_grpc.SectionWorkerServiceStub(channel))

    yield start
    for cleanup in reversed(cleanups):
        await cleanup()


@pytest.fixture
async def worker(start_worker: StartWorker) -> Worker:
    return await start_worker()
