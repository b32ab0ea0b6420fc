"""Section jobs, end to end, in plain async Python (no gRPC types).

A job is of a kind (:mod:`section_worker.kinds`: an AI conversation about a record, a profile of
a file, a transform of a table); the runner does what every kind shares — admission, timeout,
progress, the result — and hands the kind its protected platform client (:class:`_Platform`:
every prompt through the section's fallback chain), the file client and a progress reporter.

:class:`JobRunner` admits a job only when a slot is free (else :class:`common.errors.Overloaded`
at once; :class:`common.errors.Unavailable` while draining). Slots guard only the worker's own
memory (a waiting job costs a few KiB): what reaches the platform is shaped by the protection
(:mod:`section_worker.protection`). The job then runs through its section's fallback chain
(:class:`~section_worker.protection.chain.Chain`); on each asset the chain lets it try, it
creates a conversation, sends the prompt and polls until the platform answers, every call with
the access token the job carries; before each poll it asks the asset's poll plan
(:mod:`section_worker.polling`) when, so a job follows what the worker knows at that moment,
what its peers learned included (:mod:`section_worker.latency_sharing`). It yields
:class:`Progress` events (naming the asset of the conversation) and finally exactly one
:class:`SectionResult`, which names the asset that answered and every attempt on the way.

When every asset of the chain failed, or the job's own timeout struck, the result is failed,
naming why; a token the platform rejects also marks the result ``token_expired``, with the ids
reached so far, so that the job can be sent again with a new token and resume there
(:attr:`SectionJob.resume_conv_id`, :attr:`SectionJob.resume_message_id`, on the asset that
made the conversation: :attr:`SectionJob.resume_asset_id`, else the chain's first) instead of
sending its prompt twice. Only the caller cancelling the job ends it without a result, and that
frees its slot too.

Files (:mod:`section_worker.job_files`): the record's referenced files are read from storage and
put into the prompt before any platform call, and a job whose ``output`` is ``"file"`` stores
the answer as a file of the job's owner (the ``conversation`` kind; other kinds read and write
their own files).

Never paying twice for one prompt: a job given a message to resume only polls it; if the
platform answers that this message FAILED or does not know it, no answer can ever come from it,
so the job sends its prompt again, once (the caller sees the new message id in the job's
progress). The prompt's send is shielded from cancellation, so its message id is never lost to
a caller going away mid-call; every job that sent a prompt leaves its ids in
:mod:`section_worker.orphans` when it ends — cut off, or with its result, which may still be
lost with its caller before it is stored — and the same job dispatched here again resumes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from common.errors import AppError, InvalidInput, Overloaded, Unavailable
from common.logging import section_var, task_id_var
from section_worker import job_files, kinds, metrics
from section_worker.files import FileClient, FileRef
from section_worker.job_files import JobFileError
from section_worker.kinds.base import KindContext, KindError, Scratch
from section_worker.latency_sharing import LatencySharing
from section_worker.orphans import Orphans
from section_worker.platform_client import (
    AnswerStatus,
    PlatformClient,
    Retries,
    TokenRejected,
    UnknownMessage,
)
from section_worker.platform_session import PlatformSession
from section_worker.polling import LatencyBook
from section_worker.protection.chain import (
    Answer,
    AnswerFailed,
    Attempt,
    Chain,
    ChainExhausted,
    ChainJob,
)
from section_worker.protection.guard import Protection
from section_worker.protection.store import MemoryStore
from section_worker.settings import WorkerSettings

logger = logging.getLogger(__name__)

# Within a plan's planned times, a poll's answer can take this long after its planned time
# before the plan counts the poll as made when its answer came (slow calls, retries) rather
# than when it was planned; past them, the next poll is always a gap after the answer came.
_POLL_LATE_S = 0.5


@dataclass(frozen=True)
class SectionJob:
    """One section of one task to be written by the platform."""

    job_id: str
    task_id: str
    section: str
    asset_id: str
    record_json: str
    tenant: str
    username: str
    access_token: str = field(repr=False)
    timeout_s: float = 0.0  # 0 means the worker's default
    resume_conv_id: str = ""  # set: an earlier dispatch created this conversation
    resume_message_id: str = ""  # set: an earlier dispatch sent the prompt; only poll
    owner_id: str = ""  # whose files the job reads and writes
    files: tuple[FileRef, ...] = ()  # the files the record references
    output: str = job_files.OUTPUT_INLINE  # "file": the answer is stored as a file
    assets: tuple[str, ...] = ()  # the fallback chain; empty: asset_id alone
    principal_tenant: str = ""  # who pays (limits, budgets); empty: the platform tenant
    resume_asset_id: str = ""  # the asset of resume_conv_id; empty: the chain's first
    kind: str = ""  # the job's kind (section_worker.kinds); empty: a conversation
    options_json: str = ""  # the section's options for its kind, a JSON object; "": defaults

    @property
    def chain(self) -> tuple[str, ...]:
        return self.assets or ((self.asset_id,) if self.asset_id else ())

    @property
    def payer(self) -> str:
        return self.principal_tenant or self.tenant


class Stage(StrEnum):
    ACCEPTED = "accepted"
    CONVERSATION_CREATED = "conversation_created"
    PROMPT_SENT = "prompt_sent"
    POLLING = "polling"


@dataclass(frozen=True)
class Progress:
    stage: Stage
    conv_id: str = ""
    message_id: str = ""
    polls: int = 0
    asset_id: str = ""  # the asset of the conversation (empty before one is chosen)
    done: int = 0  # units of the kind's work done (e.g. chunks answered)
    total: int = 0  # units in all; 0 when the kind counts none


@dataclass(frozen=True)
class SectionResult:
    success: bool
    response: str = ""
    cost: float = 0.0
    conv_id: str = ""
    message_id: str = ""
    error: str = ""
    platform_calls: int = 0
    duration_s: float = 0.0
    token_expired: bool = False
    asset_id: str = ""  # the asset that answered (on failure: the last one reached)
    attempts: tuple[Attempt, ...] = ()
    files: tuple[FileRef, ...] = ()  # files the job produced
    result_json: str = ""  # a structured result (JSON object text); "" when the kind has none


Event = Progress | SectionResult
NO_FILES: tuple[FileRef, ...] = ()


@dataclass(frozen=True)
class Load:
    capacity: int
    in_flight: int
    accepting: bool
    spend_day: str = ""
    spend_today: dict[str, float] = field(default_factory=dict)
    breakers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Trail:
    """How far a job got, for the result and for a timeout's message."""

    doing: str = "starting"
    conv_id: str = ""
    message_id: str = ""
    polls: int = 0
    asset_id: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    deadline: float = math.inf  # monotonic time the job's timeout strikes


class JobRunner:
    """Runs section jobs, at most ``max_concurrent_jobs`` at once."""

    def __init__(
        self,
        client: PlatformClient,
        settings: WorkerSettings,
        protection: Protection | None = None,
        files: FileClient | None = None,
        orphans: Orphans | None = None,
        latencies: LatencyBook | None = None,
    ) -> None:
        """``protection`` defaults to one in this process's memory on the settings' config;
        ``files`` reaches storage_svc's files (without it, a job with files fails);
        ``orphans`` keeps the messages of jobs that ran here (a new book by default);
        ``latencies`` is where poll plans come from (by default a book with the config's
        priors, shared through the protection's store)."""
        self._client = client
        self._settings = settings
        self._files = files
        self._orphans = orphans if orphans is not None else Orphans()
        if protection is None:
            protection = Protection.on(
                MemoryStore(), settings.platform_config(), lease_ttl_s=settings.lease_ttl_s
            )
        self._protection = protection
        self._assets = protection.config.known_assets()
        kinds.check_config(protection.config)
        self._chain = Chain(
            protection,
            fallback_wait_max_s=settings.fallback_wait_max_s,
            limit_wait_max_s=settings.limit_wait_max_s,
        )
        self._opening = Retries.chain(settings)
        config = protection.config
        self._latencies = (
            latencies
            if latencies is not None
            else LatencyBook(settings, lambda asset: config.asset(asset).latency)
        )
        self._sharing = LatencySharing(
            self._latencies,
            protection.store,
            self._assets,
            settings,
            busy=lambda: self._in_flight > 0,
        )
        self._in_flight = 0
        self._accepting = True
        self._idle = asyncio.Event()
        self._idle.set()
        metrics.watch(self)

    @property
    def latencies(self) -> LatencyBook:
        """Where this runner's jobs get their poll plans."""
        return self._latencies

    async def start(self) -> None:
        """Learns what peers know of the assets' latencies (one store round trip; a store
        that fails is logged and the worker starts knowing nothing)."""
        await self._sharing.exchange()

    async def close(self) -> None:
        """Stops sharing latencies with peers."""
        await self._sharing.close()

    def load(self) -> Load:
        """Capacity and jobs in flight, with what the protection saw: today's spend per tenant
        and the breakers' states."""
        day, spent = self._protection.budgets.today.snapshot()
        return Load(
            self._settings.max_concurrent_jobs,
            self._in_flight,
            self._accepting,
            spend_day=day,
            spend_today=spent,
            breakers=self._protection.breakers.states(),
        )

    async def drain(self, timeout_s: float) -> bool:
        """Refuses new jobs from now on; waits up to ``timeout_s`` for running ones to end.
        True when none is left running."""
        self._accepting = False
        logger.info("draining: %d job(s) in flight", self._in_flight)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        if self._in_flight:
            logger.warning("drain timed out with %d job(s) still running", self._in_flight)
        return self._in_flight == 0

    async def run(self, job: SectionJob) -> AsyncGenerator[Event, None]:
        """Runs ``job``; yields progress events, then one result. Raises at once when refused.

        Close the iterator (``contextlib.aclosing``) when stopping early: that cancels the job.
        """
        self._admit(job)
        self._sharing.wake()
        job = self._adopt(job)
        trail = _Trail(conv_id=job.resume_conv_id, message_id=job.resume_message_id)
        if job.resume_conv_id:
            trail.asset_id = job.resume_asset_id or job.asset_id
        events: asyncio.Queue[Event] = asyncio.Queue()
        # The job runs in its own task so that its timeout never fires inside our caller.
        task = asyncio.create_task(self._execute(job, trail, events.put_nowait), name=job.job_id)
        delivered = False
        try:
            while True:
                event = await events.get()
                yield event
                if isinstance(event, SectionResult):
                    delivered = True  # the caller came back for more after the result
                    return
        finally:
            try:
                if not task.done():
                    logger.info("job %s cancelled by its caller", job.job_id)
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            finally:
                self._release()
                self._leave_orphan(job, trail, delivered=delivered)

    def _adopt(self, job: SectionJob) -> SectionJob:
        """``job`` resuming the message it left orphaned on this worker, if any (see
        :mod:`section_worker.orphans`)."""
        orphan = self._orphans.take(job.job_id, job.resume_message_id)
        if orphan is None:
            return job
        logger.info(
            "job %s resumes message %s, sent by its earlier dispatch here",
            job.job_id,
            orphan.message_id,
        )
        return replace(
            job,
            resume_conv_id=orphan.conv_id,
            resume_message_id=orphan.message_id,
            resume_asset_id=orphan.asset_id,
        )

    def _leave_orphan(self, job: SectionJob, trail: _Trail, *, delivered: bool) -> None:
        """Keeps the ids of a job that sent a prompt, for its next dispatch here: one cut off
        before its result was delivered, and one whose result was (its caller may die before
        storing it, and the platform answers a message again for nothing)."""
        if not trail.message_id:
            return
        self._orphans.keep(
            job.job_id,
            conv_id=trail.conv_id,
            message_id=trail.message_id,
            asset_id=trail.asset_id,
            resumed_from=job.resume_message_id,
        )
        if not delivered:
            logger.info(
                "job %s ended without its result reaching the caller; message %s kept for its "
                "next dispatch here",
                job.job_id,
                trail.message_id,
            )

    def _admit(self, job: SectionJob) -> None:
        kind = kinds.kind(job.kind)
        kind.parse_options(job.options_json)
        if kind.needs_platform and not job.chain:
            raise InvalidInput(f"a job of kind {kind.name} needs an asset")
        for asset in (*job.chain, *filter(None, [job.resume_asset_id])):
            if asset not in self._assets:
                raise InvalidInput(f"asset {asset!r} is not one the configuration names")
        if not self._accepting:
            raise Unavailable("worker is draining for shutdown; send the job to another worker")
        limit = self._settings.max_concurrent_jobs
        if self._in_flight >= limit:
            logger.info("refused job %s: all %d slots busy", job.job_id, limit)
            raise Overloaded(f"worker is running its maximum of {limit} jobs; retry elsewhere")
        self._in_flight += 1
        self._idle.clear()

    def _release(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def _execute(self, job: SectionJob, trail: _Trail, emit: Callable[[Event], None]) -> None:
        task_id_var.set(job.task_id)
        section_var.set(job.section)
        asked = job.timeout_s if job.timeout_s > 0 else self._settings.job_timeout_s
        timeout_s = min(asked, self._settings.max_job_timeout_s)
        trail.deadline = trail.started + timeout_s
        session = PlatformSession(self._client, job.access_token, self._opening)
        kind = kinds.kind(job.kind)
        logger.info(
            "job %s started (kind %s, assets %s)",
            job.job_id,
            kind.name,
            ", ".join(job.chain) or "-",
        )
        emit(Progress(Stage.ACCEPTED))
        platform = _Platform(self, job, session, trail, emit, trail.started + timeout_s)

        def progress(done: int, total: int, note: str) -> None:
            logger.debug("job %s: %s %d/%d", job.job_id, note, done, total)
            emit(Progress(Stage.ACCEPTED, done=done, total=total))

        def step(doing: str) -> None:
            trail.doing = doing

        scratch = Scratch(self._settings.scratch_dir)
        try:
            context = KindContext(
                job=job,
                options=kind.parse_options(job.options_json),
                platform=platform,
                files=self._files,
                settings=self._settings,
                progress=progress,
                step=step,
                folder=scratch,
            )
            try:
                async with asyncio.timeout(timeout_s):
                    outcome = await kind.run(context)
            finally:
                scratch.remove()
            result = SectionResult(
                success=True,
                response=outcome.response,
                files=outcome.files,
                cost=outcome.cost,
                conv_id=trail.conv_id,
                message_id=trail.message_id,
                platform_calls=session.calls.value,
                duration_s=time.monotonic() - trail.started,
                asset_id=trail.asset_id,
                attempts=tuple(trail.attempts),
                result_json=json.dumps(outcome.result) if outcome.result is not None else "",
            )
        except TimeoutError:
            result = self._failed(
                trail, session, f"section timed out after {timeout_s:g}s while {trail.doing}"
            )
        except TokenRejected as exc:
            result = self._failed(trail, session, f"{exc} while {trail.doing}", token_expired=True)
        except (ChainExhausted, JobFileError, KindError) as exc:
            result = self._failed(trail, session, str(exc))
        except AppError as exc:  # the input is refused (not readable, too large, ...)
            result = self._failed(trail, session, exc.message)
        except Exception:
            logger.exception("job %s failed unexpectedly while %s", job.job_id, trail.doing)
            result = self._failed(
                trail, session, f"internal error in the worker while {trail.doing}"
            )
        logger.info(
            "job %s finished: success=%s asset=%s cost=%.4f calls=%d in %.2fs%s",
            job.job_id,
            result.success,
            result.asset_id or "-",
            result.cost,
            result.platform_calls,
            result.duration_s,
            f" ({result.error})" if result.error else "",
        )
        metrics.job_finished(result)
        emit(result)

    async def _attempt(
        self,
        job: SectionJob,
        asset_id: str,
        resume: bool,
        prompt: Callable[[], Awaitable[str]],
        session: PlatformSession,
        trail: _Trail,
        emit: Callable[[Event], None],
    ) -> Answer:
        """One attempt on ``asset_id``: a new conversation, or (``resume``) the one the job
        reached before; raises a PlatformError (AnswerFailed for a FAILED answer)."""
        if not resume:
            trail.conv_id = trail.message_id = ""
        trail.asset_id = asset_id
        resumed = bool(trail.message_id)
        if resumed:
            logger.info("job %s resumes polling message %s", job.job_id, trail.message_id)
        while True:
            text = "" if trail.message_id else await prompt()
            if not trail.conv_id:
                trail.doing = f"creating the conversation on asset {asset_id}"
                trail.conv_id = await session.create_conversation(asset_id)
                emit(Progress(Stage.CONVERSATION_CREATED, trail.conv_id, asset_id=asset_id))
            if not trail.message_id:
                trail.doing = f"sending the prompt to asset {asset_id}"
                await _send_shielded(session, trail, text)
            emit(Progress(Stage.PROMPT_SENT, trail.conv_id, trail.message_id, asset_id=asset_id))
            answer = await self._answer(job, asset_id, session, trail, emit, resumed=resumed)
            if answer is not None:
                return answer
            resumed = False  # a prompt this job sent itself is never sent again

    async def _answer(
        self,
        job: SectionJob,
        asset_id: str,
        session: PlatformSession,
        trail: _Trail,
        emit: Callable[[Event], None],
        *,
        resumed: bool,
    ) -> Answer | None:
        """Polls ``trail.message_id`` until the platform answers. None when it is a resumed
        message that will never be answered (FAILED, or unknown to the platform): then the
        prompt may be sent again without paying twice, and ``trail`` says where from."""
        trail.doing = f"waiting for the answer of asset {asset_id}"
        sent = time.monotonic()
        last: float | None = None  # seconds after sending of the last poll, once one is made
        made: float | None = None  # ... and when its answer came
        while True:
            at = self._latencies.next_poll(asset_id, last, made)
            await asyncio.sleep(max(0.0, sent + at - time.monotonic()))
            try:
                answer = await session.poll(trail.conv_id, trail.message_id)
            except UnknownMessage as exc:
                if not resumed:
                    raise
                _never_answered(job, trail, str(exc), conversation_too=True)
                return None
            trail.polls += 1
            if answer.status is AnswerStatus.SUCCESS:
                if not resumed:  # a resumed message's latency began before this job
                    self._latencies.observe(
                        asset_id,
                        last or 0.0,
                        time.monotonic() - sent,
                        # Counted once no answer sent with it can still be waited for.
                        hold_s=min(trail.deadline - sent, self._settings.max_job_timeout_s),
                    )
                return Answer(answer.response, answer.cost)
            if answer.status is AnswerStatus.FAILED:
                if resumed:
                    _never_answered(job, trail, f"it FAILED: {answer.error}")
                    return None
                raise AnswerFailed(
                    f"the platform answered FAILED for asset {asset_id}: {answer.error}"
                )
            made = time.monotonic() - sent
            last = max(at, made - _POLL_LATE_S)
            emit(
                Progress(
                    Stage.POLLING, trail.conv_id, trail.message_id, trail.polls, asset_id=asset_id
                )
            )

    @staticmethod
    def _failed(
        trail: _Trail, session: PlatformSession, error: str, *, token_expired: bool = False
    ) -> SectionResult:
        return SectionResult(
            success=False,
            conv_id=trail.conv_id,
            message_id=trail.message_id,
            error=error,
            platform_calls=session.calls.value,
            duration_s=time.monotonic() - trail.started,
            token_expired=token_expired,
            asset_id=trail.asset_id,
            attempts=tuple(trail.attempts),
        )


class _Platform:
    """The protected platform client a job's kind gets (:class:`section_worker.kinds.base.
    Platform`): every prompt goes through the job's fallback chain, so limits, budgets,
    breakers and cool-downs apply to each; every attempt is recorded on the job's trail."""

    def __init__(
        self,
        runner: JobRunner,
        job: SectionJob,
        session: PlatformSession,
        trail: _Trail,
        emit: Callable[[Event], None],
        deadline: float,
    ) -> None:
        self._runner = runner
        self._job = job
        self._session = session
        self._trail = trail
        self._emit = emit
        self._deadline = deadline

    def _chain_job(self, job_id: str, resume_asset: str) -> ChainJob:
        job = self._job
        return ChainJob(
            job_id=job_id,
            task_id=job.task_id,
            tenant=job.payer,
            assets=job.chain,
            deadline=self._deadline,
            resume_asset=resume_asset,
            section=job.section,
        )

    async def converse(self, prompt: Callable[[], Awaitable[str]]) -> Answer:
        job, trail = self._job, self._trail
        resuming = bool(job.resume_conv_id)
        chain_job = self._chain_job(
            job.job_id, (job.resume_asset_id or job.chain[0]) if resuming else ""
        )

        async def attempt(asset_id: str, resume: bool) -> Answer:
            return await self._runner._attempt(
                job, asset_id, resume, prompt, self._session, trail, self._emit
            )

        trail.asset_id, answer = await self._runner._chain.run(chain_job, attempt, trail.attempts)
        return answer

    async def ask(self, prompt: str, *, label: str) -> Answer:
        # This prompt's own conversation; the job's ids stay the job's.
        own = _Trail(deadline=self._trail.deadline)

        async def text() -> str:
            return prompt

        async def attempt(asset_id: str, resume: bool) -> Answer:
            return await self._runner._attempt(
                self._job, asset_id, False, text, self._session, own, _quiet
            )

        chain_job = self._chain_job(f"{self._job.job_id} {label}", "")
        attempts: list[Attempt] = []  # this prompt's own, so its failure names only them
        try:
            asset, answer = await self._runner._chain.run(chain_job, attempt, attempts)
        finally:
            self._trail.attempts.extend(attempts)
        self._trail.asset_id = asset
        return replace(answer, asset_id=asset)


def _quiet(event: Event) -> None:
    """Progress of one of a kind's many prompts: not the job's to report."""


async def _send_shielded(session: PlatformSession, trail: _Trail, message: str) -> None:
    """Sends the prompt into ``trail.conv_id`` and keeps its message id in ``trail``.

    Shielded: once the request is out, the platform may accept it whatever happens here, so a
    job cancelled meanwhile (its caller went away, its own timeout) first waits for the
    platform's answer — bounded by the client's timeout and retries — to keep the message id,
    which is what lets the job's next dispatch poll that message rather than pay for another.
    A second cancellation stops the wait, not the send.
    """
    send = asyncio.ensure_future(session.send_prompt(trail.conv_id, message))
    try:
        trail.message_id = await asyncio.shield(send)
    except asyncio.CancelledError:
        await asyncio.wait({send})
        if not send.cancelled() and send.exception() is None:
            trail.message_id = send.result()
        raise


def _never_answered(
    job: SectionJob, trail: _Trail, why: str, *, conversation_too: bool = False
) -> None:
    """Forgets a resumed message that will never be answered, so the prompt goes out again
    (into a new conversation when the platform no longer knows the old one)."""
    logger.warning(
        "job %s: resumed message %s will never be answered (%s); sending the prompt again",
        job.job_id,
        trail.message_id,
        why,
    )
    trail.message_id = ""
    if conversation_too:
        trail.conv_id = ""
