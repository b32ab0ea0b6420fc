"""The generic metrics: the endpoint every service serves, the gRPC interceptor's calls and
latency by service, method and code, and the gateway middleware's requests by route template
and status. Through real servers on loopback; counters are read as differences, since the
registry is the process's."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from fastapi import FastAPI, HTTPException
from prometheus_client import REGISTRY

from common.errors import NotFound
from common.grpc_server import ServiceHost
from common.metrics import DEFAULT_PORTS, HttpMetrics, MetricsServer, split_method
from common.settings import GrpcServerSettings
from common.tls import Role
from gateway.settings import GatewaySettings
from orchestrator.settings import OrchestratorSettings
from tests.helpers import assert_eventually, free_port
from wealthai.orchestrator.v1 import orchestrator_pb2 as pb
from wealthai.orchestrator.v1 import orchestrator_pb2_grpc

SERVICE = "wealthai.orchestrator.v1.OrchestratorService"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def calls(method: str, code: str, service: str = SERVICE) -> float:
    return sample("wealthai_grpc_server_requests_total", service=service, method=method, code=code)


class Scripted(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """Answers, refuses and fails as each test needs."""

    def __init__(self) -> None:
        self.streaming = asyncio.Event()

    async def GetTaskStatus(self, request: pb.GetTaskRequest, context: Any) -> pb.TaskStatus:
        return pb.TaskStatus(task_id=request.task_id)

    async def GetTaskResult(self, request: pb.GetTaskRequest, context: Any) -> pb.TaskResult:
        raise NotFound(f"task {request.task_id} not found")

    async def CancelTask(self, request: pb.CancelTaskRequest, context: Any) -> pb.TaskStatus:
        raise RuntimeError("a bug")

    async def GetStats(self, request: pb.GetStatsRequest, context: Any) -> pb.Stats:
        context.set_code(grpc.StatusCode.ALREADY_EXISTS)
        return pb.Stats()

    async def WatchTask(self, request: pb.WatchTaskRequest, context: Any) -> AsyncIterator[Any]:
        yield pb.TaskEvent(task_id=request.task_id)
        if request.task_id == "hold":
            self.streaming.set()
            await asyncio.sleep(3600)


@dataclass
class Served:
    stub: orchestrator_pb2_grpc.OrchestratorServiceStub
    channel: grpc.aio.Channel
    servicer: Scripted
    metrics_port: int


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    servicer = Scripted()
    metrics_port = free_port()
    settings = GrpcServerSettings(tls_mode="plaintext", metrics_port=metrics_port)
    host = ServiceHost(settings, "orchestrator", Role.ORCHESTRATOR)
    host.add(orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server, servicer, SERVICE)
    port = await host.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            yield Served(stub, channel, servicer, metrics_port)
    finally:
        await host.stop()


async def _code(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_unary_calls_are_counted_and_timed_by_method_and_the_code_the_caller_gets(
    served: Served,
) -> None:
    stub = served.stub
    cases: list[tuple[str, Callable[[], Any], str]] = [
        ("GetTaskStatus", lambda: stub.GetTaskStatus(pb.GetTaskRequest(task_id="t")), "OK"),
        ("GetTaskResult", lambda: stub.GetTaskResult(pb.GetTaskRequest(task_id="t")), "NOT_FOUND"),
        ("CancelTask", lambda: stub.CancelTask(pb.CancelTaskRequest(task_id="t")), "INTERNAL"),
        ("GetStats", lambda: stub.GetStats(pb.GetStatsRequest()), "ALREADY_EXISTS"),
    ]
    for method, call, code in cases:
        before = calls(method, code)
        timed = sample(
            "wealthai_grpc_server_request_duration_seconds_count",
            service=SERVICE,
            method=method,
            code=code,
        )
        assert (await _code(call())).name == code

        # The server counts a call as its wrappers unwind, just after the caller has its status.
        async def counted(method: str = method, code: str = code) -> tuple[float, float, float]:
            duration = sample(
                "wealthai_grpc_server_request_duration_seconds_count",
                service=SERVICE,
                method=method,
                code=code,
            )
            in_flight = sample(
                "wealthai_grpc_server_requests_in_flight", service=SERVICE, method=method
            )
            return calls(method, code), duration, in_flight

        expected = (before + 1, timed + 1, 0)
        await assert_eventually(counted, expected.__eq__, what=method)


async def test_streams_count_while_open_and_end_ok_or_cancelled(
    served: Served,
) -> None:
    stub, servicer = served.stub, served.servicer
    ok, cancelled = calls("WatchTask", "OK"), calls("WatchTask", "CANCELLED")
    events = [event async for event in stub.WatchTask(pb.WatchTaskRequest(task_id="done"))]
    assert len(events) == 1
    assert calls("WatchTask", "OK") == ok + 1

    held = stub.WatchTask(pb.WatchTaskRequest(task_id="hold"))
    await held.read()
    await servicer.streaming.wait()
    in_flight = {"service": SERVICE, "method": "WatchTask"}
    assert sample("wealthai_grpc_server_requests_in_flight", **in_flight) == 1
    held.cancel()

    async def probe() -> float:
        return calls("WatchTask", "CANCELLED")

    await assert_eventually(probe, lambda n: n == cancelled + 1, what="cancelled stream counted")
    assert sample("wealthai_grpc_server_requests_in_flight", **in_flight) == 0


async def test_an_unknown_method_is_counted_without_its_name(
    served: Served,
) -> None:
    before = calls("unknown", "UNIMPLEMENTED", service="unknown")
    call = served.channel.unary_unary("/made.up.Service/Anything")(b"")
    assert await _code(call) == grpc.StatusCode.UNIMPLEMENTED
    assert calls("unknown", "UNIMPLEMENTED", service="unknown") == before + 1
    assert (
        sample(
            "wealthai_grpc_server_requests_total",
            service="made.up.Service",
            method="Anything",
            code="UNIMPLEMENTED",
        )
        == 0
    )


async def test_the_service_host_serves_the_registry_on_its_metrics_port(
    served: Served,
) -> None:
    stub, metrics_port = served.stub, served.metrics_port
    await stub.GetTaskStatus(pb.GetTaskRequest(task_id="t"))
    async with httpx.AsyncClient() as http:
        reply = await http.get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    text = reply.text
    assert "process_resident_memory_bytes" in text
    assert (
        f'wealthai_grpc_server_requests_total{{code="OK",method="GetTaskStatus",service="{SERVICE}"}}'
        in text
    )


async def test_the_metrics_port_closes_when_the_host_stops() -> None:
    port = free_port()
    host = ServiceHost(
        GrpcServerSettings(tls_mode="plaintext", metrics_port=port), "storage_svc", Role.STORAGE
    )
    await host.start()
    await host.stop()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


def test_the_port_is_the_setting_else_the_service_default_and_zero_is_off() -> None:
    assert MetricsServer(GatewaySettings(metrics_port=9999), "gateway").port == 9999
    assert MetricsServer(GatewaySettings(metrics_port=None), "gateway").port == 9100
    for service, port in DEFAULT_PORTS.items():
        assert MetricsServer(GrpcServerSettings(metrics_port=None), service).port == port


async def test_an_endpoint_turned_off_listens_nowhere() -> None:
    server = MetricsServer(GatewaySettings(metrics_port=0), "gateway")
    await server.start()  # nothing to bind: returns at once
    await server.stop()
    assert server.port == 0


async def test_a_port_in_use_stops_start_up_naming_the_variable() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = MetricsServer(
            OrchestratorSettings.model_construct(metrics_port=port, metrics_host="127.0.0.1"),
            "orchestrator",
        )
        with pytest.raises(SystemExit, match="ORCH_METRICS_PORT"):
            await server.start()


@pytest.mark.parametrize(
    ("full", "parts"),
    [
        (
            "/wealthai.storage.v1.StorageService/GetTask",
            ("wealthai.storage.v1.StorageService", "GetTask"),
        ),
        ("/grpc.health.v1.Health/Check", ("grpc.health.v1.Health", "Check")),
        ("nonsense", ("unknown", "nonsense")),
        ("", ("unknown", "unknown")),
    ],
)
def test_split_method(full: str, parts: tuple[str, str]) -> None:
    assert split_method(full) == parts


# -- the gateway middleware -----------------------------------------------------------------


@pytest.fixture
def app() -> Iterator[FastAPI]:
    application = FastAPI()

    @application.get("/things/{thing_id}/parts")
    async def parts(thing_id: str) -> dict[str, str]:
        if thing_id == "missing":
            raise HTTPException(404, "no such thing")
        if thing_id == "bug":
            raise RuntimeError("a bug")
        return {"thing": thing_id}

    application.add_middleware(HttpMetrics)
    yield application


def http(method: str, route: str, status: str) -> float:
    return sample("wealthai_http_requests_total", method=method, route=route, status=status)


async def test_requests_are_counted_by_route_template_never_by_raw_path(app: FastAPI) -> None:
    route = "/things/{thing_id}/parts"
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        before = {
            (m, r, s): http(m, r, s)
            for m, r, s in [
                ("GET", route, "200"),
                ("GET", route, "404"),
                ("GET", route, "500"),
                ("GET", "unmatched", "404"),
                ("other", "unmatched", "404"),
                ("POST", route, "405"),
            ]
        }
        timed = sample(
            "wealthai_http_request_duration_seconds_count", method="GET", route=route, status="200"
        )
        assert (await client.get("/things/a1/parts")).status_code == 200
        assert (await client.get("/things/b2/parts")).status_code == 200
        assert (await client.get("/things/missing/parts")).status_code == 404
        assert (await client.get("/things/bug/parts")).status_code == 500
        assert (await client.get("/no/such/route/42")).status_code == 404
        assert (await client.request("BREW", "/coffee")).status_code == 404
        assert (await client.post("/things/a1/parts")).status_code == 405
    assert http("GET", route, "200") == before[("GET", route, "200")] + 2
    assert http("GET", route, "404") == before[("GET", route, "404")] + 1
    assert http("GET", route, "500") == before[("GET", route, "500")] + 1
    assert http("GET", "unmatched", "404") == before[("GET", "unmatched", "404")] + 1
    assert http("other", "unmatched", "404") == before[("other", "unmatched", "404")] + 1
    assert http("POST", route, "405") == before[("POST", route, "405")] + 1
    assert (
        sample(
            "wealthai_http_request_duration_seconds_count", method="GET", route=route, status="200"
        )
        == timed + 2
    )
    assert sample("wealthai_http_requests_in_flight", method="GET") == 0
    assert http("GET", "/things/a1/parts", "200") == 0
