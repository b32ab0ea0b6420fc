"""The API key format, owned here for the gateway and the orchestrator (SPEC §10).

A key reads ``wak_<key_id>_<secret>``: ``key_id`` is 12 random hex digits, public, naming the
key's stored record (and the key in logs); ``secret`` is 32 random bytes in urlsafe base64 (256
bits). Only :func:`key_hash` of the whole key is ever stored. A plain SHA-256 is enough here: a
slow hash (bcrypt, scrypt, argon2) protects secrets people choose, which are guessable; a
256-bit random secret cannot be found from its hash by any number of guesses, slow or fast.
Hashes are compared in constant time (:func:`matches`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

PREFIX = "wak_"
KEY_ID_BYTES = 6
SECRET_BYTES = 32
KEY_ID_PATTERN = "^[0-9a-f]{12}$"
"""A key id as a pattern string for FastAPI ``Path(pattern=...)``."""
REGEX = re.compile(r"wak_(?P<key_id>[0-9a-f]{12})_(?P<secret>[A-Za-z0-9_-]{43})\Z")
"""A whole key; ``REGEX.match(text)`` is true only for the whole of one."""


def new_key() -> tuple[str, str]:
    """A fresh random key: ``(key_id, key)``."""
    key_id = secrets.token_hex(KEY_ID_BYTES)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"


def key_id_of(key: str) -> str | None:
    """The key id a presented key names, None when it is not of the form (say nothing more:
    it may be someone's secret pasted in the wrong place)."""
    found = REGEX.match(key)
    return found["key_id"] if found else None


def key_hash(key: str) -> str:
    """What is stored of a key: SHA-256 of the whole key, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


def matches(key: str, stored_hash: str) -> bool:
    """Whether ``key`` is the key ``stored_hash`` was made from, in constant time."""
    return hmac.compare_digest(key_hash(key).encode(), stored_hash.encode())
