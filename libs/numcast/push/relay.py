"""`numcast relay`: scrape any Prometheus exporter on a schedule and push what matches to the control-plane.

Each tick reads the exporter's text format with prometheus_client's parser, keeps the samples whose name fully
matches `--match`, and PUTs them with `push_to_gateway` to the control-plane's Pushgateway door as the group
`job/<--job>/instance/<--instance>`: a metric the exporter no longer shows leaves the group. The push token comes
from PUSH_TOKEN or PUSH_TOKEN_FILE. A scrape or push that fails is logged and tried again at the next tick.
"""

from __future__ import annotations

import argparse
import http.server
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.request

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import default_handler, push_to_gateway
from prometheus_client.parser import text_string_to_metric_families

from numcast import auth, logs
from numcast.logs import Throttled
from numcast.settings import SettingsError

log = logging.getLogger(__name__)

MAX_SCRAPE_BYTES = 16 * 1024 * 1024  # an exporter's page; more is refused rather than read
_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(text: str) -> float:
    """`500ms`, `1s`, `1.5m`, `1h` in seconds: 100 ms to a day."""
    match = _DURATION_RE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 500ms, 1s, 1m")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not 0.1 <= seconds <= 86400:
        raise argparse.ArgumentTypeError(f"{text}: from 100ms to 24h")
    return seconds


def pattern(text: str) -> re.Pattern:
    """A regular expression, matched against whole metric names."""
    try:
        return re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


class Matching:
    """A collector holding one scrape's families, with only the samples whose name matches."""

    def __init__(self, families: list, match: re.Pattern) -> None:
        self.families = []
        for family in families:
            family.samples = [sample for sample in family.samples if match.fullmatch(sample.name)]
            if family.samples:
                self.families.append(family)

    def collect(self):
        """What prometheus_client renders."""
        return self.families

    @property
    def count(self) -> int:
        return sum(len(family.samples) for family in self.families)


class Relay:
    """Scrape, filter, push, once per `every` seconds, until stopped."""

    def __init__(self, args, token: str | None) -> None:
        self.args, self.token = args, token
        self.stopping = threading.Event()
        self.started = time.monotonic()
        self.ticked_at = self.pushed_at = 0.0
        self.pushed = self.failures = 0
        self._warn = Throttled(log)

    def _handler(self, url, method, timeout, headers, data):
        if self.token:
            headers = [*headers, ("Authorization", f"Bearer {self.token}")]
        return default_handler(url, method, timeout, headers, data)

    def tick(self) -> None:
        """One scrape and one push; failures are logged (at most once per 5 s each), never raised."""
        args = self.args
        try:
            with urllib.request.urlopen(args.scrape, timeout=args.timeout) as response:
                body = response.read(MAX_SCRAPE_BYTES + 1)
            if len(body) > MAX_SCRAPE_BYTES:
                raise ValueError(f"the exporter's page is over {MAX_SCRAPE_BYTES} bytes")
            matching = Matching(list(text_string_to_metric_families(body.decode())), args.match)
        except (OSError, ValueError) as exc:  # unreachable, an HTTP error, not the text format
            self.failures += 1
            self._warn.warning("scrape", "scrape failed url=%s error=%s", args.scrape, exc)
            return
        registry = CollectorRegistry(auto_describe=False)
        registry.register(matching)
        try:
            push_to_gateway(
                args.to,
                job=args.job,
                registry=registry,
                grouping_key={"instance": args.instance},
                timeout=args.timeout,
                handler=self._handler,
            )
        except OSError as exc:  # refused (HTTPError: 400, 401, 429...) or unreachable
            self.failures += 1
            detail = exc.read(300).decode(errors="replace") if hasattr(exc, "read") else ""
            self._warn.warning("push", "push failed to=%s error=%s %s", args.to, exc, detail)
            return
        self.pushed += matching.count
        self.pushed_at = time.monotonic()

    def run(self) -> None:
        """Tick on a drift-free schedule until stopped."""
        log.info(
            "relay starting scrape=%s every=%gs match=%s to=%s job=%s instance=%s token=%s",
            self.args.scrape, self.args.every, self.args.match.pattern, self.args.to, self.args.job,
            self.args.instance, "yes" if self.token else "no",
        )  # fmt: skip
        next_at = time.monotonic()
        while not self.stopping.is_set():
            self.tick()
            self.ticked_at = time.monotonic()
            next_at += self.args.every
            if next_at < self.ticked_at:  # a tick took longer than the period: skip, do not pile up
                next_at = self.ticked_at + self.args.every
            self.stopping.wait(next_at - self.ticked_at)
        log.info("relay stopped pushed=%d failures=%d", self.pushed, self.failures)

    def health(self, path: str) -> bool:
        """/healthz: the loop ticks; /readyz: a push went through lately."""
        window = 3 * self.args.every + self.args.timeout + 5
        now = time.monotonic()
        if path == "/healthz":
            return now - (self.ticked_at or self.started) < window
        return now - self.pushed_at < window


def serve_health(relay: Relay, port: int) -> None:
    """Probes for the relay's container: GET /healthz and /readyz on `port`, in a thread."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the name http.server calls
            ok = self.path in ("/healthz", "/readyz") and relay.health(self.path)
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok\n" if ok else b"not ok\n")

        def log_message(self, *args) -> None:
            pass  # probes every few seconds: not worth a line each

    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line; exits 2 with a message naming what is wrong."""
    parser = argparse.ArgumentParser(prog="numcast relay", description=__doc__)
    parser.add_argument(
        "--scrape", required=True, help="the exporter's metrics URL, e.g. http://127.0.0.1:9100/metrics"
    )
    parser.add_argument("--every", required=True, type=duration, help="how often: 500ms, 1s, 1m...")
    parser.add_argument("--match", type=pattern, default=re.compile(".*"), help="a regex for whole metric names")
    parser.add_argument("--to", required=True, help="the control-plane, e.g. http://control-plane:8000")
    parser.add_argument("--job", default="relay", help="the pushed group's job (default relay)")
    parser.add_argument("--instance", default=socket.gethostname(), help="its instance (default: the host name)")
    parser.add_argument("--timeout", type=duration, default=5.0, help="for each scrape and push (default 5s)")
    parser.add_argument("--health-port", type=int, default=0, help="serve /healthz and /readyz here (0: no)")
    args = parser.parse_args(argv)
    if not args.scrape.startswith(("http://", "https://")) or not args.to.startswith(("http://", "https://")):
        parser.error("--scrape and --to are http:// or https:// URLs")
    return args


def main(argv: list[str]) -> int:
    """Relay until SIGTERM or Ctrl-C."""
    args = parse(argv)
    logs.setup(os.environ.get("LOG_LEVEL", "INFO").upper(), "relay")
    try:
        token = auth.load(os.environ.get("PUSH_TOKEN", ""), os.environ.get("PUSH_TOKEN_FILE", ""), auth.PUSH_VARS[1])
        auth.check_settings(os.environ.get("PUSH_TOKEN", ""), os.environ.get("PUSH_TOKEN_FILE", ""), auth.PUSH_VARS)
    except SettingsError as exc:
        print(f"numcast relay: invalid setting {exc}", file=sys.stderr)
        return 2
    relay = Relay(args, token.decode() if token else None)
    # PID 1 in a container ignores SIGTERM without a handler: stop at the next tick's wait.
    signal.signal(signal.SIGTERM, lambda signum, frame: relay.stopping.set())
    signal.signal(signal.SIGINT, lambda signum, frame: relay.stopping.set())
    if args.health_port:
        serve_health(relay, args.health_port)
    relay.run()
    return 0
