"""The gateway's view of storage_svc's FileService: files in and out as plain Python values.

Every failed RPC becomes the platform's own error (:mod:`common.errors`) in one place
(:func:`_mapped`), so the routes never see a gRPC type. Two calls need more than a status:

- :meth:`FileClient.upload` writes the request's bytes into the client-streamed ``Upload`` as
  they come, packed into messages of at most :data:`~common.file_ids.MAX_CHUNK_BYTES`, one
  message at a time (each ``write`` waits for the transport, so a slow storage_svc slows the
  reading of the request body rather than filling memory). Whatever stops the bytes early — the
  size limit, a client that went away, a cancelled request — cancels the call, and storage_svc
  aborts the multipart upload.
- :meth:`FileClient.download` reads the first message (metadata and the range served) before it
  returns, so a missing file is an error before any byte of an answer is sent. A range that
  misses the file (OUT_OF_RANGE) is :class:`~common.errors.RangeNotSatisfiable`, carrying the
  file's size from one more metadata read (only on that path).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import grpc

from common import file_ids
from common.channels import open_channel
from common.errors import Internal, from_rpc_error
from common.file_ids import MAX_CHUNK_BYTES
from common.principals import Principal
from common.tls import Identity, Role
from gateway import ranges
from wealthai.storage.v1 import files_pb2 as pb
from wealthai.storage.v1 import files_pb2_grpc

logger = logging.getLogger(__name__)

SERVICE = "storage"

Piece = bytes | bytearray | memoryview
"""A run of bytes of an upload, of any length."""


@dataclass(frozen=True)
class FileInfo:
    """What storage_svc knows about one file (times are RFC 3339 UTC)."""

    file_id: str
    owner: str
    name: str
    content_type: str
    size: int
    sha256: str
    created_at: str
    expires_at: str
    temporary: bool


@dataclass(frozen=True)
class NewFile:
    """What an upload declares before its bytes; ``max_bytes`` is its size limit."""

    name: str
    content_type: str
    temporary: bool = False
    max_bytes: int = 0


class PresignedUrl(NamedTuple):
    url: str
    expires_at: str


class PresignedUpload(NamedTuple):
    file_id: str
    url: str
    headers: dict[str, str]
    expires_at: str


def _info(meta: pb.FileMeta) -> FileInfo:
    return FileInfo(
        file_id=meta.file_id,
        owner=meta.owner,
        name=meta.name,
        content_type=meta.content_type,
        size=meta.size,
        sha256=meta.sha256,
        created_at=meta.created_at,
        expires_at=meta.expires_at,
        temporary=meta.temporary,
    )


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    """Turns a failed RPC into the error of its row in the error table."""
    try:
        yield
    except grpc.aio.AioRpcError as err:
        raise from_rpc_error(err, SERVICE) from None


async def _messages(pieces: AsyncIterator[Piece]) -> AsyncIterator[bytes]:
    """The bytes of ``pieces`` regrouped into messages of at most MAX_CHUNK_BYTES: few large
    messages cost less per byte than many small ones, for one copy of the bytes."""
    held: list[Piece] = []
    size = 0
    async for piece in pieces:
        view = memoryview(piece)
        while len(view):
            take = view[: MAX_CHUNK_BYTES - size]
            held.append(take)
            size += len(take)
            view = view[len(take) :]
            if size == MAX_CHUNK_BYTES:
                yield b"".join(held)
                held, size = [], 0
    if size:
        yield b"".join(held)


class Download:
    """An open download: the file, the inclusive range served, and its bytes."""

    def __init__(
        self,
        info: FileInfo,
        start: int,
        end: int,
        call: grpc.aio.UnaryStreamCall[pb.DownloadRequest, pb.DownloadChunk],
    ) -> None:
        self.info = info
        self.start = start
        self.end = end
        self._call = call

    @property
    def length(self) -> int:
        """Bytes in the range served."""
        return self.end - self.start + 1

    async def chunks(self) -> AsyncIterator[bytes]:
        """The bytes of the range as storage_svc sends them (at most 1 MiB each); the call
        is cancelled when the reading stops early."""
        try:
            with _mapped():
                while True:
                    message = await self._call.read()
                    if not isinstance(message, pb.DownloadChunk):  # grpc.aio.EOF
                        return
                    yield message.data
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Ends the download (nothing happens if it has ended)."""
        self._call.cancel()


class FileClient:
    """Calls storage_svc's FileService on behalf of principals."""

    def __init__(self, target: str, tls: Identity | None, timeout_s: float) -> None:
        """``timeout_s`` is the deadline of each call but the streams, which last as long as
        their bytes take."""
        self._channel = open_channel(target, tls, Role.STORAGE)
        self._stub = files_pb2_grpc.FileServiceStub(self._channel)
        self._timeout = timeout_s

    async def close(self) -> None:
        await self._channel.close()

    async def upload(self, who: Principal, new: NewFile, pieces: AsyncIterator[Piece]) -> FileInfo:
        """Streams ``pieces`` into a new file of ``who``; its metadata once stored.

        An error raised by ``pieces`` (the size limit, a client gone) or a cancellation
        cancels the upload and propagates; storage_svc then keeps nothing of it."""
        call = self._stub.Upload()
        start = pb.UploadStart(
            owner=who.id,
            admin=who.admin,
            name=new.name,
            content_type=new.content_type,
            temporary=new.temporary,
            max_bytes=new.max_bytes,
        )
        try:
            with _mapped():
                await call.write(pb.UploadChunk(start=start))
                async for data in _messages(pieces):
                    await call.write(pb.UploadChunk(data=data))
                await call.done_writing()
                meta = await call
        except BaseException:
            call.cancel()
            raise
        return _info(meta)

    async def download(
        self, who: Principal, file_id: str, asked: ranges.Asked | None = None
    ) -> Download:
        """Opens ``file_id`` for reading ``asked`` (all of it without)."""
        request = pb.DownloadRequest(file_id=file_id, owner=who.id, admin=who.admin)
        if asked is not None and asked.suffix is not None:
            if asked.suffix == 0:  # never satisfiable; storage_svc refuses it as invalid
                raise ranges.unsatisfiable((await self.meta(who, file_id)).size)
            request.suffix_length = asked.suffix
        elif asked is not None:
            request.span.start = asked.start
            if asked.end is not None:
                request.span.end = asked.end
        call = self._stub.Download(request)
        try:
            first = await call.read()
        except grpc.aio.AioRpcError as err:
            if asked is not None and err.code() == grpc.StatusCode.OUT_OF_RANGE:
                raise ranges.unsatisfiable((await self.meta(who, file_id)).size) from None
            raise from_rpc_error(err, SERVICE) from None
        except BaseException:
            call.cancel()
            raise
        if not isinstance(first, pb.DownloadChunk) or not first.HasField("meta"):
            call.cancel()
            raise Internal(f"storage answered a download of {file_id} without its metadata")
        return Download(_info(first.meta), first.range_start, first.range_end, call)

    async def meta(self, who: Principal, file_id: str) -> FileInfo:
        """The metadata of a file ``who`` may see."""
        request = pb.FileRequest(file_id=file_id, owner=who.id, admin=who.admin)
        with _mapped():
            return _info(await self._stub.GetMeta(request, timeout=self._timeout))

    async def list(
        self, who: Principal, limit: int, page_token: str = "", owner: str | None = None
    ) -> tuple[list[FileInfo], str]:
        """A page of ``who``'s files (an admin's: everyone's, or ``owner``'s) and the token of
        the next page ("" when none): the files after ``page_token`` in file id order. Only an
        admin may name an ``owner``: check it first."""
        listed = owner or (None if who.admin else who.id)
        if page_token and listed is not None:
            # One owner's ids all start with its key, so they are all before or all after a
            # token of another owner (which storage_svc refuses as another listing's).
            token_key, own_key = file_ids.check(page_token), file_ids.owner_key(listed)
            if token_key > own_key:
                return [], ""
            if token_key < own_key:
                page_token = ""
        if owner:
            request = pb.ListFilesRequest(owner=owner, admin=False)
        else:
            request = pb.ListFilesRequest(owner=who.id, admin=who.admin)
        request.limit = limit
        request.page_token = page_token
        with _mapped():
            reply = await self._stub.ListFiles(request, timeout=self._timeout)
        return [_info(meta) for meta in reply.files], reply.next_page_token

    async def delete(self, who: Principal, file_id: str) -> None:
        """Deletes a file ``who`` may see."""
        request = pb.FileRequest(file_id=file_id, owner=who.id, admin=who.admin)
        with _mapped():
            await self._stub.DeleteFile(request, timeout=self._timeout)

    async def presign_get(self, who: Principal, file_id: str, expires_s: int = 0) -> PresignedUrl:
        """A URL reading the file straight from S3 (``expires_s`` 0: storage's default)."""
        request = pb.PresignGetRequest(
            file_id=file_id, owner=who.id, admin=who.admin, expires_s=expires_s
        )
        with _mapped():
            reply = await self._stub.PresignGet(request, timeout=self._timeout)
        return PresignedUrl(reply.url, reply.expires_at)

    async def presign_put(
        self, who: Principal, new: NewFile, size: int, sha256: str = "", expires_s: int = 0
    ) -> PresignedUpload:
        """Reserves a file of ``who`` and a URL to PUT its ``size`` bytes to."""
        request = pb.PresignPutRequest(
            owner=who.id,
            name=new.name,
            content_type=new.content_type,
            size=size,
            expires_s=expires_s,
            temporary=new.temporary,
            sha256=sha256,
        )
        with _mapped():
            reply = await self._stub.PresignPut(request, timeout=self._timeout)
        return PresignedUpload(reply.file_id, reply.url, dict(reply.headers), reply.expires_at)

    async def complete(self, who: Principal, file_id: str) -> FileInfo:
        """Records the bytes a pre-signed PUT wrote; the file's metadata."""
        request = pb.FileRequest(file_id=file_id, owner=who.id, admin=who.admin)
        with _mapped():
            return _info(await self._stub.CompletePresigned(request, timeout=self._timeout))
