"""The platform beside a peer: ratios and targets read from two summaries."""

from __future__ import annotations

from typing import Any

from bench.peers.verdict import (
    FIGURES,
    PEER,
    PLATFORM,
    TARGETS,
    check,
    ratio,
    ratios,
    render_ratios,
    render_targets,
)


def summary(**figures: Any) -> dict[str, Any]:
    """A summary holding ``figures`` at their dotted paths (``__`` for the dots)."""
    out: dict[str, Any] = {}
    for name, value in figures.items():
        *parents, leaf = name.split("__")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def test_ratio_is_ours_over_theirs_when_both_are_numbers() -> None:
    assert ratio(3, 2) == 1.5
    assert ratio(1, 3) == 0.333
    assert ratio(0, 5) == 0.0
    assert ratio(5, 0) is None
    assert ratio(None, 5) is None
    assert ratio(5, "x") is None
    assert ratio(True, 1) is None


def test_ratios_line_up_every_figure_of_both_sides() -> None:
    ours = summary(tasks_per_s=30.0, submit_ms__p99=20.0)
    theirs = summary(tasks_per_s=15.0, submit_ms__p99=80.0)
    rows = ratios({PLATFORM: ours, PEER: theirs})
    assert [row["path"] for row in rows] == [path for _, path in FIGURES]
    by_path = {row["path"]: row for row in rows}
    assert by_path["tasks_per_s"] == {
        "figure": "tasks/s",
        "path": "tasks_per_s",
        PLATFORM: 30.0,
        PEER: 15.0,
        "ratio": 2.0,
    }
    assert by_path["submit_ms.p99"]["ratio"] == 0.25
    assert by_path["overhead_ms.total.p99"]["ratio"] is None  # in neither summary


def verdicts(ours: dict[str, Any], theirs: dict[str, Any], group: str) -> dict[str, bool]:
    return {
        line["target"]: line["pass"] for line in check({PLATFORM: ours, PEER: theirs}, (group,))
    }


def test_saturation_needs_twice_the_peers_rate_fast_submits_and_little_cpu() -> None:
    theirs = summary(tasks_per_s=10.0)
    good = summary(
        tasks_per_s=20.0, submit_ms__p99=250.0, resources__cpu_ms_per_task__services=40.0
    )
    assert all(verdicts(good, theirs, "saturation").values())
    bad = summary(tasks_per_s=19.9, submit_ms__p99=251.0, resources__cpu_ms_per_task__services=41)
    assert not any(verdicts(bad, theirs, "saturation").values())


def test_steady_compares_overhead_and_polling_with_the_peer() -> None:
    theirs = summary(
        overhead_ms__total__p99=2000.0,
        polling__polls_per_section=10.0,
        polling__polling_added_s__p50=1.0,
    )
    good = summary(
        tasks__completed=100,
        tasks__submitted=100,
        overhead_ms__total__p99=1000.0,
        overhead_ms__machinery__p99=250.0,
        submit_ms__p99=50.0,
        polling__polls_per_section=6.0,
        polling__polling_added_s__p50=1.0,
    )
    assert all(verdicts(good, theirs, "steady").values())
    bad = summary(
        tasks__completed=99,
        tasks__submitted=100,
        overhead_ms__total__p99=1000.1,
        overhead_ms__machinery__p99=251.0,
        submit_ms__p99=50.1,
        polling__polls_per_section=6.1,
        polling__polling_added_s__p50=1.01,
    )
    result = verdicts(bad, theirs, "steady")
    assert len(result) == 6 and not any(result.values())


def test_burst_needs_no_more_overhead_nor_polls_than_the_peer() -> None:
    theirs = summary(overhead_ms__total__p99=5200.0, polling__polls_per_section=4.32)
    same = summary(overhead_ms__total__p99=5200.0, polling__polls_per_section=4.32)
    assert verdicts(same, theirs, "burst") == {
        "overhead p99 <= the peer's (fresh stack)": True,
        "polls per section <= 1.0x the fixed 2-s peer's (fresh stack)": True,
    }
    worse = summary(overhead_ms__total__p99=5201.0, polling__polls_per_section=7.09)
    assert not any(verdicts(worse, theirs, "burst").values())


def test_long_run_memory_and_the_standin_of_each_side() -> None:
    assert verdicts(summary(resources__rss_growth_mib__services=150), {}, "long") == {
        "RSS growth over our own services <= 150 MiB": True
    }
    lines = check(
        {
            PLATFORM: summary(standin__cpu_ms_per_request=0.2),
            PEER: summary(standin__cpu_ms_per_request=0.31),
        },
        ("standin",),
    )
    assert [(line["side"], line["pass"]) for line in lines] == [(PLATFORM, True), (PEER, False)]


def test_a_missing_figure_or_limit_fails_its_target() -> None:
    lines = check({PLATFORM: summary(tasks_per_s=50.0), PEER: {}}, ("saturation",))
    rate = next(line for line in lines if line["figure"] == "tasks_per_s")
    assert (rate["value"], rate["limit"], rate["pass"]) == (50.0, None, False)
    submit = next(line for line in lines if line["figure"] == "submit_ms.p99")
    assert (submit["value"], submit["pass"]) == (None, False)


def test_every_group_has_its_targets() -> None:
    groups = {target.group for target in TARGETS}
    assert groups == {"saturation", "burst", "steady", "long", "standin"}
    assert len(check({PLATFORM: {}, PEER: {}}, tuple(groups))) == len(TARGETS)


def test_the_tables_show_values_ratios_and_verdicts() -> None:
    rows = ratios(
        {
            PLATFORM: summary(tasks_per_s=25.9, submit_ms__p99=2734.0),
            PEER: summary(tasks_per_s=16.9, submit_ms__p99=1633.0),
        }
    )
    table = render_ratios(rows, "celery").splitlines()
    assert table[0].split() == ["figure", "platform", "celery", "platform/celery"]
    assert len(table) == 1 + len(FIGURES)
    rate = next(line for line in table if line.strip().startswith("tasks/s"))
    assert rate.split()[-3:] == ["25.9", "16.9", "1.533"]
    submit = next(line for line in table if line.strip().startswith("submit p99"))
    assert submit.split()[-3:] == ["2,734", "1,633", "1.674"]
    missing = next(line for line in table if line.strip().startswith("elapsed p50"))
    assert missing.split()[-3:] == ["-", "-", "-"]

    lines = check(
        {PLATFORM: summary(tasks_per_s=25.9), PEER: summary(tasks_per_s=16.9)}, ("saturation",)
    )
    text = render_targets(lines).splitlines()
    assert text[0] == "  FAIL  tasks/s >= 2x the peer's: 25.9 (limit 33.8)"
    assert text[1] == "  FAIL  submit p99 <= 250 ms: - (limit 250)"
