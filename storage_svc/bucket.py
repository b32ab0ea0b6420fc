"""Start-up preparation of the bucket: create it if missing and keep our lifecycle rules in place.

The rules expire task documents (``<prefix>task_…``), the owner index's markers
(``<prefix>_owners/``) and the namespaces of
:data:`~storage_svc.objects.EXPIRING` (leases, idempotency records) ``task_retention_days``
after they were last written. API keys (``<prefix>_api_keys/``) are under the same prefix but
must live until revoked, and a lifecycle filter cannot exclude a prefix: so there is one rule per
expiring prefix rather than one for the whole task prefix. Rules are identified by their IDs
(``RULE_ID_PREFIX`` + the prefix they expire), so putting them is idempotent and leaves rules
that other tools keep on the same bucket untouched; the single whole-prefix rule of earlier
versions, which would expire the keys, is replaced. The files get two more (:func:`file_rules`,
put by :func:`ensure_rules`) and, when origins are configured, a CORS rule (:func:`ensure_cors`),
each identified by its ID in the same way.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection
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

    # Ours besides: the whole-prefix rule earlier versions put, which would expire the keys.
    await ensure_rules(s3, lifecycle_rules(prefix, days), retired={RULE_ID_PREFIX + prefix})


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


FILE_RULE_ID_PREFIX = "wealth-ai-file-retention:"
ABORT_RULE_ID_PREFIX = "wealth-ai-abort-multipart:"
CORS_RULE_ID = "wealth-ai-direct-upload"


def file_rules(prefix: str, hours: float) -> list[dict[str, Any]]:
    """The lifecycle rules of the files under ``prefix``: expiry after ``hours`` rounded up to
    S3's whole days (reads and the sweeper enforce the hours exactly), and parts of multipart
    uploads nobody completed or aborted removed a day after the upload started."""
    return [
        {
            "ID": FILE_RULE_ID_PREFIX + prefix,
            "Filter": {"Prefix": prefix},
            "Status": "Enabled",
            "Expiration": {"Days": max(1, math.ceil(hours / 24))},
        },
        {
            "ID": ABORT_RULE_ID_PREFIX + prefix,
            "Filter": {"Prefix": prefix},
            "Status": "Enabled",
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        },
    ]


def _holds(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether a rule S3 returned says what ``wanted`` says (S3 may add empty fields)."""
    return all(current.get(field) == value for field, value in wanted.items())


async def ensure_rules(
    s3: S3Calls, wanted: list[dict[str, Any]], *, retired: Collection[str] = ()
) -> None:
    """Puts the lifecycle rules ``wanted`` (identified by their IDs) and takes the ``retired``
    ones away, keeping every other rule."""
    bucket = s3.bucket
    client = s3.client

    async def get_rules() -> list[dict[str, Any]]:
        answer = await client.get_bucket_lifecycle_configuration(Bucket=bucket)
        return list(answer.get("Rules", []))

    try:
        rules = await s3.call("GetBucketLifecycleConfiguration", get_rules)
    except NotFound:
        rules = []
    current = {rule.get("ID"): rule for rule in rules}
    if not current.keys() & set(retired) and all(
        rule["ID"] in current and _holds(current[rule["ID"]], rule) for rule in wanted
    ):
        logger.info("bucket %s: lifecycle rules %s in place", bucket, [r["ID"] for r in wanted])
        return
    ids = {rule["ID"] for rule in wanted}
    others = [rule for rule in rules if rule.get("ID") not in ids | set(retired)]
    await s3.call(
        "PutBucketLifecycleConfiguration",
        lambda: client.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": [*others, *wanted]}
        ),
    )
    logger.info(
        "bucket %s: lifecycle rules %s put (%d other rule(s) kept)",
        bucket,
        sorted(ids),
        len(others),
    )


def cors_rule(origins: list[str]) -> dict[str, Any]:
    """The CORS rule letting browsers at ``origins`` GET and PUT files with pre-signed URLs.

    Only the headers a pre-signed PUT signs may be sent, and ETag is exposed so a client can
    confirm its upload.
    """
    return {
        "ID": CORS_RULE_ID,
        "AllowedOrigins": list(origins),
        "AllowedMethods": ["GET", "HEAD", "PUT"],
        "AllowedHeaders": ["content-type", "x-amz-server-side-encryption", "x-amz-checksum-sha256"],
        "ExposeHeaders": ["ETag"],
        "MaxAgeSeconds": 3600,
    }


async def ensure_cors(s3: S3Calls, origins: list[str]) -> None:
    """Puts our CORS rule for ``origins``, or takes it away when there are none; other rules on
    the bucket stay."""
    bucket = s3.bucket
    client = s3.client

    async def get_rules() -> list[dict[str, Any]]:
        answer = await client.get_bucket_cors(Bucket=bucket)
        return list(answer.get("CORSRules", []))

    try:
        rules = await s3.call("GetBucketCors", get_rules)
    except NotFound:
        rules = []
    others = [rule for rule in rules if rule.get("ID") != CORS_RULE_ID]
    wanted = [cors_rule(origins)] if origins else []
    ours = [rule for rule in rules if rule.get("ID") == CORS_RULE_ID]
    if len(ours) == len(wanted) and all(map(_holds, ours, wanted)):
        return
    if others or wanted:
        await s3.call(
            "PutBucketCors",
            lambda: client.put_bucket_cors(
                Bucket=bucket, CORSConfiguration={"CORSRules": [*others, *wanted]}
            ),
        )
    else:
        await s3.call("DeleteBucketCors", lambda: client.delete_bucket_cors(Bucket=bucket))
    logger.info("bucket %s: CORS for direct uploads from %s", bucket, origins or "no origin")
