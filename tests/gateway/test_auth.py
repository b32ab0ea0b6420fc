"""Authentication at the gateway, over a real gRPC channel to a stand-in orchestrator that
resolves keys from a script: who may call what, what the orchestrator is told about the caller,
the key cache's lifetimes (on a fake clock), the open compatibility mode, and keys never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from common import api_keys, errors
from common.grpc_server import ServiceHost
from common.settings import GrpcServerSettings
from common.tls import Role as TlsRole
from gateway.app import create_app
from gateway.settings import GatewaySettings
from wealthai.orchestrator.v1 import orchestrator_pb2 as pb
from wealthai.orchestrator.v1 import orchestrator_pb2_grpc

TASK = "task_20251230182721_01e09305"
ADMIN_KEY = "wak_admin_" + "A" * 43
ANN_ID, ANN = api_keys.new_key()
BOB_ID, BOB = api_keys.new_key()
BODY = {"username": "u@example.com", "password": "pw", "data": [{"top_movers_data": "x"}]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class KeyedOrchestrator(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    """Knows two client keys: ann of acme and bob of globex; records every caller it is told."""

    def __init__(self) -> None:
        self.valid = {ANN: ("acme/ann", "acme"), BOB: ("globex/bob", "globex")}
        self.resolved: list[str] = []
        self.callers: list[tuple[str, pb.Caller]] = []
        self.submitted: list[pb.SubmitTaskRequest] = []
        self.down = False
        self.hold_watches = False

    async def ResolveKey(self, request: Any, context: Any) -> pb.ResolvedKey:
        if self.down:
            raise errors.Unavailable("storage unavailable: S3 down")
        self.resolved.append(request.key)
        if request.key not in self.valid:
            raise errors.Unauthenticated("unknown or revoked API key")
        principal_id, tenant = self.valid[request.key]
        return pb.ResolvedKey(
            key_id=api_keys.key_id_of(request.key), principal_id=principal_id, tenant=tenant
        )

    async def SubmitTask(self, request: Any, context: Any) -> pb.SubmitTaskResponse:
        self.callers.append(("submit", request.caller))
        self.submitted.append(request)
        return pb.SubmitTaskResponse(task_id=TASK, status="pending", message="ok", created_at="t")

    async def GetTaskStatus(self, request: Any, context: Any) -> pb.TaskStatus:
        self.callers.append(("status", request.caller))
        return pb.TaskStatus(task_id=TASK, status="pending")

    async def GetTaskResult(self, request: Any, context: Any) -> pb.TaskResult:
        self.callers.append(("result", request.caller))
        return pb.TaskResult(task_id=TASK, status="pending")

    async def ListTasks(self, request: Any, context: Any) -> pb.ListTasksResponse:
        self.callers.append(("list", request.caller))
        return pb.ListTasksResponse()

    async def CancelTask(self, request: Any, context: Any) -> pb.TaskStatus:
        self.callers.append(("cancel", request.caller))
        return pb.TaskStatus(task_id=TASK, status="cancelled")

    async def RetryTask(self, request: Any, context: Any) -> pb.TaskStatus:
        self.callers.append(("retry", request.caller))
        return pb.TaskStatus(task_id=TASK, status="pending")

    async def WatchTask(self, request: Any, context: Any) -> Any:
        self.callers.append(("events", request.caller))
        if self.hold_watches:  # a task that keeps running: the stream stays open
            yield pb.TaskEvent(task_id=TASK, status="processing", progress=50)
            await asyncio.sleep(3600)
        yield pb.TaskEvent(task_id=TASK, status="completed", progress=100)

    async def GetStats(self, request: Any, context: Any) -> pb.Stats:
        return pb.Stats(workers_ready=1, storage_ok=True)

    async def CreateKey(self, request: Any, context: Any) -> pb.CreateKeyResponse:
        self.callers.append(("create_key", request.caller))
        key_id, key = api_keys.new_key()
        record = pb.ApiKey(
            key_id=key_id,
            name=request.name,
            tenant=request.tenant,
            role=request.role,
            principal_id=f"{request.tenant}/{request.name}",
            created_at="t",
        )
        return pb.CreateKeyResponse(api_key=record, key=key)

    async def ListKeys(self, request: Any, context: Any) -> pb.ListKeysResponse:
        self.callers.append(("list_keys", request.caller))
        return pb.ListKeysResponse(
            keys=[pb.ApiKey(key_id=ANN_ID, name="ann", tenant="acme", role="client")]
        )

    async def RevokeKey(self, request: Any, context: Any) -> pb.ApiKey:
        self.callers.append(("revoke_key", request.caller))
        if request.key_id == BOB_ID:
            self.valid.pop(BOB, None)
        elif request.key_id != ANN_ID:
            raise errors.NotFound(f"API key {request.key_id} not found")
        return pb.ApiKey(key_id=request.key_id, revoked_at="t2")


Env = tuple[httpx.AsyncClient, KeyedOrchestrator, FakeClock]
EnvFactory = Callable[..., Any]


@pytest.fixture
async def make_env() -> AsyncIterator[EnvFactory]:
    """Starts gateways (settings overridable) over one scripted orchestrator."""
    scripted = KeyedOrchestrator()
    host = ServiceHost(
        GrpcServerSettings(tls_mode="plaintext"), "fake-orchestrator", TlsRole.ORCHESTRATOR
    )
    host.add(orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server, scripted, "o")
    port = await host.start()
    clients: list[Any] = []

    async def make(**overrides: Any) -> Env:
        settings = GatewaySettings(
            **{
                "orchestrator_target": f"127.0.0.1:{port}",
                "admin_key": ADMIN_KEY,
                "tls_mode": "plaintext",
                "auth_cache_ttl_s": 10,
                "auth_refusal_ttl_s": 2,
                **overrides,
            }
        )
        clock = FakeClock()
        app = create_app(settings, clock=clock)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
        clients.append((client, lifespan))
        return client, scripted, clock

    yield make
    for client, lifespan in clients:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)
    await host.stop()


@pytest.fixture
async def env(make_env: EnvFactory) -> Env:
    env: Env = await make_env()
    return env


def assert_unauthenticated(reply: httpx.Response) -> None:
    assert reply.status_code == 401, reply.text
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert reply.json()["error"] == "unauthenticated"


ROUTES = [
    ("POST", "/task/submit"),
    ("GET", f"/task/{TASK}/status"),
    ("GET", f"/task/{TASK}/result"),
    ("POST", f"/task/{TASK}/cancel"),
    ("POST", f"/task/{TASK}/retry"),
    ("GET", f"/task/{TASK}/events"),
    ("GET", "/tasks"),
    ("POST", "/admin/keys"),
    ("GET", "/admin/keys"),
    ("DELETE", f"/admin/keys/{ANN_ID}"),
]


# Ids without the random key id, so that every test process collects the same tests.
@pytest.mark.parametrize(
    ("method", "path"), ROUTES, ids=[f"{m} {p.replace(ANN_ID, '{key_id}')}" for m, p in ROUTES]
)
async def test_every_route_refuses_a_call_without_a_key(env: Env, method: str, path: str) -> None:
    client, scripted, _ = env
    body = BODY if path == "/task/submit" else None
    assert_unauthenticated(await client.request(method, path, json=body))
    assert_unauthenticated(
        await client.request(method, path, json=body, headers={"Authorization": "Basic eDp5"})
    )
    assert scripted.callers == []


async def test_health_and_docs_need_no_key(env: Env) -> None:
    client, _, _ = env
    ping = await client.get("/ping")
    assert ping.status_code == 200
    assert ping.json()["auth"] == "keys"
    assert (await client.get("/docs")).status_code == 200
    spec = (await client.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for method in ("post", "get"):
        assert {"401", "403", "422"} <= set(spec["paths"]["/admin/keys"][method]["responses"])
    assert {"401", "403", "404", "422"} <= set(
        spec["paths"]["/admin/keys/{key_id}"]["delete"]["responses"]
    )
    assert "401" in spec["paths"]["/task/submit"]["post"]["responses"]


async def test_an_unknown_a_malformed_or_a_near_admin_key_is_refused(env: Env) -> None:
    client, scripted, _ = env
    _, unknown = api_keys.new_key()
    assert_unauthenticated(await client.get("/tasks", headers=bearer(unknown)))
    assert scripted.resolved == [unknown]
    for malformed in ("nonsense", ADMIN_KEY[:-1], ADMIN_KEY + "A", ANN + "x"):
        assert_unauthenticated(await client.get("/tasks", headers=bearer(malformed)))
    assert scripted.resolved == [unknown]  # malformed keys never reach the orchestrator
    assert scripted.callers == []


async def test_the_admin_key_is_the_admin_principal_without_a_lookup(env: Env) -> None:
    client, scripted, _ = env
    reply = await client.post("/task/submit", json=BODY, headers=bearer(ADMIN_KEY))
    assert reply.status_code == 202
    [(_, caller)] = scripted.callers
    assert (caller.principal_id, caller.tenant, caller.admin) == ("admin", "wealth", True)
    assert scripted.submitted[0].tenant == "wealth"
    other = await client.post(
        "/task/submit", json={**BODY, "tenant": "globex"}, headers=bearer(ADMIN_KEY)
    )
    assert other.status_code == 202  # an admin may submit for any tenant
    assert scripted.submitted[1].tenant == "globex"
    assert scripted.resolved == []


async def test_a_client_key_is_passed_to_the_orchestrator_on_every_call(env: Env) -> None:
    client, scripted, _ = env
    ann = bearer(ANN)
    assert (await client.post("/task/submit", json=BODY, headers=ann)).status_code == 202
    for method, path in ROUTES[1:7]:
        reply = await client.request(method, path, headers=ann)
        assert reply.status_code == 200, (path, reply.text)
    seen = {name: c for name, c in scripted.callers}
    assert set(seen) == {"submit", "status", "result", "cancel", "retry", "events", "list"}
    for caller in seen.values():
        assert (caller.principal_id, caller.tenant, caller.admin) == ("acme/ann", "acme", False)
    assert scripted.submitted[0].tenant == "acme"  # a client's tasks run in its tenant
    assert scripted.resolved == [ANN]  # once, then from the cache


async def test_a_client_may_not_name_another_tenant(env: Env) -> None:
    client, scripted, _ = env
    reply = await client.post(
        "/task/submit", json={**BODY, "tenant": "globex"}, headers=bearer(ANN)
    )
    assert reply.status_code == 422
    assert reply.json()["error"] == "invalid_input"
    assert [e["field"] for e in reply.json()["errors"]] == ["body.tenant"]
    assert scripted.submitted == []
    same = await client.post("/task/submit", json={**BODY, "tenant": "acme"}, headers=bearer(ANN))
    assert same.status_code == 202


async def test_a_client_may_not_manage_keys(env: Env) -> None:
    client, scripted, _ = env
    for method, path in ROUTES[7:]:
        body = {"name": "eve", "tenant": "acme", "role": "admin"} if method == "POST" else None
        reply = await client.request(method, path, json=body, headers=bearer(ANN))
        assert reply.status_code == 403, path
        assert reply.json()["error"] == "forbidden"
    assert scripted.callers == []


async def test_an_admin_creates_lists_and_revokes_keys(env: Env) -> None:
    client, scripted, _ = env
    admin = bearer(ADMIN_KEY)
    created = await client.post(
        "/admin/keys", json={"name": "carol", "tenant": "acme", "role": "client"}, headers=admin
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert api_keys.key_id_of(body["key"]) == body["key_id"]
    assert (body["principal_id"], body["revoked_at"]) == ("acme/carol", None)
    listed = (await client.get("/admin/keys", headers=admin)).json()
    assert listed["count"] == 1
    assert [k["key_id"] for k in listed["keys"]] == [ANN_ID]
    assert "key" not in listed["keys"][0] and "hash" not in listed["keys"][0]
    revoked = await client.delete(f"/admin/keys/{ANN_ID}", headers=admin)
    assert (revoked.status_code, revoked.json()["revoked_at"]) == (200, "t2")
    unknown = await client.delete("/admin/keys/0123456789ab", headers=admin)
    assert (unknown.status_code, unknown.json()["error"]) == (404, "not_found")
    assert (await client.delete("/admin/keys/NOT-AN-ID", headers=admin)).status_code == 422
    assert all(c.admin and c.principal_id == "admin" for _, c in scripted.callers)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "", "tenant": "acme", "role": "client"},
        {"name": "x" * 65, "tenant": "acme", "role": "client"},
        {"name": "ann", "tenant": "ac me", "role": "client"},
        {"name": "ann", "tenant": "acme", "role": "root"},
        {"name": "ann", "tenant": "acme", "role": "client", "extra": 1},
    ],
)
async def test_a_bad_key_request_is_422(env: Env, body: dict[str, Any]) -> None:
    client, scripted, _ = env
    reply = await client.post("/admin/keys", json=body, headers=bearer(ADMIN_KEY))
    assert reply.status_code == 422
    assert reply.json()["error"] == "invalid_input"
    assert scripted.callers == []


async def test_a_resolved_key_is_trusted_for_the_ttl_then_asked_again(env: Env) -> None:
    client, scripted, clock = env
    bob = bearer(BOB)
    assert (await client.get("/tasks", headers=bob)).status_code == 200
    scripted.valid.pop(BOB)  # revoked through another gateway replica
    clock.now += 9.9
    assert (await client.get("/tasks", headers=bob)).status_code == 200
    assert scripted.resolved == [BOB]
    clock.now += 0.2
    assert_unauthenticated(await client.get("/tasks", headers=bob))
    assert scripted.resolved == [BOB, BOB]


async def test_a_refusal_is_remembered_briefly(env: Env) -> None:
    client, scripted, clock = env
    _, unknown = api_keys.new_key()
    for _ in range(3):
        assert_unauthenticated(await client.get("/tasks", headers=bearer(unknown)))
    assert scripted.resolved == [unknown]
    clock.now += 2.1
    assert_unauthenticated(await client.get("/tasks", headers=bearer(unknown)))
    assert scripted.resolved == [unknown, unknown]


async def test_the_replica_that_revokes_a_key_forgets_it_at_once(env: Env) -> None:
    client, scripted, _ = env
    assert (await client.get("/tasks", headers=bearer(BOB))).status_code == 200
    assert (await client.delete(f"/admin/keys/{BOB_ID}", headers=bearer(ADMIN_KEY))).is_success
    assert_unauthenticated(await client.get("/tasks", headers=bearer(BOB)))
    assert scripted.resolved == [BOB, BOB]  # asked again at once, not after the TTL


async def test_an_unreachable_key_store_is_503_not_401(env: Env) -> None:
    client, scripted, _ = env
    scripted.down = True
    reply = await client.get("/tasks", headers=bearer(ANN))
    assert (reply.status_code, reply.json()["error"]) == (503, "unavailable")
    scripted.down = False
    assert (await client.get("/tasks", headers=bearer(ANN))).status_code == 200  # not cached


async def test_open_mode_maps_calls_without_a_key_to_anonymous_and_says_so(
    make_env: EnvFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.app"):
        client, scripted, _ = await make_env(auth="open")
    assert any("GATEWAY_AUTH=open" in r.getMessage() for r in caplog.records)
    assert (await client.get("/ping")).json()["auth"] == "open"
    assert (await client.post("/task/submit", json=BODY)).status_code == 202
    [(_, caller)] = scripted.callers
    assert (caller.principal_id, caller.tenant, caller.admin) == ("anonymous", "wealth", False)
    # A key, when sent, still counts: a bad one is refused, a good one is its principal.
    assert_unauthenticated(await client.get("/tasks", headers=bearer("nonsense")))
    assert (await client.get("/tasks", headers=bearer(ANN))).status_code == 200
    assert scripted.callers[-1][1].principal_id == "acme/ann"
    assert (await client.get("/admin/keys")).status_code == 403


async def test_keys_mode_logs_no_open_mode_warning(
    make_env: EnvFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.app"):
        await make_env()
    assert not any("GATEWAY_AUTH=open" in r.getMessage() for r in caplog.records)


async def test_no_key_ever_reaches_a_log_line(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    client, scripted, _ = env
    _, unknown = api_keys.new_key()
    with caplog.at_level(logging.DEBUG):
        await client.get("/tasks", headers=bearer(ANN))
        await client.get("/tasks", headers=bearer(unknown))
        await client.get("/tasks", headers=bearer(ADMIN_KEY))
        scripted.down = True
        await client.get("/tasks", headers=bearer(BOB))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert text  # refusals and failures are logged, by key id
    for key in (ANN, unknown, ADMIN_KEY, BOB):
        assert key not in text
        secret = key.removeprefix(api_keys.PREFIX).split("_", 1)[1]
        assert secret not in text
    assert api_keys.key_id_of(unknown) in text


def test_the_admin_key_setting_refuses_a_short_key() -> None:
    with pytest.raises(ValueError, match="admin_key"):
        GatewaySettings(admin_key="short")
    assert (
        json.dumps(GatewaySettings(admin_key=ADMIN_KEY).model_dump(mode="json")).count(ADMIN_KEY)
        == 0
    )


async def test_concurrent_calls_with_one_new_key_share_one_lookup(env: Env) -> None:
    client, scripted, _ = env
    replies = await asyncio.gather(*[client.get("/tasks", headers=bearer(ANN)) for _ in range(8)])
    assert [r.status_code for r in replies] == [200] * 8
    assert scripted.resolved == [ANN]


async def test_an_open_event_stream_ends_once_its_key_is_revoked(make_env: EnvFactory) -> None:
    client, scripted, clock = await make_env(auth_cache_ttl_s=0.2)
    scripted.hold_watches = True
    stream = asyncio.create_task(
        client.get(f"/task/{TASK}/events", headers=bearer(ANN), timeout=10)
    )
    await asyncio.sleep(0.5)  # it is open, and its key was checked again meanwhile
    assert not stream.done()

    del scripted.valid[ANN]  # revoked at the orchestrator
    clock.now += 1  # the gateway's cached answer is stale now
    reply = await asyncio.wait_for(stream, 5)

    assert reply.status_code == 200
    assert reply.text.count("data: ") == 1  # what it had before the key was revoked
