"""Idempotent submission: a client that retries a submit never creates two tasks.

A key is scoped to the user (the stored name is a digest of username and key). The first
submission *claims* the key by creating ``<prefix>_idempotency/<digest>.json`` with
``If-None-Match`` — of concurrent submissions exactly one claim succeeds — and the claim fixes
the task id before the task is written. A repeat with the same request then returns that task;
if the first attempt died between claim and task write, the repeat writes the task under the
claimed id (create-only, so two repeats cannot both create it). A repeat with a different
request is a Conflict. The request digest is an HMAC under the credential key, so the stored
record reveals nothing about the password it covers. Records expire with the bucket's lifecycle
rule, which bounds how long a key is remembered.

A stored claim that cannot be read (not a JSON object holding a task id and a digest) cannot
say which task it stood for, so nothing can be replayed from it: it is logged and replaced by
the new claim, with compare-and-swap so that of concurrent submissions only one replaces it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any

from common.errors import Conflict, InvalidInput, NotFound
from orchestrator.storage_client import IDEMPOTENCY, StorageClient

logger = logging.getLogger(__name__)

MAX_KEY_LENGTH = 128


@dataclass(frozen=True)
class Claim:
    """The task id an idempotency key stands for, and whether an earlier request made it."""

    task_id: str
    replayed: bool


def check_key(key: str) -> str:
    if len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.strip():
        raise InvalidInput(f"idempotency key: 1-{MAX_KEY_LENGTH} printable characters")
    return key


def request_digest(secret: bytes, request: dict[str, Any]) -> str:
    """HMAC of the canonical request, so equal requests give equal digests."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(secret, canonical, hashlib.sha256).hexdigest()


def claim_name(username: str, key: str) -> str:
    """The stored name of ``username``'s claim of ``key``."""
    return hashlib.sha256(f"{username}\0{key}".encode()).hexdigest()


async def claim(
    storage: StorageClient, username: str, key: str, digest: str, new_task_id: str
) -> Claim:
    """Claims ``key`` for ``new_task_id``, or returns the task an earlier claim fixed."""
    name = claim_name(username, key)
    body = json.dumps({"task_id": new_task_id, "request": digest}).encode()
    replacing: str | None = None  # the version of an unreadable claim to write over
    for _ in range(3):
        try:
            await storage.put_object(IDEMPOTENCY, name, body, version=replacing)
            return Claim(task_id=new_task_id, replayed=False)
        except Conflict:
            replacing = None
        try:
            stored, version = await storage.get_object(IDEMPOTENCY, name)
        except NotFound:
            continue  # deleted between our attempts: claim again
        earlier = _read_claim(stored)
        if earlier is None:
            logger.warning(
                "idempotency claim %s cannot be read; replacing it with a claim for task %s",
                name,
                new_task_id,
            )
            replacing = version
            continue
        task_id, earlier_digest = earlier
        if earlier_digest != digest:
            raise Conflict("Idempotency-Key was already used with a different request")
        return Claim(task_id=task_id, replayed=True)
    raise Conflict("Idempotency-Key is being claimed concurrently; retry")


def _read_claim(stored: bytes) -> tuple[str, str] | None:
    """The task id and request digest a stored claim holds, or None if it holds no such pair."""
    try:
        record = json.loads(stored)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(record, dict):
        return None
    task_id, digest = record.get("task_id"), record.get("request")
    if not isinstance(task_id, str) or not isinstance(digest, str):
        return None
    return task_id, digest
