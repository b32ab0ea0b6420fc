"""The orchestrator's view of one section worker: domain calls in, domain answers and errors out.

Twin of :mod:`orchestrator.storage_client`: the pipeline, the dispatcher and the pool never see
a gRPC type. A failed call becomes one of four errors, each asking the caller for something
different::

    WorkerError
    ├── WorkerLost      the worker died, went away or broke off the job: send it elsewhere
    ├── WorkerFull      the worker had no free slot: wait for one, the job did not start
    ├── JobRejected     the worker refused the job itself: sending it again will not help
    └── TokenExpired    the platform refused the job's access token: renew the token, then
                        send the job again from where it stopped

The user's password goes to a worker only in :meth:`WorkerClient.authenticate`, which answers
with the platform's access token; section jobs carry that token, never the password.

:class:`WorkerClient` is the interface the pool holds; :class:`GrpcWorkerClient` implements it
over a channel, and the unit tests implement it with scripted fakes.

Jobs go to a worker over one ``RunSections`` stream (:class:`_JobStream`), not a call each: an
open gRPC call costs tens of KiB on each side, and a steady load keeps thousands of sections
waiting on the platform. A job keeps the semantics of a call of its own: its deadline, its
cancellation when its caller stops reading, and its refusals (the status a call would have
ended with). A broken stream loses every job on it, as a broken connection lost every call,
and the next job opens a new one.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from common import tracing
from common.channels import open_channel
from common.tls import Identity, Role
from orchestrator.models import FileRef
from wealthai.worker.v1 import worker_pb2, worker_pb2_grpc

# The worker died or the connection broke: the job may be sent to another worker.
_LOST = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)
_LOAD_TIMEOUT_S = 1.5
_AUTH_TIMEOUT_S = 30.0
# A job's call may outlive the job's own timeout by this much (the worker reports its timeout).
_JOB_CALL_MARGIN_S = 15.0


class WorkerError(Exception):
    """A call to a worker failed; ``address`` says which worker."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"worker {address}: {reason}")
        self.address = address
        self.reason = reason


class WorkerLost(WorkerError):
    """The worker is gone or broke off the call; the job may run elsewhere."""


class WorkerFull(WorkerError):
    """The worker had no free slot; the job did not start there."""


class JobRejected(WorkerError):
    """The worker refused the job (or the credentials) itself; retrying will not help."""


class TokenExpired(WorkerError):
    """The platform rejected the job's access token (401). The job stopped after reaching
    ``conv_id`` and ``message_id`` (empty when it had not): sent again with a new token and
    these ids, it resumes there without sending its prompt twice."""

    def __init__(self, address: str, reason: str, conv_id: str, message_id: str) -> None:
        super().__init__(address, reason)
        self.conv_id = conv_id
        self.message_id = message_id


@dataclass(frozen=True)
class Credentials:
    """The platform credentials a task runs with. The password never shows in a repr."""

    tenant: str
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class AccessToken:
    """A platform access token and the seconds it stays valid from when it was handed out.
    The value never shows in a repr."""

    value: str = field(repr=False)
    expires_in: float


@dataclass(frozen=True)
class SectionJob:
    """One section's work, as a worker runs it: with the task's access token, no password."""

    job_id: str
    task_id: str
    section: str
    asset_id: str
    record_json: str
    tenant: str
    username: str
    access_token: str = field(repr=False)
    timeout_s: float = 0.0
    # Where an earlier dispatch stopped (a token renewal, a lost worker, a takeover, a retry):
    # the job resumes there, polling the message instead of sending its prompt again.
    resume_conv_id: str = ""
    resume_message_id: str = ""
    # Whose files the job reads and writes, the files its record references, and "file" when
    # its answer is to be stored as a file (orchestrator.task_files).
    owner_id: str = ""
    files: tuple[FileRef, ...] = ()
    output: str = ""
    # The section's fallback chain (asset_id first); empty: asset_id alone.
    assets: tuple[str, ...] = ()
    # Who pays: the tenant of the task's principal (limits and budgets count against it).
    principal_tenant: str = ""
    # The section's job kind ("" a conversation) and its options as JSON text ("" defaults).
    kind: str = ""
    options_json: str = ""
    resume_asset_id: str = ""  # the asset resume_conv_id is on ("": asset_id)


@dataclass(frozen=True)
class Progress:
    """The platform ids a running job has reached so far, the asset its conversation is on,
    and the units of its kind's work done of all (0 of 0 when its kind counts none)."""

    conv_id: str = ""
    message_id: str = ""
    asset_id: str = ""
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class Attempt:
    """One step of a job's path through its fallback chain."""

    asset_id: str
    outcome: str
    reason: str = ""
    cost: float = 0.0
    duration_s: float = 0.0


@dataclass(frozen=True)
class Outcome:
    """How a section's job ended; ``asset_id`` is the asset that answered (on failure, the
    last one reached) and ``attempts`` the path through the chain."""

    success: bool
    response: str = ""
    cost: float = 0.0
    conv_id: str = ""
    message_id: str = ""
    error: str = ""
    files: tuple[FileRef, ...] = ()  # files the job produced
    asset_id: str = ""
    attempts: tuple[Attempt, ...] = ()
    result_json: str = ""  # a structured result, JSON object text; "" when the kind has none

    @classmethod
    def failed(cls, error: str) -> Outcome:
        return cls(success=False, error=error)


@dataclass(frozen=True)
class Load:
    """What a worker says of its capacity, and of its platform calls: the dollars it settled
    on ``spend_day`` (UTC) per tenant, and its breakers' states per asset."""

    capacity: int
    in_flight: int
    accepting: bool
    spend_day: str = ""
    spend_today: dict[str, float] = field(default_factory=dict)
    breakers: dict[str, str] = field(default_factory=dict)


class WorkerClient(Protocol):
    """One worker replica, as the pool and the dispatcher use it."""

    address: str

    async def load(self) -> Load:
        """The worker's capacity and load; WorkerLost when it does not answer."""
        ...

    async def authenticate(self, credentials: Credentials, *, refresh: bool = False) -> AccessToken:
        """Checks ``credentials`` with the platform; the platform's access token. ``refresh``
        asks for a new token rather than one the worker holds (the platform rejected it)."""
        ...

    def run(self, job: SectionJob) -> AsyncGenerator[Progress | Outcome, None]:
        """Runs ``job``: progress as it comes, then one outcome (WorkerError otherwise).
        Closing the generator early cancels the job on the worker."""
        ...

    async def close(self) -> None: ...


class GrpcWorkerClient:
    """:class:`WorkerClient` over a gRPC channel to ``address``."""

    def __init__(self, address: str, tls: Identity | None = None) -> None:
        self.address = address
        self._channel = open_channel(address, tls, Role.WORKER)
        self._stub = worker_pb2_grpc.SectionWorkerServiceStub(self._channel)
        self._jobs: _JobStream | None = None

    async def close(self) -> None:
        if self._jobs is not None:
            await self._jobs.close()
        await self._channel.close()

    async def load(self) -> Load:
        try:
            load = await self._stub.GetLoad(worker_pb2.GetLoadRequest(), timeout=_LOAD_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            raise self._error(err) from err
        return Load(
            capacity=load.capacity,
            in_flight=load.in_flight,
            accepting=load.accepting,
            spend_day=load.spend_day,
            spend_today=dict(load.spend_today_usd),
            breakers=dict(load.breakers),
        )

    async def authenticate(self, credentials: Credentials, *, refresh: bool = False) -> AccessToken:
        request = worker_pb2.AuthenticateRequest(
            credentials=worker_pb2.Credentials(
                tenant=credentials.tenant,
                username=credentials.username,
                password=credentials.password,
            ),
            refresh=refresh,
        )
        try:
            reply = await self._stub.Authenticate(request, timeout=_AUTH_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            raise self._error(err) from err
        if not reply.access_token:
            raise JobRejected(self.address, "answered Authenticate without an access token")
        return AccessToken(reply.access_token, float(reply.expires_in))

    async def run(self, job: SectionJob) -> AsyncGenerator[Progress | Outcome, None]:
        if self._jobs is None or self._jobs.broken:
            # Opened outside the caller's trace: the stream outlives the job that opens it, and
            # each job's start carries its own traceparent.
            self._jobs = contextvars.Context().run(_JobStream, self._stub, self.address)
        stream = self._jobs
        deadline = asyncio.get_running_loop().time() + job.timeout_s + _JOB_CALL_MARGIN_S
        ref, updates = stream.start(job)
        ended = False
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        update = await updates.get()
                except TimeoutError:
                    raise WorkerLost(self.address, "lost: DEADLINE_EXCEEDED") from None
                if isinstance(update, WorkerLost):  # the stream broke: one error for each job
                    ended = True
                    raise WorkerLost(self.address, update.reason)
                if update.HasField("failure"):
                    ended = True
                    code = _CODES.get(update.failure.code, grpc.StatusCode.UNKNOWN)
                    raise _error_for(self.address, code, update.failure.details)
                event = update.event
                if event.HasField("result"):
                    ended = True
                    result = event.result
                    if result.token_expired:
                        raise TokenExpired(
                            self.address, result.error, result.conv_id, result.message_id
                        )
                    yield Outcome(
                        success=result.success,
                        response=result.response,
                        cost=result.cost,
                        conv_id=result.conv_id,
                        message_id=result.message_id,
                        error=result.error,
                        files=tuple(_file_of(ref) for ref in result.files),
                        asset_id=result.asset_id,
                        attempts=tuple(
                            Attempt(a.asset_id, a.outcome, a.reason, a.cost, a.duration_s)
                            for a in result.attempts
                        ),
                        result_json=result.result_json,
                    )
                    return
                yield Progress(
                    conv_id=event.progress.conv_id,
                    message_id=event.progress.message_id,
                    asset_id=event.progress.asset_id,
                    done=event.progress.done,
                    total=event.progress.total,
                )
        finally:
            # A caller that stops reading (closed while busy between two events, cancelled)
            # cancels the job on the worker; a job that ended already is left as it is.
            stream.finish(ref, ended=ended)

    def _error(self, err: grpc.aio.AioRpcError) -> WorkerError:
        return _error_for(self.address, err.code(), err.details() or "")


_CODES = {code.value[0]: code for code in grpc.StatusCode}
# What a job's queue receives: its updates, then the error that lost it if the stream broke.
_Update = worker_pb2.JobUpdate | WorkerLost


class _JobStream:
    """One ``RunSections`` stream to a worker, carrying every job sent there: a writer task
    sends the jobs' starts and cancels in turn (a call takes one write at a time), a reader
    task hands each update to its job's queue, and a broken stream loses every job on it
    (:class:`WorkerLost`, whatever its status: a job may run elsewhere; a refusal of one job
    comes as that job's failure, not as the stream's)."""

    def __init__(self, stub: worker_pb2_grpc.SectionWorkerServiceAsyncStub, address: str) -> None:
        self.address = address
        self.broken: WorkerLost | None = None
        self._refs = itertools.count(1)
        self._jobs: dict[int, asyncio.Queue[_Update]] = {}
        self._outgoing: asyncio.Queue[worker_pb2.JobControl] = asyncio.Queue()
        self._call = stub.RunSections()
        self._reader = asyncio.create_task(self._read())
        self._writer = asyncio.create_task(self._write())

    def start(self, job: SectionJob) -> tuple[int, asyncio.Queue[_Update]]:
        """Sends ``job``; its ref and the queue its updates arrive in."""
        ref = next(self._refs)
        updates: asyncio.Queue[_Update] = asyncio.Queue()
        self._jobs[ref] = updates
        self._outgoing.put_nowait(
            worker_pb2.JobControl(
                ref=ref, start=job_message(job), traceparent=tracing.current_traceparent()
            )
        )
        return ref, updates

    def finish(self, ref: int, *, ended: bool) -> None:
        """Forgets the job ``ref``; one that had not ``ended`` is cancelled on the worker (a
        worker that knows the ref no more ignores that)."""
        del self._jobs[ref]
        if not ended and not self.broken:
            self._outgoing.put_nowait(worker_pb2.JobControl(ref=ref, cancel=True))

    async def close(self) -> None:
        self._break(WorkerLost(self.address, "lost: the orchestrator closed the stream"))
        for task in (self._reader, self._writer):
            task.cancel()
        await asyncio.gather(self._reader, self._writer, return_exceptions=True)

    async def _write(self) -> None:
        try:
            while True:
                await self._call.write(await self._outgoing.get())
        except grpc.aio.AioRpcError as err:
            self._break(WorkerLost(self.address, f"lost: {err.code().name}"))
        except (grpc.aio.UsageError, asyncio.InvalidStateError):
            self._break(WorkerLost(self.address, "lost: the job stream ended"))

    async def _read(self) -> None:
        try:
            async for update in self._call:
                updates = self._jobs.get(update.ref)
                if updates is not None:
                    updates.put_nowait(update)
        except grpc.aio.AioRpcError as err:
            self._break(WorkerLost(self.address, f"lost: {err.code().name}"))
        else:
            self._break(WorkerLost(self.address, "lost: the worker ended the job stream"))
        self._writer.cancel()

    def _break(self, error: WorkerLost) -> None:
        if self.broken:
            return
        self.broken = error
        self._call.cancel()  # whatever still runs on the worker for this stream stops there
        for updates in self._jobs.values():
            updates.put_nowait(error)


def _error_for(address: str, code: grpc.StatusCode, details: str) -> WorkerError:
    """The error a job's (or a call's) status ``code`` stands for."""
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return WorkerFull(address, "no free slot")
    if code in _LOST:
        return WorkerLost(address, f"lost: {code.name}")
    return JobRejected(address, details or code.name)


def job_message(job: SectionJob) -> worker_pb2.SectionJob:
    """The message a worker receives for ``job``."""
    return worker_pb2.SectionJob(
        job_id=job.job_id,
        task_id=job.task_id,
        section=job.section,
        asset_id=job.asset_id,
        record_json=job.record_json,
        tenant=job.tenant,
        username=job.username,
        access_token=job.access_token,
        timeout_s=job.timeout_s,
        resume_conv_id=job.resume_conv_id,
        resume_message_id=job.resume_message_id,
        resume_asset_id=job.resume_asset_id,
        assets=list(job.assets),
        principal_tenant=job.principal_tenant,
        owner_id=job.owner_id,
        files=[
            worker_pb2.FileRef(
                file_id=ref.file_id,
                key=ref.key,
                name=ref.name,
                content_type=ref.content_type,
                size=ref.size,
                sha256=ref.sha256,
            )
            for ref in job.files
        ],
        output=job.output,
        kind=job.kind,
        options_json=job.options_json,
    )


def _file_of(ref: worker_pb2.FileRef) -> FileRef:
    return FileRef(
        file_id=ref.file_id,
        key=ref.key,
        name=ref.name,
        content_type=ref.content_type,
        size=ref.size,
        sha256=ref.sha256,
    )
