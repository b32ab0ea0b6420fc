"""The figures of one benchmark run, from what the clients, the simulator, the S3 counting
proxy and ``/proc`` recorded (``bench/README.md`` explains each one).

Each task is matched to its sections' prompts in the simulator's timeline by input digest
(``sha256(asset_id + json.dumps(record))``, as in :mod:`bench.chaos`). Per section:
simulated latency = ready - prompted; polling-added = answered - ready; "dispatch until the
worker saw the answer" = answered - conversation created. Per task: total overhead = elapsed -
the slowest section's simulated latency; machinery overhead = elapsed - the slowest section's
dispatch-to-answer time; polling-added = total - machinery.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from bench.chaos import SECTIONS, TERMINAL, percentiles
from bench.clients import Outcome
from bench.procstats import MIB, Sample, cpu_spent, rss_growth
from bench.s3count import LETTER, OPS
from scripts.devstack import ROOT
from section_worker.settings import WorkerSettings
from simulator.state import input_digest

FIXED_POLL_S = 2.0  # the baseline polling schedule of the polling target
# The stand-ins for AWS and the platform, the workers' Redis, and us.
NOT_SERVICES = ("s3", "simulator", "redis", "s3count")


def _asset_ids() -> dict[str, str]:
    sections = json.loads((ROOT / "config.json").read_text())["sections"]
    return {name: str(sections[name]["asset_id"]) for name in SECTIONS}


def _seconds(entry: dict[str, Any], start: str, end: str) -> float:
    delta = datetime.fromisoformat(entry[end]) - datetime.fromisoformat(entry[start])
    return delta.total_seconds()


def _dist(values: Iterable[float], scale: float = 1.0, digits: int = 3) -> dict[str, Any]:
    """n, p50 and p99 (nearest rank) of ``values`` times ``scale``, rounded."""
    found = percentiles([v * scale for v in values])
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in found.items()}


def section_figures(outcomes: list[Outcome], timeline: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Timeline-based figures: per-task overhead split, per-section latency and polling, and
    the polling a fixed 2-s interval would need on the same latencies."""
    answered: dict[str, dict[str, Any]] = {}
    for entry in timeline.values():  # oldest first: a prompt sent again replaces the first
        if entry["answered_at"]:
            answered[entry["input"]] = entry
    assets = _asset_ids()
    total, machinery, polling, sections, unmatched = [], [], [], [], 0
    for task in outcomes:
        if task.status != "completed" or task.elapsed_s is None:
            continue
        found = [
            answered.get(input_digest(assets[name], json.dumps(task.records[i])))
            for i, name in enumerate(SECTIONS)
        ]
        entries = [e for e in found if e is not None]
        unmatched += len(found) - len(entries)
        if len(entries) != len(found):
            continue
        sections += entries
        slowest_sim = max(_seconds(e, "prompted_at", "ready_at") for e in entries)
        slowest_seen = max(_seconds(e, "created_at", "answered_at") for e in entries)
        total.append(task.elapsed_s - slowest_sim)
        machinery.append(task.elapsed_s - slowest_seen)
        polling.append(slowest_seen - slowest_sim)
    latency = [_seconds(e, "prompted_at", "ready_at") for e in sections]
    added = [_seconds(e, "ready_at", "answered_at") for e in sections]
    polls = [int(e["polls"]) for e in sections]
    fixed_polls = [max(1, math.ceil(v / FIXED_POLL_S)) for v in latency]
    fixed_added = [n * FIXED_POLL_S - v for n, v in zip(fixed_polls, latency, strict=True)]
    schedule = [worker_schedule(v) for v in latency]
    mean_polls = sum(polls) / len(polls) if polls else None
    mean_fixed = sum(fixed_polls) / len(fixed_polls) if fixed_polls else None
    return {
        "overhead_ms": {
            "total": _dist(total, 1000, 1),
            "polling_added": _dist(polling, 1000, 1),
            "machinery": _dist(machinery, 1000, 1),
        },
        "sections": {
            "matched": len(sections),
            "unmatched": unmatched,
            "sim_latency_s": _dist(latency),
            "polling_added_s": _dist(added),
            "polls": _dist(polls, digits=1) | {"mean": _round(mean_polls, 2)},
            "in_flight_peak": in_flight_peak(sections),
        },
        "polling": {
            "polls_per_section": _round(mean_polls, 2),
            "fixed_2s_polls_per_section": _round(mean_fixed, 2),
            "ratio_to_fixed_2s": _round(mean_polls / mean_fixed, 3)
            if mean_polls is not None and mean_fixed
            else None,
            "polling_added_s": _dist(added),
            "fixed_2s_polling_added_s": _dist(fixed_added),
            "worker_schedule_polls_per_section": _round(
                sum(n for n, _ in schedule) / len(schedule) if schedule else None, 2
            ),
            "worker_schedule_polling_added_s": _dist(added for _, added in schedule),
        },
    }


def worker_schedule(latency: float) -> tuple[int, float]:
    """(polls, latency added) of the workers' configured schedule (``WORKER_POLL_*``
    defaults) on an answer ready ``latency`` s after the prompt, if every poll were on time."""
    fields = WorkerSettings.model_fields
    wait = float(fields["poll_initial_s"].default)
    factor, longest = float(fields["poll_factor"].default), float(fields["poll_max_s"].default)
    polls, at = 1, wait
    while at < latency:
        wait = min(wait * factor, longest)
        polls, at = polls + 1, at + wait
    return polls, at - latency


def in_flight_peak(entries: list[dict[str, Any]]) -> int:
    """Most sections at once between their conversation's creation and their answer."""
    events = [(e["created_at"], 1) for e in entries] + [(e["answered_at"], -1) for e in entries]
    peak = level = 0
    for _, step in sorted(events, key=lambda ev: (datetime.fromisoformat(ev[0]), ev[1])):
        level += step
        peak = max(peak, level)
    return peak


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def s3_figures(counts: dict[str, Any], completed: list[str], seconds: float) -> dict[str, Any]:
    """Requests counted at the S3 endpoint: per completed task (the requests on the documents
    of the ``completed`` task ids, plus idempotency records), leases per second (per replica and
    interval, not per task), and reads of task documents made before their last write (while
    the task ran) or after."""
    requests: dict[str, dict[str, int]] = counts["requests"]
    ops: dict[str, str] = counts["task_ops"]
    by_id = {key.rpartition("/")[2].removesuffix(".json"): seq for key, seq in ops.items()}
    done = [by_id.get(task_id, "") for task_id in completed]
    per = max(len(completed), 1)
    per_task = {
        op: round(
            (sum(seq.count(LETTER[op]) for seq in done) + requests["idempotency"][op]) / per, 3
        )
        for op in OPS
    }
    in_flight = sum(o[: o.rfind("P") + 1].count("G") for o in ops.values() if "P" in o)
    after = sum(o[o.rfind("P") + 1 :].count("G") for o in ops.values())
    everything = sum(sum(by_op.values()) for by_op in requests.values())
    connections = counts.get("connections", 0)
    return {
        "requests": requests,
        "per_task": per_task,
        "writes_per_task": round(per_task["PUT"] + per_task["DELETE"], 3),
        "reads_per_task": round(per_task["GET"] + per_task["HEAD"], 3),
        "task_reads_while_running": in_flight,
        "task_reads_after_last_write": after,
        "lease_per_s": {op: round(requests["lease"][op] / seconds, 2) for op in OPS},
        "requests_per_s": round(everything / seconds, 1),
        "connections": connections,
        "requests_per_connection": round(everything / connections, 1) if connections else None,
    }


def platform_figures(
    before: dict[str, Any], after: dict[str, Any], sections: int
) -> dict[str, Any]:
    """Simulator calls per section by kind, and the rejections seen."""
    calls = {k: after["calls"][k] - before["calls"].get(k, 0) for k in after["calls"]}
    rejected = {k: after["rejected"][k] - before["rejected"].get(k, 0) for k in after["rejected"]}
    per = max(sections, 1)
    return {
        "calls_per_section": {k: round(n / per, 2) for k, n in calls.items()},
        "calls": calls,
        "rejected": rejected,
    }


def standin_figures(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any] | None:
    """Requests the platform stand-in served between two of its stats and the CPU it spent
    per request (None when the platform was the simulator, which reports neither)."""
    if "served" not in before or "served" not in after:
        return None
    served = int(after["served"]) - int(before["served"])
    cpu_s = float(after["cpu_s"]) - float(before["cpu_s"])
    per = round(cpu_s * 1000 / served, 3) if served > 0 else None
    return {"requests": served, "cpu_s": round(cpu_s, 3), "cpu_ms_per_request": per}


def resource_figures(
    before: Sample, after: Sample, clients_cpu_s: float, completed: int, seconds: float
) -> dict[str, Any]:
    """CPU per task (every service together and each; moto, the simulator, Redis, the bench
    clients and the S3 counting proxy apart), peak and growth of resident memory per service."""
    cpu = cpu_spent(before, after)
    services = {name: s for name, s in cpu.items() if name not in NOT_SERVICES}
    per = 1000 / max(completed, 1)
    growth = {n: g for n, g in rss_growth(before, after).items() if n not in NOT_SERVICES}
    every = sum(cpu.values()) + clients_cpu_s
    return {
        "cpu_ms_per_task": {
            "services": round(sum(services.values()) * per, 2),
            "by_service": {n: round(s * per, 2) for n, s in sorted(services.items())},
            "s3": round(cpu.get("s3", 0.0) * per, 2),
            "simulator": round(cpu.get("simulator", 0.0) * per, 2),
            "redis": round(cpu.get("redis", 0.0) * per, 2),
            "harness": {
                "clients": round(clients_cpu_s * per, 2),
                "s3_proxy": round(cpu.get("s3count", 0.0) * per, 2),
            },
        },
        "cpu_busy_share": round(every / seconds / (os.cpu_count() or 1), 3),
        "peak_rss_mib": {
            n: round(u.peak_rss / MIB, 1) for n, u in sorted(after.items()) if n != "s3count"
        },
        "rss_growth_mib": {
            "services": round(sum(growth.values()), 1),
            "by_service": {n: round(g, 1) for n, g in sorted(growth.items())},
        },
    }


def client_figures(outcomes: list[Outcome], seconds: float) -> dict[str, Any]:
    """What the clients saw: task counts, rate, submit latency, server-side elapsed time."""
    by_status: dict[str, int] = {}
    for task in outcomes:
        if task.task_id:
            by_status[task.status] = by_status.get(task.status, 0) + 1
    completed = by_status.get("completed", 0)
    return {
        "tasks": {
            "submitted": len(outcomes),
            "accepted": sum(1 for t in outcomes if t.task_id),
            "completed": completed,
            "error": by_status.get("error", 0),
            "cancelled": by_status.get("cancelled", 0),
            "unfinished": by_status.get("unfinished", 0),
            # Status said terminal, yet the result read next did not (another replica's view).
            "result_not_terminal": sum(
                n for status, n in by_status.items() if status not in (*TERMINAL, "unfinished")
            ),
            "refused": sum(1 for t in outcomes if not t.task_id),
            "submit_retries": sum(t.submit_retries for t in outcomes),
        },
        "refusals": sorted({t.refused for t in outcomes if not t.task_id})[:5],
        "result_statuses": dict(sorted(by_status.items())),
        "errors": [
            {"message": m, "count": n}
            for m, n in Counter(t.message[:160] for t in outcomes if t.status == "error").items()
        ][:10],
        "tasks_per_s": round(completed / seconds, 2),
        "submit_ms": _dist((t.submit_s for t in outcomes if t.submit_s is not None), 1000, 1),
        "elapsed_s": _dist(t.elapsed_s for t in outcomes if t.elapsed_s is not None),
        "client_polls_per_task": round(sum(t.polls for t in outcomes) / max(1, len(outcomes)), 2),
    }
