/**
 * Query autocomplete for a textarea: names and functions at the top level, label names inside `{...}`,
 * label values after `label="`. Suggestions come from the Prometheus or Loki label APIs and are cached.
 */
import { labelNames, labelValues, lokiLabelNames, lokiLabelValues } from "./api";
import { h } from "./dom";

const FUNCTIONS = [
  "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes", "clamp", "clamp_max",
  "clamp_min", "count", "count_over_time", "count_values", "day_of_month", "day_of_week", "delta", "deriv", "exp",
  "floor", "group", "histogram_quantile", "holt_winters", "idelta", "increase", "irate", "label_join", "label_replace",
  "last_over_time", "ln", "log2", "log10", "max", "max_over_time", "min", "min_over_time", "predict_linear",
  "quantile", "quantile_over_time", "rate", "resets", "round", "scalar", "sort", "sort_desc", "sqrt", "stddev",
  "stddev_over_time", "stdvar", "sum", "sum_over_time", "time", "timestamp", "topk", "vector",
];

const LOGQL_FUNCTIONS = [
  "avg_over_time", "bytes_over_time", "bytes_rate", "count_over_time", "first_over_time", "json", "label_format",
  "last_over_time", "line_format", "logfmt", "max_over_time", "min_over_time", "pattern", "quantile_over_time",
  "rate", "regexp", "sum", "sum_over_time", "topk", "unwrap", "vector",
];

/** Where suggestions come from: a query language's names, labels and label values. */
export interface Source {
  /** Distinguishes cache entries. */
  key: string;
  /** Words offered outside braces. */
  top(): Promise<string[]>;
  /** Label names, of `metric`'s series when one is given. */
  labels(metric?: string): Promise<string[]>;
  /** Values of `label`. */
  values(label: string, metric?: string): Promise<string[]>;
}

/** PromQL: metric names and functions, labels from the Prometheus API. */
export const PROMQL: Source = {
  key: "promql",
  top: async () => [...(await labelValues("__name__")), ...FUNCTIONS],
  labels: (metric) => labelNames(metric),
  values: (label, metric) => labelValues(label, metric),
};

/** LogQL: functions and parsers, stream labels from the Loki API. */
export const LOGQL: Source = {
  key: "logql",
  top: async () => LOGQL_FUNCTIONS,
  labels: () => lokiLabelNames(),
  values: (label) => lokiLabelValues(label),
};

const cache = new Map<string, Promise<string[]>>();

function cached(key: string, load: () => Promise<string[]>): Promise<string[]> {
  if (!cache.has(key)) cache.set(key, load().catch(() => []));
  return cache.get(key)!;
}

/** What the text before the cursor asks for: the word typed so far and where its candidates come from. */
export interface Context {
  kind: "metric" | "label" | "value";
  prefix: string;
  metric?: string;
  label?: string;
}

/** Works out what kind of name is being typed at the end of `before` (the text before the cursor). */
export function contextAt(before: string): Context {
  const value = /([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)$/.exec(before);
  const open = before.lastIndexOf("{");
  const inBraces = open > before.lastIndexOf("}");
  if (inBraces && value) return { kind: "value", prefix: value[3], label: value[1], metric: metricBefore(before, open) };
  const word = /[a-zA-Z_:][\w:]*$/.exec(before)?.[0] ?? "";
  if (inBraces) return { kind: "label", prefix: word, metric: metricBefore(before, open) };
  return { kind: "metric", prefix: word };
}

function metricBefore(text: string, brace: number): string | undefined {
  return /([a-zA-Z_:][\w:]*)\s*$/.exec(text.slice(0, brace))?.[1];
}

async function candidates(source: Source, ctx: Context): Promise<string[]> {
  const match = ctx.metric ? ctx.metric : undefined;
  switch (ctx.kind) {
    case "metric":
      return cached(`${source.key}:top`, () => source.top());
    case "label":
      return cached(`${source.key}:labels:${match ?? ""}`, () => source.labels(match));
    case "value":
      return cached(`${source.key}:values:${ctx.label}:${match ?? ""}`, () => source.values(ctx.label!, match));
  }
}

/** Attaches a suggestion list for `source`'s language to `input`; Tab or Enter on a suggestion inserts it, Escape closes the list. */
export function attachAutocomplete(input: HTMLTextAreaElement, source: Source = PROMQL): HTMLElement {
  const list = h("ul", { class: "suggestions", role: "listbox", hidden: true });
  let items: string[] = [];
  let selected = 0;
  let ctx: Context = { kind: "metric", prefix: "" };

  const close = () => {
    list.hidden = true;
    items = [];
  };
  const accept = (choice: string) => {
    const cursor = input.selectionStart;
    const before = input.value.slice(0, cursor - ctx.prefix.length);
    const after = input.value.slice(cursor);
    input.value = before + choice + after;
    const at = before.length + choice.length;
    input.setSelectionRange(at, at);
    close();
    input.focus();
  };
  const show = () => {
    list.replaceChildren(
      ...items.map((item, i) => {
        const li = h("li", { role: "option", "aria-selected": i === selected ? "true" : "false" }, item);
        li.addEventListener("mousedown", (event) => {
          event.preventDefault();
          accept(item);
        });
        return li;
      }),
    );
    list.hidden = items.length === 0;
  };
  const refresh = async () => {
    ctx = contextAt(input.value.slice(0, input.selectionStart));
    if (ctx.kind !== "value" && ctx.prefix.length === 0) return close();
    const all = await candidates(source, ctx);
    const lower = ctx.prefix.toLowerCase();
    items = all.filter((c) => c.toLowerCase().startsWith(lower) && c !== ctx.prefix).slice(0, 12);
    if (items.length < 12) {
      const more = all.filter((c) => !c.toLowerCase().startsWith(lower) && c.toLowerCase().includes(lower));
      items = items.concat(more.slice(0, 12 - items.length));
    }
    selected = 0;
    show();
  };

  input.addEventListener("input", () => void refresh());
  input.addEventListener("blur", () => setTimeout(close, 100));
  input.addEventListener("keydown", (event) => {
    if (list.hidden || items.length === 0) return;
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      selected = (selected + (event.key === "ArrowDown" ? 1 : items.length - 1)) % items.length;
      show();
    } else if (event.key === "Tab" || (event.key === "Enter" && !event.ctrlKey && !event.metaKey)) {
      event.preventDefault();
      accept(items[selected]);
    } else if (event.key === "Escape") {
      close();
    }
  });
  return list;
}
