// The chat page: protocol v1 over one WebSocket (see docs/protocol.md).
// Plain DOM, no build step. Message bodies are only ever set as textContent.
"use strict";

(function () {
  const EVERYONE = "*"; // conversation key of the broadcasts
  const app = document.getElementById("app");
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  };

  const ERRORS = {
    blocked: (to) => `Not delivered: ${to} does not accept your messages.`,
    unknown_user: (to) => `There is no user called ${to}.`,
    rate_limited: (_, e) => `Slow down: try again in ${e.retry_after} s.`,
    not_logged_in: () => "You are not logged in any more.",
    disconnected: () => "Not sent: the connection is down. It will be retried when you are back online.",
  };

  const state = {
    me: null,
    convs: new Map(), // key -> {key, name, messages: Map(id -> msg), pending: [], unread, lastId, complete, loaded}
    open: EVERYONE,
    online: new Set(),
    recent: [],
    blocked: [],
    seen: new Set(), // message ids already shown
    ackQueue: [],
  };

  // --- Connection ------------------------------------------------------------

  let ws = null;
  let nextRef = 1;
  const waiting = new Map(); // ref -> {resolve}
  let retryDelay = 1000;
  let retryTimer = null;
  let takeoverWanted = false;
  let stopReconnecting = false;
  let beforeLogin = []; // events that arrive before we know who we are

  function wsUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws/chat/`;
  }

  function setStatus(kind, text) {
    const status = $("status");
    status.dataset.state = kind;
    status.textContent = text;
  }

  function connect() {
    clearTimeout(retryTimer);
    stopReconnecting = false;
    setStatus("connecting", "Connecting…");
    ws = new WebSocket(wsUrl());
    ws.onopen = async () => {
      const who = await request("whoami");
      if (who.type !== "ok") return;
      if (who.username) {
        await loggedIn();
      } else if (takeoverWanted) {
        takeOver();
      } else if (!$("banner").dataset.reason) {
        // No session any more (logged out elsewhere, or it expired).
        location.href = app.dataset.loginUrl;
      }
    };
    ws.onmessage = (e) => handleFrame(JSON.parse(e.data));
    ws.onclose = (e) => {
      for (const { resolve } of waiting.values()) resolve({ type: "error", code: "disconnected" });
      waiting.clear();
      state.me = null;
      if (e.code === 1000 && stopReconnecting) return;
      if (stopReconnecting) return;
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    const delay = Math.min(retryDelay, 30000) * (0.8 + Math.random() * 0.4);
    retryDelay = Math.min(retryDelay * 2, 30000);
    let left = Math.ceil(delay / 1000);
    setStatus("offline", `Offline — reconnecting in ${left} s`);
    const tick = setInterval(() => {
      left -= 1;
      if (left > 0) setStatus("offline", `Offline — reconnecting in ${left} s`);
    }, 1000);
    retryTimer = setTimeout(() => {
      clearInterval(tick);
      connect();
    }, delay);
  }

  function send(frame) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame));
  }

  function request(type, fields = {}) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.resolve({ type: "error", code: "disconnected" });
    const ref = nextRef++;
    return new Promise((resolve) => {
      waiting.set(ref, { resolve });
      send({ type, ref, ...fields });
    });
  }

  function handleFrame(frame) {
    if ((frame.type === "ok" || frame.type === "error") && waiting.has(frame.ref)) {
      const { resolve } = waiting.get(frame.ref);
      waiting.delete(frame.ref);
      resolve(frame);
      return;
    }
    switch (frame.type) {
      case "message":
        if (state.me) receive(frame);
        else beforeLogin.push(frame);
        break;
      case "presence":
        presence(frame);
        break;
      case "error":
        if (frame.code === "already_online") showElsewhere();
        break;
      case "session_replaced":
        stopReconnecting = true;
        showBanner("replaced", "Chat is open in another window.", "Use here", () => {
          takeoverWanted = true;
          connect();
        });
        setStatus("offline", "Open elsewhere");
        break;
      case "session_ended":
        stopReconnecting = true;
        showBanner("ended", frame.reason || "The server ended your session.", "Reconnect", () => connect());
        setStatus("offline", "Disconnected");
        break;
    }
  }

  function showElsewhere() {
    showBanner("elsewhere", "Chat is open in another window.", "Use here", takeOver);
    setStatus("offline", "Open elsewhere");
  }

  async function takeOver() {
    takeoverWanted = false;
    const reply = await request("login", { takeover: true });
    if (reply.type === "ok") {
      await loggedIn();
    } else if (reply.code !== "disconnected") {
      location.href = app.dataset.loginUrl;
    }
  }

  async function loggedIn() {
    state.me = app.dataset.username;
    retryDelay = 1000;
    hideBanner();
    setStatus("online", "Connected");
    const queued = beforeLogin;
    beforeLogin = [];
    queued.forEach(receive);
    await Promise.all([loadConversations(), loadOnline(), loadRecent(), loadBlocked()]);
    await openConversation(state.open, { refresh: true, show: false });
  }

  // --- Banner ------------------------------------------------------------------

  function showBanner(reason, text, action, onAction) {
    const banner = $("banner");
    banner.dataset.reason = reason;
    $("banner-text").textContent = text;
    const button = $("banner-action");
    button.textContent = action;
    button.onclick = () => {
      hideBanner();
      onAction();
    };
    banner.hidden = false;
    button.focus();
  }

  function hideBanner() {
    $("banner").hidden = true;
    delete $("banner").dataset.reason;
  }

  // --- Conversations -------------------------------------------------------------

  function conv(key) {
    if (!state.convs.has(key)) {
      state.convs.set(key, {
        key, name: key === EVERYONE ? "Everyone" : key,
        messages: new Map(), pending: [], unread: 0, lastId: 0, complete: false, loaded: false,
      });
    }
    return state.convs.get(key);
  }

  function keyOf(msg) {
    if (msg.kind === "broadcast") return EVERYONE;
    return msg.from === state.me ? msg.to : msg.from;
  }

  function addMessage(msg) {
    const c = conv(keyOf(msg));
    // History has no `stored` or local notes: keep what the push told us.
    c.messages.set(msg.id, { ...c.messages.get(msg.id), ...msg });
    c.lastId = Math.max(c.lastId, msg.id);
    return c;
  }

  async function loadConversations() {
    const reply = await request("conversations");
    if (reply.type !== "ok") return;
    conv(EVERYONE);
    for (const entry of reply.conversations) {
      const c = conv(entry.with === null ? EVERYONE : entry.with);
      c.unread = entry.unread;
      c.lastId = Math.max(c.lastId, entry.last.id);
      c.lastBody = entry.last.body;
    }
    renderConversations();
  }

  async function openConversation(key, { refresh = false, show = true } = {}) {
    state.open = key;
    const c = conv(key);
    $("conv-title").textContent = c.name;
    if (show) app.classList.add("show-conversation");
    if (!c.loaded || refresh) {
      const reply = await request("history", { with: key === EVERYONE ? null : key, limit: 50 });
      if (reply.type === "ok") {
        reply.messages.forEach((m) => { state.seen.add(m.id); addMessage(m); });
        c.loaded = true;
        if (!c.complete) c.complete = reply.messages.length < 50;
      } else if (reply.code === "unknown_user") {
        state.convs.delete(key);
        state.open = EVERYONE;
        return openConversation(EVERYONE);
      }
    }
    renderConversationHeader();
    renderMessages({ scroll: true });
    markRead(c);
    renderConversations();
  }

  async function loadEarlier() {
    const c = conv(state.open);
    const oldest = Math.min(...c.messages.keys());
    const reply = await request("history", { with: c.key === EVERYONE ? null : c.key, before: oldest, limit: 50 });
    if (reply.type !== "ok") return;
    const list = $("messages");
    const fromBottom = list.scrollHeight - list.scrollTop;
    reply.messages.forEach((m) => { state.seen.add(m.id); addMessage(m); });
    c.complete = reply.messages.length < 50;
    renderMessages();
    list.scrollTop = list.scrollHeight - fromBottom;
  }

  function markRead(c) {
    if (document.hidden || state.open !== c.key || !state.me) return;
    if (c.unread > 0 || c.readUpTo !== c.lastId) {
      c.unread = 0;
      c.readUpTo = c.lastId;
      if (c.lastId) send({ type: "read", with: c.key === EVERYONE ? null : c.key, up_to: c.lastId });
      updateTitle();
    }
  }

  function receive(msg) {
    // Ack everything we hold, shown or not: it is stored in the page now.
    state.ackQueue.push(msg.id);
    scheduleAck();
    if (state.seen.has(msg.id)) return; // a re-push: already shown
    state.seen.add(msg.id);
    const c = addMessage(msg);
    c.lastBody = msg.body;
    const visible = state.open === c.key && !document.hidden;
    if (msg.from !== state.me && !visible) {
      c.unread += 1;
      notify(msg, c);
    }
    if (state.open === c.key) {
      renderMessages({ scroll: true });
      markRead(c);
    }
    renderConversations();
    updateTitle();
  }

  let ackTimer = null;
  function scheduleAck() {
    if (ackTimer) return;
    ackTimer = setTimeout(() => {
      ackTimer = null;
      const ids = state.ackQueue.splice(0, 1000);
      if (ids.length) send({ type: "ack", ids });
      if (state.ackQueue.length) scheduleAck();
    }, 100);
  }

  // --- Sending -------------------------------------------------------------------

  let tempId = 0;
  async function sendMessage(body) {
    const key = state.open;
    const c = conv(key);
    const entry = { temp: ++tempId, body, from: state.me, sent_at: new Date().toISOString(), state: "sending" };
    c.pending.push(entry);
    renderMessages({ scroll: true });
    const reply = key === EVERYONE
      ? await request("broadcast", { body })
      : await request("send", { to: key, body });
    if (reply.type === "ok") {
      c.pending = c.pending.filter((p) => p !== entry);
      const msg = {
        id: reply.id, kind: key === EVERYONE ? "broadcast" : "private", from: state.me,
        to: key === EVERYONE ? null : key, body: body.trim(), sent_at: entry.sent_at,
        note: key === EVERYONE ? `${reply.live} online, ${reply.stored} later`
          : reply.delivered === "stored" ? "will be delivered when they log in" : "",
      };
      state.seen.add(msg.id);
      addMessage(msg);
      c.lastBody = msg.body;
      renderConversations();
    } else {
      entry.state = "failed";
      const explain = ERRORS[reply.code];
      entry.error = explain ? explain(c.name, reply) : reply.message || "Not sent.";
    }
    renderMessages({ scroll: true });
  }

  // --- People ----------------------------------------------------------------------

  async function loadOnline() {
    const reply = await request("online");
    if (reply.type === "ok") state.online = new Set(reply.users);
    renderPeople();
  }

  async function loadRecent() {
    const reply = await request("recent");
    if (reply.type === "ok") state.recent = reply.users;
    renderPeople();
  }

  async function loadBlocked() {
    const reply = await request("blocked");
    if (reply.type === "ok") state.blocked = reply.users;
    renderPeople();
    renderConversationHeader();
  }

  function presence(frame) {
    if (frame.online) state.online.add(frame.username);
    else state.online.delete(frame.username);
    renderPeople();
    renderConversations();
    renderConversationHeader();
    clearTimeout(presence.timer);
    presence.timer = setTimeout(loadRecent, 300);
  }

  async function toggleBlock(name) {
    const blocking = !state.blocked.includes(name);
    const reply = await request(blocking ? "block" : "unblock", { username: name });
    if (reply.type !== "ok" && reply.code !== "already_blocked" && reply.code !== "not_blocked") {
      alert(reply.message);
    }
    await loadBlocked();
  }

  // --- Rendering -------------------------------------------------------------------

  function time(iso) {
    const d = new Date(iso);
    const today = new Date();
    const sameDay = d.toDateString() === today.toDateString();
    const t = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return sameDay ? t : `${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${t}`;
  }

  function ago(iso) {
    const minutes = Math.round((Date.now() - new Date(iso).getTime()) / 60000);
    if (minutes < 1) return "last seen just now";
    return `last seen ${minutes} min ago`;
  }

  function renderConversations() {
    const list = $("conversations");
    const items = [...state.convs.values()].sort((a, b) => (a.key === EVERYONE ? -1 : b.key === EVERYONE ? 1 : b.lastId - a.lastId));
    list.replaceChildren(...items.map((c) => {
      const button = el("button", {
        type: "button", class: "conv-item" + (c.key === state.open ? " active" : ""),
        "data-key": c.key, "aria-current": c.key === state.open ? "true" : "false",
        onclick: () => openConversation(c.key),
      },
      c.key !== EVERYONE ? el("span", { class: "dot" + (state.online.has(c.key) ? " on" : ""), "aria-hidden": "true" }) : el("span", { class: "dot all", "aria-hidden": "true" }),
      el("span", { class: "conv-name", text: c.name }),
      c.unread ? el("span", { class: "badge", text: String(c.unread), "aria-label": `${c.unread} unread` }) : null);
      return el("li", {}, button);
    }));
    const known = new Set([...state.online, ...state.recent.map((u) => u.username), ...[...state.convs.keys()].filter((k) => k !== EVERYONE)]);
    known.delete(state.me);
    $("known-users").replaceChildren(...[...known].sort().map((n) => el("option", { value: n })));
  }

  function personItem(name, extra, actions = []) {
    return el("li", {},
      el("button", { type: "button", class: "person", onclick: () => openConversation(name), title: `Message ${name}` },
        el("span", { class: "dot" + (state.online.has(name) ? " on" : ""), "aria-hidden": "true" }),
        el("span", { class: "conv-name", text: name }),
        extra ? el("span", { class: "muted small-text", text: extra }) : null),
      ...actions);
  }

  function renderPeople() {
    const me = state.me || app.dataset.username;
    const others = [...state.online].filter((n) => n !== me).sort();
    $("online-count").textContent = others.length ? `(${others.length})` : "";
    $("online").replaceChildren(...(others.length ? others.map((n) => personItem(n, "")) : [el("li", { class: "muted small-text", text: "Only you." })]));
    const recent = state.recent.filter((u) => u.username !== me);
    $("recent").replaceChildren(...(recent.length
      ? recent.map((u) => personItem(u.username, u.online ? "online" : ago(u.last_seen)))
      : [el("li", { class: "muted small-text", text: "Nobody else." })]));
    $("blocked").replaceChildren(...state.blocked.map((n) => el("li", { class: "blocked-item" },
      el("span", { class: "conv-name", text: n }),
      el("button", { type: "button", class: "secondary small", text: "Unblock", "aria-label": `Unblock ${n}`, onclick: () => toggleBlock(n) }))));
    $("blocked-empty").hidden = state.blocked.length > 0;
  }

  function renderConversationHeader() {
    const key = state.open;
    const toggle = $("block-toggle");
    const dot = $("conv-presence");
    if (key === EVERYONE) {
      toggle.hidden = true;
      dot.hidden = true;
      return;
    }
    toggle.hidden = false;
    toggle.textContent = state.blocked.includes(key) ? `Unblock ${key}` : `Block ${key}`;
    dot.hidden = false;
    dot.textContent = state.online.has(key) ? "online" : "offline";
    dot.className = "presence-dot" + (state.online.has(key) ? " on" : "");
  }

  function renderMessages({ scroll = false } = {}) {
    const c = conv(state.open);
    const box = $("messages");
    const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    const sorted = [...c.messages.values()].sort((a, b) => a.id - b.id);
    const items = sorted.map((m) => messageItem(m));
    for (const p of c.pending) items.push(messageItem(p, true));
    $("message-list").replaceChildren(...items);
    $("empty").hidden = items.length > 0;
    $("load-earlier").hidden = c.complete || sorted.length === 0;
    if (scroll || nearBottom) box.scrollTop = box.scrollHeight;
  }

  function messageItem(m, local = false) {
    const mine = m.from === state.me;
    const li = el("li", { class: "msg" + (mine ? " mine" : "") + (local ? ` ${m.state}` : ""), "data-id": m.id || "" },
      el("div", { class: "meta" },
        el("span", { class: "from", text: mine ? "You" : m.from }),
        el("time", { datetime: m.sent_at, title: new Date(m.sent_at).toLocaleString(), text: time(m.sent_at) }),
        m.stored ? el("span", { class: "tag", text: "waited while you were offline" }) : null,
        m.note ? el("span", { class: "muted small-text", text: m.note }) : null,
        local && m.state === "sending" ? el("span", { class: "muted small-text", text: "sending…" }) : null),
      el("div", { class: "body", text: m.body }));
    if (local && m.state === "failed") {
      li.append(el("div", { class: "send-error", role: "alert" },
        el("span", { text: m.error }),
        el("button", { type: "button", class: "secondary small", text: "Retry", onclick: () => {
          conv(state.open).pending = conv(state.open).pending.filter((p) => p !== m);
          sendMessage(m.body);
        } }),
        el("button", { type: "button", class: "secondary small", text: "Dismiss", onclick: () => {
          conv(state.open).pending = conv(state.open).pending.filter((p) => p !== m);
          renderMessages();
        } })));
    }
    return li;
  }

  function updateTitle() {
    const unread = [...state.convs.values()].reduce((n, c) => n + c.unread, 0);
    document.title = unread ? `(${unread}) Chat` : "Chat";
  }

  // --- Notifications -------------------------------------------------------------------

  function notify(msg, c) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    const n = new Notification(msg.kind === "broadcast" ? `${msg.from} (to everyone)` : msg.from, { body: msg.body, tag: `chat-${c.key}` });
    n.onclick = () => { window.focus(); openConversation(c.key); n.close(); };
  }

  function setUpNotifications() {
    const button = $("enable-notifications");
    if (!("Notification" in window) || Notification.permission !== "default") return;
    button.hidden = false;
    button.onclick = async () => {
      await Notification.requestPermission();
      button.hidden = true;
    };
  }

  // --- Wiring ------------------------------------------------------------------------

  function wire() {
    const body = $("body");
    $("composer").addEventListener("submit", (e) => {
      e.preventDefault();
      const text = body.value;
      if (!text.trim()) return;
      body.value = "";
      sendMessage(text);
    });
    body.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        $("composer").requestSubmit();
      }
    });
    $("new-chat").addEventListener("submit", async (e) => {
      e.preventDefault();
      const name = $("new-chat-name").value.trim();
      const error = $("new-chat-error");
      error.hidden = true;
      if (!name) return;
      if (name === state.me) {
        error.textContent = "That is you.";
        error.hidden = false;
        return;
      }
      const reply = await request("history", { with: name, limit: 1 });
      if (reply.type !== "ok") {
        error.textContent = reply.code === "unknown_user" ? `There is no user called ${name}.` : reply.message;
        error.hidden = false;
        return;
      }
      $("new-chat-name").value = "";
      await openConversation(name);
      body.focus();
    });
    $("block-toggle").addEventListener("click", () => toggleBlock(state.open));
    $("load-earlier").addEventListener("click", loadEarlier);
    $("back").addEventListener("click", () => app.classList.remove("show-conversation"));
    $("show-sidebar").addEventListener("click", () => app.classList.remove("show-conversation"));
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && state.convs.has(state.open)) {
        markRead(conv(state.open));
        renderConversations();
      }
    });
    setInterval(() => { if (state.me) loadRecent(); }, 60000);
    setUpNotifications();
  }

  wire();
  connect();
})();
