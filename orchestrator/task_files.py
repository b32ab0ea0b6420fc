"""Files in tasks: the references a task's records make, checked at submission; the files each
section's job carries; and what a task's end does to its files.

**At submission** (:func:`resolve`) every ``{"file_id": …}`` reference of the records
(:mod:`common.file_refs`) must name a file of the submitting principal that exists and has not
expired. Each distinct file costs storage one metadata read (GetMeta, one S3 GET), at most
:data:`LOOKUPS_AT_ONCE` at a time and at most :data:`MAX_FILES_PER_TASK` per task. The lookups
act for the principal and never as an admin, so an admin's task, like anyone's, references only
its submitter's own files: the job reads them on the task principal's behalf, and the end of the
task may delete them. A file that is missing, expired or another owner's is answered alike,
``invalid_input`` naming where the reference is and the id: ``data[0].report: file f_… not
found``, so ids of other owners cannot be probed. The task keeps what storage said of each file
(:class:`~orchestrator.models.FileRef`: name, type, size, SHA-256, object key, temporary) and
never its content.

**Jobs** (:func:`of_record`) carry the references of their own record, with the object keys; the
worker streams the bytes from storage_svc itself.

**At the end** (:func:`after_task`), wherever the end is written (the run, or a cancel written
for an owner that cannot be reached):

- a task ending ``completed`` or ``cancelled`` deletes its temporary inputs (when the setting
  says so); one ending in ``error`` keeps them for a retry, and they expire anyway;
- a section that stores its answer as a file (``"output": "file"``) and whose job may have been
  run more than once (sent again after a lost worker, or the task taken over) may have left a
  result file of an earlier dispatch whose result never arrived: the owner's files named like
  the section's result file are listed and every one but the result's is deleted, so a task
  ends with one result file per section.

Both are best effort: a failure is logged and never changes the task; whatever is left expires
with the files' retention.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from common import file_ids, file_refs
from common.errors import AppError, InvalidInput, NotFound, TooLarge
from orchestrator.config import SectionConfig, SectionsConfig
from orchestrator.file_client import FileClient
from orchestrator.models import FileRef, TaskRecord, TaskState

logger = logging.getLogger(__name__)

MAX_FILES_PER_TASK = 64
LOOKUPS_AT_ONCE = 8
# Pages of an owner's files (1000 each) looked through for a lost dispatch's result file.
DUPLICATE_SCAN_PAGES = 10
OUTPUT_FILE = "file"


def references(records: list[dict[str, Any]]) -> list[file_refs.Reference]:
    """Every file reference of ``records``, in order; InvalidInput naming a reference whose id
    is not a file id, TooLarge past :data:`MAX_FILES_PER_TASK` distinct files."""
    found: list[file_refs.Reference] = []
    for index, record in enumerate(records):
        for reference in file_refs.references(record, f"data[{index}]"):
            given = reference.file_id
            if not isinstance(given, str) or not file_ids.REGEX.match(given):
                raise InvalidInput(
                    f"{reference.where}: file_id must be a file id, f_<32 hex>_<24 hex>"
                )
            found.append(reference)
    if len({str(r.file_id) for r in found}) > MAX_FILES_PER_TASK:
        raise TooLarge(f"data: at most {MAX_FILES_PER_TASK} files per task")
    return found


async def resolve(files: FileClient, owner: str, records: list[dict[str, Any]]) -> list[FileRef]:
    """What storage says of every file ``records`` reference, for a task of ``owner``.
    InvalidInput naming every reference to a file ``owner`` cannot use."""
    found = references(records)
    if not found:
        return []
    ids = list(dict.fromkeys(str(r.file_id) for r in found))
    room = asyncio.Semaphore(LOOKUPS_AT_ONCE)

    async def look_up(file_id: str) -> FileRef | None:
        async with room:
            try:
                return await files.meta(file_id, owner)
            except NotFound:
                return None

    metas = dict(zip(ids, await asyncio.gather(*(look_up(i) for i in ids)), strict=True))
    missing = [f"{r.where}: file {r.file_id} not found" for r in found if not metas[str(r.file_id)]]
    if missing:
        raise InvalidInput("; ".join(missing))
    return [meta for meta in metas.values() if meta is not None]


def of_record(record: TaskRecord, index: int) -> tuple[FileRef, ...]:
    """The files record ``index`` of ``record`` references, for its section's job."""
    wanted = {str(r.file_id) for r in file_refs.references(record.data[index], "")}
    return tuple(ref for ref in record.files if ref.file_id in wanted)


def output_of(section: SectionConfig | None) -> str:
    """How a section's job delivers its answer: "" inline, "file" as a result file."""
    return OUTPUT_FILE if section is not None and section.output == OUTPUT_FILE else ""


async def after_task(
    files: FileClient, record: TaskRecord, config: SectionsConfig, *, delete_temporary: bool
) -> None:
    """What ``record``'s end does to its files (see the module's docstring); never raises for
    storage's failures."""
    if delete_temporary and record.status in (TaskState.COMPLETED, TaskState.CANCELLED):
        for ref in record.files:
            if ref.temporary:
                await _delete(files, record, ref.file_id, "temporary input")
    for name, section in record.result_data.items():
        cfg = config.sections.get(name)
        rerun = section.dispatches > 1 or record.takeovers > 0
        if rerun and output_of(cfg) == OUTPUT_FILE:
            await _forget_lost_results(files, record, name, {f.file_id for f in section.files})


async def _forget_lost_results(
    files: FileClient, record: TaskRecord, section: str, kept: set[str]
) -> None:
    name = file_refs.result_name(record.task_id, section)
    token = ""
    try:
        for _ in range(DUPLICATE_SCAN_PAGES):
            page, token = await files.list_page(record.principal_id, token)
            lost = [ref for ref in page if ref.name == name and ref.file_id not in kept]
            for ref in lost:
                await _delete(files, record, ref.file_id, f"result file of a lost {section} job")
            if not token:
                return
    except AppError as exc:
        logger.warning("task %s: could not look for lost result files: %s", record.task_id, exc)
        return
    logger.warning(
        "task %s: looked through %d pages of its owner's files for lost %s result files; the "
        "rest expire with the retention",
        record.task_id,
        DUPLICATE_SCAN_PAGES,
        section,
    )


async def _delete(files: FileClient, record: TaskRecord, file_id: str, what: str) -> None:
    try:
        await files.delete(file_id, record.principal_id)
    except NotFound:
        logger.info("task %s: %s %s was gone already", record.task_id, what, file_id)
    except AppError as exc:
        logger.warning(
            "task %s: %s %s not deleted (%s); it expires with the retention",
            record.task_id,
            what,
            file_id,
            exc.message,
        )
    else:
        logger.info("task %s: %s %s deleted", record.task_id, what, file_id)
