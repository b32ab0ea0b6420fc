"""TaskStore: the task documents in S3, written with compare-and-swap, and listed cheaply.

Layout under the prefix (``tasks/`` by default)::

    tasks/task_20251230182721_01e09305.json   the task document (SSE AES256)
    tasks/_active/task_20251230182721_01e09305 empty marker: the task is not finished yet

**Compare-and-swap.** Every document write may carry the version (ETag) it replaces
(``If-Match``) or demand that no document exists yet (``If-None-Match: *``). S3 evaluates the
condition atomically, so of many writers holding the same version exactly one succeeds and the
others get :class:`~common.errors.Conflict`; they re-read and try again. If a write whose earlier
attempt timed out is rejected on retry, the store re-reads the object: when it holds exactly our
bytes, that earlier attempt did land and its version is returned instead of a false conflict.

**Active index, and why a crash cannot lose an unfinished task.** The first write of a task
(``ActiveIndex.ADD``) stores the marker *before* the document; the write that finishes the task
(``ActiveIndex.REMOVE``) deletes the marker only *after* the document write succeeded; deleting
a task deletes the document first and the marker second. A crash between the two steps therefore
leaves at worst a *stale* marker — one whose task is missing or already finished — and never an
unfinished task without a marker. Whoever reads :meth:`TaskStore.list_active` loads each task
and drops the ids that are missing or finished (a delete of the id clears the marker). Stale
markers also expire with the lifecycle rule.

**What listing costs.** Task ids embed their UTC creation second, so keys sort by creation time,
but ListObjectsV2 only lists ascending. :meth:`TaskStore.list` therefore walks back one UTC day
at a time with ``Prefix=<prefix>task_YYYYMMDD``, reverses each day's keys and stops as soon as
the page is filled; it never walks further back than ``task_retention_days + 1`` days, since the
lifecycle rule has expired anything older. One call costs about

- 1 LIST per day walked + 1 per 1000 keys in those days (the day of the page token is listed
  only up to the token),
- without a status filter: ``page_size`` GETs, run concurrently (bounded);
- with a status filter: at most ``list_scan_limit`` GETs, newest first in small concurrent
  batches; if the page is not filled by then, the call returns what it found and a token to
  continue.

Listing never reads every task document: the key names alone give the order, so only the
documents of the page (or, filtered, the bounded scan) are read. The last page's token is empty:
the store looks one task past a full page to know whether anything older exists. Documents
deleted between the LIST and the GET are skipped, so a page may hold fewer tasks than asked.

:meth:`TaskStore.list_active` is one LIST per 1000 unfinished tasks, whatever the total.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, NamedTuple

from common.errors import AppError, Conflict, InvalidInput, NotFound
from common.timeutil import utcnow
from storage_svc.bucket import ensure_bucket
from storage_svc.documents import (
    TASK_ID_RE,
    check_document,
    check_task_id,
    decode_active_token,
    decode_tasks_token,
    encode_active_token,
    encode_tasks_token,
    status_of,
)
from storage_svc.listing import NewestFirst
from storage_svc.s3calls import S3Calls
from storage_svc.settings import StorageSettings

logger = logging.getLogger(__name__)

ACTIVE_DIR = "_active/"
# Another replica's clock may run slightly ahead; its newest ids can already carry tomorrow's date.
_CLOCK_SKEW = timedelta(minutes=10)


class ActiveIndex(enum.StrEnum):
    """What a write does to the index of unfinished tasks."""

    UNCHANGED = "unchanged"
    ADD = "add"
    REMOVE = "remove"


class StoredTask(NamedTuple):
    """One stored task document and its version (ETag)."""

    task_id: str
    document: bytes
    version: str


TaskPage = tuple[list[StoredTask], str]
IdPage = tuple[list[str], str]


class TaskStore:
    """Task documents in one S3 bucket under one prefix, over one long-lived client.

    Use ``async with TaskStore(settings) as store`` or :meth:`start` / :meth:`close`.
    """

    def __init__(
        self,
        settings: StorageSettings,
        *,
        clock: Callable[[], datetime] = utcnow,
        session: Any = None,
    ) -> None:
        """``clock`` tells the current UTC time (listing walks back from it); ``session`` is an
        ``aioboto3.Session`` to share, a new one by default."""
        self.settings = settings
        self.s3 = S3Calls(settings, session)
        self._clock = clock
        self._prefix = settings.s3_prefix
        self._active_prefix = settings.s3_prefix + ACTIVE_DIR
        self._reads = asyncio.Semaphore(settings.list_get_concurrency)

    async def start(self) -> None:
        """Opens the S3 client (no S3 request is made yet)."""
        await self.s3.open()

    async def close(self) -> None:
        """Closes the S3 client."""
        await self.s3.close()

    async def __aenter__(self) -> TaskStore:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def document_key(self, task_id: str) -> str:
        """The object key of a task's document."""
        return f"{self._prefix}{task_id}.json"

    def marker_key(self, task_id: str) -> str:
        """The object key of a task's active-index marker."""
        return f"{self._active_prefix}{task_id}"

    async def ensure_bucket(self) -> None:
        """Creates the bucket if missing and puts the retention lifecycle rule (idempotent)."""
        s = self.settings
        await ensure_bucket(self.s3, s.s3_prefix, s.task_retention_days, create=s.create_bucket)

    async def put(
        self,
        task_id: str,
        document: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
        active_index: ActiveIndex = ActiveIndex.UNCHANGED,
    ) -> str:
        """Writes a task document; returns its new version.

        ``if_match`` writes only over that version, ``if_none_match`` only if no document
        exists; otherwise :class:`Conflict`. The document is checked first (InvalidInput).
        """
        check_task_id(task_id)
        status = check_document(task_id, document)
        if if_match is not None and if_none_match:
            raise InvalidInput("give at most one precondition: if_match or if_none_match")
        if if_match is not None and not if_match:
            raise InvalidInput("if_match is empty: pass the version returned by the last read")
        if active_index is ActiveIndex.ADD:
            await self._put_marker(task_id)
        version = await self._put_document(task_id, document, if_match, if_none_match)
        logger.debug("task %s stored: status %s, version %s", task_id, status, version)
        if active_index is ActiveIndex.REMOVE:
            try:
                await self._delete_marker(task_id)
            except AppError as exc:
                # The document is written; a stale marker is tolerated by every reader.
                logger.warning(
                    "task %s finished but its active marker stays (%s); readers drop it",
                    task_id,
                    exc.message,
                )
        return version

    async def get(self, task_id: str) -> tuple[bytes, str]:
        """The stored document of a task and its version; NotFound when there is none."""
        check_task_id(task_id)
        found = await self._read(task_id)
        if found is None:
            raise NotFound(f"task {task_id} not found")
        return found.document, found.version

    async def delete(self, task_id: str, if_match: str | None = None) -> None:
        """Deletes a task's document (only at version ``if_match`` if given), then its marker.

        Without ``if_match`` deleting a missing task succeeds (deletes are idempotent).
        """
        check_task_id(task_id)
        client = self.s3.client
        kwargs: dict[str, Any] = {"Bucket": self.s3.bucket, "Key": self.document_key(task_id)}
        if if_match:
            kwargs["IfMatch"] = if_match
        try:
            await self.s3.call(
                "DeleteObject",
                lambda: client.delete_object(**kwargs),
                not_found=f"task {task_id} not found",
                conflict=_changed(task_id, if_match or ""),
            )
        except NotFound:
            await self._delete_marker(task_id)
            raise
        await self._delete_marker(task_id)
        logger.info("task %s deleted", task_id)

    async def list_active(self, page_size: int, page_token: str = "") -> IdPage:
        """Ids of unfinished tasks, oldest first, from the active index (no document is read)."""
        _check_page_size(page_size, 1000)
        client = self.s3.client
        kwargs: dict[str, Any] = {
            "Bucket": self.s3.bucket,
            "Prefix": self._active_prefix,
            "Delimiter": "/",
            "MaxKeys": page_size,
        }
        if page_token:
            kwargs["StartAfter"] = self.marker_key(decode_active_token(page_token))
        answer = await self.s3.call("ListObjectsV2", lambda: client.list_objects_v2(**kwargs))
        start = len(self._active_prefix)
        ids = [
            item["Key"][start:]
            for item in answer.get("Contents", [])
            if TASK_ID_RE.match(item["Key"][start:])
        ]
        more = bool(answer.get("IsTruncated")) and bool(ids)
        return ids, encode_active_token(ids[-1]) if more else ""

    async def _scan_for_status(
        self, walker: NewestFirst, page_size: int, status: str
    ) -> tuple[list[StoredTask], str | None]:
        """Reads candidates newest first until the page is full or the scan budget is spent;
        returns the matches and the last id considered."""
        found: list[StoredTask] = []
        scanned = 0
        last: str | None = None
        limit = self.settings.list_scan_limit
        while len(found) < page_size and scanned < limit:
            # Read about twice what is still missing: few round trips, little read past the page.
            size = min(self.settings.list_get_concurrency, limit - scanned)
            size = min(size, max(2 * (page_size - len(found)), 4))
            batch = [tid for _ in range(size) if (tid := await walker.next()) is not None]
            if not batch:
                break
            scanned += len(batch)
            for index, got in enumerate(await self._read_many(batch)):
                last = batch[index]
                if got is not None and status_of(got.document) == status:
                    found.append(got)
                    if len(found) == page_size:
                        walker.push_back(batch[index + 1 :])
                        break
        return found, last

    async def _read_many(self, task_ids: list[str]) -> list[StoredTask | None]:
        async def read(task_id: str) -> StoredTask | None:
            async with self._reads:
                return await self._read(task_id)

        return list(await asyncio.gather(*(read(task_id) for task_id in task_ids)))

    async def _read(self, task_id: str) -> StoredTask | None:
        client = self.s3.client

        async def attempt() -> StoredTask:
            answer = await client.get_object(Bucket=self.s3.bucket, Key=self.document_key(task_id))
            async with answer["Body"] as body:
                document = await body.read()
            return StoredTask(task_id, document, str(answer["ETag"]))

        try:
            return await self.s3.call("GetObject", attempt)
        except NotFound:
            return None

    async def _put_document(
        self, task_id: str, document: bytes, if_match: str | None, if_none_match: bool
    ) -> str:
        client = self.s3.client
        kwargs: dict[str, Any] = {
            "Bucket": self.s3.bucket,
            "Key": self.document_key(task_id),
            "Body": document,
            "ContentType": "application/json",
            "ServerSideEncryption": "AES256",
        }
        if if_match:
            kwargs["IfMatch"] = if_match
            conflict = _changed(task_id, if_match)
        elif if_none_match:
            kwargs["IfNoneMatch"] = "*"
            conflict = f"task {task_id} already exists"
        else:
            conflict = None
        attempts = 0

        async def attempt() -> str:
            nonlocal attempts
            attempts += 1
            answer = await client.put_object(**kwargs)
            return str(answer["ETag"])

        try:
            return await self.s3.call("PutObject", attempt, conflict=conflict)
        except NotFound:
            # If-Match on a key that is gone: someone deleted the task meanwhile.
            raise Conflict(f"{conflict}, but the task no longer exists") from None
        except Conflict:
            if attempts > 1:
                # An earlier attempt may have landed before its answer was lost.
                stored = await self._read(task_id)
                if stored is not None and stored.document == document:
                    logger.info("task %s: write landed on an earlier attempt", task_id)
                    return stored.version
            raise

    async def _put_marker(self, task_id: str) -> None:
        client = self.s3.client
        await self.s3.call(
            "PutObject",
            lambda: client.put_object(
                Bucket=self.s3.bucket,
                Key=self.marker_key(task_id),
                Body=b"",
                ServerSideEncryption="AES256",
            ),
        )

    async def _delete_marker(self, task_id: str) -> None:
        client = self.s3.client
        await self.s3.call(
            "DeleteObject",
            lambda: client.delete_object(Bucket=self.s3.bucket, Key=self.marker_key(task_id)),
        )

    async def list(
        self, page_size: int, page_token: str = "", status: str | None = None
    ) -> TaskPage:
        """A page of tasks, newest first, and the token of the next page ("" when done).

        With ``status`` only tasks in that status are returned, reading at most
        ``list_scan_limit`` documents per call (a short page with a token means: go on).
        """
        _check_page_size(page_size, 1000)
        after = decode_tasks_token(page_token) if page_token else None
        now = self._clock()
        walker = NewestFirst(
            self.s3,
            self._prefix,
            after=after,
            newest=(now + _CLOCK_SKEW).date(),
            oldest=(now - timedelta(days=self.settings.task_retention_days + 1)).date(),
        )
        if status:
            found, last = await self._scan_for_status(walker, page_size, status)
        else:
            ids = [tid for _ in range(page_size) if (tid := await walker.next()) is not None]
            found = [t for t in await self._read_many(ids) if t is not None]
            last = ids[-1] if ids else None
        more = last is not None and await walker.next() is not None
        return found, encode_tasks_token(last) if more and last else ""


def _changed(task_id: str, version: str) -> str:
    return f"task {task_id} was changed by another writer: version {version} expected"


def _check_page_size(page_size: int, most: int) -> None:
    if not 1 <= page_size <= most:
        raise InvalidInput(f"page_size must be between 1 and {most}, got {page_size}")
