/** Traces: a search form over the Jaeger API, a duration scatter plot, and the waterfall of one trace. */
import { getJSON } from "../api";
import { colour, noData, scatter } from "../chart";
import { errorBox, h, link, replace, select } from "../dom";
import { navigate, saveState } from "../router";
import { RANGES, formatMicros, formatTime, nowSeconds, parseDuration } from "../time";

/** A key/value tag as Jaeger's JSON has it. */
interface Tag {
  key: string;
  type?: string;
  value: unknown;
}
/** A span in Jaeger's JSON. */
export interface JaegerSpan {
  traceID: string;
  spanID: string;
  operationName: string;
  references?: { refType: string; traceID: string; spanID: string }[];
  startTime: number;
  duration: number;
  tags?: Tag[];
  logs?: { timestamp: number; fields: Tag[] }[];
  processID: string;
  warnings?: string[] | null;
}
/** A trace in Jaeger's JSON. */
export interface JaegerTrace {
  traceID: string;
  spans: JaegerSpan[];
  processes: Record<string, { serviceName: string; tags?: Tag[] }>;
}

/** Whether a span failed: `error=true` or an OpenTelemetry error status. */
export function isError(span: JaegerSpan): boolean {
  return (span.tags ?? []).some(
    (t) => (t.key === "error" && (t.value === true || t.value === "true")) || (t.key === "otel.status_code" && t.value === "ERROR"),
  );
}

/** The parent span id of `span`, if it has one in its references. */
function parentOf(span: JaegerSpan): string | undefined {
  return span.references?.find((r) => r.refType === "CHILD_OF")?.spanID;
}

/** Summary of a trace for the result list. */
interface Summary {
  id: string;
  root: string;
  service: string;
  start: number;
  durationUs: number;
  spans: number;
  errors: number;
  services: string[];
}

function summarise(trace: JaegerTrace): Summary {
  const ids = new Set(trace.spans.map((s) => s.spanID));
  const roots = trace.spans.filter((s) => !parentOf(s) || !ids.has(parentOf(s)!));
  const root = roots.sort((a, b) => a.startTime - b.startTime)[0] ?? trace.spans[0];
  const start = Math.min(...trace.spans.map((s) => s.startTime));
  const end = Math.max(...trace.spans.map((s) => s.startTime + s.duration));
  const services = [...new Set(trace.spans.map((s) => trace.processes[s.processID]?.serviceName ?? "?"))].sort();
  return {
    id: trace.traceID,
    root: root?.operationName ?? "",
    service: trace.processes[root?.processID]?.serviceName ?? "?",
    start,
    durationUs: end - start,
    spans: trace.spans.length,
    errors: trace.spans.filter(isError).length,
    services,
  };
}

function searchPage(root: HTMLElement, params: URLSearchParams): void {
  const service = h("select", { name: "service" });
  const operation = h("select", { name: "operation" });
  const tags = h("input", { name: "tags", placeholder: "http.status_code=500 error=true", size: 30, value: params.get("tags") ?? "" });
  const minDuration = h("input", { name: "minDuration", placeholder: "e.g. 100ms", size: 8, value: params.get("minDuration") ?? "" });
  const maxDuration = h("input", { name: "maxDuration", placeholder: "e.g. 2s", size: 8, value: params.get("maxDuration") ?? "" });
  const range = select("range", RANGES, params.get("range") ?? "1h");
  const limit = select("limit", [["20", "20"], ["50", "50"], ["100", "100"], ["500", "500"]], params.get("limit") ?? "20");
  const plot = h("div", { class: "chart scatter" });
  const results = h("div", { class: "trace-results" });
  const status = h("div", { class: "status" });

  const loadOperations = async () => {
    if (!service.value) return replace(operation, h("option", { value: "" }, "All operations"));
    const body = await getJSON<{ data: string[] }>(`/jaeger/api/services/${encodeURIComponent(service.value)}/operations`);
    const wanted = params.get("operation") ?? "";
    replace(operation, h("option", { value: "" }, "All operations"), ...body.data.sort().map((o) => h("option", { value: o, selected: o === wanted }, o)));
  };
  const run = async () => {
    saveState({ service: service.value, operation: operation.value, tags: tags.value, minDuration: minDuration.value, maxDuration: maxDuration.value, range: range.value, limit: limit.value });
    if (!service.value) return replace(results, noData("Pick a service."));
    const end = nowSeconds();
    const started = performance.now();
    const tagMap: Record<string, string> = {};
    for (const m of tags.value.matchAll(/([^\s=]+)=("[^"]*"|\S+)/g)) tagMap[m[1]] = m[2].replace(/^"|"$/g, "");
    try {
      const body = await getJSON<{ data: JaegerTrace[] }>("/jaeger/api/traces", {
        service: service.value,
        operation: operation.value,
        tags: Object.keys(tagMap).length ? JSON.stringify(tagMap) : undefined,
        minDuration: minDuration.value,
        maxDuration: maxDuration.value,
        start: Math.floor((end - parseDuration(range.value)) * 1e6),
        end: Math.ceil(end * 1e6),
        limit: limit.value,
      });
      const summaries = body.data.map(summarise).sort((a, b) => b.start - a.start);
      replace(status, `${summaries.length} traces · ${(performance.now() - started).toFixed(0)} ms`);
      if (summaries.length === 0) {
        plot.replaceChildren();
        return replace(results, noData("No traces match."));
      }
      const byTime = [...summaries].sort((a, b) => a.start - b.start);
      scatter(
        plot,
        byTime.map((s) => s.start / 1e6),
        byTime.map((s) => s.durationUs / 1000),
        byTime.map((s) => (s.errors ? "#d64545" : colour(0))),
        "duration",
        (i) => navigate(`/ui/traces/${byTime[i].id}`),
      );
      replace(
        results,
        h(
          "table",
          { class: "results" },
          h("thead", {}, h("tr", {}, ["Trace", "Root", "Services", "Spans", "Errors", "Duration", "Start"].map((t) => h("th", {}, t)))),
          h(
            "tbody",
            {},
            summaries.map((s) =>
              h(
                "tr",
                { class: s.errors ? "has-error" : "" },
                h("td", { class: "mono" }, link(`/ui/traces/${s.id}`, s.id.slice(0, 16))),
                h("td", {}, `${s.service}: ${s.root}`),
                h("td", {}, s.services.join(", ")),
                h("td", { class: "num" }, s.spans),
                h("td", { class: "num" }, s.errors || ""),
                h("td", { class: "num" }, formatMicros(s.durationUs)),
                h("td", {}, formatTime(s.start / 1000)),
              ),
            ),
          ),
        ),
      );
    } catch (error) {
      replace(results, errorBox(error));
    }
  };
  service.addEventListener("change", () => void loadOperations().then(run));
  const form = h(
    "form",
    { class: "query-form trace-form", onsubmit: (e: Event) => (e.preventDefault(), void run()) },
    h("label", {}, "Service ", service),
    h("label", {}, "Operation ", operation),
    h("label", {}, "Tags ", tags),
    h("label", {}, "Min ", minDuration),
    h("label", {}, "Max ", maxDuration),
    range,
    h("label", {}, "Limit ", limit),
    h("button", { type: "submit", class: "primary" }, "Find traces"),
  );
  const lookup = h("input", { name: "traceid", placeholder: "trace id", size: 34 });
  const byId = h(
    "form",
    { class: "query-form", onsubmit: (e: Event) => (e.preventDefault(), lookup.value.trim() && navigate(`/ui/traces/${lookup.value.trim()}`)) },
    lookup,
    h("button", { type: "submit" }, "Open trace"),
  );
  replace(root, h("h1", {}, "Traces"), byId, form, plot, status, results);
  getJSON<{ data: string[] | null }>("/jaeger/api/services")
    .then(async (body) => {
      const services = (body.data ?? []).sort();
      const wanted = params.get("service") ?? services[0] ?? "";
      replace(service, ...services.map((s) => h("option", { value: s, selected: s === wanted }, s)));
      await loadOperations();
      await run();
    })
    .catch((error) => replace(results, errorBox(error)));
}

/** A span placed in the waterfall: its depth in the tree and its service. */
interface Placed {
  span: JaegerSpan;
  depth: number;
  service: string;
}

/** Orders spans depth-first by start time, children under their parents; orphans become roots. */
export function layout(trace: JaegerTrace): Placed[] {
  const ids = new Set(trace.spans.map((s) => s.spanID));
  const children = new Map<string, JaegerSpan[]>();
  const roots: JaegerSpan[] = [];
  for (const span of trace.spans) {
    const parent = parentOf(span);
    if (parent && ids.has(parent) && parent !== span.spanID) {
      children.set(parent, [...(children.get(parent) ?? []), span]);
    } else {
      roots.push(span);
    }
  }
  const out: Placed[] = [];
  const seen = new Set<string>();
  const visit = (span: JaegerSpan, depth: number) => {
    if (seen.has(span.spanID)) return;
    seen.add(span.spanID);
    out.push({ span, depth, service: trace.processes[span.processID]?.serviceName ?? "?" });
    for (const child of (children.get(span.spanID) ?? []).sort((a, b) => a.startTime - b.startTime)) visit(child, depth + 1);
  };
  for (const r of roots.sort((a, b) => a.startTime - b.startTime)) visit(r, 0);
  return out;
}

function tagTable(title: string, tags: Tag[] | undefined): HTMLElement | null {
  if (!tags || tags.length === 0) return null;
  return h(
    "table",
    { class: "fields" },
    h("caption", {}, title),
    h("tbody", {}, tags.map((t) => h("tr", {}, h("th", {}, t.key), h("td", { class: "mono" }, String(t.value))))),
  );
}

function spanDetails(trace: JaegerTrace, span: JaegerSpan, traceStart: number): HTMLElement {
  const process = trace.processes[span.processID];
  return h(
    "div",
    { class: "span-details" },
    h("h3", {}, `${process?.serviceName ?? "?"}: ${span.operationName}`),
    h(
      "p",
      { class: "mono" },
      `span ${span.spanID} · start +${formatMicros(span.startTime - traceStart)} · duration ${formatMicros(span.duration)}`,
    ),
    tagTable("Span attributes", span.tags),
    tagTable("Resource", process?.tags),
    ...(span.logs ?? []).map((log) => tagTable(`Event at +${formatMicros(log.timestamp - traceStart)}`, log.fields)),
    span.references && span.references.length > 1
      ? h("p", {}, "Links: ", ...span.references.filter((r) => r.refType === "FOLLOWS_FROM").map((r) => link(`/ui/traces/${r.traceID}`, `${r.traceID.slice(0, 16)}/${r.spanID} `)))
      : null,
  );
}

function waterfall(root: HTMLElement, trace: JaegerTrace): void {
  const placed = layout(trace);
  const start = Math.min(...trace.spans.map((s) => s.startTime));
  const end = Math.max(...trace.spans.map((s) => s.startTime + s.duration));
  const total = Math.max(1, end - start);
  const services = [...new Set(placed.map((p) => p.service))].sort();
  const serviceColour = (s: string) => colour(services.indexOf(s));
  const details = h("div", { class: "span-panel" });
  const summary = summarise(trace);
  const logsQuery = `{} | trace_id="${trace.traceID}"`;
  const rows = placed.map(({ span, depth, service }) => {
    const error = isError(span);
    const left = ((span.startTime - start) / total) * 100;
    const width = Math.max(0.2, (span.duration / total) * 100);
    const rowEl = h(
      "div",
      { class: `span-row${error ? " span-error" : ""}`, "data-span-id": span.spanID, role: "button", tabindex: 0 },
      h(
        "div",
        { class: "span-name", style: `padding-left:${depth * 14}px`, title: `${service}: ${span.operationName}` },
        h("span", { class: "service-dot", style: `background:${serviceColour(service)}` }),
        h("span", { class: "service" }, service),
        " ",
        span.operationName,
      ),
      h(
        "div",
        { class: "span-track" },
        h("div", { class: "span-bar", style: `left:${left}%;width:${width}%;background:${error ? "#d64545" : serviceColour(service)}` }),
        // The label goes after the bar, or before it when the bar reaches the right edge.
        h("span", { class: "span-duration", style: left + width > 85 ? `right:${100 - left}%` : `left:${left + width}%` }, formatMicros(span.duration)),
      ),
    );
    rowEl.addEventListener("click", () => {
      root.querySelectorAll(".span-row.selected").forEach((r) => r.classList.remove("selected"));
      rowEl.classList.add("selected");
      replace(details, spanDetails(trace, span, start));
    });
    return rowEl;
  });
  replace(
    root,
    h("h1", {}, `${summary.service}: ${summary.root}`),
    h(
      "p",
      { class: "trace-meta" },
      h("span", { class: "mono" }, trace.traceID),
      ` · ${summary.spans} spans · ${services.length} services · ${formatMicros(total)} · started ${formatTime(start / 1000)}`,
      summary.errors ? h("span", { class: "badge error" }, `${summary.errors} errors`) : null,
      " · ",
      link(`/ui/logs?q=${encodeURIComponent(logsQuery)}&range=7d`, "Logs for this trace"),
    ),
    h("div", { class: "waterfall" }, h("div", { class: "span-header" }, h("div", {}, "Service: operation"), h("div", {}, `0 – ${formatMicros(total)}`)), rows),
    details,
  );
}

function tracePage(root: HTMLElement, id: string): void {
  replace(root, h("h1", {}, "Trace"), h("p", { class: "status" }, `Loading ${id}…`));
  getJSON<{ data: JaegerTrace[] }>(`/jaeger/api/traces/${encodeURIComponent(id)}`)
    .then((body) => (body.data.length ? waterfall(root, body.data[0]) : replace(root, errorBox(`trace ${id} not found`))))
    .catch((error) => replace(root, h("h1", {}, "Trace"), errorBox(error), link("/ui/traces", "Back to search")));
}

export function tracesPage(root: HTMLElement, rest: string[], params: URLSearchParams): void {
  if (rest[0]) tracePage(root, rest[0]);
  else searchPage(root, params);
}
