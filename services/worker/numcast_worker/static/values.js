// The values this page holds: deduplicated, sorted by time, bounded by count and age; gaps per source of the
// generator's series (a pushed series comes filtered, so its seqs skip by design).
import { AGAIN, NEW, SeenKeys } from "./seen.js";

const MAX_SOURCES = 64;

export class Values {
  constructor({ capacity, maxAgeSeconds, seenCapacity }) {
    this.capacity = capacity;
    this.maxAge = maxAgeSeconds;
    this.items = []; // {seq, value, ts, source, and series, labels if pushed}, oldest first, by (ts, seq)
    this.seen = new SeenKeys(seenCapacity);
    this.ranges = new Map(); // source -> {min, max, have}: the seqs in [min, max] this page never got are gaps
    this.count = 0; // distinct values shown since the page opened
    this.duplicates = 0; // values that came over the WebSocket twice
    this.version = 0; // bumped on every change, so renderers can tell whether to redraw
  }

  /** Take a batch (live or backfilled); return the envelopes that were new. */
  add(envelopes, { live }) {
    const fresh = [];
    for (const e of envelopes) {
      if (!isEnvelope(e)) continue;
      const seen = this.seen.add(e.source, e.seq, live);
      if (seen !== NEW) {
        if (seen === AGAIN) this.duplicates += 1; // a backfill overlapping the live stream is no duplicate
        continue;
      }
      const value = { seq: e.seq, value: e.value, ts: e.ts, source: e.source };
      if (e.series === undefined) {
        this.#track(e.source, e.seq); // the generator's: every seq of its source comes, so a missing one is a gap
      } else {
        value.series = e.series; // pushed: this page gets only the series it chose, so seqs skip by design
        value.labels = e.labels;
      }
      fresh.push(value);
    }
    if (!fresh.length) return fresh;
    this.count += fresh.length;
    fresh.sort(byTime);
    const last = this.items[this.items.length - 1];
    this.items = !last || byTime(last, fresh[0]) <= 0 ? this.items.concat(fresh) : merge(this.items, fresh);
    this.#trim();
    this.version += 1;
    return fresh;
  }

  /** Seqs never received, summed over sources. */
  get gaps() {
    let gaps = 0;
    for (const r of this.ranges.values()) gaps += r.max - r.min + 1 - r.have;
    return gaps;
  }

  get newest() {
    return this.items[this.items.length - 1];
  }

  #track(source, seq) {
    const r = this.ranges.get(source);
    if (!r) {
      this.ranges.set(source, { min: seq, max: seq, have: 1 });
      if (this.ranges.size > MAX_SOURCES) this.ranges.delete(this.ranges.keys().next().value);
      return;
    }
    r.min = Math.min(r.min, seq);
    r.max = Math.max(r.max, seq);
    r.have += 1;
  }

  #trim() {
    const newest = this.items[this.items.length - 1].ts;
    let drop = Math.max(0, this.items.length - this.capacity);
    while (drop < this.items.length && this.items[drop].ts < newest - this.maxAge) drop += 1;
    if (drop) this.items = this.items.slice(drop);
  }
}

function isEnvelope(e) {
  return (
    e !== null &&
    typeof e === "object" &&
    Number.isSafeInteger(e.seq) &&
    Number.isFinite(e.value) &&
    Number.isFinite(e.ts) &&
    typeof e.source === "string" &&
    (e.series === undefined || (typeof e.series === "string" && e.labels !== null && typeof e.labels === "object"))
  );
}

function byTime(a, b) {
  return a.ts - b.ts || a.seq - b.seq;
}

function merge(a, b) {
  const out = new Array(a.length + b.length);
  let i = 0;
  let j = 0;
  let k = 0;
  while (i < a.length && j < b.length) out[k++] = byTime(a[i], b[j]) <= 0 ? a[i++] : b[j++];
  while (i < a.length) out[k++] = a[i++];
  while (j < b.length) out[k++] = b[j++];
  return out;
}
