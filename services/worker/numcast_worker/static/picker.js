// The series picker: the series the worker has seen (from /api/series), filtered as one types, as checkboxes.
import { formatRate } from "./format.js";

const SHOWN = 50; // options listed at once: typing narrows the rest

export class SeriesPicker {
  constructor({ input, list, note, max, onChange }) {
    this.input = input;
    this.list = list;
    this.note = note;
    this.max = max;
    this.onChange = onChange;
    this.known = new Map(); // name -> {sets, rate}
    this.chosen = [];
    input.addEventListener("input", () => this.render());
    list.addEventListener("change", (event) => {
      const box = event.target;
      if (!(box instanceof HTMLInputElement)) return;
      const chosen = this.chosen.filter((name) => name !== box.value);
      if (box.checked) chosen.push(box.value);
      this.onChange(chosen);
    });
  }

  /** What /api/series listed: [{name, label_sets: [{labels, value, ts, rate}]}]. */
  setKnown(series) {
    this.known = new Map();
    for (const { name, label_sets: sets } of Array.isArray(series) ? series : []) {
      if (typeof name !== "string" || !Array.isArray(sets)) continue;
      this.known.set(name, { sets: sets.length, rate: sets.reduce((sum, s) => sum + (Number(s.rate) || 0), 0) });
    }
    this.render();
  }

  setChosen(names) {
    this.chosen = [...names];
    this.render();
  }

  render() {
    const wanted = this.input.value.trim().toLowerCase();
    const names = [...new Set([...this.chosen, ...[...this.known.keys()].sort()])];
    const matching = names.filter((name) => name.toLowerCase().includes(wanted));
    const shown = matching.slice(0, SHOWN);
    const full = this.chosen.length >= this.max;
    const rows = shown.map((name) => {
      const li = document.createElement("li");
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.value = name;
      box.checked = this.chosen.includes(name);
      // At least one series stays chosen, and at most `max`.
      box.disabled = box.checked ? this.chosen.length === 1 : full;
      const text = document.createElement("span");
      text.className = "series-name";
      text.textContent = name;
      const about = document.createElement("span");
      about.className = "muted series-about";
      const known = this.known.get(name);
      about.textContent = known
        ? `${known.sets} label set${known.sets === 1 ? "" : "s"} · ${formatRate(known.rate)}/s`
        : "not seen by this worker yet";
      label.append(box, text, about);
      li.append(label);
      return li;
    });
    this.list.replaceChildren(...rows);
    const more = matching.length - shown.length;
    const parts = [];
    if (!matching.length) parts.push(wanted ? "no series matches" : "no series seen yet");
    if (more > 0) parts.push(`${more} more match: type to narrow`);
    if (full) parts.push(`at most ${this.max} series at once`);
    this.note.textContent = parts.join(" · ");
  }
}
