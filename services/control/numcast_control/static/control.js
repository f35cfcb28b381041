// The control page: config and counters by polling /api/status, presence from /api/workers, once a second.
import { AlertList } from "../numcast/alerts.js";
import { cell, formatAgo, formatCount, formatNumber, getJson } from "./api.js";
import { ConfigForm } from "./form.js";
import { takeTokenFromAddress } from "./token.js";

const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);
takeTokenFromAddress();
const form = new ConfigForm($("config-form"), $("pause"), showConfig, $("token-form"));
const alertList = new AlertList($("alerts"), $("alert-count"), $("alerts-note"));
let lastSeq = null; // [seq, ms] of the previous poll, for the measured rate
let failingSince = null; // ms of the first failed poll in a row

function text(id, value) {
  const el = $(id);
  if (el.textContent !== value) el.textContent = value;
}

function showConfig(config) {
  text("current-rate_hz", formatNumber(config.rate_hz));
  text("current-min", formatNumber(config.min));
  text("current-max", formatNumber(config.max));
  text("state", config.paused ? "paused" : "publishing");
  $("state").dataset.ok = String(!config.paused);
}

function showStatus(status) {
  const now = Date.now();
  text("source", status.source);
  text("seq", formatCount(status.seq));
  if (lastSeq && lastSeq[1] < now) {
    // A new source (a restart) starts its seq again: no rate until two polls of the same run.
    const rate = status.seq >= lastSeq[0] ? ((status.seq - lastSeq[0]) * 1000) / (now - lastSeq[1]) : null;
    text("measured-rate", rate === null ? "–" : formatNumber(Math.round(rate * 10) / 10));
  }
  lastSeq = [status.seq, now];
  showConfig(status.config);
  form.update(status.config);
  form.needToken(status.auth);
  $("outputs").replaceChildren(
    ...status.outputs.map((o) => {
      const tr = document.createElement("tr");
      const connected = cell(o.connected ? "yes" : "no");
      connected.dataset.ok = String(Boolean(o.connected));
      tr.append(cell(o.name), cell(o.path), connected, cell(formatCount(o.sent), "num"),
        cell(formatCount(o.queued), "num"), cell(formatCount(o.dropped), "num"));
      return tr;
    }),
  );
}

function showWorkers(workers) {
  const now = Date.now() / 1000;
  text("worker-count", String(workers.length));
  $("workers-empty").hidden = workers.length > 0;
  $("workers").replaceChildren(
    ...workers.map((w) => {
      const tr = document.createElement("tr");
      tr.dataset.worker = String(w.name);
      tr.append(cell(w.name), cell(w.host), cell(formatCount(w.clients), "num"), cell(formatCount(w.received), "num"),
        cell(formatAgo(Math.max(0, now - w.last_seen))));
      return tr;
    }),
  );
}

/** What a rule watches, PromQL-style (`queue_depth{queue=~bill.*}`): nothing for the generator's series alone. */
function selector(rule) {
  const match = Array.isArray(rule.match) ? rule.match.map(String) : [];
  if ((rule.series ?? "numcast_value") === "numcast_value" && match.length === 0) return "";
  return `${rule.series}${match.length ? `{${match.join(", ")}}` : ""} `;
}

function condition(rule) {
  if ("above" in rule) return `${selector(rule)}above ${formatNumber(rule.above)}`;
  if ("below" in rule) return `${selector(rule)}below ${formatNumber(rule.below)}`;
  return `${selector(rule)}silent for ${formatNumber(rule.silent_for)} s`;
}

/** How many label sets a rule keeps in each state, and how many it refused: one line however many there are. */
function labelSets(rule) {
  const counts = rule.counts ?? {};
  const total = ["firing", "pending", "inactive"].reduce((sum, state) => sum + (Number(counts[state]) || 0), 0);
  const parts = ["firing", "pending", "inactive"]
    .filter((state) => Number(counts[state]) > 0)
    .map((state) => `${formatCount(Number(counts[state]))} ${state}`);
  let text = parts.length ? parts.join(" · ") : "none yet";
  if (total >= Number(rule.max_label_sets) && total > 1) text += ` (the limit, ${formatCount(total)})`;
  const refused = Object.values(rule.refused ?? {}).reduce((sum, n) => sum + (Number(n) || 0), 0);
  if (refused > 0) text += ` · ${formatCount(refused)} refused`;
  const td = cell(text);
  td.dataset.labelSets = String(total);
  return td;
}

/** What the alerter keeps in Redis: the active alerts and the state of each of its rules. */
function showAlerts(body) {
  if (body.alerts === null) alertList.unknown("the control-plane cannot read Redis");
  else alertList.show(body.alerts);
  const rules = Array.isArray(body.rules) ? body.rules : [];
  $("rules-empty").hidden = rules.length > 0;
  const now = Date.now() / 1000;
  $("rules").replaceChildren(
    ...rules.slice(0, 100).map((rule) => {
      const tr = document.createElement("tr");
      tr.dataset.rule = String(rule.alert);
      const state = cell(rule.state);
      state.dataset.state = String(rule.state);
      const wait = rule.for ? ` for ${formatNumber(rule.for)} s` : "";
      tr.append(cell(rule.alert), cell(condition(rule) + wait), state, cell(formatAgo(Math.max(0, now - rule.since))),
        cell(formatNumber(rule.value), "num"), labelSets(rule));
      return tr;
    }),
  );
}

function setLink(ok, detail) {
  $("link").dataset.state = ok ? "connected" : "disconnected";
  text("link", ok ? "live" : "unreachable");
  text("link-detail", detail);
}

async function poll() {
  try {
    const [status, presence, alerts] = await Promise.all([
      getJson("/api/status"),
      getJson("/api/workers"),
      getJson("/api/alerts"),
    ]);
    showStatus(status);
    showWorkers(presence.workers);
    showAlerts(alerts);
    failingSince = null;
    setLink(true, "");
  } catch (error) {
    failingSince ??= Date.now();
    alertList.unknown("the control-plane does not answer");
    setLink(false, `no answer for ${Math.round((Date.now() - failingSince) / 1000)} s (${error.message})`);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
