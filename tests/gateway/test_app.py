"""The gateway over a real gRPC channel to a stand-in orchestrator that answers from a script:
the REST contract, the error table, body limits and that the password is never echoed."""

import asyncio
import json
from collections.abc import Awaitable, Callable

import httpx
import pytest

from common import errors, file_ids
from common.grpc_server import ServiceHost
from common.settings import GrpcServerSettings
from common.tls import Role
from gateway.app import create_app
from gateway.settings import GatewaySettings
from orchestrator.admission import Throttled
from tests.helpers import assert_eventually
from wealthai.orchestrator.v1 import orchestrator_pb2 as pb
from wealthai.orchestrator.v1 import orchestrator_pb2_grpc

TASK = "task_20251230182721_01e09305"
REPORT_FILE = pb.ResultFile(
    file_id=file_ids.EXAMPLE,
    name="report.md",
    content_type="text/markdown",
    size=1234,
    sha256="ab" * 32,
)
ADMIN_KEY = "wak_admin_test-bootstrap-key-of-32-characters-or-more"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
# The gateway's own behaviour; tests/common/test_tls.py covers mutual TLS.
PLAINTEXT_SERVER = GrpcServerSettings(tls_mode="plaintext")
BODY = {
    "username": "user@example.com",
    "password": "hunter2-secret",
    "data": [{"top_movers_data": "AAPL +3.2%"}],
}


class ScriptedOrchestrator(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(self):
        self.fail_with = None
        self.submitted = []
        self.hold: asyncio.Event | None = None  # set: submissions wait for it
        self.waiting = 0

    async def SubmitTask(self, request, context):
        if self.fail_with:
            raise self.fail_with
        if self.hold is not None:
            self.waiting += 1
            await self.hold.wait()
        self.submitted.append(request)
        return pb.SubmitTaskResponse(
            task_id=TASK,
            status="pending",
            message="Task submitted successfully",
            created_at="2025-12-30T18:27:21.828027",
        )

    async def GetTaskStatus(self, request, context):
        if request.task_id != TASK:
            raise errors.NotFound(f"task {request.task_id} not found")
        return pb.TaskStatus(
            task_id=TASK,
            status="processing",
            progress=40,
            message="Processing",
            sections=[pb.SectionState(name="top_movers", status="running")],
            trace=[pb.TraceEntry(step="Submit", status="completed", at="x", duration_ms=3)],
            created_at="a",
            updated_at="b",
        )

    async def GetTaskResult(self, request, context):
        return pb.TaskResult(
            task_id=TASK,
            status="completed",
            section_detected="top_movers",
            conv_id="c1",
            message_id="m1",
            cost=0.24,
            elapsed_seconds=1.5,
            message="done",
            data={
                "top_movers": pb.SectionOutcome(status="completed", response="r", cost=0.24),
                "report": pb.SectionOutcome(status="completed", files=[REPORT_FILE]),
            },
        )

    async def ListTasks(self, request, context):
        if request.status == "bogus":
            raise errors.InvalidInput("status: must be one of pending, completed")
        return pb.ListTasksResponse(
            tasks=[pb.TaskSummary(task_id=TASK, status="completed")], next_page_token="tok"
        )

    async def CancelTask(self, request, context):
        raise errors.WrongState("task already finished as completed")

    async def GetStats(self, request, context):
        if self.fail_with:
            raise self.fail_with
        return pb.Stats(
            workers=2,
            workers_ready=2,
            worker_capacity=32,
            tasks_submitted=7,
            storage_ok=True,
            tasks_finished={"completed": 5},
            cache_size=3,
            storage_bucket="wealth-ai-tasks",
        )


@pytest.fixture
def body_limit():
    """The gateway's body limit in bytes; a test parametrizes it to send a larger body."""
    return 4096


@pytest.fixture
async def env(body_limit):
    scripted = ScriptedOrchestrator()
    host = ServiceHost(PLAINTEXT_SERVER, "fake-orchestrator", Role.ORCHESTRATOR)
    host.add(orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server, scripted, "o")
    port = await host.start()
    app = create_app(
        GatewaySettings(
            orchestrator_target=f"127.0.0.1:{port}",
            max_body_bytes=body_limit,
            admin_key=ADMIN_KEY,
            tls_mode="plaintext",
        )
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gw", headers=AS_ADMIN
        ) as client:
            yield client, scripted
    await host.stop()


async def test_submit_answers_202_with_the_seed_fields_and_passes_records_as_json(env):
    client, scripted = env
    reply = await client.post("/task/submit", json=BODY)
    assert reply.status_code == 202
    assert reply.json() == {
        "task_id": TASK,
        "status": "pending",
        "message": "Task submitted successfully",
        "created_at": "2025-12-30T18:27:21.828027",
    }
    sent = scripted.submitted[0]
    assert sent.password == "hunter2-secret"
    assert [json.loads(r) for r in sent.records_json] == BODY["data"]


async def test_past_the_submissions_in_flight_a_submit_is_429_at_once(env):
    client, scripted = env
    scripted.hold = asyncio.Event()
    taken = [asyncio.create_task(client.post("/task/submit", json=BODY)) for _ in range(8)]
    await assert_eventually(_waiting(scripted), lambda n: n == 8, what="8 submissions held")
    refused = await client.post("/task/submit", json=BODY)
    assert refused.status_code == 429, refused.text
    assert refused.headers["Retry-After"] == "1"
    assert refused.json()["error"] == "rate_limited"
    assert "8 submissions are being taken in" in refused.json()["detail"]
    scripted.hold.set()
    assert [r.status_code for r in await asyncio.gather(*taken)] == [202] * 8
    again = await client.post("/task/submit", json=BODY)  # the places are free again
    assert again.status_code == 202 and len(scripted.submitted) == 9


def _waiting(scripted: ScriptedOrchestrator) -> Callable[[], Awaitable[int]]:
    async def probe() -> int:
        return scripted.waiting

    return probe


async def test_submit_without_credentials_leaves_them_to_the_service_account(env):
    client, scripted = env
    reply = await client.post("/task/submit", json={"data": BODY["data"]})
    assert reply.status_code == 202, reply.text
    sent = scripted.submitted[0]
    assert (sent.username, sent.password) == ("", "")


@pytest.mark.parametrize("half", [{"username": "u@example.com"}, {"password": "hunter2-secret"}])
async def test_submit_with_half_the_credentials_is_422(env, half):
    client, scripted = env
    reply = await client.post("/task/submit", json={**half, "data": BODY["data"]})
    assert reply.status_code == 422
    assert "send both, or neither" in reply.json()["detail"]
    assert "hunter2-secret" not in reply.text
    assert scripted.submitted == []


async def test_validation_error_names_the_field_and_never_echoes_the_password(env):
    client, _ = env
    # An empty password is the orchestrator's to judge (a task may call no platform).
    reply = await client.post("/task/submit", json={**BODY, "password": "x" * 1025, "data": []})
    assert reply.status_code == 422
    fields = {e["field"] for e in reply.json()["errors"]}
    assert {"body.password", "body.data"} <= fields
    assert reply.json()["error"] == "invalid_input"
    wrong_type = await client.post("/task/submit", json={**BODY, "password": ["hunter2-secret"]})
    assert wrong_type.status_code == 422
    assert wrong_type.json()["error"] == "invalid_input"
    assert "hunter2-secret" not in wrong_type.text


def nested_body(depth):
    """A submission whose one record nests ``depth`` containers, written out as text: the json
    module cannot even serialize the deepest of them."""
    record = '{"a":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"
    head = json.dumps({k: v for k, v in BODY.items() if k != "data"})[:-1]
    return f'{head}, "data": [{{"top_movers_data": "x"}}, {record}]}}'


@pytest.mark.parametrize("body_limit", [64 * 1024])
@pytest.mark.parametrize("depth", [33, 220, 260, 5000])
async def test_a_record_nested_too_deep_is_422_and_never_reaches_the_orchestrator(env, depth):
    client, scripted = env
    reply = await client.post(
        "/task/submit", content=nested_body(depth), headers={"content-type": "application/json"}
    )
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"] == "invalid_input"
    assert reply.json()["detail"] in (
        "body.data: data[1]: nested deeper than 32 levels",  # parsed, then checked
        "body: nested deeper than 32 levels",  # too deep for the json module to parse
    )
    assert "hunter2-secret" not in reply.text
    assert scripted.submitted == []


async def test_a_record_nested_32_deep_is_accepted(env):
    client, scripted = env
    reply = await client.post(
        "/task/submit", content=nested_body(32), headers={"content-type": "application/json"}
    )
    assert reply.status_code == 202, reply.text
    assert len(scripted.submitted) == 1


@pytest.mark.parametrize("body_limit", [64 * 1024])
async def test_absurd_keys_and_value_counts_are_422(env):
    client, scripted = env
    long_key = await client.post("/task/submit", json={**BODY, "data": [{"k" * 257: 1}]})
    assert long_key.status_code == 422
    assert "data[0]: has a key longer than 256 characters" in long_key.json()["detail"]
    many = await client.post("/task/submit", json={**BODY, "data": [{"v": [0] * 20_000}]})
    assert many.status_code == 422
    assert "data[0]: holds more than 20000 values" in many.json()["detail"]
    assert scripted.submitted == []


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (errors.InvalidInput("data[1] matches no section"), 422, "invalid_input"),
        (errors.Unauthenticated("the platform refused the credentials"), 401, "unauthenticated"),
        (errors.Forbidden("only admins may do this"), 403, "forbidden"),
        (errors.NotFound("task task_1 not found"), 404, "not_found"),
        (errors.Conflict("changed by another writer"), 409, "conflict"),
        (errors.WrongState("task already finished as completed"), 409, "wrong_state"),
        (errors.TooLarge("data: at most 20 records"), 413, "too_large"),
        (errors.Overloaded("every worker is busy"), 429, "rate_limited"),
        (errors.UpstreamError("the platform answered 400"), 502, "upstream_error"),
        (errors.Unavailable("storage unavailable: S3 down"), 503, "unavailable"),
        (errors.Timeout("storage did not answer"), 504, "timeout"),
        (errors.Internal("internal error; see the service log"), 500, "internal"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, errors.AppError) else None,
)
async def test_orchestrator_errors_map_through_the_error_table(env, error, status, code):
    client, scripted = env
    scripted.fail_with = error
    reply = await client.post("/task/submit", json=BODY)
    assert reply.status_code == status
    assert reply.json()["error"] == code
    assert error.message in reply.json()["detail"]
    assert "hunter2-secret" not in reply.text


async def test_a_throttled_submission_says_when_to_retry(env):
    client, scripted = env
    scripted.fail_with = Throttled("more than 3 submissions a minute", retry_after_s=17)
    reply = await client.post("/task/submit", json=BODY)
    assert reply.status_code == 429
    assert reply.headers["Retry-After"] == "17"
    assert reply.json()["error"] == "rate_limited"
    scripted.fail_with = errors.Overloaded("every worker is busy")
    assert "Retry-After" not in (await client.post("/task/submit", json=BODY)).headers


async def test_status_result_list_cancel(env):
    client, _ = env
    status = await client.get(f"/task/{TASK}/status")
    assert status.status_code == 200
    assert status.json()["sections"] == [
        {"name": "top_movers", "status": "running", "cost": 0.0, "error": "", "progress": ""}
    ]
    assert status.json()["completed_at"] is None
    result = (await client.get(f"/task/{TASK}/result")).json()
    assert result["elapsed_seconds"] == 1.5
    assert result["data"]["top_movers"]["cost"] == 0.24
    assert result["data"]["top_movers"]["result"] is None
    assert result["data"]["top_movers"]["files"] == []
    assert result["data"]["report"]["files"] == [
        {
            "file_id": REPORT_FILE.file_id,
            "name": "report.md",
            "content_type": "text/markdown",
            "size": 1234,
            "sha256": "ab" * 32,
            "url": f"/files/{REPORT_FILE.file_id}",
        }
    ]
    listing = (await client.get("/tasks?limit=5&status=completed")).json()
    assert listing["count"] == 1 and listing["next_page_token"] == "tok"
    bad = await client.get("/tasks?status=bogus")
    assert bad.status_code == 422 and "status" in bad.json()["detail"]
    cancel = await client.post(f"/task/{TASK}/cancel")
    assert cancel.status_code == 409


async def test_unknown_and_malformed_task_ids(env):
    client, _ = env
    unknown = await client.get("/task/task_20250101000000_deadbeef/status")
    assert unknown.status_code == 404
    assert "not found" in unknown.json()["detail"]
    malformed = await client.get("/task/../etc/status")
    assert malformed.status_code in (404, 422)
    malformed = await client.get("/task/not-a-task/status")
    assert malformed.status_code == 422
    assert malformed.json()["error"] == "invalid_input"
    # Digits of another script match \d, never the id form.
    arabic_indic = "".join(chr(0x0660 + int(d)) for d in "20251230182721")
    malformed = await client.get(f"/task/task_{arabic_indic}_01e09305/status")
    assert malformed.status_code == 422


async def test_unknown_routes_and_methods_answer_in_rest_terms(env):
    client, _ = env
    missing = await client.get("/no/such/route")
    assert missing.status_code == 404
    assert missing.json() == {"error": "not_found", "detail": "Not Found"}
    wrong_method = await client.get("/task/submit")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"] == "method_not_allowed"


async def test_body_over_the_limit_is_413(env):
    client, _ = env
    big = {**BODY, "data": [{"top_movers_data": "x" * 5000}]}
    declared = await client.post("/task/submit", json=big)
    assert declared.status_code == 413
    assert declared.json() == {
        "error": "too_large",
        "detail": "request body larger than 4096 bytes",
    }

    async def chunks():
        yield json.dumps(big).encode()

    streamed = await client.post(
        "/task/submit", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413
    assert streamed.json()["error"] == "too_large"


async def test_ping_healthy_and_unhealthy(env):
    client, scripted = env
    ping = await client.get("/ping")
    assert ping.status_code == 200
    body = ping.json()
    assert body["status"] == "healthy" and body["workers"] == 2 and body["total_tasks"] == 7
    # The seed's monitoring reads the bucket and the cache size under "storage".
    assert body["storage"] == {"status": "healthy", "bucket": "wealth-ai-tasks", "cache_size": 3}
    scripted.fail_with = errors.Unavailable("down")
    down = await client.get("/ping")
    assert down.status_code == 503 and down.json()["status"] == "unhealthy"


async def test_openapi_has_the_contract_and_examples(env):
    client, _ = env
    spec = (await client.get("/openapi.json")).json()
    assert {
        "/task/submit",
        "/task/{task_id}/status",
        "/task/{task_id}/result",
        "/tasks",
        "/ping",
    } <= set(spec["paths"])
    submit = spec["components"]["schemas"]["SubmitRequest"]
    assert submit["examples"][0]["data"][1] == {
        "top_movers_data": "AAPL +3.2%, MSFT -1.1%, NVDA +5.4%"
    }
    assert (await client.get("/docs")).status_code == 200
    cancel = spec["paths"]["/task/{task_id}/cancel"]["post"]["responses"]
    assert {"404", "409", "422", "500", "503", "504"} <= set(cancel)
    codes = spec["components"]["schemas"]["ErrorResponse"]["properties"]["error"]["description"]
    for row in errors.ROWS:
        assert f"`{row.code}`" in codes


async def test_orchestrator_down_is_503():
    app = create_app(
        GatewaySettings(
            orchestrator_target="127.0.0.1:1",
            call_timeout_s=2,
            admin_key=ADMIN_KEY,
            tls_mode="plaintext",
        )
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gw", headers=AS_ADMIN
        ) as other:
            reply = await other.get(f"/task/{TASK}/status")
    assert reply.status_code == 503
    assert reply.json()["error"] == "unavailable"
    assert "unavailable" in reply.json()["detail"]
