"""The orchestrator's gRPC adapter for the dashboard's reads, on loopback: the figures of
``GetStats`` (one replica's, or summed when asked), a replica's figures as another replica asks
for them (:meth:`Peers.task_figures`), a task's input records, and the tenant filter of
``ListTasks`` passed through."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from common.errors import NotFound
from common.grpc_server import ServiceHost
from common.principals import Principal
from common.settings import GrpcServerSettings
from common.tls import Role as TlsRole
from orchestrator.figures import TaskFigures
from orchestrator.peers import Peers
from orchestrator.service import Stats
from orchestrator.servicer import SERVICE_NAME, OrchestratorServicer
from orchestrator.workers import PlatformView
from tests.orchestrator.factories import task_record
from wealthai.orchestrator.v1 import orchestrator_pb2 as pb
from wealthai.orchestrator.v1 import orchestrator_pb2_grpc

ADMIN = pb.Caller(principal_id="admin", tenant="wealth", admin=True)
ANN = pb.Caller(principal_id="acme/ann", tenant="acme")
TASK = "task_20260301120000_0123abcd"


@dataclass
class Domain:
    """The orchestrator's domain as the servicer calls it, scripted; records each call."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    peers: None = None

    async def stats(self, all_replicas: bool = False) -> Stats:
        self.calls.append(("stats", all_replicas))
        return Stats(
            workers=2,
            workers_ready=2,
            worker_capacity=12,
            sections_running=1,
            queue_size=0,
            tasks_running=3,
            tasks_submitted=9,
            tasks_finished={"completed": 5, "error": 1},
            storage_ok=True,
            replica_id="r1",
            replicas_alive=2,
            tasks_taken_over=1,
            cache_size=4,
            storage_bucket="b",
            tasks_by_state={"pending": 1, "processing": 2},
            platform=PlatformView(
                in_flight=4,
                spend_day="2026-03-01",
                spend_today={"acme": 0.75},
                breakers={"asset-a": "half_open"},
            ),
            replicas_counted=2 if all_replicas else 1,
        )

    async def input(self, task_id: str, caller: Principal) -> Any:
        self.calls.append(("input", (task_id, caller.id)))
        if caller.id != "acme/ann" and not caller.admin:
            raise NotFound(f"task {task_id} not found")
        data = [{"top_movers_data": "<script>alert(1)</script>"}, {"Market Value": "1"}]
        return task_record(task_id=task_id, data=data, principal_id="acme/ann", tenant="acme")

    async def list(
        self,
        caller: Principal,
        limit: int,
        status: str,
        page_token: str,
        owner: str = "",
        tenant: str = "",
    ) -> tuple[list[Any], str]:
        self.calls.append(("list", (caller.id, status, owner, tenant)))
        return [], ""


@pytest.fixture
async def served() -> AsyncIterator[tuple[Any, Domain, str]]:
    """The servicer on loopback over a scripted domain: a stub, the domain, the address."""
    domain = Domain()
    host = ServiceHost(
        GrpcServerSettings(tls_mode="plaintext"), "orchestrator", TlsRole.ORCHESTRATOR
    )
    host.add(
        orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server,
        OrchestratorServicer(domain),  # type: ignore[arg-type]
        SERVICE_NAME,
    )
    port = await host.start()
    address = f"127.0.0.1:{port}"
    async with grpc.aio.insecure_channel(address) as channel:
        yield orchestrator_pb2_grpc.OrchestratorServiceStub(channel), domain, address
    await host.stop()


async def test_stats_carry_the_dashboards_figures(served: tuple[Any, Domain, str]) -> None:
    stub, domain, _ = served
    stats = await stub.GetStats(pb.GetStatsRequest(all_replicas=True))
    assert domain.calls == [("stats", True)]
    assert dict(stats.tasks_by_state) == {"pending": 1, "processing": 2}
    assert dict(stats.spend_today_usd) == {"acme": 0.75}
    assert stats.spend_day == "2026-03-01"
    assert stats.sections_in_flight == 4
    assert dict(stats.breakers) == {"asset-a": "half_open"}
    assert stats.replicas_counted == 2
    assert (await stub.GetStats(pb.GetStatsRequest())).replicas_counted == 1


async def test_a_peer_asks_a_replica_for_its_own_figures(served: tuple[Any, Domain, str]) -> None:
    _, domain, address = served
    peers = Peers()
    try:
        figures = await peers.task_figures(address)
    finally:
        await peers.close()
    assert domain.calls == [("stats", False)]  # its own figures: never summed again
    assert figures == TaskFigures(
        by_state={"pending": 1, "processing": 2},
        running=3,
        submitted=9,
        finished={"completed": 5, "error": 1},
        taken_over=1,
    )


async def test_a_replica_that_cannot_be_reached_gives_no_figures() -> None:
    peers = Peers()
    try:
        assert await peers.task_figures("127.0.0.1:1") is None
    finally:
        await peers.close()


async def test_a_tasks_input_is_its_records_as_json_text(served: tuple[Any, Domain, str]) -> None:
    stub, _, _ = served
    shown = await stub.GetTaskInput(pb.GetTaskRequest(task_id=TASK, caller=ANN))
    assert [json.loads(r) for r in shown.records_json] == [
        {"top_movers_data": "<script>alert(1)</script>"},
        {"Market Value": "1"},
    ]
    assert (shown.task_id, shown.owner, shown.tenant) == (TASK, "acme/ann", "acme")

    other = pb.Caller(principal_id="beta/bob", tenant="beta")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetTaskInput(pb.GetTaskRequest(task_id=TASK, caller=other))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_tenant_filter_reaches_the_domain(served: tuple[Any, Domain, str]) -> None:
    stub, domain, _ = served
    await stub.ListTasks(pb.ListTasksRequest(caller=ADMIN, tenant="acme", status="completed"))
    assert domain.calls == [("list", ("admin", "completed", "", "acme"))]
