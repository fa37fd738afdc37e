/** Overview: nodes and pods with CPU and memory (as `kubectl top`) and sparklines, ingest rates, alerts, storage. */
import { type Labels, type RangeSeries, promInstant, promRange } from "../api";
import { sparkline } from "../chart";
import { errorBox, h, link, replace } from "../dom";
import { formatValue, nowSeconds } from "../time";
import { activeAlerts, alertTable } from "./alerts";

const HOUR = 3600;
const STEP = 15;

/** One table of the overview: rows keyed by labels, with a current value and a sparkline per measure. */
interface Measure {
  title: string;
  query: string;
  unit: "" | "bytes" | "cores";
}

const NODE_KEY = ["instance"];
const NODE_MEASURES: Measure[] = [
  { title: "CPU (cores)", query: 'sum by (instance) (rate(node_cpu_seconds_total{mode!="idle",mode!="iowait"}[2m]))', unit: "cores" },
  { title: "Memory used", query: "sum by (instance) (node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes)", unit: "bytes" },
];
const POD_KEY = ["namespace", "pod"];
const POD_MEASURES: Measure[] = [
  { title: "CPU (cores)", query: 'sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{container!="",pod!=""}[2m]))', unit: "cores" },
  { title: "Memory (working set)", query: 'sum by (namespace, pod) (container_memory_working_set_bytes{container!="",pod!=""})', unit: "bytes" },
];
const INGEST: Measure[] = [
  { title: "Samples/s", query: "sum(rate(vigil_ingest_samples_accepted_total[2m]))", unit: "" },
  { title: "Log lines/s", query: "sum(rate(vigil_ingest_log_lines_total[2m]))", unit: "" },
  { title: "Spans/s", query: "sum(rate(vigil_ingest_spans_total[2m]))", unit: "" },
];
const STORAGE: Measure[] = [
  { title: "Metric blocks", query: "sum(vigil_tsdb_blocks_bytes)", unit: "bytes" },
  { title: "Head series", query: "sum(vigil_tsdb_head_series)", unit: "" },
  { title: "Log store", query: "sum(vigil_logs_disk_bytes)", unit: "bytes" },
  { title: "Trace store", query: "sum(vigil_traces_disk_bytes)", unit: "bytes" },
];

function keyOf(labels: Labels, key: string[]): string {
  return key.map((k) => labels[k] ?? "").join("/");
}

function lastValue(series: RangeSeries | undefined): number {
  const last = series?.values[series.values.length - 1];
  return last ? Number(last[1]) : NaN;
}

/** Fetches the last hour of each measure, keyed by the row labels. */
async function history(measures: Measure[], key: string[]): Promise<{ rows: Map<string, Labels>; data: Map<string, RangeSeries>[] }> {
  const end = nowSeconds();
  const results = await Promise.all(measures.map((m) => promRange(m.query, end - HOUR, end, STEP)));
  const rows = new Map<string, Labels>();
  const data = results.map((series) => {
    const byKey = new Map<string, RangeSeries>();
    for (const s of series) {
      byKey.set(keyOf(s.metric, key), s);
      rows.set(keyOf(s.metric, key), s.metric);
    }
    return byKey;
  });
  return { rows, data };
}

/** A `kubectl top`-like table: key columns, then value and sparkline per measure, sorted by the first. */
async function topTable(measures: Measure[], key: string[], empty: string, limit = 20): Promise<HTMLElement> {
  const { rows, data } = await history(measures, key);
  if (rows.size === 0) return h("div", { class: "empty" }, empty);
  const ordered = [...rows.keys()].sort((a, b) => (lastValue(data[0].get(b)) || 0) - (lastValue(data[0].get(a)) || 0)).slice(0, limit);
  return h(
    "table",
    { class: "results top" },
    h("thead", {}, h("tr", {}, key.map((k) => h("th", {}, k.toUpperCase())), measures.map((m) => h("th", { colspan: 2 }, m.title)))),
    h(
      "tbody",
      {},
      ordered.map((k) =>
        h(
          "tr",
          {},
          key.map((name) => h("td", {}, rows.get(k)![name] ?? "")),
          measures.flatMap((m, i) => {
            const series = data[i].get(k);
            return [
              h("td", { class: "num" }, formatValue(lastValue(series), m.unit)),
              h("td", {}, sparkline(series ? series.values.map((v) => Number(v[1])) : [])),
            ];
          }),
        ),
      ),
    ),
  );
}

/** Stat tiles: the current value of each single-series measure with its last hour. */
async function tiles(measures: Measure[]): Promise<HTMLElement> {
  const end = nowSeconds();
  const results = await Promise.all(
    measures.map(async (m) => {
      const [now, past] = await Promise.all([promInstant(m.query, end), promRange(m.query, end - HOUR, end, STEP)]);
      return { m, value: now[0] ? Number(now[0].value[1]) : NaN, past: past[0]?.values.map((v) => Number(v[1])) ?? [] };
    }),
  );
  return h(
    "div",
    { class: "tiles" },
    results.map(({ m, value, past }) =>
      h("div", { class: "tile" }, h("div", { class: "tile-title" }, m.title), h("div", { class: "tile-value" }, Number.isNaN(value) ? "–" : formatValue(value, m.unit)), sparkline(past, 160, 28)),
    ),
  );
}

function section(title: string, load: () => Promise<HTMLElement>, ...extra: HTMLElement[]): HTMLElement {
  const body = h("div", { class: "section-body" }, "Loading…");
  load()
    .then((el) => replace(body, el))
    .catch((error) => replace(body, errorBox(error)));
  return h("section", { class: "card" }, h("h2", {}, title, ...extra), body);
}

export function overviewPage(root: HTMLElement): () => void {
  const render = () =>
    replace(
      root,
      h("h1", {}, "Overview"),
      h(
        "div",
        { class: "grid" },
        section("Ingest", () => tiles(INGEST)),
        section("Storage", () => tiles(STORAGE)),
      ),
      section("Firing alerts", async () => alertTable((await activeAlerts()).filter((a) => a.state === "firing")), link("/ui/alerts", "all rules")),
      section("Nodes", () => topTable(NODE_MEASURES, NODE_KEY, "No node metrics yet (node_cpu_seconds_total).")),
      section("Pods", () => topTable(POD_MEASURES, POD_KEY, "No pod metrics yet (container_cpu_usage_seconds_total with a pod label).")),
    );
  render();
  const timer = setInterval(render, 30000);
  return () => clearInterval(timer);
}
