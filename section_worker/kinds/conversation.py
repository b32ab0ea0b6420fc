"""Job kind ``conversation``: one AI-platform conversation about one record (the default).

The prompt is the record, with the text of the files it references put in place of the
references (:func:`section_worker.job_files.prompt_of`), read only when the platform needs it (a
job resuming a prompt already sent reads none). The conversation runs through the section's
fallback chain and resumes where an earlier dispatch of the job stopped
(:meth:`~section_worker.kinds.base.Platform.converse`). The answer is the result's text, or,
for a section of ``"output": "file"``, a Markdown file of the job's owner
(:func:`section_worker.job_files.store_answer`).
"""

from __future__ import annotations

from section_worker import job_files
from section_worker.job_files import PromptLimits
from section_worker.kinds.base import KindContext, KindOutcome, NoOptions

NAME = "conversation"
NEEDS_PLATFORM = True
Options = NoOptions


async def run(ctx: KindContext) -> KindOutcome:
    """Asks the platform about the job's record; the answer as text or as a file."""
    job, settings = ctx.job, ctx.settings
    limits = PromptLimits(settings.prompt_file_max_bytes, settings.prompt_files_max_total_bytes)
    prompts: list[str] = []  # the prompt, once read (a resumed job may need none)

    async def prompt() -> str:
        if not prompts:
            ctx.step("reading the record's files")
            prompts.append(await job_files.prompt_of(job, ctx.files, limits))
        return prompts[0]

    answer = await ctx.platform.converse(prompt)
    if job.output != job_files.OUTPUT_FILE:
        return KindOutcome(response=answer.response, cost=answer.cost)
    ctx.step("storing the answer as a file")
    stored = await job_files.store_answer(job, ctx.files, answer.response)
    return KindOutcome(files=(stored,), cost=answer.cost)
