// DOM helpers: element creation and keyed list updates that keep focus.

export const $ = (id) => document.getElementById(id);

/** `el("button", {class: "x", text: "Hi", onclick: fn}, child...)`. Text is
 * only ever set as textContent; `on…` keys become event listeners. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children)
    if (child !== null && child !== undefined && child !== false) node.append(child);
  return node;
}

/** Set an attribute, or remove it when the value is null/false. */
export function attr(node, name, value) {
  if (value === null || value === undefined || value === false) node.removeAttribute(name);
  else node.setAttribute(name, value === true ? "" : value);
}

/** Set text only when it changed (keeps selections and avoids mutations). */
export function text(node, value) {
  if (node.textContent !== value) node.textContent = value;
}

/** Set `node`'s content to `pieces`, when they changed: strings are our own
 * text; `[text]`, a list of one, is someone else's (a name, a body), put in a
 * <bdi> of its own so its direction, and any direction control in it, is
 * isolated from the rest of the line. Alone, it is the node's text: `node`
 * is isolated itself, and its dir="auto" then takes that text's direction. */
export function textParts(node, ...pieces) {
  const key = JSON.stringify(pieces);
  if (node.dataset.parts === key) return;
  node.dataset.parts = key;
  if (pieces.length === 1 && Array.isArray(pieces[0])) node.textContent = pieces[0][0];
  else
    node.replaceChildren(...pieces.map((p) => (Array.isArray(p) ? el("bdi", { text: p[0] }) : p)));
}

/**
 * Make `parent`'s children match `items`, reusing the child whose
 * `data-key` is the item's key, so nodes (and the focus inside them) survive.
 * `create(item)` returns a new node; `update(node, item)` refreshes it.
 * When the focused node goes away, `fallback(index)` says what to focus.
 */
export function reconcile(parent, items, { key, create, update, fallback }) {
  const active = document.activeElement;
  const hadFocus = active && parent.contains(active);
  const old = new Map();
  let focusIndex = -1;
  [...parent.children].forEach((child, i) => {
    old.set(child.dataset.key, child);
    if (hadFocus && child.contains(active)) focusIndex = i;
  });
  let cursor = parent.firstElementChild;
  for (const item of items) {
    const k = String(key(item));
    let node = old.get(k);
    if (node) old.delete(k);
    else {
      node = create(item);
      node.dataset.key = k;
    }
    update(node, item);
    if (node === cursor) cursor = cursor.nextElementSibling;
    else parent.insertBefore(node, cursor);
  }
  for (const node of old.values()) node.remove();
  if (!hadFocus || document.activeElement === active) return;
  if (active.isConnected) active.focus({ preventScroll: true });
  else if (fallback) fallback(Math.min(focusIndex, parent.children.length - 1))?.focus();
}

const ICONS = {
  sent: ["0 0 16 16", "M2.5 8.5l3.5 3.5 7.5-7.5"],
  delivered: ["0 0 20 16", "M1 8.5l3.5 3.5 7.5-7.5M8.5 11l1 1 7.5-7.5"],
  clock: ["0 0 16 16", "M8 2.2a5.8 5.8 0 1 0 0 11.6 5.8 5.8 0 1 0 0-11.6zM8 4.8V8l2.2 1.6"],
  edit: ["0 0 16 16", "M10.5 2.5l3 3-8 8H2.5v-3zM9 4l3 3"],
  delete: ["0 0 16 16", "M2.5 4.5h11M6 4.5V3h4v1.5M4 4.5l.7 9h6.6l.7-9M6.7 7v4M9.3 7v4"],
  search: ["0 0 16 16", "M7 2.5a4.5 4.5 0 1 0 0 9 4.5 4.5 0 1 0 0-9zM10.3 10.3l3.2 3.2"],
  reply: ["0 0 16 16", "M6.5 3.5 2.5 7.5l4 4M2.5 7.5h6.5a4.5 4.5 0 0 1 4.5 4.5v1"],
  react: [
    "0 0 16 16",
    "M8 2.2a5.8 5.8 0 1 0 0 11.6 5.8 5.8 0 1 0 0-11.6zM5.6 9.6a3 3 0 0 0 4.8 0M6 6.3v.4M10 6.3v.4",
  ],
  clip: [
    "0 0 16 16",
    "M13 7.5l-5.3 5.3a3.2 3.2 0 0 1-4.5-4.5l5.6-5.6a2.1 2.1 0 0 1 3 3L6.2 11.3a1.1 1.1 0 0 1-1.5-1.5L10 4.5",
  ],
  file: ["0 0 16 16", "M4 1.5h5l3.5 3.5v9.5h-8.5zM9 1.5V5h3.5"],
  close: ["0 0 16 16", "M4 4l8 8M12 4l-8 8"],
};

/** A small stroked SVG icon, hidden from screen readers (say it in text). */
export function icon(name) {
  const [viewBox, d] = ICONS[name];
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", viewBox);
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", `icon icon-${name}`);
  const path = document.createElementNS(NS, "path");
  path.setAttribute("d", d);
  svg.append(path);
  return svg;
}
