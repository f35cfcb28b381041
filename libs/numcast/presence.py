"""Presence: each worker announces itself in Redis under a key that expires unless renewed."""

from __future__ import annotations

import json

import redis

from numcast import parsing

HEARTBEAT_SECONDS = 2.0
TTL_SECONDS = 6  # three missed heartbeats and a worker is gone from the list
MAX_WORKERS_LISTED = 200


def key(channel: str, worker: str, host: str) -> str:
    """The key one worker process renews."""
    return f"numcast:presence:{channel}:{worker}:{host}"


def pattern(channel: str) -> str:
    """The keys of every worker of `channel` (SCAN's MATCH, and the key pattern of the Redis ACL)."""
    return f"numcast:presence:{channel}:*"


def announce(conn: redis.Redis, channel: str, info: dict) -> None:
    """Renew this worker's key with its current `info` (name, host, clients, received...)."""
    conn.set(key(channel, info["name"], info["host"]), json.dumps(info), ex=TTL_SECONDS)


def withdraw(conn: redis.Redis, channel: str, info: dict) -> None:
    """Remove this worker's key at a clean shutdown, so the list is right at once."""
    conn.delete(key(channel, info["name"], info["host"]))


def workers(conn: redis.Redis, channel: str) -> list[dict]:
    """The workers alive now, sorted by name then host."""
    keys = []
    for found in conn.scan_iter(match=pattern(channel), count=100):
        keys.append(found)
        if len(keys) >= MAX_WORKERS_LISTED:
            break
    found = []
    for raw in conn.mget(keys) if keys else []:
        if raw is None:
            continue  # expired between SCAN and MGET
        try:
            info = parsing.loads(raw)
        except ValueError:
            continue
        if isinstance(info, dict) and isinstance(info.get("name"), str):
            found.append(info)
    return sorted(found, key=lambda info: (info["name"], str(info.get("host"))))
