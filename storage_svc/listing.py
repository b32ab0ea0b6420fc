"""Task ids newest first, straight from the key names: one UTC day of keys at a time.

ListObjectsV2 lists keys in ascending order only, but task ids embed their UTC creation second,
so the keys of one day (``<prefix>task_YYYYMMDD…``) are that day's tasks in creation order.
:class:`NewestFirst` lists a day, hands its ids out newest first, and lists the day before only
when they are used up. The store's module docstring sums up what this costs.
"""

from __future__ import annotations

from collections import deque
from datetime import date, timedelta
from typing import Any

from common import task_ids
from storage_svc.s3calls import S3Calls

# Keys per LIST request; 1000 is the most S3 returns.
LIST_PAGE_KEYS = 1000


class NewestFirst:
    """Task ids older than ``after`` (all if None), newest first, from ``newest`` back to
    ``oldest`` (UTC days, both included)."""

    def __init__(
        self, s3: S3Calls, prefix: str, *, after: str | None, newest: date, oldest: date
    ) -> None:
        self._s3 = s3
        self._prefix = prefix
        self._after = after
        self._day = min(newest, task_ids.parse(after).day) if after else newest
        self._oldest = oldest
        self._pending: deque[str] = deque()

    async def next(self) -> str | None:
        """The next older task id, or None once the oldest day is passed."""
        while not self._pending:
            if self._day < self._oldest:
                return None
            self._pending.extend(await self._list_day(self._day))
            self._day -= timedelta(days=1)
        return self._pending.popleft()

    def push_back(self, ids: list[str]) -> None:
        """Gives back ids taken by :meth:`next` but not used; they come out next again."""
        self._pending.extendleft(reversed(ids))

    async def _list_day(self, day: date) -> list[str]:
        """Task ids created on ``day`` (older than ``after``), newest first."""
        client = self._s3.client
        # The delimiter keeps objects nested under a task's name out; the day prefix keeps the
        # namespaced objects (``<prefix>_leases/…``, ``<prefix>_idempotency/…``) out.
        kwargs: dict[str, Any] = {
            "Bucket": self._s3.bucket,
            "Prefix": self._prefix + task_ids.day_prefix(day),
            "Delimiter": "/",
            "MaxKeys": LIST_PAGE_KEYS,
        }
        start = len(self._prefix)
        before = self._after
        ids: list[str] = []
        while True:
            answer = await self._s3.call("ListObjectsV2", lambda: client.list_objects_v2(**kwargs))
            keys = [item["Key"] for item in answer.get("Contents", [])]
            for key in keys:
                task_id = key[start:].removesuffix(".json")
                if key.endswith(".json") and task_ids.REGEX.match(task_id):
                    ids.append(task_id)
            # Keys come in ascending order: nothing past the token's id is wanted.
            past_token = before is not None and bool(keys) and keys[-1][start:] >= before
            if past_token or not answer.get("IsTruncated"):
                break
            kwargs["ContinuationToken"] = answer["NextContinuationToken"]
        ids.reverse()
        return [task_id for task_id in ids if before is None or task_id < before]
