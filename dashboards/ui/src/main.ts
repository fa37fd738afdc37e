/** Entry point: the navigation bar, the token prompt and the page table. */
import "./style.css";
import { setToken, token } from "./api";
import { h, link, replace } from "./dom";
import { alertsPage } from "./pages/alerts";
import { dashboardsPage } from "./pages/dashboards";
import { logsPage } from "./pages/logs";
import { metricsPage } from "./pages/metrics";
import { overviewPage } from "./pages/overview";
import { tracesPage } from "./pages/traces";
import { type Route, start } from "./router";

const ROUTES: Route[] = [
  { path: "", label: "Overview", page: overviewPage },
  { path: "metrics", label: "Metrics", page: metricsPage },
  { path: "logs", label: "Logs", page: logsPage },
  { path: "traces", label: "Traces", page: tracesPage },
  { path: "alerts", label: "Alerts", page: alertsPage },
  { path: "dashboards", label: "Dashboards", page: dashboardsPage },
];

function tokenForm(): HTMLElement {
  const input = h("input", { type: "password", placeholder: "query token", value: token(), "aria-label": "query token" });
  return h(
    "form",
    {
      class: "token",
      onsubmit: (event: Event) => {
        event.preventDefault();
        setToken(input.value.trim());
        location.reload();
      },
    },
    input,
    h("button", { type: "submit" }, "Use token"),
  );
}

function navigation(): void {
  const nav = document.getElementById("nav")!;
  const slot = h("span", { class: "token-slot" });
  replace(
    nav,
    link("/ui/", h("strong", { class: "brand" }, "Vigil")),
    ...ROUTES.map((r) => {
      const a = link(`/ui/${r.path}`, r.label);
      a.dataset.route = r.path;
      return a;
    }),
    slot,
  );
  window.addEventListener("vigil:unauthorized", () => replace(slot, tokenForm()), { once: true });
}

navigation();
start(ROUTES);
