"""The owner index against moto: markers written before documents, one owner's tasks newest
first without reading anyone else's, paging, status filter, tokens bound to their owner."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError

from common.errors import InvalidInput, Unavailable
from storage_svc import owners
from storage_svc.bucket import RULE_ID_PREFIX
from storage_svc.store import StoredTask, TaskStore
from tests.storage_svc.conftest import (
    BUCKET,
    StoreFactory,
    around_puts,
    document,
    record_puts,
    task_id,
)

ALICE = "alice@example.com"
BOB = "bob@example.com"


def _ids(tasks: list[StoredTask]) -> list[str]:
    return [t.task_id for t in tasks]


def _record(store: TaskStore, operation: str) -> list[dict[str, Any]]:
    """The parameters of every ``operation`` request the store's client sends from now on."""
    seen: list[dict[str, Any]] = []
    store.s3.client.meta.events.register(
        f"before-parameter-build.s3.{operation}", lambda **kw: seen.append(dict(kw["params"]))
    )
    return seen


async def _create(store: TaskStore, tid: str, owner: str, status: str = "pending") -> None:
    await store.put(tid, document(tid, status), if_none_match=True, owner=owner)


async def _all_pages(
    store: TaskStore, owner: str, size: int, status: str | None = None
) -> list[list[StoredTask]]:
    pages, token = [], ""
    while True:
        tasks, token = await store.list(size, token, status, owner=owner)
        pages.append(tasks)
        if not token:
            return pages
        assert len(pages) < 50, "paging does not end"


async def _keys(store: TaskStore, prefix: str) -> list[str]:
    answer = await store.s3.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for item in answer.get("Contents", [])]


def test_marker_names_sort_newest_first_and_hide_the_owner_id() -> None:
    older, newer = task_id(1, 1), task_id(0, 2, second=1)

    assert owners.marker_name(newer) < owners.marker_name(older)
    assert owners.marker_name(older) == f"{99999999999999 - 20251229120000:014d}_{older}"
    assert owners.owner_key("a/b") == hashlib.sha256(b"a/b").hexdigest()[:32]
    assert owners.marker_key("tasks/", owners.owner_key("a/b"), older) == (
        f"tasks/_owners/{owners.owner_key('a/b')}/{owners.marker_name(older)}"
    )
    assert owners.task_of_marker(owners.marker_name(older)) == older
    for foreign in ("x", f"00000000000000_{older}", f"{owners.marker_name(older)}.json"):
        assert owners.task_of_marker(foreign) is None


async def test_creating_with_an_owner_writes_an_encrypted_empty_marker_before_the_document(
    store: TaskStore,
) -> None:
    puts = record_puts(store.s3)
    tid = task_id()

    await _create(store, tid, ALICE)

    marker = f"tasks/_owners/{owners.owner_key(ALICE)}/{owners.marker_name(tid)}"
    assert puts == [marker, f"tasks/{tid}.json"]
    head = await store.s3.client.head_object(Bucket=BUCKET, Key=marker)
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentLength"] == 0
    assert ALICE not in marker


async def test_without_an_owner_nothing_is_indexed_and_updates_take_no_owner(
    store: TaskStore,
) -> None:
    tid = task_id()
    version = await store.put(tid, document(tid), if_none_match=True)

    with pytest.raises(InvalidInput, match="owner is given only when creating"):
        await store.put(tid, document(tid, "processing"), if_match=version, owner=ALICE)
    with pytest.raises(InvalidInput, match="owner is given only when creating"):
        await store.put(tid, document(tid, "processing"), owner=ALICE)
    assert await _keys(store, "tasks/_owners/") == []
    assert (await store.list(10, owner=ALICE)) == ([], "")


async def test_a_marker_whose_document_was_not_written_is_skipped_until_it_is(
    store: TaskStore, caplog: pytest.LogCaptureFixture
) -> None:
    tid = task_id()
    failing = [True]

    async def fail_the_document(key: str, send: Callable[[], Awaitable[str]]) -> str:
        if failing and key.endswith(".json"):
            raise ReadTimeoutError(endpoint_url="http://s3")
        return await send()

    around_puts(store.s3, fail_the_document)
    with pytest.raises(Unavailable):
        await _create(store, tid, ALICE)

    marker = owners.marker_key("tasks/", owners.owner_key(ALICE), tid)
    assert await _keys(store, "tasks/_owners/") == [marker]
    with caplog.at_level(logging.INFO, logger="storage_svc.store"):
        assert await store.list(10, owner=ALICE) == ([], "")
    assert any(tid in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)

    failing.clear()
    await _create(store, tid, ALICE)  # the caller's retry
    assert _ids((await store.list(10, owner=ALICE))[0]) == [tid]


@pytest.fixture
async def mixed(make_store: StoreFactory) -> tuple[TaskStore, list[tuple[str, str]]]:
    """Alice's tasks over several days and seconds, created out of order among Bob's; returns
    the store and Alice's (id, status), newest first."""
    store = await make_store(task_retention_days=7)
    alice = []
    layout = [(3, 5), (0, 2), (1, 9), (0, 7), (6, 1), (0, 0), (2, 3), (1, 4)]
    for n, (days_ago, second) in enumerate(layout):
        tid = task_id(days_ago, n, second=second)
        status = "error" if n % 3 == 0 else "completed"
        await _create(store, tid, ALICE, status)
        alice.append((tid, status))
        bob = task_id(days_ago, 100 + n, second=second)
        await _create(store, bob, BOB, status)
    return store, sorted(alice, reverse=True)


async def test_an_owner_sees_its_tasks_newest_first_across_seconds_and_days(
    mixed: tuple[TaskStore, list[tuple[str, str]]],
) -> None:
    store, alice = mixed

    tasks, token = await store.list(20, owner=ALICE)

    assert _ids(tasks) == [tid for tid, _ in alice]
    assert token == ""
    assert [json.loads(t.document)["task_id"] for t in tasks] == _ids(tasks)
    assert all(t.version for t in tasks)


@pytest.mark.parametrize("size", [1, 3, 8])
async def test_paging_visits_each_of_the_owners_tasks_once(
    mixed: tuple[TaskStore, list[tuple[str, str]]], size: int
) -> None:
    store, alice = mixed

    pages = await _all_pages(store, ALICE, size)

    assert [tid for page in pages for tid in _ids(page)] == [tid for tid, _ in alice]
    assert all(len(page) == size for page in pages[:-1])


async def test_the_status_filter_reads_the_owners_documents_only(
    mixed: tuple[TaskStore, list[tuple[str, str]]],
) -> None:
    store, alice = mixed
    gets = _record(store, "GetObject")

    pages = await _all_pages(store, ALICE, 2, "error")

    assert [tid for page in pages for tid in _ids(page)] == [
        tid for tid, status in alice if status == "error"
    ]
    assert {g["Key"] for g in gets} <= {f"tasks/{tid}.json" for tid, _ in alice}


async def test_the_status_filter_stops_at_the_scan_limit_and_goes_on_by_token(
    make_store: StoreFactory,
) -> None:
    store = await make_store(list_scan_limit=3, list_get_concurrency=2)
    ids = [task_id(0, n, second=n) for n in range(7)]
    for n, tid in enumerate(ids):
        await _create(store, tid, ALICE, "error" if n == 0 else "completed")
    gets = _record(store, "GetObject")

    tasks, token = await store.list(5, "", "error", owner=ALICE)

    assert (tasks, bool(token), len(gets)) == ([], True, 3)
    pages = await _all_pages(store, ALICE, 5, "error")
    assert [tid for page in pages for tid in _ids(page)] == [ids[0]]


async def test_another_owners_tasks_are_never_listed_nor_read(make_store: StoreFactory) -> None:
    store = await make_store()
    alice = [task_id(0, n, second=n) for n in range(10)]
    for n, tid in enumerate(alice):
        await _create(store, tid, ALICE)
        for m in range(5):
            other = task_id(0, 1000 + 10 * n + m, second=n)
            await _create(store, other, BOB)
        # Tasks of nobody and of the admin listing sit among them too.
        lone = task_id(0, 5000 + n, second=n)
        await store.put(lone, document(lone), if_none_match=True)
    gets, lists = _record(store, "GetObject"), _record(store, "ListObjectsV2")

    tasks, token = await store.list(20, owner=ALICE)

    assert (_ids(tasks), token) == (sorted(alice, reverse=True), "")
    assert sorted(g["Key"] for g in gets) == sorted(f"tasks/{tid}.json" for tid in alice)
    assert [entry["Prefix"] for entry in lists] == [f"tasks/_owners/{owners.owner_key(ALICE)}/"]


async def test_a_full_last_page_costs_one_list_and_ends_the_paging(store: TaskStore) -> None:
    ids = [task_id(0, n, second=n) for n in range(4)]
    for tid in ids:
        await _create(store, tid, ALICE)
    lists = _record(store, "ListObjectsV2")

    first, token = await store.list(2, owner=ALICE)
    second, last_token = await store.list(2, token, owner=ALICE)

    assert (_ids(first + second), last_token) == (ids[::-1], "")
    assert len(lists) == 2
    assert lists[0]["MaxKeys"] == 3


async def test_a_token_is_a_position_in_the_callers_own_listing(store: TaskStore) -> None:
    for n in range(3):
        await _create(store, task_id(0, n, second=n), ALICE)
        await _create(store, task_id(0, 10 + n, second=n), BOB)
    _, alices = await store.list(1, owner=ALICE)
    assert alices
    assert len((await store.list(5, alices, owner=ALICE))[0]) == 2
    # Bob holding Alice's token pages through Bob's own tasks, never Alice's.
    bobs, _ = await store.list(5, alices, owner=BOB)
    assert {t.task_id for t in bobs} <= {task_id(0, 10 + n, second=n) for n in range(3)}
    with pytest.raises(InvalidInput, match="page_token"):
        await store.list(1, "not-a-token", owner=ALICE)


async def test_owner_ids_of_any_characters_stay_apart_and_out_of_keys(store: TaskStore) -> None:
    names = ["a/b", "a", "a/", "../../etc", "ü/🙂 space", "tasks/_owners/x", ALICE]
    made = {}
    for n, owner in enumerate(names):
        tid = task_id(0, n, second=n)
        await _create(store, tid, owner)
        made[owner] = tid

    for owner, tid in made.items():
        assert _ids((await store.list(10, owner=owner))[0]) == [tid]
    keys = await _keys(store, "tasks/_owners/")
    assert len(keys) == len(names)
    for key in keys:
        folder, _, name = key.removeprefix("tasks/_owners/").partition("/")
        assert len(folder) == 32 and all(c in "0123456789abcdef" for c in folder)
        assert owners.task_of_marker(name) in made.values()


async def test_markers_older_than_the_retention_window_are_not_listed(
    make_store: StoreFactory,
) -> None:
    store = await make_store(task_retention_days=2)
    # Listings of all tasks look back retention + 1 days; so does an owner's.
    recent, old = task_id(3, 1), task_id(4, 2)
    for tid in (recent, old):
        await _create(store, tid, ALICE)

    assert await store.list(10, owner=ALICE) == (
        [StoredTask(recent, *(await store.get(recent)))],
        "",
    )


async def test_the_lifecycle_rule_expires_the_markers_with_the_documents(
    store: TaskStore,
) -> None:
    tid = task_id()
    await _create(store, tid, ALICE)

    answer = await store.s3.client.get_bucket_lifecycle_configuration(Bucket=BUCKET)
    rules = [r for r in answer["Rules"] if r["ID"].startswith(RULE_ID_PREFIX)]
    keys = await _keys(store, "")
    assert len(keys) == 2  # the document and its marker
    for key in keys:
        [rule] = [r for r in rules if key.startswith(r["Filter"]["Prefix"])]
        assert rule["Expiration"]["Days"] == store.settings.task_retention_days


async def test_the_tenant_filter_alone_or_with_the_status_and_owner(store: TaskStore) -> None:
    rows = [("acme", "error", ALICE), ("beta", "error", ALICE), ("acme", "completed", BOB)]
    ids = [task_id(0, n, second=n) for n in range(len(rows))]
    for tid, (tenant, status, owner) in zip(ids, rows, strict=True):
        await store.put(tid, document(tid, status, tenant=tenant), if_none_match=True, owner=owner)

    everyone, token = await store.list(10, "", tenant="acme")
    assert (_ids(everyone), token) == ([ids[2], ids[0]], "")
    assert _ids((await store.list(10, "", "error", tenant="acme"))[0]) == [ids[0]]
    assert _ids((await store.list(10, "", tenant="beta", owner=ALICE))[0]) == [ids[1]]
    assert _ids((await store.list(10, "", tenant="beta", owner=BOB))[0]) == []
