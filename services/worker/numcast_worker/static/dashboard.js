// The worker dashboard: values over a WebSocket, backfilled from /api/history on every (re)connect.
import { io } from "./vendor/socket.io.esm.min.js";

const MAX_ROWS = 200;
const seen = new Set(); // "source:seq" of every value shown, so a backfill never shows one twice
const rows = document.getElementById("values");
const state = document.getElementById("connection");
let count = 0;

function setState(name) {
  state.textContent = name;
  state.dataset.state = name;
}

function show(envelopes) {
  const fresh = envelopes.filter((e) => !seen.has(`${e.source}:${e.seq}`));
  for (const e of fresh) seen.add(`${e.source}:${e.seq}`);
  if (!fresh.length) return;
  count += fresh.length;
  const cells = fresh.slice(-MAX_ROWS).map((e) => {
    const tr = document.createElement("tr");
    tr.dataset.seq = e.seq;
    for (const text of [e.seq, e.value, new Date(e.ts * 1000).toLocaleTimeString(), e.source]) {
      const td = document.createElement("td");
      td.textContent = String(text); // always text, never HTML
      tr.append(td);
    }
    return tr;
  });
  rows.prepend(...cells.reverse());
  while (rows.rows.length > MAX_ROWS) rows.lastElementChild.remove();
  document.getElementById("last-value").textContent = String(fresh[fresh.length - 1].value);
  document.getElementById("count").textContent = String(count);
}

async function backfill() {
  const response = await fetch(`/api/history?limit=${document.body.dataset.historySize}`);
  if (response.ok) show((await response.json()).envelopes);
}

const socket = io({ transports: ["websocket"] }); // no long-polling detour: straight to the WebSocket
socket.on("connect", () => { setState("connected"); backfill(); });
socket.on("disconnect", () => setState("disconnected"));
socket.io.on("reconnect_attempt", () => setState("reconnecting"));
socket.on("numbers", show);
