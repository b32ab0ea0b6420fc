"""The parts of an upload and a download that do not depend on how bytes are sent.

An upload reads its source in chunks (a file is never read whole) and reports the bytes sent
to a progress callback; a download writes the bytes it receives into a temporary file next to
the destination, hashes them, and only when every byte arrived and the SHA-256 matches the
file's (the gateway's ``ETag``) renames it into place, so a destination never holds half a file.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import mimetypes
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import httpx

from gateway.models import DEFAULT_CONTENT_TYPE
from wealthai_client.errors import BadInput, ServerError

CHUNK_BYTES = 1024 * 1024

Progress = Callable[[int, int | None], None]
"""Called with the bytes done so far and the total (None when unknown)."""

Source = str | os.PathLike[str] | bytes


@dataclass(frozen=True)
class Upload:
    """What is known about an upload before its bytes are read."""

    name: str
    content_type: str
    size: int | None


def describe(source: object, name: str | None, content_type: str | None) -> Upload:
    """Name, type and size of an upload: from the file when the source is a path, else as
    given (a name is required for bytes that come from anywhere but a file)."""
    size: int | None = None
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            if not path.is_file():
                raise BadInput(f"{path}: not a file")
            size = path.stat().st_size
        except OSError as exc:
            raise BadInput(f"{path}: {exc.strerror}") from None
        name = name or path.name
    elif isinstance(source, bytes):
        size = len(source)
    if not name:
        raise BadInput("name: required when the bytes do not come from a file")
    kind = content_type or mimetypes.guess_type(name)[0] or DEFAULT_CONTENT_TYPE
    return Upload(name, kind, size)


@contextlib.contextmanager
def opened(source: object) -> Iterator[Iterator[bytes]]:
    """The source's bytes in chunks: a file read ``CHUNK_BYTES`` at a time (closed afterwards),
    bytes cut in chunks, an iterable as it comes."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as handle:
            yield iter(functools.partial(handle.read, CHUNK_BYTES), b"")
    elif isinstance(source, bytes):
        yield iter([source[i : i + CHUNK_BYTES] for i in range(0, len(source), CHUNK_BYTES)])
    else:
        assert isinstance(source, Iterable)
        yield iter(source)


class Counter:
    """Counts bytes as they pass and tells the progress callback."""

    def __init__(self, total: int | None, progress: Progress | None) -> None:
        self.total = total
        self.done = 0
        self._progress = progress
        if progress:
            progress(0, total)

    def add(self, chunk: bytes) -> bytes:
        self.done += len(chunk)
        if self._progress and chunk:
            self._progress(self.done, self.total)
        return chunk


# -- downloads ---------------------------------------------------------------------------------

_FILENAME_STAR = re.compile(r"filename\*=UTF-8''([^;]+)", re.IGNORECASE)
_FILENAME = re.compile(r'filename="([^"]*)"', re.IGNORECASE)


def name_of(disposition: str, fallback: str) -> str:
    """The file name a ``Content-Disposition`` gives, safe to create in a folder (no path)."""
    found = _FILENAME_STAR.search(disposition)
    name = unquote(found.group(1)) if found else ""
    if not name and (plain := _FILENAME.search(disposition)):
        name = plain.group(1)
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if name in ("", ".", "..") or "\x00" in name:
        return fallback
    return name


@dataclass(frozen=True)
class Downloaded:
    """A file written to disk: where, how many bytes, their SHA-256, and its type."""

    path: Path
    size: int
    sha256: str
    content_type: str


class Sink:
    """Writes a download into a temporary file beside its destination and renames it there
    once complete and verified (:meth:`close` removes it otherwise)."""

    def __init__(
        self,
        file: str,
        response: httpx.Response,
        dest: str | os.PathLike[str] | None,
        progress: Progress | None,
    ) -> None:
        headers = response.headers
        self.content_type = headers.get("content-type", DEFAULT_CONTENT_TYPE)
        self.expected_sha = headers.get("etag", "").strip('"').lower()
        length = headers.get("content-length", "")
        self.expected_size = int(length) if length.isdigit() else None
        target = Path(dest) if dest is not None else Path.cwd()
        if target.is_dir():
            target = target / name_of(headers.get("content-disposition", ""), file)
        self.path = target
        try:
            fd, temp = tempfile.mkstemp(
                prefix=f".{target.name}.", suffix=".part", dir=target.parent
            )
        except OSError as exc:
            raise BadInput(f"{target.parent}: cannot write there: {exc.strerror}") from None
        self._temp = Path(temp)
        self._handle = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._counter = Counter(self.expected_size, progress)
        self._done = False

    def write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        self._handle.write(self._counter.add(chunk))

    def finish(self) -> Downloaded:
        """Checks the bytes against the size and SHA-256 the gateway announced; moves the file
        into place."""
        self._handle.close()
        size, digest = self._counter.done, self._hash.hexdigest()
        if self.expected_size is not None and size != self.expected_size:
            raise ServerError(f"download cut short: {size} of {self.expected_size} bytes")
        if self.expected_sha and digest != self.expected_sha:
            raise ServerError(
                f"download corrupted: SHA-256 {digest}, the file's is {self.expected_sha}"
            )
        os.replace(self._temp, self.path)
        self._done = True
        return Downloaded(self.path, size, digest, self.content_type)

    def close(self) -> None:
        """Removes the temporary file unless the download finished."""
        self._handle.close()
        if not self._done:
            self._temp.unlink(missing_ok=True)
