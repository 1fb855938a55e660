// Small helpers the server's dashboard (common.js, app.js) and the node's edge view (edge.js)
// share: htm bound to preact, a same-origin fetch that turns an error answer into an Error
// (401 into Unauthorized), and formatting of ages and names.
import { h } from "./vendor/preact.mjs";
import htm from "./vendor/htm.mjs";

export const html = htm.bind(h);

export class Unauthorized extends Error {}

// fetch with the page's cookie; an answer that is not 2xx throws, with the API's message.
export async function request(path, options = {}) {
  const response = await fetch(path, { ...options, credentials: "same-origin" });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) {
    let text = response.statusText;
    try { text = (await response.json()).message || text; } catch (_) { /* not JSON */ }
    throw new Error(`${response.status}: ${text}`);
  }
  return response;
}
export function age(timestamp) { return timestamp ? duration(timestamp) : ""; }

// From one timestamp to another (to now when `end` is empty), e.g. "90s", "5m", "3h", "2d".
export function duration(start, end) {
  const to = end ? Date.parse(end) : Date.now();
  const s = Math.max(0, Math.floor((to - Date.parse(start)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

export function byName(rows) {
  return [...rows.values()].sort((a, b) =>
    (a.namespace || "").localeCompare(b.namespace || "") || a.name.localeCompare(b.name));
}

export const message = (e) => String(e.message || e);
