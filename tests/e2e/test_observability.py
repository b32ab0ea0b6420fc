"""Metrics, traces and logs of the whole platform as real processes: every service's Prometheus
endpoint is scraped before and after a task, and the counters that task must move have moved;
with tracing on, every service sends its spans to a small OTLP/HTTP receiver the test runs on
loopback, and a task's spans from all four services share one trace id, the one its JSON log
lines carry."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from prometheus_client.parser import text_string_to_metric_families

from scripts.devstack import Stack
from section_worker.servicer import JOB_SPAN
from tests.e2e.conftest import BUCKET, FAST, loopback_ports, running
from tests.e2e.test_platform import SEED
from tests.helpers import free_port

pytestmark = pytest.mark.e2e

ORCH = "wealthai.orchestrator.v1.OrchestratorService"
STORAGE = "wealthai.storage.v1.StorageService"
WORKER = "wealthai.worker.v1.SectionWorkerService"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str


class Receiver:
    """An OTLP/HTTP trace receiver on loopback: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                request = ExportTraceServiceRequest.FromString(body)
                receiver.take(request, self.path)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def take(self, request: ExportTraceServiceRequest, path: str) -> None:
        assert path == "/v1/traces", path
        self.requests += 1
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            service=attributes.get("service.name", ""),
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                        )
                    )

    def of_trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [span for span in list(self.spans) if span.trace_id == trace_id]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Stack]:
    """The platform with every service's metrics endpoint on a free port, tracing on (OTLP to
    the receiver, exported every 100 ms) and JSON logs."""
    base = tmp_path_factory.mktemp("observed")
    ports = loopback_ports(workers=2)
    ports.metrics = {name: free_port() for name in ports.service_names()}
    env = {
        **FAST,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        **{f"{prefix}_LOG_FORMAT": "json" for prefix in ("GATEWAY", "ORCH", "STORAGE", "WORKER")},
    }
    with running(base, ports, env, BUCKET) as platform:
        yield platform


@pytest.fixture
async def client(observed: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{observed.ports.gateway}",
        timeout=20,
        headers={"Authorization": f"Bearer {observed.admin_key}"},
    ) as api:
        yield api


async def scrape(stack: Stack, name: str) -> Samples:
    """Every sample a process's metrics endpoint serves, by name and labels."""
    port = stack.ports.metrics[name]
    async with httpx.AsyncClient(timeout=10) as http:
        reply = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert reply.status_code == 200, reply.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


async def run_task(api: httpx.AsyncClient, **headers: str) -> str:
    reply = await api.post(
        "/task/submit",
        json={"username": "user@example.com", "password": "pw-observed", "data": SEED},
        headers=headers,
    )
    assert reply.status_code == 202, reply.text
    task_id = str(reply.json()["task_id"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = (await api.get(f"/task/{task_id}/status")).json()
        if status["status"] in {"completed", "error", "cancelled"}:
            assert status["status"] == "completed", status
            return task_id
        await asyncio.sleep(0.1)
    raise AssertionError(f"task {task_id} did not finish within 60 s")


async def test_every_service_serves_metrics_and_a_task_moves_the_counters(
    observed: Stack, client: httpx.AsyncClient
) -> None:
    processes = observed.ports.service_names()
    before = {name: await scrape(observed, name) for name in processes}

    await run_task(client)
    # The answer that makes a task finished for its client is written before the counters of
    # its end move, and the run's last step is cheap: poll until they have.
    after: dict[str, Samples] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = {name: await scrape(observed, name) for name in processes}
        if value(after["orchestrator-1"], "wealthai_orchestrator_tasks_finished_total") > value(
            before["orchestrator-1"], "wealthai_orchestrator_tasks_finished_total"
        ):
            break
        await asyncio.sleep(0.1)

    def moved(name: str, metric: str, **labels: str) -> float:
        return value(after[name], metric, **labels) - value(before[name], metric, **labels)

    for name in processes:  # the process collector, on every service
        assert value(after[name], "process_resident_memory_bytes") > 10_000_000, name
        assert value(after[name], "process_cpu_seconds_total") > 0, name

    # gateway: requests per route template and status
    gateway = "gateway"
    assert moved(gateway, "wealthai_http_requests_total", route="/task/submit", status="202") == 1
    assert (
        moved(gateway, "wealthai_http_requests_total", route="/task/{task_id}/status", status="200")
        >= 1
    )
    assert not any("task_2" in dict(labels).get("route", "") for _, labels in after[gateway]), (
        "raw paths must never become label values"
    )
    assert moved(gateway, "wealthai_http_request_duration_seconds_count", route="/task/submit") == 1

    # orchestrator: its RPCs, tasks by state, sections, workers
    orch = "orchestrator-1"
    assert moved(orch, "wealthai_grpc_server_requests_total", method="SubmitTask", code="OK") == 1
    assert moved(orch, "wealthai_orchestrator_tasks_submitted_total") == 1
    assert moved(orch, "wealthai_orchestrator_tasks_finished_total", state="completed") == 1
    assert {"wealthai_orchestrator_tasks", "wealthai_orchestrator_sections_in_flight"} <= names(
        after[orch]
    )
    assert value(after[orch], "wealthai_orchestrator_tasks", state="processing") == 0
    assert value(after[orch], "wealthai_orchestrator_sections_in_flight") == 0
    assert value(after[orch], "wealthai_orchestrator_workers_ready") == 2
    assert value(after[orch], "wealthai_orchestrator_worker_slots") == 2 * int(
        FAST["WORKER_MAX_CONCURRENT_JOBS"]
    )

    # storage_svc: its RPCs and the S3 requests behind them, by operation and outcome
    assert moved("storage", "wealthai_grpc_server_requests_total", service=STORAGE, code="OK") >= 2
    assert moved("storage", "wealthai_s3_requests_total", operation="PutObject", outcome="ok") >= 2
    assert (
        moved("storage", "wealthai_s3_request_duration_seconds_count", operation="PutObject") >= 2
    )

    # workers: the three sections between them, as jobs; the orchestrator sends a worker its
    # jobs over one RunSections stream, which stays open for the next
    workers = [name for name in processes if name.startswith("worker-")]
    IN_FLIGHT = "wealthai_grpc_server_requests_in_flight"
    finished = {
        w: moved(w, "wealthai_worker_jobs_finished_total", outcome="completed") for w in workers
    }
    assert sum(finished.values()) == 3
    for w in workers:
        streams = value(after[w], IN_FLIGHT, service=WORKER, method="RunSections")
        assert (streams == 1) if finished[w] else (streams <= 1), (w, streams)
    assert sum(value(after[w], "wealthai_worker_job_slots") for w in workers) == 2 * int(
        FAST["WORKER_MAX_CONCURRENT_JOBS"]
    )
    assert all(value(after[w], "wealthai_worker_jobs_in_flight") == 0 for w in workers)


# -- traces and logs ------------------------------------------------------------------------

SERVICES = {"gateway", "orchestrator", "storage_svc", "section_worker"}


def log_lines(stack: Stack, name: str, task_id: str) -> list[dict[str, str]]:
    """The JSON log lines of one process that name ``task_id``."""
    assert stack.log_dir is not None
    lines = []
    for raw in (stack.log_dir / f"{name}.log").read_text(errors="replace").splitlines():
        if raw.startswith("{") and task_id in raw:
            lines.append(json.loads(raw))
    return lines


async def spans_of(receiver: Receiver, trace_id: str, workers_expected: int) -> list[ReceivedSpan]:
    """The trace's spans once every service's and the task run's have arrived (batches leave
    every 100 ms)."""
    deadline = time.monotonic() + 20
    while True:
        spans = receiver.of_trace(trace_id)
        seen = {span.service for span in spans}
        runs = [s for s in spans if s.name == JOB_SPAN]
        # The task's own span ends last, after its sections: its batch may leave after theirs.
        ended = any(s.name == "task run" for s in spans)
        if seen >= SERVICES and len(runs) >= workers_expected and ended:
            return spans
        if time.monotonic() > deadline:
            raise AssertionError(f"spans of {trace_id} from {seen} only: {spans}")
        await asyncio.sleep(0.1)


async def test_a_task_is_one_trace_across_every_service_continuing_the_callers(
    observed: Stack, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    task_id = await run_task(client, traceparent=f"00-{trace_id}-{caller_span}-01")

    spans = await spans_of(receiver, trace_id, workers_expected=3)
    by_name: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    [submit] = by_name["POST /task/submit"]
    assert submit.service == "gateway" and submit.parent_span_id == caller_span
    [served] = by_name[f"{ORCH}/SubmitTask"]
    assert served.service == "orchestrator" and served.parent_span_id == submit.span_id
    [run] = by_name["task run"]
    assert run.parent_span_id == served.span_id
    sections = by_name[JOB_SPAN]
    assert len(sections) == 3
    assert {s.parent_span_id for s in sections} == {run.span_id}
    assert {s.service for s in sections} == {"section_worker"}
    stored = [s for s in spans if s.service == "storage_svc"]
    assert {s.name for s in stored} >= {f"{STORAGE}/PutTask"}
    assert all(s.trace_id == trace_id for s in spans)

    # Every JSON log line about the task carries its trace next to its task id.
    for name in ("orchestrator-1", "worker-1", "worker-2"):
        for line in log_lines(observed, name, task_id):
            assert line["trace_id"] == trace_id, line
            assert line["span_id"], line
    assert log_lines(observed, "orchestrator-1", task_id)


async def test_a_task_submitted_without_a_trace_starts_one_of_its_own(
    observed: Stack, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    task_id = await run_task(client)
    [first, *_] = log_lines(observed, "orchestrator-1", task_id)
    trace_id = first["trace_id"]
    spans = await spans_of(receiver, trace_id, workers_expected=3)
    assert {s.service for s in spans} == SERVICES
    [submit] = [s for s in spans if s.name == "POST /task/submit"]
    assert submit.parent_span_id == ""  # the gateway started the trace
