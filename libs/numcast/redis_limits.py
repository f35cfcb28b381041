"""Redis's memory bounds, as redis-server arguments: one source for the manifest, `numcast up` and the tests.

Nothing is ever evicted (`noeviction`): the replay log has no expiry and must never vanish silently, so a full
Redis refuses writes instead (the control-plane then publishes without logging, counts
`numcast_log_errors_total`, logs and keeps running). A client that does not read its replies (or its
messages) is disconnected past its output buffer limit, and on Redis 7 the clients together may hold at most
`maxmemory-clients`, the largest ones disconnected first.
"""

from __future__ import annotations

MAXMEMORY = "128mb"  # data; the container's limit is 256Mi (infra/k8s/10-redis.yaml)
MAXMEMORY_CLIENTS = "48mb"  # every client's buffers together (Redis 7)
# hard limit, soft limit, seconds over the soft limit: a worker's replay page (1,000 entries) is ~200 KB.
NORMAL = "16mb 4mb 10"
PUBSUB = "32mb 8mb 60"
MAXCLIENTS = 1000


def arguments(
    version: int,
    maxmemory: str = MAXMEMORY,
    clients: str = MAXMEMORY_CLIENTS,
    normal: str = NORMAL,
    pubsub: str = PUBSUB,
    maxclients: int = MAXCLIENTS,
) -> list[str]:
    """The redis-server arguments for Redis `version` (6 has no maxmemory-clients)."""
    found = [
        "--maxmemory", maxmemory, "--maxmemory-policy", "noeviction", "--maxclients", str(maxclients),
        "--client-output-buffer-limit", "normal", *normal.split(), "--client-output-buffer-limit", "pubsub",
        *pubsub.split(),
    ]  # fmt: skip
    if version >= 7:
        found += ["--maxmemory-clients", clients]
    return found
