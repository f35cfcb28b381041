// The active alerts as a list, shared by the dashboard and the control page. Everything is set as text:
// nothing an alert carries (labels, annotations, names) can become markup.
const MAX_SHOWN = 50; // a bounded DOM; the count still says how many there are
const MAX_LABELS_TEXT = 300; // characters of an alert's labels shown: 32 labels of 1,024 would fill the page
const SEVERITIES = new Set(["critical", "error", "warning", "info"]);

function clock(ms) {
  const d = new Date(ms);
  const two = (n) => String(n).padStart(2, "0");
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

function ago(seconds) {
  if (!Number.isFinite(seconds) || seconds < 1) return "just now";
  if (seconds < 120) return `${Math.floor(seconds)} s ago`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)} min ago`;
  return `${Math.floor(seconds / 3600)} h ago`;
}

function span(className, text) {
  const el = document.createElement("span");
  el.className = className;
  el.textContent = text;
  return el;
}

export class AlertList {
  /** `list` is a <ul>; `count` and `note` show how many, or why the list is unknown. */
  constructor(list, count, note) {
    this.list = list;
    this.count = count;
    this.note = note;
    this.alerts = null; // null: unknown
    this.total = 0; // the alerts there are: the worker sends only the first ones
    this.reason = "";
    this.unknown("not connected yet");
  }

  /** The page cannot tell which alerts are active (`reason` says why): show `unknown`, never a stale list. */
  unknown(reason) {
    this.alerts = null;
    this.reason = reason;
    this.render();
  }

  /** The active set as the worker (its first alerts, most severe first, and their `total`) or the control-plane
   * (all of them) sends it. */
  show(alerts, total) {
    this.alerts = Array.isArray(alerts) ? alerts : [];
    this.total = Number.isInteger(total) && total >= this.alerts.length ? total : this.alerts.length;
    this.render();
  }

  /** Rewrite the list (also once a second, so "since" keeps up). */
  render() {
    const panel = this.list.closest("[data-alerts]");
    if (this.alerts === null) {
      if (panel) panel.dataset.alerts = "unknown";
      this.list.replaceChildren();
      this.count.textContent = "–";
      this.note.textContent = `unknown: ${this.reason}`;
      return;
    }
    if (panel) panel.dataset.alerts = this.total ? "firing" : "none";
    this.count.textContent = String(this.total);
    const hidden = this.total - Math.min(this.alerts.length, MAX_SHOWN);
    this.note.textContent = this.total ? (hidden > 0 ? `${hidden} more not shown` : "") : "No active alerts.";
    this.list.replaceChildren(...this.alerts.slice(0, MAX_SHOWN).map((alert) => this.item(alert)));
  }

  item(alert) {
    const li = document.createElement("li");
    li.dataset.fingerprint = String(alert.fingerprint);
    const labels = alert.labels || {};
    const severity = String(labels.severity ?? "none");
    const badge = span("severity", severity);
    badge.dataset.severity = SEVERITIES.has(severity) ? severity : "other";
    const summary = String(alert.annotations?.summary || alert.alertname);
    const started = Date.parse(alert.startsAt);
    const since = Number.isFinite(started) ? `since ${clock(started)} (${ago((Date.now() - started) / 1000)})` : "";
    const origin = alert.origin === "stream" ? "stream rule" : "Alertmanager";
    li.append(badge, span("summary", summary));
    // What tells apart the alerts of one rule, one per label set: every label but the severity, already shown.
    let shown = Object.entries(labels)
      .filter(([name]) => name !== "severity")
      .map(([name, value]) => `${name}=${value}`)
      .join(" ");
    if (shown.length > MAX_LABELS_TEXT) shown = `${shown.slice(0, MAX_LABELS_TEXT - 1)}…`;
    if (shown) li.append(span("alert-labels", shown));
    li.append(span("alert-meta", [String(alert.alertname), since, origin].filter(Boolean).join(" · ")));
    return li;
  }
}
