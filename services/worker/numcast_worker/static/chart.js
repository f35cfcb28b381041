// A live chart: one line per label set against time, drawn with uPlot on one canvas, with a legend.
// A line never bridges a stretch without data: it breaks there (a null in uPlot's data, spanGaps false).
import uPlot from "./vendor/uPlot.esm.js";

const HEIGHT = 280;
const COLOURS = 8; // --line-1 ... --line-8 in dashboard.css; more lines reuse them
const GAP_FACTOR = 3; // a line breaks where two values are further apart than this many of its usual intervals
const GAP_MIN_SECONDS = 1; // ...and at least this far apart: jitter on a fast stream is no hole

function palette() {
  const css = getComputedStyle(document.documentElement);
  const get = (name) => css.getPropertyValue(name).trim();
  const lines = [];
  for (let i = 1; i <= COLOURS; i++) lines.push(get(`--line-${i}`));
  return { lines, axis: get("--muted"), grid: get("--grid") };
}

/** The seconds past which two neighbouring values of `items` have a hole between them. */
export function gapLimit(items) {
  if (items.length < 3) return Infinity; // too few to know how often it comes: drawn as it is
  const steps = [];
  for (let i = 1; i < items.length; i++) steps.push(items[i].ts - items[i - 1].ts);
  steps.sort((a, b) => a - b);
  return Math.max(GAP_MIN_SECONDS, GAP_FACTOR * steps[steps.length >> 1]);
}

/**
 * uPlot's aligned data for `lines` ([{items, contiguous}]): one x array, one y array per line, `undefined`
 * where a line has no value at that x (spanned), `null` between two values with a hole between them (a break).
 * A hole: further apart than `gapLimit`, or, for a line that gets every seq of its source, a seq missing.
 */
export function alignedData(lines) {
  const points = [];
  const holes = []; // [line, from, to]: uPlot breaks a line only across its nulls' neighbours in the shared x
  lines.forEach((line, index) => {
    const items = line.items;
    const limit = gapLimit(items);
    for (let i = 0; i < items.length; i++) {
      const e = items[i];
      if (i) {
        const before = items[i - 1];
        const skipped = line.contiguous && before.source === e.source && e.seq - before.seq > 1;
        if (skipped || e.ts - before.ts > limit) {
          points.push([(before.ts + e.ts) / 2, index, null]);
          holes.push([index, before.ts, e.ts]);
        }
      }
      points.push([e.ts, index, e.value]);
    }
  });
  if (lines.length > 1) points.sort((a, b) => a[0] - b[0]);
  const xs = [];
  const ys = lines.map(() => []);
  for (const [x, index, y] of points) {
    const at = xs.length - 1;
    if (at >= 0 && xs[at] === x && ys[index][at] === undefined) {
      ys[index][at] = y;
      continue;
    }
    xs.push(x);
    for (const column of ys) column.push(undefined);
    ys[index][at + 1] = y;
  }
  // Every x of other lines within a hole is a null of this line too, so that the break spans the whole hole.
  for (const [index, from, to] of holes) {
    const column = ys[index];
    for (let i = firstAbove(xs, from); i < xs.length && xs[i] < to; i++) if (column[i] === undefined) column[i] = null;
  }
  return [xs, ...ys];
}

function firstAbove(xs, x) {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (xs[mid] <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export class Chart {
  constructor(container, legend, windowSeconds, title) {
    this.container = container;
    this.legend = legend;
    this.windowSeconds = windowSeconds;
    this.title = title;
    this.range = [Date.now() / 1000 - windowSeconds, Date.now() / 1000];
    this.keys = []; // label text of each line, in the plot's order
    this.data = [[], []];
    this.plot = null;
    this.colours = palette();
    this.#create();
    this.resize = new ResizeObserver(() => this.plot.setSize(this.#size()));
    this.resize.observe(container);
    // Follow a switch between light and dark: the colours are read from CSS once per plot.
    this.scheme = matchMedia("(prefers-color-scheme: dark)");
    this.onScheme = () => {
      this.colours = palette();
      this.#create();
      this.#legend(this.lastLines ?? []);
    };
    this.scheme.addEventListener("change", this.onScheme);
  }

  /** Draw `lines` (from Lines.list()) in a window that ends now, so a stalled stream shows as empty space. */
  draw(lines, nowSeconds) {
    this.lastLines = lines;
    let first = Infinity;
    for (const line of lines) if (line.items.length) first = Math.min(first, line.items[0].ts);
    const start = Number.isFinite(first) ? Math.max(first, nowSeconds - this.windowSeconds) : nowSeconds - 60;
    this.range = [Math.min(start, nowSeconds - 5), nowSeconds];
    const keys = lines.map((line) => line.text);
    if (keys.length !== this.keys.length || keys.some((k, i) => k !== this.keys[i])) {
      this.keys = keys;
      this.data = alignedData(lines);
      this.#create();
    } else {
      this.data = alignedData(lines);
      this.plot.setData(this.data);
    }
    this.#legend(lines);
  }

  destroy() {
    this.resize.disconnect();
    this.scheme.removeEventListener("change", this.onScheme);
    this.plot?.destroy();
  }

  #legend(lines) {
    const items = this.legend.children;
    while (items.length > lines.length) this.legend.lastElementChild.remove();
    lines.forEach((line, i) => {
      let li = items[i];
      if (!li) {
        li = document.createElement("li");
        const swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.setAttribute("aria-hidden", "true");
        const name = document.createElement("span");
        name.className = "line-labels";
        const value = document.createElement("span");
        value.className = "line-value";
        li.append(swatch, name, value);
        this.legend.append(li);
      }
      const [swatch, name, value] = li.children;
      swatch.style.backgroundColor = this.#colour(i); // CSSOM, which the page's CSP allows
      const text = line.text || "(no labels)";
      if (name.textContent !== text) name.textContent = text; // text, never HTML
      li.dataset.labels = line.text;
      const last = line.items[line.items.length - 1];
      const shown = last ? String(Math.round(last.value * 1000) / 1000) : "–";
      if (value.textContent !== shown) value.textContent = shown;
    });
  }

  #colour(i) {
    return this.colours.lines[i % COLOURS];
  }

  #size() {
    return { width: Math.max(200, Math.floor(this.container.clientWidth)), height: HEIGHT };
  }

  #create() {
    const colours = this.colours;
    const axis = { stroke: colours.axis, grid: { stroke: colours.grid, width: 1 }, ticks: { stroke: colours.grid } };
    const series = [{ label: "time" }];
    // A 1-px line without fill or points: at 1,000 values/s anything more costs most of a core to rasterise.
    this.keys.forEach((key, i) => {
      series.push({ label: key || "(no labels)", stroke: this.#colour(i), width: 1, points: { show: false } });
    });
    if (series.length === 1) series.push({ label: "value", stroke: this.#colour(0), width: 1, points: { show: false } });
    const data = this.data.length === series.length ? this.data : [[], ...series.slice(1).map(() => [])];
    const options = {
      ...this.#size(),
      scales: {
        x: { time: true, range: () => this.range },
        y: { range: (u, min, max) => uPlot.rangeNum(min ?? 0, max ?? 1, 0.1, true) },
      },
      series,
      axes: [axis, { ...axis, size: 60 }],
      // No hover read-out: the legend and the table have the values, and a still chart costs nothing between frames.
      legend: { show: false },
      cursor: { show: false },
    };
    this.plot?.destroy();
    this.plot = new uPlot(options, data, this.container);
  }
}
