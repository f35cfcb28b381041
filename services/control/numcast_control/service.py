"""The control-plane's moving parts: the generator and its outputs, started and stopped together."""

from __future__ import annotations

import json
import logging
import threading

import redis

from numcast import alerts, presence
from numcast.redis_conn import CONNECTION_ERRORS, client, reachable, redact
from numcast.tasks import Tasks
from numcast_control.config import Config, apply_patch
from numcast_control.generator import Generator, new_source
from numcast_control.outputs import RedisOutput, TcpMirror
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
        }
        limit = settings.mirror_queue
        self.redis = RedisOutput(settings.redis_url, settings.redis_password, settings.channel, limit, counters)
        self.mirrors = [TcpMirror(host, port, limit, counters) for host, port in settings.tcp_mirror_targets]
        config = Config(settings.rate_hz, settings.value_min, settings.value_max)
        self.generator = Generator(config, new_source(settings.source_prefix), [self.redis, *self.mirrors], metrics)
        self._lock = threading.Lock()
        self.tasks = Tasks()

    @property
    def outputs(self) -> list:
        """Every output, Redis first."""
        return [self.redis, *self.mirrors]

    def start(self, socketio) -> None:
        """Start the generator and one sender per output as background tasks."""
        log.info(
            "control-plane starting source=%s redis=%s channel=%s rate_hz=%g mirrors=%s",
            self.generator.source,
            redact(self.settings.redis_url),
            self.settings.channel,
            self.generator.config.rate_hz,
            ",".join(m.name for m in self.mirrors) or "none",
        )
        for output in self.outputs:
            self.tasks.start(socketio, output.run, f"{output.path} {output.name}")
        self.tasks.start(socketio, self.generator.run, "generator")

    def stop(self) -> None:
        """Stop generating, give the outputs a moment to flush, then close them."""
        self.generator.stop()
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
        """Ready when Redis answers a PING now."""
        ok = reachable(self.settings.redis_url, self.settings.redis_password)
        return ok, {"redis": "up" if ok else "down"}

    def status(self) -> dict:
        """Config, counters and outputs, as GET /api/status shows them."""
        return {
            "source": self.generator.source,
            "seq": self.generator.seq,
            "channel": self.settings.channel,
            "config": self.generator.config.to_dict(),
            "outputs": [output.status() for output in self.outputs],
        }

    def alerts(self) -> dict:
        """The active alerts and the alerter's rules, as the alerter keeps them in Redis (None when unknown)."""
        channel = self.settings.alerts_channel
        conn = client(self.settings.redis_url, self.settings.redis_password, timeout=1.0)
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
            rules = json.loads(rules)["rules"] if rules else None  # absent: no alerter has run for 10 s
        except (ValueError, KeyError, TypeError):
            rules = None
        active.sort(key=lambda m: (m["startsAt"], m["alertname"]))
        return {"alerts": active, "rules": rules if isinstance(rules, list) else None}

    def workers(self) -> list[dict]:
        """The workers announcing themselves on this channel; empty when Redis is down."""
        conn = client(self.settings.redis_url, self.settings.redis_password, timeout=1.0)
        try:
            return presence.workers(conn, self.settings.channel)
        except (*CONNECTION_ERRORS, redis.ResponseError):
            return []
        finally:
            conn.close()
