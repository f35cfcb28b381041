"""No single pod: Redis behind Sentinel, two control-planes and two alerters, and faults that take one of each.

One group per module (a primary, two replicas, three Sentinels with short timeouts, every node with the ACL
users); each test that kills the primary brings the node back as a replica before it ends.
"""

import json
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
from conftest import Browser, envelope, eventually, pause

from numcast import alerts
from numcast.redis_conn import client
from numcast.replicated import SentinelGroup

RATE = "200"
RULES = """\
rules:
  - alert: NumcastValueHigh
    above: 95
    labels: {severity: warning}
    annotations: {summary: "value above 95"}
"""


@pytest.fixture(scope="module")
def group():
    """Three Redis nodes and three Sentinels that take a silent primary for down after one second."""
    started = SentinelGroup(down_after_ms=1000, failover_timeout_ms=2000).start()
    yield started
    started.stop()


@pytest.fixture
def settled(group):
    """The group as the test found it: three nodes in sync, Sentinels agreeing; killed nodes brought back after."""
    eventually(group.agreed, timeout=20, message="the Sentinels agree on the primary and see every replica")
    killed = []
    yield killed
    for node in killed:
        group.bring_back(node)


def kill_primary(group, settled, how=signal.SIGKILL):
    """Signal the primary now; return it (a SIGKILLed one is started again, as a replica, after the test)."""
    node = group.primary()
    node.process.send_signal(how)
    if how == signal.SIGKILL:
        node.process.wait()
        settled.append(node)
    return node


def flowing(service, after: int):
    """The worker accepted a seq beyond `after`."""
    return lambda: (seqs := [e["seq"] for e in service.json("/api/history")["envelopes"]]) and seqs[-1] > after


def file_seqs(worker, source: str) -> list[int]:
    """The seqs of `source` in the worker's file (a fresh worker also files what the log holds of earlier tests)."""
    lines = [json.loads(line) for line in Path(worker.env["SINK_FILE"]).read_text().splitlines()]
    return [line["seq"] for line in lines if line["source"] == source]


def ha_services(services, group, command, role, **env):
    return services(command, "", wait="/readyz", **group.env(role), REDIS_RETRY_MAX_SECONDS="0.5", **env)


@pytest.mark.parametrize("mirror", [False, True], ids=["mirror-off", "mirror-on"])
def test_a_primary_killed_mid_stream_loses_nothing(group, settled, services, mirror):
    worker = ha_services(services, group, "worker", "worker", BATCH_MS="50")
    browser = Browser(worker.url)
    targets = f"127.0.0.1:{worker.env['TCP_PORT']}" if mirror else ""
    control = ha_services(services, group, "control", "control", RATE_HZ=RATE, TCP_MIRROR_TARGETS=targets)
    eventually(flowing(worker, 100), message="values flow")
    old = kill_primary(group, settled)
    at_kill = control.json("/api/status")["seq"]
    eventually(lambda: group.primary() is not old, timeout=10, message="the Sentinels promote a replica")
    eventually(
        lambda: worker.metric("numcast_reconnects_total", 'path="redis"') >= 1,
        timeout=10,
        message="the worker subscribes to the new primary",
    )
    eventually(flowing(worker, at_kill + 200), timeout=10, message="values flow after the failover")
    last, source = pause(control), control.json("/api/status")["source"]
    eventually(lambda: browser.seqs()[-1:] == [last], message="the browser has the last seq")
    worker.stop()
    assert file_seqs(worker, source) == list(range(1, last + 1)), "the file: every value once, in order"
    assert [v["seq"] for v in browser.values if v["source"] == source] == list(range(1, last + 1)), "the socket too"
    browser.close()


def test_a_new_primary_that_missed_the_last_envelopes_gets_them_again(group, settled, services):
    control = ha_services(services, group, "control", "control", RATE_HZ=RATE)
    source = control.json("/api/status")["source"]
    reader = client(group.endpoint("worker"))
    eventually(lambda: control.json("/api/status")["seq"] > 50, message="values flow")
    old = group.primary()
    replicas = [node for node in group.nodes if node is not old]
    admin = redis.Redis(port=old.port, username="sentinel", password=group.passwords["sentinel"])

    def online() -> bool:  # the Sentinels' count of replicas may run ahead of a replica still syncing
        info = admin.info("replication")
        return [info.get(f"slave{n}", {}).get("state") for n in range(len(replicas))] == ["online"] * len(replicas)

    eventually(online, timeout=15, message="both replicas online at the primary")
    for node in replicas:  # replication stalls, then breaks: the primary acknowledges what no replica has
        node.process.send_signal(signal.SIGSTOP)
    try:
        assert admin.client_kill_filter(_type="replica") == len(replicas)
        admin.close()
        at_stop = control.json("/api/status")["seq"]
        eventually(lambda: control.json("/api/status")["seq"] > at_stop + 60, message="60 values only the primary has")
        kill_primary(group, settled)
    finally:
        for node in replicas:
            node.process.send_signal(signal.SIGCONT)
    eventually(lambda: group.primary() is not old, timeout=10, message="the Sentinels promote a replica")
    at_kill = control.json("/api/status")["seq"]
    eventually(lambda: control.json("/api/status")["outputs"][0]["sent"] > at_kill + 100, timeout=10)
    last = pause(control)
    entries = reader.xrange("numbers:log", "-", "+")
    seqs = [env["seq"] for env in (json.loads(fields[b"envelope"]) for _, fields in entries) if env["source"] == source]
    assert seqs == list(range(1, last + 1)), "the new primary's log: every seq once, in order, the lost tail too"
    reader.close()


def test_a_partitioned_primary_is_replaced_and_rejoins_as_a_replica(group, settled, services):
    worker = ha_services(services, group, "worker", "worker", BATCH_MS="50")
    control = ha_services(services, group, "control", "control", RATE_HZ=RATE)
    eventually(flowing(worker, 100), message="values flow")
    old = kill_primary(group, settled, signal.SIGSTOP)  # no reply, no FIN: the others cannot tell it from a cut cable
    try:
        at_stop = control.json("/api/status")["seq"]
        eventually(lambda: group.primary() is not old, timeout=10, message="the Sentinels promote a replica")
        eventually(flowing(worker, at_stop + 200), timeout=15, message="values flow through the new primary")
    finally:
        old.process.send_signal(signal.SIGCONT)
    eventually(group.agreed, timeout=15, message="the old primary rejoins, as a replica")
    last, source = pause(control), control.json("/api/status")["source"]
    eventually(flowing(worker, last - 1), message="the worker has the last seq")
    worker.stop()
    assert file_seqs(worker, source) == list(range(1, last + 1)), "every value once, in order"


def test_a_killed_control_plane_replica_hands_the_generator_to_the_other(group, settled, services):
    worker = ha_services(services, group, "worker", "worker", BATCH_MS="50")
    first, second = (ha_services(services, group, "control", "control", RATE_HZ=RATE, LEASE_SECONDS="1")
                     for _ in range(2))  # fmt: skip
    eventually(flowing(worker, 50), message="values flow")
    generating = [c for c in (first, second) if c.json("/api/status")["generating"]]
    assert len(generating) == 1, "exactly one replica generates"
    holder, other = (first, second) if generating[0] is first else (second, first)
    assert other.metric("numcast_generating") == 0 and holder.metric("numcast_generating") == 1
    holder_source = holder.json("/api/status")["source"]
    holder.kill()
    started = time.monotonic()
    eventually(lambda: other.json("/api/status")["generating"], timeout=5, message="the other takes the lease")
    took = time.monotonic() - started
    assert took < 2.5, f"the lease moved {took:.1f}s after the kill (LEASE_SECONDS=1)"
    other_source = other.json("/api/status")["source"]
    last = pause(other)
    eventually(lambda: worker.json("/api/history")["envelopes"][-1]["seq"] == last, message="the last value")
    assert worker.json("/api/status")["counters"]["gaps"] == 0
    worker.stop()
    lines = [json.loads(line) for line in Path(worker.env["SINK_FILE"]).read_text().splitlines()]
    sources = [line["source"] for line in lines if line["source"] in (holder_source, other_source)]
    assert sources == sorted(sources, key=[holder_source, other_source].index), "one source, then the other"
    by_source = {s: [line["seq"] for line in lines if line["source"] == s] for s in (holder_source, other_source)}
    assert by_source[other_source] == list(range(1, last + 1)), "the new holder's values: all, once, in order"
    held = by_source[holder_source]
    assert held == list(range(1, len(held) + 1)), "the dead holder's values: none missing, none twice"


def test_a_killed_alerter_replica_loses_no_alert_and_shows_none_twice(group, settled, services, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    replicas = [ha_services(services, group, "alerter", "alerter", ALERT_RULES=str(rules)) for _ in range(2)]
    for replica in replicas:
        eventually(lambda r=replica: r.json("/api/alerts")["redis"]["subscribed"], message="subscribed")
    heard: list[dict] = []
    listener = client(group.endpoint("viewer"), timeout=5).pubsub(ignore_subscribe_messages=True)
    listener.subscribe("alerts")
    stopping = threading.Event()

    def listen():
        while not stopping.is_set():
            if message := listener.get_message(timeout=0.1):
                heard.append(alerts.decode(message["data"]))

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    control = client(group.endpoint("control"))
    key = alerts.key("alerts")
    try:
        control.publish("numbers", envelope(1, value=99.0, source="by-hand"))
        replicas[0].kill()  # while the alert fires: one replica may have written it, or neither yet
        eventually(lambda: len(control.hgetall(key)) == 1, message="the survivor keeps it in the active set")
        replicas[0].start(wait="/readyz")  # adopts what is in Redis
        eventually(lambda: replicas[0].json("/api/alerts")["redis"]["subscribed"], message="back and subscribed")
        control.publish("numbers", envelope(2, value=1.0, source="by-hand"))
        replicas[1].kill()  # while it resolves
        eventually(lambda: len(control.hgetall(key)) == 0, message="the alert resolves in the active set")
        time.sleep(1.5)  # the rule states are rewritten each second: a late duplicate would show by now
    finally:
        stopping.set()
        thread.join()
        listener.close()
        control.close()
    changes = Counter((m["alertname"], m["status"]) for m in heard)
    assert changes == {("NumcastValueHigh", "firing"): 1, ("NumcastValueHigh", "resolved"): 1}, heard
