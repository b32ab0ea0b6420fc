"""TaskStore against real S3 servers: writes, compare-and-swap, deletes (on moto; the race on
SeaweedFS, whose conditional writes are atomic)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
from botocore.exceptions import ReadTimeoutError

from common.errors import Conflict, InvalidInput, NotFound, Unavailable
from storage_svc.store import TaskStore
from tests.helpers import free_port
from tests.storage_svc.conftest import (
    BUCKET,
    StoreFactory,
    around_puts,
    document,
    record_puts,
    task_id,
)


async def test_put_then_get_returns_the_document_stored_encrypted(store: TaskStore) -> None:
    tid = task_id()
    body = document(tid, "pending", username="user@example.com")

    version = await store.put(tid, body, if_none_match=True)

    assert await store.get(tid) == (body, version)
    head = await store.s3.client.head_object(Bucket=BUCKET, Key=f"tasks/{tid}.json")
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentType"] == "application/json"
    assert head["ETag"] == version


async def test_unconditional_put_replaces_and_changes_the_version(store: TaskStore) -> None:
    tid = task_id()
    first = await store.put(tid, document(tid, "pending"))
    second = await store.put(tid, document(tid, "processing"))

    assert second != first
    stored, version = await store.get(tid)
    assert json.loads(stored)["status"] == "processing"
    assert version == second


async def test_creating_the_same_task_twice_conflicts(store: TaskStore) -> None:
    tid = task_id()
    await store.put(tid, document(tid), if_none_match=True)

    with pytest.raises(Conflict, match=f"task {tid} already exists"):
        await store.put(tid, document(tid, "processing"), if_none_match=True)
    assert json.loads((await store.get(tid))[0])["status"] == "pending"


async def test_write_with_a_stale_version_conflicts(store: TaskStore) -> None:
    tid = task_id()
    old = await store.put(tid, document(tid, "pending"), if_none_match=True)
    new = await store.put(tid, document(tid, "processing"), if_match=old)

    with pytest.raises(Conflict, match="changed by another writer") as caught:
        await store.put(tid, document(tid, "completed"), if_match=old)
    assert old in caught.value.message
    assert await store.get(tid) == (document(tid, "processing"), new)


async def test_write_over_a_deleted_task_conflicts(store: TaskStore) -> None:
    tid = task_id()
    version = await store.put(tid, document(tid), if_none_match=True)
    await store.delete(tid)

    with pytest.raises(Conflict, match="no longer exists"):
        await store.put(tid, document(tid, "processing"), if_match=version)


@pytest.mark.parametrize("round_", range(3))
async def test_of_concurrent_writers_with_one_version_exactly_one_wins(
    atomic_store: TaskStore, round_: int
) -> None:
    store = atomic_store
    tid = task_id(n=round_)
    await store.put(tid, document(tid), if_none_match=True)
    _, version = await store.get(tid)
    bodies = [document(tid, "processing", writer=w) for w in range(10)]

    results = await asyncio.gather(
        *(store.put(tid, body, if_match=version) for body in bodies), return_exceptions=True
    )

    winners = [i for i, r in enumerate(results) if isinstance(r, str)]
    assert len(winners) == 1, results
    losers = [r for r in results if not isinstance(r, str)]
    assert all(isinstance(r, Conflict) for r in losers), losers
    assert await store.get(tid) == (bodies[winners[0]], results[winners[0]])


async def test_write_landing_before_its_answer_is_lost_is_not_a_conflict(
    store: TaskStore,
) -> None:
    tid = task_id()
    version = await store.put(tid, document(tid), if_none_match=True)
    lost = []

    async def lose_first_answer(_: str, send: Callable[[], Awaitable[str]]) -> str:
        version = await send()
        if not lost:
            lost.append(True)
            raise ReadTimeoutError(endpoint_url="http://s3")
        return version

    around_puts(store.s3, lose_first_answer)
    body = document(tid, "processing")

    new_version = await store.put(tid, body, if_match=version)

    assert lost == [True]
    assert await store.get(tid) == (body, new_version)


async def test_get_and_conditional_delete_of_a_missing_task_are_not_found(
    store: TaskStore,
) -> None:
    tid = task_id()
    with pytest.raises(NotFound, match=f"task {tid} not found"):
        await store.get(tid)
    with pytest.raises(NotFound):
        await store.delete(tid, if_match='"0123"')


async def test_delete_removes_the_document_and_honours_if_match(store: TaskStore) -> None:
    tid = task_id()
    version = await store.put(tid, document(tid), if_none_match=True)

    with pytest.raises(Conflict):
        await store.delete(tid, if_match='"not-the-version"')
    assert (await store.get(tid))[1] == version

    await store.delete(tid, if_match=version)
    with pytest.raises(NotFound):
        await store.get(tid)


MALFORMED = [
    ("task_1", None, "malformed"),
    ("task_20251230182721_01E09305", None, "malformed"),
    ("../task_20251230182721_01e09305", None, "malformed"),
    # Digits of another script, which \d (and strptime) would take.
    (
        "task_" + "".join(chr(0x0660 + int(d)) for d in "20251230182721") + "_01e09305",
        None,
        "malformed",
    ),
    (task_id(), b"\xff\xfe", "not UTF-8"),
    (task_id(), b"{not json", "not valid JSON"),
    (task_id(), b"[1, 2]", "must be a JSON object"),
    (task_id(), json.dumps({"task_id": task_id(n=9), "status": "x"}).encode(), "must equal"),
    (task_id(), json.dumps({"task_id": task_id(), "status": 3}).encode(), "string 'status'"),
    (task_id(), json.dumps({"task_id": task_id()}).encode(), "string 'status'"),
]


async def test_malformed_ids_and_documents_are_refused_before_anything_is_written(
    store: TaskStore,
) -> None:
    for tid, body, problem in MALFORMED:
        with pytest.raises(InvalidInput, match=problem):
            await store.put(tid, body if body is not None else document(tid))
    # Well formed, but naming a second that never was: no task can have that id.
    with pytest.raises(NotFound):
        await store.put("task_20251399182721_01e09305", document("task_20251399182721_01e09305"))
    answer = await store.s3.client.list_objects_v2(Bucket=BUCKET)
    assert answer.get("KeyCount", 0) == 0


async def test_two_preconditions_at_once_are_refused(store: TaskStore) -> None:
    tid = task_id()
    with pytest.raises(InvalidInput, match="at most one precondition"):
        await store.put(tid, document(tid), if_match='"abc"', if_none_match=True)


async def test_a_write_and_a_delete_touch_the_task_document_alone(store: TaskStore) -> None:
    puts, deletes = record_puts(store.s3), _count_calls(store, "DeleteObject")
    tid = task_id()

    version = await store.put(tid, document(tid), if_none_match=True)
    version = await store.put(tid, document(tid, "completed"), if_match=version)
    await store.delete(tid, if_match=version)

    assert puts == [f"tasks/{tid}.json"] * 2
    assert deletes == [f"tasks/{tid}.json"]
    answer = await store.s3.client.list_objects_v2(Bucket=BUCKET)
    assert answer.get("KeyCount", 0) == 0


async def test_s3_down_is_unavailable_with_a_clear_message(make_store: StoreFactory) -> None:
    store = await make_store(
        prepare=False,
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        s3_connect_timeout_s=0.2,
        s3_read_timeout_s=0.2,
    )
    tid = task_id()

    with pytest.raises(Unavailable, match="S3 unavailable: GetObject failed") as caught:
        await store.get(tid)
    assert "connect" in caught.value.message.lower()
    with pytest.raises(Unavailable, match="S3 unavailable"):
        await store.put(tid, document(tid))
    with pytest.raises(Unavailable, match="S3 unavailable"):
        await store.ensure_bucket()


def _count_calls(store: TaskStore, operation: str) -> list[str]:
    """Records every ``operation`` request the store's client sends."""
    seen: list[str] = []
    store.s3.client.meta.events.register(
        f"before-parameter-build.s3.{operation}",
        lambda **kw: seen.append(kw["params"].get("Key", "")),
    )
    return seen
