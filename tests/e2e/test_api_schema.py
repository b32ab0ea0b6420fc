"""The REST API against its own OpenAPI schema, every service a real process: schemathesis
generates requests from /openapi.json (examples, coverage, fuzzing and stateful phases, every
check) and finds no server error, no undocumented status code or content type, and no
schema-valid request refused (tests/e2e/schemathesis.toml says the one refusal JSON Schema
cannot describe)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.devstack import Stack

pytestmark = pytest.mark.e2e

CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.mark.timeout(300)
def test_the_api_keeps_its_schema(stack: Stack, tmp_path: Path) -> None:
    run = subprocess.run(
        [
            str(SCHEMATHESIS),
            "--config-file",
            str(CONFIG),
            "run",
            f"http://127.0.0.1:{stack.ports.gateway}/openapi.json",
            "--header",
            f"Authorization: Bearer {stack.admin_key}",
            "--checks",
            "all",
            "--max-examples",
            "20",
            "--workers",
            "1",
            "--seed",
            "1",
            "--wait-for-schema",
            "30",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=tmp_path,
        check=False,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-6000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", report)
    assert counts is not None, report[-3000:]
    generated, passed = map(int, counts.groups())
    assert generated >= 200 and passed == generated, report[-3000:]
