"""What every job kind receives and returns: :class:`KindContext` in, :class:`KindOutcome` out.

A kind is one module with one entry point, ``async def run(ctx: KindContext) -> KindOutcome``
(see :mod:`section_worker.kinds`). It never sees gRPC, never calls the AI platform except
through ``ctx.platform`` (so the section's fallback chain, limits, budgets and breakers apply to
every prompt), and reads and writes files only through ``ctx.files`` on behalf of the job's
owner. The job runner (:mod:`section_worker.jobs`) admits the job, enforces its timeout, turns
the outcome (or :class:`KindError`, or a :class:`common.errors.AppError`) into the job's result.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from section_worker.files import FileClient, FileRef
from section_worker.job_files import FileJob
from section_worker.protection.chain import Answer
from section_worker.settings import WorkerSettings


class KindError(Exception):
    """The job's input cannot be processed as its kind needs; the message names the problem
    (it becomes the section's error; nothing is retried)."""


class KindJob(FileJob, Protocol):
    """What a kind reads of its job: what the file helpers read, and its id."""

    @property
    def job_id(self) -> str: ...


class Platform(Protocol):
    """The AI platform as a kind uses it: every prompt goes through the section's fallback
    chain under the worker's protection (limits, budgets, breakers, cool-downs)."""

    async def ask(self, prompt: str, *, label: str) -> Answer:
        """One prompt in a new conversation; the answer, its cost and the asset that wrote it
        (``Answer.asset_id``). Raises
        :class:`~section_worker.protection.chain.ChainExhausted` when every asset failed, and
        :class:`~section_worker.platform_client.TokenRejected` when the job's token is refused
        (the job then stops and is sent again with a new token). ``label`` names the prompt in
        logs (e.g. ``"chunk 3"``)."""
        ...

    async def converse(self, prompt: Callable[[], Awaitable[str]]) -> Answer:
        """The job's own conversation: resumes the conversation and message an earlier dispatch
        of the job reached (never sending its prompt twice), else asks ``prompt()`` anew."""
        ...


# progress(done, total, note): units of work done of all; note says what (for logs).
ProgressReporter = Callable[[int, int, str], None]


class Scratch:
    """A job's scratch folder: made the first time :attr:`path` is read (most jobs, a
    conversation's, never need one, and making and removing a folder per job was a tenth of a
    worker's CPU under load), removed by :meth:`remove` when the job ends."""

    def __init__(self, parent: str | Path | None) -> None:
        self._parent = parent
        self._path: Path | None = None

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = Path(tempfile.mkdtemp(prefix="job-", dir=self._parent))
        return self._path

    def remove(self) -> None:
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None


@dataclass(frozen=True)
class KindContext:
    """Everything a kind's ``run`` gets: its job, its options, the protected platform, the
    file client, progress, and a scratch folder (:attr:`scratch`) removed when the job ends."""

    job: KindJob
    options: BaseModel
    platform: Platform
    files: FileClient | None
    settings: WorkerSettings
    progress: ProgressReporter
    step: Callable[[str], None]  # what the job is doing now (a timeout's message names it)
    folder: Scratch

    @property
    def scratch(self) -> Path:
        """The job's scratch folder (made now if it was not yet)."""
        return self.folder.path


@dataclass(frozen=True)
class KindOutcome:
    """A successful job: inline text, a structured result, files it stored, what it cost."""

    response: str = ""
    result: dict[str, Any] | None = None
    files: tuple[FileRef, ...] = ()
    cost: float = 0.0


class NoOptions(BaseModel):
    """Options of a kind that takes none."""

    model_config = {"extra": "forbid", "frozen": True}
