"""AI-Prism's routes over a real gRPC channel to a stand-in orchestrator that answers from a
script, and the plain functions that decide: status names, feedback parsing, the chat's
record."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from common import errors, file_ids
from common.errors import InvalidInput, WrongState
from common.feedback import NotFeedback, parse_feedback
from common.grpc_server import ServiceHost
from common.settings import GrpcServerSettings
from common.tls import Role
from gateway.app import create_app
from gateway.prism import (
    analysed_feedback,
    chat_record,
    check_document_name,
    document_record,
    feedback_summary,
    prism_status,
    task_status,
)
from gateway.settings import GatewaySettings
from wealthai.orchestrator.v1 import orchestrator_pb2 as pb
from wealthai.orchestrator.v1 import orchestrator_pb2_grpc

ADMIN_KEY = "wak_admin_test-bootstrap-key-of-32-characters-or-more"
ANALYSIS = "task_20261202010000_01aaaaaa"
CHAT = "task_20261202010001_01bbbbbb"
RUNNING = "task_20261202010002_01cccccc"
WEALTH = "task_20261202010003_01dddddd"
NEW = "task_20261202010004_01eeeeee"
ITEM = {
    "id": "fb-0123456789ab",
    "type": "important",
    "category": "risk",
    "description": 'Paragraph 1 of "Risks" (2 words) begins: Equities fall.',
    "suggestion": "Review paragraph 1 for risk.",
    "confidence": 0.87,
}
ATTEMPTS = [
    pb.SectionAttempt(asset_id="a1", outcome="throttled", reason="429", duration_s=0.1),
    pb.SectionAttempt(asset_id="a2", outcome="answered", cost=0.05, duration_s=1.0),
]


def outcome(status: str = "completed", response: str = "", **extra: Any) -> pb.SectionOutcome:
    answered = {"model_used": "a2", "cost": 0.05} if status == "completed" else {}
    return pb.SectionOutcome(
        status=status, response=response, attempts=ATTEMPTS, **{**answered, **extra}
    )


RESULTS = {
    ANALYSIS: pb.TaskResult(
        task_id=ANALYSIS,
        status="completed",
        data={"document_section": outcome(response=json.dumps({"feedback": [ITEM]}))},
    ),
    CHAT: pb.TaskResult(
        task_id=CHAT, status="completed", data={"document_chat": outcome(response="Hello.")}
    ),
    RUNNING: pb.TaskResult(
        task_id=RUNNING, status="processing", data={"document_section": outcome("running")}
    ),
    WEALTH: pb.TaskResult(
        task_id=WEALTH,
        status="completed",
        data={"top_movers": outcome(), "portfolio_snapshot": outcome()},
    ),
}


class ScriptedOrchestrator(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(self) -> None:
        self.submitted: list[pb.SubmitTaskRequest] = []
        self.asked: list[pb.GetTaskRequest] = []

    async def SubmitTask(self, request, context):
        self.submitted.append(request)
        return pb.SubmitTaskResponse(task_id=NEW, status="pending")

    async def GetTaskResult(self, request, context):
        self.asked.append(request)
        if request.task_id not in RESULTS:
            raise errors.NotFound(f"task {request.task_id} not found")
        return RESULTS[request.task_id]


@pytest.fixture
async def env():
    scripted = ScriptedOrchestrator()
    host = ServiceHost(GrpcServerSettings(tls_mode="plaintext"), "orch", Role.ORCHESTRATOR)
    host.add(orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server, scripted, "o")
    port = await host.start()
    app = create_app(
        GatewaySettings(
            orchestrator_target=f"127.0.0.1:{port}", admin_key=ADMIN_KEY, tls_mode="plaintext"
        )
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gw",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as client,
    ):
        yield client, scripted
    await host.stop()


# -- routes ---------------------------------------------------------------------------------


async def test_analyze_section_queues_one_record_without_credentials(env) -> None:
    client, scripted = env
    body = {"section_name": "Risks", "content": "Equities fall.\n\nBonds too."}
    reply = await client.post("/analyze_section", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"success": True, "task_id": NEW, "status": "queued"}
    (sent,) = scripted.submitted
    assert [json.loads(r) for r in sent.records_json] == [{"kind": "analyze_section", **body}]
    assert (sent.username, sent.password, sent.tenant) == ("", "", "")
    assert sent.caller.admin


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"section_name": "x" * 201, "content": "c"}, "section_name"),
        ({"section_name": " ", "content": "c"}, "section_name"),
        ({"section_name": "s", "content": "c" * (200 * 1024 + 1)}, "content"),
        ({"section_name": "s", "content": "é" * (100 * 1024 + 1)}, "content"),  # bytes count
        ({"section_name": "s"}, "content"),
        ({"section_name": "s", "content": "c", "extra": 1}, "extra"),
    ],
)
async def test_analyze_section_refuses_bad_input_with_422(env, body, field) -> None:
    client, scripted = env
    reply = await client.post("/analyze_section", json=body)
    assert reply.status_code == 422, reply.text
    assert field in reply.json()["detail"]
    assert scripted.submitted == []


async def test_analyze_section_can_name_a_section_of_an_uploaded_document(env) -> None:
    client, scripted = env
    body = {"section_name": "Risks", "document_id": file_ids.EXAMPLE}
    reply = await client.post("/analyze_section", json=body)
    assert reply.status_code == 200, reply.text
    (sent,) = scripted.submitted
    assert [json.loads(r) for r in sent.records_json] == [
        {"analyze_document": {"file_id": file_ids.EXAMPLE}, "sections": ["Risks"]}
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"section_name": "s", "content": "c", "document_id": file_ids.EXAMPLE}, "document_id"),
        ({"section_name": "s", "document_id": "../etc/passwd"}, "document_id"),
    ],
)
async def test_analyze_section_takes_content_or_a_document_not_both(env, body, field) -> None:
    client, scripted = env
    reply = await client.post("/analyze_section", json=body)
    assert reply.status_code == 422, reply.text
    assert field in reply.json()["detail"]
    assert scripted.submitted == []


async def test_analyze_document_queues_every_section_or_the_named_ones(env) -> None:
    client, scripted = env
    for body in (
        {"document_id": file_ids.EXAMPLE},
        {"document_id": file_ids.EXAMPLE, "sections": ["Fees", "Risks"]},
    ):
        reply = await client.post("/analyze_document", json=body)
        assert reply.status_code == 200, reply.text
        assert reply.json() == {"success": True, "task_id": NEW, "status": "queued"}
    whole, named = ([json.loads(r) for r in sent.records_json] for sent in scripted.submitted)
    assert whole == [{"analyze_document": {"file_id": file_ids.EXAMPLE}}]
    assert named == [
        {"analyze_document": {"file_id": file_ids.EXAMPLE}, "sections": ["Fees", "Risks"]}
    ]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "document_id"),
        ({"document_id": "f_1"}, "document_id"),
        ({"document_id": file_ids.EXAMPLE, "sections": []}, "sections"),
        ({"document_id": file_ids.EXAMPLE, "sections": ["A", "A"]}, "sections"),
        ({"document_id": file_ids.EXAMPLE, "sections": ["x" * 201]}, "sections"),
        ({"document_id": file_ids.EXAMPLE, "sections": ["s"] * 201}, "sections"),
    ],
)
async def test_analyze_document_refuses_bad_input_with_422(env, body, field) -> None:
    client, scripted = env
    reply = await client.post("/analyze_document", json=body)
    assert reply.status_code == 422, reply.text
    assert field in reply.json()["detail"]
    assert scripted.submitted == []


async def test_upload_refuses_what_is_not_a_document_form(env) -> None:
    client, scripted = env
    raw = await client.post(
        "/upload", content=b"%PDF-1.4", headers={"Content-Type": "application/pdf"}
    )
    assert raw.status_code == 422 and "multipart/form-data" in raw.json()["detail"]
    sheet = await client.post("/upload", files={"file": ("book.xlsx", b"PK", "application/zip")})
    assert sheet.status_code == 422 and "book.xlsx" in sheet.json()["detail"]
    big = await client.post(
        "/upload",
        files={"file": ("big.pdf", b"x", "application/pdf")},
        headers={"Content-Length": str(50 * 1024 * 1024 + 1)},
    )
    assert big.status_code == 413
    assert scripted.submitted == []


async def test_task_status_of_an_analysis_gives_its_feedback(env) -> None:
    client, _ = env
    reply = await client.get(f"/task_status/{ANALYSIS}")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["success"] and body["status"] == "completed" and body["error"] is None
    assert body["result"]["feedback"] == [ITEM]
    assert body["result"]["response"] is None
    assert body["result"]["model_used"] == "a2"
    assert [a["outcome"] for a in body["result"]["attempts"]] == ["throttled", "answered"]
    assert body["result"]["cost"] == 0.05


async def test_task_status_of_a_chat_gives_its_reply(env) -> None:
    client, _ = env
    body = (await client.get(f"/task_status/{CHAT}")).json()
    assert body["result"]["response"] == "Hello." and body["result"]["feedback"] is None


async def test_task_status_is_404_for_an_unknown_task_and_409_for_many_sections(env) -> None:
    client, _ = env
    missing = await client.get("/task_status/task_20261202010009_01ffffff")
    assert missing.status_code == 404
    many = await client.get(f"/task_status/{WEALTH}")
    assert many.status_code == 409
    assert f"/task/{WEALTH}/result" in many.json()["detail"]
    assert (await client.get("/task_status/not-a-task")).status_code == 422


async def test_chat_continues_a_completed_analysis(env) -> None:
    client, scripted = env
    reply = await client.post("/chat", json={"task_id": ANALYSIS, "message": "Why?"})
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"success": True, "task_id": NEW, "status": "queued"}
    (sent,) = scripted.submitted
    assert [json.loads(r) for r in sent.records_json] == [chat_record(ANALYSIS, "Why?", [ITEM])]
    assert scripted.asked[0].task_id == ANALYSIS


@pytest.mark.parametrize(
    ("task_id", "status", "words"),
    [
        ("task_20261202010009_01ffffff", 404, "not found"),
        (RUNNING, 409, "is processing; chat about it once its analysis completed"),
        (CHAT, 409, "is not a section analysis"),
    ],
)
async def test_chat_about_what_cannot_be_continued_is_refused(env, task_id, status, words) -> None:
    client, scripted = env
    reply = await client.post("/chat", json={"task_id": task_id, "message": "Why?"})
    assert reply.status_code == status
    assert words in reply.json()["detail"]
    assert scripted.submitted == []


async def test_chat_message_is_limited(env) -> None:
    client, _ = env
    too_long = {"task_id": ANALYSIS, "message": "m" * (20 * 1024 + 1)}
    assert (await client.post("/chat", json=too_long)).status_code == 422
    bad_id = {"task_id": "nope", "message": "m"}
    assert (await client.post("/chat", json=bad_id)).status_code == 422


async def test_every_route_needs_a_key(env) -> None:
    client, scripted = env
    bare = {"Authorization": ""}
    assert (await client.get(f"/task_status/{ANALYSIS}", headers=bare)).status_code == 401
    body = {"task_id": ANALYSIS, "message": "m"}
    assert (await client.post("/chat", json=body, headers=bare)).status_code == 401
    sec = {"section_name": "s", "content": "c"}
    assert (await client.post("/analyze_section", json=sec, headers=bare)).status_code == 401
    assert scripted.submitted == [] and scripted.asked == []


# -- what decides ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "prism"),
    [
        ("pending", "queued"),
        ("authenticating", "processing"),
        ("authenticated", "processing"),
        ("detecting_section", "processing"),
        ("processing", "processing"),
        ("completed", "completed"),
        ("error", "failed"),
        ("cancelled", "failed"),
    ],
)
def test_status_names(status: str, prism: str) -> None:
    assert prism_status(status) == prism


@pytest.mark.parametrize(
    ("response", "why"),
    [
        ("not json", "is not JSON"),
        ("[1]", "has no `feedback` list"),
        ('{"feedback": "x"}', "has no `feedback` list"),
        ('{"feedback": [{}, 3]}', r"feedback\[1\] of the platform's answer is not an object"),
    ],
)
def test_an_answer_that_is_not_feedback_says_why(response: str, why: str) -> None:
    with pytest.raises(NotFeedback, match=why):
        parse_feedback(response)


def test_feedback_parses_and_an_empty_list_is_feedback() -> None:
    assert parse_feedback(json.dumps({"feedback": [ITEM], "model": "a"})) == [ITEM]
    assert parse_feedback('{"feedback": []}') == []


def _result(task: str, section: str, **fields: Any) -> dict[str, Any]:
    values = {
        "status": "completed",
        "response": "",
        "error": "",
        "cost": 0.1,
        "model_used": "a",
        "attempts": [],
    }
    return {
        "task_id": ANALYSIS,
        "status": task,
        "message": "Task failed: boom",
        "data": {section: {**values, **fields}},
    }


def test_a_running_task_has_no_result_yet() -> None:
    status = task_status(_result("processing", "document_section", status="running"))
    assert (status.success, status.status, status.result, status.error) == (
        True,
        "processing",
        None,
        None,
    )
    assert task_status(_result("pending", "document_section")).status == "queued"


def test_a_failed_task_gives_the_sections_error_else_the_tasks_message() -> None:
    failed = task_status(_result("error", "document_section", status="error", error="chain"))
    assert (failed.success, failed.status, failed.error) == (False, "failed", "chain")
    assert failed.result is not None and failed.result.feedback is None
    other = task_status(_result("cancelled", "document_section", status="cancelled"))
    assert other.error == "Task failed: boom"


def test_a_completed_analysis_whose_answer_is_not_feedback_fails_clearly() -> None:
    status = task_status(_result("completed", "document_section", response="plain text"))
    assert (status.success, status.status) == (False, "failed")
    assert status.error == "the platform's answer is not JSON"
    assert status.result is not None and status.result.model_used == "a"


def test_the_chat_record_summarises_the_feedback() -> None:
    long = {**ITEM, "description": "d" * 400}
    items = [ITEM] + [long] * 60
    summary = feedback_summary(items)
    assert len(summary) == 50
    assert summary[0] == f"important (risk): {ITEM['description']}"
    assert summary[1] == "important (risk): " + "d" * 300
    assert chat_record(ANALYSIS, "Why?", [ITEM]) == {
        "kind": "chat",
        "message": "Why?",
        "context": {"feedback": [summary[0]]},
        "continue_task_id": ANALYSIS,
    }


def test_only_a_completed_analysis_with_feedback_can_be_chatted_about() -> None:
    good = _result("completed", "document_section", response='{"feedback": []}')
    assert analysed_feedback(good) == []
    with pytest.raises(WrongState, match="has no feedback to chat about"):
        analysed_feedback(_result("completed", "document_section", response="x"))
    with pytest.raises(WrongState, match="is failed; chat about it once"):
        analysed_feedback(_result("error", "document_section", status="error"))
    with pytest.raises(WrongState, match="is not a section analysis"):
        analysed_feedback(_result("completed", "document_chat"))


def test_document_names_by_extension() -> None:
    for name in ("a.pdf", "A.DOCX", "notes.md", "n.markdown", "t.txt", "t.text"):
        assert check_document_name(name) == name
    for name in ("book.xlsx", "a.doc", "noext", "a.pdf.exe"):
        with pytest.raises(InvalidInput, match="only PDF, DOCX, Markdown or text"):
            check_document_name(name)


def test_a_document_record_names_the_sections_only_when_asked() -> None:
    assert document_record("f", None) == {"analyze_document": {"file_id": "f"}}
    assert document_record("f", ["A"]) == {"analyze_document": {"file_id": "f"}, "sections": ["A"]}


DOCUMENT = {
    "file_id": file_ids.EXAMPLE,
    "name": "review.docx",
    "format": "docx",
    "heading_source": "styles",
    "pages": None,
    "sections": 3,
}


def analysed(name: str, order: int, failed: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "level": 1,
        "order": order,
        "status": "failed" if failed else "completed",
        "feedback": None if failed else [ITEM],
        "error": "every asset of the chain failed" if failed else "",
        "model_used": "" if failed else "a2",
        "cost": 0.0 if failed else 0.05,
    }


def document_analysis(*sections: dict[str, Any]) -> dict[str, Any]:
    analysis = {"document": DOCUMENT, "sections": list(sections)}
    return _result("completed", "document_analysis", result_json=json.dumps(analysis))


def test_an_outline_task_gives_the_documents_sections() -> None:
    outline = {
        "document": DOCUMENT,
        "sections": [{"name": "Risks", "level": 1, "order": 0, "chars": 120}],
    }
    status = task_status(_result("completed", "document_outline", result_json=json.dumps(outline)))
    assert status.success and status.status == "completed" and status.result is not None
    assert status.result.document is not None and status.result.document.format == "docx"
    assert [s.name for s in status.result.outline or []] == ["Risks"]


def test_a_documents_analysis_gives_every_sections_feedback() -> None:
    status = task_status(document_analysis(analysed("A", 0), analysed("B", 1)))
    assert (status.success, status.status, status.error) == (True, "completed", None)
    assert status.result is not None and status.result.feedback is None  # many sections
    assert [s.feedback for s in status.result.sections or []] == [[ITEM], [ITEM]]


def test_one_named_sections_analysis_gives_its_feedback_as_the_results() -> None:
    status = task_status(document_analysis(analysed("A", 0)))
    assert status.success and status.result is not None and status.result.feedback == [ITEM]
    failed = task_status(document_analysis(analysed("A", 0, failed=True)))
    assert (failed.success, failed.status) == (False, "failed")
    assert failed.error == "every asset of the chain failed"


def test_a_documents_analysis_with_some_sections_failed_keeps_the_rest() -> None:
    status = task_status(document_analysis(analysed("A", 0), analysed("B", 1, failed=True)))
    assert (status.success, status.status, status.error) == (
        True,
        "completed",
        "1 of 2 sections failed",
    )
    every = task_status(
        document_analysis(analysed("A", 0, failed=True), analysed("B", 1, failed=True))
    )
    assert (every.success, every.status) == (False, "failed")
    assert every.error == "every section failed: every asset of the chain failed"
