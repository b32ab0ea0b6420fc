"""Bucket preparation against moto: creation and the retention lifecycle rule."""

from __future__ import annotations

from typing import Any

import pytest

from common.errors import Internal
from storage_svc.bucket import RULE_ID_PREFIX
from storage_svc.store import TaskStore
from tests.storage_svc.conftest import BUCKET, StoreFactory


async def _rules(store: TaskStore) -> list[dict[str, Any]]:
    answer = await store.s3.client.get_bucket_lifecycle_configuration(Bucket=BUCKET)
    return list(answer["Rules"])


async def test_missing_bucket_is_created_with_the_retention_rule(
    make_store: StoreFactory,
) -> None:
    store = await make_store(prepare=False, task_retention_days=7)
    buckets = await store.s3.client.list_buckets()
    assert BUCKET not in [b["Name"] for b in buckets["Buckets"]]

    await store.ensure_bucket()

    buckets = await store.s3.client.list_buckets()
    assert BUCKET in [b["Name"] for b in buckets["Buckets"]]
    [rule] = await _rules(store)
    assert rule["ID"] == RULE_ID_PREFIX + "tasks/"
    assert rule["Status"] == "Enabled"
    assert rule["Filter"]["Prefix"] == "tasks/"
    assert rule["Expiration"]["Days"] == 7


async def test_preparing_again_is_idempotent_keeps_other_rules_and_follows_the_setting(
    make_store: StoreFactory,
) -> None:
    store = await make_store(task_retention_days=30)
    foreign = {
        "ID": "someone-elses-rule",
        "Filter": {"Prefix": "exports/"},
        "Status": "Enabled",
        "Expiration": {"Days": 1},
    }
    ours = await _rules(store)
    await store.s3.client.put_bucket_lifecycle_configuration(
        Bucket=BUCKET, LifecycleConfiguration={"Rules": [*ours, foreign]}
    )

    puts: list[str] = []
    store.s3.client.meta.events.register(
        "before-parameter-build.s3.PutBucketLifecycleConfiguration",
        lambda **_: puts.append("put"),
    )
    await store.ensure_bucket()
    assert puts == []
    assert sorted(r["ID"] for r in await _rules(store)) == sorted(
        [RULE_ID_PREFIX + "tasks/", "someone-elses-rule"]
    )

    shorter = await make_store(task_retention_days=3)
    rules = {r["ID"]: r for r in await _rules(shorter)}
    assert len(rules) == 2
    assert rules[RULE_ID_PREFIX + "tasks/"]["Expiration"]["Days"] == 3
    assert rules["someone-elses-rule"]["Filter"]["Prefix"] == "exports/"


async def test_missing_bucket_with_creation_off_stops_with_a_clear_error(
    make_store: StoreFactory,
) -> None:
    store = await make_store(prepare=False, create_bucket=False)
    with pytest.raises(Internal, match="does not exist and STORAGE_CREATE_BUCKET is false"):
        await store.ensure_bucket()
