// The tab's one websocket to /dashboard/api/live: every view's subscription (kind, namespace)
// is multiplexed on it. Each subscription keeps its rows (slim projections the server sends,
// a list in several frames) and its resourceVersion; after a reconnect it resumes from that
// resourceVersion, and lists again when the server answers 410. Reconnects back off from
// 0.5 s to 10 s; nothing polls.
const CLOSE_UNAUTHORIZED = 4401;

export class Live {
  constructor(onUnauthorized) {
    this.onUnauthorized = onUnauthorized;
    this.subscriptions = new Map();
    this.next = 1;
    this.delay = 500;
    this.closed = false;
    this.connect();
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = this.ws = new WebSocket(`${scheme}://${location.host}/dashboard/api/live`);
    ws.onopen = () => {
      this.delay = 500;
      for (const sub of this.subscriptions.values()) this.send(sub);
    };
    ws.onmessage = (event) => {
      const msg = JSON.parse(event.data);
      this.subscriptions.get(msg.id)?.receive(msg, this);
    };
    ws.onclose = (event) => {
      if (this.closed || ws !== this.ws) return;
      if (event.code === CLOSE_UNAUTHORIZED) { this.close(); this.onUnauthorized(); return; }
      setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, 10000);
    };
  }

  send(sub) {
    if (this.ws.readyState !== WebSocket.OPEN) return; // sent on open
    sub.listing = null; // a list's frames so far: the server starts afresh
    this.ws.send(JSON.stringify({ op: "watch", id: sub.id, ...sub.spec,
      resourceVersion: sub.resourceVersion || undefined }));
  }

  // spec: {group, version?, resource, namespace?}; onRows(rows Map uid->row, changed Map).
  // spec {op: FEED, ...}: onRows(what the server's feed sends), each time: "tunnels" (every
  // node's tunnel figures), "metrics" (the history, then new points), "mqtt", "mqtttail".
  subscribe(spec, onRows, onError) {
    const sub = new Subscription(String(this.next++), spec, onRows, onError);
    this.subscriptions.set(sub.id, sub);
    this.send(sub);
    return () => {
      this.subscriptions.delete(sub.id);
      if (this.ws.readyState === WebSocket.OPEN) {
        this.ws.send(JSON.stringify({ op: "cancel", id: sub.id }));
      }
    };
  }

  close() {
    this.closed = true;
    this.subscriptions.clear();
    this.ws.close();
  }
}

class Subscription {
  constructor(id, spec, onRows, onError) {
    Object.assign(this, { id, spec, onRows, onError });
    this.rows = new Map();
    this.listing = null; // the frames of a list still coming ("more")
    this.resourceVersion = "";
  }

  receive(msg, live) {
    if (msg.type === "list") {
      this.listing ??= new Map();
      for (const row of msg.rows) this.listing.set(row.uid, row);
      if (msg.more) return; // shown once its last frame has come
      this.rows = this.listing;
      this.listing = null;
      this.resourceVersion = msg.resourceVersion;
      this.onRows(this.rows, this.rows);
    } else if (msg.type === "events") {
      const rows = new Map(this.rows);
      const changed = new Map();
      for (const [type, row] of msg.events) {
        if (type === "DELETED") rows.delete(row.uid);
        else { rows.set(row.uid, row); changed.set(row.uid, row); }
      }
      this.rows = rows;
      this.resourceVersion = msg.resourceVersion;
      this.onRows(rows, changed);
    } else if (msg.type === "feed") {
      this.onRows(msg.data);
    } else if (msg.type === "ended") {
      this.resourceVersion = msg.resourceVersion;
      live.send(this);
    } else if (msg.type === "error" && msg.code === 410) {
      this.resourceVersion = ""; // compacted: list again
      live.send(this);
    } else if (msg.type === "error") {
      this.onError(`${msg.code}: ${msg.message}`);
    }
  }
}
