"""The sweeper: a coroutine deleting expired files every ``file_sweep_interval_s``.

S3's lifecycle rules run about once a day and count whole days, so they cannot hold a retention
of hours; reads refuse expired files at once, and the sweeper removes those nobody reads. A
failed sweep is logged and the next one tries again. Every replica may run one: deleting what is
already gone is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from common.errors import AppError

logger = logging.getLogger(__name__)


async def run_sweeper(sweep: Callable[[], Awaitable[int]], interval_s: float) -> None:
    """Calls ``sweep`` now and then every ``interval_s`` seconds, until cancelled."""
    while True:
        try:
            await sweep()
        except AppError as exc:
            logger.warning("file sweep failed: %s; next in %.0fs", exc.message, interval_s)
        except Exception:
            logger.exception("file sweep failed; next in %.0fs", interval_s)
        await asyncio.sleep(interval_s)
