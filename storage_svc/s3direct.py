"""PutObject of small bodies without botocore's request machinery around it.

Every step of every task writes its document, and every new task an owner-index marker, each a
PutObject of a body of a few kilobytes (or none). Through aiobotocore such a call costs
2.6-2.9 ms of storage_svc's CPU against SeaweedFS: botocore's event hooks, parameter
validation, endpoint rules, the user-agent string rebuilt and the response parsed for every
request. Signed by botocore's own SigV4 signer and sent by aiohttp, the same request costs
1.05-1.14 ms (1.5 KB documents, 16 at a time: ``python -m bench.s3_puts``, bench/README.md).
:class:`DirectPuts` sends bodies under :data:`~storage_svc.s3calls.EXPECT_CONTINUE_MIN_BYTES`
that way; larger ones, every other call and every file transfer stay on the aioboto3 client.

What stays botocore's:

- **the credentials**: the client's session's chain (environment, profile, web identity …),
  refreshed by it before they expire;
- **the bucket's address**: the address the client gives a PutObject, read once when the
  client opens (the call stopped before it is signed or sent), so its endpoint rules, region
  and addressing style (path or virtual-hosted) decide it as for its own calls;
- **the connections**: the client's own aiohttp session (its pool, its timeouts, its TLS
  verification and certificates), shared with its calls; when the bucket is reached through a
  proxy (``HTTPS_PROXY`` …), or the client has no such session, every call stays the client's;
- **the signature**: ``S3SigV4Auth`` signs the method, address, headers and the body's SHA-256;
- **the errors**: a refusal (S3's XML error answer) becomes botocore's ``ClientError`` with S3's
  code and message, and a failure to send or read becomes its ``HTTPClientError``, so
  :meth:`~storage_svc.s3calls.S3Calls.call` sorts, retries and reports them as before.

No header of an answer or a request is logged; the signature never leaves this module.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError, HTTPClientError, NoCredentialsError
from yarl import URL

# The key of the PutObject the bucket's address is read from; never sent.
_PROBE_KEY = "probe"
_PROBE_EVENT = "before-sign.s3.PutObject"
_CODE = re.compile(rb"<Code>([^<]{1,200})</Code>")
_MESSAGE = re.compile(rb"<Message>([^<]{0,2000})</Message>")


def _refusal(status: int, body: bytes) -> ClientError:
    """botocore's error for an S3 answer ``status`` whose body is S3's XML error (or empty,
    as in the answer to a HEAD or from some servers' 412)."""
    code = _CODE.search(body)
    message = _MESSAGE.search(body)
    error = {
        "Code": html.unescape(code.group(1).decode(errors="replace")) if code else str(status),
        "Message": html.unescape(message.group(1).decode(errors="replace")) if message else "",
    }
    return ClientError(
        {"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
    )


class _Probed(Exception):
    """Stops the probing PutObject once its address is known."""

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.address = address


def _stop(request: Any, **_: Any) -> None:
    raise _Probed(str(request.url))


async def _bucket_address(client: Any, bucket: str) -> str:
    """The address of ``bucket`` the client sends object calls to, ending in "/"."""
    client.meta.events.register_first(_PROBE_EVENT, _stop, unique_id=_PROBE_EVENT)
    try:
        await client.put_object(Bucket=bucket, Key=_PROBE_KEY, Body=b"")
    except _Probed as probed:
        parts = urlsplit(probed.address)
    finally:
        client.meta.events.unregister(_PROBE_EVENT, unique_id=_PROBE_EVENT)
    if not parts.path.endswith("/" + _PROBE_KEY):
        raise ValueError(f"cannot read the address of bucket {bucket} from its client")
    return f"{parts.scheme}://{parts.netloc}{parts.path[: -len(_PROBE_KEY)]}"


async def _client_connections(client: Any, base: str) -> aiohttp.ClientSession | None:
    """The aiohttp session the client sends to ``base`` with, unless through a proxy."""
    http = getattr(getattr(client, "_endpoint", None), "http_session", None)
    proxies = getattr(http, "_proxy_config", None)
    sessions = getattr(http, "_get_session", None)
    if proxies is None or sessions is None or proxies.proxy_url_for(base):
        return None
    connections = await sessions(None)
    return connections if isinstance(connections, aiohttp.ClientSession) else None


class DirectPuts:
    """Signs and sends PutObject requests for one bucket; :meth:`open`, then :meth:`put`. The
    connections are the client's: they close with it."""

    def __init__(self, base: str, region: str, credentials: Any, http: aiohttp.ClientSession):
        self._base = base  # the bucket's address, ending in "/": a key's address follows
        self._region = region
        self._credentials = credentials
        self._http = http

    @classmethod
    async def open(cls, client: Any, session: Any, bucket: str) -> DirectPuts | None:
        """For ``bucket`` of the aioboto3 ``client`` made by ``session``; None when the calls
        must stay the client's (above). No request is sent. Call it before the client is used:
        it stops the client's PutObject calls meanwhile."""
        base = await _bucket_address(client, bucket)
        http = await _client_connections(client, base)
        if http is None:
            return None
        return cls(base, client.meta.region_name, await session.get_credentials(), http)

    async def put(self, key: str, body: bytes, headers: dict[str, str]) -> str:
        """Writes ``body`` at ``key`` with ``headers`` (``Content-Type``, ``If-Match`` …, all
        signed); returns the new version (ETag). Raises botocore's errors."""
        if self._credentials is None:
            raise NoCredentialsError()
        frozen = await self._credentials.get_frozen_credentials()
        address = self._base + quote(key, safe="/~")
        request = AWSRequest("PUT", address, headers=headers, data=body)
        S3SigV4Auth(frozen, "s3", self._region).add_auth(request)
        try:
            async with self._http.put(
                URL(address, encoded=True),
                data=body,
                headers=dict(request.headers.items()),
                # A redirect (the bucket in another region) is S3's refusal, not to follow
                # with a signature made for this address.
                allow_redirects=False,
            ) as answer:
                data = await answer.read()
                if answer.status >= 300:
                    raise _refusal(answer.status, data)
                return str(answer.headers["ETag"])
        except aiohttp.ClientError as exc:
            raise HTTPClientError(error=exc) from exc
