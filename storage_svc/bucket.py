"""Start-up preparation of the bucket: create it if missing and keep our lifecycle rules in place.

The rules expire task documents (``<prefix>task_…``), the owner index's markers
(``<prefix>_owners/``) and the namespaces of
:data:`~storage_svc.objects.EXPIRING` (leases, idempotency records) ``task_retention_days``
after they were last written. API keys (``<prefix>_api_keys/``) are under the same prefix but
must live until revoked, and a lifecycle filter cannot exclude a prefix: so there is one rule per
expiring prefix rather than one for the whole task prefix. Rules are identified by their IDs
(``RULE_ID_PREFIX`` + the prefix they expire), so putting them is idempotent and leaves rules
that other tools keep on the same bucket untouched; the single whole-prefix rule of earlier
versions, which would expire the keys, is replaced.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import ClientError

from common import task_ids
from common.errors import Internal, NotFound
from storage_svc.objects import EXPIRING, namespace_prefix
from storage_svc.owners import OWNERS_FOLDER
from storage_svc.s3calls import S3Calls, error_code

logger = logging.getLogger(__name__)

RULE_ID_PREFIX = "wealth-ai-task-retention:"


def lifecycle_rule(prefix: str, days: int) -> dict[str, Any]:
    """The lifecycle rule expiring objects under ``prefix`` after ``days`` days."""
    return {
        "ID": RULE_ID_PREFIX + prefix,
        "Filter": {"Prefix": prefix},
        "Status": "Enabled",
        "Expiration": {"Days": days},
    }


def lifecycle_rules(prefix: str, days: int) -> list[dict[str, Any]]:
    """Our rules for the task ``prefix``: one per prefix that expires after ``days`` days."""
    expiring = [prefix + task_ids.START, prefix + OWNERS_FOLDER]
    expiring += [namespace_prefix(prefix, ns) for ns in EXPIRING]
    return [lifecycle_rule(p, days) for p in expiring]


def _same_rule(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return (
        current.get("Status") == wanted["Status"]
        and current.get("Filter", {}).get("Prefix", current.get("Prefix"))
        == wanted["Filter"]["Prefix"]
        and current.get("Expiration", {}).get("Days") == wanted["Expiration"]["Days"]
        and not current.get("Transitions")
    )


async def ensure_bucket(s3: S3Calls, prefix: str, days: int, *, create: bool) -> None:
    """Creates the bucket if it is missing (when ``create``) and puts the retention rule."""
    bucket = s3.bucket
    client = s3.client
    try:
        await s3.call("HeadBucket", lambda: client.head_bucket(Bucket=bucket))
        logger.info("bucket %s exists", bucket)
    except NotFound:
        if not create:
            raise Internal(
                f"bucket {bucket} does not exist and STORAGE_CREATE_BUCKET is false"
            ) from None
        await _create_bucket(s3)

    wanted = lifecycle_rules(prefix, days)
    # Ours: the rules we want, and the whole-prefix rule earlier versions put.
    our_ids = {rule["ID"] for rule in wanted} | {RULE_ID_PREFIX + prefix}

    async def get_rules() -> list[dict[str, Any]]:
        answer = await client.get_bucket_lifecycle_configuration(Bucket=bucket)
        return list(answer.get("Rules", []))

    try:
        rules = await s3.call("GetBucketLifecycleConfiguration", get_rules)
    except NotFound:
        rules = []
    ours = {rule.get("ID"): rule for rule in rules if rule.get("ID") in our_ids}
    if len(ours) == len(wanted) and all(
        rule["ID"] in ours and _same_rule(ours[rule["ID"]], rule) for rule in wanted
    ):
        logger.info(
            "bucket %s: lifecycle rules already expire %s after %d days",
            bucket,
            ", ".join(rule["Filter"]["Prefix"] + "*" for rule in wanted),
            days,
        )
        return
    others = [rule for rule in rules if rule.get("ID") not in our_ids]
    await s3.call(
        "PutBucketLifecycleConfiguration",
        lambda: client.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": [*others, *wanted]}
        ),
    )
    logger.info(
        "bucket %s: lifecycle rules %s: objects under %s expire after %d days "
        "(%d other rule(s) kept)",
        bucket,
        "updated" if ours else "added",
        ", ".join(rule["Filter"]["Prefix"] for rule in wanted),
        days,
        len(others),
    )


async def _create_bucket(s3: S3Calls) -> None:
    bucket = s3.bucket
    region = s3.settings.s3_region
    client = s3.client
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        # us-east-1 is the one region S3 refuses as an explicit location constraint.
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}

    async def create() -> bool:
        try:
            await client.create_bucket(**kwargs)
        except ClientError as exc:
            # Another replica starting at the same moment created it first.
            if error_code(exc) == "BucketAlreadyOwnedByYou":
                return False
            if error_code(exc) == "BucketAlreadyExists":
                raise Internal(
                    f"bucket name {bucket} is taken by another AWS account; "
                    "choose another STORAGE_S3_BUCKET"
                ) from None
            raise
        return True

    if await s3.call("CreateBucket", create):
        logger.info("bucket %s created in %s", bucket, region)
    else:
        logger.info("bucket %s was just created by another replica", bucket)
