/** Metrics explorer: a PromQL editor with autocomplete, graph and table views, URL-held state. */
import { promInstant, promRange } from "../api";
import { attachAutocomplete } from "../autocomplete";
import { lineChart, noData, seriesName } from "../chart";
import { errorBox, h, replace, select } from "../dom";
import { saveState } from "../router";
import { RANGES, autoStep, formatValue, nowSeconds, parseDuration } from "../time";

export function metricsPage(root: HTMLElement, _rest: string[], params: URLSearchParams): void {
  const query = h("textarea", { name: "query", rows: 2, spellcheck: "false", placeholder: "PromQL, e.g. rate(vigil_http_requests_total[5m])" });
  query.value = params.get("q") ?? "";
  const range = select("range", RANGES, params.get("range") ?? "1h");
  const step = h("input", { name: "step", placeholder: "auto", size: 6, value: params.get("step") ?? "", "aria-label": "step" });
  let tab = params.get("tab") === "table" ? "table" : "graph";
  const tabs = h("div", { class: "tabs" });
  const output = h("div", { class: "output" });
  const status = h("div", { class: "status" });

  const run = async () => {
    const text = query.value.trim();
    saveState({ q: text, range: range.value, step: step.value, tab });
    if (!text) return replace(output, noData("Enter a PromQL expression."));
    const rangeSeconds = parseDuration(range.value);
    const end = nowSeconds();
    const started = performance.now();
    replace(status, "Running…");
    try {
      if (tab === "graph") {
        const stepSeconds = step.value ? parseDuration(step.value) : autoStep(rangeSeconds);
        if (!Number.isFinite(stepSeconds) || stepSeconds <= 0) throw new Error(`invalid step: ${step.value}`);
        const series = await promRange(text, end - rangeSeconds, end, stepSeconds);
        if (series.length === 0) {
          replace(output, noData());
        } else {
          const chartEl = h("div", { class: "chart" });
          replace(output, chartEl);
          const { renderMs } = await lineChart(chartEl, series, 320);
          const points = series.reduce((n, s) => n + s.values.length, 0);
          replace(status, `${series.length} series, ${points} points, step ${stepSeconds}s · query ${(performance.now() - started - renderMs).toFixed(0)} ms, render ${renderMs.toFixed(0)} ms`);
          return;
        }
      } else {
        const samples = await promInstant(text, end);
        replace(
          output,
          samples.length === 0
            ? noData("Empty result.")
            : h(
                "table",
                { class: "results" },
                h("thead", {}, h("tr", {}, h("th", {}, "Series"), h("th", {}, "Value"))),
                h("tbody", {}, samples.map((s) => h("tr", {}, h("td", { class: "mono" }, seriesName(s.metric)), h("td", { class: "num" }, formatValue(Number(s.value[1])))))),
              ),
        );
      }
      replace(status, `${(performance.now() - started).toFixed(0)} ms`);
    } catch (error) {
      replace(output, errorBox(error));
      replace(status, "");
    }
  };
  const renderTabs = () =>
    replace(
      tabs,
      ...(["graph", "table"] as const).map((name) =>
        h("button", { type: "button", class: tab === name ? "tab active" : "tab", onclick: () => ((tab = name), renderTabs(), void run()) }, name === "graph" ? "Graph" : "Table"),
      ),
    );
  query.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey || event.shiftKey)) {
      event.preventDefault();
      void run();
    }
  });
  const form = h(
    "form",
    { class: "query-form", onsubmit: (e: Event) => (e.preventDefault(), void run()) },
    h("div", { class: "editor" }, query, attachAutocomplete(query)),
    h("div", { class: "controls" }, range, h("label", {}, "Step ", step), h("button", { type: "submit", class: "primary" }, "Run")),
  );
  range.addEventListener("change", () => void run());
  renderTabs();
  replace(root, h("h1", {}, "Metrics"), form, tabs, status, output);
  if (query.value) void run();
}
