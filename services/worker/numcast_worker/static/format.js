// Number and time formatting, with formatters built once (Intl objects are costly to create).
const value = new Intl.NumberFormat(undefined, { maximumFractionDigits: 3 });
const whole = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const rate = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

export const formatValue = (v) => (v === null || v === undefined ? "–" : value.format(v));
export const formatCount = (n) => (n === null || n === undefined ? "–" : whole.format(n));
export const formatRate = (r) => (r === null || r === undefined ? "–" : rate.format(r));

export function formatMs(ms) {
  if (ms === null || ms === undefined) return "–";
  return ms < 10 ? `${ms.toFixed(1)} ms` : ms < 10000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

/** Local wall-clock time of a Unix-seconds timestamp, to the millisecond. */
export function formatTime(ts) {
  const d = new Date(ts * 1000);
  const two = (n) => String(n).padStart(2, "0");
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

/** "just now", "4 s ago", "3 min ago", "2 h ago". */
export function formatAgo(seconds) {
  if (seconds === null || seconds === undefined) return "never";
  if (seconds < 1) return "just now";
  if (seconds < 120) return `${Math.floor(seconds)} s ago`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)} min ago`;
  return `${Math.floor(seconds / 3600)} h ago`;
}
