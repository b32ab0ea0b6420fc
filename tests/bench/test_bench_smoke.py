"""The performance benchmark in miniature: every figure and every target is produced.

Timings are not asserted (this machine may be busy); what is asserted is that the harness
measures: each figure is present and of a sane kind, the counts add up, and the S3 requests
and platform calls were really counted."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.perf import main
from bench.s3count import KEY_KINDS, OPS, classify
from bench.targets import TARGETS

pytestmark = pytest.mark.e2e

SERVICES = {"gateway", "orchestrator-1", "storage", "worker-1", "worker-2"}


def dist(figure: dict[str, Any], n: int | None = None) -> None:
    """A distribution figure: count, and p50 <= p99 when there are values."""
    assert set(figure) >= {"n", "p50", "p99"}
    if n is not None:
        assert figure["n"] == n
    assert figure["p50"] <= figure["p99"]


@pytest.mark.timeout(120)
def test_a_tiny_benchmark_reports_every_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--scenario", "smoke", "--tasks", "20", "--results-dir", str(tmp_path)])

    out = capsys.readouterr().out
    summary = json.loads(out)
    assert code == 0
    assert json.loads(Path(summary.pop("results_file")).read_text()) == summary
    assert {"node", "cpus", "platform"} <= set(summary["machine"])
    assert summary["scenario"] == "smoke"

    tasks = summary["tasks"]
    assert tasks["submitted"] == tasks["accepted"] == tasks["completed"] == 20
    assert tasks["result_not_terminal"] == 0
    assert summary["result_statuses"] == {"completed": 20}
    assert summary["tasks_per_s"] > 0
    assert isinstance(summary["errors"], list) and isinstance(summary["refusals"], list)
    dist(summary["submit_ms"], 20)
    dist(summary["elapsed_s"], 20)
    for part in ("total", "polling_added", "machinery"):
        dist(summary["overhead_ms"][part], 20)

    sections = summary["sections"]
    assert (sections["matched"], sections["unmatched"]) == (60, 0)
    dist(sections["sim_latency_s"], 60)
    dist(sections["polling_added_s"], 60)
    assert sections["polls"]["mean"] >= 1
    assert 1 <= sections["in_flight_peak"] <= 60
    polling = summary["polling"]
    assert polling["polls_per_section"] == sections["polls"]["mean"]
    assert polling["fixed_2s_polls_per_section"] >= 1
    dist(polling["fixed_2s_polling_added_s"], 60)
    assert polling["worker_schedule_polls_per_section"] >= 1
    dist(polling["worker_schedule_polling_added_s"], 60)

    s3 = summary["s3"]
    assert set(s3["requests"]) == set(KEY_KINDS)
    assert all(set(by_op) == set(OPS) for by_op in s3["requests"].values())
    assert s3["requests"]["task"]["PUT"] >= 20  # at least the submissions were counted
    assert s3["requests"]["lease"]["PUT"] >= 1  # a replica renews its lease every 3 s
    assert s3["writes_per_task"] >= 1
    assert s3["reads_per_task"] >= 0
    assert s3["task_reads_while_running"] >= 0
    assert s3["requests_per_s"] > 0
    assert s3["connections"] >= 1 and s3["requests_per_connection"] > 0
    assert set(s3["lease_per_s"]) == set(OPS)

    calls = summary["platform"]["calls_per_section"]
    assert calls["create"] >= 1 and calls["prompt"] >= 1 and calls["poll"] >= 1
    resources = summary["resources"]
    cpu = resources["cpu_ms_per_task"]
    assert set(cpu["by_service"]) == SERVICES
    assert cpu["services"] > 0 and cpu["s3"] > 0 and cpu["simulator"] > 0
    assert cpu["harness"]["clients"] > 0 and cpu["harness"]["s3_proxy"] > 0
    # Two workers share their limits through Redis.
    assert set(resources["peak_rss_mib"]) == SERVICES | {"s3", "simulator", "redis"}
    assert cpu["redis"] > 0
    assert all(mib > 10 for mib in resources["peak_rss_mib"].values())
    assert set(resources["rss_growth_mib"]["by_service"]) == SERVICES
    assert resources["cpu_busy_share"] > 0

    assert [t["target"] for t in summary["targets"]] == [t.text for t in TARGETS]
    for target in summary["targets"]:
        assert isinstance(target["value"], int | float), target
        assert isinstance(target["limit"], int | float), target
        assert isinstance(target["pass"], bool)
        assert all(value is not None for value in target["beside"].values()), target


@pytest.mark.parametrize(
    ("method", "target", "expected"),
    [
        ("PUT", "/b/tasks/task_20261127_ab.json", ("PUT", "task")),
        ("GET", "/b/tasks/task_20261127_ab.json?x-id=GetObject", ("GET", "task")),
        ("GET", "/b?list-type=2&prefix=tasks%2F_leases%2F&delimiter=%2F", ("LIST", "lease")),
        ("GET", "/b?list-type=2&prefix=tasks%2Ftask_20261127", ("LIST", "task")),
        ("PUT", "/b/tasks/_leases/orchestrator-1-ab12.json", ("PUT", "lease")),
        ("DELETE", "/b/tasks/_idempotency/u%2Fk.json", ("DELETE", "idempotency")),
        ("HEAD", "/b", ("HEAD", "other")),
        ("PUT", "/b?lifecycle", ("other", "other")),
    ],
)
def test_s3_requests_are_counted_by_operation_and_kind_of_key(
    method: str, target: str, expected: tuple[str, str]
) -> None:
    assert classify(method, target)[:2] == expected
