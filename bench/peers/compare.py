"""The platform beside its peers: ``python -m bench.peers --scenario
saturation|burst|steady|smoke|all [--long]``.

For each scenario it runs the platform (its defaults: one orchestrator, two workers) and then
the Celery peer (:mod:`bench.peers.stack`), one after the other on a freshly started stack each,
with the same S3 server (SeaweedFS unless ``--s3 moto``), the same platform stand-in
(:mod:`bench.standin`, with the same seed) and the same load clients sending the same records,
so both meet the same latencies. Each run is measured by :func:`bench.perf.measure`; then the
figures are printed side by side with their platform/peer ratio, and issue 15's targets with
PASS/FAIL (:mod:`bench.peers.verdict`), on stderr with the progress lines. Each scenario's
summary (both runs whole, the ratios, the targets) is printed as JSON on stdout and written to
``bench/results/peers-<scenario>-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.peers.stack import CONCURRENCY, PeerStack
from bench.peers.verdict import PEER, PLATFORM, check, ratios, render_ratios, render_targets
from bench.perf import measure, run_scenarios, say
from bench.scenarios import OVERRIDES, PEER_SCENARIOS, Scenario
from bench.stack import BenchStack
from scripts.devstack import ROOT, S3_SERVERS

ALL = ("saturation", "burst", "steady")
PEERS = {
    "celery": f"Celery 5 + Redis, threads x{CONCURRENCY}, acks_late, prefetch 1, polls every 2 s"
}
S3_NAMES = {
    "seaweedfs": "SeaweedFS (the local S3 server of make run, data on disk)",
    "moto": "moto in server mode (in memory), not the local S3 server",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``--help`` lists every option)."""
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--scenario", choices=[*PEER_SCENARIOS, "all"], default="all")
    parser.add_argument(
        "--long", action="store_true", help="add the 1,000-task steady run (RSS growth)"
    )
    parser.add_argument("--peer", choices=sorted(PEERS), default="celery")
    parser.add_argument("--s3", choices=S3_SERVERS, default="seaweedfs", help="S3 server")
    for flag, (_, kind, text) in OVERRIDES.items():
        parser.add_argument(flag, type=kind, default=None, help=f"{text} (scenario's own)")
    parser.add_argument("--seed", type=int, default=1, help="stand-in seed (%(default)s)")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--keep-logs", action="store_true", help="keep the services' logs")
    parser.add_argument(
        "--no-prior",
        action="store_true",
        help="the platform's workers start knowing nothing of the latencies, in every scenario",
    )
    return parser.parse_args(argv)


def chosen(opts: argparse.Namespace) -> list[Scenario]:
    """The scenarios to run, with the command line's overrides applied."""
    keys = list(ALL) if opts.scenario == "all" else [opts.scenario]
    if opts.long and "long" not in keys:
        keys.append("long")
    changes = {
        field: getattr(opts, flag.lstrip("-").replace("-", "_"))
        for flag, (field, _, _) in OVERRIDES.items()
        if getattr(opts, flag.lstrip("-").replace("-", "_")) is not None
    }
    if opts.no_prior:
        changes["prior"] = False
    return [dataclasses.replace(PEER_SCENARIOS[key], **changes) for key in keys]


PRIOR_FLOOR_S = 0.01  # a prior's median must be positive: "answers at once" is taken as 10 ms


def config_with_priors(sc: Scenario, path: Path) -> Path:
    """Writes the repository's config.json to ``path`` with every asset's latency prior set to
    the stand-in's latency in ``sc`` (its median, at least ``PRIOR_FLOOR_S``, and sigma)."""
    config = json.loads((ROOT / "config.json").read_text())
    prior = {"median_s": max(sc.latency, PRIOR_FLOOR_S), "sigma": sc.sigma}
    for asset in config["assets"].values():
        asset["latency"] = prior
    path.write_text(json.dumps(config, indent=2))
    return path


def stack_for(
    side: str, sc: Scenario, opts: argparse.Namespace, base: Path
) -> BenchStack | PeerStack:
    """A fresh stack of ``side`` (the platform, or the peer) for ``sc``."""
    if side == PLATFORM:
        env = {"SIM_SEED": str(opts.seed)}
        if sc.worker_cap:
            env["WORKER_MAX_CONCURRENT_JOBS"] = str(sc.worker_cap)
        if sc.prior:
            base.mkdir(parents=True, exist_ok=True)
            env["WORKER_CONFIG_PATH"] = str(config_with_priors(sc, base / "config.json"))
        return BenchStack(
            base,
            orchestrators=sc.orchestrators,
            workers=sc.workers,
            env=env,
            s3_server=opts.s3,
            standin=True,
        )
    return PeerStack(base, s3_server=opts.s3, seed=opts.seed)


def run_side(side: str, sc: Scenario, opts: argparse.Namespace, run_id: str) -> dict[str, Any]:
    """Starts a fresh stack of ``side``, measures ``sc`` on it, stops it; its summary."""
    base = Path(tempfile.mkdtemp(prefix=f"bench-{side}-{sc.key}-"))
    stack = stack_for(side, sc, opts, base)
    name = "the platform" if side == PLATFORM else f"the {opts.peer} peer"
    say(f"scenario {sc.key}: {name}; logs in {base / 'logs'}")
    ok = False
    try:
        stack.start(timeout=90)
        summary = asyncio.run(measure(stack, sc, run_id))
        ok = True
    finally:
        stack.stop(grace=5)
        if ok and not opts.keep_logs:
            shutil.rmtree(base, ignore_errors=True)
    standin = summary.get("standin") or {}
    cpu, served = standin.get("cpu_ms_per_request"), standin.get("requests")
    say(
        f"scenario {sc.key}: {name} done in {summary['duration_s']}s; "
        f"stand-in CPU {cpu} ms per request over {served} requests"
    )
    return summary


def compare_one(sc: Scenario, opts: argparse.Namespace) -> dict[str, Any]:
    """Both runs of ``sc``, their ratios and the targets."""
    say(
        f"scenario {sc.key} ({sc.name}): {sc.tasks} tasks, "
        + (f"{sc.clients} clients" if sc.clients else f"{sc.rate:g}/s")
        + f", latency {sc.latency:g}s sigma {sc.sigma:g}"
        + ("" if sc.warm else ", fresh stack, no warm-up")
        + (", the platform's workers given the latency as a prior" if sc.prior else "")
        + f"; S3: {S3_NAMES[opts.s3]}"
    )
    run_id = f"{random.getrandbits(32):08x}"  # the same records, so the same latencies, for both
    summaries = {side: run_side(side, sc, opts, run_id) for side in (PLATFORM, PEER)}
    rows = ratios(summaries)
    targets = check(summaries, (*sc.targets, "standin"))
    say(
        f"scenario {sc.key} ({sc.name}), platform beside the {opts.peer} peer:\n"
        + render_ratios(rows, opts.peer)
        + "\n"
        + render_targets(targets)
    )
    return {
        "scenario": sc.key,
        "name": sc.name,
        "config": dataclasses.asdict(sc),
        "s3_server": S3_NAMES[opts.s3],
        "peer": {"name": opts.peer, "setup": PEERS[opts.peer]},
        "ratios": rows,
        "targets": targets,
        "runs": {PLATFORM: summaries[PLATFORM], opts.peer: summaries[PEER]},
    }


def main(argv: list[str] | None = None) -> int:
    """Runs the chosen scenarios; 0 when each produced its summary (targets do not decide)."""
    opts = parse_args(argv)
    return run_scenarios(
        ((f"peers-{sc.key}", functools.partial(compare_one, sc, opts)) for sc in chosen(opts)),
        opts.results_dir,
    )


if __name__ == "__main__":
    sys.exit(main())
