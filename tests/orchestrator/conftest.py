"""Fixtures for the orchestrator's tests that need a real storage_svc: moto in server mode and
the storage service on loopback, reached through the orchestrator's own client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from common.grpc_server import ServiceHost
from common.tls import Role
from orchestrator import membership as membership_module
from orchestrator.storage_client import StorageClient
from storage_svc.file_servicer import FILE_SERVICE_NAME, FileServicer
from storage_svc.files import FileStore
from storage_svc.objects import ObjectStore
from storage_svc.servicer import SERVICE_NAME, StorageServicer
from storage_svc.store import TaskStore
from tests.orchestrator.fakes import FakeClock
from tests.storage_svc import conftest as storage_svc_fixtures
from wealthai.storage.v1 import files_pb2_grpc, storage_pb2_grpc

# storage_svc's fixtures, here under the names pytest finds them by.
moto_url = storage_svc_fixtures.moto_url
aws_env = storage_svc_fixtures.aws_env
s3_url = storage_svc_fixtures.s3_url
aws_session = storage_svc_fixtures.aws_session
make_settings = storage_svc_fixtures.make_settings
make_store = storage_svc_fixtures.make_store
store = storage_svc_fixtures.store


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Time as the membership sees it (how long a lease stayed the same), moved by the test."""
    fake = FakeClock()
    monkeypatch.setattr(membership_module, "time", fake)
    return fake


@pytest.fixture
async def file_store(store: TaskStore) -> FileStore:
    """The files of ``store``'s bucket, with the bucket's file rules put."""
    files = FileStore(store.s3)
    await files.prepare()
    return files


@pytest.fixture
async def storage(store: TaskStore, file_store: FileStore) -> AsyncIterator[StorageClient]:
    """The orchestrator's client of a real storage_svc over ``store`` and its files."""
    host = ServiceHost(store.settings, "storage_svc", Role.STORAGE)
    host.add(
        storage_pb2_grpc.add_StorageServiceServicer_to_server,
        StorageServicer(store, ObjectStore(store.s3)),
        SERVICE_NAME,
    )
    host.add(
        files_pb2_grpc.add_FileServiceServicer_to_server,
        FileServicer(file_store),
        FILE_SERVICE_NAME,
    )
    port = await host.start()
    client = StorageClient(f"127.0.0.1:{port}")
    yield client
    await client.close()
    await host.server.stop(None)
