/** Client-side routing under `/ui/`: every page has its own URL, and links update it without a reload. */

/** A page renders into `root`; it may return a cleanup run when the user leaves it. */
export type Page = (root: HTMLElement, rest: string[], params: URLSearchParams) => void | (() => void);

/** Navigation entries: path under /ui/, label, page. */
export interface Route {
  path: string;
  label: string;
  page: Page;
}

let cleanup: (() => void) | void;
let routes: Route[] = [];

/** The part of the path after `/ui/`, split on slashes. */
function segments(): string[] {
  return location.pathname.replace(/^\/ui\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
}

function render(): void {
  if (cleanup) cleanup();
  const [first = "", ...rest] = segments();
  const route = routes.find((r) => r.path === first) ?? routes[0];
  for (const a of document.querySelectorAll<HTMLAnchorElement>("nav a[data-route]")) {
    a.classList.toggle("active", a.dataset.route === route.path);
  }
  const root = document.getElementById("page")!;
  root.replaceChildren();
  root.dataset.page = route.path || "overview";
  document.title = `${route.label} · Vigil`;
  cleanup = route.page(root, rest, new URLSearchParams(location.search));
}

/** Goes to `href` (a /ui/ URL) and renders its page. */
export function navigate(href: string): void {
  history.pushState(null, "", href);
  render();
}

/** Writes a page's state into the URL's query string without a reload, so the URL can be shared. */
export function saveState(params: Record<string, string>): void {
  const search = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== ""));
  const url = `${location.pathname}?${search}`;
  if (url !== location.pathname + location.search) history.pushState(null, "", url);
}

/** Starts the router: renders the current URL and follows `data-link` clicks and history moves. */
export function start(table: Route[]): void {
  routes = table;
  document.addEventListener("click", (event) => {
    const a = (event.target as Element).closest?.("a[data-link]") as HTMLAnchorElement | null;
    if (!a || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    navigate(a.getAttribute("href")!);
  });
  window.addEventListener("popstate", render);
  render();
}
