"""Every REST call of the client, as data: the request to send and how to read its answer.

Both clients (:mod:`wealthai_client.client`, :mod:`wealthai_client.async_client`) build their
requests here and read the answers here, so the two differ only in how they send and wait. The
models are the gateway's own (:mod:`gateway.models`): what the gateway validates and answers is
what the client sends and reads. Ids are checked against their formats before they go into a
path, so a malformed one is :class:`~wealthai_client.errors.BadInput` without a call.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from common import api_keys, file_ids, task_ids
from gateway.models import (
    ApiKeyOut,
    CreatedKey,
    CreateKeyRequest,
    FileListResponse,
    FileOut,
    FileUrlResponse,
    KeyListResponse,
    ResultResponse,
    StatusResponse,
    SubmitRequest,
    SubmitResponse,
    TaskListResponse,
    TaskStatusName,
)
from wealthai_client.config import Config
from wealthai_client.errors import BadInput, ServerError, from_response

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

_TASK_ID = re.compile(task_ids.PATTERN)
_FILE_ID = re.compile(file_ids.PATTERN)
_KEY_ID = re.compile(api_keys.KEY_ID_PATTERN)


@dataclass(frozen=True)
class Call(Generic[T]):
    """One REST call: the request's parts and the reader of its (successful) answer."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    params: Mapping[str, str | int] = field(default_factory=dict)
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


def headers(config: Config) -> dict[str, str]:
    """The headers of every request: the key, when there is one, only ever in a header."""
    sent = {"User-Agent": "wealthai-client", "Accept": "application/json"}
    if config.api_key:
        sent["Authorization"] = f"Bearer {config.api_key}"
    return sent


def answer(call: Call[T], response: httpx.Response) -> T:
    """What a call answered, its body read: the decoded model, or the error it stands for."""
    if response.is_error:
        raise from_response(response)
    return call.read(response)


def model(cls: type[M]) -> Callable[[httpx.Response], M]:
    """Reads an answer as ``cls``; an answer that does not fit is the server's fault."""

    def read(response: httpx.Response) -> M:
        try:
            return cls.model_validate_json(response.content)
        except ValidationError as exc:
            raise ServerError(
                f"{response.request.method} {response.request.url.path}: the answer is not a "
                f"{cls.__name__} ({exc.error_count()} problems; {exc.errors()[0]['msg']})",
                status=response.status_code,
            ) from None

    return read


def _nothing(_: httpx.Response) -> None:
    return None


def invalid(exc: ValidationError, what: str) -> BadInput:
    """A local validation failure in the gateway's own words: ``field: reason`` per problem."""
    errors = [
        {"field": ".".join(str(p) for p in (what, *e["loc"]) if p != ""), "reason": e["msg"]}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
    return BadInput(detail, code="invalid_input", errors=errors)


def _checked(value: str, pattern: re.Pattern[str], what: str, example: str) -> str:
    if not pattern.fullmatch(value):
        raise BadInput(f"{what}: {value!r} is not one (they read like {example})")
    return value


def task_id(value: str) -> str:
    return _checked(value, _TASK_ID, "task id", task_ids.EXAMPLE)


def file_id(value: str) -> str:
    return _checked(value, _FILE_ID, "file id", file_ids.EXAMPLE)


def key_id(value: str) -> str:
    return _checked(value, _KEY_ID, "key id", "3f9a1c0b7d42")


# -- tasks -------------------------------------------------------------------------------------


def task_body(task: SubmitRequest | Mapping[str, Any]) -> dict[str, Any]:
    """A task as the JSON the gateway takes, checked by the gateway's own model first."""
    try:
        request = task if isinstance(task, SubmitRequest) else SubmitRequest.model_validate(task)
    except ValidationError as exc:
        raise invalid(exc, "body") from None
    body = request.model_dump(mode="json", exclude_none=True)
    if request.password is not None:  # dumped masked; the gateway needs it
        body["password"] = request.password.get_secret_value()
    return body


def submit(
    task: SubmitRequest | Mapping[str, Any], idempotency_key: str | None = None
) -> Call[SubmitResponse]:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return Call(
        "POST", "/task/submit", model(SubmitResponse), json=task_body(task), headers=headers
    )


def status(task: str) -> Call[StatusResponse]:
    return Call("GET", f"/task/{task_id(task)}/status", model(StatusResponse))


def result(task: str) -> Call[ResultResponse]:
    return Call("GET", f"/task/{task_id(task)}/result", model(ResultResponse))


def cancel(task: str) -> Call[StatusResponse]:
    return Call("POST", f"/task/{task_id(task)}/cancel", model(StatusResponse))


def retry(task: str) -> Call[StatusResponse]:
    return Call("POST", f"/task/{task_id(task)}/retry", model(StatusResponse))


def events_path(task: str) -> str:
    return f"/task/{task_id(task)}/events"


def check_event_stream(response: httpx.Response) -> None:
    """A successful answer to the events route must be an event stream (a proxy's page is not)."""
    kind = response.headers.get("content-type", "")
    if not kind.startswith("text/event-stream"):
        raise ServerError(
            f"{response.request.url.path}: not an event stream ({kind or 'no content type'})",
            status=response.status_code,
        )


def tasks(
    *,
    status: TaskStatusName | None = None,
    limit: int = 20,
    page_token: str | None = None,
    owner: str | None = None,
) -> Call[TaskListResponse]:
    if not 1 <= limit <= 100:
        raise BadInput(f"limit: 1 to 100, not {limit}")
    params: dict[str, str | int] = {"limit": limit}
    if status:
        params["status"] = status
    if page_token:
        params["page_token"] = task_id(page_token)
    if owner:
        params["owner"] = owner
    return Call("GET", "/tasks", model(TaskListResponse), params=params)


# -- files -------------------------------------------------------------------------------------


def upload(name: str, content_type: str, size: int | None, temporary: bool) -> Call[FileOut]:
    """The request of a raw-body upload; its body (the bytes, streamed) comes from the caller."""
    headers = {"X-Filename": quote(name, safe=""), "Content-Type": content_type}
    if size is not None:  # lets the gateway refuse a file over its limit before any byte
        headers["Content-Length"] = str(size)
    params: dict[str, str | int] = {"temporary": "true"} if temporary else {}
    return Call("POST", "/files", model(FileOut), params=params, headers=headers)


def download_path(file: str) -> str:
    return f"/files/{file_id(file)}"


def files(
    *, limit: int = 100, page_token: str | None = None, owner: str | None = None
) -> Call[FileListResponse]:
    if not 1 <= limit <= 1000:
        raise BadInput(f"limit: 1 to 1000, not {limit}")
    params: dict[str, str | int] = {"limit": limit}
    if page_token:
        params["page_token"] = file_id(page_token)
    if owner:
        params["owner"] = owner
    return Call("GET", "/files", model(FileListResponse), params=params)


def delete_file(file: str) -> Call[None]:
    return Call("DELETE", f"/files/{file_id(file)}", _nothing)


def file_url(file: str, expires_s: int | None = None) -> Call[FileUrlResponse]:
    params: dict[str, str | int] = {"expires_s": expires_s} if expires_s else {}
    return Call("GET", f"/files/{file_id(file)}/url", model(FileUrlResponse), params=params)


# -- API keys (admin) --------------------------------------------------------------------------


def create_key(
    name: str, tenant: str, role: Literal["client", "admin"] = "client"
) -> Call[CreatedKey]:
    try:
        body = CreateKeyRequest(name=name, tenant=tenant, role=role)
    except ValidationError as exc:
        raise invalid(exc, "body") from None
    return Call("POST", "/admin/keys", model(CreatedKey), json=body.model_dump(mode="json"))


def list_keys() -> Call[KeyListResponse]:
    return Call("GET", "/admin/keys", model(KeyListResponse))


def revoke_key(key: str) -> Call[ApiKeyOut]:
    return Call("DELETE", f"/admin/keys/{key_id(key)}", model(ApiKeyOut))
