"""ObjectStore against real S3 servers: namespaced objects, compare-and-swap, listing (on moto;
the races on SeaweedFS, whose conditional writes are atomic)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError

from common.errors import Conflict, InvalidInput, NotFound
from storage_svc.documents import MAX_OBJECT_BODY, encode_objects_token
from storage_svc.objects import Namespace, ObjectStore, StoredObject
from storage_svc.store import TaskStore
from tests.storage_svc.conftest import BUCKET, around_puts, document, task_id

LEASES, IDEMPOTENCY = Namespace.LEASES, Namespace.IDEMPOTENCY


def body(**fields: Any) -> bytes:
    """A JSON object body."""
    return json.dumps({"owner": "orch-1", **fields}).encode()


async def test_put_then_get_round_trips_under_the_namespace_key_encrypted(
    objects: ObjectStore,
) -> None:
    lease = body(expires_at="2025-12-30T12:00:30Z")

    version = await objects.put(LEASES, "orch-1", lease, if_none_match=True)

    assert await objects.get(LEASES, "orch-1") == (lease, version)
    head = await objects.s3.client.head_object(Bucket=BUCKET, Key="tasks/_leases/orch-1.json")
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ContentType"] == "application/json"
    assert head["ETag"] == version


async def test_namespaces_are_separate(objects: ObjectStore) -> None:
    await objects.put(LEASES, "same-name", body(kind="lease"))
    await objects.put(IDEMPOTENCY, "same-name", body(kind="key"))

    assert json.loads((await objects.get(LEASES, "same-name"))[0])["kind"] == "lease"
    assert json.loads((await objects.get(IDEMPOTENCY, "same-name"))[0])["kind"] == "key"
    assert [o.name for o in (await objects.list(LEASES, 10))[0]] == ["same-name"]
    head = await objects.s3.client.head_object(
        Bucket=BUCKET, Key="tasks/_idempotency/same-name.json"
    )
    assert head["ETag"]


async def test_creating_the_same_object_twice_conflicts(objects: ObjectStore) -> None:
    first = await objects.put(LEASES, "orch-1", body(n=1), if_none_match=True)

    with pytest.raises(Conflict, match="object leases/orch-1 already exists"):
        await objects.put(LEASES, "orch-1", body(n=2), if_none_match=True)
    assert await objects.get(LEASES, "orch-1") == (body(n=1), first)


async def test_write_with_a_stale_version_conflicts(objects: ObjectStore) -> None:
    old = await objects.put(LEASES, "orch-1", body(n=1), if_none_match=True)
    new = await objects.put(LEASES, "orch-1", body(n=2), if_match=old)

    with pytest.raises(Conflict, match="changed by another writer") as caught:
        await objects.put(LEASES, "orch-1", body(n=3), if_match=old)
    assert old in caught.value.message
    assert await objects.get(LEASES, "orch-1") == (body(n=2), new)


async def test_write_over_a_deleted_object_conflicts(objects: ObjectStore) -> None:
    version = await objects.put(LEASES, "orch-1", body(), if_none_match=True)
    await objects.delete(LEASES, "orch-1")

    with pytest.raises(Conflict, match="no longer exists"):
        await objects.put(LEASES, "orch-1", body(n=2), if_match=version)
    with pytest.raises(NotFound):
        await objects.get(LEASES, "orch-1")


@pytest.mark.parametrize("round_", range(3))
async def test_of_concurrent_writers_with_one_version_exactly_one_wins(
    atomic_store: TaskStore, round_: int
) -> None:
    objects = ObjectStore(atomic_store.s3)
    name = f"orch-{round_}"
    await objects.put(LEASES, name, body(), if_none_match=True)
    _, version = await objects.get(LEASES, name)
    bodies = [body(writer=w) for w in range(10)]

    results = await asyncio.gather(
        *(objects.put(LEASES, name, b, if_match=version) for b in bodies),
        return_exceptions=True,
    )

    winners = [i for i, r in enumerate(results) if isinstance(r, str)]
    assert len(winners) == 1, results
    losers = [r for r in results if not isinstance(r, str)]
    assert all(isinstance(r, Conflict) for r in losers), losers
    assert await objects.get(LEASES, name) == (bodies[winners[0]], results[winners[0]])


async def test_of_concurrent_creators_exactly_one_wins(atomic_store: TaskStore) -> None:
    objects = ObjectStore(atomic_store.s3)
    bodies = [body(writer=w) for w in range(10)]

    results = await asyncio.gather(
        *(objects.put(IDEMPOTENCY, "key-1", b, if_none_match=True) for b in bodies),
        return_exceptions=True,
    )

    winners = [i for i, r in enumerate(results) if isinstance(r, str)]
    assert len(winners) == 1, results
    assert all(isinstance(r, Conflict) for r in results if not isinstance(r, str))
    assert await objects.get(IDEMPOTENCY, "key-1") == (bodies[winners[0]], results[winners[0]])


async def test_create_landing_before_its_answer_is_lost_is_not_a_conflict(
    objects: ObjectStore,
) -> None:
    lost = []

    async def lose_first_answer(_: str, send: Callable[[], Awaitable[str]]) -> str:
        version = await send()
        if not lost:
            lost.append(True)
            raise ReadTimeoutError(endpoint_url="http://s3")
        return version

    around_puts(objects.s3, lose_first_answer)

    version = await objects.put(IDEMPOTENCY, "key-1", body(), if_none_match=True)

    assert lost == [True]
    assert await objects.get(IDEMPOTENCY, "key-1") == (body(), version)


async def test_get_of_a_missing_object_is_not_found(objects: ObjectStore) -> None:
    with pytest.raises(NotFound, match="object leases/orch-9 not found"):
        await objects.get(LEASES, "orch-9")


async def test_delete_honours_if_match_and_is_idempotent_without_it(
    objects: ObjectStore,
) -> None:
    version = await objects.put(LEASES, "orch-1", body())

    with pytest.raises(Conflict, match="changed by another writer"):
        await objects.delete(LEASES, "orch-1", if_match='"not-the-version"')
    assert (await objects.get(LEASES, "orch-1"))[1] == version

    await objects.delete(LEASES, "orch-1", if_match=version)
    with pytest.raises(NotFound):
        await objects.get(LEASES, "orch-1")
    with pytest.raises(NotFound, match="object leases/orch-1 not found"):
        await objects.delete(LEASES, "orch-1", if_match=version)
    await objects.delete(LEASES, "orch-1")
    await objects.delete(LEASES, "never-was")


async def test_list_pages_through_every_object_with_its_body_and_version(
    objects: ObjectStore,
) -> None:
    names = [f"orch-{n:02d}" for n in range(7)]
    versions = {name: await objects.put(LEASES, name, body(owner=name)) for name in names}
    await objects.put(IDEMPOTENCY, "elsewhere", body())
    lists = _record(objects, "ListObjectsV2")
    gets = _record(objects, "GetObject")

    pages: list[list[StoredObject]] = []
    token = ""
    while True:
        page, token = await objects.list(LEASES, 3, token)
        pages.append(page)
        if not token:
            break
        assert len(pages) < 10, "paging does not end"

    assert [len(page) for page in pages] == [3, 3, 1]
    listed = [o for page in pages for o in page]
    assert [o.name for o in listed] == names
    assert all(o.body == body(owner=o.name) for o in listed)
    assert all(o.version == versions[o.name] for o in listed)
    # 1 LIST per page, 1 GET per object: nothing outside the page is read.
    assert len(lists) == 3
    assert sorted(gets) == [f"tasks/_leases/{name}.json" for name in names]


async def test_list_of_a_whole_namespace_in_one_page(objects: ObjectStore) -> None:
    names = [f"key-{n}" for n in range(5)]
    for name in names:
        await objects.put(IDEMPOTENCY, name, body(owner=name))

    page, token = await objects.list(IDEMPOTENCY, 1000)

    assert ([o.name for o in page], token) == (names, "")
    assert await objects.list(LEASES, 1000) == ([], "")


async def test_objects_deleted_between_list_and_get_are_skipped(
    objects: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("a", "b", "c"):
        await objects.put(LEASES, name, body(owner=name))
    list_names = objects._list_names

    async def list_then_delete(*args: Any) -> tuple[list[str], bool]:
        found = await list_names(*args)
        await objects.delete(LEASES, "b")
        return found

    monkeypatch.setattr(objects, "_list_names", list_then_delete)

    page, token = await objects.list(LEASES, 10)

    assert ([o.name for o in page], token) == (["a", "c"], "")


async def test_foreign_keys_under_a_namespace_are_skipped_and_pages_still_fill(
    objects: ObjectStore,
) -> None:
    client = objects.s3.client
    for key in ("tasks/_leases/a-notes.txt", "tasks/_leases/b/nested.json", "tasks/_leases/.json"):
        await client.put_object(Bucket=BUCKET, Key=key, Body=b"{}")
    for name in ("a", "c", "d"):
        await objects.put(LEASES, name, body(owner=name))

    first, token = await objects.list(LEASES, 2)
    rest, last = await objects.list(LEASES, 2, token)

    assert [o.name for o in first] == ["a", "c"]
    assert ([o.name for o in rest], last) == (["d"], "")


async def test_task_listings_never_see_namespaced_objects(
    store: TaskStore, objects: ObjectStore
) -> None:
    tid = task_id()
    await store.put(tid, document(tid))
    # Names shaped like task ids, in both namespaces: only the key prefix tells them apart.
    for namespace in Namespace:
        for n in (1, 2):
            await objects.put(namespace, task_id(n=n), document(task_id(n=n)))

    assert await store.list(100) == ([(tid, document(tid), (await store.get(tid))[1])], "")
    assert await store.list(100, "", "pending") == (await store.list(100))
    assert [o.name for o in (await objects.list(LEASES, 1000))[0]] == [
        task_id(n=1),
        task_id(n=2),
    ]
    with pytest.raises(NotFound):
        await store.get(task_id(n=1))


async def test_namespace_listing_never_sees_tasks(store: TaskStore, objects: ObjectStore) -> None:
    tid = task_id()
    await store.put(tid, document(tid))

    assert await objects.list(LEASES, 1000) == ([], "")
    assert await objects.list(IDEMPOTENCY, 1000) == ([], "")


BAD_NAMES = ["", "a/b", "../x", "x" * 129, "a b", "naïve", "ok\n", "*"]
BAD_BODIES = [
    (b"\xff\xfe", "not UTF-8"),
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'"text"', "must be a JSON object"),
    (json.dumps({"pad": "x" * MAX_OBJECT_BODY}).encode(), f"at most {MAX_OBJECT_BODY}"),
]


async def test_bad_names_bodies_and_preconditions_are_refused_before_anything_is_written(
    objects: ObjectStore,
) -> None:
    for name in BAD_NAMES:
        for call in (
            objects.put(LEASES, name, body()),
            objects.get(LEASES, name),
            objects.delete(LEASES, name),
        ):
            with pytest.raises(InvalidInput, match=r"object name .* is malformed"):
                await call
    for bad, problem in BAD_BODIES:
        with pytest.raises(InvalidInput, match=f"body of object orch-1 .*{problem}"):
            await objects.put(LEASES, "orch-1", bad)
    with pytest.raises(InvalidInput, match="at most one precondition"):
        await objects.put(LEASES, "orch-1", body(), if_match='"abc"', if_none_match=True)
    with pytest.raises(InvalidInput, match="if_match is empty"):
        await objects.put(LEASES, "orch-1", body(), if_match="")
    with pytest.raises(InvalidInput, match="namespace 'tasks' is not one of"):
        await objects.put("tasks", "orch-1", body())  # type: ignore[arg-type]
    answer = await objects.s3.client.list_objects_v2(Bucket=BUCKET)
    assert answer.get("KeyCount", 0) == 0


async def test_a_body_of_exactly_64_kib_is_accepted(objects: ObjectStore) -> None:
    padding = 64 * 1024 - len(json.dumps({"pad": ""}))
    largest = json.dumps({"pad": "x" * padding}).encode()
    assert len(largest) == 64 * 1024

    version = await objects.put(LEASES, "orch-1", largest)

    assert await objects.get(LEASES, "orch-1") == (largest, version)


async def test_bad_page_sizes_and_tokens_are_invalid_input(objects: ObjectStore) -> None:
    for size in (0, -1, 1001):
        with pytest.raises(InvalidInput, match="page_size"):
            await objects.list(LEASES, size)
    for token in ["not a token!", "bm9wZQ", encode_objects_token("idempotency", "orch-1")]:
        with pytest.raises(InvalidInput, match="page_token"):
            await objects.list(LEASES, 10, token)


def _record(objects: ObjectStore, operation: str) -> list[str]:
    """Records the key of every ``operation`` request the client sends."""
    seen: list[str] = []
    objects.s3.client.meta.events.register(
        f"before-parameter-build.s3.{operation}",
        lambda **kw: seen.append(kw["params"].get("Key", "")),
    )
    return seen
