"""A Redis user per role, as data: what each may run, on which keys and channels, rendered as ACL file lines.

One source of truth for `numcast up` (its embedded Redis), `scripts/redis_acl.py` (the Kubernetes Secret) and
the tests. The key patterns and channels derive from CHANNEL and ALERTS_CHANNEL, so another channel works too.

Redis 6.2 (the server the tests and `numcast up` use) and Redis 7 (the cluster's) differ in two ways that
matter here. 6.2 lets a new user reach every channel unless told otherwise, 7 none (acl-pubsub-default), so each
line says `resetchannels` before its `&` rules. And only 7 has read-only key patterns (`%R~`) and selectors; on 7
the keys a role only reads are read-only, and the alerter may PUBLISH on ALERTS_CHANNEL only. On 6.2 a channel
rule allows both PUBLISH and SUBSCRIBE, and a key rule both reads and writes (docs/security.md says so).
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets

from numcast import alerts, presence, replay_log
from numcast.push import stream

DEFAULT_VERSION = 7  # the cluster's Redis (infra/k8s/10-redis.yaml)


@dataclasses.dataclass(frozen=True)
class Role:
    """One Redis user: the commands it runs, the keys it reads and writes, the channels it uses."""

    name: str
    does: str  # what it may do, in words, for docs/security.md
    commands: tuple[str, ...]
    reads: tuple[str, ...] = ()  # key patterns it only reads (read-only on Redis 7)
    writes: tuple[str, ...] = ()  # key patterns it reads and writes
    subscribes: tuple[str, ...] = ()  # channels
    publishes: tuple[str, ...] = ()  # channels
    # (commands, key patterns): on Redis 7 those commands reach only those keys, in a selector of their own; 6.2 has
    # no selectors, and they reach every key of the role
    scoped: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())

    def rules(self, channel: str, alerts_channel: str, version: int = DEFAULT_VERSION) -> list[str]:
        """The ACL rules after `user NAME on #HASH`, for these channels on Redis `version` (6 or 7)."""
        names = {
            "channel": channel,
            "alerts_channel": alerts_channel,
            "log": replay_log.key(channel),
            "push_channel": stream.channel(channel),
            "push_log": replay_log.key(stream.channel(channel)),
            "presence": presence.pattern(channel),
            "alerts_key": alerts.key(alerts_channel),
            "lease": f"{channel}:generator",  # numcast_control.lease.key
            "rules_key": alerts.rules_key(alerts_channel),
        }
        fill = lambda items: [item.format(**names) for item in items]  # noqa: E731
        reads, writes = fill(self.reads), fill(self.writes)
        subscribes, publishes = fill(self.subscribes), fill(self.publishes)
        # A channel rule allows PUBLISH and SUBSCRIBE alike: on 7, a role that subscribes to some channels and
        # publishes on others gets PUBLISH in a selector of its own, limited to those.
        selector = version >= 7 and bool(subscribes) and bool(publishes) and set(publishes) != set(subscribes)
        scoped_commands, scoped_keys = self.scoped[0], fill(self.scoped[1])
        commands = [command for command in self.commands if not (selector and command == "publish")]
        commands += [command for command in scoped_commands if version < 7 and command not in commands]
        rules = ["resetkeys", "resetchannels", "-@all", *(f"+{command}" for command in commands)]
        if version >= 7:
            rules += [f"%R~{key}" for key in reads] + [f"~{key}" for key in writes]
            if selector:
                rules += [f"&{name}" for name in subscribes]
                rules.append("(" + " ".join(["+publish", *(f"&{name}" for name in publishes)]) + ")")
            else:
                rules += [f"&{name}" for name in dict.fromkeys(subscribes + publishes)]
            if scoped_commands:
                rules.append(
                    "(" + " ".join([*(f"+{c}" for c in scoped_commands), *(f"~{k}" for k in scoped_keys)]) + ")"
                )
        else:
            rules += [f"~{key}" for key in dict.fromkeys(reads + writes)]
            rules += [f"&{name}" for name in dict.fromkeys(subscribes + publishes)]
        return rules


# MULTI ... EXEC: each change is PUBLISHed and applied to the hash in one transaction (numcast_alerter.broadcast).
ALERTER_COMMANDS = (
    "ping", "select", "subscribe", "unsubscribe", "publish", "multi", "exec", "discard", "hgetall", "hset", "hdel",
    "set", "watch", "unwatch", "hmget",
)  # fmt: skip
# What Sentinel runs on the nodes it monitors (the Redis docs, "Sentinel and ACL"), on its hello channel only.
SENTINEL_COMMANDS = (
    "multi", "slaveof", "ping", "exec", "subscribe", "config|rewrite", "role", "publish", "info", "client|setname",
    "client|kill", "script|kill",
)  # fmt: skip

# WATCH + XREVRANGE, then MULTI, XADD, PUBLISH, EXEC (numcast.replay_log.Writer); SCAN, STRLEN, PTTL, GETRANGE
# (numcast.presence.workers); GET and HGETALL of the alerter's state; SET NX PX, then WATCH ... MULTI ... EXEC to
# renew it and DEL to give it back: the generator lease, renewed only while it is this replica's
# (numcast_control.lease, through redis-py's pipeline, which also sends UNWATCH and DISCARD).
CONTROL_COMMANDS = (
    "ping", "select", "watch", "multi", "exec", "xrevrange", "xadd", "publish", "scan",
    "strlen", "pttl", "getrange", "get", "hgetall", "unwatch", "discard",
)  # fmt: skip

# The commands are those the code sends today; a test runs each role's job against a real Redis of each version.
ROLES = (
    Role(
        "control",
        "publish on CHANNEL and its push channel and write their replay logs (WATCH, XREVRANGE, then XADD and "
        "PUBLISH in one MULTI/EXEC: no scripting); read the workers' presence (SCAN, then STRLEN, PTTL and a "
        "bounded GETRANGE of each) and the alerter's state for the control page; take, renew and give back the "
        "generator lease",
        CONTROL_COMMANDS,
        reads=("{presence}", "{alerts_key}", "{rules_key}"),
        writes=("{log}", "{push_log}", "{lease}"),
        publishes=("{channel}", "{push_channel}"),
        scoped=(("set", "del"), ("{lease}",)),  # SET and DEL for the lease only: never the replay logs
    ),
    Role(
        "worker",
        "subscribe to CHANNEL, its push channel and ALERTS_CHANNEL, read the replay logs and the active alerts, "
        "write presence keys with an expiry (SETEX only: no SET, no DEL)",
        ("ping", "select", "subscribe", "unsubscribe", "xrange", "xrevrange", "hgetall", "setex"),
        reads=("{log}", "{push_log}", "{alerts_key}"),
        writes=("{presence}",),
        subscribes=("{channel}", "{push_channel}", "{alerts_channel}"),
    ),
    Role(
        "alerter",
        "subscribe to CHANNEL and its push channel, publish on ALERTS_CHANNEL, and keep the active alerts and its "
        "rule states",
        ALERTER_COMMANDS,
        writes=("{alerts_key}", "{rules_key}"),
        subscribes=("{channel}", "{push_channel}"),
        publishes=("{alerts_channel}",),
    ),
    Role(
        "viewer",
        "subscribe to CHANNEL, its push channel and ALERTS_CHANNEL: `redis-cli subscribe` or `numcast tail` for a "
        "person",
        ("ping", "subscribe", "unsubscribe"),
        subscribes=("{channel}", "{push_channel}", "{alerts_channel}"),
    ),
    Role("probe", "PING only: Redis's own readiness and liveness probes", ("ping",)),
    Role("replica", "replicate from the primary (a Redis replica's `masteruser`)", ("psync", "replconf", "ping")),
    Role(
        "sentinel",
        "what Sentinel runs on the nodes it monitors: INFO, ROLE, SLAVEOF, CONFIG REWRITE, CLIENT KILL, and its "
        "hello messages",
        SENTINEL_COMMANDS,
        subscribes=("__sentinel__:hello",),
    ),
)
BY_NAME = {role.name: role for role in ROLES}
SERVICE_ROLES = {"control": "control", "worker": "worker", "alerter": "alerter"}  # `numcast <command>` -> role


def password_hash(password: str) -> str:
    """The `#<sha256 hex>` form Redis keeps: the ACL file never holds a password."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def new_passwords() -> dict[str, str]:
    """A fresh random password per role (`numcast up` makes new ones at each run)."""
    return {role.name: secrets.token_hex(24) for role in ROLES}


def render(
    passwords: dict[str, str], channel: str = "numbers", alerts_channel: str = "alerts", version: int = DEFAULT_VERSION
) -> str:
    """The ACL file: the default user off, then one line per role with its password's hash."""
    lines = ["user default off nopass resetkeys resetchannels -@all"]
    for role in ROLES:
        rules = role.rules(channel, alerts_channel, version)
        lines.append(" ".join(["user", role.name, "on", password_hash(passwords[role.name]), *rules]))
    return "\n".join(lines) + "\n"


def server_version(version_output: str) -> int:
    """The major version from `redis-server --version` (`Redis server v=6.2.5 ...`)."""
    marker = version_output.split("v=", 1)[1]
    return int(marker.split(".", 1)[0])
