"""Document, object and page-token checks (pure functions; task ids: tests/common)."""

from __future__ import annotations

import pytest

from common.errors import InvalidInput
from storage_svc.documents import (
    MAX_OBJECT_BODY,
    check_document,
    check_object_body,
    check_object_name,
    decode_objects_token,
    decode_tasks_token,
    encode_objects_token,
    encode_tasks_token,
    matches,
    status_of,
)
from tests.storage_svc.conftest import document, task_id


def test_a_valid_document_gives_its_status() -> None:
    tid = task_id()
    assert check_document(tid, document(tid, "processing", extra={"a": 1})) == "processing"
    assert status_of(document(tid, "completed")) == "completed"
    assert status_of(b"not json") is None
    assert status_of(b'{"status": 1}') is None
    assert status_of(b'{"status": "completed", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}") is None


def test_a_document_or_body_too_deep_to_parse_is_invalid_input() -> None:
    tid = task_id()
    deep = b"[" * 5000 + b"]" * 5000
    with pytest.raises(InvalidInput, match=f"document of task {tid} is nested too deeply"):
        check_document(tid, b'{"task_id": "%s", "x": %s}' % (tid.encode(), deep))
    with pytest.raises(InvalidInput, match="body of object n is nested too deeply"):
        check_object_body("n", b'{"x": %s}' % deep)


def test_a_task_page_token_is_the_last_task_id_and_nothing_else_is_one() -> None:
    tid = task_id()
    assert decode_tasks_token(encode_tasks_token(tid)) == tid
    for other in [encode_objects_token("leases", tid), "task_x", tid + "\n", ""]:
        with pytest.raises(InvalidInput, match="page_token"):
            decode_tasks_token(other)


def test_object_tokens_round_trip_and_belong_to_their_namespace() -> None:
    token = encode_objects_token("leases", "orch-1.a_b")
    assert "orch-1" not in token
    assert decode_objects_token("leases", token) == "orch-1.a_b"
    for other, namespace in [
        (token, "idempotency"),
        (encode_tasks_token(task_id()), "leases"),
        (encode_objects_token("leases", "x/y"), "leases"),
    ]:
        with pytest.raises(InvalidInput, match="page_token"):
            decode_objects_token(namespace, other)


def test_object_names_and_bodies() -> None:
    assert check_object_name("A-z_0.9") == "A-z_0.9"
    assert check_object_name("x" * 128) == "x" * 128
    check_object_body("n", b'{"a": [1]}')
    check_object_body("n", b"{}")
    check_object_body("n", b"{" + b" " * (MAX_OBJECT_BODY - 2) + b"}")
    with pytest.raises(InvalidInput, match=f"is {MAX_OBJECT_BODY + 1} bytes"):
        check_object_body("n", b"{" + b" " * (MAX_OBJECT_BODY - 1) + b"}")


def test_a_trailing_newline_is_not_part_of_a_valid_name() -> None:
    with pytest.raises(InvalidInput, match="malformed"):
        check_object_name("orch-1\n")


def test_a_document_matches_when_every_wanted_field_has_its_value() -> None:
    doc = b'{"status": "error", "tenant": "acme"}'
    assert matches(doc, {"status": "error", "tenant": "acme"})
    assert matches(doc, {})
    assert not matches(doc, {"tenant": "beta"})
    assert not matches(doc, {"status": "error", "tenant": "beta"})
    assert not matches(b"not json", {"tenant": "acme"})
    assert not matches(b'["tenant", "acme"]', {"tenant": "acme"})
