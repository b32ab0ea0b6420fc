"""The REST application: the user's existing contract (SPEC §6) over the orchestrator's gRPC API.

Errors come from the one table in :mod:`common.errors`: a gRPC status from the orchestrator
becomes the HTTP status and REST code of the same row, with the orchestrator's message; the
gateway's own refusals (body limit, validation, unknown route) use the same rows. Bad input is
422 and names the field; the submitted password is never echoed, not even in a validation error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, MutableMapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

import grpc
from fastapi import FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from starlette.exceptions import HTTPException as StarletteHTTPException

from common import task_ids
from common.channels import open_channel
from common.errors import (
    InvalidInput,
    Timeout,
    TooLarge,
    Unavailable,
    error_body,
    error_for_code,
    http_error_body,
)
from common.json_limits import MAX_DEPTH
from common.tls import Role, identity_for
from gateway.models import (
    ErrorResponse,
    PingResponse,
    ResultResponse,
    StatusResponse,
    StorageHealth,
    SubmitRequest,
    SubmitResponse,
    TaskListResponse,
)
from gateway.settings import GatewaySettings
from wealthai.orchestrator.v1 import orchestrator_pb2 as pb
from wealthai.orchestrator.v1 import orchestrator_pb2_grpc

logger = logging.getLogger(__name__)

TaskId = Annotated[str, Path(pattern=task_ids.PATTERN, examples=[task_ids.EXAMPLE])]
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        404: "Unknown task (`not_found`)",
        409: "Changed by another writer (`conflict`), or not possible in the task's state "
        "(`wrong_state`)",
        413: "Request too large (`too_large`)",
        422: "Invalid input: which field and why (`invalid_input`)",
        500: "A bug; details are in the service log (`internal`)",
        503: "A dependency is down (`unavailable`)",
        504: "The platform did not answer in time (`timeout`)",
    }.items()
}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Answers 413 to any request whose body is larger than the limit, declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        seen = 0

        async def limited() -> MutableMapping[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                # FastAPI passes HTTPException through its body parsing untouched.
                raise HTTPException(413, self._error().message)
            return message

        await self.app(scope, limited, send)

    def _error(self) -> TooLarge:
        return TooLarge(f"request body larger than {self.max_bytes} bytes")

    async def _too_large(self, send: Send) -> None:
        error = self._error()
        await send(
            {
                "type": "http.response.start",
                "status": error.http_status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(error_body(error)).encode()})


class _JsonBodyRequest(Request):
    """A request whose JSON body, when nested too deep for the json module to parse, is 422
    rather than the 400 FastAPI answers for any parse failure but malformed JSON."""

    async def json(self) -> Any:
        try:
            return await super().json()
        except RecursionError:
            # FastAPI passes HTTPException through its body parsing untouched.
            raise HTTPException(422, f"body: nested deeper than {MAX_DEPTH} levels") from None


class _JsonBodyRoute(APIRoute):
    """Routes that read their JSON body through :class:`_JsonBodyRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(_JsonBodyRequest(request.scope, request.receive))

        return route


def _to_dict(message: Message) -> dict[str, Any]:
    data: dict[str, Any] = MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return data


def _status(reply: pb.TaskStatus) -> StatusResponse:
    data = _to_dict(reply)
    data["completed_at"] = data["completed_at"] or None
    return StatusResponse.model_validate(data)


def create_app(settings: GatewaySettings) -> FastAPI:
    """The gateway application, talking to the orchestrator at ``settings``' target."""
    stub_box: dict[str, orchestrator_pb2_grpc.OrchestratorServiceAsyncStub] = {}
    tls = identity_for(settings, Role.GATEWAY)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        channel = open_channel(settings.orchestrator_target, tls, Role.ORCHESTRATOR)
        stub_box["stub"] = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        try:
            yield
        finally:
            await channel.close()

    app = FastAPI(
        title="Wealth AI Task Platform",
        version="1.0",
        description="Submit portfolio records; the platform writes every report section with "
        "the generative-AI platform in parallel and keeps the task in S3.",
        lifespan=lifespan,
    )
    app.router.route_class = _JsonBodyRoute
    timeout = settings.call_timeout_s

    def stub() -> orchestrator_pb2_grpc.OrchestratorServiceAsyncStub:
        return stub_box["stub"]

    @app.exception_handler(grpc.aio.AioRpcError)
    async def rpc_error(_: Request, err: grpc.aio.AioRpcError) -> JSONResponse:
        cls = error_for_code(err.code())
        if cls.http_status >= 500:
            logger.warning("orchestrator call failed: %s %s", err.code().name, err.details())
        detail = err.details() or err.code().name
        if cls in (Unavailable, Timeout):
            detail = f"the platform is unavailable right now: {detail}"
        return JSONResponse(status_code=cls.http_status, content=error_body(cls(detail)))

    # Starlette's own exception, so the router's 404 and 405 are answered here as well.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code,
            content=http_error_body(exc.status_code, str(exc.detail)),
            headers=exc.headers,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Built by hand so the offending value (perhaps a password) is never echoed back.
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]} for e in exc.errors()
        ]
        error = InvalidInput("; ".join(f"{e['field']}: {e['reason']}" for e in errors))
        return JSONResponse(
            status_code=error.http_status, content={**error_body(error), "errors": errors}
        )

    @app.post("/task/submit", status_code=202, response_model=SubmitResponse, responses=_ERRORS)
    async def submit(
        body: SubmitRequest,
        response: Response,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                min_length=1,
                max_length=128,
                description="Repeat a submission safely: the same key and body return the "
                "first task; the same key with another body is 409.",
            ),
        ] = None,
    ) -> SubmitResponse:
        """Accepts a task and answers at once; the sections are written in the background."""
        reply = await stub().SubmitTask(
            pb.SubmitTaskRequest(
                username=body.username,
                password=body.password.get_secret_value(),
                tenant=body.tenant or "",
                records_json=[json.dumps(record) for record in body.data],
                idempotency_key=idempotency_key or "",
            ),
            timeout=timeout,
        )
        if reply.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return SubmitResponse.model_validate(_to_dict(reply))

    @app.get("/task/{task_id}/status", response_model=StatusResponse, responses=_ERRORS)
    async def status(task_id: TaskId) -> StatusResponse:
        """Status, progress, per-section state and the step-by-step trace."""
        reply = await stub().GetTaskStatus(pb.GetTaskRequest(task_id=task_id), timeout=timeout)
        return _status(reply)

    @app.get("/task/{task_id}/result", response_model=ResultResponse, responses=_ERRORS)
    async def result(task_id: TaskId) -> ResultResponse:
        """Per-section results, joined ids, total cost and elapsed time (partial while running)."""
        reply = await stub().GetTaskResult(pb.GetTaskRequest(task_id=task_id), timeout=timeout)
        data = _to_dict(reply)
        # A proto map has no order; the user's clients see sections in record order.
        order = [name for name in reply.section_detected.split(", ") if name in data["data"]]
        data["data"] = {name: data["data"][name] for name in order} | data["data"]
        return ResultResponse.model_validate(data)

    @app.post("/task/{task_id}/cancel", response_model=StatusResponse, responses=_ERRORS)
    async def cancel(task_id: TaskId) -> StatusResponse:
        """Stops the sections still running and records the task as cancelled."""
        reply = await stub().CancelTask(pb.CancelTaskRequest(task_id=task_id), timeout=timeout)
        return _status(reply)

    @app.post("/task/{task_id}/retry", response_model=StatusResponse, responses=_ERRORS)
    async def retry(task_id: TaskId) -> StatusResponse:
        """Runs again only the failed sections of a task that ended in error."""
        reply = await stub().RetryTask(pb.RetryTaskRequest(task_id=task_id), timeout=timeout)
        return _status(reply)

    @app.get("/task/{task_id}/events", responses=_ERRORS)
    async def events(task_id: TaskId) -> StreamingResponse:
        """Server-sent events: one per change of the task, until it finishes."""
        call = stub().WatchTask(pb.WatchTaskRequest(task_id=task_id))
        first = await call.read()  # surfaces 404 and friends as a proper HTTP error

        async def stream() -> AsyncIterator[bytes]:
            message = first
            try:
                # read() gives a TaskEvent or grpc.aio.EOF, which the grpc stubs type as object.
                while isinstance(message, pb.TaskEvent):
                    yield f"data: {json.dumps(_to_dict(message))}\n\n".encode()
                    message = await call.read()
            finally:
                call.cancel()

        if first is grpc.aio.EOF:
            return StreamingResponse(iter(()), media_type="text/event-stream")
        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/tasks", response_model=TaskListResponse, responses=_ERRORS)
    async def list_tasks(
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        status: Annotated[str | None, Query(max_length=32, examples=["completed"])] = None,
        page_token: Annotated[str | None, Query(max_length=512)] = None,
    ) -> TaskListResponse:
        """Tasks newest first; pass ``next_page_token`` back as ``page_token`` for more."""
        reply = await stub().ListTasks(
            pb.ListTasksRequest(limit=limit, status=status or "", page_token=page_token or ""),
            timeout=timeout,
        )
        tasks = [_to_dict(t) for t in reply.tasks]
        return TaskListResponse.model_validate(
            {"tasks": tasks, "count": len(tasks), "next_page_token": reply.next_page_token or None}
        )

    @app.get("/ping", response_model=PingResponse, responses={503: {"model": PingResponse}})
    async def ping() -> JSONResponse:
        """Health: workers, queue, totals and storage, as the user's monitoring reads them."""
        try:
            stats = await stub().GetStats(pb.GetStatsRequest(), timeout=5)
        except grpc.aio.AioRpcError as err:
            logger.warning("ping: orchestrator unreachable: %s", err.code().name)
            down = PingResponse(
                status="unhealthy",
                workers=0,
                workers_started=False,
                queue_size=0,
                total_tasks=0,
                tasks_running=0,
                tasks_finished={},
                worker_capacity=0,
                sections_running=0,
                storage=StorageHealth(status="unknown"),
            )
            return JSONResponse(status_code=503, content=down.model_dump())
        healthy = stats.storage_ok and stats.workers_ready > 0
        body = PingResponse(
            status="healthy" if healthy else "degraded",
            workers=stats.workers_ready,
            workers_started=stats.workers_ready > 0,
            queue_size=stats.queue_size,
            total_tasks=stats.tasks_submitted,
            tasks_running=stats.tasks_running,
            tasks_finished=dict(stats.tasks_finished),
            worker_capacity=stats.worker_capacity,
            sections_running=stats.sections_running,
            storage=StorageHealth(
                status="healthy" if stats.storage_ok else "unhealthy",
                bucket=stats.storage_bucket,
                cache_size=stats.cache_size,
            ),
        )
        return JSONResponse(status_code=200 if healthy else 503, content=body.model_dump())

    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
