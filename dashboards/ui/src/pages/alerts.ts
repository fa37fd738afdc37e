/** Alerts: firing and pending alerts, then every rule group with each rule's state and last evaluation. */
import { getJSON } from "../api";
import { seriesName } from "../chart";
import { errorBox, h, replace } from "../dom";
import { formatTime } from "../time";

/** An active alert as `/api/v1/alerts` returns it. */
export interface Alert {
  labels: Record<string, string>;
  annotations: Record<string, string>;
  state: string;
  activeAt?: string;
  value?: string;
}
interface Rule {
  type: "alerting" | "recording";
  name: string;
  query: string;
  state?: string;
  health: string;
  lastError?: string;
  lastEvaluation?: string;
  evaluationTime?: number;
  duration?: number;
  alerts?: Alert[];
}
interface Group {
  name: string;
  file: string;
  interval: number;
  rules: Rule[];
  lastEvaluation?: string;
}

/** `GET /api/v1/alerts`. */
export async function activeAlerts(): Promise<Alert[]> {
  const body = await getJSON<{ data: { alerts: Alert[] } }>("/api/v1/alerts");
  return body.data.alerts;
}

/** A table of alerts with their state, labels, summary and since-when. */
export function alertTable(alerts: Alert[]): HTMLElement {
  if (alerts.length === 0) return h("div", { class: "empty" }, "No alerts are firing.");
  return h(
    "table",
    { class: "results alerts" },
    h("thead", {}, h("tr", {}, ["State", "Alert", "Summary", "Active since", "Value"].map((t) => h("th", {}, t)))),
    h(
      "tbody",
      {},
      alerts.map((a) =>
        h(
          "tr",
          { class: `state-${a.state}` },
          h("td", {}, h("span", { class: `badge ${a.state}` }, a.state)),
          h("td", { class: "mono" }, seriesName({ __name__: a.labels.alertname ?? "", ...withoutName(a.labels) })),
          h("td", {}, a.annotations.summary ?? a.annotations.description ?? ""),
          h("td", {}, a.activeAt ? formatTime(Date.parse(a.activeAt)) : ""),
          h("td", { class: "num" }, a.value ?? ""),
        ),
      ),
    ),
  );
}

function withoutName(labels: Record<string, string>): Record<string, string> {
  const { alertname: _, ...rest } = labels;
  return rest;
}

function ruleRow(rule: Rule): HTMLElement {
  const state = rule.type === "alerting" ? (rule.state ?? "inactive") : rule.health;
  return h(
    "tr",
    { class: `state-${state}` },
    h("td", {}, h("span", { class: `badge ${state}` }, state)),
    h("td", {}, rule.name, rule.type === "recording" ? h("span", { class: "muted" }, " (recording)") : null),
    h("td", { class: "mono" }, rule.query),
    h("td", {}, rule.health, rule.lastError ? h("div", { class: "error-text" }, rule.lastError) : null),
    h("td", {}, rule.lastEvaluation && !rule.lastEvaluation.startsWith("0001") ? formatTime(Date.parse(rule.lastEvaluation)) : "never"),
    h("td", { class: "num" }, rule.evaluationTime !== undefined ? `${(rule.evaluationTime * 1000).toFixed(1)} ms` : ""),
  );
}

export function alertsPage(root: HTMLElement): () => void {
  const alerts = h("section", {}, "Loading…");
  const groups = h("section", {}, "Loading…");
  const load = async () => {
    try {
      replace(alerts, alertTable(await activeAlerts()));
      const body = await getJSON<{ data: { groups: Group[] } }>("/api/v1/rules");
      replace(
        groups,
        ...(body.data.groups.length === 0
          ? [h("div", { class: "empty" }, "No rule files are loaded (--rule-file, rule_files: in the config).")]
          : body.data.groups.map((g) =>
              h(
                "div",
                { class: "rule-group" },
                h("h3", {}, g.name, h("span", { class: "muted" }, ` ${g.file} · every ${g.interval}s`)),
                h(
                  "table",
                  { class: "results" },
                  h("thead", {}, h("tr", {}, ["State", "Rule", "Expression", "Health", "Last evaluation", "Took"].map((t) => h("th", {}, t)))),
                  h("tbody", {}, g.rules.map(ruleRow)),
                ),
              ),
            )),
      );
    } catch (error) {
      replace(alerts, errorBox(error));
    }
  };
  replace(root, h("h1", {}, "Alerts"), h("h2", {}, "Active alerts"), alerts, h("h2", {}, "Rules"), groups);
  void load();
  const timer = setInterval(() => void load(), 15000);
  return () => clearInterval(timer);
}
