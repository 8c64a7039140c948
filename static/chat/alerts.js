// Telling the person something happened: the title and favicon count, a
// sound (with a mute switch), desktop notifications, and a polite live
// region that announces new messages (and nothing else) to screen readers.

import { $, attr } from "./dom.js";

export class Alerts {
  constructor({ saved, icons }) {
    this.saved = saved;
    this.icons = icons; // base URL of favicon.svg, favicon-1.svg … favicon-9plus.svg
    this.muted = saved.get("muted", false);
    this.audio = null;
    this.chimedAt = 0;
    const mute = $("mute");
    mute.addEventListener("click", () => this.setMuted(!this.muted));
    this.showMuted();
    this.setUpNotifications();
    // Browsers let a page make sound only after the person has interacted
    // with it: make the audio context then, so the first chime is heard.
    const unlock = () => {
      this.context()?.resume();
      removeEventListener("pointerdown", unlock);
      removeEventListener("keydown", unlock);
    };
    addEventListener("pointerdown", unlock);
    addEventListener("keydown", unlock);
  }

  context() {
    try {
      this.audio ||= new AudioContext();
    } catch {
      /* no audio here */
    }
    return this.audio;
  }

  // --- Unread count ----------------------------------------------------------------

  unread(count) {
    document.title = count ? `(${count}) Chat` : "Chat";
    const name = count === 0 ? "favicon" : count > 9 ? "favicon-9plus" : `favicon-${count}`;
    const href = `${this.icons}${name}.svg`;
    const link = $("favicon");
    if (link.getAttribute("href") !== href) link.setAttribute("href", href);
  }

  // --- Sound ---------------------------------------------------------------------------

  setMuted(muted) {
    this.muted = muted;
    this.saved.set("muted", muted);
    this.showMuted();
  }

  showMuted() {
    const button = $("mute");
    attr(button, "aria-pressed", this.muted ? "true" : "false");
    button.title = this.muted ? "Sounds are off: turn them on" : "Sounds are on: mute them";
    button.querySelector(".sound-on").hidden = this.muted;
    button.querySelector(".sound-off").hidden = !this.muted;
  }

  /** A short two-note chime, made here (no sound file to fetch). */
  chime() {
    const now = Date.now();
    if (this.muted || now - this.chimedAt < 1500) return; // one for a burst
    this.chimedAt = now;
    const ctx = this.context();
    if (!ctx) return;
    try {
      const gain = ctx.createGain();
      gain.connect(ctx.destination);
      const t = ctx.currentTime;
      gain.gain.setValueAtTime(0.0001, t);
      gain.gain.exponentialRampToValueAtTime(0.12, t + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.35);
      [880, 1320].forEach((frequency, i) => {
        const osc = ctx.createOscillator();
        osc.type = "sine";
        osc.frequency.value = frequency;
        osc.connect(gain);
        osc.start(t + i * 0.09);
        osc.stop(t + 0.35);
      });
    } catch {
      /* no audio here */
    }
  }

  // --- Screen readers --------------------------------------------------------------------

  announce(message) {
    const region = $("announcer");
    // A new node each time, so the same words twice are read twice.
    const line = document.createElement("p");
    line.textContent = message;
    region.replaceChildren(line);
  }

  // --- Desktop notifications ---------------------------------------------------------------

  notify(title, body, onClick) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    const n = new Notification(title, { body, tag: `chat-${title}` });
    n.onclick = () => {
      window.focus();
      onClick();
      n.close();
    };
  }

  setUpNotifications() {
    const button = $("enable-notifications");
    if (!("Notification" in window) || Notification.permission !== "default") return;
    button.hidden = false;
    button.addEventListener("click", async () => {
      await Notification.requestPermission();
      button.hidden = true;
    });
  }
}
