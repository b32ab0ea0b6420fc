"""Idempotency claims over a real storage_svc and moto: a repeat replays the first task, another
request with the same key conflicts, and a stored claim that cannot be read never fails a
submission."""

from __future__ import annotations

import json
import logging

import pytest

from common.errors import Conflict
from orchestrator.idempotency import claim, claim_name
from orchestrator.storage_client import IDEMPOTENCY, StorageClient
from storage_svc.objects import Namespace, ObjectStore
from storage_svc.store import TaskStore
from tests.storage_svc.conftest import BUCKET

FIRST = "task_20251230120000_000000aa"
SECOND = "task_20251230120001_000000bb"


async def test_a_repeat_replays_the_first_task_and_another_request_conflicts(
    storage: StorageClient,
) -> None:
    first = await claim(storage, "ann", "key-1", "digest-a", FIRST)
    assert (first.task_id, first.replayed) == (FIRST, False)
    repeat = await claim(storage, "ann", "key-1", "digest-a", SECOND)
    assert (repeat.task_id, repeat.replayed) == (FIRST, True)
    with pytest.raises(Conflict, match="different request"):
        await claim(storage, "ann", "key-1", "digest-b", SECOND)
    other_user = await claim(storage, "bob", "key-1", "digest-b", SECOND)
    assert (other_user.task_id, other_user.replayed) == (SECOND, False)


@pytest.mark.parametrize(
    "stored",
    [
        b"not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"request": "digest-a"}',
        b'{"task_id": 7, "request": "digest-a"}',
        b'{"a": ' * 5000 + b"1" + b"}" * 5000,  # deeper than the json module parses
    ],
    ids=["text", "not-utf8", "not-an-object", "no-task", "task-not-text", "too-deep"],
)
async def test_an_unreadable_claim_is_replaced_and_logged_not_fatal(
    storage: StorageClient,
    store: TaskStore,
    stored: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = claim_name("ann", "key-1")
    key = ObjectStore(store.s3).object_key(Namespace.IDEMPOTENCY, name)
    # Straight to S3: storage_svc itself only stores JSON objects.
    await store.s3.client.put_object(Bucket=BUCKET, Key=key, Body=stored)
    with caplog.at_level(logging.WARNING, logger="orchestrator.idempotency"):
        got = await claim(storage, "ann", "key-1", "digest-a", FIRST)
    assert (got.task_id, got.replayed) == (FIRST, False)
    assert name in caplog.text
    body, _ = await storage.get_object(IDEMPOTENCY, name)
    assert json.loads(body) == {"task_id": FIRST, "request": "digest-a"}
    repeat = await claim(storage, "ann", "key-1", "digest-a", SECOND)
    assert (repeat.task_id, repeat.replayed) == (FIRST, True)
