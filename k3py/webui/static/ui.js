// Small helpers the server's dashboard (app.js) and the node's edge view (edge.js) share.
export function age(timestamp) {
  if (!timestamp) return "";
  const s = Math.max(0, Math.floor((Date.now() - Date.parse(timestamp)) / 1000));
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
