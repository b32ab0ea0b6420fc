"""httpx over aiohttp against raw loopback servers that misbehave: what reached the server
decides whether a call that is not safe to repeat (a prompt) may be sent again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import httpx
import pytest

from common.http_transport import Transport, httpx_error
from tests.helpers import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A server on a free port; the request heads it read are listed."""
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.close()
        await server.wait_closed()


def client(url: str, read_s: float = 5.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        timeout=httpx.Timeout(5.0, read=read_s),
        transport=Transport(limits=httpx.Limits(max_connections=4)),
    )


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()  # until the client gives up and closes


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"
    )
    await writer.drain()


async def test_an_answer_comes_back_through_httpx() -> None:
    async with raw_server(answer) as (url, seen), client(url) as http:
        reply = await http.post("/prompt", json={"a": 1})
    assert reply.status_code == 200 and reply.json() == {}
    assert len(seen) == 1 and seen[0].startswith(b"POST /prompt HTTP/1.1")


async def test_a_refused_connection_is_a_connect_error_nothing_was_sent() -> None:
    async with client(f"http://127.0.0.1:{free_port()}") as http:
        with pytest.raises(httpx.ConnectError):
            await http.post("/prompt", json={})


async def test_a_server_that_hangs_up_after_reading_is_not_a_connect_error() -> None:
    async with raw_server(hang_up) as (url, seen), client(url) as http:
        with pytest.raises(httpx.TransportError) as caught:
            await http.post("/prompt", json={})
    assert len(seen) == 1  # the request did reach the server
    assert isinstance(caught.value, httpx.ReadError)
    assert not isinstance(caught.value, httpx.ConnectError | httpx.ConnectTimeout)


async def test_an_answer_that_does_not_come_is_a_read_timeout() -> None:
    async with raw_server(never_answer) as (url, seen), client(url, read_s=0.3) as http:
        with pytest.raises(httpx.TransportError) as caught:
            await http.post("/prompt", json={})
    assert len(seen) == 1
    assert isinstance(caught.value, httpx.ReadTimeout)


@pytest.mark.parametrize(
    ("cause", "becomes"),
    [
        (aiohttp.ConnectionTimeoutError("pool"), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError("read"), httpx.ReadTimeout),
        (aiohttp.ServerDisconnectedError(), httpx.ReadError),
        (aiohttp.ClientOSError(104, "reset"), httpx.ReadError),
        (None, httpx.ConnectTimeout),
    ],
)
def test_connect_errors_are_mapped_by_their_aiohttp_cause(
    cause: BaseException | None, becomes: type[Exception]
) -> None:
    request = httpx.Request("POST", "http://platform/prompt")
    raised = httpx.ConnectTimeout("x", request=request)
    raised.__cause__ = cause
    assert type(httpx_error(raised, request)) is becomes
