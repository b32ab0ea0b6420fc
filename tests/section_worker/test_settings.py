"""WorkerSettings: the platform URL is read from the seed's BASE_URL too."""

from __future__ import annotations

import os

import pytest

from common.settings import load_settings
from section_worker.settings import WorkerSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("WORKER_") or var == "BASE_URL":
            monkeypatch.delenv(var)


def test_base_url_is_read_and_the_prefixed_name_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    assert WorkerSettings().platform_url == "http://127.0.0.1:8100"
    monkeypatch.setenv("BASE_URL", "https://platform.example.com/")
    assert WorkerSettings().platform_url == "https://platform.example.com"
    monkeypatch.setenv("WORKER_PLATFORM_URL", "http://10.0.0.7:8100")
    assert WorkerSettings().platform_url == "http://10.0.0.7:8100"


def test_a_bad_base_url_stops_start_up_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASE_URL", "platform.example.com")
    with pytest.raises(SystemExit) as stopped:
        load_settings(WorkerSettings)
    assert "\n  BASE_URL: " in str(stopped.value.code)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("memcached://x:1", "must be memory:// or redis://"),
        ("redis://", "must be memory:// or redis://"),
        ("redis://:hunter2@cache:6379/0", "WORKER_LIMITS_PASSWORD_FILE"),
    ],
)
def test_a_bad_limits_url_stops_start_up_without_echoing_a_password(
    monkeypatch: pytest.MonkeyPatch, url: str, problem: str
) -> None:
    monkeypatch.setenv("WORKER_LIMITS_URL", url)
    with pytest.raises(SystemExit) as stopped:
        load_settings(WorkerSettings)
    assert problem in str(stopped.value.code)
    assert "hunter2" not in str(stopped.value.code)


def test_the_limits_password_comes_from_its_file(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    secret = tmp_path / "redis-password"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("WORKER_LIMITS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("WORKER_LIMITS_PASSWORD_FILE", str(secret))
    settings = WorkerSettings()
    assert settings.limits_password() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert WorkerSettings(limits_password_file=None).limits_password() is None
    with pytest.raises(ValueError, match="WORKER_LIMITS_PASSWORD_FILE"):
        WorkerSettings(limits_password_file=tmp_path / "missing").limits_password()


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"WORKER_POLL_INITIAL_S": "3", "WORKER_POLL_MAX_S": "2"}, "poll_initial_s must not"),
        ({"WORKER_POLL_MIN_SAMPLES": "50", "WORKER_POLL_WINDOW": "40"}, "poll_min_samples must"),
        ({"WORKER_POLL_SHARE_S": "0"}, "WORKER_POLL_SHARE_S"),
    ],
)
def test_a_poll_setting_out_of_range_stops_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], problem: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        load_settings(WorkerSettings)
    assert problem in str(stopped.value.code)


def test_the_default_holds_a_thousand_waiting_jobs() -> None:
    assert WorkerSettings().max_concurrent_jobs >= 1000


def test_a_bad_config_file_is_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "config.json"
    bad.write_text('{"sections": {"s": {"fields": ["x"]}}}')
    with pytest.raises(ValueError, match="give asset_id or assets"):
        WorkerSettings(config_path=bad).platform_config()
