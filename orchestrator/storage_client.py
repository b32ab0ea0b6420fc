"""The orchestrator's view of storage_svc: task records in, task records out.

gRPC failures become the platform's own errors (:mod:`common.errors`), so the pipeline never
sees a gRPC type. A stored document that does not parse as a task record (written before the
record shape limits, or by hand) is :class:`UnreadableTask` when read alone and is left out of
a listing, with a warning, so it never hides the tasks around it.
"""

from __future__ import annotations

import logging
from typing import TypeAlias

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError

from common.channels import open_channel
from common.errors import Internal, from_rpc_error
from common.tls import Identity, Role
from orchestrator.file_client import FileClient
from orchestrator.models import TaskRecord
from wealthai.storage.v1 import storage_pb2, storage_pb2_grpc

logger = logging.getLogger(__name__)

_CALL_TIMEOUT_S = 30.0

Namespace: TypeAlias = storage_pb2.Namespace.ValueType
LEASES = storage_pb2.NAMESPACE_LEASES
IDEMPOTENCY = storage_pb2.NAMESPACE_IDEMPOTENCY
API_KEYS = storage_pb2.NAMESPACE_API_KEYS
SEALS = storage_pb2.NAMESPACE_SEALS


class UnreadableTask(Internal):
    """A stored task document that does not parse as a task record."""

    def __init__(self, task_id: str, reason: str) -> None:
        super().__init__(f"task {task_id}: its stored document cannot be read")
        self.task_id = task_id
        self.reason = reason


def _parse(task_id: str, document: bytes) -> TaskRecord:
    """``document`` as a task record, or :class:`UnreadableTask` saying why not (never what the
    document holds: it may hold the user's records)."""
    try:
        return TaskRecord.from_json(document)
    except ValidationError as err:
        problems = err.errors(include_url=False, include_context=False, include_input=False)
        reason = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'document'}: {problem['msg']}"
            for problem in problems[:3]
        )
        raise UnreadableTask(task_id, reason) from None


class StorageClient:
    """Reads and writes task records through storage_svc with compare-and-swap."""

    def __init__(self, target: str, tls: Identity | None = None) -> None:
        self._channel = open_channel(target, tls, Role.STORAGE)
        self._stub = storage_pb2_grpc.StorageServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._bucket = ""
        self.files = FileClient(self._channel)  # the files, over the same channel

    async def close(self) -> None:
        await self._channel.close()

    async def create(self, record: TaskRecord, owner: str = "") -> str:
        """Stores a new task (fails with Conflict if the id exists); returns its version.

        ``owner`` (a principal id) puts the task in that owner's index, which
        :meth:`list_tasks` with the owner reads; empty leaves it out of every owner's listing.
        """
        request = storage_pb2.PutTaskRequest(
            task_id=record.task_id, document=record.to_json(), if_none_match=True, owner=owner
        )
        return await self._put(request)

    async def update(self, record: TaskRecord, version: str) -> str:
        """Replaces the task if it is still at ``version``; returns the new version."""
        request = storage_pb2.PutTaskRequest(
            task_id=record.task_id, document=record.to_json(), if_match=version
        )
        return await self._put(request)

    async def _put(self, request: storage_pb2.PutTaskRequest) -> str:
        try:
            response = await self._stub.PutTask(request, timeout=_CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, "storage") from err
        return str(response.version)

    async def get(self, task_id: str) -> tuple[TaskRecord, str]:
        """The stored task and its version; NotFound when there is none."""
        try:
            response = await self._stub.GetTask(
                storage_pb2.GetTaskRequest(task_id=task_id), timeout=_CALL_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, "storage") from err
        try:
            record = _parse(task_id, response.document)
        except UnreadableTask as exc:
            logger.warning("%s (%s)", exc.message, exc.reason)
            raise
        return record, str(response.version)

    async def list_tasks(
        self, limit: int, page_token: str, status: str = "", owner: str = "", tenant: str = ""
    ) -> tuple[list[tuple[TaskRecord, str]], str]:
        """A page of tasks with their versions, newest first, and the next page's token.

        With ``owner`` only the tasks created with that owner, whose token pages that owner's
        listing only; with ``tenant`` (or ``status``) only those of that tenant, a short page
        with a token meaning "go on". A document that cannot be read is left out (and logged),
        so a page may hold fewer tasks than asked while the token still leads past it."""
        request = storage_pb2.ListTasksRequest(
            page_size=limit, status=status, page_token=page_token, owner=owner, tenant=tenant
        )
        try:
            response = await self._stub.ListTasks(
                request,
                timeout=_CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, "storage") from err
        page: list[tuple[TaskRecord, str]] = []
        for stored in response.tasks:
            try:
                page.append((_parse(stored.task_id, stored.document), str(stored.version)))
            except UnreadableTask as exc:
                logger.warning("%s; left out of the listing (%s)", exc.message, exc.reason)
        return page, response.next_page_token

    async def put_object(
        self, namespace: Namespace, name: str, body: bytes, *, version: str | None
    ) -> str:
        """Writes a small object: create-only when ``version`` is None, else compare-and-swap."""
        request = storage_pb2.PutObjectRequest(namespace=namespace, name=name, body=body)
        if version is None:
            request.if_none_match = True
        else:
            request.if_match = version
        try:
            response = await self._stub.PutObject(request, timeout=_CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, "storage") from err
        return str(response.version)

    async def get_object(self, namespace: Namespace, name: str) -> tuple[bytes, str]:
        try:
            response = await self._stub.GetObject(
                storage_pb2.GetObjectRequest(namespace=namespace, name=name),
                timeout=_CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, "storage") from err
        return response.body, str(response.version)

    async def list_objects(self, namespace: Namespace) -> list[tuple[str, bytes, str]]:
        """Every object of a (small) namespace: name, body, version."""
        found: list[tuple[str, bytes, str]] = []
        token = ""
        while True:
            page, token = await self.list_object_page(namespace, token)
            found += page
            if not token:
                return found

    async def list_object_page(
        self, namespace: Namespace, page_token: str = "", page_size: int = 0
    ) -> tuple[list[tuple[str, bytes, str]], str]:
        """One page of a namespace in name order (``page_size`` 0: up to 1000), and the next
        page's token ("" after the last)."""
        try:
            response = await self._stub.ListObjects(
                storage_pb2.ListObjectsRequest(
                    namespace=namespace, page_token=page_token, page_size=page_size
                ),
                timeout=_CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, "storage") from err
        page = [(o.name, o.body, o.version) for o in response.objects]
        return page, response.next_page_token

    async def delete_object(self, namespace: Namespace, name: str, version: str) -> None:
        try:
            await self._stub.DeleteObject(
                storage_pb2.DeleteObjectRequest(namespace=namespace, name=name, if_match=version),
                timeout=_CALL_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, "storage") from err

    async def bucket(self) -> str:
        """The bucket storage_svc keeps the documents in; "" when it cannot be asked."""
        if not self._bucket:
            try:
                reply = await self._stub.Describe(storage_pb2.DescribeRequest(), timeout=2.0)
            except grpc.aio.AioRpcError:
                return ""
            self._bucket = reply.bucket
        return self._bucket

    async def healthy(self) -> bool:
        """True when storage_svc answers its health check as SERVING."""
        try:
            response = await self._health.Check(health_pb2.HealthCheckRequest(), timeout=2.0)
        except grpc.aio.AioRpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)
