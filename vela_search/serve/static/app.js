// The vela-search page: search (words, a clip, the microphone, more like a hit), audition hits on their
// waveforms with the mouse or the keyboard, refine with facets, and take segments away.
// Every path and text from the server is shown with textContent (never as HTML).
"use strict";

import { api, hitUrl, postJson, session } from "./api.js";
import { drawView, movePlayhead, timeAt, viewsFor, zoomSpan } from "./wave.js";
import { facetGroups, filterParams, FILTER_KEYS, hasFilters, describeFilters } from "./facets.js";

const $ = (id) => document.getElementById(id);
const PAGE = 20;
const SEEK_S = 2;
const MAX_RECORD_S = 10;
const state = {
  indexes: [], source: null, k: PAGE, filters: {}, entries: [], selected: -1, playing: null,
  facetBase: null, recorder: null,
};

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function formatTime(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "-";
  const tenths = seconds < 60 && seconds % 1 !== 0;
  // Whole seconds round half up, as the CLI's format_timestamp; under a minute tenths are shown.
  const total = Math.max(0, tenths ? seconds : Math.round(seconds));
  const h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60;
  const two = (n) => String(Math.floor(n)).padStart(2, "0");
  const sec = tenths ? `${two(s)}.${Math.floor((s * 10) % 10)}` : two(s);
  return h ? `${h}:${two(m)}:${sec}` : `${two(m)}:${sec}`;
}

// "tones/…/name.wav": the start and the end of a long path, which is where names differ.
export function middleEllipsis(text, maxChars) {
  if (text.length <= maxChars || maxChars < 8) return text;
  const tail = Math.ceil((maxChars - 1) * 0.6), head = maxChars - 1 - tail;
  return text.slice(0, head) + "…" + text.slice(text.length - tail);
}

// ------------------------------------------------------------------------------------- the index
async function loadIndexes() {
  try {
    const listing = await api("/api/indexes");
    state.indexes = listing.indexes;
    const select = $("index");
    select.replaceChildren(...listing.indexes.map((info) => new Option(info.name, info.name)));
    $("index-label").hidden = listing.indexes.length < 2;
    const wanted = new URLSearchParams(location.search).get("index");
    session.index = listing.indexes.some((i) => i.name === wanted) ? wanted : listing.indexes[0].name;
    select.value = session.index;
    showSummary();
  } catch (error) {
    $("summary").textContent = "";
    setStatus("Cannot reach the index: " + error.message, true);
  }
}

function summaryText(info) {
  const model = String((info.embedder && info.embedder.model) || "unknown model");
  let text = `${info.name}: ${info.files} files, ${info.vectors} segments, generation ${info.generation}, ${model}`;
  if (info.failed_files) text += `, ${info.failed_files} failed`;
  if (info.notice) text += ` (${info.notice})`;
  return text;
}

function showSummary() {
  const info = state.indexes.find((i) => i.name === session.index);
  if (!info) return;
  $("summary").textContent = summaryText(info);
  showActivity(info);
  if (info.vectors === 0) {
    setStatus("This index is empty: add audio with `vela-search index PATH`; the server picks up the new generation by itself.", true);
  }
}

// What a running writer has pending ("12 files being added"), from /api/indexes, looked at again every
// few seconds while the page is shown: a watched folder's new files appear without a reload.
const ACTIVITY_POLL_MS = 2000;

export function activityText(activity) {
  if (!activity || !activity.live) return "";
  const parts = [];
  const n = activity.files_waiting;
  if (n) parts.push(`${n} file${n === 1 ? "" : "s"} being added`);
  if (activity.maintenance && activity.maintenance.length) parts.push(`maintenance: ${activity.maintenance.join(", ")}`);
  const paused = activity.paused_roots || [];
  if (paused.length) parts.push(`${paused.length} folder${paused.length === 1 ? "" : "s"} missing (paused)`);
  return parts.join(" · ");
}

function showActivity(info) {
  const text = activityText(info.activity);
  $("activity").textContent = text;
  $("activity").hidden = !text;
}

async function pollIndexes() {
  if (document.hidden || !state.indexes.length) return;
  try {
    state.indexes = (await api("/api/indexes")).indexes;
  } catch {
    return; // the next search says what is wrong
  }
  const info = state.indexes.find((i) => i.name === session.index);
  if (!info) return;
  $("summary").textContent = summaryText(info);
  showActivity(info);
}

// ------------------------------------------------------------------------------------- searching
function options(k = state.k, filters = state.filters) {
  const opts = { index: session.index, k, segments: $("segments").checked, ...filterParams(filters) };
  if ($("rerank").checked) opts.rerank = 20;
  return opts;
}

function ask(source, opts) {
  if (source.kind === "text") {
    const body = { ...opts, query: source.query, mode: source.mode };
    if (source.mode === "instruction") body.instruction = source.instruction;
    return postJson("/api/search", body);
  }
  if (source.kind === "like") return postJson("/api/search/like", { ...opts, segment_id: source.segment_id });
  const form = new FormData();
  form.append("file", source.file);
  for (const [key, value] of Object.entries(opts)) if (value !== undefined) form.append(key, String(value));
  return api("/api/search/audio", { method: "POST", body: form });
}

async function run({ remember = true, keepSelection = false } = {}) {
  const source = state.source;
  if (!source) return;
  setStatus(source.label + " …");
  $("search-button").disabled = true;
  try {
    const answer = await ask(source, options());
    if (remember) writeAddress();
    if (!hasFilters(state.filters)) state.facetBase = answer.hits;
    renderHits(answer.hits, keepSelection);
    renderFacets(state.facetBase || answer.hits);
    await explain(answer, source);
  } catch (error) {
    renderHits([]);
    setStatus(error.message, true);
  } finally {
    $("search-button").disabled = false;
  }
}

// The status line, and why there are no hits when a filter removed them all.
async function explain(answer, source) {
  const count = answer.hits.length;
  $("more").hidden = count < state.k || state.k >= 1000;
  if (count) {
    setStatus(`${source.label}: ${count} hit${count === 1 ? "" : "s"} in ${Math.round(answer.took_ms)} ms`);
    return;
  }
  if (hasFilters(state.filters)) {
    const unfiltered = await ask(source, options(1, {})).catch(() => null);
    if (unfiltered && unfiltered.hits.length) {
      setStatus(`${source.label}: no hits match the filters (${describeFilters(state.filters)}); without them there are hits`);
      showClearFilters(true);
      return;
    }
  }
  setStatus(`${source.label}: no hits`);
}

function showClearFilters(show) {
  $("clear-filters").hidden = !show;
}

function textSearch() {
  const query = $("query").value;
  const mode = $("mode").value;
  state.source = {
    kind: "text", query, mode, instruction: $("instruction").value, label: `“${query.trim().slice(0, 60)}”`,
  };
  state.k = PAGE;
  return run();
}

function likeSearch(hit) {
  const where = hit.display_path ? `${hit.display_path} ${formatTime(hit.start_s)}–${formatTime(hit.end_s)}` : `segment ${hit.segment_id}`;
  state.source = { kind: "like", segment_id: hit.segment_id, label: `More like ${where}` };
  state.k = PAGE;
  return run();
}

function clipSearch(file) {
  state.source = { kind: "clip", file, label: `Sounds like ${file.name}` };
  state.k = PAGE;
  return run({ remember: false });
}

// ------------------------------------------------------------------------------ the address bar
function writeAddress() {
  const params = new URLSearchParams();
  const source = state.source;
  if (source.kind === "text") {
    params.set("q", source.query);
    if (source.mode !== "caption") params.set("mode", source.mode);
    if (source.mode === "instruction") params.set("instruction", source.instruction);
  } else if (source.kind === "like") {
    params.set("like", String(source.segment_id));
  }
  if ($("segments").checked) params.set("segments", "1");
  if ($("rerank").checked) params.set("rerank", "1");
  for (const key of FILTER_KEYS) if (state.filters[key]) params.set(key, state.filters[key]);
  if (state.k !== PAGE) params.set("k", String(state.k));
  if (state.indexes.length > 1) params.set("index", session.index);
  const address = `${location.pathname}?${params}`;
  if (address !== location.pathname + location.search) history.pushState(null, "", address);
}

function readAddress() {
  const params = new URLSearchParams(location.search);
  state.filters = {};
  for (const key of FILTER_KEYS) if (params.get(key)) state.filters[key] = params.get(key);
  $("segments").checked = params.get("segments") === "1";
  $("rerank").checked = params.get("rerank") === "1";
  state.k = Math.min(1000, Math.max(1, Math.round(Number(params.get("k"))) || PAGE));
  state.facetBase = null;
  if (params.has("q")) {
    $("query").value = params.get("q");
    $("mode").value = params.get("mode") || "caption";
    if (params.has("instruction")) $("instruction").value = params.get("instruction");
    $("instruction-label").hidden = $("mode").value !== "instruction";
    const query = params.get("q");
    state.source = { kind: "text", query, mode: $("mode").value, instruction: $("instruction").value, label: `“${query.trim().slice(0, 60)}”` };
  } else if (params.has("like")) {
    const id = Number(params.get("like"));
    state.source = { kind: "like", segment_id: id, label: `More like segment ${id}` };
  } else {
    state.source = null;
  }
  return state.source !== null;
}

// ----------------------------------------------------------------------------------------- facets
function renderFacets(hits) {
  const box = $("facets");
  box.replaceChildren();
  const groups = facetGroups(hits, state.filters);
  for (const group of groups) {
    const row = document.createElement("div");
    row.className = "facet";
    row.dataset.facet = group.key;
    const name = document.createElement("span");
    name.className = "facet-name";
    name.textContent = group.name;
    row.append(name);
    for (const value of group.values) {
      const button = document.createElement("button");
      button.type = "button";
      const pressed = state.filters[group.key] === value.id;
      button.setAttribute("aria-pressed", String(pressed));
      button.dataset.value = value.id;
      button.title = value.title || value.label;
      button.textContent = value.label + " ";
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = value.count === null ? "" : `(${value.count})`;
      button.append(count);
      button.setAttribute("aria-label", `${group.name} ${value.title || value.label}${pressed ? ", on: press to remove" : ""}`);
      button.addEventListener("click", () => toggleFilter(group.key, value.id));
      row.append(button);
    }
    box.append(row);
  }
  box.hidden = groups.length === 0;
}

function toggleFilter(key, value) {
  if (state.filters[key] === value) delete state.filters[key];
  else state.filters[key] = value;
  state.k = PAGE;
  showClearFilters(false);
  return run();
}

// ------------------------------------------------------------------------------------- the hits
// Shown under a hit: its description (else title or comment), then category, subcategory and library.
const WORD_FIELDS = ["description", "title", "comment", "category", "subcategory", "library"];

function renderWords(target, words, query) {
  // Matched query words are wrapped in <mark> (text nodes only: metadata is never parsed as HTML).
  const terms = (query.toLowerCase().match(/[\p{L}\p{N}]+/gu) || []).filter((t) => t.length > 1);
  const plain = new Set(["description", "title", "comment"]);
  const parts = WORD_FIELDS.filter((name) => words[name]).map((name) =>
    plain.has(name) ? words[name] : `${name}: ${words[name]}`
  );
  target.replaceChildren();
  target.hidden = parts.length === 0;
  for (const piece of parts.join(" · ").split(/([\p{L}\p{N}]+)/u)) {
    const lower = piece.toLowerCase();
    const hit = terms.some((t) => lower.startsWith(t) || (lower.length > 3 && t.startsWith(lower)));
    if (hit) {
      const mark = document.createElement("mark");
      mark.textContent = piece;
      target.append(mark);
    } else {
      target.append(document.createTextNode(piece));
    }
  }
}

function renderHits(hits, keepSelection = false) {
  stopPlaying();
  nearView.disconnect();
  const previous = keepSelection ? state.selected : -1;
  const list = $("results");
  list.replaceChildren();
  state.entries = hits.map((hit, i) => buildHit(hit, i));
  list.append(...state.entries.map((entry) => entry.el));
  state.selected = -1;
  fitPaths();
  if (previous >= 0 && state.entries.length) select(Math.min(previous, state.entries.length - 1), false);
  for (const entry of state.entries) nearView.observe(entry.el);
}

// Peaks are fetched as hits come near the screen: a long result list costs what is looked at.
const nearView = new IntersectionObserver(
  (seen) => {
    for (const item of seen) {
      if (!item.isIntersecting) continue;
      nearView.unobserve(item.target);
      const entry = state.entries.find((e) => e.el === item.target);
      if (entry) loadPeaks(entry);
    }
  },
  { rootMargin: "800px 0px" }
);

function buildHit(hit, i) {
  const el = $("hit-template").content.firstElementChild.cloneNode(true);
  const entry = { hit, el, player: el.querySelector(".player"), views: null, stopAt: null, peaks: null };
  el.dataset.segmentId = String(hit.segment_id);
  el.dataset.start = String(hit.start_s);
  el.dataset.end = String(hit.end_s);
  el.setAttribute("aria-label", `Hit ${hit.rank}: ${hit.display_path}, score ${hit.score.toFixed(3)}`);
  el.querySelector(".rank").textContent = `${hit.rank}.`;
  const judged = hit.judge === null || hit.judge === undefined ? "" : ` · judge ${hit.judge.toFixed(2)}`;
  el.querySelector(".score").textContent = hit.score.toFixed(3) + judged;
  const bar = el.querySelector(".score-bar");
  bar.querySelector(".fill").style.width = `${Math.max(0, Math.min(1, hit.score)) * 100}%`;
  bar.setAttribute("aria-valuenow", hit.score.toFixed(3));
  bar.setAttribute("aria-label", `score ${hit.score.toFixed(3)}`);
  const path = el.querySelector(".path");
  path.textContent = hit.display_path;
  path.dataset.full = hit.display_path;
  path.title = hit.path;
  const copies = hit.paths.length - 1;
  el.querySelector(".copies").textContent = copies > 0 ? `(+${copies} ${copies === 1 ? "copy" : "copies"})` : "";
  const source = state.source || {};
  const marked = source.kind === "text" && (source.mode === "words" || source.mode === "hybrid") ? source.query : "";
  renderWords(el.querySelector(".words"), hit.words || {}, marked || "");
  el.querySelector(".segment").textContent = `${formatTime(hit.start_s)}–${formatTime(hit.end_s)}`;
  el.querySelector(".duration").textContent = `of ${formatTime(hit.duration_s)}`;
  wireHitControls(entry, i);
  return entry;
}

function wireHitControls(entry, i) {
  const { hit, el, player } = entry;
  const name = hit.display_path;
  el.addEventListener("click", () => select(i, false));
  const label = (selector, text) => el.querySelector(selector).setAttribute("aria-label", text);
  el.querySelector(".play").addEventListener("click", (event) => {
    event.stopPropagation();
    select(i, false);
    togglePlay(entry);
  });
  label(".play", `Play ${name} from ${formatTime(hit.start_s)}`);
  el.querySelector(".like").addEventListener("click", () => likeSearch(hit));
  label(".like", `More like ${name}`);
  const clip = el.querySelector(".download-clip"), file = el.querySelector(".download-file");
  clip.href = hitUrl("clip", hit);
  file.href = hitUrl("file", hit);
  label(".download-clip", `Download the segment ${formatTime(hit.start_s)}–${formatTime(hit.end_s)} of ${name} as WAV`);
  label(".download-file", `Download the whole file ${name}`);
  el.querySelector(".copy").addEventListener("click", () => copyPath(hit));
  label(".copy", `Copy the path of ${name}`);
  for (const handle of [el.querySelector(".hit-head"), clip]) {
    handle.draggable = true;
    handle.addEventListener("dragstart", (event) => dragOut(event, hit));
  }
  for (const box of el.querySelectorAll(".wave")) {
    box.setAttribute("aria-label", `Waveform of ${name}: click to play from there`);
    box.addEventListener("click", (event) => {
      event.stopPropagation();
      select(i, false);
      seekAndPlay(entry, timeAt(box, event.clientX));
    });
  }
  player.addEventListener("play", () => startPlayhead(entry));
  player.addEventListener("pause", () => stopPlayhead(entry));
  player.addEventListener("timeupdate", () => {
    if (entry.stopAt !== null && player.currentTime >= entry.stopAt) {
      entry.stopAt = null;
      player.pause();
    }
  });
}

async function loadPeaks(entry) {
  try {
    const hit = entry.hit, span = hit.duration_s ? zoomSpan(hit, hit.duration_s) : null;
    // Fine pairs only for the zoomed view's span (none when the file needs no zoom).
    const fine = span ? { fine_from: span.start, fine_to: span.end } : { fine: "false" };
    const peaks = await api(hitUrl("peaks", hit, fine));
    entry.peaks = peaks;
    entry.views = viewsFor(entry.hit, peaks);
    drawHit(entry);
    const parts = [];
    if (peaks.sample_rate) parts.push(`${(peaks.sample_rate / 1000).toLocaleString("en", { maximumFractionDigits: 1 })} kHz`);
    if (peaks.channels) parts.push(peaks.channels === 1 ? "mono" : peaks.channels === 2 ? "stereo" : `${peaks.channels} ch`);
    const ext = entry.hit.path.split(".").pop();
    if (ext && ext.length <= 5) parts.push(ext.toUpperCase());
    entry.el.querySelector(".format").textContent = parts.join(" · ");
    entry.el.classList.add("drawn");
  } catch (error) {
    entry.el.querySelector(".format").textContent = "no waveform: " + error.message;
  }
}

function drawHit(entry) {
  if (!entry.views) return;
  drawView(entry.el.querySelector(".wave.overview"), entry.views.overview, entry.hit);
  const zoom = entry.el.querySelector(".wave.zoom");
  zoom.hidden = !entry.views.zoom;
  if (entry.views.zoom) drawView(zoom, entry.views.zoom, entry.hit);
}

function fitPaths() {
  const probe = document.createElement("canvas").getContext("2d");
  for (const entry of state.entries) {
    const path = entry.el.querySelector(".path");
    path.textContent = path.dataset.full;
    if (path.scrollWidth <= path.clientWidth) continue;
    probe.font = getComputedStyle(path).font;
    const charWidth = probe.measureText("M").width || 8;
    path.textContent = middleEllipsis(path.dataset.full, Math.floor(path.clientWidth / charWidth));
  }
}

// ---------------------------------------------------------------------------------- listening
function stopPlaying() {
  if (state.playing) state.playing.player.pause();
  state.playing = null;
}

function load(entry, from) {
  const player = entry.player;
  if (!player.getAttribute("src")) {
    // The media fragment (#t=) makes the first load start there; later seeks set currentTime.
    player.src = `${hitUrl("audio", entry.hit)}#t=${from}`;
  } else {
    player.currentTime = from;
  }
}

function play(entry, from, stopAt) {
  if (state.playing && state.playing !== entry) state.playing.player.pause();
  state.playing = entry;
  entry.stopAt = stopAt;
  load(entry, from);
  entry.player.play().catch((error) => {
    if (error.name !== "AbortError") setStatus("Cannot play: " + error.message, true);
  });
}

function togglePlay(entry) {
  if (state.playing === entry && !entry.player.paused) {
    entry.player.pause();
    return;
  }
  play(entry, entry.hit.start_s, entry.hit.end_s);
}

function seekAndPlay(entry, seconds) {
  play(entry, Math.max(0, seconds), null);
}

function seekBy(entry, delta) {
  const player = entry.player;
  const now = player.getAttribute("src") ? player.currentTime : entry.hit.start_s;
  const target = Math.max(0, now + delta);
  if (entry.stopAt !== null && target >= entry.stopAt) entry.stopAt = null;
  if (state.playing === entry && !player.paused) load(entry, target);
  else play(entry, target, entry.stopAt);
}

function startPlayhead(entry) {
  const boxes = [...entry.el.querySelectorAll(".wave")];
  const clock = entry.el.querySelector(".clock");
  boxes.forEach((box) => box.classList.add("playing"));
  const tick = () => {
    const now = entry.player.currentTime;
    boxes.forEach((box) => movePlayhead(box, now));
    clock.textContent = `${formatTime(now)} / ${formatTime(entry.hit.duration_s)}`;
    if (!entry.player.paused) entry.frame = requestAnimationFrame(tick);
  };
  tick();
}

function stopPlayhead(entry) {
  cancelAnimationFrame(entry.frame);
  entry.el.querySelectorAll(".wave").forEach((box) => {
    box.classList.remove("playing");
    box.classList.add("seeked");
    movePlayhead(box, entry.player.currentTime);
  });
}

// ------------------------------------------------------------------------------------ selection
function select(i, focus = true) {
  if (!state.entries.length) return;
  const index = Math.max(0, Math.min(state.entries.length - 1, i));
  const old = state.entries[state.selected];
  if (old) {
    old.el.classList.remove("selected");
    old.el.removeAttribute("aria-current");
  }
  state.selected = index;
  const entry = state.entries[index];
  entry.el.classList.add("selected");
  entry.el.setAttribute("aria-current", "true");
  if (focus) entry.el.focus({ preventScroll: true });
  entry.el.scrollIntoView({ block: "nearest" });
}

// ------------------------------------------------------------------------------------ take away
function dragOut(event, hit) {
  const url = new URL(hitUrl("clip", hit), location.href).href;
  const name = `${hit.display_path.split("/").pop().replace(/\.[^.]*$/, "")}_${hit.start_s}-${hit.end_s}s.wav`;
  // Chromium saves a file dragged out of the page from DownloadURL; others get the link.
  event.dataTransfer.setData("DownloadURL", `audio/wav:${name}:${url}`);
  event.dataTransfer.setData("text/uri-list", url);
  event.dataTransfer.setData("text/plain", hit.path);
}

async function copyPath(hit) {
  try {
    await navigator.clipboard.writeText(hit.path);
  } catch (_) {
    const area = document.createElement("textarea");
    area.value = hit.path;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  setStatus(`Copied the path of ${hit.display_path}`);
}

// ---------------------------------------------------------------------------------- microphone
async function toggleRecording() {
  if (state.recorder) {
    state.recorder.stop();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (error) {
    setStatus("Cannot use the microphone: " + error.message, true);
    return;
  }
  const chunks = [];
  const recorder = new MediaRecorder(stream);
  state.recorder = recorder;
  recorder.addEventListener("dataavailable", (event) => event.data.size && chunks.push(event.data));
  recorder.addEventListener("stop", () => {
    clearTimeout(recorder.limit);
    stream.getTracks().forEach((track) => track.stop());
    state.recorder = null;
    showRecording(false);
    const type = recorder.mimeType || "audio/webm";
    const file = new File(chunks, `recording.${type.includes("ogg") ? "ogg" : "webm"}`, { type });
    clipSearch(file);
  });
  recorder.start();
  recorder.limit = setTimeout(() => recorder.state === "recording" && recorder.stop(), MAX_RECORD_S * 1000);
  showRecording(true);
  setStatus(`Recording … press the button again to search with it (${MAX_RECORD_S} s at most)`);
}

function showRecording(on) {
  $("record").setAttribute("aria-pressed", String(on));
  $("record").querySelector(".record-label").textContent = on ? "Stop and search" : "Record";
}

// ------------------------------------------------------------------------------------- keyboard
function onKey(event) {
  const help = $("help");
  if (!help.hidden) {
    if (event.key === "Escape" || event.key === "?") {
      event.preventDefault();
      closeHelp();
    }
    return;
  }
  const target = event.target;
  const typing = target.matches("textarea, select, [contenteditable], input:not([type=checkbox], [type=radio])");
  if (typing) {
    if (event.key === "Escape") target.blur();
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const onControl = target.matches("button, a, summary");
  const entry = state.entries[state.selected];
  const actions = {
    "/": () => $("query").focus(),
    "?": openHelp,
    ArrowDown: () => select(state.selected + 1),
    j: () => select(state.selected + 1),
    ArrowUp: () => select(state.selected - 1),
    k: () => select(state.selected - 1),
    " ": () => entry && !onControl && togglePlay(entry),
    ArrowLeft: () => entry && seekBy(entry, -SEEK_S),
    ArrowRight: () => entry && seekBy(entry, SEEK_S),
    Enter: () => entry && !onControl && likeSearch(entry.hit),
    m: () => entry && likeSearch(entry.hit),
    d: () => entry && entry.el.querySelector(".download-clip").click(),
  };
  const action = actions[event.key];
  if (!action || (onControl && (event.key === " " || event.key === "Enter"))) return;
  event.preventDefault();
  action();
}

function openHelp() {
  $("help").hidden = false;
  $("help-close").focus();
}

function closeHelp() {
  $("help").hidden = true;
  $("help-button").focus();
}

// ------------------------------------------------------------------------------------- wiring
function wire() {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    textSearch();
  });
  $("query").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      textSearch();
    }
  });
  $("mode").addEventListener("change", () => {
    $("instruction-label").hidden = $("mode").value !== "instruction";
  });
  $("segments").addEventListener("change", () => state.source && run());
  $("rerank").addEventListener("change", () => state.source && run());
  $("index").addEventListener("change", () => {
    session.index = $("index").value;
    setStatus("");
    showSummary();
  });
  wireExample();
  $("record").addEventListener("click", toggleRecording);
  $("more").addEventListener("click", () => {
    state.k = Math.min(1000, state.k + PAGE);
    run({ keepSelection: true });
  });
  $("clear-filters").addEventListener("click", () => {
    state.filters = {};
    showClearFilters(false);
    run();
  });
  $("help-button").addEventListener("click", openHelp);
  $("help-close").addEventListener("click", closeHelp);
  $("help").addEventListener("click", (event) => event.target === $("help") && closeHelp());
  document.addEventListener("keydown", onKey);
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => {
      fitPaths();
      state.entries.forEach(drawHit);
    }, 120);
  });
  window.addEventListener("popstate", () => readAddress() && run({ remember: false }));
}

function wireExample() {
  const drop = $("drop"), clip = $("clip");
  drop.addEventListener("click", () => clip.click());
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      clip.click();
    }
  });
  clip.addEventListener("change", () => clip.files.length && clipSearch(clip.files[0]));
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) clipSearch(event.dataTransfer.files[0]);
  });
}

wire();
setInterval(pollIndexes, ACTIVITY_POLL_MS);
loadIndexes().then(() => session.index && readAddress() && run({ remember: false }));
