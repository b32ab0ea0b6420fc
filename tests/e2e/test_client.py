"""The Python client, sync and async, against the whole platform as real processes: submit and
wait through the event stream, the result; a wait that falls back to polling when the gateway
refuses more streams; files up and down with their SHA-256; API keys; another caller's task."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from scripts.devstack import Stack
from tests.e2e.test_platform import PASSWORD, SECTIONS, SEED
from wealthai_client import (
    AsyncClient,
    BadInput,
    Client,
    Forbidden,
    NotFound,
    Unauthorized,
)
from wealthai_client.config import Config

pytestmark = pytest.mark.e2e

TASK = {"username": "user@example.com", "password": PASSWORD, "data": SEED}


def url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.ports.gateway}"


@pytest.fixture
def admin(stack: Stack) -> Iterator[Client]:
    with Client(config=Config(url(stack), stack.admin_key), timeout=20) as api:
        yield api


def client_key(admin: Client, name: str, tenant: str = "acme") -> str:
    return admin.create_key(name, tenant).key


def test_sync_client_submits_waits_on_events_and_reads_the_result(
    stack: Stack, admin: Client
) -> None:
    key = client_key(admin, "sync-ann")
    with Client(config=Config(url(stack), key), timeout=20) as api:
        task = api.submit(TASK)
        updates = list(api.watch(task.task_id, timeout=60))
        result = api.result(task.task_id)
    assert updates[0].source == "start"
    assert {u.source for u in updates[1:]} == {"events"}
    assert updates[-1].status.status == "completed" and updates[-1].status.progress == 100
    assert [s.name for s in updates[-1].status.sections] == SECTIONS
    assert (result.status, list(result.data)) == ("completed", SECTIONS)
    assert result.cost == pytest.approx(sum(s.cost for s in result.data.values()), abs=1e-9)
    assert result.cost > 0


async def test_async_client_submits_waits_on_events_and_reads_the_result(
    stack: Stack, admin: Client
) -> None:
    key = client_key(admin, "async-ann")
    async with AsyncClient(config=Config(url(stack), key), timeout=20) as api:
        task = await api.submit(TASK, idempotency_key="async-once")
        again = await api.submit(TASK, idempotency_key="async-once")
        sources = [u.source async for u in api.watch(task.task_id, timeout=60)]
        final = await api.wait(task.task_id, timeout=30)
        result = await api.result(task.task_id)
        listed = await api.tasks(limit=5)
    assert again.task_id == task.task_id
    assert sources[0] == "start" and "events" in sources and "polling" not in sources
    assert final.status == "completed"
    assert result.cost == pytest.approx(sum(s.cost for s in result.data.values()), abs=1e-9)
    assert [t.task_id for t in listed.tasks] == [task.task_id]


@contextlib.asynccontextmanager
async def streams_held(stack: Stack, key: str, task_id: str, count: int) -> AsyncIterator[None]:
    """``count`` event streams of ``task_id`` held open with ``key``: the caller's quota."""
    async with (
        httpx.AsyncClient(
            base_url=url(stack), headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as raw,
        AsyncExitStack() as held,
    ):
        for _ in range(count):
            response = await held.enter_async_context(raw.stream("GET", f"/task/{task_id}/events"))
            assert response.status_code == 200, response.status_code
        refused = await raw.get(f"/task/{task_id}/events")
        assert refused.status_code == 429, refused.text
        yield


async def test_waits_fall_back_to_polling_when_the_gateway_refuses_more_streams(
    stack: Stack, admin: Client, sim: httpx.AsyncClient
) -> None:
    # Slow enough that the tasks still run while their streams are opened and held.
    slow = {"latency_median_s": 3.0, "latency_sigma": 0.1}
    (await sim.patch("/_sim/config", json=slow)).raise_for_status()
    key = client_key(admin, "streams-carl")
    config = Config(url(stack), key)
    async with AsyncClient(config=config, timeout=20, poll_interval=0.2) as api:
        first = await api.submit(TASK)
        # The gateway's default: 20 streams per principal (they end with their task).
        async with streams_held(stack, key, first.task_id, 20):
            seen = [u async for u in api.watch(first.task_id, timeout=60)]

    with Client(config=config, timeout=20, poll_interval=0.2) as sync_api:
        second = sync_api.submit(TASK)
        async with streams_held(stack, key, second.task_id, 20):
            sync_seen = await asyncio.to_thread(
                lambda: list(sync_api.watch(second.task_id, timeout=60))
            )
    for updates in (seen, sync_seen):
        assert updates[-1].status.status == "completed"
        assert updates[0].source == "start"
        assert {u.source for u in updates[1:]} == {"polling"}


def test_files_go_up_and_down_streamed_with_their_sha256(
    stack: Stack, admin: Client, tmp_path: Path
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = hashlib.sha256(data).hexdigest()
    source = tmp_path / "holdings 2026.bin"
    source.write_bytes(data)
    sent: list[tuple[int, int | None]] = []
    received: list[tuple[int, int | None]] = []
    with Client(config=Config(url(stack), client_key(admin, "files-dora")), timeout=30) as api:
        stored = api.upload(source, progress=lambda done, total: sent.append((done, total)))
        assert (stored.name, stored.size, stored.sha256) == (source.name, len(data), digest)
        assert sent[-1] == (len(data), len(data)) and len(sent) > 3
        assert stored.file_id in [f.file_id for f in api.files().files]
        got = api.download(
            stored.file_id, tmp_path / "back", progress=lambda d, t: received.append((d, t))
        )
        assert got.path.read_bytes() == data and got.sha256 == digest
        assert received[-1] == (len(data), len(data))
        assert api.file_url(stored.file_id, expires_s=60).url.startswith("http")
        api.delete_file(stored.file_id)
        with pytest.raises(NotFound):
            api.download(stored.file_id, tmp_path / "gone")
    assert not (tmp_path / "gone").exists()


async def test_async_files_go_up_and_down_with_their_sha256(
    stack: Stack, admin: Client, tmp_path: Path
) -> None:
    data = os.urandom(2 * 1024 * 1024 + 5)
    source = tmp_path / "report.csv"
    source.write_bytes(data)
    key = client_key(admin, "files-ed")
    async with AsyncClient(config=Config(url(stack), key), timeout=30) as api:
        stored = await api.upload(source, temporary=True)
        got = await api.download(stored.file_id, tmp_path / "copy.csv")
        await api.delete_file(stored.file_id)
    assert stored.temporary and stored.content_type == "text/csv"
    assert got.path.read_bytes() == data
    assert got.sha256 == stored.sha256 == hashlib.sha256(data).hexdigest()


def test_keys_are_created_listed_and_revoked_by_admins_only(stack: Stack, admin: Client) -> None:
    created = admin.create_key("keys-fay", "globex")
    assert created.principal_id == "globex/keys-fay" and created.key.startswith("wak_")
    assert created.key_id in [k.key_id for k in admin.keys().keys]
    with Client(config=Config(url(stack), created.key)) as fay:
        assert fay.tasks().count == 0
        with pytest.raises(Forbidden):
            fay.keys()
        revoked = admin.revoke_key(created.key_id)
        assert revoked.revoked_at is not None
        with pytest.raises(Unauthorized):  # at once: the same gateway revoked it
            fay.tasks()
    listed = {k.key_id: k for k in admin.keys().keys}
    assert listed[created.key_id].revoked_at == revoked.revoked_at


async def test_another_callers_task_is_not_found(stack: Stack, admin: Client) -> None:
    owner = client_key(admin, "own-gil", "acme")
    other = client_key(admin, "own-hal", "globex")
    with Client(config=Config(url(stack), owner)) as api:
        task = api.submit(TASK)
    with Client(config=Config(url(stack), other)) as api:
        for call in (api.status, api.result, api.cancel, api.retry, api.wait):
            with pytest.raises(NotFound):
                call(task.task_id)
    async with AsyncClient(config=Config(url(stack), other)) as aapi:
        with pytest.raises(NotFound):
            await aapi.status(task.task_id)
        with pytest.raises(NotFound):
            [u async for u in aapi.watch(task.task_id)]


def test_the_gateways_own_refusals(stack: Stack, admin: Client) -> None:
    with pytest.raises(BadInput, match="matches no section") as caught:
        admin.submit({"username": "u@example.com", "password": PASSWORD, "data": [{"x": 1}]})
    assert caught.value.status == 422
    unknown = Config(url(stack), "wak_000000000000_" + "x" * 43)
    with Client(config=unknown) as api, pytest.raises(Unauthorized):
        api.tasks()
