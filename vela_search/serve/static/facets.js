// Facets of a result list (folder, file type, length band) and the search filters they stand for.
"use strict";

export const FILTER_KEYS = ["folder", "type", "length"];

const BANDS = [
  { id: "0-5", label: "< 5 s", max: 5 },
  { id: "5-30", label: "5–30 s", min: 5, max: 30 },
  { id: "30-300", label: "30 s–5 min", min: 30, max: 300 },
  { id: "300-", label: "> 5 min", min: 300 },
];
const MAX_FOLDERS = 8;

// Glob characters in a folder name match themselves.
const escapeGlob = (text) => text.replace(/[[\]*?]/g, (c) => `[${c}]`);
// Paths match case-sensitively: ".wav" and ".WAV" are one type.
const anyCase = (text) =>
  [...text].map((c) => (c.toLowerCase() !== c.toUpperCase() ? `[${c.toLowerCase()}${c.toUpperCase()}]` : escapeGlob(c))).join("");
const extension = (path) => {
  const name = path.split("/").pop();
  const dot = name.lastIndexOf(".");
  return dot > 0 ? name.slice(dot + 1).toLowerCase() : "";
};
const bandOf = (seconds) =>
  BANDS.find((b) => (b.min === undefined || seconds >= b.min) && (b.max === undefined || seconds < b.max));

export function hasFilters(filters) {
  return FILTER_KEYS.some((key) => filters[key]);
}

// The API's filter fields for the chosen facets (folder and type share one path glob).
export function filterParams(filters) {
  const params = {};
  if (filters.folder || filters.type) {
    const folder = filters.folder ? `${escapeGlob(filters.folder)}/` : "";
    params.where = `${folder}*${filters.type ? "." + anyCase(filters.type) : ""}`;
  }
  const band = BANDS.find((b) => b.id === filters.length);
  if (band && band.min !== undefined) params.min_duration = band.min;
  if (band && band.max !== undefined) params.max_duration = band.max;
  return params;
}

export function describeFilters(filters) {
  const parts = [];
  if (filters.folder) parts.push(`folder ${filters.folder.split("/").pop() || filters.folder}`);
  if (filters.type) parts.push(`type ${filters.type.toUpperCase()}`);
  const band = BANDS.find((b) => b.id === filters.length);
  if (band) parts.push(`length ${band.label}`);
  return parts.join(", ");
}

// Folders worth offering: each collection root when there are several, and the folders just below them.
function folderValues(hits) {
  const counts = new Map();
  const roots = new Set(hits.map((h) => h.root).filter(Boolean));
  for (const hit of hits) {
    const root = hit.root || hit.path.slice(0, hit.path.lastIndexOf("/"));
    const candidates = roots.size > 1 ? [root] : [];
    const rest = hit.path.startsWith(root + "/") ? hit.path.slice(root.length + 1) : "";
    if (rest.includes("/")) candidates.push(`${root}/${rest.split("/")[0]}`);
    for (const folder of candidates) counts.set(folder, (counts.get(folder) || 0) + 1);
  }
  return [...counts.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, MAX_FOLDERS)
    .map(([folder, count]) => ({ id: folder, label: folder.split("/").pop() + "/", title: folder, count }));
}

function countBy(hits, keyOf) {
  const counts = new Map();
  for (const hit of hits) {
    const key = keyOf(hit);
    if (key) counts.set(key, (counts.get(key) || 0) + 1);
  }
  return counts;
}

// [{key, name, values: [{id, label, title, count}]}]: a group is offered when it can narrow the list;
// a chosen value is always shown (so that it can be removed).
export function facetGroups(hits, filters) {
  const types = countBy(hits, (h) => extension(h.path));
  const bands = countBy(hits, (h) => h.duration_s !== null && bandOf(h.duration_s) && bandOf(h.duration_s).id);
  const groups = [
    { key: "folder", name: "Folder", values: folderValues(hits) },
    {
      key: "type", name: "Type",
      values: [...types.entries()].sort((a, b) => b[1] - a[1]).map(([t, count]) => ({ id: t, label: t.toUpperCase(), count })),
    },
    {
      key: "length", name: "Length",
      values: BANDS.filter((b) => bands.has(b.id)).map((b) => ({ id: b.id, label: b.label, count: bands.get(b.id) })),
    },
  ];
  for (const group of groups) {
    const chosen = filters[group.key];
    if (chosen && !group.values.some((v) => v.id === chosen)) {
      const band = BANDS.find((b) => b.id === chosen);
      const label = group.key === "folder" ? chosen.split("/").pop() + "/" : band ? band.label : chosen.toUpperCase();
      group.values.push({ id: chosen, label, title: chosen, count: null });
    }
  }
  const narrows = (g) => g.values.length > 1 || (g.values.length === 1 && g.values[0].count < hits.length);
  return groups.filter((g) => narrows(g) || (g.values.length && filters[g.key]));
}
