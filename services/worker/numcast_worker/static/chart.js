// The live chart: recent values against time, drawn with uPlot on one canvas.
import uPlot from "./vendor/uPlot.esm.js";

const HEIGHT = 280;

function palette() {
  const css = getComputedStyle(document.documentElement);
  const get = (name) => css.getPropertyValue(name).trim();
  return { line: get("--chart-line"), fill: get("--chart-fill"), axis: get("--muted"), grid: get("--grid") };
}

export class Chart {
  constructor(container, windowSeconds) {
    this.container = container;
    this.windowSeconds = windowSeconds;
    this.range = [Date.now() / 1000 - windowSeconds, Date.now() / 1000];
    this.data = [new Float64Array(0), new Float64Array(0)];
    this.plot = null;
    this.#create();
    new ResizeObserver(() => this.plot.setSize(this.#size())).observe(container);
    // Follow a switch between light and dark: the colours are read from CSS once per plot.
    matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => this.#create());
  }

  /** Draw `items` (oldest first) in a window that ends now, so a stalled stream shows as empty space. */
  draw(items, nowSeconds) {
    const xs = new Float64Array(items.length);
    const ys = new Float64Array(items.length);
    for (let i = 0; i < items.length; i++) {
      xs[i] = items[i].ts;
      ys[i] = items[i].value;
    }
    const start = items.length ? Math.max(items[0].ts, nowSeconds - this.windowSeconds) : nowSeconds - 60;
    this.range = [Math.min(start, nowSeconds - 5), nowSeconds];
    this.data = [xs, ys];
    this.plot.setData(this.data);
  }

  #size() {
    return { width: Math.max(200, Math.floor(this.container.clientWidth)), height: HEIGHT };
  }

  #create() {
    const colours = palette();
    const axis = { stroke: colours.axis, grid: { stroke: colours.grid, width: 1 }, ticks: { stroke: colours.grid } };
    const options = {
      ...this.#size(),
      scales: {
        x: { time: true, range: () => this.range },
        y: { range: (u, min, max) => uPlot.rangeNum(min, max, 0.1, true) },
      },
      series: [
        { label: "time" },
        // A 1-px line without fill: at 1,000 values/s a fill or a thicker line costs most of a core to rasterise.
        { label: "value", stroke: colours.line, width: 1, points: { show: false } },
      ],
      axes: [axis, { ...axis, size: 60 }],
      // No hover read-out: the table has the exact values, and a still chart costs nothing between frames.
      legend: { show: false },
      cursor: { show: false },
    };
    this.plot?.destroy();
    this.plot = new uPlot(options, this.data, this.container);
  }
}
