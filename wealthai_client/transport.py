"""The async client's transport: the one place that decides how its bytes travel.

httpx's own async transport spent about three times the CPU per request of aiohttp's
connection handling (``httpx-aiohttp``): 2.0-2.6 ms against 0.5-0.85 ms per small JSON answer
at ten requests at once, 0.5 s against 0.1-0.25 s of CPU for a 200 MB download
(``python -m bench.client_transport``, bench/README.md). So the async client runs on aiohttp
under httpx's API. The sync client keeps httpx's own transport: aiohttp has no synchronous side.

aiohttp's failures are turned into httpx's here, each for what happened (httpx-aiohttp's own
mapping calls a refused connection a connect timeout, and lets some through), so that the
client's one mapping (:func:`wealthai_client.errors.transport_errors`) sees only httpx's
vocabulary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport


def httpx_error(exc: BaseException, request: httpx.Request) -> BaseException:
    """httpx's error for one of aiohttp's (or for httpx-aiohttp's mapping of it, which names a
    refused connection a connect timeout); anything else as it is."""
    cause = exc.__cause__ if isinstance(exc, httpx.TransportError) else exc
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


def async_transport() -> httpx.AsyncBaseTransport:
    """The transport every AsyncClient gets unless it is given one."""
    return Transport()
