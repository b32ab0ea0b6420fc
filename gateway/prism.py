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
- ``POST /upload`` takes a ``multipart/form-data`` form whose ``file`` part is a document (PDF,
  DOCX, Markdown or plain text, at most ``GATEWAY_PRISM_DOCUMENT_MAX_BYTES``), stores it as a
  file of the caller (its id is the ``document_id``; it expires with the file retention, and
  ``DELETE /files/{id}`` removes it) and submits a task of one record
  ``{"outline_document": {"file_id": …}}`` for the section ``document_outline``, in which a
  worker cuts the document into sections by its headings. It waits for that task up to
  ``GATEWAY_PRISM_OUTLINE_WAIT_S`` and answers with the sections; a document that cannot be
  read is 422 naming why (and is deleted); a slow one is answered ``processing`` without
  sections (poll ``GET /task_status/{task_id}``).
- ``POST /analyze_section {section_name, document_id}`` analyses the section of that name of an
  uploaded document; ``POST /analyze_document {document_id, sections?}`` analyses every section
  (or the ones named) in parallel as one task. Both submit a record
  ``{"analyze_document": {"file_id": …}, "sections": [...]}`` for the section
  ``document_analysis`` (kind ``analyze_document``), and ``GET /task_status/{task_id}`` gives
  per-section feedback.
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

import asyncio
import json
import logging
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Request

from common import task_ids
from common.errors import AppError, InvalidInput, WrongState
from common.feedback import NotFeedback, parse_feedback
from common.platform_config import CONTINUE_TASK_ID
from common.principals import Principal
from gateway import auth, upload_body
from gateway.file_client import FileClient, NewFile
from gateway.models import (
    AnalysedSection,
    AnalyzeDocumentRequest,
    AnalyzeSectionRequest,
    ChatRequest,
    DocumentOut,
    ErrorResponse,
    OutlineSection,
    PrismResult,
    PrismStatus,
    PrismTaskStatus,
    QueuedResponse,
    UploadedDocument,
)
from gateway.settings import GatewaySettings
from wealthai.orchestrator.v1 import orchestrator_pb2 as pb
from wealthai.orchestrator.v1 import orchestrator_pb2_grpc

ANALYSIS_SECTION = "document_section"
CHAT_SECTION = "document_chat"
OUTLINE_SECTION = "document_outline"
DOCUMENT_SECTION = "document_analysis"
OUTLINE_FIELD = "outline_document"
DOCUMENT_FIELD = "analyze_document"
DOCUMENT_EXTENSIONS = (".pdf", ".docx", ".md", ".markdown", ".txt", ".text")
TAGS: list[str | Enum] = ["ai-prism"]
# The chat's context: at most this many feedback items, each description cut to this length.
SUMMARY_ITEMS = 50
SUMMARY_TEXT_CHARS = 300

_QUEUED = {"pending"}
_FAILED = {"error", "cancelled"}
_ENDED = {"completed", *_FAILED}

logger = logging.getLogger(__name__)

Caller = Annotated[Principal, Depends(auth.current_principal)]
TaskId = Annotated[str, Path(pattern=task_ids.PATTERN, examples=[task_ids.EXAMPLE])]


def prism_status(status: str) -> PrismStatus:
    """A task status in AI-Prism's words."""
    if status in _QUEUED:
        return "queued"
    if status == "completed":
        return "completed"
    if status in _FAILED:
        return "failed"
    return "processing"


def check_document_name(name: str) -> str:
    """The document's name, when its extension is one the parser reads; InvalidInput
    otherwise."""
    return upload_body.check_extension(
        name,
        DOCUMENT_EXTENSIONS,
        f"PDF, DOCX, Markdown or text documents ({', '.join(DOCUMENT_EXTENSIONS)}) can be analysed",
    )


def document_record(document_id: str, sections: list[str] | None) -> dict[str, Any]:
    """The record of an analysis of an uploaded document (every section when ``sections`` is
    None)."""
    record: dict[str, Any] = {DOCUMENT_FIELD: {"file_id": document_id}}
    if sections is not None:
        record["sections"] = sections
    return record


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
    if name == OUTLINE_SECTION:
        outline = json.loads(section["result_json"])
        out.document = DocumentOut(**outline["document"])
        out.outline = [OutlineSection(**s) for s in outline["sections"]]
        return PrismTaskStatus(success=True, task_id=task_id, status=status, result=out)
    if name == DOCUMENT_SECTION:
        return document_status(task_id, json.loads(section["result_json"]), out)
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


def document_status(task_id: str, analysis: dict[str, Any], out: PrismResult) -> PrismTaskStatus:
    """A completed analysis of an uploaded document: every section's feedback, and the first
    one's as ``feedback`` when one section was asked. It failed when a section did (one asked)
    or every section did; otherwise the failed ones say why in their ``error``."""
    out.document = DocumentOut(**analysis["document"])
    out.sections = [AnalysedSection(**s) for s in analysis["sections"]]
    failed = [s for s in out.sections if s.status == "failed"]
    if len(out.sections) == 1:
        out.feedback = out.sections[0].feedback
    if failed and len(failed) == len(out.sections):
        why = failed[0].error if len(failed) == 1 else f"every section failed: {failed[0].error}"
        return PrismTaskStatus(
            success=False, task_id=task_id, status="failed", result=out, error=why
        )
    some = f"{len(failed)} of {len(out.sections)} sections failed" if failed else None
    return PrismTaskStatus(
        success=True, task_id=task_id, status="completed", result=out, error=some
    )


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


_UPLOAD_BODY = upload_body.form_request_body(
    "A multipart/form-data form whose file part (a part with a filename "
    f"ending in {', '.join(DOCUMENT_EXTENSIONS)}) is the document; other form fields are "
    "ignored."
)


_DOCUMENT_ERRORS = _errors(
    **{
        "413": "Request body too large (`too_large`)",
        "422": "Invalid input, or a `document_id` that is not an uploaded document of the "
        "caller's (`invalid_input`)",
    }
)


def install(
    app: FastAPI,
    settings: GatewaySettings,
    files: Callable[[], FileClient],
    stub: Callable[[], orchestrator_pb2_grpc.OrchestratorServiceAsyncStub],
    caller: Callable[[Principal], pb.Caller],
) -> None:
    """Adds the AI-Prism routes to ``app``'s own router; ``files`` and ``stub`` give the
    storage client and the orchestrator's stub of the running app, ``caller`` the
    orchestrator's view of a principal."""
    router = app.router
    timeout = settings.call_timeout_s
    document_limit = settings.prism_document_max_bytes

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

    async def ended(task_id: str, principal: Principal, wait_s: float) -> None:
        """Returns once the task ended, or after ``wait_s`` seconds."""
        call = stub().WatchTask(pb.WatchTaskRequest(task_id=task_id, caller=caller(principal)))
        try:
            async with asyncio.timeout(wait_s):
                async for event in call:
                    if event.status in _ENDED:
                        return
        except TimeoutError:
            return
        finally:
            call.cancel()

    @router.post(
        "/upload",
        tags=TAGS,
        response_model=UploadedDocument,
        responses=_errors(
            **{
                "408": upload_body.STALLED,
                "413": f"The document is larger than the limit ({document_limit} bytes) "
                "(`too_large`)",
                "422": "Not a PDF, DOCX, Markdown or text document, or one that cannot be read "
                "(corrupt, encrypted, no text): the message says which (`invalid_input`)",
            }
        ),
        openapi_extra=_UPLOAD_BODY,
    )
    async def upload(request: Request, principal: Caller) -> UploadedDocument:
        """Stores a document and finds its sections by their headings; name them in
        ``POST /analyze_section`` (with ``document_id``) or ``POST /analyze_document``."""
        part, data = await upload_body.form_upload(
            request.headers, request.stream(), document_limit
        )
        name = check_document_name(part.name)
        info = await files().upload(
            principal, NewFile(name, part.content_type, max_bytes=document_limit), data
        )

        async def discard() -> None:
            try:
                await files().delete(principal, info.file_id)
            except AppError as exc:  # it expires anyway
                logger.info("document %s not deleted: %s", info.file_id, exc.message)

        try:
            queued = await submit(principal, {OUTLINE_FIELD: {"file_id": info.file_id}})
        except Exception:  # refused (429, a service down): no task will name the document
            await discard()
            raise
        await ended(queued.task_id, principal, settings.prism_outline_wait_s)
        status = task_status(await result_of(queued.task_id, principal))
        if status.status == "failed":
            await discard()
            raise InvalidInput(status.error or "the document cannot be read")
        found = status.result
        return UploadedDocument(
            success=True,
            document_id=info.file_id,
            task_id=queued.task_id,
            status=status.status,
            document=found.document if found else None,
            sections=found.outline if found else None,
        )

    @router.post(
        "/analyze_section",
        tags=TAGS,
        response_model=QueuedResponse,
        responses=_DOCUMENT_ERRORS,
    )
    async def analyze_section(body: AnalyzeSectionRequest, principal: Caller) -> QueuedResponse:
        """Queues feedback on one section of a document: one item per paragraph (paragraphs
        apart by blank lines); poll ``GET /task_status/{task_id}``. The section is ``content``,
        or the section named ``section_name`` of the uploaded document ``document_id``."""
        if body.document_id is not None:
            return await submit(principal, document_record(body.document_id, [body.section_name]))
        record = {"kind": "analyze_section", **body.model_dump(exclude={"document_id"})}
        return await submit(principal, record)

    @router.post(
        "/analyze_document",
        tags=TAGS,
        response_model=QueuedResponse,
        responses=_DOCUMENT_ERRORS,
    )
    async def analyze_document(body: AnalyzeDocumentRequest, principal: Caller) -> QueuedResponse:
        """Queues feedback on every section of an uploaded document (or the ones named), in
        parallel as one task; ``GET /task_status/{task_id}`` gives each section's feedback."""
        return await submit(principal, document_record(body.document_id, body.sections))

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
                "result_json": s.result_json,
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
