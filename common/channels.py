"""gRPC client channels between the services.

Every internal channel retries calls that failed before reaching a server (UNAVAILABLE) a few
times with backoff, and keeps the connection alive so a dead peer is noticed in seconds.
"""

from __future__ import annotations

import json

import grpc

from common.grpc_server import MAX_MESSAGE_BYTES

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


def open_channel(target: str) -> grpc.aio.Channel:
    """An insecure channel to ``target``: ``host:port``, ``dns:///name:port`` (every address
    the name resolves to), or ``ipv4:ip:port,ip:port`` (a fixed list of replicas)."""
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
