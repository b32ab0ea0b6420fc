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
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from common.errors import Conflict, InvalidInput, NotFound
from orchestrator.storage_client import IDEMPOTENCY, StorageClient

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


async def claim(
    storage: StorageClient, username: str, key: str, digest: str, new_task_id: str
) -> Claim:
    """Claims ``key`` for ``new_task_id``, or returns the task an earlier claim fixed."""
    name = hashlib.sha256(f"{username}\0{key}".encode()).hexdigest()
    body = json.dumps({"task_id": new_task_id, "request": digest}).encode()
    for _ in range(3):
        try:
            await storage.put_object(IDEMPOTENCY, name, body, version=None)
            return Claim(task_id=new_task_id, replayed=False)
        except Conflict:
            pass
        try:
            stored, _ = await storage.get_object(IDEMPOTENCY, name)
        except NotFound:
            continue  # deleted between our attempts: claim again
        record = json.loads(stored)
        if record.get("request") != digest:
            raise Conflict("Idempotency-Key was already used with a different request")
        return Claim(task_id=str(record["task_id"]), replayed=True)
    raise Conflict("Idempotency-Key is being claimed concurrently; retry")
