"""bench.provenance: the commit a benchmark measured, and whether the tree differed from it
(result files aside), on a real git repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.provenance import code_version


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=root,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    _git(tmp_path, "init", "-q")
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "first")
    return tmp_path


def test_a_clean_tree_names_its_commit(repo: Path) -> None:
    assert code_version(repo) == {"commit": _git(repo, "rev-parse", "HEAD"), "dirty": False}


def test_result_files_do_not_make_the_tree_dirty(repo: Path) -> None:
    (repo / "bench" / "results" / "peers-steady-20261203T000000Z.json").write_text("{}")
    assert code_version(repo)["dirty"] is False


@pytest.mark.parametrize("change", ["edit", "new file"])
def test_any_other_change_does(repo: Path, change: str) -> None:
    if change == "edit":
        (repo / "code.py").write_text("x = 2\n")
    else:
        (repo / "bench" / "new.py").write_text("")
    assert code_version(repo)["dirty"] is True


def test_outside_a_repository_nothing_is_claimed(tmp_path: Path) -> None:
    assert code_version(tmp_path) == {"commit": "", "dirty": False}
