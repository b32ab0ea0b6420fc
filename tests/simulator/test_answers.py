"""Answers by prompt kind (``simulator.answers``): the same input gives the same answer, and
the answer is the one the documented rule computes — re-derived here from the docstring."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from simulator.answers import FEEDBACK_CATEGORIES, FEEDBACK_TYPES, answer_for, input_digest
from tests.helpers import assert_eventually
from tests.simulator.conftest import ASSET, OTHER_ASSET, Sim

CONTENT = (
    "Revenue grew 12% year on year, driven by advisory fees.\n\n"
    "  Costs rose faster than revenue; the margin fell by two points and the report\n"
    "does not say why.  \n"
    "\n   \n"
    "Outlook: stable."
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def unit_cost(asset: str, message: str, low: float = 0.004, high: float = 0.24) -> float:
    return round(low + (int(input_digest(asset, message), 16) % 10000) / 10000 * (high - low), 4)


async def ask(sim: Sim, message: str, asset: str = ASSET) -> dict[str, Any]:
    """The final poll answer to one prompt."""
    token = await sim.token()
    conv_id = (await sim.create(token, asset)).json()["conversation_id"]
    message_id = (await sim.prompt(token, conv_id, message)).json()["message_id"]
    answer = await assert_eventually(
        lambda: sim.poll(token, conv_id, message_id),
        lambda r: r.json()["status"] != "IN_PROGRESS",
        timeout=5,
        what="final answer",
    )
    return dict(answer.json())


def expected_feedback(section_name: str, paragraphs: list[str]) -> list[dict[str, Any]]:
    items = []
    for i, paragraph in enumerate(paragraphs):
        d = sha(f"{section_name}\n{i}\n{paragraph}")
        words = paragraph.split()
        category = FEEDBACK_CATEGORIES[int(d[14:16], 16) % 6]
        items.append(
            {
                "id": "fb-" + d[:12],
                "type": FEEDBACK_TYPES[int(d[12:14], 16) % 4],
                "category": category,
                "description": f'Paragraph {i + 1} of "{section_name}" ({len(words)} words) '
                f"begins: {' '.join(words[:8])}",
                "suggestion": f"Review paragraph {i + 1} for {category}.",
                "confidence": (50 + int(d[16:18], 16) % 50) / 100,
            }
        )
    return items


async def test_analyze_section_gives_one_feedback_item_per_paragraph(sim: Sim) -> None:
    message = json.dumps(
        {"kind": "analyze_section", "section_name": "Performance", "content": CONTENT}
    )

    first = await ask(sim, message)
    again = await ask(sim, message)
    other = await ask(sim, message, OTHER_ASSET)

    assert first == again
    assert first["status"] == "SUCCESS"
    assert first["cost"] == unit_cost(ASSET, message)
    body = json.loads(first["response"])
    paragraphs = [
        "Revenue grew 12% year on year, driven by advisory fees.",
        "Costs rose faster than revenue; the margin fell by two points and the report\n"
        "does not say why.",
        "Outlook: stable.",
    ]
    assert body == {"feedback": expected_feedback("Performance", paragraphs), "model": ASSET}
    assert body["feedback"][1]["description"].endswith(
        "(18 words) begins: Costs rose faster than revenue; the margin fell"
    )
    assert all(0.5 <= item["confidence"] <= 0.99 for item in body["feedback"])
    assert json.loads(other["response"])["model"] == OTHER_ASSET
    assert json.loads(other["response"])["feedback"] == body["feedback"]


async def test_analyze_section_of_empty_content_has_no_feedback(sim: Sim) -> None:
    message = json.dumps({"kind": "analyze_section", "section_name": "S", "content": " \n\n "})

    answer = await ask(sim, message)

    assert json.loads(answer["response"]) == {"feedback": [], "model": ASSET}


async def test_chat_gives_a_reply_derived_from_message_and_context(sim: Sim) -> None:
    with_text = json.dumps({"kind": "chat", "message": "Why?", "context": "margin fell"})
    with_object = json.dumps({"kind": "chat", "message": "Why?", "context": {"b": 1, "a": [2]}})
    without = json.dumps({"kind": "chat", "message": "Why?"})

    answers = [await ask(sim, m) for m in (with_text, with_text, with_object, without)]

    assert answers[0] == answers[1]
    object_text = '{"a": [2], "b": 1}'
    digests = [sha(f"Why?\n{context}")[:8] for context in ("margin fell", object_text, "")]
    assert [a["response"] for a in answers[1:]] == [
        f'[{ASSET}] Reply {digests[0]} to "Why?" with 11 characters of context.',
        f'[{ASSET}] Reply {digests[1]} to "Why?" with {len(object_text)} characters of context.',
        f'[{ASSET}] Reply {digests[2]} to "Why?" with 0 characters of context.',
    ]


async def test_transform_rows_adds_the_computed_column_in_row_order(sim: Sim) -> None:
    rows = [
        {"name": "Equity", "mv": "12000000", "w": 0.5},
        {"name": "bonds", "note": "core"},
        {"a": 1, "b": 2, "flag": True, "text": "x"},
        {"a": "1.25", "b": 1.25, "c": " 2 ", "d": "nan", "e": None},
        {"flag": False, "e": None, "_computed": "stale"},
        {},
    ]
    message = json.dumps({"kind": "transform_rows", "instruction": "add totals", "rows": rows})

    first = await ask(sim, message)
    again = await ask(sim, message)

    assert first == again
    assert json.loads(first["response"]) == {
        "rows": [
            {"name": "Equity", "mv": "12000000", "w": 0.5, "_computed": 12000000.5},
            {"name": "bonds", "note": "core", "_computed": "BONDS"},
            {"a": 1, "b": 2, "flag": True, "text": "x", "_computed": 3},
            {"a": "1.25", "b": 1.25, "c": " 2 ", "d": "nan", "e": None, "_computed": 4.5},
            {"flag": False, "e": None, "_computed": None},
            {"_computed": None},
        ]
    }
    assert json.loads(first["response"])["rows"][2]["_computed"] == 3
    assert isinstance(json.loads(first["response"])["rows"][2]["_computed"], int)


async def test_transform_cost_scales_with_the_rows(sim: Sim) -> None:
    rows = [{"n": n} for n in range(5)]
    message = json.dumps({"kind": "transform_rows", "instruction": "x", "rows": rows})
    empty = json.dumps({"kind": "transform_rows", "instruction": "x", "rows": []})

    five = await ask(sim, message)
    none = await ask(sim, empty)

    assert five["cost"] == round(unit_cost(ASSET, message) * 5, 4)
    assert none["cost"] == unit_cost(ASSET, empty)
    assert json.loads(none["response"]) == {"rows": []}


async def test_a_prompt_of_a_known_kind_with_bad_fields_ends_failed(sim: Sim) -> None:
    bad = [
        {"kind": "analyze_section", "section_name": "S"},
        {"kind": "chat", "message": 5},
        {"kind": "transform_rows", "instruction": "x", "rows": [1, 2]},
        {"kind": "transform_rows", "rows": []},
    ]

    answers = [await ask(sim, json.dumps(prompt)) for prompt in bad]

    assert [a["status"] for a in answers] == ["FAILED"] * len(bad)
    assert [a["cost"] for a in answers] == [0.0] * len(bad)
    assert "content" in answers[0]["error"]
    assert "rows" in answers[2]["error"]
    assert "instruction" in answers[3]["error"]
    assert (await sim.stats())["answers"]["failed"] == len(bad)


async def test_other_messages_get_the_insight_as_before(sim: Sim) -> None:
    messages = [
        json.dumps({"kind": "something_else", "rows": []}),
        json.dumps({"Market Value": "12000000"}),
        "plain text",
        "[1, 2]",
    ]

    answers = [await ask(sim, message) for message in messages]

    for message, answer in zip(messages, answers, strict=True):
        d = input_digest(ASSET, message)
        assert json.loads(answer["response"]) == {
            "asset_id": ASSET,
            "digest": d[:16],
            "insight": f"Simulated insight {d[:8]} written by asset {ASSET}.",
        }
        assert answer["cost"] == unit_cost(ASSET, message)
        assert (answer["response"], answer["cost"]) == answer_for(ASSET, message, 0.004, 0.24)
