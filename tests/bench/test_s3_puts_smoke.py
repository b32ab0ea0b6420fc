"""The small-PUT benchmark in miniature: both ways write against a real, signature-checking
SeaweedFS and a CPU figure is printed for each (no figure is asserted: the machine may be
busy)."""

from __future__ import annotations

import re

import pytest

from bench.s3_puts import main
from scripts import seaweedfs

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(120)
def test_both_ways_of_putting_are_measured(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # main() sets SeaweedFS's credentials in the environment; these put the old ones back after.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.SECRET_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    main(["--puts", "20", "--runs", "1"])

    lines = capsys.readouterr().out.splitlines()
    figures = dict(re.findall(r"^(client|direct) +([0-9.]+) +\(run 1\)$", "\n".join(lines), re.M))
    assert set(figures) == {"client", "direct"}
    assert all(float(value) > 0 for value in figures.values())
