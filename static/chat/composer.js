// The text box: a draft per conversation (kept across reloads), a counter
// that agrees with the server's limit, Enter to send, typing signals.

import { $, attr, text } from "./dom.js";
import { bodyLength, number, trimBody } from "./format.js";
import { MAX_BODY_CHARS } from "./store.js";

const SHOW_COUNTER_FROM = MAX_BODY_CHARS - 500;

export class Composer {
  /** store: where the drafts are (store.js); hooks: send(key, body,
   * attachments), typing(key, active), editLast(), announce(text); tray:
   * the files to send with the next message (attachments.js) */
  constructor({ store, hooks, tray }) {
    this.store = store;
    this.hooks = hooks;
    this.tray = tray;
    this.form = $("composer");
    this.box = $("body");
    this.button = $("send");
    this.counter = $("counter");
    this.key = null; // the conversation whose draft the box holds
    this.over = false;
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.submit();
    });
    this.box.addEventListener("keydown", (e) => this.keydown(e));
    this.box.addEventListener("input", () => this.changed());
    this.box.addEventListener("blur", () => this.hooks.typing(this.key, false));
    this.check();
  }

  get value() {
    return this.box.value;
  }

  set value(body) {
    this.box.value = body;
    this.changed({ typing: false });
  }

  /** Switch to another conversation's draft. */
  setConversation(key) {
    if (key === this.key) return;
    if (this.key !== null) this.hooks.typing(this.key, false);
    this.key = key;
    this.box.value = this.store.drafts[key] || "";
    this.check();
  }

  focus() {
    this.box.focus({ preventScroll: true });
  }

  keydown(e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      this.submit();
    } else if (e.key === "ArrowUp" && this.box.value === "" && !e.shiftKey) {
      if (this.hooks.editLast()) e.preventDefault();
    }
  }

  changed({ typing = true } = {}) {
    const body = this.box.value;
    this.store.setDraft(this.key, body);
    this.check();
    if (typing) this.hooks.typing(this.key, trimBody(body) !== "");
  }

  /** The counter near and over the limit; Send only for something sendable. */
  check() {
    const length = bodyLength(this.box.value);
    const left = MAX_BODY_CHARS - length;
    const over = left < 0;
    this.counter.hidden = length < SHOW_COUNTER_FROM;
    const chars = (n) => `${number(n)} character${n === 1 ? "" : "s"}`;
    text(
      this.counter,
      over
        ? `${chars(-left)} too many (the limit is ${number(MAX_BODY_CHARS)})`
        : `${chars(left)} left`,
    );
    this.counter.classList.toggle("over", over);
    attr(this.box, "aria-invalid", over ? "true" : null);
    this.button.disabled = over || this.box.disabled;
    if (over && !this.over)
      this.hooks.announce(
        `Too long: a message can have at most ${number(MAX_BODY_CHARS)} characters.`,
      );
    this.over = over;
  }

  /** Off while another window of the same user has the chat: what is
   * typed here could not go, and the draft stays as it is. */
  setEnabled(enabled) {
    this.box.disabled = !enabled;
    this.check();
  }

  submit() {
    const body = this.box.value;
    const files = this.tray?.ready || [];
    if ((!trimBody(body) && !files.length) || this.over || this.box.disabled) return;
    if (this.tray?.uploading)
      return this.hooks.announce("Not sent yet: wait until the files are uploaded.");
    if (this.tray?.failed.length)
      return this.hooks.announce("Not sent: remove the files that could not be uploaded first.");
    this.hooks.typing(this.key, false);
    this.hooks.send(this.key, body, files);
    this.value = "";
    this.tray?.clear();
  }
}
