"""Task ids: the seed's form, this replica's tag first in the random part, never the same id
twice from one replica within a second (the random part is redrawn); and a replayed submission
is never answered with a task another submission made."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pytest

from common import task_ids
from common.errors import Conflict
from common.principals import Principal
from orchestrator import service
from orchestrator.credentials import new_key
from orchestrator.pipeline import Deps
from orchestrator.service import Orchestrator
from orchestrator.settings import OrchestratorSettings
from tests.orchestrator.factories import task_record


def _orchestrator() -> Orchestrator:
    settings = OrchestratorSettings(credential_key=new_key())
    deps = Deps(
        storage=cast(Any, None),
        pool=cast(Any, None),
        config=cast(Any, None),
        sealer=cast(Any, None),
        replica_id="r1",
    )
    return Orchestrator(settings, deps, b"k" * 32, "127.0.0.1:1")


def test_ids_carry_the_replica_tag_and_never_repeat_within_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    orchestrator = _orchestrator()
    orchestrator.membership.tag = "7f"
    draws = itertools.chain(["0a0a0a", "0a0a0a", "0a0a0a", "0b0b0b"], itertools.repeat("0a0a0a"))
    monkeypatch.setattr(service.secrets, "token_hex", lambda _n: next(draws))
    now = datetime(2026, 11, 28, 1, 2, 3, tzinfo=UTC)

    first = orchestrator._new_task_id(now)
    second = orchestrator._new_task_id(now)  # the same draw twice is redrawn
    next_second = orchestrator._new_task_id(now.replace(second=4))

    assert first == "task_20261128010203_7f0a0a0a"
    assert second == "task_20261128010203_7f0b0b0b"
    assert next_second == "task_20261128010204_7f0a0a0a"  # another second: no clash possible
    assert all(task_ids.REGEX.match(t) for t in (first, second, next_second))


async def test_a_replay_never_answers_with_another_submissions_task() -> None:
    orchestrator = _orchestrator()
    me = Principal(id="me", tenant="t")
    record = task_record(
        username="someone-else@example.com", data=[{"asset_id": "a"}], principal_id="me"
    )
    orchestrator.runs[record.task_id] = cast(Any, SimpleNamespace(record=record))
    replay = orchestrator._replay

    with pytest.raises(Conflict, match="belongs to another submission"):
        await replay(record.task_id, me, "me@example.com", [{"asset_id": "a"}])
    with pytest.raises(Conflict, match="belongs to another submission"):
        await replay(record.task_id, me, record.username, [{"asset_id": "b"}])
    with pytest.raises(Conflict, match="belongs to another submission"):
        await replay(
            record.task_id, Principal(id="other", tenant="t"), record.username, record.data
        )
    assert await replay(record.task_id, me, record.username, record.data) is record
