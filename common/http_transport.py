"""httpx's API over aiohttp's connection handling, for the async Python client
(:mod:`wealthai_client`). (The section workers call the AI platform through aiohttp alone,
:mod:`section_worker.platform_client`.)

httpx's own async transport (httpcore) costs several times the client's CPU per request of
aiohttp's: 1.98-2.62 against 0.52-0.85 ms per small request, 10 at a time, and 0.48-0.55 s
against 0.11-0.24 s for a 200 MB download (``python -m bench.client_transport``,
bench/README.md). So the client keeps httpx's API and sends through
``httpx_aiohttp.AiohttpTransport``.

:class:`Transport` corrects that transport's errors. It maps every aiohttp connection error to
:class:`httpx.ConnectTimeout` or :class:`httpx.ConnectError` — a refused connection, a server
that drops the connection after the request went out and a read that timed out included —
while a caller may only resend a request that is not safe to repeat when it certainly never
left. :func:`httpx_error` reads the aiohttp error underneath and names what happened:

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
