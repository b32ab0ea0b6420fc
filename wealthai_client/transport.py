"""The async client's transport: the one place that decides how its bytes travel.

The async client runs on aiohttp under httpx's API (:mod:`common.http_transport`: a fraction of
httpx's own transport's CPU per request, and errors that say what happened, so the client's one
mapping, :func:`wealthai_client.errors.transport_errors`, sees only httpx's vocabulary). The
sync client keeps httpx's own transport: aiohttp has no synchronous side. This module is
imported only when an :class:`~wealthai_client.AsyncClient` is made, so the command line never
loads aiohttp.
"""

from __future__ import annotations

import httpx

from common.http_transport import Transport


def async_transport() -> httpx.AsyncBaseTransport:
    """The transport every AsyncClient gets unless it is given one."""
    return Transport()
