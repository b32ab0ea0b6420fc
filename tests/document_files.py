"""Documents the document-analysis tests upload: one DOCX and one PDF of the same three headed
sections, whose paragraphs (a few lines each) are what the simulator gives feedback on."""

from __future__ import annotations

import io
import os
import zipfile

import docx
from fpdf import FPDF

DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PDF_TYPE = "application/pdf"

# Three sections, each a heading and its paragraphs (long enough to wrap over lines in a PDF,
# where only a gap wider than the lines' own spacing separates paragraphs).
SECTIONS: list[tuple[str, list[str]]] = [
    (
        "Portfolio Overview",
        [
            "The portfolio holds equities and bonds. " * 4,
            "Equities are sixty percent of it. " * 4,
        ],
    ),
    ("Investment Risks", ["Market risk dominates this quarter. " * 4]),
    (
        "Next Steps",
        [
            "Rebalance towards bonds in March. " * 4,
            "Review the fees with the client. " * 4,
            "Meet again after the results. " * 4,
        ],
    ),
]


def docx_bytes(padding: int = 0) -> bytes:
    """The sections as a DOCX: ``Heading 1`` paragraphs and body paragraphs; with ``padding``,
    that many random bytes more, stored uncompressed in a part nothing refers to (as an
    embedded file that makes a document large)."""
    document = docx.Document()
    for heading, paragraphs in SECTIONS:
        document.add_heading(heading, level=1)
        for paragraph in paragraphs:
            document.add_paragraph(paragraph.strip())
    out = io.BytesIO()
    document.save(out)
    if padding:
        with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr("word/media/padding.bin", os.urandom(padding))
    return out.getvalue()


def pdf_bytes() -> bytes:
    """The sections as a PDF without an outline: headings set larger and bold, paragraphs
    further apart than lines."""
    pdf = FPDF()
    pdf.add_page()
    for heading, paragraphs in SECTIONS:
        pdf.set_font("Helvetica", "B", 18)
        pdf.multi_cell(0, 9, heading, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(4)
        pdf.set_font("Helvetica", "", 11)
        for paragraph in paragraphs:
            pdf.multi_cell(0, 5.5, paragraph.strip(), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(4)
    return bytes(pdf.output())
