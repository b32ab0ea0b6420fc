"""The orchestrator's domain: submit, read, list, cancel, retry and watch tasks. Plain async
Python; :mod:`orchestrator.servicer` adapts it to gRPC.

A replica joins the others through :mod:`orchestrator.membership` (its lease) and takes over the
tasks of dead ones through :mod:`orchestrator.takeover`. A call about one task is served where
:meth:`Orchestrator.locate` says: on the replica that runs it, else here. A task running on this
replica, or finished by it within the last minute, is read from memory; any other is read from
storage, which holds it as of its last persisted step (submission or a finished section).

Files a task's records reference are checked at submission and dealt with at its end
(:mod:`orchestrator.task_files`); :meth:`Orchestrator._ended` is the one place an ended task's
files are seen to, whichever way the end was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from common import task_ids, tracing
from common.backoff import Backoff
from common.errors import (
    AppError,
    Conflict,
    InvalidInput,
    NotFound,
    TooLarge,
    Unauthenticated,
    Unavailable,
    WrongState,
)
from common.json_limits import check_json_shape
from common.principals import Principal
from common.timeutil import iso, utcnow
from orchestrator import continuation, metrics, task_files, transitions
from orchestrator.accounts import Accounts
from orchestrator.admission import Admission
from orchestrator.detection import detect
from orchestrator.figures import TaskFigures, sum_figures
from orchestrator.idempotency import check_key, claim, request_digest
from orchestrator.keys import ApiKeys
from orchestrator.membership import Membership
from orchestrator.models import SectionResult, TaskEvent, TaskRecord, TaskState
from orchestrator.peers import Peers
from orchestrator.pipeline import Deps, TaskRun
from orchestrator.recent import RecentTasks
from orchestrator.settings import OrchestratorSettings
from orchestrator.sweeper import index_seal, sweep_forever
from orchestrator.takeover import Takeover
from orchestrator.workers import PlatformView

logger = logging.getLogger(__name__)

_TENANT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_WATCH_POLL_S = 1.0
# Finished tasks kept in memory: a retry through another replica shows here after this long.
_RECENT_S = 60.0
_JOIN_BACKOFF = Backoff(initial_s=0.2, max_s=5.0, jitter=0.5)
# Why a task stored by a submission that was answered 503 (its store's answer was lost) ends.
_LOST_ANSWER = (
    "Task failed: storage became unavailable while the task was submitted, so the submission "
    "was answered 503; submit it again (with an Idempotency-Key to make repeats safe)"
)


def _check_same_submission(
    record: TaskRecord, caller: Principal, username: str, data: list[dict[str, Any]]
) -> None:
    """Guards replays against a task id another submission drew (see README's limits)."""
    same = record.principal_id == caller.id and record.username == username
    if not same or record.data != data:
        raise Conflict(
            f"task {record.task_id} belongs to another submission; "
            "submit again with a new Idempotency-Key"
        )


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
    cache_size: int
    storage_bucket: str
    tasks_by_state: dict[str, int] = field(default_factory=dict)
    platform: PlatformView = field(default_factory=PlatformView)
    replicas_counted: int = 1


class Orchestrator:
    """Owns the lifecycle of every task submitted to (or resumed by) this replica."""

    def __init__(
        self,
        settings: OrchestratorSettings,
        deps: Deps,
        digest_key: bytes,
        address: str,
        peers: Peers | None = None,
        accounts: Accounts | None = None,
    ) -> None:
        self.settings = settings
        self.accounts = accounts or Accounts()
        self.deps = deps
        self.replica_id = deps.replica_id
        self.runs: dict[str, TaskRun] = {}
        self.submitted = 0
        self.finished: Counter[str] = Counter()
        self._recent = RecentTasks(settings.recent_max_bytes, _RECENT_S)
        self.admission = Admission(
            settings.submit_rate_per_minute, settings.max_in_flight_per_principal
        )
        self._digest_key = digest_key
        self._id_second = ""
        # Tasks whose submission is storing them on this replica (they start once stored).
        self._creating: Counter[str] = Counter()
        self._ids_issued: set[str] = set()
        self.peers = peers or Peers()
        self.keys = ApiKeys(deps.storage)
        self.membership = Membership(
            deps.storage, deps.replica_id, address, ttl_s=settings.lease_ttl_s, held=self._held
        )
        self.takeover = Takeover(
            deps.storage,
            self.membership,
            max_takeovers=settings.max_takeovers,
            retry_window_s=settings.retry_window_s,
            launch=self._launch,
            held=self._held,
        )
        self._loops: list[asyncio.Task[None]] = []
        metrics.watch(self)
        self._settling: set[asyncio.Task[None]] = set()

    def _held(self) -> set[str]:
        return set(self.runs)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Joins the replicas (retrying while storage is down), then renews the lease and looks
        for orphaned work every ``lease_renew_s``."""
        await self.deps.pool.start()
        delays = _JOIN_BACKOFF.delays()
        while True:
            try:
                await self.membership.join()
                break
            except AppError as exc:
                delay = next(delays)
                logger.warning("cannot write lease yet (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
        logger.info(
            "replica %s holds its lease (ttl %.1fs)", self.replica_id, self.settings.lease_ttl_s
        )
        self._loops = [
            asyncio.create_task(self._every_renewal("lease renewal", self.membership.renew)),
            asyncio.create_task(self._every_renewal("scan for orphaned tasks", self.takeover.scan)),
            asyncio.create_task(
                sweep_forever(
                    self.deps.storage,
                    window_s=self.settings.retry_window_s,
                    interval_s=self.settings.sweep_interval_s,
                    should_run=self._sweeps,
                )
            ),
        ]

    def _sweeps(self) -> bool:
        """One live replica sweeps the seal index: the one whose id sorts first."""
        return self.replica_id == min(self.membership.alive)

    async def _every_renewal(self, what: str, step: Callable[[], Awaitable[object]]) -> None:
        # Renewal and scans run apart so a long scan can never make this replica look dead.
        while True:
            await asyncio.sleep(self.settings.lease_renew_s)
            try:
                await step()
            except AppError as exc:
                logger.warning("%s failed: %s", what, exc)
            except Exception:
                logger.exception("%s failed", what)

    async def stop(self) -> None:
        """Stops every run without finishing it and gives the lease up with a last lease that
        lists the tasks left unfinished and says this replica stopped, so the other replicas
        take them over at once."""
        unfinished = list(self.runs)
        for loop in [*self._loops, *self._settling]:
            loop.cancel()
        runs = [r.task for r in self.runs.values() if r.task]
        for task in runs:
            task.cancel()
        await asyncio.gather(*self._loops, *self._settling, *runs, return_exceptions=True)
        with contextlib.suppress(AppError):
            await self.membership.renew(unfinished, stopped=True)
        await self.peers.close()
        await self.deps.pool.close()
        await self.deps.storage.close()

    def _launch(self, record: TaskRecord, version: str) -> TaskRun:
        """Starts running ``record`` here, unless this replica runs it already: one task never
        has two runs on one replica, whichever path (submission, replay, takeover) got here."""
        if (running := self.runs.get(record.task_id)) is not None:
            logger.warning("task %s already runs here; not starting it again", record.task_id)
            return running
        run = TaskRun(record, version, self.deps)
        self.runs[record.task_id] = run
        self.admission.started(record.principal_id)
        run.task = asyncio.create_task(self._drive(run), name=record.task_id)
        return run

    async def _drive(self, run: TaskRun) -> None:
        try:
            with tracing.continued(run.record.traceparent, "task run", run.task_id):
                await run.run()
        finally:
            self.runs.pop(run.task_id, None)
            self.admission.finished(run.record.principal_id)
            if run.record.status.terminal:
                self.finished[run.record.status.value] += 1
                self._recent.add(run.record)
                await index_seal(self.deps.storage, run.record, self.settings.retry_window_s)
                await self._ended(run.record)

    async def _ended(self, record: TaskRecord) -> None:
        """What a task's end asks beyond its record: its files (best effort, never raising for
        storage's failures)."""
        await task_files.after_task(
            self.deps.storage.files,
            record,
            self.deps.config,
            delete_temporary=self.settings.delete_temporary_files,
        )

    # -- submission -------------------------------------------------------------------------

    async def submit(
        self,
        caller: Principal,
        username: str,
        password: str,
        tenant: str,
        records_json: list[str],
        idempotency_key: str = "",
    ) -> tuple[TaskRecord, bool]:
        """Validates, detects sections, stores the task as pending and starts it. Returns the
        task and whether an earlier submission with the same idempotency key had made it."""
        started = time.monotonic()
        if not caller.id:
            raise Unauthenticated("caller: every task needs an owner; the gateway names it")
        records = self._validate(tenant, records_json)
        detected = detect(records, self.deps.config)
        sections = self.deps.config.sections
        # A task whose sections all are of kinds that call no platform needs no platform login.
        calls_platform = any(sections[d.section].needs_platform for d in detected)
        if not username and not password and calls_platform:
            username, password, tenant = self._service_login(caller, tenant)
        elif tenant and caller.tenant and tenant != caller.tenant and not caller.admin:
            raise InvalidInput(f"tenant: your key belongs to tenant {caller.tenant!r}")
        if username or password:
            _check_credentials(username, password)
        tenant = tenant or caller.tenant or self.settings.default_tenant
        continued = await continuation.resolve(
            records, detected, self.deps.config, lambda earlier: self._stored(earlier, caller)
        )
        async with self.admission.admit(caller):
            now = utcnow()
            task_id = drawn = self._new_task_id(now)
            if idempotency_key:
                check_key(idempotency_key)
                request = {"username": username, "password": password, "tenant": tenant}
                digest = request_digest(self._digest_key, {**request, "records": records})
                scope = f"{caller.id}\0{username}"  # one caller's keys never meet another's
                claimed = await claim(self.deps.storage, scope, idempotency_key, digest, task_id)
                if claimed.replayed:
                    with contextlib.suppress(NotFound):
                        replayed = await self._replay(claimed.task_id, caller, username, records)
                        return replayed, True
                task_id = claimed.task_id  # the claim's first attempt never wrote its task
            files = await task_files.resolve(self.deps.storage.files, caller.id, records)
            record = TaskRecord(
                task_id=task_id,
                status=TaskState.PENDING,
                message="Task submitted successfully",
                username=username,
                tenant=tenant,
                password_sealed=(
                    self.deps.sealer.seal(password, task_id, tenant, username) if password else ""
                ),
                data=records,
                section_detected=", ".join(d.section for d in detected),
                result_data={
                    d.section: SectionResult(
                        record_index=d.index,
                        asset_id=c.asset_id if (c := continued.get(d.index)) else d.asset_id,
                        continues=c,
                    )
                    for d in detected
                },
                created_at=iso(now),
                updated_at=iso(now),
                owner=self.replica_id,
                principal_id=caller.id,
                files=files,
                principal_tenant=caller.tenant or tenant,
                traceparent=tracing.current_traceparent(),
            )
            record.trace.append(
                transitions.trace_entry(
                    "Submit",
                    "completed",
                    started=started,
                    at=record.created_at,
                    detail=f"{len(records)} records",
                )
            )
            # An id drawn by an earlier attempt may be older than this replica's last lease
            # renewal, where a takeover would not look: list it in the lease before storing it.
            listed = task_id != drawn
            # Shielded: a caller that goes away mid-call must not leave a stored task unstarted.
            return await asyncio.shield(
                self._store_and_start(record, bool(idempotency_key), listed=listed)
            )

    def _service_login(self, caller: Principal, tenant: str) -> tuple[str, str, str]:
        """The username, password and platform tenant of the service account of the caller's
        tenant, for a submission that carries no credentials (:mod:`orchestrator.accounts`)."""
        account = self.accounts.for_tenant(caller.tenant)
        if tenant and tenant != account.tenant:
            raise InvalidInput(
                f"tenant: a task without credentials runs on your tenant's platform account, "
                f"of platform tenant {account.tenant!r}; leave tenant empty or send credentials"
            )
        return account.username, account.password.get_secret_value(), account.tenant

    def _new_task_id(self, now: datetime) -> str:
        """An id with this replica's tag and six random hex digits never issued twice by this
        replica within one second."""
        second = task_ids.second_prefix(now)
        if second != self._id_second:
            self._id_second, self._ids_issued = second, set()
        while (suffix := secrets.token_hex(3)) in self._ids_issued:
            pass
        self._ids_issued.add(suffix)
        return task_ids.new(now, self.membership.tag, suffix)

    async def _store_and_start(
        self, record: TaskRecord, keyed: bool, *, listed: bool = False
    ) -> tuple[TaskRecord, bool]:
        """Stores ``record`` and starts it (``listed``: in this replica's lease first)."""
        self._creating[record.task_id] += 1
        try:
            async with (
                self.membership.claiming([record.task_id]) if listed else contextlib.nullcontext()
            ):
                try:
                    version = await self.deps.storage.create(record, owner=record.principal_id)
                except Unavailable:
                    self._settle_lost_answer(record, keyed)
                    raise
                submitted = record.model_copy()  # the answer shows the task as stored
                self._launch(record, version)
        except Conflict:
            if not keyed:
                raise
            # A concurrent repeat was first.
            caller = Principal(id=record.principal_id, tenant=record.tenant)
            return await self._replay(record.task_id, caller, record.username, record.data), True
        finally:
            self._creating -= Counter([record.task_id])
        self.submitted += 1
        logger.info("task %s submitted with sections %s", record.task_id, record.section_detected)
        return submitted, False

    def _settle_lost_answer(self, record: TaskRecord, keyed: bool) -> None:
        """A store that failed may have landed with only its answer lost (storage_svc died
        meanwhile): then the task is stored, owned by this replica, and nobody runs it. The
        caller is answered 503 at once; meanwhile the task is looked for until storage
        answers. Found, it runs when its client can come back for it (an idempotency key: the
        repeat finds it), else it ends in error, so no task is left stored and unstarted, and
        none runs that its client was told was not taken."""
        self._creating[record.task_id] += 1  # a repeat meanwhile must not take it over
        settling = asyncio.create_task(self._settle(record, keyed), name=record.task_id)
        self._settling.add(settling)
        settling.add_done_callback(self._settling.discard)

    async def _settle(self, record: TaskRecord, keyed: bool) -> None:
        try:
            try:
                version = await self._landed(record)
            except AppError:  # not stored, or another submission's task holds the id
                return
            if not keyed:
                logger.warning("task %s was stored although its submission failed", record.task_id)
                with contextlib.suppress(AppError):
                    await self.deps.storage.update(transitions.fail(record, _LOST_ANSWER), version)
                    await index_seal(self.deps.storage, record, self.settings.retry_window_s)
                return
        finally:
            self._creating -= Counter([record.task_id])
        self.submitted += 1
        logger.info("task %s was stored although storage's answer was lost", record.task_id)
        self._launch(record, version)

    async def _landed(self, record: TaskRecord) -> str:
        """The version of ``record`` if a create whose answer was lost stored it (looked for
        until storage answers); NotFound when it did not land, Conflict when another
        submission's task holds the id."""
        delays = _JOIN_BACKOFF.delays()
        while True:
            try:
                stored, version = await self.deps.storage.get(record.task_id)
            except Unavailable:
                await asyncio.sleep(next(delays))
                continue
            if (stored.owner, stored.created_at) != (record.owner, record.created_at):
                raise Conflict(f"task {record.task_id} was stored by another submission")
            return version

    async def _replay(
        self, task_id: str, caller: Principal, username: str, data: list[dict[str, Any]]
    ) -> TaskRecord:
        """The task an earlier submission of the same user and records created. If it is not
        running — its owner died before its lease listed it, or it is this replica and the task
        is not among its runs — this replica takes it over, so a repeated submission never
        finds an orphan."""
        if run := self.runs.get(task_id):
            _check_same_submission(run.record, caller, username, data)
            return run.record
        record, version = await self.deps.storage.get(task_id)
        _check_same_submission(record, caller, username, data)
        if record.owner not in self.membership.leases and record.owner != self.replica_id:
            # An owner this replica has not seen yet (started since the last scan) is not dead
            # for that: look at the leases before taking its task.
            await self.membership.refresh()
        # Looked at after the reads above: meanwhile this replica may have started the task, or
        # be storing it (it starts once stored). Either way it is no orphan.
        here = task_id in self.runs or task_id in self._creating
        ours_idle = record.owner == self.replica_id and not here
        orphaned = ours_idle or not self.membership.is_alive(record.owner)
        if not record.status.terminal and orphaned:
            async with self.membership.claiming([task_id]):
                await self.takeover.take_over(record, version)
        return record

    def _validate(self, tenant: str, records_json: list[str]) -> list[dict[str, Any]]:
        limits = self.settings
        if tenant and (len(tenant) > 64 or not set(tenant) <= _TENANT_CHARS):
            raise InvalidInput("tenant: 1-64 letters, digits, '.', '_' or '-'")
        if not records_json:
            raise InvalidInput("data: at least one record is required")
        if len(records_json) > limits.max_records:
            raise TooLarge(f"data: at most {limits.max_records} records per task")
        records = []
        for index, text in enumerate(records_json):
            where = f"data[{index}]"
            if len(text.encode()) > limits.max_record_bytes:
                raise TooLarge(f"{where}: larger than {limits.max_record_bytes} bytes")
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{where}: not valid JSON ({exc.msg})") from exc
            except RecursionError:
                raise InvalidInput(f"{where}: nested too deeply") from None
            if not isinstance(record, dict) or not record:
                raise InvalidInput(f"{where}: must be a non-empty JSON object")
            check_json_shape(record, where)
            records.append(record)
        return records

    # -- task-scoped calls ------------------------------------------------------------------

    def locate(self, task_id: str) -> str:
        """Where calls about ``task_id`` are served: the address of the live replica that runs
        it when that is another one, else "" (here)."""
        task_ids.check(task_id)
        return self.membership.locate(task_id)

    async def get(self, task_id: str, caller: Principal) -> TaskRecord:
        """The freshest view of a task this replica can give: live if it runs here, else as
        stored. Another owner's task is not found, exactly as a task that does not exist."""
        task_ids.check(task_id)
        if run := self.runs.get(task_id):
            record = run.record
        elif (recent := self._recent.get(task_id)) is not None:
            record = recent
        else:
            record, _ = await self.deps.storage.get(task_id)
        return _visible(record, caller)

    async def _stored(self, task_id: str, caller: Principal) -> TaskRecord:
        """A task as stored, its input records included (which the memory of finished tasks
        drops), if ``caller`` may see it."""
        task_ids.check(task_id)
        record, _ = await self.deps.storage.get(task_id)
        return _visible(record, caller)

    async def list(
        self,
        caller: Principal,
        limit: int,
        status: str,
        page_token: str,
        owner: str = "",
        tenant: str = "",
    ) -> tuple[list[TaskRecord], str]:
        """A page of tasks, newest first: the caller's own, or for an admin everyone's (or
        ``owner``'s, or ``tenant``'s)."""
        if limit < 0 or limit > 100:
            raise InvalidInput("limit: 1..100")
        if status and status not in {s.value for s in TaskState}:
            allowed = ", ".join(s.value for s in TaskState)
            raise InvalidInput(f"status: must be one of {allowed}")
        if owner and not caller.admin:
            raise InvalidInput("owner: only admins may list another principal's tasks")
        if tenant and not caller.admin:
            raise InvalidInput("tenant: only admins may list by tenant")
        if tenant and not set(tenant) <= _TENANT_CHARS:
            raise InvalidInput("tenant: letters, digits, '.', '_' and '-' only")
        owner = owner if caller.admin else caller.id
        page, token = await self.deps.storage.list_tasks(
            limit or 20, page_token, status, owner, tenant
        )
        live = [self.runs[r.task_id].record if r.task_id in self.runs else r for r, _ in page]
        return [r for r in live if caller.may_see(r.principal_id)], token

    async def input(self, task_id: str, caller: Principal) -> TaskRecord:
        """A task with its input records, as stored (the records never change after the
        submission, so the stored document has them whatever replica runs the task)."""
        return await self._stored(task_id, caller)

    async def cancel(self, task_id: str, caller: Principal) -> TaskRecord:
        """Stops the task's running sections and records it as cancelled (through its owner
        when that is another live replica)."""
        task_ids.check(task_id)
        if (run := self.runs.get(task_id)) and run.task:
            _visible(run.record, caller)
            run.cancel_requested = True
            run.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run.task
            return run.record
        record, version = await self.deps.storage.get(task_id)
        _visible(record, caller)
        if record.status.terminal:
            raise WrongState(f"task {task_id} already finished as {record.status.value}")
        owner = self.membership.locate(task_id, record.owner)
        if owner and await self.peers.cancel(owner, task_id, caller) is not None:
            record, _ = await self.deps.storage.get(task_id)
            return record
        transitions.cancel(record)
        await self.deps.storage.update(record, version)
        await self._ended(record)
        return record

    async def retry(self, task_id: str, caller: Principal) -> TaskRecord:
        """Runs again only the sections of an ``error`` task that did not complete (on its
        last owner when that replica is alive, so no replica keeps serving the old result)."""
        task_ids.check(task_id)
        if run := self.runs.get(task_id):
            _visible(run.record, caller)
            raise WrongState(f"task {task_id} is running")
        record, version = await self.deps.storage.get(task_id)
        _visible(record, caller)
        if record.status != TaskState.ERROR:
            raise WrongState(
                f"only a task that ended in error can be retried; {task_id} is "
                f"{record.status.value}"
            )
        owner = self.membership.locate(task_id, record.owner)
        if owner and await self.peers.retry(owner, task_id, caller) is not None:
            record, _ = await self.deps.storage.get(task_id)
            return record
        transitions.retry(record, self.replica_id, window_s=self.settings.retry_window_s)
        reopened = record.model_copy()  # the answer shows the task as stored, not as it runs
        await asyncio.shield(self._reopen(record, version))
        return reopened

    async def _reopen(self, record: TaskRecord, version: str) -> None:
        async with self.membership.claiming([record.task_id]):
            version = await self.deps.storage.update(record, version)
            self._recent.pop(record.task_id)
            self._launch(record, version)

    async def watch(
        self, task_id: str, caller: Principal, forwarded: bool = False
    ) -> AsyncIterator[TaskEvent]:
        """One event now, then one per change, until the task is finished: from its run when
        it runs here, from its owner when another replica runs it (unless this call was
        forwarded already), else from storage until an owner shows up."""
        last: TaskEvent | None = None
        while True:
            if run := self.runs.get(task_id):
                _visible(run.record, caller)
                async for event in self._watch_run(run):
                    if event != last:
                        yield event
                return
            if owner := ("" if forwarded else self.locate(task_id)):
                async for event in self.peers.watch(owner, task_id, caller):
                    if event != last:
                        yield event
                        last = event
                if last is not None and last.terminal:
                    return
            event = TaskEvent.of(await self.get(task_id, caller))
            if event != last:
                yield event
                last = event
            if event.terminal:
                return
            await asyncio.sleep(_WATCH_POLL_S)

    async def _watch_run(self, run: TaskRun) -> AsyncIterator[TaskEvent]:
        queue = run.subscribe()
        try:
            yield TaskEvent.of(run.record)
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), _WATCH_POLL_S)
                except TimeoutError:
                    if run.task is None or run.task.done():
                        yield TaskEvent.of(run.record)  # the run stopped without a last event
                        return
                    continue
                yield event
                if event.terminal:
                    # Sections stored by one write each publish after it: pass them all on.
                    if run.task is not None:
                        await asyncio.wait({run.task}, timeout=_WATCH_POLL_S)
                    while not queue.empty():
                        yield queue.get_nowait()
                    return
        finally:
            run.unsubscribe(queue)

    def task_figures(self) -> TaskFigures:
        """This replica's task figures: the ones its metrics report."""
        by_state = Counter(run.record.status.value for run in list(self.runs.values()))
        return sum_figures(
            [
                TaskFigures(
                    by_state=dict(by_state),
                    running=len(self.runs),
                    submitted=self.submitted,
                    finished=dict(self.finished),
                    taken_over=self.takeover.taken_over,
                )
            ]
        )

    async def stats(self, all_replicas: bool = False) -> Stats:
        """Workers, queue, storage and task figures; with ``all_replicas`` the task figures
        of every live replica summed (each other one asked once; one that does not answer is
        left out, and ``replicas_counted`` says how many were)."""
        pool = self.deps.pool.stats()
        figures = [self.task_figures()]
        if all_replicas:
            alive = sorted(self.membership.alive)
            others = [a for name in alive if (a := self.membership.address_of(name))]
            answers = await asyncio.gather(*(self.peers.task_figures(a) for a in others))
            figures += [answer for answer in answers if answer is not None]
        total = sum_figures(figures)
        return Stats(
            workers=pool.configured,
            workers_ready=pool.ready,
            worker_capacity=pool.capacity,
            sections_running=pool.running,
            queue_size=pool.queued,
            tasks_running=total.running,
            tasks_submitted=total.submitted,
            tasks_finished=total.finished,
            storage_ok=await self.deps.storage.healthy(),
            replica_id=self.replica_id,
            replicas_alive=len(self.membership.alive),
            tasks_taken_over=total.taken_over,
            cache_size=len(self.runs) + len(self._recent),
            storage_bucket=await self.deps.storage.bucket(),
            tasks_by_state=total.by_state,
            platform=self.deps.pool.platform(),
            replicas_counted=len(figures),
        )


def _check_credentials(username: str, password: str) -> None:
    if not username.strip() or len(username) > 256:
        raise InvalidInput("username: required, at most 256 characters")
    if not password or len(password) > 1024:
        raise InvalidInput("password: required, at most 1024 characters")


def _visible(record: TaskRecord, caller: Principal) -> TaskRecord:
    """``record`` if ``caller`` may see it; else not found, in the same words as a task that does
    not exist, so ids cannot be probed."""
    if not caller.may_see(record.principal_id):
        raise NotFound(f"task {record.task_id} not found")
    return record
