/** Logs explorer: LogQL, a volume histogram by level, expandable rows, context lines and live tail. */
import { type Labels, type LokiStream, lokiMatrix, lokiStreams } from "../api";
import { LOGQL, attachAutocomplete } from "../autocomplete";
import { lineChart, noData, stackedBars } from "../chart";
import { errorBox, h, link, replace, select } from "../dom";
import { LEVELS, type Level, fields, levelOf, normaliseLevel, selectorOf, traceIdOf } from "../logline";
import { saveState } from "../router";
import { RANGES, autoStep, formatTime, nowSeconds, parseDuration } from "../time";

const LEVEL_COLOURS: Record<Level, string> = {
  critical: "#8e1b1b", error: "#d64545", warn: "#e0a02d", info: "#3ba55c", debug: "#3d71d9", trace: "#8a5cd1", unknown: "#9aa3b2",
};

/** One log entry with its stream and structured metadata. */
interface Entry {
  ns: bigint;
  line: string;
  labels: Labels;
  metadata: Labels;
}

function entries(streams: LokiStream[]): Entry[] {
  const out = streams.flatMap((s) =>
    s.values.map(([ns, line, extra]) => ({ ns: BigInt(ns), line, labels: s.stream, metadata: extra?.structuredMetadata ?? {} })),
  );
  return out.sort((a, b) => (a.ns < b.ns ? 1 : a.ns > b.ns ? -1 : 0));
}

/** A log row; clicking it shows its labels, fields, trace link and context lines. */
function row(entry: Entry, fresh = false): HTMLElement {
  const parsed = fields(entry.line);
  const level = levelOf({ ...entry.metadata, ...entry.labels }, parsed, entry.line);
  const details = h("div", { class: "details", hidden: true });
  const el = h(
    "div",
    { class: `log-row level-${level}${fresh ? " fresh" : ""}`, "data-level": level },
    h(
      "div",
      { class: "log-line", onclick: () => toggle() },
      h("span", { class: "level-bar", style: `background:${LEVEL_COLOURS[level]}`, title: level }),
      h("time", { class: "mono" }, formatTime(Number(entry.ns / 1_000_000n))),
      h("span", { class: "mono line" }, entry.line),
    ),
    details,
  );
  const toggle = () => {
    details.hidden = !details.hidden;
    if (!details.hidden && details.childElementCount === 0) renderDetails(details, entry, parsed);
  };
  return el;
}

function fieldTable(title: string, values: Record<string, string>): HTMLElement | null {
  const keys = Object.keys(values);
  if (keys.length === 0) return null;
  return h(
    "table",
    { class: "fields" },
    h("caption", {}, title),
    h("tbody", {}, keys.map((k) => h("tr", {}, h("th", {}, k), h("td", { class: "mono" }, values[k])))),
  );
}

function renderDetails(details: HTMLElement, entry: Entry, parsed: Record<string, string>): void {
  const traceId = traceIdOf({ ...entry.labels, ...entry.metadata }, parsed);
  const context = h("div", { class: "context" });
  replace(
    details,
    fieldTable("Labels", entry.labels),
    fieldTable("Structured metadata", entry.metadata),
    fieldTable("Fields", parsed),
    h(
      "div",
      { class: "actions" },
      traceId ? link(`/ui/traces/${traceId}`, `View trace ${traceId}`) : null,
      h("button", { type: "button", onclick: () => void showContext(context, entry) }, "Show context"),
    ),
    context,
  );
}

/** Shows up to 5 lines of the same stream before and after `entry`. */
async function showContext(el: HTMLElement, entry: Entry): Promise<void> {
  const selector = selectorOf(entry.labels);
  const hour = 3_600_000_000_000n;
  try {
    const [before, after] = await Promise.all([
      lokiStreams(selector, entry.ns - hour, entry.ns, 5, "backward"),
      lokiStreams(selector, entry.ns + 1n, entry.ns + hour, 5, "forward"),
    ]);
    const line = (e: Entry, cls: string) => h("div", { class: `mono ${cls}` }, `${formatTime(Number(e.ns / 1_000_000n))}  ${e.line}`);
    replace(
      el,
      ...entries(after).map((e) => line(e, "context-line")),
      line(entry, "context-line hit"),
      ...entries(before).map((e) => line(e, "context-line")),
    );
  } catch (error) {
    replace(el, errorBox(error));
  }
}

/** `sum by (level, detected_level) (count_over_time(<query>[step]))` drawn as stacked bars per level. */
async function volume(el: HTMLElement, query: string, start: number, end: number): Promise<void> {
  const step = autoStep(end - start, 60);
  // Steps aligned to multiples of the step, the last one at or after `end`, so the newest lines count.
  const first = Math.floor(start / step) * step;
  const last = Math.ceil(end / step) * step;
  const series = await lokiMatrix(`sum by (level, detected_level) (count_over_time(${query} [${step}s]))`, first, last, step);
  const xs = Array.from({ length: Math.round((last - first) / step) + 1 }, (_, i) => first + i * step);
  const byLevel = new Map<Level, number[]>();
  for (const s of series) {
    const level = normaliseLevel(s.metric.level || s.metric.detected_level);
    const values = byLevel.get(level) ?? xs.map(() => 0);
    for (const [t, v] of s.values) {
      const i = Math.round((t - first) / step);
      if (i >= 0 && i < xs.length) values[i] += Number(v);
    }
    byLevel.set(level, values);
  }
  if (byLevel.size === 0) return replace(el, noData("No log lines in this range."));
  const rows = LEVELS.filter((l) => byLevel.has(l)).map((l) => ({ label: l, values: byLevel.get(l)!, colour: LEVEL_COLOURS[l] }));
  stackedBars(el, xs, rows);
}

/** Opens Loki's tail websocket for `query`, prepending each new line to `list`. */
function tail(query: string, list: HTMLElement, status: HTMLElement): WebSocket {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const start = (BigInt(Date.now()) * 1_000_000n).toString();
  const params = new URLSearchParams({ query, start, limit: "1000" });
  const socket = new WebSocket(`${scheme}://${location.host}/loki/api/v1/tail?${params}`);
  let received = 0;
  socket.onopen = () => replace(status, "Live: waiting for new lines…");
  socket.onmessage = (message) => {
    const body = JSON.parse(message.data) as { streams: LokiStream[] };
    const fresh = entries(body.streams);
    received += fresh.length;
    for (const entry of fresh.reverse()) list.prepend(row(entry, true));
    while (list.childElementCount > 2000) list.lastElementChild!.remove();
    replace(status, `Live: ${received} new lines`);
  };
  socket.onerror = () => replace(status, errorBox("live tail connection failed"));
  socket.onclose = () => {
    if (!status.querySelector(".error")) replace(status, "Live tail stopped.");
  };
  return socket;
}

export function logsPage(root: HTMLElement, _rest: string[], params: URLSearchParams): () => void {
  const query = h("textarea", { name: "query", rows: 2, spellcheck: "false", placeholder: '{job="vigil"} |= "error"' });
  query.value = params.get("q") ?? "";
  const range = select("range", RANGES, params.get("range") ?? "1h");
  const limit = select("limit", [["100", "100 lines"], ["500", "500 lines"], ["1000", "1000 lines"], ["5000", "5000 lines"]], params.get("limit") ?? "500");
  const liveButton = h("button", { type: "button", class: "live" }, "Live tail");
  const status = h("div", { class: "status" });
  const chart = h("div", { class: "chart volume" });
  const list = h("div", { class: "log-list" });
  let socket: WebSocket | undefined;

  const stopTail = () => {
    socket?.close();
    socket = undefined;
    liveButton.classList.remove("active");
    liveButton.textContent = "Live tail";
  };
  const run = async () => {
    stopTail();
    const text = query.value.trim();
    saveState({ q: text, range: range.value, limit: limit.value });
    if (!text) return replace(list, noData('Enter a LogQL query, e.g. {job="vigil"}.'));
    const end = nowSeconds();
    const start = end - parseDuration(range.value);
    const started = performance.now();
    replace(status, "Running…");
    try {
      if (!text.startsWith("{")) {
        // A metric query: draw its series.
        const series = await lokiMatrix(text, start, end, autoStep(end - start));
        list.replaceChildren();
        if (series.length === 0) replace(chart, noData());
        else await lineChart(chart, series, 300);
      } else {
        const [streams] = await Promise.all([
          lokiStreams(text, BigInt(Math.floor(start * 1000)) * 1_000_000n, BigInt(Math.ceil(end * 1000)) * 1_000_000n, Number(limit.value), "backward"),
          volume(chart, text, start, end).catch((error) => replace(chart, errorBox(error))),
        ]);
        const rows = entries(streams);
        replace(list, ...(rows.length ? rows.map((e) => row(e)) : [noData("No lines match.")]));
        replace(status, `${rows.length} lines · ${(performance.now() - started).toFixed(0)} ms`);
        return;
      }
      replace(status, `${(performance.now() - started).toFixed(0)} ms`);
    } catch (error) {
      replace(list, errorBox(error));
      replace(status, "");
    }
  };
  liveButton.addEventListener("click", () => {
    if (socket) return stopTail();
    const text = query.value.trim();
    if (!text.startsWith("{")) return replace(status, errorBox("live tail takes a log query"));
    socket = tail(text, list, status);
    liveButton.classList.add("active");
    liveButton.textContent = "Stop";
  });
  // The suggestion list handles its keys first; Enter that did not pick a suggestion runs the query.
  const suggestions = attachAutocomplete(query, LOGQL);
  query.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.defaultPrevented) {
      event.preventDefault();
      void run();
    }
  });
  const form = h(
    "form",
    { class: "query-form", onsubmit: (e: Event) => (e.preventDefault(), void run()) },
    h("div", { class: "editor" }, query, suggestions),
    h("div", { class: "controls" }, range, limit, h("button", { type: "submit", class: "primary" }, "Run"), liveButton),
  );
  replace(root, h("h1", {}, "Logs"), form, chart, status, list);
  if (query.value) void run();
  return stopTail;
}
