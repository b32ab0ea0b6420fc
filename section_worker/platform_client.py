"""The one module that knows the AI platform's wire format (SPEC §3).

Adapting to the real platform is a change of this file only. :class:`PlatformClient` makes
the four calls over one pooled ``aiohttp.ClientSession``, each with a timeout and bounded retries
(exponential backoff with jitter, ``Retry-After`` honoured up to a cap). The genai calls take
the access token a job was given (:mod:`section_worker.platform_session`); :meth:`authenticate`
caches tokens per user, so the orchestrators' Authenticate calls for one user share one.

How often a call is tried is the caller's choice (:class:`Retries`): by default
``WORKER_MAX_RETRIES`` times on 429 and on 5xx/timeouts alike; the fallback chain opens an
attempt on an asset with :meth:`Retries.chain` instead (a 429 at once to the caller, which moves
on to the next asset; ``WORKER_CHAIN_RETRIES`` retries on 5xx/timeouts), so the retries here
never multiply with the chain's assets.

The calls go through aiohttp directly, not through httpx's API over aiohttp's transport as the
Python client does: httpx builds a request and a response object around aiohttp's, which cost
0.72-0.81 ms of the worker's CPU per call against 0.22-0.31 ms for this client
(``python -m bench.client_transport``, bench/README.md), and every section makes three calls or
more. A proxy set in the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, with
``NO_PROXY``) is used for the platform as httpx would; it is read once, when the first call is
made.

A call that fails before its connection is made (refused, unreachable, no connection in time)
certainly never reached the platform, so even a prompt is sent again; any other failure (a
dropped connection, a read that timed out) may come after the platform took the request, so
only a call that is safe to repeat is.

Errors (messages name the call and never contain a password or token)::

    PlatformError
    ├── AuthFailed            the platform refused the credentials
    │   └── TokenRejected     a genai call answered 401 (token expired or unknown)
    ├── Throttled             still 429 after every retry
    ├── PlatformUnavailable   5xx, timeouts or connection errors after every retry
    └── PlatformRejected      another 4xx, or an answer this client cannot read
        └── UnknownMessage    a genai call answered 404: no such conversation or message
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any
from urllib.parse import quote, urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from common.backoff import Backoff
from section_worker.settings import WorkerSettings

logger = logging.getLogger(__name__)

CONVERSATION_NAME = "AI Insights"
_GENAI = "/magicplatform/v1/genai/conversation"
_MAX_CACHED_TOKENS = 4096
# Failures after which the request certainly never reached the platform, so even a call that
# is not safe to repeat (sending a prompt) may be retried without risking a second answer.
_NOT_SENT = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


class PlatformError(Exception):
    """Base of every failure talking to the platform; ``str()`` is safe to show and log."""


class AuthFailed(PlatformError):
    """The platform refused the user's credentials."""


class TokenRejected(AuthFailed):
    """A genai call answered 401: the token expired or is unknown to the platform."""


class Throttled(PlatformError):
    """The platform kept answering 429 until the retries ran out. ``retry_after`` is the
    seconds its last answer asked to wait (None when it did not say)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PlatformUnavailable(PlatformError):
    """5xx answers, timeouts or connection errors until the retries ran out."""


@dataclass(frozen=True)
class Retries:
    """How many times one call is tried again: on 5xx, timeouts and connection errors
    (``transient``), and on 429 (``throttled``)."""

    transient: int
    throttled: int

    @classmethod
    def default(cls, settings: WorkerSettings) -> Retries:
        return cls(settings.max_retries, settings.max_retries)

    @classmethod
    def chain(cls, settings: WorkerSettings) -> Retries:
        """An attempt's opening calls: no retry on 429, few on transient errors."""
        return cls(settings.chain_retries, 0)


class PlatformRejected(PlatformError):
    """A 4xx other than 401/429, or an answer that does not follow the contract."""


class UnknownMessage(PlatformRejected):
    """A genai call answered 404: the platform does not know the conversation or the message
    (never made, or dropped after the platform's retention). Nothing will ever answer it."""


@dataclass(frozen=True)
class Credentials:
    """A user's platform login. The password never appears in ``repr``."""

    tenant: str
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Token:
    """An access token. ``value`` never appears in ``repr``."""

    value: str = field(repr=False)
    expires_in: float
    refresh_at: float  # monotonic time after which the cache hands out a new one
    fetched_at: float = field(default_factory=time.monotonic)

    def remaining_s(self) -> float:
        return max(0.0, self.refresh_at - time.monotonic())


class AnswerStatus(StrEnum):
    IN_PROGRESS = "IN_PROGRESS"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


@dataclass(frozen=True)
class Answer:
    """What one poll reported."""

    status: AnswerStatus
    response: str = ""
    cost: float = 0.0
    error: str = ""


@dataclass
class CallCount:
    """HTTP attempts made on someone's behalf (retries and re-authentication included)."""

    value: int = 0


_CacheKey = tuple[str, str, str]


class PlatformClient:
    """Async client of the platform; one per process, shared by every job."""

    def __init__(self, settings: WorkerSettings) -> None:
        self._settings = settings
        self._base = settings.platform_url
        # Made on first use, inside the event loop the calls run on.
        self._http: aiohttp.ClientSession | None = None
        self._proxy: str | None = None
        # Half of each wait fixed, half drawn: waits never shrink to nothing on a busy platform.
        self._backoff = Backoff(settings.backoff_base_s, settings.backoff_max_s, jitter=0.5)
        # Keys hold a keyed hash of the password, so a memory dump does not reveal it either.
        self._hash_key = secrets.token_bytes(32)
        self._tokens: dict[_CacheKey, Token] = {}
        self._locks: dict[_CacheKey, asyncio.Lock] = {}

    async def __aenter__(self) -> PlatformClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._proxy = _env_proxy(self._base)
            self._http = aiohttp.ClientSession(
                # Waiting for a connection of the pool counts in the call's timeout (_send).
                connector=aiohttp.TCPConnector(limit=self._settings.http_max_connections),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return self._http

    # -- tokens -----------------------------------------------------------------------------

    async def authenticate(
        self,
        credentials: Credentials,
        *,
        counter: CallCount | None = None,
        refresh: bool = False,
    ) -> Token:
        """A valid token for these credentials: the cached one, or a new one from the platform.

        ``refresh`` asks for a new one whatever the cache holds (the platform rejected a token
        of these credentials); a token fetched while the caller waited counts as new.
        """
        key = self._cache_key(credentials)
        lock = self._locks.setdefault(key, asyncio.Lock())
        asked = time.monotonic()
        try:
            async with lock:
                cached = self._tokens.get(key)
                if (
                    cached is not None
                    and cached.remaining_s() > 0
                    and (not refresh or cached.fetched_at >= asked)
                ):
                    return cached
                self._tokens.pop(key, None)
                token = await self._fetch_token(credentials, counter or CallCount())
                self._remember(key, token)
                return token
        finally:
            # Refused credentials must not leave a lock behind for every wrong password.
            if key not in self._tokens:
                self._locks.pop(key, None)

    def _cache_key(self, credentials: Credentials) -> _CacheKey:
        digest = hmac.new(self._hash_key, credentials.password.encode(), hashlib.sha256)
        return (credentials.tenant, credentials.username, digest.hexdigest())

    def _remember(self, key: _CacheKey, token: Token) -> None:
        self._tokens[key] = token
        if len(self._tokens) > _MAX_CACHED_TOKENS:
            for stale in [k for k, t in self._tokens.items() if t.remaining_s() <= 0]:
                del self._tokens[stale]
            while len(self._tokens) > _MAX_CACHED_TOKENS:
                del self._tokens[next(iter(self._tokens))]
            for idle in [
                k for k, lk in self._locks.items() if k not in self._tokens and not lk.locked()
            ]:
                del self._locks[idle]

    async def _fetch_token(self, credentials: Credentials, counter: CallCount) -> Token:
        what = "authenticate"
        try:
            basic = aiohttp.encode_basic_auth(credentials.username, credentials.password)
        except ValueError:
            raise AuthFailed(
                f"{what}: user name {credentials.username!r} contains ':', which basic "
                "authentication cannot carry"
            ) from None
        response = await self._send(
            what,
            "GET",
            f"/accesstoken/{quote(credentials.tenant, safe='')}",
            counter=counter,
            repeatable=True,
            authorization=basic,
        )
        if response.status == 401 or response.status == 403:
            raise AuthFailed(
                f"{what}: the platform refused the credentials of user {credentials.username!r} "
                f"at tenant {credentials.tenant!r}"
            )
        body = _json_body(what, response)
        value = body.get("access_token")
        expires_in = body.get("expires_in")
        if (
            not isinstance(value, str)
            or not value
            or not isinstance(expires_in, int | float)
            or expires_in <= 0
            or str(body.get("token_type", "Bearer")).lower() != "bearer"
        ):
            raise PlatformRejected(f"{what}: the platform's token answer does not fit the contract")
        # A short-lived token keeps at least half its life usable whatever the margin says.
        margin = min(self._settings.token_margin_s, expires_in / 2)
        return Token(value, float(expires_in), time.monotonic() + expires_in - margin)

    # -- genai calls ------------------------------------------------------------------------

    async def create_conversation(
        self,
        token: str,
        asset_id: str,
        *,
        counter: CallCount | None = None,
        retries: Retries | None = None,
    ) -> str:
        """Opens a conversation with ``asset_id``; returns its id."""
        what = "create conversation"
        response = await self._send(
            what,
            "POST",
            f"{_GENAI}/create",
            counter=counter or CallCount(),
            retries=retries,
            # A repeated create at worst leaves an unused empty conversation behind.
            repeatable=True,
            authorization=f"Bearer {token}",
            json={"conversation_name": CONVERSATION_NAME, "asset_version_id": asset_id},
        )
        return _field(what, _checked(what, response), "conversation_id")

    async def send_prompt(
        self,
        token: str,
        conv_id: str,
        message: str,
        *,
        counter: CallCount | None = None,
        retries: Retries | None = None,
    ) -> str:
        """Sends ``message`` into the conversation; returns the message id to poll."""
        what = "send prompt"
        response = await self._send(
            what,
            "POST",
            f"{_GENAI}/addmessage/stream",
            counter=counter or CallCount(),
            retries=retries,
            # Repeating a prompt the platform may have accepted would pay for a second answer.
            repeatable=False,
            authorization=f"Bearer {token}",
            json={"conversation_id": conv_id, "message": message},
        )
        return _field(what, _checked(what, response), "message_id")

    async def poll(
        self, token: str, conv_id: str, message_id: str, *, counter: CallCount | None = None
    ) -> Answer:
        """Asks once whether the answer to ``message_id`` is ready."""
        what = "poll"
        response = await self._send(
            what,
            "GET",
            f"{_GENAI}/response/{quote(conv_id, safe='')}/{quote(message_id, safe='')}",
            counter=counter or CallCount(),
            repeatable=True,
            authorization=f"Bearer {token}",
        )
        body = _checked(what, response)
        try:
            status = AnswerStatus(str(body.get("status")))
        except ValueError:
            raise PlatformRejected(
                f"{what}: unknown answer status {body.get('status')!r}"
            ) from None
        if status is AnswerStatus.FAILED:
            reason = body.get("error") or body.get("response") or "no reason given"
            return Answer(status, error=str(reason))
        if status is AnswerStatus.IN_PROGRESS:
            return Answer(status)
        cost = body.get("cost", 0.0)
        if not isinstance(cost, int | float):
            raise PlatformRejected(f"{what}: cost {cost!r} is not a number")
        return Answer(status, response=str(body.get("response") or ""), cost=float(cost))

    # -- transport --------------------------------------------------------------------------

    async def _send(
        self,
        what: str,
        method: str,
        path: str,
        *,
        counter: CallCount,
        repeatable: bool,
        retries: Retries | None = None,
        authorization: str,
        json: dict[str, Any] | None = None,
    ) -> _Reply:
        """One platform call with retries; returns the first answer that is not 429/5xx."""
        settings = self._settings
        headers = {"Authorization": authorization}
        allowed = retries or Retries.default(settings)
        # ``path`` is quoted already (its parts by quote()).
        url = URL(self._base + path, encoded=True)
        attempt = 0
        while True:
            attempt += 1
            counter.value += 1
            retry_after: float | None = None
            error: PlatformError
            try:
                async with asyncio.timeout(settings.request_timeout_s):
                    async with self._session().request(
                        method, url, headers=headers, json=json, proxy=self._proxy
                    ) as response:
                        reply = _Reply(response.status, response.headers, await response.read())
            except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
                error = PlatformUnavailable(
                    f"{what}: the platform did not answer within {settings.request_timeout_s:g}s"
                )
                retryable = repeatable or isinstance(exc, _NOT_SENT)
            except aiohttp.ClientError as exc:
                error = PlatformUnavailable(
                    f"{what}: cannot reach the platform at {settings.platform_url} "
                    f"({type(exc).__name__})"
                )
                retryable = repeatable or isinstance(exc, _NOT_SENT)
            else:
                code = reply.status
                if code == 429:
                    retry_after = _retry_after(reply)
                    error = Throttled(f"{what}: the platform throttled the call (429)", retry_after)
                    retryable = True
                elif code >= 500:
                    error = PlatformUnavailable(f"{what}: the platform answered {code}")
                    retry_after = _retry_after(reply)
                    # 503 means the platform did not take the request on.
                    retryable = repeatable or code == 503
                else:
                    return reply
            limit = allowed.throttled if isinstance(error, Throttled) else allowed.transient
            if not retryable or attempt > limit:
                if attempt > 1:
                    error = _gave_up(error, attempt)
                raise error
            delay = self._delay(attempt, retry_after)
            logger.warning("%s; retry %d/%d in %.2fs", error, attempt, limit, delay)
            await asyncio.sleep(delay)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before the next attempt: the platform's wish (capped) or jittered backoff."""
        if retry_after is not None:
            return min(retry_after, self._settings.retry_after_max_s)
        return self._backoff.delay(attempt)


def _env_proxy(url: str) -> str | None:
    """The proxy the environment names for ``url`` (None: none, or ``NO_PROXY`` spares it).
    Read here once rather than by aiohttp's ``trust_env``, which looks again, in a thread, for
    every request."""
    parts = urlsplit(url)
    if proxy_bypass(parts.hostname or ""):
        return None
    proxies = getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


@dataclass(frozen=True)
class _Reply:
    """One answer of the platform, read whole."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


def _gave_up(error: PlatformError, attempts: int) -> PlatformError:
    message = f"{error} (gave up after {attempts} attempts)"
    if isinstance(error, Throttled):
        return Throttled(message, error.retry_after)
    return type(error)(message)


def _retry_after(response: _Reply) -> float | None:
    """Seconds the platform asks to wait (``Retry-After`` as seconds or an HTTP date)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _checked(what: str, response: _Reply) -> dict[str, Any]:
    """The JSON body of a genai answer, or the error its status stands for."""
    code = response.status
    if code == 401:
        raise TokenRejected(f"{what}: the platform rejected the access token (401)")
    if code == 404:
        raise UnknownMessage(f"{what}: the platform does not know the conversation or message")
    if code >= 400:
        raise PlatformRejected(f"{what}: the platform answered {code}")
    return _json_body(what, response)


def _json_body(what: str, response: _Reply) -> dict[str, Any]:
    if response.status >= 400:
        raise PlatformRejected(f"{what}: the platform answered {response.status}")
    try:
        body = json.loads(response.body)
    except ValueError:
        raise PlatformRejected(f"{what}: the platform's answer is not JSON") from None
    if not isinstance(body, dict):
        raise PlatformRejected(f"{what}: the platform's answer is not a JSON object")
    return body


def _field(what: str, body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise PlatformRejected(f"{what}: the platform's answer has no {name}")
    return value
