"""Protected AI calls: every platform attempt of a section job passes through here.

One idea per module: :mod:`~.chain` (the fallback loop), :mod:`~.breaker` (circuit breakers),
:mod:`~.quotas` (rates and concurrency per asset and tenant), :mod:`~.budgets` (money reserved
before a call, settled after), :mod:`~.holds` (leases and reservations kept alive),
:mod:`~.store` and :mod:`~.redis_store` (where the shared state lives), :mod:`~.metrics`, and
:mod:`~.guard` (all of it put together for one worker).
"""
