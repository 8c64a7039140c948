// The open conversation's messages. Messages are inserted, updated and
// removed one by one, never by rebuilding the list, so a person reading or
// selecting text is not disturbed; the view only scrolls by itself when the
// person is already at the bottom.

import { attachmentNodes, attachmentSummary } from "./attachments.js";
import { attr, el, icon, text } from "./dom.js";
import { clock, dayKey, dayLabel, fullTime } from "./format.js";
import { render } from "./markup.js";

const GROUP_MS = 5 * 60 * 1000; // one sender's messages this close read as one group
const AT_BOTTOM_PX = 40;
const NEAR_TOP_PX = 300;
// The reaction picker's choices; anything else goes in its text box.
export const COMMON_EMOJIS = ["👍", "❤️", "😂", "🎉", "😮", "😢", "🙏", "👀"];
const MAX_EMOJI_CHARS = 32; // the protocol's longest reaction, in characters

// The mark at a bubble's corner: [icon, words for screen readers and the tooltip].
const MARKS = {
  sent: ["sent", "Sent"],
  delivered: ["delivered", "Delivered"],
  read: ["delivered", "Read"],
  sending: ["clock", "Sending…"],
  queued: ["clock", "Queued: it goes as soon as the connection allows"],
};

export class MessageList {
  /** hooks: nearTop(), atBottom(), pending(action, cid), message(action, id)
   * (action: "reply" or "react", and "edit" or "delete" on one's own
   * messages), quote(id) (the original of a reply), react(id, emoji, on) */
  constructor({ box, list, pill, earlier, empty, me, hooks }) {
    Object.assign(this, { box, list, pill, earlier, empty, me, hooks });
    this.conv = null;
    this.fresh = 0; // messages that came in below the view
    box.addEventListener("scroll", () => this.scrolled(), { passive: true });
    box.addEventListener("keydown", (e) => this.keys(e));
    list.addEventListener("click", (e) => {
      const button = e.target.closest("[data-action], .quote, .reaction");
      const node = button?.closest(".msg[data-id]");
      if (!node) return;
      const id = Number(node.dataset.id);
      if (button.classList.contains("quote")) this.hooks.quote(Number(button.dataset.of));
      else if (button.classList.contains("reaction"))
        this.hooks.react(id, button.dataset.emoji, button.getAttribute("aria-pressed") !== "true");
      else this.hooks.message(button.dataset.action, id);
    });
    // A message's own buttons are in the tab order only while it has focus.
    list.addEventListener("focusin", (e) => this.tabbable(e.target.closest(".msg"), true));
    list.addEventListener("focusout", (e) => {
      const node = e.target.closest(".msg");
      if (node && !node.contains(e.relatedTarget)) this.tabbable(node, false);
    });
    pill.addEventListener("click", () => {
      this.scrollToBottom();
      this.box.focus({ preventScroll: true });
    });
  }

  // --- Whole conversation ------------------------------------------------------

  show(conv, pending) {
    // Shown again (its history arrived, say): the message that had the
    // keyboard's focus keeps it, so the arrows and E or R go on from there.
    const focused = conv === this.conv ? document.activeElement?.closest(".msg") : null;
    const had = focused && this.list.contains(focused) ? { ...focused.dataset } : null;
    this.conv = conv;
    this.fresh = 0;
    // Until its history is here, a conversation shows "Loading…", not the
    // one message the conversation list knew.
    const messages = conv.loaded ? conv.sorted() : [];
    this.list.replaceChildren(...messages.map((m) => this.messageNode(m)));
    for (const node of this.list.children) this.decorate(node);
    this.setPending(pending, { scroll: false });
    const again = had?.id
      ? this.node(had.id)
      : had?.cid && this.list.querySelector(`.msg.pending[data-cid="${had.cid}"]`);
    again?.focus({ preventScroll: true });
    this.updateChrome();
    const divider = this.list.querySelector(".divider");
    if (divider)
      this.box.scrollTop +=
        divider.getBoundingClientRect().top - this.box.getBoundingClientRect().top - 8;
    else this.scrollToBottom();
  }

  updateChrome() {
    const c = this.conv;
    const count = this.list.children.length;
    this.empty.hidden = count > 0;
    text(this.empty, c.loaded ? "No messages yet. Say hello!" : "Loading…");
    this.earlier.hidden = c.complete || !c.loaded || c.messages.size === 0;
    this.pill.hidden = this.fresh === 0;
    text(this.pill, this.fresh === 1 ? "1 new message ↓" : `${this.fresh} new messages ↓`);
  }

  setLoading(loading) {
    this.earlier.disabled = loading;
    text(this.earlier, loading ? "Loading…" : "Load earlier messages");
  }

  // --- Scrolling -------------------------------------------------------------------

  atBottom() {
    const b = this.box;
    return b.scrollHeight - b.scrollTop - b.clientHeight < AT_BOTTOM_PX;
  }

  scrollToBottom() {
    this.box.scrollTop = this.box.scrollHeight;
    this.scrolled();
  }

  scrolled() {
    if (this.atBottom()) {
      if (this.fresh) {
        this.fresh = 0;
        this.updateChrome();
      }
      this.hooks.atBottom();
    }
    if (this.box.scrollTop < NEAR_TOP_PX) this.hooks.nearTop();
  }

  // --- One message at a time ---------------------------------------------------------

  node(id) {
    return this.list.querySelector(`.msg[data-id="${id}"]`);
  }

  /** A message of the open conversation, new or older, in its place. */
  add(msg) {
    if (this.node(msg.id)) return this.update(msg);
    const wasAtBottom = this.atBottom();
    const node = this.messageNode(msg);
    let before = this.list.querySelector(".msg.pending");
    for (let n = this.list.lastElementChild; n; n = n.previousElementSibling) {
      if (n.classList.contains("pending")) continue;
      if (Number(n.dataset.id) < msg.id) break;
      before = n;
    }
    const newest = !before || before.classList.contains("pending");
    const anchor = newest ? null : this.keepPosition();
    this.list.insertBefore(node, before);
    this.decorate(node);
    if (node.nextElementSibling) this.decorate(node.nextElementSibling);
    if (anchor) anchor();
    else if (wasAtBottom || msg.from === this.me) this.scrollToBottom();
    else {
      this.fresh += 1;
    }
    this.updateChrome();
  }

  /** A message of mine the server confirmed, in place of its outbox entry
   * `cid` (whose node goes at the next setPending): had the entry the
   * keyboard's focus, the message takes it, so E or R pressed next acts on it. */
  confirm(msg, cid) {
    const entry = this.list.querySelector(`.msg.pending[data-cid="${cid}"]`);
    const hadFocus = entry?.contains(document.activeElement);
    this.add(msg);
    if (hadFocus) this.node(msg.id)?.focus({ preventScroll: true });
  }

  /** An older page, above what is shown, without moving the view. */
  prepend(messages) {
    const restore = this.keepPosition();
    const first = this.list.firstElementChild;
    const nodes = messages.map((m) => this.messageNode(m));
    this.list.prepend(...nodes);
    for (const node of nodes) this.decorate(node);
    if (first) this.decorate(first);
    // The chrome first: a "Load earlier" button that goes away above the
    // view would otherwise move it (past the "New" divider, into a header).
    this.updateChrome();
    restore();
  }

  /** Keeps what the person sees in place while content changes above it. */
  keepPosition() {
    const b = this.box;
    const fromBottom = b.scrollHeight - b.scrollTop;
    return () => {
      b.scrollTop = b.scrollHeight - fromBottom;
    };
  }

  update(msg) {
    const node = this.node(msg.id);
    if (node) this.fill(node, msg);
  }

  remove(id) {
    const node = this.node(id);
    if (!node) return;
    const next = node.nextElementSibling;
    const hadFocus = node.contains(document.activeElement);
    node.remove();
    if (next) this.decorate(next);
    if (hadFocus) (next || this.list.lastElementChild || this.box).focus({ preventScroll: true });
    this.updateChrome();
  }

  /** Bring a message into view, give it focus and flash it (search results). */
  jumpTo(id) {
    const node = this.node(id);
    if (!node) return false;
    node.scrollIntoView({ block: "center" });
    node.focus({ preventScroll: true });
    node.classList.remove("flash");
    void node.offsetWidth; // restart the animation
    node.classList.add("flash");
    return true;
  }

  // --- Keyboard ---------------------------------------------------------------------------

  tabbable(node, yes) {
    if (!node) return;
    for (const button of node.querySelectorAll(".actions button, .quote, .reaction"))
      button.tabIndex = yes ? 0 : -1;
  }

  /** In the message list: arrows move between messages, Home and End to the
   * first and last; R replies, + reacts; on one's own, E edits and Delete deletes. */
  keys(e) {
    if (
      e.target.closest("textarea, input, .confirm, .picker") ||
      e.altKey ||
      e.ctrlKey ||
      e.metaKey
    )
      return;
    const all = [...this.list.querySelectorAll(".msg")];
    if (!all.length) return;
    const current = e.target.closest(".msg");
    let next = null;
    if (e.key === "ArrowUp" || e.key === "ArrowDown") {
      const step = e.key === "ArrowUp" ? -1 : 1;
      const i = current ? all.indexOf(current) + step : this.lastVisible(all);
      next = all[Math.max(0, Math.min(all.length - 1, i))];
    } else if (e.key === "Home" && current) next = all[0];
    else if (e.key === "End" && current) next = all[all.length - 1];
    else if (e.key === "Escape" && current) next = this.box;
    else if (current?.querySelector(".actions") && e.target === current) {
      const id = Number(current.dataset.id);
      const mine = current.classList.contains("mine");
      if (e.key === "r" || e.key === "R") this.hooks.message("reply", id);
      else if (e.key === "+") this.hooks.message("react", id);
      else if (mine && (e.key === "e" || e.key === "E")) this.hooks.message("edit", id);
      else if (mine && e.key === "Delete") this.hooks.message("delete", id);
      else return;
      e.preventDefault();
      return;
    }
    if (!next) return;
    e.preventDefault();
    next.focus({ preventScroll: true });
    if (next !== this.box) next.scrollIntoView({ block: "nearest" });
  }

  /** Index of the lowest message in view (where the arrow keys start). */
  lastVisible(all) {
    const bottom = this.box.getBoundingClientRect().bottom;
    for (let i = all.length - 1; i >= 0; i--)
      if (all[i].getBoundingClientRect().top < bottom) return i;
    return all.length - 1;
  }

  // --- Editing and deleting one's own messages ---------------------------------------------

  /** An editor in place of the body; save(id, text) resolves to an error text or null. */
  startEdit(id, save) {
    const node = this.node(id);
    if (!node || node.classList.contains("editing")) return;
    const body = node.querySelector(".body");
    const area = el("textarea", {
      class: "edit-box",
      dir: "auto",
      rows: "1",
      "aria-label": "Edit your message",
    });
    area.value = body.dataset.text;
    const error = el("p", { class: "edit-error small-text", role: "alert", hidden: true });
    const form = el(
      "form",
      { class: "editor" },
      area,
      el(
        "div",
        { class: "editor-buttons" },
        el("span", { class: "hint small-text", text: "Enter saves, Esc cancels" }),
        el("button", {
          type: "button",
          class: "secondary small",
          text: "Cancel",
          onclick: () => close(),
        }),
        el("button", { type: "submit", class: "small", text: "Save" }),
      ),
      error,
    );
    const close = () => {
      form.remove();
      body.hidden = false;
      node.classList.remove("editing");
      node.focus({ preventScroll: true });
    };
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const problem = await save(id, area.value);
      if (problem) {
        error.textContent = problem;
        error.hidden = false;
        area.focus();
      } else close();
    });
    area.addEventListener("keydown", (e) => {
      if (e.key === "Escape") {
        e.preventDefault();
        close();
      } else if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        form.requestSubmit();
      }
    });
    body.hidden = true;
    body.after(form);
    node.classList.add("editing");
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);
  }

  /** Ask first; remove(id) resolves to an error text or null. */
  confirmDelete(id, remove) {
    const node = this.node(id);
    if (!node || node.querySelector(".confirm")) return;
    const problem = el("span", { class: "edit-error", role: "alert" });
    const close = () => {
      box.remove();
      node.focus({ preventScroll: true });
    };
    const yes = el("button", { type: "button", class: "danger small", text: "Delete" });
    const box = el(
      "div",
      { class: "confirm", role: "group", "aria-label": "Delete this message?" },
      el("span", { text: "Delete it for everyone?" }),
      yes,
      el("button", { type: "button", class: "secondary small", text: "Cancel", onclick: close }),
      problem,
    );
    yes.addEventListener("click", async () => {
      const error = await remove(id);
      if (error) problem.textContent = error;
    });
    box.addEventListener("keydown", (e) => {
      if (e.key === "Escape") {
        e.preventDefault();
        close();
      }
    });
    node.querySelector(".bubble").append(box);
    yes.focus();
  }

  /** The outbox entries of this conversation, after its messages. */
  setPending(entries, { scroll = true } = {}) {
    const wasAtBottom = this.atBottom();
    const keep = new Set(entries.map((e) => e.cid));
    let added = false;
    for (const node of this.list.querySelectorAll(".msg.pending")) {
      if (!keep.has(node.dataset.cid)) {
        const next = node.nextElementSibling;
        node.remove();
        if (next) this.decorate(next);
      }
    }
    for (const entry of entries) {
      let node = this.list.querySelector(`.msg.pending[data-cid="${entry.cid}"]`);
      if (!node) {
        node = this.pendingNode(entry);
        this.list.append(node);
        this.decorate(node);
        added = true;
      }
      this.fillPending(node, entry);
    }
    if (scroll && (added || wasAtBottom)) this.scrollToBottom();
    this.updateChrome();
  }

  // --- Nodes ---------------------------------------------------------------------------

  messageNode(msg) {
    const node = this.shell(msg.from, msg.sent_at);
    node.dataset.id = msg.id;
    // Reached with the mouse on hover, with the keyboard once the message
    // has focus (see keys()).
    const action = (name, label) =>
      el(
        "button",
        {
          type: "button",
          class: "icon-button",
          "data-action": name,
          "aria-label": label,
          title: label,
          tabindex: "-1",
        },
        icon(name),
      );
    const mine = msg.from === this.me;
    node
      .querySelector(".bubble")
      .append(
        el(
          "div",
          { class: "actions" },
          action("reply", "Reply (R)"),
          action("react", "React (+)"),
          mine ? action("edit", "Edit message") : null,
          mine ? action("delete", "Delete message") : null,
        ),
      );
    this.fill(node, msg);
    return node;
  }

  pendingNode(entry) {
    const node = this.shell(this.me, entry.at);
    node.classList.add("pending");
    node.dataset.cid = entry.cid;
    return node;
  }

  shell(from, at) {
    const mine = from === this.me;
    const bubble = el(
      "div",
      { class: "bubble" },
      el(
        "div",
        { class: "meta" },
        el("bdi", { class: "from", text: mine ? "You" : from }),
        el("time", { datetime: at, title: fullTime(at), text: clock(at) }),
      ),
      el("div", { class: "body", dir: "auto" }),
      el("div", { class: "files", hidden: true }),
      el("div", { class: "reactions", hidden: true }),
      el("div", { class: "foot" }),
    );
    const node = el("li", { class: "msg" + (mine ? " mine" : ""), tabindex: "-1" }, bubble);
    node.dataset.from = from;
    node.dataset.at = at;
    return node;
  }

  setBody(node, body) {
    const box = node.querySelector(".body");
    if (box.dataset.text === body) return;
    box.dataset.text = body;
    box.replaceChildren(...render(body));
    box.classList.toggle("empty-body", body === "");
  }

  /** Thumbnails and file cards, rebuilt only when the files change. */
  setFiles(node, attachments) {
    const box = node.querySelector(".files");
    const key = (attachments || []).map((a) => a.id).join(",");
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    box.replaceChildren(...attachmentNodes(attachments));
    box.hidden = key === "";
  }

  fill(node, msg) {
    this.setBody(node, msg.body);
    this.setQuote(node, msg.reply_to);
    this.setFiles(node, msg.attachments);
    this.setReactions(node, msg.reactions || {});
    const meta = node.querySelector(".meta");
    if (msg.stored && !meta.querySelector(".tag")) {
      meta.append(el("span", { class: "tag", text: "waited while you were offline" }));
    }
    let state = null;
    let title = null;
    if (msg.from === this.me && msg.kind === "private") {
      state = msg.read ? "read" : msg.delivered ? "delivered" : "sent";
      if (state === "sent" && msg.waiting)
        title = `Sent: ${msg.to} is offline, and gets it at their next login`;
    }
    this.setMark(node, state, title, msg.edited_at);
    const foot = node.querySelector(".foot");
    foot.replaceChildren(...(msg.note ? [el("span", { class: "note", text: msg.note })] : []));
    foot.hidden = !msg.note;
  }

  /** The corner mark: "edited", ticks of one's own messages, a clock while queued. */
  setMark(node, state, title = null, editedAt = null) {
    const bubble = node.querySelector(".bubble");
    let mark = bubble.querySelector(":scope > .mark");
    const key = `${state}|${title}|${editedAt}`;
    bubble.classList.toggle("has-mark", state !== null || Boolean(editedAt));
    bubble.classList.toggle("edited", Boolean(editedAt));
    if (state === null && !editedAt) return mark?.remove();
    if (!mark) bubble.append((mark = el("span", { class: "mark" })));
    if (mark.dataset.key === key) return;
    mark.dataset.key = key;
    const parts = [];
    if (editedAt)
      parts.push(
        el("span", {
          class: "edited-label",
          title: `Edited ${fullTime(editedAt)}`,
          text: "edited",
        }),
      );
    if (state !== null) {
      const [name, words] = MARKS[state];
      parts.push(
        el(
          "span",
          {
            class: `state ${["sending", "queued"].includes(state) ? "pending-mark" : "ticks"}`,
            "data-state": state,
            title: title || words,
          },
          icon(name),
          el("span", { class: "visually-hidden", text: words }),
        ),
      );
    }
    mark.replaceChildren(...parts);
  }

  fillPending(node, entry) {
    this.setBody(node, entry.body);
    this.setQuote(node, entry.replyTo);
    this.setFiles(node, entry.attachments);
    const failed = entry.state === "failed";
    node.classList.toggle("failed", failed);
    node.classList.toggle("sending", !failed);
    this.setMark(node, failed ? null : entry.state);
    const foot = node.querySelector(".foot");
    const state = entry.state + (entry.error || "");
    if (foot.dataset.state === state) return;
    foot.dataset.state = state;
    foot.hidden = !failed;
    if (!failed) return foot.replaceChildren();
    const act = (action, label, extra = {}) =>
      el("button", {
        type: "button",
        class: "secondary small",
        text: label,
        onclick: () => this.hooks.pending(action, entry.cid),
        ...extra,
      });
    foot.replaceChildren(
      el(
        "div",
        { class: "send-error", role: "alert" },
        el("span", { text: entry.error }),
        entry.retry ? act("retry", "Retry") : null,
        act("edit", "Edit", { title: "Back to the text box" }),
        act("discard", "Discard"),
      ),
    );
  }

  // --- Replies and reactions (protocol 1.2) ------------------------------------------

  /** The quoted excerpt above a reply's body: a button to the original. */
  setQuote(node, replyTo) {
    let quote = node.querySelector(".quote");
    const key = replyTo ? JSON.stringify(replyTo) : "";
    if (quote?.dataset.key === key) return;
    quote?.remove();
    if (!replyTo) return;
    // An empty excerpt: the original was deleted, or has files and no text.
    const original = this.conv?.messages.get(replyTo.id);
    const excerpt = replyTo.excerpt || attachmentSummary(original?.attachments) || "(no text)";
    quote = el(
      "button",
      {
        type: "button",
        class: "quote",
        tabindex: node.contains(document.activeElement) ? "0" : "-1",
        title: "Show the original",
      },
      el("span", { class: "visually-hidden", text: "In reply to " }),
      el("bdi", { class: "quote-from", text: replyTo.from === this.me ? "You" : replyTo.from }),
      el("span", {
        class: "quote-text" + (replyTo.excerpt ? "" : " gone"),
        dir: "auto",
        text: excerpt,
      }),
    );
    quote.dataset.key = key;
    quote.dataset.of = replyTo.id;
    node.querySelector(".body").before(quote);
  }

  /** The counts under a message, mine pressed; who reacted on hover or focus. */
  setReactions(node, reactions) {
    const box = node.querySelector(".reactions");
    const key = JSON.stringify(reactions);
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    const focusedEmoji = box.contains(document.activeElement)
      ? document.activeElement.dataset.emoji
      : null;
    const buttons = Object.entries(reactions)
      .filter(([, names]) => names.length)
      .map(([emoji, names]) => {
        const mine = names.includes(this.me);
        const who = names.map((n) => (n === this.me ? "you" : n));
        const tipParts = [];
        who.forEach((n, i) => {
          if (i) tipParts.push(", ");
          tipParts.push(n === "you" ? "you" : el("bdi", { text: n }));
        });
        const button = el(
          "button",
          {
            type: "button",
            class: "reaction",
            tabindex: node.contains(document.activeElement) ? "0" : "-1",
            "aria-pressed": mine ? "true" : "false",
          },
          el("bdi", { class: "emoji", text: emoji }),
          el("span", { class: "n", text: String(names.length) }),
          // Read with the count; shown as a tip on hover and focus.
          el("span", { class: "visually-hidden", text: " from " }),
          el("span", { class: "who" }, ...tipParts),
        );
        button.dataset.emoji = emoji;
        return button;
      });
    box.replaceChildren(...buttons);
    box.hidden = buttons.length === 0;
    if (focusedEmoji !== null) {
      const again = buttons.find((b) => b.dataset.emoji === focusedEmoji);
      (again || node).focus({ preventScroll: true });
    }
  }

  /** The picker under a message; react(emoji) sends it. */
  openPicker(id, react) {
    const node = this.node(id);
    if (!node) return;
    const open = node.querySelector(".picker");
    if (open) return open.querySelector("button").focus();
    const close = (focusNode = true) => {
      picker.remove();
      if (focusNode) node.focus({ preventScroll: true });
    };
    const choose = (emoji) => {
      close();
      react(emoji);
    };
    const input = el("input", {
      type: "text",
      class: "picker-input",
      "aria-label": "Another emoji",
      placeholder: "Other…",
      autocomplete: "off",
      spellcheck: "false",
    });
    const error = el("span", { class: "edit-error small-text", role: "alert" });
    const form = el(
      "form",
      { class: "picker-other" },
      input,
      el("button", { type: "submit", class: "small secondary", text: "React" }),
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const emoji = input.value.trim();
      const chars = [...emoji].length;
      if (!chars || chars > MAX_EMOJI_CHARS || /\s/.test(emoji)) {
        attr(input, "aria-invalid", "true");
        error.textContent = `1 to ${MAX_EMOJI_CHARS} characters, no spaces.`;
        return input.focus();
      }
      choose(emoji);
    });
    const picker = el(
      "div",
      { class: "picker", role: "group", "aria-label": "React with" },
      el(
        "div",
        { class: "picker-emojis" },
        ...COMMON_EMOJIS.map((emoji) =>
          el("button", {
            type: "button",
            class: "picker-emoji",
            text: emoji,
            "aria-label": `React with ${emoji}`,
            onclick: () => choose(emoji),
          }),
        ),
      ),
      form,
      error,
    );
    picker.addEventListener("keydown", (e) => {
      if (e.key === "Escape") {
        e.preventDefault();
        e.stopPropagation();
        close();
      } else if (
        (e.key === "ArrowRight" || e.key === "ArrowLeft") &&
        e.target.matches(".picker-emoji")
      ) {
        e.preventDefault();
        const all = [...picker.querySelectorAll(".picker-emoji")];
        const i = all.indexOf(e.target) + (e.key === "ArrowRight" ? 1 : -1);
        all[(i + all.length) % all.length].focus();
      }
    });
    picker.addEventListener("focusout", (e) => {
      if (!picker.contains(e.relatedTarget) && e.relatedTarget !== null) close(false);
    });
    node.querySelector(".bubble").append(picker);
    picker.querySelector("button").focus();
  }

  /** Day separator, unread divider and grouping, from the message before. */
  decorate(node) {
    const prev = node.previousElementSibling;
    const at = node.dataset.at;
    const newDay = !prev || dayKey(prev.dataset.at) !== dayKey(at);
    const divider =
      !node.classList.contains("pending") &&
      this.conv.firstUnread !== null &&
      Number(node.dataset.id) === this.conv.firstUnread;
    let day = node.querySelector(":scope > .day");
    if (newDay && !day) node.prepend((day = el("div", { class: "day" }, el("span"))));
    if (!newDay && day) day.remove();
    if (day) text(day.firstChild, dayLabel(at));
    let mark = node.querySelector(":scope > .divider");
    if (divider && !mark) {
      mark = el("div", { class: "divider" }, el("span", { text: "New" }));
      node.querySelector(".bubble").before(mark);
    }
    if (!divider && mark) mark.remove();
    const continued =
      prev &&
      !newDay &&
      !divider &&
      prev.dataset.from === node.dataset.from &&
      new Date(at) - new Date(prev.dataset.at) < GROUP_MS;
    node.classList.toggle("continued", Boolean(continued));
  }

  /** Move the unread divider (null: none). */
  setDivider(id) {
    const old = this.list.querySelector(".divider")?.closest(".msg");
    this.conv.firstUnread = id;
    if (old) this.decorate(old);
    const node = id === null ? null : this.node(id);
    if (node) this.decorate(node);
  }
}
