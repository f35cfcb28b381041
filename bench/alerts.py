"""From a threshold crossing to the alert on a dashboard's Socket.IO connection and in Alertmanager.

A control-plane publishes at `--rate` values per second between 0 and 50, a worker and the alerter subscribe,
and a real Alertmanager takes the alerter's alerts. The rule is `above: 95` with `for: 0s`. Each round PATCHes
the range to 96-99; the crossing is the `ts` of the first envelope above 95 (the control-plane's clock, the same
host). The script measures, from the crossing:

- dashboard: the arrival of the first `alerts` event that lists the alert, on a Socket.IO client of the worker;
- Alertmanager: the alert's `updatedAt` there (Alertmanager's receipt time), found by polling /api/v2/alerts;
- reference: the arrival of that same envelope as a `numbers` event on the same client (one hop less).

Then it PATCHes the range back, waits until the alert is resolved in both, and starts the next round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
import urllib.request

import socketio
from _common import run

from numcast import alerts
from numcast.local import Alertmanager, alertmanager_binary, wait_http
from numcast.stack import Stack

RULES = "rules:\n  - {alert: BenchValueHigh, above: 95, labels: {severity: warning}}\n"


class Dashboard:
    """A Socket.IO client of the worker that keeps arrival times of values and of alert sets."""

    def __init__(self, url: str) -> None:
        self.lock = threading.Lock()
        self.values: list[tuple[float, float, float]] = []  # (ts, value, arrival)
        self.alerts: list[tuple[float, list[str]]] = []  # (arrival, alertnames)
        self.client = socketio.Client(reconnection=False)
        self.client.on("numbers", self._numbers)
        self.client.on("alerts", self._alerts)
        self.client.connect(url, transports=["websocket"], wait_timeout=10)

    def _numbers(self, batch: list[dict]) -> None:
        now = time.time()
        with self.lock:
            self.values.extend((e["ts"], e["value"], now) for e in batch)

    def _alerts(self, payload: dict) -> None:
        now = time.time()
        with self.lock:
            self.alerts.append((now, [a["alertname"] for a in payload["alerts"]]))

    def crossing(self, after: float) -> tuple[float, float] | None:
        """(ts, arrival) of the first value above 95 published after `after`."""
        with self.lock:
            return next(((ts, at) for ts, value, at in self.values if ts > after and value > 95), None)

    def alert_since(self, after: float, present: bool) -> float | None:
        """Arrival of the first alerts event after `after` that lists the alert (or, `present=False`, does not)."""
        with self.lock:
            return next(
                (at for at, names in self.alerts if at > after and ("BenchValueHigh" in names) == present), None
            )


def patch(url: str, body: dict) -> None:
    request = urllib.request.Request(
        url + "/api/config", json.dumps(body).encode(), method="PATCH", headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=10).read()


def wait(check, timeout: float = 20.0, interval: float = 0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    raise TimeoutError(f"nothing after {timeout}s: {check}")


def received_by_alertmanager(manager: Alertmanager) -> float | None:
    for alert in manager.alerts():
        if alert["labels"]["alertname"] == "BenchValueHigh":
            return alerts.timestamp(alert["updatedAt"])
    return None


def main() -> int:
    """Run the rounds; print each one, the medians and the ratio to the reference."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--rate", type=float, default=50.0, help="values per second (default 50)")
    args = parser.parse_args()
    if alertmanager_binary() is None:
        raise SystemExit("no Alertmanager: apt-get install -y prometheus-alertmanager")
    rules = os.path.join(tempfile.mkdtemp(prefix="numcast-bench-"), "rules.yaml")
    with open(rules, "w") as file:
        file.write(RULES)
    manager = Alertmanager().start()
    print(f"alerts bench: {args.rounds} rounds, {args.rate:g} values/s, rule above 95 for 0s", flush=True)
    rows: list[tuple[float, float, float]] = []
    try:
        with Stack(
            1,
            mirror=False,
            env={"LOG_LEVEL": "WARNING"},
            control_env={"RATE_HZ": str(args.rate), "VALUE_MIN": "0", "VALUE_MAX": "50"},
            alerter_env={"ALERT_RULES": rules, "ALERTMANAGER_URLS": manager.url},
        ) as stack:
            for url in (stack.worker_urls[0], stack.alerter_url, stack.control_url):
                wait_http(url + "/readyz", 30)
            dashboard = Dashboard(stack.worker_urls[0])
            time.sleep(1.0)
            for round_ in range(1, args.rounds + 1):
                before = time.time()
                patch(stack.control_url, {"min": 96, "max": 99})
                crossed, value_arrival = wait(lambda before=before: dashboard.crossing(before))
                shown = wait(lambda crossed=crossed: dashboard.alert_since(crossed, True))
                held = wait(lambda: received_by_alertmanager(manager))
                rows.append((shown - crossed, held - crossed, value_arrival - crossed))
                print(
                    f"round {round_}: dashboard {1000 * (shown - crossed):.1f} ms, "
                    f"alertmanager {1000 * (held - crossed):.1f} ms, the value itself {1000 * rows[-1][2]:.1f} ms",
                    flush=True,
                )
                back = time.time()
                patch(stack.control_url, {"min": 0, "max": 50})
                wait(lambda back=back: dashboard.alert_since(back, False))
                wait(lambda: received_by_alertmanager(manager) is None)
                time.sleep(0.5)
            dashboard.client.disconnect()
    finally:
        manager.stop()
    shown, held, value = (statistics.median(column) for column in zip(*rows, strict=True))
    print(
        f"median over {len(rows)} rounds: dashboard {1000 * shown:.1f} ms, alertmanager {1000 * held:.1f} ms; "
        f"the crossing value itself reached the dashboard in {1000 * value:.1f} ms "
        f"(dashboard alert / value = {shown / value:.2f})"
    )
    return 0


if __name__ == "__main__":
    run(main)
