"""The worker's moving parts: subscriber, TCP listener, ingest, sink, fan-out and presence."""

from __future__ import annotations

import itertools
import logging
import socket
import time

import redis

from numcast import presence
from numcast.mirror_key import MirrorKeys
from numcast.push import stream
from numcast.redis_conn import CONNECTION_ERRORS, client, redact
from numcast.serve import Gate
from numcast.subscriber import Subscriber
from numcast.tasks import Tasks
from numcast_worker.alerts import ActiveAlerts
from numcast_worker.fanout import Fanout
from numcast_worker.ingest import Ingest
from numcast_worker.replay import Replay
from numcast_worker.sequences import Sequences
from numcast_worker.series import SeriesTable
from numcast_worker.settings import WorkerSettings
from numcast_worker.sink import FileSink
from numcast_worker.stats import Stats
from numcast_worker.subscriptions import Subscriptions
from numcast_worker.tcp_listener import TcpListener

log = logging.getLogger(__name__)


class WorkerService:
    """Wires the parts together; `start` runs them as background tasks, `stop` ends them cleanly."""

    def __init__(self, settings: WorkerSettings, metrics, socketio) -> None:
        self.settings = settings
        self.host = socket.gethostname()[:64]
        self.started_at = time.time()
        self.stats = stats = Stats()
        metrics.registry.register(stats)
        self.sequences = Sequences(
            grace=settings.seq_grace_seconds, max_skip=settings.seq_max_skip, stale=settings.seq_stale_seconds
        )
        self.sink = FileSink(
            settings.sink_file,
            settings.sink_max_bytes,
            settings.sink_backups,
            settings.sink_buffer_bytes,
            settings.sink_sync_seconds,
        )
        self.alerts = ActiveAlerts(
            settings.redis,
            settings.alerts_channel,
            stats,
            lambda: self.fanout.mark("alerts"),
        )
        states = {"status": self.public_status, "alerts": self.alerts.to_browsers}
        self.fanout = Fanout(
            socketio,
            settings.client_queue,
            settings.batch_ms / 1000,
            states,
            Subscriptions(settings.max_subscriptions),
        )
        self.gate = Gate(settings.max_browsers)
        latency = metrics.histogram("latency_seconds", "From the envelope's ts to its acceptance by the worker.")
        self.series = SeriesTable(
            settings.max_series, settings.series_ttl, settings.history_size, settings.history_total, time.monotonic()
        )
        self.ingest = Ingest(
            self.sequences, self.sink, self.fanout, stats, latency, settings.history_size, series=self.series
        )
        self.replay = Replay(settings, self.ingest)
        self.ingest.on_skip = self.replay.request
        self.subscriber = Subscriber(
            settings.redis,
            {
                settings.channel: self._from_redis,
                stream.channel(settings.channel): self._from_push,
                settings.alerts_channel: self.alerts.accept_batch,
            },
            on_subscribed=self._subscribed,
        )
        self.subscriber.retry_max = settings.redis_retry_max_seconds
        self.tcp = TcpListener(
            settings.tcp_host,
            settings.tcp_port,
            settings.max_tcp_clients,
            self.ingest.accept_batch,
            stats,
            MirrorKeys(settings.mirror_key_file) if settings.mirror_key_file else None,  # a bad file stops the start
            settings.tcp_idle_seconds,
        )
        stats.gauges.update(
            {
                "connected_clients": ("Browsers connected now.", lambda: self.fanout.clients),
                "subscribed": ("1 while subscribed to the channel.", lambda: int(self.subscriber.subscribed)),
                "tcp_connections": ("Open TCP mirror connections.", lambda: len(self.tcp.connections)),
                "alerts_active": ("Active alerts this worker knows of.", lambda: len(self.alerts)),
                "series": (
                    "Pushed label sets listed in /api/series now (at most MAX_SERIES).",
                    lambda: len(self.series),
                ),
                "subscriptions": (
                    "Distinct subscriptions browsers hold now, the default one included.",
                    lambda: len(self.fanout.subscriptions),
                ),
            }
        )
        stats.counters.update(
            {
                "gaps": ("Seqs received by neither path within the grace period.", lambda: self.sequences.gaps, {}),
                "jumps_confirmed": (
                    "Seq jumps taken after all, on continuity, where the replay log could not confirm them.",
                    lambda: self.sequences.confirmed,
                    {},
                ),
                "sink_lines": ("Lines that reached the sink file (written in full).", lambda: self.sink.lines, {}),
                "sink_rotations": ("Sink file rotations.", lambda: self.sink.rotations, {}),
                "sink_syncs": ("fdatasync calls on the sink file (SINK_SYNC_SECONDS).", lambda: self.sink.syncs, {}),
                "sink_errors": ("Failed sink opens, writes and rotations (retried).", lambda: self.sink.errors, {}),
                "sink_dropped": ("Lines given up while the sink failed (buffer full).", lambda: self.sink.dropped, {}),
                "replays": ("Catch-ups from the replay log.", lambda: self.replay.runs, {}),
                "replay_errors": ("Catch-ups that failed (Redis unreachable...).", lambda: self.replay.errors, {}),
                "dropped": ("Values a slow browser missed.", lambda: self.fanout.dropped, {"path": "browser"}),
                "browsers_refused": ("Browsers refused (over MAX_BROWSERS).", lambda: self.gate.refused, {}),
                "series_unlisted": (
                    "Samples of new label sets neither listed nor kept in the history: MAX_SERIES were listed.",
                    lambda: self.series.unlisted,
                    {},
                ),
                "series_expired": (
                    "Label sets forgotten SERIES_TTL after their last sample.",
                    lambda: self.series.expired,
                    {},
                ),
                "frames_encoded": (
                    "`numbers` frames built for browsers: one per distinct subscription and position per round.",
                    lambda: self.fanout.encoded,
                    {},
                ),
            }
        )
        self.tasks = Tasks()

    def _from_redis(self, batch: list[bytes]) -> None:
        self.ingest.accept_batch(batch, "redis")

    def _from_push(self, batch: list[bytes]) -> None:
        """Messages of the push channel: each holds envelope lines, which go through the same door."""
        self.ingest.accept_batch([line for message in batch for line in stream.split(message)], "redis")

    def _subscribed(self, resumed: bool) -> None:
        if resumed:
            self.stats.reconnects += 1
        self.replay.request(hold=True)  # what was published while unsubscribed, before the live values
        self.alerts.sync()  # subscribed first, then read: no change can fall between the two

    def start(self, socketio) -> None:
        """Bind the TCP port, then start every loop."""
        s = self.settings
        log.info(
            "worker starting name=%s redis=%s channel=%s tcp_port=%d sink=%s",
            s.worker_name,
            redact(s.redis),
            s.channel,
            s.tcp_port,
            s.sink_file,
        )
        self.tcp.bind()
        # Resume after the file, as far as the replay log vouches for it (numcast_worker.ingest.Ingest.prime).
        logged = self.replay.highest()
        primed = self.ingest.prime(self.sink.tail(s.history_size), logged)
        log.info("sink resumed path=%s lines_read=%d checked_against_log=%s", s.sink_file, primed, logged is not None)
        self.ingest.flush()  # open the file now: ready needs it
        self.fanout.write_directly()  # before the server opens: every WebSocket is recorded
        self.tasks.start(socketio, self.replay.run, "catch-up")
        self.tasks.start(socketio, self.subscriber.run, "subscriber")
        self.tasks.start(socketio, lambda: self.tcp.run(socketio.start_background_task), "tcp listener")
        self.tasks.start(socketio, self.fanout.run, "fan-out")
        self.tasks.start(socketio, self._housekeeping, "housekeeping")

    def stop(self) -> None:
        """Stop taking values, close sockets, flush the sink, withdraw from presence."""
        self.subscriber.stop()
        self.tcp.stop()
        self.replay.stop()
        self.fanout.stop()
        self.tasks.join(timeout=5)
        self.ingest.close()
        self._presence(withdraw=True)
        log.info("worker stopped lines_written=%d", self.sink.lines)

    def _housekeeping(self) -> None:
        """Once a period: flush the sink, confirm gaps, send browsers the status, renew presence."""
        next_presence = 0.0
        for tick in itertools.count():
            if self.tasks.stopping.wait(0.5):
                return
            self.ingest.flush()
            self.ingest.expire()
            if tick % 2:
                self.fanout.mark("status")  # once a second, as docs/contract.md promises the dashboard
            if tick % 4 == 0 and self.alerts.failed and self.subscriber.subscribed:
                self.alerts.sync()  # the read after the last subscription failed: try again
            if time.monotonic() >= next_presence:
                self._presence()
                next_presence = time.monotonic() + presence.HEARTBEAT_SECONDS

    def _presence(self, withdraw: bool = False) -> None:
        conn = client(self.settings.redis, timeout=1.0)
        try:
            if withdraw:
                presence.withdraw(conn, self.settings.channel, self.identity())
            else:
                presence.announce(conn, self.settings.channel, self.identity() | self.counts())
        except (*CONNECTION_ERRORS, redis.ResponseError):
            pass  # the subscriber reports Redis trouble; presence simply lapses
        finally:
            conn.close()

    def identity(self) -> dict:
        """Who this worker is."""
        return {"name": self.settings.worker_name, "host": self.host}

    def counts(self) -> dict:
        """The few numbers presence shares."""
        return {
            "clients": self.fanout.clients,
            "received": sum(self.stats.accepted.values()),
            "last_seen": time.time(),
        }

    def ready(self) -> tuple[bool, dict]:
        """Ready once serving: the sink opened, and caught up after subscribing or fed by the mirror, once.

        Redis is reported, not required: an outage must not take every replica out of its Service at once.
        """
        ok = self.sink.opened and (self.replay.caught_up or self.stats.accepted["tcp"] > 0)
        detail = {
            "redis": "subscribed" if self.subscriber.subscribed else "down",
            "sink": "failing" if self.sink.failing or not self.sink.opened else "ok",
            "history": "refilled" if self.replay.caught_up else "pending",
        }
        if self.subscriber.refused:  # credentials or the ACL: only a person can fix that
            detail["redis_refused"] = self.subscriber.refused
        return ok, detail

    def public_status(self) -> dict:
        """What the dashboard shows (the public port's /api/status, and the browsers' `status`): the full status
        without the sink's path, the refusal's text (it names the Redis user) or replay errors' text."""
        status = self.status()
        status["redis"] = {**status["redis"], "refused": bool(status["redis"]["refused"])}
        status["sink"] = {"ok": status["sink"]["ok"]}
        status["replay"] = {"runs": status["replay"]["runs"], "errors": status["replay"]["errors"]}
        return status

    def status(self) -> dict:
        """Everything about the worker and its inputs (the admin port's /api/status)."""
        return {
            **self.identity(),
            "channel": self.settings.channel,
            "ready": self.ready()[0],
            "redis": {"subscribed": self.subscriber.subscribed, "refused": self.subscriber.refused or None},
            "sink": {"path": self.settings.sink_file, "ok": self.sink.opened and not self.sink.failing},
            "replay": {"runs": self.replay.runs, "errors": self.replay.errors, "last_error": self.replay.last_error},
            "tcp": {
                "port": self.settings.tcp_port,
                "on": self.tcp.keys is not None,
                "connections": len(self.tcp.connections),
            },
            "counters": {
                **self.stats.to_dict(),
                "gaps": self.sequences.gaps,
                "pending": self.sequences.pending,
                "browser_dropped": self.fanout.dropped,
            },
            "clients": self.fanout.clients,
            "history_size": self.settings.history_size,
            "last_value_at": self.ingest.last_value_at or None,
            "started_at": self.started_at,
            "time": time.time(),
        }
