"""The gRPC face of the files: ``wealthai.storage.v1.FileService`` over a FileStore.

A thin adapter like :mod:`storage_svc.servicer`: it reads the caller (owner, admin) and the
fields of each message, calls the store, and turns its records into messages. Errors the store
raises reach the error interceptor, which answers with the status of the error table (another
owner's file: NOT_FOUND; over the size limit or outside the file: OUT_OF_RANGE).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from common.errors import InvalidInput
from storage_svc import filemeta
from storage_svc.filemeta import ByteRange, FileMeta, Layout
from storage_svc.files import FileStore, NewFile
from wealthai.storage.v1 import files_pb2, files_pb2_grpc

FILE_SERVICE_NAME: str = files_pb2.DESCRIPTOR.services_by_name["FileService"].full_name


def to_message(meta: FileMeta, layout: Layout) -> files_pb2.FileMeta:
    """The FileMeta message of a record; ``layout`` names the key of its bytes."""
    return files_pb2.FileMeta(
        file_id=meta.file_id,
        owner=meta.owner,
        name=meta.name,
        content_type=meta.content_type,
        size=meta.size,
        sha256=meta.sha256,
        created_at=filemeta.rfc3339(meta.created_at),
        expires_at=filemeta.rfc3339(meta.expires_at),
        temporary=meta.temporary,
        key=layout.data_key(meta.file_id),
    )


def _range(request: files_pb2.DownloadRequest) -> ByteRange | None:
    which = request.WhichOneof("range")
    if which == "span":
        span = request.span
        return ByteRange(span.start, span.end if span.HasField("end") else None)
    if which == "suffix_length":
        return ByteRange(suffix=request.suffix_length)
    return None


async def _data(requests: AsyncIterator[files_pb2.UploadChunk]) -> AsyncIterator[bytes]:
    async for message in requests:
        if message.WhichOneof("part") != "data":
            raise InvalidInput("only the first message of an upload may be start")
        yield message.data


class FileServicer(files_pb2_grpc.FileServiceServicer):
    """Implements FileService by delegating to one :class:`FileStore`."""

    def __init__(self, files: FileStore) -> None:
        self._files = files

    def _message(self, meta: FileMeta) -> files_pb2.FileMeta:
        return to_message(meta, self._files.layout)

    async def Upload(
        self,
        request_iterator: AsyncIterator[files_pb2.UploadChunk],
        context: grpc.aio.ServicerContext[files_pb2.UploadChunk, files_pb2.FileMeta],
    ) -> files_pb2.FileMeta:
        first = await anext(request_iterator, None)
        if first is None or first.WhichOneof("part") != "start":
            raise InvalidInput("the first message of an upload must be start")
        start = first.start
        new = NewFile(
            owner=start.owner,
            name=start.name,
            content_type=start.content_type,
            temporary=start.temporary,
            max_bytes=start.max_bytes,
        )
        return self._message(await self._files.upload(new, _data(request_iterator)))

    async def Download(
        self,
        request: files_pb2.DownloadRequest,
        context: grpc.aio.ServicerContext[files_pb2.DownloadRequest, files_pb2.DownloadChunk],
    ) -> AsyncIterator[files_pb2.DownloadChunk]:
        who = filemeta.caller(request.owner, request.admin)
        opened = await self._files.open(who, request.file_id, _range(request))
        yield files_pb2.DownloadChunk(
            meta=self._message(opened.meta), range_start=opened.start, range_end=opened.end
        )
        async for data in opened.chunks():
            yield files_pb2.DownloadChunk(data=data)

    async def GetMeta(
        self,
        request: files_pb2.FileRequest,
        context: grpc.aio.ServicerContext[files_pb2.FileRequest, files_pb2.FileMeta],
    ) -> files_pb2.FileMeta:
        who = filemeta.caller(request.owner, request.admin)
        return self._message(await self._files.meta(who, request.file_id))

    async def ListFiles(
        self,
        request: files_pb2.ListFilesRequest,
        context: grpc.aio.ServicerContext[files_pb2.ListFilesRequest, files_pb2.ListFilesResponse],
    ) -> files_pb2.ListFilesResponse:
        who = filemeta.caller(request.owner, request.admin)
        files, token = await self._files.list(who, request.limit, request.page_token)
        return files_pb2.ListFilesResponse(
            files=[self._message(meta) for meta in files], next_page_token=token
        )

    async def DeleteFile(
        self,
        request: files_pb2.FileRequest,
        context: grpc.aio.ServicerContext[files_pb2.FileRequest, files_pb2.DeleteFileResponse],
    ) -> files_pb2.DeleteFileResponse:
        who = filemeta.caller(request.owner, request.admin)
        await self._files.delete(who, request.file_id)
        return files_pb2.DeleteFileResponse()

    async def PresignGet(
        self,
        request: files_pb2.PresignGetRequest,
        context: grpc.aio.ServicerContext[files_pb2.PresignGetRequest, files_pb2.PresignedUrl],
    ) -> files_pb2.PresignedUrl:
        who = filemeta.caller(request.owner, request.admin)
        url = await self._files.presign_get(who, request.file_id, request.expires_s)
        return files_pb2.PresignedUrl(url=url.url, expires_at=filemeta.rfc3339(url.expires_at))

    async def PresignPut(
        self,
        request: files_pb2.PresignPutRequest,
        context: grpc.aio.ServicerContext[files_pb2.PresignPutRequest, files_pb2.PresignedUpload],
    ) -> files_pb2.PresignedUpload:
        new = NewFile(
            owner=request.owner,
            name=request.name,
            content_type=request.content_type,
            temporary=request.temporary,
        )
        upload = await self._files.presign_put(new, request.size, request.expires_s, request.sha256)
        return files_pb2.PresignedUpload(
            file_id=upload.file_id,
            url=upload.url,
            headers=upload.headers,
            expires_at=filemeta.rfc3339(upload.expires_at),
        )

    async def CompletePresigned(
        self,
        request: files_pb2.FileRequest,
        context: grpc.aio.ServicerContext[files_pb2.FileRequest, files_pb2.FileMeta],
    ) -> files_pb2.FileMeta:
        who = filemeta.caller(request.owner, request.admin)
        return self._message(await self._files.complete_presigned(who, request.file_id))
