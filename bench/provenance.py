"""Which code a benchmark measured: the commit, and whether the work tree differed from it.

Result files under ``bench/results/`` do not count as a difference: they are what the runs
write, and the second of two runs in a row would otherwise record the code as changed."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = "bench/results"


def code_version(root: Path = ROOT) -> dict[str, Any]:
    """``{"commit", "dirty"}`` of the repository at ``root``: HEAD, and whether anything but
    result files is changed or untracked ("" and False where git is not there)."""
    changed = _git(root, "status", "--porcelain", "--", ".", f":(exclude){RESULTS}")
    return {"commit": _git(root, "rev-parse", "HEAD"), "dirty": bool(changed)}


def _git(root: Path, *args: str) -> str:
    """Output of a git command in ``root`` ("" when git is not there or fails)."""
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""
