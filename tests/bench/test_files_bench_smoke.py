"""The file benchmark in miniature: every figure is produced and every transfer verified.

Throughput and memory are not asserted (this machine may be busy and the files are small);
what is asserted is that the harness measures: both directions, both paths, the ratios and the
memory of both services, and bytes that arrive intact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.files import main

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(180)
def test_a_tiny_file_benchmark_reports_every_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sizes = ["--size-mb", "9", "--concurrent", "2", "--concurrent-mb", "2"]
    code = main([*sizes, "--results-dir", str(tmp_path)])

    summary = json.loads(capsys.readouterr().out)
    assert code == (0 if summary["ok"] else 1)
    single = summary["single"]
    for figure in (single["direct_mb_s"], single["gateway_mb_s"]):
        assert set(figure) == {"upload", "download"} and min(figure.values()) > 0
    assert single["ratio"]["upload"] > 0 and single["ratio"]["download"] > 0
    for phase in ("upload", "download"):
        assert set(single["memory_growth_mib"][phase]) == {"gateway", "storage"}
    assert set(summary["concurrent"]["memory_growth_mib"]) == {"gateway", "storage"}
    intact = [t for t in summary["targets"] if t["name"].startswith("bytes intact")]
    assert len(intact) == 4 and all(t["pass"] for t in intact)
    assert Path(summary["results_file"]).parent == tmp_path
    assert json.loads(Path(summary["results_file"]).read_text())["single"] == single
