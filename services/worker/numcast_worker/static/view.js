// The view a page shows, kept in its address so that a link opens the same view:
// `?series=queue_depth&series=temperature&match=job=billing`. No `series`: the generator's, as before.
export const GENERATOR = "numcast_value";
const SERIES_NAME = /^[A-Za-z_:][A-Za-z0-9_:]{0,127}$/;
const MAX_MATCHERS = 16;

/** The view of a query string: series names (valid ones, at most `maxSeries`) and matcher texts. */
export function readView(search, maxSeries) {
  const params = new URLSearchParams(search);
  const series = [...new Set(params.getAll("series").filter((name) => SERIES_NAME.test(name)))].slice(0, maxSeries);
  const match = [...new Set(params.getAll("match"))].slice(0, MAX_MATCHERS);
  return { series: series.length ? series : [GENERATOR], match };
}

/** The query string of a view; the default view's is empty, so the plain address stays plain. */
export function viewQuery(view) {
  if (isDefault(view)) return "";
  const params = new URLSearchParams();
  for (const name of view.series) params.append("series", name);
  for (const matcher of view.match) params.append("match", matcher);
  return `?${params}`;
}

export function isDefault(view) {
  return view.series.length === 1 && view.series[0] === GENERATOR && !view.match.length;
}

/** `{job="billing", queue="mail"}`, as Prometheus writes a label set; "" for none. */
export function labelText(labels) {
  const names = labels ? Object.keys(labels).sort() : [];
  return names.length ? `{${names.map((n) => `${n}="${labels[n]}"`).join(", ")}}` : "";
}
