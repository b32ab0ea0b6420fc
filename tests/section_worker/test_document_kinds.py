"""The document kinds through the worker's job runner, against the simulator and a real
storage service: ``outline_document`` (an upload's sections) and ``analyze_document`` (every
section, or the named ones, in parallel; answers kept so a re-dispatch pays none twice)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import pytest

from common.feedback import analysis_prompt, parse_feedback
from section_worker.files import FileClient, FileRef
from section_worker.kinds.analyze_document import Analysed, choose, wanted_sections
from section_worker.kinds.base import KindError
from section_worker.kinds.checkpoints import Checkpoints
from section_worker.kinds.documents import Section
from simulator.answers import analyze_section
from tests.document_files import DOCX_TYPE, PDF_TYPE, SECTIONS, docx_bytes, pdf_bytes
from tests.section_worker.conftest import ASSET, FAILING_ASSET, MakeClient, Sim
from tests.section_worker.test_table_kinds import (
    checkpoint_names,
    events_of,
    job,
    last,
    prompts,
    runner,
    upload,
)

NAMES = [name for name, _ in SECTIONS]


@pytest.fixture(autouse=True)
async def cheap_answers(sim: Sim) -> None:
    await sim.configure(cost_min=0.001, cost_max=0.002)


def outline_job(ref: FileRef) -> Any:
    return job("outline_document", {"outline_document": {"file_id": ref.file_id}}, ref)


def analysis_job(ref: FileRef, token: str, sections: list[str] | None = None, **more: Any) -> Any:
    record: dict[str, Any] = {"analyze_document": {"file_id": ref.file_id}}
    if sections is not None:
        record["sections"] = sections
    return job("analyze_document", record, ref, token, **more)


def expected_feedback(name: str, paragraphs: list[str]) -> list[dict[str, Any]]:
    """What the simulator answers for a section of these paragraphs (any asset: the items do
    not name it)."""
    content = "\n\n".join(p.strip() for p in paragraphs)
    prompt = json.loads(analysis_prompt(name, content))
    return parse_feedback(analyze_section(ASSET, prompt))


@pytest.mark.parametrize(
    ("name", "data", "content_type", "fmt", "source"),
    [
        ("review.docx", docx_bytes(), DOCX_TYPE, "docx", "styles"),
        ("review.pdf", pdf_bytes(), PDF_TYPE, "pdf", "font"),
    ],
)
async def test_an_outline_names_every_section_of_a_document(
    make_client: MakeClient,
    file_client: FileClient,
    sim: Sim,
    name: str,
    data: bytes,
    content_type: str,
    fmt: str,
    source: str,
) -> None:
    ref = await upload(file_client, data, name, content_type)
    result = last(await events_of(runner(make_client, file_client), outline_job(ref)))
    assert result.success, result.error
    outline = json.loads(result.result_json)
    assert outline["document"] == {
        "file_id": ref.file_id,
        "name": name,
        "format": fmt,
        "heading_source": source,
        "pages": 1 if fmt == "pdf" else None,
        "sections": 3,
    }
    assert [(s["name"], s["level"], s["order"]) for s in outline["sections"]] == [
        (n, 1, i) for i, n in enumerate(NAMES)
    ]
    assert all(s["chars"] > 30 for s in outline["sections"])
    assert result.cost == 0 and await prompts(sim) == 0


async def test_a_document_that_cannot_be_read_fails_its_outline_naming_why(
    make_client: MakeClient, file_client: FileClient
) -> None:
    ref = await upload(file_client, b"not a pdf at all", "broken.pdf", PDF_TYPE)
    result = last(await events_of(runner(make_client, file_client), outline_job(ref)))
    assert not result.success
    assert "broken.pdf" in result.error and "PDF" in result.error


async def test_a_spreadsheet_is_not_a_document(
    make_client: MakeClient, file_client: FileClient
) -> None:
    sheet = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    ref = await upload(file_client, b"PK\x03\x04 not really", "book.xlsx", sheet)
    result = last(await events_of(runner(make_client, file_client), outline_job(ref)))
    assert not result.success
    assert "PDF, DOCX, Markdown or plain text" in result.error


async def test_every_section_is_analysed_with_its_own_feedback(
    make_client: MakeClient, file_client: FileClient, sim: Sim, token: str
) -> None:
    ref = await upload(file_client, docx_bytes(), "review.docx", DOCX_TYPE)
    events = await events_of(runner(make_client, file_client), analysis_job(ref, token))
    result = last(events)
    assert result.success, result.error
    analysis = json.loads(result.result_json)
    sections = analysis["sections"]
    assert [s["name"] for s in sections] == NAMES
    for (name, paragraphs), got in zip(SECTIONS, sections, strict=True):
        assert got["status"] == "completed" and got["error"] == ""
        assert got["feedback"] == expected_feedback(name, paragraphs)
        assert len(got["feedback"]) == len(paragraphs)
        assert got["model_used"] == ASSET and got["cost"] > 0
    assert result.cost == pytest.approx(sum(s["cost"] for s in sections))
    assert await prompts(sim) == 3
    assert (analysis["sections_reused"], analysis["sections_failed"]) == (0, 0)
    progress = [(e.done, e.total) for e in events if hasattr(e, "done") and e.total]
    assert progress[0] == (0, 3) and progress[-1] == (3, 3)
    assert await checkpoint_names(file_client) == []


async def test_only_the_named_sections_are_analysed(
    make_client: MakeClient, file_client: FileClient, sim: Sim, token: str
) -> None:
    ref = await upload(file_client, pdf_bytes(), "review.pdf", PDF_TYPE)
    named = analysis_job(ref, token, ["Next Steps", "Investment Risks"])
    result = last(await events_of(runner(make_client, file_client), named))
    assert result.success, result.error
    sections = json.loads(result.result_json)["sections"]
    assert [s["name"] for s in sections] == ["Investment Risks", "Next Steps"]  # reading order
    assert len(sections[1]["feedback"]) == 3
    assert await prompts(sim) == 2


async def test_a_section_the_document_lacks_fails_the_job_listing_the_ones_it_has(
    make_client: MakeClient, file_client: FileClient, sim: Sim, token: str
) -> None:
    ref = await upload(file_client, docx_bytes(), "review.docx", DOCX_TYPE)
    result = last(
        await events_of(runner(make_client, file_client), analysis_job(ref, token, ["Fees"]))
    )
    assert not result.success
    assert "has no section named 'Fees'" in result.error
    assert all(name in result.error for name in NAMES)
    assert await prompts(sim) == 0


async def test_sections_kept_by_an_earlier_dispatch_are_not_asked_again(
    make_client: MakeClient, file_client: FileClient, sim: Sim, token: str
) -> None:
    ref = await upload(file_client, docx_bytes(), "review.docx", DOCX_TYPE)
    kept = Checkpoints(file_client, "acme/alice", "task_9", "analyze_document")
    items = [{"id": "fb-kept", "type": "minor", "category": "risk", "description": "kept"}]
    await kept.keep(1, asdict(Analysed(1, "Investment Risks", items, "", ASSET, 0.01)))
    # A checkpoint of another section at that place (the document changed) is not used.
    await kept.keep(2, asdict(Analysed(2, "Old Heading", items, "", ASSET, 0.01)))
    result = last(await events_of(runner(make_client, file_client), analysis_job(ref, token)))
    assert result.success, result.error
    analysis = json.loads(result.result_json)
    assert analysis["sections_reused"] == 1
    assert analysis["sections"][1]["feedback"] == items
    assert analysis["sections"][2]["feedback"] == expected_feedback(*SECTIONS[2])
    assert await prompts(sim) == 2
    assert await checkpoint_names(file_client) == []


async def test_when_every_section_fails_through_the_chain_the_job_fails(
    make_client: MakeClient, file_client: FileClient, token: str
) -> None:
    ref = await upload(file_client, docx_bytes(), "review.docx", DOCX_TYPE)
    failing = analysis_job(ref, token, asset_id=FAILING_ASSET)
    result = last(await events_of(runner(make_client, file_client), failing))
    assert not result.success
    assert "every asset of the chain failed" in result.error


async def test_budgets_apply_to_each_section(
    make_client: MakeClient, file_client: FileClient, sim: Sim, token: str
) -> None:
    await sim.configure(cost_min=0.9, cost_max=0.9)  # the tenant's $2 ceiling holds two
    ref = await upload(file_client, docx_bytes(), "review.docx", DOCX_TYPE)
    one_at_a_time = analysis_job(ref, token, options_json=json.dumps({"parallel_sections": 1}))
    result = last(await events_of(runner(make_client, file_client), one_at_a_time))
    assert result.success, result.error
    sections = json.loads(result.result_json)["sections"]
    assert [s["status"] for s in sections] == ["completed", "completed", "failed"]
    assert "ceiling" in sections[2]["error"]
    assert await prompts(sim) == 2


def section(order: int, name: str) -> Section:
    return Section(name=name, level=1, content="text", order=order, char_count=4)


def test_choosing_sections() -> None:
    sections = tuple(section(i, n) for i, n in enumerate(["A", "B", "C"]))
    assert choose(sections, None, "d.md") == list(sections)
    assert [s.name for s in choose(sections, ["C", "A"], "d.md")] == ["A", "C"]
    with pytest.raises(KindError, match=r"no section named 'X', 'Y'; its sections are"):
        choose(sections, ["X", "A", "Y"], "d.md")
    many = tuple(section(i, f"S{i}") for i in range(25))
    with pytest.raises(KindError, match="and 5 more"):
        choose(many, ["nope"], "d.md")


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"sections": "A"}, "must be a list of section names"),
        ({"sections": []}, "must be a list of section names"),
        ({"sections": ["A", " "]}, "must be a list of section names"),
        ({"sections": ["A", 3]}, "must be a list of section names"),
        ({"sections": ["A", "B", "C"]}, "at most 2 may be asked"),
        ({"sections": ["A", "A"]}, "names a section twice"),
    ],
)
def test_the_sections_a_record_asks_for_are_checked(record: dict[str, Any], problem: str) -> None:
    with pytest.raises(KindError, match=problem):
        wanted_sections(record, 2)


def test_a_record_without_sections_asks_for_every_one() -> None:
    assert wanted_sections({}, 2) is None
    assert wanted_sections({"sections": None}, 2) is None
    assert wanted_sections({"sections": ["B", "A"]}, 2) == ["B", "A"]


@pytest.mark.parametrize(
    "raw",
    [
        {"order": 1, "name": "A", "feedback": "not a list", "cost": 0.1},
        {"order": 1, "name": "A", "feedback": []},
        {"order": "x", "name": "A", "feedback": [], "cost": 0.1},
    ],
)
def test_a_checkpoint_that_is_not_an_analysis_is_not_used(raw: dict[str, Any]) -> None:
    assert Analysed.kept(raw) is None


def test_a_kept_analysis_reads_back() -> None:
    kept = Analysed(2, "A", [{"id": "x"}], "", ASSET, 0.25)
    assert Analysed.kept(asdict(kept)) == kept
    failed = Analysed(2, "A", None, "not JSON", ASSET, 0.25)
    assert Analysed.kept(asdict(failed)) == failed
