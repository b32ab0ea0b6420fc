"""FileStore: the platform's files in S3 — streamed uploads and downloads, pre-signed URLs,
ownership, expiry.

**Layout** under the files prefix (``files/`` by default, apart from the task prefix)::

    files/data/<owner key>/<file id>          the bytes, SSE AES256
    files/meta/<owner key>/<file id>.json     the metadata record, SSE AES256

The owner key is the first 32 hex digits of SHA-256 of the owner's principal id and the file
id (``f_<owner key>_<24 random hex>``, :mod:`common.file_ids`) starts with it, so an id names
its keys. A caller who is not an admin is only ever looked up under its own owner key: another
owner's id is NOT_FOUND before any S3 request, and listing reads one owner's prefix only. The
record's ``owner`` is checked as well.

**Why a record of its own**, not the S3 user metadata of the bytes: user metadata is fixed when
the object is created, i.e. at CreateMultipartUpload, but the SHA-256 and size are known only at
the end. Writing them afterwards into the bytes' own metadata takes a CopyObject of the object
onto itself, which S3 bills as a PUT but which rewrites the whole object (seconds for a GiB, and
an UploadPartCopy per 5 GiB beyond that). A record of a few hundred bytes costs one small PUT,
whatever the size; and ListObjectsV2 returns no user metadata anyway, so a listing with names
needs one read per file either way. Records hold the name as UTF-8 JSON, so no header encoding
of names is needed.

**What each call costs in S3 requests**::

    Upload              < one part: 1 PutObject + 1 PutObject (record)
                        else: 1 CreateMultipartUpload + 1 UploadPart per part (8 MiB)
                              + 1 CompleteMultipartUpload + 1 PutObject (record)
                        failed/cancelled: + 1 AbortMultipartUpload
    Download            1 GetObject (record) + 1 GetObject (bytes, ranged); none for an empty
                        file
    GetMeta             1 GetObject (record)
    ListFiles           1 ListObjectsV2 per 1000 records + 1 GetObject per record (concurrent)
    DeleteFile          1 GetObject (record) + 1 DeleteObjects (both objects)
    PresignGet          1 GetObject (record); signing is local
    PresignPut          1 PutObject (pending record); signing is local
    CompletePresigned   1 GetObject (record) + 1 HeadObject + 1 PutObject (record)
    expired on a read   + 1 DeleteObjects
    sweep               1 ListObjectsV2 per 1000 keys + 1 DeleteObjects per 1000 expired keys

Another owner's file costs nothing: it is NOT_FOUND before any request.

**Expiry.** A file expires ``file_retention_hours`` after it was created (``expires_at`` in its
record). Every read checks it: an expired file is NOT_FOUND and is deleted on the spot. The
sweeper (:mod:`storage_svc.sweeper`) deletes what nobody reads, by the objects' LastModified and
the current setting, and the bucket's lifecycle rule (whole days, so rounded up) is the
backstop; both also catch bytes whose record was never written (an upload that failed between
its last part and its record, a pre-signed PUT never completed).

**Pre-signed uploads.** PresignPut writes a *pending* record (invisible to every read) and signs
a PUT of exactly ``size`` bytes that must carry ``x-amz-server-side-encryption: AES256`` and the
content type. S3 cannot compute a SHA-256 of the whole object for us (its multipart checksums
are checksums of part checksums), so a pre-signed file carries a SHA-256 only when the client
declared one: it is then signed into the URL as ``x-amz-checksum-sha256``, S3 refuses bytes that
do not match it, and CompletePresigned records it. Without one, ``sha256`` is empty.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import logging
import math
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any, NamedTuple
from urllib.parse import quote

import aiohttp

from common import file_ids
from common.errors import AppError, Conflict, InvalidInput, NotFound, Unavailable, WrongState
from common.principals import Principal
from common.timeutil import utcnow
from storage_svc import filemeta
from storage_svc.bucket import ensure_cors, ensure_rules, file_rules
from storage_svc.filemeta import ByteRange, FileMeta, Layout
from storage_svc.s3calls import S3Calls, describe
from storage_svc.uploads import stream_to_s3

logger = logging.getLogger(__name__)

DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
# The largest object one PutObject (and so one pre-signed PUT) may write.
MAX_SINGLE_PUT = 5 * 1024**3


@dataclasses.dataclass(frozen=True)
class NewFile:
    """What an upload declares before its bytes: owner, name, type, flags and its own limit."""

    owner: str
    name: str
    content_type: str = ""
    temporary: bool = False
    max_bytes: int = 0


class PresignedUrl(NamedTuple):
    url: str
    expires_at: datetime


class PresignedUpload(NamedTuple):
    file_id: str
    url: str
    headers: dict[str, str]
    expires_at: datetime


class Opened:
    """A file opened for reading: its metadata, the inclusive range served and its bytes."""

    def __init__(self, store: FileStore, meta: FileMeta, start: int, end: int) -> None:
        self.meta = meta
        self.start = start
        self.end = end
        self._store = store

    async def chunks(self) -> AsyncIterator[bytes]:
        """The bytes of the range, in chunks of at most ``file_download_chunk_bytes``."""
        if self.end < self.start:
            return
        s3 = self._store.s3
        client = s3.client
        answer = await s3.call(
            "GetObject",
            lambda: client.get_object(
                Bucket=s3.bucket,
                Key=self._store.layout.data_key(self.meta.file_id),
                Range=f"bytes={self.start}-{self.end}",
            ),
            not_found=f"file {self.meta.file_id} not found",
        )
        size = s3.settings.file_download_chunk_bytes
        async with answer["Body"] as response:
            try:
                async for chunk in response.content.iter_chunked(size):
                    yield chunk
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise Unavailable(f"S3 broke off the download: {describe(exc)}") from exc


class FileStore:
    """Files in the bucket of an :class:`S3Calls`, whose client it borrows (the
    :class:`~storage_svc.store.TaskStore` opens and closes it)."""

    def __init__(self, s3: S3Calls, *, clock: Callable[[], datetime] = utcnow) -> None:
        """``clock`` tells the current UTC time (creation and expiry)."""
        self.s3 = s3
        self.settings = s3.settings
        self.layout = Layout(s3.settings.files_prefix)
        self.retention = timedelta(hours=s3.settings.file_retention_hours)
        self._clock = clock
        self._cleanups: set[asyncio.Future[None]] = set()  # bytes being removed

    def now(self) -> datetime:
        return self._clock()

    def _stamp(self) -> datetime:
        """Now, to the second: records keep whole seconds."""
        return self._clock().replace(microsecond=0)

    async def prepare(self) -> None:
        """Puts the files' lifecycle rules and the CORS rule on the bucket (idempotent)."""
        s = self.settings
        await ensure_rules(self.s3, file_rules(s.files_prefix, s.file_retention_hours))
        await ensure_cors(self.s3, s.cors_origins)

    async def upload(self, new: NewFile, chunks: AsyncIterator[bytes]) -> FileMeta:
        """Streams ``chunks`` into a new file of ``new.owner``; returns its metadata.

        InvalidInput for a bad name or type, TooLarge as soon as the limit is passed.
        """
        filemeta.caller(new.owner, False)
        name = filemeta.check_name(new.name)
        content_type = filemeta.check_content_type(new.content_type)
        limit = filemeta.size_limit(new.max_bytes, self.settings.file_max_bytes)
        file_id = file_ids.new(new.owner)
        key = self.layout.data_key(file_id)
        written = await stream_to_s3(
            self.s3,
            key,
            content_type,
            chunks,
            part_bytes=self.settings.file_part_bytes,
            max_bytes=limit,
        )
        now = self._stamp()
        meta = FileMeta(
            file_id=file_id,
            owner=new.owner,
            name=name,
            content_type=content_type,
            size=written.size,
            sha256=written.sha256,
            created_at=now,
            expires_at=now + self.retention,
            temporary=new.temporary,
        )
        # Every byte is stored: the record is written whatever happens to the caller. A caller
        # that goes away (a worker killed) could otherwise leave a record S3 had stored while
        # its bytes were deleted: a file listed but unreadable. Now it is whole (and expires
        # like any other), or, when the record cannot be written, its bytes are removed.
        record = asyncio.ensure_future(self._write(meta, if_none_match=True))
        record.add_done_callback(lambda done: self._unrecorded(done, file_id, key))
        await asyncio.shield(record)
        logger.info(
            "file %s uploaded: %d bytes, %s, temporary=%s",
            file_id,
            meta.size,
            content_type,
            meta.temporary,
        )
        return meta

    def _unrecorded(self, record: asyncio.Future[None], file_id: str, key: str) -> None:
        """Removes the bytes of a file whose record could not be written (bytes without a
        record are invisible; removed now rather than at the sweep)."""
        if record.cancelled() or record.exception() is not None:
            self._cleanups.add(task := asyncio.ensure_future(self._drop_bytes(file_id, key)))
            task.add_done_callback(self._cleanups.discard)

    async def _drop_bytes(self, file_id: str, key: str) -> None:
        try:
            await self._delete_objects([key])
        except AppError as exc:
            logger.warning("file %s: bytes left for the sweeper: %s", file_id, exc.message)

    async def meta(self, who: Principal, file_id: str) -> FileMeta:
        """The metadata of a file ``who`` may see; NotFound otherwise or once expired."""
        meta, _ = await self._find(who, file_id)
        return meta

    async def open(self, who: Principal, file_id: str, asked: ByteRange | None = None) -> Opened:
        """Opens a file for reading ``asked`` (all without); TooLarge for a range that misses
        the file."""
        meta, _ = await self._find(who, file_id)
        start, end = filemeta.resolve_range(meta.size, asked)
        return Opened(self, meta, start, end)

    async def delete(self, who: Principal, file_id: str) -> None:
        """Deletes a file ``who`` may see; NotFound when there is none."""
        await self._find(who, file_id)
        await self._delete_file(file_id)
        logger.info("file %s deleted", file_id)

    async def presign_get(self, who: Principal, file_id: str, expires_s: int = 0) -> PresignedUrl:
        """A URL reading the file straight from S3, valid for ``expires_s`` (default if 0),
        within the maximum and the file's own life."""
        meta, _ = await self._find(who, file_id)
        now = self.now()
        seconds = min(
            self._validity(expires_s),
            math.floor((meta.expires_at - now).total_seconds()),
        )
        if seconds < 1:
            raise NotFound(f"file {file_id} not found")
        client = self.s3.client
        url = await client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.s3.bucket,
                "Key": self.layout.data_key(file_id),
                "ResponseContentDisposition": (
                    f"attachment; filename*=UTF-8''{quote(meta.name, safe='')}"
                ),
                "ResponseContentType": meta.content_type,
            },
            ExpiresIn=seconds,
        )
        return PresignedUrl(str(url), now + timedelta(seconds=seconds))

    async def presign_put(
        self, new: NewFile, size: int, expires_s: int = 0, sha256: str = ""
    ) -> PresignedUpload:
        """Reserves a file (a pending record) and signs a PUT of exactly ``size`` bytes."""
        filemeta.caller(new.owner, False)
        name = filemeta.check_name(new.name)
        content_type = filemeta.check_content_type(new.content_type)
        sha = filemeta.check_sha256(sha256)
        if size < 0:
            raise InvalidInput("size must not be negative")
        limit = min(self.settings.file_max_bytes, MAX_SINGLE_PUT)
        if size > limit:
            raise filemeta.too_large(limit)
        seconds = self._validity(expires_s)
        now = self._stamp()
        file_id = file_ids.new(new.owner)
        pending = FileMeta(
            file_id=file_id,
            owner=new.owner,
            name=name,
            content_type=content_type,
            size=size,
            sha256=sha,
            created_at=now,
            expires_at=now + self.retention,
            temporary=new.temporary,
            pending=True,
        )
        await self._write(pending, if_none_match=True)
        params: dict[str, Any] = {
            "Bucket": self.s3.bucket,
            "Key": self.layout.data_key(file_id),
            "ContentType": content_type,
            "ContentLength": size,
            "ServerSideEncryption": "AES256",
        }
        headers = {
            "Content-Type": content_type,
            "Content-Length": str(size),
            "x-amz-server-side-encryption": "AES256",
        }
        if sha:
            checksum = base64.b64encode(bytes.fromhex(sha)).decode()
            params["ChecksumSHA256"] = checksum
            headers["x-amz-checksum-sha256"] = checksum
        url = await self.s3.client.generate_presigned_url(
            "put_object", Params=params, ExpiresIn=seconds
        )
        logger.info("file %s reserved for a pre-signed upload of %d bytes", file_id, size)
        return PresignedUpload(file_id, str(url), headers, now + timedelta(seconds=seconds))

    async def complete_presigned(self, who: Principal, file_id: str) -> FileMeta:
        """Records the bytes a pre-signed PUT wrote; WrongState while none are there,
        InvalidInput (and the bytes deleted) when they are not what was signed for."""
        meta, version = await self._find(who, file_id, pending=True)
        if not meta.pending:
            return meta
        key = self.layout.data_key(file_id)
        client = self.s3.client
        try:
            head = await self.s3.call(
                "HeadObject",
                lambda: client.head_object(Bucket=self.s3.bucket, Key=key, ChecksumMode="ENABLED"),
            )
        except NotFound:
            raise WrongState(f"file {file_id} has not been uploaded yet") from None
        size = int(head["ContentLength"])
        checksum = _hex_of(head.get("ChecksumSHA256"))
        wrong = (
            f"{size} bytes arrived, {meta.size} were signed for"
            if size != meta.size
            else "the bytes are not encrypted with AES256"
            if head.get("ServerSideEncryption") != "AES256"
            else "the SHA-256 differs from the one declared"
            if meta.sha256 and checksum and checksum != meta.sha256
            else None
        )
        if wrong is not None:
            await self._delete_objects([key])
            raise InvalidInput(f"file {file_id} is refused: {wrong}")
        now = self._stamp()
        done = dataclasses.replace(
            meta, pending=False, sha256=meta.sha256 or checksum, created_at=now
        )
        done = dataclasses.replace(done, expires_at=now + self.retention)
        try:
            await self._write(done, if_match=version)
        except Conflict:
            # Completed by a concurrent call meanwhile: answer as it did.
            again, _ = await self._find(who, file_id)
            return again
        logger.info("file %s uploaded through a pre-signed URL: %d bytes", file_id, size)
        return done

    async def sweep(self) -> int:
        """Deletes every object under the files prefix older than the retention; returns how
        many. Its cost: 1 LIST per 1000 keys + 1 DeleteObjects per 1000 expired keys."""
        cutoff = self.now() - self.retention
        client = self.s3.client
        kwargs: dict[str, Any] = {"Bucket": self.s3.bucket, "Prefix": self.layout.prefix}
        expired: list[str] = []
        while True:
            answer = await self.s3.call("ListObjectsV2", lambda: client.list_objects_v2(**kwargs))
            expired += [
                item["Key"] for item in answer.get("Contents", []) if item["LastModified"] <= cutoff
            ]
            if not answer.get("IsTruncated"):
                break
            kwargs["ContinuationToken"] = answer["NextContinuationToken"]
        for start in range(0, len(expired), 1000):
            await self._delete_objects(expired[start : start + 1000])
        if expired:
            logger.info("sweep deleted %d expired file object(s)", len(expired))
        return len(expired)

    def _validity(self, expires_s: int) -> int:
        if expires_s < 0:
            raise InvalidInput("expires_s must not be negative")
        return min(expires_s or self.settings.presign_default_s, self.settings.presign_max_s)

    async def _find(
        self, who: Principal, file_id: str, *, pending: bool = False
    ) -> tuple[FileMeta, str]:
        """The record of a file ``who`` may see and its version; NotFound for a missing,
        foreign, expired (deleted on the way) or — unless ``pending`` — pending file."""
        missing = NotFound(f"file {file_id} not found")
        if not filemeta.may_reach(who, file_id):
            raise missing
        got = await self.s3.read(self.layout.meta_key(file_id))
        meta = None if got is None else _decoded(got.body)
        if got is None or meta is None or not who.may_see(meta.owner) or meta.file_id != file_id:
            raise missing
        if meta.expired(self.now()):
            await self._delete_file(file_id)
            logger.info("file %s expired at %s and is deleted", file_id, meta.expires_at)
            raise missing
        if meta.pending and not pending:
            raise missing
        return meta, got.version

    async def _write(
        self, meta: FileMeta, *, if_none_match: bool = False, if_match: str | None = None
    ) -> None:
        await self.s3.put_json(
            self.layout.meta_key(meta.file_id),
            filemeta.encode(meta),
            what=f"file {meta.file_id}",
            if_none_match=if_none_match,
            if_match=if_match,
        )

    async def _delete_file(self, file_id: str) -> None:
        # The record first in the list: should only one go, the file is gone for readers.
        await self._delete_objects([self.layout.meta_key(file_id), self.layout.data_key(file_id)])

    async def _delete_objects(self, keys: list[str]) -> None:
        client = self.s3.client
        answer = await self.s3.call(
            "DeleteObjects",
            lambda: client.delete_objects(
                Bucket=self.s3.bucket,
                Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
            ),
        )
        for error in answer.get("Errors", []):
            logger.warning("could not delete %s: %s", error.get("Key"), error.get("Code"))

    async def _list_ids(self, prefix: str, limit: int, after: str) -> tuple[list[str], bool]:
        """Up to ``limit`` file ids of records under ``prefix`` after ``after``; and whether
        more keys follow."""
        client = self.s3.client
        kwargs: dict[str, Any] = {"Bucket": self.s3.bucket, "Prefix": prefix}
        if after:
            kwargs["StartAfter"] = self.layout.meta_key(after)
        ids: list[str] = []
        while True:
            kwargs["MaxKeys"] = limit - len(ids)
            answer = await self.s3.call("ListObjectsV2", lambda: client.list_objects_v2(**kwargs))
            for item in answer.get("Contents", []):
                file_id = self.layout.file_id_of(item["Key"])
                if file_id is not None:
                    ids.append(file_id)
            more = bool(answer.get("IsTruncated"))
            if len(ids) >= limit or not more:
                return ids, more
            kwargs["ContinuationToken"] = answer["NextContinuationToken"]

    # Defined last: inside the class body, later annotations would take "list" for it.
    async def list(
        self, who: Principal, limit: int = 0, page_token: str = ""
    ) -> tuple[list[FileMeta], str]:
        """A page of the files ``who`` may see (an admin: all), in file id order, expired and
        pending ones left out; and the token of the next page ("" when done)."""
        if limit == 0:
            limit = DEFAULT_LIST_LIMIT
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIST_LIMIT} (0 means 100)")
        if page_token and not filemeta.may_reach(who, page_token):
            raise InvalidInput("page_token belongs to another listing")
        owner_key = None if who.admin else file_ids.owner_key(who.id)
        ids, more = await self._list_ids(self.layout.meta_prefix(owner_key), limit, page_token)
        found = await self.s3.read_many([self.layout.meta_key(i) for i in ids])
        now = self.now()
        files = []
        for got in found:
            meta = None if got is None else _decoded(got.body)
            if meta and not meta.pending and not meta.expired(now) and who.may_see(meta.owner):
                files.append(meta)
        return files, ids[-1] if more and ids else ""


def _decoded(body: bytes) -> FileMeta | None:
    try:
        return filemeta.decode(body)
    except (ValueError, TypeError, KeyError) as exc:
        logger.error("unreadable file record: %s", exc)
        return None


def _hex_of(checksum: Any) -> str:
    """A base64 ChecksumSHA256 of S3 as hex; "" when there is none (or a composite one)."""
    if not isinstance(checksum, str) or "-" in checksum:
        return ""
    try:
        raw = base64.b64decode(checksum, validate=True)
    except (binascii.Error, ValueError):
        return ""
    return raw.hex() if len(raw) == 32 else ""
