"""The owner index: one empty marker object per task, under its owner, that S3 lists newest first.

Layout under the task prefix (``tasks/`` by default)::

    tasks/_owners/<owner key>/<inverted second>_<task id>    empty, SSE AES256

The *owner key* is the first 32 hex digits of the SHA-256 of the owner's principal id: ids may
hold any character (``/``, unicode), so they never reach a key raw. The *inverted second* is the
task's 14-digit UTC creation second subtracted from ``99999999999999`` (zero-padded), so the
ascending order ListObjectsV2 lists keys in is the owner's tasks newest first (tasks of the same
second by ascending id). One LIST on the owner's prefix therefore gives a page of that owner's
task ids without touching anyone else's keys or documents; :class:`OwnerNewestFirst` hands them
out the way :class:`~storage_svc.listing.NewestFirst` hands out all tasks.

The marker is written before the document. A marker without a document (the document's write
failed, or the task was deleted) is skipped when listing; a document without a marker would be
invisible to its owner. Markers lie under the task prefix, so the lifecycle rule expires them
``task_retention_days`` after the task's creation, as listings of all tasks stop looking at
tasks created longer ago.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from datetime import date
from typing import Any

from common import task_ids
from common.errors import InvalidInput
from storage_svc.s3calls import S3Calls

OWNERS_FOLDER = "_owners/"
# Keys per LIST request; 1000 is the most S3 returns.
MAX_LIST_KEYS = 1000

_LATEST_SECOND = 99999999999999
_MARKER_RE = re.compile(r"(?P<inverted>[0-9]{14})_(?P<task_id>task_[0-9]{14}_[0-9a-f]{8})\Z")


def owner_key(owner: str) -> str:
    """The key segment of an owner: 32 hex digits of the SHA-256 of its principal id."""
    return hashlib.sha256(owner.encode("utf-8")).hexdigest()[:32]


def owner_prefix(prefix: str, key: str) -> str:
    """Where the markers of the owner with key ``key`` live: ``<prefix>_owners/<key>/``."""
    return f"{prefix}{OWNERS_FOLDER}{key}/"


def marker_name(task_id: str) -> str:
    """The name of a task's marker within its owner's prefix: ``<inverted second>_<task id>``."""
    created = task_ids.parse(task_id).created_at
    return f"{_LATEST_SECOND - int(f'{created:%Y%m%d%H%M%S}'):014d}_{task_id}"


def marker_key(prefix: str, key: str, task_id: str) -> str:
    """The object key of a task's marker in the index of the owner with key ``key``."""
    return owner_prefix(prefix, key) + marker_name(task_id)


def task_of_marker(name: str) -> str | None:
    """The task id a marker name (the part after the owner's prefix) stands for, or None if the
    name is not a marker's (foreign objects under the prefix are ignored)."""
    found = _MARKER_RE.match(name)
    if found is None:
        return None
    task_id = found["task_id"]
    try:
        expected = marker_name(task_id)
    except InvalidInput:
        return None
    return task_id if expected == name else None


class OwnerNewestFirst:
    """The task ids of one owner older than ``after`` (all if None), newest first, created on
    ``oldest`` (UTC) or later, listed ``want`` keys per LIST request (at most 1000)."""

    def __init__(
        self, s3: S3Calls, prefix: str, key: str, *, after: str | None, oldest: date, want: int
    ) -> None:
        self._s3 = s3
        self._prefix = owner_prefix(prefix, key)
        self._oldest = oldest
        self._kwargs: dict[str, Any] = {
            "Bucket": s3.bucket,
            "Prefix": self._prefix,
            # The delimiter keeps anything nested under the owner's prefix out.
            "Delimiter": "/",
            "MaxKeys": max(1, min(want, MAX_LIST_KEYS)),
        }
        if after is not None:
            self._kwargs["StartAfter"] = marker_key(prefix, key, after)
        self._pending: deque[str] = deque()
        self._done = False

    async def next(self) -> str | None:
        """The next older task id of the owner, or None when there is none."""
        while not self._pending:
            if self._done:
                return None
            await self._list()
        return self._pending.popleft()

    def push_back(self, ids: list[str]) -> None:
        """Gives back ids taken by :meth:`next` but not used; they come out next again."""
        self._pending.extendleft(reversed(ids))

    async def _list(self) -> None:
        client = self._s3.client
        kwargs = self._kwargs
        answer = await self._s3.call("ListObjectsV2", lambda: client.list_objects_v2(**kwargs))
        for item in answer.get("Contents", []):
            task_id = task_of_marker(item["Key"][len(self._prefix) :])
            if task_id is None:
                continue
            if task_ids.parse(task_id).day < self._oldest:
                # Newest first: every later key is older still, and expired by the lifecycle rule.
                self._done = True
                return
            self._pending.append(task_id)
        if answer.get("IsTruncated"):
            kwargs["ContinuationToken"] = answer["NextContinuationToken"]
        else:
            self._done = True
