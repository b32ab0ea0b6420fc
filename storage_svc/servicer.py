"""The gRPC face of storage_svc: ``wealthai.storage.v1.StorageService`` over a TaskStore.

A thin adapter: it checks the request fields gRPC cannot (page size ranges, enum values),
translates messages to store calls and back, and lets :class:`~common.errors.AppError` raised by
the store reach the error interceptor, which turns it into the gRPC status of the error table.
"""

from __future__ import annotations

from typing import Any

import grpc

from common.errors import InvalidInput
from common.logging import task_id_var
from storage_svc.store import ActiveIndex, TaskStore
from wealthai.storage.v1 import storage_pb2, storage_pb2_grpc

SERVICE_NAME: str = storage_pb2.DESCRIPTOR.services_by_name["StorageService"].full_name

DEFAULT_TASKS_PAGE = 20
MAX_TASKS_PAGE = 100
DEFAULT_ACTIVE_PAGE = 1000
MAX_ACTIVE_PAGE = 1000

_ACTIVE_INDEX = {
    storage_pb2.ACTIVE_INDEX_UNCHANGED: ActiveIndex.UNCHANGED,
    storage_pb2.ACTIVE_INDEX_ADD: ActiveIndex.ADD,
    storage_pb2.ACTIVE_INDEX_REMOVE: ActiveIndex.REMOVE,
}


def _page_size(value: int, default: int, most: int) -> int:
    if value == 0:
        return default
    if not 1 <= value <= most:
        raise InvalidInput(f"page_size must be between 1 and {most} (0 means {default})")
    return value


class StorageServicer(storage_pb2_grpc.StorageServiceServicer):  # type: ignore[misc]
    """Implements StorageService by delegating to one :class:`TaskStore`."""

    def __init__(self, store: TaskStore) -> None:
        self._store = store

    async def PutTask(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        task_id_var.set(request.task_id)
        active_index = _ACTIVE_INDEX.get(request.active_index)
        if active_index is None:
            raise InvalidInput(f"active_index {request.active_index} is not a known ActiveIndex")
        precondition = request.WhichOneof("precondition")
        version = await self._store.put(
            request.task_id,
            request.document,
            if_match=request.if_match if precondition == "if_match" else None,
            if_none_match=precondition == "if_none_match" and request.if_none_match,
            active_index=active_index,
        )
        return storage_pb2.PutTaskResponse(version=version)

    async def GetTask(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        task_id_var.set(request.task_id)
        document, version = await self._store.get(request.task_id)
        return storage_pb2.GetTaskResponse(document=document, version=version)

    async def ListTasks(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        size = _page_size(request.page_size, DEFAULT_TASKS_PAGE, MAX_TASKS_PAGE)
        tasks, token = await self._store.list(size, request.page_token, request.status or None)
        return storage_pb2.ListTasksResponse(
            tasks=[
                storage_pb2.StoredTask(task_id=t.task_id, document=t.document, version=t.version)
                for t in tasks
            ],
            next_page_token=token,
        )

    async def ListActiveTasks(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        size = _page_size(request.page_size, DEFAULT_ACTIVE_PAGE, MAX_ACTIVE_PAGE)
        task_ids, token = await self._store.list_active(size, request.page_token)
        return storage_pb2.ListActiveTasksResponse(task_ids=task_ids, next_page_token=token)

    async def DeleteTask(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        task_id_var.set(request.task_id)
        await self._store.delete(request.task_id, request.if_match or None)
        return storage_pb2.DeleteTaskResponse()
