"""Memory benchmark of the ``profile_table`` job kind: peak resident memory while profiling a
~500 MB CSV, against the target of at most 512 MiB.

``python -m bench.profile`` writes a CSV of about ``--size-mb`` MB into a temporary folder,
streamed chunk by chunk (ids, integers, floats, dates, datetimes, categories, booleans, free
text with quoted commas and a few embedded newlines, some empty values), with a known number of
malformed rows among them: rows with an extra field, rows with a missing field, and rows whose
``amount`` and ``quantity`` are not numbers. It then runs
:func:`section_worker.kinds.profile_table.profile_file` in a child process, as a worker would
run it, and reads that process's peak resident memory (``VmHWM`` in ``/proc/<pid>/status``) when
the profile is done; the parent also samples the child's ``VmRSS`` as it runs. It prints one
JSON summary on stdout (progress on stderr), also written to
``bench/results/profile-<UTC>.json``: peak RSS and PASS/FAIL against ``--target-mib``, seconds,
MB/s and CPU seconds, whether the malformed rows found are exactly those written, the machine
and its load (the machine may be shared: the load average says how busy it was), and the
profile itself.

Exit code: 0 when the peak is within the target and the malformed counts are exact, 1
otherwise, 2 when the child failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

from bench.procstats import MIB, usage
from bench.provenance import code_version

ROOT = Path(__file__).resolve().parents[1]

_WORDS = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "portfolio", "equity", "bond",
    "rebalance", "risk", "yield",
]  # fmt: skip
_CATEGORIES = [
    "equity", "bond", "fund", "etf", "cash", "option", "future", "reit", "commodity", "crypto",
    "fx", "other",
]  # fmt: skip
_COUNTRIES = [
    "US", "GB", "FR", "DE", "JP", "CH", "NL", "IT", "ES", "CA", "AU", "SE", "NO", "DK", "IE",
    "BE", "AT", "FI", "PT", "LU",
]  # fmt: skip
HEADER = (
    "id,customer_id,amount,quantity,price,trade_date,created_at,category,country,active,"
    "description,note"
)
_CHUNK_ROWS = 200_000


def say(message: str) -> None:
    """A progress line on stderr, so stdout carries only the JSON summary."""
    print(f"[profile {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``--help`` lists every option)."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--size-mb", type=float, default=500, help="size of the generated CSV")
    parser.add_argument("--file", type=Path, help="profile this CSV instead of generating one")
    parser.add_argument("--target-mib", type=float, default=512, help="peak RSS target")
    parser.add_argument(
        "--read-chunk-mib", type=float, default=None, help="ProfileOptions.read_chunk_bytes"
    )
    parser.add_argument("--threads", type=int, default=None, help="POLARS_MAX_THREADS (child)")
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- the generated file ---------------------------------------------------------------------


@dataclass
class Injected:
    """The malformed rows written, by kind, and the rows in all."""

    rows: int = 0
    extra_field: int = 0
    missing_field: int = 0
    bad_numbers: int = 0  # rows whose amount and quantity are both text
    lines: list[int] = field(default_factory=list)  # where the ragged rows start


def _chunk(start: int, rows: int) -> Any:
    """``rows`` realistic rows from id ``start``, computed by polars from hashes of the id."""
    import polars as pl

    idx = pl.int_range(start, start + rows, dtype=pl.Int64)

    def h(k: int) -> pl.Expr:
        return idx.hash(7_000 + k)

    def pick(k: int, values: list[str]) -> pl.Expr:
        return (
            (h(k) % len(values))
            .cast(pl.Int64)
            .replace_strict(list(range(len(values))), values, return_dtype=pl.String)
        )

    def uniform(k: int) -> pl.Expr:
        return (h(k) % 1_000_000).cast(pl.Float64) / 1_000_000

    words = [pick(12 + i, _WORDS) for i in range(5)]
    return pl.select(
        idx.alias("id"),
        (h(1) % 500_000).cast(pl.Int64).alias("customer_id"),
        pl.when(h(2) % 50 == 0).then(None).otherwise(((uniform(3) * 10).exp() * 3).round(2))
        .alias("amount"),
        (h(4) % 100 + 1).cast(pl.Int64).alias("quantity"),
        (uniform(5) * 1000 - 200).round(4).alias("price"),
        (pl.lit(date(2015, 1, 1)) + pl.duration(days=(h(6) % 3650).cast(pl.Int64)))
        .alias("trade_date"),
        (pl.lit(datetime(2020, 1, 1)) + pl.duration(seconds=(h(7) % 150_000_000).cast(pl.Int64)))
        .alias("created_at"),
        pick(8, _CATEGORIES).alias("category"),
        pl.when(h(9) % 20 == 0).then(None).otherwise(pick(10, _COUNTRIES)).alias("country"),
        (h(11) % 2 == 0).alias("active"),
        pl.when(h(17) % 5_000 == 0)
        .then(pl.concat_str([*words[:2], pl.lit("\n"), *words[2:]], separator=" "))
        .otherwise(pl.concat_str(words, separator=" "))
        .alias("description"),
        pl.when(h(18) % 10 == 0)
        .then(pl.concat_str([pick(19, _WORDS), pl.lit(", "), pick(20, _WORDS)]))
        .otherwise(pick(21, _WORDS))
        .alias("note"),
    )  # fmt: skip


def _malformed_rows(first_id: int, kind: str) -> str:
    """One hand-written row of the given kind (no quoted field, so its fields are plain)."""
    fields = [
        str(first_id), "42", "12.5", "7", "99.5", "2021-06-01", "2021-06-01T10:00:00", "fund",
        "FR", "true", "malformed row", "note",
    ]  # fmt: skip
    if kind == "extra_field":
        fields.append("surplus")
    elif kind == "missing_field":
        fields.pop()
    else:
        fields[2], fields[3] = "n/a", "many"
    return ",".join(fields) + "\n"


def generate(path: Path, size_bytes: int) -> Injected:
    """Write the benchmark CSV, about ``size_bytes`` long; three malformed rows of each kind
    go in after every tenth of it."""
    injected = Injected()
    line = 1  # the header
    next_mark = size_bytes // 10
    with path.open("wb") as out:
        out.write((HEADER + "\n").encode())
        while out.tell() < size_bytes:
            frame = _chunk(injected.rows, _CHUNK_ROWS)
            text = frame.write_csv(include_header=False, datetime_format="%Y-%m-%dT%H:%M:%S")
            out.write(text.encode())
            injected.rows += frame.height
            line += text.count("\n")  # records plus the newlines quoted inside them
            if out.tell() >= next_mark:
                next_mark += size_bytes // 10
                line = _inject(out, injected, line)
    return injected


def _inject(out: IO[bytes], injected: Injected, line: int) -> int:
    for kind in ("extra_field", "missing_field", "bad_numbers"):
        out.write(_malformed_rows(injected.rows, kind).encode())
        injected.rows += 1
        line += 1
        if kind == "bad_numbers":
            injected.bad_numbers += 1
        else:
            setattr(injected, kind, getattr(injected, kind) + 1)
            injected.lines.append(line)
    return line


# --- the child: one profile -----------------------------------------------------------------


def child(path: Path, options: dict[str, Any]) -> int:
    """Profile ``path`` and print the profile, the seconds it took and this process's peak RSS
    (the parent reads them from stdout)."""
    from section_worker.kinds.profile_table import ProfileOptions, profile_file

    started, cpu_before = time.monotonic(), usage(os.getpid()).cpu_s
    profile = profile_file(path, options=ProfileOptions(**options))
    elapsed = time.monotonic() - started
    done = usage(os.getpid())
    answer = {"elapsed_s": elapsed, "cpu_s": done.cpu_s - cpu_before, "peak_rss": done.peak_rss}
    print(json.dumps(answer | {"profile": profile}))
    return 0


def run_child(path: Path, opts: argparse.Namespace) -> tuple[dict[str, Any], int]:
    """The child's answer and the highest VmRSS sampled while it ran."""
    options: dict[str, Any] = {}
    if opts.read_chunk_mib is not None:
        options["read_chunk_bytes"] = int(opts.read_chunk_mib * MIB)
    env = dict(os.environ)
    if opts.threads is not None:
        env["POLARS_MAX_THREADS"] = str(opts.threads)
    command = [sys.executable, "-m", "bench.profile", "--child", str(path)]
    command += ["--options", json.dumps(options)]
    sampled = 0
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out)
        while proc.poll() is None:
            with contextlib.suppress(OSError, ValueError, IndexError):  # it just ended
                sampled = max(sampled, usage(proc.pid).rss)
            time.sleep(0.05)
        out.seek(0)
        text = out.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"the profiling process exited with {proc.returncode}")
    return json.loads(text), sampled


# --- the summary ----------------------------------------------------------------------------


def _malformed_check(profile: dict[str, Any], injected: Injected | None) -> dict[str, Any]:
    found = profile["malformed"]
    invalid = {c["name"]: c["invalid"] for c in profile["columns"] if c["invalid"]}
    summary: dict[str, Any] = {
        "found": {
            "ragged_rows": found["ragged_rows"],
            "ragged_lines": [s["line"] for s in found["ragged_samples"]],
            "invalid_values": invalid,
        }
    }
    if injected is None:
        return summary
    expected = {
        "ragged_rows": injected.extra_field + injected.missing_field,
        "ragged_lines": injected.lines[: len(found["ragged_samples"])],
        "invalid_values": {"amount": injected.bad_numbers, "quantity": injected.bad_numbers},
    }
    summary["expected"] = expected
    summary["rows_expected"] = injected.rows
    summary["exact"] = summary["found"] == expected and profile["file"]["rows"] == injected.rows
    return summary


def run(opts: argparse.Namespace) -> dict[str, Any]:
    """Generate (or take) the file, profile it in a child process, and sum up."""
    import polars as pl

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as folder:
        injected: Injected | None = None
        generate_s = None
        if opts.file is not None:
            path = opts.file
        else:
            path = Path(folder) / "bench.csv"
            say(f"writing a {opts.size_mb:.0f} MB CSV to {path}")
            started = time.monotonic()
            injected = generate(path, int(opts.size_mb * 1_000_000))
            generate_s = round(time.monotonic() - started, 1)
            say(f"written: {path.stat().st_size} bytes, {injected.rows} rows in {generate_s} s")
        size = path.stat().st_size
        say("profiling in a child process")
        answer, sampled = run_child(path, opts)
    elapsed = answer["elapsed_s"]
    peak_mib = answer["peak_rss"] / MIB
    profile = answer["profile"]
    malformed = _malformed_check(profile, injected)
    passed = peak_mib <= opts.target_mib
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "node": platform.node(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "note": "2 cores shared with other work; the load average shows how busy",
        },
        "code": code_version(),
        "polars": pl.__version__,
        "options": {
            "read_chunk_mib": opts.read_chunk_mib,
            "polars_max_threads": opts.threads,
        },
        "file": {
            "bytes": size,
            "rows": profile["file"]["rows"],
            "columns": profile["file"]["columns"],
            "generated_in_s": generate_s,
        },
        "elapsed_s": round(elapsed, 1),
        "mb_per_s": round(size / 1_000_000 / elapsed, 1),
        # CPU seconds (all threads) of the profile: steadier than elapsed on a shared machine.
        "cpu_s": round(answer["cpu_s"], 1),
        "peak_rss_mib": round(peak_mib, 1),
        "peak_rss_sampled_mib": round(sampled / MIB, 1),
        "target_mib": opts.target_mib,
        "result": "PASS" if passed else "FAIL",
        "malformed": malformed,
        "types": {c["name"]: c["type"] for c in profile["columns"]},
        "profile": profile,
    }


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmark (or, with ``--child``, the profile it measures)."""
    opts = parse_args(argv)
    if opts.child is not None:
        return child(opts.child, json.loads(opts.options))
    try:
        summary = run(opts)
    except RuntimeError as exc:
        say(f"aborted: {exc}")
        return 2
    opts.results_dir.mkdir(parents=True, exist_ok=True)
    path = opts.results_dir / f"profile-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    brief = {k: v for k, v in summary.items() if k != "profile"}
    print(json.dumps(brief | {"results_file": str(path)}, indent=2), flush=True)
    say(
        f"{summary['result']}: peak RSS {summary['peak_rss_mib']} MiB (target "
        f"{opts.target_mib:g}), {summary['elapsed_s']} s, {summary['mb_per_s']} MB/s"
    )
    exact = summary["malformed"].get("exact", True)
    return 0 if summary["result"] == "PASS" and exact else 1


if __name__ == "__main__":
    sys.exit(main())
