"""Timestamps as the user's clients read them: ISO 8601 in UTC without an offset."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time in UTC (naive values never enter the platform)."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """``2025-12-30T18:27:21.828027``: UTC, microseconds, no offset, like the seed."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def parse_iso(text: str) -> datetime:
    """Reads a timestamp written by :func:`iso` back as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
