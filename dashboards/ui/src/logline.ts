/** Reading a log line: its level, its fields (logfmt or JSON) and the trace id it mentions. */
import type { Labels } from "./api";

/** Levels the UI colours, in order of severity. */
export const LEVELS = ["critical", "error", "warn", "info", "debug", "trace", "unknown"] as const;
/** A level the UI colours. */
export type Level = (typeof LEVELS)[number];

const ALIASES: Record<string, Level> = {
  crit: "critical", critical: "critical", fatal: "critical", panic: "critical", emerg: "critical", alert: "critical",
  err: "error", error: "error", eror: "error",
  warn: "warn", warning: "warn",
  info: "info", information: "info", notice: "info",
  debug: "debug", dbug: "debug",
  trace: "trace",
};

/** Normalises a level name (`WARNING` → `warn`); unknown names give `unknown`. */
export function normaliseLevel(text: string | undefined): Level {
  return (text && ALIASES[text.toLowerCase()]) || "unknown";
}

/** Fields of a logfmt or JSON line; empty when the line is neither. */
export function fields(line: string): Record<string, string> {
  const trimmed = line.trim();
  if (trimmed.startsWith("{")) {
    try {
      const parsed = JSON.parse(trimmed);
      if (parsed && typeof parsed === "object") {
        return Object.fromEntries(
          Object.entries(parsed).map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)]),
        );
      }
    } catch {
      /* fall through to logfmt */
    }
  }
  const out: Record<string, string> = {};
  for (const m of trimmed.matchAll(/([\w.\-/]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)/g)) {
    out[m[1]] = m[2].startsWith('"') ? m[2].slice(1, -1).replace(/\\(.)/g, "$1") : m[2];
  }
  return out;
}

/** The level of a line: from its labels, then its fields, then a level word in the text. */
export function levelOf(labels: Labels, parsed: Record<string, string>, line: string): Level {
  const named = labels.level ?? labels.detected_level ?? labels.severity_text ?? parsed.level ?? parsed.lvl ?? parsed.severity;
  // OTLP severity numbers: 1-4 trace, 5-8 debug, 9-12 info, 13-16 warn, 17-20 error, 21-24 fatal.
  const severity = Number(labels.severity_number);
  if (!named && severity >= 1 && severity <= 24) return (["trace", "debug", "info", "warn", "error", "critical"] as const)[Math.floor((severity - 1) / 4)];
  if (named) return normaliseLevel(named);
  const word = /\b(FATAL|PANIC|CRITICAL|ERROR|ERR|WARN(?:ING)?|INFO|DEBUG|TRACE)\b/i.exec(line)?.[1];
  if (word) return normaliseLevel(word);
  // klog: a leading severity letter and a date, as in `E1122 10:00:00.000000 ...`.
  const klog = /^([IWEF])\d{4} /.exec(line)?.[1];
  return klog ? normaliseLevel({ I: "info", W: "warn", E: "error", F: "fatal" }[klog]) : "unknown";
}

/** The trace id a line refers to, from its labels or fields, if any. */
export function traceIdOf(labels: Labels, parsed: Record<string, string>): string | undefined {
  const id = labels.trace_id ?? parsed.trace_id ?? parsed.traceID ?? parsed.traceId ?? parsed.traceid;
  return id && /^[0-9a-fA-F]{16,32}$/.test(id) ? id.toLowerCase() : undefined;
}

/** A LogQL stream selector matching exactly `labels`. */
export function selectorOf(labels: Labels): string {
  const pairs = Object.entries(labels).map(([k, v]) => `${k}=${JSON.stringify(v)}`);
  return `{${pairs.join(", ")}}`;
}
