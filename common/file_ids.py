"""The file id and the upload chunk limit, owned here for every service.

A file id is ``f_<32 hex>_<24 hex>``. The first part is the owner's *key*, the first 32 hex
digits of SHA-256 of the owner's principal id: storage keeps each owner's files under
``<files prefix>…/<owner key>/``, so listing one owner's files reads nothing of anyone else's,
and an id names the one place its file can be (an admin reaches any file by id alone). The
second part is random (96 bits from :mod:`secrets`), so ids cannot be guessed.

The owner key is a hash, not the principal id: keys and pre-signed URLs never show who owns a
file. It is unsalted, so someone who holds a file id and knows a principal id can tell whether
that principal owns it; ids only ever go to their owner and to admins.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from common.errors import InvalidInput

PATTERN = r"^f_[0-9a-f]{32}_[0-9a-f]{24}$"
"""The form as a pattern string for FastAPI ``Path(pattern=...)`` and JSON schema."""
REGEX = re.compile(r"f_(?P<owner_key>[0-9a-f]{32})_[0-9a-f]{24}\Z")
"""The form compiled; ``REGEX.match(text)`` is true only for the whole of an id."""
EXAMPLE = "f_9f86d081884c7d659a2feaa0c55ad015_0123456789abcdef01234567"

MAX_CHUNK_BYTES = 1024 * 1024
"""Most data bytes one upload message may carry; bigger messages are refused."""


def owner_key(owner: str) -> str:
    """The 32 hex digits naming ``owner``'s files (keys, file ids)."""
    return hashlib.sha256(owner.encode()).hexdigest()[:32]


def new(owner: str) -> str:
    """A new, random file id for a file of ``owner``."""
    return f"f_{owner_key(owner)}_{secrets.token_hex(12)}"


def check(file_id: str) -> str:
    """The owner key of a well-formed file id; InvalidInput otherwise."""
    match = REGEX.match(file_id)
    if match is None:
        raise InvalidInput(f"file_id {file_id[:80]!r} is not of the form f_<32 hex>_<24 hex>")
    return match["owner_key"]
