"""TaskStore: the task documents in S3, written with compare-and-swap, and listed cheaply.

Layout under the prefix (``tasks/`` by default)::

    tasks/task_20251230182721_01e09305.json   the task document (SSE AES256)
    tasks/_owners/<owner key>/<inverted second>_task_20251230182721_01e09305
                                              its owner's index entry: empty (SSE AES256)

Namespaced objects (``tasks/_leases/…``, ``tasks/_idempotency/…``, ``tasks/_api_keys/…``)
live in :mod:`storage_svc.objects`; task listings never see them (see below).

**Compare-and-swap.** Every document write may carry the version (ETag) it replaces
(``If-Match``) or demand that no document exists yet (``If-None-Match: *``); of many writers
holding the same version exactly one succeeds and the others get
:class:`~common.errors.Conflict`; they re-read and try again. The write, and its recovery of an
answer lost to a timeout, is :meth:`~storage_svc.s3calls.S3Calls.put_json`, shared with the
namespaced objects. Writing or deleting a task touches its document alone, except creating a
task with an owner: that first writes the task's marker in its owner's index
(:mod:`storage_svc.owners`), one more PUT per task. The marker comes first because a marker
without a document is skipped when listing, while a document without a marker would be
invisible to its owner. A creation that conflicts keeps its marker: task ids never repeat across
replicas or within a replica's second, so a conflict is the same task created again, whose
marker is the same key.

**What listing all tasks costs.** Task ids embed their UTC creation second, so keys sort by
creation time, but ListObjectsV2 only lists ascending. :meth:`TaskStore.list` therefore walks
back one UTC day at a time with ``Prefix=<prefix>task_YYYYMMDD``, reverses each day's keys and
stops as soon as the page is filled; it never walks further back than
``task_retention_days + 1`` days, since the lifecycle rule has expired anything older. One call
costs about

- 1 LIST per day walked + 1 per 1000 keys in those days (the day of the page token is listed
  only up to the token),
- without a status filter: ``page_size`` GETs, run concurrently (bounded);
- with a status filter: at most ``list_scan_limit`` GETs, newest first in small concurrent
  batches; if the page is not filled by then, the call returns what it found and a token to
  continue. A tenant filter (an admin's listing of one tenant) is matched the same way, alone
  or with the status.

Only keys ``<prefix>task_YYYYMMDD….json`` are listed as tasks: the day prefixes leave the
namespaced objects (``_leases/``, ``_idempotency/``) out.

**What listing one owner's tasks costs.** The owner's markers are listed newest first by one
ListObjectsV2 on the owner's prefix, asking for ``page_size + 1`` keys (filtered:
``list_scan_limit + 1``, at most 1000), then only the listed documents are read. One call costs

- 1 LIST (+ 1 per further 1000 markers, which only a status filter with a scan limit above
  999 can need), however many tasks the bucket holds;
- without a status filter: up to ``page_size`` GETs, of that owner's documents only;
- with a status filter: at most ``list_scan_limit`` GETs of that owner's documents, newest
  first; a short page with a token means: go on.

An owner with 10 tasks in a bucket of 100,000 costs 1 LIST + 10 GETs per call (default page of
20), as it would in a bucket of 10; picking them out of the listing of all tasks would mean
reading up to all 100,000 documents. A page token of one owner
is refused for another (it carries the owner key), and markers older than the retention window
(not yet removed by the lifecycle rule) are not listed, as listings of all tasks do.

Listing never reads every task document: the key names alone give the order, so only the
documents of the page (or, filtered, the bounded scan) are read. The last page's token is empty:
the store looks one task past a full page to know whether anything older exists. Documents
deleted between the LIST and the GET are skipped, so a page may hold fewer tasks than asked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, NamedTuple

from common import task_ids
from common.errors import InvalidInput, NotFound
from common.timeutil import utcnow
from storage_svc.bucket import ensure_bucket
from storage_svc.documents import (
    check_document,
    check_page_size,
    check_precondition,
    decode_tasks_token,
    encode_tasks_token,
    matches,
)
from storage_svc.listing import NewestFirst
from storage_svc.owners import MAX_LIST_KEYS, OwnerNewestFirst, marker_key, owner_key
from storage_svc.s3calls import S3Calls
from storage_svc.settings import StorageSettings

logger = logging.getLogger(__name__)

# Another replica's clock may run slightly ahead; its newest ids can already carry tomorrow's date.
_CLOCK_SKEW = timedelta(minutes=10)


class StoredTask(NamedTuple):
    """One stored task document and its version (ETag)."""

    task_id: str
    document: bytes
    version: str


TaskPage = tuple[list[StoredTask], str]


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
        owner: str = "",
    ) -> str:
        """Writes a task document; returns its new version.

        ``if_match`` writes only over that version, ``if_none_match`` only if no document
        exists; otherwise :class:`Conflict`. The document is checked first (InvalidInput).
        ``owner`` (a principal id; only with ``if_none_match``) first puts the task in that
        owner's index, so :meth:`list` with the owner finds it.
        """
        task_ids.check(task_id)
        status = check_document(task_id, document)
        check_precondition(if_match, if_none_match)
        if owner and not if_none_match:
            raise InvalidInput("owner is given only when creating a task (with if_none_match)")
        if owner:
            await self.s3.put_empty(marker_key(self._prefix, owner_key(owner), task_id))
        version = await self.s3.put_json(
            self.document_key(task_id),
            document,
            what=f"task {task_id}",
            if_match=if_match,
            if_none_match=if_none_match,
        )
        logger.debug("task %s stored: status %s, version %s", task_id, status, version)
        return version

    async def get(self, task_id: str) -> tuple[bytes, str]:
        """The stored document of a task and its version; NotFound when there is none."""
        task_ids.check(task_id)
        found = await self._read(task_id)
        if found is None:
            raise NotFound(f"task {task_id} not found")
        return found.document, found.version

    async def delete(self, task_id: str, if_match: str | None = None) -> None:
        """Deletes a task's document (only at version ``if_match`` if given).

        Without ``if_match`` deleting a missing task succeeds (deletes are idempotent).
        """
        task_ids.check(task_id)
        await self.s3.delete(self.document_key(task_id), what=f"task {task_id}", if_match=if_match)
        logger.info("task %s deleted", task_id)

    async def _scan_for(
        self, walker: NewestFirst | OwnerNewestFirst, page_size: int, wanted: dict[str, str]
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
                if got is not None and matches(got.document, wanted):
                    found.append(got)
                    if len(found) == page_size:
                        walker.push_back(batch[index + 1 :])
                        break
        return found, last

    async def _read_many(self, ids: list[str]) -> list[StoredTask | None]:
        found = await self.s3.read_many([self.document_key(tid) for tid in ids])
        for tid, got in zip(ids, found, strict=True):
            if got is None:
                logger.info(
                    "task %s: listed but has no document (deleted, or its creation failed); "
                    "skipped",
                    tid,
                )
        return [
            None if got is None else StoredTask(tid, got.body, got.version)
            for tid, got in zip(ids, found, strict=True)
        ]

    async def _read(self, task_id: str) -> StoredTask | None:
        got = await self.s3.read(self.document_key(task_id))
        return None if got is None else StoredTask(task_id, got.body, got.version)

    async def list(
        self,
        page_size: int,
        page_token: str = "",
        status: str | None = None,
        owner: str = "",
        tenant: str = "",
    ) -> TaskPage:
        """A page of tasks, newest first, and the token of the next page ("" when done).

        With ``status`` (or ``tenant``) only tasks in that status (of that tenant) are
        returned, reading at most ``list_scan_limit`` documents per call (a short page with a
        token means: go on). With
        ``owner`` only the tasks created with that owner are listed, from its index; the token
        of such a page continues that owner's listing only.
        """
        check_page_size(page_size, 1000)
        now = self._clock()
        oldest = (now - timedelta(days=self.settings.task_retention_days + 1)).date()
        wanted = {k: v for k, v in (("status", status), ("tenant", tenant)) if v}
        walker: NewestFirst | OwnerNewestFirst
        encode: Callable[[str], str]
        if owner:
            key = owner_key(owner)
            after = decode_tasks_token(page_token) if page_token else None
            # One more key than the page tells whether an older task follows, at no extra LIST.
            want = min(self.settings.list_scan_limit, MAX_LIST_KEYS - 1) if wanted else page_size
            walker = OwnerNewestFirst(
                self.s3, self._prefix, key, after=after, oldest=oldest, want=want + 1
            )
            encode = encode_tasks_token
        else:
            after = decode_tasks_token(page_token) if page_token else None
            walker = NewestFirst(
                self.s3,
                self._prefix,
                after=after,
                newest=(now + _CLOCK_SKEW).date(),
                oldest=oldest,
            )
            encode = encode_tasks_token
        if wanted:
            found, last = await self._scan_for(walker, page_size, wanted)
        else:
            ids = [tid for _ in range(page_size) if (tid := await walker.next()) is not None]
            found = [t for t in await self._read_many(ids) if t is not None]
            last = ids[-1] if ids else None
        more = last is not None and await walker.next() is not None
        return found, encode(last) if more and last else ""
