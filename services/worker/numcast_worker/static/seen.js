// A bounded memory of the "source:seq" keys already shown, so a backfill never shows a value twice.
//
// Exact for the last `capacity` keys. When a key is forgotten, its seq becomes that source's floor and
// anything at or below the floor counts as seen: a value that old is outside every window anyway, and
// counting it as new would be the one way to show something twice.
const MAX_SOURCES = 64; // a source is one control-plane run; only the recent ones matter
export const NEW = 0;
export const AGAIN = 1;
export const OVERLAP = 2;

export class SeenKeys {
  constructor(capacity) {
    this.capacity = capacity;
    this.keys = new Map(); // key -> came live; insertion-ordered, so the first one is the one to forget
    this.floors = new Map();
  }

  has(source, seq) {
    const floor = this.floors.get(source);
    return (floor !== undefined && seq <= floor) || this.keys.has(`${source}:${seq}`);
  }

  /**
   * Remember one key; return NEW, or AGAIN when it came live twice (a real duplicate), or OVERLAP when one
   * of the two copies came from a backfill (expected: the history and the live stream overlap at a connect).
   */
  add(source, seq, live) {
    const key = `${source}:${seq}`;
    const before = this.keys.get(key);
    if (before === undefined && !this.has(source, seq)) {
      this.keys.set(key, live);
      if (this.keys.size > this.capacity) this.#forgetOldest();
      return NEW;
    }
    if (before === true && live) return AGAIN;
    if (before === false && live) this.keys.set(key, true);
    return OVERLAP;
  }

  get size() {
    return this.keys.size;
  }

  #forgetOldest() {
    const oldest = this.keys.keys().next().value;
    this.keys.delete(oldest);
    const cut = oldest.lastIndexOf(":"); // a source may itself contain ':'
    const source = oldest.slice(0, cut);
    const seq = Number(oldest.slice(cut + 1));
    if (!(this.floors.get(source) >= seq)) {
      this.floors.delete(source); // re-insert, so the map's order is "least recently forgotten first"
      this.floors.set(source, seq);
      if (this.floors.size > MAX_SOURCES) this.floors.delete(this.floors.keys().next().value);
    }
  }
}
