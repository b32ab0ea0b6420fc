"""Sealing of the user's platform password inside the task document.

A task must survive an orchestrator restart, and resuming it needs the user's password to
authenticate again; the password is therefore stored, but only encrypted with AES-256-GCM under
a key from settings (``ORCH_CREDENTIAL_KEY``) and bound to its task id, so a sealed value copied
into another task does not open. Without the key the stored value is useless.

:class:`VerifiedCredentials` remembers, as keyed hashes only, which credentials the platform
accepted lately.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
import time

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from orchestrator.worker_client import Credentials

_PREFIX = "aesgcm1:"


class SealError(Exception):
    """The sealed value is damaged or was sealed under another key or task."""


def new_key() -> str:
    """A fresh key, as the settings expect it (urlsafe base64 of 32 random bytes)."""
    return base64.urlsafe_b64encode(AESGCM.generate_key(bit_length=256)).decode()


def decode_key(text: str) -> bytes:
    """The raw key from its base64 text; ValueError when it is not 32 bytes."""
    try:
        raw = base64.urlsafe_b64decode(text.encode())
    except (binascii.Error, ValueError) as exc:
        raise ValueError("must be urlsafe base64") from exc
    if len(raw) != 32:
        raise ValueError("must decode to 32 bytes (AES-256)")
    return raw


class Sealer:
    """Seals and opens passwords under one key."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, secret: str, task_id: str) -> str:
        nonce = os.urandom(12)
        blob = nonce + self._aead.encrypt(nonce, secret.encode(), task_id.encode())
        return _PREFIX + base64.urlsafe_b64encode(blob).decode()

    def open(self, sealed: str, task_id: str) -> str:
        if not sealed.startswith(_PREFIX):
            raise SealError("unknown sealing format")
        try:
            blob = base64.urlsafe_b64decode(sealed[len(_PREFIX) :].encode())
            return self._aead.decrypt(blob[:12], blob[12:], task_id.encode()).decode()
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise SealError("sealed password cannot be opened with the configured key") from exc


class VerifiedCredentials:
    """Credentials a worker verified with the platform lately: the tasks that follow with the
    same ones skip that round trip (their section jobs still authenticate, with the token the
    workers hold). Only keyed hashes of the credentials are kept, never the passwords."""

    _PRUNE_AT = 1024

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._until: dict[bytes, float] = {}

    def _digest(self, credentials: Credentials) -> bytes:
        text = "\0".join((credentials.tenant, credentials.username, credentials.password))
        return hmac.digest(self._key, text.encode(), "sha256")

    def fresh(self, credentials: Credentials) -> bool:
        return self._until.get(self._digest(credentials), 0.0) > time.monotonic()

    def add(self, credentials: Credentials, valid_s: float) -> None:
        now = time.monotonic()
        if len(self._until) >= self._PRUNE_AT:
            self._until = {k: t for k, t in self._until.items() if t > now}
        self._until[self._digest(credentials)] = now + valid_s
