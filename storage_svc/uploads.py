"""Streaming bytes into one S3 object without holding them: :func:`stream_to_s3`.

Bytes arrive in chunks (at most :data:`~common.file_ids.MAX_CHUNK_BYTES` each) and are
collected into one part of ``part_bytes``; each full part goes to S3 as an UploadPart of a
multipart upload and is dropped, so an upload holds at most one part plus one chunk (and a
second part for the instant it is copied out of the buffer). The
SHA-256 and the size are counted on the way; passing ``max_bytes`` stops the upload at once
with :class:`~common.errors.TooLarge`.

A file smaller than one part never starts a multipart upload: it is written with one PutObject
when the stream ends (1 request instead of 3). A larger one costs 1 CreateMultipartUpload, one
UploadPart per ``part_bytes`` and 1 CompleteMultipartUpload.

Whatever ends the stream early — an error, the size limit, the caller cancelling (a gRPC client
that goes away cancels the handler) — the multipart upload is aborted, shielded from a second
cancellation, so S3 keeps no parts (which it would bill and which no listing of objects shows).
Should even the abort fail, the bucket's AbortIncompleteMultipartUpload rule removes the parts
after a day.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any, NamedTuple

from common.errors import AppError, InvalidInput
from common.file_ids import MAX_CHUNK_BYTES
from storage_svc.filemeta import too_large
from storage_svc.s3calls import S3Calls, describe

logger = logging.getLogger(__name__)

# Aborts still running after their upload was cancelled twice; kept so they are not collected.
_BACKGROUND: set[asyncio.Task[None]] = set()


class Written(NamedTuple):
    """What an upload wrote: its size in bytes and the SHA-256 of its bytes (hex)."""

    size: int
    sha256: str


class _Multipart:
    """One multipart upload in progress."""

    def __init__(self, s3: S3Calls, key: str, upload_id: str) -> None:
        self.s3 = s3
        self.key = key
        self.upload_id = upload_id
        self.parts: list[dict[str, Any]] = []

    @classmethod
    async def create(cls, s3: S3Calls, key: str, content_type: str) -> _Multipart:
        """Starts a multipart upload. Cancelled while S3 may already have made it (the request
        is out, its id not yet back), it is aborted in the background once its id is known:
        otherwise nobody could abort it, and its parts would wait for the lifecycle rule."""
        client = s3.client

        async def made() -> _Multipart:
            answer = await s3.call(
                "CreateMultipartUpload",
                lambda: client.create_multipart_upload(
                    Bucket=s3.bucket,
                    Key=key,
                    ContentType=content_type,
                    ServerSideEncryption="AES256",
                ),
            )
            return cls(s3, key, str(answer["UploadId"]))

        creating = asyncio.ensure_future(made())
        try:
            return await asyncio.shield(creating)
        except asyncio.CancelledError:
            _in_background(_abort_once_made(creating))
            raise

    async def put(self, body: bytes) -> None:
        number = len(self.parts) + 1
        client = self.s3.client
        answer = await self.s3.call(
            "UploadPart",
            lambda: client.upload_part(
                Bucket=self.s3.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                # A stream, not bytes: aiohttp would send large bytes in one blocking write.
                # BytesIO shares the bytes' buffer rather than copying it.
                Body=io.BytesIO(body),
            ),
        )
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    async def complete(self) -> None:
        client = self.s3.client
        await self.s3.call(
            "CompleteMultipartUpload",
            lambda: client.complete_multipart_upload(
                Bucket=self.s3.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts},
            ),
        )

    async def abort(self) -> None:
        client = self.s3.client
        try:
            await self.s3.call(
                "AbortMultipartUpload",
                lambda: client.abort_multipart_upload(
                    Bucket=self.s3.bucket, Key=self.key, UploadId=self.upload_id
                ),
            )
            logger.info("multipart upload of %s aborted", self.key)
        except AppError as exc:
            # The lifecycle rule removes the parts within a day.
            logger.warning("abort of the multipart upload of %s failed: %s", self.key, exc.message)


async def _shielded(work: Coroutine[Any, Any, None]) -> None:
    """Runs ``work`` to its end even if the caller is cancelled (again) meanwhile."""
    await asyncio.shield(_in_background(work))


def _in_background(work: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
    """Runs ``work`` as a task kept until it ends, whatever its starter does."""
    task = asyncio.ensure_future(work)
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    return task


async def _abort_once_made(creating: asyncio.Future[_Multipart]) -> None:
    """Aborts the multipart upload ``creating`` makes, if it makes one."""
    try:
        multipart = await creating
    except Exception:  # S3 made none (the failure was logged by the call)
        return
    await multipart.abort()


async def stream_to_s3(
    s3: S3Calls,
    key: str,
    content_type: str,
    chunks: AsyncIterator[bytes],
    *,
    part_bytes: int,
    max_bytes: int,
) -> Written:
    """Writes the bytes of ``chunks`` to ``key`` (SSE AES256); returns size and SHA-256.

    InvalidInput for a chunk over the chunk limit, TooLarge past ``max_bytes``; either way, and
    on any other failure or cancellation, nothing is left of a multipart upload.
    """
    digest = hashlib.sha256()
    size = 0
    part = bytearray()
    multipart: _Multipart | None = None
    try:
        async for chunk in chunks:
            if len(chunk) > MAX_CHUNK_BYTES:
                raise InvalidInput(f"a chunk carries at most {MAX_CHUNK_BYTES} bytes")
            size += len(chunk)
            if size > max_bytes:
                raise too_large(max_bytes)
            digest.update(chunk)
            part += chunk
            if len(part) >= part_bytes:
                if multipart is None:
                    multipart = await _Multipart.create(s3, key, content_type)
                # Every part but the last has exactly part_bytes: the rest (< one chunk) waits.
                # The buffer is dropped before the part is sent, so a second part exists only
                # for the instant of the copy.
                body = bytes(memoryview(part)[:part_bytes])
                part = part[part_bytes:]
                await multipart.put(body)
                del body
        if multipart is None:
            await _put_whole(s3, key, content_type, bytes(part))
        else:
            if part:
                await multipart.put(bytes(part))
            await multipart.complete()
    except BaseException as exc:
        if multipart is not None:
            logger.info("upload of %s stopped after %d bytes: %s", key, size, describe(exc))
            await _shielded(multipart.abort())
        raise
    return Written(size, digest.hexdigest())


async def _put_whole(s3: S3Calls, key: str, content_type: str, body: bytes) -> None:
    client = s3.client
    await s3.call(
        "PutObject",
        lambda: client.put_object(
            Bucket=s3.bucket,
            Key=key,
            Body=io.BytesIO(body),
            ContentType=content_type,
            ServerSideEncryption="AES256",
        ),
    )
