"""The orchestrator's domain: submit, read, list, cancel, retry and watch tasks; with
:mod:`orchestrator.recovery`, take over the tasks of replicas that died. Plain async Python;
:mod:`orchestrator.servicer` adapts it to gRPC.

A task running on this replica, or finished by it within the last minute, is read from memory;
any other is read from storage, which holds it as of its last persisted step (submission or a
finished section).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common.errors import Conflict, InvalidInput, NotFound, TooLarge, WrongState
from common.timeutil import iso, utcnow
from orchestrator.detection import detect
from orchestrator.idempotency import check_key, claim, request_digest
from orchestrator.models import SectionResult, SectionState, TaskRecord, TaskState, TraceEntry
from orchestrator.peers import act_on_owner
from orchestrator.peers import close_all as close_peers
from orchestrator.pipeline import Deps, TaskRun, mark_cancelled
from orchestrator.recovery import Recovery
from orchestrator.settings import OrchestratorSettings

logger = logging.getLogger(__name__)

TASK_ID = re.compile(r"^task_\d{14}_[0-9a-f]{8}\Z")
_TENANT = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_WATCH_POLL_S = 1.0
# Finished tasks kept in memory: a retry through another replica shows here after this long.
_RECENT_SIZE = 4096
_RECENT_S = 60.0


def _check_same_submission(record: TaskRecord, username: str, data: list[dict[str, Any]]) -> None:
    """Guards replays against a task id another submission drew (see README's limits)."""
    if record.username != username or record.data != data:
        raise Conflict(
            f"task {record.task_id} belongs to another submission; "
            "submit again with a new Idempotency-Key"
        )


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
    replica_id: str
    replicas_alive: int
    tasks_taken_over: int


class Orchestrator:
    """Owns the lifecycle of every task submitted to (or resumed by) this replica."""

    def __init__(self, settings: OrchestratorSettings, deps: Deps, digest_key: bytes) -> None:
        self.settings = settings
        self.deps = deps
        self.runs: dict[str, TaskRun] = {}
        self.submitted = 0
        self.finished: Counter[str] = Counter()
        # Tasks this replica just finished, so the status and result calls that follow a
        # task's end are answered without reading it back from storage.
        self._recent: OrderedDict[str, tuple[float, TaskRecord]] = OrderedDict()
        self._digest_key = digest_key
        self._id_second = ""
        self._ids_issued: set[str] = set()
        self.replica_id = deps.replica_id
        self.recovery = Recovery(
            deps.storage,
            deps.replica_id,
            address="",
            ttl_s=settings.lease_ttl_s,
            renew_s=settings.lease_renew_s,
            max_takeovers=settings.max_takeovers,
            launch=self._launch,
            runs=self.runs,
        )

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self, address: str) -> None:
        """Joins the replicas (lease, published with this replica's ``address``), then finds
        work: unfinished tasks whose owner is dead."""
        self.recovery.address = address
        await self.deps.pool.start()
        await self.recovery.start()

    async def stop(self) -> None:
        """Stops every run without finishing it and gives the lease up: the tasks stay
        unfinished in storage and another replica (or the next start) takes them over."""
        unfinished = list(self.runs)
        runs = [r.task for r in self.runs.values() if r.task]
        for task in runs:
            task.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
        await self.recovery.stop(unfinished)
        await close_peers()
        await self.deps.pool.close()
        await self.deps.storage.close()

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
                self._recent[run.task_id] = (time.monotonic(), run.record)
                while len(self._recent) > _RECENT_SIZE:
                    self._recent.popitem(last=False)

    # -- operations -------------------------------------------------------------------------

    async def submit(
        self,
        username: str,
        password: str,
        tenant: str,
        records_json: list[str],
        idempotency_key: str = "",
    ) -> tuple[TaskRecord, bool]:
        """Validates, detects sections, stores the task as pending and starts it. Returns the
        task and whether an earlier submission with the same idempotency key had made it."""
        started = time.monotonic()
        records = self._validate(username, password, tenant, records_json)
        tenant = tenant or self.settings.default_tenant
        detected = detect(records, self.deps.config)
        now = utcnow()
        task_id = self._new_task_id(now)
        if idempotency_key:
            check_key(idempotency_key)
            request = {"username": username, "password": password, "tenant": tenant}
            digest = request_digest(self._digest_key, {**request, "records": records})
            claimed = await claim(self.deps.storage, username, idempotency_key, digest, task_id)
            if claimed.replayed:
                with contextlib.suppress(NotFound):
                    return await self._replay(claimed.task_id, username, records), True
            task_id = claimed.task_id  # the claim's first attempt never wrote its task
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
            owner=self.deps.replica_id,
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
        # Shielded: a caller that goes away mid-call must not leave a stored task unstarted.
        return await asyncio.shield(self._store_and_start(record, bool(idempotency_key)))

    def _new_task_id(self, now: datetime) -> str:
        """``task_<creation second>_<8 hex>``: this replica's tag (see :mod:`recovery`), then six
        random hex digits never issued twice by this replica within one second."""
        second = f"{now:%Y%m%d%H%M%S}"
        if second != self._id_second:
            self._id_second, self._ids_issued = second, set()
        while (suffix := secrets.token_hex(3)) in self._ids_issued:
            pass
        self._ids_issued.add(suffix)
        return f"task_{second}_{self.recovery.tag}{suffix}"

    async def _store_and_start(self, record: TaskRecord, keyed: bool) -> tuple[TaskRecord, bool]:
        try:
            version = await self.deps.storage.create(record)
        except Conflict:
            if not keyed:
                raise
            # A concurrent repeat was first.
            return await self._replay(record.task_id, record.username, record.data), True
        self.submitted += 1
        logger.info("task %s submitted with sections %s", record.task_id, record.section_detected)
        submitted = record.model_copy()  # the answer shows the task as stored, not as it runs
        self._launch(record, version)
        return submitted, False

    async def _replay(self, task_id: str, username: str, data: list[dict[str, Any]]) -> TaskRecord:
        """The task an earlier submission of the same user and records created. If it is not
        running — its owner died before its lease listed it, or it is this replica and the task
        is not among its runs — this replica takes it over, so a repeated submission never
        finds an orphan."""
        if run := self.runs.get(task_id):
            _check_same_submission(run.record, username, data)
            return run.record
        record, version = await self.deps.storage.get(task_id)
        _check_same_submission(record, username, data)
        orphaned = record.owner == self.replica_id or not self.recovery.is_alive(record.owner)
        if not record.status.terminal and orphaned:
            async with self.recovery.claiming([task_id]):
                await self.recovery.take_over(record, version)
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
        if (recent := self._recent.get(task_id)) and time.monotonic() - recent[0] < _RECENT_S:
            return recent[1]
        record, _ = await self.deps.storage.get(task_id)
        return record

    async def _on_owner(self, record: TaskRecord, action: str) -> bool:
        """Has the live replica that owns ``record`` (if another one) perform ``action``: it
        alone can stop the task's sections, and it holds the task in memory."""
        if record.owner == self.replica_id:
            return False
        address = self.recovery.address_of(record.owner)
        return bool(address) and await act_on_owner(address, action, record.task_id)

    def owner_address(self, task_id: str) -> str:
        """Where the replica running ``task_id`` is, when that is not this one."""
        return "" if task_id in self.runs else self.recovery.owner_address(task_id)

    async def list(self, limit: int, status: str, page_token: str) -> tuple[list[TaskRecord], str]:
        if limit < 0 or limit > 100:
            raise InvalidInput("limit: 1..100")
        if status and status not in {s.value for s in TaskState}:
            allowed = ", ".join(s.value for s in TaskState)
            raise InvalidInput(f"status: must be one of {allowed}")
        page, token = await self.deps.storage.list_tasks(limit or 20, page_token, status)
        live = [self.runs[r.task_id].record if r.task_id in self.runs else r for r, _ in page]
        return live, token

    async def cancel(self, task_id: str) -> TaskRecord:
        """Stops the task's running sections and records it as cancelled (through its owner
        when that is another live replica)."""
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
        if await self._on_owner(record, "cancel"):
            record, _ = await self.deps.storage.get(task_id)
            return record
        mark_cancelled(record)
        await self.deps.storage.update(record, version)
        return record

    async def retry(self, task_id: str) -> TaskRecord:
        """Runs again only the sections of an ``error`` task that did not complete (on its
        last owner when that replica is alive, so no replica keeps serving the old result)."""
        check_task_id(task_id)
        if task_id in self.runs:
            raise WrongState(f"task {task_id} is running")
        record, version = await self.deps.storage.get(task_id)
        if record.status != TaskState.ERROR:
            raise WrongState(
                f"only a task that ended in error can be retried; {task_id} is "
                f"{record.status.value}"
            )
        if await self._on_owner(record, "retry"):
            record, _ = await self.deps.storage.get(task_id)
            return record
        failed = [n for n, s in record.result_data.items() if s.status != SectionState.COMPLETED]
        for name in failed:
            old = record.result_data[name]
            record.result_data[name] = SectionResult(
                record_index=old.record_index, asset_id=old.asset_id
            )
        now = iso(utcnow())
        record.status = TaskState.PENDING
        record.progress = 0
        record.message = f"Retrying {len(failed)} failed sections: {', '.join(failed)}"
        record.updated_at = now
        record.completed_at = None
        record.owner = self.deps.replica_id
        record.takeovers = 0
        record.trace.append(
            TraceEntry(step="Retry", status="started", at=now, detail=", ".join(failed))
        )
        await asyncio.shield(self._reopen(record, version))
        return record

    async def _reopen(self, record: TaskRecord, version: str) -> None:
        async with self.recovery.claiming([record.task_id]):
            version = await self.deps.storage.update(record, version)
            self._launch(record, version)

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
                        # Sections stored by one write each publish after it: pass them all on.
                        if run.task is not None:
                            await asyncio.wait({run.task}, timeout=_WATCH_POLL_S)
                        while not queue.empty():
                            yield queue.get_nowait()
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
            replica_id=self.deps.replica_id,
            replicas_alive=len(self.recovery.alive),
            tasks_taken_over=self.recovery.taken_over,
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
