"""The orchestrator's domain: submit, read, list, cancel and watch tasks, and resume the
unfinished ones at start-up. Plain async Python; :mod:`orchestrator.servicer` adapts it to gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from common.errors import InvalidInput, NotFound, TooLarge, WrongState
from common.timeutil import iso, utcnow
from orchestrator.detection import detect
from orchestrator.models import SectionResult, TaskRecord, TaskState, TraceEntry
from orchestrator.pipeline import Deps, TaskRun, mark_cancelled
from orchestrator.settings import OrchestratorSettings

logger = logging.getLogger(__name__)

TASK_ID = re.compile(r"^task_\d{14}_[0-9a-f]{8}$")
_TENANT = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_WATCH_POLL_S = 1.0
_ORPHAN_AGE = timedelta(minutes=10)


def check_task_id(task_id: str) -> str:
    """``task_id`` if it has the platform's id form, else InvalidInput."""
    if not TASK_ID.match(task_id):
        raise InvalidInput("task_id must look like task_YYYYMMDDHHMMSS_<8 hex digits>")
    return task_id


@dataclass
class Stats:
    workers: int
    workers_ready: int
    worker_capacity: int
    sections_running: int
    queue_size: int
    tasks_running: int
    tasks_submitted: int
    tasks_finished: dict[str, int]
    storage_ok: bool


class Orchestrator:
    """Owns the lifecycle of every task submitted to (or resumed by) this replica."""

    def __init__(self, settings: OrchestratorSettings, deps: Deps) -> None:
        self.settings = settings
        self.deps = deps
        self.runs: dict[str, TaskRun] = {}
        self.submitted = 0
        self.finished: Counter[str] = Counter()
        self._resumer: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self.deps.pool.start()
        if self.settings.resume_on_start:
            self._resumer = asyncio.create_task(self._resume_all(), name="resume")

    async def stop(self) -> None:
        """Stops every run without finishing it: the tasks stay unfinished in storage and are
        resumed by the next orchestrator to start."""
        if self._resumer:
            self._resumer.cancel()
        runs = [r.task for r in self.runs.values() if r.task]
        for task in runs:
            task.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
        await self.deps.pool.close()
        await self.deps.storage.close()

    async def _resume_all(self) -> None:
        delay = 0.5
        while True:
            try:
                resumed = 0
                async for task_id in self.deps.storage.active_ids():
                    if task_id in self.runs:
                        continue
                    try:
                        record, version = await self.deps.storage.get(task_id)
                    except NotFound:
                        await self._drop_orphan_marker(task_id)
                        continue
                    if record.status.terminal:
                        # A crash came between the finishing write and the marker's removal.
                        await self.deps.storage.update(record, version, finished=True)
                    else:
                        self._launch(record, version)
                        resumed += 1
                logger.info("resumed %d unfinished tasks", resumed)
                return
            except Exception as exc:
                logger.warning("cannot list unfinished tasks yet (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _drop_orphan_marker(self, task_id: str) -> None:
        """Removes the marker of a task whose first write never landed. A young marker may
        belong to a submission still in flight on another replica, so it is left alone."""
        created = datetime.strptime(task_id[5:19], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        if utcnow() - created > _ORPHAN_AGE:
            await self.deps.storage.delete(task_id)

    def _launch(self, record: TaskRecord, version: str) -> TaskRun:
        run = TaskRun(record=record, version=version, deps=self.deps)
        self.runs[record.task_id] = run
        run.task = asyncio.create_task(self._drive(run), name=record.task_id)
        return run

    async def _drive(self, run: TaskRun) -> None:
        try:
            await run.run()
        finally:
            self.runs.pop(run.task_id, None)
            if run.record.status.terminal:
                self.finished[run.record.status.value] += 1

    # -- operations -------------------------------------------------------------------------

    async def submit(
        self, username: str, password: str, tenant: str, records_json: list[str]
    ) -> TaskRecord:
        """Validates, detects sections, stores the task as pending and starts it."""
        started = time.monotonic()
        records = self._validate(username, password, tenant, records_json)
        tenant = tenant or self.settings.default_tenant
        detected = detect(records, self.deps.config)
        now = utcnow()
        task_id = f"task_{now:%Y%m%d%H%M%S}_{secrets.token_hex(4)}"
        record = TaskRecord(
            task_id=task_id,
            status=TaskState.PENDING,
            message="Task submitted successfully",
            username=username,
            tenant=tenant,
            password_sealed=self.deps.sealer.seal(password, task_id),
            data=records,
            section_detected=", ".join(d.section for d in detected),
            result_data={
                d.section: SectionResult(record_index=d.index, asset_id=d.asset_id)
                for d in detected
            },
            created_at=iso(now),
            updated_at=iso(now),
        )
        record.trace.append(
            TraceEntry(
                step="Submit",
                status="completed",
                at=iso(now),
                duration_ms=int((time.monotonic() - started) * 1000),
                detail=f"{len(records)} records",
            )
        )
        version = await self.deps.storage.create(record)
        self.submitted += 1
        logger.info("task %s submitted with sections %s", task_id, record.section_detected)
        self._launch(record, version)
        return record

    def _validate(
        self, username: str, password: str, tenant: str, records_json: list[str]
    ) -> list[dict[str, Any]]:
        limits = self.settings
        if not username.strip() or len(username) > 256:
            raise InvalidInput("username: required, at most 256 characters")
        if not password or len(password) > 1024:
            raise InvalidInput("password: required, at most 1024 characters")
        if tenant and not _TENANT.match(tenant):
            raise InvalidInput("tenant: 1-64 letters, digits, '.', '_' or '-'")
        if not records_json:
            raise InvalidInput("data: at least one record is required")
        if len(records_json) > limits.max_records:
            raise TooLarge(f"data: at most {limits.max_records} records per task")
        records = []
        for index, text in enumerate(records_json):
            if len(text.encode()) > limits.max_record_bytes:
                raise TooLarge(f"data[{index}]: larger than {limits.max_record_bytes} bytes")
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"data[{index}]: not valid JSON ({exc.msg})") from exc
            if not isinstance(record, dict) or not record:
                raise InvalidInput(f"data[{index}]: must be a non-empty JSON object")
            records.append(record)
        return records

    async def get(self, task_id: str) -> TaskRecord:
        """The freshest view of a task: live if it runs here, else as stored."""
        check_task_id(task_id)
        if run := self.runs.get(task_id):
            return run.record
        record, _ = await self.deps.storage.get(task_id)
        return record

    async def list(self, limit: int, status: str, page_token: str) -> tuple[list[TaskRecord], str]:
        if limit < 0 or limit > 100:
            raise InvalidInput("limit: 1..100")
        if status and status not in {s.value for s in TaskState}:
            allowed = ", ".join(s.value for s in TaskState)
            raise InvalidInput(f"status: must be one of {allowed}")
        records, token = await self.deps.storage.list(limit or 20, status, page_token)
        return [
            self.runs[r.task_id].record if r.task_id in self.runs else r for r in records
        ], token

    async def cancel(self, task_id: str) -> TaskRecord:
        """Stops the task's running sections and records it as cancelled."""
        check_task_id(task_id)
        if (run := self.runs.get(task_id)) and run.task:
            run.cancel_requested = True
            run.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run.task
            return run.record
        record, version = await self.deps.storage.get(task_id)
        if record.status.terminal:
            raise WrongState(f"task {task_id} already finished as {record.status.value}")
        mark_cancelled(record)
        await self.deps.storage.update(record, version, finished=True)
        return record

    async def watch(self, task_id: str) -> AsyncIterator[dict[str, Any]]:
        """One event now, then one per change, until the task is finished."""
        record = await self.get(task_id)
        run = self.runs.get(task_id)
        if run is not None:
            queue = run.subscribe()
            try:
                yield _event(run.record)
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), _WATCH_POLL_S)
                    except TimeoutError:
                        if run.task is None or run.task.done():
                            yield _event(run.record)  # the run stopped without a last event
                            return
                        continue
                    yield event
                    if TaskState(event["status"]).terminal:
                        return
            finally:
                run.unsubscribe(queue)
            return
        yield _event(record)
        if record.status.terminal:
            return
        last = _event(record)
        while True:
            await asyncio.sleep(_WATCH_POLL_S)
            record = await self.get(task_id)
            event = _event(record)
            if event != last:
                yield event
                last = event
            if record.status.terminal:
                return

    async def stats(self) -> Stats:
        pool = self.deps.pool.stats()
        return Stats(
            workers=pool.configured,
            workers_ready=pool.ready,
            worker_capacity=pool.capacity,
            sections_running=pool.running,
            queue_size=pool.queued,
            tasks_running=len(self.runs),
            tasks_submitted=self.submitted,
            tasks_finished=dict(self.finished),
            storage_ok=await self.deps.storage.healthy(),
        )


def _event(record: TaskRecord) -> dict[str, Any]:
    return {
        "task_id": record.task_id,
        "status": record.status.value,
        "progress": record.progress,
        "message": record.message,
        "section": "",
        "at": record.updated_at,
    }
