"""Redis cannot be filled, on a real Redis 7 with the roles' users and small bounds (numcast.redis_limits): clients
that never read are disconnected, presence keys are read with bounds, a full Redis refuses the log but not the
PUBLISH."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest
import redis
from conftest import envelope, eventually
from test_redis_acl import SYSTEM_REDIS, as_role, servers, subscribed, user_env

from numcast import presence, replay_log
from numcast.local import Redis

# The cluster's bounds scaled down so that the attacks stay small and quick: what is checked is the mechanism.
SMALL = {"maxmemory": "64mb", "clients": "4mb", "normal": "512kb 128kb 1"}
ENTRIES = 1000  # in the log: an XRANGE of all of it is ~150 KB
ATTACKERS, XRANGES = 20, 20  # 20 connections x 20 unread XRANGEs: ~60 MB of replies if nothing bounds them


@pytest.fixture(scope="module")
def server() -> Iterator[Redis]:
    """One Redis 7 with users and small bounds for the module; the log holds ENTRIES envelopes."""
    start = servers(SYSTEM_REDIS)
    found = next(start)(limits=SMALL)
    writer = replay_log.Writer(as_role(found, "control"), "numbers", 10_000, "test-1", 1000)
    for first in range(1, ENTRIES, 500):
        assert writer.publish([envelope(n) for n in range(first, first + 500)]) == 0
    yield found
    next(start, None)


def peak_rss_kb(pid: int) -> int:
    """The largest resident size the process has had (VmHWM), in kB."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def command(*parts: str) -> bytes:
    """One command in the Redis protocol."""
    return f"*{len(parts)}\r\n".encode() + b"".join(f"${len(p)}\r\n{p}\r\n".encode() for p in parts)


def unread(server: Redis, role: str) -> socket.socket:
    """A connection authenticated as `role` with a tiny receive buffer, so the replies pile up in Redis."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(command("AUTH", role, server.passwords[role]))
    assert sock.recv(5) == b"+OK\r\n"
    return sock


def received_until_closed(sock: socket.socket) -> int:
    """Read everything Redis sends until it closes the connection; the bytes read."""
    sock.settimeout(2)
    total = 0
    try:
        while chunk := sock.recv(1 << 20):
            total += len(chunk)
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"Redis kept the connection open after {total} bytes")
    finally:
        sock.close()
    return total


def test_workers_that_never_read_a_big_xrange_are_cut_off_before_they_fill_redis(server):
    before = peak_rss_kb(server.process.pid)
    attackers = [unread(server, "worker") for _ in range(ATTACKERS)]
    for sock in attackers:
        sock.sendall(command("XRANGE", "numbers:log", "-", "+") * XRANGES)
    # Redis reads every query sent before this PING's connection opened, and answers it after: all were run.
    assert as_role(server, "probe").ping()
    grown_mb = (peak_rss_kb(server.process.pid) - before) / 1024
    got = [received_until_closed(sock) for sock in attackers]
    reply = sum(len(envelope(n)) + 40 for n in range(1, ENTRIES + 1))  # an XRANGE of the whole log, in bytes
    assert max(got) < XRANGES * reply / 2, "each was disconnected long before its replies were all sent"
    assert grown_mb < 16, f"Redis grew by {grown_mb:.0f} MB for {ATTACKERS} clients that do not read"
    worker = as_role(server, "worker")
    assert len(worker.xrange("numbers:log")) == ENTRIES and worker.ping(), "the log and Redis are intact"


def test_an_oversized_presence_key_does_not_break_the_control_page(server, module_services):
    worker = as_role(server, "worker")
    big = presence.key("numbers", "big", "h")
    worker.execute_command("SETEX", big, 60, json.dumps({"name": "big", "pad": "x" * 600_000}))
    worker.execute_command("SETEX", presence.key("numbers", "big2", "h"), 5, "y" * 600_000)
    worker.execute_command("SETEX", presence.key("numbers", "forever", "h"), 10**8, '{"name": "forever"}')
    worker.execute_command("SETEX", presence.key("numbers", "odd", "h"), 5, "[1, 2")
    worker.execute_command("SETEX", presence.key("numbers", "deep", "h"), 5, "[" * 3000)
    presence.announce(worker, "numbers", {"name": "machine-1", "host": "h"})
    control = module_services("control", server.url, wait="/readyz", RATE_HZ="1", **user_env(server, "control"))
    # An MGET of both big keys is a reply past the control user's own output buffer limit: Redis would cut it off.
    names = eventually(lambda: [w["name"] for w in control.json("/api/workers")["workers"]])
    assert names == ["machine-1"]
    for reason, count in (("too_large", 2), ("expiry", 1), ("not_json", 2)):
        assert control.metric("numcast_presence_rejected_total", f'reason="{reason}"') >= count, reason
    assert "presence key skipped reason=too_large key=b'numcast:presence:numbers:big" in control.logs()
    presence.withdraw(worker, "numbers", {"name": "machine-1", "host": "h"})
    assert control.json("/api/workers")["workers"] == [], "withdrawn at once, without DEL"
    for name in ("big", "big2", "forever", "odd", "deep"):
        worker.execute_command("SETEX", presence.key("numbers", name, "h"), 1, presence.WITHDRAWN)


def test_a_worker_may_neither_delete_another_s_key_nor_write_one_that_never_expires(server):
    worker, other = as_role(server, "worker"), as_role(server, "worker")
    presence.announce(other, "numbers", {"name": "machine-2", "host": "h"})
    theirs = presence.key("numbers", "machine-2", "h")
    for attack in (
        ("DEL", theirs),
        ("UNLINK", theirs),
        ("SET", theirs, "{}"),
        ("SET", presence.key("numbers", "mine", "h"), "x" * 1000),
        ("PERSIST", theirs),
        ("EXPIRE", theirs, "0"),
        ("GETDEL", theirs),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            worker.execute_command(*attack)
    assert 0 < as_role(server, "control").pttl(theirs) <= presence.TTL_SECONDS * 1000


def test_a_full_redis_refuses_the_log_but_never_the_publish(caplog):
    from numcast.metrics import Metrics
    from numcast_control.outputs import RedisOutput

    start = servers(SYSTEM_REDIS)
    full = next(start)(limits={"maxmemory": "100kb"})  # below what an idle Redis uses: every write is refused
    try:
        pubsub = as_role(full, "worker").pubsub()
        subscribed(pubsub, "numbers")
        writer = replay_log.Writer(as_role(full, "control"), "numbers", 1000, "test-1", 1000)
        assert writer.publish([envelope(1), envelope(2)]) == 2, "both counted as not logged"
        # The control-plane's output, as it runs: counts, logs, and goes on publishing.
        metrics = Metrics()
        counters = {
            name: metrics.counter(name, "", ("path",)) for name in ("published", "errors", "dropped", "reconnects")
        }
        counters["log_errors"] = metrics.counter("log_errors", "")
        log = {"maxlen": 1000, "source": "test-1", "run": 1000}
        output = RedisOutput(full.endpoint("control"), "numbers", 100, counters, log)
        output.send([envelope(3)])
        output.send([envelope(4)])
        got = [eventually(lambda: pubsub.get_message(timeout=0.5)) for _ in range(4)]
        assert [json.loads(m["data"])["seq"] for m in got] == [1, 2, 3, 4], "all published"
        assert as_role(full, "worker").xrange("numbers:log") == []
        assert metrics.registry.get_sample_value("numcast_log_errors_total") == 2
        assert "envelopes published but not logged key=numbers:log count=1" in caplog.text
    finally:
        next(start, None)
