// Drives Vigil's UI in Debian's headless Chromium with Playwright and checks every page against data the
// test fed to the server. Prints a JSON report (measurements and failures) on stdout; exits 1 on a failure.
//
// Environment: VIGIL_URL (http://127.0.0.1:port), ARTIFACTS (screenshot directory), TRACE_ID and TRACE_SPANS
// (a trace the server holds), LOG_JOB (the job label of pushed log lines), SERIES (a metric with >= 10k
// samples at 1 s over the last 3 h), ALERT (an alert that fires), CHROMIUM (default /usr/bin/chromium).
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env("VIGIL_URL");
const artifacts = env("ARTIFACTS");
const traceId = env("TRACE_ID");
const traceSpans = Number(env("TRACE_SPANS"));
const logJob = env("LOG_JOB");
const series = env("SERIES");
const alert = env("ALERT");

const report = { failures: [], checks: [] };
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
const page = await context.newPage();
page.setDefaultTimeout(15000);
const pageErrors = [];
page.on("pageerror", (error) => pageErrors.push(error.message));

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

/** Runs one named check, records a failure instead of stopping, and saves a screenshot either way. */
async function check(name, body) {
  const before = pageErrors.length;
  try {
    await body();
    expect(pageErrors.length === before, `script errors on the page: ${pageErrors.slice(before).join("; ")}`);
    report.checks.push(name);
  } catch (error) {
    report.failures.push(`${name}: ${error.message.split("\n")[0]}`);
  }
  await page.screenshot({ path: `${artifacts}/${name}.png`, fullPage: true }).catch(() => {});
}

const url = (path) => base + path;
const count = (selector) => page.locator(selector).count();

await check("overview", async () => {
  await page.goto(url("/"), { waitUntil: "load" });
  expect(new URL(page.url()).pathname === "/ui/", `/ redirects to /ui/, got ${page.url()}`);
  // A fresh navigation with a cold cache, timed by the browser.
  const cold = await context.newPage();
  await cold.goto(url("/ui/"), { waitUntil: "load" });
  await cold.locator("h1", { hasText: "Overview" }).waitFor();
  await cold.locator(".tile-value").first().waitFor();
  const timing = await cold.evaluate(() => {
    const nav = performance.getEntriesByType("navigation")[0];
    return { load: nav.loadEventEnd, domContentLoaded: nav.domContentLoadedEventEnd, content: performance.now() };
  });
  report.firstLoadMs = Math.round(timing.load);
  report.firstContentMs = Math.round(timing.content);
  await cold.close();
  expect(report.firstLoadMs < 1000, `first page load took ${report.firstLoadMs} ms`);
  const links = await page.locator("nav a[data-route]").allTextContents();
  expect(["Overview", "Metrics", "Logs", "Traces", "Alerts", "Dashboards"].every((l) => links.includes(l)), `nav links: ${links}`);
  // The local agent's host metrics reach the node table once two samples make a rate.
  const deadline = Date.now() + 45000;
  const nodeCpu = "section:has(h2:text('Nodes')) table.top tbody tr td.num";
  const sparklines = "section:has(h2:text('Nodes')) svg.sparkline polyline";
  const cpuFigure = async () => ((await page.locator(nodeCpu).first().textContent({ timeout: 5000 }).catch(() => "")) ?? "").trim();
  while (!/^[0-9.]+m?$/.test(await cpuFigure()) || (await count(sparklines)) === 0) {
    expect(Date.now() < deadline, "the node table had no CPU figure or sparkline for 45 s");
    await page.waitForTimeout(3000);
    await page.reload({ waitUntil: "load" });
  }
  await page.locator("section:has(h2:text('Firing alerts')) .badge.firing").first().waitFor({ timeout: 20000 });
  // The test writes a sample every half second; the rate shows once Vigil has recorded its own counters twice.
  const tile = ".tile:has(.tile-title:text('Samples/s')) .tile-value";
  let samples = await page.locator(tile).textContent();
  while (!(Number.parseFloat(samples) > 0)) {
    expect(Date.now() < deadline + 30000, `the samples/s tile still reads ${samples}`);
    await page.waitForTimeout(3000);
    await page.reload({ waitUntil: "load" });
    samples = await page.locator(tile).textContent();
  }
});

await check("metrics", async () => {
  const query = encodeURIComponent(series);
  await page.goto(url(`/ui/metrics?q=${query}&range=3h&step=1s&tab=graph`));
  const chart = page.locator(".chart[data-render-ms]");
  await chart.waitFor();
  const points = Number(await chart.getAttribute("data-points"));
  const render = Number(await chart.getAttribute("data-render-ms"));
  report.points = points;
  report.renderMs = render;
  expect(points >= 10000, `the chart has ${points} points, wanted at least 10000`);
  expect(render < 200, `a ${points}-point series took ${render} ms to render`);
  // Re-rendering the same data several times gives a median that noise moves less.
  const renders = [render];
  for (let i = 0; i < 4; i++) {
    await page.locator("form.query-form button.primary").click();
    await page.waitForFunction((prev) => {
      const el = document.querySelector(".chart[data-render-ms]");
      return el && el.dataset.renderMs !== prev;
    }, String(renders[renders.length - 1]), { timeout: 15000 }).catch(() => {});
    renders.push(Number(await page.locator(".chart[data-render-ms]").getAttribute("data-render-ms")));
  }
  report.renderMsRuns = renders;
  // Legend toggling hides a series.
  const entry = page.locator(".u-legend .u-series").nth(1);
  await entry.click();
  expect((await entry.getAttribute("class")).includes("u-off"), "clicking the legend did not toggle the series");
  // URL state: the query is in the address, so the page can be shared.
  expect(new URL(page.url()).searchParams.get("q") === series, `URL lost the query: ${page.url()}`);
  // Autocomplete offers the metric name from a prefix, then its label names inside braces.
  const editor = page.locator("textarea[name=query]");
  await editor.fill("");
  await editor.pressSequentially(series.slice(0, 6), { delay: 20 });
  await page.locator(".suggestions li", { hasText: series }).first().waitFor();
  await editor.press("Tab");
  expect((await editor.inputValue()) === series, `autocomplete inserted ${await editor.inputValue()}`);
  await editor.pressSequentially("{jo", { delay: 20 });
  await page.locator(".suggestions li", { hasText: "job" }).first().waitFor();
  await editor.press("Escape");
  await editor.fill(series);
  // The table view lists the series with its current value.
  await page.locator("button.tab", { hasText: "Table" }).click();
  await page.locator("table.results tbody tr").first().waitFor();
  const row = await page.locator("table.results tbody tr").first().textContent();
  expect(row.includes(series), `table row: ${row}`);
});

await check("logs", async () => {
  const query = encodeURIComponent(`{job="${logJob}"}`);
  await page.goto(url(`/ui/logs?q=${query}&range=1h`));
  await page.locator(".log-row").first().waitFor();
  const rows = await count(".log-row");
  expect(rows >= 20, `${rows} log rows`);
  await page.locator(".volume .uplot").waitFor();
  // The volume histogram stacks lines by the level detected at ingest.
  const volumeLevels = await page.locator(".volume .u-legend .u-series .u-label").allTextContents();
  for (const level of ["error", "warn", "info", "debug"]) expect(volumeLevels.includes(level), `volume levels: ${volumeLevels}`);
  const levels = await page.locator(".log-row").evaluateAll((els) => [...new Set(els.map((e) => e.dataset.level))]);
  for (const level of ["error", "warn", "info"]) expect(levels.includes(level), `no ${level} rows: ${levels}`);
  // Expand the line whose structured metadata holds the trace id: its labels, metadata and fields, the
  // trace link and context lines.
  const traced = page.locator(".log-row", { hasText: "checkout failed" }).first();
  await traced.locator(".log-line").click();
  await traced.locator("table.fields").first().waitFor();
  const metadata = await traced.locator("table.fields:has(caption:text('Structured metadata'))").textContent();
  expect(metadata.includes("trace_id") && metadata.includes(traceId), `structured metadata: ${metadata}`);
  const fields = await traced.locator("table.fields:has(caption:text('Fields'))").textContent();
  expect(fields.includes("order") && fields.includes("42"), `fields: ${fields}`);
  await traced.locator("button", { hasText: "Show context" }).click();
  await traced.locator(".context-line.hit").waitFor();
  expect((await traced.locator(".context-line").count()) >= 3, "context shows fewer than 3 lines");
  // The LogQL editor suggests stream label names, then their values, from the Loki API.
  const editor = page.locator("textarea[name=query]");
  await editor.fill("");
  await editor.pressSequentially("{jo", { delay: 20 });
  await page.locator(".suggestions li", { hasText: "job" }).first().waitFor();
  await editor.press("Tab");
  await editor.pressSequentially('="', { delay: 20 });
  await page.locator(".suggestions li", { hasText: logJob }).first().waitFor();
  await editor.press("Escape");
  await traced.locator("a", { hasText: "View trace" }).click();
  await page.locator(".span-row").first().waitFor();
  expect(page.url().endsWith(`/ui/traces/${traceId}`), `trace link went to ${page.url()}`);
});

await check("live-tail", async () => {
  await page.goto(url(`/ui/logs?q=${encodeURIComponent(`{job="${logJob}"}`)}&range=5m`));
  await page.locator(".log-row").first().waitFor();
  await page.locator("button.live").click();
  await page.locator(".status", { hasText: "Live" }).waitFor();
  const marker = `live line ${Date.now()}`;
  const pushed = Date.now();
  const response = await fetch(url("/loki/api/v1/push"), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ streams: [{ stream: { job: logJob }, values: [[`${BigInt(Date.now()) * 1000000n}`, `level=info msg="${marker}"`]] }] }),
  });
  expect(response.status === 204, `push answered ${response.status}`);
  await page.locator(".log-row.fresh", { hasText: marker }).waitFor({ timeout: 10000 });
  report.tailMs = Date.now() - pushed;
  expect(report.tailMs < 2000, `the live line showed ${report.tailMs} ms after the push`);
  await page.locator("button.live").click();
});

await check("traces-search", async () => {
  await page.goto(url("/ui/traces?service=frontend&range=1h"));
  await page.locator(".trace-results table tbody tr").first().waitFor();
  await page.locator(".scatter .uplot").waitFor();
  const text = await page.locator(".trace-results").textContent();
  expect(text.includes(traceId.slice(0, 16)), "the known trace is not in the results");
  const options = await page.locator("select[name=operation] option").allTextContents();
  expect(options.includes("GET /checkout"), `operations: ${options}`);
});

await check("trace-waterfall", async () => {
  await page.goto(url(`/ui/traces/${traceId}`));
  await page.locator(".span-row").first().waitFor();
  const spans = await count(".span-row");
  expect(spans === traceSpans, `the waterfall shows ${spans} spans, the trace has ${traceSpans}`);
  expect((await count(".span-row.span-error")) >= 1, "no span is highlighted as an error");
  const names = await page.locator(".span-name").allTextContents();
  expect(names[0].includes("GET /checkout"), `the root is not first: ${names[0]}`);
  // Children are indented under their parents.
  const pads = await page.locator(".span-name").evaluateAll((els) => els.map((e) => parseInt(e.style.paddingLeft, 10)));
  expect(pads[0] === 0 && Math.max(...pads) >= 28, `indentation: ${pads}`);
  await page.locator(".span-row.span-error").first().click();
  await page.locator(".span-details").waitFor();
  const details = await page.locator(".span-details").textContent();
  expect(details.includes("Span attributes") || details.includes("Resource"), `span details: ${details.slice(0, 200)}`);
  await page.screenshot({ path: `${artifacts}/waterfall.png`, fullPage: true });
  await page.locator("a", { hasText: "Logs for this trace" }).click();
  await page.locator(".log-row").first().waitFor();
  const lines = await page.locator(".log-row .line").allTextContents();
  expect(lines.length === 1 && lines[0].includes("checkout failed"), `trace logs: ${lines}`);
});

await check("alerts", async () => {
  await page.goto(url("/ui/alerts"));
  await page.locator("table.alerts .badge.firing").first().waitFor({ timeout: 20000 });
  const text = await page.locator("main").textContent();
  expect(text.includes(alert), `alert ${alert} not listed`);
  expect((await count(".rule-group table tbody tr")) >= 1, "no rules listed");
});

await check("dashboards", async () => {
  await page.goto(url("/ui/dashboards"));
  await page.locator(".dashboard-list li").first().waitFor();
  const ids = await page.locator(".dashboard-list a").evaluateAll((els) => els.map((a) => a.getAttribute("href")));
  expect(ids.length >= 4, `dashboards: ${ids}`);
  report.dashboards = {};
  for (const href of ids) {
    await page.goto(url(href));
    await page.locator(".panel").first().waitFor();
    await page.waitForFunction(() => [...document.querySelectorAll(".panel-body")].every((b) => b.textContent !== "Loading…"), null, { timeout: 20000 });
    const errors = await page.locator(".panel .error").allTextContents();
    expect(errors.length === 0, `${href}: ${errors.join("; ")}`);
    const panels = await count(".panel");
    const drawn = await count(".panel .uplot, .panel .stat, .panel .log-list");
    report.dashboards[href] = { panels, drawn };
    await page.screenshot({ path: `${artifacts}/dashboard-${href.split("/").pop()}.png`, fullPage: true });
  }
  // vigil up records this machine's host metrics, so every node panel has data; Vigil's own rates need two
  // scrapes after the test's ingest, and nothing was rejected, so a few of its panels may be empty.
  const node = report.dashboards["/ui/dashboards/kubernetes-node"];
  expect(node && node.drawn === node.panels, `the node dashboard drew ${node?.drawn} of ${node?.panels} panels`);
  const vigil = report.dashboards["/ui/dashboards/vigil"];
  expect(vigil && vigil.drawn >= vigil.panels - 3, `the Vigil dashboard drew ${vigil?.drawn} of ${vigil?.panels} panels`);
});

await browser.close();
console.log(JSON.stringify(report));
process.exit(report.failures.length ? 1 : 0);
