"""Metrics, traces and logs of the whole platform as real processes: every service's Prometheus
endpoint is scraped before and after a task, and the counters that task must move have moved."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from scripts.devstack import Ports, Stack
from tests.e2e.conftest import BUCKET, FAST
from tests.e2e.test_platform import SEED
from tests.helpers import free_port

pytestmark = pytest.mark.e2e

ORCH = "wealthai.orchestrator.v1.OrchestratorService"
STORAGE = "wealthai.storage.v1.StorageService"
WORKER = "wealthai.worker.v1.SectionWorkerService"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The platform with every service's metrics endpoint on a free port."""
    base = tmp_path_factory.mktemp("observed")
    ports = Ports(
        gateway=free_port(),
        orchestrators=[free_port()],
        storage=free_port(),
        simulator=free_port(),
        s3=free_port(),
        workers=[free_port(), free_port()],
    )
    ports.metrics = {name: free_port() for name in ports.service_names()}
    platform = Stack(ports, base / "state", log_dir=base / "logs", env=FAST, bucket=BUCKET)
    platform.start(timeout=60)
    yield platform
    platform.stop()


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

    # workers: the three sections between them, as jobs and as RunSection streams
    workers = [name for name in processes if name.startswith("worker-")]
    completed = sum(
        moved(w, "wealthai_worker_jobs_finished_total", outcome="completed") for w in workers
    )
    assert completed == 3
    streams = sum(
        moved(w, "wealthai_grpc_server_requests_total", service=WORKER, method="RunSection")
        for w in workers
    )
    assert streams == 3
    assert sum(value(after[w], "wealthai_worker_job_slots") for w in workers) == 2 * int(
        FAST["WORKER_MAX_CONCURRENT_JOBS"]
    )
    assert all(value(after[w], "wealthai_worker_jobs_in_flight") == 0 for w in workers)
