// Message bodies as people type them: *bold* or **bold**, _italic_, `code`,
// ``` blocks ```, "> quote", and links as before (format.js). Parsed by
// markdown-it (vendored, static/vendor/markdown-it) with only those rules
// on: no HTML, headings, lists, images, tables or markdown links. The tree
// is built here from its tokens with textContent only, never innerHTML, so
// nothing in a body becomes markup the parser did not make.

import MarkdownIt from "../vendor/markdown-it/markdown-it.min.js";
import { el } from "./dom.js";
import { linkify } from "./format.js";

const md = new MarkdownIt("zero", { html: false, breaks: true, linkify: false });
md.enable(["blockquote", "fence", "backticks", "emphasis", "escape", "newline"]);

/** The body as DOM nodes: paragraphs, quotes and code blocks. */
export function render(body) {
  const root = el("div");
  const stack = [root];
  const top = () => stack[stack.length - 1];
  for (const token of md.parse(body, {})) {
    if (token.type === "paragraph_open") stack.push(top().appendChild(el("p", { dir: "auto" })));
    else if (token.type === "blockquote_open")
      stack.push(top().appendChild(el("blockquote", { dir: "auto" })));
    else if (token.type === "paragraph_close" || token.type === "blockquote_close") stack.pop();
    else if (token.type === "fence" || token.type === "code_block")
      top().append(
        el("pre", { dir: "ltr" }, el("code", { text: token.content.replace(/\n$/, "") })),
      );
    else if (token.type === "inline") top().append(...inline(token.children));
    else if (token.content) top().append(token.content); // nothing else is on: as text
  }
  // One paragraph, the common case, is the body's own text, as before.
  const only = root.childNodes.length === 1 && root.firstChild.tagName === "P";
  return [...(only ? root.firstChild : root).childNodes];
}

// `*x*` is what people mean as bold (as in most chat apps); `_x_` italic.
const OPEN = { em_open: (t) => (t.markup === "_" ? "em" : "strong"), strong_open: () => "strong" };

function inline(tokens) {
  const root = el("span");
  const stack = [root];
  const top = () => stack[stack.length - 1];
  for (const token of tokens) {
    if (OPEN[token.type]) stack.push(top().appendChild(el(OPEN[token.type](token))));
    else if (token.type === "em_close" || token.type === "strong_close") stack.pop();
    else if (token.type === "code_inline") top().append(el("code", { text: token.content }));
    else if (token.type === "softbreak" || token.type === "hardbreak") top().append(el("br"));
    else if (token.type === "text") top().append(...linkify(token.content));
    else if (token.content) top().append(token.content);
  }
  return [...root.childNodes];
}
