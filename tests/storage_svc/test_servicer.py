"""StorageService over a real gRPC server on loopback, backed by moto."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from storage_svc.documents import MAX_OBJECT_BODY
from storage_svc.servicer import SERVICE_NAME
from storage_svc.store import TaskStore
from tests.helpers import free_port
from tests.storage_svc.conftest import BUCKET, HostFactory, StoreFactory, document, task_id
from wealthai.storage.v1 import storage_pb2 as pb
from wealthai.storage.v1 import storage_pb2_grpc


async def _fails(call: Any, code: grpc.StatusCode) -> str:
    """Awaits a call that must fail with ``code``; returns the status details."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    return str(caught.value.details())


async def test_put_get_and_update_round_trip(stub: Any, store: TaskStore) -> None:
    tid = task_id()
    created = await stub.PutTask(
        pb.PutTaskRequest(task_id=tid, document=document(tid), if_none_match=True)
    )
    got = await stub.GetTask(pb.GetTaskRequest(task_id=tid))
    assert (got.document, got.version) == (document(tid), created.version)

    updated = await stub.PutTask(
        pb.PutTaskRequest(
            task_id=tid, document=document(tid, "processing"), if_match=created.version
        )
    )
    assert updated.version != created.version
    assert await store.get(tid) == (document(tid, "processing"), updated.version)


async def test_conflicting_writes_are_aborted(stub: Any) -> None:
    tid = task_id()
    first = await stub.PutTask(
        pb.PutTaskRequest(task_id=tid, document=document(tid), if_none_match=True)
    )
    details = await _fails(
        stub.PutTask(pb.PutTaskRequest(task_id=tid, document=document(tid), if_none_match=True)),
        grpc.StatusCode.ABORTED,
    )
    assert "already exists" in details

    await stub.PutTask(pb.PutTaskRequest(task_id=tid, document=document(tid, "processing")))
    details = await _fails(
        stub.PutTask(
            pb.PutTaskRequest(task_id=tid, document=document(tid), if_match=first.version)
        ),
        grpc.StatusCode.ABORTED,
    )
    assert f"version {first.version} expected" in details


async def test_missing_task_is_not_found(stub: Any) -> None:
    tid = task_id()
    details = await _fails(stub.GetTask(pb.GetTaskRequest(task_id=tid)), grpc.StatusCode.NOT_FOUND)
    assert tid in details


async def test_bad_put_requests_are_invalid_argument(stub: Any) -> None:
    tid = task_id()
    for request in [
        pb.PutTaskRequest(task_id="task_nope", document=b"{}"),
        pb.PutTaskRequest(task_id=tid, document=b"not json"),
        pb.PutTaskRequest(task_id=tid, document=document(task_id(n=1))),
        pb.PutTaskRequest(task_id=tid, document=document(tid), if_match=""),
    ]:
        await _fails(stub.PutTask(request), grpc.StatusCode.INVALID_ARGUMENT)
    await _fails(stub.GetTask(pb.GetTaskRequest(task_id=tid)), grpc.StatusCode.NOT_FOUND)


async def test_list_tasks_pages_newest_first_and_filters(stub: Any) -> None:
    ids = [task_id(days_ago=d, n=d) for d in range(4)]
    for n, tid in enumerate(ids):
        status = "completed" if n % 2 else "pending"
        await stub.PutTask(pb.PutTaskRequest(task_id=tid, document=document(tid, status)))

    first = await stub.ListTasks(pb.ListTasksRequest(page_size=3))
    second = await stub.ListTasks(
        pb.ListTasksRequest(page_size=3, page_token=first.next_page_token)
    )
    completed = await stub.ListTasks(pb.ListTasksRequest(status="completed"))

    assert [t.task_id for t in first.tasks] == ids[:3]
    assert ([t.task_id for t in second.tasks], second.next_page_token) == (ids[3:], "")
    assert [t.task_id for t in completed.tasks] == [ids[1], ids[3]]
    assert all(json.loads(t.document)["status"] == "completed" for t in completed.tasks)
    assert all(t.version for t in first.tasks)


async def test_tasks_created_with_an_owner_are_listed_for_that_owner_only(stub: Any) -> None:
    alice = [task_id(0, n, second=n) for n in range(3)]
    bob = task_id(0, 9, second=9)
    for tid in alice:
        await stub.PutTask(
            pb.PutTaskRequest(
                task_id=tid, document=document(tid), if_none_match=True, owner="alice/ü"
            )
        )
    await stub.PutTask(
        pb.PutTaskRequest(task_id=bob, document=document(bob), if_none_match=True, owner="bob")
    )

    first = await stub.ListTasks(pb.ListTasksRequest(page_size=2, owner="alice/ü"))
    second = await stub.ListTasks(
        pb.ListTasksRequest(page_size=2, page_token=first.next_page_token, owner="alice/ü")
    )
    everyone = await stub.ListTasks(pb.ListTasksRequest())

    assert [t.task_id for t in [*first.tasks, *second.tasks]] == alice[::-1]
    assert second.next_page_token == ""
    assert [t.task_id for t in everyone.tasks] == [bob, *alice[::-1]]
    # Alice's token in Bob's hands is only a position in Bob's own index.
    bobs = await stub.ListTasks(pb.ListTasksRequest(page_token=first.next_page_token, owner="bob"))
    assert {t.task_id for t in bobs.tasks} <= {bob}
    details = await _fails(
        stub.PutTask(pb.PutTaskRequest(task_id=bob, document=document(bob), owner="bob")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "owner" in details


async def test_bad_list_requests_are_invalid_argument(stub: Any) -> None:
    for request in [
        pb.ListTasksRequest(page_token="garbage"),
        pb.ListTasksRequest(page_size=101),
        pb.ListTasksRequest(page_size=-1),
    ]:
        details = await _fails(stub.ListTasks(request), grpc.StatusCode.INVALID_ARGUMENT)
        assert "page_" in details


async def test_delete_task_removes_it_and_checks_the_version(stub: Any) -> None:
    tid = task_id()
    put = await stub.PutTask(pb.PutTaskRequest(task_id=tid, document=document(tid)))
    await _fails(
        stub.DeleteTask(pb.DeleteTaskRequest(task_id=tid, if_match='"stale"')),
        grpc.StatusCode.ABORTED,
    )

    await stub.DeleteTask(pb.DeleteTaskRequest(task_id=tid, if_match=put.version))

    await _fails(stub.GetTask(pb.GetTaskRequest(task_id=tid)), grpc.StatusCode.NOT_FOUND)


async def test_health_reports_serving(store: TaskStore, serve: HostFactory) -> None:
    health = health_pb2_grpc.HealthStub(await serve(store))
    for service in ("", SERVICE_NAME):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_s3_down_is_unavailable(make_store: StoreFactory, serve: HostFactory) -> None:
    store = await make_store(
        prepare=False,
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        s3_connect_timeout_s=0.2,
        s3_read_timeout_s=0.2,
    )
    stub = storage_pb2_grpc.StorageServiceStub(await serve(store))

    details = await _fails(
        stub.GetTask(pb.GetTaskRequest(task_id=task_id())), grpc.StatusCode.UNAVAILABLE
    )

    assert details.startswith("S3 unavailable: GetObject failed")


LEASES, IDEMPOTENCY = pb.NAMESPACE_LEASES, pb.NAMESPACE_IDEMPOTENCY


def _lease(**fields: Any) -> bytes:
    return json.dumps({"owner": "orch-1", **fields}).encode()


async def test_put_get_and_update_object_round_trip(stub: Any, store: TaskStore) -> None:
    created = await stub.PutObject(
        pb.PutObjectRequest(namespace=LEASES, name="orch-1", body=_lease(), if_none_match=True)
    )
    got = await stub.GetObject(pb.GetObjectRequest(namespace=LEASES, name="orch-1"))
    assert (got.body, got.version) == (_lease(), created.version)

    updated = await stub.PutObject(
        pb.PutObjectRequest(
            namespace=LEASES, name="orch-1", body=_lease(n=2), if_match=created.version
        )
    )
    assert updated.version != created.version
    head = await store.s3.client.head_object(Bucket=BUCKET, Key="tasks/_leases/orch-1.json")
    assert (head["ETag"], head["ServerSideEncryption"]) == (updated.version, "AES256")
    await _fails(
        stub.GetObject(pb.GetObjectRequest(namespace=IDEMPOTENCY, name="orch-1")),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_conflicting_object_writes_are_aborted(stub: Any) -> None:
    request = pb.PutObjectRequest(
        namespace=LEASES, name="orch-1", body=_lease(), if_none_match=True
    )
    first = await stub.PutObject(request)
    details = await _fails(stub.PutObject(request), grpc.StatusCode.ABORTED)
    assert "already exists" in details

    await stub.PutObject(pb.PutObjectRequest(namespace=LEASES, name="orch-1", body=_lease(n=2)))
    details = await _fails(
        stub.PutObject(
            pb.PutObjectRequest(
                namespace=LEASES, name="orch-1", body=_lease(n=3), if_match=first.version
            )
        ),
        grpc.StatusCode.ABORTED,
    )
    assert f"version {first.version} expected" in details


async def test_of_concurrent_object_writers_over_grpc_exactly_one_wins(
    atomic_store: TaskStore, serve: HostFactory
) -> None:
    stub = storage_pb2_grpc.StorageServiceStub(await serve(atomic_store))
    first = await stub.PutObject(pb.PutObjectRequest(namespace=LEASES, name="l", body=_lease()))
    calls = [
        stub.PutObject(
            pb.PutObjectRequest(
                namespace=LEASES, name="l", body=_lease(writer=w), if_match=first.version
            )
        )
        for w in range(8)
    ]

    results = await asyncio.gather(*calls, return_exceptions=True)

    winners = [r for r in results if isinstance(r, pb.PutObjectResponse)]
    losers = [r for r in results if not isinstance(r, pb.PutObjectResponse)]
    assert len(winners) == 1, results
    assert all(
        isinstance(r, grpc.aio.AioRpcError) and r.code() == grpc.StatusCode.ABORTED for r in losers
    ), losers
    got = await stub.GetObject(pb.GetObjectRequest(namespace=LEASES, name="l"))
    assert got.version == winners[0].version


async def test_list_objects_pages_with_bodies_and_versions(stub: Any) -> None:
    versions = {}
    for n in range(5):
        name = f"key-{n}"
        answer = await stub.PutObject(
            pb.PutObjectRequest(namespace=IDEMPOTENCY, name=name, body=_lease(owner=name))
        )
        versions[name] = answer.version

    first = await stub.ListObjects(pb.ListObjectsRequest(namespace=IDEMPOTENCY, page_size=3))
    rest = await stub.ListObjects(
        pb.ListObjectsRequest(namespace=IDEMPOTENCY, page_token=first.next_page_token)
    )
    everything = await stub.ListObjects(pb.ListObjectsRequest(namespace=IDEMPOTENCY))

    listed = list(first.objects) + list(rest.objects)
    assert [o.name for o in first.objects] == ["key-0", "key-1", "key-2"]
    assert ([o.name for o in rest.objects], rest.next_page_token) == (["key-3", "key-4"], "")
    assert {o.name: o.version for o in listed} == versions
    assert all(o.body == _lease(owner=o.name) for o in listed)
    assert ([o.name for o in everything.objects], everything.next_page_token) == (
        sorted(versions),
        "",
    )
    empty = await stub.ListObjects(pb.ListObjectsRequest(namespace=LEASES))
    assert (list(empty.objects), empty.next_page_token) == ([], "")


async def test_delete_object_semantics(stub: Any) -> None:
    put = await stub.PutObject(pb.PutObjectRequest(namespace=LEASES, name="l", body=_lease()))
    await _fails(
        stub.DeleteObject(pb.DeleteObjectRequest(namespace=LEASES, name="l", if_match='"old"')),
        grpc.StatusCode.ABORTED,
    )

    await stub.DeleteObject(
        pb.DeleteObjectRequest(namespace=LEASES, name="l", if_match=put.version)
    )

    await _fails(
        stub.GetObject(pb.GetObjectRequest(namespace=LEASES, name="l")), grpc.StatusCode.NOT_FOUND
    )
    details = await _fails(
        stub.DeleteObject(pb.DeleteObjectRequest(namespace=LEASES, name="l", if_match=put.version)),
        grpc.StatusCode.NOT_FOUND,
    )
    assert "object leases/l not found" in details
    await stub.DeleteObject(pb.DeleteObjectRequest(namespace=LEASES, name="l"))


TOO_BIG = MAX_OBJECT_BODY + 1


async def test_bad_object_requests_are_invalid_argument(stub: Any) -> None:
    unspecified = pb.NAMESPACE_UNSPECIFIED
    calls = [
        stub.PutObject(pb.PutObjectRequest(namespace=unspecified, name="l", body=_lease())),
        stub.PutObject(pb.PutObjectRequest(namespace=7, name="l", body=_lease())),
        stub.PutObject(pb.PutObjectRequest(namespace=LEASES, name="a/b", body=_lease())),
        stub.PutObject(pb.PutObjectRequest(namespace=LEASES, name="", body=_lease())),
        stub.PutObject(pb.PutObjectRequest(namespace=LEASES, name="l", body=b"[]")),
        stub.PutObject(pb.PutObjectRequest(namespace=LEASES, name="l", body=b"\xff")),
        stub.PutObject(
            pb.PutObjectRequest(namespace=LEASES, name="l", body=b"{" * (MAX_OBJECT_BODY + 1))
        ),
        stub.PutObject(pb.PutObjectRequest(namespace=LEASES, name="l", body=_lease(), if_match="")),
        stub.GetObject(pb.GetObjectRequest(namespace=unspecified, name="l")),
        stub.GetObject(pb.GetObjectRequest(namespace=LEASES, name="../l")),
        stub.DeleteObject(pb.DeleteObjectRequest(namespace=unspecified, name="l")),
        stub.DeleteObject(pb.DeleteObjectRequest(namespace=LEASES, name="l" * 129)),
        stub.ListObjects(pb.ListObjectsRequest(namespace=unspecified)),
        stub.ListObjects(pb.ListObjectsRequest(namespace=LEASES, page_size=1001)),
        stub.ListObjects(pb.ListObjectsRequest(namespace=LEASES, page_size=-1)),
        stub.ListObjects(pb.ListObjectsRequest(namespace=LEASES, page_token="garbage")),
    ]
    details = [await _fails(call, grpc.StatusCode.INVALID_ARGUMENT) for call in calls]
    assert "namespace 0 is not" in details[0]
    assert "object name" in details[2]
    assert "must be a JSON object" in details[4]
    assert f"at most {MAX_OBJECT_BODY}" in details[6]
    assert "page_size" in details[13]
    assert "page_token" in details[15]
    listed = await stub.ListObjects(pb.ListObjectsRequest(namespace=LEASES))
    assert list(listed.objects) == []


async def test_task_rpcs_never_see_objects(stub: Any) -> None:
    tid = task_id()
    await stub.PutTask(pb.PutTaskRequest(task_id=tid, document=document(tid)))
    for namespace in (LEASES, IDEMPOTENCY):
        name = task_id(n=1)
        await stub.PutObject(
            pb.PutObjectRequest(namespace=namespace, name=name, body=document(name))
        )

    tasks = await stub.ListTasks(pb.ListTasksRequest(page_size=100))

    assert [t.task_id for t in tasks.tasks] == [tid]
