// The one WebSocket: requests matched to replies by ref, events handed on,
// reconnection with backoff. Who the connection is belongs to chat.js.

// Low, so the page is back within a few seconds of the server (a restart,
// an upgrade); the jitter below keeps a thousand pages from arriving at once.
const MAX_DELAY = 5000;

export class Connection {
  /**
   * onOpen(): the socket is open (not yet logged in).
   * onFrame(frame): every event, and replies nobody waits for.
   * onClose(code): it closed; return true to reconnect with backoff.
   * onWaiting(seconds): counting down to the next try.
   */
  constructor({ onOpen, onFrame, onClose, onWaiting }) {
    Object.assign(this, { onOpen, onFrame, onClose, onWaiting });
    this.ws = null;
    this.nextRef = 1;
    this.waiting = new Map(); // ref -> resolve
    this.delay = 1000;
    this.timer = null;
    this.ticker = null;
    addEventListener("online", () => this.retryNow());
  }

  get url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    // Batched presence for the cookie login too, which sends no login frame.
    return `${scheme}//${location.host}/ws/chat/?presence_batch=1`;
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    this.cancelRetry();
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => this.onOpen();
    ws.onmessage = (e) => {
      let frame;
      try {
        frame = JSON.parse(e.data);
      } catch {
        return;
      }
      const resolve = this.waiting.get(frame.ref);
      if ((frame.type === "ok" || frame.type === "error") && resolve) {
        this.waiting.delete(frame.ref);
        resolve(frame);
      } else {
        this.onFrame(frame);
      }
    };
    ws.onclose = (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      for (const resolve of this.waiting.values()) resolve({ type: "error", code: "disconnected" });
      this.waiting.clear();
      if (this.onClose(e.code)) this.retryLater();
    };
  }

  /** Connected again: the next loss starts the backoff from one second. */
  healthy() {
    this.delay = 1000;
  }

  retryLater() {
    // Anywhere in the second half of the step: pages that lost the server
    // together spread over seconds instead of knocking in the same one.
    const delay = Math.min(this.delay, MAX_DELAY) * (0.5 + Math.random() * 0.5);
    this.delay = Math.min(this.delay * 2, MAX_DELAY);
    let left = Math.ceil(delay / 1000);
    this.onWaiting(left);
    this.ticker = setInterval(() => {
      left -= 1;
      if (left > 0) this.onWaiting(left);
    }, 1000);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Skip the wait (the browser is back online, or the person asked). */
  retryNow() {
    if (this.timer !== null) this.connect();
  }

  cancelRetry() {
    clearTimeout(this.timer);
    clearInterval(this.ticker);
    this.timer = this.ticker = null;
  }

  close() {
    this.cancelRetry();
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000);
    for (const resolve of this.waiting.values()) resolve({ type: "error", code: "disconnected" });
    this.waiting.clear();
  }

  send(frame) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /** Resolves with the reply, or `{type: "error", code: "disconnected"}`. */
  request(type, fields = {}) {
    if (!this.isOpen) return Promise.resolve({ type: "error", code: "disconnected" });
    const ref = this.nextRef++;
    return new Promise((resolve) => {
      this.waiting.set(ref, resolve);
      this.send({ ...fields, type, ref });
    });
  }
}
