"""The files' settings of storage_svc: defaults, the platform-wide retention knob, the checks."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from storage_svc.settings import StorageSettings

MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("STORAGE_") or var in ("FILE_RETENTION_HOURS", "S3_PREFIX"):
            monkeypatch.delenv(var)


def test_defaults() -> None:
    s = StorageSettings()
    assert (s.files_prefix, s.file_retention_hours, s.file_max_bytes) == ("files/", 24.0, 1024**3)
    assert (s.file_part_bytes, s.file_download_chunk_bytes) == (8 * MIB, MIB)
    assert (s.presign_default_s, s.presign_max_s, s.cors_origins) == (900, 3600, [])


def test_retention_comes_from_the_platform_knob_and_the_prefixed_name_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FILE_RETENTION_HOURS", "2.5")
    assert StorageSettings().file_retention_hours == 2.5
    monkeypatch.setenv("STORAGE_FILE_RETENTION_HOURS", "48")
    assert StorageSettings().file_retention_hours == 48


def test_cors_origins_are_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "STORAGE_CORS_ORIGINS", '["https://app.example.com", "http://localhost:3000"]'
    )
    assert StorageSettings().cors_origins == ["https://app.example.com", "http://localhost:3000"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"files_prefix": "tasks/files/"}, "must not contain one another"),
        ({"files_prefix": "files"}, "must end with '/'"),
        ({"file_part_bytes": 4 * MIB}, "greater than or equal to 5242880"),
        ({"file_max_bytes": 10_001 * 8 * MIB}, "exceeds 10,000 parts"),
        ({"presign_default_s": 7200}, "PRESIGN_DEFAULT_S exceeds"),
        ({"presign_max_s": 700_000}, "less than or equal to 604800"),
        ({"file_retention_hours": 0}, "greater than 0"),
        ({"cors_origins": ["app.example.com"]}, "is not an origin"),
    ],
)
def test_bad_file_settings_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        StorageSettings(**fields)  # type: ignore[arg-type]
