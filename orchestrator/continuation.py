"""Continuing a conversation: a record of a section that ``continues`` another (config.json)
names an earlier task of the same owner under ``continue_task_id``, and its job sends the
prompt into the conversation of that task's section, on the asset that answered there — never
into a new conversation, never on another asset (AI-Prism's ``POST /chat`` about an analysed
section).

:func:`resolve` runs at submission, before the task is stored. For every record it removes the
marker (it is not part of the prompt); for a record of a continuing section it loads the
earlier task as the caller sees it (another owner's task is not found, exactly like a missing
one), checks that the continued section completed with a conversation, copies the section's
``carry`` fields of the earlier record into the record's ``context`` object, and says which
conversation the record continues. The pipeline then runs the job with that conversation as
the one to resume, its asset as the whole chain (:mod:`orchestrator.pipeline`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from common.errors import InvalidInput, WrongState
from common.platform_config import CONTINUE_TASK_ID
from orchestrator.config import SectionsConfig
from orchestrator.detection import Detected
from orchestrator.models import Continued, SectionState, TaskRecord

# The earlier task, as the submitting caller may see it (NotFound otherwise).
Load = Callable[[str], Awaitable[TaskRecord]]


async def resolve(
    records: list[dict[str, Any]],
    detected: list[Detected],
    config: SectionsConfig,
    load: Load,
) -> dict[int, Continued]:
    """The conversation each continuing record (by index) continues; removes every record's
    marker and fills continuing records' ``context``. Raises InvalidInput for a marker where
    none belongs, a missing or malformed one, or a context that is not an object;
    NotFound for a task the caller cannot see; WrongState when its section cannot be continued."""
    found: dict[int, Continued] = {}
    for hit in detected:
        record = records[hit.index]
        section = config.sections[hit.section]
        field = f"data[{hit.index}].{CONTINUE_TASK_ID}"
        marker = record.pop(CONTINUE_TASK_ID, None)
        if not section.continues:
            if marker is not None:
                raise InvalidInput(f"{field}: section {hit.section!r} continues no conversation")
            continue
        if not isinstance(marker, str) or not marker:
            raise InvalidInput(
                f"{field}: required, a task id: section {hit.section!r} continues the "
                f"conversation of section {section.continues!r} of an earlier task"
            )
        earlier = await load(marker)
        continued = earlier.result_data.get(section.continues)
        if continued is None:
            raise WrongState(f"task {marker} has no section {section.continues!r} to continue")
        if (
            continued.status != SectionState.COMPLETED
            or not continued.conv_id
            or not continued.model_used
        ):
            raise WrongState(
                f"task {marker}: its section {section.continues!r} is "
                f"{continued.status.value}; only a completed section's conversation can be "
                "continued"
            )
        if section.carry:
            context = record.get("context")
            if not isinstance(context, dict):
                raise InvalidInput(
                    f"data[{hit.index}].context: must be a JSON object (section "
                    f"{hit.section!r} adds {list(section.carry)} of the earlier record to it)"
                )
            before = earlier.data[continued.record_index] if earlier.data else {}
            context.update({name: before[name] for name in section.carry if name in before})
        found[hit.index] = Continued(
            task_id=marker,
            section=section.continues,
            conv_id=continued.conv_id,
            asset_id=continued.model_used,
        )
    return found
