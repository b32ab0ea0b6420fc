"""Peers of the platform for the benchmark: the same work built another way, driven by the same
load clients against the same platform stand-in and the same S3 server.

:mod:`bench.peers.celery_peer` is a Celery 5 worker on Redis (broker and result backend) with a
threads pool, and :mod:`bench.peers.front` its small HTTP front, which takes the same submit,
status and result calls as the platform's gateway. :mod:`bench.peers.stack` starts them (with
Redis, the S3 server, the counting S3 proxy and the stand-in) as local processes;
``python -m bench.peers`` (:mod:`bench.peers.compare`) runs each scenario against the platform
and then against the peer, and prints the platform/peer ratios and the issue's targets
(``bench/README.md``).
"""
