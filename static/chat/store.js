// What the page knows: conversations and their messages, people, and what
// it keeps in localStorage (outbox, drafts, settings). No DOM here.

export const EVERYONE = "*"; // the conversation key of the broadcasts
export const PAGE_SIZE = 50; // history messages per request
export const MAX_PAGE = 100; // the protocol's largest history limit
export const MAX_BODY_CHARS = 4000; // the protocol's longest body, in characters
export const ROOM = "#"; // a room's conversation key is ROOM + its id (no username has "#")

/** The conversation key of room `id`. */
export const roomKey = (id) => ROOM + id;

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
}

export class Store {
  constructor(me) {
    this.me = me;
    this.convs = new Map();
    this.open = EVERYONE;
    this.online = new Set();
    // False while disconnected: who is online is then not known, and the
    // page must not claim anyone is.
    this.presenceKnown = false;
    this.recent = new Map(); // username -> {username, online, last_seen}
    this.blocked = [];
    this.seen = new Set(); // message ids already shown
    this.deleted = new Set(); // ids deleted while the page was open
    this.typing = new Map(); // username -> time their "typing" expires
    this.roomTyping = new Map(); // room key -> Map(username -> time it expires)
    this.conv(EVERYONE);
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

  /** Everyone we know of but me, online first. */
  people() {
    const names = new Set([...this.online, ...this.recent.keys()]);
    names.delete(this.me);
    return [...names]
      .map((username) => ({
        username,
        online: this.isOnline(username),
        lastSeen: this.recent.get(username)?.last_seen,
      }))
      .sort((a, b) => b.online - a.online || a.username.localeCompare(b.username));
  }

  knownNames() {
    const names = new Set([...this.online, ...this.recent.keys(), ...this.convs.keys()]);
    names.delete(EVERYONE);
    names.delete(this.me);
    for (const n of names) if (n.startsWith(ROOM)) names.delete(n);
    return [...names].sort();
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
