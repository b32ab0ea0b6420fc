import grpc
import pytest

from common import errors


@pytest.mark.parametrize(
    ("cls", "code", "http"),
    [
        (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT, 422),
        (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED, 401),
        (errors.NotFound, grpc.StatusCode.NOT_FOUND, 404),
        (errors.Conflict, grpc.StatusCode.ABORTED, 409),
        (errors.WrongState, grpc.StatusCode.FAILED_PRECONDITION, 409),
        (errors.TooLarge, grpc.StatusCode.OUT_OF_RANGE, 413),
        (errors.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (errors.Unavailable, grpc.StatusCode.UNAVAILABLE, 503),
        (errors.Timeout, grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (errors.Internal, grpc.StatusCode.INTERNAL, 500),
    ],
)
def test_each_row_maps_both_ways(cls, code, http):
    assert cls.grpc_code == code
    assert cls.http_status == http
    assert errors.error_for_code(code) is cls
    assert errors.http_status_for(code) == http


def test_unknown_codes_are_internal_and_cancelled_is_unavailable():
    assert errors.http_status_for(grpc.StatusCode.UNKNOWN) == 500
    assert errors.http_status_for(grpc.StatusCode.DATA_LOSS) == 500
    assert errors.http_status_for(grpc.StatusCode.CANCELLED) == 503


async def test_interceptor_and_from_rpc_error_round_trip():
    """A raised AppError crosses a real gRPC call and comes back as the same class; any other
    exception becomes INTERNAL without its text."""
    from common.channels import open_channel
    from common.grpc_server import ServiceHost
    from common.settings import ServiceSettings
    from wealthai.worker.v1 import worker_pb2, worker_pb2_grpc

    class Failing(worker_pb2_grpc.SectionWorkerServiceServicer):
        async def GetLoad(self, request, context):
            raise errors.NotFound("no such worker")

        async def Authenticate(self, request, context):
            raise RuntimeError("secret internals")

    host = ServiceHost(ServiceSettings(), "test")
    host.add(worker_pb2_grpc.add_SectionWorkerServiceServicer_to_server, Failing(), "t")
    port = await host.start()
    try:
        async with open_channel(f"127.0.0.1:{port}") as channel:
            stub = worker_pb2_grpc.SectionWorkerServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.GetLoad(worker_pb2.GetLoadRequest())
            with pytest.raises(grpc.aio.AioRpcError) as internal:
                await stub.Authenticate(worker_pb2.AuthenticateRequest())
        err = errors.from_rpc_error(info.value, "test")
        assert isinstance(err, errors.NotFound)
        assert err.message == "no such worker"
        assert internal.value.code() == grpc.StatusCode.INTERNAL
        assert "secret internals" not in (internal.value.details() or "")
    finally:
        await host.stop()
