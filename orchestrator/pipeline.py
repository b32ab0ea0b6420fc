"""The pipeline of one task: authenticate, detect sections, run every section in parallel on the
workers, aggregate, finish.

Writes to storage are few and each one matters: the task is stored at submission; then every
finished section is persisted before it counts as done (a crash right after costs nothing
twice), sections finishing together sharing one write; the write of the last section also
finishes the task. Intermediate states (authenticating, processing, a section running) live
in memory, where status calls and watchers read them, so a running task costs no storage read
either.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from common.errors import AppError, Conflict, Unavailable
from common.logging import section_var, task_id_var
from common.timeutil import iso, parse_iso, utcnow
from orchestrator.config import SectionsConfig
from orchestrator.credentials import Sealer
from orchestrator.models import SectionResult, SectionState, TaskRecord, TaskState, TraceEntry
from orchestrator.storage_client import StorageClient
from orchestrator.workers import WorkerPool
from wealthai.worker.v1 import worker_pb2

logger = logging.getLogger(__name__)

# Progress milestones (SPEC §5): sections share the span between PROCESSING and 100.
_PROGRESS = {
    TaskState.PENDING: 0,
    TaskState.AUTHENTICATING: 10,
    TaskState.AUTHENTICATED: 20,
    TaskState.DETECTING: 30,
    TaskState.PROCESSING: 40,
}
_WORKER_LOST = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
_STORAGE_RETRY_MAX_S = 5.0


class TaskStopped(Exception):
    """Another writer finished the task (a cancel through another replica) or took it over."""


class VerifiedCredentials:
    """Credentials a worker verified with the platform lately: the tasks that follow with the
    same ones skip that round trip (their section jobs still authenticate, with the token the
    workers hold). Only keyed hashes of the credentials are kept, never the passwords."""

    _PRUNE_AT = 1024

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._until: dict[bytes, float] = {}

    def _digest(self, credentials: worker_pb2.Credentials) -> bytes:
        text = "\0".join((credentials.tenant, credentials.username, credentials.password))
        return hmac.digest(self._key, text.encode(), "sha256")

    def fresh(self, credentials: worker_pb2.Credentials) -> bool:
        return self._until.get(self._digest(credentials), 0.0) > time.monotonic()

    def add(self, credentials: worker_pb2.Credentials, valid_s: float) -> None:
        now = time.monotonic()
        if len(self._until) >= self._PRUNE_AT:
            self._until = {k: t for k, t in self._until.items() if t > now}
        self._until[self._digest(credentials)] = now + valid_s


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


@dataclass
class TaskRun:
    """One task this orchestrator is running: its live record and the coroutine driving it."""

    record: TaskRecord
    version: str
    deps: Deps
    watchers: set[asyncio.Queue[dict[str, Any]]] = field(default_factory=set)
    cancel_requested: bool = False
    task: asyncio.Task[None] | None = None
    _write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _queued: list[tuple[Callable[[TaskRecord], None], asyncio.Future[None]]] = field(
        default_factory=list
    )

    @property
    def task_id(self) -> str:
        return self.record.task_id

    # -- watching ---------------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.watchers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self.watchers.discard(queue)

    def _publish(self, section: str = "") -> None:
        event = {
            "task_id": self.record.task_id,
            "status": self.record.status.value,
            "progress": self.record.progress,
            "message": self.record.message,
            "section": section,
            "at": self.record.updated_at,
        }
        for queue in self.watchers:
            queue.put_nowait(event)

    # -- state changes ----------------------------------------------------------------------

    def _set_state(self, state: TaskState, message: str) -> None:
        self.record.status = state
        self.record.progress = _PROGRESS.get(state, self.record.progress)
        self.record.message = message
        self.record.updated_at = iso(utcnow())
        self._publish()

    def _trace(self, step: str, status: str, started: float, detail: str = "") -> None:
        self.record.trace.append(
            TraceEntry(
                step=step,
                status=status,
                at=iso(utcnow()),
                duration_ms=int((time.monotonic() - started) * 1000),
                detail=detail,
            )
        )

    async def _persist(self, change: Callable[[TaskRecord], None]) -> None:
        """Applies ``change`` and writes the record, retrying while storage is unavailable.

        Changes that arrive while a write is in flight are written together by the next one
        (group commit): sections finishing at once cost one write, and each still returns only
        once its change is stored. The change is written from a copy and becomes visible to
        readers only once stored, so no reader (here, or through another replica reading
        storage) sees a task finished before it is. On a lost compare-and-swap the stored
        record is re-read: if another writer finished the task or took it over this run stops;
        otherwise the changes are applied to the fresh record.
        """
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (change, stored)
        self._queued.append(entry)
        try:
            await self._write_lock.acquire()
        except BaseException:  # cancelled while waiting: the change is not written
            with contextlib.suppress(ValueError):
                self._queued.remove(entry)
            raise
        try:
            if stored.done():  # written (or refused) with an earlier caller's batch
                return stored.result()
            batch, self._queued = self._queued, []
            try:
                await self._write([c for c, _ in batch])
            except Exception as exc:
                for _, other in batch:
                    if other is not stored:
                        other.set_exception(exc)
                raise
            except BaseException:  # this caller was cancelled: the others go with the next write
                self._queued[:0] = [e for e in batch if e is not entry]
                raise
            for _, other in batch:
                if other is not stored:
                    other.set_result(None)
            return None
        finally:
            self._write_lock.release()

    async def _write(self, changes: list[Callable[[TaskRecord], None]]) -> None:
        def apply(record: TaskRecord) -> None:
            for change in changes:
                change(record)

        base = self.record
        delay = 0.2
        while True:
            candidate = base.model_copy(deep=True)
            apply(candidate)
            try:
                self.version = await self.deps.storage.update(candidate, self.version)
            except Conflict:
                fresh, version = await self.deps.storage.get(self.task_id)
                if fresh.status.terminal or fresh.owner != self.deps.replica_id:
                    self.record, self.version = fresh, version
                    raise TaskStopped(fresh.status.value, fresh.owner) from None
                live = self.record
                fresh.status, fresh.progress, fresh.message = (
                    live.status,
                    live.progress,
                    live.message,
                )
                base, self.version = fresh, version
                continue
            except Unavailable as exc:
                logger.warning("storage unavailable, retrying the write in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _STORAGE_RETRY_MAX_S)
                continue
            if candidate.status.terminal or base is not self.record:
                self.record = candidate
            else:
                # Sections still running hold references into the live record: update it in
                # place rather than replacing it.
                apply(self.record)
            return

    # -- the pipeline -----------------------------------------------------------------------

    async def run(self) -> None:
        """Drives the task to a terminal state (or until cancelled for shutdown)."""
        task_id_var.set(self.task_id)
        try:
            password = self.deps.sealer.open(self.record.password_sealed, self.task_id)
            credentials = worker_pb2.Credentials(
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
            await self._finish_cancelled()
        except Exception as exc:
            logger.exception("task failed unexpectedly")
            reason = exc.message if isinstance(exc, AppError) else "internal error"
            with contextlib.suppress(TaskStopped):
                await self._fail(f"Task failed: {reason}")

    async def _authenticate(self, credentials: worker_pb2.Credentials) -> bool:
        started = time.monotonic()
        self._set_state(TaskState.AUTHENTICATING, "Authenticating with the AI platform")
        if self.deps.verified.fresh(credentials):
            self._trace("1. Authentication", "completed", started, "verified by an earlier task")
            self._set_state(TaskState.AUTHENTICATED, "Authenticated")
            return True
        deadline = started + self.deps.auth_wait_s
        delay = 0.2
        while True:
            try:
                worker = self.deps.pool.any_ready()
                reply = await worker.stub.Authenticate(
                    worker_pb2.AuthenticateRequest(credentials=credentials), timeout=30
                )
                # Half the token's life: a password changed at the platform shows up soon.
                self.deps.verified.add(credentials, reply.expires_in / 2)
                break
            except (grpc.aio.AioRpcError, Unavailable) as exc:
                transient = isinstance(exc, Unavailable) or exc.code() in (
                    *_WORKER_LOST,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                )
                if transient and time.monotonic() < deadline:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                detail = exc.message if isinstance(exc, Unavailable) else exc.details()
                self._trace("1. Authentication", "error", started, detail or "")
                await self._fail(f"Authentication failed: {detail}")
                return False
        self._trace("1. Authentication", "completed", started)
        self._set_state(TaskState.AUTHENTICATED, "Authenticated")
        return True

    def _detect(self) -> None:
        started = time.monotonic()
        self._set_state(TaskState.DETECTING, "Detecting sections")
        names = list(self.record.result_data)
        self._trace("2. Detect Sections", "completed", started, ", ".join(names))
        self._set_state(TaskState.PROCESSING, f"Processing {len(names)} sections in parallel")

    async def _process(self, credentials: worker_pb2.Credentials) -> None:
        todo = [name for name, s in self.record.result_data.items() if not s.status.terminal]
        if not todo:
            await self._persist(aggregate)
            return
        await asyncio.gather(*(self._section(name, credentials) for name in todo))

    async def _section(self, name: str, credentials: worker_pb2.Credentials) -> None:
        section_var.set(name)
        started = time.monotonic()
        section = self.record.result_data[name]
        section.status = SectionState.RUNNING
        self._publish(name)
        outcome = await self._dispatch(name, section, credentials)
        step = f"3. Section {name}"

        def record_outcome(record: TaskRecord) -> None:
            target = record.result_data[name]
            target.status = SectionState.COMPLETED if outcome.success else SectionState.ERROR
            target.response = outcome.response
            target.cost = outcome.cost
            target.conv_id = outcome.conv_id
            target.message_id = outcome.message_id
            target.error = outcome.error
            target.dispatches = section.dispatches
            detail = f"cost ${outcome.cost:.4f}" if outcome.success else outcome.error
            record.trace.append(
                TraceEntry(
                    step=step,
                    status=target.status.value,
                    at=iso(utcnow()),
                    duration_ms=int((time.monotonic() - started) * 1000),
                    detail=detail,
                )
            )
            states = [s.status for s in record.result_data.values()]
            done = sum(s.terminal for s in states)
            record.progress = 40 + (55 * done) // len(states)
            record.updated_at = iso(utcnow())
            if all(s.terminal for s in states):
                aggregate(record)

        await self._persist(record_outcome)
        logger.info("section %s %s", name, "completed" if outcome.success else "failed")
        self._publish(name)

    async def _dispatch(
        self, name: str, section: SectionResult, credentials: worker_pb2.Credentials
    ) -> worker_pb2.SectionResult:
        """Runs the section's job on a worker, re-sending it when its worker is lost."""
        cfg = self.deps.config.sections.get(name)
        timeout_s = cfg.timeout_s if cfg else 120.0
        max_dispatches = cfg.max_dispatches if cfg else 4
        job = worker_pb2.SectionJob(
            job_id=f"{self.task_id}:{name}",
            task_id=self.task_id,
            section=name,
            asset_id=section.asset_id,
            record_json=json.dumps(self.record.data[section.record_index]),
            credentials=credentials,
            timeout_s=timeout_s,
        )
        last_error = ""
        previous = None
        attempts = 0
        while attempts < max_dispatches:
            async with self.deps.pool.slot(avoid=previous) as worker:
                previous = worker
                attempts += 1
                section.dispatches += 1
                try:
                    async for event in worker.stub.RunSection(job, timeout=timeout_s + 15):
                        if event.HasField("result"):
                            return event.result
                        section.conv_id = event.progress.conv_id or section.conv_id
                        section.message_id = event.progress.message_id or section.message_id
                    last_error = f"worker {worker.address} ended the job without a result"
                except grpc.aio.AioRpcError as err:
                    if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        self.deps.pool.set_aside(worker, full=True)
                        attempts -= 1
                        section.dispatches -= 1
                        continue
                    if err.code() not in _WORKER_LOST:
                        return worker_pb2.SectionResult(success=False, error=err.details())
                    self.deps.pool.set_aside(worker, full=False)
                    last_error = f"worker {worker.address} lost: {err.code().name}"
                logger.warning("section %s: %s; dispatching again", name, last_error)
        return worker_pb2.SectionResult(
            success=False, error=f"gave up after {attempts} dispatches: {last_error}"
        )

    async def _fail(self, message: str) -> None:
        def fail(record: TaskRecord) -> None:
            now = iso(utcnow())
            record.status = TaskState.ERROR
            record.message = message
            record.progress = 100
            record.updated_at = record.completed_at = now
            for section in record.result_data.values():
                if not section.status.terminal:
                    section.status = SectionState.ERROR
                    section.error = section.error or "not run"

        await self._persist(fail)
        self._publish()

    async def _finish_cancelled(self) -> None:
        with contextlib.suppress(TaskStopped):
            await self._persist(mark_cancelled)
        self._publish()


def mark_cancelled(record: TaskRecord) -> None:
    """Records ``record`` as cancelled; sections that did not finish become cancelled."""
    now = iso(utcnow())
    for section in record.result_data.values():
        if not section.status.terminal:
            section.status = SectionState.CANCELLED
    record.status = TaskState.CANCELLED
    record.message = "Task cancelled"
    record.progress = 100
    record.updated_at = record.completed_at = now
    record.trace.append(TraceEntry(step="Cancel", status="cancelled", at=now))


def elapsed_seconds(record: TaskRecord) -> float:
    """Seconds from creation to completion, or to now while the task runs."""
    end = parse_iso(record.completed_at) if record.completed_at else utcnow()
    return round((end - parse_iso(record.created_at)).total_seconds(), 3)


def aggregate(record: TaskRecord) -> None:
    """Joins ids, sums cost and sets the final status on ``record``."""
    started = time.monotonic()
    sections = record.result_data
    record.conv_id = ", ".join(s.conv_id for s in sections.values() if s.conv_id)
    record.message_id = ", ".join(s.message_id for s in sections.values() if s.message_id)
    record.cost = round(sum(s.cost for s in sections.values()), 6)
    failed = {n: s.error for n, s in sections.items() if s.status != SectionState.COMPLETED}
    if failed:
        record.status = TaskState.ERROR
        reasons = "; ".join(f"{n}: {e or 'failed'}" for n, e in failed.items())
        record.message = f"{len(failed)} of {len(sections)} sections failed: {reasons}"
    else:
        record.status = TaskState.COMPLETED
        record.message = f"All {len(sections)} sections completed"
    now = utcnow()
    record.progress = 100
    record.updated_at = record.completed_at = iso(now)
    record.trace.append(
        TraceEntry(
            step="4. Aggregate",
            status="completed" if not failed else "error",
            at=iso(now),
            duration_ms=int((time.monotonic() - started) * 1000),
            detail=f"cost ${record.cost:.4f}; elapsed {elapsed_seconds(record):.2f}s",
        )
    )
