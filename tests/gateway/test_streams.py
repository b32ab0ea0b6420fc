"""Event streams are bounded: per principal, per task, and in lifetime; a refused stream is 429
with Retry-After, and a slot comes back when its stream ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from common.errors import Overloaded
from common.grpc_server import ServiceHost
from common.settings import GrpcServerSettings
from common.tls import Role
from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.streams import StreamLimits, TooManyStreams
from wealthai.orchestrator.v1 import orchestrator_pb2 as pb
from wealthai.orchestrator.v1 import orchestrator_pb2_grpc

ADMIN_KEY = "wak_admin_test-bootstrap-key-of-32-characters-or-more"
TASKS = ["task_20251230182721_01e09305", "task_20251230182721_01e09306"]


def test_limits_count_per_principal_and_per_task_and_free_slots_on_exit() -> None:
    limits = StreamLimits(per_principal=2, per_task=2, max_lifetime_s=60)
    first = limits.open("ann", "t1")
    with first, limits.open("ann", "t2"):
        with pytest.raises(TooManyStreams, match="2 event streams open") as refused:
            limits.open("ann", "t3")
        assert isinstance(refused.value, Overloaded) and refused.value.retry_after_s
        with limits.open("bob", "t1"):
            assert limits.open_streams() == 3
            with pytest.raises(TooManyStreams, match="task t1"):
                limits.open("cy", "t1")
        assert limits.open_streams() == 2
    assert limits.open_streams() == 0
    with limits.open("ann", "t1"):
        pass


class Watched(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """Answers a watch with one event, then keeps the stream open."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def WatchTask(self, request: pb.WatchTaskRequest, context: Any) -> AsyncIterator[Any]:
        self.started.set()
        yield pb.TaskEvent(task_id=request.task_id, status="processing", progress=50)
        await asyncio.sleep(3600)


@pytest.fixture
async def client() -> AsyncIterator[tuple[httpx.AsyncClient, Watched]]:
    watched = Watched()
    host = ServiceHost(GrpcServerSettings(tls_mode="plaintext"), "orchestrator", Role.ORCHESTRATOR)
    host.add(orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server, watched, "o")
    port = await host.start()
    settings = GatewaySettings(
        orchestrator_target=f"127.0.0.1:{port}",
        admin_key=ADMIN_KEY,
        tls_mode="plaintext",
        events_per_principal=1,
        events_max_lifetime_s=1.0,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gw", headers=headers, timeout=10
        ) as http:
            yield http, watched
    await host.stop()


async def test_a_second_stream_of_one_principal_is_refused_until_the_first_ends(client):
    http, watched = client
    first = asyncio.create_task(http.get(f"/task/{TASKS[0]}/events"))
    await asyncio.wait_for(watched.started.wait(), 5)

    refused = await http.get(f"/task/{TASKS[1]}/events")
    assert refused.status_code == 429
    assert refused.json()["error"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) > 0

    ended = await first  # its lifetime (1 s) ends it, with the event it had
    assert ended.status_code == 200
    assert ended.text.count("data: ") == 1 and '"processing"' in ended.text
    again = asyncio.create_task(http.get(f"/task/{TASKS[1]}/events"))
    assert (await again).status_code == 200  # the slot came back
