"""Deletes the sealed passwords that ``error`` tasks no longer need.

A task that ends ``completed`` or ``cancelled`` loses its sealed password in the write that ends
it (:mod:`orchestrator.transitions`). An ``error`` task keeps it for the retry window
(``ORCH_RETRY_WINDOW_S`` after ``completed_at``) so that a retry can authenticate again; after
that, :func:`sweep_once` clears it with compare-and-swap, and a retry is refused from then on.

Storage cost: storage_svc filters a listing by status by reading the documents, so one sweep
costs one S3 GET per task document within the retention period, one LIST per 1000 keys of each
day's prefix, and one PUT per seal it clears. With ``N`` stored tasks, ``R`` replicas sweeping
and a sweep every ``I`` seconds, that is ``R * N * 86400 / I`` GETs a day: 100,000 tasks, one
replica, hourly is 2.4 million GETs (about $1 a day at $0.0004 per 1,000); every five minutes
on three replicas it is 86 million (about $35). Hence an hourly default and the ``should_run``
gate of :func:`sweep_forever`, so that one replica sweeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from common.errors import AppError, Conflict, NotFound
from common.timeutil import utcnow
from orchestrator import transitions
from orchestrator.models import TaskState
from orchestrator.storage_client import StorageClient

logger = logging.getLogger(__name__)

DEFAULT_WINDOW_S = 86400.0
_PAGE = 100


async def sweep_once(
    storage: StorageClient, now: datetime, *, window_s: float = DEFAULT_WINDOW_S
) -> int:
    """Clears the sealed password of every ``error`` task whose retry window ended before
    ``now``; returns how many it cleared. A task changed meanwhile (retried, or swept by
    another replica) is left to its writer."""
    cleared = 0
    token = ""
    while True:
        page, token = await storage.list_tasks(_PAGE, token, TaskState.ERROR.value)
        for record, version in page:
            if not transitions.password_outlived(record, now, window_s):
                continue
            transitions.forget_password(record)
            try:
                await storage.update(record, version)
            except (Conflict, NotFound):
                logger.info("task %s changed while being swept; left as it is", record.task_id)
                continue
            cleared += 1
            logger.info("task %s: sealed password deleted after the retry window", record.task_id)
        if not token:
            return cleared


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
