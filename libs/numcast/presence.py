"""Presence: each worker announces itself in Redis under a key that expires unless renewed."""

from __future__ import annotations

import json
from collections.abc import Callable

import redis

from numcast import parsing

HEARTBEAT_SECONDS = 2.0
TTL_SECONDS = 6  # three missed heartbeats and a worker is gone from the list
MAX_WORKERS_LISTED = 200
MAX_SCAN_CALLS = 100  # SCANs of 100 keys looked through for them
MAX_BYTES = 4096  # a worker's presence JSON is ~300 bytes
WITHDRAWN = "withdrawn"  # the value of a key a worker withdrew, for its last second


def key(channel: str, worker: str, host: str) -> str:
    """The key one worker process renews."""
    return f"numcast:presence:{channel}:{worker}:{host}"


def pattern(channel: str) -> str:
    """The keys of every worker of `channel` (SCAN's MATCH, and the key pattern of the Redis ACL)."""
    return f"numcast:presence:{channel}:*"


def announce(conn: redis.Redis, channel: str, info: dict) -> None:
    """Renew this worker's key with its current `info` (name, host, clients, received...)."""
    # SETEX, not SET ... EX: the worker user has SETEX only, so every key it writes expires.
    conn.execute_command("SETEX", key(channel, info["name"], info["host"]), TTL_SECONDS, json.dumps(info))


def withdraw(conn: redis.Redis, channel: str, info: dict) -> None:
    """Blank this worker's key at a clean shutdown, so the list is right at once (the worker user may not DEL)."""
    conn.execute_command("SETEX", key(channel, info["name"], info["host"]), 1, WITHDRAWN)


def workers(conn: redis.Redis, channel: str, rejected: Callable[[str, bytes], None] = lambda *_: None) -> list[dict]:
    """The workers alive now, sorted by name then host.

    Any holder of the worker user can write any presence key, so each is checked before it is read: at most
    MAX_WORKERS_LISTED keys from at most MAX_SCAN_CALLS SCANs, then for each its size, its expiry and its first
    MAX_BYTES bytes in one pipeline (GETRANGE: a bounded read, whatever the key grew to meanwhile). A key larger
    than MAX_BYTES, expiring later than TTL_SECONDS from now, or not a worker's JSON is skipped and
    `rejected(reason, key)` is called.
    """
    keys, cursor = [], 0
    for _ in range(MAX_SCAN_CALLS):
        cursor, found = conn.scan(cursor, match=pattern(channel), count=100)
        keys.extend(found[: MAX_WORKERS_LISTED - len(keys)])
        if cursor == 0 or len(keys) >= MAX_WORKERS_LISTED:
            break
    pipe = conn.pipeline(transaction=False)
    for name in keys:
        pipe.strlen(name).pttl(name).getrange(name, 0, MAX_BYTES - 1)
    replies = pipe.execute() if keys else []
    found = []
    for name, size, ttl, raw in zip(keys, replies[0::3], replies[1::3], replies[2::3], strict=True):
        if size > MAX_BYTES:
            rejected("too_large", name)
            continue
        if ttl == -2 or raw == WITHDRAWN.encode():
            continue  # expired between SCAN and GET, or withdrawn
        if not 0 < ttl <= TTL_SECONDS * 1000:
            rejected("expiry", name)
            continue
        try:
            info = parsing.loads(raw)  # nesting bounded (numcast.parsing): 4 KiB of `[` is no RecursionError
        except ValueError:
            info = None
        if isinstance(info, dict) and isinstance(info.get("name"), str):
            found.append(info)
        else:
            rejected("not_json", name)
    return sorted(found, key=lambda info: (info["name"], str(info.get("host"))))
