"""Agensium's calls on the gateway, over a real gRPC channel to a stand-in orchestrator: how a
task's state reads in Agensium's terms, the profile or the error as its result, and the
uploads refused before anything is stored."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from common import errors
from common.errors import InvalidInput
from common.grpc_server import ServiceHost
from common.tls import Role
from gateway.agensium import check_name, status_of
from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.gateway.test_app import ADMIN_KEY, AS_ADMIN, PLAINTEXT_SERVER
from wealthai.orchestrator.v1 import orchestrator_pb2 as pb
from wealthai.orchestrator.v1 import orchestrator_pb2_grpc

DONE = "task_20251230182721_01e09305"
FAILED = "task_20251230182721_02e09305"
RUNNING = "task_20251230182721_03e09305"
PROFILE = {"file": {"rows": 2}, "columns": []}


class Tasks(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    async def GetTaskResult(self, request, context):  # type: ignore[no-untyped-def]
        if request.task_id == DONE:
            outcome = pb.SectionOutcome(status="completed", result_json=json.dumps(PROFILE))
            return pb.TaskResult(task_id=DONE, status="completed", data={"data_profile": outcome})
        if request.task_id == FAILED:
            outcome = pb.SectionOutcome(status="error", error="the file is empty")
            return pb.TaskResult(task_id=FAILED, status="error", data={"data_profile": outcome})
        if request.task_id == RUNNING:
            outcome = pb.SectionOutcome(status="running")
            return pb.TaskResult(
                task_id=RUNNING, status="processing", data={"data_profile": outcome}
            )
        raise errors.NotFound(f"task {request.task_id} not found")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    host = ServiceHost(PLAINTEXT_SERVER, "fake-orchestrator", Role.ORCHESTRATOR)
    host.add(orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server, Tasks(), "o")
    port = await host.start()
    settings = GatewaySettings(
        orchestrator_target=f"127.0.0.1:{port}", admin_key=ADMIN_KEY, tls_mode="plaintext"
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gw", headers=AS_ADMIN
        ) as http:
            yield http
    await host.stop()


@pytest.mark.parametrize(
    ("task", "section", "status"),
    [
        ("pending", "", "PENDING"),
        ("authenticating", "pending", "PENDING"),
        ("processing", "pending", "STARTED"),
        ("processing", "running", "STARTED"),
        ("completed", "completed", "SUCCESS"),
        ("error", "error", "FAILURE"),
        ("cancelled", "cancelled", "FAILURE"),
    ],
)
def test_task_states_read_in_agensium_terms(task: str, section: str, status: str) -> None:
    assert status_of(task, section) == status


def test_only_tables_are_profiled() -> None:
    assert check_name("Q3 Holdings.CSV") == "Q3 Holdings.CSV"
    for name in ("report.pdf", "table", "data.csv.zip"):
        with pytest.raises(InvalidInput, match=r"only \.csv, \.xlsx, \.parquet"):
            check_name(name)


async def test_a_task_answers_its_profile_or_its_error(client: httpx.AsyncClient) -> None:
    done = await client.get(f"/tasks/{DONE}")
    assert done.json() == {"task_id": DONE, "status": "SUCCESS", "result": PROFILE}
    failed = await client.get(f"/tasks/{FAILED}")
    assert failed.json() == {"task_id": FAILED, "status": "FAILURE", "result": "the file is empty"}
    running = await client.get(f"/tasks/{RUNNING}")
    assert running.json() == {"task_id": RUNNING, "status": "STARTED", "result": None}
    unknown = await client.get("/tasks/task_20251230182721_04e09305")
    assert unknown.status_code == 404


async def test_the_task_listing_stays_apart(client: httpx.AsyncClient) -> None:
    malformed = await client.get("/tasks/not-a-task")
    assert malformed.status_code == 422


async def test_uploads_that_are_not_a_table_form_are_refused(client: httpx.AsyncClient) -> None:
    raw = await client.post("/profile/async", content=b"a,b\n1,2\n")
    assert raw.status_code == 422 and "multipart/form-data" in raw.json()["detail"]
    pdf = await client.post("/profile/async", files={"file": ("r.pdf", b"%PDF", "application/pdf")})
    assert pdf.status_code == 422 and "'r.pdf'" in pdf.json()["detail"]
    anonymous = await client.post(
        "/profile/async",
        files={"file": ("t.csv", b"a\n1\n", "text/csv")},
        headers={"Authorization": ""},
    )
    assert anonymous.status_code == 401
