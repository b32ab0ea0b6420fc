"""The one error table of the platform.

Every domain error knows its gRPC status code and its HTTP status. Servers turn a raised
``AppError`` into a gRPC status in one interceptor (:mod:`common.grpc_server`); callers turn a
gRPC status back into the same ``AppError`` (:func:`from_rpc_error`), and the gateway answers
with the HTTP status of that same row (:func:`http_status_for`)::

    AppError                    gRPC                 HTTP
    ├── InvalidInput            INVALID_ARGUMENT     422
    ├── Unauthenticated         UNAUTHENTICATED      401
    ├── NotFound                NOT_FOUND            404
    ├── Conflict                ABORTED              409
    ├── WrongState              FAILED_PRECONDITION  409
    ├── TooLarge                OUT_OF_RANGE         413
    ├── Overloaded              RESOURCE_EXHAUSTED   429
    ├── Unavailable             UNAVAILABLE          503
    ├── Timeout                 DEADLINE_EXCEEDED    504
    └── Internal                INTERNAL / other     500
"""

from __future__ import annotations

import grpc


class AppError(Exception):
    """Base of every error a service reports to its callers. ``message`` is safe to show."""

    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(AppError):
    """The caller sent something malformed; the message names the field and why."""

    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 422


class Unauthenticated(AppError):
    """The AI platform refused the user's credentials."""

    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401


class NotFound(AppError):
    """The named task (or object) does not exist."""

    grpc_code = grpc.StatusCode.NOT_FOUND
    http_status = 404


class Conflict(AppError):
    """A concurrent writer changed the object first (compare-and-swap lost)."""

    grpc_code = grpc.StatusCode.ABORTED
    http_status = 409


class WrongState(AppError):
    """The operation does not fit the object's current state (e.g. cancel a finished task)."""

    grpc_code = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409


class TooLarge(AppError):
    """The request exceeds a size limit; the message names the limit."""

    grpc_code = grpc.StatusCode.OUT_OF_RANGE
    http_status = 413


class Overloaded(AppError):
    """The service is at capacity; retry later."""

    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429


class Unavailable(AppError):
    """A dependency (S3, a service) cannot be reached right now."""

    grpc_code = grpc.StatusCode.UNAVAILABLE
    http_status = 503


class Timeout(AppError):
    """A dependency did not answer in time."""

    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504


class Internal(AppError):
    """A bug or an unexpected failure; details are in the server's log, not in the message."""


_BY_GRPC_CODE: dict[grpc.StatusCode, type[AppError]] = {
    cls.grpc_code: cls
    for cls in (
        InvalidInput,
        Unauthenticated,
        NotFound,
        Conflict,
        WrongState,
        TooLarge,
        Overloaded,
        Unavailable,
        Timeout,
        Internal,
    )
}
_BY_GRPC_CODE[grpc.StatusCode.CANCELLED] = Unavailable


def error_for_code(code: grpc.StatusCode) -> type[AppError]:
    """The error class of the table row for a gRPC status code."""
    return _BY_GRPC_CODE.get(code, Internal)


def http_status_for(code: grpc.StatusCode) -> int:
    """The HTTP status the gateway answers for a gRPC status code."""
    return error_for_code(code).http_status


def from_rpc_error(err: grpc.aio.AioRpcError, service: str) -> AppError:
    """The ``AppError`` a failed call to ``service`` stands for, keeping the server's message."""
    cls = error_for_code(err.code())
    detail = err.details() or err.code().name
    if cls in (Unavailable, Timeout):
        detail = f"{service} unavailable: {detail}"
    return cls(detail)
