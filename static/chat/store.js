// What the page knows, in one place: conversations and their messages,
// people, the state of the connection and the session, what the page is in
// the middle of (a reply being written, acks and timers due), and what it
// keeps in localStorage (outbox, drafts, settings). The other modules read
// the store and change it through its methods; no module keeps state of
// its own at module level. No DOM here.

export const EVERYONE = "*"; // the conversation key of the broadcasts
export const PAGE_SIZE = 50; // history messages per request
export const MAX_PAGE = 100; // the protocol's largest history limit
export const MAX_BODY_CHARS = 4000; // the protocol's longest body, in characters
export const ROOM = "#"; // a room's conversation key is ROOM + its id (no username has "#")

/** The conversation key of room `id`. */
export const roomKey = (id) => ROOM + id;

const RECENT_MS = 3600 * 1000; // `recent` lists who was seen in the last hour
// localeCompare's order, without building a collator for each of the
// thousands of comparisons a list of everyone online takes.
const byName = new Intl.Collator();
const TYPING_REPEAT_MS = 3000; // while I type, the other side is told again this often

// How the conversation list sorts one with no messages yet (`touched`):
const OPENED = Number.MAX_SAFE_INTEGER; // opened by hand: first
const NEW_ROOM = Number.MAX_SAFE_INTEGER - 1; // a room I was just added to: next

export class Conversation {
  constructor(key) {
    this.key = key;
    this.name = key === EVERYONE ? "Everyone" : key;
    this.room = key.startsWith(ROOM) ? Number(key.slice(ROOM.length)) : null; // a room's id
    this.info = null; // a room's room object (protocol 1.2)
    this.messages = new Map(); // id -> message object
    this.last = null; // the newest message known (for the list)
    this.unread = 0;
    this.loaded = false; // its latest page of history is here
    this.complete = false; // no older history to load
    this.firstUnread = null; // id the unread divider goes before, while open
    this.readUpTo = 0;
    this.listedUpTo = 0; // the last id the conversation list counted in `unread`
    this.touched = 0; // opened by hand with no message yet: sorts it first
  }

  /** The `with` of requests about this conversation. */
  get peer() {
    return this.key === EVERYONE ? null : this.key;
  }

  /** The fields naming this conversation in history, read and search. */
  get where() {
    return this.room === null ? { with: this.peer } : { room: this.room };
  }

  /** Keep a room's room object (its name, members, whether I am an admin). */
  setInfo(room) {
    this.info = room;
    this.name = room.name;
  }

  get lastId() {
    return this.last ? this.last.id : 0;
  }

  oldestId() {
    let oldest = Infinity;
    for (const id of this.messages.keys()) oldest = Math.min(oldest, id);
    return oldest;
  }

  sorted() {
    return [...this.messages.values()].sort((a, b) => a.id - b.id);
  }

  /** Keep a message (merged with what we knew of it); true when new. */
  add(msg) {
    const known = this.messages.get(msg.id);
    const merged = { ...known, ...msg };
    this.messages.set(msg.id, merged);
    if (!this.last || msg.id >= this.last.id) this.last = merged;
    return !known;
  }

  remove(id) {
    this.messages.delete(id);
    if (this.last && this.last.id === id) {
      const rest = this.sorted();
      this.last = rest.length ? rest[rest.length - 1] : null;
    }
  }

  /** Where the divider goes when `unread` messages to me are unread. */
  findFirstUnread(me) {
    if (!this.unread) return null;
    let left = this.unread;
    const list = this.sorted();
    for (let i = list.length - 1; i >= 0; i--) {
      if (list[i].from !== me && --left === 0) return list[i].id;
    }
    return list.length ? list[0].id : null;
  }

  /** Its last message and unread count, as a list reply has them; `me`'s
   * messages do not count. Messages pushed since the reply are counted
   * here (the count is as of the reply). */
  listed(last, unread, me) {
    let newer = 0;
    const lastId = last ? last.id : 0;
    for (const m of this.messages.values())
      if (m.id > lastId && m.from !== me && m.id > this.readUpTo) newer += 1;
    this.unread = unread + newer; // the open one is marked read again if it is seen
    this.listedUpTo = lastId;
    if (last) this.add(last);
  }

  /** Forget the messages held: they load again when it is opened. */
  unload() {
    this.loaded = false;
    this.complete = false;
    this.messages.clear();
  }

  /** A message arrived that I have not seen: counted, and the divider
   * goes before it if the conversation is shown without one. */
  unseen(id, shown) {
    this.unread += 1;
    if (shown && this.firstUnread === null) this.firstUnread = id;
  }

  /** Read up to its last message: that id, or 0 when nothing changed. */
  read() {
    const upTo = this.lastId;
    if (!upTo || (upTo <= this.readUpTo && !this.unread)) return 0;
    this.unread = 0;
    this.readUpTo = upTo;
    return upTo;
  }

  /** The unread divider: before the first unread message to `me`, or none. */
  placeDivider(me) {
    this.firstUnread = this.findFirstUnread(me);
  }
}

export class Store {
  /** saved: where drafts are kept (Saved, below). */
  constructor(me, saved) {
    this.me = me;
    this.saved = saved;
    this.convs = new Map();
    this.open = EVERYONE;
    this.online = new Set();
    // False while disconnected: who is online is then not known, and the
    // page must not claim anyone is.
    this.presenceKnown = false;
    this.recent = new Map(); // username -> {username, online, last_seen}
    // The server's clock minus this browser's, in ms: `recent`'s times are
    // the server's, and a browser's clock may be minutes off.
    this.skew = 0;
    this.blocked = [];
    this.seen = new Set(); // message ids already shown
    this.deleted = new Set(); // ids deleted while the page was open
    this.typing = new Map(); // username -> time their "typing" expires
    this.roomTyping = new Map(); // room key -> Map(username -> time it expires)
    this.drafts = saved.get("drafts", {}); // conversation key -> what is typed there, not sent
    this.conv(EVERYONE);
    for (const key of Object.keys(this.drafts)) this.conv(key); // listed, with their drafts

    // The connection and the session (changed by the methods below).
    this.live = false; // logged in on the current socket
    this.stopped = false; // replaced or ended: no reconnecting by itself
    this.elsewhere = false; // this socket was told the user is online elsewhere
    this.wantTakeover = false; // take the session over once the socket is open
    this.inactive = false; // another window of this user has the chat
    this.supports = { typing: true }; // switched off when the server refuses an op

    // What the page is in the middle of.
    this.replyingTo = null; // {key, quote: {id, from, excerpt}} while the composer answers one
    this.typingTo = null; // the conversation told that I type
    this.typingAt = 0; // when it was told
    this.acks = []; // ids of messages received, to ack
    this.timers = new Map(); // name -> the timeout due under it (later())
    this.tasks = new Map(); // name -> the promise of work on its way (once())
  }

  conv(key) {
    if (!this.convs.has(key)) this.convs.set(key, new Conversation(key));
    return this.convs.get(key);
  }

  get current() {
    return this.conv(this.open);
  }

  keyOf(msg) {
    if (msg.kind === "broadcast") return EVERYONE;
    if (msg.kind === "room" || msg.room) return roomKey(msg.room);
    return msg.from === this.me ? msg.to : msg.from;
  }

  /** Which conversation holds message `id`, if any is loaded. */
  find(id) {
    for (const c of this.convs.values()) if (c.messages.has(id)) return c;
    return null;
  }

  totalUnread() {
    let n = 0;
    for (const c of this.convs.values()) n += c.unread;
    return n;
  }

  /** Conversations for the list: Everyone, then the latest first. */
  conversations() {
    const rank = (c) => Math.max(c.lastId, c.touched);
    return [...this.convs.values()].sort((a, b) =>
      a.key === EVERYONE ? -1 : b.key === EVERYONE ? 1 : rank(b) - rank(a),
    );
  }

  isOnline(name) {
    return this.presenceKnown && this.online.has(name);
  }

  /** Who is online, and who was in the last hour (`recent`'s rule): kept
   * right by presence frames alone, so no list is fetched again for each
   * change (at 10,000 online each `recent` is about 700 KB). */
  people(now = this.serverNow()) {
    const names = new Set(this.online);
    for (const [name, u] of this.recent) {
      if (now - Date.parse(u.last_seen) < RECENT_MS) names.add(name);
    }
    names.delete(this.me);
    return [...names]
      .map((username) => ({
        username,
        online: this.isOnline(username),
        lastSeen: this.recent.get(username)?.last_seen,
      }))
      .sort((a, b) => b.online - a.online || byName.compare(a.username, b.username));
  }

  knownNames() {
    return [...this.knownSet()].sort();
  }

  /** At most `limit` known names that start with `prefix`, in any case, in
   * the people list's order (online first, then by name): what the name
   * boxes suggest, a few at a time, since thousands of suggestions would be
   * built again at every presence batch of a login storm. */
  suggestedNames(prefix, limit) {
    const start = prefix.toLowerCase();
    const names = [];
    for (const n of this.knownSet()) if (n.toLowerCase().startsWith(start)) names.push(n);
    return names
      .sort((a, b) => this.isOnline(b) - this.isOnline(a) || byName.compare(a, b))
      .slice(0, limit);
  }

  /** Everyone the page knows of but me: online, recent, or a conversation. */
  knownSet() {
    const names = new Set([...this.online, ...this.recent.keys(), ...this.convs.keys()]);
    names.delete(EVERYONE);
    names.delete(this.me);
    for (const n of names) if (n.startsWith(ROOM)) names.delete(n);
    return names;
  }

  isTyping(name) {
    return (this.typing.get(name) || 0) > Date.now();
  }

  /** Who is typing in a room now, by name. */
  typingIn(key) {
    const now = Date.now();
    return [...(this.roomTyping.get(key) || new Map())]
      .filter(([, until]) => until > now)
      .map(([name]) => name)
      .sort();
  }

  // --- The connection and the session ------------------------------------------------

  /** Logged in on the current socket. */
  loggedIn() {
    this.live = true;
    this.stopped = false;
    this.elsewhere = false;
    this.inactive = false;
  }

  /** The socket closed: who is online is not known any more. */
  socketClosed() {
    this.live = false;
    this.elsewhere = false;
    this.presenceKnown = false;
  }

  /** This socket was told the user is online in another window. */
  openElsewhere() {
    this.elsewhere = true;
    this.inactive = true;
    this.presenceKnown = false;
  }

  /** Another window took the session: no reconnecting by itself. */
  replaced() {
    this.stopped = true;
    this.live = false;
    this.inactive = true;
    this.presenceKnown = false;
  }

  /** The server ends the session; with "reconnect", only the socket. */
  ended(action) {
    this.live = false;
    if (action !== "reconnect") this.stopped = true;
  }

  /** Reconnecting by hand after it stopped. */
  restart() {
    this.stopped = false;
  }

  /** Take the session over (from another window) once the socket is open. */
  setTakeover(want) {
    this.wantTakeover = want;
  }

  /** The server refused an op it does not know (an older server). */
  unsupported(op) {
    this.supports[op] = false;
  }

  // --- Conversations -------------------------------------------------------------------

  /** After a login: what the conversations not open missed while offline
   * (one's own messages from elsewhere, edits, deletions) is not pushed,
   * so they load again when opened. */
  unloadHidden() {
    for (const c of this.convs.values()) if (c !== this.current && c.loaded) c.unload();
  }

  /** A conversation of a `conversations` or `rooms` reply. */
  listed(key, last, unread) {
    const c = this.conv(key);
    c.listed(last, unread, this.me);
    return c;
  }

  /** A room I am in, as a `rooms` reply has it. */
  roomListed(room) {
    const c = this.conv(roomKey(room.id));
    c.setInfo(room);
    c.listed(room.last, room.unread, this.me);
    return c;
  }

  /** A room I just created: at the top of the list. */
  roomCreated(room) {
    const c = this.conv(roomKey(room.id));
    c.setInfo(room);
    c.touched = NEW_ROOM;
    return c;
  }

  /** A room I am in changed (a `room` event); true when it is new to me. */
  roomChanged(room) {
    const isNew = !this.convs.has(roomKey(room.id));
    const c = this.conv(roomKey(room.id));
    c.setInfo(room);
    if (isNew) {
      if (room.last) c.listed(room.last, room.unread, this.me);
      c.touched = NEW_ROOM; // a new room goes to the top of the list
    }
    return isNew;
  }

  /** A conversation that is gone (a room I left, a user who is not). */
  drop(key) {
    this.convs.delete(key);
  }

  /** Show conversation `key` from now on. */
  setOpen(key) {
    const c = this.conv(key);
    if (this.current !== c) this.current.firstUnread = null;
    this.open = key;
    if (!c.lastId && key !== EVERYONE) c.touched = OPENED;
    return c;
  }

  /** The latest page of `c`'s history (`limit` asked); the messages not
   * seen before. */
  latestPage(c, messages, limit) {
    const known = messages.some((m) => c.messages.has(m.id) && this.seen.has(m.id));
    if (c.loaded && !known && messages.length === limit) {
      // A gap between what we had and this page: start again from it.
      c.messages.clear();
      c.complete = false;
    }
    const fresh = messages.filter((m) => !this.seen.has(m.id));
    for (const m of messages) {
      this.seen.add(m.id);
      c.add(m);
    }
    if (!c.loaded) c.complete = messages.length < limit;
    c.loaded = true;
    return fresh;
  }

  /** A page of `c`'s history before what it holds (`limit` asked); the
   * messages it adds (not those deleted meanwhile). */
  olderPage(c, messages, limit) {
    const older = messages.filter((m) => !c.messages.has(m.id) && !this.deleted.has(m.id));
    for (const m of older) {
      this.seen.add(m.id);
      c.add(m);
    }
    c.complete = messages.length < limit;
    return older;
  }

  // --- Messages ------------------------------------------------------------------------

  /** A message pushed to me: its conversation and whether it was counted
   * already (from history, or in a list reply's unread); null when it was
   * shown before or is deleted. */
  received(msg) {
    if (this.seen.has(msg.id) || this.deleted.has(msg.id)) return null; // pushed again, or deleted since
    this.seen.add(msg.id);
    const c = this.conv(this.keyOf(msg));
    // Known from history, or not newer than what the conversation list
    // counted: in `unread` already (pushes of waiting messages come after it).
    const known = c.messages.has(msg.id) || msg.id <= c.listedUpTo;
    c.add(msg);
    if (c.touched > msg.id) c.touched = 0; // sorted by its messages from now on
    if (msg.from !== this.me && !known) this.setTyping(c.key, msg.from, null);
    return { c, known };
  }

  /** One of my messages, as the page built it once the server took it. */
  sent(c, msg) {
    this.seen.add(msg.id);
    c.add(msg);
    if (c.touched) c.touched = 0;
  }

  /** A `receipt`: my messages it changes, and their conversation. */
  receipt({ status, by, id, up_to: upTo }) {
    const c = this.convs.get(by);
    if (!c) return null;
    const changed = [];
    for (const m of c.messages.values()) {
      if (m.from !== this.me) continue;
      if (status === "delivered" && m.id === id && !m.delivered) m.delivered = true;
      else if (status === "read" && m.id <= upTo && !m.read) m.read = m.delivered = true;
      else continue;
      changed.push(m);
    }
    return { c, changed };
  }

  /** A `reaction`: the conversation and the message as it was, or null
   * when it is not loaded (history has it when it is). */
  reacted({ id, emoji, by, on }) {
    const c = this.find(id);
    const msg = c?.messages.get(id);
    if (!msg) return null;
    const reactions = { ...(msg.reactions || {}) };
    const names = (reactions[emoji] || []).filter((n) => n !== by);
    if (on) names.push(by);
    // An emoji keeps its place when its last reaction is taken back, as on
    // the server (shown again there if it comes back); empty ones are not shown.
    reactions[emoji] = names.sort();
    c.add({ ...msg, reactions });
    return { c, msg };
  }

  /** An edit (mine or pushed): the conversation, or null if not loaded. */
  edited({ id, body, edited_at: editedAt }) {
    const c = this.find(id);
    if (c) c.add({ ...c.messages.get(id), body, edited_at: editedAt });
    return c;
  }

  /** A deletion (mine or pushed): the conversation, or null if not loaded. */
  removed(id) {
    this.deleted.add(id); // a push that overtook the deletion stays away
    const c = this.find(id);
    if (!c) return null;
    const msg = c.messages.get(id);
    if (msg.from !== this.me && msg.id > c.readUpTo && c.unread > 0) c.unread -= 1;
    c.remove(id);
    return c;
  }

  /** What is typed and not sent in conversation `key` (kept across reloads). */
  setDraft(key, body) {
    if ((this.drafts[key] || "") === (body || "")) return;
    if (body) this.drafts[key] = body;
    else delete this.drafts[key];
    this.saved.set("drafts", this.drafts);
  }

  /** A reply to message `id` is being written in the open conversation
   * (null: no longer). */
  setReply(reply) {
    this.replyingTo = reply;
  }

  /** Message `id` arrived: to ack. */
  toAck(id) {
    this.acks.push(id);
  }

  /** The next acks to send, at most `n`. */
  takeAcks(n) {
    return this.acks.splice(0, n);
  }

  // --- Typing and people ---------------------------------------------------------------

  /** `name` types in conversation `key` until `until` (null: stopped). */
  setTyping(key, name, until) {
    const inRoom = key.startsWith(ROOM);
    if (inRoom && !this.roomTyping.has(key)) {
      if (until === null) return;
      this.roomTyping.set(key, new Map());
    }
    const typers = inRoom ? this.roomTyping.get(key) : this.typing;
    if (until === null) typers.delete(name);
    else typers.set(name, until);
  }

  /** I type in `key` (`active`) or stopped: true when that conversation
   * should be told, at most every TYPING_REPEAT_MS while I go on. */
  myTyping(key, active, now) {
    if (active) {
      if (this.typingTo === key && now - this.typingAt <= TYPING_REPEAT_MS) return false;
      this.typingTo = key;
      this.typingAt = now;
      return true;
    }
    if (this.typingTo !== key) return false;
    this.typingTo = null;
    this.typingAt = 0;
    return true;
  }

  /** Who is online and who was around, as `online` and `recent` replied
   * (null: that request failed), the replies arriving at `receivedAt`
   * (this browser's clock). */
  setPeople(online, recent, receivedAt = Date.now()) {
    if (online) {
      this.online = new Set(online);
      this.presenceKnown = true;
    }
    if (!recent) return;
    this.recent = new Map(recent.map((u) => [u.username, u]));
    // I am online as I ask, and `recent` gives the online their server's
    // "now" as last_seen: the one reading of the server's clock we have.
    const mine = this.recent.get(this.me);
    if (mine?.online) this.skew = Date.parse(mine.last_seen) - receivedAt;
  }

  /** The server's time now, as far as this page can tell (ms). */
  serverNow() {
    return Date.now() + this.skew;
  }

  /** Presence changes, at `now` (an ISO time, the server's clock). */
  presence(online, offline, now = new Date(this.serverNow()).toISOString()) {
    for (const name of online) {
      this.online.add(name);
      this.recent.set(name, { username: name, online: true, last_seen: now });
    }
    for (const name of offline) {
      this.online.delete(name);
      this.recent.set(name, { username: name, online: false, last_seen: now });
    }
  }

  setBlocked(users) {
    this.blocked = users;
  }

  /** I block `name` (`block`), or no longer. */
  block(name, block) {
    this.blocked = block
      ? [...new Set([...this.blocked, name])].sort()
      : this.blocked.filter((n) => n !== name);
  }

  // --- Work on its way -----------------------------------------------------------------

  /** Run `fn` in `ms`, instead of what was due under `name`. */
  later(name, ms, fn) {
    clearTimeout(this.timers.get(name));
    this.timers.set(
      name,
      setTimeout(() => {
        this.timers.delete(name);
        fn();
      }, ms),
    );
  }

  /** Call off what is due under `name`. */
  cancel(name) {
    clearTimeout(this.timers.get(name));
    this.timers.delete(name);
  }

  /** Whether something is due under `name`. */
  due(name) {
    return this.timers.has(name);
  }

  /** `start()`'s promise, or the one under `name` still on its way. */
  once(name, start) {
    if (!this.tasks.has(name)) {
      this.tasks.set(
        name,
        start().finally(() => this.tasks.delete(name)),
      );
    }
    return this.tasks.get(name);
  }

  /** Whether work under `name` is on its way. */
  busy(name) {
    return this.tasks.has(name);
  }
}

/** Per-user values in localStorage (they survive a reload, and are shared
 * with the user's other tabs). Failing storage (private mode, full) only
 * means nothing is kept. */
export class Saved {
  constructor(user) {
    this.prefix = `chat:${user}:`;
  }

  key(name) {
    return this.prefix + name;
  }

  get(name, fallback) {
    try {
      const raw = localStorage.getItem(this.key(name));
      return raw === null ? fallback : JSON.parse(raw);
    } catch {
      return fallback;
    }
  }

  set(name, value) {
    try {
      if (value === undefined) localStorage.removeItem(this.key(name));
      else localStorage.setItem(this.key(name), JSON.stringify(value));
    } catch {
      /* nothing kept */
    }
  }

  clear() {
    try {
      for (const k of Object.keys(localStorage))
        if (k.startsWith(this.prefix)) localStorage.removeItem(k);
    } catch {
      /* nothing kept */
    }
  }
}
