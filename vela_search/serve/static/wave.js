// Waveforms drawn on a canvas from the index's peaks: the whole file with the hit's segment
// highlighted, and for long files a zoomed view of the segment and its neighbourhood.
"use strict";

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

// The time span a view shows and where the pairs it draws come from.
export function zoomSpan(hit, duration) {
  const span = Math.max(0.5, hit.end_s - hit.start_s);
  // A zoomed view where the segment is a small part of the file (long field recordings).
  if (span / duration > 0.2) return null;
  return { start: Math.max(0, hit.start_s - span), end: Math.min(duration, hit.end_s + span) };
}

export function viewsFor(hit, peaks) {
  const duration = peaks.duration_s || hit.duration_s || hit.end_s;
  const overview = {
    start: 0, end: duration, pairs: peaks.overview, step: duration / Math.max(1, peaks.overview.length), offset: 0,
  };
  const span = zoomSpan(hit, duration);
  if (!span) return { overview, zoom: null };
  const fine = peaks.fine && peaks.fine.length
    ? { pairs: peaks.fine, step: 1 / peaks.fine_rate, offset: peaks.fine_start_s || 0 }
    : overview;
  return { overview, zoom: { ...span, pairs: fine.pairs, step: fine.step, offset: fine.offset } };
}

export function drawView(box, view, hit) {
  const canvas = box.querySelector("canvas");
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(box.clientWidth * ratio)), height = Math.max(1, Math.round(box.clientHeight * ratio));
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  const mid = height / 2, seconds = view.end - view.start;
  const inHit = css("--wave-hit"), outHit = css("--wave");
  for (let x = 0; x < width; x++) {
    const t0 = view.start + (x / width) * seconds, t1 = view.start + ((x + 1) / width) * seconds;
    const first = Math.max(0, Math.floor((t0 - view.offset) / view.step));
    const last = Math.max(first, Math.ceil((t1 - view.offset) / view.step) - 1);
    let lo = 0, hi = 0;
    for (let i = first; i <= last && i < view.pairs.length; i++) {
      lo = Math.min(lo, view.pairs[i][0]);
      hi = Math.max(hi, view.pairs[i][1]);
    }
    ctx.fillStyle = t1 > hit.start_s && t0 < hit.end_s ? inHit : outHit;
    const top = mid - hi * mid * 0.95, bottom = mid - lo * mid * 0.95;
    ctx.fillRect(x, top, 1, Math.max(1, bottom - top));
  }
  const left = ((hit.start_s - view.start) / seconds) * 100;
  const right = ((Math.min(hit.end_s, view.end) - view.start) / seconds) * 100;
  const region = box.querySelector(".region");
  region.style.left = `${Math.max(0, left)}%`;
  region.style.width = `${Math.max(0.3, right - Math.max(0, left))}%`;
  box.dataset.start = String(view.start);
  box.dataset.end = String(view.end);
  box.setAttribute("aria-valuemin", String(Math.round(view.start)));
  box.setAttribute("aria-valuemax", String(Math.round(view.end)));
  box.setAttribute("aria-valuenow", String(Math.round(hit.start_s)));
}

// The time under a click (or tap) on a view.
export function timeAt(box, clientX) {
  const rect = box.getBoundingClientRect();
  const fraction = Math.min(1, Math.max(0, (clientX - rect.left) / rect.width));
  const start = Number(box.dataset.start), end = Number(box.dataset.end);
  return start + fraction * (end - start);
}

export function movePlayhead(box, seconds) {
  const start = Number(box.dataset.start), end = Number(box.dataset.end);
  const head = box.querySelector(".playhead");
  const inside = seconds >= start && seconds <= end;
  head.style.visibility = inside ? "visible" : "hidden";
  head.style.left = `${((seconds - start) / (end - start || 1)) * 100}%`;
  box.setAttribute("aria-valuenow", String(Math.round(seconds)));
}
