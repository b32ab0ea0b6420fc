"""TaskStore.list against moto: newest first across days, paging, status filter, costs."""

from __future__ import annotations

import json

import pytest

from common.errors import InvalidInput
from storage_svc import listing
from storage_svc.documents import encode_objects_token
from storage_svc.store import StoredTask, TaskStore
from tests.storage_svc.conftest import BUCKET, StoreFactory, document, task_id

RETENTION_DAYS = 7
# (days before NOW, status). Listing looks back retention + 1 days: day 8 is listed, 12 is not
# (the lifecycle rule would have expired it).
LAYOUT = [
    (0, "completed"),
    (0, "processing"),
    (0, "completed"),
    (1, "error"),
    (1, "completed"),
    (4, "pending"),
    (6, "completed"),
    (8, "error"),
    (12, "completed"),
]
TOO_OLD = task_id(12, 8, second=8)


async def _fill(store: TaskStore) -> list[tuple[str, str]]:
    """Stores the layout (oldest last in the listing); returns (id, status) newest first."""
    made = []
    for n, (days_ago, status) in enumerate(LAYOUT):
        tid = task_id(days_ago, n, second=n)
        await store.put(tid, document(tid, status))
        made.append((tid, status))
    return sorted((m for m in made if m[0] != TOO_OLD), reverse=True)


async def _all_pages(
    store: TaskStore, size: int, status: str | None = None
) -> list[list[StoredTask]]:
    pages, token = [], ""
    while True:
        tasks, token = await store.list(size, token, status)
        pages.append(tasks)
        if not token:
            return pages
        assert len(pages) < 50, "paging does not end"


def _ids(tasks: list[StoredTask]) -> list[str]:
    return [t.task_id for t in tasks]


@pytest.fixture
async def filled(make_store: StoreFactory) -> tuple[TaskStore, list[tuple[str, str]]]:
    store = await make_store(task_retention_days=RETENTION_DAYS, list_get_concurrency=4)
    return store, await _fill(store)


async def test_tasks_come_newest_first_across_days_within_retention(
    filled: tuple[TaskStore, list[tuple[str, str]]],
) -> None:
    store, expected = filled

    tasks, token = await store.list(100)

    assert _ids(tasks) == [tid for tid, _ in expected]
    assert token == ""
    assert [json.loads(t.document)["task_id"] for t in tasks] == _ids(tasks)
    assert all(t.version.strip('"') for t in tasks)


@pytest.mark.parametrize("size", [1, 3, 8])
async def test_paging_visits_every_task_once_in_order(
    filled: tuple[TaskStore, list[tuple[str, str]]], size: int
) -> None:
    store, expected = filled

    pages = await _all_pages(store, size)

    assert [tid for page in pages for tid in _ids(page)] == [tid for tid, _ in expected]
    assert all(len(page) == size for page in pages[:-1])
    assert 0 < len(pages[-1]) <= size


async def test_days_longer_than_one_list_request_are_followed_to_the_end(
    filled: tuple[TaskStore, list[tuple[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, expected = filled
    monkeypatch.setattr(listing, "LIST_PAGE_KEYS", 1)
    continued: list[bool] = []
    store.s3.client.meta.events.register(
        "before-parameter-build.s3.ListObjectsV2",
        lambda **kw: continued.append("ContinuationToken" in kw["params"]),
    )

    pages = await _all_pages(store, 2)

    assert [tid for page in pages for tid in _ids(page)] == [tid for tid, _ in expected]
    assert any(continued)


async def test_status_filter_pages_through_matching_tasks_only(
    filled: tuple[TaskStore, list[tuple[str, str]]],
) -> None:
    store, expected = filled

    pages = await _all_pages(store, 2, "completed")

    assert [tid for page in pages for tid in _ids(page)] == [
        tid for tid, status in expected if status == "completed"
    ]
    assert all(json.loads(t.document)["status"] == "completed" for p in pages for t in p)


async def test_unfiltered_page_reads_only_its_own_documents(
    filled: tuple[TaskStore, list[tuple[str, str]]],
) -> None:
    store, expected = filled
    gets = _record(store, "GetObject")
    lists = _record(store, "ListObjectsV2")

    tasks, token = await store.list(2)

    assert _ids(tasks) == [tid for tid, _ in expected[:2]]
    assert token
    assert sorted(gets) == sorted(f"tasks/{tid}.json" for tid in _ids(tasks))
    # Today's listing (its third task tells there is more); at most tomorrow's too (clock skew).
    assert len(lists) <= 2


async def test_filtered_list_stops_at_the_scan_limit_and_continues_by_token(
    make_store: StoreFactory,
) -> None:
    store = await make_store(list_scan_limit=3, list_get_concurrency=2, task_retention_days=2)
    ids = [task_id(0, n, second=n) for n in range(8)]
    for n, tid in enumerate(ids):
        await store.put(tid, document(tid, "error" if n == 0 else "completed"))
    gets = _record(store, "GetObject")

    tasks, token = await store.list(5, "", "error")

    assert tasks == []
    assert token
    assert len(gets) == 3
    pages = [tasks]
    while token:
        tasks, token = await store.list(5, token, "error")
        pages.append(tasks)
    assert [tid for page in pages for tid in _ids(page)] == [ids[0]]
    assert len(gets) == len(ids)


async def test_nested_objects_and_foreign_keys_are_not_tasks(
    make_store: StoreFactory,
) -> None:
    store = await make_store(task_retention_days=2)
    tid = task_id()
    await store.put(tid, document(tid))
    client = store.s3.client
    for key in (f"tasks/{tid}/upload.bin", f"tasks/{task_id()[:19]}_notes.txt", "other/x.json"):
        await client.put_object(Bucket=BUCKET, Key=key, Body=b"{}")

    tasks, token = await store.list(10)

    assert (_ids(tasks), token) == ([tid], "")


async def test_a_document_too_deep_to_parse_is_listed_but_never_matches_a_status(
    make_store: StoreFactory,
) -> None:
    store = await make_store(task_retention_days=2)
    good = [task_id(0, n, second=n) for n in (0, 2)]
    for tid in good:
        await store.put(tid, document(tid, "completed"))
    deep = task_id(0, 1, second=1)
    # Straight to S3: the store refuses to write it, but S3 holds what it is given.
    body = b'{"task_id": "%s", "status": "completed", "x": ' % deep.encode()
    await store.s3.client.put_object(
        Bucket=BUCKET, Key=f"tasks/{deep}.json", Body=body + b"[" * 5000 + b"]" * 5000 + b"}"
    )

    unfiltered, _ = await store.list(10)
    filtered, token = await store.list(10, status="completed")

    assert _ids(unfiltered) == [good[1], deep, good[0]]  # the reader decides what to skip
    assert (_ids(filtered), token) == ([good[1], good[0]], "")


async def test_empty_store_lists_nothing(make_store: StoreFactory) -> None:
    store = await make_store(task_retention_days=RETENTION_DAYS)
    assert await store.list(20) == ([], "")
    assert await store.list(20, "", "completed") == ([], "")


async def test_a_token_this_list_did_not_issue_is_invalid_input(make_store: StoreFactory) -> None:
    store = await make_store(prepare=False)
    for token in [
        "not a token!",
        "bm9wZQ",
        encode_objects_token("leases", "orch-1"),
        "dDE6dGFza18xMjM",
    ]:
        with pytest.raises(InvalidInput, match="page_token"):
            await store.list(10, token)


async def test_page_size_out_of_range_is_invalid_input(make_store: StoreFactory) -> None:
    store = await make_store(prepare=False)
    for size in (0, -1, 1001):
        with pytest.raises(InvalidInput, match="page_size"):
            await store.list(size)


def _record(store: TaskStore, operation: str) -> list[str]:
    seen: list[str] = []
    store.s3.client.meta.events.register(
        f"before-parameter-build.s3.{operation}",
        lambda **kw: seen.append(kw["params"].get("Key", "")),
    )
    return seen
