"""Checks on what goes into the image: a multi-stage build installing the runtime lock only,
a build context free of env files and secrets, and the entry point that turns secret files
into the environment variables the settings read."""

from __future__ import annotations

import fnmatch
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions, one list per stage (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_image_is_built_in_stages_and_installs_only_the_runtime_lock() -> None:
    stages = _stages()
    assert len(stages) >= 2
    build, final = stages[0], stages[-1]
    installs = [line for stage in stages for line in stage if "pip install" in line]
    assert installs and all("-r requirements.lock" in line for line in installs), installs
    assert not any("requirements-dev.lock" in line for stage in stages for line in stage)
    assert "COPY requirements.lock ./" in build
    # The final stage installs nothing: it takes the build stage's virtualenv as it is.
    assert not any(line.startswith("RUN") and "pip" in line for line in final)
    assert any(line.startswith("COPY --from=build /opt/venv") for line in final)
    assert any(line.startswith("USER 10001") for line in final)


def test_build_context_leaves_out_env_files_and_secrets() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in (".env", ".env.example", ".env.production", "secrets", ".venv", ".venv-deploy"):
        assert any(fnmatch.fnmatch(path, p) for p in patterns), f"{path} reaches the build"


def test_entrypoint_reads_secret_files_into_the_environment(tmp_path: Path) -> None:
    key = tmp_path / "credential-key"
    key.write_text("c2VjcmV0\n")
    env = {"PATH": os.environ["PATH"], "ORCH_CREDENTIAL_KEY_FILE": str(key)}
    shown = subprocess.run(
        ["sh", str(ROOT / "deploy" / "entrypoint.sh"), "sh", "-c", "env"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.splitlines()
    assert "ORCH_CREDENTIAL_KEY=c2VjcmV0" in shown
    assert not any(line.startswith("ORCH_CREDENTIAL_KEY_FILE=") for line in shown)


def test_entrypoint_stops_on_a_missing_secret_file(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "ORCH_CREDENTIAL_KEY_FILE": str(tmp_path / "absent")}
    proc = subprocess.run(
        ["sh", str(ROOT / "deploy" / "entrypoint.sh"), "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert proc.returncode != 0
    assert "ORCH_CREDENTIAL_KEY_FILE" in proc.stderr
