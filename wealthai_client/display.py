"""What the ``wealthai`` command line shows: rich tables and live progress bars on a terminal,
plain lines otherwise (a pipe, a file, a script), JSON when asked.

Task data is shown as text, never as markup: a section's error or a file name that contains
``[bold]`` prints as those characters.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from gateway.models import SectionStateOut, StatusResponse
from wealthai_client.watching import TERMINAL, TaskUpdate

_RATIO = re.compile(r"(\d+)\s*/\s*(\d+)")
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_STYLE = {"completed": "green", "error": "red", "cancelled": "yellow"}


def money(dollars: float) -> str:
    return f"${dollars:.4f}"


def fraction(section: SectionStateOut) -> float | None:
    """How far a section got, 0-1: done when finished, else what its progress text says
    (``"chunks 3/10"``, ``"profiled 40%"``); None when it does not say."""
    if section.status in TERMINAL:
        return 1.0
    if found := _RATIO.search(section.progress):
        done, total = int(found.group(1)), int(found.group(2))
        return min(done / total, 1.0) if total else None
    if found := _PERCENT.search(section.progress):
        return min(float(found.group(1)) / 100, 1.0)
    return 0.0 if section.status == "pending" else None


def section_note(section: SectionStateOut) -> str:
    """A section's state in a few words: its status, progress, cost or error."""
    parts = [section.status]
    if section.progress and section.status not in TERMINAL:
        parts.append(section.progress)
    if section.status == "completed" or section.cost:
        parts.append(money(section.cost))
    if section.error:
        parts.append(section.error)
    return " ".join(parts)


class Printer:
    """Where and how a command prints: ``rich`` when stdout is a terminal, plain lines when it
    is not, and only JSON on stdout with ``--json``."""

    def __init__(self, as_json: bool = False) -> None:
        self.out = Console(highlight=False)
        self.err = Console(stderr=True, highlight=False)
        self.as_json = as_json
        self.rich = self.out.is_terminal and not as_json

    def json(self, value: BaseModel | Sequence[BaseModel] | dict[str, Any]) -> None:
        if isinstance(value, BaseModel):
            data: Any = value.model_dump(mode="json")
        elif isinstance(value, dict):
            data = value
        else:
            data = [item.model_dump(mode="json") for item in value]
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        sys.stdout.flush()

    def line(self, text: str, style: str = "") -> None:
        if self.rich:
            self.out.print(Text(text, style=style))
        else:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def error(self, text: str) -> None:
        if self.err.is_terminal:
            self.err.print(Text(f"error: {text}", style="red"))
        else:  # whole lines, as a log reads them
            sys.stderr.write(f"error: {text}\n")
            sys.stderr.flush()

    def note(self, text: str) -> None:
        """A remark beside the data: on stdout with the rich output, else on stderr (so the
        plain lines on stdout stay only data)."""
        if self.rich:
            self.out.print(Text(text, style="dim"))
        else:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def fields(self, rows: Iterable[tuple[str, str]]) -> None:
        """Name-value pairs: a two-column grid, or ``name: value`` lines."""
        if not self.rich:
            for name, value in rows:
                self.line(f"{name}: {value}")
            return
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        for name, value in rows:
            grid.add_row(Text(name), Text(value, style=_STYLE.get(value, "")))
        self.out.print(grid)

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
        """Rows: a table, or tab-separated lines under a header line."""
        if not self.rich:
            self.line("\t".join(columns))
            for row in rows:
                self.line("\t".join(row))
            return
        table = Table(*columns)
        for row in rows:
            table.add_row(*(Text(cell, style=_STYLE.get(cell, "")) for cell in row))
        self.out.print(table)

    def status(self, status: StatusResponse) -> None:
        self.fields(
            [
                ("task", status.task_id),
                ("status", status.status),
                ("progress", f"{status.progress}%"),
                ("message", status.message),
                *((f"  {s.name}", section_note(s)) for s in status.sections),
            ]
        )

    def watcher(self) -> TaskWatcher:
        """Bars on a terminal, a line per update otherwise; nothing with --json (stdout holds
        the JSON alone)."""
        if self.as_json:
            return TaskWatcher()
        return LiveBars(self.out) if self.rich else PlainUpdates(self)

    def bytes_bar(self, what: str) -> ByteBar | None:
        return ByteBar(self.out, what) if self.rich else None


class TaskWatcher:
    """Shows a task's updates as they come (a context manager around the wait); this one shows
    nothing."""

    def update(self, update: TaskUpdate) -> None:
        return None

    def __enter__(self) -> TaskWatcher:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


class PlainUpdates(TaskWatcher):
    """One line per update: ``processing 72% portfolio_snapshot=completed top_movers=running``."""

    def __init__(self, printer: Printer) -> None:
        self._printer = printer

    def update(self, update: TaskUpdate) -> None:
        status = update.status
        sections = " ".join(f"{s.name}={s.status}" for s in status.sections)
        self._printer.line(f"{status.status} {status.progress}% {sections}".rstrip())


class LiveBars(TaskWatcher):
    """A bar for the task and one per section, redrawn in place."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.fields[name]}", markup=False),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[note]}", markup=False),
            TimeElapsedColumn(),
            console=console,
        )
        self._task: TaskID | None = None
        self._sections: dict[str, TaskID] = {}

    def __enter__(self) -> LiveBars:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def update(self, update: TaskUpdate) -> None:
        status = update.status
        note = status.status + ("" if update.source != "polling" else " (polling)")
        if self._task is None:
            self._task = self._progress.add_task("", total=100, name=status.task_id, note=note)
        self._progress.update(self._task, completed=status.progress, note=note)
        for section in status.sections:
            if section.name not in self._sections:
                self._sections[section.name] = self._progress.add_task(
                    "", total=100, name=f"  {section.name}", note=""
                )
            done = fraction(section)
            self._progress.update(
                self._sections[section.name],
                total=100 if done is not None else None,
                completed=round((done or 0) * 100),
                note=section_note(section),
            )


class ByteBar:
    """A bar of bytes sent or received, as a ``progress(done, total)`` callback."""

    def __init__(self, console: Console, what: str) -> None:
        self._progress = Progress(
            TextColumn("{task.fields[what]}", markup=False),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
        )
        self._id = self._progress.add_task("", total=None, what=what)

    def __call__(self, done: int, total: int | None) -> None:
        self._progress.update(self._id, completed=done, total=total)

    def __enter__(self) -> ByteBar:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()
