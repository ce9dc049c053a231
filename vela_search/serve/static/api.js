// Talking to the server: the token, JSON calls, and the addresses of a hit's audio, peaks and downloads.
"use strict";

export const session = { token: null, index: null };

// A token can be given once in the address (#token=...) and is kept for this tab only.
(function readToken() {
  const match = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  if (match) {
    sessionStorage.setItem("vela-token", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  session.token = sessionStorage.getItem("vela-token");
})();

export async function api(path, options = {}) {
  const headers = { ...(session.token ? { Authorization: "Bearer " + session.token } : {}), ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (response.status === 401) {
    const token = window.prompt("This server needs a token:");
    if (token) {
      session.token = token;
      sessionStorage.setItem("vela-token", token);
      return api(path, options);
    }
  }
  if (!response.ok) {
    throw new Error(body && body.error ? body.error : `${response.status} ${response.statusText}`);
  }
  return body;
}

export function postJson(path, body) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

// <audio> and download links cannot send a header: the token goes in the query string.
export function hitUrl(kind, hit, extra = {}) {
  const params = new URLSearchParams({ index: session.index, ...extra });
  if (session.token) params.set("token", session.token);
  return `/api/${kind}/${encodeURIComponent(hit.segment_id)}?${params}`;
}
