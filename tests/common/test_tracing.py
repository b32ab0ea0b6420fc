"""Tracing: off unless asked for, and when on one trace carried from the gateway's requests
through every gRPC hop (a real server and channel on loopback), with the trace in log lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from common import tracing
from common.channels import open_channel
from common.grpc_server import ServiceHost
from common.logging import JsonFormatter, configure, task_id_var
from common.settings import GrpcServerSettings
from common.tls import Role
from tests.helpers import assert_eventually
from tests.spans import Spans, collecting_spans
from wealthai.orchestrator.v1 import orchestrator_pb2 as pb
from wealthai.orchestrator.v1 import orchestrator_pb2_grpc

SERVICE = "wealthai.orchestrator.v1.OrchestratorService"
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> Iterator[Spans]:
    with collecting_spans() as collected:
        yield collected


# -- on or off ---------------------------------------------------------------------------------


def test_off_unless_the_exporter_variable_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in (None, "", "none", " NONE "):
        if value is None:
            monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
        else:
            monkeypatch.setenv("OTEL_TRACES_EXPORTER", value)
        assert tracing.setup("orchestrator") is False
        assert not tracing.enabled()
        assert tracing.client_interceptors() == []
        assert tracing.server_interceptors() == []
        assert tracing.current_traceparent() == ""
        assert tracing.current_ids() == ("", "")


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL='grpc'",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='http/json'",
        ),
    ],
)
def test_an_unsupported_choice_stops_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], named: str
) -> None:
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit, match=named):
        tracing.setup("gateway")
    assert not tracing.enabled()


def test_otlp_turns_tracing_on_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/v1/traces")
    try:
        assert tracing.setup("storage_svc") is True
        assert tracing.enabled()
        assert len(tracing.client_interceptors()) == 4
        assert tracing.setup("storage_svc") is True  # a second call changes nothing
    finally:
        tracing.use(None)


# -- the trace across gRPC ---------------------------------------------------------------------


class Answering(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    async def GetTaskStatus(self, request: pb.GetTaskRequest, context: Any) -> pb.TaskStatus:
        logging.getLogger("answering").info("answering %s", request.task_id)
        return pb.TaskStatus(task_id=request.task_id, message=tracing.current_traceparent())

    async def CancelTask(self, request: pb.CancelTaskRequest, context: Any) -> pb.TaskStatus:
        raise RuntimeError("a bug")

    async def WatchTask(self, request: pb.WatchTaskRequest, context: Any) -> AsyncIterator[Any]:
        for _ in range(2):
            yield pb.TaskEvent(task_id=request.task_id)


@pytest.fixture
async def stub(spans: Spans) -> AsyncIterator[orchestrator_pb2_grpc.OrchestratorServiceStub]:
    host = ServiceHost(GrpcServerSettings(tls_mode="plaintext"), "orchestrator", Role.ORCHESTRATOR)
    host.add(orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server, Answering(), SERVICE)
    port = await host.start()
    channel = open_channel(f"127.0.0.1:{port}", None, Role.ORCHESTRATOR)
    try:
        yield orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
    finally:
        await channel.close()
        await host.stop()


async def test_a_call_made_in_a_span_is_served_in_a_child_span_of_it(
    stub: orchestrator_pb2_grpc.OrchestratorServiceStub, spans: Spans
) -> None:
    with tracing.continued(PARENT, "caller", "task_x"):
        caller_traceparent = tracing.current_traceparent()
        reply = await stub.GetTaskStatus(pb.GetTaskRequest(task_id="t1"))
    [caller] = spans.named("caller")
    [served] = spans.named(f"{SERVICE}/GetTaskStatus")
    assert caller.context is not None and served.context is not None
    assert served.kind is SpanKind.SERVER
    assert served.context.trace_id == caller.context.trace_id == int(PARENT.split("-")[1], 16)
    assert served.parent is not None and served.parent.span_id == caller.context.span_id
    assert served.attributes is not None
    assert served.attributes["rpc.method"] == "GetTaskStatus"
    assert served.attributes["rpc.grpc.status_code"] == 0
    # The handler ran inside the server span: what it would pass on names that span.
    assert reply.message.split("-")[1] == caller_traceparent.split("-")[1]
    assert reply.message.split("-")[2] == trace.format_span_id(served.context.span_id)


async def test_a_call_outside_any_trace_opens_no_span(
    stub: orchestrator_pb2_grpc.OrchestratorServiceStub, spans: Spans
) -> None:
    reply = await stub.GetTaskStatus(pb.GetTaskRequest(task_id="t1"))
    assert reply.message == ""
    assert spans.all() == []


async def test_a_failed_call_marks_its_span_as_an_error(
    stub: orchestrator_pb2_grpc.OrchestratorServiceStub, spans: Spans
) -> None:
    with tracing.continued(PARENT, "caller", "task_x"), pytest.raises(grpc.aio.AioRpcError):
        await stub.CancelTask(pb.CancelTaskRequest(task_id="t1"))

    # An aborted call's status reaches the caller before the server's wrappers unwind.
    async def ended() -> int:
        return len(spans.named(f"{SERVICE}/CancelTask"))

    await assert_eventually(ended, lambda n: n == 1, what="the failed call's span ended")
    [served] = spans.named(f"{SERVICE}/CancelTask")
    assert served.status.status_code is StatusCode.ERROR
    assert served.attributes is not None
    assert served.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]


async def test_a_stream_is_one_span_of_the_callers_trace(
    stub: orchestrator_pb2_grpc.OrchestratorServiceStub, spans: Spans
) -> None:
    with tracing.continued(PARENT, "caller", "task_x"):
        events = [e async for e in stub.WatchTask(pb.WatchTaskRequest(task_id="t1"))]
    assert len(events) == 2
    [served] = spans.named(f"{SERVICE}/WatchTask")
    assert served.context is not None
    assert served.context.trace_id == int(PARENT.split("-")[1], 16)
    assert served.status.status_code is StatusCode.UNSET


def test_a_run_continues_the_stored_traceparent_or_starts_a_trace(spans: Spans) -> None:
    with tracing.continued(PARENT, "task run", "task_1"):
        inside = tracing.current_traceparent()
    with tracing.continued("", "task run", "task_2"):
        fresh = tracing.current_traceparent()
    first, second = spans.named("task run")
    assert first.context is not None and second.context is not None
    assert first.context.trace_id == int(PARENT.split("-")[1], 16)
    assert first.parent is not None and first.parent.span_id == int(PARENT.split("-")[2], 16)
    assert first.attributes is not None and first.attributes["wealthai.task_id"] == "task_1"
    assert inside.split("-")[1] == PARENT.split("-")[1]
    assert second.parent is None and fresh.split("-")[1] != PARENT.split("-")[1]


# -- log lines ---------------------------------------------------------------------------------


def test_json_log_lines_carry_the_trace_next_to_the_task(spans: Spans) -> None:
    root = logging.getLogger()
    kept = root.handlers[:], root.level
    configure("test", "INFO", "json")
    out = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    try:
        token = task_id_var.set("task_20260101000000_00abcdef")
        with tracing.continued(PARENT, "task run", "task_20260101000000_00abcdef"):
            logging.getLogger("test").info("inside")
        logging.getLogger("test").info("outside")
        task_id_var.reset(token)
    finally:
        root.handlers[:], level = kept
        root.setLevel(level)
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    [run] = spans.named("task run")
    assert run.context is not None
    assert inside["trace_id"] == PARENT.split("-")[1]
    assert inside["span_id"] == trace.format_span_id(run.context.span_id)
    assert inside["task_id"] == "task_20260101000000_00abcdef"
    assert "trace_id" not in outside and "span_id" not in outside
    assert isinstance(handler.formatter, JsonFormatter)


# -- the gateway -------------------------------------------------------------------------------


@pytest.fixture
def app(spans: Spans) -> FastAPI:
    application = FastAPI()

    @application.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict[str, str]:
        return {"traceparent": tracing.current_traceparent()}

    @application.get("/ping")
    async def ping() -> dict[str, str]:
        return {"traceparent": tracing.current_traceparent()}

    application.add_middleware(tracing.HttpTracing)
    return application


async def test_a_request_continues_the_callers_trace_named_by_its_route(
    app: FastAPI, spans: Spans
) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        given = await client.get("/things/42", headers={"traceparent": PARENT})
        fresh = await client.get("/things/43")
        missing = await client.get("/nothing/here")
        health = await client.get("/ping")
    assert given.json()["traceparent"].split("-")[1] == PARENT.split("-")[1]
    assert fresh.json()["traceparent"].split("-")[1] != PARENT.split("-")[1]
    assert missing.status_code == 404
    assert health.json()["traceparent"] == ""  # health checks are not traced
    first, second = spans.named("GET /things/{thing_id}")
    assert first.kind is SpanKind.SERVER
    assert first.attributes is not None
    assert first.attributes["http.response.status_code"] == 200
    assert first.attributes["http.route"] == "/things/{thing_id}"
    assert first.parent is not None and first.parent.span_id == int(PARENT.split("-")[2], 16)
    assert second.parent is None
    [unmatched] = spans.named("GET unmatched")
    assert unmatched.attributes is not None
    assert unmatched.attributes["http.response.status_code"] == 404
    assert len(spans.all()) == 3


def test_the_middleware_refuses_to_run_with_tracing_off() -> None:
    with pytest.raises(RuntimeError, match="tracing is off"):
        tracing.HttpTracing(FastAPI())
