"""gRPC client channels between the services.

Every internal channel retries calls that failed before reaching a server (UNAVAILABLE) a few
times with backoff, and keeps the connection alive so a dead peer is noticed in seconds. With a
TLS identity it is mutual TLS and the server must prove the role the caller expects
(:mod:`common.tls`); without one (plaintext mode only) it is insecure.
"""

from __future__ import annotations

import json

import grpc

from common import tracing
from common.grpc_server import MAX_MESSAGE_BYTES
from common.tls import Identity, Role, expect_server

_SERVICE_CONFIG = json.dumps(
    {
        # Spread calls over every address a target names (several replicas behind one name).
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.enable_retries", 1),
    ("grpc.service_config", _SERVICE_CONFIG),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnect quickly after a peer restarts instead of backing off for up to two minutes.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


def open_channel(target: str, tls: Identity | None, server: Role) -> grpc.aio.Channel:
    """A channel to ``target``: ``host:port``, ``dns:///name:port`` (every address the name
    resolves to), or ``ipv4:ip:port,ip:port`` (a fixed list of replicas), whose servers have
    the role ``server``. ``tls`` is the caller's identity; ``None`` only in plaintext mode."""
    # With tracing on, every call carries the current trace (common/tracing.py).
    interceptors = tracing.client_interceptors() or None
    if tls is None:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS, interceptors=interceptors)
    return grpc.aio.secure_channel(
        target,
        tls.channel_credentials(),
        options=CHANNEL_OPTIONS + expect_server(server),
        interceptors=interceptors,
    )
