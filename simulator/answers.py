"""What the simulated platform answers to a prompt, and what the answer costs; the same input
always gets the same answer, so tests of other modules can compute what to expect.

A message that is a JSON object with one of the ``kind`` values below gets that kind's answer;
any other message (a portfolio record, plain text, an unknown kind) gets :func:`insight`.
``d`` is a sha256 hex digest, as named in each rule.

``kind: "analyze_section"`` (``section_name``: str, ``content``: str) — :func:`analyze_section`.
    The response is the JSON object ``{"feedback": [...], "model": <asset id>}`` with one item
    per paragraph of ``content``: paragraphs are separated by blank lines (regex
    ``\\n\\s*\\n``), stripped, and empty ones dropped. Paragraph ``i`` (from 0) with text ``p``
    and ``d = sha256(f"{section_name}\\n{i}\\n{p}")`` gives::

        id          "fb-" + d[:12]
        type        FEEDBACK_TYPES[int(d[12:14], 16) % 4]
        category    FEEDBACK_CATEGORIES[int(d[14:16], 16) % 6]
        description f'Paragraph {i + 1} of "{section_name}" ({n} words) begins: {w}'
                    (n: the paragraph's whitespace-separated words, w: the first 8 joined by
                    one space)
        suggestion  f"Review paragraph {i + 1} for {category}."
        confidence  (50 + int(d[16:18], 16) % 50) / 100, so 0.50 to 0.99

``kind: "chat"`` (``message``: str, ``context``: optional, any JSON) — :func:`chat`.
    The response is plain text. With ``c`` the context as text (a string as it is, null or
    absent as ``""``, anything else as ``json.dumps(context, sort_keys=True)``) and
    ``d = sha256(f"{message}\\n{c}")``::

        f'[{asset_id}] Reply {d[:8]} to "{message}" with {len(c)} characters of context.'

``kind: "transform_rows"`` (``instruction``: str, ``rows``: list of objects) —
    :func:`transform_rows`. The response is the JSON object ``{"rows": [...]}``: every input
    row, in order, with the key ``"_computed"`` set (replacing any value it had, which the
    rule ignores) to

    * the sum of the row's numeric values, when it has any — JSON numbers other than booleans,
      and strings Python's ``float()`` reads as a finite number — as an integer when the sum
      is whole, else rounded to 6 decimals (``math.fsum``, so ``"12000000"`` and ``500.5``
      give ``12000500.5``);
    * else the first string value, upper-cased;
    * else null.

    The instruction does not change the rows (it does change the digest, so the cost).

Any other message — :func:`insight`: the JSON object ``{"asset_id", "digest": d[:16],
"insight": "Simulated insight {d[:8]} written by asset {asset_id}."}`` with
``d = input_digest(asset_id, message)``.

A message of one of these kinds whose fields are missing or of the wrong type raises
:class:`MalformedPrompt`; the simulator answers it FAILED with that reason, at no cost.

Cost: ``cost_min + (int(input_digest(asset_id, message), 16) % 10000) / 10000 * (cost_max -
cost_min)``, rounded to 4 decimals, for every prompt; a ``transform_rows`` prompt costs that
times its number of rows (at least 1), rounded to 4 decimals again.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from typing import Any

FEEDBACK_TYPES = ("critical", "important", "suggestion", "positive")
FEEDBACK_CATEGORIES = ("clarity", "completeness", "accuracy", "structure", "compliance", "risk")
DESCRIPTION_WORDS = 8
COMPUTED = "_computed"

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


class MalformedPrompt(ValueError):
    """A prompt of a known kind lacks a field or has one of the wrong type."""


def input_digest(asset_id: str, message: str) -> str:
    """sha256 hex of ``asset_id + message``: what prices an answer, and the key of
    ``prompts_by_input`` in the stats."""
    return hashlib.sha256((asset_id + message).encode()).hexdigest()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _text(prompt: dict[str, Any], field: str) -> str:
    value = prompt.get(field)
    if not isinstance(value, str):
        raise MalformedPrompt(f"{prompt['kind']}: {field} must be a string")
    return value


def insight(asset_id: str, digest: str) -> str:
    """The answer to a prompt of no known kind (a portfolio record, plain text)."""
    return json.dumps(
        {
            "asset_id": asset_id,
            "digest": digest[:16],
            "insight": f"Simulated insight {digest[:8]} written by asset {asset_id}.",
        },
        sort_keys=True,
    )


def analyze_section(asset_id: str, prompt: dict[str, Any]) -> str:
    """Feedback on a document section, one item per paragraph."""
    section_name = _text(prompt, "section_name")
    content = _text(prompt, "content")
    paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(content) if p.strip()]
    feedback = []
    for i, paragraph in enumerate(paragraphs):
        d = _sha256(f"{section_name}\n{i}\n{paragraph}")
        words = paragraph.split()
        category = FEEDBACK_CATEGORIES[int(d[14:16], 16) % len(FEEDBACK_CATEGORIES)]
        feedback.append(
            {
                "id": f"fb-{d[:12]}",
                "type": FEEDBACK_TYPES[int(d[12:14], 16) % len(FEEDBACK_TYPES)],
                "category": category,
                "description": (
                    f'Paragraph {i + 1} of "{section_name}" ({len(words)} words) begins: '
                    + " ".join(words[:DESCRIPTION_WORDS])
                ),
                "suggestion": f"Review paragraph {i + 1} for {category}.",
                "confidence": (50 + int(d[16:18], 16) % 50) / 100,
            }
        )
    return json.dumps({"feedback": feedback, "model": asset_id}, sort_keys=True)


def chat(asset_id: str, prompt: dict[str, Any]) -> str:
    """A reply to a chat message about a document."""
    message = _text(prompt, "message")
    context = prompt.get("context")
    if context is None:
        context_text = ""
    elif isinstance(context, str):
        context_text = context
    else:
        context_text = json.dumps(context, sort_keys=True)
    d = _sha256(f"{message}\n{context_text}")
    return (
        f'[{asset_id}] Reply {d[:8]} to "{message}" with {len(context_text)} characters of context.'
    )


def _number(value: object) -> float | None:
    """The value as a finite number, or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def computed(row: dict[str, Any]) -> object:
    """The ``_computed`` column of one row (the rule is in the module docstring)."""
    values = [value for key, value in row.items() if key != COMPUTED]
    numbers = [n for n in map(_number, values) if n is not None]
    if numbers:
        total = math.fsum(numbers)
        return int(total) if total.is_integer() else round(total, 6)
    return next((value.upper() for value in values if isinstance(value, str)), None)


def _rows(prompt: dict[str, Any]) -> list[dict[str, Any]]:
    rows = prompt.get("rows")
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise MalformedPrompt("transform_rows: rows must be a list of objects")
    return rows


def transform_rows(asset_id: str, prompt: dict[str, Any]) -> str:
    """A chunk of spreadsheet rows, each with its ``_computed`` column."""
    _text(prompt, "instruction")
    rows = [{**row, COMPUTED: computed(row)} for row in _rows(prompt)]
    return json.dumps({"rows": rows})


KINDS: dict[str, Callable[[str, dict[str, Any]], str]] = {
    "analyze_section": analyze_section,
    "chat": chat,
    "transform_rows": transform_rows,
}


def _prompt_of_a_kind(message: str) -> dict[str, Any] | None:
    """The message as a JSON object with a known ``kind``, or None."""
    if not message.lstrip().startswith("{"):
        return None
    try:
        prompt = json.loads(message)
    except ValueError:
        return None
    if isinstance(prompt, dict) and prompt.get("kind") in KINDS:
        return prompt
    return None


def answer_for(asset_id: str, message: str, cost_min: float, cost_max: float) -> tuple[str, float]:
    """The response text and cost the platform gives for this input; the same every time.
    Raises :class:`MalformedPrompt` for a prompt of a known kind with bad fields."""
    digest = input_digest(asset_id, message)
    cost = round(cost_min + (int(digest, 16) % 10000) / 10000 * (cost_max - cost_min), 4)
    prompt = _prompt_of_a_kind(message)
    if prompt is None:
        return insight(asset_id, digest), cost
    response = KINDS[prompt["kind"]](asset_id, prompt)
    if prompt["kind"] == "transform_rows":
        cost = round(cost * max(1, len(prompt["rows"])), 4)
    return response, cost
