"""The worker's client of storage_svc's files: a job's input files streamed in, its result files
streamed out, on behalf of the job's owner.

Section jobs carry file references (:class:`FileRef`: id, object key, name, type, size,
SHA-256), never bytes; the worker reads the bytes from storage_svc itself, over the same mutual
TLS as every internal call (a worker certificate reaches storage_svc's ``FileService`` and
nothing else, :data:`common.tls.CALLER_SCOPES`). Every call names the job's owner and never
claims admin rights, so a job reads and writes only its owner's files.

Nothing here is particular to one kind of job: :meth:`FileClient.open` streams any range of a
file of any size in chunks of at most 1 MiB, holding one chunk at a time (gRPC's flow control
keeps the server from running ahead), and checks on the way that storage serves the file the job
was given (its key), exactly the bytes of the range, and for a whole file the SHA-256 it was
given; :meth:`FileClient.write` streams the chunks of any producer into a new file. gRPC
failures become the platform's errors (:mod:`common.errors`): a file deleted or expired since
the task was submitted is :class:`~common.errors.NotFound`; a file that is not what the job was
told is :class:`FileMismatch`.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

import grpc

from common import file_ids
from common.channels import open_channel
from common.errors import Conflict, from_rpc_error
from common.tls import Identity, Role
from wealthai.storage.v1 import files_pb2, files_pb2_grpc
from wealthai.worker.v1 import worker_pb2


@dataclass(frozen=True)
class FileRef:
    """A file a job reads or produced, as storage described it."""

    file_id: str
    key: str
    name: str
    content_type: str
    size: int
    sha256: str = ""

    @classmethod
    def of_message(cls, message: worker_pb2.FileRef | files_pb2.FileMeta) -> FileRef:
        return cls(
            file_id=message.file_id,
            key=message.key,
            name=message.name,
            content_type=message.content_type,
            size=message.size,
            sha256=message.sha256,
        )

    def message(self) -> worker_pb2.FileRef:
        return worker_pb2.FileRef(
            file_id=self.file_id,
            key=self.key,
            name=self.name,
            content_type=self.content_type,
            size=self.size,
            sha256=self.sha256,
        )


LIST_PAGE = 1000  # files per page of a listing
_CALL_TIMEOUT_S = 30.0  # a listing page or a delete (streams have none: a file may be large)


class FileMismatch(Conflict):
    """Storage serves something other than the file a job was given (another key, another size
    or other bytes); ``file_id`` names the file."""

    def __init__(self, file_id: str, what: str) -> None:
        super().__init__(f"file {file_id}: {what}")
        self.file_id = file_id


class FileClient:
    """Streams files from and to storage_svc's ``FileService`` at ``target``."""

    def __init__(self, target: str, tls: Identity | None = None) -> None:
        self._channel = open_channel(target, tls, Role.STORAGE)
        self._stub = files_pb2_grpc.FileServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def open(
        self, ref: FileRef, owner: str, *, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """The bytes of ``ref`` from ``start`` to ``end`` (inclusive; None: to the end), read as
        ``owner``, in chunks of at most 1 MiB. NotFound when the file is gone or is not
        ``owner``'s, TooLarge when ``start`` is past its end, FileMismatch when storage serves
        another file or other bytes than ``ref`` describes."""
        request = files_pb2.DownloadRequest(file_id=ref.file_id, owner=owner)
        whole = start == 0 and end is None
        if not whole:
            request.span.start = start
            if end is not None:
                request.span.end = end
        call = self._stub.Download(request)
        try:
            head = await call.read()
            if not isinstance(head, files_pb2.DownloadChunk):  # the stream ended at once
                raise FileMismatch(ref.file_id, "storage ended the download before its metadata")
            _check_meta(ref, head.meta)
            expected = head.range_end - head.range_start + 1
            digest = hashlib.sha256() if whole and ref.sha256 else None
            received = 0
            while isinstance(message := await call.read(), files_pb2.DownloadChunk):
                received += len(message.data)
                if received > expected:
                    raise FileMismatch(ref.file_id, f"storage sent more than {expected} bytes")
                if digest is not None:
                    digest.update(message.data)
                yield message.data
            if received != expected:
                raise FileMismatch(ref.file_id, f"{received} bytes arrived, {expected} expected")
            if digest is not None and digest.hexdigest() != ref.sha256:
                raise FileMismatch(ref.file_id, "the bytes do not match its SHA-256")
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, "storage") from err
        finally:
            call.cancel()  # a reader that stops early ends the stream; after the end, a no-op

    async def write(
        self,
        owner: str,
        name: str,
        content_type: str,
        chunks: AsyncIterable[bytes],
        *,
        temporary: bool = False,
    ) -> FileRef:
        """Streams ``chunks`` into a new file of ``owner``; its reference once stored. Chunks of
        any size are sent in messages of at most 1 MiB. A failure, or the caller being
        cancelled, leaves nothing behind in storage (storage aborts the upload)."""

        async def messages() -> AsyncIterator[files_pb2.UploadChunk]:
            yield files_pb2.UploadChunk(
                start=files_pb2.UploadStart(
                    owner=owner, name=name, content_type=content_type, temporary=temporary
                )
            )
            async for chunk in chunks:
                for offset in range(0, len(chunk), file_ids.MAX_CHUNK_BYTES):
                    yield files_pb2.UploadChunk(
                        data=chunk[offset : offset + file_ids.MAX_CHUNK_BYTES]
                    )

        try:
            meta = await self._stub.Upload(messages())
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, "storage") from err
        return FileRef.of_message(meta)

    async def list_page(self, owner: str, page_token: str = "") -> tuple[list[FileRef], str]:
        """A page of ``owner``'s files in file id order, and the next page's token ("" after
        the last)."""
        request = files_pb2.ListFilesRequest(owner=owner, page_token=page_token, limit=LIST_PAGE)
        try:
            reply = await self._stub.ListFiles(request, timeout=_CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, "storage") from err
        return [FileRef.of_message(meta) for meta in reply.files], reply.next_page_token

    async def delete(self, file_id: str, owner: str) -> None:
        """Deletes ``owner``'s file ``file_id``; NotFound when there is none."""
        try:
            request = files_pb2.FileRequest(file_id=file_id, owner=owner)
            await self._stub.DeleteFile(request, timeout=_CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err, "storage") from err


def _check_meta(ref: FileRef, meta: files_pb2.FileMeta) -> None:
    if ref.key and meta.key != ref.key:
        raise FileMismatch(ref.file_id, "storage keeps it under another key than the job names")
    if meta.size != ref.size:
        raise FileMismatch(ref.file_id, f"it has {meta.size} bytes, the job says {ref.size}")
