"""The metadata record of a file, where a file's objects live, and the checks of what callers
send: pure functions, no I/O.

A record is a small JSON object (:func:`encode` / :func:`decode`); see :mod:`storage_svc.files`
for why it is an object of its own rather than the S3 user metadata of the file's bytes.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from common import file_ids
from common.errors import InvalidInput, TooLarge
from common.principals import Principal, Role

DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_NAME_CHARS = 255
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}\Z")
_RECORD_VERSION = 1


@dataclass(frozen=True)
class FileMeta:
    """What storage knows about one file. ``pending`` marks a file reserved by a pre-signed PUT
    and not completed yet: it is invisible to every read."""

    file_id: str
    owner: str
    name: str
    content_type: str
    size: int
    sha256: str
    created_at: datetime
    expires_at: datetime
    temporary: bool = False
    pending: bool = False

    def expired(self, now: datetime) -> bool:
        """Whether the file's time is up at ``now``."""
        return now >= self.expires_at


class Layout(NamedTuple):
    """Where the objects of files live under the files prefix (``files/`` by default)::

    files/data/<owner key>/<file id>         the bytes (SSE AES256)
    files/meta/<owner key>/<file id>.json    the metadata record (SSE AES256)
    """

    prefix: str

    def data_key(self, file_id: str) -> str:
        return f"{self.prefix}data/{file_ids.check(file_id)}/{file_id}"

    def meta_key(self, file_id: str) -> str:
        return f"{self.prefix}meta/{file_ids.check(file_id)}/{file_id}.json"

    def meta_prefix(self, owner_key: str | None) -> str:
        """The prefix of one owner's records, or of everyone's (``None``)."""
        return f"{self.prefix}meta/" + (f"{owner_key}/" if owner_key else "")

    def file_id_of(self, meta_key: str) -> str | None:
        """The file id of a metadata record's key; None for any other key."""
        name = meta_key.rsplit("/", 1)[-1].removesuffix(".json")
        if not meta_key.endswith(".json") or not file_ids.REGEX.match(name):
            return None
        return name if self.meta_key(name) == meta_key else None


def caller(owner: str, admin: bool) -> Principal:
    """The principal a file RPC acts for; an empty id is refused."""
    if not owner:
        raise InvalidInput("owner is required: the principal id of the caller")
    return Principal(id=owner, tenant="", role=Role.ADMIN if admin else Role.CLIENT)


def may_reach(who: Principal, file_id: str) -> bool:
    """Whether ``who`` may even look for ``file_id``: admins anywhere, others in their own keys.
    InvalidInput for a malformed id."""
    return who.admin or file_ids.check(file_id) == file_ids.owner_key(who.id)


def check_name(name: str) -> str:
    """A file name: 1-255 characters, no control characters, no '/'."""
    if not name or len(name) > MAX_NAME_CHARS:
        raise InvalidInput(f"name must have 1 to {MAX_NAME_CHARS} characters")
    if "/" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidInput("name must not contain '/' or control characters")
    return name


def check_content_type(content_type: str) -> str:
    """A MIME type ``type/subtype`` (parameters allowed); empty means octet-stream."""
    if not content_type:
        return DEFAULT_CONTENT_TYPE
    essence = content_type.split(";", 1)[0].strip()
    if len(content_type) > 255 or not _CONTENT_TYPE.fullmatch(essence):
        raise InvalidInput(f"content_type {content_type[:80]!r} is not a MIME type")
    if any(ord(c) < 32 or ord(c) > 126 for c in content_type):
        raise InvalidInput("content_type must be printable ASCII")
    return content_type


def check_sha256(sha256: str) -> str:
    """A SHA-256 in hex (lowercased), or ""."""
    value = sha256.lower()
    if value and not _SHA256_HEX.match(value):
        raise InvalidInput("sha256 must be 64 hex digits")
    return value


def size_limit(asked: int, most: int) -> int:
    """The size limit of one upload: ``asked`` when positive and lower than ``most``."""
    if asked < 0:
        raise InvalidInput("max_bytes must not be negative")
    return min(asked, most) if asked else most


def too_large(limit: int) -> TooLarge:
    return TooLarge(f"file exceeds the size limit of {limit} bytes")


class ByteRange(NamedTuple):
    """An inclusive range asked for: ``start``-``end`` (``end`` None: to the end), or the last
    ``suffix`` bytes."""

    start: int = 0
    end: int | None = None
    suffix: int | None = None


def resolve_range(size: int, asked: ByteRange | None) -> tuple[int, int]:
    """The inclusive byte range to serve of a file of ``size`` bytes (``(0, -1)`` for an empty
    file read whole). TooLarge (OUT_OF_RANGE) when nothing of the file is in range."""
    if asked is None:
        return 0, size - 1
    if asked.suffix is not None:
        if asked.suffix < 1:
            raise InvalidInput("suffix_length must be at least 1")
        if size == 0:
            raise TooLarge(_unsatisfiable(f"last {asked.suffix} bytes", size))
        return max(0, size - asked.suffix), size - 1
    if asked.start < 0 or (asked.end is not None and asked.end < asked.start):
        raise InvalidInput("range must have 0 <= start <= end")
    if asked.start >= size:
        raise TooLarge(_unsatisfiable(f"bytes {asked.start}-{_or_end(asked.end)}", size))
    end = size - 1 if asked.end is None else min(asked.end, size - 1)
    return asked.start, end


def _or_end(end: int | None) -> str:
    return "" if end is None else str(end)


def _unsatisfiable(what: str, size: int) -> str:
    return f"range not satisfiable: {what} of a file of {size} bytes"


def rfc3339(moment: datetime) -> str:
    """``2025-12-30T12:00:00Z``: UTC, whole seconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode(meta: FileMeta) -> bytes:
    """The JSON body of a metadata record."""
    fields: dict[str, Any] = dataclasses.asdict(meta)
    fields["created_at"] = rfc3339(meta.created_at)
    fields["expires_at"] = rfc3339(meta.expires_at)
    return json.dumps({"v": _RECORD_VERSION, **fields}, ensure_ascii=False).encode()


def decode(body: bytes) -> FileMeta:
    """A metadata record read back; ValueError when it is not one."""
    fields = json.loads(body)
    if not isinstance(fields, dict) or fields.pop("v", None) != _RECORD_VERSION:
        raise ValueError("not a file metadata record")
    for name in ("created_at", "expires_at"):
        fields[name] = datetime.strptime(fields[name], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return FileMeta(**fields)
