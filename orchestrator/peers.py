"""Calls from one orchestrator replica to another (the owner of a task), found through the
address each replica publishes in its lease.

Reads of a task that runs on another replica are forwarded to it, so they see its live state
and cost no S3 read; a forwarded call carries ``FORWARDED`` metadata and is never forwarded
again, so stale leases cannot bounce a call between replicas.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf.message import Message

from common.channels import open_channel
from common.errors import from_rpc_error
from wealthai.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc

logger = logging.getLogger(__name__)

_UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
FORWARDED = ("x-wealthai-forwarded", "1")
_channels: dict[str, grpc.aio.Channel] = {}


def _stub(address: str) -> orchestrator_pb2_grpc.OrchestratorServiceStub:
    if address not in _channels:
        _channels[address] = open_channel(address)
    return orchestrator_pb2_grpc.OrchestratorServiceStub(_channels[address])


async def read_on_owner(address: str, method: str, request: Message) -> Message | None:
    """Calls read ``method`` (GetTaskStatus or GetTaskResult) on the owner at ``address``;
    None when it cannot be reached (the caller then reads storage)."""
    try:
        call = getattr(_stub(address), method)
        response: Message = await call(request, timeout=5, metadata=(FORWARDED,))
    except grpc.aio.AioRpcError as err:
        if err.code() in _UNREACHABLE:
            return None
        raise from_rpc_error(err, "orchestrator") from err
    return response


async def close_all() -> None:
    for channel in _channels.values():
        await channel.close()
    _channels.clear()


async def act_on_owner(address: str, action: str, task_id: str) -> bool:
    """Asks the replica at ``address`` to ``cancel`` or ``retry`` a task it owns, so the replica
    that runs (or last ran) it acts on it. False when it cannot be reached (the caller then acts
    itself); its refusals are raised as errors."""
    if action == "cancel":
        call = _stub(address).CancelTask(
            orchestrator_pb2.CancelTaskRequest(task_id=task_id), timeout=10, metadata=(FORWARDED,)
        )
    else:
        call = _stub(address).RetryTask(
            orchestrator_pb2.RetryTaskRequest(task_id=task_id), timeout=10, metadata=(FORWARDED,)
        )
    try:
        await call
    except grpc.aio.AioRpcError as err:
        if err.code() in _UNREACHABLE:
            logger.warning("owner at %s unreachable for %s: %s", address, action, err.code().name)
            return False
        raise from_rpc_error(err, "orchestrator") from err
    return True
