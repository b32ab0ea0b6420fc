"""API keys as domain calls: create, list, revoke, and resolve a presented key (SPEC §10).

Each key is one record in storage_svc's ``API_KEYS`` namespace, named by its key id::

    {"key_id": "0123456789ab", "name": "ann", "tenant": "acme", "role": "client",
     "hash": "<sha256 hex of the whole key>", "created_at": "…", "revoked_at": null}

The key itself is returned once, by :meth:`ApiKeys.create`, and kept nowhere (its format and
hash: :mod:`common.api_keys`). A key authenticates as the principal ``<tenant>/<name>``, so
keys given the same name and tenant act as one principal: a key is rotated by creating the new
one, moving the client to it and revoking the old one. Revoking keeps the record with its
``revoked_at`` (listed, never valid again); records never expire (the bucket's retention rule
leaves the namespace alone). Creating, listing and revoking are for admins only
(:class:`~common.errors.Forbidden`); resolving is the gateway's, and refuses a malformed,
unknown, revoked or wrong key with one :class:`~common.errors.Unauthenticated` that does not
say which.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from common import api_keys
from common.errors import Conflict, Forbidden, Internal, InvalidInput, NotFound, Unauthenticated
from common.principals import Principal, Role
from common.timeutil import iso, utcnow
from orchestrator.storage_client import API_KEYS, Namespace

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"[A-Za-z0-9._@-]{1,64}\Z")
TENANT_RE = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
_REFUSED = "unknown or revoked API key"
_ATTEMPTS = 3  # compare-and-swap rounds before a busy record is reported as a conflict


class KeyStorage(Protocol):
    """The part of :class:`~orchestrator.storage_client.StorageClient` keys are kept with."""

    async def put_object(
        self, namespace: Namespace, name: str, body: bytes, *, version: str | None
    ) -> str: ...

    async def get_object(self, namespace: Namespace, name: str) -> tuple[bytes, str]: ...

    async def list_objects(self, namespace: Namespace) -> list[tuple[str, bytes, str]]: ...


class KeyRecord(BaseModel):
    """One stored API key: who holds it and the hash of the key, never the key."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    key_id: str
    name: str
    tenant: str
    role: Role
    hash: str
    created_at: str
    revoked_at: str | None = None

    @property
    def principal(self) -> Principal:
        """Who the key authenticates as."""
        return Principal(id=f"{self.tenant}/{self.name}", tenant=self.tenant, role=self.role)

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


def _parse(key_id: str, body: bytes) -> KeyRecord:
    try:
        record = KeyRecord.model_validate_json(body)
    except ValidationError:
        raise Internal(f"API key {key_id}: its stored record cannot be read") from None
    if record.key_id != key_id:
        raise Internal(f"API key {key_id}: its stored record names another key")
    return record


def _admin(caller: Principal) -> None:
    if not caller.admin:
        raise Forbidden("only an admin may manage API keys")


class ApiKeys:
    """API keys kept through storage_svc."""

    def __init__(self, storage: KeyStorage, now: Callable[[], datetime] = utcnow) -> None:
        self.storage = storage
        self._now = now

    async def create(
        self, caller: Principal, name: str, tenant: str, role: str
    ) -> tuple[KeyRecord, str]:
        """A new key for ``name`` of ``tenant`` with ``role``: its record and the key itself,
        which is never available again."""
        _admin(caller)
        if not NAME_RE.match(name):
            raise InvalidInput("name: 1-64 of A-Z a-z 0-9 . _ @ -")
        if not TENANT_RE.match(tenant):
            raise InvalidInput("tenant: 1-64 of A-Z a-z 0-9 . _ -")
        try:
            checked_role = Role(role)
        except ValueError:
            raise InvalidInput("role: one of client, admin") from None
        for _ in range(_ATTEMPTS):
            key_id, key = api_keys.new_key()
            record = KeyRecord(
                key_id=key_id,
                name=name,
                tenant=tenant,
                role=checked_role,
                hash=api_keys.key_hash(key),
                created_at=iso(self._now()),
            )
            try:
                # Create-only: a key id drawn twice (1 in 2^48) never replaces a key.
                await self.storage.put_object(API_KEYS, key_id, record.to_json(), version=None)
            except Conflict:
                continue
            logger.info(
                "API key %s created for %s (role %s) by %s",
                key_id,
                record.principal.id,
                checked_role.value,
                caller.id,
            )
            return record, key
        raise Conflict("could not draw an unused key id; try again")

    async def list(self, caller: Principal) -> list[KeyRecord]:
        """Every key, revoked ones included, by key id."""
        _admin(caller)
        records: list[KeyRecord] = []
        for key_id, body, _ in await self.storage.list_objects(API_KEYS):
            try:
                records.append(_parse(key_id, body))
            except Internal as exc:
                logger.warning("%s; left out of the listing", exc.message)
        return sorted(records, key=lambda r: r.key_id)

    async def revoke(self, caller: Principal, key_id: str) -> KeyRecord:
        """Marks the key revoked (NotFound when unknown); a revoked key stays as it was."""
        _admin(caller)
        if not re.fullmatch(r"[0-9a-f]{12}", key_id):
            raise NotFound(f"API key {key_id} not found")
        for _ in range(_ATTEMPTS):
            try:
                body, version = await self.storage.get_object(API_KEYS, key_id)
            except NotFound:
                raise NotFound(f"API key {key_id} not found") from None
            record = _parse(key_id, body)
            if record.revoked_at is not None:
                return record
            revoked = record.model_copy(update={"revoked_at": iso(self._now())})
            try:
                await self.storage.put_object(API_KEYS, key_id, revoked.to_json(), version=version)
            except Conflict:
                continue
            logger.info("API key %s of %s revoked by %s", key_id, record.principal.id, caller.id)
            return revoked
        raise Conflict(f"API key {key_id} kept changing; try again")

    async def resolve(self, key: str) -> KeyRecord:
        """The record of a valid key; Unauthenticated for any other (never saying why)."""
        key_id = api_keys.key_id_of(key)
        if key_id is None:
            raise Unauthenticated(_REFUSED)
        try:
            body, _ = await self.storage.get_object(API_KEYS, key_id)
        except NotFound:
            logger.info("API key %s refused: unknown", key_id)
            raise Unauthenticated(_REFUSED) from None
        record = _parse(key_id, body)
        if not api_keys.matches(key, record.hash):
            logger.warning("API key %s refused: wrong secret", key_id)
            raise Unauthenticated(_REFUSED)
        if record.revoked_at is not None:
            logger.info("API key %s refused: revoked at %s", key_id, record.revoked_at)
            raise Unauthenticated(_REFUSED)
        return record
