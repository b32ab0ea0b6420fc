"""The event loop every service runs on.

uvloop where it is installed (the lock installs it on Linux and macOS): every service spends
most of its CPU in the loop and its transports, and on uvloop the saturation benchmark
(bench/README.md) measured 14 % less CPU per task over the services. asyncio's own loop
elsewhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Runs ``main`` to completion on a new event loop, as :func:`asyncio.run` does."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - platforms without uvloop
        return asyncio.run(main)
    return uvloop.run(main)
