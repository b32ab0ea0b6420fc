"""Documents cut into sections by their headings, for AI-Prism's document analysis.

:func:`parse_document` reads one uploaded file (PDF, DOCX, Markdown or plain text) from a local
path and returns its sections in reading order. It is plain synchronous Python that parses on
the CPU: async callers run it in a thread (``asyncio.to_thread``).

**Which format.** The first bytes decide where they can: ``%PDF-`` is a PDF, a ZIP archive
holding ``word/document.xml`` is a DOCX; an OLE compound file (what Word writes for a
password-protected DOCX, and for a legacy ``.doc``) is refused. Otherwise the file is text, and
the content type (``text/markdown``, ``text/x-markdown``, ``text/plain``) or else the name's
extension (``.md``, ``.markdown``, ``.txt``, ``.text``) says whether it is Markdown; a name
without extension is plain text. A content type or extension naming another format
(``image/png``, ``.xlsx``) is refused as unsupported, and so is a file whose bytes contradict
what it claims (a ``.pdf`` that is not a PDF is corrupt). Text must be UTF-8 (a BOM is allowed)
or UTF-16 with a BOM.

**Where the headings come from** (:attr:`ParsedDocument.heading_source`):

* PDF, read with pypdf (pure Python, BSD-licensed): the document's outline (bookmarks) when it
  has one (``outline``): each entry's title is looked for among the lines of the page it points
  to and becomes the heading there, or at the top of that page when the title is not found
  there; nested entries are deeper levels. Without an outline, the text layout pypdf reports
  (``font``): the body size is the font size that most characters have; a line set at least
  15% larger is a heading, one level per distinct larger size, largest first, and a short
  all-bold line at body size (no final full stop) is one level below those; consecutive heading
  lines of one size, at most two sizes apart, are one wrapped heading. This rule is dropped
  when it would make headings of more than half the lines. Failing both, the plain-text rules
  below run over the extracted lines (``text_rules``). A vertical gap between two lines of more
  than 1.5 times the usual line spacing (the commonest gap on the document's pages) starts a new
  paragraph (a blank line in the content).
* DOCX, read with python-docx: paragraph styles (``styles``): ``Title`` is level 0,
  ``Heading 1`` to ``Heading 9`` are levels 1 to 9, and so is a style based on one of them.
  Paragraphs are separated by blank lines; a table's rows become lines of cells joined by
  ``" | "``. A DOCX with no heading style falls back to the plain-text rules over its paragraphs.
* Markdown, read with markdown-it-py (CommonMark): ATX (``#``) and setext (``===``/``---``
  underlined) headings at the top level (``markdown``); a ``#`` line inside a code block, a block
  quote or a list is content. A section's content is its Markdown source, unrendered.
* Plain text (``text_rules``), line by line: a non-empty line underlined by a line of three or
  more ``=`` is level 1, by ``-`` level 2; a numbered line (``1.``, ``1.1``, ``2.3.1`` — up to
  three digits a part — then a title starting with a capital) is a heading of its depth (``1.``
  is level 1, ``1.1`` is level 2); a line in capitals (three letters or more, letters at least
  half of it) is level 1.
  A numbered or capitals line is a heading only when it reads like a title: at most 120
  characters and 12 words, starting with a letter or digit, not ending in ``.``, ``,``, ``;`` or
  ``:`` (so numbered list items written as sentences stay content).

When none of these finds a heading, the document is ``none`` and one section.

**Sections.** Each heading opens a :class:`Section` that runs to the next heading of any level;
text before the first heading, and a document without headings, becomes a section named after
the file (its name without the extension) at level 0. A section without content (a heading
straight followed by another) is left out. Names are the heading text with whitespace collapsed,
at most 200 characters, made unique by a suffix: the second "Risks" is "Risks (2)".

**Limits and errors.** :class:`DocumentLimits` caps the file size, the pages of a PDF, the
sections and the characters of one section; past one, :class:`DocumentTooLarge` names the limit.
Every other problem is a :class:`DocumentError` whose :attr:`~DocumentError.reason` says which:
unsupported type, corrupt file, encrypted file, or no text at all.
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import docx
from docx.styles.style import BaseStyle
from docx.table import Table
from docx.text.paragraph import Paragraph
from markdown_it import MarkdownIt
from pypdf import PdfReader

from common.errors import InvalidInput, TooLarge

logger = logging.getLogger(__name__)


class DocumentFormat(StrEnum):
    PDF = "pdf"
    DOCX = "docx"
    MARKDOWN = "markdown"
    TEXT = "text"


class HeadingSource(StrEnum):
    """Which rule found the headings (see the module docstring)."""

    OUTLINE = "outline"
    FONT = "font"
    STYLES = "styles"
    MARKDOWN = "markdown"
    TEXT_RULES = "text_rules"
    NONE = "none"


class Problem(StrEnum):
    """Why a document cannot be parsed: :attr:`DocumentError.reason`."""

    UNSUPPORTED = "unsupported"
    CORRUPT = "corrupt"
    ENCRYPTED = "encrypted"
    EMPTY = "empty"
    TOO_LARGE = "too_large"


class DocumentError(InvalidInput):
    """The document cannot be cut into sections; the message says why in words a caller can act
    on, :attr:`reason` says it as a :class:`Problem`, :attr:`document` names the file."""

    def __init__(self, document: str, reason: Problem, detail: str) -> None:
        super().__init__(f"{document}: {detail}")
        self.document = document
        self.reason = reason


class DocumentTooLarge(TooLarge, DocumentError):
    """The document is over one of the :class:`DocumentLimits` (a 413, not a 422)."""


@dataclass(frozen=True)
class DocumentLimits:
    """What one document may hold; every bound is checked before the work it would cost."""

    max_bytes: int = 50 * 1024 * 1024
    max_pages: int = 500
    max_sections: int = 200
    max_section_chars: int = 100_000


@dataclass(frozen=True)
class Section:
    """One headed part of a document. ``order`` counts from 0 in reading order."""

    name: str
    level: int
    content: str
    order: int
    char_count: int


@dataclass(frozen=True)
class ParsedDocument:
    """A document's sections, and how they were found. ``pages`` is set for a PDF only."""

    name: str
    format: DocumentFormat
    heading_source: HeadingSource
    sections: tuple[Section, ...]
    pages: int | None = None


MAX_NAME_CHARS = 200
_TITLE_MAX_CHARS = 120
_TITLE_MAX_WORDS = 12
_CAPS_MAX_CHARS = 80

_TYPES = {
    "application/pdf": DocumentFormat.PDF,
    "application/x-pdf": DocumentFormat.PDF,
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": (
        DocumentFormat.DOCX
    ),
    "text/markdown": DocumentFormat.MARKDOWN,
    "text/x-markdown": DocumentFormat.MARKDOWN,
    "text/plain": DocumentFormat.TEXT,
}
_EXTENSIONS = {
    ".pdf": DocumentFormat.PDF,
    ".docx": DocumentFormat.DOCX,
    ".md": DocumentFormat.MARKDOWN,
    ".markdown": DocumentFormat.MARKDOWN,
    ".txt": DocumentFormat.TEXT,
    ".text": DocumentFormat.TEXT,
}
_GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream"}
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_SUPPORTED = "PDF, DOCX, Markdown or plain text"

# One line of a document on its way to sections: its text, and its heading level when it is a
# heading (then the text is the heading's name).
_Line = tuple[str, int | None]


def parse_document(
    path: Path,
    *,
    content_type: str | None,
    name: str,
    limits: DocumentLimits | None = None,
) -> ParsedDocument:
    """The sections of the document at ``path``; ``content_type`` and ``name`` are what the
    uploader said the file is (both only hints, see the module docstring).

    Raises :class:`DocumentError` (or :class:`DocumentTooLarge`) when it cannot."""
    limits = limits or DocumentLimits()
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise DocumentTooLarge(
            name, Problem.TOO_LARGE, f"{size} bytes is over the limit of {limits.max_bytes}"
        )
    if size == 0:
        raise DocumentError(name, Problem.EMPTY, "the file is empty")
    with path.open("rb") as file:
        head = file.read(1024)
    fmt = detect_format(head, content_type=content_type, name=name)
    pages: int | None = None
    if fmt is DocumentFormat.PDF:
        lines, source, pages = _pdf_lines(path, name, limits)
    elif fmt is DocumentFormat.DOCX:
        lines, source = _docx_lines(path, name)
    elif fmt is DocumentFormat.MARKDOWN:
        lines, source = _markdown_lines(_read_text(path, name))
    else:
        lines = _classify_text(_read_text(path, name).split("\n"))
        source = _source_of(lines, HeadingSource.TEXT_RULES)
    sections = _sections(lines, name, limits)
    logger.debug("parsed %s as %s: %d sections (%s)", name, fmt, len(sections), source)
    return ParsedDocument(
        name=name, format=fmt, heading_source=source, sections=tuple(sections), pages=pages
    )


def detect_format(head: bytes, *, content_type: str | None, name: str) -> DocumentFormat:
    """The format of a document whose first bytes are ``head`` (the rules are in the module
    docstring); raises :class:`DocumentError` for a type this module does not read."""
    declared = (content_type or "").split(";")[0].strip().lower()
    if declared not in _GENERIC_TYPES and declared not in _TYPES:
        if declared == "application/msword":
            raise DocumentError(name, Problem.UNSUPPORTED, "a legacy .doc file: save it as .docx")
        raise DocumentError(
            name, Problem.UNSUPPORTED, f"content type {declared} is not {_SUPPORTED}"
        )
    suffix = Path(name).suffix.lower()
    claimed = _TYPES.get(declared) or _EXTENSIONS.get(suffix)
    if claimed is None and suffix:
        raise DocumentError(name, Problem.UNSUPPORTED, f"a {suffix} file is not {_SUPPORTED}")
    if b"%PDF-" in head:
        return DocumentFormat.PDF
    if head.startswith(_OLE_MAGIC):
        if suffix == ".doc":
            raise DocumentError(name, Problem.UNSUPPORTED, "a legacy .doc file: save it as .docx")
        raise DocumentError(
            name,
            Problem.ENCRYPTED,
            "an OLE compound file, which is what Word writes for a password-protected DOCX "
            "(or a legacy .doc): save it as an unprotected .docx",
        )
    if head.startswith(b"PK\x03\x04"):
        if claimed not in (None, DocumentFormat.DOCX):
            raise DocumentError(
                name, Problem.UNSUPPORTED, f"a ZIP archive, not {claimed} as its name or type says"
            )
        return DocumentFormat.DOCX
    if claimed in (DocumentFormat.PDF, DocumentFormat.DOCX):
        raise DocumentError(name, Problem.CORRUPT, f"not a {claimed.upper()} file")
    return claimed or DocumentFormat.TEXT


def _source_of(lines: Sequence[_Line], found: HeadingSource) -> HeadingSource:
    return found if any(level is not None for _, level in lines) else HeadingSource.NONE


# --- sections ----------------------------------------------------------------------------------


def _sections(lines: Iterable[_Line], document: str, limits: DocumentLimits) -> list[Section]:
    """Cut the lines at their headings (the rules are in the module docstring)."""
    untitled = Path(document).stem.strip() or "document"
    drafts: list[tuple[str, int, list[str]]] = [(untitled, 0, [])]
    for text, level in lines:
        if level is None:
            drafts[-1][2].append(text)
        else:
            drafts.append((_heading_name(text) or untitled, level, []))
    sections: list[Section] = []
    taken: set[str] = set()
    for heading, level, body in drafts:
        content = _tidy(body)
        if not content:
            continue
        if len(content) > limits.max_section_chars:
            raise DocumentTooLarge(
                document,
                Problem.TOO_LARGE,
                f'section "{heading}" has {len(content)} characters, over the limit of '
                f"{limits.max_section_chars}",
            )
        if len(sections) == limits.max_sections:
            raise DocumentTooLarge(
                document,
                Problem.TOO_LARGE,
                f"more than {limits.max_sections} sections",
            )
        unique = _unique(heading, taken)
        taken.add(unique)
        sections.append(Section(unique, level, content, len(sections), len(content)))
    if not sections:
        raise DocumentError(document, Problem.EMPTY, "the document has no text")
    return sections


def _heading_name(text: str) -> str:
    name = " ".join(text.split())
    return name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 1] + "…"


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    n = 2
    while f"{name} ({n})" in taken:
        n += 1
    return f"{name} ({n})"


def _tidy(lines: Iterable[str]) -> str:
    """The lines as one text: trailing spaces dropped, runs of blank lines made one blank line,
    no blank lines at either end."""
    out: list[str] = []
    for line in lines:
        line = line.rstrip()
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip("\n")


# --- plain text --------------------------------------------------------------------------------

_NUMBERED = re.compile(r"(\d{1,3}(?:\.\d{1,3}){0,5})\.?\s+(\S.*)")
_UNDERLINE = re.compile(r"(=+|-+)")


def _read_text(path: Path, document: str) -> str:
    data = path.read_bytes()
    try:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            text = data.decode("utf-16")
        else:
            if b"\x00" in data:
                raise DocumentError(document, Problem.UNSUPPORTED, "a binary file, not text")
            text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            document,
            Problem.UNSUPPORTED,
            f"not UTF-8 text (byte {exc.start} cannot be read): save it as UTF-8",
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _reads_like_title(text: str) -> bool:
    return (
        len(text) <= _TITLE_MAX_CHARS
        and len(text.split()) <= _TITLE_MAX_WORDS
        and text[0].isalnum()
        and text[-1] not in ".,;:"
    )


def _text_heading_level(line: str) -> int | None:
    """The heading level of one line by the numbered and capitals rules, or None."""
    numbered = _NUMBERED.fullmatch(line)
    if numbered and _reads_like_title(numbered.group(2)) and numbered.group(2)[0].isupper():
        return numbered.group(1).count(".") + 1
    letters = [c for c in line if c.isalpha()]
    if (
        len(letters) >= 3
        and all(c.isupper() for c in letters)
        and len(letters) * 2 >= len(line.replace(" ", ""))
        and len(line) <= _CAPS_MAX_CHARS
        and _reads_like_title(line)
    ):
        return 1
    return None


def _classify_text(raw: Sequence[str]) -> list[_Line]:
    """Plain-text lines with the headings the text rules find."""
    lines: list[_Line] = []
    i = 0
    while i < len(raw):
        line = raw[i].strip()
        below = raw[i + 1].strip() if i + 1 < len(raw) else ""
        if (
            line
            and len(below) >= 3
            and _UNDERLINE.fullmatch(below)
            and not _UNDERLINE.fullmatch(line)
        ):
            lines.append((line, 1 if below[0] == "=" else 2))
            i += 2
            continue
        lines.append((line, _text_heading_level(line) if line else None))
        i += 1
    return lines


# --- Markdown ----------------------------------------------------------------------------------


def _markdown_lines(text: str) -> tuple[list[_Line], HeadingSource]:
    source = text.split("\n")
    tokens = MarkdownIt("commonmark").parse(text)
    lines: list[_Line] = []
    done = 0  # source lines already placed
    for i, token in enumerate(tokens):
        if token.type != "heading_open" or token.level != 0 or token.map is None:
            continue
        start, end = token.map
        lines.extend((line, None) for line in source[done:start])
        inline = tokens[i + 1]
        title = "".join(
            child.content
            for child in inline.children or []
            if child.type in ("text", "code_inline", "softbreak")
        )
        lines.append((title or inline.content, int(token.tag[1:])))
        done = end
    lines.extend((line, None) for line in source[done:])
    return lines, _source_of(lines, HeadingSource.MARKDOWN)


# --- DOCX --------------------------------------------------------------------------------------

_HEADING_STYLE = re.compile(r"heading ([1-9])", re.IGNORECASE)


def _style_level(style: BaseStyle | None) -> int | None:
    """0 for Title, N for Heading N, following what a custom style is based on."""
    for _ in range(10):
        if style is None:
            return None
        name = (style.name or "").strip()
        if name.lower() == "title":
            return 0
        match = _HEADING_STYLE.fullmatch(name)
        if match:
            return int(match.group(1))
        style = getattr(style, "base_style", None)
    return None


def _docx_blocks(path: Path, document: str) -> Iterator[tuple[str, int | None]]:
    """Each paragraph's text and style level, and each table's rows as text, in order."""
    try:
        with zipfile.ZipFile(path) as archive:
            if "word/document.xml" not in archive.namelist():
                raise DocumentError(
                    document, Problem.UNSUPPORTED, "a ZIP archive that is not a DOCX"
                )
        parsed = docx.Document(str(path))
        blocks = list(parsed.iter_inner_content())
    except DocumentError:
        raise
    except Exception as exc:  # python-docx and lxml raise many kinds for a broken package
        raise DocumentError(
            document, Problem.CORRUPT, f"not a readable DOCX ({type(exc).__name__}: {exc})"
        ) from None
    for block in blocks:
        if isinstance(block, Paragraph):
            yield block.text, _style_level(block.style)
        elif isinstance(block, Table):
            rows = []
            for row in block.rows:
                cells: list[str] = []
                for cell in row.cells:
                    text = " ".join(cell.text.split())
                    # A merged cell is reported once per grid column it spans.
                    if not cells or cells[-1] != text:
                        cells.append(text)
                rows.append(" | ".join(cells))
            yield "\n".join(rows), None


def _docx_lines(path: Path, document: str) -> tuple[list[_Line], HeadingSource]:
    styled: list[_Line] = []
    plain: list[str] = []
    for text, level in _docx_blocks(path, document):
        if level is not None and text.strip():
            styled.append((text, level))
        else:
            styled.extend((line, None) for line in [*text.split("\n"), ""])
        plain.extend([*text.split("\n"), ""])
    if any(level is not None for _, level in styled):
        return styled, HeadingSource.STYLES
    lines = _classify_text(plain)
    return lines, _source_of(lines, HeadingSource.TEXT_RULES)


# --- PDF ---------------------------------------------------------------------------------------

_BOLD_NAMES = ("bold", "black", "heavy", "semibold", "demi")
_LARGER = 1.15
_PARAGRAPH_GAP = 1.5


@dataclass
class _PdfLine:
    """One extracted line of a PDF page with the font size and weight most of it has."""

    page: int
    text: str
    size: float
    bold: bool
    y: float | None


def _multiply(m: Sequence[float], n: Sequence[float]) -> list[float]:
    """The product of two PDF matrices [a b c d e f]."""
    a, b, c, d, e, f = m
    p, q, r, s, t, u = n
    return [
        a * p + b * r,
        a * q + b * s,
        c * p + d * r,
        c * q + d * s,
        e * p + f * r + t,
        e * q + f * s + u,
    ]


class _LineBuilder:
    """Collects pypdf's text runs of one page into lines with their dominant size and weight."""

    def __init__(self, page: int) -> None:
        self.page = page
        self.lines: list[_PdfLine] = []
        self._text: list[str] = []
        self._sizes: Counter[tuple[float, bool]] = Counter()
        self._y: float | None = None

    def visit(self, text: Any, cm: Any, tm: Any, font: Any, font_size: Any) -> None:
        if not isinstance(text, str) or not text:
            return
        matrix = _multiply([float(v) for v in tm], [float(v) for v in cm])
        size = round(float(font_size or 0) * (matrix[2] ** 2 + matrix[3] ** 2) ** 0.5, 1)
        base = str(font.get("/BaseFont", "")) if isinstance(font, dict) else ""
        bold = any(word in base.lower() for word in _BOLD_NAMES)
        pieces = text.split("\n")
        for i, piece in enumerate(pieces):
            if i:
                self.flush()
            if piece.strip():
                if self._y is None:
                    self._y = matrix[5]
                self._sizes[(size, bold)] += len(piece.strip())
            self._text.append(piece)

    def flush(self) -> None:
        text = "".join(self._text).strip()
        if text:
            (size, _), _ = self._sizes.most_common(1)[0]
            chars = sum(self._sizes.values())
            bold = sum(n for (_, b), n in self._sizes.items() if b) >= 0.8 * chars
            self.lines.append(_PdfLine(self.page, " ".join(text.split()), size, bold, self._y))
        self._text, self._sizes, self._y = [], Counter(), None


def _open_pdf(path: Path, document: str) -> PdfReader:
    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            try:
                opened = bool(reader.decrypt(""))
            except Exception:  # an unsupported or broken security handler
                opened = False
            if not opened:
                raise DocumentError(
                    document,
                    Problem.ENCRYPTED,
                    "the PDF is password-protected: upload it without a password",
                )
        pages = len(reader.pages)  # reading the page tree is what finds most broken files
    except DocumentError:
        raise
    except Exception as exc:  # pypdf raises many kinds for a broken file
        raise DocumentError(
            document, Problem.CORRUPT, f"not a readable PDF ({type(exc).__name__}: {exc})"
        ) from None
    if pages == 0:
        raise DocumentError(document, Problem.EMPTY, "the PDF has no pages")
    return reader


def _pdf_lines(
    path: Path, document: str, limits: DocumentLimits
) -> tuple[list[_Line], HeadingSource, int]:
    reader = _open_pdf(path, document)
    pages = len(reader.pages)
    if pages > limits.max_pages:
        raise DocumentTooLarge(
            document,
            Problem.TOO_LARGE,
            f"{pages} pages, over the limit of {limits.max_pages}",
        )
    extracted: list[_PdfLine] = []
    try:
        for number, page in enumerate(reader.pages):
            builder = _LineBuilder(number)
            page.extract_text(visitor_text=builder.visit)
            builder.flush()
            extracted.extend(builder.lines)
    except Exception as exc:  # a damaged content stream
        raise DocumentError(
            document, Problem.CORRUPT, f"text cannot be read ({type(exc).__name__}: {exc})"
        ) from None
    if not extracted:
        raise DocumentError(
            document,
            Problem.EMPTY,
            "the PDF has no text to extract (scanned pages would need OCR, which is not done)",
        )
    breaks = _paragraph_breaks(extracted)
    outline = _outline(reader)
    if outline:
        return _with_outline(extracted, outline, breaks), HeadingSource.OUTLINE, pages
    by_font = _with_font_headings(extracted, breaks)
    if by_font is not None:
        return by_font, HeadingSource.FONT, pages
    plain = _plain(extracted, breaks, lambda _: None)
    lines = _classify_text([text for text, _ in plain])
    return lines, _source_of(lines, HeadingSource.TEXT_RULES), pages


def _paragraph_breaks(lines: Sequence[_PdfLine]) -> set[int]:
    """Indexes of the lines that start a new paragraph: those further below the line before on
    their page than 1.5 times the usual spacing."""
    gaps: dict[int, float] = {}
    for i in range(1, len(lines)):
        above, line = lines[i - 1], lines[i]
        if above.page == line.page and above.y is not None and line.y is not None:
            gap = above.y - line.y
            if 0 < gap < 4 * max(line.size, 1.0):
                gaps[i] = gap
    if not gaps:
        return set()
    # The usual spacing is the commonest gap (the smaller of equals): a median would drift up
    # in a short document where gaps around headings and paragraphs are a good share of all.
    counts = Counter(round(gap * 2) / 2 for gap in gaps.values())
    usual = min(counts, key=lambda gap: (-counts[gap], gap))
    return {i for i, gap in gaps.items() if gap > _PARAGRAPH_GAP * usual}


def _plain(
    lines: Sequence[_PdfLine], breaks: set[int], level_of: Callable[[int], int | None]
) -> list[_Line]:
    out: list[_Line] = []
    for i, line in enumerate(lines):
        level = level_of(i)
        if i in breaks and level is None:
            out.append(("", None))
        out.append((line.text, level))
    return out


def _outline(reader: PdfReader) -> list[tuple[str, int, int]]:
    """The outline's entries as (title, level from 1, page index), in outline order; entries
    that point nowhere in this file are left out."""
    entries: list[tuple[str, int, int]] = []

    def walk(items: Sequence[Any], level: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, level + 1)
                continue
            try:
                page = reader.get_destination_page_number(item)
            except Exception:  # a destination that names no page of this file
                logger.debug("PDF outline entry without a page ignored", exc_info=True)
                continue
            title = " ".join(str(getattr(item, "title", "") or "").split())
            if title and page is not None and page >= 0:
                entries.append((title, level, page))

    try:
        walk(reader.outline, 1)
    except Exception:  # a broken outline is no outline; the layout rules take over
        logger.debug("unreadable PDF outline ignored", exc_info=True)
        return []
    return entries


def _normalized(text: str) -> str:
    return " ".join(re.sub(r"[^\w]+", " ", text.casefold()).split())


def _with_outline(
    lines: Sequence[_PdfLine], outline: Sequence[tuple[str, int, int]], breaks: set[int]
) -> list[_Line]:
    page_start: dict[int, int] = {}
    for i, line in enumerate(lines):
        page_start.setdefault(line.page, i)
    before: dict[int, list[tuple[str, int]]] = {}  # line index -> headings placed before it
    consumed: set[int] = set()
    cursor = 0
    for title, level, page in outline:
        first = page_start.get(page)
        if first is None:  # a page without text: the heading goes before the next text
            later = [i for p, i in page_start.items() if p > page]
            first = min(later) if later else len(lines)
        start = max(first, cursor)
        found = _find_title(lines, start, page, _normalized(title))
        if found is None:
            before.setdefault(start, []).append((title, level))
            cursor = start
        else:
            at, end = found
            before.setdefault(at, []).append((title, level))
            consumed.update(range(at, end))
            cursor = end
    out: list[_Line] = []
    for i, line in enumerate(lines):
        out.extend(before.get(i, []))
        if i in consumed:
            continue
        if i in breaks:
            out.append(("", None))
        out.append((line.text, None))
    out.extend(before.get(len(lines), []))
    return out


def _find_title(
    lines: Sequence[_PdfLine], start: int, page: int, title: str
) -> tuple[int, int] | None:
    """Where ``title`` stands on ``page`` at or after line ``start``: the first line and the
    line after the last one it covers (a long title may wrap over up to three lines)."""
    if not title:
        return None
    for i in range(start, len(lines)):
        if lines[i].page > page:
            return None
        joined = ""
        for end in range(i, min(i + 3, len(lines))):
            if lines[end].page != lines[i].page:
                break
            joined = f"{joined} {_normalized(lines[end].text)}".strip()
            if joined == title:
                return i, end + 1
            if not title.startswith(joined):
                break
    return None


def _with_font_headings(lines: Sequence[_PdfLine], breaks: set[int]) -> list[_Line] | None:
    weights: Counter[float] = Counter()
    for line in lines:
        weights[line.size] += len(line.text)
    body = weights.most_common(1)[0][0]
    larger: dict[int, float] = {}
    bold: set[int] = set()
    for i, line in enumerate(lines):
        if not any(c.isalpha() for c in line.text) or len(line.text) > MAX_NAME_CHARS:
            continue
        if line.size >= body * _LARGER:
            larger[i] = line.size
        elif (
            line.bold
            and line.size >= body * 0.95
            and len(line.text) <= _TITLE_MAX_CHARS
            and not line.text.endswith(".")
        ):
            bold.add(i)
    if not larger and not bold:
        return None
    if 2 * (len(larger) + len(bold)) > len(lines):
        return None
    ranks = {size: n + 1 for n, size in enumerate(sorted(set(larger.values()), reverse=True))}
    levels = {i: ranks[size] for i, size in larger.items()}
    levels.update({i: len(ranks) + 1 for i in bold})
    out: list[_Line] = []
    for i, line in enumerate(lines):
        level = levels.get(i)
        previous = levels.get(i - 1)
        if (
            level is not None
            and previous == level
            and _next_line_of_one_block(lines[i - 1], line)
            and out
            and out[-1][1] == level
        ):
            out[-1] = (f"{out[-1][0]} {line.text}", level)  # a heading wrapped over lines
            continue
        if i in breaks and level is None:
            out.append(("", None))
        out.append((line.text, level))
    return out


def _next_line_of_one_block(above: _PdfLine, line: _PdfLine) -> bool:
    """Whether ``line`` continues ``above``: same page and size, at most two sizes below it."""
    return (
        above.page == line.page
        and above.size == line.size
        and above.y is not None
        and line.y is not None
        and 0 < above.y - line.y <= 2 * line.size
    )
