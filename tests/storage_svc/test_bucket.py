"""Bucket preparation against moto: creation and the retention lifecycle rule."""

from __future__ import annotations

from typing import Any

import pytest

from common.errors import Internal
from storage_svc.bucket import RULE_ID_PREFIX
from storage_svc.objects import Namespace, ObjectStore
from storage_svc.store import TaskStore
from tests.storage_svc.conftest import BUCKET, StoreFactory

EXPIRING = [
    "tasks/task_",
    "tasks/_owners/",
    "tasks/_leases/",
    "tasks/_idempotency/",
    "tasks/_seals/",
]
OURS = [RULE_ID_PREFIX + prefix for prefix in EXPIRING]


async def _rules(store: TaskStore) -> list[dict[str, Any]]:
    answer = await store.s3.client.get_bucket_lifecycle_configuration(Bucket=BUCKET)
    return list(answer["Rules"])


def _expires(rules: list[dict[str, Any]], key: str) -> bool:
    """Whether any enabled rule's prefix filter covers ``key``."""
    return any(
        rule["Status"] == "Enabled" and key.startswith(rule["Filter"]["Prefix"]) for rule in rules
    )


async def test_missing_bucket_is_created_with_the_retention_rule(
    make_store: StoreFactory,
) -> None:
    store = await make_store(prepare=False, task_retention_days=7)
    buckets = await store.s3.client.list_buckets()
    assert BUCKET not in [b["Name"] for b in buckets["Buckets"]]

    await store.ensure_bucket()

    buckets = await store.s3.client.list_buckets()
    assert BUCKET in [b["Name"] for b in buckets["Buckets"]]
    rules = await _rules(store)
    assert sorted(rule["ID"] for rule in rules) == sorted(OURS)
    assert sorted(rule["Filter"]["Prefix"] for rule in rules) == sorted(EXPIRING)
    assert all(rule["Status"] == "Enabled" for rule in rules)
    assert all(rule["Expiration"]["Days"] == 7 for rule in rules)


async def test_task_documents_leases_and_idempotency_records_expire_but_api_keys_do_not(
    make_store: StoreFactory,
) -> None:
    store = await make_store()
    rules = await _rules(store)
    objects = ObjectStore(store.s3)
    assert _expires(rules, "tasks/task_20251230182721_01e09305.json")
    assert _expires(rules, objects.object_key(Namespace.LEASES, "orch-1"))
    assert _expires(rules, objects.object_key(Namespace.IDEMPOTENCY, "k1"))
    assert not _expires(rules, objects.object_key(Namespace.API_KEYS, "0123456789ab"))


async def test_the_earlier_whole_prefix_rule_is_replaced(make_store: StoreFactory) -> None:
    store = await make_store()
    whole = {
        "ID": RULE_ID_PREFIX + "tasks/",
        "Filter": {"Prefix": "tasks/"},
        "Status": "Enabled",
        "Expiration": {"Days": 30},
    }
    await store.s3.client.put_bucket_lifecycle_configuration(
        Bucket=BUCKET, LifecycleConfiguration={"Rules": [whole]}
    )

    await store.ensure_bucket()

    rules = await _rules(store)
    assert sorted(rule["ID"] for rule in rules) == sorted(OURS)
    assert not _expires(rules, "tasks/_api_keys/0123456789ab.json")


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
    assert sorted(r["ID"] for r in await _rules(store)) == sorted([*OURS, "someone-elses-rule"])

    shorter = await make_store(task_retention_days=3)
    rules = {r["ID"]: r for r in await _rules(shorter)}
    assert len(rules) == len(OURS) + 1
    assert all(rules[rule_id]["Expiration"]["Days"] == 3 for rule_id in OURS)
    assert rules["someone-elses-rule"]["Filter"]["Prefix"] == "exports/"


async def test_missing_bucket_with_creation_off_stops_with_a_clear_error(
    make_store: StoreFactory,
) -> None:
    store = await make_store(prepare=False, create_bucket=False)
    with pytest.raises(Internal, match="does not exist and STORAGE_CREATE_BUCKET is false"):
        await store.ensure_bucket()
