// The chat page: protocol 1.2 over one WebSocket (docs/protocol.md), as ES
// modules with no build step. This module wires the others together:
// connection.js (the socket), store.js (what the page knows and is doing:
// its one store of state, which the other modules read), outbox.js
// (sending), messages.js, sidebar.js, composer.js, rooms.js, search.js and
// attachments.js (the view), alerts.js. It keeps no state of its own: it
// changes the store through the store's methods, then shows the result.

import { Alerts } from "./alerts.js";
import { attachmentSummary, Tray, Viewer } from "./attachments.js";
import { Composer } from "./composer.js";
import { Connection } from "./connection.js";
import { $, el, textParts } from "./dom.js";
import { bodyLength, isolate, neutralLinks, number, trimBody } from "./format.js";
import { MessageList } from "./messages.js";
import { Outbox } from "./outbox.js";
import { Search } from "./search.js";
import { Sidebar } from "./sidebar.js";
import { Rooms } from "./rooms.js";
import {
  EVERYONE,
  MAX_BODY_CHARS,
  MAX_PAGE,
  PAGE_SIZE,
  ROOM,
  roomKey,
  Saved,
  Store,
} from "./store.js";

const app = $("app");
const me = app.dataset.username;
const loginUrl = app.dataset.loginUrl;
const saved = new Saved(me);
const store = new Store(me, saved);

const conn = new Connection({
  onOpen: opened,
  onFrame: frameArrived,
  onClose: closed,
  onWaiting: waiting,
});
const alerts = new Alerts({ saved, icons: app.dataset.icons });
const sidebar = new Sidebar(store, {
  open: (key) => openConversation(key, { focus: true }),
  unblock: (name) => setBlocked(name, false),
});
const list = new MessageList({
  box: $("messages"),
  list: $("message-list"),
  pill: $("new-pill"),
  earlier: $("load-earlier"),
  empty: $("empty"),
  me,
  hooks: {
    nearTop: loadEarlier,
    atBottom: markRead,
    pending: pendingAction,
    message: messageAction,
    quote: (id) => jumpTo(store.open, id),
    react,
  },
});
const outbox = new Outbox({
  saved,
  request: (type, fields) => conn.request(type, fields),
  canSend: () => store.live,
  onChange: outboxChanged,
  onSent: sent,
});
const tray = new Tray({
  box: $("tray"),
  input: $("file-input"),
  button: $("attach"),
  dropZone: $("conversation"),
  paste: $("body"),
  hooks: {
    changed: () => composer.check(),
    announce: (t) => alerts.announce(t),
  },
});
new Viewer({ dialog: $("viewer"), list: $("message-list") });
const composer = new Composer({
  store,
  tray,
  hooks: {
    send: (key, body, files) => {
      const replying = store.replyingTo;
      outbox.add(key, body, files, replying?.key === key ? replying.quote : null);
      setReply(null);
    },
    typing,
    editLast,
    announce: (t) => alerts.announce(t),
  },
});
const rooms = new Rooms(store, {
  request: (type, fields) => conn.request(type, fields),
  open: (key) => openConversation(key, { focus: true }),
  announce: (t) => alerts.announce(t),
  created: (room) => {
    const c = store.roomCreated(room);
    sidebar.conversations();
    return c.key;
  },
  left: (c) => {
    roomGone(c);
    sidebar.conversations();
    alerts.announce(`You left ${c.name}.`);
  },
});
new Search(store, {
  request: (type, fields) => conn.request(type, fields),
  open: (key) => openConversation(key, { focus: true }),
  jump: jumpTo,
});

// --- Connection and session -------------------------------------------------------

function setStatus(state, words, detail = "") {
  const status = $("status");
  $("retry-now").hidden = true; // shown again by waiting() while a retry is due
  status.dataset.state = state;
  status.firstChild.textContent = words;
  $("status-detail").textContent = detail;
}

async function opened() {
  setStatus("connecting", "Connecting…");
  const who = await conn.request("whoami");
  if (who.type !== "ok") return;
  if (who.username) loggedIn();
  else if (store.wantTakeover) takeOver();
  else if (!store.elsewhere) location.href = loginUrl; // logged out elsewhere, or expired
}

/** Who is online, or that it is not known (disconnected or inactive). */
function showPresence() {
  sidebar.people();
  sidebar.conversations();
  sidebar.header();
}

// Closed with 1013 (try again later): the server is busy logging a crowd in
// (a restart) or cannot reach its Redis. Nothing a person need worry about:
// the page says it is connecting until it is back.
const TRY_LATER = 1013;
let busy = false;

function closed(code) {
  store.socketClosed();
  showPresence();
  outboxChanged();
  if (store.stopped) return false;
  busy = code === TRY_LATER;
  if (busy) setStatus("connecting", "Connecting…");
  else setStatus("offline", "Offline");
  return true;
}

function waiting(seconds) {
  if (busy) return;
  setStatus("offline", "Offline", ` — reconnecting in ${seconds} s`);
  $("retry-now").hidden = false;
}

/** What `unavailable` asks to wait, and up to a tenth (and a second)
 * more: pages told the same second do not all come back in it. */
function retryAfterMs(retryAfter) {
  const told = Math.max(1, retryAfter || 2);
  return (told + Math.random() * (1 + told / 10)) * 1000;
}

async function takeOver() {
  store.setTakeover(false);
  if (!conn.isOpen) {
    store.setTakeover(true);
    store.restart();
    conn.connect();
    return;
  }
  const reply = await conn.request("login", { takeover: true, presence_batch: true });
  if (reply.type === "ok") loggedIn();
  else if (reply.code === "unavailable") {
    // The server cannot complete a login just now (it is busy, or its Redis
    // is down): try again, saying no more than that it is connecting.
    setStatus("connecting", "Connecting…");
    store.setTakeover(true);
    setTimeout(takeOver, retryAfterMs(reply.retry_after));
  } else if (reply.code !== "disconnected") location.href = loginUrl;
}

async function loggedIn() {
  store.loggedIn();
  showInactive();
  conn.healthy();
  hideBanner();
  setStatus("online", "Connected");
  outbox.flush();
  outboxChanged();
  store.unloadHidden();
  await Promise.all([loadConversations(), loadRooms(), loadPeople(), loadBlocked()]);
  await refreshOpen();
}

/** Inactive, the composer is off and says how to take the chat back here,
 * rather than taking what is typed and keeping it from going. */
function showInactive() {
  composer.setEnabled(!store.inactive);
  $("inactive-note").hidden = !store.inactive;
}

function showBanner(text, action, onAction) {
  $("banner-text").textContent = text;
  const button = $("banner-action");
  button.textContent = action;
  button.onclick = () => {
    hideBanner();
    onAction();
  };
  $("banner").hidden = false;
  if (document.activeElement === document.body) button.focus();
}

function hideBanner() {
  $("banner").hidden = true;
}

function frameArrived(frame) {
  switch (frame.type) {
    case "message":
      received(frame);
      break;
    case "presence":
      presenceChanged(frame.online ? [frame.username] : [], frame.online ? [] : [frame.username]);
      break;
    case "presence_batch":
      presenceChanged(frame.online || [], frame.offline || []);
      break;
    case "typing":
      typingArrived(frame);
      break;
    case "receipt":
      receiptArrived(frame);
      break;
    case "message_edited":
      edited(frame);
      break;
    case "message_deleted":
      deleted(frame.id);
      break;
    case "room":
      roomChanged(frame);
      break;
    case "reaction":
      reactionArrived(frame);
      break;
    case "error":
      if (frame.code === "already_online" && !store.wantTakeover) {
        store.openElsewhere();
        showInactive();
        showPresence();
        showBanner("Chat is open in another window.", "Use here", takeOver);
        setStatus("offline", "Open elsewhere");
      }
      break;
    case "session_replaced":
      store.replaced();
      showInactive();
      showPresence();
      showBanner("Chat is open in another window.", "Use here", takeOver);
      setStatus("offline", "Open elsewhere");
      break;
    case "session_ended":
      sessionEnded(frame);
      break;
  }
}

/** The server ends the socket (code 4003) and says what to do next. */
function sessionEnded({ reason, action }) {
  store.ended(action);
  if (action === "reconnect") {
    // Only the connection expired: the closing socket reconnects, with backoff.
    setStatus("offline", "Reconnecting…");
    return;
  }
  setStatus("offline", "Disconnected");
  if (action === "login") {
    showBanner(reason || "Your session ended.", "Log in again", () => (location.href = loginUrl));
  } else {
    // "stop" (an administrator ended it), or a server that does not say.
    showBanner(reason || "The server ended your session.", "Reconnect", () => {
      store.restart();
      conn.connect();
    });
  }
}

// --- Conversations -----------------------------------------------------------------

async function loadConversations() {
  const reply = await conn.request("conversations");
  if (reply.type !== "ok") return;
  for (const entry of reply.conversations)
    store.listed(entry.with === null ? EVERYONE : entry.with, entry.last, entry.unread);
  sidebar.conversations();
  unreadChanged();
  markRead(); // the open one is read again if it is seen
}

/** The rooms I am a member of (protocol 1.2), beside the people. */
async function loadRooms() {
  const reply = await conn.request("rooms");
  if (reply.type !== "ok") return;
  const keys = new Set(reply.rooms.map((r) => roomKey(r.id)));
  for (const c of [...store.convs.values()]) if (c.room !== null && !keys.has(c.key)) roomGone(c); // left or removed while away
  for (const room of reply.rooms) store.roomListed(room);
  sidebar.conversations();
  sidebar.header();
  unreadChanged();
  markRead();
}

/** A `room` event: a room I am in changed, or I joined or left one. */
function roomChanged({ change, room, username }) {
  const key = roomKey(room.id);
  const gone = (change === "removed" || change === "left") && username === me;
  if (gone) {
    const c = store.convs.get(key);
    if (c) roomGone(c);
    if (change === "removed") alerts.announce(`You were removed from ${room.name}.`);
  } else if (store.roomChanged(room)) {
    alerts.announce(`You are now in the room ${room.name}.`);
  }
  sidebar.conversations();
  sidebar.header();
  unreadChanged();
  rooms.changed(key);
}

/** A room I am no longer in: it leaves the list (and the view). */
function roomGone(c) {
  store.drop(c.key);
  store.setDraft(c.key, "");
  outbox.entries.filter((e) => e.key === c.key).forEach((e) => outbox.discard(e.cid));
  if (store.open === c.key) openConversation(EVERYONE);
}

/** The latest page of a conversation; false when it cannot be had. */
async function loadLatest(c) {
  const limit = Math.min(MAX_PAGE, Math.max(PAGE_SIZE, c.unread + 10));
  const reply = await conn.request("history", { ...c.where, limit });
  if (reply.type === "ok") return store.latestPage(c, reply.messages, limit);
  if (reply.code === "unknown_user" || reply.code === "unknown_room") {
    store.drop(c.key);
    if (store.open === c.key) openConversation(EVERYONE);
    sidebar.conversations();
  }
  return null;
}

async function openConversation(key, { focus = false, reveal = focus } = {}) {
  const previous = store.current;
  const c = store.conv(key);
  // Chosen by the person: on a narrow screen the conversation replaces the list.
  if (reveal) app.classList.add("show-conversation");
  if (focus) composer.focus();
  if (previous === c && c.loaded && list.conv === c) return;
  if (previous !== c) setReply(null);
  store.setOpen(key);
  composer.setConversation(key);
  sidebar.header();
  sidebar.conversations();
  list.show(c, outbox.forKey(key));
  if (!c.loaded) {
    if (!(await loadLatest(c)) || store.open !== key) return;
    // More unread than a page: older pages too (a few at most), so that the
    // "New" divider is above the first unread, not the first loaded.
    for (let pages = 0; pages < 5 && !c.complete && c.unread > othersIn(c); pages++) {
      if (!(await loadOlder(c)) || store.open !== key) return;
    }
  }
  c.placeDivider(me);
  list.show(c, outbox.forKey(key));
  markRead();
  sidebar.conversations();
}

const othersIn = (c) => [...c.messages.values()].filter((m) => m.from !== me).length;

/** The page before the oldest message held, kept but not shown; false when
 * it cannot be had. */
async function loadOlder(c) {
  const reply = await conn.request("history", {
    with: c.peer,
    before: c.oldestId(),
    limit: MAX_PAGE,
  });
  if (reply.type !== "ok") return false;
  store.olderPage(c, reply.messages, MAX_PAGE);
  return true;
}

/** After a reconnect: what the open conversation missed, added in place. */
async function refreshOpen() {
  const c = store.current;
  if (!c.loaded) return openConversation(c.key);
  const hadMessages = c.messages.size;
  const fresh = await loadLatest(c);
  if (!fresh || store.current !== c) return;
  if (hadMessages && c.messages.size < hadMessages) list.show(c, outbox.forKey(c.key));
  else for (const m of fresh) list.add(m);
  markRead();
}

/** The page before the oldest message shown (one request at a time). */
function loadEarlier() {
  const c = store.current;
  const none = c.complete || !c.loaded || !c.messages.size || !store.live;
  if (none && !store.busy("earlier")) return Promise.resolve();
  return store.once("earlier", async () => {
    list.setLoading(true);
    const reply = await conn.request("history", {
      ...c.where,
      before: c.oldestId(),
      limit: PAGE_SIZE,
    });
    list.setLoading(false);
    if (reply.type !== "ok" || store.current !== c) return;
    list.prepend(store.olderPage(c, reply.messages, PAGE_SIZE));
  });
}

/** Open a conversation at one message (a search result), loading back to it. */
async function jumpTo(key, id) {
  await openConversation(key, { reveal: true });
  const c = store.conv(key);
  for (
    let pages = 0;
    !c.messages.has(id) && !c.complete && pages < 20 && store.current === c;
    pages++
  ) {
    await loadEarlier();
  }
  if (store.current === c && !list.jumpTo(id)) alerts.announce("That message is no longer here.");
}

function markRead() {
  const c = store.current;
  if (!store.live || document.hidden || !c.loaded || list.conv !== c || !list.atBottom()) return;
  const upTo = c.read();
  if (!upTo) return;
  conn.request("read", { ...c.where, up_to: upTo });
  sidebar.conversations();
  unreadChanged();
}

function unreadChanged() {
  alerts.unread(store.totalUnread());
}

// --- Receiving -------------------------------------------------------------------------

function ack(id) {
  store.toAck(id);
  if (!store.due("ack")) store.later("ack", 100, flushAcks);
}

function flushAcks() {
  const ids = store.takeAcks(1000);
  if (ids.length) conn.send({ type: "ack", ids });
  if (store.acks.length) store.later("ack", 100, flushAcks);
}

function received(msg) {
  ack(msg.id); // held by the page now, shown or not
  const arrived = store.received(msg);
  if (!arrived) return;
  const { c, known } = arrived;
  if (c.room !== null && !c.info) loadRooms(); // a message overtook the room's event
  const shown = c === store.current && list.conv === c && c.loaded;
  if (msg.from !== me && !known) {
    const seenNow = shown && !document.hidden && list.atBottom();
    if (!seenNow) c.unseen(msg.id, shown);
    tell(msg, c, shown);
  }
  if (shown) list.add(msg);
  markRead();
  sidebar.conversations();
  sidebar.header();
  unreadChanged();
}

function tell(msg, c, shown) {
  const said = msg.body || attachmentSummary(msg.attachments);
  const body = said.length > 200 ? `${said.slice(0, 200)}…` : said;
  const where = c.key === EVERYONE ? " to everyone" : c.room !== null ? ` in ${c.name}` : "";
  alerts.announce(
    shown ? `${msg.from}${where}: ${body}` : `New message from ${msg.from}${where}: ${body}`,
  );
  if (document.hidden || !shown) alerts.chime();
  if (document.hidden)
    alerts.notify(`${isolate(msg.from)}${where}`, isolate(neutralLinks(said)), () =>
      openConversation(c.key),
    );
}

// --- Sending ---------------------------------------------------------------------------------

function broadcastNote({ live: now, stored: later }) {
  const people = (n) => (n === 1 ? "1 person" : `${n} people`);
  if (now + later === 0) return "Nobody else is here yet.";
  if (!later) return `${people(now)} got it now.`;
  if (!now) return `Nobody is online: ${people(later)} will get it when they log in.`;
  return `${people(now)} got it now; ${later} more when they log in.`;
}

function sent(entry, reply) {
  const c = store.conv(entry.key);
  const msg = {
    id: reply.id,
    kind: entry.key === EVERYONE ? "broadcast" : c.room !== null ? "room" : "private",
    from: me,
    to: c.room !== null ? null : c.peer,
    room: c.room,
    body: trimBody(entry.body),
    sent_at: entry.at,
    edited_at: null,
    attachments: entry.attachments || [],
    reply_to: entry.replyTo || null,
    reactions: {},
  };
  if (entry.key === EVERYONE) msg.note = broadcastNote(reply);
  else msg.waiting = reply.delivered === "stored";
  store.sent(c, msg);
  if (c === store.current && list.conv === c && c.loaded) list.confirm(msg, entry.cid);
  sidebar.conversations();
}

function outboxChanged() {
  const c = store.current;
  if (list.conv === c) list.setPending(outbox.forKey(c.key));
  const note = $("outbox-note");
  const waitingOnes = outbox.entries.filter((e) => e.state !== "failed").length;
  const paused = outbox.pausedFor();
  store.cancel("outbox note");
  if (!waitingOnes) note.hidden = true;
  else if (!store.live) {
    note.hidden = false;
    note.textContent = `${waitingOnes === 1 ? "1 message goes" : `${waitingOnes} messages go`} out when you are back online.`;
  } else if (paused) {
    note.hidden = false;
    note.textContent = `You are sending fast: the next message goes in ${paused} s.`;
    store.later("outbox note", 1000, outboxChanged);
  } else note.hidden = true;
}

function pendingAction(action, cid) {
  const entry = outbox.get(cid);
  if (!entry) return;
  if (action === "retry") outbox.retry(cid);
  else if (action === "discard") outbox.discard(cid);
  else if (action === "edit") {
    outbox.discard(cid);
    openConversation(entry.key, { focus: true });
    composer.value = composer.value ? `${composer.value}\n${entry.body}` : entry.body;
    if (entry.attachments && !entry.filesGone) tray.restore(entry.attachments);
  }
}

// --- Receipts, edits and deletions (protocol 1.1) --------------------------------------

function receiptArrived(frame) {
  const changes = store.receipt(frame);
  if (changes && list.conv === changes.c) for (const m of changes.changed) list.update(m);
}

function messageAction(action, id) {
  if (action === "edit") list.startEdit(id, saveEdit);
  else if (action === "delete") list.confirmDelete(id, deleteMessage);
  else if (action === "reply") startReply(id);
  else if (action === "react") list.openPicker(id, (emoji) => react(id, emoji, true));
}

// --- Replies and reactions (protocol 1.2) ------------------------------------------------

const EXCERPT_CHARS = 100; // as the server cuts a reply's excerpt

function startReply(id) {
  const msg = store.current.messages.get(id);
  if (!msg) return;
  const excerpt = [...msg.body].slice(0, EXCERPT_CHARS).join("");
  setReply({ key: store.open, quote: { id, from: msg.from, excerpt } });
  composer.focus();
}

function setReply(reply) {
  store.setReply(reply);
  $("replying").hidden = !reply;
  if (!reply) return textParts($("replying-text"));
  const { id, from, excerpt } = reply.quote;
  const files = attachmentSummary(store.current.messages.get(id)?.attachments);
  textParts($("replying-text"), "Replying to ", from === me ? "yourself" : [from], ": ", [
    (excerpt || files || "(no text)").replace(/\s+/g, " "),
  ]);
  alerts.announce(`Replying to ${from === me ? "yourself" : from}. Escape cancels.`);
}

async function react(id, emoji, on) {
  const reply = await conn.request("react", { id, emoji, on });
  if (reply.type === "ok") return; // the reaction event (to me too) shows it
  showProblem(
    reply.code === "disconnected"
      ? "Not done: you are offline."
      : reply.code === "invalid"
        ? "A reaction is 1 to 32 characters, with no spaces."
        : reply.message,
  );
}

function reactionArrived(frame) {
  const { id, emoji, by, on } = frame;
  const changed = store.reacted(frame);
  if (!changed) return; // not loaded: history has it when it is
  const { c, msg } = changed;
  if (list.conv === c) list.update(c.messages.get(id));
  if (on && by !== me && msg.from === me)
    alerts.announce(`${by} reacted ${emoji} to your message.`);
}

/** Up in an empty text box edits one's last message here. */
function editLast() {
  const c = store.current;
  const mine = c.sorted().filter((m) => m.from === me);
  if (!mine.length || list.conv !== c) return false;
  list.startEdit(mine[mine.length - 1].id, saveEdit);
  return true;
}

async function saveEdit(id, body) {
  const trimmed = trimBody(body);
  if (!trimmed) return "A message cannot be empty: delete it instead.";
  if (bodyLength(body) > MAX_BODY_CHARS)
    return `Too long: at most ${number(MAX_BODY_CHARS)} characters.`;
  if (store.find(id)?.messages.get(id)?.body === trimmed) return null;
  const reply = await conn.request("edit", { id, body });
  if (reply.type !== "ok") {
    return reply.code === "disconnected"
      ? "Not saved: you are offline."
      : `Not saved: ${reply.message}`;
  }
  edited({ id, body: trimmed, edited_at: reply.edited_at });
  return null;
}

function edited(edit) {
  const c = store.edited(edit);
  if (!c) return;
  if (list.conv === c) list.update(c.messages.get(edit.id));
  sidebar.conversations();
}

async function deleteMessage(id) {
  const reply = await conn.request("delete", { id });
  if (reply.type !== "ok" && reply.code !== "unknown_message") {
    return reply.code === "disconnected"
      ? "Not deleted: you are offline."
      : `Not deleted: ${reply.message}`;
  }
  deleted(id);
  return null;
}

function deleted(id) {
  const c = store.removed(id);
  if (!c) return;
  if (list.conv === c) list.remove(id);
  sidebar.conversations();
  unreadChanged();
}

// --- Typing ---------------------------------------------------------------------------------

const TYPING_IDLE_MS = 5000;
const PEOPLE_RESYNC_MS = 10 * 60 * 1000; // online and recent again, in case a presence frame was lost
const TYPING_SHOWN_MS = 6000;

function typing(key, active) {
  if (!store.supports.typing || !store.live || key === EVERYONE || key === null) return;
  store.cancel("typing idle");
  if (store.myTyping(key, active, Date.now())) signalTyping(key, active);
  if (active) store.later("typing idle", TYPING_IDLE_MS, () => typing(key, false));
}

async function signalTyping(key, active) {
  const where = key.startsWith(ROOM) ? { room: store.conv(key).room } : { to: key };
  const reply = await conn.request("typing", { ...where, typing: active });
  if (reply.code === "bad_request") store.unsupported("typing"); // a 1.0 server
}

function typingArrived({ from, room = null, typing: active }) {
  const key = room === null ? from : roomKey(room);
  const timer = `typing ${key} ${from}`;
  store.cancel(timer);
  store.setTyping(key, from, active ? Date.now() + TYPING_SHOWN_MS : null);
  if (active)
    store.later(timer, TYPING_SHOWN_MS, () => typingArrived({ from, room, typing: false }));
  sidebar.conversations();
  if (store.open === key) sidebar.header();
}

// --- People --------------------------------------------------------------------------------

async function loadPeople() {
  const [online, recent] = await Promise.all([conn.request("online"), conn.request("recent")]);
  store.setPeople(
    online.type === "ok" ? online.users : null,
    recent.type === "ok" ? recent.users : null,
  );
  sidebar.people();
  sidebar.conversations();
  sidebar.header();
}

async function loadBlocked() {
  const reply = await conn.request("blocked");
  if (reply.type === "ok") store.setBlocked(reply.users);
  sidebar.blocked();
  sidebar.header();
}

function presenceChanged(online, offline) {
  store.presence(online, offline);
  sidebar.people();
  sidebar.conversations();
  sidebar.header();
  rooms.presence();
}

async function setBlocked(name, block) {
  const reply = await conn.request(block ? "block" : "unblock", { username: name });
  if (reply.type === "ok" || reply.code === "already_blocked" || reply.code === "not_blocked") {
    store.block(name, block);
  } else {
    showProblem(reply.code === "disconnected" ? "Not done: you are offline." : reply.message);
  }
  sidebar.blocked();
  sidebar.header();
}

function showProblem(text) {
  const problem = $("problem");
  problem.textContent = text;
  problem.hidden = false;
  store.later("problem", 8000, () => (problem.hidden = true));
}

// --- Wiring ----------------------------------------------------------------------------------

function wire() {
  for (const input of document.querySelectorAll("input[list=known-users]")) {
    for (const event of ["input", "focus"])
      input.addEventListener(event, () => sidebar.suggestFor(input));
  }
  $("new-chat").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("new-chat-name");
    const name = input.value.trim();
    const error = $("new-chat-error");
    error.hidden = true;
    if (!name) return;
    const fail = (text) => {
      error.textContent = text;
      error.hidden = false;
      input.setAttribute("aria-invalid", "true");
    };
    if (name === me) return fail("That is you.");
    if (store.inactive) return fail("Chat is open in another window: use it here first.");
    const reply = await conn.request("history", { with: name, limit: 1 });
    if (reply.type !== "ok") {
      return fail(
        reply.code === "unknown_user"
          ? `There is no user called ${name}.`
          : reply.code === "disconnected"
            ? "You are offline."
            : reply.message,
      );
    }
    input.removeAttribute("aria-invalid");
    input.value = "";
    openConversation(name, { focus: true });
  });
  $("block-toggle").addEventListener("click", () =>
    setBlocked(store.open, !store.blocked.includes(store.open)),
  );
  $("load-earlier").addEventListener("click", loadEarlier);
  $("reply-cancel").addEventListener("click", () => {
    setReply(null);
    composer.focus();
  });
  $("body").addEventListener("keydown", (e) => {
    if (e.key === "Escape" && store.replyingTo) {
      e.preventDefault();
      setReply(null);
    }
  });
  $("inactive-use-here").addEventListener("click", () => {
    hideBanner();
    takeOver();
  });
  // Closing a window whose messages cannot go from it: say so first.
  addEventListener("beforeunload", (e) => {
    if (store.inactive && outbox.entries.length) e.preventDefault();
  });
  $("retry-now").addEventListener("click", () => {
    setStatus("connecting", "Connecting…");
    conn.retryNow();
  });
  const back = () => {
    app.classList.remove("show-conversation");
    $("conversations").querySelector("[aria-current=true]")?.focus();
  };
  $("back").addEventListener("click", back);
  $("notice-close")?.addEventListener("click", () => $("notice").remove());
  $("logout-form").addEventListener("submit", (e) => {
    const unsent = outbox.entries.length;
    if (
      unsent &&
      !confirm(`${unsent} message(s) are not sent yet and will be lost. Log out anyway?`)
    ) {
      e.preventDefault();
      return;
    }
    saved.clear(); // drafts and outbox stay on this computer otherwise
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) {
      markRead();
      if (!store.live && !store.stopped) conn.retryNow();
    }
  });
  setInterval(() => {
    sidebar.people();
    sidebar.header();
  }, 30000);
  // Not more often: each list is everyone online (700 KB at 10,000).
  setInterval(() => {
    if (store.live) loadPeople();
  }, PEOPLE_RESYNC_MS);
}

wire();
sidebar.render();
sidebar.header();
composer.setConversation(store.open);
list.show(store.current, outbox.forKey(store.open));
unreadChanged();
conn.connect();
