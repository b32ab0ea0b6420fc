"""StorageSettings: defaults, environment variables and the checks that stop start-up."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from common.settings import load_settings
from storage_svc.settings import StorageSettings

SEED_NAMES = ("S3_BUCKET_NAME", "S3_PREFIX", "AWS_REGION")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for var in list(os.environ):
        if var.startswith("STORAGE_") or var in (*SEED_NAMES, "TASK_RETENTION_DAYS"):
            monkeypatch.delenv(var)


def test_defaults() -> None:
    s = StorageSettings()
    assert (s.port, s.s3_bucket, s.s3_prefix) == (50051, "wealth-ai-tasks", "tasks/")
    assert (s.s3_endpoint_url, s.s3_region, s.task_retention_days) == (None, "us-east-1", 30)
    assert s.create_bucket is True
    assert s.list_scan_limit == 200


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_S3_BUCKET", "my.bucket-1")
    monkeypatch.setenv("STORAGE_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("STORAGE_PORT", "6000")
    monkeypatch.setenv("TASK_RETENTION_DAYS", "12")
    s = StorageSettings()
    assert (s.s3_bucket, s.s3_endpoint_url, s.port) == (
        "my.bucket-1",
        "http://127.0.0.1:9000",
        6000,
    )
    assert s.task_retention_days == 12

    monkeypatch.setenv("STORAGE_TASK_RETENTION_DAYS", "5")
    assert StorageSettings().task_retention_days == 5


def test_the_seeds_names_are_read_and_the_prefixed_names_win(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("S3_BUCKET_NAME", "seed-bucket")
    monkeypatch.setenv("S3_PREFIX", "seed/")
    monkeypatch.setenv("AWS_REGION", "eu-west-3")
    s = StorageSettings()
    assert (s.s3_bucket, s.s3_prefix, s.s3_region) == ("seed-bucket", "seed/", "eu-west-3")

    monkeypatch.setenv("STORAGE_S3_BUCKET", "own-bucket")
    monkeypatch.setenv("STORAGE_S3_PREFIX", "own/")
    monkeypatch.setenv("STORAGE_S3_REGION", "us-west-2")
    s = StorageSettings()
    assert (s.s3_bucket, s.s3_prefix, s.s3_region) == ("own-bucket", "own/", "us-west-2")


def test_empty_endpoint_means_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_S3_ENDPOINT_URL", "")
    assert StorageSettings().s3_endpoint_url is None


@pytest.mark.parametrize(
    "bucket", ["ab", "a" * 64, "Upper", "-dash", "dash-", "under_score", "a..b", "192.168.1.1"]
)
def test_invalid_bucket_names_are_refused(bucket: str) -> None:
    with pytest.raises(ValidationError, match="valid S3 bucket name"):
        StorageSettings(s3_bucket=bucket)


@pytest.mark.parametrize("prefix", ["tasks", "/tasks/", "a//b/", ""])
def test_prefix_must_end_with_a_slash(prefix: str) -> None:
    with pytest.raises(ValidationError, match="must end with '/'"):
        StorageSettings(s3_prefix=prefix)


def test_bad_environment_stops_start_up_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STORAGE_S3_PREFIX", "tasks")
    with pytest.raises(SystemExit) as stopped:
        load_settings(StorageSettings)
    assert "STORAGE_S3_PREFIX" in str(stopped.value.code)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("S3_PREFIX", "no-slash"), ("TASK_RETENTION_DAYS", "soon"), ("S3_BUCKET_NAME", "Bad")],
)
def test_a_bad_second_name_is_the_variable_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as stopped:
        load_settings(StorageSettings)
    message = str(stopped.value.code)
    assert f"\n  {variable}: " in message
    assert "STORAGE_" not in message
