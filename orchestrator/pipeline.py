"""The pipeline of one task: authenticate, detect sections, run every section in parallel on the
workers, aggregate, finish.

Writes to storage are few and each one matters: the task is stored at submission; then every
finished section is persisted before it counts as done (a crash right after costs nothing
twice), sections finishing together sharing one write (:mod:`orchestrator.writer`); the write of
the last section also finishes the task. Intermediate states (authenticating, processing, a
section running) live in memory, where status calls and watchers read them, so a running task
costs no storage read either. What each step changes on the record is in
:mod:`orchestrator.transitions`; how a section's job reaches a worker, in
:mod:`orchestrator.dispatch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field

from common.backoff import Backoff
from common.errors import AppError, Unavailable
from common.logging import section_var, task_id_var
from orchestrator import transitions
from orchestrator.config import SectionsConfig
from orchestrator.credentials import Sealer, VerifiedCredentials
from orchestrator.dispatch import dispatch
from orchestrator.models import TaskEvent, TaskRecord, TaskState
from orchestrator.storage_client import StorageClient
from orchestrator.worker_client import (
    Credentials,
    JobRejected,
    Progress,
    SectionJob,
    WorkerFull,
    WorkerLost,
)
from orchestrator.workers import WorkerPool
from orchestrator.writer import Change, RecordWriter, TaskStopped

logger = logging.getLogger(__name__)

_AUTH_BACKOFF = Backoff(initial_s=0.2, max_s=2.0, jitter=0.5)
_DEFAULT_TIMEOUT_S = 120.0
_DEFAULT_MAX_DISPATCHES = 4


@dataclass
class Deps:
    """What every task run needs from its orchestrator."""

    storage: StorageClient
    pool: WorkerPool
    config: SectionsConfig
    sealer: Sealer
    replica_id: str
    auth_wait_s: float = 60.0
    verified: VerifiedCredentials = field(default_factory=VerifiedCredentials)


class TaskRun:
    """One task this orchestrator is running: its live record, its watchers and the coroutine
    driving it."""

    def __init__(self, record: TaskRecord, version: str, deps: Deps) -> None:
        self.deps = deps
        self.writer = RecordWriter(deps.storage, record, version, deps.replica_id)
        self.watchers: set[asyncio.Queue[TaskEvent]] = set()
        self.cancel_requested = False
        self.task: asyncio.Task[None] | None = None

    @property
    def record(self) -> TaskRecord:
        return self.writer.record

    @property
    def task_id(self) -> str:
        return self.record.task_id

    # -- watching ---------------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[TaskEvent]:
        queue: asyncio.Queue[TaskEvent] = asyncio.Queue()
        self.watchers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[TaskEvent]) -> None:
        self.watchers.discard(queue)

    def _publish(self, section: str = "") -> None:
        event = TaskEvent.of(self.record, section)
        for queue in self.watchers:
            queue.put_nowait(event)

    # -- state changes ----------------------------------------------------------------------

    def _step(self, state: TaskState, message: str) -> None:
        """A step that lives in memory only (see the module's docstring)."""
        transitions.set_state(self.record, state, message)
        self._publish()

    async def _persist(self, change: Change, section: str = "") -> None:
        await self.writer.persist(change)
        self._publish(section)

    # -- the pipeline -----------------------------------------------------------------------

    async def run(self) -> None:
        """Drives the task to a terminal state (or until cancelled for shutdown)."""
        task_id_var.set(self.task_id)
        try:
            password = self.deps.sealer.open(self.record.password_sealed, self.task_id)
            credentials = Credentials(
                tenant=self.record.tenant, username=self.record.username, password=password
            )
            if not await self._authenticate(credentials):
                return
            self._detect()
            await self._process(credentials)
        except TaskStopped as stopped:
            logger.info("task changed elsewhere (status, owner: %s); this run stops", stopped)
            self._publish()
        except asyncio.CancelledError:
            if not self.cancel_requested:
                raise
            with contextlib.suppress(TaskStopped):
                await self._persist(transitions.cancel)
        except Exception as exc:
            logger.exception("task failed unexpectedly")
            reason = exc.message if isinstance(exc, AppError) else "internal error"
            with contextlib.suppress(TaskStopped):
                await self._persist(lambda r: transitions.fail(r, f"Task failed: {reason}"))

    async def _authenticate(self, credentials: Credentials) -> bool:
        started = time.monotonic()
        self._step(TaskState.AUTHENTICATING, "Authenticating with the AI platform")
        if self.deps.verified.fresh(credentials):
            self._authenticated(started, "verified by an earlier task")
            return True
        deadline = started + self.deps.auth_wait_s
        delays = _AUTH_BACKOFF.delays()
        while True:
            try:
                expires_in = await self.deps.pool.any_ready().client.authenticate(credentials)
                break
            except (WorkerLost, WorkerFull, Unavailable) as exc:
                # A worker lost or full, or none ready: another may answer soon.
                if time.monotonic() < deadline:
                    await asyncio.sleep(next(delays))
                    continue
                await self._authentication_failed(started, str(exc))
                return False
            except JobRejected as exc:  # the platform refused the credentials
                await self._authentication_failed(started, exc.reason)
                return False
        # Half the token's life: a password changed at the platform shows up soon.
        self.deps.verified.add(credentials, expires_in / 2)
        self._authenticated(started)
        return True

    async def _authentication_failed(self, started: float, detail: str) -> None:
        entry = transitions.trace_entry(
            "1. Authentication", "error", started=started, detail=detail
        )

        def failed(record: TaskRecord) -> None:
            record.trace.append(entry)
            transitions.fail(record, f"Authentication failed: {detail}")

        await self._persist(failed)

    def _authenticated(self, started: float, detail: str = "") -> None:
        self.record.trace.append(
            transitions.trace_entry(
                "1. Authentication", "completed", started=started, detail=detail
            )
        )
        self._step(TaskState.AUTHENTICATED, "Authenticated")

    def _detect(self) -> None:
        started = time.monotonic()
        self._step(TaskState.DETECTING, "Detecting sections")
        names = list(self.record.result_data)
        self.record.trace.append(
            transitions.trace_entry(
                "2. Detect Sections", "completed", started=started, detail=", ".join(names)
            )
        )
        self._step(TaskState.PROCESSING, f"Processing {len(names)} sections in parallel")

    async def _process(self, credentials: Credentials) -> None:
        todo = [name for name, s in self.record.result_data.items() if not s.status.terminal]
        if not todo:
            await self._persist(transitions.aggregate)
            return
        await asyncio.gather(*(self._section(name, credentials) for name in todo))

    async def _section(self, name: str, credentials: Credentials) -> None:
        section_var.set(name)
        started = time.monotonic()
        transitions.start_section(self.record, name)
        self._publish(name)
        section = self.record.result_data[name]
        cfg = self.deps.config.sections.get(name)
        job = SectionJob(
            job_id=f"{self.task_id}:{name}",
            task_id=self.task_id,
            section=name,
            asset_id=section.asset_id,
            record_json=json.dumps(self.record.data[section.record_index]),
            credentials=credentials,
            timeout_s=cfg.timeout_s if cfg else _DEFAULT_TIMEOUT_S,
        )
        dispatches = section.dispatches

        def dispatched() -> None:
            nonlocal dispatches
            dispatches += 1

        def progressed(progress: Progress) -> None:
            section.conv_id = progress.conv_id or section.conv_id
            section.message_id = progress.message_id or section.message_id

        outcome = await dispatch(
            self.deps.pool,
            job,
            max_dispatches=cfg.max_dispatches if cfg else _DEFAULT_MAX_DISPATCHES,
            on_dispatch=dispatched,
            on_progress=progressed,
        )
        await self._persist(
            lambda r: transitions.finish_section(
                r, name, outcome, dispatches=dispatches, started=started
            ),
            section=name,
        )
        logger.info("section %s %s", name, "completed" if outcome.success else "failed")
