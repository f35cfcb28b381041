"""The control-plane's moving parts: the generator and its outputs, started and stopped together."""

from __future__ import annotations

import logging
import threading
import time

import redis

from numcast import alerts, parsing, presence, replay_log
from numcast.logs import Throttled
from numcast.mirror_key import MirrorKeys
from numcast.push import stream
from numcast.redis_conn import CONNECTION_ERRORS, client, redact
from numcast.tasks import Tasks
from numcast_control.config import Config, apply_patch
from numcast_control.generator import Generator, new_source
from numcast_control.lease import Lease
from numcast_control.outputs import PushOutput, RedisOutput, TcpMirror
from numcast_control.push import Pusher
from numcast_control.settings import ControlSettings

log = logging.getLogger(__name__)


class ControlService:
    """Owns the generator, the Redis output and one TCP mirror per target."""

    def __init__(self, settings: ControlSettings, metrics) -> None:
        self.settings = settings
        counters = {
            "published": metrics.counter("published", "Envelopes delivered, by path.", ("path",)),
            "errors": metrics.counter("publish_errors", "Failed deliveries (then retried), by path.", ("path",)),
            "dropped": metrics.counter("dropped", "Envelopes dropped from a full output queue.", ("path",)),
            "reconnects": metrics.counter("reconnects", "Connections re-established after a failure.", ("path",)),
            "log_errors": metrics.counter("log_errors", "Envelopes published but not added to the replay log."),
        }
        self._presence_rejected = metrics.counter(
            "presence_rejected", "Presence keys the control page skipped, by reason.", ("reason",)
        )
        self._warn = Throttled(log)
        limit = settings.mirror_queue
        source = new_source(settings.source_prefix)
        # The run's first id part: this start's Unix millisecond, so a restarted control-plane logs above the last.
        writer = {"maxlen": settings.stream_maxlen, "source": source, "run": int(time.time() * 1000)}
        self.redis = RedisOutput(
            settings.redis,
            settings.channel,
            limit,
            counters,
            writer if settings.stream_maxlen else None,
        )
        self.redis.retry_max = settings.redis_retry_max_seconds
        keys = MirrorKeys(settings.mirror_key_file) if settings.tcp_mirror_targets else None  # a bad file: no start
        self.mirrors = [TcpMirror(host, port, keys, limit, counters) for host, port in settings.tcp_mirror_targets]
        config = Config(settings.rate_hz, settings.value_min, settings.value_max)
        self.generator = Generator(config, source, [self.redis, *self.mirrors], metrics)
        changes = metrics.counter("lease_changes", "Generator lease taken or lost by this replica.", ("change",))
        for change in ("taken", "lost"):
            changes.labels(change)
        self.lease = None
        if settings.lease_seconds:
            self.lease = Lease(settings.redis, settings.channel, source, settings.lease_seconds, changes)
            self.generator.may_run = self.lease.held
        metrics.gauge(
            "generating", "1 while this replica's generator runs (it holds the lease, or LEASE_SECONDS is 0)."
        ).set_function(lambda: int(self.generator.may_run.is_set()))
        # Pushed samples: a source and a channel (and log) of their own, the same TCP mirrors (docs/contract.md).
        push_writer = {**writer, "source": stream.source(source)}
        self.push = PushOutput(
            settings.redis,
            stream.channel(settings.channel),
            settings.push_queue,
            counters,
            push_writer if settings.stream_maxlen else None,
        )
        self.pusher = Pusher(settings, stream.source(source), self.push, self.mirrors, metrics)
        connected = metrics.gauge("connected", "Outputs connected now (redis, push: 0 or 1; tcp: targets).", ("path",))
        connected.labels(path="redis").set_function(lambda: int(self.redis.connected))
        connected.labels(path="push").set_function(lambda: int(self.push.connected))
        connected.labels(path="tcp").set_function(lambda: sum(m.connected for m in self.mirrors))
        self._lock = threading.Lock()
        self.tasks = Tasks()
        self.started = False

    @property
    def outputs(self) -> list:
        """Every output, Redis first, then the push channel's."""
        return [self.redis, self.push, *self.mirrors]

    def start(self, socketio) -> None:
        """Start the generator and one sender per output as background tasks."""
        log.info(
            "control-plane starting source=%s redis=%s channel=%s log=%s rate_hz=%g mirrors=%s",
            self.generator.source,
            redact(self.settings.redis),
            self.settings.channel,
            self.redis.writer.key if self.redis.writer else "off",
            self.generator.config.rate_hz,
            ",".join(m.name for m in self.mirrors) or "none",
        )
        for output in self.outputs:
            self.tasks.start(socketio, output.run, f"{output.path} {output.name}")
        if self.lease is not None:
            self.tasks.start(socketio, self.lease.run, "lease")
        self.tasks.start(socketio, self.generator.run, "generator")
        self.started = True

    def stop(self) -> None:
        """Stop generating, give the outputs a moment to flush, then close them."""
        self.generator.stop()
        if self.lease is not None:
            self.lease.stop()
        for output in self.outputs:
            output.stop()
        if not self.tasks.join(timeout=5):
            log.warning("some tasks did not stop within 5s")

    def update(self, body: object) -> Config:
        """Apply a config patch atomically, or raise ConfigError and change nothing."""
        with self._lock:
            config = apply_patch(self.generator.config, body)
            self.generator.reconfigure(config)
        log.info("config changed %s", " ".join(f"{k}={v}" for k, v in config.to_dict().items()))
        return config

    def ready(self) -> tuple[bool, dict]:
        """Ready once started, whatever Redis does: the page must stay reachable to show an outage."""
        detail = {"redis": "up" if self.redis.connected else "down"}
        if self.redis.refused:  # credentials or the ACL: only a person can fix that
            detail["redis_refused"] = self.redis.refused
        return self.started, detail

    def status(self) -> dict:
        """Config, counters and outputs, as GET /api/status shows them."""
        return {
            "source": self.generator.source,
            "seq": self.generator.seq,
            "generating": self.generator.may_run.is_set(),
            "lease": None if self.lease is None else {"key": self.lease.key, "holder": self.lease.owner},
            "channel": self.settings.channel,
            "config": self.generator.config.to_dict(),
            "log": {"key": replay_log.key(self.settings.channel), "maxlen": self.settings.stream_maxlen},
            "push": {
                "channel": self.push.channel,
                "source": self.pusher.source,
                "seq": self.pusher.seq,
                "series": len(self.pusher.table),
            },
            "outputs": [output.status() for output in self.outputs],
        }

    def alerts(self) -> dict:
        """The active alerts and the alerter's rules, as the alerter keeps them in Redis (None when unknown)."""
        channel = self.settings.alerts_channel
        conn = client(self.settings.redis, timeout=1.0)
        try:
            entries = conn.hgetall(alerts.key(channel))
            rules = conn.get(alerts.rules_key(channel))
        except (*CONNECTION_ERRORS, redis.ResponseError):
            return {"alerts": None, "rules": None}
        finally:
            conn.close()
        active = []
        for raw in list(entries.values())[: alerts.MAX_ACTIVE]:
            try:
                active.append(alerts.decode(raw))
            except alerts.AlertError:
                continue  # the alerter writes only valid ones; anything else is not shown
        try:
            rules = parsing.loads(rules)["rules"] if rules else None  # absent: no alerter has run for 10 s
        except (ValueError, KeyError, TypeError):
            rules = None
        active.sort(key=lambda m: (m["startsAt"], m["alertname"]))
        return {"alerts": active, "rules": rules if isinstance(rules, list) else None}

    def _rejected_presence(self, reason: str, key: bytes) -> None:
        self._presence_rejected.labels(reason=reason).inc()
        self._warn.warning(reason, "presence key skipped reason=%s key=%r", reason, key[:200])

    def workers(self) -> list[dict]:
        """The workers announcing themselves on this channel; empty when Redis is down."""
        conn = client(self.settings.redis, timeout=1.0)
        try:
            return presence.workers(conn, self.settings.channel, self._rejected_presence)
        except (*CONNECTION_ERRORS, redis.ResponseError):
            return []
        finally:
            conn.close()
