import grpc
import pytest

from common import errors
from common.channels import open_channel
from common.grpc_server import ServiceHost
from common.settings import GrpcServerSettings
from common.tls import Role
from wealthai.worker.v1 import worker_pb2, worker_pb2_grpc

ROWS = [
    (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT, 422, "invalid_input"),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, 401, "unauthenticated"),
    (errors.Forbidden, grpc.StatusCode.PERMISSION_DENIED, 403, "forbidden"),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND, 404, "not_found"),
    (errors.Conflict, grpc.StatusCode.ABORTED, 409, "conflict"),
    (errors.WrongState, grpc.StatusCode.FAILED_PRECONDITION, 409, "wrong_state"),
    (errors.TooLarge, grpc.StatusCode.OUT_OF_RANGE, 413, "too_large"),
    (errors.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "rate_limited"),
    (errors.UpstreamError, grpc.StatusCode.DATA_LOSS, 502, "upstream_error"),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE, 503, "unavailable"),
    (errors.Timeout, grpc.StatusCode.DEADLINE_EXCEEDED, 504, "timeout"),
    (errors.Internal, grpc.StatusCode.INTERNAL, 500, "internal"),
]
ROW_IDS = [row[0].__name__ for row in ROWS]


@pytest.mark.parametrize(("cls", "code", "http", "rest"), ROWS, ids=ROW_IDS)
def test_each_row_maps_both_ways(cls, code, http, rest):
    assert cls.grpc_code == code
    assert cls.http_status == http
    assert cls.code == rest
    assert errors.error_for_code(code) is cls
    assert errors.http_status_for(code) == http
    assert errors.error_body(cls("what went wrong")) == {
        "error": rest,
        "detail": "what went wrong",
    }


def test_every_rest_code_belongs_to_one_row():
    codes = [row[3] for row in ROWS]
    assert len(set(codes)) == len(codes)


def test_unknown_codes_are_internal_and_cancelled_is_unavailable():
    assert errors.error_for_code(grpc.StatusCode.UNKNOWN) is errors.Internal
    assert errors.error_for_code(grpc.StatusCode.UNIMPLEMENTED) is errors.Internal
    assert errors.error_for_code(grpc.StatusCode.CANCELLED) is errors.Unavailable


@pytest.mark.parametrize(
    ("status", "rest"),
    [
        (401, "unauthenticated"),
        (403, "forbidden"),
        (404, "not_found"),
        (413, "too_large"),
        (422, "invalid_input"),
        (405, "method_not_allowed"),
    ],
)
def test_http_errors_take_the_code_of_their_row_or_their_http_name(status, rest):
    assert errors.http_error_body(status, "why") == {"error": rest, "detail": "why"}


class Failing(worker_pb2_grpc.SectionWorkerServiceServicer):
    def __init__(self, error: Exception) -> None:
        self.error = error

    async def GetLoad(self, request, context):
        raise self.error


async def _failed_call(error: Exception) -> grpc.aio.AioRpcError:
    host = ServiceHost(GrpcServerSettings(tls_mode="plaintext"), "test", Role.WORKER)
    host.add(worker_pb2_grpc.add_SectionWorkerServiceServicer_to_server, Failing(error), "t")
    port = await host.start()
    try:
        async with open_channel(f"127.0.0.1:{port}", None, Role.WORKER) as channel:
            stub = worker_pb2_grpc.SectionWorkerServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetLoad(worker_pb2.GetLoadRequest())
    finally:
        await host.stop()
    return info.value


@pytest.mark.parametrize(("cls", "code", "http", "rest"), ROWS, ids=ROW_IDS)
async def test_each_row_crosses_a_real_call_and_comes_back_as_itself(cls, code, http, rest):
    failed = await _failed_call(cls("no such worker"))

    assert failed.code() == code
    err = errors.from_rpc_error(failed, "test")
    assert type(err) is cls
    assert err.message.endswith("no such worker")
    assert errors.error_body(err)["error"] == rest


async def test_any_other_exception_becomes_internal_without_its_text():
    failed = await _failed_call(RuntimeError("secret internals"))

    assert failed.code() == grpc.StatusCode.INTERNAL
    assert "secret internals" not in (failed.details() or "")
    assert isinstance(errors.from_rpc_error(failed, "test"), errors.Internal)
