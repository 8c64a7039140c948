// The side panel (conversations, people, blocked) and the conversation
// header. Lists are updated in place by key, so focus survives updates.

import { attachmentSummary } from "./attachments.js";
import { $, attr, el, reconcile, text, textParts } from "./dom.js";
import { lastSeen, neutralLinks, when } from "./format.js";
import { EVERYONE } from "./store.js";

// People listed at most; "Message someone…" reaches anyone else by name.
const PEOPLE_SHOWN = 200;
// Names a name box suggests at most, those that start with what is typed.
const SUGGESTED = 50;

export class Sidebar {
  /** actions: open(key), unblock(name) */
  constructor(store, actions) {
    this.store = store;
    this.actions = actions;
    this.typedIn = null; // the name box last typed in (null: "Message someone…")
  }

  render() {
    this.conversations();
    this.people();
    this.blocked();
  }

  conversations() {
    const s = this.store;
    reconcile($("conversations"), s.conversations(), {
      key: (c) => c.key,
      create: (c) => {
        const button = el(
          "button",
          {
            type: "button",
            class: "conv-item",
            "data-key": c.key,
            onclick: () => this.actions.open(c.key),
          },
          el("span", { class: "dot", "aria-hidden": "true" }),
          el(
            "span",
            { class: "conv-text" },
            el(
              "span",
              { class: "conv-line" },
              el("bdi", { class: "conv-name", text: c.name }),
              el("span", { class: "conv-time" }),
            ),
            el(
              "span",
              { class: "conv-line" },
              el("span", { class: "preview", dir: "auto" }),
              el("span", { class: "badge" }),
            ),
          ),
        );
        return el("li", {}, button);
      },
      update: (li, c) => {
        const button = li.firstChild;
        const active = c.key === s.open;
        button.classList.toggle("active", active);
        attr(button, "aria-current", active ? "true" : null);
        button.querySelector(".dot").className =
          "dot" +
          (c.key === EVERYONE
            ? " all"
            : c.room !== null
              ? " room"
              : s.isOnline(c.key)
                ? " on"
                : "");
        textParts(button.querySelector(".conv-name"), [c.name]);
        button.classList.toggle("is-room", c.room !== null);
        const last = c.last;
        let preview = [];
        const draft = c.key !== s.open && s.drafts[c.key];
        const who =
          last?.from === s.me
            ? ["You: "]
            : c.key === EVERYONE || c.room !== null
              ? [[last?.from], ": "]
              : [];
        const typers = c.room !== null ? s.typingIn(c.key) : [];
        if (typers.length) preview = [...typingWords(typers)];
        else if (c.room === null && c.key !== EVERYONE && s.isTyping(c.key)) preview = ["typing…"];
        else if (draft) preview = ["Draft: ", [draft.replace(/\s+/g, " ")]];
        else if (last)
          preview = [
            ...who,
            [neutralLinks((last.body || attachmentSummary(last.attachments)).replace(/\s+/g, " "))],
          ];
        else if (c.key === EVERYONE) preview = ["Messages to everyone"];
        else if (c.room !== null) preview = ["No messages yet"];
        const p = button.querySelector(".preview");
        textParts(p, ...preview);
        p.classList.toggle("typing", preview[preview.length - 1]?.endsWith?.("typing…") || false);
        p.classList.toggle("draft", preview[0] === "Draft: ");
        text(button.querySelector(".conv-time"), last ? when(last.sent_at) : "");
        const badge = button.querySelector(".badge");
        badge.hidden = !c.unread;
        text(badge, c.unread ? String(c.unread) : "");
        attr(badge, "aria-label", c.unread ? `${c.unread} unread` : null);
        button.classList.toggle("has-unread", c.unread > 0);
      },
      fallback: () => $("conversations").querySelector("button"),
    });
    this.suggestions();
  }

  /** The names the name boxes offer (the datalist they share): those that
   * start with what is typed in the box last used, at most SUGGESTED.
   * Options that stay are kept, so a presence batch that changes none of
   * them changes nothing in the page. */
  suggestions() {
    const typed = (this.typedIn || $("new-chat-name")).value.trim();
    reconcile($("known-users"), this.store.suggestedNames(typed, SUGGESTED), {
      key: (name) => name,
      create: (name) => el("option", { value: name }),
      update: () => {},
    });
  }

  /** Suggest names for `input`, one of the boxes with list="known-users"
   * (on its input and focus events: the boxes share the datalist). */
  suggestFor(input) {
    this.typedIn = input;
    this.suggestions();
  }

  people() {
    const s = this.store;
    const now = s.serverNow();
    const people = s.people(now);
    const online = people.filter((p) => p.online).length;
    const known = s.presenceKnown;
    text($("online-count"), !known ? "unknown while offline" : online ? `${online} online` : "");
    $("people-empty").hidden = people.length > 0;
    // The first PEOPLE_SHOWN (online first), the rest counted: thousands
    // of rows are a list nobody scrolls, rebuilt at every presence batch.
    const shown = people.slice(0, PEOPLE_SHOWN);
    const more = people.length - shown.length;
    $("people-more").hidden = more <= 0;
    text($("people-more"), more > 0 ? `and ${more} more: type a name above to write to them` : "");
    reconcile($("people"), shown, {
      key: (p) => p.username,
      create: (p) =>
        el(
          "li",
          {},
          el(
            "button",
            {
              type: "button",
              class: "person",
              "data-name": p.username,
              onclick: () => this.actions.open(p.username),
            },
            el("span", { class: "dot", "aria-hidden": "true" }),
            el("bdi", { class: "conv-name", text: p.username }),
            el("span", { class: "seen muted small-text" }),
          ),
        ),
      update: (li, p) => {
        const button = li.firstChild;
        button.classList.toggle("online", p.online);
        button.classList.toggle("unknown", !known);
        button.querySelector(".dot").className = "dot" + (p.online ? " on" : "");
        text(
          button.querySelector(".seen"),
          !known
            ? "unknown"
            : p.online
              ? "online"
              : p.lastSeen
                ? lastSeen(p.lastSeen, now)
                : "offline",
        );
        attr(button, "title", `Message ${p.username}`);
      },
      fallback: () => $("people").querySelector("button") || $("new-chat-name"),
    });
  }

  blocked() {
    const s = this.store;
    $("blocked-empty").hidden = s.blocked.length > 0;
    reconcile($("blocked"), s.blocked, {
      key: (name) => name,
      create: (name) =>
        el(
          "li",
          { class: "blocked-item" },
          el("bdi", { class: "conv-name", text: name }),
          el("button", {
            type: "button",
            class: "secondary small",
            text: "Unblock",
            "aria-label": `Unblock ${name}`,
            onclick: () => this.actions.unblock(name),
          }),
        ),
      update: () => {},
      fallback: (i) => {
        const buttons = $("blocked").querySelectorAll("button");
        return buttons[Math.max(0, Math.min(i, buttons.length - 1))] || $("blocked-heading");
      },
    });
  }

  header() {
    const s = this.store;
    const c = s.current;
    text($("conv-title"), c.name);
    attr($("conv-title"), "title", c.name);
    const toggle = $("block-toggle");
    const status = $("conv-presence");
    $("members-open").hidden = c.room === null;
    if (c.room !== null) {
      toggle.hidden = true;
      const typers = s.typingIn(c.key);
      const n = c.info?.member_count ?? 0;
      if (typers.length) textParts(status, ...typingWords(typers));
      else textParts(status, n === 1 ? "1 member" : `${n} members`);
      status.className = "presence" + (typers.length ? " typing" : "");
      attr($("members-open"), "aria-label", `Members of ${c.name}`);
      return;
    }
    if (c.key === EVERYONE) {
      toggle.hidden = true;
      const others = [...s.online].filter((n) => n !== s.me).length;
      const words = others ? `${others} online` : "nobody else online";
      textParts(status, s.presenceKnown ? words : "who is online is unknown while offline");
      status.className = "presence" + (s.presenceKnown ? "" : " unknown");
      return;
    }
    const blocked = s.blocked.includes(c.key);
    toggle.hidden = false;
    text(toggle, blocked ? "Unblock" : "Block");
    attr(toggle, "aria-label", `${blocked ? "Unblock" : "Block"} ${c.key}`);
    attr(toggle, "title", `${blocked ? "Unblock" : "Block"} ${c.key}`);
    const online = s.isOnline(c.key);
    const seen = s.recent.get(c.key)?.last_seen;
    let state = online ? "online" : seen ? lastSeen(seen, s.serverNow()) : "offline";
    if (!s.presenceKnown) state = "presence unknown while offline";
    else if (s.isTyping(c.key)) state = "typing…";
    textParts(status, state);
    status.className =
      "presence" +
      (online ? " on" : "") +
      (state === "typing…" ? " typing" : "") +
      (s.presenceKnown ? "" : " unknown");
  }
}

/** "alice is typing…", "alice and bob are typing…", names isolated. */
function typingWords(names) {
  if (names.length === 1) return [[names[0]], " is typing…"];
  if (names.length === 2) return [[names[0]], " and ", [names[1]], " are typing…"];
  return [[names[0]], ` and ${names.length - 1} others are typing…`];
}
