"""The event loop every service runs on, and the collector settings of a long-lived service.

uvloop where it is installed (the lock installs it on Linux and macOS): every service spends
most of its CPU in the loop and its transports, and on uvloop the saturation benchmark
(bench/README.md) measured 14 % less CPU per task over the services. asyncio's own loop
elsewhere.

:func:`run_service` also sets Python's cyclic garbage collector for a process that lives long
and allocates many short-lived objects per request: what exists once the service has started
(modules, settings, configuration) is frozen out of the collector's scans, and a young
collection runs after 10,000 allocations instead of 700, so most request objects are freed by
their reference counts before any scan sees them. In the saturation benchmark the collector's
share of a service's busy samples (``py-spy --native``; one run each way for the gateway, two
for the others) went from 6.5 % to none seen in the gateway, 3.7-5.4 % to 1.6-1.7 % in the
orchestrator and 5.9-7.8 % to none seen in a section worker (storage_svc: 0.2 % before, 0-0.2 %
after). Cyclic garbage lives a little longer: at most 10,000 young objects of it.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

YOUNG_THRESHOLD = 10_000  # allocations between young collections (Python's default: 700)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Runs ``main`` to completion on a new event loop, as :func:`asyncio.run` does."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        return asyncio.run(main)
    return uvloop.run(main)


def run_service(main: Coroutine[Any, Any, T]) -> T:
    """Runs a service's ``main`` as :func:`run` does, the collector set for a long life (see
    the module's docstring). Call it once everything the service keeps for its life is
    loaded."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    return run(main)
