"""Job kind ``analyze_document``: AI-Prism feedback on an uploaded document's sections, every
section in parallel, as one job.

The record is ``{"analyze_document": {"file_id": ...}, "sections": ["Risks", ...]}``;
without ``sections`` (or with ``null``) every section of the document is analysed. The
document is read and cut into sections as ``outline_document`` does
(:func:`section_worker.kinds.outline_document.read_document`); a section named in the record
that the document does not have fails the job, listing the ones it has. Each chosen section
goes to the platform as the same prompt an inline analysis sends
(:func:`common.feedback.analysis_prompt`), ``parallel_sections`` at a time, each through the
section's fallback chain under the worker's protection. Progress counts sections done of all.

The result lists, in reading order, every analysed section with its ``feedback`` items, the
asset that answered (``model_used``) and its cost; a section that failed through the whole
chain, or whose answer is not feedback, carries its ``error`` instead, and the rest are kept.
When every section failed through the chain (nothing was paid), the job fails as a
conversation does, so the task can be retried.

Never paid twice: each answered section is kept in storage as it arrives
(:mod:`section_worker.kinds.checkpoints`); a dispatch after a worker died reuses it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import Field

from common.feedback import NotFeedback, analysis_prompt, parse_feedback
from section_worker.kinds import inputs, outline_document
from section_worker.kinds.base import KindContext, KindError, KindOutcome
from section_worker.kinds.checkpoints import Checkpoints
from section_worker.kinds.documents import Section
from section_worker.protection.chain import ChainExhausted

logger = logging.getLogger(__name__)

NAME = "analyze_document"
NEEDS_PLATFORM = True
FIELD = "analyze_document"
SECTIONS_FIELD = "sections"
_LISTED = 20  # sections named in the error for a missing one


class Options(outline_document.Options):
    """The document's limits, and how many sections are analysed at once."""

    parallel_sections: int = Field(
        8, ge=1, le=64, description="Sections in flight at once (the tenant's limits still apply)."
    )


@dataclass(frozen=True)
class Analysed:
    """One section's analysis: its feedback, or why there is none."""

    order: int
    name: str
    feedback: list[dict[str, Any]] | None
    error: str
    model_used: str
    cost: float

    @classmethod
    def kept(cls, raw: dict[str, Any]) -> Analysed | None:
        """The analysis a checkpoint holds; None when it is not one (the section is asked
        again)."""
        try:
            feedback = raw["feedback"]
            if feedback is not None and not isinstance(feedback, list):
                return None
            return cls(
                order=int(raw["order"]),
                name=str(raw["name"]),
                feedback=feedback,
                error=str(raw.get("error", "")),
                model_used=str(raw.get("model_used", "")),
                cost=float(raw["cost"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


def wanted_sections(record: dict[str, Any], most: int) -> list[str] | None:
    """The section names the record asks for; None for every section. KindError when
    ``sections`` is not a non-empty list of at most ``most`` distinct names."""
    value = record.get(SECTIONS_FIELD)
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v.strip() for v in value)
    ):
        raise KindError(f'the record\'s "{SECTIONS_FIELD}" must be a list of section names')
    if len(value) > most:
        raise KindError(f"the record names {len(value)} sections; at most {most} may be asked")
    if len(set(value)) != len(value):
        raise KindError(f'the record\'s "{SECTIONS_FIELD}" names a section twice')
    return list(value)


def choose(sections: tuple[Section, ...], wanted: list[str] | None, document: str) -> list[Section]:
    """The sections to analyse, in reading order; KindError naming any the document lacks."""
    if wanted is None:
        return list(sections)
    by_name = {s.name: s for s in sections}
    missing = [name for name in wanted if name not in by_name]
    if missing:
        have = [s.name for s in sections[:_LISTED]]
        more = f" and {len(sections) - _LISTED} more" if len(sections) > _LISTED else ""
        raise KindError(
            f"document {document!r} has no section named {', '.join(map(repr, missing))}; "
            f"its sections are {have}{more}"
        )
    chosen = set(wanted)
    return [s for s in sections if s.name in chosen]


async def run(ctx: KindContext) -> KindOutcome:
    """Feedback on the record's document, section by section."""
    options = ctx.options
    assert isinstance(options, Options)
    job, files = ctx.job, ctx.files
    record = inputs.record_of(job)
    ref = inputs.file_of(job, record, FIELD)
    wanted = wanted_sections(record, options.max_sections)
    document = await outline_document.read_document(ctx, ref, options)
    chosen = choose(document.sections, wanted, ref.name)
    assert files is not None  # read_document needs them
    checkpoints = Checkpoints(files, job.owner_id, job.task_id, job.section)
    kept = {
        index: analysed
        for index, raw in (await checkpoints.load()).items()
        if (analysed := Analysed.kept(raw)) is not None
    }
    total = len(chosen)
    done: dict[int, Analysed] = {}
    exhausted: list[ChainExhausted] = []
    reused = 0
    ctx.progress(0, total, "document sections")
    ctx.step(f"analysing {total} sections of {ref.name!r}")

    def finished(analysed: Analysed) -> None:
        done[analysed.order] = analysed
        ctx.progress(len(done), total, "document sections")

    async def analyse(section: Section, slot: asyncio.Semaphore) -> None:
        async with slot:
            prompt = analysis_prompt(section.name, section.content)
            try:
                answer = await ctx.platform.ask(prompt, label=f"section {section.order}")
            except ChainExhausted as exc:  # not paid, so not kept: a later dispatch asks again
                exhausted.append(exc)
                finished(Analysed(section.order, section.name, None, str(exc), "", 0.0))
                return
            try:
                feedback: list[dict[str, Any]] | None = parse_feedback(answer.response)
                error = ""
            except NotFeedback as exc:
                feedback, error = None, str(exc)
            analysed = Analysed(
                section.order, section.name, feedback, error, answer.asset_id, answer.cost
            )
            await checkpoints.keep(section.order, asdict(analysed))
            finished(analysed)

    slot = asyncio.Semaphore(options.parallel_sections)
    try:
        async with asyncio.TaskGroup() as group:
            for section in chosen:
                was = kept.get(section.order)
                if was is not None and was.name == section.name:
                    reused += 1
                    finished(was)
                    continue
                group.create_task(analyse(section, slot))
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None

    if total and len(exhausted) == total:
        raise exhausted[0]  # nothing answered, nothing paid: fail as a conversation does
    await checkpoints.discard()
    levels = {s.order: s.level for s in chosen}
    results = [done[s.order] for s in chosen]
    failed = sum(1 for a in results if a.feedback is None)
    logger.info("analysed %s: %d sections (%d reused, %d failed)", ref.name, total, reused, failed)
    return KindOutcome(
        result={
            "document": outline_document.describe(document, ref),
            "sections": [
                {
                    "name": a.name,
                    "level": levels[a.order],
                    "order": a.order,
                    "status": "failed" if a.feedback is None else "completed",
                    "feedback": a.feedback,
                    "error": a.error,
                    "model_used": a.model_used,
                    "cost": a.cost,
                }
                for a in results
            ],
            "sections_reused": reused,
            "sections_failed": failed,
        },
        cost=round(sum(a.cost for a in results), 6),
    )
