"""Checks on the two locks: requirements.lock holds exactly the runtime dependencies (what the
image installs), requirements-dev.lock adds the test, lint and type-checking tools on top of it
without pinning anything twice."""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
# Test, lint and type-checking tools that must never reach the image.
DEV_TOOLS = {"pytest", "pytest-asyncio", "pytest-timeout", "moto", "mypy", "ruff"}


def _pins(lock: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / lock).read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_runtime_lock_holds_no_dev_tool() -> None:
    runtime = _pins("requirements.lock")
    assert not DEV_TOOLS & set(runtime)
    assert "kubernetes-validate" not in runtime


def test_runtime_lock_is_exactly_what_the_dependencies_need() -> None:
    """The closure of pyproject's dependencies, as installed from the locks: a package missing
    from the runtime lock would break the image, an extra one is a dev package that leaked."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    needed: set[str] = set()
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(r) for r in project["dependencies"]]
    while todo:
        req = todo.pop()
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if (req.marker and not req.marker.evaluate({"extra": ""})) or key in seen:
            continue
        seen.add(key)
        needed.add(key[0])
        for dep in importlib.metadata.requires(req.name) or []:
            sub = Requirement(dep)
            # A dependency counts when unconditional, or when one of the extras asked for
            # (aioboto3 needs aiobotocore[boto3]) switches it on.
            if sub.marker is None or any(
                sub.marker.evaluate({"extra": extra}) for extra in ("", *req.extras)
            ):
                sub.marker = None
                todo.append(sub)
    assert set(_pins("requirements.lock")) == needed


def test_dev_lock_adds_to_the_runtime_lock_without_repinning_it() -> None:
    text = (ROOT / "requirements-dev.lock").read_text()
    assert "-r requirements.lock" in text.splitlines()
    dev = _pins("requirements-dev.lock")
    assert not set(dev) & set(_pins("requirements.lock"))
    assert DEV_TOOLS | {"kubernetes-validate"} <= set(dev)
