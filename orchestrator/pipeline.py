"""The pipeline of one task: authenticate, detect sections, run every section in parallel on the
workers, aggregate, finish.

Writes to storage are few and each one matters: the task is stored at submission; a section's
conversation and message ids are queued for storing as soon as the platform accepts its prompt,
and the job goes on meanwhile (a store that fails ends the job with its error); then every
finished section is persisted before it counts as done (a crash right after costs nothing
twice), never before its message ids; writes that meet while one is in flight share the next
one (:mod:`orchestrator.writer`), so a quick answer that comes while its ids wait for their
write is stored with them in one; the write of the last section also finishes the task.
Intermediate states (authenticating, processing, a section running) live in memory, where
status calls and watchers read them, so a running task costs no storage read either. What each
step changes on the record is in :mod:`orchestrator.transitions`; how a section's job reaches
a worker, in :mod:`orchestrator.dispatch`.

Never paying twice for a prompt: a section whose stored record has a message id and no answer —
its run was taken over from a dead replica, or retried — is dispatched to resume that message
(the worker only polls it), on the worker that last ran it when that one has room; a job whose
worker is lost is sent again the same way (:mod:`orchestrator.dispatch`). A job that starts
away from its home worker has that worker stored first, so that a replica taking over after
this one died before storing a message id still reaches the worker holding it. Only when the
platform says the resumed message FAILED or does not know it does the worker send the prompt
again; that new message replaces the old one with a ``Prompt sent again`` entry in the trace.

Authentication happens once per task, through one worker, and yields the platform's access
token, which every section job carries instead of the password; the token lives only in this
run's memory (and in :class:`~orchestrator.credentials.TokenCache` for the user's next tasks).
The password is opened from the task's seal only when a token must be fetched. A job that meets
an expired token (:class:`~orchestrator.worker_client.TokenExpired`) gets a renewed one — once
per expired token for the whole task — and is sent again from the conversation and message it
had reached, so no prompt is sent twice.

A section that continues an earlier task's conversation (:mod:`orchestrator.continuation`) runs
its job with that conversation to resume and its asset as the whole chain, so the prompt goes
into that conversation and never into a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field

from common.backoff import Backoff
from common.errors import AppError, Unavailable
from common.logging import section_var, task_id_var
from orchestrator import task_files, transitions
from orchestrator.config import SectionsConfig
from orchestrator.credentials import Sealer, SealError, TokenCache
from orchestrator.dispatch import OnProgress, dispatch, resumed
from orchestrator.models import TaskEvent, TaskRecord, TaskState
from orchestrator.storage_client import StorageClient
from orchestrator.worker_client import (
    AccessToken,
    Credentials,
    JobRejected,
    Outcome,
    Progress,
    SectionJob,
    TokenExpired,
    WorkerFull,
    WorkerLost,
)
from orchestrator.workers import WorkerPool
from orchestrator.writer import Change, RecordWriter, TaskStopped

logger = logging.getLogger(__name__)

_AUTH_BACKOFF = Backoff(initial_s=0.2, max_s=2.0, jitter=0.5)
_DEFAULT_TIMEOUT_S = 120.0
_DEFAULT_MAX_DISPATCHES = 4
# Token renewals one section may need before it fails: one expiry is expected on a long task;
# a second in a row means the platform rejects fresh tokens, which another one will not fix.
_TOKEN_RENEWALS = 1


class _StoresBehind:
    """The writes a section's job goes on without waiting for (the ids of each prompt the
    platform accepted), in the order they were started. The first that fails ends the job
    (:meth:`watch`) with its error; the section waits for all of them (:meth:`wait`) before it
    is done, which its own last write, queued after them, has already done unless one failed."""

    def __init__(self) -> None:
        self._writes: list[asyncio.Task[None]] = []
        self._failed: BaseException | None = None
        self._job: asyncio.Future[Outcome] | None = None

    def start(self, write: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(write)
        task.add_done_callback(self._ended)
        self._writes.append(task)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._failed is not None:
            return
        if (error := task.exception()) is not None:
            self._failed = error
            if self._job is not None:
                self._job.cancel()

    async def watch(self, job: Coroutine[object, object, Outcome]) -> Outcome:
        """``job``'s outcome, unless a write fails first: then the job is cancelled and the
        write's error raised."""
        if self._failed is not None:
            job.close()
            raise self._failed
        self._job = asyncio.ensure_future(job)
        try:
            return await self._job
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._failed is None or (current is not None and current.cancelling()):
                raise
            raise self._failed from None
        finally:
            self._job = None

    async def wait(self) -> None:
        """Returns once every write is stored; raises the first one's error."""
        for task in self._writes:
            await task

    def close(self) -> None:
        """Cancels the writes still going (the section ended without them) and consumes the
        errors of those that failed (the first was raised already)."""
        for task in self._writes:
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()


class _AuthenticationFailed(Exception):
    """No worker could authenticate the task's user; the message says why (no secret)."""


@dataclass
class Deps:
    """What every task run needs from its orchestrator."""

    storage: StorageClient
    pool: WorkerPool
    config: SectionsConfig
    sealer: Sealer
    replica_id: str
    auth_wait_s: float = 60.0
    tokens: TokenCache = field(default_factory=TokenCache)


class TaskRun:
    """One task this orchestrator is running: its live record, its watchers and the coroutine
    driving it."""

    def __init__(self, record: TaskRecord, version: str, deps: Deps) -> None:
        self.deps = deps
        self.writer = RecordWriter(deps.storage, record, version, deps.replica_id)
        self.watchers: set[asyncio.Queue[TaskEvent]] = set()
        self.cancel_requested = False
        self.task: asyncio.Task[None] | None = None
        self._token: AccessToken | None = None
        self._renewing = asyncio.Lock()

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
            if not self._needs_platform():
                self._authenticated(time.monotonic(), "not needed: no section calls the platform")
            elif not self.record.password_sealed:
                gone = f"Task failed: {transitions.SEAL_CLEARED}"
                await self._persist(lambda r: transitions.fail(r, gone))
                return
            elif not await self._authenticate():
                return
            self._detect()
            await self._process()
        except TaskStopped as stopped:
            logger.info("task changed elsewhere (status, owner: %s); this run stops", stopped)
            self._publish()
        except asyncio.CancelledError:
            if not self.cancel_requested:
                raise
            with contextlib.suppress(TaskStopped):
                await self._persist(transitions.cancel)
        except SealError as exc:  # its message names a key id at most, never a secret
            logger.error("the task's sealed password cannot be opened: %s", exc)
            reason = f"the sealed password cannot be opened: {exc}"
            with contextlib.suppress(TaskStopped):
                await self._persist(lambda r: transitions.fail(r, f"Task failed: {reason}"))
        except Exception as exc:
            logger.exception("task failed unexpectedly")
            reason = exc.message if isinstance(exc, AppError) else "internal error"
            with contextlib.suppress(TaskStopped):
                await self._persist(lambda r: transitions.fail(r, f"Task failed: {reason}"))

    def _needs_platform(self) -> bool:
        """Whether a section of the task is of a kind that calls the AI platform (a section no
        longer configured is assumed to)."""
        sections = self.deps.config.sections
        return any(
            name not in sections or sections[name].needs_platform
            for name in self.record.result_data
        )

    def _credentials(self) -> Credentials:
        """The user's credentials, the password opened from the task's seal for this moment."""
        record = self.record
        password = self.deps.sealer.open(
            record.password_sealed, record.task_id, record.tenant, record.username
        )
        return Credentials(tenant=record.tenant, username=record.username, password=password)

    async def _authenticate(self) -> bool:
        started = time.monotonic()
        self._step(TaskState.AUTHENTICATING, "Authenticating with the AI platform")
        credentials = self._credentials()
        if cached := self.deps.tokens.get(credentials):
            self._token = cached
            self._authenticated(started, "token of an earlier task")
            return True
        try:
            self._token = await self._fetch_token(credentials, refresh=False)
        except _AuthenticationFailed as exc:
            await self._authentication_failed(started, str(exc))
            return False
        self._authenticated(started)
        return True

    async def _fetch_token(self, credentials: Credentials, *, refresh: bool) -> AccessToken:
        """A token from any ready worker, waiting up to ``auth_wait_s`` for one to answer;
        remembered for the user's next tasks."""
        deadline = time.monotonic() + self.deps.auth_wait_s
        delays = _AUTH_BACKOFF.delays()
        while True:
            try:
                worker = self.deps.pool.any_ready()
                token = await worker.client.authenticate(credentials, refresh=refresh)
                break
            except (WorkerLost, WorkerFull, Unavailable) as exc:
                # A worker lost or full, or none ready: another may answer soon.
                if time.monotonic() < deadline:
                    await asyncio.sleep(next(delays))
                    continue
                raise _AuthenticationFailed(str(exc)) from None
            except JobRejected as exc:  # the platform refused the credentials
                raise _AuthenticationFailed(exc.reason) from None
        self.deps.tokens.put(credentials, token)
        return token

    async def _renew_token(self, rejected: str) -> str:
        """A token to replace ``rejected``: the one another section renewed already, or a new
        one fetched through any worker."""
        async with self._renewing:
            assert self._token is not None
            if self._token.value != rejected:
                return self._token.value
            credentials = self._credentials()
            self.deps.tokens.discard(credentials, rejected)
            logger.info("the platform rejected the task's token; authenticating again")
            self._token = await self._fetch_token(credentials, refresh=True)
            return self._token.value

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

    async def _process(self) -> None:
        todo = [name for name, s in self.record.result_data.items() if not s.status.terminal]
        if not todo:
            await self._persist(transitions.aggregate)
            return
        await asyncio.gather(*(self._section(name) for name in todo))

    def _progressed(self, name: str, progress: Progress, worker: str) -> Change | None:
        """Keeps what section ``name``'s job reached; returns the change to store, if any. A
        conversation alone stays in memory (another one costs nothing); a message the platform
        accepted is to be stored at once, with the conversation's asset and the worker."""
        section = self.record.result_data[name]
        if not progress.message_id:
            if progress.conv_id and progress.conv_id != section.conv_id:
                section.conv_id, section.conv_asset_id = progress.conv_id, progress.asset_id
                section.message_id = ""
            return None
        if (progress.conv_id, progress.message_id) == (section.conv_id, section.message_id):
            section.worker = worker  # a resumed message, stored already; written with the next
            return None
        return lambda r: transitions.prompt_sent(
            r,
            name,
            conv_id=progress.conv_id,
            message_id=progress.message_id,
            asset_id=progress.asset_id,
            worker=worker,
        )

    async def _section(self, name: str) -> None:
        section_var.set(name)
        started = time.monotonic()
        transitions.start_section(self.record, name)
        self._publish(name)
        section = self.record.result_data[name]
        stored = section.model_copy()  # where an earlier run of the section got
        cfg = self.deps.config.sections.get(name)
        job = SectionJob(
            job_id=f"{self.task_id}:{name}",
            task_id=self.task_id,
            section=name,
            asset_id=cfg.asset_id if cfg else section.asset_id,
            record_json=json.dumps(self.record.data[section.record_index]),
            tenant=self.record.tenant,
            username=self.record.username,
            access_token=self._token.value if self._token else "",
            timeout_s=cfg.timeout_s if cfg else _DEFAULT_TIMEOUT_S,
            owner_id=self.record.principal_id,
            files=task_files.of_record(self.record, section.record_index),
            output=task_files.output_of(cfg),
            # A section no longer configured keeps the one asset it was detected with.
            assets=cfg.chain if cfg else (),
            principal_tenant=self.record.principal_tenant,
            kind=cfg.kind if cfg else "",
            options_json=json.dumps(cfg.options) if cfg and cfg.options else "",
        )
        if (continued := section.continues) is not None:
            # The conversation is continued where it is: its asset alone (another asset would
            # need a new conversation), the prompt sent into it (no message id: none sent yet).
            job = dataclasses.replace(
                job,
                asset_id=continued.asset_id,
                assets=(continued.asset_id,),
                resume_conv_id=continued.conv_id,
                resume_asset_id=continued.asset_id,
            )
        if stored.message_id:
            logger.info("section %s resumes message %s", name, stored.message_id)
            job = resumed(job, stored.conv_id, stored.message_id, stored.conv_asset_id)
        dispatches = section.dispatches

        def dispatched() -> None:
            nonlocal dispatches
            dispatches += 1

        stores = _StoresBehind()
        storing = ("", "", "")  # the ids and worker whose write was queued last

        async def progressed(progress: Progress, worker: str) -> None:
            nonlocal storing
            if transitions.section_progress(
                self.record, name, job.kind, progress.done, progress.total
            ):
                self._publish(name)
            reached = (progress.conv_id, progress.message_id, worker)
            if progress.message_id and reached == storing:
                return  # reported again (a poll) while its write waits: that write stores it
            if (change := self._progressed(name, progress, worker)) is not None:
                storing = reached
                stores.start(self._persist(change, section=name))

        async def placed(worker: str) -> None:
            await self._persist(lambda r: transitions.placed(r, name, worker), section=name)

        try:
            outcome = await self._run_job(
                name, job, stores, stored.worker, dispatched, progressed, placed
            )
            await self._persist(
                lambda r: transitions.finish_section(
                    r, name, outcome, dispatches=dispatches, started=started
                ),
                section=name,
            )
            await stores.wait()
        finally:
            stores.close()
        logger.info("section %s %s", name, "completed" if outcome.success else "failed")

    async def _run_job(
        self,
        name: str,
        job: SectionJob,
        stores: _StoresBehind,
        prefer: str,
        dispatched: Callable[[], None],
        progressed: OnProgress,
        placed: Callable[[str], Awaitable[None]],
    ) -> Outcome:
        """The outcome of section ``name``'s ``job`` (on ``prefer``, the worker that last ran it,
        when it has room), its access token renewed when the platform rejects it."""
        cfg = self.deps.config.sections.get(name)
        renewals = _TOKEN_RENEWALS
        while True:
            try:
                return await stores.watch(
                    dispatch(
                        self.deps.pool,
                        job,
                        max_dispatches=cfg.max_dispatches if cfg else _DEFAULT_MAX_DISPATCHES,
                        on_dispatch=dispatched,
                        on_progress=progressed,
                        on_placed=placed,
                        prefer=prefer,
                    )
                )
            except TokenExpired as expired:
                if renewals == 0:
                    return _expired_outcome(expired, "it expired again after a renewal")
                renewals -= 1
                try:
                    token = await self._renew_token(job.access_token)
                except _AuthenticationFailed as exc:
                    return _expired_outcome(expired, f"authenticating again failed: {exc}")
                reached = self.record.result_data[name]
                job = resumed(
                    dataclasses.replace(job, access_token=token),
                    expired.conv_id,
                    expired.message_id,
                    reached.conv_asset_id if reached.conv_id == expired.conv_id else "",
                )


def _expired_outcome(expired: TokenExpired, why: str) -> Outcome:
    return Outcome(
        success=False,
        conv_id=expired.conv_id,
        message_id=expired.message_id,
        error=f"the platform rejected the access token and {why} ({expired.reason})",
    )
