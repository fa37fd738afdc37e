/** Calls to Vigil's HTTP APIs (Prometheus, Loki, Jaeger, Kubernetes), with an optional bearer token. */

const TOKEN_KEY = "vigil.token";

/** An API error with the HTTP status and the server's message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Query parameters; arrays repeat the key. */
export type Params = Record<string, string | number | string[] | undefined>;

function search(params: Params): string {
  const out = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === "") continue;
    for (const v of Array.isArray(value) ? value : [value]) out.append(key, String(v));
  }
  const text = out.toString();
  return text ? `?${text}` : "";
}

/** The stored query token, if the server needs one. */
export function token(): string {
  return localStorage.getItem(TOKEN_KEY) ?? "";
}

/** Stores (or clears) the query token. */
export function setToken(value: string): void {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
}

/** GETs JSON from `path`; non-2xx answers become an `ApiError` carrying the server's message. */
export async function getJSON<T>(path: string, params: Params = {}, headers: Record<string, string> = {}): Promise<T> {
  const auth: Record<string, string> = token() ? { Authorization: `Bearer ${token()}` } : {};
  const response = await fetch(path + search(params), { headers: { Accept: "application/json", ...auth, ...headers } });
  const text = await response.text();
  if (!response.ok) {
    let message = text;
    try {
      const body = JSON.parse(text);
      message = body.error ?? body.message ?? body.errors?.[0]?.msg ?? text;
    } catch {
      /* not JSON: keep the text */
    }
    if (response.status === 401) window.dispatchEvent(new CustomEvent("vigil:unauthorized"));
    throw new ApiError(response.status, `${response.status}: ${message}`);
  }
  return JSON.parse(text) as T;
}

/** A Prometheus label set. */
export type Labels = Record<string, string>;
/** One series of a range result. */
export interface RangeSeries {
  metric: Labels;
  values: [number, string][];
}
/** One sample of an instant vector. */
export interface InstantSample {
  metric: Labels;
  value: [number, string];
}
interface PromResponse<T> {
  data: { resultType: string; result: T };
}

/** `GET /api/v1/query_range`. Times in seconds. */
export async function promRange(query: string, start: number, end: number, step: number): Promise<RangeSeries[]> {
  const body = await getJSON<PromResponse<RangeSeries[]>>("/api/v1/query_range", { query, start, end, step });
  return body.data.result;
}

/** `GET /api/v1/query`; scalars and strings come back as one unlabelled sample. */
export async function promInstant(query: string, time?: number): Promise<InstantSample[]> {
  const body = await getJSON<PromResponse<unknown>>("/api/v1/query", { query, time });
  const { resultType, result } = body.data;
  if (resultType === "vector") return result as InstantSample[];
  return [{ metric: {}, value: result as [number, string] }];
}

/** `GET /api/v1/label/<name>/values`. */
export async function labelValues(name: string, match?: string): Promise<string[]> {
  const body = await getJSON<{ data: string[] }>(`/api/v1/label/${encodeURIComponent(name)}/values`, {
    "match[]": match ? [match] : undefined,
  });
  return body.data;
}

/** `GET /api/v1/labels`. */
export async function labelNames(match?: string): Promise<string[]> {
  const body = await getJSON<{ data: string[] }>("/api/v1/labels", { "match[]": match ? [match] : undefined });
  return body.data;
}

/** `GET /loki/api/v1/labels` over the last hour (Loki's default). */
export async function lokiLabelNames(): Promise<string[]> {
  const body = await getJSON<{ data?: string[] }>("/loki/api/v1/labels");
  return body.data ?? [];
}

/** `GET /loki/api/v1/label/<name>/values` over the last hour. */
export async function lokiLabelValues(name: string): Promise<string[]> {
  const body = await getJSON<{ data?: string[] }>(`/loki/api/v1/label/${encodeURIComponent(name)}/values`);
  return body.data ?? [];
}

/** A Loki stream: labels and `[ns, line, {structuredMetadata}]` entries. */
export interface LokiStream {
  stream: Labels;
  values: [string, string, { structuredMetadata?: Labels }?][];
}

/** `GET /loki/api/v1/query_range` for a log query. Times in nanoseconds. */
export async function lokiStreams(
  query: string,
  startNs: bigint,
  endNs: bigint,
  limit: number,
  direction: "backward" | "forward",
): Promise<LokiStream[]> {
  // Structured metadata (trace ids, detected level, OTLP attributes) comes apart from the stream labels.
  const body = await getJSON<PromResponse<LokiStream[]>>(
    "/loki/api/v1/query_range",
    { query, start: startNs.toString(), end: endNs.toString(), limit, direction },
    { "X-Loki-Response-Encoding-Flags": "categorize-labels" },
  );
  if (body.data.resultType !== "streams") throw new Error("not a log query: use a stream selector with filters");
  return body.data.result;
}

/** `GET /loki/api/v1/query_range` for a metric query. Times in seconds. */
export async function lokiMatrix(query: string, start: number, end: number, step: number): Promise<RangeSeries[]> {
  const body = await getJSON<PromResponse<RangeSeries[]>>("/loki/api/v1/query_range", {
    query,
    start: Math.floor(start * 1e9).toString(),
    end: Math.floor(end * 1e9).toString(),
    step,
  });
  return body.data.result;
}
