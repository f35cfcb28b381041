// The worker dashboard: the series chosen (in the address; the generator's by default), live over a WebSocket
// (`subscribe`), backfilled from /api/history on every (re)connect and choice, drawn at most once per animation
// frame into a bounded DOM: a chart per series, a line per label set.
import { AlertList } from "../numcast/alerts.js";
import { Chart } from "./chart.js";
import { connect } from "./connection.js";
import { formatAgo, formatCount, formatMs, formatRate, formatValue } from "./format.js";
import { Lines, MAX_LINES } from "./lines.js";
import { SeriesPicker } from "./picker.js";
import { Latency, RateMeter, summary } from "./stats.js";
import { RecentTable } from "./table.js";
import { Values } from "./values.js";
import { GENERATOR, isDefault, readView, viewQuery } from "./view.js";

const WINDOW_SECONDS = 180; // what the chart and min/max/mean cover...
const WINDOW_VALUES = 3000; // ...unless values come faster than this many per window
const TABLE_ROWS = 100;
const ANNOUNCE_EVERY_MS = 10000; // a screen reader hears the last value at most this often
const STATS_EVERY_MS = 250; // figures that need sorting or summing are refreshed a few times a second
const TABLE_EVERY_MS = 100; // rows rewritten faster than this cannot be read, and cost layout
const STATUS_STALE_MS = 5000; // the worker pushes its status every second; silence longer than this is news
const SERIES_EVERY_MS = 15000; // the picker's list of series is read again this often

const $ = (id) => document.getElementById(id);
const historySize = Number(document.body.dataset.historySize) || 1000;
const maxSeries = Number(document.body.dataset.maxSeries) || 16;
const newValues = () =>
  new Values({
    capacity: WINDOW_VALUES,
    maxAgeSeconds: WINDOW_SECONDS,
    seenCapacity: Math.max(4 * historySize, 2 * WINDOW_VALUES),
  });
let values = newValues();
let rate = new RateMeter();
let latency = new Latency();
const table = new RecentTable($("values"), $("pause"), $("pause-note"), TABLE_ROWS, () => invalidate());
const charts = new Map(); // series name -> {card, lines, chart, drawn}
let view = readView(location.search, maxSeries);
const picker = new SeriesPicker({
  input: $("series-filter"),
  list: $("series-options"),
  note: $("series-note"),
  max: maxSeries,
  onChange: (series) => choose({ series: series.length ? series : [GENERATOR], match: view.match }),
});

const alertList = new AlertList($("alerts"), $("alert-count"), $("alerts-note"));

let state = "connecting";
let alerts = null; // the worker's last `alerts` event since this connection began
let lastArrival = null; // ms, browser clock, of the newest value this page got
let status = null;
let statusAt = 0;
let frame = 0;
let drawn = -1;
let statsAt = 0;
let tableAt = 0;
let tableLater = 0; // timer that renders the table once more when a frame skipped it
let announcedAt = 0;
let chartsAt = 0; // when the charts' window last moved with the clock

function text(id, value) {
  const el = $(id);
  if (el.textContent !== value) el.textContent = value;
}

function invalidate() {
  if (!frame) frame = requestAnimationFrame(render);
}

function render(now) {
  frame = 0;
  const items = values.items;
  if (drawn !== values.version) {
    drawn = values.version;
    const last = values.newest;
    text("last-value", last ? formatValue(last.value) : "–");
    text("count", formatCount(values.count));
  }
  if (now - tableAt >= TABLE_EVERY_MS) {
    tableAt = now;
    table.render(items, values.version); // a no-op while paused or when nothing changed
  } else if (!tableLater) {
    tableLater = setTimeout(() => {
      tableLater = 0;
      invalidate();
    }, TABLE_EVERY_MS); // so the last values of a burst show too
  }
  const moved = now - chartsAt >= 1000;
  if (moved) chartsAt = now;
  for (const entry of charts.values()) {
    if (moved || entry.drawn !== entry.lines.version) {
      entry.drawn = entry.lines.version;
      entry.chart.draw(entry.lines.list(), Date.now() / 1000);
      renderChartNote(entry);
    }
  }
  if (now - statsAt >= STATS_EVERY_MS) {
    statsAt = now;
    renderStats(items);
  }
}

function renderChartNote(entry) {
  const n = entry.lines.count;
  const lines = entry.lines.byKey.size;
  text(entry.windowId, n ? `${formatCount(n)} values, ${lines} line${lines === 1 ? "" : "s"}` : "no values yet");
  const left = entry.lines.undrawn.size;
  entry.note.textContent = left
    ? `${formatCount(left)} more label set${left === 1 ? "" : "s"} not drawn: at most ${MAX_LINES} lines per chart`
    : "";
}

function renderStats(items) {
  const s = summary(items);
  text("min", formatValue(s?.min));
  text("mean", formatValue(s?.mean));
  text("max", formatValue(s?.max));
  const r = state === "connected" ? rate.rate(Date.now()) : null;
  text("rate", formatRate(r));
  $("rate").dataset.value = r === null ? "" : String(r);
  const l = latency.percentiles();
  text("latency-p50", formatMs(l?.p50));
  text("latency-p99", formatMs(l?.p99));
  text("gaps", formatCount(values.gaps));
  text("duplicates", formatCount(values.duplicates));
  text("since", lastArrival === null ? "none yet" : formatAgo((Date.now() - lastArrival) / 1000));
  renderStatus();
}

function renderStatus() {
  // Without a live connection or a recent status the worker's view is unknown, and the page says so.
  const fresh = status !== null && state === "connected" && Date.now() - statusAt < STATUS_STALE_MS;
  $("worker-panel").dataset.stale = String(!fresh);
  const c = status?.counters;
  const unknown = "unknown";
  // Refused: Redis turned down the worker's user or password (docs/security.md); its log says which.
  const refused = fresh && status.redis.refused ? "refused the worker's user" : "not subscribed";
  text("redis-state", fresh ? (status.redis.subscribed ? "subscribed" : refused) : unknown);
  $("redis-state").dataset.ok = fresh ? String(status.redis.subscribed) : "";
  text("tcp-state", fresh ? `${status.tcp.connections} connection${status.tcp.connections === 1 ? "" : "s"}` : unknown);
  $("tcp-state").dataset.ok = fresh ? String(status.tcp.connections > 0) : "";
  text("tcp-port", status ? `port ${status.tcp.port}` : "");
  text("via-redis", c ? formatCount(c.accepted.redis) : "–");
  text("via-tcp", c ? formatCount(c.accepted.tcp) : "–");
  text("via-replay", c ? formatCount(c.accepted.replay) : "–");
  text("received", c ? `${formatCount(c.received.redis)} / ${formatCount(c.received.tcp)}` : "–");
  text("rejected", c ? formatCount(Object.values(c.rejected).reduce((a, b) => a + b, 0)) : "–");
  text("worker-duplicates", c ? formatCount(c.duplicates) : "–");
  text("worker-gaps", c ? formatCount(c.gaps) : "–");
  text("redis-reconnects", c ? formatCount(c.redis_reconnects) : "–");
  text("browser-dropped", c ? formatCount(c.browser_dropped) : "–");
  text("clients", status ? formatCount(status.clients) : "–");
  text("uptime", status ? formatAgo(status.time - status.started_at).replace(" ago", "") : "–");
  if (state === "connected" && status && Date.now() - statusAt >= STATUS_STALE_MS) {
    text("connection-detail", `no word from the worker for ${Math.floor((Date.now() - statusAt) / 1000)} s`);
  }
}

function setState(name, detail) {
  state = name;
  const badge = $("connection");
  badge.dataset.state = name;
  text("connection", name);
  text("connection-detail", detail);
  if (name === "connected") rate.restart(Date.now());
  else alerts = null; // what the worker said before the connection dropped may be stale now
  showAlerts();
  invalidate();
}

function take(envelopes, live) {
  const arrival = Date.now();
  // Only the series chosen: right after a (re)connect or a new choice, the worker may still send the old ones.
  const chosen = Array.isArray(envelopes) ? envelopes.filter((e) => charts.has(e?.series ?? GENERATOR)) : [];
  const fresh = values.add(chosen, { live });
  if (!fresh.length) return;
  for (const e of fresh) charts.get(e.series ?? GENERATOR).lines.add(e);
  if (live) {
    rate.add(arrival, fresh.length);
    for (const e of fresh) latency.add(arrival - e.ts * 1000);
  }
  const newest = live ? arrival : fresh[fresh.length - 1].ts * 1000;
  lastArrival = Math.max(lastArrival ?? 0, newest);
  table.arrived(fresh.length);
  if (arrival - announcedAt >= ANNOUNCE_EVERY_MS) {
    announcedAt = arrival;
    $("announce").textContent = `Last value ${formatValue(values.newest.value)}`;
  }
  invalidate();
}

function takeStatus(body) {
  if (!body || typeof body !== "object" || !body.counters) return;
  status = body;
  statusAt = Date.now();
  text("worker-name", String(body.name));
  text("worker-host", String(body.host));
  const title = `numcast · ${body.name} · ${body.host}`;
  if (document.title !== title) document.title = title;
  invalidate();
}

/** The alert list, or `unknown` with the reason whenever the page cannot know. */
function showAlerts() {
  const fresh = status !== null && Date.now() - statusAt < STATUS_STALE_MS;
  if (state !== "connected") alertList.unknown("not connected to the worker");
  else if (alerts === null) alertList.unknown("waiting for the worker");
  else if (!alerts.synced) alertList.unknown("the worker could not read the active alerts");
  else if (fresh && !status.redis.subscribed) alertList.unknown("the worker is not subscribed to Redis");
  else alertList.show(alerts.alerts, alerts.total);
}

async function fetchJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

/** Fill in what arrived while this page was away; retried while the connection lasts. */
async function backfill(attempt = 0) {
  const query = new URLSearchParams({ limit: String(historySize) });
  for (const name of view.series) query.append("series", name);
  for (const matcher of view.match) query.append("match", matcher);
  try {
    take((await fetchJson(`/api/history?${query}`)).envelopes, false);
  } catch (error) {
    if (state === "connected" && attempt < 5) setTimeout(() => backfill(attempt + 1), 500 * 2 ** attempt);
  }
}

/** Tell the worker what this page watches; once it has taken it, fill in the past. */
function subscribe() {
  if (!socket.connected) return; // the next `connect` subscribes
  const asked = view;
  socket.timeout(5000).emit("subscribe", { series: asked.series, match: asked.match }, (error, reply) => {
    if (asked !== view) return; // chosen again meanwhile: that choice's answer counts
    if (!error && reply && reply.error) text("subscribe-error", `The worker refused this view: ${reply.error}`);
    else text("subscribe-error", error ? "The worker did not answer the subscription; retrying on reconnect." : "");
    backfill();
  });
}

/** Show `next` (series and matchers): in the address, in the picker, as charts; and subscribe to it. */
function choose(next, { initial = false } = {}) {
  view = next;
  const address = `${location.pathname}${viewQuery(view)}`;
  if (!initial && address !== `${location.pathname}${location.search}`) history.pushState(null, "", address);
  picker.setChosen(view.series);
  text("view-match", view.match.length ? `labels ${view.match.join(", ")}` : "");
  // What the page shows starts again with the choice: counts, table and charts cover the series chosen.
  values = newValues();
  rate = new RateMeter();
  rate.restart(Date.now());
  latency = new Latency();
  for (const [name, entry] of charts) {
    entry.chart.destroy();
    entry.card.remove();
    charts.delete(name);
  }
  view.series.forEach((name, i) => charts.set(name, chartCard(name, i)));
  table.shown = -1;
  subscribe();
  invalidate();
}

/** A card with a chart and a legend for series `name`. */
function chartCard(name, i) {
  const card = document.createElement("section");
  card.className = "card chart-card";
  card.dataset.series = name;
  const head = document.createElement("div");
  head.className = "card-head";
  const title = document.createElement("h2");
  title.id = `chart-title-${i}`;
  title.textContent = name;
  const span = document.createElement("p");
  span.className = "muted";
  span.id = `chart-window-${i}`;
  span.textContent = "no values yet";
  head.append(title, span);
  const plot = document.createElement("div");
  plot.className = "chart";
  plot.setAttribute("role", "img");
  plot.setAttribute("aria-label", `Line chart of ${name} against time, one line per label set`);
  const legend = document.createElement("ul");
  legend.className = "legend";
  legend.setAttribute("aria-label", `Label sets of ${name}, with their last value`);
  const note = document.createElement("p");
  note.className = "muted note";
  note.setAttribute("role", "status");
  card.setAttribute("aria-labelledby", title.id);
  card.append(head, plot, legend, note);
  $("charts").append(card);
  const lines = new Lines({ budget: WINDOW_VALUES, maxAgeSeconds: WINDOW_SECONDS });
  return { card, lines, chart: new Chart(plot, legend, WINDOW_SECONDS), drawn: -1, note, windowId: span.id };
}

function refreshSeries() {
  fetchJson("/api/series").then((body) => picker.setKnown(body.series), () => {});
}

const socket = connect(setState);
socket.on("connect", () => {
  subscribe();
  fetchJson("/api/status").then(takeStatus, () => {});
  refreshSeries();
});
socket.on("subscribe_error", () => {}); // the acknowledgement says it too, for the choice it answers
socket.on("numbers", (batch) => take(batch, true));
socket.on("dropped", () => backfill()); // this browser fell behind and the worker skipped values for it
socket.on("status", takeStatus);
socket.on("alerts", (body) => {
  alerts = body && typeof body === "object" && Array.isArray(body.alerts) ? body : null;
  showAlerts();
});
window.addEventListener("popstate", () => choose(readView(location.search, maxSeries), { initial: true }));
$("series-filter").addEventListener("focus", refreshSeries);
setInterval(refreshSeries, SERIES_EVERY_MS);
choose(view, { initial: true });
if (isDefault(view) && location.search) history.replaceState(null, "", location.pathname);
setInterval(() => {
  showAlerts(); // "since" moves on, and a worker that lost Redis makes the list unknown
  statsAt = 0; // the clock moved: "last value 3 s ago", the rate and the chart's window all follow it
  invalidate();
}, 1000);
