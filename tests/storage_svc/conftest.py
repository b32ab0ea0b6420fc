"""Fixtures for storage_svc: real S3 servers on loopback, stores and a gRPC server.

Most tests run on moto (in-process, reset in milliseconds between tests, and what the fault
tests patch responses of). moto checks a conditional write's precondition and then writes in two
steps, so two of many concurrent writers can both win; the compare-and-swap races therefore run
on SeaweedFS (``atomic_store``), whose conditional writes are atomic like S3's. One server of each
runs per session; the AWS credentials the client finds are fakes set in the environment for
that test only.
"""

from __future__ import annotations

import json
import secrets
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
from scripts import seaweedfs
from scripts.devstack import seaweedfs_server
from storage_svc.file_servicer import FILE_SERVICE_NAME, FileServicer
from storage_svc.files import FileStore
from storage_svc.objects import ObjectStore
from storage_svc.s3calls import S3Calls
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


# One PutObject of a small body past botocore: (key, send it) -> its version.
AroundPut = Callable[[str, Callable[[], Awaitable[str]]], Awaitable[str]]


def around_puts(s3: S3Calls, around: AroundPut) -> None:
    """Runs every PutObject of a small body ``s3`` sends from now on through ``around``, which
    may fail it before it goes, or after it landed, as botocore's hooks do for its own calls."""
    puts = s3._puts
    assert puts is not None, "open the store first"
    send = puts.put

    async def put(key: str, body: bytes, headers: dict[str, str]) -> str:
        return await around(key, lambda: send(key, body, headers))

    puts.put = put  # type: ignore[method-assign]


def record_puts(s3: S3Calls) -> list[str]:
    """The key of every PutObject of a small body ``s3`` sends from now on."""
    keys: list[str] = []

    async def record(key: str, send: Callable[[], Awaitable[str]]) -> str:
        keys.append(key)
        return await send()

    around_puts(s3, record)
    return keys


def document(tid: str, status: str = "pending", **fields: Any) -> bytes:
    """A task document for ``tid``."""
    return json.dumps({"task_id": tid, "status": status, **fields}).encode()


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def seaweedfs_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SeaweedFS S3 server (``weed mini``) on free ports, its data in a temporary folder."""
    data = tmp_path_factory.mktemp("seaweedfs")
    with open(data / "weed.log", "wb") as log, seaweedfs_server(data, log) as url:
        yield url


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


@pytest.fixture
async def atomic_store(
    make_settings: SettingsFactory, seaweedfs_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[TaskStore]:
    """A store on SeaweedFS, in a bucket of its own: for the compare-and-swap races."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.SECRET_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    settings = make_settings(s3_endpoint_url=seaweedfs_url, s3_bucket=f"cas-{secrets.token_hex(6)}")
    # A session of its own: a session keeps the credentials it first found (moto's fakes).
    store = TaskStore(settings, clock=lambda: NOW, session=aioboto3.Session())
    await store.start()
    try:
        await store.ensure_bucket()
        yield store
    finally:
        await store.close()


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
