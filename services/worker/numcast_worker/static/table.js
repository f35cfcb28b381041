// The recent-values table: a fixed set of rows whose text is rewritten, newest first; it can be paused.
import { formatTime, formatValue } from "./format.js";
import { GENERATOR, labelText } from "./view.js";

export class RecentTable {
  constructor(tbody, button, note, rows, onResume) {
    this.tbody = tbody;
    this.button = button;
    this.note = note;
    this.rows = [];
    this.shown = -1; // version of the values the table shows now, to skip identical rewrites
    this.paused = false;
    this.pending = 0; // values that arrived while paused
    for (let i = 0; i < rows; i++) {
      const tr = document.createElement("tr");
      tr.hidden = true;
      for (let c = 0; c < 5; c++) tr.append(document.createElement("td"));
      this.rows.push(tr);
    }
    tbody.replaceChildren(...this.rows);
    button.addEventListener("click", () => {
      this.setPaused(!this.paused);
      if (!this.paused) onResume();
    });
  }

  setPaused(paused) {
    this.paused = paused;
    this.pending = 0;
    this.button.setAttribute("aria-pressed", String(paused));
    this.button.textContent = paused ? "Resume scrolling" : "Pause scrolling";
    this.note.textContent = paused ? "Paused: new values are kept and shown on resume." : "";
    this.shown = -1;
  }

  /** Count values that arrived while paused (shown in the note). */
  arrived(count) {
    if (!this.paused) return;
    this.pending += count;
    this.note.textContent = `Paused: ${this.pending} new value${this.pending === 1 ? "" : "s"} will be shown on resume.`;
  }

  /** Show the newest of `items` (oldest first, at `version`); at most one rewrite of the fixed rows. */
  render(items, version) {
    if (this.paused || version === this.shown) return;
    this.shown = version;
    const count = Math.min(this.rows.length, items.length);
    for (let i = 0; i < this.rows.length; i++) {
      const tr = this.rows[i];
      if (i >= count) {
        tr.hidden = true;
        continue;
      }
      const e = items[items.length - 1 - i];
      const id = `${e.source}:${e.seq}`;
      tr.hidden = false;
      if (tr.dataset.key === id) continue;
      tr.dataset.key = id;
      tr.dataset.seq = String(e.seq);
      tr.dataset.source = e.source;
      const [seq, series, value, time, source] = tr.cells;
      // Always text, never HTML: whatever a message carries cannot become markup.
      seq.textContent = String(e.seq);
      series.textContent = e.series === undefined ? GENERATOR : `${e.series}${labelText(e.labels)}`;
      value.textContent = formatValue(e.value);
      time.textContent = formatTime(e.ts);
      source.textContent = e.source;
    }
  }
}
