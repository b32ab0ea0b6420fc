"""Calls from one orchestrator replica to another (the owner of a task), found through the
address each replica publishes in its lease."""

from __future__ import annotations

import logging

import grpc

from common.channels import open_channel
from common.errors import from_rpc_error
from wealthai.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc

logger = logging.getLogger(__name__)

_UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


async def cancel_on_owner(address: str, task_id: str) -> bool:
    """Asks the replica at ``address`` to cancel a task it runs. False when it cannot be
    reached (the caller then records the cancel itself); its refusals are raised as errors."""
    try:
        async with open_channel(address) as channel:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            await stub.CancelTask(orchestrator_pb2.CancelTaskRequest(task_id=task_id), timeout=10)
    except grpc.aio.AioRpcError as err:
        if err.code() in _UNREACHABLE:
            logger.warning("owner at %s unreachable for cancel: %s", address, err.code().name)
            return False
        raise from_rpc_error(err, "orchestrator") from err
    return True
