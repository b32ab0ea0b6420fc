"""The platform client's HTTP transport: httpx's API over aiohttp's connection pool.

httpx's own transport (httpcore) costs several times the CPU per request of aiohttp's client
on this workload (``bench/README.md``: measured with the worker's calls to the simulator), and a
worker makes a few platform calls per section, so the worker's client keeps httpx's API and
sends through ``httpx_aiohttp.AiohttpTransport``.

One correction on top of it, because a prompt must never be sent twice: that transport maps
*every* aiohttp connection error to :class:`httpx.ConnectTimeout` or :class:`httpx.ConnectError`
— a server that drops the connection after the request went out, or a read that timed out,
included — and the platform client retries a call that is not safe to repeat only when the
request certainly never left (:data:`section_worker.platform_client._NOT_SENT`). So
:class:`PlatformTransport` looks at the aiohttp error underneath: only a failure to connect
(``ClientConnectorError``) or to get a connection in time (``ConnectionTimeoutError``) stays a
connect error; a read timeout becomes :class:`httpx.ReadTimeout` and any other dropped
connection :class:`httpx.RemoteProtocolError`, both of which the client treats as "may have
been received".
"""

from __future__ import annotations

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport


class PlatformTransport(AiohttpTransport):
    """:class:`httpx_aiohttp.AiohttpTransport` whose connect errors mean "never sent"."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise sent_or_not(exc, request) from exc.__cause__


def sent_or_not(exc: httpx.TransportError, request: httpx.Request) -> httpx.TransportError:
    """``exc`` (a connect error the transport raised for an aiohttp error) as what really
    happened: a connect timeout or error when the request never left, else a read timeout or a
    dropped connection."""
    cause = exc.__cause__
    message = str(exc) or type(cause).__name__
    if isinstance(cause, aiohttp.ConnectionTimeoutError):  # no connection in time
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(cause, aiohttp.ClientConnectorError):  # refused, unreachable, DNS
        return httpx.ConnectError(message, request=request)
    if isinstance(cause, aiohttp.ServerTimeoutError):  # the answer did not come in time
        return httpx.ReadTimeout(message, request=request)
    if cause is None:
        return exc
    return httpx.RemoteProtocolError(message, request=request)  # dropped once connected
