"""Rebuilding a gRPC method handler with its behaviour wrapped: what the server interceptors of
:mod:`common.grpc_server` and :mod:`common.tls` do, whatever kind of call the handler serves."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import grpc

Req = TypeVar("Req")
Resp = TypeVar("Resp")
# A handler's behaviour on a grpc.aio server: a coroutine function (one answer) or an async
# generator function (a stream of answers); the stubs describe the synchronous server's.
Wrap = Callable[[Any], Any]


def rewrap(
    handler: grpc.RpcMethodHandler[Req, Resp], method: str, *, answer: Wrap, stream: Wrap
) -> grpc.RpcMethodHandler[Req, Resp]:
    """``handler`` with its behaviour wrapped by ``answer`` (calls answered once: unary and
    client-streaming) or ``stream`` (calls answered by a stream)."""
    codec: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(answer(handler.unary_unary), **codec)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(answer(handler.stream_unary), **codec)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream(handler.unary_stream), **codec)
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(stream(handler.stream_stream), **codec)
    raise TypeError(f"{method}: a handler of no known kind")
