"""Regenerate docs/screenshots/{dashboard,control}.png with Chromium, from a throwaway stack on free ports."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from numcast.stack import Redis, free_port, service, stop, wait_http

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def chromium() -> str:
    """The Chromium to drive: $CHROMIUM, Debian's package, or one on PATH."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit("Chromium not found: apt-get install -y chromium (or set CHROMIUM)")


def main() -> int:
    """Start Redis, the control-plane and two workers; let values flow; photograph both pages."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--rate", type=float, default=8.0, help="values per second while the pages fill")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long values flow before the shots")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    redis = Redis().start()
    data = tempfile.mkdtemp(prefix="numcast-shots-")
    processes = []
    try:
        common = {"REDIS_URL": redis.url, "HOST": "127.0.0.1"}
        workers = []
        for name in ("machine-1", "machine-2"):
            port, tcp_port = free_port(), free_port()
            env = {**common, "WORKER_NAME": name, "PORT": str(port), "TCP_PORT": str(tcp_port),
                   "SINK_FILE": os.path.join(data, f"{name}.jsonl")}  # fmt: skip
            processes.append(service("worker", env))
            workers.append((port, tcp_port))
        control_port = free_port()
        targets = ",".join(f"127.0.0.1:{tcp}" for _, tcp in workers)
        env = {**common, "PORT": str(control_port), "RATE_HZ": str(args.rate), "TCP_MIRROR_TARGETS": targets}
        processes.append(service("control", env))
        urls = [f"http://127.0.0.1:{port}" for port, _ in workers] + [f"http://127.0.0.1:{control_port}"]
        for url, process in zip(urls, processes, strict=True):
            wait_http(url + "/healthz", 30, process)

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": args.width, "height": args.height})
            dashboard = context.new_page()
            dashboard.goto(urls[0] + "/")
            control = context.new_page()
            control.goto(urls[2] + "/")
            time.sleep(args.seconds)
            dashboard.bring_to_front()
            dashboard.wait_for_timeout(1500)
            dashboard.screenshot(path=args.out / "dashboard.png")
            control.bring_to_front()
            control.wait_for_timeout(1500)
            control.screenshot(path=args.out / "control.png")
            browser.close()
        print(f"wrote {args.out / 'dashboard.png'} and {args.out / 'control.png'}")
    finally:
        for process in reversed(processes):
            stop(process)
        redis.stop()
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
