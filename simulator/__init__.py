"""A local stand-in for the generative-AI platform ("PF interface", SPEC §3).

It speaks the platform's HTTP contract (token, create conversation, send prompt, poll) with
configurable latency, throttling, errors, failures, cost and token expiry, and answers the
same input with the same text and cost so tests can assert on them. ``/_sim/*`` endpoints
report and change its behaviour at runtime. Run it with ``python -m simulator``.
"""
