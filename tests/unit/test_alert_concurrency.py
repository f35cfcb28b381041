"""The alerter's service under threading mode's real threads: values, the webhook and reloads at once.

Threading mode runs the subscriber, the clock and every webhook request in threads of their own. Here real
threads drive one AlerterService (no server: nothing is started, the queues are read directly) with the GIL
switching every microsecond, so that any unguarded read or out-of-order emission shows up within seconds.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import pytest

from numcast.metrics import Metrics
from numcast.settings import from_env
from numcast_alerter.service import AlerterService
from numcast_alerter.settings import AlerterSettings

RULES = """\
rules:
  - alert: High
    above: 95
    labels: {{severity: warning}}
    annotations: {{summary: "{summary}"}}
"""
FOREIGN = {
    "status": "firing", "labels": {"alertname": "NumcastDiskFull"}, "annotations": {},
    "startsAt": "2026-01-01T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "0123456789abcdef",
}  # fmt: skip


@pytest.fixture
def fast_switching():
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def envelope(seq: int, value: float) -> bytes:
    return json.dumps({"seq": seq, "value": value, "ts": time.time(), "source": "test-1"}).encode()


def test_values_webhooks_and_reloads_at_once_keep_the_rules_whole_and_the_changes_in_order(tmp_path, fast_switching):
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.format(summary="one"))
    settings = from_env(AlerterSettings, {"ALERT_RULES": str(path)}, async_mode="threading")
    service = AlerterService(settings, Metrics())
    own = service.evaluator.rules[0].fingerprint
    echo = {**FOREIGN, "labels": {"alertname": "High", "severity": "warning"}, "fingerprint": own}
    sent: list[dict] = []  # every message handed to the channel's queue, in the order it was handed over
    send = service.broadcaster.send
    service.broadcaster.send = lambda message: (sent.append(message), send(message))
    errors: list[BaseException] = []
    deadline = time.monotonic() + 3.0

    def values():
        seq = 0
        while time.monotonic() < deadline:
            seq += 1
            service._values([envelope(seq, 99.0 if seq % 2 else 10.0)])

    def webhooks():
        while time.monotonic() < deadline:
            service.webhook({"version": "4", "alerts": [echo, FOREIGN]})

    def reloads():
        n = 0
        while time.monotonic() < deadline:
            n += 1
            path.write_text(RULES.format(summary=f"version {n}"))  # a changed rule: a firing one resolves
            service._do_reload()

    def guarded(work):
        def run():
            try:
                work()
            except BaseException as exc:  # the test reports it below
                errors.append(exc)

        return run

    threads = [threading.Thread(target=guarded(work)) for work in (values, values, webhooks, reloads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == [], f"a thread failed: {errors[0]!r}"
    echoed = [m for m in sent if m["fingerprint"] == own and m["origin"] == "alertmanager"]
    assert echoed == [], "the webhook published our own alert while a reload rebuilt the rules"
    ours = [m["status"] for m in sent if m["fingerprint"] == own]
    assert len(ours) > 100, "the threads changed the alert often"
    # Emitted in the order the state changed, an alert's changes alternate: firing, resolved, firing...
    repeated = [n for n in range(1, len(ours)) if ours[n] == ours[n - 1]]
    assert ours[0] == "firing" and not repeated, f"changes out of order at {repeated[:5]} of {len(ours)}"
    with service._lock:
        states = [state.state for state in service.evaluator.states.values()]  # none yet after a last reload
        assert ours[-1] == ("firing" if states == ["firing"] else "resolved"), (
            "the last change handed to the queue is not the rule's state: two changes were emitted out of order"
        )
