"""The alerter's moving parts: the subscriber feeding the rules, the clock, and the two ways alerts leave."""

from __future__ import annotations

import logging
import threading
import time

from numcast import alerts, envelope
from numcast.envelope import EnvelopeError, decode
from numcast.logs import Throttled
from numcast.push import stream
from numcast.redis_conn import redact
from numcast.settings import SettingsError
from numcast.subscriber import Subscriber
from numcast.tasks import Tasks
from numcast_alerter import rules
from numcast_alerter.alertmanager import AlertmanagerClient
from numcast_alerter.broadcast import Broadcaster
from numcast_alerter.evaluator import Evaluator
from numcast_alerter.held import WebhookAlerts
from numcast_alerter.label_sets import REFUSALS, STATES
from numcast_alerter.settings import AlerterSettings

log = logging.getLogger(__name__)

TICK_SECONDS = 0.25  # how often `for` and silence are checked: the delay a time-driven change may add
EVAL_INTERVAL = TICK_SECONDS
FILE_CHECK_SECONDS = 1.0
SUMMARY_SECONDS = 1.0  # how often the rules' summaries are rebuilt for the control page (Redis gets them each second)


class AlerterService:
    """Evaluates the rules on every value and on a clock; publishes changes and sends them to Alertmanager.

    Threads (threading mode runs the subscriber, the clock, the senders and every HTTP request in threads of
    their own; eventlet runs them as green threads, which switch at any I/O): one lock, `_lock`, guards the rule
    states and the webhook alerts, and orders what leaves. Every path that changes them (a batch of values, the
    clock, a reload, a webhook call, the first read of Redis, a reconciliation) computes its changes and hands
    them to the senders' queues while it holds the lock. The queues only append in memory, so the lock is held
    for microseconds; the senders do their I/O outside it, and logging waits until it is released. So the
    changes of one alert reach every queue in the order its state changed, and no reader (the webhook, the
    status page) ever sees the rules half replaced.
    """

    def __init__(self, settings: AlerterSettings, metrics) -> None:
        self.settings = settings
        try:
            self.rules = rules.RulesFile(settings.alert_rules, settings.alert_max_label_sets)
        except rules.RulesError as exc:
            raise SettingsError(f"ALERT_RULES={settings.alert_rules!r}: {exc}") from None
        self.evaluator = Evaluator(self.rules.rules, max_label_sets=settings.alert_max_label_sets)
        urls = settings.alertmanagers
        # With Alertmanagers to ask, their list ends a webhook alert; without, a lease does (numcast_alerter.held).
        self.webhook_alerts = WebhookAlerts(None if urls else settings.webhook_lease_seconds)
        self._lock = threading.Lock()
        self._reload = threading.Event()
        self._warn = Throttled(log)
        self.evaluated_at: float | None = None
        self.counters = {
            "received": metrics.counter("received", "Messages received, by path (redis, webhook).", ("path",)),
            "rejected": metrics.counter(
                "rejected", "Messages rejected as invalid, by path and reason.", ("path", "reason")
            ),
            "published": metrics.counter(
                "alerts_published", "Alert changes published on ALERTS_CHANNEL, by origin.", ("origin",)
            ),
            "errors": metrics.counter("publish_errors", "Failed deliveries (then retried), by path.", ("path",)),
            "duplicates": metrics.counter(
                "alerts_duplicate",
                "Alert changes not published: the active set in Redis said so already (another alerter replica).",
            ),
            "dropped": metrics.counter("dropped", "Alert changes dropped from a full queue, by path.", ("path",)),
            "reconnects": metrics.counter("reconnects", "Connections re-established after a failure.", ("path",)),
            "reloads": metrics.counter("rule_reloads", "Rules file reloads, by result (ok, error).", ("result",)),
            "ignored": metrics.counter("alerts_ignored", "Webhook alerts ignored as echoes of this alerter's own."),
            "expired": metrics.counter(
                "alerts_expired",
                "Alerts from Alertmanager resolved by the alerter, by reason (sync: no Alertmanager holds them; "
                "lease: no notification for WEBHOOK_LEASE_SECONDS).",
                ("reason",),
            ),
            "am_sent": metrics.counter(
                "alertmanager_sent", "Alerts delivered to each Alertmanager (changes and re-sends).", ("url",)
            ),
            "am_errors": metrics.counter(
                "alertmanager_errors", "Failed requests to each Alertmanager (sends, retried, and lists).", ("url",)
            ),
            "am_queued": metrics.gauge("alertmanager_queued", "Alert changes waiting for each Alertmanager.", ("url",)),
            "refused": metrics.counter(
                "alert_label_sets_refused",
                "New label sets a rule did not take, by rule and reason (limit: its max_label_sets; total: "
                "ALERT_MAX_LABEL_SETS for every rule together; invalid: its alert would not fit a message).",
                ("rule", "reason"),
            ),
        }
        self.rule_states = metrics.gauge(
            "alert_rules", "Rules in each state (inactive, pending, firing): the state of the rule's worst label set.",
            ("state",),
        )  # fmt: skip
        self.label_set_states = metrics.gauge(
            "alert_label_sets", "Label sets the rules keep, in each state (inactive, pending, firing).", ("state",)
        )
        metrics.gauge(
            "rule_reload_successful",
            "1 while the rules in force are the rules file's content; 0 after a refused reload, until a good one.",
        ).set_function(lambda: int(not self.rules.error))
        metrics.gauge("subscribed", "1 while subscribed to the channel.").set_function(
            lambda: int(self.subscriber.subscribed)
        )
        self.subscriber = Subscriber(
            settings.redis,
            {settings.channel: self._values, stream.channel(settings.channel): self._pushed},
            on_subscribed=self._subscribed,
        )
        self.broadcaster = Broadcaster(settings.redis, settings.alerts_channel, self.counters, self._adopt)
        self.subscriber.retry_max = self.broadcaster.retry_max = settings.redis_retry_max_seconds
        self.broadcaster.set_rules(self.evaluator.summaries())
        self._summary_due = 0.0
        lease = 4 * max(EVAL_INTERVAL, settings.resend_seconds)  # Prometheus: 4 x max(eval interval, resend)
        self.alertmanagers = [
            AlertmanagerClient(
                url,
                settings.resend_seconds,
                lease,
                settings.alertmanager_queue,
                self.counters,
                settings.external_url,
                settings.alertmanager_backoff_max_seconds,
            )
            for url in urls
        ]
        self._zero()
        self.tasks = Tasks()
        self._started = False

    def _zero(self) -> None:
        """Every label value the alerter knows, at 0: a series born at its first increment hides it from increase()."""
        c = self.counters
        for path in ("redis", "webhook"):
            c["received"].labels(path)
        for reason in envelope.REASONS:
            c["rejected"].labels("redis", reason)
        for reason in alerts.WEBHOOK_REASONS:
            c["rejected"].labels("webhook", reason)
        for origin in alerts.ORIGINS:
            c["published"].labels(origin)
        for path in ("redis", "alertmanager"):
            c["dropped"].labels(path)
        c["errors"].labels("redis")
        c["reconnects"].labels("redis")
        for result in ("ok", "error"):
            c["reloads"].labels(result)
        for reason in ("sync", "lease"):
            c["expired"].labels(reason)
        for state in STATES:
            self.rule_states.labels(state)  # the clock sets them from its first tick
            self.label_set_states.labels(state)
        self._zero_rules((), self.evaluator.rules)

    def _zero_rules(self, before: tuple[rules.Rule, ...], after: tuple[rules.Rule, ...]) -> None:
        """The refusal counters of the rules in force at 0, those of rules gone removed (names come and go)."""
        names = {rule.alert for rule in after}
        for rule in before:
            if rule.alert not in names:
                for reason in REFUSALS:
                    self.counters["refused"].remove(rule.alert, reason)
        for name in names:
            for reason in REFUSALS:
                self.counters["refused"].labels(name, reason)

    def start(self, socketio) -> None:
        """Start the subscriber, the clock and the senders."""
        s = self.settings
        log.info(
            "alerter starting redis=%s channel=%s alerts_channel=%s rules=%s count=%d alertmanagers=%s",
            redact(s.redis),
            s.channel,
            s.alerts_channel,
            self.rules.source,
            len(self.evaluator.rules),
            ",".join(s.alertmanagers) or "none",
        )
        self.tasks.start(socketio, self.subscriber.run, "subscriber")
        self.tasks.start(socketio, self.broadcaster.run, "broadcaster")
        self.tasks.start(socketio, self._clock, "clock")
        for n, alertmanager in enumerate(self.alertmanagers):
            self.tasks.start(socketio, alertmanager.run, f"alertmanager-{n}")
        if self.alertmanagers:
            self.tasks.start(socketio, self._reconcile, "reconcile")
        self._started = True

    def stop(self) -> None:
        """Stop evaluating; give the senders a moment to deliver what is queued."""
        self.subscriber.stop()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and (
            len(self.broadcaster.backlog) or any(len(am.backlog) for am in self.alertmanagers)
        ):
            time.sleep(0.05)
        for sender in (self.broadcaster, *self.alertmanagers):
            sender.stopping.set()
            sender.backlog.ready.set()  # wakes its loop now rather than at its next poll
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
        now = time.time()
        published = ignored = 0
        with self._lock:
            for message in messages:
                # Our own stream alerts come back when Alertmanager routes everything here; the stream already told.
                if self.evaluator.owns(message["alertname"], message["labels"]):
                    ignored += 1
                elif self.webhook_alerts.accept(message, now):
                    self.broadcaster.send(message)
                    published += 1
                else:
                    rejected.append(alerts.AlertError("too_many", f"{message['alertname']}: {alerts.MAX_ACTIVE} held"))
        self.counters["ignored"].inc(ignored)
        for exc in rejected:
            self.counters["rejected"].labels("webhook", exc.reason).inc()
            self._warn.warning(f"webhook:{exc.reason}", "webhook alert skipped reason=%s detail=%s", exc.reason, exc)
        return published, [str(exc) for exc in rejected]

    def status(self) -> dict:
        """Every rule with its state, and how delivery goes, as GET /api/alerts shows it."""
        with self._lock:
            rule_states = self.evaluator.summaries()
            held = len(self.webhook_alerts)
        return {
            "rules": rule_states,
            "source": self.rules.source,
            "loaded_at": self.rules.loaded_at,
            "reload_error": self.rules.error or None,
            "evaluated_at": self.evaluated_at,
            "alertmanagers": [alertmanager.status() for alertmanager in self.alertmanagers],
            "webhook": {
                "held": held,
                "lease_seconds": self.webhook_alerts.lease,
                "sync_seconds": self.settings.alertmanager_sync_seconds if self.alertmanagers else None,
            },
            "redis": {
                "subscribed": self.subscriber.subscribed,
                "synced": self.broadcaster.synced,
                "refused": self.subscriber.refused or None,
            },
            "time": time.time(),
        }

    def _pushed(self, batch: list[bytes]) -> None:
        """Messages of the push channel: each holds envelope lines, taken one by one as a worker takes them."""
        self._values([line for message in batch for line in stream.split(message)])

    def _values(self, batch: list[bytes]) -> None:
        self.counters["received"].labels("redis").inc(len(batch))
        samples = []
        for raw in batch:
            try:
                samples.append(decode(raw))
            except EnvelopeError as exc:
                self.counters["rejected"].labels("redis", exc.reason).inc()
                self._warn.warning(f"redis:{exc.reason}", "message rejected reason=%s detail=%s", exc.reason, exc)
        if samples:
            with self._lock:
                changes = self.evaluator.observe(samples)
                self._emit(changes)
                refusals = self.evaluator.take_refusals() if self.evaluator.refusals else {}
            self._log(changes)
            self._refused(refusals)

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
            self._tick()

    def _tick(self) -> None:
        now = time.time()
        with self._lock:
            changes = self.evaluator.tick()
            expired = self.webhook_alerts.expired(now)
            self._emit(changes + expired)
            firing = self.evaluator.firing()
            for alertmanager in self.alertmanagers:  # under the lock: a re-send never overtakes a resolution
                alertmanager.resend_due(firing, now)
            refusals = self.evaluator.take_refusals() if self.evaluator.refusals else {}
            summaries = None
            if time.monotonic() >= self._summary_due:
                self._summary_due = time.monotonic() + SUMMARY_SECONDS
                counts, rule_counts = self.evaluator.counts(), self.evaluator.rule_counts()
                summaries = self.evaluator.summaries()
        self._log(changes)
        self._refused(refusals)
        self._expired(expired, "lease")
        if summaries is not None:
            for state in STATES:
                self.rule_states.labels(state).set(rule_counts[state])
                self.label_set_states.labels(state).set(counts[state])
            self.broadcaster.set_rules(summaries)
        self.evaluated_at = now

    def _do_reload(self) -> None:
        try:
            loaded = self.rules.reload()
        except rules.RulesError as exc:
            self.counters["reloads"].labels("error").inc()
            log.error("rules reload refused, the old rules stay in force: %s", exc)
            return
        with self._lock:
            before = self.evaluator.rules
            changes = self.evaluator.replace(loaded)
            self._emit(changes)
            self._summary_due = 0.0  # the control page shows the new rules at the next tick
        self._zero_rules(before, loaded)
        self._log(changes)
        self.counters["reloads"].labels("ok").inc()
        log.info("rules reloaded source=%s count=%d", self.rules.source, len(loaded))

    def _reconcile(self) -> None:
        """Every ALERTMANAGER_SYNC_SECONDS: resolve the webhook alerts that no Alertmanager holds any more."""
        while not self.tasks.stopping.wait(self.settings.alertmanager_sync_seconds):
            asked_at = time.time()
            answers = [alertmanager.fingerprints() for alertmanager in self.alertmanagers]
            present = [answer for answer in answers if answer is not None]
            if not present:
                continue  # none could say: keep everything rather than guess
            with self._lock:
                ended = self.webhook_alerts.reconcile(set().union(*present), asked_at, time.time())
                self._emit(ended)
            self._expired(ended, "sync")

    def _emit(self, changes: list[dict]) -> None:
        """Hand `changes` to the senders' queues; the caller holds `_lock` (see the class docstring)."""
        for message in changes:
            self.broadcaster.send(message)
            if message["origin"] == "stream":
                for alertmanager in self.alertmanagers:
                    alertmanager.update(message)

    def _log(self, changes: list[dict]) -> None:
        for message in changes:
            log.info(
                "alert %s alertname=%s fingerprint=%s startsAt=%s",
                message["status"],
                message["alertname"],
                message["fingerprint"],
                message["startsAt"],
            )

    def _refused(self, refusals: dict[tuple[str, str], tuple[int, dict]]) -> None:
        for (rule, reason), (count, labels) in refusals.items():
            self.counters["refused"].labels(rule, reason).inc(count)
            why = {"limit": "its max_label_sets", "total": "ALERT_MAX_LABEL_SETS", "invalid": "too large an alert"}
            self._warn.warning(
                f"refused:{rule}:{reason}", "new label sets refused rule=%s reason=%s (%s) count=%d example=%s",
                rule, reason, why[reason], count, str(labels)[:300],
            )  # fmt: skip

    def _expired(self, ended: list[dict], reason: str) -> None:
        for message in ended:
            self.counters["expired"].labels(reason).inc()
            why = "no Alertmanager holds it" if reason == "sync" else "its lease ran out"
            log.info("alert from alertmanager resolved: %s alertname=%s fingerprint=%s", why, message["alertname"],
                     message["fingerprint"])  # fmt: skip

    def _adopt(self, entries: dict[str, dict]) -> None:
        """What a previous run left in Redis: a stream alert that still holds fires on; an Alertmanager one is held.

        Any other stream alert resolves. Called by the broadcaster at its first connection.
        """
        now = time.time()
        changes, kept = [], {}
        with self._lock:
            for fp, message in entries.items():
                if message["origin"] == "alertmanager":  # held as if just notified: its lease starts now
                    adopted = [] if self.webhook_alerts.accept(message, now) else None
                else:
                    adopted = self.evaluator.adopt(message)
                if adopted is None:
                    changes.append({**message, "status": "resolved", "endsAt": alerts.rfc3339(now)})
                else:
                    changes += adopted
                    kept[fp] = message
            self._emit(changes)
            self.broadcaster.hold(kept)
        for message in kept.values():
            log.info("alert still firing from the previous run alertname=%s", message["alertname"])
        self._log(changes)
