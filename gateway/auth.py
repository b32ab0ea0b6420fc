"""Who calls the gateway: ``Authorization: Bearer <api key>`` turned into a principal (SPEC §10).

Three kinds of caller:

- the bootstrap admin: the key equals ``GATEWAY_ADMIN_KEY`` (compared as SHA-256 digests with
  :func:`hmac.compare_digest`, so neither content nor length leaks through timing); it is the
  principal ``admin`` of the default tenant, and needs no storage;
- a key made through ``/admin/keys``: resolved by the orchestrator (which keeps only hashes),
  and remembered here for ``GATEWAY_AUTH_CACHE_TTL_S`` (at most 15 s, so a key revoked on
  another replica stops working within that). A refusal is remembered for
  ``GATEWAY_AUTH_REFUSAL_TTL_S``, which blunts guessing; the replica that revokes a key forgets
  it at once (:meth:`Authenticator.forget`). Concurrent calls with the same uncached key share
  one lookup;
- no key, with ``GATEWAY_AUTH=open`` only: the one anonymous principal.

Anything else is :class:`~common.errors.Unauthenticated`. The cache is keyed by the key's
digest and bounded; no log line ever holds a key, only its public key id.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from common import api_keys
from common.errors import Forbidden, Unauthenticated
from common.principals import ANONYMOUS, Principal, Role
from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

ADMIN_ID = "admin"
MAX_CACHED = 10_000  # keys remembered at once, refusals included: bounded memory

Resolve = Callable[[str], Awaitable[Principal | None]]
"""Asks who a key stands for: the principal, or None when the key is refused."""


@dataclass(frozen=True)
class _Entry:
    principal: Principal | None
    key_id: str
    until: float


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class Authenticator:
    """Turns the credentials of a request into a :class:`Principal`."""

    def __init__(
        self,
        settings: GatewaySettings,
        resolve: Resolve,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.open = settings.auth == "open"
        self._admin_digest = (
            _digest(settings.admin_key.get_secret_value()) if settings.admin_key else None
        )
        self._admin = Principal(ADMIN_ID, settings.default_tenant, Role.ADMIN)
        self._anonymous = Principal(ANONYMOUS.id, settings.default_tenant, ANONYMOUS.role)
        self._resolve = resolve
        self._clock = clock
        self._ttl = settings.auth_cache_ttl_s
        self._refusal_ttl = settings.auth_refusal_ttl_s
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()
        self._pending: dict[bytes, asyncio.Future[Principal | None]] = {}
        # key id -> when it was revoked here: an answer asked for before then is not kept.
        self._forgotten: dict[str, float] = {}

    async def authenticate(self, key: str | None) -> Principal:
        """The principal ``key`` (the bearer token, None when absent) stands for."""
        if not key:
            if self.open:
                return self._anonymous
            raise Unauthenticated("an API key is required: Authorization: Bearer <key>")
        digest = _digest(key)
        if self._admin_digest is not None and hmac.compare_digest(digest, self._admin_digest):
            return self._admin
        principal = await self._lookup(key, digest)
        if principal is None:
            raise Unauthenticated("unknown or revoked API key")
        return principal

    def forget(self, key_id: str) -> None:
        """Drops what is remembered of the key ``key_id`` (it was just revoked), and keeps an
        answer for it still on its way from being remembered."""
        for digest in [d for d, entry in self._cache.items() if entry.key_id == key_id]:
            del self._cache[digest]
        now = self._clock()
        self._forgotten = {k: t for k, t in self._forgotten.items() if t > now - self._ttl}
        self._forgotten[key_id] = now

    async def _lookup(self, key: str, digest: bytes) -> Principal | None:
        entry = self._cache.get(digest)
        if entry is not None:
            if entry.until > self._clock():
                return entry.principal
            del self._cache[digest]
        pending = self._pending.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._pending[digest] = future
        try:
            principal = await self._ask(key, digest)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        else:
            future.set_result(principal)
        finally:
            del self._pending[digest]
        return principal

    async def _ask(self, key: str, digest: bytes) -> Principal | None:
        key_id = api_keys.key_id_of(key) or ""
        # The answer is as old as the question: a revocation after it counts from here.
        asked = self._clock()
        principal = await self._resolve(key) if key_id else None
        if principal is None:
            logger.info("API key %s refused", key_id or "(malformed)")
        ttl = self._ttl if principal is not None else self._refusal_ttl
        if self._forgotten.get(key_id, -1.0) >= asked:
            return principal  # revoked while we asked: answer this call, remember nothing
        if ttl > 0:
            self._cache[digest] = _Entry(principal, key_id, asked + ttl)
            while len(self._cache) > MAX_CACHED:
                self._cache.popitem(last=False)
        return principal


_bearer = HTTPBearer(
    auto_error=False,
    description="An API key: `Authorization: Bearer wak_…`. Admins create them at /admin/keys.",
)


def authenticator_of(request: Request) -> Authenticator:
    """The authenticator of the application serving ``request`` (set by ``create_app``)."""
    found: Authenticator = request.app.state.authenticator
    return found


def bearer_key(request: Request) -> str | None:
    """The API key a request presents (``Authorization: Bearer <key>``), if any."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    return key.strip() or None if scheme.lower() == "bearer" else None


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """FastAPI dependency: the calling principal, or 401."""
    key = credentials.credentials if credentials else None
    return await authenticator_of(request).authenticate(key)


async def admin_principal(
    principal: Annotated[Principal, Depends(current_principal)],
) -> Principal:
    """FastAPI dependency: the calling principal when it is an admin; 401 or 403 otherwise."""
    if not principal.admin:
        raise Forbidden("only an admin may manage API keys")
    return principal
