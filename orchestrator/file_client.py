"""The orchestrator's view of storage_svc's files: metadata, listing and deletion, as domain
calls and domain errors.

Twin of :mod:`orchestrator.storage_client` (and reached through it, as
``StorageClient.files``, over the same channel): the code that decides what a task does with its
files (:mod:`orchestrator.task_files`) never sees a gRPC type. Every call acts for a principal
and never as an admin, so a task only ever reaches its own owner's files; another owner's file
is :class:`~common.errors.NotFound`, exactly as a missing or expired one.
"""

from __future__ import annotations

import grpc

from common.errors import from_rpc_error
from orchestrator.models import FileRef
from wealthai.storage.v1 import files_pb2, files_pb2_grpc

_CALL_TIMEOUT_S = 30.0
LIST_PAGE = 1000


def ref_of(meta: files_pb2.FileMeta) -> FileRef:
    """What a task keeps of a file's metadata."""
    return FileRef(
        file_id=meta.file_id,
        key=meta.key,
        name=meta.name,
        content_type=meta.content_type,
        size=meta.size,
        sha256=meta.sha256,
        temporary=meta.temporary,
    )


class FileClient:
    """Files through storage_svc's ``FileService`` on ``channel``."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = files_pb2_grpc.FileServiceStub(channel)

    async def meta(self, file_id: str, owner: str) -> FileRef:
        """The file ``file_id`` of ``owner``; NotFound when it is missing, expired or another
        owner's."""
        request = files_pb2.FileRequest(file_id=file_id, owner=owner)
        try:
            meta = await self._stub.GetMeta(request, timeout=_CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, "storage") from err
        return ref_of(meta)

    async def delete(self, file_id: str, owner: str) -> None:
        """Deletes the file ``file_id`` of ``owner``; NotFound when there is none."""
        request = files_pb2.FileRequest(file_id=file_id, owner=owner)
        try:
            await self._stub.DeleteFile(request, timeout=_CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, "storage") from err

    async def list_page(self, owner: str, page_token: str = "") -> tuple[list[FileRef], str]:
        """A page of ``owner``'s files in file id order (up to :data:`LIST_PAGE`), and the next
        page's token ("" after the last)."""
        request = files_pb2.ListFilesRequest(owner=owner, page_token=page_token, limit=LIST_PAGE)
        try:
            reply = await self._stub.ListFiles(request, timeout=_CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, "storage") from err
        return [ref_of(meta) for meta in reply.files], reply.next_page_token
