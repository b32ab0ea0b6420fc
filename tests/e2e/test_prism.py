"""AI-Prism document analysis end to end, every process real (as ``make run`` starts them),
the platform account the stack writes doing the logging in:

- a section of three paragraphs gets three feedback items, exactly as the simulator's rule
  writes them, from the chain's first asset;
- with that asset throttled 100 %, the second one answers and the attempts show the path;
- a chat about the analysis is sent into the analysis' own conversation (no new one, the same
  asset) and the reply follows the simulator's rule for the context it got;
- another tenant's key gets 404 for the task's status and for a chat about it;
- a DOCX and a PDF of three headed sections, uploaded, are cut into those three sections, and
  analysing the document gives three analyses whose feedback follows the simulator's rule for
  each section's paragraphs; a section named by an uploaded document's id gets its own;
- a file that is no document is 422 at upload (and not kept); another tenant cannot name the
  document.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from common.platform_config import load_config
from scripts.devstack import ROOT, Stack
from tests.document_files import DOCX_TYPE, PDF_TYPE, SECTIONS, docx_bytes, pdf_bytes

pytestmark = pytest.mark.e2e

CHAIN = load_config(ROOT / "config.json").sections["document_section"].chain
FIRST, SECOND = CHAIN[0], CHAIN[1]
TYPES = ("critical", "important", "suggestion", "positive")
CATEGORIES = ("clarity", "completeness", "accuracy", "structure", "compliance", "risk")
CONTENT = (
    "Equities may fall sharply in a recession and recover slowly.\n\n"
    "  Bonds carry interest rate risk: prices fall when rates rise.  \n"
    "\n\n"
    "Cash keeps its nominal value but loses to inflation over time."
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def expected_feedback(section_name: str, content: str) -> list[dict[str, Any]]:
    """The simulator's rule for an analyze_section prompt (simulator/answers.py)."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", content) if p.strip()]
    items = []
    for i, p in enumerate(paragraphs):
        d = sha(f"{section_name}\n{i}\n{p}")
        category = CATEGORIES[int(d[14:16], 16) % 6]
        words = p.split()
        items.append(
            {
                "id": f"fb-{d[:12]}",
                "type": TYPES[int(d[12:14], 16) % 4],
                "category": category,
                "description": f'Paragraph {i + 1} of "{section_name}" ({len(words)} words) '
                f"begins: {' '.join(words[:8])}",
                "suggestion": f"Review paragraph {i + 1} for {category}.",
                "confidence": (50 + int(d[16:18], 16) % 50) / 100,
            }
        )
    return items


def expected_reply(asset: str, message: str, context: dict[str, Any]) -> str:
    """The simulator's rule for a chat prompt."""
    text = json.dumps(context, sort_keys=True)
    d = sha(f"{message}\n{text}")
    return f'[{asset}] Reply {d[:8]} to "{message}" with {len(text)} characters of context.'


@pytest.fixture
async def tenants(
    api: httpx.AsyncClient, stack: Stack
) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """A client of tenant acme and one of tenant globex, each with its own key."""
    clients = {}
    for tenant in ("acme", "globex"):
        reply = await api.post(
            "/admin/keys", json={"name": f"prism-{tenant}", "tenant": tenant, "role": "client"}
        )
        assert reply.status_code == 201, reply.text
        clients[tenant] = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{stack.ports.gateway}",
            timeout=20,
            headers={"Authorization": f"Bearer {reply.json()['key']}"},
        )
    yield clients
    for client in clients.values():
        await client.aclose()


async def finished(client: httpx.AsyncClient, task_id: str, within: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        reply = await client.get(f"/task_status/{task_id}")
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        if body["status"] in ("completed", "failed"):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.1)


async def queued(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> str:
    reply = await client.post(path, json=body)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert answer["success"] is True and answer["status"] == "queued", answer
    return str(answer["task_id"])


async def conversation_of(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    result = (await client.get(f"/task/{task_id}/result")).json()
    (section,) = result["data"].values()
    return dict(section)


async def analyse_and_chat(
    acme: httpx.AsyncClient, sim: httpx.AsyncClient, name: str, answering: str
) -> tuple[str, dict[str, Any]]:
    """Analyses CONTENT as section ``name``, checks the feedback and that ``answering`` wrote
    it, then chats about it and checks the chat went into the same conversation."""
    analysis_id = await queued(acme, "/analyze_section", {"section_name": name, "content": CONTENT})
    analysis = await finished(acme, analysis_id)
    assert analysis["status"] == "completed" and analysis["success"], analysis
    expected = expected_feedback(name, CONTENT)
    assert len(expected) == 3
    assert analysis["result"]["feedback"] == expected
    assert analysis["result"]["model_used"] == answering
    assert analysis["error"] is None
    analysed = await conversation_of(acme, analysis_id)
    creates_before = (await sim.get("/_sim/stats")).json()["by_asset"][answering]["create"]

    message = f"Which paragraph of {name} matters most?"
    chat_id = await queued(acme, "/chat", {"task_id": analysis_id, "message": message})
    chat = await finished(acme, chat_id)
    assert chat["status"] == "completed", chat
    context = {
        "feedback": [f"{i['type']} ({i['category']}): {i['description']}" for i in expected],
        "section_name": name,
    }
    assert chat["result"]["response"] == expected_reply(answering, message, context)
    assert chat["result"]["feedback"] is None
    assert chat["result"]["model_used"] == answering
    assert [(a["asset_id"], a["outcome"]) for a in chat["result"]["attempts"]] == [
        (answering, "answered")
    ]

    # The same conversation: the chat's prompt went into the analysis' conversation, which the
    # platform created once, and no conversation was created for the chat.
    chatted = await conversation_of(acme, chat_id)
    assert chatted["conv_id"] == analysed["conv_id"]
    assert chatted["message_id"] not in ("", analysed["message_id"])
    stats = (await sim.get("/_sim/stats")).json()["by_asset"][answering]
    assert stats["create"] == creates_before
    timeline = (await sim.get("/_sim/timeline")).json()
    first, second = timeline[analysed["message_id"]], timeline[chatted["message_id"]]
    assert second["created_at"] == first["created_at"]  # the conversation's creation
    prompt = json.dumps({"kind": "chat", "message": message, "context": context})
    assert second["input"] == sha(answering + prompt)
    return analysis_id, analysis


async def test_a_section_is_analysed_by_the_first_asset_and_chatted_about(
    tenants: dict[str, httpx.AsyncClient], sim: httpx.AsyncClient
) -> None:
    acme, globex = tenants["acme"], tenants["globex"]
    analysis_id, analysis = await analyse_and_chat(acme, sim, "Investment risks", FIRST)
    assert [(a["asset_id"], a["outcome"]) for a in analysis["result"]["attempts"]] == [
        (FIRST, "answered")
    ]
    assert analysis["result"]["cost"] == analysis["result"]["attempts"][0]["cost"] > 0

    # Another tenant sees neither the task nor its conversation.
    assert (await globex.get(f"/task_status/{analysis_id}")).status_code == 404
    reply = await globex.post("/chat", json={"task_id": analysis_id, "message": "Hi"})
    assert reply.status_code == 404, reply.text
    assert reply.json()["detail"] == f"task {analysis_id} not found"


async def test_with_the_first_asset_throttled_the_second_answers_and_the_chat_follows_it(
    tenants: dict[str, httpx.AsyncClient], sim: httpx.AsyncClient
) -> None:
    throttle = {"assets": {FIRST: {"throttle_rate": 1.0, "retry_after_s": 0.2}}}
    (await sim.patch("/_sim/config", json=throttle)).raise_for_status()
    _, analysis = await analyse_and_chat(tenants["acme"], sim, "Liquidity", SECOND)
    path = [(a["asset_id"], a["outcome"]) for a in analysis["result"]["attempts"]]
    assert path[-1] == (SECOND, "answered")
    assert path[:-1] and {step for step in path[:-1]} <= {
        (FIRST, "throttled"),
        (FIRST, "cooling_down"),
    }, path


def check_feedback(name: str, paragraphs: list[str], feedback: list[dict[str, Any]]) -> None:
    """One item per paragraph, describing that paragraph (its word count, its first words)."""
    assert len(feedback) == len(paragraphs), feedback
    for i, (paragraph, item) in enumerate(zip(paragraphs, feedback, strict=True)):
        words = paragraph.split()
        assert item["description"] == (
            f'Paragraph {i + 1} of "{name}" ({len(words)} words) begins: {" ".join(words[:8])}'
        )
        assert item["type"] in TYPES and item["category"] in CATEGORIES


async def upload(client: httpx.AsyncClient, name: str, data: bytes, kind: str) -> dict[str, Any]:
    reply = await client.post("/upload", files={"file": (name, data, kind)})
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


@pytest.mark.parametrize(
    ("name", "data", "content_type"),
    [("review.docx", docx_bytes(), DOCX_TYPE), ("review.pdf", pdf_bytes(), PDF_TYPE)],
)
async def test_an_uploaded_document_gets_one_analysis_per_section(
    tenants: dict[str, httpx.AsyncClient], name: str, data: bytes, content_type: str
) -> None:
    acme, globex = tenants["acme"], tenants["globex"]
    uploaded = await upload(acme, name, data, content_type)
    assert (uploaded["success"], uploaded["status"]) == (True, "completed"), uploaded
    assert [(s["name"], s["level"]) for s in uploaded["sections"]] == [
        (heading, 1) for heading, _ in SECTIONS
    ]
    assert uploaded["document"]["name"] == name and uploaded["document"]["sections"] == 3
    document_id = uploaded["document_id"]

    task_id = await queued(acme, "/analyze_document", {"document_id": document_id})
    analysis = await finished(acme, task_id)
    assert (analysis["success"], analysis["status"], analysis["error"]) == (
        True,
        "completed",
        None,
    ), analysis
    sections = analysis["result"]["sections"]
    assert [s["name"] for s in sections] == [heading for heading, _ in SECTIONS]
    for (heading, paragraphs), section in zip(SECTIONS, sections, strict=True):
        assert section["status"] == "completed" and section["model_used"] == FIRST
        check_feedback(heading, paragraphs, section["feedback"])
        if content_type == DOCX_TYPE:  # the parsed text is the written text, byte for byte
            content = "\n\n".join(p.strip() for p in paragraphs)
            assert section["feedback"] == expected_feedback(heading, content)
    assert analysis["result"]["cost"] == pytest.approx(sum(s["cost"] for s in sections))
    assert analysis["result"]["cost"] > 0

    heading, paragraphs = SECTIONS[1]
    body = {"section_name": heading, "document_id": document_id}
    one = await finished(acme, await queued(acme, "/analyze_section", body))
    assert one["success"] and [s["name"] for s in one["result"]["sections"]] == [heading]
    check_feedback(heading, paragraphs, one["result"]["feedback"])

    missing = await finished(
        acme, await queued(acme, "/analyze_section", {**body, "section_name": "Fees"})
    )
    assert missing["status"] == "failed" and "has no section named 'Fees'" in missing["error"]

    # Another tenant can name neither the document nor the tasks.
    reply = await globex.post("/analyze_document", json={"document_id": document_id})
    assert reply.status_code == 422, reply.text
    assert (await globex.get(f"/task_status/{task_id}")).status_code == 404


async def test_a_document_over_the_2_mib_of_other_bodies_is_taken(
    tenants: dict[str, httpx.AsyncClient],
) -> None:
    """Documents have their limit (GATEWAY_PRISM_DOCUMENT_MAX_BYTES, 50 MiB), not the 2 MiB of
    other request bodies."""
    data = docx_bytes(padding=3 * 1024 * 1024)
    uploaded = await upload(tenants["acme"], "large.docx", data, DOCX_TYPE)
    assert (uploaded["success"], uploaded["status"]) == (True, "completed"), uploaded
    assert [s["name"] for s in uploaded["sections"]] == [heading for heading, _ in SECTIONS]
    listed = (await tenants["acme"].get("/files")).json()["files"]
    assert [f["size"] for f in listed if f["file_id"] == uploaded["document_id"]] == [len(data)]


async def test_a_file_that_is_no_document_is_refused_at_upload_and_not_kept(
    tenants: dict[str, httpx.AsyncClient],
) -> None:
    acme = tenants["acme"]
    broken = await acme.post(
        "/upload", files={"file": ("broken.pdf", b"%PDF-1.7 but no more", PDF_TYPE)}
    )
    assert broken.status_code == 422, broken.text
    assert "broken.pdf" in broken.json()["detail"]
    empty = await acme.post("/upload", files={"file": ("empty.md", b"", "text/markdown")})
    assert empty.status_code == 422 and "empty" in empty.json()["detail"], empty.text
    listed = (await acme.get("/files")).json()
    assert not [f for f in listed["files"] if f["name"] in ("broken.pdf", "empty.md")], listed
