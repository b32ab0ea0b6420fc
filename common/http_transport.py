"""httpx's API over aiohttp's connection handling, for the async Python client
(:mod:`wealthai_client`). (The section workers call the AI platform through aiohttp alone,
:mod:`section_worker.platform_client`.)

httpx's own async transport (httpcore) costs several times the CPU per request of aiohttp's:
2.17-2.37 against 0.61-0.67 ms per small JSON request, client and a local aiohttp server
together, 16 at a time, and 0.5 s against 0.1-0.25 s of CPU for a 200 MB download
(``python -m bench.client_transport``, bench/README.md). So both clients keep httpx's API and
send through ``httpx_aiohttp.AiohttpTransport``.

:class:`Transport` corrects that transport's errors. It maps every aiohttp connection error to
:class:`httpx.ConnectTimeout` or :class:`httpx.ConnectError` — a refused connection, a server
that drops the connection after the request went out and a read that timed out included —
while a caller may only resend a request that is not safe to repeat (a prompt to the AI
platform) when it certainly never left. :func:`httpx_error` reads the aiohttp error underneath
and names what happened:

- no connection in time (``ConnectionTimeoutError``): :class:`httpx.ConnectTimeout`;
- refused, unreachable, unresolvable (``ClientConnectorError``): :class:`httpx.ConnectError`;
- the answer did not come in time (``ServerTimeoutError``, ``TimeoutError``):
  :class:`httpx.ReadTimeout`;
- any other failure once connected (a dropped connection, a reset, a broken body):
  :class:`httpx.ReadError`.

Only the first two mean "never sent". Errors while the body is read are mapped the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport


def httpx_error(exc: BaseException, request: httpx.Request) -> BaseException:
    """httpx's error for one of aiohttp's (or for httpx-aiohttp's mapping of it); anything else
    as it is."""
    cause = exc.__cause__ if isinstance(exc, httpx.TransportError) else exc
    if cause is None:
        return exc
    message = str(cause) or type(cause).__name__
    if isinstance(cause, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(cause, aiohttp.ServerTimeoutError | TimeoutError):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(cause, aiohttp.ClientError):
        return httpx.ReadError(message, request=request)
    return exc


class _Stream(httpx.AsyncByteStream):
    """A response body whose aiohttp errors become httpx's."""

    def __init__(self, inner: httpx.AsyncByteStream, request: httpx.Request) -> None:
        self._inner = inner
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except (aiohttp.ClientError, TimeoutError, httpx.TransportError) as exc:
            raise httpx_error(exc, self._request) from exc

    async def aclose(self) -> None:
        await self._inner.aclose()


class Transport(AiohttpTransport):
    """aiohttp's transport, raising only httpx's errors, each for what happened."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            response = await super().handle_async_request(request)
        except (aiohttp.ClientError, TimeoutError, httpx.TransportError) as exc:
            raise httpx_error(exc, request) from exc
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Stream(response.stream, request)
        return response
