"""Durability with several replicas of every service, all real processes: crashes lose no task
and pay for no finished section twice; orphans have one owner; idempotent submits; retry of
failed sections; S3 outages answered with 503 and recovered from by themselves."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Iterator

import httpx
import pytest

from common.timeutil import iso, utcnow
from common.tls import Role
from orchestrator.credentials import Sealer, decode_key
from orchestrator.membership import Membership
from orchestrator.models import SectionResult, TaskRecord
from orchestrator.storage_client import LEASES, StorageClient
from orchestrator.takeover import Takeover
from scripts.devstack import Stack
from tests.e2e.conftest import BUCKET, FAST, loopback_ports, running
from tests.e2e.test_platform import (
    PASSWORD,
    SEED,
    TOP_MOVERS_CHAIN,
    accepted_prompts,
    submit,
    wait_finished,
)
from tests.faults import TcpProxy
from tests.helpers import assert_eventually, free_port

pytestmark = pytest.mark.e2e

TOP_MOVERS_ASSET = "a9fdeb96-cdfa-4a48-9467-bf97a06f8738"


@pytest.fixture(scope="module")
def proxy() -> Iterator[TcpProxy]:
    relay = TcpProxy(free_port(), target_port=free_port())
    relay.start()
    yield relay
    relay.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, proxy: TcpProxy) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("replicas")
    ports = loopback_ports(orchestrators=2, workers=3, s3=proxy.target_port)
    env = {
        **FAST,
        "STORAGE_S3_ENDPOINT_URL": f"http://127.0.0.1:{proxy.listen_port}",
        "STORAGE_S3_MAX_ATTEMPTS": "2",
        "STORAGE_S3_CONNECT_TIMEOUT_S": "1",
        "STORAGE_S3_READ_TIMEOUT_S": "2",
    }
    with running(base, ports, env, BUCKET) as platform:
        yield platform


def _orphan(task_id: str, sealed: str, *, owner: str, takeovers: int = 0) -> TaskRecord:
    """A one-section task as a replica that then died would have stored it."""
    now = iso(utcnow())
    return TaskRecord(
        task_id=task_id,
        username="user@example.com",
        tenant="wealth",
        password_sealed=sealed,
        data=[SEED[1]],
        section_detected="top_movers",
        result_data={"top_movers": SectionResult(record_index=0, asset_id=TOP_MOVERS_ASSET)},
        created_at=now,
        updated_at=now,
        owner=owner,
        takeovers=takeovers,
    )


async def _sim_stats(sim: httpx.AsyncClient) -> dict:
    return dict((await sim.get("/_sim/stats")).json())


def _completed_sections(s3, task_ids: list[str]) -> int:  # type: ignore[no-untyped-def]
    done = 0
    for task_id in task_ids:
        doc = json.loads(s3.get_object(Bucket=BUCKET, Key=f"tasks/{task_id}.json")["Body"].read())
        done += sum(s["status"] == "completed" for s in doc["result_data"].values())
    return done


async def test_kill_an_orchestrator_and_a_worker_mid_batch(api, sim, s3, stack: Stack):
    await sim.patch("/_sim/config", json={"latency_median_s": 1.0, "latency_sigma": 0.3})
    ids = [await submit(api, n=i) for i in range(12)]
    sections = 3 * len(ids)

    async def prompts() -> int:
        return int((await _sim_stats(sim))["calls"]["prompt"])

    await assert_eventually(prompts, lambda n: n >= 12, timeout=20, what="prompts in flight")
    persisted = _completed_sections(s3, ids)
    stack.kill("orchestrator-1", signal.SIGKILL)
    stack.kill("worker-1", signal.SIGKILL)
    in_flight_at_kill = await prompts() - persisted
    try:
        done = await wait_finished(api, ids, within=90)
    finally:
        stack.launch("orchestrator-1")
        stack.launch("worker-1")
    assert {s["status"] for s in done.values()} == {"completed"}, done
    sent = await prompts()
    assert sent <= sections + in_flight_at_kill, (sent, sections, in_flight_at_kill)


async def test_two_orchestrators_racing_for_an_orphan_get_one_owner(api, stack: Stack):
    key = decode_key((stack.state_dir / "credential.key").read_text().strip())
    storage = StorageClient(f"127.0.0.1:{stack.ports.storage}", stack.identity(Role.ORCHESTRATOR))
    task_id = f"task_{utcnow():%Y%m%d%H%M%S}_0fa0fa00"
    sealed = Sealer(key).seal(PASSWORD, task_id, "wealth", "user@example.com")
    record = _orphan(task_id, sealed, owner="ghost-of-a-dead-replica")
    version = await storage.create(record)
    launched: list[str] = []
    racers = []
    for n in range(2):
        membership = Membership(storage, f"racer-{n}", "", ttl_s=0.01, held=set)
        racers.append(
            Takeover(
                storage,
                membership,
                max_takeovers=3,
                launch=lambda rec, _v, n=n: launched.append(f"racer-{n}"),
                held=set,
            )
        )
    copies = [TaskRecord.model_validate(record.model_dump()) for _ in racers]

    async def claim(racer: Takeover, copy: TaskRecord) -> int:
        async with racer.membership.claiming([task_id]):
            return await racer.take_over(copy, version)

    won = await asyncio.gather(*(claim(r, c) for r, c in zip(racers, copies, strict=True)))
    assert sorted(won) == [0, 1]
    stored, _ = await storage.get(task_id)
    assert launched == [stored.owner]
    assert stored.takeovers == 1
    # Then both "die" at once: their leases are never renewed again. The winner's lease listed
    # the task before it wrote itself as owner, so when that lease goes stale the real
    # replicas find the task there, take it over and finish it.
    done = await wait_finished(api, [task_id], within=30)
    assert done[task_id]["status"] == "completed"
    steps = [t["step"] for t in done[task_id]["trace"]]
    assert steps.count("Takeover") == 2
    await storage.close()


async def test_idempotency_key_returns_the_first_task(api, sim):
    body = {"username": "user@example.com", "password": PASSWORD, "data": SEED}
    headers = {"Idempotency-Key": f"order-{time.time_ns()}"}
    first = await api.post("/task/submit", json=body, headers=headers)
    again = await api.post("/task/submit", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["task_id"] == first.json()["task_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = await api.post("/task/submit", json={**body, "data": SEED[:2]}, headers=headers)
    assert other.status_code == 409
    assert "Idempotency-Key" in other.json()["detail"]

    racing_key = {"Idempotency-Key": f"race-{time.time_ns()}"}
    replies = await asyncio.gather(
        *(api.post("/task/submit", json=body, headers=racing_key) for _ in range(6))
    )
    assert {r.status_code for r in replies} == {202}
    assert len({r.json()["task_id"] for r in replies}) == 1
    await wait_finished(api, [first.json()["task_id"], replies[0].json()["task_id"]])
    timeline = (await sim.get("/_sim/timeline")).json()
    assert len(timeline) == 6, timeline  # two tasks, three sections each


async def test_retry_reruns_only_the_failed_sections(api, sim):
    await sim.patch("/_sim/config", json={"fail_assets": TOP_MOVERS_CHAIN})
    task_id = await submit(api, SEED)
    failed = (await wait_finished(api, [task_id]))[task_id]
    assert failed["status"] == "error"
    early = (await api.post(f"/task/{task_id}/cancel")).status_code
    assert early == 409
    await sim.patch("/_sim/config", json={"fail_assets": []})
    retried = await api.post(f"/task/{task_id}/retry")
    assert retried.status_code == 200, retried.text
    done = (await wait_finished(api, [task_id]))[task_id]
    assert done["status"] == "completed"
    # The other two sections, top_movers on every asset of its chain, then only top_movers again.
    assert await accepted_prompts(sim) == 2 + len(TOP_MOVERS_CHAIN) + 1
    result = (await api.get(f"/task/{task_id}/result")).json()
    assert all(s["status"] == "completed" for s in result["data"].values())
    assert (await api.post(f"/task/{task_id}/retry")).status_code == 409


async def test_s3_outage_answers_503_and_processing_resumes(api, sim, s3, proxy: TcpProxy):
    await sim.patch("/_sim/config", json={"latency_median_s": 1.0, "latency_sigma": 0.1})
    running = await submit(api, SEED)
    keys_before = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    proxy.down()
    try:
        reply = await api.post(
            "/task/submit",
            json={"username": "u@example.com", "password": PASSWORD, "data": SEED},
        )
        assert reply.status_code == 503, reply.text
        assert "unavailable" in reply.json()["detail"].lower()
        await asyncio.sleep(1.5)  # sections finish while S3 is away
    finally:
        proxy.up()
    keys_after = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
    new_keys = keys_after - keys_before
    assert not [k for k in new_keys if k.endswith(".json") and "/task_" in k], new_keys
    done = await wait_finished(api, [running], within=60)
    assert done[running]["status"] == "completed"
    later = await submit(api, SEED)
    assert (await wait_finished(api, [later]))[later]["status"] == "completed"


async def test_sigterm_drains_a_worker_without_resending_its_jobs(api, sim, stack: Stack):
    await sim.patch("/_sim/config", json={"latency_median_s": 1.0, "latency_sigma": 0.1})
    ids = [await submit(api, n=100 + i) for i in range(6)]

    async def prompts() -> int:
        return int((await _sim_stats(sim))["calls"]["prompt"])

    await assert_eventually(prompts, lambda n: n >= 18, timeout=20, what="all prompts sent")
    stack.kill("worker-2", signal.SIGTERM)
    try:
        done = await wait_finished(api, ids, within=60)
    finally:
        stack.launch("worker-2")
    assert {s["status"] for s in done.values()} == {"completed"}
    assert await prompts() == 18


async def test_a_task_that_keeps_killing_its_owners_is_dead_lettered(api, stack: Stack):
    storage = StorageClient(f"127.0.0.1:{stack.ports.storage}", stack.identity(Role.ORCHESTRATOR))
    now = utcnow()
    task_id = f"task_{now:%Y%m%d%H%M%S}_dead1e77"
    record = _orphan(task_id, "aesgcm1:unused", owner="ghost-3", takeovers=3)
    await storage.create(record)
    lease = {"replica_id": "ghost-3", "address": "", "renewed_at": iso(now), "tasks": [task_id]}
    await storage.put_object(LEASES, "ghost-3", json.dumps(lease).encode(), version=None)
    done = (await wait_finished(api, [task_id], within=30))[task_id]
    assert done["status"] == "error"
    assert done["message"].startswith("Dead-lettered: its owner died 4 times")
    assert done["trace"][-1]["step"] == "Dead letter"
    listed = (await api.get("/tasks", params={"status": "error", "limit": 100})).json()
    assert task_id in {t["task_id"] for t in listed["tasks"]}
    await storage.close()


async def test_cancel_through_another_replica_stops_the_owner(api, sim, s3, stack: Stack):
    from common.channels import open_channel
    from wealthai.orchestrator.v1 import orchestrator_pb2 as pb
    from wealthai.orchestrator.v1 import orchestrator_pb2_grpc

    await sim.patch("/_sim/config", json={"latency_median_s": 3.0, "latency_sigma": 0.1})
    task_id = await submit(api, SEED)
    doc = json.loads(s3.get_object(Bucket=BUCKET, Key=f"tasks/{task_id}.json")["Body"].read())
    owner_index = int(doc["owner"].split("-")[1]) - 1  # "orchestrator-<n>-<hex>"
    other = stack.ports.orchestrators[1 - owner_index]
    async with open_channel(
        f"127.0.0.1:{other}", stack.identity(Role.GATEWAY), Role.ORCHESTRATOR
    ) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        reply = await stub.CancelTask(
            pb.CancelTaskRequest(task_id=task_id, caller=pb.Caller(principal_id="ops", admin=True))
        )
    assert reply.status == "cancelled"
    await asyncio.sleep(4.0)  # past the sections' latency: an owner still running would finish
    stats = await _sim_stats(sim)
    assert stats["answers"]["success"] == 0, stats
    status = (await api.get(f"/task/{task_id}/status")).json()
    assert status["status"] == "cancelled"


async def test_reads_through_another_replica_see_the_owners_live_state(api, sim, s3, stack):
    from common.channels import open_channel
    from wealthai.orchestrator.v1 import orchestrator_pb2 as pb
    from wealthai.orchestrator.v1 import orchestrator_pb2_grpc

    await sim.patch("/_sim/config", json={"latency_median_s": 3.0, "latency_sigma": 0.1})
    task_id = await submit(api, SEED)
    doc = json.loads(s3.get_object(Bucket=BUCKET, Key=f"tasks/{task_id}.json")["Body"].read())
    assert doc["status"] == "pending"  # what storage holds until a section finishes
    other = stack.ports.orchestrators[1 - (int(doc["owner"].split("-")[1]) - 1)]
    async with open_channel(
        f"127.0.0.1:{other}", stack.identity(Role.GATEWAY), Role.ORCHESTRATOR
    ) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)

        # At once, before any lease renewal lists the task, the other replica forwards the read
        # to the task's creator (its tag is in the task id), which answers from memory.
        reply = await stub.GetTaskStatus(
            pb.GetTaskRequest(task_id=task_id, caller=pb.Caller(principal_id="ops", admin=True))
        )
        assert reply.status != "pending", reply.status
    await wait_finished(api, [task_id])


async def test_the_dashboards_totals_are_every_replicas_whichever_one_answers(api, sim, stack):
    from common.channels import open_channel
    from wealthai.orchestrator.v1 import orchestrator_pb2 as pb
    from wealthai.orchestrator.v1 import orchestrator_pb2_grpc

    await sim.patch("/_sim/config", json={"latency_median_s": 4.0, "latency_sigma": 0.0})
    task_id = await submit(api, SEED)  # runs on one replica
    for port in stack.ports.orchestrators:
        async with open_channel(
            f"127.0.0.1:{port}", stack.identity(Role.GATEWAY), Role.ORCHESTRATOR
        ) as channel:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)

            async def totals(stub=stub):  # type: ignore[no-untyped-def]
                return await stub.GetStats(pb.GetStatsRequest(all_replicas=True))

            # The workers' figures are as of each worker's last load probe.
            await assert_eventually(
                totals,
                lambda s: (
                    s.replicas_counted == 2
                    and s.tasks_by_state["processing"] >= 1
                    and s.sections_in_flight >= 1
                ),
                timeout=10,
                what=f"replica on {port} summing both replicas' running task",
            )
    reply = await api.get("/admin/stats")
    assert reply.status_code == 200, reply.text
    assert reply.json()["replicas_counted"] == 2
    await wait_finished(api, [task_id])


# -- never paying twice for a prompt, mid-flight ---------------------------------------------


def _document(s3, task_id: str) -> dict:  # type: ignore[no-untyped-def]
    return dict(
        json.loads(s3.get_object(Bucket=BUCKET, Key=f"tasks/{task_id}.json")["Body"].read())
    )


def _prompts_per_input(stats: dict) -> list[int]:
    return sorted(stats["prompts_by_input"].values())


async def test_a_worker_killed_after_its_prompt_was_sent_costs_no_second_prompt(
    api, sim, s3, stack: Stack
):
    await sim.patch("/_sim/config", json={"latency_median_s": 3.0, "latency_sigma": 0.1})
    task_id = await submit(api, n=300)

    async def sent() -> list[dict]:
        return list(_document(s3, task_id)["result_data"].values())

    sections = await assert_eventually(
        sent, lambda ss: all(s["message_id"] for s in ss), timeout=20, what="the ids stored"
    )
    section = sections[0]
    port = int(section["worker"].rsplit(":", 1)[1])
    victim = f"worker-{stack.ports.workers.index(port) + 1}"
    stack.kill(victim, signal.SIGKILL)
    try:
        done = (await wait_finished(api, [task_id], within=60))[task_id]
    finally:
        stack.launch(victim)

    assert done["status"] == "completed", done
    result = (await api.get(f"/task/{task_id}/result")).json()
    assert section["message_id"] in result["message_id"]  # the very message, polled elsewhere
    assert _prompts_per_input(await _sim_stats(sim)) == [1, 1, 1]
    assert not [t for t in done["trace"] if t["step"] == "Prompt sent again"]


async def test_an_orchestrator_killed_once_its_prompts_are_sent_costs_no_second_prompt(
    api, sim, s3, stack: Stack
):
    await sim.patch("/_sim/config", json={"latency_median_s": 4.0, "latency_sigma": 0.1})
    task_id = await submit(api, n=301)

    async def prompts() -> int:
        return int((await _sim_stats(sim))["calls"]["prompt"])

    # Killed as soon as the platform has the three prompts: whether or not the owner had
    # stored their ids yet, the replica taking over must not send them again.
    await assert_eventually(prompts, lambda n: n == 3, timeout=20, interval=0.01, what="sent")
    owner = _document(s3, task_id)["owner"]
    victim = "-".join(owner.split("-")[:2])  # orchestrator-<n>-<hex>
    stack.kill(victim, signal.SIGKILL)
    try:
        done = (await wait_finished(api, [task_id], within=60))[task_id]
    finally:
        stack.launch(victim)

    assert done["status"] == "completed", done
    assert [t["step"] for t in done["trace"]].count("Takeover") == 1
    assert _prompts_per_input(await _sim_stats(sim)) == [1, 1, 1]
