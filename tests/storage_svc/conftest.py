"""Fixtures for storage_svc: a real moto S3 server on loopback, stores and a gRPC server.

One moto server runs per session and is reset before every test that uses it; the AWS
credentials the client finds are fakes set in the environment for that test only.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aioboto3
import grpc
import httpx
import pytest
from moto.server import ThreadedMotoServer

from common import task_ids
from common.grpc_server import ServiceHost
from common.tls import Role
from storage_svc.file_servicer import FILE_SERVICE_NAME, FileServicer
from storage_svc.files import FileStore
from storage_svc.objects import ObjectStore
from storage_svc.servicer import SERVICE_NAME, StorageServicer
from storage_svc.settings import StorageSettings
from storage_svc.store import TaskStore
from tests.helpers import free_port
from wealthai.storage.v1 import files_pb2_grpc, storage_pb2_grpc

# A fixed "now" for the stores of these tests, so task ids can be crafted on known days.
NOW = datetime(2025, 12, 30, 12, 0, 0, tzinfo=UTC)
BUCKET = "test-wealth-tasks"


def task_id(days_ago: int = 0, n: int = 0, *, second: int = 0) -> str:
    """A task id created ``days_ago`` days before NOW; ``n`` and ``second`` make it unique."""
    created = NOW - timedelta(days=days_ago) + timedelta(seconds=second)
    random_part = f"{n:08x}"
    return task_ids.new(created, random_part[:2], random_part[2:])


def document(tid: str, status: str = "pending", **fields: Any) -> bytes:
    """A task document for ``tid``."""
    return json.dumps({"task_id": tid, "status": status, **fields}).encode()


class _OneRequestAtATime:
    """WSGI wrapper running one request at a time.

    moto checks If-Match / If-None-Match and then writes in two steps, so under thread
    switching two conditional writes can both pass the check (seen with 10 writers). Real S3
    makes check-and-write atomic; serialising requests gives moto that same guarantee, so the
    race tests test our code, not moto's threading.
    """

    def __init__(self, app: Any) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
        with self._lock:
            return list(self._app(environ, start_response))


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    wsgi = server._server
    assert wsgi is not None
    wsgi.app = _OneRequestAtATime(wsgi.app)
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Fake credentials, and nothing of the developer's own AWS set-up."""
    for var in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        # Read by StorageSettings as the seed's names of bucket, prefix and region.
        "AWS_REGION",
        "S3_BUCKET_NAME",
        "S3_PREFIX",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def s3_url(moto_url: str, aws_env: None) -> str:
    """The moto endpoint, emptied for this test."""
    httpx.post(f"{moto_url}/moto-api/reset").raise_for_status()
    return moto_url


@pytest.fixture(scope="session")
def aws_session() -> aioboto3.Session:
    """One session for every store of the run: loading the S3 model once saves ~0.2 s a test."""
    return aioboto3.Session()


SettingsFactory = Callable[..., StorageSettings]
StoreFactory = Callable[..., Awaitable[TaskStore]]


@pytest.fixture
def make_settings(s3_url: str) -> SettingsFactory:
    """Settings pointing at moto with quick retries; keyword arguments override."""

    def make(**overrides: Any) -> StorageSettings:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "s3_endpoint_url": s3_url,
            "s3_bucket": BUCKET,
            "s3_max_attempts": 2,
            "s3_backoff_base_s": 0.01,
            "s3_backoff_max_s": 0.05,
            "s3_connect_timeout_s": 2.0,
            "s3_read_timeout_s": 5.0,
            "shutdown_grace_s": 1.0,
            # Unit tests of storage itself; tests/common/test_tls.py covers mutual TLS.
            "tls_mode": "plaintext",
            # Listing walks back retention + 1 days; a short window keeps tests quick.
            "task_retention_days": 5,
        }
        values.update(overrides)
        return StorageSettings(**values)

    return make


@pytest.fixture
async def make_store(
    make_settings: SettingsFactory, aws_session: aioboto3.Session
) -> AsyncIterator[StoreFactory]:
    """Opens stores (bucket prepared unless ``prepare=False``) and closes them afterwards."""
    opened: list[TaskStore] = []

    async def make(*, prepare: bool = True, **overrides: Any) -> TaskStore:
        store = TaskStore(make_settings(**overrides), clock=lambda: NOW, session=aws_session)
        await store.start()
        opened.append(store)
        if prepare:
            await store.ensure_bucket()
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> TaskStore:
    return await make_store()


@pytest.fixture
def objects(store: TaskStore) -> ObjectStore:
    """The namespaced objects of ``store``'s bucket, over its client."""
    return ObjectStore(store.s3)


HostFactory = Callable[..., Awaitable[grpc.aio.Channel]]


@pytest.fixture
async def serve() -> AsyncIterator[HostFactory]:
    """Serves a store (and, given a FileStore, its files) over gRPC on a free port; returns a
    channel to it."""
    hosts: list[ServiceHost] = []
    channels: list[grpc.aio.Channel] = []

    async def start(store: TaskStore | FileStore) -> grpc.aio.Channel:
        host = ServiceHost(store.settings, "storage_svc", Role.STORAGE)
        if isinstance(store, FileStore):
            host.add(
                files_pb2_grpc.add_FileServiceServicer_to_server,
                FileServicer(store),
                FILE_SERVICE_NAME,
            )
        else:
            host.add(
                storage_pb2_grpc.add_StorageServiceServicer_to_server,
                StorageServicer(store, ObjectStore(store.s3)),
                SERVICE_NAME,
            )
        port = await host.start()
        hosts.append(host)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        return channel

    yield start
    for channel in channels:
        await channel.close()
    for host in hosts:
        await host.server.stop(None)


@pytest.fixture
async def stub(store: TaskStore, serve: HostFactory) -> Any:
    """A StorageService stub talking to ``store`` through a real gRPC server."""
    return storage_pb2_grpc.StorageServiceStub(await serve(store))


class Clock:
    """A settable UTC clock for the file store: tests move time to expire files."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def files(store: TaskStore, clock: Clock) -> FileStore:
    """The files of ``store``'s bucket, over its client, with the bucket's file rules put."""
    file_store = FileStore(store.s3, clock=clock)
    await file_store.prepare()
    return file_store


@pytest.fixture
async def file_stub(files: FileStore, serve: HostFactory) -> Any:
    """A FileService stub talking to ``files`` through a real gRPC server."""
    channel = await serve(files)
    return files_pb2_grpc.FileServiceStub(channel)
