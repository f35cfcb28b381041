"""`numcast tail`: the channel's messages, decoded, one line each, like `redis-cli subscribe numbers`.

It needs only to subscribe: the Redis user `viewer` will do (REDIS_USERNAME, REDIS_PASSWORD or REDIS_PASSWORD_FILE).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from numcast.envelope import EnvelopeError, decode
from numcast.push import stream
from numcast.redis_conn import Endpoint
from numcast.settings import Common, SettingsError, from_env
from numcast.subscriber import Subscriber


def main(argv: list[str]) -> int:
    """Print messages until Ctrl-C (or `--count` of them)."""
    parser = argparse.ArgumentParser(prog="numcast tail", description=__doc__)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument(
        "--channel",
        default=os.environ.get("CHANNEL", "numbers"),
        help="the channel; pushed samples travel on `<CHANNEL>:push` (numbers:push)",
    )
    parser.add_argument("--count", type=int, default=0, help="exit after this many messages (0: never)")
    parser.add_argument("--json", action="store_true", help="print each valid envelope as JSON")
    args = parser.parse_args(argv)
    seen = 0
    subscriber: Subscriber

    def show(data: bytes) -> None:
        nonlocal seen
        try:
            env = decode(data)
        except EnvelopeError as exc:
            print(f"REJECTED {exc.reason}: {exc} raw={bytes(data[:120])!r}", flush=True)
        else:
            if args.json:
                print(env.to_json(), flush=True)
            else:
                clock = time.strftime("%H:%M:%S", time.localtime(env.ts)) + f".{int(env.ts % 1 * 1000):03d}"
                latency_ms = (time.time() - env.ts) * 1000
                series = f" {env.series}{json.dumps(env.labels, ensure_ascii=False)}" if env.series else ""
                print(
                    f"{env.source} seq={env.seq}{series} value={env.value:g} ts={clock} latency={latency_ms:.1f}ms",
                    flush=True,
                )
        seen += 1
        if args.count and seen >= args.count:
            subscriber.stop()

    def show_all(batch: list[bytes]) -> None:
        for message in batch:
            # A message of the push channel holds one envelope per line (numcast.push.stream).
            for data in stream.split(message) if stream.is_channel(args.channel) else (message,):
                if not subscriber.stopping.is_set():
                    show(data)

    def subscribed(resumed: bool) -> None:
        if resumed:
            print(f"# subscribed to {args.channel!r} again; messages published meanwhile are missing", file=sys.stderr)
        else:
            print(f"# subscribed to {args.channel!r}; Ctrl-C to stop", file=sys.stderr, flush=True)

    endpoint = Endpoint.parse(
        args.redis_url,
        os.environ.get("REDIS_USERNAME", ""),
        os.environ.get("REDIS_PASSWORD", ""),
        os.environ.get("REDIS_PASSWORD_FILE", ""),
    )
    if os.environ.get("REDIS_SENTINELS"):  # the primary through the Sentinels, as the services find it
        try:
            endpoint = from_env(Common, {**os.environ, "REDIS_URL": args.redis_url}).redis
        except SettingsError as exc:
            print(f"numcast tail: {exc}", file=sys.stderr)
            return 2
    subscriber = Subscriber(endpoint, {args.channel: show_all}, on_subscribed=subscribed)
    try:
        subscriber.run()
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        sys.stderr.close()  # `numcast tail | head` is a normal way to stop
    return 0
