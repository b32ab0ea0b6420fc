"""Section detection: which report section each input record feeds.

A record belongs to the section whose identifying fields it carries; when it carries fields of
several sections, the section with the most matching fields wins. A record that matches no
section, matches two equally well, or feeds a section another record already feeds is the
caller's error, reported with what each section expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.errors import InvalidInput
from orchestrator.config import SectionsConfig


@dataclass(frozen=True)
class Detected:
    """One record and the section it feeds."""

    index: int
    section: str
    asset_id: str


def _expectations(config: SectionsConfig) -> str:
    return "; ".join(
        f"{name} expects any of {list(sec.fields)}" for name, sec in config.sections.items()
    )


def detect_one(record: dict[str, Any], index: int, config: SectionsConfig) -> Detected:
    """The section record number ``index`` (0-based) feeds, or :class:`InvalidInput`."""
    keys = set(record)
    scores = {name: len(keys.intersection(sec.fields)) for name, sec in config.sections.items()}
    best = max(scores.values())
    winners = [name for name, score in scores.items() if score == best]
    if len(winners) > 1:
        # Equal matches: the section the record covers the most of is the most specific.
        share = {name: best / len(config.sections[name].fields) for name in winners}
        winners = [name for name in winners if share[name] == max(share.values())]
    fields = sorted(keys)[:10]
    if best == 0:
        raise InvalidInput(
            f"data[{index}] matches no section (its fields: {fields}); {_expectations(config)}"
        )
    if len(winners) > 1:
        raise InvalidInput(
            f"data[{index}] matches sections {winners} equally (its fields: {fields}); "
            f"{_expectations(config)}"
        )
    name = winners[0]
    return Detected(index=index, section=name, asset_id=config.sections[name].asset_id)


def detect(records: list[dict[str, Any]], config: SectionsConfig) -> list[Detected]:
    """Detects every record's section; each section may be fed by one record only."""
    found: dict[str, int] = {}
    result = []
    for index, record in enumerate(records):
        hit = detect_one(record, index, config)
        if hit.section in found:
            raise InvalidInput(
                f"data[{index}] and data[{found[hit.section]}] both feed section "
                f"{hit.section!r}; send one record per section"
            )
        found[hit.section] = index
        result.append(hit)
    return result
