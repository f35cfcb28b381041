"""Pushed series on the dashboard in a real Chromium: the picker, a chart per series with a line per label set and a
legend, the choice in the address, a line that breaks where there is no data, and the default view as it was."""

from __future__ import annotations

import json
import re
import time

import pytest
from conftest import envelope, eventually, publish
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.e2e

# Saturated pixels (the lines' colours; axes, grid and text are grey) in a band of columns of a chart's plot area,
# at fractions `from`..`to` of its width; near the colour `rgb` only, if given.
COLOURED = """([series, from, to, rgb]) => {
  const card = document.querySelector(`.chart-card[data-series="${series}"]`);
  const canvas = card.querySelector("canvas");
  const over = card.querySelector(".u-over").getBoundingClientRect();
  const box = canvas.getBoundingClientRect();
  const scale = canvas.width / box.width;
  const x0 = Math.round((over.left - box.left + from * over.width) * scale);
  const x1 = Math.round((over.left - box.left + to * over.width) * scale);
  const data = canvas.getContext("2d").getImageData(x0, 0, Math.max(1, x1 - x0), canvas.height).data;
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
    const near = !rgb || Math.abs(r - rgb[0]) + Math.abs(g - rgb[1]) + Math.abs(b - rgb[2]) < 90;
    if (a > 200 && Math.max(r, g, b) - Math.min(r, g, b) > 80 && near) n++;
  }
  return n;
}"""


def sample(seq: int, series: str, value: float, ts: float | None = None, **labels: str) -> str:
    """A pushed envelope, as the control-plane stamps it."""
    body = {"seq": seq, "value": value, "ts": ts or time.time(), "source": "ctl-1.push", "series": series,
            "labels": labels}  # fmt: skip
    return json.dumps(body)


def push(server, *lines: str) -> None:
    """One message on the push channel, as the control-plane publishes a batch."""
    publish(server, "\n".join(lines), channel="numbers:push")


def legend(page: Page, series: str) -> list[str]:
    return page.eval_on_selector_all(
        f'.chart-card[data-series="{series}"] .legend li', "items => items.map(li => li.textContent)"
    )


def table_series(page: Page) -> list[str]:
    return page.eval_on_selector_all("#values tr:not([hidden])", "rows => rows.map(r => r.cells[1].textContent)")


@pytest.fixture
def pushed(redis_server, services):
    """A worker that has seen two pushed series over the last 20 s: queue_depth (two label sets), temperature."""
    worker = services("worker", redis_server.url, wait="/readyz")
    now, lines, seq = time.time(), [], 0
    for step in range(40):
        for queue, base in (("billing", 10.0), ("mail", 50.0)):
            seq += 1
            lines.append(sample(seq, "queue_depth", base + step % 5, now - 20 + step * 0.5, queue=queue))
        seq += 1
        lines.append(sample(seq, "temperature_celsius", 21.0, now - 20 + step * 0.5, site="lab"))
    push(redis_server, *lines)
    publish(redis_server, *(envelope(n, 40.0 + n) for n in range(1, 4)))
    eventually(lambda: len(worker.json("/api/series")["series"]) == 3, message="the worker lists three series")
    worker.seq = seq
    return worker


def test_pick_a_pushed_series_and_see_a_line_and_legend_entry_per_label_set(pushed, redis_server, page):
    page.goto(pushed.url + "/")
    expect(page.locator("#connection")).to_have_text("connected")
    expect(page.locator("#series-options input:checked")).to_have_count(1)
    page.locator("#series-filter").fill("queue")
    expect(page.locator("#series-options li")).to_have_text([re.compile(r"queue_depth\s*2 label sets")])
    page.get_by_role("checkbox", name=re.compile("^queue_depth")).check()

    expect(page.locator(".chart-card")).to_have_count(2)
    eventually(lambda: legend(page, "queue_depth") == ['{queue="billing"}14', '{queue="mail"}54'], message="legend")
    assert re.search(r"\?series=numcast_value&series=queue_depth$", page.url), page.url
    eventually(lambda: page.evaluate(COLOURED, ["queue_depth", 0, 1]) > 200, message="both lines drawn")
    assert (
        page.locator(".chart-card[data-series=queue_depth] .legend .swatch").evaluate_all(
            "s => new Set(s.map(e => getComputedStyle(e).backgroundColor)).size"
        )
        == 2
    ), "a colour per line"
    push(redis_server, sample(pushed.seq + 1, "queue_depth", 99.0, queue="billing"))
    eventually(lambda: legend(page, "queue_depth")[0] == '{queue="billing"}99', message="live values reach the line")
    assert 'queue_depth{queue="billing"}' in table_series(page)
    assert not [s for s in table_series(page) if s.startswith("temperature")], "only the series chosen"


def test_the_address_keeps_the_choice_and_a_link_opens_the_same_view(pushed, redis_server, page):
    page.goto(pushed.url + "/?series=queue_depth&match=queue=mail")
    expect(page.locator("#connection")).to_have_text("connected")
    expect(page.locator(".chart-card")).to_have_count(1)
    eventually(lambda: legend(page, "queue_depth") == ['{queue="mail"}54'], message="only the label set matched")
    expect(page.locator("#view-match")).to_have_text("labels queue=mail")
    expect(page.get_by_role("checkbox", name=re.compile("^queue_depth"))).to_be_checked()
    publish(redis_server, envelope(4, 1.0))
    push(redis_server, sample(pushed.seq + 1, "queue_depth", 77.0, queue="mail"))
    eventually(lambda: legend(page, "queue_depth") == ['{queue="mail"}77'])
    assert all(s.startswith("queue_depth") for s in table_series(page)), "the generator's values are not shown"

    page.get_by_role("checkbox", name=re.compile("^temperature_celsius")).check()
    expect(page).to_have_url(re.compile(r"\?series=queue_depth&series=temperature_celsius&match=queue%3Dmail$"))
    expect(page.locator(".chart-card")).to_have_count(2)
    page.go_back()
    expect(page.locator(".chart-card")).to_have_count(1)
    page.reload()
    expect(page.locator(".chart-card")).to_have_count(1)
    eventually(lambda: legend(page, "queue_depth") == ['{queue="mail"}77'], message="the same view after a reload")


BLUE, ORANGE = [11, 95, 180], [194, 65, 12]  # --line-1 and --line-2, light scheme


def test_a_line_breaks_where_a_pod_stopped_pushing_instead_of_bridging_the_gap(redis_server, services, page):
    """Pod a pushes for 10 s, stops for 60 s, pushes again; pod b pushes all along, on the same chart."""
    worker = services("worker", redis_server.url, wait="/readyz")
    now, lines = time.time(), []
    # The same value before and after: a bridge would be a flat line across the gap.
    times = [now - 100 + n * 0.5 for n in range(21)] + [now - 30 + n * 0.5 for n in range(61)]
    for ts in times:
        lines.append(sample(len(lines) + 1, "gap_demo", 5.0, ts, pod="a"))
    for n in range(201):
        lines.append(sample(len(lines) + 1, "gap_demo", 9.0, now - 100 + n * 0.5, pod="b"))
    push(redis_server, *lines)
    eventually(lambda: worker.json("/api/series")["series"], message="the worker has it")
    page.goto(worker.url + "/?series=gap_demo")
    expect(page.locator("#connection")).to_have_text("connected")
    expect(page.locator(".chart-card[data-series=gap_demo] .legend li")).to_have_text(['{pod="a"}5', '{pod="b"}9'])
    # The window runs from the first value (now - 100) to now: the gap is 0.1-0.7 of the width.
    eventually(lambda: page.evaluate(COLOURED, ["gap_demo", 0.01, 0.08, BLUE]) > 0, message="drawn before the gap")
    eventually(lambda: page.evaluate(COLOURED, ["gap_demo", 0.8, 0.95, BLUE]) > 0, message="and after it")
    assert page.evaluate(COLOURED, ["gap_demo", 0.2, 0.6, ORANGE]) > 0, "pod b's line goes on through it"
    assert page.evaluate(COLOURED, ["gap_demo", 0.2, 0.6, BLUE]) == 0, "pod a's is not drawn across the gap"


def test_the_default_view_shows_the_generator_as_before_whatever_is_pushed(pushed, redis_server, page):
    page.goto(pushed.url + "/")
    expect(page.locator("#connection")).to_have_text("connected")
    assert page.url == pushed.url + "/", "the plain address stays plain"
    expect(page.locator(".chart-card")).to_have_count(1)
    expect(page.locator(".chart-card h2")).to_have_text("numcast_value")
    eventually(lambda: table_series(page) == ["numcast_value"] * 3, message="the generator's backfill")
    push(redis_server, sample(pushed.seq + 1, "queue_depth", 1.0, queue="billing"))
    publish(redis_server, envelope(4, 44.0))
    expect(page.locator("#last-value")).to_have_text("44")
    expect(page.locator("#count")).to_have_text("4")
    eventually(lambda: table_series(page) == ["numcast_value"] * 4, message="the pushed sample is not shown")
    # The last series chosen stays chosen.
    expect(page.get_by_role("checkbox", name=re.compile("^numcast_value"))).to_be_disabled()
    expect(page.locator("#gaps")).to_have_text("0")
