"""gRPC adapter of the section worker: ``wealthai.worker.v1.SectionWorkerService``.

Converts between proto messages and the domain types of :mod:`section_worker.jobs` and
:mod:`section_worker.platform_client`, and reports refusals as :class:`common.errors.AppError`
subclasses, which the error interceptor of :mod:`common.grpc_server` turns into statuses.

A job runs either as a ``RunSection`` call of its own or as one of the many jobs of a
``RunSections`` stream, the orchestrator's way: every open call costs the two sides tens of KiB
of gRPC's own memory, and thousands of sections wait on the platform at once. On a stream each
job is its own asyncio task, its refusal a :class:`JobFailure` update with the status its call
would have ended with, its span (with tracing on) continues the ``traceparent`` its start
carried, and an update is written before the job goes on, so that a result counts as delivered
exactly when it would on a call of its own (see :meth:`JobRunner.run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import AsyncIterator

import grpc

from common import file_ids, tracing
from common.errors import (
    AppError,
    InvalidInput,
    Overloaded,
    TooLarge,
    Unauthenticated,
    Unavailable,
    UpstreamError,
)
from common.grpc_server import MAX_MESSAGE_BYTES, ServiceHost
from common.tls import Role
from section_worker import kinds
from section_worker.files import FileRef
from section_worker.job_files import OUTPUT_FILE, OUTPUT_INLINE
from section_worker.jobs import Event, JobRunner, Progress, SectionJob, Stage
from section_worker.platform_client import (
    AuthFailed,
    Credentials,
    PlatformClient,
    PlatformError,
    PlatformRejected,
    Throttled,
)
from section_worker.settings import WorkerSettings
from wealthai.worker.v1 import worker_pb2, worker_pb2_grpc

SERVICE_NAME: str = worker_pb2.DESCRIPTOR.services_by_name["SectionWorkerService"].full_name
MAX_UPDATE_BYTES = MAX_MESSAGE_BYTES
JOB_SPAN = "section job"  # a RunSections job's span; a RunSection call's is the call's own

logger = logging.getLogger(__name__)
# (update, written): ``written`` is set once gRPC took the update; ``None`` ends the stream.
_Outgoing = tuple[worker_pb2.JobUpdate, asyncio.Future[None]] | None

_STAGES = {
    Stage.ACCEPTED: worker_pb2.STAGE_ACCEPTED,
    Stage.CONVERSATION_CREATED: worker_pb2.STAGE_CONVERSATION_CREATED,
    Stage.PROMPT_SENT: worker_pb2.STAGE_PROMPT_SENT,
    Stage.POLLING: worker_pb2.STAGE_POLLING,
}


class SectionWorkerServicer(worker_pb2_grpc.SectionWorkerServiceServicer):
    """Thin adapter from gRPC to the job runner and the platform client."""

    def __init__(self, runner: JobRunner, client: PlatformClient) -> None:
        self._runner = runner
        self._client = client

    async def Authenticate(
        self,
        request: worker_pb2.AuthenticateRequest,
        context: grpc.aio.ServicerContext[
            worker_pb2.AuthenticateRequest, worker_pb2.AuthenticateResponse
        ],
    ) -> worker_pb2.AuthenticateResponse:
        credentials = _credentials(request.credentials)
        try:
            token = await self._client.authenticate(credentials, refresh=request.refresh)
        except PlatformError as exc:
            raise _app_error(exc) from None
        return worker_pb2.AuthenticateResponse(
            expires_in=math.ceil(token.remaining_s()),
            access_token=token.value,
        )

    async def RunSection(
        self,
        request: worker_pb2.SectionJob,
        context: grpc.aio.ServicerContext[worker_pb2.SectionJob, worker_pb2.SectionEvent],
    ) -> AsyncIterator[worker_pb2.SectionEvent]:
        job = _job(request)
        async with contextlib.aclosing(self._runner.run(job)) as events:
            async for event in events:
                yield _event_message(event)

    async def RunSections(
        self,
        requests: AsyncIterator[worker_pb2.JobControl],
        context: grpc.aio.ServicerContext[worker_pb2.JobControl, worker_pb2.JobUpdate],
    ) -> AsyncIterator[worker_pb2.JobUpdate]:
        outgoing: asyncio.Queue[_Outgoing] = asyncio.Queue()
        jobs: dict[int, asyncio.Task[None]] = {}

        async def take() -> None:
            try:
                async for control in requests:
                    ref = control.ref
                    if control.HasField("start"):
                        if ref in jobs:  # the caller lost count: its updates would mix
                            raise InvalidInput(f"ref {ref} is taken by a running job")
                        task = jobs[ref] = asyncio.create_task(self._job(control, outgoing))
                        task.add_done_callback(functools.partial(_forget, jobs, ref))
                    elif control.cancel and ref in jobs:
                        jobs[ref].cancel()
                # The caller starts no more jobs: the stream ends when the running ones do.
                if jobs:
                    await asyncio.wait(list(jobs.values()))
            finally:
                outgoing.put_nowait(None)

        taker = asyncio.create_task(take())
        try:
            while (item := await outgoing.get()) is not None:
                update, written = item
                yield update
                if not written.done():
                    written.set_result(None)
            await taker  # a failure to read the caller's instructions ends the stream with it
        finally:
            running = (taker, *jobs.values())
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _job(
        self, control: worker_pb2.JobControl, outgoing: asyncio.Queue[_Outgoing]
    ) -> None:
        """Runs one job of a RunSections stream, each update written before it goes on."""
        ref = control.ref
        try:
            job = _job(control.start)
            with (
                tracing.continued(control.traceparent, JOB_SPAN, job.task_id)
                if control.traceparent
                else contextlib.nullcontext()
            ):
                async with contextlib.aclosing(self._runner.run(job)) as events:
                    async for event in events:
                        update = worker_pb2.JobUpdate(ref=ref, event=_event_message(event))
                        if (size := update.ByteSize()) > MAX_UPDATE_BYTES:
                            # Sent, it would break the stream, and every job on it with it.
                            raise TooLarge(
                                f"the job's answer is {size:,} bytes, over the "
                                f"{MAX_UPDATE_BYTES:,} a message may carry"
                            )
                        await _send(outgoing, update)
        except AppError as exc:
            await _send(outgoing, _failure(ref, exc))
        except Exception:
            logger.exception("job %s of a RunSections stream failed", control.start.job_id)
            await _send(outgoing, _failure(ref, None))

    async def GetLoad(
        self,
        request: worker_pb2.GetLoadRequest,
        context: grpc.aio.ServicerContext[worker_pb2.GetLoadRequest, worker_pb2.Load],
    ) -> worker_pb2.Load:
        load = self._runner.load()
        return worker_pb2.Load(
            capacity=load.capacity,
            in_flight=load.in_flight,
            accepting=load.accepting,
            spend_today_usd=load.spend_today,
            spend_day=load.spend_day,
            breakers=load.breakers,
        )


def build_host(settings: WorkerSettings, runner: JobRunner, client: PlatformClient) -> ServiceHost:
    """A gRPC host serving the section worker (plus health, and reflection if enabled)."""
    host = ServiceHost(settings, "section_worker", Role.WORKER)
    host.add(
        worker_pb2_grpc.add_SectionWorkerServiceServicer_to_server,
        SectionWorkerServicer(runner, client),
        SERVICE_NAME,
    )
    return host


def _credentials(message: worker_pb2.Credentials) -> Credentials:
    for name in ("tenant", "username", "password"):
        if not getattr(message, name):
            raise InvalidInput(f"credentials.{name} is required")
    return Credentials(message.tenant, message.username, message.password)


def _job(request: worker_pb2.SectionJob) -> SectionJob:
    required = ["job_id", "record_json"]
    if kinds.kind(request.kind).needs_platform:  # a kind without platform calls needs no token
        required += ["asset_id", "access_token"]
    for name in required:
        if not getattr(request, name):
            raise InvalidInput(f"{name} is required")
    if request.resume_message_id and not request.resume_conv_id:
        raise InvalidInput("resume_message_id needs resume_conv_id")
    if request.resume_asset_id and not request.resume_conv_id:
        raise InvalidInput("resume_asset_id needs resume_conv_id")
    if not math.isfinite(request.timeout_s) or request.timeout_s < 0:
        raise InvalidInput("timeout_s must be a finite number of seconds, 0 or more")
    if request.output not in (OUTPUT_INLINE, OUTPUT_FILE):
        raise InvalidInput(f'output must be "" or "{OUTPUT_FILE}"')
    if (request.files or request.output) and not request.owner_id:
        raise InvalidInput("owner_id is required for a job with files")
    for ref in request.files:
        file_ids.check(ref.file_id)
    assets = tuple(request.assets)
    if assets and assets[0] != request.asset_id:
        raise InvalidInput("assets must start with asset_id")
    if len(set(assets)) != len(assets):
        raise InvalidInput("assets must not name an asset twice")
    return SectionJob(
        job_id=request.job_id,
        task_id=request.task_id,
        section=request.section,
        asset_id=request.asset_id,
        record_json=request.record_json,
        tenant=request.tenant,
        username=request.username,
        access_token=request.access_token,
        timeout_s=request.timeout_s,
        resume_conv_id=request.resume_conv_id,
        resume_message_id=request.resume_message_id,
        owner_id=request.owner_id,
        files=tuple(FileRef.of_message(ref) for ref in request.files),
        output=request.output,
        assets=assets,
        principal_tenant=request.principal_tenant,
        kind=request.kind,
        options_json=request.options_json,
        resume_asset_id=request.resume_asset_id,
    )


def _event_message(event: Event) -> worker_pb2.SectionEvent:
    if isinstance(event, Progress):
        return worker_pb2.SectionEvent(
            progress=worker_pb2.Progress(
                stage=_STAGES[event.stage],
                conv_id=event.conv_id,
                message_id=event.message_id,
                polls=event.polls,
                done=event.done,
                total=event.total,
                asset_id=event.asset_id,
            )
        )
    return worker_pb2.SectionEvent(
        result=worker_pb2.SectionResult(
            success=event.success,
            response=event.response,
            cost=event.cost,
            conv_id=event.conv_id,
            message_id=event.message_id,
            error=event.error,
            platform_calls=event.platform_calls,
            duration_s=event.duration_s,
            token_expired=event.token_expired,
            files=[ref.message() for ref in event.files],
            asset_id=event.asset_id,
            result_json=event.result_json,
            attempts=[
                worker_pb2.Attempt(
                    asset_id=a.asset_id,
                    outcome=a.outcome.value,
                    reason=a.reason,
                    cost=a.cost,
                    duration_s=a.duration_s,
                )
                for a in event.attempts
            ],
        )
    )


def _forget(jobs: dict[int, asyncio.Task[None]], ref: int, _: asyncio.Task[None]) -> None:
    jobs.pop(ref, None)


async def _send(outgoing: asyncio.Queue[_Outgoing], update: worker_pb2.JobUpdate) -> None:
    """Queues ``update`` for the stream and waits until gRPC has taken it."""
    written = asyncio.get_running_loop().create_future()
    outgoing.put_nowait((update, written))
    await written


def _failure(ref: int, exc: AppError | None) -> worker_pb2.JobUpdate:
    """The update of a job that failed with ``exc`` (``None``: a fault of ours)."""
    if exc is None:
        code, details = grpc.StatusCode.INTERNAL, "internal error; see the service log"
    else:
        code, details = exc.grpc_code, exc.message
    return worker_pb2.JobUpdate(
        ref=ref, failure=worker_pb2.JobFailure(code=code.value[0], details=details)
    )


def _app_error(exc: PlatformError) -> AppError:
    """The error-table row a platform failure stands for (its message carries no secret)."""
    if isinstance(exc, AuthFailed):
        return Unauthenticated(str(exc))
    if isinstance(exc, Throttled):
        return Overloaded(str(exc))
    if isinstance(exc, PlatformRejected):
        # Not an outage: the same request would be refused again, so nobody should retry it.
        return UpstreamError(str(exc))
    return Unavailable(str(exc))
