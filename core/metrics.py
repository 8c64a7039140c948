"""What a server process counts, for Prometheus (/metrics, chatsite/metrics.py).

Each process serves its own numbers from its own registry, and Prometheus
scrapes every process (docs/deploy.md, "Metrics"): daphne processes are
separate servers on separate ports, not prefork workers sharing one, so
prometheus_client's multiprocess mode (files shared through a directory)
would buy nothing but its limits. Sums across processes are Prometheus's
job. Defined here, below every app, so accounts and messaging both count.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

registry = CollectorRegistry(auto_describe=True)

open_sockets = Gauge("chat_open_sockets", "WebSocket connections open in this process", registry=registry)
logged_in = Gauge("chat_logged_in_users", "Users logged in through this process", registry=registry)
messages_accepted = Counter(
    "chat_messages_accepted", "Messages stored and answered ok, by kind", ["kind"], registry=registry
)
deliveries = Counter(
    "chat_deliveries",
    "Deliveries of accepted messages: live (recipient online) or stored (waiting for their login)",
    ["how"],
    registry=registry,
)
pending = Gauge(
    "chat_pending_messages",
    "Delivery rows not acked yet, all processes (the database's count; a broadcast counts for a user from their login)",
    registry=registry,
)
acks = Counter("chat_acks", "Message ids acked by clients", registry=registry)
batch_size = Histogram(
    "chat_batch_requests",
    "Requests per group-commit batch",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
    registry=registry,
)
batch_seconds = Histogram(
    "chat_batch_seconds",
    "Time to commit one group-commit batch (and send its pushes)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=registry,
)
push_seconds = Histogram(
    "chat_push_seconds",
    "Time to hand one push to the channel layer",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
    registry=registry,
)
rate_limited = Counter("chat_rate_limited", "Requests refused by a rate limit", registry=registry)
locked_out = Counter("chat_locked_out", "Logins refused while a name or address was locked", registry=registry)
failed_logins = Counter("chat_failed_logins", "Logins with a wrong username or password", registry=registry)
logins_refused = Counter(
    "chat_logins_refused", "Logins told to come back later: too many under way at once", registry=registry
)
layer_outages = Counter(
    "chat_channel_layer_outages", "Times the channel layer (Redis) became unreachable", registry=registry
)
uploads = Counter(
    "chat_uploads", "File uploads, by result: stored, or the refusal's error code", ["result"], registry=registry
)
upload_bytes = Counter("chat_upload_bytes", "Bytes of files stored", registry=registry)
