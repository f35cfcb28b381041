// Figures derived from the stream: rate of live values, end-to-end latency, min/max/mean over the window.

/** Live values per second over a sliding window, counted by arrival in the browser. */
export class RateMeter {
  constructor(windowMs = 5000) {
    this.windowMs = windowMs;
    this.batches = []; // [arrival ms, count]: one per batch, which is one per value on a quiet stream
    this.since = 0; // when counting (re)started: a fresh connection has less than a full window behind it
  }

  restart(now) {
    this.batches = [];
    this.since = now;
  }

  add(now, count) {
    this.batches.push([now, count]);
  }

  rate(now) {
    const from = now - this.windowMs;
    let drop = 0;
    while (drop < this.batches.length && this.batches[drop][0] <= from) drop += 1;
    if (drop) this.batches.splice(0, drop);
    const span = Math.min(this.windowMs, now - this.since);
    if (span < 1000) return null; // too little time to say anything honest
    let total = 0;
    for (const [, count] of this.batches) total += count;
    return (total * 1000) / span;
  }
}

/** The last `size` latencies (ms), with median and p99 on demand. */
export class Latency {
  constructor(size = 2000) {
    this.samples = new Float64Array(size);
    this.length = 0;
    this.next = 0;
  }

  add(ms) {
    this.samples[this.next] = ms;
    this.next = (this.next + 1) % this.samples.length;
    this.length = Math.min(this.length + 1, this.samples.length);
  }

  percentiles() {
    if (!this.length) return null;
    const sorted = this.samples.slice(0, this.length).sort();
    const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
    return { p50: at(0.5), p99: at(0.99), n: this.length };
  }
}

/** Min, max and mean of the values in `items`. */
export function summary(items) {
  if (!items.length) return null;
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  for (const { value } of items) {
    if (value < min) min = value;
    if (value > max) max = value;
    sum += value;
  }
  return { min, max, mean: sum / items.length, n: items.length, span: items[items.length - 1].ts - items[0].ts };
}
