"""Chaos run: the whole platform under steady load while its service processes are killed -9.

``python -m bench.chaos`` (``make chaos``) starts every service on free loopback ports
(:class:`scripts.devstack.Stack`) and submits tasks through the REST gateway at a steady rate:
first a calm *baseline*, then a *chaos* phase in which a random orchestrator, worker, storage_svc
or gateway is killed -9 every few seconds and relaunched about a second later (never the S3
server or the simulator: they stand for AWS and the external platform). The S3 server is
SeaweedFS (``--s3 seaweedfs``, the default: atomic conditional writes, data on disk) or moto
(``--s3 moto``). It then waits for every accepted task
to finish and prints one JSON summary, also written to ``bench/results/``. The target (issue 11,
never pay twice) is that no section's prompt reaches the platform twice, crashes or not: it is
printed with PASS or FAIL. The exit code is 1 when a task was lost or a section's prompt was
sent again after the section had been stored as completed (SPEC §7, queue semantics); a
repeated prompt does not fail the run while windows the platform's contract leaves open remain
(``bench/README.md`` says which, and explains every figure).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from scripts.devstack import ROOT, S3_SERVERS, Ports, Stack
from simulator.state import input_digest

TERMINAL = {"completed", "error", "cancelled"}
RETRYABLE = {409, 429, 500, 502, 503, 504}  # 409: the key's first claim is still in flight
PASSWORD = "chaos-Pa55word"  # noqa: S105 - the simulator accepts any password
# The seed example of the e2e tests; record i feeds SECTIONS[i].
SEED: list[dict[str, Any]] = [
    {"Market Value": "12000000", "Investment Value": "11000000", "Top Asset": "Equity (65%)"},
    {"top_movers_data": "AAPL +3.2%, MSFT -1.1%, NVDA +5.4%"},
    {
        "total_portfolio_mv": 1000000,
        "customer_risk_profile": "moderate",
        "assets": [{"name": "Equity", "weight": 0.6}, {"name": "Bonds", "weight": 0.4}],
    },
]
SECTIONS = ("portfolio_snapshot", "top_movers", "model_and_rebalancing")
KINDS = ("orchestrator", "worker", "storage", "gateway")  # the processes that get killed
FIXED_ENV = {
    "WORKER_POLL_INITIAL_S": "0.1",
    "WORKER_POLL_MAX_S": "0.5",
    "ORCH_WORKER_REFRESH_S": "0.5",
    **{f"{svc}_SHUTDOWN_GRACE_S": "2" for svc in ("ORCH", "WORKER", "STORAGE", "GATEWAY")},
}
OPTIONS: list[tuple[str, Callable[[str], Any], Any, str]] = [
    ("--duration", float, 180, "chaos phase, seconds"),
    ("--baseline", float, 30, "calm phase before it (same load, no kills), seconds"),
    ("--rate", float, 2, "task submissions per second"),
    ("--kill-every", float, 4, "seconds from one kill to the next"),
    ("--jitter", float, 1, "± random part of --kill-every"),
    ("--down", float, 1, "seconds a killed process stays down, ±50%%"),
    ("--orchestrators", int, 2, "orchestrator replicas"),
    ("--workers", int, 3, "section worker replicas"),
    ("--latency", float, 1.5, "simulator: median time to answer one section, seconds"),
    ("--sigma", float, 0.5, "simulator: log-normal sigma of that time"),
    ("--lease-ttl", float, 3, "ORCH_LEASE_TTL_S: a replica silent this long is dead"),
    ("--lease-renew", float, 0.75, "ORCH_LEASE_RENEW_S"),
    ("--drain", float, 120, "longest wait for accepted tasks to finish, seconds"),
    ("--patience", float, 60, "longest retrying of one submission, seconds"),
    ("--seed", int, None, "seed of the kill choices and of the simulator"),
    ("--results-dir", Path, ROOT / "bench" / "results", "where the summary file goes"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``--help`` lists every option with its default)."""
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for flag, kind, default, text in OPTIONS:
        parser.add_argument(flag, type=kind, default=default, help=f"{text} (%(default)s)")
    parser.add_argument("--keep-logs", action="store_true", help="keep logs of a passing run")
    parser.add_argument(
        "--s3", choices=S3_SERVERS, default="seaweedfs", help="the S3 server (%(default)s)"
    )
    return parser.parse_args(argv)


def make_stack(opts: argparse.Namespace, base: Path) -> Stack:
    """The platform on free ports, tuned for fast failover, its state and logs under ``base``."""
    ports = Ports.free(workers=opts.workers, orchestrators=opts.orchestrators)
    env = FIXED_ENV | {
        "SIM_LATENCY_MEDIAN_S": str(opts.latency),
        "SIM_LATENCY_SIGMA": str(opts.sigma),
        "ORCH_LEASE_TTL_S": str(opts.lease_ttl),
        "ORCH_LEASE_RENEW_S": str(opts.lease_renew),
    }
    if opts.seed is not None:
        env["SIM_SEED"] = str(opts.seed)
    return Stack(
        ports,
        base / "state",
        log_dir=base / "logs",
        env=env,
        bucket="chaos-tasks",
        s3_server=opts.s3,
    )


def say(message: str) -> None:
    """A progress line on stderr, so stdout carries only the JSON summary."""
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Task:
    """One submission: its records (unique to it), its phase and what became of it."""

    seq: int
    phase: str
    records: list[dict[str, Any]]
    task_id: str | None = None  # set once a 202 came back for its idempotency key
    refused: str = ""  # the last failed submission attempt
    status: dict[str, Any] | None = None  # the terminal status, trace included
    last_seen: str = "never polled"
    elapsed: float | None = None  # the result's elapsed_seconds, for completed tasks


@dataclass
class Chaos:
    """One run against one stack: the load, the kills, and what was submitted."""

    stack: Stack
    opts: argparse.Namespace
    api: httpx.AsyncClient
    run_id: str = field(default_factory=lambda: f"{random.getrandbits(32):08x}")
    tasks: list[Task] = field(default_factory=list)

    async def submit(self, task: Task) -> None:
        """Submits until a 202 comes back, retrying outages with the same Idempotency-Key."""
        body = {"username": "chaos@example.com", "password": PASSWORD, "data": task.records}
        headers = {"Idempotency-Key": f"chaos-{self.run_id}-{task.seq}"}
        deadline, pause = time.monotonic() + self.opts.patience, 0.2
        while time.monotonic() < deadline:
            try:
                reply = await self.api.post("/task/submit", json=body, headers=headers)
            except httpx.TransportError as exc:
                task.refused = f"{type(exc).__name__}: {exc}"[:200]
            else:
                if reply.status_code == 202:
                    task.task_id = str(reply.json()["task_id"])
                    return
                task.refused = f"{reply.status_code}: {reply.text}"[:200]
                if reply.status_code not in RETRYABLE:
                    return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    async def load(self, phase: str, seconds: float) -> list[asyncio.Task[None]]:
        """One submission every 1/rate s for ``seconds``; returns them (some may still retry)."""
        started, submissions = time.monotonic(), []
        for n in range(int(seconds * self.opts.rate)):
            await asyncio.sleep(max(0.0, started + n / self.opts.rate - time.monotonic()))
            seq = len(self.tasks)
            # A per-task field makes every section's prompt input unique across the run.
            records = [{**record, "chaos_ref": f"{self.run_id}-{seq}"} for record in SEED]
            self.tasks.append(Task(seq, phase, records))
            submissions.append(asyncio.create_task(self.submit(self.tasks[-1])))
        await asyncio.sleep(max(0.0, started + seconds - time.monotonic()))
        return submissions

    async def kill_loop(self, pool: ThreadPoolExecutor, stop: asyncio.Event) -> list[str]:
        """Kills -9 and relaunches random service processes until ``stop``; returns the log.
        Kills are scheduled kill to kill; at most one process is down at a time."""
        loop, rng = asyncio.get_running_loop(), random.Random(self.opts.seed)
        started = next_kill = time.monotonic()
        victims = [name for name in self.stack.procs if name.split("-")[0] in KINDS]
        kills: list[str] = []
        while True:
            next_kill += max(0.1, self.opts.kill_every + rng.uniform(-1, 1) * self.opts.jitter)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_kill - time.monotonic()))
            if stop.is_set():  # checked apart: a zero timeout ends the wait before it looks
                return kills
            name = rng.choice(victims)
            kills.append(f"t+{time.monotonic() - started:.1f}s {name}")
            say(f"kill -9 {name}")
            # One long-lived thread relaunches: a child gets SIGTERM when the thread that started
            # it ends (PR_SET_PDEATHSIG in scripts/with_parent.py), so that thread must outlive it.
            await loop.run_in_executor(pool, self.stack.kill, name)
            await asyncio.sleep(self.opts.down * rng.uniform(0.5, 1.5))
            await loop.run_in_executor(pool, self.stack.launch, name)

    async def get(self, path: str) -> tuple[int, dict[str, Any]]:
        """(status code, body) of a GET through the gateway; (0, {}) when it is unreachable."""
        try:
            reply = await self.api.get(path)
        except httpx.TransportError:
            return 0, {}
        return reply.status_code, reply.json() if reply.status_code == 200 else {}

    async def wait_terminal(self) -> None:
        """Polls every accepted task until it is terminal (and, when completed, its result is
        read) or ``--drain`` seconds have passed."""
        deadline, limit = time.monotonic() + self.opts.drain, asyncio.Semaphore(16)

        async def poll(task: Task) -> None:
            async with limit:
                code, status = await self.get(f"/task/{task.task_id}/status")
                task.last_seen = status.get("status", f"HTTP {code}" if code else "unreachable")
                if task.last_seen == "completed":
                    code, result = await self.get(f"/task/{task.task_id}/result")
                    task.elapsed = result.get("elapsed_seconds")
                if task.last_seen in TERMINAL and code == 200:  # else polled again
                    task.status = status

        while pending := [t for t in self.tasks if t.task_id and t.status is None]:
            if time.monotonic() > deadline:
                return
            await asyncio.gather(*(poll(t) for t in pending))
            await asyncio.sleep(0.5)


def duplicates(tasks: list[Task], prompts: dict[str, list[str]]) -> tuple[int, int]:
    """(completed sections prompted again after their completion was stored, completed
    sections whose input the simulator never saw — non-zero means the digests do not match)."""
    config = json.loads((ROOT / "config.json").read_text())["sections"]
    again = unmatched = 0
    for task in tasks:
        stored: dict[str, datetime] = {}
        for entry in (task.status or {}).get("trace", []):
            name = entry["step"].removeprefix("3. Section ")
            if name != entry["step"] and entry["status"] == "completed":
                # The platform's trace times are naive UTC.
                stored.setdefault(name, datetime.fromisoformat(entry["at"]).replace(tzinfo=UTC))
        for name, at in stored.items():
            record = json.dumps(task.records[SECTIONS.index(name)])  # as the orchestrator sends it
            times = prompts.get(input_digest(config[name]["asset_id"], record), [])
            unmatched += not times
            again += any(datetime.fromisoformat(t) > at for t in times)
    return again, unmatched


def repeated_sections(tasks: list[Task], by_input: dict[str, int]) -> list[dict[str, Any]]:
    """The sections whose input reached the platform more than once: task, section, prompts."""
    config = json.loads((ROOT / "config.json").read_text())["sections"]
    found = []
    for task in tasks:
        for index, name in enumerate(SECTIONS):
            digest = input_digest(config[name]["asset_id"], json.dumps(task.records[index]))
            if (count := by_input.get(digest, 0)) > 1:
                found.append({"task_id": task.task_id, "section": name, "prompts": count})
    return found


def sent_again(tasks: list[Task]) -> int:
    """Prompts the platform replaced (``Prompt sent again`` in the tasks' traces): a resumed
    message it answered FAILED or no longer knew, sent anew. Each is also a repeated prompt."""
    return sum(
        entry["step"] == "Prompt sent again"
        for task in tasks
        for entry in (task.status or {}).get("trace", [])
    )


def percentiles(values: list[float]) -> dict[str, Any]:
    """Count, p50 and p99 (nearest rank) of ``values``."""
    ordered = sorted(values)

    def rank(p: float) -> float | None:
        return ordered[max(0, math.ceil(len(ordered) * p / 100) - 1)] if ordered else None

    return {"n": len(ordered), "p50": rank(50), "p99": rank(99)}


def summarize(
    run: Chaos,
    kills: list[str],
    timing: dict[str, float],
    sim: dict[str, Any],
    prompts: dict[str, list[str]],
) -> dict[str, Any]:
    """The run's one JSON summary (``bench/README.md`` says what each figure means)."""
    accepted = [t for t in run.tasks if t.task_id]
    lost = [t for t in accepted if t.status is None]
    killed = Counter(k.split()[-1].split("-")[0] for k in kills)
    ended = Counter(t.status["status"] for t in accepted if t.status)
    repeats = sum(n - 1 for n in sim["prompts_by_input"].values())
    repeated = repeated_sections(accepted, sim["prompts_by_input"])
    errors = Counter(
        t.status["message"][:160] for t in accepted if t.status and t.status["status"] == "error"
    )
    again, unmatched = duplicates(accepted, prompts)
    sections = len(SECTIONS) * len(accepted)
    elapsed = {
        phase: percentiles(
            [t.elapsed for t in accepted if t.phase == phase and t.elapsed is not None]
        )
        for phase in ("baseline", "chaos")
    }
    p99s = (elapsed["chaos"]["p99"], elapsed["baseline"]["p99"])
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "node": platform.node(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(run.opts).items()},
        "duration_s": {k: round(v, 1) for k, v in timing.items()},
        "kills": {kind: killed[kind] for kind in KINDS} | {"total": len(kills)},
        "kill_log": kills,
        "tasks": {
            "submitted": len(run.tasks),
            "accepted": len(accepted),
            "completed": ended["completed"],
            "error": ended["error"],
            "cancelled": ended["cancelled"],
            "lost": len(lost),
            "never_accepted": len(run.tasks) - len(accepted),
        },
        "errors": [{"message": m, "count": n} for m, n in errors.most_common(10)],
        "lost": [{"task_id": t.task_id, "last_seen": t.last_seen} for t in lost[:20]],
        "never_accepted": [t.refused for t in run.tasks if not t.task_id][:10],
        "sections": sections,
        "prompts_sent": sim["calls"]["prompt"],
        "resent_prompts": sim["calls"]["prompt"] - sections,
        "repeated_prompts": repeats,
        "repeated": repeated[:20],
        "prompts_sent_again": sent_again(accepted),
        "duplicate_prompts": again,
        "unmatched_sections": unmatched,
        "elapsed_s": elapsed
        | {"p99_delay_crashes_added": None if None in p99s else round(p99s[0] - p99s[1], 3)},
        "targets": {"repeated_prompts": {"value": repeats, "limit": 0, "pass": repeats == 0}},
        "ok": not lost and again == 0,
    }


async def drive(stack: Stack, opts: argparse.Namespace, pool: ThreadPoolExecutor) -> dict[str, Any]:
    """Baseline, chaos, drain; then gathers the figures."""
    sim_url, timing = f"http://127.0.0.1:{stack.ports.simulator}", dict[str, float]()
    async with (
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{stack.ports.gateway}",
            timeout=20,
            headers={"Authorization": f"Bearer {stack.admin_key}"},
        ) as api,
        httpx.AsyncClient(base_url=sim_url, timeout=20) as sim,
    ):
        run, mark = Chaos(stack, opts, api), time.monotonic()
        say(f"baseline: {opts.baseline:g}s at {opts.rate:g} tasks/s, no kills")
        submissions = await run.load("baseline", opts.baseline)
        timing["baseline"], mark = time.monotonic() - mark, time.monotonic()
        say(f"chaos: {opts.duration:g}s, a kill every {opts.kill_every:g}±{opts.jitter:g}s")
        stop = asyncio.Event()
        killer = asyncio.create_task(run.kill_loop(pool, stop))
        submissions += await run.load("chaos", opts.duration)
        stop.set()
        kills = await killer  # the last relaunch has finished: every process is up again
        timing["chaos"], mark = time.monotonic() - mark, time.monotonic()
        say(f"load stopped after {len(kills)} kills; waiting for the accepted tasks to finish")
        await asyncio.gather(*submissions)
        await run.wait_terminal()
        timing["drain"] = time.monotonic() - mark
        # A job cut off by a kill may still be sending its prompt; let it land before counting.
        await asyncio.sleep(2)
        stats = (await sim.get("/_sim/stats")).raise_for_status().json()
        prompts = (await sim.get("/_sim/prompts")).raise_for_status().json()
    return summarize(run, kills, timing, stats, prompts)


def run(opts: argparse.Namespace) -> dict[str, Any]:
    """Starts the stack in a temporary folder, drives it, stops it, writes the summary file.
    The folder (service logs) is deleted only when the run passed and --keep-logs is unset."""
    base = Path(tempfile.mkdtemp(prefix="chaos-"))
    stack = make_stack(opts, base)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chaos-relaunch")
    summary: dict[str, Any] = {"ok": False}
    try:
        say(f"starting the platform (logs in {base / 'logs'})")
        stack.start(timeout=60)
        summary = asyncio.run(drive(stack, opts, pool))
    finally:
        pool.submit(lambda: None).result()  # a relaunch still in flight (Ctrl-C) ends first
        stack.stop(grace=5)
        pool.shutdown()
        if summary["ok"] and not opts.keep_logs:
            shutil.rmtree(base, ignore_errors=True)
        else:
            summary["logs"] = str(base / "logs")
            say(f"service logs kept in {base / 'logs'}")
    opts.results_dir.mkdir(parents=True, exist_ok=True)
    path = opts.results_dir / f"chaos-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary | {"results_file": str(path)}


def main(argv: list[str] | None = None) -> int:
    """Runs the chaos benchmark; 0 when no task was lost and no finished section was prompted
    again (the repeated-prompt target is printed with PASS or FAIL)."""
    opts = parse_args(argv)
    try:
        summary = run(opts)
    except KeyboardInterrupt:
        say("interrupted; every service stopped")
        return 130
    except RuntimeError as exc:  # a service that does not (re)start: see its log
        say(f"aborted: {exc}")
        return 2
    if "targets" in summary:
        for name, target in summary["targets"].items():
            verdict = "PASS" if target["pass"] else "FAIL"
            say(f"target {name}: {target['value']} (limit {target['limit']}) {verdict}")
    print(json.dumps(summary, indent=2), flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
