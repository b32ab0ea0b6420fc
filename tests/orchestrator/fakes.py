"""Scripted stand-ins for the orchestrator's clients: storage (and its files), section workers,
peers and a clock.

Each implements the interface the orchestrator calls (``StorageClient``, ``WorkerClient``,
``Peers``) in memory, with the semantics the real service has where the code under test depends
on them: compare-and-swap on string versions, ``Conflict`` on a version mismatch or on creating
what exists, ``NotFound`` for what is missing, tasks listed newest first. Nothing here opens a
socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from common import file_ids
from common.errors import AppError, Conflict, NotFound, Unavailable
from common.principals import Principal
from orchestrator.figures import TaskFigures
from orchestrator.models import FileRef, TaskEvent, TaskRecord
from orchestrator.storage_client import StorageClient
from orchestrator.worker_client import (
    AccessToken,
    Credentials,
    JobRejected,
    Load,
    Outcome,
    Progress,
    SectionJob,
    TokenExpired,
    WorkerFull,
    WorkerLost,
)
from orchestrator.workers import WorkerPool
from tests.helpers import assert_eventually

# -- polling --------------------------------------------------------------------------------


async def eventually(
    check: Callable[[], bool], *, timeout: float = 2.0, what: str = "condition"
) -> None:
    """Waits (polling, with a deadline) until ``check()`` holds."""

    async def probe() -> bool:
        return check()

    await assert_eventually(probe, bool, timeout=timeout, interval=0.002, what=what)


async def still_pending(task: asyncio.Future[Any], within: float = 0.3) -> bool:
    """True when ``task`` has not finished ``within`` seconds (waits on the task itself)."""
    done, _ = await asyncio.wait({task}, timeout=within)
    return not done


# -- clock ----------------------------------------------------------------------------------


class FakeClock:
    """Stands in for the ``time`` module where only ``monotonic()`` is read."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- storage --------------------------------------------------------------------------------


class FakeFiles:
    """In-memory files of storage_svc, as the orchestrator's FileClient reaches them: a file is
    found only by its owner, as storage answers for a caller who is no admin.

    ``calls`` records every call as ``(operation, file_id or owner)``; ``fail(op, error)`` makes
    the next call of ``op`` raise ``error``."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[str, FileRef]] = {}  # file id -> (owner, file)
        self.calls: list[tuple[str, str]] = []
        self._failures: dict[str, list[BaseException]] = {}
        self._made = 0

    def add(
        self,
        owner: str,
        name: str = "in.txt",
        content_type: str = "text/plain",
        *,
        temporary: bool = False,
    ) -> FileRef:
        """Stores a new file of ``owner`` (an id of its owner key, as storage makes them)."""
        self._made += 1
        file_id = f"f_{file_ids.owner_key(owner)}_{self._made:024x}"
        ref = FileRef(
            file_id=file_id,
            key=f"files/data/{file_ids.owner_key(owner)}/{file_id}",
            name=name,
            content_type=content_type,
            size=10,
            sha256="a" * 64,
            temporary=temporary,
        )
        self.files[file_id] = (owner, ref)
        return ref

    def fail(self, operation: str, error: BaseException, times: int = 1) -> None:
        self._failures.setdefault(operation, []).extend([error] * times)

    async def _enter(self, operation: str, name: str) -> None:
        await asyncio.sleep(0)
        self.calls.append((operation, name))
        if queued := self._failures.get(operation):
            raise queued.pop(0)

    def _find(self, file_id: str, owner: str) -> FileRef:
        found = self.files.get(file_id)
        if found is None or found[0] != owner:
            raise NotFound(f"file {file_id} not found")
        return found[1]

    async def meta(self, file_id: str, owner: str) -> FileRef:
        await self._enter("meta", file_id)
        return self._find(file_id, owner)

    async def delete(self, file_id: str, owner: str) -> None:
        await self._enter("delete", file_id)
        self._find(file_id, owner)
        del self.files[file_id]

    async def list_page(self, owner: str, page_token: str = "") -> tuple[list[FileRef], str]:
        """Pages of two files, so listing tests walk more than one."""
        await self._enter("list_page", owner)
        mine = sorted(i for i, (o, _) in self.files.items() if o == owner and i > page_token)
        page = [self.files[i][1] for i in mine[:2]]
        return page, (mine[1] if len(mine) > 2 else "")


class FakeStorage:
    """In-memory storage_svc with compare-and-swap on every write.

    ``history`` records every successful write as ``(operation, name)``; ``fail(operation,
    error)`` makes the next call of that operation raise ``error`` instead; ``lose_reply(op)``
    makes the next call of ``op`` apply its write and then raise Unavailable, as when the
    answer is lost on the way back; ``hold(op)`` keeps the next call of ``op`` in flight, not
    yet applied, until the event it returns is set.
    """

    def __init__(self) -> None:
        self.owners: dict[str, str] = {}  # task id -> the owner its index entry names
        self.tasks: dict[str, tuple[bytes, str]] = {}
        self.objects: dict[tuple[int, str], tuple[bytes, str]] = {}
        self.history: list[tuple[str, str]] = []
        self.calls: list[tuple[str, str]] = []
        self.closed = False
        self._versions = 0
        self._failures: dict[str, list[BaseException]] = {}
        self._lost_replies: dict[str, int] = {}
        self._holds: dict[str, list[asyncio.Event]] = {}
        self.files = FakeFiles()

    def as_client(self) -> StorageClient:
        return cast(StorageClient, self)

    # -- scripting --------------------------------------------------------------------------

    def fail(self, operation: str, error: BaseException, times: int = 1) -> None:
        self._failures.setdefault(operation, []).extend([error] * times)

    def lose_reply(self, operation: str) -> None:
        self._lost_replies[operation] = self._lost_replies.get(operation, 0) + 1

    def hold(self, operation: str) -> asyncio.Event:
        release = asyncio.Event()
        self._holds.setdefault(operation, []).append(release)
        return release

    async def _enter(self, operation: str, name: str) -> None:
        # Every call is a suspension point, as a real call is: concurrent callers interleave.
        await asyncio.sleep(0)
        self.calls.append((operation, name))
        if held := self._holds.get(operation):
            await held.pop(0).wait()
        if queued := self._failures.get(operation):
            raise queued.pop(0)

    def _reply(self, operation: str, version: str) -> str:
        if self._lost_replies.get(operation):
            self._lost_replies[operation] -= 1
            raise Unavailable("storage unavailable: reply lost")
        return version

    def _next_version(self) -> str:
        self._versions += 1
        return f"v{self._versions}"

    # -- direct access for tests ------------------------------------------------------------

    def record(self, task_id: str) -> TaskRecord:
        """The stored record (a copy)."""
        return TaskRecord.from_json(self.tasks[task_id][0])

    def version(self, task_id: str) -> str:
        return self.tasks[task_id][1]

    def put_record(self, record: TaskRecord) -> str:
        """Stores ``record`` as is, outside any precondition; returns its version."""
        version = self._next_version()
        self.tasks[record.task_id] = (record.to_json(), version)
        return version

    # -- StorageClient ----------------------------------------------------------------------

    async def close(self) -> None:
        self.closed = True

    async def create(self, record: TaskRecord, owner: str = "") -> str:
        await self._enter("create", record.task_id)
        self.owners[record.task_id] = owner
        if record.task_id in self.tasks:
            raise Conflict(f"task {record.task_id} already exists")
        version = self._next_version()
        self.tasks[record.task_id] = (record.to_json(), version)
        self.history.append(("create", record.task_id))
        return self._reply("create", version)

    async def update(self, record: TaskRecord, version: str) -> str:
        await self._enter("update", record.task_id)
        stored = self.tasks.get(record.task_id)
        if stored is None or stored[1] != version:
            raise Conflict(f"task {record.task_id} changed since version {version}")
        new = self._next_version()
        self.tasks[record.task_id] = (record.to_json(), new)
        self.history.append(("update", record.task_id))
        return self._reply("update", new)

    async def get(self, task_id: str) -> tuple[TaskRecord, str]:
        await self._enter("get", task_id)
        if task_id not in self.tasks:
            raise NotFound(f"task {task_id} not found")
        raw, version = self.tasks[task_id]
        return TaskRecord.from_json(raw), version

    async def list_tasks(
        self, limit: int, page_token: str, status: str = "", owner: str = "", tenant: str = ""
    ) -> tuple[list[tuple[TaskRecord, str]], str]:
        await self._enter("list_tasks", page_token)
        ids = sorted(self.tasks, reverse=True)
        if page_token:
            ids = [i for i in ids if i < page_token]
        page: list[tuple[TaskRecord, str]] = []
        last = ""
        for task_id in ids:
            if len(page) == limit:
                return page, last
            raw, version = self.tasks[task_id]
            record = TaskRecord.from_json(raw)
            last = task_id
            if (
                (not status or record.status.value == status)
                and (not owner or self.owners.get(task_id) == owner)
                and (not tenant or record.tenant == tenant)
            ):
                page.append((record, version))
        return page, ""

    async def put_object(
        self, namespace: int, name: str, body: bytes, *, version: str | None
    ) -> str:
        await self._enter("put_object", name)
        stored = self.objects.get((namespace, name))
        if version is None and stored is not None:
            raise Conflict(f"object {name} already exists")
        if version is not None and (stored is None or stored[1] != version):
            raise Conflict(f"object {name} changed since version {version}")
        new = self._next_version()
        self.objects[(namespace, name)] = (body, new)
        self.history.append(("put_object", name))
        return self._reply("put_object", new)

    async def get_object(self, namespace: int, name: str) -> tuple[bytes, str]:
        await self._enter("get_object", name)
        if (namespace, name) not in self.objects:
            raise NotFound(f"object {name} not found")
        return self.objects[(namespace, name)]

    async def list_objects(self, namespace: int) -> list[tuple[str, bytes, str]]:
        await self._enter("list_objects", str(namespace))
        return [
            (name, body, version)
            for (ns, name), (body, version) in sorted(self.objects.items())
            if ns == namespace
        ]

    async def list_object_page(
        self, namespace: int, page_token: str = "", page_size: int = 0
    ) -> tuple[list[tuple[str, bytes, str]], str]:
        await self._enter("list_object_page", str(namespace))
        names = sorted(n for ns, n in self.objects if ns == namespace and n > page_token)
        size = page_size or 1000
        page = [(n, *self.objects[(namespace, n)]) for n in names[:size]]
        return page, (names[size - 1] if len(names) > size else "")

    async def delete_object(self, namespace: int, name: str, version: str) -> None:
        await self._enter("delete_object", name)
        stored = self.objects.get((namespace, name))
        if stored is None:
            raise NotFound(f"object {name} not found")
        if stored[1] != version:
            raise Conflict(f"object {name} changed since version {version}")
        del self.objects[(namespace, name)]
        self.history.append(("delete_object", name))

    async def bucket(self) -> str:
        return "fake-bucket"

    async def healthy(self) -> bool:
        return True


# -- section workers ------------------------------------------------------------------------

# One run() call's script: items yielded in order; these words raise instead.
FULL = "full"
LOST = "lost"


def reject(reason: str) -> str:
    return f"reject:{reason}"


def expired(conv_id: str = "", message_id: str = "") -> TokenExpired:
    """A script step: the platform rejects the job's token after these ids were reached."""
    return TokenExpired(
        "fake", "poll: the platform rejected the access token (401)", conv_id, message_id
    )


OK = Outcome(success=True, response="done", cost=0.01, conv_id="c", message_id="m")

Step = Progress | Outcome | str | asyncio.Event | TokenExpired
Plan = Callable[[SectionJob], Sequence[Step]]


@dataclass
class FakeWorker:
    """A section worker whose ``run`` follows ``script``, one entry per call (the last entry
    repeats), or ``plan(job)`` when set. An ``asyncio.Event`` in a script holds the job until
    it is set. ``handled`` counts the events its callers took and asked past (done with them)."""

    address: str
    script: list[Sequence[Step]] = field(default_factory=lambda: [[OK]])
    plan: Plan | None = None
    reply: Load | AppError | WorkerLost = field(
        default_factory=lambda: Load(capacity=1, in_flight=0, accepting=True)
    )
    token_lifetime: float = 3600.0
    auth_error: Exception | None = None
    runs: list[SectionJob] = field(default_factory=list)
    authentications: list[Credentials] = field(default_factory=list)
    refreshes: list[bool] = field(default_factory=list)
    tokens_issued: int = 0
    probes: int = 0
    handled: int = 0
    closed: bool = False

    async def load(self) -> Load:
        self.probes += 1
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply

    async def authenticate(self, credentials: Credentials, *, refresh: bool = False) -> AccessToken:
        """Issues ``token-<address>-<n>``, a new one per call."""
        self.authentications.append(credentials)
        self.refreshes.append(refresh)
        if self.auth_error is not None:
            raise self.auth_error
        self.tokens_issued += 1
        return AccessToken(f"token-{self.address}-{self.tokens_issued}", self.token_lifetime)

    async def run(self, job: SectionJob) -> AsyncIterator[Progress | Outcome]:
        self.runs.append(job)
        if self.plan is not None:
            steps = self.plan(job)
        else:
            steps = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        for step in steps:
            if isinstance(step, asyncio.Event):
                await step.wait()
            elif step == FULL:
                raise WorkerFull(self.address, "no free slot")
            elif step == LOST:
                raise WorkerLost(self.address, "lost: UNAVAILABLE")
            elif isinstance(step, TokenExpired):
                raise step
            elif isinstance(step, str) and step.startswith("reject:"):
                raise JobRejected(self.address, step.removeprefix("reject:"))
            else:
                assert isinstance(step, Progress | Outcome)
                yield step
                self.handled += 1

    async def close(self) -> None:
        self.closed = True


def room(capacity: int = 1, in_flight: int = 0) -> Load:
    return Load(capacity=capacity, in_flight=in_flight, accepting=True)


async def pool_of(*workers: FakeWorker, refresh_s: float = 60.0) -> WorkerPool:
    """A pool of ``workers`` (their addresses are loopback targets), probed once."""
    by_address = {w.address: w for w in workers}
    pool = WorkerPool(list(by_address), refresh_s=refresh_s, connect=by_address.__getitem__)
    await pool.refresh()
    return pool


def job(section: str = "s", task_id: str = "task_20260101000000_00abcdef") -> SectionJob:
    return SectionJob(
        job_id=f"{task_id}:{section}",
        task_id=task_id,
        section=section,
        asset_id="asset",
        record_json="{}",
        tenant="t",
        username="u",
        access_token="tok",
        timeout_s=5.0,
    )


# -- peers ----------------------------------------------------------------------------------


class FakePeers:
    """The other replicas, as the orchestrator calls them; records every call. ``answer``
    None stands for an unreachable peer."""

    def __init__(self, events: Sequence[TaskEvent] = (), answer: object = "forwarded") -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.callers: list[Principal] = []  # who each forwarded call was made for
        self.events = list(events)
        self.answer = answer
        self.closed = False
        self.figures: dict[str, TaskFigures] = {}  # address -> its figures; absent: unreachable

    async def task_figures(self, address: str) -> TaskFigures | None:
        self.calls.append(("task_figures", address, ""))
        return self.figures.get(address)

    async def status(self, address: str, task_id: str, caller: Principal) -> object:
        self.calls.append(("status", address, task_id))
        self.callers.append(caller)
        return self.answer

    async def result(self, address: str, task_id: str, caller: Principal) -> object:
        self.calls.append(("result", address, task_id))
        self.callers.append(caller)
        return self.answer

    async def cancel(self, address: str, task_id: str, caller: Principal) -> object:
        self.calls.append(("cancel", address, task_id))
        self.callers.append(caller)
        return self.answer

    async def retry(self, address: str, task_id: str, caller: Principal) -> object:
        self.calls.append(("retry", address, task_id))
        self.callers.append(caller)
        return self.answer

    async def watch(
        self, address: str, task_id: str, caller: Principal
    ) -> AsyncIterator[TaskEvent]:
        self.calls.append(("watch", address, task_id))
        self.callers.append(caller)
        for event in self.events:
            yield event

    async def close(self) -> None:
        self.closed = True
