// Search, in a dialog: people among those the page knows of, and messages
// through the server's `search` (protocol 1.1). Ctrl+K (⌘K) or "/" opens it.

import { $, el, text } from "./dom.js";
import { neutralLinks, when } from "./format.js";
import { EVERYONE } from "./store.js";

const PAGE = 20;
const WAIT_MS = 200; // typing pause before asking the server

export class Search {
  /** actions: request(type, fields), open(key), jump(key, id) */
  constructor(store, actions) {
    this.store = store;
    this.actions = actions;
    this.dialog = $("search");
    this.input = $("search-input");
    this.seq = 0;
    this.timer = null;
    this.oldest = null;
    $("search-open").addEventListener("click", () => this.open());
    $("search-close").addEventListener("click", () => this.dialog.close());
    $("search-more").addEventListener("click", () =>
      this.messages(this.input.value.trim(), this.oldest),
    );
    this.input.addEventListener("input", () => {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.run(), WAIT_MS);
    });
    this.dialog.addEventListener("keydown", (e) => this.keys(e));
    this.dialog.addEventListener("click", (e) => {
      if (e.target === this.dialog) this.dialog.close(); // the backdrop
    });
    document.addEventListener("keydown", (e) => {
      const typing = e.target.closest?.("input, textarea, [contenteditable]");
      if (
        ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "k") ||
        (e.key === "/" && !typing && !e.ctrlKey && !e.metaKey)
      ) {
        e.preventDefault();
        this.open();
      }
    });
  }

  open() {
    if (!this.dialog.open) this.dialog.showModal();
    this.input.select();
    this.run();
  }

  run() {
    const query = this.input.value.trim();
    this.people(query);
    $("search-messages").replaceChildren();
    $("search-more").hidden = true;
    $("search-messages-section").hidden = !query; // no empty heading before a query
    if (query) this.messages(query, null);
    else this.status("Type a name or words from a message.");
  }

  status(words) {
    text($("search-status"), words);
  }

  people(query) {
    const q = query.toLowerCase();
    const s = this.store;
    const names = q ? s.knownNames().filter((n) => n.toLowerCase().includes(q)) : [];
    const items = names
      .slice(0, 8)
      .map((name) =>
        this.result(
          () => this.actions.open(name),
          el("span", { class: "dot" + (s.isOnline(name) ? " on" : ""), "aria-hidden": "true" }),
          el("bdi", { class: "conv-name", text: name }),
          el("span", { class: "muted small-text", text: s.isOnline(name) ? "online" : "" }),
        ),
      );
    $("search-people").replaceChildren(...items);
    $("search-people-section").hidden = items.length === 0;
  }

  async messages(query, before) {
    const seq = ++this.seq;
    if (before === null) this.status("Searching…");
    const fields = { query, limit: PAGE };
    if (before !== null) fields.before = before;
    const reply = await this.actions.request("search", fields);
    if (seq !== this.seq) return; // a newer search started
    if (reply.type !== "ok") {
      this.status(
        reply.code === "disconnected"
          ? "Searching needs the connection."
          : reply.code === "invalid"
            ? "Search for words: letters or digits."
            : "Search is not available.",
      );
      return;
    }
    const list = $("search-messages");
    list.append(...reply.messages.map((m) => this.messageResult(m, query)));
    this.oldest = reply.messages.length
      ? reply.messages[reply.messages.length - 1].id
      : this.oldest;
    $("search-more").hidden = reply.messages.length < PAGE;
    const found = list.children.length;
    this.status(
      found
        ? `${found}${reply.messages.length < PAGE ? "" : "+"} message${found === 1 ? "" : "s"}`
        : "No message has these words.",
    );
  }

  messageResult(m, query) {
    const s = this.store;
    const key = s.keyOf(m); // a person, everyone, or a room (protocol 1.2)
    const where = s.convs.get(key)?.name || (key === EVERYONE ? "Everyone" : key);
    const who = m.from === s.me ? "You" : m.from;
    return this.result(
      () => this.actions.jump(key, m.id),
      el(
        "span",
        { class: "result-text" },
        el(
          "span",
          { class: "result-line" },
          // "bob", not "bob · bob", for what bob wrote to me.
          who === where
            ? el("span", { class: "conv-name" }, el("bdi", { text: who }))
            : el(
                "span",
                { class: "conv-name" },
                el("bdi", { text: who }),
                " · ",
                el("bdi", { text: where }),
              ),
          el("span", { class: "conv-time", text: when(m.sent_at) }),
        ),
        el(
          "span",
          { class: "snippet", dir: "auto" },
          ...highlight(neutralLinks(snippet(m.body, query)), query),
        ),
      ),
    );
  }

  result(choose, ...children) {
    const button = el("button", { type: "button", class: "result" }, ...children);
    button.addEventListener("click", () => {
      this.dialog.close();
      choose();
    });
    return el("li", {}, button);
  }

  /** Arrow keys from the box through the results and back. */
  keys(e) {
    if (e.key !== "ArrowDown" && e.key !== "ArrowUp") return;
    const all = [
      this.input,
      ...this.dialog.querySelectorAll(".result, #search-more:not([hidden])"),
    ];
    const i = all.indexOf(document.activeElement);
    if (i < 0) return;
    e.preventDefault();
    all[Math.max(0, Math.min(all.length - 1, i + (e.key === "ArrowDown" ? 1 : -1)))].focus();
  }
}

const words = (query) => {
  const found = query
    .toLowerCase()
    .split(/[^\p{L}\p{N}_]+/u)
    .filter(Boolean);
  // Symbols alone (an emoji) are what the server looked for: mark them.
  return found.length ? found : query.split(/\s+/).filter(Boolean);
};

/** Some 140 characters of the body around the first word found. */
function snippet(body, query) {
  const flat = body.replace(/\s+/g, " ");
  if (flat.length <= 140) return flat;
  const lower = flat.toLowerCase();
  const at = Math.min(
    ...words(query)
      .map((w) => lower.indexOf(w))
      .filter((i) => i >= 0),
    flat.length,
  );
  const start = Math.max(0, Math.min(at - 40, flat.length - 140));
  return (
    (start > 0 ? "…" : "") + flat.slice(start, start + 140) + (start + 140 < flat.length ? "…" : "")
  );
}

/** The text with the words of the query marked. */
function highlight(textValue, query) {
  const ws = words(query).map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  if (!ws.length) return [textValue];
  const re = new RegExp(`(${ws.join("|")})`, "giu");
  return textValue.split(re).map((part, i) => (i % 2 ? el("mark", { text: part }) : part));
}
