"""Calls from one orchestrator replica to another (the one that runs a task), at the address
:meth:`orchestrator.membership.Membership.locate` finds for it.

A forwarded call carries ``FORWARDED`` metadata and is never forwarded again, so stale leases
cannot bounce a call between replicas. A peer that cannot be reached gives ``None`` (or
``False``), and the caller serves the call itself from storage; any other refusal is raised as
the platform's own error.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from common.channels import open_channel
from common.errors import AppError, from_rpc_error
from common.principals import Principal
from common.principals import Role as PrincipalRole
from common.tls import Identity, Role
from orchestrator.figures import TaskFigures
from orchestrator.models import TaskEvent
from wealthai.orchestrator.v1 import orchestrator_pb2 as pb
from wealthai.orchestrator.v1 import orchestrator_pb2_grpc

logger = logging.getLogger(__name__)

_UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
FORWARDED = ("x-wealthai-forwarded", "1")
_READ_TIMEOUT_S = 5.0
_ACT_TIMEOUT_S = 10.0

Reply = TypeVar("Reply", bound=Message)


class Peers:
    """Channels to the other replicas, opened on first use and kept."""

    def __init__(self, tls: Identity | None = None) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._tls = tls

    def _stub(self, address: str) -> orchestrator_pb2_grpc.OrchestratorServiceAsyncStub:
        if address not in self._channels:
            self._channels[address] = open_channel(address, self._tls, Role.ORCHESTRATOR)
        return orchestrator_pb2_grpc.OrchestratorServiceStub(self._channels[address])

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()

    async def _call(self, address: str, call: Awaitable[Reply]) -> Reply | None:
        try:
            return await call
        except grpc.aio.AioRpcError as err:
            if err.code() in _UNREACHABLE:
                logger.warning("replica at %s unreachable: %s", address, err.code().name)
                return None
            raise from_rpc_error(err, "orchestrator") from err

    async def status(self, address: str, task_id: str, caller: Principal) -> pb.TaskStatus | None:
        stub = self._stub(address)
        request = pb.GetTaskRequest(task_id=task_id, caller=caller_message(caller))
        call = stub.GetTaskStatus(request, timeout=_READ_TIMEOUT_S, metadata=(FORWARDED,))
        return await self._call(address, call)

    async def result(self, address: str, task_id: str, caller: Principal) -> pb.TaskResult | None:
        stub = self._stub(address)
        request = pb.GetTaskRequest(task_id=task_id, caller=caller_message(caller))
        call = stub.GetTaskResult(request, timeout=_READ_TIMEOUT_S, metadata=(FORWARDED,))
        return await self._call(address, call)

    async def cancel(self, address: str, task_id: str, caller: Principal) -> pb.TaskStatus | None:
        stub = self._stub(address)
        request = pb.CancelTaskRequest(task_id=task_id, caller=caller_message(caller))
        call = stub.CancelTask(request, timeout=_ACT_TIMEOUT_S, metadata=(FORWARDED,))
        return await self._call(address, call)

    async def retry(self, address: str, task_id: str, caller: Principal) -> pb.TaskStatus | None:
        stub = self._stub(address)
        request = pb.RetryTaskRequest(task_id=task_id, caller=caller_message(caller))
        call = stub.RetryTask(request, timeout=_ACT_TIMEOUT_S, metadata=(FORWARDED,))
        return await self._call(address, call)

    async def task_figures(self, address: str) -> TaskFigures | None:
        """The task figures of the replica at ``address`` (its own, never summed again);
        None when it cannot be reached."""
        stub = self._stub(address)
        call = stub.GetStats(pb.GetStatsRequest(), timeout=_READ_TIMEOUT_S, metadata=(FORWARDED,))
        try:
            stats = await self._call(address, call)
        except AppError as exc:
            logger.warning("replica at %s gave no figures: %s", address, exc.message)
            return None
        if stats is None:
            return None
        return TaskFigures(
            by_state=dict(stats.tasks_by_state),
            running=stats.tasks_running,
            submitted=stats.tasks_submitted,
            finished=dict(stats.tasks_finished),
            taken_over=stats.tasks_taken_over,
        )

    async def watch(
        self, address: str, task_id: str, caller: Principal
    ) -> AsyncIterator[TaskEvent]:
        """The owner's events for ``task_id``; ends early (without error) when the owner goes
        away, so the caller can look for the task again."""
        call = self._stub(address).WatchTask(
            pb.WatchTaskRequest(task_id=task_id, caller=caller_message(caller)),
            metadata=(FORWARDED,),
        )
        try:
            async for event in call:
                yield TaskEvent(
                    task_id=event.task_id,
                    status=event.status,
                    progress=event.progress,
                    message=event.message,
                    at=event.at,
                    section=event.section,
                )
        except grpc.aio.AioRpcError as err:
            if err.code() not in _UNREACHABLE and err.code() != grpc.StatusCode.CANCELLED:
                raise from_rpc_error(err, "orchestrator") from err
            logger.info("watch of %s on %s ended: %s", task_id, address, err.code().name)
        finally:
            call.cancel()


def caller_message(caller: Principal) -> pb.Caller:
    return pb.Caller(principal_id=caller.id, tenant=caller.tenant, admin=caller.admin)


def principal_of(caller: pb.Caller) -> Principal:
    """The principal a request names; one with no id sees nothing but what admins see."""
    role = PrincipalRole.ADMIN if caller.admin else PrincipalRole.CLIENT
    return Principal(id=caller.principal_id, tenant=caller.tenant, role=role)
