/** Dashboards: the bundled and user JSON dashboards, with variables, a time range and graph/stat/logs panels. */
import { type Labels, getJSON, labelValues, lokiMatrix, lokiStreams, promInstant, promRange } from "../api";
import { lineChart, noData } from "../chart";
import { errorBox, h, link, replace, select } from "../dom";
import { saveState } from "../router";
import { RANGES, autoStep, formatTime, formatValue, nowSeconds, parseDuration } from "../time";

/** A variable: the values of `label` on series of `metric`, substituted for `$name` in queries. */
interface Variable {
  name: string;
  label: string;
  metric: string;
}
/** A panel of a dashboard. */
interface Panel {
  title: string;
  type: "graph" | "stat" | "logs";
  datasource?: "prometheus" | "loki";
  query: string;
  unit?: "" | "bytes" | "cores" | "percent" | "seconds";
  legend?: string;
  width?: 1 | 2 | 3;
}
/** A dashboard file as stored under dashboards/bundled/. */
interface Dashboard {
  title: string;
  description?: string;
  variables?: Variable[];
  panels: Panel[];
}
interface Listing {
  id: string;
  title: string;
  description?: string;
  source: string;
}

/** Replaces `{{label}}` in a legend template with the series' labels. */
function legendOf(template: string | undefined): ((labels: Labels) => string) | undefined {
  if (!template) return undefined;
  return (labels) => template.replace(/\{\{\s*(\w+)\s*\}\}/g, (_, name: string) => labels[name] ?? "");
}

/** Substitutes `$name` and `${name}` with the chosen variable values. */
export function substitute(query: string, values: Record<string, string>): string {
  return query.replace(/\$\{?(\w+)\}?/g, (whole, name: string) => (name in values ? values[name] : whole));
}

function formatUnit(value: number, unit: Panel["unit"]): string {
  if (unit === "percent") return `${(value * 100).toFixed(1)}%`;
  if (unit === "seconds") return `${value.toFixed(3)} s`;
  return formatValue(value, unit ?? "");
}

async function renderPanel(el: HTMLElement, panel: Panel, query: string, rangeSeconds: number): Promise<void> {
  const end = nowSeconds();
  const start = end - rangeSeconds;
  const loki = panel.datasource === "loki";
  if (panel.type === "logs") {
    const streams = await lokiStreams(query, BigInt(Math.floor(start)) * 1_000_000_000n, BigInt(Math.ceil(end)) * 1_000_000_000n, 100, "backward");
    const lines = streams.flatMap((s) => s.values).sort((a, b) => (BigInt(b[0]) > BigInt(a[0]) ? 1 : -1));
    return replace(el, lines.length ? h("div", { class: "log-list compact" }, lines.map(([ns, line]) => h("div", { class: "mono" }, `${formatTime(Number(BigInt(ns) / 1_000_000n))}  ${line}`))) : noData());
  }
  if (panel.type === "stat") {
    // Stat panels take PromQL (the dashboard format refuses Loki ones).
    const samples = await promInstant(query, end);
    const value = samples.length ? Number(samples[0].value[1]) : NaN;
    return replace(el, h("div", { class: "stat" }, Number.isNaN(value) ? "–" : formatUnit(value, panel.unit)));
  }
  const step = autoStep(rangeSeconds);
  const series = loki ? await lokiMatrix(query, start, end, step) : await promRange(query, start, end, step);
  if (series.length === 0) return replace(el, noData());
  await lineChart(el, series, 220, legendOf(panel.legend));
}

function dashboardView(root: HTMLElement, id: string, params: URLSearchParams): void {
  replace(root, h("h1", {}, "Dashboard"), h("p", { class: "status" }, "Loading…"));
  getJSON<Dashboard>(`/ui/api/dashboards/${encodeURIComponent(id)}`)
    .then(async (dashboard) => {
      const range = select("range", RANGES, params.get("range") ?? "1h");
      const values: Record<string, string> = {};
      const selects = await Promise.all(
        (dashboard.variables ?? []).map(async (v) => {
          const options = await labelValues(v.label, v.metric).catch(() => [] as string[]);
          values[v.name] = params.get(`var-${v.name}`) ?? options[0] ?? "";
          const el = select(v.name, options.map((o) => [o, o]), values[v.name]);
          el.addEventListener("change", () => ((values[v.name] = el.value), draw()));
          return h("label", {}, `${v.name} `, el);
        }),
      );
      const grid = h("div", { class: "panels" });
      const draw = () => {
        const state: Record<string, string> = { range: range.value };
        for (const [k, v] of Object.entries(values)) state[`var-${k}`] = v;
        saveState(state);
        replace(
          grid,
          ...dashboard.panels.map((panel) => {
            const body = h("div", { class: "panel-body" }, "Loading…");
            const query = substitute(panel.query, values);
            renderPanel(body, panel, query, parseDuration(range.value)).catch((error) => replace(body, errorBox(error)));
            return h("section", { class: `panel card w${panel.width ?? 1}` }, h("h3", { title: query }, panel.title), body);
          }),
        );
      };
      range.addEventListener("change", draw);
      replace(root, h("h1", {}, dashboard.title), dashboard.description ? h("p", { class: "muted" }, dashboard.description) : null, h("div", { class: "controls" }, ...selects, range), grid);
      draw();
    })
    .catch((error) => replace(root, h("h1", {}, "Dashboard"), errorBox(error)));
}

function listing(root: HTMLElement): void {
  const list = h("div", {}, "Loading…");
  replace(root, h("h1", {}, "Dashboards"), h("p", { class: "muted" }, "Bundled dashboards, and any JSON files in <data-dir>/dashboards/."), list);
  getJSON<Listing[]>("/ui/api/dashboards")
    .then((items) =>
      replace(
        list,
        h(
          "ul",
          { class: "dashboard-list" },
          items.map((d) => h("li", {}, link(`/ui/dashboards/${d.id}`, d.title), h("span", { class: "muted" }, ` ${d.source}`), d.description ? h("div", { class: "muted" }, d.description) : null)),
        ),
      ),
    )
    .catch((error) => replace(list, errorBox(error)));
}

export function dashboardsPage(root: HTMLElement, rest: string[], params: URLSearchParams): void {
  if (rest[0]) dashboardView(root, rest[0], params);
  else listing(root);
}
