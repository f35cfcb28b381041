// The control-plane's HTTP API, as the page uses it.

export async function getJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.json();
}

/** PATCH /api/config, with the control token when there is one; resolve to {ok, status, body}, where a refused
 * change has body {error, field} (an invalid value) or {error, reason} (no token, or the wrong one). */
export async function patchConfig(changes, token = "") {
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch("/api/config", { method: "PATCH", headers, body: JSON.stringify(changes) });
  let body;
  try {
    body = await response.json();
  } catch {
    body = { error: `HTTP ${response.status}`, field: null };
  }
  return { ok: response.ok, status: response.status, body };
}

/** A table cell holding `value` as text: whatever another process wrote cannot become markup. */
export function cell(value, className = "") {
  const td = document.createElement("td");
  td.textContent = String(value);
  if (className) td.className = className;
  return td;
}

const count = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const decimal = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 });
export const formatCount = (n) => (Number.isFinite(n) ? count.format(n) : "–");
export const formatNumber = (n) => (Number.isFinite(n) ? decimal.format(n) : "–");

export function formatAgo(seconds) {
  if (!Number.isFinite(seconds)) return "–";
  if (seconds < 1) return "just now";
  if (seconds < 120) return `${Math.floor(seconds)} s ago`;
  return `${Math.floor(seconds / 60)} min ago`;
}
