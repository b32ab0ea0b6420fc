"""The one error table of the platform.

Every domain error knows its gRPC status code, its HTTP status and a stable REST error code of
its own, so REST clients never see transport vocabulary. Servers turn a raised ``AppError``
into a gRPC status in one interceptor (:mod:`common.grpc_server`); callers turn a gRPC status
back into the same ``AppError`` (:func:`from_rpc_error`), and the gateway answers with the HTTP
status and REST code of that same row (:func:`error_body`)::

    AppError                    gRPC                 HTTP  REST code
    ├── InvalidInput            INVALID_ARGUMENT     422   invalid_input
    ├── Unauthenticated         UNAUTHENTICATED      401   unauthenticated
    ├── Forbidden               PERMISSION_DENIED    403   forbidden
    ├── NotFound                NOT_FOUND            404   not_found
    ├── Conflict                ABORTED              409   conflict
    ├── WrongState              FAILED_PRECONDITION  409   wrong_state
    ├── TooLarge                OUT_OF_RANGE         413   too_large
    ├── RangeNotSatisfiable     (OUT_OF_RANGE)       416   range_not_satisfiable
    ├── Overloaded              RESOURCE_EXHAUSTED   429   rate_limited
    ├── UpstreamError           DATA_LOSS            502   upstream_error
    ├── Unavailable             UNAVAILABLE          503   unavailable
    ├── Timeout                 DEADLINE_EXCEEDED    504   timeout
    └── Internal                INTERNAL / other     500   internal

``UpstreamError`` is an outside system (the AI platform) refusing a request for good or
answering outside its contract: retrying will not help until someone fixes one side. gRPC has
no code for that, and each row needs a code of its own to survive a round trip. UNAVAILABLE
would make channels and callers repeat a request that fails the same way; FAILED_PRECONDITION
and ABORTED belong to other rows; UNKNOWN is what gRPC itself reports for a crashed handler.
DATA_LOSS is never produced by the gRPC library, is not retried by any policy here, and reads
as "the data we got is unusable", which is what a contract breach is.

``RangeNotSatisfiable`` is a row of the REST side only: a read of a byte range that misses the
file crosses gRPC as OUT_OF_RANGE, the code TooLarge owns, and the caller that asked for the
range (the gateway's file download) knows it means this row. It is not in :data:`ROWS`, so
OUT_OF_RANGE keeps meaning TooLarge everywhere else.

HTTP errors no row owns (405 from the router) take their HTTP name (:func:`http_error_body`).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import grpc


class AppError(Exception):
    """Base of every error a service reports to its callers. ``message`` is safe to show."""

    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    http_status: int = 500
    code: str = "internal"
    # Seconds after which the same call may succeed; crosses gRPC as RETRY_AFTER metadata and
    # reaches REST clients as the Retry-After header.
    retry_after_s: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(AppError):
    """The caller sent something malformed; the message names the field and why."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 422
    code = "invalid_input"


class Unauthenticated(AppError):
    """The caller's API key is missing, unknown or revoked, or the AI platform refused the
    user's credentials."""

    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401
    code = "unauthenticated"


class Forbidden(AppError):
    """The caller is known but may not do this (a client calling an admin-only operation).

    Only for operations, never for objects: another owner's task is NotFound, so ids cannot be
    probed."""

    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403
    code = "forbidden"


class NotFound(AppError):
    """The named task (or object) does not exist."""

    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404
    code = "not_found"


class Conflict(AppError):
    """A concurrent writer changed the object first (compare-and-swap lost)."""

    grpc_code = grpc.StatusCode.ABORTED
    http_status = 409
    code = "conflict"


class WrongState(AppError):
    """The operation does not fit the object's current state (e.g. cancel a finished task)."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409
    code = "wrong_state"


class TooLarge(AppError):
    """The request exceeds a size limit; the message names the limit."""

    grpc_code = grpc.StatusCode.OUT_OF_RANGE
    http_status = 413
    code = "too_large"


class RangeNotSatisfiable(AppError):
    """A byte range asked for misses the file; ``size`` is the file's size (HTTP answers with
    ``Content-Range: bytes */<size>``)."""

    grpc_code = grpc.StatusCode.OUT_OF_RANGE
    http_status = 416
    code = "range_not_satisfiable"

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


class Overloaded(AppError):
    """The service is at capacity; retry later."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429
    code = "rate_limited"


class UpstreamError(AppError):
    """An outside system rejected the request (a 4xx that is not about credentials or load) or
    answered outside its contract; the same request will fail again."""

    grpc_code = grpc.StatusCode.DATA_LOSS
    http_status = 502
    code = "upstream_error"


class Unavailable(AppError):
    """A dependency (S3, a service) cannot be reached right now."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    code = "unavailable"


class Timeout(AppError):
    """A dependency did not answer in time."""

    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504
    code = "timeout"


class Internal(AppError):
    """A bug or an unexpected failure; details are in the server's log, not in the message."""


ROWS: tuple[type[AppError], ...] = (
    InvalidInput,
    Unauthenticated,
    Forbidden,
    NotFound,
    Conflict,
    WrongState,
    TooLarge,
    Overloaded,
    UpstreamError,
    Unavailable,
    Timeout,
    Internal,
)
"""Every row of the table that crosses gRPC, in the order of the docstring."""

REST_ONLY: tuple[type[AppError], ...] = (RangeNotSatisfiable,)
"""Rows only the REST side answers with (see the module docstring)."""

_BY_GRPC_CODE: dict[grpc.StatusCode, type[AppError]] = {cls.grpc_code: cls for cls in ROWS}
_BY_GRPC_CODE[grpc.StatusCode.CANCELLED] = Unavailable
# Where two rows share an HTTP status (409), the first one names it.
_BY_HTTP_STATUS: dict[int, type[AppError]] = {cls.http_status: cls for cls in reversed(ROWS)}


def error_for_code(code: grpc.StatusCode) -> type[AppError]:
    """The error class of the table row for a gRPC status code."""
    return _BY_GRPC_CODE.get(code, Internal)


def http_status_for(code: grpc.StatusCode) -> int:
    """The HTTP status the gateway answers for a gRPC status code."""
    return error_for_code(code).http_status


def error_body(error: AppError) -> dict[str, Any]:
    """The REST body of an error: its row's stable code and its (safe) message."""
    return {"error": error.code, "detail": error.message}


def http_error_body(status: int, detail: str) -> dict[str, Any]:
    """The REST body of an error known only by its HTTP status (raised by the web framework):
    the code of the row that owns the status, else the status's HTTP name."""
    cls = _BY_HTTP_STATUS.get(status)
    if cls is not None:
        return error_body(cls(detail))
    try:
        name = HTTPStatus(status).phrase
    except ValueError:
        name = "http error"
    return {"error": name.lower().replace(" ", "_").replace("-", "_"), "detail": detail}


RETRY_AFTER = "retry-after"


def retry_after_of(err: grpc.aio.AioRpcError) -> int | None:
    """The seconds a failed call's server asked the caller to wait, if it said."""
    for key, value in err.trailing_metadata() or ():
        if key == RETRY_AFTER and isinstance(value, str) and value.isdigit():
            return int(value)
    return None


def from_rpc_error(err: grpc.aio.AioRpcError, service: str) -> AppError:
    """The ``AppError`` a failed call to ``service`` stands for, keeping the server's message."""
    cls = error_for_code(err.code())
    detail = err.details() or err.code().name
    if cls in (Unavailable, Timeout):
        detail = f"{service} unavailable: {detail}"
    return cls(detail)
