"""Deletes the sealed passwords that ``error`` tasks no longer need.

A task that ends ``completed`` or ``cancelled`` loses its sealed password in the write that ends
it (:mod:`orchestrator.transitions`). An ``error`` task keeps it for the retry window
(``ORCH_RETRY_WINDOW_S`` after ``completed_at``) so that a retry can authenticate again; a retry
after the window is refused, and the sweeper deletes the password.

The sweeper does not look through the tasks. When a task ends in error holding its password,
:func:`index_seal` writes an entry ``<deadline YYYYMMDDHHMMSS>_<task_id>`` in the seal index
(storage's SEALS namespace); names sort by deadline, so :func:`sweep_once` reads the index from
its start and stops at the first entry not yet due. For each due entry it reads the task,
clears the password with compare-and-swap if the task is still an ``error`` past its window,
and deletes the entry; a task retried since has had its entry replaced by a later one if it
failed again. An entry whose sweep failed stays for the next round.

S3 cost: one PUT per task ending in error; per sweep, one LIST and one GET per index entry on
the first page read (at most ``_PAGE``, the listing reads entries' bodies), plus one GET and one
PUT per password cleared and one DELETE per entry done. Nothing grows with the number of stored
tasks. Entries a crash left behind expire with the bucket's retention rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

from common.errors import AppError, Conflict, NotFound
from common.timeutil import parse_iso, utcnow
from orchestrator import transitions
from orchestrator.models import TaskRecord, TaskState
from orchestrator.storage_client import SEALS, StorageClient, UnreadableTask

logger = logging.getLogger(__name__)

DEFAULT_WINDOW_S = 86400.0
_PAGE = 100
_DEADLINE = "%Y%m%d%H%M%S"


def entry_name(record: TaskRecord, window_s: float) -> str:
    """The index entry of an ``error`` task: its retry deadline (rounded up to the second),
    then its id."""
    assert record.completed_at
    deadline = parse_iso(record.completed_at) + timedelta(seconds=window_s + 1)
    return f"{deadline:{_DEADLINE}}_{record.task_id}"


def _parse_entry(name: str) -> tuple[datetime, str] | None:
    deadline, _, task_id = name.partition("_")
    try:
        return datetime.strptime(deadline, _DEADLINE).replace(tzinfo=UTC), task_id
    except ValueError:
        return None


async def index_seal(storage: StorageClient, record: TaskRecord, window_s: float) -> None:
    """Enters an ``error`` task that keeps its password in the seal index (no-op otherwise).
    Failing here leaves the password until the bucket's retention rule: logged, not raised."""
    if record.status != TaskState.ERROR or not record.password_sealed or not record.completed_at:
        return
    body = json.dumps({"task_id": record.task_id}).encode()
    try:
        await storage.put_object(SEALS, entry_name(record, window_s), body, version=None)
    except Conflict:
        pass  # entered already (the same end, written twice)
    except AppError as exc:
        logger.warning("task %s: its sealed password could not be indexed: %s", record.task_id, exc)


async def sweep_once(
    storage: StorageClient, now: datetime, *, window_s: float = DEFAULT_WINDOW_S
) -> int:
    """Clears the sealed password of every ``error`` task of the index whose retry window ended
    before ``now``; returns how many it cleared."""
    cleared = 0
    token = ""
    while True:
        page, token = await storage.list_object_page(SEALS, token, _PAGE)
        for name, _body, version in page:
            parsed = _parse_entry(name)
            if parsed is not None and parsed[0] > now:
                return cleared
            outcome = "done" if parsed is None else await _clear(storage, parsed[1], now, window_s)
            if outcome == "again":
                continue  # the entry stays for the next round
            cleared += outcome == "cleared"
            with contextlib.suppress(AppError):
                await storage.delete_object(SEALS, name, version)
        if not token:
            return cleared


async def _clear(
    storage: StorageClient, task_id: str, now: datetime, window_s: float
) -> Literal["cleared", "done", "again"]:
    """Clears the task's password if it is due: "cleared"; "done" when there is nothing to
    clear (the task was retried since, and a later entry stands for it if it failed again, or it
    is gone); "again" when the entry must stay for the next round."""
    try:
        record, version = await storage.get(task_id)
    except (NotFound, UnreadableTask):
        return "done"
    if not transitions.password_outlived(record, now, window_s):
        return "done"
    transitions.forget_password(record)
    try:
        await storage.update(record, version)
    except (Conflict, NotFound):
        logger.info("task %s changed while being swept; next round", task_id)
        return "again"
    logger.info("task %s: sealed password deleted after the retry window", task_id)
    return "cleared"


async def sweep_forever(
    storage: StorageClient,
    *,
    window_s: float,
    interval_s: float,
    should_run: Callable[[], bool] = lambda: True,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    """Sweeps every ``interval_s`` seconds until cancelled, skipping the rounds in which
    ``should_run()`` is false (so that one replica of several sweeps); a failed sweep is logged
    and the next one starts over."""
    while True:
        await asyncio.sleep(interval_s)
        if not should_run():
            continue
        try:
            cleared = await sweep_once(storage, clock(), window_s=window_s)
        except AppError as exc:
            logger.warning("sweep of expired passwords failed: %s", exc)
            continue
        except Exception:
            logger.exception("sweep of expired passwords failed")
            continue
        if cleared:
            logger.info("sweep deleted %d sealed passwords past the retry window", cleared)
