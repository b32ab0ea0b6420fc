"""How many waiting jobs one worker holds, and what each costs in memory.

``python -m bench.capacity [--jobs 1000]`` starts the simulator (every answer takes ten
minutes, so every job waits) and one section worker with its default slot count, on free
loopback ports with mutual TLS, and a configuration whose limits let every job through. It
sends the jobs as an orchestrator does (its worker client: every job over one ``RunSections``
stream), waits until the worker reports all of them in flight at once, and prints the worker's
resident memory before and with them, and the memory per in-flight job. Then it cancels the
jobs and stops.

Not a test: a figure for the README and the capacity model (the slot count guards the worker's
memory; the platform's limits shape what reaches the platform).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.procstats import usage
from common.tls import Identity, Role, ensure_certificates
from orchestrator.worker_client import GrpcWorkerClient, Progress, SectionJob, WorkerError
from scripts.devstack import ROOT, wait_for_port
from scripts.ports import free_ports

ASSET = "capacity-asset"
PASSWORD = "capacity-password"  # noqa: S105 - the simulator's, on loopback
KIB = 1024


def _config(jobs: int) -> dict[str, Any]:
    roomy = {"rpm": jobs * 10, "concurrency": jobs * 2}
    return {
        "sections": {"capacity": {"asset_id": ASSET, "fields": ["n"], "timeout_s": 900}},
        "assets": {ASSET: {**roomy, "max_cost": 0.25}},
        "tenants": {"*": roomy},
    }


def _job(n: int, token: str) -> SectionJob:
    return SectionJob(
        job_id=f"task_capacity:{n}",
        task_id="task_capacity",
        section="capacity",
        asset_id=ASSET,
        record_json=json.dumps({"n": n}),
        tenant="bench",
        username="bench",
        access_token=token,
        timeout_s=900,
    )


def _spawn(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module],
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def _token(sim_port: int) -> str:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sim_port}", timeout=10) as http:
        reply = await http.get("/accesstoken/bench", auth=("bench", PASSWORD))
        reply.raise_for_status()
        return str(reply.json()["access_token"])


async def _measure(jobs: int, worker_port: int, sim_port: int, pid: int, certs: Path) -> None:
    token = await _token(sim_port)
    client = GrpcWorkerClient(f"127.0.0.1:{worker_port}", Identity.load(certs, Role.ORCHESTRATOR))
    try:
        await client.load()
        await asyncio.sleep(1.0)
        before = usage(pid).rss
        started = time.monotonic()
        runs = [client.run(_job(n, token)) for n in range(jobs)]
        firsts = await asyncio.gather(*(anext(run) for run in runs), return_exceptions=True)
        held = [run for run, first in zip(runs, firsts, strict=True) if isinstance(first, Progress)]
        refused = Counter(
            type(first).__name__ for first in firsts if not isinstance(first, Progress)
        )
        accepted = len(held)
        peak = 0
        deadline = time.monotonic() + 300
        while True:
            load = await client.load()
            peak = max(peak, load.in_flight)
            sim_stats = (await _sim_stats(sim_port))["calls"]
            if (load.in_flight == accepted and sim_stats["prompt"] >= accepted) or (
                time.monotonic() > deadline
            ):
                break
            await asyncio.sleep(0.5)
        admitted_s = time.monotonic() - started
        await asyncio.sleep(2.0)  # a few poll rounds: the jobs are in their steady state
        load = await client.load()
        during = usage(pid).rss
        prompts = (await _sim_stats(sim_port))["calls"]["prompt"]
        print(f"worker slots (WORKER_MAX_CONCURRENT_JOBS default): {load.capacity}")
        print(f"jobs sent: {jobs}; accepted: {accepted}; refused: {dict(refused)}")
        print(f"in flight at once: {load.in_flight} (peak seen {peak})")
        print(f"prompts the platform is writing: {prompts} (every job waits on its answer)")
        print(f"all in flight after {admitted_s:.1f} s")
        idle_mib, busy_mib = before / KIB / KIB, during / KIB / KIB
        print(f"worker RSS idle: {idle_mib:.1f} MiB; with the jobs: {busy_mib:.1f} MiB")
        per_job = (during - before) / max(1, load.in_flight) / KIB
        print(f"worker RSS per in-flight job: {per_job:.1f} KiB")
        for run in held:
            await run.aclose()  # cancels the job on the worker
    finally:
        await client.close()


async def _sim_stats(sim_port: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sim_port}", timeout=10) as http:
        return dict((await http.get("/_sim/stats")).json())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs held at once (1000)")
    args = parser.parse_args()
    worker_port, sim_port = free_ports(2)
    with tempfile.TemporaryDirectory(prefix="wealthai-capacity-") as tmp:
        base = Path(tmp)
        certs = base / "tls"
        ensure_certificates(certs)
        config = base / "config.json"
        config.write_text(json.dumps(_config(args.jobs)))
        sim = _spawn(
            "simulator",
            {
                "SIM_PORT": str(sim_port),
                "SIM_PASSWORD": PASSWORD,
                "SIM_LATENCY_MEDIAN_S": "600",
                "SIM_LATENCY_SIGMA": "0",
                "SIM_LATENCY_MAX_S": "600",
                "SIM_LOG_LEVEL": "WARNING",
            },
            base / "simulator.log",
        )
        worker = _spawn(
            "section_worker",
            {
                "WORKER_PORT": str(worker_port),
                "WORKER_PLATFORM_URL": f"http://127.0.0.1:{sim_port}",
                "WORKER_TLS_DIR": str(certs),
                "WORKER_CONFIG_PATH": str(config),
                "WORKER_LOG_LEVEL": "WARNING",
                # Jobs waiting ten minutes poll every 30 s (the default caps the gap at 2 s), so
                # the one simulator process keeps up with a thousand of them on a small machine.
                "WORKER_POLL_INITIAL_S": "5",
                "WORKER_POLL_MAX_S": "30",
            },
            base / "worker.log",
        )
        try:
            wait_for_port(sim_port, sim, "simulator", 30)
            wait_for_port(worker_port, worker, "section_worker", 30)
            asyncio.run(_measure(args.jobs, worker_port, sim_port, worker.pid, certs))
        except (WorkerError, RuntimeError, AssertionError) as exc:
            print(f"capacity run failed: {exc}", file=sys.stderr)
            print((base / "worker.log").read_text()[-3000:], file=sys.stderr)
            raise SystemExit(1) from None
        finally:
            for proc in (worker, sim):
                proc.send_signal(signal.SIGTERM)
            for proc in (worker, sim):
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


if __name__ == "__main__":
    main()
