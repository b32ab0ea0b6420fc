"""A gRPC service serves at most ``max_concurrent_rpcs`` calls at once; the next is refused with
RESOURCE_EXHAUSTED (429 through the error table) instead of queueing without bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from common.errors import Overloaded, error_for_code
from common.grpc_server import ServiceHost
from common.settings import GrpcServerSettings
from common.tls import Role
from wealthai.orchestrator.v1 import orchestrator_pb2 as pb
from wealthai.orchestrator.v1 import orchestrator_pb2_grpc


class Held(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def WatchTask(self, request: pb.WatchTaskRequest, context: Any) -> AsyncIterator[Any]:
        self.started.set()
        yield pb.TaskEvent(task_id=request.task_id)
        await asyncio.sleep(3600)


async def test_calls_past_the_bound_are_refused() -> None:
    held = Held()
    settings = GrpcServerSettings(tls_mode="plaintext", max_concurrent_rpcs=1)
    host = ServiceHost(settings, "orchestrator", Role.ORCHESTRATOR)
    host.add(orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server, held, "o")
    port = await host.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            first = stub.WatchTask(pb.WatchTaskRequest(task_id="a"))
            await first.read()
            second = stub.WatchTask(pb.WatchTaskRequest(task_id="b"))
            try:
                await second.read()
            except grpc.aio.AioRpcError as err:
                refused = err.code()
            else:
                refused = grpc.StatusCode.OK
            first.cancel()
        assert refused == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_for_code(refused) is Overloaded
    finally:
        await host.stop()
