// Messages on their way: typed while offline, rate-limited, or not yet
// answered. Kept in localStorage, so a reload or another tab of the same
// user sends them; each carries a client_id, so a resend after a lost reply
// is stored once (protocol 1.1).

import { EVERYONE, ROOM } from "./store.js";

// Errors that end by themselves: the entry waits and goes again.
const WAIT_FOR_LOGIN = new Set(["disconnected", "not_logged_in"]);
// Errors a later try can fix, offered as Retry.
const RETRY_BY_HAND = new Set(["internal_error"]);

const EXPLAIN = {
  blocked: (name) => `Not delivered: ${name} does not accept your messages.`,
  unknown_user: (name) => `Not sent: there is no user called ${name}.`,
  unknown_room: () => "Not sent: you are no longer in this room.",
  unknown_message: () => "Not sent: the message it replies to is gone.",
  internal_error: () => "Not sent: the server failed to take it.",
};

function newClientId() {
  // crypto.randomUUID needs a secure context; a LAN address over http is not.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export class Outbox {
  /**
   * request(type, fields): a protocol request; canSend(): logged in now;
   * onChange(): entries or their states changed; onSent(entry, reply).
   */
  constructor({ saved, request, canSend, onChange, onSent }) {
    Object.assign(this, { saved, request, canSend, onChange, onSent });
    this.entries = saved
      .get("outbox", [])
      .map((e) => ({ ...e, state: e.state === "failed" ? "failed" : "queued" }));
    this.flushing = false;
    this.sending = null; // client_id of the entry in flight
    this.pausedUntil = 0;
    this.timer = null;
    addEventListener("storage", (e) => {
      if (e.key === saved.key("outbox")) this.reload();
    });
  }

  save() {
    this.saved.set(
      "outbox",
      this.entries.map(({ state, ...e }) => ({
        ...e,
        state: state === "failed" ? "failed" : "queued",
      })),
    );
  }

  /** Another tab changed the outbox: what it sent is shown here as sent. */
  reload() {
    const before = this.entries;
    this.entries = this.saved
      .get("outbox", [])
      .map((e) => (e.cid === this.sending ? { ...e, state: "sending" } : e));
    const sentLog = new Map(this.saved.get("sent", []).map((s) => [s.cid, s.reply]));
    for (const entry of before) {
      if (sentLog.has(entry.cid) && !this.get(entry.cid))
        this.onSent(entry, sentLog.get(entry.cid));
    }
    this.onChange();
    this.flush();
  }

  forKey(key) {
    return this.entries.filter((e) => e.key === key);
  }

  get(cid) {
    return this.entries.find((e) => e.cid === cid);
  }

  /** attachments: objects of files uploaded already (their ids are what is
   * sent; kept with the entry, they survive a reload like the text);
   * replyTo: null, or the {id, from, excerpt} of the message it answers. */
  add(key, body, attachments = [], replyTo = null) {
    const entry = { cid: newClientId(), key, body, at: new Date().toISOString(), state: "queued" };
    if (attachments.length) entry.attachments = attachments;
    if (replyTo) entry.replyTo = replyTo;
    this.entries.push(entry);
    this.save();
    this.onChange();
    this.flush();
    return entry;
  }

  discard(cid) {
    this.entries = this.entries.filter((e) => e.cid !== cid);
    this.save();
    this.onChange();
  }

  retry(cid) {
    const entry = this.get(cid);
    if (!entry) return;
    entry.state = "queued";
    delete entry.error;
    delete entry.code;
    this.save();
    this.onChange();
    this.flush();
  }

  /** Whole seconds until a rate-limited outbox tries again (0: not paused). */
  pausedFor() {
    return Math.max(0, Math.ceil((this.pausedUntil - Date.now()) / 1000));
  }

  /** Send what is queued, oldest first, one at a time. */
  async flush() {
    if (this.flushing) return;
    this.flushing = true;
    try {
      for (;;) {
        const entry = this.entries.find((e) => e.state === "queued");
        if (!entry || !this.canSend()) break;
        if (this.pausedFor() > 0) {
          clearTimeout(this.timer);
          this.timer = setTimeout(() => this.flush(), this.pausedUntil - Date.now());
          break;
        }
        if (!(await this.sendOne(entry))) break;
      }
    } finally {
      this.flushing = false;
    }
  }

  /** False when sending must wait for the next login. */
  async sendOne(entry) {
    entry.state = "sending";
    this.sending = entry.cid;
    this.onChange();
    const fields = { body: entry.body, client_id: entry.cid };
    if (entry.attachments?.length) fields.attachments = entry.attachments.map((a) => a.id);
    if (entry.replyTo) fields.reply_to = entry.replyTo.id;
    const reply =
      entry.key === EVERYONE
        ? await this.request("broadcast", fields)
        : entry.key.startsWith(ROOM)
          ? await this.request("send", { ...fields, room: Number(entry.key.slice(ROOM.length)) })
          : await this.request("send", { ...fields, to: entry.key });
    this.sending = null;
    if (reply.type === "ok") {
      this.entries = this.entries.filter((e) => e.cid !== entry.cid);
      // For the user's other tabs, which showed it as queued (see reload).
      const { type, ref, ...result } = reply;
      this.saved.set("sent", [
        ...this.saved.get("sent", []).slice(-19),
        { cid: entry.cid, reply: result },
      ]);
      this.save();
      this.onSent(entry, reply);
      this.onChange();
      return true;
    }
    // Another tab may have rewritten the list meanwhile (or discarded it).
    entry = this.get(entry.cid);
    if (!entry) return true;
    if (reply.code === "rate_limited") {
      entry.state = "queued";
      this.pausedUntil = Date.now() + (reply.retry_after || 1) * 1000;
    } else if (WAIT_FOR_LOGIN.has(reply.code)) {
      entry.state = "queued";
      this.save();
      this.onChange();
      return false;
    } else {
      entry.state = "failed";
      entry.code = reply.code;
      const name = entry.key === EVERYONE || entry.key.startsWith(ROOM) ? "everyone" : entry.key;
      entry.error = EXPLAIN[reply.code]?.(name) || `Not sent: ${reply.message || reply.code}`;
      // An upload not sent within a day is removed by the server: the
      // file must be chosen again.
      entry.filesGone = reply.code === "invalid" && /attachment/i.test(reply.message || "");
      if (entry.filesGone)
        entry.error =
          "Not sent: a file of it is no longer on the server (uploads wait a day at most). Choose the file again.";
      entry.retry = RETRY_BY_HAND.has(reply.code);
    }
    this.save();
    this.onChange();
    return true;
  }
}
