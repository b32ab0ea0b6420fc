"""Documents cut into sections: real PDF, DOCX, Markdown and text files written here, parsed by
the same libraries the worker uses, and every refusal with its reason."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import docx
import pytest
from docx.enum.style import WD_STYLE_TYPE
from fpdf import FPDF
from pypdf import PdfWriter

from section_worker.kinds.documents import (
    DocumentError,
    DocumentFormat,
    DocumentLimits,
    DocumentTooLarge,
    HeadingSource,
    ParsedDocument,
    Problem,
    parse_document,
)
from simulator.answers import answer_for
from tests.section_worker.conftest import ASSET

PDF_TYPE = "application/pdf"
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

INTRO = "This report reviews the client's portfolio. " * 6
INTRO_2 = "It closes with the next steps."
SCOPE = "The scope covers equities and bonds held directly. " * 3
RISKS = "Market risk and liquidity risk dominate this quarter. " * 5


def outline(parsed: ParsedDocument) -> list[tuple[str, int]]:
    return [(section.name, section.level) for section in parsed.sections]


def parse(path: Path, content_type: str | None = None, **limits: int) -> ParsedDocument:
    return parse_document(
        path, content_type=content_type, name=path.name, limits=DocumentLimits(**limits)
    )


# --- PDF ---------------------------------------------------------------------------------------

# (heading or None for body text, outline level or None, font size, bold)
Block = tuple[str, int | None, float, bool]


def write_pdf(
    path: Path, pages: Sequence[Sequence[Block]], *, bookmarks: bool, gap: float = 4
) -> Path:
    """A PDF of text blocks; headings get outline entries when ``bookmarks`` is set."""
    pdf = FPDF()
    for blocks in pages:
        pdf.add_page()
        for text, level, size, bold in blocks:
            if bookmarks and level is not None:
                pdf.start_section(text, level=level)
            pdf.set_font("Helvetica", "B" if bold else "", size)
            pdf.multi_cell(0, size * 0.5, text, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(gap)  # paragraphs further apart than lines
    pdf.output(str(path))
    return path


def report_pages(h1: float = 18, h2: float = 14, bold: bool = True) -> list[list[Block]]:
    return [
        [
            ("Introduction", 0, h1, bold),
            (INTRO, None, 11, False),
            (INTRO_2, None, 11, False),
            ("Scope of Work", 1, h2, bold),
            (SCOPE, None, 11, False),
        ],
        [("Risks", 0, h1, bold), (RISKS, None, 11, False)],
    ]


def flat(text: str) -> str:
    return " ".join(text.split())


def test_a_pdf_with_an_outline_is_cut_at_its_entries(tmp_path: Path) -> None:
    path = write_pdf(tmp_path / "report.pdf", report_pages(), bookmarks=True)

    parsed = parse(path, PDF_TYPE)

    assert (parsed.format, parsed.heading_source, parsed.pages) == (
        DocumentFormat.PDF,
        HeadingSource.OUTLINE,
        2,
    )
    assert outline(parsed) == [("Introduction", 1), ("Scope of Work", 2), ("Risks", 1)]
    intro, scope, risks = parsed.sections
    # Paragraphs stay apart; the heading line itself is not content.
    assert [flat(p) for p in intro.content.split("\n\n")] == [flat(INTRO), INTRO_2]
    assert flat(scope.content) == flat(SCOPE)
    assert flat(risks.content) == flat(RISKS)
    assert [s.order for s in parsed.sections] == [0, 1, 2]
    assert all(s.char_count == len(s.content) for s in parsed.sections)


def test_an_outline_title_not_on_its_page_opens_the_section_at_the_page_top(
    tmp_path: Path,
) -> None:
    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", "", 11)
    pdf.multi_cell(0, 6, INTRO, new_x="LMARGIN", new_y="NEXT")
    pdf.add_page()
    pdf.start_section("Appendix A: figures")  # the page does not print this title
    pdf.multi_cell(0, 6, RISKS, new_x="LMARGIN", new_y="NEXT")
    path = tmp_path / "annex.pdf"
    pdf.output(str(path))

    parsed = parse(path)

    assert outline(parsed) == [("annex", 0), ("Appendix A: figures", 1)]
    assert flat(parsed.sections[0].content) == flat(INTRO)
    assert flat(parsed.sections[1].content) == flat(RISKS)


def test_a_pdf_without_outline_takes_headings_from_font_sizes(tmp_path: Path) -> None:
    path = write_pdf(tmp_path / "report.pdf", report_pages(), bookmarks=False)

    parsed = parse(path)

    assert parsed.heading_source is HeadingSource.FONT
    assert outline(parsed) == [("Introduction", 1), ("Scope of Work", 2), ("Risks", 1)]
    assert flat(parsed.sections[2].content) == flat(RISKS)


def test_bold_lines_at_body_size_are_the_lowest_heading_level(tmp_path: Path) -> None:
    pages = [
        [
            ("Overview", 0, 16, True),
            (INTRO, None, 11, False),
            ("Details that matter", 1, 11, True),
            (SCOPE, None, 11, False),
        ]
    ]
    path = write_pdf(tmp_path / "memo.pdf", pages, bookmarks=False)

    parsed = parse(path)

    assert parsed.heading_source is HeadingSource.FONT
    assert outline(parsed) == [("Overview", 1), ("Details that matter", 2)]


@pytest.mark.parametrize("bookmarks", [True, False])
def test_a_heading_wrapped_over_lines_is_one_heading(tmp_path: Path, bookmarks: bool) -> None:
    title = "Long-Term Allocation Across Global Equities, Investment Grade Bonds and Cash"
    pages = [[(title, 0, 18, True), (INTRO, None, 11, False), ("Risks", 0, 18, True)]]
    pages[0].append((RISKS, None, 11, False))
    path = write_pdf(tmp_path / "wrapped.pdf", pages, bookmarks=bookmarks)

    parsed = parse(path)

    assert outline(parsed) == [(title, 1), ("Risks", 1)]
    assert flat(parsed.sections[0].content) == flat(INTRO)


def test_when_most_lines_would_be_headings_the_font_rule_is_dropped(tmp_path: Path) -> None:
    lines = ["Alpha fund", "Beta fund", "Gamma fund"]
    pages = [[(line, None, 11, True) for line in lines] + [("closing remarks.", None, 11, False)]]
    path = write_pdf(tmp_path / "list.pdf", pages, bookmarks=False)

    parsed = parse(path)

    assert parsed.heading_source is HeadingSource.NONE
    assert outline(parsed) == [("list", 0)]


def test_a_pdf_in_one_font_falls_back_to_numbered_headings(tmp_path: Path) -> None:
    pages = [
        [
            ("1. Introduction", 0, 11, False),
            (INTRO, None, 11, False),
            ("1.1 Scope of Work", 1, 11, False),
            (SCOPE, None, 11, False),
            ("2. Risks", 0, 11, False),
            (RISKS, None, 11, False),
        ]
    ]
    path = write_pdf(tmp_path / "plain.pdf", pages, bookmarks=False)

    parsed = parse(path)

    assert parsed.heading_source is HeadingSource.TEXT_RULES
    assert outline(parsed) == [("1. Introduction", 1), ("1.1 Scope of Work", 2), ("2. Risks", 1)]


def test_a_pdf_without_any_heading_is_one_section_named_after_the_file(tmp_path: Path) -> None:
    pages = [[(INTRO, None, 11, False), (RISKS, None, 11, False)]]
    path = write_pdf(tmp_path / "Q3 letter.pdf", pages, bookmarks=False)

    parsed = parse(path)

    assert parsed.heading_source is HeadingSource.NONE
    assert outline(parsed) == [("Q3 letter", 0)]
    assert [flat(p) for p in parsed.sections[0].content.split("\n\n")] == [
        flat(INTRO),
        flat(RISKS),
    ]


def test_a_password_protected_pdf_is_refused_as_encrypted(tmp_path: Path) -> None:
    plain = write_pdf(tmp_path / "plain.pdf", report_pages(), bookmarks=True)
    locked = PdfWriter(clone_from=plain)
    locked.encrypt(user_password="secret", owner_password="owner", algorithm="AES-256")
    locked.write(tmp_path / "locked.pdf")

    with pytest.raises(DocumentError, match="password-protected") as raised:
        parse(tmp_path / "locked.pdf")

    assert raised.value.reason is Problem.ENCRYPTED
    assert raised.value.document == "locked.pdf"
    assert raised.value.http_status == 422


def test_a_pdf_encrypted_without_a_user_password_opens(tmp_path: Path) -> None:
    plain = write_pdf(tmp_path / "plain.pdf", report_pages(), bookmarks=True)
    restricted = PdfWriter(clone_from=plain)
    restricted.encrypt(user_password="", owner_password="owner", algorithm="AES-256")
    restricted.write(tmp_path / "restricted.pdf")

    parsed = parse(tmp_path / "restricted.pdf")

    assert outline(parsed) == [("Introduction", 1), ("Scope of Work", 2), ("Risks", 1)]


def test_a_broken_pdf_is_refused_as_corrupt(tmp_path: Path) -> None:
    whole = write_pdf(tmp_path / "whole.pdf", report_pages(), bookmarks=True).read_bytes()
    (tmp_path / "garbage.pdf").write_bytes(b"%PDF-1.7\nnot really a pdf\n")
    (tmp_path / "cut.pdf").write_bytes(whole[: len(whole) // 3])

    for name in ("garbage.pdf", "cut.pdf"):
        with pytest.raises(DocumentError, match="not a readable PDF") as raised:
            parse(tmp_path / name)
        assert raised.value.reason is Problem.CORRUPT


def test_a_pdf_without_text_is_empty(tmp_path: Path) -> None:
    pdf = FPDF()
    pdf.add_page()
    pdf.rect(20, 20, 50, 50)  # a drawing, as a scanned page is an image: no text layer
    path = tmp_path / "scan.pdf"
    pdf.output(str(path))

    with pytest.raises(DocumentError, match="no text to extract") as raised:
        parse(path)

    assert raised.value.reason is Problem.EMPTY


def test_a_pdf_over_the_page_limit_is_too_large(tmp_path: Path) -> None:
    path = write_pdf(tmp_path / "long.pdf", report_pages(), bookmarks=True)

    with pytest.raises(DocumentTooLarge, match="2 pages, over the limit of 1") as raised:
        parse(path, max_pages=1)

    assert raised.value.reason is Problem.TOO_LARGE
    assert raised.value.http_status == 413
    assert isinstance(raised.value, DocumentError)


# --- DOCX --------------------------------------------------------------------------------------


def test_a_docx_is_cut_at_its_heading_styles(tmp_path: Path) -> None:
    document = docx.Document()
    document.add_paragraph("Prepared for the investment committee.")
    document.add_heading("Quarterly Review", level=0)
    document.add_heading("Overview", level=1)
    document.add_paragraph(INTRO)
    document.add_paragraph(INTRO_2)
    document.add_heading("Holdings", level=2)
    table = document.add_table(rows=2, cols=2)
    for r, values in enumerate([("Asset", "Weight"), ("Equity", "60%")]):
        for c, value in enumerate(values):
            table.cell(r, c).text = value
    custom = document.styles.add_style("Client Heading", WD_STYLE_TYPE.PARAGRAPH)
    custom.base_style = document.styles["Heading 2"]
    document.add_paragraph("Risks", style="Client Heading")
    document.add_paragraph(RISKS)
    document.add_heading("Overview", level=1)
    document.add_paragraph("A second overview, later on.")
    path = tmp_path / "review.docx"
    document.save(str(path))

    parsed = parse(path, DOCX_TYPE)

    assert (parsed.format, parsed.heading_source) == (DocumentFormat.DOCX, HeadingSource.STYLES)
    # The title has no text of its own before the next heading, so it is no section.
    assert outline(parsed) == [
        ("review", 0),
        ("Overview", 1),
        ("Holdings", 2),
        ("Risks", 2),
        ("Overview (2)", 1),
    ]
    preamble, overview, holdings, risks, again = parsed.sections
    assert preamble.content == "Prepared for the investment committee."
    assert overview.content == f"{INTRO.strip()}\n\n{INTRO_2}"
    assert holdings.content == "Asset | Weight\nEquity | 60%"
    assert risks.content == RISKS.strip()
    assert again.content == "A second overview, later on."


def test_a_docx_without_heading_styles_falls_back_to_the_text_rules(tmp_path: Path) -> None:
    document = docx.Document()
    for text in ("1. Purpose", INTRO, "2. Findings", RISKS):
        document.add_paragraph(text)
    path = tmp_path / "notes.docx"
    document.save(str(path))

    parsed = parse(path)

    assert parsed.heading_source is HeadingSource.TEXT_RULES
    assert outline(parsed) == [("1. Purpose", 1), ("2. Findings", 1)]


def test_docx_paragraphs_are_the_paragraphs_the_simulator_reviews(tmp_path: Path) -> None:
    document = docx.Document()
    document.add_heading("Overview", level=1)
    document.add_paragraph(INTRO)
    document.add_paragraph(INTRO_2)
    path = tmp_path / "short.docx"
    document.save(str(path))
    (section,) = parse(path).sections

    prompt = {"kind": "analyze_section", "section_name": section.name, "content": section.content}
    answer, _ = answer_for(ASSET, json.dumps(prompt), 0.004, 0.24)

    feedback = json.loads(answer)["feedback"]
    assert len(feedback) == 2
    assert feedback[1]["description"].endswith("begins: It closes with the next steps.")


def test_broken_docx_files_are_refused_with_their_reason(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "sheet.docx", "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
    (tmp_path / "cut.docx").write_bytes(b"PK\x03\x04" + b"\x00" * 200)
    (tmp_path / "text.docx").write_text("not a word file")
    (tmp_path / "locked.docx").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 500)

    expected = {
        "sheet.docx": (Problem.UNSUPPORTED, "a ZIP archive that is not a DOCX"),
        "cut.docx": (Problem.CORRUPT, "not a readable DOCX"),
        "text.docx": (Problem.CORRUPT, "not a DOCX file"),
        "locked.docx": (Problem.ENCRYPTED, "password-protected DOCX"),
    }
    for name, (reason, message) in expected.items():
        with pytest.raises(DocumentError, match=message) as raised:
            parse(tmp_path / name, DOCX_TYPE)
        assert raised.value.reason is reason, name


# --- Markdown and text -------------------------------------------------------------------------


def test_markdown_headings_cut_the_source(tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_text(
        "Opening words.\n\n"
        "# The *Plan*\n\n"
        "Buy `VTI` monthly.\n\n"
        "```\n# not a heading\n```\n\n"
        "> # quoted, not a heading\n\n"
        "Setext Heading\n"
        "--------------\n\n"
        "- item one\n"
        "- item two\n"
    )

    parsed = parse(path)

    assert (parsed.format, parsed.heading_source) == (
        DocumentFormat.MARKDOWN,
        HeadingSource.MARKDOWN,
    )
    assert outline(parsed) == [("notes", 0), ("The Plan", 1), ("Setext Heading", 2)]
    assert parsed.sections[1].content == (
        "Buy `VTI` monthly.\n\n```\n# not a heading\n```\n\n> # quoted, not a heading"
    )
    assert parsed.sections[2].content == "- item one\n- item two"


def test_plain_text_headings_by_the_documented_rules(tmp_path: Path) -> None:
    path = tmp_path / "letter.txt"
    path.write_text(
        "Annual Letter\n"
        "=============\n"
        "Dear client,\n\n"
        "1. Performance\n"
        "Returns beat the benchmark.\n"
        "1. Rebalance the bond sleeve.\n"  # a list item written as a sentence
        "1.1 Equities\n"
        "Equities led.\n\n"
        "Outlook\n"
        "-------\n"
        "Cautious.\n\n"
        "RISK DISCLOSURES\n"
        "Past returns are no guarantee.\n"
    )

    parsed = parse(path, "text/plain; charset=utf-8")

    assert (parsed.format, parsed.heading_source) == (DocumentFormat.TEXT, HeadingSource.TEXT_RULES)
    assert outline(parsed) == [
        ("Annual Letter", 1),
        ("1. Performance", 1),
        ("1.1 Equities", 2),
        ("Outlook", 2),
        ("RISK DISCLOSURES", 1),
    ]
    assert parsed.sections[1].content == (
        "Returns beat the benchmark.\n1. Rebalance the bond sleeve."
    )


def test_text_without_headings_is_one_section(tmp_path: Path) -> None:
    path = tmp_path / "memo"
    path.write_text("just a few words\n\nand another paragraph\n")

    parsed = parse(path)

    assert (parsed.format, parsed.heading_source) == (DocumentFormat.TEXT, HeadingSource.NONE)
    assert outline(parsed) == [("memo", 0)]
    assert parsed.sections[0].content == "just a few words\n\nand another paragraph"


def test_utf16_text_with_a_bom_is_read(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes("SUMMARY\r\nÉquilibre atteint.\r\n".encode("utf-16"))

    parsed = parse(path)

    assert outline(parsed) == [("SUMMARY", 1)]
    assert parsed.sections[0].content == "Équilibre atteint."


@pytest.mark.parametrize(
    ("name", "data", "content_type", "reason", "message"),
    [
        ("a.txt", b"caf\xe9 au lait", None, Problem.UNSUPPORTED, "not UTF-8 text"),
        ("a.txt", b"text\x00with nul", None, Problem.UNSUPPORTED, "a binary file"),
        ("a.png", b"\x89PNG\r\n", "image/png", Problem.UNSUPPORTED, "image/png is not PDF"),
        ("a.xlsx", b"PK\x03\x04", None, Problem.UNSUPPORTED, "a .xlsx file is not PDF"),
        ("a.doc", b"\xd0\xcf\x11\xe0", "application/msword", Problem.UNSUPPORTED, "legacy"),
        ("a.md", b"PK\x03\x04rest", None, Problem.UNSUPPORTED, "a ZIP archive, not markdown"),
        ("a.pdf", b"plain words", None, Problem.CORRUPT, "not a PDF file"),
        ("a.txt", b"", None, Problem.EMPTY, "the file is empty"),
        ("a.txt", b"\n   \n\n", None, Problem.EMPTY, "the document has no text"),
    ],
)
def test_files_that_cannot_be_read_are_refused_with_a_reason(
    tmp_path: Path,
    name: str,
    data: bytes,
    content_type: str | None,
    reason: Problem,
    message: str,
) -> None:
    path = tmp_path / name
    path.write_bytes(data)

    with pytest.raises(DocumentError, match=message) as raised:
        parse(path, content_type)

    assert raised.value.reason is reason
    assert str(raised.value).startswith(f"{name}: ")


def test_the_bytes_decide_over_a_generic_type_or_a_missing_extension(tmp_path: Path) -> None:
    pdf = write_pdf(tmp_path / "upload", report_pages(), bookmarks=True)

    parsed = parse(pdf, "application/octet-stream")

    assert parsed.format is DocumentFormat.PDF
    assert len(parsed.sections) == 3


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"max_bytes": 10}, r"\d+ bytes is over the limit of 10"),
        ({"max_sections": 2}, "more than 2 sections"),
        ({"max_section_chars": 20}, r'section "Alpha" has 21 characters, over the limit of 20'),
    ],
)
def test_limits_are_too_large_errors(tmp_path: Path, limits: dict[str, int], message: str) -> None:
    path = tmp_path / "doc.md"
    path.write_text("# Alpha\n\n" + "a" * 21 + "\n\n# Beta\n\nb\n\n# Gamma\n\nc\n")

    with pytest.raises(DocumentTooLarge, match=message) as raised:
        parse(path, **limits)

    assert raised.value.reason is Problem.TOO_LARGE


def test_long_headings_are_cut_and_repeated_ones_numbered(tmp_path: Path) -> None:
    path = tmp_path / "doc.md"
    long_title = "Word " * 60
    path.write_text(f"# {long_title}\n\nx\n\n# Risks\n\na\n\n# Risks\n\nb\n\n# Risks (2)\n\nc\n")

    names = [s.name for s in parse(path).sections]

    assert len(names[0]) == 200 and names[0].endswith("…")
    assert names[1:] == ["Risks", "Risks (2)", "Risks (2) (2)"]
