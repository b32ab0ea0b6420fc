"""The user's platform password at rest, and the access tokens obtained with it.

A task must survive an orchestrator restart, and resuming it needs the user's password to
authenticate again; the password is therefore stored in the task document, but only sealed with
AES-256-GCM under a key of the credential keyring (``ORCH_CREDENTIAL_KEYS``) and bound to its
task id, tenant and username, so a sealed value copied into another task, or next to another
user, does not open. Without the keys the stored value is useless; the seal is cleared once the
task can no longer need it (:mod:`orchestrator.transitions`, :mod:`orchestrator.sweeper`).

Sealed formats::

    aesgcm2:<key id>:<urlsafe b64 of nonce + ciphertext>   AAD = task id, tenant, username
    aesgcm1:<urlsafe b64 of nonce + ciphertext>            AAD = task id (older tasks; no key
                                                           id, so every key is tried)

The keyring holds several keys by id: the first seals, all of them open, so a new key is put in
front while the old one stays listed until no unfinished task uses it (README, "Secrets").

:class:`TokenCache` keeps the access tokens the platform issued, keyed by an HMAC of the
credentials, so the next task of the same user starts without a round trip while no password is
kept in memory.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import secrets
import struct
import time
from collections.abc import Callable, Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from orchestrator.worker_client import AccessToken, Credentials

_V1 = "aesgcm1:"
_V2 = "aesgcm2:"
LEGACY_KEY_ID = "k1"
KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class SealError(Exception):
    """The sealed value is damaged, names an unknown key, or belongs to another task or user."""


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


def _aad(*parts: str) -> bytes:
    """Length-prefixed parts: no two different tuples give the same bytes."""
    return b"".join(struct.pack(">I", len(b)) + b for b in (p.encode() for p in parts))


class Sealer:
    """Seals passwords under the keyring's first key and opens them under any of its keys.

    ``keys`` maps key ids to raw 32-byte keys, the sealing key first; a bare key is a one-key
    ring with the id ``k1`` (what ``ORCH_CREDENTIAL_KEY`` stands for).
    """

    def __init__(self, keys: bytes | Mapping[str, bytes]) -> None:
        ring = {LEGACY_KEY_ID: keys} if isinstance(keys, bytes) else dict(keys)
        if not ring:
            raise ValueError("the credential keyring is empty")
        for position, key_id in enumerate(ring, 1):
            if not KEY_ID.match(key_id):
                # Not echoed: a key written where its id belongs would land in the log.
                raise ValueError(f"key id of entry {position}: 1-32 letters, digits, '_' or '-'")
        self._aeads = {key_id: AESGCM(key) for key_id, key in ring.items()}
        self.key_id = next(iter(ring))

    @property
    def key_ids(self) -> list[str]:
        """Every key id of the ring, the sealing one first."""
        return list(self._aeads)

    def seal(self, secret: str, task_id: str, tenant: str, username: str) -> str:
        nonce = os.urandom(12)
        aad = _aad(task_id, tenant, username)
        blob = nonce + self._aeads[self.key_id].encrypt(nonce, secret.encode(), aad)
        return f"{_V2}{self.key_id}:{base64.urlsafe_b64encode(blob).decode()}"

    def open(self, sealed: str, task_id: str, tenant: str, username: str) -> str:
        if sealed.startswith(_V2):
            key_id, sep, text = sealed[len(_V2) :].partition(":")
            if not sep or key_id not in self._aeads:
                raise SealError(f"sealed under key id {key_id!r}, which is not in the keyring")
            return self._decrypt([self._aeads[key_id]], text, _aad(task_id, tenant, username))
        if sealed.startswith(_V1):
            # No key id in this format: try every key, the legacy one first.
            aeads = sorted(self._aeads.items(), key=lambda item: item[0] != LEGACY_KEY_ID)
            return self._decrypt([a for _, a in aeads], sealed[len(_V1) :], task_id.encode())
        raise SealError("unknown sealing format")

    @staticmethod
    def _decrypt(aeads: list[AESGCM], text: str, aad: bytes) -> str:
        try:
            blob = base64.urlsafe_b64decode(text.encode())
        except (binascii.Error, ValueError) as exc:
            raise SealError("sealed password is damaged") from exc
        for aead in aeads:
            try:
                return aead.decrypt(blob[:12], blob[12:], aad).decode()
            except (InvalidTag, ValueError):
                continue
        raise SealError("sealed password does not open for this task and user with its key")


class TokenCache:
    """Access tokens by user, held in memory while they have more than half their life left:
    a task started then still has most of a token's life for its sections, and a password
    changed at the platform is noticed within half a token's life. Keys are HMACs of (tenant,
    username, password) under a random per-process key; no password is kept."""

    _PRUNE_AT = 1024

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._key = secrets.token_bytes(32)
        self._clock = clock
        self._tokens: dict[bytes, tuple[AccessToken, float]] = {}

    def __len__(self) -> int:
        return len(self._tokens)

    def _digest(self, credentials: Credentials) -> bytes:
        text = _aad(credentials.tenant, credentials.username, credentials.password)
        return hmac.digest(self._key, text, "sha256")

    def get(self, credentials: Credentials) -> AccessToken | None:
        """The user's token with what is left of its life, or None when there is none worth
        handing to a new task."""
        entry = self._tokens.get(self._digest(credentials))
        if entry is None:
            return None
        token, expires_at = entry
        left = expires_at - self._clock()
        if left <= token.expires_in / 2:
            return None
        return AccessToken(token.value, left)

    def put(self, credentials: Credentials, token: AccessToken) -> None:
        now = self._clock()
        if len(self._tokens) >= self._PRUNE_AT:
            self._tokens = {
                k: (token, until)
                for k, (token, until) in self._tokens.items()
                if until - now > token.expires_in / 2
            }
            while len(self._tokens) >= self._PRUNE_AT:  # all fresh: the oldest go
                del self._tokens[next(iter(self._tokens))]
        self._tokens[self._digest(credentials)] = (token, now + token.expires_in)

    def discard(self, credentials: Credentials, value: str) -> None:
        """Forgets the user's token if it is still ``value`` (the platform rejected it)."""
        digest = self._digest(credentials)
        entry = self._tokens.get(digest)
        if entry is not None and hmac.compare_digest(entry[0].value, value):
            del self._tokens[digest]
