/** Charts on uPlot: time series with a toggling legend, stacked bars, scatter plots and SVG sparklines. */
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { Labels, RangeSeries } from "./api";
import { h } from "./dom";

const PALETTE = ["#3d71d9", "#e0752d", "#3ba55c", "#d64545", "#8a5cd1", "#1f9ea8", "#c2a60f", "#d1589d", "#6b7a8f"];

/** The colour of the `i`th series. */
export function colour(i: number): string {
  return PALETTE[i % PALETTE.length];
}

/** `name{a="b", c="d"}` for a legend. */
export function seriesName(metric: Labels): string {
  const { __name__: name = "", ...rest } = metric;
  const pairs = Object.entries(rest).map(([k, v]) => `${k}="${v}"`);
  return pairs.length ? `${name}{${pairs.join(", ")}}` : name || "{}";
}

/** Aligns range series on one time axis (seconds); gaps are null. */
export function align(series: RangeSeries[]): uPlot.AlignedData {
  const tables = series.map((s) => [s.values.map((v) => v[0]), s.values.map((v) => Number(v[1]))] as uPlot.AlignedData);
  if (tables.length === 0) return [[]];
  if (tables.length === 1) return tables[0];
  return uPlot.join(tables);
}

function width(el: HTMLElement): number {
  return Math.max(300, el.clientWidth || el.parentElement?.clientWidth || 800);
}

/** Resolves after the browser has painted the next frame. */
function painted(): Promise<void> {
  return new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
}

/**
 * Draws `series` as lines into `el`; clicking a legend entry toggles its series. Resolves with the
 * milliseconds from receiving the data to the painted chart, also recorded as the `vigil:render` measure.
 */
export async function lineChart(
  el: HTMLElement,
  series: RangeSeries[],
  height = 300,
  legendName: (metric: Labels) => string = seriesName,
): Promise<{ chart: uPlot; renderMs: number }> {
  const start = performance.now();
  const data = align(series);
  const opts: uPlot.Options = {
    width: width(el),
    height,
    series: [
      {},
      ...series.map((s, i) => ({
        label: legendName(s.metric),
        stroke: colour(i),
        width: 1.5,
        points: { show: false },
        spanGaps: false,
      })),
    ],
    axes: [{}, { size: 60 }],
    legend: { live: true },
  };
  el.replaceChildren();
  const chart = new uPlot(opts, data, el);
  await painted();
  const renderMs = performance.now() - start;
  performance.measure("vigil:render", { start, duration: renderMs });
  el.dataset.renderMs = renderMs.toFixed(1);
  el.dataset.points = String(series.reduce((n, s) => n + s.values.length, 0));
  return { chart, renderMs };
}

/** Draws stacked bars (e.g. log volume by level); series are stacked in the given order. */
export function stackedBars(el: HTMLElement, xs: number[], rows: { label: string; values: number[]; colour: string }[], height = 120): uPlot {
  const sums = xs.map(() => 0);
  const stacked = rows.map((row) => row.values.map((v, i) => (sums[i] += v || 0)));
  const bars = uPlot.paths.bars!({ size: [0.9, 40] });
  const opts: uPlot.Options = {
    width: width(el),
    height,
    series: [
      {},
      ...rows.map((row, i) => ({
        label: row.label,
        stroke: row.colour,
        fill: row.colour,
        paths: bars,
        points: { show: false },
        value: (_u: uPlot, _v: number, _s: number, idx: number | null) => (idx === null ? "" : String(rows[i].values[idx] ?? 0)),
      })),
    ],
    axes: [{}, { size: 50 }],
    cursor: { points: { show: false } },
  };
  el.replaceChildren();
  // Later series are drawn on top, so the tallest (cumulative) goes first.
  const order = rows.map((_, i) => i).reverse();
  opts.series = [opts.series[0], ...order.map((i) => opts.series[i + 1])];
  return new uPlot(opts, [xs, ...order.map((i) => stacked[i])], el);
}

/** A scatter plot of points; `onPick` gets the index of a clicked point. */
export function scatter(
  el: HTMLElement,
  xs: number[],
  ys: number[],
  colours: string[],
  yLabel: string,
  onPick: (index: number) => void,
): uPlot {
  const opts: uPlot.Options = {
    width: width(el),
    height: 200,
    series: [
      {},
      {
        label: yLabel,
        stroke: colour(0),
        paths: () => null,
        points: { show: true, size: 9, fill: (u: uPlot) => colours[u.cursor.idx ?? 0] ?? colour(0) },
      },
    ],
    axes: [{}, { size: 70, values: (_u, ticks) => ticks.map((t) => `${t} ms`) }],
    legend: { show: false },
    cursor: { focus: { prox: 30 } },
  };
  el.replaceChildren();
  const chart = new uPlot(opts, [xs, ys], el);
  chart.over.addEventListener("click", () => {
    const idx = chart.cursor.idx;
    if (idx !== null && idx !== undefined) onPick(idx);
  });
  return chart;
}

/** A small inline SVG line of `values` (no axes), for tables. */
export function sparkline(values: number[], w = 120, hgt = 24, stroke = colour(0)): SVGSVGElement {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", String(w));
  svg.setAttribute("height", String(hgt));
  svg.setAttribute("class", "sparkline");
  const finite = values.filter(Number.isFinite);
  if (finite.length < 2) return svg;
  const min = Math.min(...finite);
  const max = Math.max(...finite);
  const span = max - min || 1;
  const points = values
    .map((v, i) => (Number.isFinite(v) ? `${((i / (values.length - 1)) * w).toFixed(1)},${(hgt - 2 - ((v - min) / span) * (hgt - 4)).toFixed(1)}` : ""))
    .filter(Boolean)
    .join(" ");
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points);
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", stroke);
  line.setAttribute("stroke-width", "1.5");
  svg.append(line);
  return svg;
}

/** A placeholder shown where a chart has no data. */
export function noData(text = "No data in this range."): HTMLElement {
  return h("div", { class: "empty" }, text);
}
