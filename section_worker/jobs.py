"""Section jobs, end to end, in plain async Python (no gRPC types).

:class:`JobRunner` admits a job only when a slot is free (else :class:`common.errors.Overloaded`
at once; :class:`common.errors.Unavailable` while draining), then creates a conversation,
sends the prompt and polls with a growing interval until the platform answers, every call with
the access token the job carries. It yields :class:`Progress` events and finally exactly one
:class:`SectionResult`. Whatever goes wrong on the platform, or the job's own timeout, becomes a
failed result naming what failed; a token the platform rejects also marks the result
``token_expired``, with the ids reached so far, so that the job can be sent again with a new
token and resume there (:attr:`SectionJob.resume_conv_id`, :attr:`SectionJob.resume_message_id`)
instead of sending its prompt twice. Only the caller cancelling the job ends it without a
result, and that frees its slot too.

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
import logging
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from common.errors import InvalidInput, Overloaded, Unavailable
from common.logging import section_var, task_id_var
from section_worker.orphans import Orphans
from section_worker.platform_client import (
    AnswerStatus,
    PlatformClient,
    PlatformError,
    TokenRejected,
    UnknownMessage,
)
from section_worker.platform_session import PlatformSession
from section_worker.polling import LatencyBook
from section_worker.settings import WorkerSettings

logger = logging.getLogger(__name__)


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
    resume_asset_id: str = ""  # the asset resume_conv_id is on ("": asset_id)


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
    asset_id: str = ""  # the asset the conversation is on


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


Event = Progress | SectionResult


@dataclass(frozen=True)
class Load:
    capacity: int
    in_flight: int
    accepting: bool


@dataclass
class _Trail:
    """How far a job got, for the result and for a timeout's message."""

    doing: str = "starting"
    conv_id: str = ""
    message_id: str = ""
    asset_id: str = ""
    polls: int = 0
    started: float = field(default_factory=time.monotonic)


class JobRunner:
    """Runs section jobs, at most ``max_concurrent_jobs`` at once."""

    def __init__(
        self, client: PlatformClient, settings: WorkerSettings, orphans: Orphans | None = None
    ) -> None:
        self._client = client
        self._settings = settings
        self._orphans = orphans if orphans is not None else Orphans()
        self._assets = settings.known_assets()
        self._latencies = LatencyBook(settings)
        self._in_flight = 0
        self._accepting = True
        self._idle = asyncio.Event()
        self._idle.set()

    def load(self) -> Load:
        return Load(self._settings.max_concurrent_jobs, self._in_flight, self._accepting)

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
        for asset in (job.asset_id, job.resume_asset_id or job.asset_id):
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
        session = PlatformSession(self._client, job.access_token)
        logger.info("job %s started (asset %s)", job.job_id, job.asset_id)
        emit(Progress(Stage.ACCEPTED))
        try:
            async with asyncio.timeout(timeout_s):
                result = await self._drive(job, session, trail, emit)
        except TimeoutError:
            result = self._failed(
                trail, session, f"section timed out after {timeout_s:g}s while {trail.doing}"
            )
        except TokenRejected as exc:
            result = self._failed(trail, session, f"{exc} while {trail.doing}", token_expired=True)
        except PlatformError as exc:
            result = self._failed(trail, session, str(exc))
        except Exception:
            logger.exception("job %s failed unexpectedly while %s", job.job_id, trail.doing)
            result = self._failed(
                trail, session, f"internal error in the worker while {trail.doing}"
            )
        logger.info(
            "job %s finished: success=%s cost=%.4f calls=%d in %.2fs%s",
            job.job_id,
            result.success,
            result.cost,
            result.platform_calls,
            result.duration_s,
            f" ({result.error})" if result.error else "",
        )
        emit(result)

    async def _drive(
        self,
        job: SectionJob,
        session: PlatformSession,
        trail: _Trail,
        emit: Callable[[Event], None],
    ) -> SectionResult:
        resumed = bool(trail.message_id)
        if resumed:
            logger.info("job %s resumes polling message %s", job.job_id, trail.message_id)
        while True:
            if not trail.conv_id:
                trail.doing = "creating the conversation"
                trail.conv_id = await session.create_conversation(job.asset_id)
                trail.asset_id = job.asset_id
                emit(Progress(Stage.CONVERSATION_CREATED, trail.conv_id, asset_id=trail.asset_id))
            if not trail.message_id:
                trail.doing = "sending the prompt"
                await _send_shielded(session, trail, job.record_json)
            emit(
                Progress(
                    Stage.PROMPT_SENT, trail.conv_id, trail.message_id, asset_id=trail.asset_id
                )
            )
            result = await self._answer(job, session, trail, emit, resumed=resumed)
            if result is not None:
                return result
            resumed = False  # a prompt this job sent itself is never sent again

    async def _answer(
        self,
        job: SectionJob,
        session: PlatformSession,
        trail: _Trail,
        emit: Callable[[Event], None],
        *,
        resumed: bool,
    ) -> SectionResult | None:
        """Polls ``trail.message_id`` until the platform answers. None when it is a resumed
        message that will never be answered (FAILED, or unknown to the platform): then the
        prompt may be sent again without paying twice, and ``trail`` says where from."""
        trail.doing = "waiting for the answer"
        sent = time.monotonic()
        not_before = 0.0
        for offset in self._latencies.plan(job.asset_id):
            await asyncio.sleep(max(0.0, sent + offset - time.monotonic()))
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
                    self._latencies.observe(job.asset_id, not_before, time.monotonic() - sent)
                return SectionResult(
                    success=True,
                    response=answer.response,
                    cost=answer.cost,
                    conv_id=trail.conv_id,
                    message_id=trail.message_id,
                    platform_calls=session.calls.value,
                    duration_s=time.monotonic() - trail.started,
                )
            if answer.status is AnswerStatus.FAILED:
                if resumed:
                    _never_answered(job, trail, f"it FAILED: {answer.error}")
                    return None
                return self._failed(
                    trail,
                    session,
                    f"the platform answered FAILED for asset {job.asset_id}: {answer.error}",
                )
            not_before = time.monotonic() - sent
            emit(
                Progress(
                    Stage.POLLING, trail.conv_id, trail.message_id, trail.polls, trail.asset_id
                )
            )
        raise AssertionError("unreachable: poll plans never end")

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
        )


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
        trail.conv_id = trail.asset_id = ""
