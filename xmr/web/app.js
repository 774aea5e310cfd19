// xmr serve: the search page. Plain JavaScript, no build step, no CDN.
"use strict";

const state = { lastQuery: null, running: 0 };
const $ = (sel) => document.querySelector(sel);

// The launch URL carries the token in its fragment (#token=...): keep it in this origin's
// sessionStorage and send it as a header; no cookie (a browser would send one to every
// port of 127.0.0.1). Images and players load the signed URLs each result carries.
async function authenticate() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) sessionStorage.setItem("xmr-token", decodeURIComponent(m[1]));
  const token = sessionStorage.getItem("xmr-token");
  if (!token) { message("Open the address 'xmr serve' printed (it holds the access token)."); return false; }
  const res = await fetch("/api/ping", { headers: { Authorization: "Bearer " + token } });
  if (m) history.replaceState(null, "", location.pathname);
  if (!res.ok) { message("The token was refused: open the address 'xmr serve' printed."); return false; }
  return true;
}

function headers() {
  return { Authorization: "Bearer " + sessionStorage.getItem("xmr-token") };
}

function message(text) { $("#message").textContent = text; }

function options() {
  const types = [...document.querySelectorAll('input[name="type"]:checked')].map((c) => c.value);
  const under = $("#under").value.trim();
  const out = {
    k: parseInt($("#k").value, 10),
    type: types.length === document.querySelectorAll('input[name="type"]').length ? [] : types,
    under: under ? [under] : [],
    explain: true,
  };
  // metadata filters, sort and fusion (docs/metadata.md): only what is set is sent
  for (const id of ["after", "before", "camera", "near"]) {
    const v = $("#" + id).value.trim();
    if (v) out[id] = v;
  }
  out.sort = $("#sort").value;
  out.match = $("#match").value;
  return out;
}

async function runSearch(query) {
  state.lastQuery = query;
  const ticket = ++state.running;
  const opts = options();
  let body, hdrs = headers();
  if (query.file) {
    body = new FormData();
    body.append("query", JSON.stringify(opts));
    body.append("file", query.file, query.file.name);
  } else {
    body = JSON.stringify(Object.assign({ q: query.q, like: query.like }, opts));
    hdrs["Content-Type"] = "application/json";
  }
  message("Searching…");
  document.body.classList.add("busy");
  try {
    const res = await fetch("/api/search", { method: "POST", headers: hdrs, body });
    const doc = await res.json();
    if (ticket !== state.running) return;
    if (!res.ok) { message(doc.error || "search failed (" + res.status + ")"); render(null); return; }
    render(doc, query);
  } catch (err) {
    if (ticket === state.running) message("search failed: " + err);
  } finally {
    if (ticket === state.running) document.body.classList.remove("busy");
  }
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
}

function basename(p) { return p.split("/").pop(); }
function dirname(p) { const i = p.lastIndexOf("/"); return i > 0 ? p.slice(0, i) : "/"; }

// The matching passage with the query's words marked (text nodes only: never HTML).
function highlighted(snippet, words) {
  const out = el("p", { class: "snippet" });
  const usable = words.filter((w) => w.length > 2).map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  if (!usable.length) { out.textContent = snippet; return out; }
  const re = new RegExp("(" + usable.join("|") + ")", "gi");
  let last = 0;
  for (const m of snippet.matchAll(re)) {
    out.append(snippet.slice(last, m.index), el("mark", {}, m[0]));
    last = m.index + m[0].length;
  }
  out.append(snippet.slice(last));
  return out;
}

function queryWords(doc) {
  return doc.query.filter((p) => p.kind === "text" && p.weight > 0).flatMap((p) => p.value.split(/\s+/));
}

function clock(s) {
  const t = Math.floor(s), h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), sec = String(t % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

function fileUrl(r, kind) { return (r.urls || {})[kind] || "#"; }

function explainPanel(r) {
  const e = r.explain;
  if (!e) return null;
  const list = el("ul", {});
  for (const c of e.contributions || []) {
    const concepts = (c.concepts || []).slice(0, 5).map((x) => x.concept).join(", ");
    list.append(el("li", {}, `${c.part}: cosine ${c.cosine.toFixed(3)} (${c.route})` + (concepts ? " via " + concepts : "")));
  }
  const attrs = { class: "explain" };
  if ($("#explain").checked) attrs.open = "";
  return el("details", attrs,
    el("summary", {}, "explain"),
    el("dl", {},
      el("dt", {}, "route"), el("dd", {}, e.route),
      el("dt", {}, "space"), el("dd", {}, r.space),
      el("dt", {}, "model"), el("dd", {}, e.model_id),
      el("dt", {}, "raw cosine"), el("dd", {}, r.raw.toFixed(4)),
      el("dt", {}, "segment"), el("dd", {}, e.segment_kind + (e.segment ? ` (${e.segment})` : "")),
      el("dt", {}, "semantic score"), el("dd", {}, (e.semantic_score ?? r.score).toFixed(2)),
      el("dt", {}, "keyword"), el("dd", {}, e.keyword ? `bm25 ${e.keyword.bm25.toFixed(2)}, rank ${e.keyword.rank}, +${e.keyword.score.toFixed(2)}` : "no match")),
    list);
}

function card(r, i, words) {
  const li = el("li", { class: "card " + r.modality, "data-path": r.path, "data-modality": r.modality });
  const media = el("div", { class: "media" });
  // what /api/files offers for this file is its media kind's to say (xmr.media)
  const previews = r.previews || [];
  if (r.file_id && r.modality === "video") {
    // the matching frame (the server's thumb URL carries its time), and the video from that time
    const start = r.start_s || 0;
    const video = el("video", { controls: "", preload: "metadata", src: fileUrl(r, "original"), "data-start": String(start), class: "player" });
    const seek = () => { if (video.currentTime < start) video.currentTime = start; };
    video.addEventListener("loadedmetadata", seek, { once: true });
    const thumb = el("img", { src: fileUrl(r, "thumb"), alt: basename(r.path), loading: "lazy", class: "thumb", title: "play from here" });
    thumb.addEventListener("click", () => { seek(); video.play(); });
    const where = (r.explain && r.explain.segment) || (r.space === "clap" ? "sound" : "frame");
    media.append(thumb, video, el("p", { class: "where" }, `match ${clock(start)} (${where})`));
  } else if (r.file_id && previews.includes("thumb")) {
    media.append(el("a", { href: fileUrl(r, "original"), target: "_blank", rel: "noopener" },
      el("img", { src: fileUrl(r, "thumb"), alt: basename(r.path), loading: "lazy", class: "thumb" })));
  } else if (r.file_id && previews.includes("audio")) {
    const audio = el("audio", { controls: "", preload: "metadata", src: fileUrl(r, "audio"), "data-start": String(r.start_s || 0) });
    const start = r.start_s || 0;
    // start at the matching window; every play from the beginning jumps there once
    audio.addEventListener("loadedmetadata", () => { if (audio.currentTime < start) audio.currentTime = start; }, { once: true });
    media.append(audio, el("p", { class: "where" }, `match ${start.toFixed(1)}–${(r.end_s || 0).toFixed(1)} s`));
  }
  if (r.snippet) {
    const snippet = highlighted(r.snippet, words);
    if (r.explain && r.explain.segment === "ocr") {  // text read in the picture (or the scanned page)
      snippet.classList.add("ocr");
      snippet.title = r.modality === "image" ? "text recognised in the image" : "text recognised in the scanned page";
    }
    media.append(snippet);
  }
  const more = el("button", { type: "button", class: "more", title: "Search with this file",
    onclick: () => runSearch({ like: [r.file_id], label: basename(r.path) }) }, "more like this");
  if (!r.file_id) more.disabled = true;
  li.append(
    media,
    el("div", { class: "meta" },
      el("span", { class: "rank" }, String(i + 1)),
      el("span", { class: "score", title: "calibrated score (comparable across types)" }, r.score.toFixed(2)),
      el("span", { class: "type" }, r.modality),
      el("a", { class: "name", href: r.file_id ? fileUrl(r, "original") : "#", target: "_blank", rel: "noopener", title: r.path }, basename(r.path)),
      el("span", { class: "folder", title: dirname(r.path) }, dirname(r.path)),
      r.date ? el("span", { class: "date" }, r.date.slice(0, 10)) : null),
    el("div", { class: "actions" }, more, explainPanel(r)));
  return li;
}

function render(doc, query) {
  const list = $("#results");
  list.replaceChildren();
  if (!doc) return;
  const words = queryWords(doc);
  doc.results.forEach((r, i) => list.append(card(r, i, words)));
  const what = query && query.file ? query.file.name : query && query.like ? "more like " + query.label : doc.query.map((p) => p.value).join(" + ");
  message(doc.results.length ? `${doc.results.length} results for ${what} (${Math.round(doc.elapsed_s * 1000)} ms)` : "no results for " + what);
}

// Near duplicates (xmr dupes): a simple list of groups, each file linked to its original.
async function showDupes() {
  message("Looking for near duplicates…");
  const res = await fetch("/api/dupes", { headers: headers() });
  const doc = await res.json();
  const list = $("#results");
  list.replaceChildren();
  if (!res.ok) { message(doc.error || "failed (" + res.status + ")"); return; }
  doc.groups.forEach((g, i) => {
    const files = el("ul", {});
    for (const f of g.files) {
      files.append(el("li", {}, el("a", { href: (f.urls || {}).original || "#", target: "_blank", rel: "noopener", title: f.path }, f.path),
        ` (${f.similarity.toFixed(3)})`));
    }
    list.append(el("li", { class: "dupes " + g.modality }, el("p", {}, `group ${i + 1}: ${g.modality}, ${g.files.length} files`), files));
  });
  message(doc.groups.length ? `${doc.groups.length} groups of near duplicates (nothing is deleted)` : "no near duplicates");
}

function setupDrop() {
  const drop = $("#drop");
  let depth = 0;
  window.addEventListener("dragenter", (e) => { e.preventDefault(); depth++; drop.hidden = false; });
  window.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; drop.hidden = true; } });
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => {
    e.preventDefault(); depth = 0; drop.hidden = true;
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) runSearch({ file });
  });
  $("#file").addEventListener("change", (e) => { const f = e.target.files[0]; if (f) runSearch({ file: f }); e.target.value = ""; });
}

function setupKeys() {
  document.addEventListener("keydown", (e) => {
    const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
    if (e.key === "/" && !typing) { e.preventDefault(); $("#q").focus(); $("#q").select(); }
    if (e.key === "Escape" && document.activeElement === $("#q")) $("#q").value = "";
  });
  // arrow keys move between result cards' links
  $("#results").addEventListener("keydown", (e) => {
    if (e.key !== "ArrowDown" && e.key !== "ArrowUp") return;
    const cards = [...document.querySelectorAll("#results .card .name")];
    const i = cards.indexOf(document.activeElement);
    if (i < 0) return;
    e.preventDefault();
    const next = cards[Math.max(0, Math.min(cards.length - 1, i + (e.key === "ArrowDown" ? 1 : -1)))];
    next.focus();
  });
}

async function main() {
  setupDrop();
  setupKeys();
  $("#search").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("#q").value.trim();
    if (q) runSearch({ q });
  });
  $("#dupes-button").addEventListener("click", () => { showDupes().catch((err) => message("failed: " + err)); });
  for (const c of document.querySelectorAll("#filters input, #filters select")) {
    if (c.id === "explain") continue;
    c.addEventListener("change", () => { if (state.lastQuery) runSearch(state.lastQuery); });
  }
  // the explain box opens or closes every result's explain panel (the API always explains)
  $("#explain").addEventListener("change", (e) => {
    for (const d of document.querySelectorAll("#results details.explain")) d.open = e.target.checked;
  });
  if (await authenticate()) { document.body.dataset.ready = "1"; }
}

main();
