"""The platform beside the Celery peer in miniature: both runs happen, on the same stand-in
latencies, and every figure, ratio and target is produced. Timings are not asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.peers.compare import main
from bench.peers.verdict import FIGURES, TARGETS

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(240)
def test_a_tiny_comparison_reports_every_figure_and_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--scenario", "smoke", "--results-dir", str(tmp_path)])

    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert code == 0
    assert json.loads(Path(summary.pop("results_file")).read_text()) == summary
    assert summary["scenario"] == "smoke"
    assert summary["s3_server"].startswith("SeaweedFS")
    assert summary["peer"]["name"] == "celery"

    runs = summary["runs"]
    assert set(runs) == {"platform", "celery"}
    for run in runs.values():
        assert run["tasks"]["submitted"] == run["tasks"]["completed"] == 10
        assert (run["sections"]["matched"], run["sections"]["unmatched"]) == (30, 0)
        assert run["standin"]["requests"] > 0 and run["standin"]["cpu_ms_per_request"] > 0
        assert run["s3"]["requests"]["task"]["PUT"] >= 10  # counted at the S3 endpoint
    assert {"gateway", "storage", "orchestrator-1", "worker-1"} <= set(
        runs["platform"]["resources"]["cpu_ms_per_task"]["by_service"]
    )
    assert set(runs["celery"]["resources"]["cpu_ms_per_task"]["by_service"]) == {"celery", "front"}
    # The same records went to both, so the stand-in drew the same latencies for both.
    assert (
        runs["platform"]["sections"]["sim_latency_s"] == runs["celery"]["sections"]["sim_latency_s"]
    )

    rows = {row["path"]: row for row in summary["ratios"]}
    assert list(rows) == [path for _, path in FIGURES]
    for row in rows.values():
        assert isinstance(row["platform"], int | float), row
        assert isinstance(row["peer"], int | float), row
    assert rows["tasks_per_s"]["ratio"] == round(
        rows["tasks_per_s"]["platform"] / rows["tasks_per_s"]["peer"], 3
    )

    assert len(summary["targets"]) == len(TARGETS)
    for line in summary["targets"]:
        assert line["value"] is not None and line["limit"] is not None, line
        assert isinstance(line["pass"], bool)
    assert "platform/celery" in captured.err
    assert captured.err.count("PASS") + captured.err.count("FAIL") >= len(TARGETS)
    assert "stand-in CPU" in captured.err
