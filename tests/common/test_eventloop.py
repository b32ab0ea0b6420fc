"""A service's process: its loop, and the collector set for a long life (in a child process,
since the collector's settings are the whole interpreter's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PROBE = """
import asyncio, gc, json
from common import eventloop

async def main():
    await asyncio.sleep(0)
    return {
        "frozen": gc.get_freeze_count(),
        "threshold": gc.get_threshold(),
        "loop": type(asyncio.get_running_loop()).__module__,
    }

print(json.dumps({"before": gc.get_threshold(), "service": eventloop.run_service(main())}))
"""


def test_a_service_freezes_what_it_loaded_and_collects_young_objects_less_often() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    seen = json.loads(out)
    before, service = seen["before"], seen["service"]
    assert service["frozen"] > 1000  # what the modules imported before it started hold
    assert service["threshold"] == [10_000, before[1], before[2]]
    assert service["loop"].startswith("uvloop")
