"""Files in a section job of today's kind (one AI conversation about one record): the record's
referenced files put into the prompt, and the answer delivered as a file when the section asks.

**Into the prompt.** Before any platform call, every ``{"file_id": …}`` reference of the record
(:mod:`common.file_refs`) is replaced by ``{"file_id", "name", "content_type", "content"}``, the
file's text read from storage_svc. Only text can be sent in a prompt — ``text/*``, JSON, CSV,
XML, YAML, NDJSON (:func:`is_text`) in UTF-8, or the charset its type names — of at most
``prompt_file_max_bytes`` per file and ``prompt_files_max_total_bytes`` for the job; anything
else fails the job with :class:`JobFileError` naming the file and why, and the platform is never
called, so nothing is paid. Every file is checked against those rules before any is read, and a
file is read with a buffer bounded by its limit, its size checked by :mod:`section_worker.files`.

**Out as a file.** A job whose ``output`` is ``"file"`` stores the platform's answer as the
Markdown file ``<task_id>_<section>.md`` of the job's owner, streamed to storage_svc; the result
then lists the file and its ``response`` is empty (the answer is the file). The name is the same
for every dispatch of a job, so the orchestrator can tell a result file from one an earlier,
lost dispatch stored (and delete that one).
"""

from __future__ import annotations

import codecs
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Protocol

from common import file_refs
from common.errors import AppError
from section_worker.files import FileClient, FileRef

OUTPUT_INLINE = ""
OUTPUT_FILE = "file"
RESULT_CONTENT_TYPE = "text/markdown; charset=utf-8"

_TEXT_TYPES = frozenset(
    {
        "application/json",
        "application/ld+json",
        "application/csv",
        "application/xml",
        "application/yaml",
        "application/x-yaml",
        "application/x-ndjson",
        "application/ndjson",
        "application/toml",
    }
)


class JobFileError(Exception):
    """A job's file cannot be used as the job needs it; the message names the file and why."""


class FileJob(Protocol):
    """What of a job this module reads."""

    @property
    def task_id(self) -> str: ...
    @property
    def section(self) -> str: ...
    @property
    def record_json(self) -> str: ...
    @property
    def owner_id(self) -> str: ...
    @property
    def files(self) -> tuple[FileRef, ...]: ...
    @property
    def output(self) -> str: ...


@dataclasses.dataclass(frozen=True)
class PromptLimits:
    """How much file text one prompt may carry."""

    per_file: int
    total: int


def is_text(content_type: str) -> bool:
    """Whether a file of ``content_type`` is text a prompt can carry."""
    essence = content_type.split(";", 1)[0].strip().lower()
    return (
        essence.startswith("text/") or essence in _TEXT_TYPES or essence.endswith(("+json", "+xml"))
    )


def _charset(content_type: str) -> str:
    """The charset a content type names (``utf-8`` when it names none)."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return "utf-8"


def _label(ref: FileRef) -> str:
    return f"file {ref.name!r} ({ref.file_id})"


async def prompt_of(job: FileJob, files: FileClient | None, limits: PromptLimits) -> str:
    """The prompt of ``job``: its record with each referenced file's text in place of the
    reference (the record as it is when it has none). JobFileError when a file cannot be sent
    in a prompt or read."""
    if file_refs.KEY not in job.record_json:
        return job.record_json  # no reference: nothing to parse
    try:
        record = json.loads(job.record_json)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        if job.files:
            raise JobFileError("the record is not a JSON object, so it refers to no file")
        return job.record_json  # a prompt of its own, sent as it is
    found = file_refs.references(record, "record")
    if not found:
        return job.record_json
    given = {ref.file_id: ref for ref in job.files}
    wanted: dict[str, FileRef] = {}
    for reference in found:
        ref = given.get(str(reference.file_id))
        if ref is None:
            raise JobFileError(
                f"{reference.where}: file {reference.file_id} was not given to the job"
            )
        _check_sendable(ref, limits)
        wanted[ref.file_id] = ref
    total = sum(ref.size for ref in wanted.values())
    if total > limits.total:
        raise JobFileError(
            f"the record's files hold {total} bytes; at most {limits.total} bytes of files can "
            "be sent in one prompt"
        )
    if files is None:
        raise JobFileError("this worker is not connected to file storage")
    texts = {
        ref.file_id: await _text(files, ref, job.owner_id, limits.per_file)
        for ref in wanted.values()
    }
    for reference in found:
        ref = given[str(reference.file_id)]
        inlined = {
            "file_id": ref.file_id,
            "name": ref.name,
            "content_type": ref.content_type,
            "content": texts[ref.file_id],
        }
        reference.holder[reference.slot] = inlined  # type: ignore[index]
    return json.dumps(record)


def _check_sendable(ref: FileRef, limits: PromptLimits) -> None:
    rule = f"only text files up to {limits.per_file} bytes can be sent in a prompt"
    if not is_text(ref.content_type):
        raise JobFileError(f"{_label(ref)} is {ref.content_type}: {rule}")
    if ref.size > limits.per_file:
        raise JobFileError(f"{_label(ref)} has {ref.size} bytes: {rule}")
    try:
        codecs.lookup(_charset(ref.content_type))
    except LookupError:
        raise JobFileError(f"{_label(ref)} names an unknown charset: {rule}") from None


async def _text(files: FileClient, ref: FileRef, owner: str, most: int) -> str:
    """The text of ``ref``, read into a buffer of at most ``most`` bytes."""
    buffer = bytearray()
    try:
        async for chunk in files.open(ref, owner):
            if len(buffer) + len(chunk) > most:
                raise JobFileError(f"{_label(ref)} holds more than {most} bytes")
            buffer += chunk
    except AppError as exc:
        raise JobFileError(f"{_label(ref)} cannot be read: {exc.message}") from None
    try:
        return buffer.decode(_charset(ref.content_type))
    except UnicodeDecodeError:
        raise JobFileError(
            f"{_label(ref)} is not {_charset(ref.content_type)} text; only text files can be "
            "sent in a prompt"
        ) from None


async def store_answer(job: FileJob, files: FileClient | None, answer: str) -> FileRef:
    """Stores ``answer`` as the job's result file, owned by the job's owner. JobFileError when
    it cannot be stored."""
    if files is None:
        raise JobFileError("this worker is not connected to file storage")

    async def chunks() -> AsyncIterator[bytes]:
        yield answer.encode()

    try:
        name = file_refs.result_name(job.task_id, job.section)
        return await files.write(job.owner_id, name, RESULT_CONTENT_TYPE, chunks())
    except AppError as exc:
        raise JobFileError(f"the answer could not be stored as a file: {exc.message}") from None
