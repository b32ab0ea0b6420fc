"""AI-Prism document analysis on the platform (SPEC §7): the REST calls its clients make.

- ``POST /analyze_section {section_name, content}`` submits a task of one record
  ``{"kind": "analyze_section", "section_name", "content"}``, which feeds the section
  ``document_section`` (config.json: its own fallback chain of document assets), and answers at
  once ``200 {"success": true, "task_id", "status": "queued"}`` — 200 rather than 202, as
  AI-Prism's clients read it.
- ``GET /task_status/{task_id}`` reads a task of one section: its status in AI-Prism's words
  (``queued``, ``processing``, ``completed``, ``failed``) and, once finished, the ``feedback``
  items parsed from an analysis' answer (or a chat's ``response`` text), ``model_used``, the
  attempt path and the cost. An analysis whose answer is not feedback is ``failed``, saying why.
- ``POST /chat {task_id, message}`` continues the conversation of a completed analysis of the
  caller's: it submits a task of one record ``{"kind": "chat", "message", "context"}`` for the
  section ``document_chat``, which continues ``document_section``'s conversation (the record
  names the analysis under ``continue_task_id``; the orchestrator checks the owner again,
  carries the analysed section's name into the context and sends the prompt into that
  conversation on the asset that answered). The context summarises the feedback
  (:func:`feedback_summary`).

The tasks run on the platform service account of the caller's tenant (the calls carry no
platform credentials: ``ORCH_PLATFORM_ACCOUNTS_FILE``, else 422). They are owned and scoped
like every task: another owner's task is 404 on every route, enforced by the orchestrator.

The routes are thin adapters; what they decide (status names, parsing feedback, the chat's
context) is in the plain functions below.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path

from common import task_ids
from common.errors import WrongState
from common.platform_config import CONTINUE_TASK_ID
from common.principals import Principal
from gateway import auth
from gateway.models import (
    AnalyzeSectionRequest,
    ChatRequest,
    ErrorResponse,
    PrismResult,
    PrismStatus,
    PrismTaskStatus,
    QueuedResponse,
)
from wealthai.orchestrator.v1 import orchestrator_pb2 as pb
from wealthai.orchestrator.v1 import orchestrator_pb2_grpc

ANALYSIS_SECTION = "document_section"
CHAT_SECTION = "document_chat"
TAGS: list[str | Enum] = ["ai-prism"]
# The chat's context: at most this many feedback items, each description cut to this length.
SUMMARY_ITEMS = 50
SUMMARY_TEXT_CHARS = 300

_QUEUED = {"pending"}
_FAILED = {"error", "cancelled"}

Caller = Annotated[Principal, Depends(auth.current_principal)]
TaskId = Annotated[str, Path(pattern=task_ids.PATTERN, examples=[task_ids.EXAMPLE])]


class NotFeedback(ValueError):
    """The platform's answer to an analysis is not ``{"feedback": [objects…]}``."""


def prism_status(status: str) -> PrismStatus:
    """A task status in AI-Prism's words."""
    if status in _QUEUED:
        return "queued"
    if status == "completed":
        return "completed"
    if status in _FAILED:
        return "failed"
    return "processing"


def parse_feedback(response: str) -> list[dict[str, Any]]:
    """The feedback items of an analysis' answer; :class:`NotFeedback` saying what is wrong."""
    try:
        answer = json.loads(response)
    except ValueError:
        raise NotFeedback("the platform's answer is not JSON") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("feedback"), list):
        raise NotFeedback("the platform's answer has no `feedback` list")
    items: list[dict[str, Any]] = answer["feedback"]
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise NotFeedback(f"feedback[{index}] of the platform's answer is not an object")
    return items


def feedback_summary(items: list[dict[str, Any]]) -> list[str]:
    """One line per feedback item (at most :data:`SUMMARY_ITEMS`):
    ``"<type> (<category>): <description>"``, the description cut to
    :data:`SUMMARY_TEXT_CHARS` characters."""
    return [
        f"{item.get('type', '')} ({item.get('category', '')}): "
        f"{str(item.get('description', ''))[:SUMMARY_TEXT_CHARS]}"
        for item in items[:SUMMARY_ITEMS]
    ]


def chat_record(task_id: str, message: str, feedback: list[dict[str, Any]]) -> dict[str, Any]:
    """The record of a chat about analysis ``task_id`` (the orchestrator adds the analysed
    section's ``section_name`` to the context and removes the marker)."""
    return {
        "kind": "chat",
        "message": message,
        "context": {"feedback": feedback_summary(feedback)},
        CONTINUE_TASK_ID: task_id,
    }


def task_status(result: dict[str, Any]) -> PrismTaskStatus:
    """The AI-Prism view of a task result (``GetTaskResult`` as a dict)."""
    task_id = result["task_id"]
    sections = result["data"]
    if len(sections) != 1:
        raise WrongState(
            f"task {task_id} has {len(sections)} sections, not one: read it at "
            f"/task/{task_id}/result"
        )
    ((name, section),) = sections.items()
    status = prism_status(result["status"])
    if status in ("queued", "processing"):
        return PrismTaskStatus(success=True, task_id=task_id, status=status)
    out = PrismResult(
        model_used=section["model_used"],
        attempts=section["attempts"],
        cost=section["cost"],
    )
    if status == "failed":
        error = section["error"] or result["message"] or "the task failed"
        return PrismTaskStatus(
            success=False, task_id=task_id, status=status, result=out, error=error
        )
    if name != ANALYSIS_SECTION:
        out.response = section["response"]
        return PrismTaskStatus(success=True, task_id=task_id, status=status, result=out)
    try:
        out.feedback = parse_feedback(section["response"])
    except NotFeedback as exc:
        return PrismTaskStatus(
            success=False, task_id=task_id, status="failed", result=out, error=str(exc)
        )
    return PrismTaskStatus(success=True, task_id=task_id, status=status, result=out)


def analysed_feedback(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The feedback of a completed analysis a chat may continue; WrongState otherwise."""
    task_id = result["task_id"]
    section = result["data"].get(ANALYSIS_SECTION)
    if section is None:
        raise WrongState(f"task {task_id} is not a section analysis (POST /analyze_section)")
    if section["status"] != "completed":
        status = prism_status(result["status"])
        raise WrongState(f"task {task_id} is {status}; chat about it once its analysis completed")
    try:
        return parse_feedback(section["response"])
    except NotFeedback as exc:
        raise WrongState(f"task {task_id} has no feedback to chat about: {exc}") from None


def _errors(**texts: str) -> dict[int | str, dict[str, Any]]:
    base = {
        401: "No API key, or an unknown or revoked one (`unauthenticated`)",
        422: "Invalid input: which field and why, or no platform service account for the "
        "caller's tenant (`invalid_input`)",
        429: "Too many submissions or tasks in flight (`rate_limited`)",
        503: "A dependency is down (`unavailable`)",
    }
    return {
        code: {"model": ErrorResponse, "description": text}
        for code, text in {**base, **{int(k): v for k, v in texts.items()}}.items()
    }


def install(
    app: FastAPI,
    stub: Callable[[], orchestrator_pb2_grpc.OrchestratorServiceAsyncStub],
    caller: Callable[[Principal], pb.Caller],
    timeout: float,
) -> None:
    """Adds the AI-Prism routes to ``app``'s own router; ``stub`` gives the orchestrator's stub
    of the running app, ``caller`` the orchestrator's view of a principal."""
    router = app.router

    async def submit(principal: Principal, record: dict[str, Any]) -> QueuedResponse:
        reply = await stub().SubmitTask(
            pb.SubmitTaskRequest(records_json=[json.dumps(record)], caller=caller(principal)),
            timeout=timeout,
        )
        return QueuedResponse(task_id=reply.task_id)

    async def result_of(task_id: str, principal: Principal) -> dict[str, Any]:
        reply = await stub().GetTaskResult(
            pb.GetTaskRequest(task_id=task_id, caller=caller(principal)), timeout=timeout
        )
        return _result_dict(reply)

    @router.post(
        "/analyze_section",
        tags=TAGS,
        response_model=QueuedResponse,
        responses=_errors(**{"413": "Request body too large (`too_large`)"}),
    )
    async def analyze_section(body: AnalyzeSectionRequest, principal: Caller) -> QueuedResponse:
        """Queues feedback on one section of a document: one item per paragraph (paragraphs
        apart by blank lines); poll ``GET /task_status/{task_id}``."""
        record = {"kind": "analyze_section", **body.model_dump()}
        return await submit(principal, record)

    @router.get(
        "/task_status/{task_id}",
        tags=TAGS,
        response_model=PrismTaskStatus,
        responses=_errors(
            **{
                "404": "Unknown task, or another owner's (`not_found`)",
                "409": "Not a task of one section (`wrong_state`)",
            }
        ),
    )
    async def get_task_status(task_id: TaskId, principal: Caller) -> PrismTaskStatus:
        """An analysis' or a chat's status; once finished its feedback (or reply),
        ``model_used``, the attempt path and the cost, or the error."""
        return task_status(await result_of(task_id, principal))

    @router.post(
        "/chat",
        tags=TAGS,
        response_model=QueuedResponse,
        responses=_errors(
            **{
                "404": "Unknown task, or another owner's (`not_found`)",
                "409": "Not a completed section analysis (`wrong_state`)",
                "413": "Request body too large (`too_large`)",
            }
        ),
    )
    async def chat(body: ChatRequest, principal: Caller) -> QueuedResponse:
        """Queues a message about a completed analysis, in that analysis' conversation; the
        reply is ``result.response`` of ``GET /task_status/{task_id}`` of the new task."""
        feedback = analysed_feedback(await result_of(body.task_id, principal))
        return await submit(principal, chat_record(body.task_id, body.message, feedback))


def _result_dict(reply: pb.TaskResult) -> dict[str, Any]:
    """What the routes read of a task result, as plain values."""
    return {
        "task_id": reply.task_id,
        "status": reply.status,
        "message": reply.message,
        "data": {
            name: {
                "status": s.status,
                "response": s.response,
                "error": s.error,
                "cost": s.cost,
                "model_used": s.model_used,
                "attempts": [
                    {
                        "asset_id": a.asset_id,
                        "outcome": a.outcome,
                        "reason": a.reason,
                        "cost": a.cost,
                        "duration_s": a.duration_s,
                    }
                    for a in s.attempts
                ],
            }
            for name, s in reply.data.items()
        },
    }
