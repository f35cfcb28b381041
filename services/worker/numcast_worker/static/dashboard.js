// The worker dashboard: live values over a WebSocket, backfilled from /api/history on every (re)connect,
// drawn at most once per animation frame into a bounded DOM.
import { AlertList } from "../numcast/alerts.js";
import { Chart } from "./chart.js";
import { connect } from "./connection.js";
import { formatAgo, formatCount, formatMs, formatRate, formatValue } from "./format.js";
import { Latency, RateMeter, summary } from "./stats.js";
import { RecentTable } from "./table.js";
import { Values } from "./values.js";

const WINDOW_SECONDS = 180; // what the chart and min/max/mean cover...
const WINDOW_VALUES = 3000; // ...unless values come faster than this many per window
const TABLE_ROWS = 100;
const ANNOUNCE_EVERY_MS = 10000; // a screen reader hears the last value at most this often
const STATS_EVERY_MS = 250; // figures that need sorting or summing are refreshed a few times a second
const TABLE_EVERY_MS = 100; // rows rewritten faster than this cannot be read, and cost layout
const STATUS_STALE_MS = 5000; // the worker pushes its status every second; silence longer than this is news

const $ = (id) => document.getElementById(id);
const historySize = Number(document.body.dataset.historySize) || 1000;
const values = new Values({
  capacity: WINDOW_VALUES,
  maxAgeSeconds: WINDOW_SECONDS,
  seenCapacity: Math.max(4 * historySize, 2 * WINDOW_VALUES),
});
const rate = new RateMeter();
const latency = new Latency();
const chart = new Chart($("chart"), WINDOW_SECONDS);
const table = new RecentTable($("values"), $("pause"), $("pause-note"), TABLE_ROWS, () => invalidate());

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
  chart.draw(items, Date.now() / 1000);
  if (now - statsAt >= STATS_EVERY_MS) {
    statsAt = now;
    renderStats(items);
  }
}

function renderStats(items) {
  const s = summary(items);
  text("min", formatValue(s?.min));
  text("mean", formatValue(s?.mean));
  text("max", formatValue(s?.max));
  text("window", s ? `${formatCount(s.n)} values over ${Math.round(s.span)} s` : "no values yet");
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
  const fresh = values.add(Array.isArray(envelopes) ? envelopes : [], { live });
  if (!fresh.length) return;
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
  else alertList.show(alerts.alerts);
}

async function fetchJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

/** Fill in what arrived while this page was away; retried while the connection lasts. */
async function backfill(attempt = 0) {
  try {
    take((await fetchJson(`/api/history?limit=${historySize}`)).envelopes, false);
  } catch (error) {
    if (state === "connected" && attempt < 5) setTimeout(() => backfill(attempt + 1), 500 * 2 ** attempt);
  }
}

const socket = connect(setState);
socket.on("connect", () => {
  backfill();
  fetchJson("/api/status").then(takeStatus, () => {});
});
socket.on("numbers", (batch) => take(batch, true));
socket.on("dropped", () => backfill()); // this browser fell behind and the worker skipped values for it
socket.on("status", takeStatus);
socket.on("alerts", (body) => {
  alerts = body && typeof body === "object" && Array.isArray(body.alerts) ? body : null;
  showAlerts();
});
setInterval(() => {
  showAlerts(); // "since" moves on, and a worker that lost Redis makes the list unknown
  statsAt = 0; // the clock moved: "last value 3 s ago", the rate and the chart's window all follow it
  invalidate();
}, 1000);
