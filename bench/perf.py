"""Performance benchmark: the whole platform under load through its REST gateway.

``python -m bench.perf --scenario a|b|c|d|all|smoke`` (``make bench``) starts every service on
free loopback ports (moto S3 in server mode behind a counting proxy, the AI simulator), drives
tasks through the gateway like real clients (submit, poll status, read result) and prints one
JSON summary per scenario on stdout, also written to ``bench/results/<scenario>-<UTC>.json``:
tasks/s, submit and elapsed percentiles, the overhead split (polling-added, machinery), S3
requests per task as counted at the S3 endpoint, platform calls per section, CPU per task and
memory per service, and every target of the issue next to its figure with pass/fail (also on
stderr, with progress lines). ``bench/README.md`` explains every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.clients import Load, Outcome, client_pair
from bench.figures import (
    client_figures,
    platform_figures,
    resource_figures,
    s3_figures,
    section_figures,
    standin_figures,
)
from bench.procstats import machine_busy, sample
from bench.provenance import code_version
from bench.scenarios import OVERRIDES, SCALE_OUT_WORKERS, SCENARIOS, Scenario, chosen
from bench.stack import BenchStack, Measured
from bench.targets import check, render
from orchestrator.settings import OrchestratorSettings
from scripts.devstack import ROOT

WARM_TASKS = 4  # the warm-up's tasks, sent within a second


def say(message: str) -> None:
    """A progress line on stderr, so stdout carries only the JSON summaries."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``--help`` lists every option)."""
    parser = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    for flag, (_, kind, text) in OVERRIDES.items():
        parser.add_argument(flag, type=kind, default=None, help=f"{text} (scenario's own)")
    parser.add_argument("--scale-out", default=",".join(map(str, SCALE_OUT_WORKERS)))
    parser.add_argument("--seed", type=int, default=1, help="simulator seed (%(default)s)")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--keep-logs", action="store_true", help="keep the service logs")
    return parser.parse_args(argv)


async def _progress(load: Load, total: int) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(10)
        done = sum(1 for t in load.outcomes if t.done_at is not None)
        at = time.monotonic() - started
        say(f"t+{at:.0f}s: {len(load.outcomes)}/{total} started, {done} done")


async def _get(http: httpx.AsyncClient, path: str) -> Any:
    return (await http.get(path)).raise_for_status().json()


async def measure(stack: Measured, sc: Scenario, run_id: str | None = None) -> dict[str, Any]:
    """Warm-up (unless ``sc.warm`` is off: a cold start), then the measured phase; returns the
    run's summary. ``run_id`` names the tasks' records (two runs with the same one send the
    same prompts).

    The warm-up's four tasks meet the scenario's own latencies: the workers learn from every
    answer they find, and answers quicker than the measured phase's would teach them a
    latency the measured phase does not have."""
    sim = httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.ports.simulator}", timeout=60)
    ctl = httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.control_port}", timeout=60)
    connections = max(16, min(sc.clients or 256, 256))
    submit_api, poll_api = client_pair(
        f"http://127.0.0.1:{stack.ports.gateway}", connections, stack.admin_key
    )
    run_id = run_id or f"{random.getrandbits(32):08x}"
    async with sim, ctl, submit_api, poll_api:
        knobs = {"latency_median_s": sc.latency, "latency_sigma": sc.sigma}
        (await sim.patch("/_sim/config", json=knobs)).raise_for_status()
        if sc.warm:
            warm = Load(submit_api, poll_api, f"warm-{run_id}", 0.5, time.monotonic() + 120)
            outcomes = await warm.open(WARM_TASKS, WARM_TASKS)
            if sum(t.status == "completed" for t in outcomes) < WARM_TASKS:
                raise RuntimeError(f"warm-up tasks did not complete: {warm.outcomes}")
        if sc.warm and sc.orchestrators > 1:
            # Replicas learn each other's leases (and so where a task runs) at each renewal.
            await asyncio.sleep(2 * OrchestratorSettings.model_fields["lease_renew_s"].default)
        (await ctl.post("/reset")).raise_for_status()
        sim_before = await _get(sim, "/_sim/stats")
        procs_before, own_before, cpu_before = sample(stack.pids()), os.times(), machine_busy()
        started = time.monotonic()
        load = Load(submit_api, poll_api, run_id, sc.client_poll, started + sc.limit_s())
        reporter = asyncio.create_task(_progress(load, sc.tasks))
        try:
            if sc.clients:
                outcomes = await load.closed(sc.clients, sc.tasks)
            else:
                outcomes = await load.open(sc.rate, sc.tasks)
        finally:
            reporter.cancel()
        seconds = time.monotonic() - started
        procs_after, own_after, cpu_after = sample(stack.pids()), os.times(), machine_busy()
        counts = await _get(ctl, "/counts")
        sim_after = await _get(sim, "/_sim/stats")
        timeline = await _get(sim, "/_sim/timeline")
    own = (own_after.user + own_after.system) - (own_before.user + own_before.system)
    summary: dict[str, Any] = {"duration_s": round(seconds, 1)}
    summary |= client_figures(outcomes, seconds)
    summary["completion_rate_per_s"] = completion_rate(outcomes)
    summary |= section_figures(outcomes, timeline)
    completed = summary["tasks"]["completed"]
    done = [t.task_id for t in outcomes if t.task_id and t.status == "completed"]
    summary["s3"] = s3_figures(counts, done, seconds)
    summary["platform"] = platform_figures(sim_before, sim_after, 3 * summary["tasks"]["accepted"])
    summary["resources"] = resource_figures(procs_before, procs_after, own, completed, seconds)
    busy, total = (after - before for after, before in zip(cpu_after, cpu_before, strict=True))
    summary["resources"]["machine_cpu_busy_share"] = round(busy / total, 3) if total else None
    if (standin := standin_figures(sim_before, sim_after)) is not None:
        summary["standin"] = standin
    return summary


def completion_rate(outcomes: list[Outcome]) -> float | None:
    """Tasks completed per second between the first completion and the last."""
    done = sorted(t.done_at for t in outcomes if t.done_at is not None and t.status == "completed")
    if len(done) < 2 or done[-1] == done[0]:
        return None
    return round((len(done) - 1) / (done[-1] - done[0]), 2)


def run_one(sc: Scenario, opts: argparse.Namespace) -> dict[str, Any]:
    """Starts a fresh stack for ``sc``, measures it, stops it; returns the summary."""
    base = Path(tempfile.mkdtemp(prefix=f"bench-{sc.key}-"))
    env = {"SIM_SEED": str(opts.seed), "WORKER_MAX_CONCURRENT_JOBS": str(sc.worker_cap)}
    stack = BenchStack(base, orchestrators=sc.orchestrators, workers=sc.workers, env=env)
    say(
        f"scenario {sc.key} ({sc.name}): {sc.tasks} tasks, "
        + (f"{sc.clients} clients" if sc.clients else f"{sc.rate:g}/s")
        + f", latency {sc.latency:g}s sigma {sc.sigma:g}, "
        + f"{sc.workers} worker(s) x {sc.worker_cap}, {sc.orchestrators} orchestrator(s); "
        + f"logs in {base / 'logs'}"
    )
    ok = False
    try:
        stack.start(timeout=60)
        summary = asyncio.run(measure(stack, sc))
        ok = True
    finally:
        stack.stop(grace=5)
        if ok and not opts.keep_logs:
            shutil.rmtree(base, ignore_errors=True)
    summary = {"scenario": sc.key, "name": sc.name, "config": dataclasses.asdict(sc)} | summary
    summary["targets"] = check(summary, sc.targets)
    say(
        f"scenario {sc.key} ({sc.name}) done in {summary['duration_s']}s\n"
        + render(summary["targets"])
    )
    return summary


def scale_out(sc: Scenario, opts: argparse.Namespace) -> dict[str, Any]:
    """Scenario c: the steady load once per worker count, each worker capped at
    ``worker_cap``; the capacity each replica adds, beside the ideal (cap / mean latency)."""
    runs = []
    mean_latency = sc.latency * 2.718281828459045 ** (sc.sigma**2 / 2)
    for workers in (int(n) for n in opts.scale_out.split(",")):
        runs.append(run_one(dataclasses.replace(sc, workers=workers), opts))
    capacity = [
        {
            "workers": run["config"]["workers"],
            "completed": run["tasks"]["completed"],
            "completion_rate_per_s": run["completion_rate_per_s"],
            "sections_in_flight_peak": run["sections"]["in_flight_peak"],
            "ideal_tasks_per_s": round(
                min(sc.rate, run["config"]["workers"] * sc.worker_cap / mean_latency / 3), 2
            ),
        }
        for run in runs
    ]
    return {"scenario": "c", "name": sc.name, "scale_out": capacity, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    """Runs the chosen scenarios; 0 when each produced its summary (targets do not decide)."""
    opts = parse_args(argv)
    return run_scenarios(
        (
            (sc.key, functools.partial(scale_out if sc.key == "c" else run_one, sc, opts))
            for sc in chosen(opts)
        ),
        opts.results_dir,
    )


def run_scenarios(
    runs: Iterable[tuple[str, Callable[[], dict[str, Any]]]], results_dir: Path
) -> int:
    """Runs each ``(name, run)`` in turn: its summary, stamped with the date, the machine and
    the commit, goes to ``results_dir/<name>-<UTC time>.json`` and to stdout. 130 on Ctrl-C,
    2 when a service did not start (its log says why), else 0."""
    machine = {"node": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform()}
    code = code_version()
    try:
        for name, run in runs:
            summary = run()
            now = datetime.now(UTC)
            header = {"date": now.isoformat(timespec="seconds"), "machine": machine, "code": code}
            summary = header | summary
            results_dir.mkdir(parents=True, exist_ok=True)
            path = results_dir / f"{name}-{now:%Y%m%dT%H%M%SZ}.json"
            path.write_text(json.dumps(summary, indent=2) + "\n")
            print(json.dumps(summary | {"results_file": str(path)}, indent=2), flush=True)
    except KeyboardInterrupt:
        say("interrupted; every service stopped")
        return 130
    except RuntimeError as exc:  # a service that did not start: see its log
        say(f"aborted: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
