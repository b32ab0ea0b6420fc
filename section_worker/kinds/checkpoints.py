"""Answered prompts kept in storage as the work goes, so that a job of many prompts sent again
after its worker died never pays for one twice (a table's chunks, a document's sections).

Each answered prompt is stored at once as a small temporary JSON file of the job's owner named
``<task_id>_<section>.chunk-<index>.json``: the kind's own JSON object for it (what it needs to
reuse the answer, and what it cost) with its ``index``. A dispatch of the job first lists the
owner's files for that name (:meth:`Checkpoints.load`, at most ``MAX_PAGES`` pages of a
thousand files) and the kind reuses every answer found that fits the prompt it would send; the
others go to the platform. The files go when the job succeeds (:meth:`Checkpoints.discard`) and
otherwise expire with the retention of temporary files.

The one window left: a worker killed between the platform's answer and the store of its
checkpoint (a few milliseconds) — that prompt is asked again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from common.errors import AppError, NotFound
from section_worker.files import FileClient, FileRef

logger = logging.getLogger(__name__)

MAX_PAGES = 20
CONTENT_TYPE = "application/json"
MAX_CHECKPOINT_BYTES = 64 * 1024 * 1024


class Checkpoints:
    """The answered prompts of one job, kept in storage as its owner's temporary files."""

    def __init__(self, files: FileClient, owner: str, task_id: str, section: str) -> None:
        self._files = files
        self._owner = owner
        self._prefix = f"{task_id}_{section}.chunk-"
        self._stored: list[str] = []

    def name(self, index: int) -> str:
        return f"{self._prefix}{index:06d}.json"

    async def load(self) -> dict[int, dict[str, Any]]:
        """What an earlier dispatch of the job kept, by index: each the object given to
        :meth:`keep`, with its ``index``."""
        found: dict[int, dict[str, Any]] = {}
        token = ""
        for _ in range(MAX_PAGES):
            page, token = await self._files.list_page(self._owner, token)
            for ref in page:
                if ref.name.startswith(self._prefix) and ref.name.endswith(".json"):
                    answered = await self._read(ref)
                    self._stored.append(ref.file_id)
                    if answered is not None:
                        found[answered["index"]] = answered
            if not token:
                break
        if found:
            logger.info("found %d answer(s) an earlier dispatch kept", len(found))
        return found

    async def _read(self, ref: FileRef) -> dict[str, Any] | None:
        if ref.size > MAX_CHECKPOINT_BYTES:
            return None
        buffer = bytearray()
        try:
            async for chunk in self._files.open(ref, self._owner):
                buffer += chunk
            raw: Any = json.loads(buffer)
            if not isinstance(raw, dict) or not isinstance(raw.get("index"), int):
                raise ValueError("not a checkpoint object")
            return raw
        except (AppError, ValueError) as exc:
            logger.warning(
                "checkpoint %s not usable (%s); its prompt is asked again", ref.name, exc
            )
            return None

    async def keep(self, index: int, answered: dict[str, Any]) -> None:
        """Stores the JSON object ``answered`` as prompt ``index``'s (a failure to store is
        logged: the prompt is only asked again)."""
        body = json.dumps({**answered, "index": index}, ensure_ascii=False).encode()

        async def chunks() -> AsyncIterator[bytes]:
            yield body

        try:
            ref = await self._files.write(
                self._owner, self.name(index), CONTENT_TYPE, chunks(), temporary=True
            )
        except AppError as exc:
            logger.warning("prompt %d answered but not kept: %s", index, exc.message)
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
