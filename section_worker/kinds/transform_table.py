"""Job kind ``transform_table``: a natural-language instruction applied to every row of a CSV or
XLSX file by the AI platform, chunk by chunk, into an output file of the job's owner.

The record is ``{"instruction": "...", "table_file": {"file_id": ...}}``. The file is streamed
from storage into the job's scratch folder and read once to count its chunks (a table that
cannot be read fails here, before anything is paid). Then its chunks of ``chunk_rows`` rows
(:func:`section_worker.kinds.tables.iter_chunks`) go to the platform, ``parallel_chunks`` at a
time, each prompt through the section's fallback chain (limits, budgets and breakers apply per
chunk); the answers are assembled in row order (:class:`~section_worker.kinds.tables.
OutputWriter`) and the output is streamed back to storage as a file of the job's owner, named
``<input name>.transformed.<csv|xlsx>``. A chunk that fails through the whole chain, or whose
answer is not the rows asked for, is kept as its input rows with the reason, and reported by
its row range (``failed_chunks``); the rest is kept. Progress counts chunks done of all.
Memory holds the chunks in flight and at most four answers per parallel slot waiting behind a
slower chunk ahead of them; the table is read no further until that chunk is in.

Never paid twice: each answered chunk is kept in storage as it arrives
(:mod:`section_worker.kinds.checkpoints`); a dispatch after a worker died reuses them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from common.errors import TooLarge
from section_worker.kinds import inputs, tables
from section_worker.kinds.base import KindContext, KindError, KindOutcome
from section_worker.kinds.checkpoints import Checkpoints
from section_worker.kinds.profile_table import spool
from section_worker.protection.chain import ChainExhausted

logger = logging.getLogger(__name__)

NAME = "transform_table"
NEEDS_PLATFORM = True
MIB = 1024 * 1024
_CONTENT_TYPES = {
    tables.TableFormat.CSV: "text/csv; charset=utf-8",
    tables.TableFormat.XLSX: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


class Options(BaseModel):
    """How a table is cut and sent; every field has a working default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chunk_rows: int = Field(50, ge=1, le=5_000, description="Rows per prompt.")
    parallel_chunks: int = Field(
        4, ge=1, le=64, description="Chunks in flight at once (the tenant's limits still apply)."
    )
    max_bytes: int = Field(350 * MIB, gt=0, description="Largest input file.")
    max_columns: int = Field(tables.MAX_COLUMNS, ge=1, le=16_384, description="Widest table.")
    sheet: str | None = Field(None, description="XLSX sheet; the first when None.")


@dataclass(frozen=True)
class Answered:
    """A chunk's answer: its rows (or why they could not be used) and what it cost; kept as a
    checkpoint once paid for."""

    index: int
    first_row: int
    last_row: int
    rows: list[dict[str, str]] | None
    reason: str
    cost: float

    @classmethod
    def kept(cls, raw: dict[str, Any]) -> Answered | None:
        """The answer a checkpoint holds; None when it is not one (the chunk is asked again)."""
        try:
            rows = raw["rows"]
            if rows is not None and not isinstance(rows, list):
                return None
            return cls(
                index=int(raw["index"]),
                first_row=int(raw["first_row"]),
                last_row=int(raw["last_row"]),
                rows=rows,
                reason=str(raw.get("reason", "")),
                cost=float(raw["cost"]),
            )
        except (KeyError, TypeError, ValueError):
            return None


def table_format(name: str, content_type: str) -> tables.TableFormat:
    """CSV or XLSX, from the file's extension or content type; KindError for anything else."""
    essence = content_type.split(";", 1)[0].strip().lower()
    suffix = Path(name).suffix.lower()
    if suffix == ".xlsx" or essence == _CONTENT_TYPES[tables.TableFormat.XLSX]:
        return tables.TableFormat.XLSX
    if suffix == ".csv" or essence in ("text/csv", "application/csv"):
        return tables.TableFormat.CSV
    raise KindError(
        f"file {name!r} is {content_type or 'of no known type'}: transform_table reads CSV or "
        "XLSX files"
    )


async def run(ctx: KindContext) -> KindOutcome:
    """Transforms the record's table with its instruction; the output file and a summary."""
    options = ctx.options
    assert isinstance(options, Options)
    job, files = ctx.job, ctx.files
    if files is None:
        raise KindError("this worker is not connected to file storage")
    record = inputs.record_of(job)
    instruction = record.get("instruction")
    if not isinstance(instruction, str):
        raise KindError('the record\'s "instruction" must be text')
    instruction = tables.check_instruction(instruction)
    ref = inputs.table_file(job, record)
    fmt = table_format(ref.name, ref.content_type)
    if ref.size > options.max_bytes:
        raise TooLarge(f"file {ref.name!r} has {ref.size} bytes; the limit is {options.max_bytes}")
    ctx.step(f"reading file {ref.name!r} from storage")
    path = await spool(files.open(ref, job.owner_id), ctx.scratch, options.max_bytes)

    def chunks() -> Iterator[tables.Chunk]:
        return tables.iter_chunks(
            path, fmt, options.chunk_rows, sheet=options.sheet, max_columns=options.max_columns
        )

    ctx.step(f"reading the table of {ref.name!r}")
    total = await asyncio.to_thread(lambda: sum(1 for _ in chunks()))
    columns = await asyncio.to_thread(
        tables.read_columns, path, fmt, sheet=options.sheet, max_columns=options.max_columns
    )
    checkpoints = Checkpoints(files, job.owner_id, job.task_id, job.section)
    kept = {
        index: answered
        for index, raw in (await checkpoints.load()).items()
        if (answered := Answered.kept(raw)) is not None
    }
    output = ctx.scratch / f"output.{fmt.value}"
    cost = 0.0
    done = 0
    reused = 0
    ctx.progress(0, total, "chunks")
    ctx.step(f"transforming {total} chunks of {ref.name!r}")

    # Answers that arrived before a slower chunk ahead of them wait in memory, at most this many.
    most_held = 4 * options.parallel_chunks
    room = asyncio.Event()

    with tables.OutputWriter(output, fmt, columns) as writer:

        def finished(chunk: tables.Chunk, answered: Answered) -> None:
            nonlocal cost, done
            cost += answered.cost
            if answered.rows is None:
                writer.fail(chunk, answered.reason)
            else:
                writer.add(chunk, answered.rows)
            done += 1
            ctx.progress(done, total, "chunks")
            room.set()

        async def transform(chunk: tables.Chunk, slot: asyncio.Semaphore) -> None:
            try:
                label = f"rows {chunk.first_row}-{chunk.last_row}"
                prompt = tables.chunk_prompt(instruction, columns, chunk.rows)
                try:
                    answer = await ctx.platform.ask(prompt, label=label)
                except ChainExhausted as exc:  # not paid, so not kept: a later dispatch asks again
                    first, last = chunk.first_row, chunk.last_row
                    finished(chunk, Answered(chunk.index, first, last, None, str(exc), 0.0))
                    return
                try:
                    rows: list[dict[str, str]] | None = tables.parse_answer(
                        answer.response, len(chunk.rows), first_row=chunk.first_row
                    )
                    reason = ""
                except tables.AnswerError as exc:
                    rows, reason = None, exc.message
                answered = Answered(
                    chunk.index, chunk.first_row, chunk.last_row, rows, reason, answer.cost
                )
                await checkpoints.keep(chunk.index, asdict(answered))
                finished(chunk, answered)
            finally:
                slot.release()

        slot = asyncio.Semaphore(options.parallel_chunks)
        reader = chunks()
        try:
            async with asyncio.TaskGroup() as group:
                while True:
                    await slot.acquire()  # holds at most parallel_chunks chunks in memory
                    while writer.held >= most_held:
                        room.clear()
                        await room.wait()
                    chunk = await asyncio.to_thread(next, reader, None)
                    if chunk is None:
                        slot.release()
                        break
                    was = kept.get(chunk.index)
                    if was is not None and (was.first_row, was.last_row) == (
                        chunk.first_row,
                        chunk.last_row,
                    ):
                        reused += 1
                        finished(chunk, was)
                        slot.release()
                        continue
                    group.create_task(transform(chunk, slot))
        except BaseExceptionGroup as group_error:
            raise group_error.exceptions[0] from None
        ctx.step("writing the output file")
        summary = await asyncio.to_thread(writer.close, total_chunks=total)

    ctx.step("storing the output file")
    name = f"{Path(ref.name).stem}.transformed.{fmt.value}"
    stored = await files.write(job.owner_id, name, _CONTENT_TYPES[fmt], _read(output))
    await checkpoints.discard()
    result = {
        "output_file": {
            "file_id": stored.file_id,
            "name": stored.name,
            "content_type": stored.content_type,
            "size": stored.size,
            "url": f"/files/{stored.file_id}",
        },
        "rows": summary.rows,
        "chunks": summary.chunks,
        "chunks_reused": reused,
        "columns": list(summary.columns),
        "failed_chunks": [
            {"first_row": f.first_row, "last_row": f.last_row, "reason": f.reason}
            for f in summary.failed
        ],
    }
    logger.info(
        "transformed %s: %d rows in %d chunks (%d reused, %d failed)",
        ref.name,
        summary.rows,
        summary.chunks,
        reused,
        len(summary.failed),
    )
    return KindOutcome(result=result, files=(stored,), cost=round(cost, 6))


async def _read(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as file:
        while block := await asyncio.to_thread(file.read, MIB):
            yield block
