"""The dashboard's pages and the API routes it reads, through the real application over a real
gRPC channel to a scripted orchestrator: page headers (CSP, framing, caching), ``/me``,
``/admin/stats`` for admins only, a task's input records, the tenant filter for admins only,
and no API answer a browser may keep. The pages' behaviour in a browser is
tests/e2e/test_dashboard.py's."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from common import errors
from common.grpc_server import ServiceHost
from common.settings import GrpcServerSettings
from common.tls import Role
from gateway.app import create_app
from gateway.dashboard import STATIC_DIR
from gateway.settings import GatewaySettings
from wealthai.orchestrator.v1 import orchestrator_pb2 as pb
from wealthai.orchestrator.v1 import orchestrator_pb2_grpc

TASK = "task_20260301120000_0123abcd"
ADMIN_KEY = "wak_admin_test-bootstrap-key-of-32-characters-or-more"
CLIENT_KEY = "wak_0123456789ab_" + "c" * 43
AS_ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
AS_CLIENT = {"Authorization": f"Bearer {CLIENT_KEY}"}


class Scripted(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """Answers the dashboard's calls from a script and records the requests."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    async def ResolveKey(self, request: Any, context: Any) -> Any:
        if request.key != CLIENT_KEY:
            raise errors.Unauthenticated("unknown key")
        return pb.ResolvedKey(
            key_id="0123456789ab", principal_id="acme/ann", tenant="acme", admin=False
        )

    async def GetStats(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        return pb.Stats(
            workers=2,
            workers_ready=2,
            worker_capacity=12,
            queue_size=1,
            tasks_running=2,
            tasks_submitted=9,
            tasks_finished={"completed": 6, "error": 1},
            storage_ok=True,
            replicas_alive=2,
            tasks_by_state={"pending": 0, "processing": 2},
            spend_today_usd={"acme": 0.3241},
            spend_day="2026-03-01",
            sections_in_flight=3,
            breakers={"asset-a": "open", "asset-b": "closed"},
            replicas_counted=2,
        )

    async def GetTaskInput(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        if request.task_id != TASK:
            raise errors.NotFound(f"task {request.task_id} not found")
        records = [{"top_movers_data": "<script>alert(1)</script>"}, {"Market Value": "1"}]
        return pb.TaskInput(
            task_id=TASK,
            records_json=[json.dumps(r) for r in records],
            owner="acme/ann",
            tenant="acme",
        )

    async def ListTasks(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        return pb.ListTasksResponse(tasks=[pb.TaskSummary(task_id=TASK, status="completed")])


@pytest.fixture
async def env() -> AsyncIterator[tuple[httpx.AsyncClient, Scripted]]:
    scripted = Scripted()
    host = ServiceHost(GrpcServerSettings(tls_mode="plaintext"), "fake", Role.ORCHESTRATOR)
    host.add(orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server, scripted, "o")
    port = await host.start()
    app = create_app(
        GatewaySettings(
            orchestrator_target=f"127.0.0.1:{port}", admin_key=ADMIN_KEY, tls_mode="plaintext"
        )
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client, scripted
    await host.stop()


def _policy(reply: httpx.Response) -> dict[str, str]:
    directives = [
        d.strip().split(" ", 1) for d in reply.headers["content-security-policy"].split(";")
    ]
    return {name: value for name, value in directives}


@pytest.mark.parametrize("path", ["/dashboard", f"/dashboard/tasks/{TASK}"])
async def test_the_pages_need_no_key_and_carry_a_strict_policy(
    env: tuple[httpx.AsyncClient, Scripted], path: str
) -> None:
    client, _ = env
    reply = await client.get(path)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")
    policy = _policy(reply)
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"  # no inline script, no other origin
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert reply.headers["x-frame-options"] == "DENY"
    assert reply.headers["x-content-type-options"] == "nosniff"
    assert reply.headers["referrer-policy"] == "no-referrer"
    assert reply.headers["cache-control"] == "no-cache"
    # Every script of the page is a file of the dashboard's own; none is inline.
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", reply.text, re.S)
    assert scripts and all(
        'src="/dashboard/static/' in attrs and not body.strip() for attrs, body in scripts
    )


async def test_a_page_for_something_that_is_not_a_task_id_is_refused(
    env: tuple[httpx.AsyncClient, Scripted],
) -> None:
    client, _ = env
    assert (await client.get("/dashboard/tasks/..%2F..%2Fetc")).status_code in (404, 422)
    assert (await client.get("/dashboard/tasks/not-a-task")).status_code == 422


async def test_static_files_carry_the_page_headers_and_stay_inside_their_folder(
    env: tuple[httpx.AsyncClient, Scripted],
) -> None:
    client, _ = env
    script = await client.get("/dashboard/static/api.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert _policy(script)["script-src"] == "'self'"
    assert script.headers["cache-control"] == "no-cache"
    assert (await client.get("/dashboard/static/../dashboard.py")).status_code == 404
    assert (await client.get("/dashboard/static/missing.js")).status_code == 404


def test_no_script_of_the_dashboard_writes_markup() -> None:
    """Task data reaches the page as text only: no script parses HTML or evaluates code."""
    forbidden = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function"
    )
    scripts = sorted(STATIC_DIR.glob("*.js"))
    assert scripts
    for script in scripts:
        assert not forbidden.search(script.read_text()), script.name
    for page in STATIC_DIR.glob("*.html"):
        assert not re.search(r"\son[a-z]+=|style=", page.read_text()), page.name


async def test_api_answers_are_never_kept_by_a_browser(
    env: tuple[httpx.AsyncClient, Scripted],
) -> None:
    client, _ = env
    for reply in (
        await client.get("/tasks", headers=AS_ADMIN),
        await client.get("/me", headers=AS_CLIENT),
        await client.get("/tasks"),  # a 401 too
    ):
        assert reply.headers["cache-control"] == "no-store", reply.url


async def test_me_names_the_keys_principal(env: tuple[httpx.AsyncClient, Scripted]) -> None:
    client, _ = env
    assert (await client.get("/me", headers=AS_CLIENT)).json() == {
        "principal_id": "acme/ann",
        "tenant": "acme",
        "role": "client",
        "auth": "keys",
    }
    assert (await client.get("/me", headers=AS_ADMIN)).json()["role"] == "admin"
    refused = await client.get("/me", headers={"Authorization": "Bearer wak_ffffffffffff_x"})
    assert refused.status_code == 401


async def test_admin_stats_are_the_platforms_figures_summed_over_replicas(
    env: tuple[httpx.AsyncClient, Scripted],
) -> None:
    client, scripted = env
    reply = await client.get("/admin/stats", headers=AS_ADMIN)
    assert reply.status_code == 200, reply.text
    assert scripted.requests[-1].all_replicas
    assert reply.json() == {
        "tasks_by_state": {"pending": 0, "processing": 2},
        "tasks_finished": {"completed": 6, "error": 1},
        "tasks_submitted": 9,
        "tasks_running": 2,
        "spend_day": "2026-03-01",
        "spend_today_usd": {"acme": 0.3241},
        "sections_in_flight": 3,
        "sections_queued": 1,
        "worker_capacity": 12,
        "workers": 2,
        "workers_ready": 2,
        "breakers": {"asset-a": "open", "asset-b": "closed"},
        "replicas_alive": 2,
        "replicas_counted": 2,
    }


async def test_a_client_gets_no_platform_figures(env: tuple[httpx.AsyncClient, Scripted]) -> None:
    client, scripted = env
    reply = await client.get("/admin/stats", headers=AS_CLIENT)
    assert reply.status_code == 403
    assert reply.json()["error"] == "forbidden"
    assert scripted.requests == []  # refused before the orchestrator is asked
    assert (await client.get("/admin/stats")).status_code == 401


async def test_a_tasks_input_records_are_returned_as_objects(
    env: tuple[httpx.AsyncClient, Scripted],
) -> None:
    client, scripted = env
    reply = await client.get(f"/task/{TASK}/input", headers=AS_CLIENT)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "task_id": TASK,
        "owner": "acme/ann",
        "tenant": "acme",
        "data": [{"top_movers_data": "<script>alert(1)</script>"}, {"Market Value": "1"}],
    }
    assert scripted.requests[-1].caller.principal_id == "acme/ann"
    missing = await client.get("/task/task_20260301120000_ffffffff/input", headers=AS_CLIENT)
    assert missing.status_code == 404


async def test_only_admins_list_by_tenant(env: tuple[httpx.AsyncClient, Scripted]) -> None:
    client, scripted = env
    reply = await client.get("/tasks", params={"tenant": "acme"}, headers=AS_ADMIN)
    assert reply.status_code == 200, reply.text
    assert scripted.requests[-1].tenant == "acme"
    assert (
        await client.get("/tasks", params={"tenant": "acme"}, headers=AS_CLIENT)
    ).status_code == 403
    bad = await client.get("/tasks", params={"tenant": "acme/ann"}, headers=AS_ADMIN)
    assert bad.status_code == 422
