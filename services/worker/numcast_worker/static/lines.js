// The lines of one chart, one per label set, each holding its values in the window; bounded in lines and values.
import { labelText } from "./view.js";

export const MAX_LINES = 20; // label sets drawn per chart; the samples of more are counted and left out

export class Lines {
  constructor({ budget, maxAgeSeconds }) {
    this.budget = budget; // values of all lines together: each line keeps an equal share
    this.maxAge = maxAgeSeconds;
    this.byKey = new Map(); // label text -> {labels, text, items (oldest first, by ts then seq), contiguous}
    this.undrawn = new Set(); // label sets left out, for the count shown (itself bounded)
    this.version = 0;
  }

  get share() {
    return Math.max(50, Math.floor(this.budget / Math.max(1, this.byKey.size)));
  }

  /** Take one new value; false when its label set is beyond MAX_LINES. */
  add(e) {
    const text = labelText(e.labels);
    let line = this.byKey.get(text);
    if (!line) {
      if (this.byKey.size >= MAX_LINES) {
        if (this.undrawn.size < 10000) this.undrawn.add(text);
        return false;
      }
      // The generator's line holds every seq of its source, so a missing seq is a hole; a pushed line, a few.
      line = { labels: e.labels || {}, text, items: [], contiguous: e.series === undefined };
      this.byKey.set(text, line);
      for (const other of this.byKey.values()) trim(other, this.share, this.maxAge);
    }
    const items = line.items;
    const last = items[items.length - 1];
    if (!last || byTime(last, e) <= 0) items.push(e);
    else items.splice(insertAt(items, e), 0, e);
    trim(line, this.share, this.maxAge);
    this.version += 1;
    return true;
  }

  /** The lines, in order of their label sets. */
  list() {
    return [...this.byKey.values()].sort((a, b) => (a.text < b.text ? -1 : a.text > b.text ? 1 : 0));
  }

  /** Values in all lines. */
  get count() {
    let n = 0;
    for (const line of this.byKey.values()) n += line.items.length;
    return n;
  }
}

function trim(line, share, maxAge) {
  const items = line.items;
  if (!items.length) return;
  const newest = items[items.length - 1].ts;
  let drop = Math.max(0, items.length - share);
  while (drop < items.length && items[drop].ts < newest - maxAge) drop += 1;
  if (drop) items.splice(0, drop);
}

function byTime(a, b) {
  return a.ts - b.ts || a.seq - b.seq;
}

function insertAt(items, e) {
  let lo = 0;
  let hi = items.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (byTime(items[mid], e) <= 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
