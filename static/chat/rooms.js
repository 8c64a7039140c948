// Rooms (protocol 1.2): the "New room" dialog and a room's member panel.
// Admins add, remove, promote and demote members and rename the room; every
// member sees who is in it and can leave. What the server answers is what
// is shown: `room` events (chat.js) keep the list and the panel current.

import { $, attr, el, reconcile, text, textParts } from "./dom.js";

const EXPLAIN = {
  forbidden: "Only the room's admins can do that.",
  room_full: "The room is full.",
  unknown_room: "You are no longer in this room.",
  disconnected: "Not done: you are offline.",
};

function problemText(reply) {
  return EXPLAIN[reply.code] || reply.message || reply.code;
}

export class Rooms {
  /** actions: request(type, fields), open(key), announce(text),
   * created(room) -> its conversation key, left(conversation) */
  constructor(store, actions) {
    this.store = store;
    this.actions = actions;
    this.picked = [];
    this.members = [];
    this.key = null; // the room whose panel is open
    this.createDialog = $("room-create");
    this.panel = $("room-panel");
    $("room-new").addEventListener("click", () => this.startCreate());
    $("room-create-cancel").addEventListener("click", () => this.createDialog.close());
    $("room-member-add").addEventListener("click", () => this.pick());
    $("room-member").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.isComposing) {
        e.preventDefault();
        if ($("room-member").value.trim()) this.pick();
        else $("room-create-form").requestSubmit();
      }
    });
    $("room-create-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.create();
    });
    $("members-open").addEventListener("click", () => this.openPanel(this.store.open));
    $("room-panel-close").addEventListener("click", () => this.panel.close());
    $("room-rename").addEventListener("submit", (e) => {
      e.preventDefault();
      this.rename();
    });
    $("room-add").addEventListener("submit", (e) => {
      e.preventDefault();
      this.add();
    });
    $("room-leave").addEventListener("click", () => this.leave());
    this.panel.addEventListener("close", () => {
      this.key = null;
      const back = $("members-open");
      (back.hidden ? $("body") : back).focus();
    });
    for (const dialog of [this.createDialog, this.panel])
      dialog.addEventListener("click", (e) => {
        if (e.target === dialog) dialog.close(); // the backdrop
      });
  }

  // --- Creating a room ----------------------------------------------------------------

  startCreate() {
    this.picked = [];
    $("room-name").value = "";
    $("room-member").value = "";
    this.error("room-create-error", null);
    this.showPicked();
    this.createDialog.showModal();
    $("room-name").focus();
  }

  pick() {
    const input = $("room-member");
    const name = input.value.trim();
    if (!name) return input.focus();
    if (name === this.store.me) this.error("room-create-error", "You are in it already.");
    else if (!this.picked.includes(name)) this.picked.push(name);
    input.value = "";
    this.showPicked();
    input.focus();
  }

  showPicked() {
    reconcile($("room-picked"), this.picked, {
      key: (name) => name,
      create: (name) =>
        el(
          "li",
          { class: "chip" },
          el("bdi", { text: name }),
          el("button", {
            type: "button",
            class: "icon-button",
            text: "×",
            "aria-label": `Remove ${name}`,
            title: `Remove ${name}`,
            onclick: () => {
              this.picked = this.picked.filter((n) => n !== name);
              this.showPicked();
            },
          }),
        ),
      update: () => {},
      fallback: () => $("room-member"),
    });
  }

  async create() {
    const name = $("room-name").value.trim();
    if ($("room-member").value.trim()) this.pick();
    if (!name) {
      attr($("room-name"), "aria-invalid", "true");
      $("room-name").focus();
      return this.error("room-create-error", "A room needs a name.");
    }
    attr($("room-name"), "aria-invalid", null);
    const reply = await this.actions.request("room_create", { name, members: this.picked });
    if (reply.type !== "ok") return this.error("room-create-error", problemText(reply));
    this.createDialog.close();
    const key = this.actions.created(reply.room);
    if (reply.refused.length)
      this.actions.announce(`Not added (they do not accept you): ${reply.refused.join(", ")}.`);
    this.actions.open(key);
  }

  // --- A room's members -------------------------------------------------------------

  async openPanel(key) {
    const c = this.store.convs.get(key);
    if (!c || c.room === null) return;
    this.key = key;
    this.members = [];
    this.error("room-panel-error", null);
    this.showPanel();
    if (!this.panel.open) this.panel.showModal();
    await this.loadMembers();
    if (this.key === key && c.info?.admin) $("room-add-name").focus();
  }

  /** A `room` event about `key`, or the room list changed: refresh the panel. */
  changed(key) {
    if (this.key !== key || !this.panel.open) return;
    if (!this.store.convs.has(key)) return this.panel.close();
    this.showPanel();
    this.loadMembers();
  }

  /** Someone came online or left: the panel's dots follow. */
  presence() {
    if (this.key && this.panel.open) this.showPanel();
  }

  async loadMembers() {
    const key = this.key;
    const c = this.store.convs.get(key);
    const reply = await this.actions.request("room_members", { room: c.room });
    if (this.key !== key) return;
    if (reply.type !== "ok") return this.error("room-panel-error", problemText(reply));
    this.members = reply.members;
    this.showPanel();
  }

  showPanel() {
    const c = this.store.convs.get(this.key);
    if (!c) return;
    const admin = Boolean(c.info?.admin);
    const count = c.info?.member_count;
    textParts(
      $("room-panel-title"),
      [c.name],
      `: ${count === 1 ? "1 member" : `${count} members`}`,
    );
    for (const form of this.panel.querySelectorAll(".admin-only")) form.hidden = !admin;
    const rename = $("room-rename-name");
    if (document.activeElement !== rename) rename.value = c.name;
    const me = this.store.me;
    reconcile($("room-members"), this.members, {
      key: (m) => m.username,
      create: (m) =>
        el(
          "li",
          { class: "member" },
          el("span", { class: "dot", "aria-hidden": "true" }),
          el("bdi", { class: "conv-name", text: m.username }),
          el("span", { class: "visually-hidden member-online" }),
          el("span", { class: "member-tags small-text" }),
          el("span", { class: "member-actions" }),
        ),
      update: (li, m) => {
        const online = m.username === me || this.store.online.has(m.username);
        li.querySelector(".dot").className = "dot" + (online ? " on" : "");
        text(li.querySelector(".member-online"), online ? " (online)" : "");
        const tags = [m.username === me ? "you" : null, m.admin ? "admin" : null];
        text(li.querySelector(".member-tags"), tags.filter(Boolean).join(", "));
        const box = li.querySelector(".member-actions");
        const key = `${admin}|${m.admin}`;
        if (box.dataset.key === key) return;
        box.dataset.key = key;
        const hadFocus = box.contains(document.activeElement);
        box.replaceChildren(
          ...(admin && m.username !== me
            ? [
                el("button", {
                  type: "button",
                  class: "secondary small",
                  text: m.admin ? "Remove admin" : "Make admin",
                  "aria-label": `${m.admin ? "Remove admin rights of" : "Make admin:"} ${m.username}`,
                  onclick: () => this.setAdmin(m.username, !m.admin),
                }),
                el("button", {
                  type: "button",
                  class: "secondary small",
                  text: "Remove",
                  "aria-label": `Remove ${m.username} from the room`,
                  onclick: () => this.remove(m.username),
                }),
              ]
            : []),
        );
        if (hadFocus) (box.querySelector("button") || li.closest("dialog")).focus();
      },
      fallback: () => ($("room-add-name").checkVisibility() ? $("room-add-name") : $("room-leave")),
    });
  }

  async act(type, fields) {
    const c = this.store.convs.get(this.key);
    if (!c) return null;
    this.error("room-panel-error", null);
    const reply = await this.actions.request(type, { room: c.room, ...fields });
    if (reply.type !== "ok") {
      this.error("room-panel-error", problemText(reply));
      return null;
    }
    return reply;
  }

  async add() {
    const input = $("room-add-name");
    const name = input.value.trim();
    if (!name) return;
    const reply = await this.act("room_add", { usernames: [name] });
    if (!reply) return;
    input.value = "";
    if (reply.refused.length) this.error("room-panel-error", `${name} does not accept you.`);
    else if (!reply.added.length) this.error("room-panel-error", `${name} is in the room already.`);
    else this.actions.announce(`${name} added.`);
    this.loadMembers();
  }

  async remove(name) {
    if (await this.act("room_remove", { username: name })) {
      this.actions.announce(`${name} removed.`);
      this.loadMembers();
    }
  }

  async setAdmin(name, admin) {
    if (await this.act("room_admin", { username: name, admin })) {
      this.actions.announce(admin ? `${name} is an admin now.` : `${name} is no longer an admin.`);
      this.loadMembers();
    }
  }

  async rename() {
    const name = $("room-rename-name").value.trim();
    if (!name) return this.error("room-panel-error", "A room needs a name.");
    if (await this.act("room_rename", { name })) this.actions.announce(`Renamed to ${name}.`);
  }

  async leave() {
    const c = this.store.convs.get(this.key);
    if (!c || !confirm(`Leave ${c.name}? You will no longer get its messages.`)) return;
    if (await this.act("room_leave", {})) {
      this.panel.close();
      this.actions.left(c);
    }
  }

  error(id, message) {
    const p = $(id);
    p.hidden = !message;
    text(p, message || "");
  }
}
