"""What file kinds read from their job: the record's fields and the files it references."""

from __future__ import annotations

import json
from typing import Any

from common import file_refs
from section_worker.files import FileRef
from section_worker.kinds.base import KindError, KindJob

TABLE_FIELD = "table_file"


def record_of(job: KindJob) -> dict[str, Any]:
    """The job's record as an object; KindError when it is not one."""
    try:
        record = json.loads(job.record_json)
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise KindError("the record must be a JSON object")
    return record


def table_file(job: KindJob, record: dict[str, Any]) -> FileRef:
    """The file the record's ``table_file`` references, as the job was given it."""
    return file_of(job, record, TABLE_FIELD)


def file_of(job: KindJob, record: dict[str, Any], field: str) -> FileRef:
    """The file the record's ``field`` references (``{"file_id": …}``), as the job was given
    it; KindError naming the field otherwise."""
    value = record.get(field)
    if not isinstance(value, dict) or not isinstance(value.get(file_refs.KEY), str):
        raise KindError(f'the record\'s "{field}" must be {{"file_id": "<file id>"}}')
    wanted = value[file_refs.KEY]
    for ref in job.files:
        if ref.file_id == wanted:
            return ref
    raise KindError(f"{field}: file {wanted} was not given to the job")
