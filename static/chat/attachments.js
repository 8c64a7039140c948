// Pictures and files (protocol 1.2): the tray of files to send with the
// next message, uploaded over HTTP as soon as they are chosen (with
// progress), how attachments show in messages, and the image viewer.

import { el, icon, text } from "./dom.js";

export const MAX_FILES = 10;
export const MAX_BYTES = 10 * 1024 * 1024;

/** "2.1 MB", "840 KB", "12 bytes". */
export function fileSize(n) {
  if (n < 1000) return `${n} byte${n === 1 ? "" : "s"}`;
  if (n < 1000 * 1000) return `${Math.round(n / 1000)} KB`;
  return `${(n / (1000 * 1000)).toFixed(1)} MB`;
}

/** One line for a message of files alone (previews, announcements). */
export function attachmentSummary(attachments) {
  if (!attachments?.length) return "";
  const images = attachments.filter((a) => a.thumbnail_url).length;
  if (attachments.length === 1) return `${images ? "Picture" : "File"}: ${attachments[0].name}`;
  return `${attachments.length} ${images === attachments.length ? "pictures" : "files"}`;
}

function csrfToken() {
  return document.querySelector("[name=csrfmiddlewaretoken]")?.value || "";
}

/** POST one file to /files/; onProgress(fraction). Resolves to the
 * attachment object, or rejects with an Error whose message says why. */
export function uploadFile(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/files/");
    xhr.setRequestHeader("X-CSRFToken", csrfToken());
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    };
    xhr.onload = () => {
      if (xhr.status === 201) return resolve(xhr.response);
      const why = xhr.response?.message;
      if (why) return reject(new Error(why));
      if (xhr.status === 413) return reject(new Error("The file is larger than 10 MB."));
      reject(new Error(`The server refused it (HTTP ${xhr.status}).`));
    };
    xhr.onerror = () => reject(new Error("The connection failed during the upload."));
    const form = new FormData();
    form.append("file", file, file.name || "pasted image.png");
    xhr.send(form);
  });
}

/** The files chosen for the next message, shown above the text box. */
export class Tray {
  /** hooks: changed(), announce(text) */
  constructor({ box, input, button, dropZone, paste, hooks }) {
    Object.assign(this, { box, hooks });
    this.items = [];
    this.next = 1;
    button.addEventListener("click", () => input.click());
    input.addEventListener("change", () => {
      this.add([...input.files]);
      input.value = "";
    });
    dropZone.addEventListener("dragover", (e) => {
      if (![...e.dataTransfer.types].includes("Files")) return;
      e.preventDefault();
      dropZone.classList.add("dropping");
    });
    dropZone.addEventListener("dragleave", (e) => {
      if (!dropZone.contains(e.relatedTarget)) dropZone.classList.remove("dropping");
    });
    dropZone.addEventListener("drop", (e) => {
      dropZone.classList.remove("dropping");
      if (!e.dataTransfer.files.length) return;
      e.preventDefault();
      this.add([...e.dataTransfer.files]);
    });
    paste.addEventListener("paste", (e) => {
      const files = [...(e.clipboardData?.files || [])];
      if (!files.length) return;
      e.preventDefault();
      this.add(files);
    });
    this.box.hidden = true;
  }

  get uploading() {
    return this.items.some((i) => i.state === "uploading");
  }

  get failed() {
    return this.items.filter((i) => i.state === "failed");
  }

  /** The uploaded files' attachment objects, in order. */
  get ready() {
    return this.items.filter((i) => i.state === "done").map((i) => i.attachment);
  }

  add(files) {
    for (const file of files) {
      if (this.items.length >= MAX_FILES) {
        this.hooks.announce(`A message carries at most ${MAX_FILES} files.`);
        break;
      }
      const item = {
        key: this.next++,
        file,
        name: file.name || "pasted image.png",
        size: file.size,
      };
      if (file.type.startsWith("image/")) item.preview = URL.createObjectURL(file);
      this.items.push(item);
      if (file.size > MAX_BYTES) {
        item.state = "failed";
        item.error = `Larger than 10 MB (${fileSize(file.size)}).`;
      } else this.upload(item);
    }
    this.render();
  }

  async upload(item) {
    item.state = "uploading";
    item.progress = 0;
    try {
      item.attachment = await uploadFile(item.file, (p) => {
        item.progress = p;
        this.renderProgress(item);
      });
      item.state = "done";
    } catch (e) {
      item.state = "failed";
      item.error = e.message;
      this.hooks.announce(`${item.name} was not uploaded: ${e.message}`);
    }
    this.render();
  }

  /** Put already uploaded attachments back (a failed message, edited). */
  restore(attachments) {
    for (const attachment of attachments)
      this.items.push({
        key: this.next++,
        name: attachment.name,
        size: attachment.size,
        state: "done",
        attachment,
        preview: attachment.thumbnail_url,
      });
    this.render();
  }

  remove(key) {
    const item = this.items.find((i) => i.key === key);
    if (item?.preview?.startsWith("blob:")) URL.revokeObjectURL(item.preview);
    this.items = this.items.filter((i) => i.key !== key);
    this.render();
  }

  clear() {
    for (const item of this.items)
      if (item.preview?.startsWith("blob:")) URL.revokeObjectURL(item.preview);
    this.items = [];
    this.render();
  }

  render() {
    this.box.hidden = this.items.length === 0;
    this.box.replaceChildren(...this.items.map((item) => this.itemNode(item)));
    this.hooks.changed();
  }

  itemNode(item) {
    const status =
      item.state === "uploading"
        ? el("progress", {
            max: "1",
            value: String(item.progress || 0),
            "aria-label": `Uploading ${item.name}`,
          })
        : item.state === "failed"
          ? el("span", { class: "tray-error", role: "alert", text: item.error })
          : el("span", { class: "muted", text: fileSize(item.attachment.size) });
    return el(
      "li",
      { class: `tray-item ${item.state}`, "data-key": String(item.key) },
      item.preview
        ? el("img", { class: "tray-thumb", src: item.preview, alt: "" })
        : el("span", { class: "tray-thumb file-icon" }, icon("file")),
      el(
        "span",
        { class: "tray-text" },
        el("bdi", { class: "tray-name", text: item.name }),
        status,
      ),
      el(
        "button",
        {
          type: "button",
          class: "icon-button tray-remove",
          "aria-label": `Remove ${item.name}`,
          title: "Remove",
          onclick: () => this.remove(item.key),
        },
        icon("close"),
      ),
    );
  }

  renderProgress(item) {
    const bar = this.box.querySelector(`[data-key="${item.key}"] progress`);
    if (bar) bar.value = item.progress;
  }
}

/** The attachments of a message, as nodes: thumbnails that open the
 * viewer, and cards with name, size and a download link. */
export function attachmentNodes(attachments) {
  return (attachments || []).map((a) =>
    a.thumbnail_url
      ? el(
          "button",
          {
            type: "button",
            class: "thumb",
            "data-src": a.url,
            "data-name": a.name,
            "data-size": String(a.size),
            "aria-label": `Picture ${a.name}, ${fileSize(a.size)}: open`,
          },
          el("img", {
            src: a.thumbnail_url,
            alt: a.name,
            loading: "lazy",
            width: String(Math.min(a.width, scaled(a).w)),
            height: String(Math.min(a.height, scaled(a).h)),
          }),
        )
      : el(
          "a",
          { class: "file-card", href: a.url, download: a.name, title: `Download ${a.name}` },
          icon("file"),
          el(
            "span",
            { class: "file-text" },
            el("bdi", { class: "file-name", text: a.name }),
            el("span", { class: "file-size", text: fileSize(a.size) }),
          ),
        ),
  );
}

function scaled(a) {
  const k = Math.min(1, 240 / Math.max(a.width, a.height));
  return { w: Math.round(a.width * k), h: Math.round(a.height * k) };
}

/** The full image over the page: Escape closes, arrows move between the
 * conversation's images. */
export class Viewer {
  constructor({ dialog, list }) {
    this.dialog = dialog;
    this.list = list;
    this.image = dialog.querySelector("img");
    this.caption = dialog.querySelector(".viewer-name");
    this.download = dialog.querySelector(".viewer-download");
    this.index = 0;
    list.addEventListener("click", (e) => {
      const thumb = e.target.closest(".thumb");
      if (thumb) this.open(thumb);
    });
    dialog.querySelector(".viewer-close").addEventListener("click", () => dialog.close());
    dialog.querySelector(".viewer-prev").addEventListener("click", () => this.move(-1));
    dialog.querySelector(".viewer-next").addEventListener("click", () => this.move(1));
    dialog.addEventListener("keydown", (e) => {
      if (e.key === "ArrowLeft") this.move(-1);
      else if (e.key === "ArrowRight") this.move(1);
      else return;
      e.preventDefault();
    });
    dialog.addEventListener("click", (e) => {
      if (e.target === dialog) dialog.close();
    });
    dialog.addEventListener("close", () => this.opener?.focus({ preventScroll: true }));
  }

  get thumbs() {
    return [...this.list.querySelectorAll(".thumb")];
  }

  open(thumb) {
    this.opener = thumb;
    this.index = this.thumbs.indexOf(thumb);
    this.show(thumb);
    if (!this.dialog.open) this.dialog.showModal();
  }

  show(thumb) {
    this.image.src = thumb.dataset.src;
    this.image.alt = thumb.dataset.name;
    const all = this.thumbs;
    text(
      this.caption,
      `${thumb.dataset.name} · ${fileSize(Number(thumb.dataset.size))} · ${this.index + 1} of ${all.length}`,
    );
    this.download.href = thumb.dataset.src;
    this.download.setAttribute("download", thumb.dataset.name);
    this.dialog.querySelector(".viewer-prev").disabled = this.index <= 0;
    this.dialog.querySelector(".viewer-next").disabled = this.index >= all.length - 1;
  }

  move(step) {
    const all = this.thumbs;
    const i = this.index + step;
    if (i < 0 || i >= all.length) return;
    this.index = i;
    this.opener = all[i];
    this.show(all[i]);
  }
}
