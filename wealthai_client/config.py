"""Where the client finds the gateway and its API key.

Each of the two comes from the first place that has it:

1. the argument (``Client(url=..., api_key=...)``, the command line's ``--url``);
2. the environment: ``WEALTHAI_URL``, ``WEALTHAI_API_KEY``;
3. the configuration file, ``$WEALTHAI_CONFIG`` or else ``~/.config/wealthai/config.toml``::

       url = "http://127.0.0.1:8000"
       api_key = "wak_3f9a1c0b7d42_..."

4. the URL defaults to ``http://127.0.0.1:8000`` (``make run``'s gateway); without a key the
   calls carry none (a gateway in ``GATEWAY_AUTH=open`` answers them).

A file named by ``WEALTHAI_CONFIG`` must exist; the default one may not. Everything is checked
here, before any call: a bad value is a :class:`ConfigError` naming where it came from, and
never showing the key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from wealthai_client.errors import BadInput

DEFAULT_URL = "http://127.0.0.1:8000"
ENV_URL = "WEALTHAI_URL"
ENV_API_KEY = "WEALTHAI_API_KEY"
ENV_CONFIG = "WEALTHAI_CONFIG"
DEFAULT_CONFIG = Path(".config", "wealthai", "config.toml")
_FILE_KEYS = {"url", "api_key"}


class ConfigError(BadInput):
    """The URL, the key or the configuration file is unusable; the message says which."""


@dataclass(frozen=True)
class Config:
    """Where the gateway is and the key to call it with (kept out of ``repr``)."""

    url: str
    api_key: str | None = field(default=None, repr=False)


def check_url(value: str, where: str) -> str:
    """An http(s) URL with a host and nothing after its path, without a trailing slash."""
    try:
        url = httpx.URL(value.strip())
    except httpx.InvalidURL as exc:
        raise ConfigError(f"{where}: not a URL ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"{where}: an http:// or https:// URL with a host, e.g. {DEFAULT_URL}")
    if url.userinfo:
        raise ConfigError(f"{where}: no credentials in the URL; the API key goes in {ENV_API_KEY}")
    if url.query or url.fragment:
        raise ConfigError(f"{where}: the gateway's base URL, without ?query or #fragment")
    return str(url).rstrip("/")


def check_api_key(value: str, where: str) -> str:
    """A key as an ``Authorization`` header can carry it: printable ASCII without spaces."""
    key = value.strip()
    if not key or not all("!" <= c <= "~" for c in key):
        raise ConfigError(f"{where}: an API key is printable ASCII without spaces")
    return key


def config_file(env: Mapping[str, str], home: Path) -> tuple[Path, bool]:
    """The configuration file to read, and whether it must exist."""
    named = env.get(ENV_CONFIG, "").strip()
    if named:
        return Path(named).expanduser(), True
    return home / DEFAULT_CONFIG, False


def read_file(path: Path, required: bool) -> dict[str, str]:
    """The ``url`` and ``api_key`` a configuration file sets (an absent optional file: none)."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{ENV_CONFIG}: {path} does not exist") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown settings {unknown}; it may set url and api_key")
    wrong = sorted(k for k, v in data.items() if not isinstance(v, str))
    if wrong:
        raise ConfigError(f"{path}: {', '.join(wrong)} must be a string")
    return {str(k): str(v) for k, v in data.items()}


def resolve(
    url: str | None = None,
    api_key: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Config:
    """The configuration from the arguments, the environment and the file, in that order.

    The file is read only when an argument or variable leaves something to find."""
    env = os.environ if env is None else env
    found_url = (url, "url") if url else (env.get(ENV_URL), ENV_URL)
    found_key = (api_key, "api_key") if api_key else (env.get(ENV_API_KEY), ENV_API_KEY)
    if not found_url[0] or not found_key[0]:
        path, required = config_file(env, Path.home() if home is None else home)
        from_file = read_file(path, required)
        if not found_url[0] and from_file.get("url"):
            found_url = (from_file["url"], f"{path}: url")
        if not found_key[0] and from_file.get("api_key"):
            found_key = (from_file["api_key"], f"{path}: api_key")
    base = check_url(found_url[0], found_url[1]) if found_url[0] else DEFAULT_URL
    key = check_api_key(found_key[0], found_key[1]) if found_key[0] else None
    return Config(url=base, api_key=key)
