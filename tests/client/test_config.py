"""Where the client finds the gateway and its key: every branch of the resolution order
(argument, environment, file, default) and of the checks on what it finds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wealthai_client.config import DEFAULT_URL, Config, ConfigError, resolve

KEY = "wak_0123456789ab_" + "s" * 43


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home folder whose default configuration file sets both values."""
    write(
        tmp_path / ".config" / "wealthai" / "config.toml",
        f'url = "http://file.example:8000"\napi_key = "{KEY}-file"\n',
    )
    return tmp_path


def test_arguments_come_first(home: Path) -> None:
    env = {"WEALTHAI_URL": "http://env.example", "WEALTHAI_API_KEY": "env-key"}
    found = resolve("http://arg.example/", "arg-key", env=env, home=home)
    assert found == Config("http://arg.example", "arg-key")


def test_the_environment_comes_before_the_file(home: Path) -> None:
    env = {"WEALTHAI_URL": "https://env.example/prefix/", "WEALTHAI_API_KEY": "env-key"}
    assert resolve(env=env, home=home) == Config("https://env.example/prefix", "env-key")


def test_the_default_file_fills_what_is_missing(home: Path) -> None:
    assert resolve(env={}, home=home) == Config("http://file.example:8000", f"{KEY}-file")
    assert resolve(env={"WEALTHAI_API_KEY": "env-key"}, home=home) == Config(
        "http://file.example:8000", "env-key"
    )
    assert resolve("http://arg.example", env={}, home=home).api_key == f"{KEY}-file"


def test_wealthai_config_names_the_file(home: Path, tmp_path: Path) -> None:
    named = write(tmp_path / "other.toml", 'url = "http://named.example"\n')
    found = resolve(env={"WEALTHAI_CONFIG": str(named)}, home=home)
    assert found == Config("http://named.example", None)  # the default file is not read then


def test_without_any_setting_the_url_is_make_runs_and_there_is_no_key(tmp_path: Path) -> None:
    assert resolve(env={}, home=tmp_path) == Config(DEFAULT_URL, None)


def test_a_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(env={"WEALTHAI_CONFIG": str(tmp_path / "absent.toml")}, home=tmp_path)


def test_the_file_is_not_read_when_nothing_is_missing(tmp_path: Path) -> None:
    env = {"WEALTHAI_CONFIG": str(tmp_path / "absent.toml")}
    assert resolve("http://a.example", "k", env=env, home=tmp_path) == Config(
        "http://a.example", "k"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("url = ", "not valid TOML"),
        ('url = "http://a.example"\ntoken = "x"\n', "unknown settings \\['token'\\]"),
        ("url = 8000\n", "url must be a string"),
    ],
)
def test_a_bad_file_is_refused_naming_it(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError, match=problem) as caught:
        resolve(env={"WEALTHAI_CONFIG": str(path)}, home=tmp_path)
    assert str(path) in str(caught.value)


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "a-folder.toml"
    folder.mkdir()
    with pytest.raises(ConfigError, match="cannot read it"):
        resolve(env={"WEALTHAI_CONFIG": str(folder)}, home=tmp_path)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://a.example", "http:// or https://"),
        ("http://", "http:// or https://"),
        ("a.example:8000", "http:// or https://"),
        ("http://user:secret@a.example", "no credentials in the URL"),
        ("http://a.example/?key=1", "without \\?query"),
        ("http://a.example/#top", "without \\?query"),
        ("http://[::1", "not a URL"),
    ],
)
def test_a_bad_url_is_refused_naming_where_it_came_from(
    tmp_path: Path, url: str, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem) as caught:
        resolve(env={"WEALTHAI_URL": url}, home=tmp_path)
    assert str(caught.value).startswith("WEALTHAI_URL:")
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize("key", ["wak_a b", "wak_\x00", "wak_é", " \t "])
def test_a_key_a_header_cannot_carry_is_refused_without_showing_it(
    tmp_path: Path, key: str
) -> None:
    path = write(tmp_path / "c.toml", f"api_key = {json.dumps(key)}\n")
    env = {"WEALTHAI_CONFIG": str(path)}
    with pytest.raises(ConfigError, match="printable ASCII") as caught:
        resolve(env=env, home=tmp_path)
    assert f"{path}: api_key" in str(caught.value)
    assert key not in str(caught.value)


def test_the_key_is_trimmed_and_kept_out_of_repr(tmp_path: Path) -> None:
    found = resolve(env={"WEALTHAI_API_KEY": f"  {KEY}\n"}, home=tmp_path)
    assert found.api_key == KEY
    assert KEY not in repr(found)
