"""AI-Prism's feedback: the answer the platform gives to a request for feedback on a section of
a document is the JSON object ``{"feedback": [item objects…]}``, each item carrying ``id``,
``type``, ``category``, ``description``, ``suggestion`` and ``confidence`` as the platform
writes them. The gateway reads it from an analysis' answer; the ``analyze_document`` job kind
reads it from the answer for each of a document's sections.
"""

from __future__ import annotations

import json
from typing import Any


class NotFeedback(ValueError):
    """The platform's answer to an analysis is not ``{"feedback": [objects…]}``."""


def parse_feedback(response: str) -> list[dict[str, Any]]:
    """The feedback items of an analysis' answer; :class:`NotFeedback` saying what is wrong."""
    try:
        answer = json.loads(response)
    except ValueError:
        raise NotFeedback("the platform's answer is not JSON") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("feedback"), list):
        raise NotFeedback("the platform's answer has no `feedback` list")
    items: list[dict[str, Any]] = answer["feedback"]
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise NotFeedback(f"feedback[{index}] of the platform's answer is not an object")
    return items


def analysis_prompt(section_name: str, content: str) -> str:
    """The prompt of an analysis of one section cut from an uploaded document: the record
    ``POST /analyze_section`` makes of a section sent inline, so the platform sees the same
    fields either way."""
    return json.dumps(
        {"kind": "analyze_section", "section_name": section_name, "content": content},
        ensure_ascii=False,
    )
