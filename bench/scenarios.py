"""The benchmark's scenarios (issue: saturation, steady load, scale-out, two orchestrators) and
the tiny one the test suite runs. ``bench/README.md`` describes each."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    """One run against one fresh stack."""

    key: str
    name: str
    tasks: int
    clients: int = 0  # closed loop: this many clients, one task after another
    rate: float = 0.0  # open loop: new tasks per second (when clients is 0)
    latency: float = 0.0  # simulator: median seconds to answer a section
    sigma: float = 0.0  # simulator: log-normal sigma of that time
    workers: int = 2
    orchestrators: int = 1
    worker_cap: int = 1500  # WORKER_MAX_CONCURRENT_JOBS
    client_poll: float = 0.5  # seconds between a client's status calls
    drain: float = 120.0  # longest wait after the last arrival (closed loop: for the whole run)
    targets: tuple[str, ...] = ("s3",)  # target groups checked (bench.targets)
    warm: bool = True  # warm-up tasks before the measured phase (off: a cold start)
    # bench.peers: the platform's workers start from a latency prior per asset (config.json's
    # "latency") equal to the stand-in's latency, as an operator who knows the platform's sets it
    prior: bool = False

    def limit_s(self) -> float:
        """The longest the measured phase may last."""
        arrivals = self.tasks / self.rate if not self.clients and self.rate else 0.0
        return arrivals + self.drain


SATURATION = Scenario(
    "a",
    "saturation",
    tasks=2000,
    clients=64,
    drain=600,
    targets=("s3", "saturation"),
)
STEADY = Scenario(
    "b",
    "steady load",
    tasks=1000,
    rate=25,
    latency=20,
    sigma=0.5,
    client_poll=5.0,
    drain=120,
    targets=("s3", "steady", "polling"),
)
SCALE_OUT = dataclasses.replace(
    STEADY, key="c", name="scale-out", worker_cap=300, drain=90, targets=("s3", "polling")
)
TWO_ORCHESTRATORS = dataclasses.replace(
    SATURATION, key="d", name="saturation, 2 orchestrators", orchestrators=2
)
SMOKE = Scenario(
    "smoke",
    "smoke",
    tasks=20,
    clients=8,
    latency=0.2,
    sigma=0.5,
    client_poll=0.2,
    drain=60,
    targets=("s3", "steady", "polling", "saturation"),
)
SCENARIOS = {s.key: s for s in (SATURATION, STEADY, SCALE_OUT, TWO_ORCHESTRATORS, SMOKE)}
SCALE_OUT_WORKERS = (1, 2, 4)

# Command-line overrides: option -> (Scenario field, type, help).
OVERRIDES = {
    "--tasks": ("tasks", int, "tasks per run"),
    "--clients": ("clients", int, "closed-loop clients (0: open loop at --rate)"),
    "--rate": ("rate", float, "open loop: new tasks per second"),
    "--latency": ("latency", float, "simulator: median seconds to answer a section"),
    "--sigma": ("sigma", float, "simulator: log-normal sigma of that time"),
    "--workers": ("workers", int, "section worker replicas (not for c)"),
    "--orchestrators": ("orchestrators", int, "orchestrator replicas"),
    "--worker-cap": ("worker_cap", int, "WORKER_MAX_CONCURRENT_JOBS of each worker"),
    "--client-poll": ("client_poll", float, "seconds between a client's status calls"),
    "--drain": ("drain", float, "longest wait after the last arrival, seconds"),
}


def chosen(opts: argparse.Namespace) -> list[Scenario]:
    """The scenarios ``--scenario`` names, with the command line's overrides applied."""
    keys = ["a", "b", "c", "d"] if opts.scenario == "all" else [opts.scenario]
    changes = {
        field: getattr(opts, flag.lstrip("-").replace("-", "_"))
        for flag, (field, _, _) in OVERRIDES.items()
        if getattr(opts, flag.lstrip("-").replace("-", "_")) is not None
    }
    return [dataclasses.replace(SCENARIOS[key], **changes) for key in keys]


# The side by side with the peers (``python -m bench.peers``): issue 15's scenarios, each run
# on the platform with its defaults (worker_cap 0: WORKER_MAX_CONCURRENT_JOBS left unset) and
# then on each peer. ``targets`` name the groups of bench.peers.verdict.
PEER_SATURATION = Scenario(
    "saturation",
    "saturation",
    tasks=300,
    clients=50,
    client_poll=0.5,
    drain=300,
    worker_cap=0,
    targets=("saturation",),
    prior=True,
)
PEER_BURST = Scenario(
    "burst",
    "burst on a fresh stack",
    tasks=100,
    clients=100,  # every task submitted at once
    latency=5,
    sigma=0.5,
    client_poll=1.0,
    drain=180,
    worker_cap=0,
    warm=False,  # cold start counts
    targets=("burst",),
)
PEER_STEADY = Scenario(
    "steady",
    "steady load",
    tasks=100,
    rate=25,
    latency=20,
    sigma=0.5,
    client_poll=5.0,
    drain=120,
    worker_cap=0,
    targets=("steady",),
    prior=True,
)
PEER_LONG = dataclasses.replace(
    PEER_STEADY, key="long", name="steady load, 1,000 tasks", tasks=1000, targets=("long",)
)
PEER_SMOKE = Scenario(
    "smoke",
    "smoke",
    tasks=10,
    clients=5,
    latency=0.2,
    sigma=0.5,
    client_poll=0.2,
    drain=60,
    worker_cap=0,
    targets=("saturation", "burst", "steady", "long"),
    prior=True,
)
PEER_SCENARIOS = {
    s.key: s for s in (PEER_SATURATION, PEER_BURST, PEER_STEADY, PEER_LONG, PEER_SMOKE)
}
