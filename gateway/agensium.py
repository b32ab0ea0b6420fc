"""The Agensium data-profiling API: its clients' two calls, on the platform's tasks.

- ``POST /profile/async`` takes a ``multipart/form-data`` form with a ``file`` part (CSV,
  Excel .xlsx or Parquet), streams it into storage as a temporary file of the caller (deleted
  when the task ends), and submits a task of one record ``{"table_file": {"file_id": …}}`` for
  the ``data_profile`` section (kind ``profile_table``, which needs no platform credentials);
  it answers at once with ``{task_id, status: "PENDING"}``.
- ``GET /tasks/{task_id}`` answers ``{task_id, status, result}``: ``PENDING`` until the section
  runs, ``STARTED`` while it does, then ``SUCCESS`` with the profile as ``result`` or
  ``FAILURE`` with the error text. Its path never meets the task listing (``GET /tasks``).

Both are authenticated by the caller's API key and see only the caller's own tasks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Path, Request
from pydantic import BaseModel, Field

from common import task_ids
from common.principals import Principal
from gateway import auth, upload_body
from gateway.file_client import FileClient, NewFile
from gateway.models import ErrorResponse
from gateway.settings import GatewaySettings
from wealthai.orchestrator.v1 import orchestrator_pb2 as pb
from wealthai.orchestrator.v1 import orchestrator_pb2_grpc

SECTION = "data_profile"
TABLE_FIELD = "table_file"
EXTENSIONS = (".csv", ".xlsx", ".parquet")
TAGS: list[str | Any] = ["agensium"]

Caller = Annotated[Principal, Depends(auth.current_principal)]
TaskId = Annotated[str, Path(pattern=task_ids.PATTERN, examples=[task_ids.EXAMPLE])]
Status = Literal["PENDING", "STARTED", "SUCCESS", "FAILURE"]


def _errors(**texts: str) -> dict[int | str, dict[str, Any]]:
    common = {
        "401": "No API key, or an unknown or revoked one (`unauthenticated`)",
        "422": "Invalid input: which field and why (`invalid_input`)",
        "503": "A service behind the gateway is down (`unavailable`)",
        "504": "A service behind the gateway did not answer in time (`timeout`)",
    }
    return {
        int(code): {"model": ErrorResponse, "description": text}
        for code, text in (common | texts).items()
    }


_UPLOAD_BODY = upload_body.form_request_body(
    "A multipart/form-data form whose file part (a part with a filename "
    "ending in .csv, .xlsx or .parquet) is the table; other form fields are ignored."
)


class ProfileSubmitted(BaseModel):
    task_id: str
    status: Status = "PENDING"


class ProfileTask(BaseModel):
    task_id: str
    status: Status
    result: Any = Field(
        None, description="SUCCESS: the profile; FAILURE: the error text; otherwise null."
    )


def status_of(task_status: str, section: str) -> Status:
    """The Agensium status of a task in ``task_status`` whose section is in ``section``."""
    if task_status == "completed":
        return "SUCCESS"
    if task_status in ("error", "cancelled"):
        return "FAILURE"
    return "STARTED" if section == "running" or task_status == "processing" else "PENDING"


def check_name(name: str) -> str:
    """The file's name, when its extension is one this API profiles; InvalidInput otherwise."""
    return upload_body.check_extension(
        name, EXTENSIONS, f"{', '.join(EXTENSIONS)} files can be profiled"
    )


def install(
    app: FastAPI,
    settings: GatewaySettings,
    files: Callable[[], FileClient],
    stub: Callable[[], orchestrator_pb2_grpc.OrchestratorServiceAsyncStub],
    caller: Callable[[Principal], pb.Caller],
) -> None:
    """Adds the two routes to ``app``."""
    timeout = settings.call_timeout_s
    limit = settings.file_max_bytes

    @app.post(
        "/profile/async",
        tags=TAGS,
        status_code=202,
        response_model=ProfileSubmitted,
        responses=_errors(
            **{
                "408": upload_body.STALLED,
                "413": f"The file is larger than the limit ({limit} bytes) (`too_large`)",
                "429": "Too many tasks submitted or running for this key (`rate_limited`)",
            }
        ),
        openapi_extra=_UPLOAD_BODY,
    )
    async def profile_async(request: Request, principal: Caller) -> ProfileSubmitted:
        """Profiles an uploaded CSV, .xlsx or Parquet file in the background."""
        part, data = await upload_body.form_upload(request.headers, request.stream(), limit)
        name = check_name(part.name)
        info = await files().upload(
            principal, NewFile(name, part.content_type, temporary=True, max_bytes=limit), data
        )
        record = {TABLE_FIELD: {"file_id": info.file_id}}
        reply = await stub().SubmitTask(
            pb.SubmitTaskRequest(records_json=[json.dumps(record)], caller=caller(principal)),
            timeout=timeout,
        )
        return ProfileSubmitted(task_id=reply.task_id)

    @app.get(
        "/tasks/{task_id}",
        tags=TAGS,
        response_model=ProfileTask,
        responses=_errors(**{"404": "Unknown task, or another owner's (`not_found`)"}),
    )
    async def profile_task(task_id: TaskId, principal: Caller) -> ProfileTask:
        """A task's state in Agensium's terms, with the profile once it is done."""
        reply = await stub().GetTaskResult(
            pb.GetTaskRequest(task_id=task_id, caller=caller(principal)), timeout=timeout
        )
        outcome = reply.data.get(SECTION) if SECTION in reply.data else None
        status = status_of(reply.status, outcome.status if outcome else "")
        result: Any = None
        if status == "SUCCESS" and outcome is not None and outcome.result_json:
            result = json.loads(outcome.result_json)
        elif status == "FAILURE":
            result = (outcome.error if outcome is not None else "") or reply.message
        return ProfileTask(task_id=task_id, status=status, result=result)
