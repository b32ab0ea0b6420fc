"""End to end through the REST gateway with every service a real process: the seed example,
input errors, a failing section, a worker killed mid-batch, an orchestrator restarted."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import grpc
import httpx
import pytest

from common.tls import Role
from orchestrator.config import load_config
from scripts.devstack import ROOT, Stack
from tests.e2e.conftest import BUCKET
from tests.helpers import assert_eventually

pytestmark = pytest.mark.e2e

PASSWORD = "s3cr3t-Pa55word"
SEED = [
    {"Market Value": "12000000", "Investment Value": "11000000", "Top Asset": "Equity (65%)"},
    {"top_movers_data": "AAPL +3.2%, MSFT -1.1%, NVDA +5.4%"},
    {
        "total_portfolio_mv": 1000000,
        "customer_risk_profile": "moderate",
        "assets": [{"name": "Equity", "weight": 0.6}, {"name": "Bonds", "weight": 0.4}],
    },
]
SECTIONS = ["portfolio_snapshot", "top_movers", "model_and_rebalancing"]
TOP_MOVERS_ASSET = "a9fdeb96-cdfa-4a48-9467-bf97a06f8738"
# Every asset of the section's fallback chain: failing them all fails the section.
TOP_MOVERS_CHAIN = list(load_config(ROOT / "config.json").sections["top_movers"].chain)
TERMINAL = {"completed", "error", "cancelled"}


async def accepted_prompts(sim: httpx.AsyncClient) -> int:
    """Prompts the platform accepted (each one paid for), as its message timeline holds them:
    a prompt refused with 401 (a token the simulator's reset forgot) costs nothing and is not
    counted."""
    return len((await sim.get("/_sim/timeline")).json())


async def submit(api: httpx.AsyncClient, data: list[dict] | None = None, n: int = 0) -> str:
    records = data or [{**r, "n": n} if i == 1 else r for i, r in enumerate(SEED)]
    reply = await api.post(
        "/task/submit", json={"username": "user@example.com", "password": PASSWORD, "data": records}
    )
    assert reply.status_code == 202, reply.text
    body = reply.json()
    # The seed's answer, whatever the task's run has reached by the time it is sent.
    assert (body["status"], body["message"]) == ("pending", "Task submitted successfully"), body
    return str(body["task_id"])


async def wait_finished(api: httpx.AsyncClient, task_ids: list[str], within: float = 60) -> dict:
    """Polls until every task is terminal; tolerates the gateway answering 503 meanwhile."""
    deadline = time.monotonic() + within
    done: dict[str, dict] = {}
    while len(done) < len(task_ids):
        for task_id in task_ids:
            if task_id in done:
                continue
            reply = await api.get(f"/task/{task_id}/status")
            if reply.status_code == 200 and reply.json()["status"] in TERMINAL:
                done[task_id] = reply.json()
            else:
                assert reply.status_code in (200, 503), reply.text
        if time.monotonic() > deadline:
            pending = sorted(set(task_ids) - done.keys())
            raise AssertionError(f"tasks not finished within {within}s: {pending}")
        await asyncio.sleep(0.1)
    return done


async def test_seed_example_completes_with_all_sections(api, sim, s3):
    task_id = await submit(api, SEED)
    status = (await wait_finished(api, [task_id]))[task_id]
    assert status["status"] == "completed", status
    assert status["progress"] == 100
    steps = [t["step"] for t in status["trace"]]
    assert steps[:3] == ["Submit", "1. Authentication", "2. Detect Sections"]
    assert sorted(steps[3:6]) == sorted(f"3. Section {s}" for s in SECTIONS)
    assert steps[6] == "4. Aggregate"

    result = (await api.get(f"/task/{task_id}/result")).json()
    assert result["section_detected"] == ", ".join(SECTIONS)
    assert list(result["data"]) == SECTIONS
    assert all(s["status"] == "completed" and s["response"] for s in result["data"].values())
    stats = (await sim.get("/_sim/stats")).json()
    assert stats["calls"]["prompt"] == 3
    section_costs = [s["cost"] for s in result["data"].values()]
    assert result["cost"] == pytest.approx(sum(section_costs), abs=1e-9)
    assert result["cost"] == pytest.approx(stats["cost_served"], abs=1e-4)
    assert len(result["conv_id"].split(", ")) == 3
    assert result["conv_id"].split(", ")[1] == result["data"]["top_movers"]["conv_id"]
    assert len(result["message_id"].split(", ")) == 3
    assert result["elapsed_seconds"] > 0

    stored = s3.get_object(Bucket=BUCKET, Key=f"tasks/{task_id}.json")
    assert stored["ServerSideEncryption"] == "AES256"
    raw = stored["Body"].read()
    doc = json.loads(raw)
    for field in (
        "task_id",
        "status",
        "progress",
        "message",
        "username",
        "tenant",
        "data",
        "section_detected",
        "conv_id",
        "message_id",
        "result_data",
        "cost",
        "created_at",
        "updated_at",
        "completed_at",
        "trace",
    ):
        assert field in doc, field
    assert doc["status"] == "completed" and doc["cost"] == result["cost"]
    assert PASSWORD.encode() not in raw
    assert "password" not in doc
    assert doc["password_sealed"] == ""  # deleted by the write that completed the task
    assert b"access_token" not in raw and b"Bearer" not in raw
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    # The document, and its entry in its owner's index.
    marker, document = sorted(k for k in keys if task_id in k)
    assert document == f"tasks/{task_id}.json"
    assert marker.startswith("tasks/_owners/") and marker.endswith(task_id)


async def test_record_matching_no_section_is_422_and_nothing_is_stored(api, s3):
    before = s3.list_objects_v2(Bucket=BUCKET, Prefix="tasks/").get("KeyCount", 0)
    reply = await api.post(
        "/task/submit",
        json={"username": "u", "password": PASSWORD, "data": [SEED[0], {"cash": 5}]},
    )
    assert reply.status_code == 422
    detail = reply.json()["detail"]
    assert "data[1]" in detail and "cash" in detail
    assert all(name in detail for name in SECTIONS)
    assert PASSWORD not in reply.text
    after = s3.list_objects_v2(Bucket=BUCKET, Prefix="tasks/").get("KeyCount", 0)
    assert after == before


async def test_unknown_task_is_404(api):
    reply = await api.get("/task/task_20200101000000_00000000/result")
    assert reply.status_code == 404
    assert "task_20200101000000_00000000" in reply.json()["detail"]


async def test_a_failing_section_ends_in_error_with_the_others_kept(api, sim):
    (await sim.patch("/_sim/config", json={"fail_assets": TOP_MOVERS_CHAIN})).raise_for_status()
    task_id = await submit(api, SEED)
    status = (await wait_finished(api, [task_id]))[task_id]
    assert status["status"] == "error"
    assert "top_movers" in status["message"]
    result = (await api.get(f"/task/{task_id}/result")).json()
    assert result["data"]["top_movers"]["status"] == "error"
    assert result["data"]["top_movers"]["error"].startswith("every asset of the chain failed")
    attempts = result["data"]["top_movers"]["attempts"]
    assert [a["asset_id"] for a in attempts] == TOP_MOVERS_CHAIN
    assert {a["outcome"] for a in attempts} == {"failed"}
    for name in ("portfolio_snapshot", "model_and_rebalancing"):
        assert result["data"][name]["status"] == "completed"
        assert result["data"][name]["response"]
    assert result["cost"] == pytest.approx(
        sum(s["cost"] for s in result["data"].values()), abs=1e-9
    )


async def test_listing_is_newest_first_and_filters_by_status(api):
    ids = [await submit(api, n=i) for i in range(3)]
    await wait_finished(api, ids)
    listing = (await api.get("/tasks", params={"limit": 3, "status": "completed"})).json()
    listed = [t["task_id"] for t in listing["tasks"]]
    assert listed == sorted(listed, reverse=True)
    assert all(t["status"] == "completed" for t in listing["tasks"])
    assert set(ids) <= {t["task_id"] for t in (await api.get("/tasks?limit=50")).json()["tasks"]}


async def test_killing_one_of_two_workers_mid_batch_loses_no_task(api, sim, stack: Stack):
    (await sim.patch("/_sim/config", json={"latency_median_s": 1.0, "latency_sigma": 0.1}))
    ids = [await submit(api, n=i) for i in range(6)]

    async def prompts() -> int:
        return int((await sim.get("/_sim/stats")).json()["calls"]["prompt"])

    await assert_eventually(prompts, lambda n: n >= 9, timeout=20, what="prompts in flight")
    stack.kill("worker-1", signal.SIGKILL)
    try:
        done = await wait_finished(api, ids, within=60)
        assert {s["status"] for s in done.values()} == {"completed"}, done
    finally:
        stack.launch("worker-1")


async def test_orchestrator_restart_resumes_pending_tasks(api, sim, stack: Stack):
    (await sim.patch("/_sim/config", json={"latency_median_s": 1.0, "latency_sigma": 0.1}))
    ids = [await submit(api, n=i) for i in range(4)]
    stack.kill("orchestrator-1", signal.SIGKILL)
    reply = await api.get(f"/task/{ids[0]}/status")
    assert reply.status_code == 503
    stack.launch("orchestrator-1")
    done = await wait_finished(api, ids, within=60)
    assert {s["status"] for s in done.values()} == {"completed"}, done
    result = (await api.get(f"/task/{ids[0]}/result")).json()
    assert all(s["status"] == "completed" for s in result["data"].values())


async def test_cancel_stops_running_sections(api, sim):
    (await sim.patch("/_sim/config", json={"latency_median_s": 3.0, "latency_sigma": 0.1}))
    task_id = await submit(api, SEED)

    async def state() -> dict:
        return dict((await api.get(f"/task/{task_id}/status")).json())

    await assert_eventually(state, lambda s: s["status"] == "processing", timeout=10)
    reply = await api.post(f"/task/{task_id}/cancel")
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "cancelled"
    assert {s["status"] for s in reply.json()["sections"]} == {"cancelled"}
    stored = await state()
    assert stored["status"] == "cancelled"
    again = await api.post(f"/task/{task_id}/cancel")
    assert again.status_code == 409


async def test_events_stream_progress_until_the_task_finishes(api, sim):
    (await sim.patch("/_sim/config", json={"latency_median_s": 0.3, "latency_sigma": 0.1}))
    task_id = await submit(api, SEED)
    events = []
    async with api.stream("GET", f"/task/{task_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[-1]["status"] == "completed"
    assert events[-1]["progress"] == 100
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress)
    assert any(e["section"] == "top_movers" for e in events)


async def test_submits_cut_off_mid_call_leave_no_task_unstarted(api, stack: Stack):
    """Callers whose deadline expires mid-submit, then repeat with the same key: every task
    they were given ends, none is left stored but never started."""
    from common.channels import open_channel
    from wealthai.orchestrator.v1 import orchestrator_pb2 as pb
    from wealthai.orchestrator.v1 import orchestrator_pb2_grpc

    port = stack.ports.orchestrators[0]
    requests = [
        pb.SubmitTaskRequest(
            username="user@example.com",
            password=PASSWORD,
            records_json=[json.dumps({**SEED[1], "n": n})],
            idempotency_key=f"cut-{time.time_ns()}-{n}",
            caller=pb.Caller(principal_id="ops", admin=True),
        )
        for n in range(30)
    ]
    async with open_channel(
        f"127.0.0.1:{port}", stack.identity(Role.GATEWAY), Role.ORCHESTRATOR
    ) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        cut = []
        for n, request in enumerate(requests):
            try:
                await stub.SubmitTask(request, timeout=0.002 + (n % 15) * 0.002)
            except grpc.aio.AioRpcError:
                cut.append(request)
        assert cut, "no submission was cut off; the test proves nothing"
        ids = [(await stub.SubmitTask(request, timeout=10)).task_id for request in cut]
    done = await wait_finished(api, ids, within=30)
    assert {s["status"] for s in done.values()} == {"completed"}


async def _call(
    port: int, credentials: grpc.ChannelCredentials | None, server: Role, method: str
) -> grpc.StatusCode:
    """The status of a call to one of the stack's gRPC services: ``method`` is ``health``,
    ``reflection`` or ``service`` (a read of the service's own)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2_grpc

    from wealthai.storage.v1 import storage_pb2, storage_pb2_grpc
    from wealthai.worker.v1 import worker_pb2, worker_pb2_grpc

    target = f"127.0.0.1:{port}"
    options = [("grpc.ssl_target_name_override", server.value)]
    channel = (
        grpc.aio.insecure_channel(target)
        if credentials is None
        else grpc.aio.secure_channel(target, credentials, options)
    )
    async with channel:
        try:
            if method == "health":
                await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
            elif method == "reflection":
                stub = reflection_pb2_grpc.ServerReflectionStub(channel)
                # No request is sent: a refusing server may close the stream before a write.
                call = stub.ServerReflectionInfo(timeout=5)
                await call.done_writing()
                code: grpc.StatusCode = await call.code()
                return code
            elif server is Role.STORAGE:
                await storage_pb2_grpc.StorageServiceStub(channel).GetTask(
                    storage_pb2.GetTaskRequest(task_id="task_20250101000000_00000000"), timeout=5
                )
            else:
                await worker_pb2_grpc.SectionWorkerServiceStub(channel).GetLoad(
                    worker_pb2.GetLoadRequest(), timeout=5
                )
        except grpc.aio.AioRpcError as err:
            return err.code()
    return grpc.StatusCode.OK


async def test_storage_and_workers_serve_only_orchestrators_over_mutual_tls(stack: Stack):
    ca = stack.identity(Role.ORCHESTRATOR).ca
    no_client_cert = grpc.ssl_channel_credentials(root_certificates=ca)
    orchestrator = stack.identity(Role.ORCHESTRATOR).channel_credentials()
    gateway = stack.identity(Role.GATEWAY).channel_credentials()
    for port, role in [
        (stack.ports.storage, Role.STORAGE),
        *[(port, Role.WORKER) for port in stack.ports.workers],
    ]:
        # The orchestrator's certificate is served; the same call is refused to the others.
        assert await _call(port, orchestrator, role, "health") == grpc.StatusCode.OK
        served = await _call(port, orchestrator, role, "service")
        assert served in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND), (role, served)
        for credentials, method in [(no_client_cert, "health"), (no_client_cert, "service")]:
            refused = await _call(port, credentials, role, method)
            assert refused == grpc.StatusCode.UNAVAILABLE, (role, method, refused)
        assert await _call(port, None, role, "service") == grpc.StatusCode.UNAVAILABLE
        denied = await _call(port, gateway, role, "service")
        assert denied == grpc.StatusCode.PERMISSION_DENIED, (role, denied)
        assert await _call(port, orchestrator, role, "reflection") == (
            grpc.StatusCode.UNIMPLEMENTED
        ), role
    orchestrator_port = stack.ports.orchestrators[0]
    assert await _call(orchestrator_port, gateway, Role.ORCHESTRATOR, "health") == (
        grpc.StatusCode.OK
    )
    assert await _call(orchestrator_port, gateway, Role.ORCHESTRATOR, "reflection") == (
        grpc.StatusCode.UNIMPLEMENTED
    )
