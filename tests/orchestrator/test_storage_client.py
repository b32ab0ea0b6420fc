"""The orchestrator's storage client over a real storage_svc and moto: a stored document that
does not parse as a task is skipped by listings and named by reads, never fatal to the rest."""

from __future__ import annotations

import json
import logging

import pytest

from common.errors import Internal
from orchestrator.storage_client import StorageClient, UnreadableTask
from storage_svc.store import TaskStore
from tests.orchestrator.factories import task_record
from tests.storage_svc.conftest import task_id


def too_deep(tid: str, depth: int = 220) -> bytes:
    """A task document whose one record nests ``depth`` levels: the json module writes and reads
    it, pydantic's JSON parser does not (it stops at 200 levels)."""
    record: object = "secret-content"
    for _ in range(depth):
        record = {"a": record}
    good = json.loads(task_record(task_id=tid).to_json())
    return json.dumps({**good, "data": [record]}).encode()


@pytest.fixture
async def mixed(storage: StorageClient, store: TaskStore) -> tuple[list[str], list[str]]:
    """Five tasks, newest first: three stored by the client, two that cannot be read back."""
    ids = [task_id(second=5 - n) for n in range(5)]
    good = [ids[0], ids[2], ids[4]]
    bad = [ids[1], ids[3]]
    for tid in good:
        await storage.create(task_record(task_id=tid))
    await store.put(bad[0], too_deep(bad[0]))
    # Valid JSON with a status, but not a task record (no username, data, ...).
    await store.put(bad[1], json.dumps({"task_id": bad[1], "status": "pending"}).encode())
    return good, bad


async def test_listing_skips_unreadable_documents_and_logs_their_ids(
    storage: StorageClient,
    mixed: tuple[list[str], list[str]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    good, bad = mixed
    with caplog.at_level(logging.WARNING, logger="orchestrator.storage_client"):
        page, token = await storage.list_tasks(10, "")
    assert [record.task_id for record, _ in page] == good
    assert token == ""
    assert all(version for _, version in page)
    for tid in bad:
        assert any(tid in r.getMessage() for r in caplog.records)
    assert "secret-content" not in caplog.text


async def test_a_status_filtered_listing_skips_them_too(
    storage: StorageClient, mixed: tuple[list[str], list[str]]
) -> None:
    good, _ = mixed
    page, _ = await storage.list_tasks(10, "", "pending")
    assert [record.task_id for record, _ in page] == good


async def test_pages_go_on_past_an_unreadable_document(
    storage: StorageClient, mixed: tuple[list[str], list[str]]
) -> None:
    good, _ = mixed
    first, token = await storage.list_tasks(2, "")
    second, token = await storage.list_tasks(2, token)
    third, token = await storage.list_tasks(2, token)
    listed = [record.task_id for record, _ in first + second + third]
    assert listed == good and token == ""


async def test_tasks_created_with_an_owner_are_listed_for_that_owner(
    storage: StorageClient,
) -> None:
    ids = [task_id(second=n) for n in range(3)]
    await storage.create(task_record(task_id=ids[0]), owner="alice")
    await storage.create(task_record(task_id=ids[1]), owner="bob")
    await storage.create(task_record(task_id=ids[2]), owner="alice")

    first, token = await storage.list_tasks(1, "", owner="alice")
    second, last = await storage.list_tasks(1, token, owner="alice")
    everyone, _ = await storage.list_tasks(10, "")

    assert [record.task_id for record, _ in first + second] == [ids[2], ids[0]]
    assert last == ""
    assert [record.task_id for record, _ in everyone] == ids[::-1]
    assert (await storage.list_tasks(10, "", "pending", owner="bob"))[0][0][0].task_id == ids[1]


async def test_reading_an_unreadable_document_names_the_task(
    storage: StorageClient, mixed: tuple[list[str], list[str]]
) -> None:
    _, bad = mixed
    for tid in bad:
        with pytest.raises(UnreadableTask) as caught:
            await storage.get(tid)
        assert isinstance(caught.value, Internal)
        assert caught.value.task_id == tid
        assert tid in caught.value.message
        assert "secret-content" not in caught.value.message
