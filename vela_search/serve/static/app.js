// The vela-search page: search, listen, "more like this", search by example.
// Every path and text from the server is shown with textContent (never as HTML).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { index: null, token: null, indexes: [] };

// A token can be given once in the address (#token=...) and is kept for this tab only.
(function readToken() {
  const match = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  if (match) {
    sessionStorage.setItem("vela-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  state.token = sessionStorage.getItem("vela-token");
})();

function authHeaders() {
  return state.token ? { Authorization: "Bearer " + state.token } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (response.status === 401) {
    const token = window.prompt("This server needs a token:");
    if (token) {
      state.token = token;
      sessionStorage.setItem("vela-token", token);
      return api(path, options);
    }
  }
  if (!response.ok) {
    const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return body;
}

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function formatTime(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "-";
  const total = Math.max(0, Math.round(seconds)); // half up, as the CLI's format_timestamp
  const h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60;
  const two = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${two(m)}:${two(s)}` : `${two(m)}:${two(s)}`;
}

async function loadIndexes() {
  try {
    const listing = await api("/api/indexes");
    state.indexes = listing.indexes;
    const select = $("index");
    select.replaceChildren();
    for (const info of listing.indexes) {
      const option = document.createElement("option");
      option.value = info.name;
      option.textContent = info.name;
      select.append(option);
    }
    $("index-label").hidden = listing.indexes.length < 2;
    state.index = state.index || listing.indexes[0].name;
    select.value = state.index;
    showSummary();
  } catch (error) {
    $("summary").textContent = "";
    setStatus("Cannot reach the index: " + error.message, true);
  }
}

function showSummary() {
  const info = state.indexes.find((i) => i.name === state.index);
  if (!info) return;
  const model = String((info.embedder && info.embedder.model) || "unknown model");
  let text = `${info.name}: ${info.files} files, ${info.vectors} segments, generation ${info.generation}, ${model}`;
  if (info.failed_files) text += `, ${info.failed_files} failed`;
  if (info.notice) text += ` (${info.notice})`;
  $("summary").textContent = text;
  if (info.vectors === 0) {
    setStatus("This index is empty: add audio with `vela-search index PATH`; the server picks up the new generation by itself.", true);
  }
}

function commonOptions() {
  const options = { index: state.index, k: Number($("k").value) || 10, segments: $("segments").checked };
  const low = $("min-duration").value, high = $("max-duration").value;
  if (low !== "") options.min_duration = Number(low);
  if (high !== "") options.max_duration = Number(high);
  if ($("rerank").checked) options.rerank = 20;
  return options;
}

async function runSearch(label, request) {
  setStatus(label + " …");
  $("search-button").disabled = true;
  try {
    const answer = await request();
    renderHits(answer.hits);
    const count = answer.hits.length;
    const took = `${Math.round(answer.took_ms)} ms`;
    setStatus(count ? `${label}: ${count} hit${count === 1 ? "" : "s"} in ${took}` : `${label}: no hits`);
  } catch (error) {
    renderHits([]);
    setStatus(error.message, true);
  } finally {
    $("search-button").disabled = false;
  }
}

function textSearch() {
  const query = $("query").value;
  const mode = $("mode").value;
  const body = { ...commonOptions(), query, mode };
  if (mode === "instruction") body.instruction = $("instruction").value;
  return runSearch(`“${query.trim().slice(0, 60)}”`, () =>
    api("/api/search", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })
  );
}

function likeSearch(hit) {
  const body = { ...commonOptions(), segment_id: hit.segment_id };
  const where = `${formatTime(hit.start_s)}–${formatTime(hit.end_s)}`;
  return runSearch(`More like ${hit.display_path} ${where}`, () =>
    api("/api/search/like", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })
  );
}

function clipSearch(file) {
  const form = new FormData();
  form.append("file", file);
  for (const [key, value] of Object.entries(commonOptions())) form.append(key, String(value));
  return runSearch(`Sounds like ${file.name}`, () => api("/api/search/audio", { method: "POST", body: form }));
}

function audioUrl(hit) {
  const params = new URLSearchParams({ index: state.index });
  if (state.token) params.set("token", state.token);
  return `/api/audio/${encodeURIComponent(hit.segment_id)}?${params}`;
}

function playSegment(player, hit) {
  // The media fragment (#t=) makes the first load start at the segment; later plays seek there.
  if (!player.getAttribute("src")) player.src = `${audioUrl(hit)}#t=${hit.start_s}`;
  else player.currentTime = hit.start_s;
  player.dataset.segmentEnd = String(hit.end_s);
  player.play().catch((error) => setStatus("Cannot play: " + error.message, true));
}

function renderHits(hits) {
  const list = $("results");
  list.replaceChildren();
  const template = $("hit-template");
  for (const hit of hits) {
    const item = template.content.firstElementChild.cloneNode(true);
    item.querySelector(".rank").textContent = `${hit.rank}.`;
    item.querySelector(".score").textContent =
      hit.score.toFixed(4) + (hit.judge === null || hit.judge === undefined ? "" : ` · judge ${hit.judge.toFixed(2)}`);
    const path = item.querySelector(".path");
    path.textContent = hit.display_path;
    path.title = hit.path;
    const copies = hit.paths.length - 1;
    item.querySelector(".copies").textContent = copies > 0 ? `(+${copies} ${copies === 1 ? "copy" : "copies"})` : "";
    item.querySelector(".segment").textContent = `${formatTime(hit.start_s)}–${formatTime(hit.end_s)}`;
    item.querySelector(".duration").textContent = `of ${formatTime(hit.duration_s)}`;
    const player = item.querySelector(".player");
    player.dataset.segmentStart = String(hit.start_s);
    player.addEventListener("timeupdate", () => {
      // A segment played from its button stops at the segment's end.
      const end = Number(player.dataset.segmentEnd);
      if (player.dataset.segmentEnd && player.currentTime >= end) {
        delete player.dataset.segmentEnd;
        player.pause();
      }
    });
    const play = item.querySelector(".play");
    play.setAttribute("aria-label", `Play ${hit.display_path} from ${formatTime(hit.start_s)}`);
    play.addEventListener("click", () => playSegment(player, hit));
    const like = item.querySelector(".like");
    like.setAttribute("aria-label", `More like ${hit.display_path}`);
    like.addEventListener("click", () => likeSearch(hit));
    list.append(item);
  }
}

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
  $("index").addEventListener("change", () => {
    state.index = $("index").value;
    setStatus("");
    showSummary();
  });
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
loadIndexes();
