"""Job kind ``outline_document``: the sections of an uploaded document (AI-Prism's upload).

The record is ``{"outline_document": {"file_id": ...}}``. The file (PDF, DOCX, Markdown or
plain text) is streamed from storage into the job's scratch folder and cut into sections by its
headings (:mod:`section_worker.kinds.documents`: pypdf, python-docx, markdown-it-py), in a
thread. The result names each section with its heading level, its place in reading order and
its length; a section's text stays in the document (``analyze_document`` reads it again), so
the outline of a large document stays small. A document that cannot be read (wrong type,
corrupt, encrypted, no text, over a limit) fails the job with the reason.

:func:`read_document` is shared with :mod:`section_worker.kinds.analyze_document`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from common.errors import TooLarge
from section_worker.files import FileRef
from section_worker.kinds import inputs
from section_worker.kinds.base import KindContext, KindError, KindOutcome
from section_worker.kinds.documents import DocumentLimits, ParsedDocument, parse_document
from section_worker.kinds.profile_table import spool

NAME = "outline_document"
NEEDS_PLATFORM = False
FIELD = "outline_document"
MIB = 1024 * 1024
_DEFAULTS = DocumentLimits()


class Options(BaseModel):
    """What one document may hold (every bound is checked before the work it would cost)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_bytes: int = Field(_DEFAULTS.max_bytes, gt=0, le=1024 * MIB, description="Largest file.")
    max_pages: int = Field(_DEFAULTS.max_pages, ge=1, le=10_000, description="Most PDF pages.")
    max_sections: int = Field(_DEFAULTS.max_sections, ge=1, le=10_000, description="Most sections.")
    max_section_chars: int = Field(
        _DEFAULTS.max_section_chars, ge=1, le=10_000_000, description="Longest section's text."
    )

    def limits(self) -> DocumentLimits:
        return DocumentLimits(
            max_bytes=self.max_bytes,
            max_pages=self.max_pages,
            max_sections=self.max_sections,
            max_section_chars=self.max_section_chars,
        )


async def read_document(ctx: KindContext, ref: FileRef, options: Options) -> ParsedDocument:
    """The sections of the document ``ref``: streamed from storage, then parsed in a thread.
    Raises :class:`~section_worker.kinds.documents.DocumentError` (an InvalidInput) naming the
    problem, TooLarge over a limit."""
    if ctx.files is None:
        raise KindError("this worker is not connected to file storage")
    if ref.size > options.max_bytes:
        raise TooLarge(f"file {ref.name!r} has {ref.size} bytes; the limit is {options.max_bytes}")
    ctx.step(f"reading file {ref.name!r} from storage")
    path = await spool(ctx.files.open(ref, ctx.job.owner_id), ctx.scratch, options.max_bytes)
    ctx.step(f"finding the sections of {ref.name!r}")
    return await asyncio.to_thread(
        parse_document,
        path,
        content_type=ref.content_type or None,
        name=ref.name,
        limits=options.limits(),
    )


def describe(document: ParsedDocument, ref: FileRef) -> dict[str, Any]:
    """What a result says of the document itself."""
    return {
        "file_id": ref.file_id,
        "name": document.name,
        "format": document.format.value,
        "heading_source": document.heading_source.value,
        "pages": document.pages,
        "sections": len(document.sections),
    }


async def run(ctx: KindContext) -> KindOutcome:
    """The outline of the record's document."""
    assert isinstance(ctx.options, Options)
    record = inputs.record_of(ctx.job)
    ref = inputs.file_of(ctx.job, record, FIELD)
    ctx.progress(0, 1, "document")
    document = await read_document(ctx, ref, ctx.options)
    ctx.progress(1, 1, "document")
    return KindOutcome(
        result={
            "document": describe(document, ref),
            "sections": [
                {
                    "name": s.name,
                    "level": s.level,
                    "order": s.order,
                    "chars": s.char_count,
                }
                for s in document.sections
            ],
        }
    )
