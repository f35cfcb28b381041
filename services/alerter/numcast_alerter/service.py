"""The alerter's moving parts: the subscriber feeding the rules, the clock, and the two ways alerts leave."""

from __future__ import annotations

import logging
import threading
import time

from numcast import alerts
from numcast.envelope import EnvelopeError, decode
from numcast.logs import Throttled
from numcast.redis_conn import redact
from numcast.settings import SettingsError
from numcast.subscriber import Subscriber
from numcast.tasks import Tasks
from numcast_alerter import rules
from numcast_alerter.alertmanager import AlertmanagerClient
from numcast_alerter.broadcast import Broadcaster
from numcast_alerter.evaluator import STATES, Evaluator
from numcast_alerter.settings import AlerterSettings

log = logging.getLogger(__name__)

TICK_SECONDS = 0.25  # how often `for` and silence are checked: the delay a time-driven change may add
EVAL_INTERVAL = TICK_SECONDS
FILE_CHECK_SECONDS = 1.0


class AlerterService:
    """Evaluates the rules on every value and on a clock; publishes changes and sends them to Alertmanager."""

    def __init__(self, settings: AlerterSettings, metrics) -> None:
        self.settings = settings
        try:
            self.rules = rules.RulesFile(settings.alert_rules)
        except rules.RulesError as exc:
            raise SettingsError(f"ALERT_RULES={settings.alert_rules!r}: {exc}") from None
        self.evaluator = Evaluator(self.rules.rules)
        self._lock = threading.Lock()  # values and the clock may evaluate at once in threading mode
        self._reload = threading.Event()
        self._warn = Throttled(log)
        self.counters = {
            "received": metrics.counter("received", "Messages received, by path (redis, webhook).", ("path",)),
            "rejected": metrics.counter(
                "rejected", "Messages rejected as invalid, by path and reason.", ("path", "reason")
            ),
            "published": metrics.counter(
                "alerts_published", "Alert changes published on ALERTS_CHANNEL, by origin.", ("origin",)
            ),
            "sent": metrics.counter("alertmanager_sent", "Alerts delivered to Alertmanager (changes and re-sends)."),
            "errors": metrics.counter("publish_errors", "Failed deliveries (then retried), by path.", ("path",)),
            "dropped": metrics.counter("dropped", "Alert changes dropped from a full queue, by path.", ("path",)),
            "reconnects": metrics.counter("reconnects", "Connections re-established after a failure.", ("path",)),
            "reloads": metrics.counter("rule_reloads", "Rules file reloads, by result (ok, error).", ("result",)),
            "ignored": metrics.counter("alerts_ignored", "Webhook alerts ignored as echoes of this alerter's own."),
        }
        self.rule_states = metrics.gauge("alert_rules", "Rules in each state (inactive, pending, firing).", ("state",))
        metrics.gauge("subscribed", "1 while subscribed to the channel.").set_function(
            lambda: int(self.subscriber.subscribed)
        )
        self.subscriber = Subscriber(
            settings.redis,
            {settings.channel: self._values},
            on_subscribed=self._subscribed,
        )
        self.broadcaster = Broadcaster(settings.redis, settings.alerts_channel, self.counters, self._adopt)
        self.alertmanager = None
        if settings.alertmanager_url:
            lease = 4 * max(EVAL_INTERVAL, settings.resend_seconds)  # Prometheus: 4 x max(eval interval, resend)
            self.alertmanager = AlertmanagerClient(
                settings.alertmanager_url,
                settings.resend_seconds,
                lease,
                settings.alertmanager_queue,
                self.counters,
                settings.external_url,
            )
            queued = metrics.gauge("alertmanager_queued", "Alert changes waiting for Alertmanager.")
            queued.set_function(lambda: len(self.alertmanager.backlog))
        self.tasks = Tasks()
        self._started = False

    def start(self, socketio) -> None:
        """Start the subscriber, the clock and the senders."""
        s = self.settings
        log.info(
            "alerter starting redis=%s channel=%s alerts_channel=%s rules=%s count=%d alertmanager=%s",
            redact(s.redis),
            s.channel,
            s.alerts_channel,
            self.rules.source,
            len(self.evaluator.rules),
            s.alertmanager_url or "none",
        )
        self.tasks.start(socketio, self.subscriber.run, "subscriber")
        self.tasks.start(socketio, self.broadcaster.run, "broadcaster")
        self.tasks.start(socketio, self._clock, "clock")
        if self.alertmanager is not None:
            self.tasks.start(socketio, self.alertmanager.run, "alertmanager")
        self._started = True

    def stop(self) -> None:
        """Stop evaluating; give the senders a moment to deliver what is queued."""
        self.subscriber.stop()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and (
            len(self.broadcaster.backlog) or (self.alertmanager is not None and len(self.alertmanager.backlog))
        ):
            time.sleep(0.05)
        self.broadcaster.stopping.set()
        if self.alertmanager is not None:
            self.alertmanager.stopping.set()
        if not self.tasks.join(timeout=5):
            log.warning("some tasks did not stop within 5s")
        log.info("alerter stopped")

    def reload(self) -> None:
        """Ask the clock to re-read the rules file (SIGHUP calls this; it only sets a flag)."""
        self._reload.set()

    def ready(self) -> tuple[bool, dict]:
        """Ready once started, whatever Redis does: its webhook and /api/alerts must stay up to show an outage."""
        detail = {"redis": "subscribed" if self.subscriber.subscribed else "down"}
        if self.subscriber.refused:  # credentials or the ACL: only a person can fix that
            detail["redis_refused"] = self.subscriber.refused
        return self._started, detail

    def webhook(self, payload: object) -> tuple[int, list[str]]:
        """Publish the good alerts of an Alertmanager webhook payload; (published, errors of the skipped ones).

        Raises AlertError, publishing nothing, when the payload itself is not a webhook payload.
        """
        try:
            messages, rejected = alerts.from_webhook(payload)
        except alerts.AlertError as exc:
            self.counters["rejected"].labels("webhook", exc.reason).inc()
            self._warn.warning(f"webhook:{exc.reason}", "webhook rejected reason=%s detail=%s", exc.reason, exc)
            raise
        self.counters["received"].labels("webhook").inc()
        for exc in rejected:
            self.counters["rejected"].labels("webhook", exc.reason).inc()
            self._warn.warning(f"webhook:{exc.reason}", "webhook alert skipped reason=%s detail=%s", exc.reason, exc)
        own = {rule.fingerprint for rule in self.evaluator.rules}
        published = 0
        for message in messages:
            # Our own stream alerts come back when Alertmanager routes everything here; the stream already told.
            if alerts.fingerprint(message["alertname"], message["labels"]) in own:
                self.counters["ignored"].inc()
                continue
            self.broadcaster.send(message)
            published += 1
        return published, [str(exc) for exc in rejected]

    def status(self) -> dict:
        """Every rule with its state, and how delivery goes, as GET /api/alerts shows it."""
        with self._lock:
            rule_states = [state.to_dict() for state in self.evaluator.states.values()]
        return {
            "rules": rule_states,
            "source": self.rules.source,
            "loaded_at": self.rules.loaded_at,
            "reload_error": self.rules.error or None,
            "alertmanager": self.alertmanager.status() if self.alertmanager is not None else None,
            "redis": {
                "subscribed": self.subscriber.subscribed,
                "synced": self.broadcaster.synced,
                "refused": self.subscriber.refused or None,
            },
            "time": time.time(),
        }

    def _values(self, batch: list[bytes]) -> None:
        self.counters["received"].labels("redis").inc(len(batch))
        values = []
        for raw in batch:
            try:
                values.append(decode(raw).value)
            except EnvelopeError as exc:
                self.counters["rejected"].labels("redis", exc.reason).inc()
                self._warn.warning(f"redis:{exc.reason}", "message rejected reason=%s detail=%s", exc.reason, exc)
        if values:
            with self._lock:
                changes = self.evaluator.observe(values)
            self._emit(changes)

    def _subscribed(self, resumed: bool) -> None:
        if resumed:
            self.counters["reconnects"].labels("redis").inc()

    def _clock(self) -> None:
        next_file_check = 0.0
        while not self.tasks.stopping.wait(TICK_SECONDS):
            now = time.monotonic()
            if now >= next_file_check:
                next_file_check = now + FILE_CHECK_SECONDS
                if self.rules.changed():
                    self._reload.set()
            if self._reload.is_set():
                self._reload.clear()
                self._do_reload()
            with self._lock:
                changes = self.evaluator.tick()
                firing = self.evaluator.firing()
                counts = self.evaluator.counts()
                rule_states = [state.to_dict() for state in self.evaluator.states.values()]
            self._emit(changes)
            if self.alertmanager is not None:
                self.alertmanager.resend_due(firing, time.time())
            for state in STATES:
                self.rule_states.labels(state).set(counts[state])
            self.broadcaster.set_rules(rule_states)

    def _do_reload(self) -> None:
        try:
            loaded = self.rules.reload()
        except rules.RulesError as exc:
            self.counters["reloads"].labels("error").inc()
            log.error("rules reload refused, the old rules stay in force: %s", exc)
            return
        with self._lock:
            changes = self.evaluator.replace(loaded)
        self._emit(changes)
        self.counters["reloads"].labels("ok").inc()
        log.info("rules reloaded source=%s count=%d", self.rules.source, len(loaded))

    def _emit(self, changes: list[dict]) -> None:
        for message in changes:
            state = self.evaluator.states.get(message["alertname"])
            log.info(
                "alert %s alertname=%s value=%s fingerprint=%s",
                message["status"],
                message["alertname"],
                state.value if state is not None else None,
                message["fingerprint"],
            )
            self.broadcaster.send(message)
            if self.alertmanager is not None:
                self.alertmanager.update(message)

    def _adopt(self, entries: dict[str, dict]) -> None:
        """What a previous run left in Redis: a stream alert of ours fires on; any other stream alert resolves."""
        now = time.time()
        for fp, message in entries.items():
            if message["origin"] != "stream":
                continue
            with self._lock:
                adopted = self.evaluator.adopt(fp, alerts.timestamp(message["startsAt"]))
            if adopted:
                log.info("alert still firing from the previous run alertname=%s", message["alertname"])
                continue
            resolved = {**message, "status": "resolved", "endsAt": alerts.rfc3339(now)}
            self._emit([resolved])
