/** Time ranges, durations and number formatting shared by the pages. */

/** Ranges offered by the pickers, as [value, label]. */
export const RANGES: [string, string][] = [
  ["5m", "Last 5 minutes"],
  ["15m", "Last 15 minutes"],
  ["1h", "Last 1 hour"],
  ["3h", "Last 3 hours"],
  ["6h", "Last 6 hours"],
  ["12h", "Last 12 hours"],
  ["1d", "Last 1 day"],
  ["2d", "Last 2 days"],
  ["7d", "Last 7 days"],
];

const UNITS: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

/** Parses a Prometheus-style duration (`90s`, `1h30m`, `250ms`) into seconds; NaN when malformed. */
export function parseDuration(text: string): number {
  const trimmed = text.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Number(trimmed);
  const parts = [...trimmed.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join("") !== trimmed) return NaN;
  return parts.reduce((sum, p) => sum + Number(p[1]) * UNITS[p[2]], 0);
}

/** A step that gives about `points` points over `rangeSeconds`, at least 1 s, rounded to whole seconds. */
export function autoStep(rangeSeconds: number, points = 250): number {
  return Math.max(1, Math.round(rangeSeconds / points));
}

/** Seconds since the epoch, now. */
export function nowSeconds(): number {
  return Date.now() / 1000;
}

/** `12.3 ms`, `1.25 s`: a duration given in microseconds. */
export function formatMicros(us: number): string {
  if (us < 1000) return `${us.toFixed(0)} µs`;
  if (us < 1e6) return `${(us / 1000).toFixed(us < 1e4 ? 2 : 1)} ms`;
  return `${(us / 1e6).toFixed(2)} s`;
}

/** A number with SI prefixes (`1.2k`, `3.4M`), or bytes with binary prefixes. */
export function formatValue(value: number, unit: "" | "bytes" | "cores" = ""): string {
  if (!Number.isFinite(value)) return String(value);
  if (unit === "bytes") {
    const prefixes = ["B", "KiB", "MiB", "GiB", "TiB"];
    let v = value;
    let i = 0;
    while (Math.abs(v) >= 1024 && i < prefixes.length - 1) {
      v /= 1024;
      i++;
    }
    return `${v.toFixed(i === 0 ? 0 : 1)} ${prefixes[i]}`;
  }
  if (unit === "cores") return value < 1 ? `${(value * 1000).toFixed(0)}m` : value.toFixed(2);
  const abs = Math.abs(value);
  if (abs >= 1e9) return `${(value / 1e9).toFixed(2)}G`;
  if (abs >= 1e6) return `${(value / 1e6).toFixed(2)}M`;
  if (abs >= 1e3) return `${(value / 1e3).toFixed(2)}k`;
  if (abs === 0 || abs >= 1) return String(Math.round(value * 1000) / 1000);
  return value.toPrecision(3);
}

/** `2026-01-02 15:04:05.123` in local time. */
export function formatTime(ms: number): string {
  const d = new Date(ms);
  const pad = (n: number, w = 2) => String(n).padStart(w, "0");
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`
  );
}
