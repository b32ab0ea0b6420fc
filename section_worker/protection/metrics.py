"""The protection's Prometheus metrics, defined once at import in the default registry (the
service's metrics endpoint exposes that registry).

- ``wealthai_platform_requests_total`` (counter; asset, outcome): attempts by how they ended
  (``answered``, ``throttled``, ``failed``, ``rejected``) or why the asset was skipped
  (``breaker_open``, ``cooling_down``, ``limited``, ``budget``);
- ``wealthai_fallbacks_total`` (counter; from_asset, to_asset): jobs moved on to the next asset;
- ``wealthai_breaker_state`` (gauge; asset): 0 closed, 1 half-open, 2 open, as this worker sees;
- ``wealthai_cooldowns_total`` (counter; asset): cool-downs started by a 429;
- ``wealthai_limit_queue_depth`` (gauge; scope ``asset`` or ``tenant``, name): jobs waiting for
  a rate or concurrency place;
- ``wealthai_tenant_spend_usd_total`` (counter; tenant): dollars spent (settled costs);
- ``wealthai_tenant_reserved_usd`` (gauge; tenant): dollars this worker holds reserved now;
- ``wealthai_limiter_seconds`` (histogram; step): time the store calls of an attempt take.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PLATFORM_REQUESTS = Counter(
    "wealthai_platform_requests_total",
    "Attempts on a platform asset, by asset and outcome.",
    ["asset", "outcome"],
)
FALLBACKS = Counter(
    "wealthai_fallbacks_total",
    "Jobs moved on from one asset of their chain to the next.",
    ["from_asset", "to_asset"],
)
BREAKER_STATE = Gauge(
    "wealthai_breaker_state",
    "Circuit breaker per asset: 0 closed, 1 half-open, 2 open.",
    ["asset"],
)
COOLDOWNS = Counter(
    "wealthai_cooldowns_total",
    "Cool-downs started on an asset by a 429.",
    ["asset"],
)
QUEUE_DEPTH = Gauge(
    "wealthai_limit_queue_depth",
    "Jobs waiting for a rate or concurrency place, per asset and per tenant.",
    ["scope", "name"],
)
TENANT_SPEND = Counter(
    "wealthai_tenant_spend_usd_total",
    "US dollars spent per tenant (settled costs).",
    ["tenant"],
)
TENANT_RESERVED = Gauge(
    "wealthai_tenant_reserved_usd",
    "US dollars held reserved per tenant by this worker.",
    ["tenant"],
)
LIMITER_SECONDS = Histogram(
    "wealthai_limiter_seconds",
    "Time spent in the protection's store calls, per step of an attempt.",
    ["step"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
