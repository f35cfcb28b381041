"""Regenerate docs/screenshots/{dashboard,control,alerts,pushed}.png with Chromium, from a throwaway stack on free
ports."""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import threading
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

from numcast.local import CHROMIUM_ARGS, CHROMIUM_MISSING, chromium
from numcast.stack import Stack

ROOT = Path(__file__).resolve().parent.parent
PUSHED_VIEW = "/?series=queue_depth&series=room_celsius"


def push(control_url: str, stop: threading.Event) -> None:
    """Push two series as other pods would, 4 times a second: queue_depth of three queues (one of whose pods stops
    pushing for a while, so its line breaks) and room_celsius of two rooms."""
    rng, tick = random.Random(18), 0
    depth = {"billing": 40.0, "mail": 15.0, "reports": 70.0}
    while not stop.wait(0.25):
        tick += 1
        samples = []
        for queue in depth:
            depth[queue] = max(0.0, depth[queue] + rng.uniform(-3, 3))
            if queue != "reports" or not 40 <= tick % 120 < 70:
                samples.append(
                    {"series": "queue_depth", "labels": {"queue": queue, "job": "billing"}, "value": depth[queue]}
                )
        for room, base in (("lab", 21.0), ("hall", 18.5)):
            value = base + 1.5 * math.sin(tick / 20) + rng.uniform(-0.2, 0.2)
            samples.append({"series": "room_celsius", "labels": {"room": room}, "value": round(value, 2)})
        body = json.dumps({"samples": samples}).encode()
        request = urllib.request.Request(
            control_url + "/api/push", body, {"Content-Type": "application/json"}, method="POST"
        )
        urllib.request.urlopen(request, timeout=10).read()


def main() -> int:
    """Start Redis, the control-plane, two workers and the alerter; let values flow; photograph both pages; then
    raise the range above the built-in NumcastValueHigh rule's threshold and photograph the dashboard's alert."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--rate", type=float, default=8.0, help="values per second while the pages fill")
    parser.add_argument("--seconds", type=float, default=40.0, help="how long values flow before the shots")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    stop = threading.Event()
    with Stack(2, control_env={"RATE_HZ": str(args.rate)}) as stack:
        pusher = threading.Thread(target=push, args=(stack.control_url, stop), daemon=True)
        pusher.start()
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium() or sys.exit(CHROMIUM_MISSING), args=list(CHROMIUM_ARGS)
            )
            context = browser.new_context(viewport={"width": args.width, "height": args.height})
            dashboard = context.new_page()
            dashboard.goto(stack.worker_urls[0] + "/")
            control = context.new_page()
            control.goto(stack.control_url + "/")
            pushed = context.new_page()
            pushed.goto(stack.worker_urls[0] + PUSHED_VIEW)
            time.sleep(args.seconds)
            dashboard.bring_to_front()
            dashboard.wait_for_timeout(1500)
            dashboard.screenshot(path=args.out / "dashboard.png")
            control.bring_to_front()
            control.wait_for_timeout(1500)
            control.screenshot(path=args.out / "control.png")
            pushed.bring_to_front()
            pushed.wait_for_timeout(1500)
            pushed.screenshot(path=args.out / "pushed.png", full_page=True)
            body = json.dumps({"min": 96, "max": 99}).encode()
            headers = {"Content-Type": "application/json"}
            request = urllib.request.Request(stack.control_url + "/api/config", body, headers, method="PATCH")
            urllib.request.urlopen(request, timeout=10).read()
            dashboard.bring_to_front()
            dashboard.locator("#alerts li").first.wait_for(timeout=20000)  # the rule's `for` is 3 s
            dashboard.wait_for_timeout(2500)
            dashboard.screenshot(path=args.out / "alerts.png")
            browser.close()
        stop.set()
        pusher.join(5)
        print(f"wrote dashboard.png, control.png, pushed.png and alerts.png in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
