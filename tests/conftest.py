"""Settings every test process starts from.

The services serve Prometheus metrics on fixed default ports; tests that start services (in
this process or as child processes, which inherit the environment) run beside other test runs
and ``make run``, so the endpoint is off unless a test gives it a port of its own.
"""

from __future__ import annotations

import os

# The services' prefixes, no prefix for the shared base settings tests build directly, and
# make run's launcher (which numbers its processes' ports from DEVSTACK_METRICS_PORT).
for _prefix in ("GATEWAY_", "ORCH_", "STORAGE_", "WORKER_", "", "DEVSTACK_"):
    os.environ[f"{_prefix}METRICS_PORT"] = "0"
