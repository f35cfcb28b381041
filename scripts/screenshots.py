"""Regenerate docs/screenshots/{dashboard,control,alerts}.png with Chromium, from a throwaway stack on free ports."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

from numcast.local import CHROMIUM_ARGS, CHROMIUM_MISSING, chromium
from numcast.stack import Stack

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    """Start Redis, the control-plane, two workers and the alerter; let values flow; photograph both pages; then
    raise the range above the built-in NumcastValueHigh rule's threshold and photograph the dashboard's alert."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--rate", type=float, default=8.0, help="values per second while the pages fill")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long values flow before the shots")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    with Stack(2, control_env={"RATE_HZ": str(args.rate)}) as stack:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium() or sys.exit(CHROMIUM_MISSING), args=list(CHROMIUM_ARGS)
            )
            context = browser.new_context(viewport={"width": args.width, "height": args.height})
            dashboard = context.new_page()
            dashboard.goto(stack.worker_urls[0] + "/")
            control = context.new_page()
            control.goto(stack.control_url + "/")
            time.sleep(args.seconds)
            dashboard.bring_to_front()
            dashboard.wait_for_timeout(1500)
            dashboard.screenshot(path=args.out / "dashboard.png")
            control.bring_to_front()
            control.wait_for_timeout(1500)
            control.screenshot(path=args.out / "control.png")
            body = json.dumps({"min": 96, "max": 99}).encode()
            headers = {"Content-Type": "application/json"}
            request = urllib.request.Request(stack.control_url + "/api/config", body, headers, method="PATCH")
            urllib.request.urlopen(request, timeout=10).read()
            dashboard.bring_to_front()
            dashboard.locator("#alerts li").first.wait_for(timeout=20000)  # the rule's `for` is 3 s
            dashboard.wait_for_timeout(2500)
            dashboard.screenshot(path=args.out / "alerts.png")
            browser.close()
        print(f"wrote {args.out / 'dashboard.png'}, {args.out / 'control.png'} and {args.out / 'alerts.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
