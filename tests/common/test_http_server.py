"""common.http_server: a real uvicorn server on loopback closes a connection whose request
headers do not come in time, and serves the rest as before, over raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from common.http_server import HttpServer

BOUND = 0.5


async def echo_length(scope: Any, receive: Any, send: Any) -> None:
    """Answers with the length of the request's body."""
    assert scope["type"] == "http"
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    server = HttpServer(
        echo_length, "127.0.0.1", 0, name="test", lifespan="off", header_timeout_s=BOUND
    )
    url = await server.start()
    yield int(url.rsplit(":", 1)[1])
    await server.stop()


async def closed_after(reader: asyncio.StreamReader, started: float) -> tuple[bytes, float]:
    """What the server sent until it closed the connection, and how long after ``started``
    (taken before whatever armed the server's bound: the connection, or a request's first
    byte, so that the time measured is never shorter than the server's)."""
    got = await asyncio.wait_for(reader.read(), 10)
    return got, time.monotonic() - started


REQUEST = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\n"


@pytest.mark.parametrize("sent", [b"", b"POST / HTTP/1.1\r\nHost: t\r\n"], ids=["nothing", "half"])
async def test_a_connection_without_whole_headers_in_time_is_closed(port: int, sent: bytes) -> None:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(sent)
    got, after = await closed_after(reader, started)
    writer.close()
    assert got == b"" and BOUND <= after < BOUND + 2


async def test_headers_trickled_slower_in_all_than_the_bound_are_cut(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    with contextlib.suppress(ConnectionError):
        for byte in REQUEST:  # a byte every 0.1 s: never idle for the bound, late in all
            if reader.at_eof():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)
    assert await asyncio.wait_for(reader.read(), 10) == b""
    assert time.monotonic() - started < BOUND + 2
    writer.close()


async def test_whole_headers_in_time_are_served_and_the_body_may_take_longer(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST)
    await asyncio.sleep(2 * BOUND)  # the body's time is the app's to bound, not this one's
    writer.write(b"abc")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200 ") and await reader.readexactly(1) == b"3"

    writer.write(REQUEST + b"xyz")  # the next request on the kept-alive connection
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200 ") and await reader.readexactly(1) == b"3"
    writer.close()


async def test_a_request_begun_after_a_pause_gets_the_whole_bound(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST + b"abc")
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    await reader.readexactly(1)
    await asyncio.sleep(BOUND / 2)  # idle between requests (uvicorn's keep-alive is 5 s)
    started = time.monotonic()
    writer.write(REQUEST[:10])
    got, after = await closed_after(reader, started)
    writer.close()
    assert got == b"" and BOUND <= after < BOUND + 2
