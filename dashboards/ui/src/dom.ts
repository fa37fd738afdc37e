/** Small helpers for building DOM trees without a framework. */

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | EventListener | undefined>;

/** Creates an element with attributes (`on*` keys become listeners) and children. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value as EventListener);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children.flat());
  return el;
}

/** Appends children, skipping empty ones and turning text into text nodes. */
export function append(el: Element, children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(typeof child === "number" ? String(child) : child);
  }
}

/** Replaces all children of `el`. */
export function replace(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

/** A link handled by the client-side router. */
export function link(href: string, ...children: Child[]): HTMLAnchorElement {
  return h("a", { href, "data-link": true }, ...children);
}

/** A message box for errors. */
export function errorBox(error: unknown): HTMLElement {
  return h("div", { class: "error", role: "alert" }, error instanceof Error ? error.message : String(error));
}

/** A select element with options; `selected` picks the current one. */
export function select(name: string, options: [string, string][], selected: string): HTMLSelectElement {
  return h(
    "select",
    { name },
    options.map(([value, label]) => h("option", { value, selected: value === selected }, label)),
  );
}
