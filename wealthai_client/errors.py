"""The client's one exception tree, and the mapping from the gateway's answers onto it.

The gateway answers every error with ``{"error": <code>, "detail": <message>}`` from the
platform's one error table (:mod:`common.errors`); a 422 adds ``errors: [{field, reason}]`` and
a 429 the ``Retry-After`` header. The client raises one exception per kind of answer a caller
handles differently::

    WealthAIError                 status       REST codes
    ├── BadInput                  400 413 416 422 and any other 4xx
    │                                          invalid_input, too_large, range_not_satisfiable
    ├── Unauthorized              401          unauthenticated
    ├── Forbidden                 403          forbidden
    ├── NotFound                  404          not_found (another owner's object too)
    ├── Conflict                  409          conflict, wrong_state
    ├── RateLimited               429          rate_limited (``retry_after_s``)
    ├── ServerError               5xx          internal, upstream_error, unavailable, timeout
    │                                          (and an answer the client cannot read)
    ├── Unreachable               no answer    connection refused, DNS, timeouts, a dropped link
    └── WaitTimeout               -            a wait's own deadline passed; the task runs on

Every error keeps what the gateway said: ``status`` (None when there was no answer), ``code``
(the REST code), ``detail`` and, for a 422, ``errors``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import httpx

from common import errors as table
from gateway.models import StatusResponse


class WealthAIError(Exception):
    """Base of every error the client raises. ``detail`` is the gateway's message, safe to show."""

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        code: str = "",
        errors: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.code = code
        self.errors = errors or []

    def __str__(self) -> str:
        return f"{self.detail} ({self.code or self.status})" if self.status else self.detail


class BadInput(WealthAIError):
    """The request can never succeed as sent: invalid (422 names each field in ``errors``), too
    large (413), a range outside the file (416), or refused as malformed (400)."""


class Unauthorized(WealthAIError):
    """No API key, or an unknown or revoked one."""


class Forbidden(WealthAIError):
    """The key is valid but may not do this (a client calling an admin operation)."""


class NotFound(WealthAIError):
    """No such task, file or key, or another owner's (the gateway answers both alike)."""


class Conflict(WealthAIError):
    """Another writer changed the object first (``code`` ``conflict``), or the object's state
    does not allow it (``wrong_state``: cancel a finished task, retry one that did not fail)."""


class RateLimited(WealthAIError):
    """Slow down: too many calls, tasks in flight or open event streams. ``retry_after_s`` is
    the gateway's ``Retry-After``, when it gave one."""

    def __init__(self, detail: str, *, retry_after_s: float | None = None, **kw: Any) -> None:
        super().__init__(detail, **kw)
        self.retry_after_s = retry_after_s


class ServerError(WealthAIError):
    """The platform failed (5xx: a bug, a dependency down, the AI platform refusing), or
    answered something the client cannot read."""


class Unreachable(WealthAIError):
    """No answer from the gateway: connection refused, a name that does not resolve, a
    timeout, or a connection dropped mid-answer."""


class WaitTimeout(WealthAIError):
    """A wait's deadline passed before the task finished; ``last`` is its latest status."""

    def __init__(self, detail: str, last: StatusResponse) -> None:
        super().__init__(detail)
        self.last = last


_BY_CODE: dict[str, type[WealthAIError]] = {
    table.InvalidInput.code: BadInput,
    table.TooLarge.code: BadInput,
    table.RangeNotSatisfiable.code: BadInput,
    table.Unauthenticated.code: Unauthorized,
    table.Forbidden.code: Forbidden,
    table.NotFound.code: NotFound,
    table.Conflict.code: Conflict,
    table.WrongState.code: Conflict,
    table.Overloaded.code: RateLimited,
}
_BY_STATUS: dict[int, type[WealthAIError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    429: RateLimited,
}


def error_class(status: int, code: str) -> type[WealthAIError]:
    """The exception for an error answer: a 5xx is always a ServerError; otherwise the REST
    code decides, then the status (another 4xx is BadInput)."""
    if status >= 500:
        return ServerError
    return _BY_CODE.get(code) or _BY_STATUS.get(status) or BadInput


def retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (a number of seconds; an HTTP date is not used here)."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None


def from_response(response: httpx.Response) -> WealthAIError:
    """The exception an error answer (status >= 400, body already read) stands for."""
    code, detail, errors = "", "", None
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        code = body["error"]
        detail = str(body.get("detail", ""))
        listed = body.get("errors")
        if isinstance(listed, list):
            errors = [
                {str(k): str(v) for k, v in item.items()}
                for item in listed
                if isinstance(item, dict)
            ]
    else:  # not the gateway's error shape: a proxy's page, a crash
        text = response.content[:200].decode("utf-8", "replace").strip()
        detail = f"HTTP {response.status_code} {response.reason_phrase}" + (
            f": {text}" if text else ""
        )
    cls = error_class(response.status_code, code)
    extra: dict[str, Any] = {}
    if cls is RateLimited:
        extra["retry_after_s"] = retry_after(response.headers.get("retry-after"))
    return cls(detail, status=response.status_code, code=code, errors=errors, **extra)


@contextlib.contextmanager
def transport_errors(url: httpx.URL | str) -> Iterator[None]:
    """Turns httpx's failures to get an answer into :class:`Unreachable` (naming the address,
    never the headers that carry the key)."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise Unreachable(f"{_origin(url)} did not answer in time ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        reason = str(exc) or type(exc).__name__
        raise Unreachable(f"cannot reach {_origin(url)}: {reason}") from exc


def _origin(url: httpx.URL | str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.netloc.decode()}"
