"""The gRPC face of storage_svc: ``wealthai.storage.v1.StorageService`` over a TaskStore and
an ObjectStore.

A thin adapter: it checks the request fields gRPC cannot (page size ranges, enum values),
translates messages to store calls and back, and lets :class:`~common.errors.AppError` raised by
the store reach the error interceptor, which turns it into the gRPC status of the error table.
"""

from __future__ import annotations

from typing import TypedDict

import grpc

from common.errors import InvalidInput
from common.logging import task_id_var
from storage_svc.objects import MAX_OBJECTS_PAGE, Namespace, ObjectStore
from storage_svc.store import TaskStore
from wealthai.storage.v1 import storage_pb2, storage_pb2_grpc

SERVICE_NAME: str = storage_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name

DEFAULT_TASKS_PAGE = 20
MAX_TASKS_PAGE = 100
DEFAULT_OBJECTS_PAGE = MAX_OBJECTS_PAGE

_NAMESPACE = {
    storage_pb2.NAMESPACE_LEASES: Namespace.LEASES,
    storage_pb2.NAMESPACE_IDEMPOTENCY: Namespace.IDEMPOTENCY,
    storage_pb2.NAMESPACE_API_KEYS: Namespace.API_KEYS,
    storage_pb2.NAMESPACE_SEALS: Namespace.SEALS,
}


def _namespace(value: storage_pb2.Namespace.ValueType) -> Namespace:
    namespace = _NAMESPACE.get(value)
    if namespace is None:
        known = ", ".join(storage_pb2.Namespace.Name(n) for n in _NAMESPACE)
        raise InvalidInput(f"namespace {value} is not one of: {known}")
    return namespace


class _Preconditions(TypedDict):
    if_match: str | None
    if_none_match: bool


def _preconditions(
    request: storage_pb2.PutTaskRequest | storage_pb2.PutObjectRequest,
) -> _Preconditions:
    """The if_match / if_none_match arguments of a write from its ``precondition`` oneof."""
    precondition = request.WhichOneof("precondition")
    return {
        "if_match": request.if_match if precondition == "if_match" else None,
        "if_none_match": precondition == "if_none_match" and request.if_none_match,
    }


def _page_size(value: int, default: int, most: int) -> int:
    if value == 0:
        return default
    if not 1 <= value <= most:
        raise InvalidInput(f"page_size must be between 1 and {most} (0 means {default})")
    return value


class StorageServicer(storage_pb2_grpc.StorageServiceServicer):
    """Implements StorageService by delegating to one :class:`TaskStore` and one
    :class:`ObjectStore`."""

    def __init__(self, store: TaskStore, objects: ObjectStore) -> None:
        self._store = store
        self._objects = objects

    async def PutTask(
        self,
        request: storage_pb2.PutTaskRequest,
        context: grpc.aio.ServicerContext[storage_pb2.PutTaskRequest, storage_pb2.PutTaskResponse],
    ) -> storage_pb2.PutTaskResponse:
        task_id_var.set(request.task_id)
        version = await self._store.put(
            request.task_id, request.document, **_preconditions(request), owner=request.owner
        )
        return storage_pb2.PutTaskResponse(version=version)

    async def GetTask(
        self,
        request: storage_pb2.GetTaskRequest,
        context: grpc.aio.ServicerContext[storage_pb2.GetTaskRequest, storage_pb2.GetTaskResponse],
    ) -> storage_pb2.GetTaskResponse:
        task_id_var.set(request.task_id)
        document, version = await self._store.get(request.task_id)
        return storage_pb2.GetTaskResponse(document=document, version=version)

    async def ListTasks(
        self,
        request: storage_pb2.ListTasksRequest,
        context: grpc.aio.ServicerContext[
            storage_pb2.ListTasksRequest, storage_pb2.ListTasksResponse
        ],
    ) -> storage_pb2.ListTasksResponse:
        size = _page_size(request.page_size, DEFAULT_TASKS_PAGE, MAX_TASKS_PAGE)
        tasks, token = await self._store.list(
            size,
            request.page_token,
            request.status or None,
            owner=request.owner,
            tenant=request.tenant,
        )
        return storage_pb2.ListTasksResponse(
            tasks=[
                storage_pb2.StoredTask(task_id=t.task_id, document=t.document, version=t.version)
                for t in tasks
            ],
            next_page_token=token,
        )

    async def DeleteTask(
        self,
        request: storage_pb2.DeleteTaskRequest,
        context: grpc.aio.ServicerContext[
            storage_pb2.DeleteTaskRequest, storage_pb2.DeleteTaskResponse
        ],
    ) -> storage_pb2.DeleteTaskResponse:
        task_id_var.set(request.task_id)
        await self._store.delete(request.task_id, request.if_match or None)
        return storage_pb2.DeleteTaskResponse()

    async def PutObject(
        self,
        request: storage_pb2.PutObjectRequest,
        context: grpc.aio.ServicerContext[
            storage_pb2.PutObjectRequest, storage_pb2.PutObjectResponse
        ],
    ) -> storage_pb2.PutObjectResponse:
        version = await self._objects.put(
            _namespace(request.namespace), request.name, request.body, **_preconditions(request)
        )
        return storage_pb2.PutObjectResponse(version=version)

    async def GetObject(
        self,
        request: storage_pb2.GetObjectRequest,
        context: grpc.aio.ServicerContext[
            storage_pb2.GetObjectRequest, storage_pb2.GetObjectResponse
        ],
    ) -> storage_pb2.GetObjectResponse:
        body, version = await self._objects.get(_namespace(request.namespace), request.name)
        return storage_pb2.GetObjectResponse(body=body, version=version)

    async def ListObjects(
        self,
        request: storage_pb2.ListObjectsRequest,
        context: grpc.aio.ServicerContext[
            storage_pb2.ListObjectsRequest, storage_pb2.ListObjectsResponse
        ],
    ) -> storage_pb2.ListObjectsResponse:
        namespace = _namespace(request.namespace)
        size = _page_size(request.page_size, DEFAULT_OBJECTS_PAGE, MAX_OBJECTS_PAGE)
        objects, token = await self._objects.list(namespace, size, request.page_token)
        return storage_pb2.ListObjectsResponse(
            objects=[
                storage_pb2.StoredObject(name=o.name, body=o.body, version=o.version)
                for o in objects
            ],
            next_page_token=token,
        )

    async def DeleteObject(
        self,
        request: storage_pb2.DeleteObjectRequest,
        context: grpc.aio.ServicerContext[
            storage_pb2.DeleteObjectRequest, storage_pb2.DeleteObjectResponse
        ],
    ) -> storage_pb2.DeleteObjectResponse:
        await self._objects.delete(
            _namespace(request.namespace), request.name, request.if_match or None
        )
        return storage_pb2.DeleteObjectResponse()

    async def Describe(
        self,
        request: storage_pb2.DescribeRequest,
        context: grpc.aio.ServicerContext[storage_pb2.DescribeRequest, storage_pb2.Description],
    ) -> storage_pb2.Description:
        settings = self._store.settings
        return storage_pb2.Description(bucket=settings.s3_bucket, prefix=settings.s3_prefix)
