"""Answered chunks kept in storage as the work goes, so that a job sent again after its worker
died never pays for a chunk twice.

Each answered chunk is stored at once as a small temporary JSON file of the job's owner named
``<task_id>_<section>.chunk-<index>.json`` (its rows, the row range it covers and what it cost).
A dispatch of the job first lists the owner's files for that name (:meth:`Checkpoints.load`,
at most ``MAX_PAGES`` pages of a thousand files) and reuses every chunk found whose row range
is the one it would send; the others go to the platform. The files go when the job succeeds
(:meth:`Checkpoints.discard`) and otherwise expire with the retention of temporary files.

The one window left: a worker killed between the platform's answer and the store of its
checkpoint (a few milliseconds) — that chunk is asked again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from common.errors import AppError, NotFound
from section_worker.files import FileClient, FileRef

logger = logging.getLogger(__name__)

MAX_PAGES = 20
CONTENT_TYPE = "application/json"
MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Answered:
    """A chunk's kept answer: its rows (or why they could not be used) and what it cost."""

    index: int
    first_row: int
    last_row: int
    rows: list[dict[str, str]] | None
    reason: str
    cost: float


class Checkpoints:
    """The answered chunks of one job, kept in storage as its owner's temporary files."""

    def __init__(self, files: FileClient, owner: str, task_id: str, section: str) -> None:
        self._files = files
        self._owner = owner
        self._prefix = f"{task_id}_{section}.chunk-"
        self._stored: list[str] = []

    def name(self, index: int) -> str:
        return f"{self._prefix}{index:06d}.json"

    async def load(self) -> dict[int, Answered]:
        """The chunks an earlier dispatch of the job kept, by index."""
        found: dict[int, Answered] = {}
        token = ""
        for _ in range(MAX_PAGES):
            page, token = await self._files.list_page(self._owner, token)
            for ref in page:
                if ref.name.startswith(self._prefix) and ref.name.endswith(".json"):
                    answered = await self._read(ref)
                    self._stored.append(ref.file_id)
                    if answered is not None:
                        found[answered.index] = answered
            if not token:
                break
        if found:
            logger.info("reusing %d answered chunk(s) of an earlier dispatch", len(found))
        return found

    async def _read(self, ref: FileRef) -> Answered | None:
        if ref.size > MAX_CHECKPOINT_BYTES:
            return None
        buffer = bytearray()
        try:
            async for chunk in self._files.open(ref, self._owner):
                buffer += chunk
            raw: Any = json.loads(buffer)
            return Answered(
                index=int(raw["index"]),
                first_row=int(raw["first_row"]),
                last_row=int(raw["last_row"]),
                rows=raw["rows"],
                reason=str(raw.get("reason", "")),
                cost=float(raw["cost"]),
            )
        except (AppError, ValueError, KeyError, TypeError) as exc:
            logger.warning("checkpoint %s not usable (%s); its chunk is asked again", ref.name, exc)
            return None

    async def keep(self, answered: Answered) -> None:
        """Stores ``answered`` (a failure to store is logged: the chunk is only asked again)."""
        body = json.dumps(
            {
                "index": answered.index,
                "first_row": answered.first_row,
                "last_row": answered.last_row,
                "rows": answered.rows,
                "reason": answered.reason,
                "cost": answered.cost,
            },
            ensure_ascii=False,
        ).encode()

        async def chunks() -> AsyncIterator[bytes]:
            yield body

        try:
            ref = await self._files.write(
                self._owner, self.name(answered.index), CONTENT_TYPE, chunks(), temporary=True
            )
        except AppError as exc:
            logger.warning("chunk %d answered but not kept: %s", answered.index, exc.message)
            return
        self._stored.append(ref.file_id)

    async def discard(self) -> None:
        """Deletes every checkpoint of the job this object has seen (best effort)."""
        for file_id in self._stored:
            try:
                await self._files.delete(file_id, self._owner)
            except NotFound:
                pass
            except AppError as exc:
                logger.info("checkpoint %s not deleted (%s); it expires", file_id, exc.message)
        self._stored.clear()
