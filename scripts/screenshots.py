"""Regenerate docs/screenshots/{dashboard,control}.png with Chromium, from a throwaway stack on free ports."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from numcast.local import CHROMIUM_ARGS, CHROMIUM_MISSING, chromium
from numcast.stack import Stack

ROOT = Path(__file__).resolve().parent.parent


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
            browser.close()
        print(f"wrote {args.out / 'dashboard.png'} and {args.out / 'control.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
