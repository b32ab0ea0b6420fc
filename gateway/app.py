"""The REST application: the user's existing contract (SPEC §6) over the orchestrator's gRPC API,
and the file API (:mod:`gateway.files`) over storage_svc's.

Errors come from the one table in :mod:`common.errors`: a gRPC status from the orchestrator
becomes the HTTP status and REST code of the same row, with the orchestrator's message; the
gateway's own refusals (body limit, validation, unknown route, authentication) use the same
rows. Bad input is 422 and names the field; the submitted password is never echoed, not even in a
validation error.

Every route but ``/ping``, ``/docs`` and ``/openapi.json`` takes the caller's principal
(:mod:`gateway.auth`) and passes it to the orchestrator as the request's ``caller``, which
decides what the caller may see. A client's tasks run in its own tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pathlib
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    MutableMapping,
)
from contextlib import asynccontextmanager
from typing import Annotated, Any

import grpc
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from common import api_keys, task_ids, tracing
from common.channels import open_channel
from common.errors import (
    AppError,
    Forbidden,
    InvalidInput,
    Overloaded,
    Timeout,
    TooLarge,
    Unauthenticated,
    Unavailable,
    error_body,
    error_for_code,
    from_rpc_error,
    http_error_body,
    retry_after_of,
)
from common.json_limits import MAX_DEPTH
from common.metrics import HttpMetrics
from common.principals import Principal
from common.principals import Role as PrincipalRole
from common.tls import Role, identity_for
from gateway import agensium, auth, dashboard, files, prism
from gateway.file_client import FileClient
from gateway.models import (
    AdminStatsResponse,
    ApiKeyOut,
    CreatedKey,
    CreateKeyRequest,
    ErrorResponse,
    KeyListResponse,
    MeResponse,
    PingResponse,
    ResultResponse,
    StatusResponse,
    StorageHealth,
    SubmitRequest,
    SubmitResponse,
    TaskEventOut,
    TaskInputResponse,
    TaskListResponse,
    TaskStatusName,
)
from gateway.settings import GatewaySettings
from gateway.streams import StreamLimits
from wealthai.orchestrator.v1 import orchestrator_pb2 as pb
from wealthai.orchestrator.v1 import orchestrator_pb2_grpc

logger = logging.getLogger(__name__)

TaskId = Annotated[str, Path(pattern=task_ids.PATTERN, examples=[task_ids.EXAMPLE])]
KeyId = Annotated[str, Path(pattern=api_keys.KEY_ID_PATTERN, examples=["3f9a1c0b7d42"])]
Caller = Annotated[Principal, Depends(auth.current_principal)]
Admin = Annotated[Principal, Depends(auth.admin_principal)]
_AUTH_ERRORS = {
    401: "No API key, or an unknown or revoked one (`unauthenticated`)",
    403: "The key may not do this: admins only (`forbidden`)",
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        401: _AUTH_ERRORS[401],
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
_KEY_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        **_AUTH_ERRORS,
        404: "Unknown key (`not_found`)",
        422: "Invalid input: which field and why (`invalid_input`)",
        503: "A dependency is down (`unavailable`)",
    }.items()
}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class SubmitsFull(Overloaded):
    """This gateway is taking in as many submissions as it may at once."""

    retry_after_s = 1


class SubmitGate:
    """Admission under overload: at most ``limit`` submissions taken in at once by this
    gateway. Past that a submission is answered 429 with ``Retry-After: 1`` at once, rather
    than queueing for seconds behind the others on a saturated machine (the submission was
    not taken: sending it again is safe)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taking = 0

    @contextlib.contextmanager
    def enter(self) -> Iterator[None]:
        if self.taking >= self.limit:
            raise SubmitsFull(f"{self.limit} submissions are being taken in; try again shortly")
        self.taking += 1
        try:
            yield
        finally:
            self.taking -= 1


class BodyGuard:
    """Bounds every request body. One larger than ``max_bytes``, declared or streamed, is 413,
    but on the routes in ``exempt`` (method, path), which stream uploads under limits of their
    own. One that stalls, nothing of it coming for ``idle_s``, is 408, an upload's included
    (whose upload is then cancelled, as on any error of its body), so a client cannot hold a
    request, a storage stream and a multipart upload open by sending nothing."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        idle_s: float,
        exempt: frozenset[tuple[str, str]] = frozenset(),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.idle_s = idle_s
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limited = (scope["method"], scope["path"]) not in self.exempt
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if limited and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        seen, whole = 0, False

        async def guarded() -> MutableMapping[str, Any]:
            nonlocal seen, whole
            if whole:  # past the body the app only waits for the client to leave: unbounded
                return await receive()
            try:
                async with asyncio.timeout(self.idle_s):
                    message = await receive()
            except TimeoutError:
                # FastAPI passes HTTPException through its body parsing untouched.
                raise HTTPException(408, self._stalled()) from None
            whole = message["type"] != "http.request" or not message.get("more_body", False)
            seen += len(message.get("body", b""))
            if limited and seen > self.max_bytes:
                raise HTTPException(413, self._error().message)
            return message

        await self.app(scope, guarded, send)

    def _stalled(self) -> str:
        return f"request body stalled: nothing of it came for {self.idle_s:g} s"

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


def caller(principal: Principal) -> pb.Caller:
    """The orchestrator's view of who calls."""
    return pb.Caller(principal_id=principal.id, tenant=principal.tenant, admin=principal.admin)


def _api_key(key: pb.ApiKey) -> dict[str, Any]:
    data = _to_dict(key)
    data["revoked_at"] = data["revoked_at"] or None
    return data


def _section_fields(path: pathlib.Path) -> dict[str, list[str]]:
    """The fields that identify each section, as the sections configuration names them."""
    try:
        sections = json.loads(path.read_text())["sections"]
        return {name: list(section["fields"]) for name, section in sections.items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"gateway: cannot read the sections of {path}: {exc}") from None


def _describe_records(app: FastAPI, sections: dict[str, list[str]]) -> None:
    """Makes the API schema say what a record must carry: at least one field that identifies
    a section, and no more records than there are sections."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            data = schema["components"]["schemas"]["SubmitRequest"]["properties"]["data"]
            data["maxItems"] = len(sections)
            data["items"]["anyOf"] = [
                {"required": [field]} for fields in sections.values() for field in fields
            ]
            data["description"] = (
                "One record per section; a record carries a field that identifies its section: "
                + "; ".join(f"{name}: any of {fields}" for name, fields in sections.items())
            )
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route of ``app`` serves ``path`` with (routes of one path are apart)."""
    scope = {"type": "http", "path": path, "method": "GET"}
    methods: set[str] = set()
    for route in app.routes:
        if isinstance(route, APIRoute) and route.matches(scope)[0] != Match.NONE:
            methods |= route.methods or set()
    return sorted(methods)


def create_app(settings: GatewaySettings, clock: Callable[[], float] | None = None) -> FastAPI:
    """The gateway application, talking to the orchestrator at ``settings``' target.

    ``clock`` (monotonic seconds) times the API key cache; tests pass a fake one.
    """
    stub_box: dict[str, orchestrator_pb2_grpc.OrchestratorServiceAsyncStub] = {}
    file_box: dict[str, FileClient] = {}
    tls = identity_for(settings, Role.GATEWAY)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.auth == "open":
            logger.warning(
                "GATEWAY_AUTH=open: calls without an API key run as the anonymous principal; "
                "anyone who reaches this gateway can submit and read anonymous tasks"
            )
        channel = open_channel(settings.orchestrator_target, tls, Role.ORCHESTRATOR)
        stub_box["stub"] = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        file_box["client"] = FileClient(settings.storage_target, tls, settings.call_timeout_s)
        try:
            yield
        finally:
            await file_box["client"].close()
            await channel.close()

    app = FastAPI(
        title="Wealth AI Task Platform",
        version="1.0",
        description="Submit portfolio records; the platform writes every report section with "
        "the generative-AI platform in parallel and keeps the task in S3.",
        lifespan=lifespan,
    )
    app.router.route_class = _JsonBodyRoute
    _describe_records(app, _section_fields(settings.config_path))
    timeout = settings.call_timeout_s

    def stub() -> orchestrator_pb2_grpc.OrchestratorServiceAsyncStub:
        return stub_box["stub"]

    async def resolve(key: str) -> Principal | None:
        try:
            reply = await stub().ResolveKey(pb.ResolveKeyRequest(key=key), timeout=timeout)
        except grpc.aio.AioRpcError as err:
            if err.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND):
                return None
            raise from_rpc_error(err, "orchestrator") from err
        role = PrincipalRole.ADMIN if reply.admin else PrincipalRole.CLIENT
        return Principal(reply.principal_id, reply.tenant, role)

    authenticator = auth.Authenticator(settings, resolve, clock or time.monotonic)
    streams = StreamLimits(
        settings.events_per_principal, settings.events_per_task, settings.events_max_lifetime_s
    )
    app.state.streams = streams
    app.state.authenticator = authenticator

    @app.exception_handler(AppError)
    async def app_error(_: Request, error: AppError) -> JSONResponse:
        if error.http_status >= 500:
            logger.warning("request failed: %s", error.message)
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, Unauthenticated) else {}
        if error.retry_after_s is not None:
            headers["Retry-After"] = str(error.retry_after_s)
        return JSONResponse(
            status_code=error.http_status, content=error_body(error), headers=headers
        )

    @app.exception_handler(grpc.aio.AioRpcError)
    async def rpc_error(_: Request, err: grpc.aio.AioRpcError) -> JSONResponse:
        cls = error_for_code(err.code())
        if cls.http_status >= 500:
            logger.warning("orchestrator call failed: %s %s", err.code().name, err.details())
        detail = err.details() or err.code().name
        if cls in (Unavailable, Timeout):
            detail = f"the platform is unavailable right now: {detail}"
        wait = retry_after_of(err)
        headers = {"Retry-After": str(wait)} if wait is not None else None
        return JSONResponse(
            status_code=cls.http_status, content=error_body(cls(detail)), headers=headers
        )

    # Starlette's own exception, so the router's 404 and 405 are answered here as well.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # a body that is not JSON at all: bad input like any other
            return JSONResponse(
                status_code=422, content=http_error_body(422, "body: not valid JSON")
            )
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request.app, request.url.path))
        return JSONResponse(
            status_code=exc.status_code,
            content=http_error_body(exc.status_code, str(exc.detail)),
            headers=headers,
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

    submits = SubmitGate(settings.max_submits_in_flight)

    @app.post("/task/submit", status_code=202, response_model=SubmitResponse, responses=_ERRORS)
    async def submit(
        body: SubmitRequest,
        response: Response,
        principal: Caller,
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
        """Accepts a task and answers at once; the sections are written in the background.

        A client's tasks run in its own tenant: ``tenant``, when given, must be the key's."""
        if body.tenant and body.tenant != principal.tenant and not principal.admin:
            raise RequestValidationError(
                [
                    {
                        "loc": ("body", "tenant"),
                        "msg": f"must be empty or the API key's tenant, {principal.tenant}",
                        "type": "value_error",
                    }
                ]
            )
        with submits.enter():
            reply = await stub().SubmitTask(
                pb.SubmitTaskRequest(
                    username=body.username or "",
                    password=body.password.get_secret_value() if body.password else "",
                    tenant=body.tenant or principal.tenant,
                    records_json=[json.dumps(record) for record in body.data],
                    idempotency_key=idempotency_key or "",
                    caller=caller(principal),
                ),
                timeout=timeout,
            )
        if reply.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return SubmitResponse.model_validate(_to_dict(reply))

    @app.get("/task/{task_id}/status", response_model=StatusResponse, responses=_ERRORS)
    async def status(task_id: TaskId, principal: Caller) -> StatusResponse:
        """Status, progress, per-section state and the step-by-step trace."""
        reply = await stub().GetTaskStatus(
            pb.GetTaskRequest(task_id=task_id, caller=caller(principal)), timeout=timeout
        )
        return _status(reply)

    @app.get("/task/{task_id}/result", response_model=ResultResponse, responses=_ERRORS)
    async def result(task_id: TaskId, principal: Caller) -> ResultResponse:
        """Per-section results, joined ids, total cost and elapsed time (partial while running)."""
        reply = await stub().GetTaskResult(
            pb.GetTaskRequest(task_id=task_id, caller=caller(principal)), timeout=timeout
        )
        data = _to_dict(reply)
        # A proto map has no order; the user's clients see sections in record order.
        order = [name for name in reply.section_detected.split(", ") if name in data["data"]]
        data["data"] = {name: data["data"][name] for name in order} | data["data"]
        return ResultResponse.model_validate(data)

    @app.get("/task/{task_id}/input", response_model=TaskInputResponse, responses=_ERRORS)
    async def task_input(task_id: TaskId, principal: Caller) -> TaskInputResponse:
        """The task's input records as submitted (file references as sent); one storage read."""
        reply = await stub().GetTaskInput(
            pb.GetTaskRequest(task_id=task_id, caller=caller(principal)), timeout=timeout
        )
        return TaskInputResponse(
            task_id=reply.task_id,
            owner=reply.owner,
            tenant=reply.tenant,
            data=[json.loads(record) for record in reply.records_json],
        )

    @app.post("/task/{task_id}/cancel", response_model=StatusResponse, responses=_ERRORS)
    async def cancel(task_id: TaskId, principal: Caller) -> StatusResponse:
        """Stops the sections still running and records the task as cancelled."""
        reply = await stub().CancelTask(
            pb.CancelTaskRequest(task_id=task_id, caller=caller(principal)), timeout=timeout
        )
        return _status(reply)

    @app.post("/task/{task_id}/retry", response_model=StatusResponse, responses=_ERRORS)
    async def retry(task_id: TaskId, principal: Caller) -> StatusResponse:
        """Runs again only the failed sections of a task that ended in error."""
        reply = await stub().RetryTask(
            pb.RetryTaskRequest(task_id=task_id, caller=caller(principal)), timeout=timeout
        )
        return _status(reply)

    @app.get(
        "/task/{task_id}/events",
        responses={
            **_ERRORS,
            200: {
                "description": "One `data: <TaskEvent as JSON>` line per change.",
                "content": {
                    "text/event-stream": {
                        "schema": {
                            "type": "object",
                            "required": ["data"],
                            "properties": {
                                "data": {
                                    "type": "string",
                                    "contentMediaType": "application/json",
                                    "contentSchema": TaskEventOut.model_json_schema(),
                                }
                            },
                        }
                    }
                },
            },
        },
        response_class=StreamingResponse,
    )
    async def events(task_id: TaskId, principal: Caller, request: Request) -> StreamingResponse:
        """Server-sent events: one per change of the task, until it finishes (or the stream's
        lifetime ends: reconnect for more). Streams are bounded per caller and per task (429),
        and one ends within the key cache's life once its key is revoked."""
        key = auth.bearer_key(request)
        slot = streams.open(principal.id, task_id)
        with contextlib.ExitStack() as held:
            held.enter_context(slot)
            call = stub().WatchTask(pb.WatchTaskRequest(task_id=task_id, caller=caller(principal)))
            first = await call.read()  # surfaces 404 and friends as a proper HTTP error
            owned = held.pop_all()  # the stream below releases the slot when it ends
        revoked = asyncio.Event()

        async def recheck() -> None:
            while True:
                await asyncio.sleep(settings.auth_cache_ttl_s)
                try:
                    await authenticator.authenticate(key)
                except Unauthenticated:
                    revoked.set()
                    call.cancel()
                    return
                except AppError as exc:  # the orchestrator is away: the stream goes on
                    logger.info("events of %s: key not checked again yet: %s", task_id, exc)

        async def stream() -> AsyncIterator[bytes]:
            message = first
            watchdog = asyncio.create_task(recheck())
            try:
                async with asyncio.timeout(streams.max_lifetime_s):
                    # read() gives a TaskEvent or grpc.aio.EOF, typed as object by the stubs.
                    while isinstance(message, pb.TaskEvent):
                        yield f"data: {json.dumps(_to_dict(message))}\n\n".encode()
                        message = await call.read()
            except TimeoutError:
                return
            except (asyncio.CancelledError, grpc.aio.AioRpcError):
                if not revoked.is_set():
                    raise
            finally:
                watchdog.cancel()
                call.cancel()
                owned.close()

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/tasks", response_model=TaskListResponse, responses=_ERRORS)
    async def list_tasks(
        principal: Caller,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        status: Annotated[TaskStatusName | None, Query(examples=["completed"])] = None,
        page_token: Annotated[
            str | None,
            Query(
                pattern=task_ids.PATTERN,
                description="next_page_token of the page before (the id of its last task).",
            ),
        ] = None,
        owner: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=200,
                description="Admins only: the tasks of this principal id (403 for a client).",
            ),
        ] = None,
        tenant: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=64,
                pattern=r"^[A-Za-z0-9._-]+$",
                description="Admins only: the tasks of this tenant (403 for a client). Matched "
                "like `status`: a short page with a token means more may follow.",
            ),
        ] = None,
    ) -> TaskListResponse:
        """The caller's tasks (an admin's: everyone's, or ``owner``'s, or ``tenant``'s),
        newest first; pass ``next_page_token`` back as ``page_token`` for more."""
        if owner and not principal.admin:
            raise Forbidden("owner: only admins may list another principal's tasks")
        if tenant and not principal.admin:
            raise Forbidden("tenant: only admins may list by tenant")
        reply = await stub().ListTasks(
            pb.ListTasksRequest(
                limit=limit,
                status=status or "",
                page_token=page_token or "",
                caller=caller(principal),
                owner=owner or "",
                tenant=tenant or "",
            ),
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
                auth=settings.auth,
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
            auth=settings.auth,
        )
        return JSONResponse(status_code=200 if healthy else 503, content=body.model_dump())

    @app.get("/me", response_model=MeResponse, responses={401: _ERRORS[401]})
    async def me(principal: Caller) -> MeResponse:
        """Who the API key stands for: its principal, tenant and role."""
        role = "admin" if principal.admin else "client"
        return MeResponse(
            principal_id=principal.id, tenant=principal.tenant, role=role, auth=settings.auth
        )

    @app.get(
        "/admin/stats", response_model=AdminStatsResponse, responses=_KEY_ERRORS, tags=["admin"]
    )
    async def admin_stats(principal: Caller) -> AdminStatsResponse:
        """Admins only: tasks by state, spend today per tenant, sections in flight and
        breaker states, summed over the orchestrator replicas alive. A client is refused (403):
        the figures are the whole platform's, every tenant's."""
        if not principal.admin:
            raise Forbidden("only an admin may see the platform's figures")
        stats = await stub().GetStats(pb.GetStatsRequest(all_replicas=True), timeout=timeout)
        return AdminStatsResponse(
            tasks_by_state=dict(stats.tasks_by_state),
            tasks_finished=dict(stats.tasks_finished),
            tasks_submitted=stats.tasks_submitted,
            tasks_running=stats.tasks_running,
            spend_day=stats.spend_day,
            spend_today_usd=dict(stats.spend_today_usd),
            sections_in_flight=stats.sections_in_flight,
            sections_queued=stats.queue_size,
            worker_capacity=stats.worker_capacity,
            workers=stats.workers,
            workers_ready=stats.workers_ready,
            breakers=dict(stats.breakers),
            replicas_alive=stats.replicas_alive,
            replicas_counted=stats.replicas_counted,
        )

    @app.post(
        "/admin/keys",
        status_code=201,
        response_model=CreatedKey,
        responses=_KEY_ERRORS,
        tags=["admin"],
    )
    async def create_key(body: CreateKeyRequest, principal: Admin) -> CreatedKey:
        """Creates an API key; the answer is the only time the key itself is shown."""
        reply = await stub().CreateKey(
            pb.CreateKeyRequest(
                caller=caller(principal), name=body.name, tenant=body.tenant, role=body.role
            ),
            timeout=timeout,
        )
        return CreatedKey.model_validate({**_api_key(reply.api_key), "key": reply.key})

    @app.get("/admin/keys", response_model=KeyListResponse, responses=_KEY_ERRORS, tags=["admin"])
    async def list_keys(principal: Admin) -> KeyListResponse:
        """Every API key, revoked ones included, without the keys themselves."""
        reply = await stub().ListKeys(pb.ListKeysRequest(caller=caller(principal)), timeout=timeout)
        keys = [ApiKeyOut.model_validate(_api_key(k)) for k in reply.keys]
        return KeyListResponse(keys=keys, count=len(keys))

    @app.delete(
        "/admin/keys/{key_id}", response_model=ApiKeyOut, responses=_KEY_ERRORS, tags=["admin"]
    )
    async def revoke_key(key_id: KeyId, principal: Admin) -> ApiKeyOut:
        """Revokes an API key: at once on this gateway, within the key cache's TTL (at most
        15 s) on every other."""
        reply = await stub().RevokeKey(
            pb.RevokeKeyRequest(caller=caller(principal), key_id=key_id), timeout=timeout
        )
        authenticator.forget(key_id)
        return ApiKeyOut.model_validate(_api_key(reply))

    files.install(app, settings, lambda: file_box["client"])
    agensium.install(app, settings, lambda: file_box["client"], stub, caller)
    prism.install(app, settings, lambda: file_box["client"], stub, caller)
    dashboard.install(app)
    # A file upload streams its body under a size limit of its own: the file's
    # (gateway.files, gateway.agensium) or the document's (gateway.prism).
    uploads = frozenset({("POST", "/files"), ("POST", "/profile/async"), ("POST", "/upload")})
    app.add_middleware(
        BodyGuard,
        max_bytes=settings.max_body_bytes,
        idle_s=settings.body_idle_timeout_s,
        exempt=uploads,
    )
    app.add_middleware(dashboard.NoStore)
    app.add_middleware(HttpMetrics)  # outermost: counts the body guard's 413s and 408s too
    if tracing.enabled():
        app.add_middleware(tracing.HttpTracing)
    return app
