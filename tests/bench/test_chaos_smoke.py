"""The chaos run in miniature: every figure is reported (the never-pay-twice target too) and no
accepted task is lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.chaos import KINDS, main

pytestmark = pytest.mark.e2e

TINY = ["--baseline", "8", "--duration", "12", "--kill-every", "3", "--rate", "2"]
TINY += ["--latency", "0.3", "--workers", "2", "--drain", "30", "--patience", "20"]


@pytest.mark.timeout(110)
def test_a_short_chaos_run_loses_no_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*TINY, "--seed", "3", "--results-dir", str(tmp_path)])

    summary = json.loads(capsys.readouterr().out)
    written = json.loads(Path(summary["results_file"]).read_text())
    assert written["tasks"] == summary["tasks"]
    assert set(summary["kills"]) == {*KINDS, "total"}
    assert summary["kills"]["total"] >= 2
    tasks = summary["tasks"]
    assert tasks["accepted"] == tasks["submitted"] == 40
    assert tasks["completed"] + tasks["error"] + tasks["cancelled"] + tasks["lost"] == 40
    assert summary["sections"] == 3 * tasks["accepted"]
    assert summary["prompts_sent"] >= tasks["completed"] * 3
    assert summary["unmatched_sections"] == 0
    for phase in ("baseline", "chaos"):
        assert summary["elapsed_s"][phase]["n"] > 0
        assert summary["elapsed_s"][phase]["p50"] <= summary["elapsed_s"][phase]["p99"]
    assert isinstance(summary["elapsed_s"]["p99_delay_crashes_added"], float)
    assert {"node", "cpus", "platform"} <= set(summary["machine"])
    assert summary["tasks"]["lost"] == 0, (summary["lost"], summary.get("logs"))
    assert summary["duplicate_prompts"] == 0
    repeated = summary["repeated_prompts"]
    assert summary["targets"]["repeated_prompts"] == {
        "value": repeated,
        "limit": 0,
        "pass": repeated == 0,
    }
    assert sum(r["prompts"] - 1 for r in summary["repeated"]) == repeated  # few, all listed
    assert code == 0
