// Text and time formatting, and links in message bodies.

import { el } from "./dom.js";

// What Python's str.strip() removes (str.isspace), so that the counter
// agrees with the server, which trims and then counts code points.
const SPACE =
  "[\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
const TRIM = new RegExp(`^${SPACE}+|${SPACE}+$`, "g");

export const trimBody = (body) => body.replace(TRIM, "");
export const bodyLength = (body) => [...trimBody(body)].length;
export const number = (n) => n.toLocaleString();

const sameDay = (a, b) => a.toDateString() === b.toDateString();

export function clock(iso) {
  // "numeric": no leading zero in 12-hour style ("8:14 PM"); a 24-hour locale
  // keeps its own form ("08:14" in German, "20:14").
  return new Date(iso).toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
}

export function fullTime(iso) {
  return new Date(iso).toLocaleString([], { dateStyle: "full", timeStyle: "short" });
}

export const dayKey = (iso) => new Date(iso).toDateString();

/** "Today", "Yesterday", "Monday 3 March", with the year when not this one. */
export function dayLabel(iso) {
  const d = new Date(iso);
  const today = new Date();
  const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
  if (sameDay(d, today)) return "Today";
  if (sameDay(d, yesterday)) return "Yesterday";
  const options = { weekday: "long", month: "long", day: "numeric" };
  if (d.getFullYear() !== today.getFullYear()) options.year = "numeric";
  return d.toLocaleDateString([], options);
}

/** A short time for lists: the clock today, else the weekday or the date. */
export function when(iso) {
  const d = new Date(iso);
  const now = new Date();
  if (sameDay(d, now)) return clock(iso);
  if (now - d < 6 * 24 * 3600 * 1000) return d.toLocaleDateString([], { weekday: "short" });
  return d.toLocaleDateString([], { month: "short", day: "numeric" });
}

/** "last seen 5 min ago", `now` and `iso` both on the server's clock. */
export function lastSeen(iso, now) {
  const minutes = Math.round((now - new Date(iso).getTime()) / 60000);
  if (minutes < 1) return "last seen just now";
  if (minutes < 60) return `last seen ${minutes} min ago`;
  return `last seen ${Math.round(minutes / 60)} h ago`;
}

// Controls that change the direction text is shown in: embeddings and
// overrides (U+202A-202E), isolates (U+2066-2069), the marks (U+200E, U+200F,
// U+061C). Invisible, they reorder what follows: "https://a.b/\u202Egnp.exe"
// shows as a link to ".../exe.png".
const BIDI_CONTROLS = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/** `text` with its direction controls made visible (U+FFFD), for what must
 * read in the order it is: a link's text. */
export function neutralBidi(text) {
  return text.replace(BIDI_CONTROLS, "\ufffd");
}

/** `text` with every link in it isolated left to right (U+2066 LEFT-TO-RIGHT
 * ISOLATE ... U+2069) and its direction controls shown, for where links are
 * plain text (a preview, a notification). Text without any control is
 * returned as it is. */
export function neutralLinks(text) {
  if (!text.match(BIDI_CONTROLS)) return text;
  return text.replace(URL_RE, (link) => `\u2066${neutralBidi(link)}\u2069`);
}

/** Someone else's text inside a string of ours ("alice: hi"), isolated with
 * U+2068 FIRST STRONG ISOLATE ... U+2069 POP DIRECTIONAL ISOLATE: whatever
 * direction controls it holds end with it, and reorder nothing around it. */
export function isolate(text) {
  return `\u2068${text}\u2069`;
}

// http(s) links, and "www." ones (as https); trailing punctuation stays text.
const URL_RE = /\bhttps?:\/\/[^\s<>"]+|(?<![\w@.\/-])www\.[^\s<>"]+\.[^\s<>"]+/gi;
const TRAILING = /[.,;:!?'")\]}]/;

/** The body as text nodes and <a> elements for its http(s) links. */
export function linkify(body) {
  const out = [];
  let at = 0;
  for (const match of body.matchAll(URL_RE)) {
    let link = match[0];
    // Trailing punctuation is the sentence's, but a ")" that closes a "("
    // inside the link is the link's (Wikipedia's "Foo_(bar)").
    while (TRAILING.test(link.at(-1))) {
      if (link.at(-1) === ")" && link.split("(").length > link.split(")").length - 1) break;
      link = link.slice(0, -1);
    }
    let url;
    try {
      url = new URL(/^www\./i.test(link) ? `https://${link}` : link);
    } catch {
      continue;
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") continue;
    if (match.index > at) out.push(body.slice(at, match.index));
    // Left to right and isolated, with its direction controls shown: a
    // link reads in the order its address is, whatever surrounds it.
    const attrs = { href: url.href, rel: "noopener noreferrer", target: "_blank", dir: "ltr" };
    out.push(el("a", { ...attrs, text: neutralBidi(link) }));
    at = match.index + link.length;
  }
  if (at < body.length) out.push(body.slice(at));
  return out;
}
