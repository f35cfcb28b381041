"""How the worker dashboard copes at a high rate: Chromium's own main-thread figures and frame intervals."""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from playwright.sync_api import sync_playwright

from numcast.local import CHROMIUM_ARGS, CHROMIUM_MISSING, chromium, wait_http
from numcast.stack import Stack

METRICS = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration")

# Records the interval between animation frames, and every long task, for the page to report later.
FRAMES = """() => {
  window.bench = { frames: [], longTasks: 0 };
  let last = performance.now();
  const tick = (now) => { window.bench.frames.push(now - last); last = now; requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
  new PerformanceObserver((list) => { window.bench.longTasks += list.getEntries().length; })
    .observe({ type: "longtask" });
}"""


def metrics(cdp) -> dict[str, float]:
    """Chromium's Performance.getMetrics as a dict."""
    return {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}


def main() -> int:
    """Start Redis, a control-plane at `--rate` and one worker; measure the dashboard for `--seconds`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=1000.0, help="values per second published")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the measurement")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of flow before measuring")
    args = parser.parse_args()

    with Stack(1, env={"LOG_LEVEL": "WARNING"}, control_env={"RATE_HZ": str(args.rate)}) as stack:
        url = stack.worker_urls[0]
        wait_http(url + "/readyz", 30)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium() or sys.exit(CHROMIUM_MISSING), args=list(CHROMIUM_ARGS)
            )
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            errors: list[str] = []
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            page.wait_for_selector("#connection[data-state='connected']")
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            time.sleep(args.warmup)

            page.evaluate(FRAMES)
            count_before = int(page.locator("#count").text_content().replace(",", ""))
            before, t0 = metrics(cdp), time.monotonic()
            time.sleep(args.seconds)
            after, elapsed = metrics(cdp), time.monotonic() - t0
            count_after = int(page.locator("#count").text_content().replace(",", ""))
            bench = page.evaluate("window.bench")
            shown = {k: page.locator(f"#{k}").text_content() for k in ("rate", "latency-p50", "latency-p99")}
            dom_nodes = page.evaluate("document.getElementsByTagName('*').length")
            browser.close()

        frames = sorted(bench["frames"][1:])
        print(f"dashboard at {args.rate:g} values/s, measured over {elapsed:.1f} s (after {args.warmup:g} s warm-up)")
        print(f"  values shown by the page     {(count_after - count_before) / elapsed:9.0f} /s")
        print(f"  page's own figures           rate {shown['rate']}/s, latency p50 {shown['latency-p50']},"
              f" p99 {shown['latency-p99']}")  # fmt: skip
        for name in METRICS:
            busy = (after[name] - before[name]) / elapsed
            print(f"  {name:<28} {busy * 1000:9.1f} ms per s ({busy:.1%} of one core)")
        print(f"  JS heap used                 {after['JSHeapUsedSize'] / 1e6:9.1f} MB")
        print(f"  DOM elements                 {dom_nodes:9d}")
        if frames:
            p95 = frames[int(0.95 * (len(frames) - 1))]
            print(f"  animation frames             {len(frames) / elapsed:9.1f} /s; interval median "
                  f"{statistics.median(frames):.1f} ms, p95 {p95:.1f} ms, max {frames[-1]:.1f} ms")  # fmt: skip
        print(f"  long tasks (> 50 ms)         {bench['longTasks']:9d}")
        if errors:
            print("  page errors:", *errors[:5], sep="\n    ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
