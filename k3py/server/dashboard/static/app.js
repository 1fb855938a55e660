// k3py dashboard: nodes with their tunnel, pods per namespace kept live from a watch, and a
// pod's logs. Every data call goes to the server's own API with the login cookie and the
// X-K3py-Dashboard marker header; the API authorizes each as the logged-in user.
import { Component, h, render } from "./vendor/preact.mjs";
import htm from "./vendor/htm.mjs";

const html = htm.bind(h);
const MARKER = { "X-K3py-Dashboard": "1" };

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options, credentials: "same-origin",
    headers: { Accept: "application/json", ...MARKER, ...(options.headers || {}) },
  });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).message || message; } catch (_) { /* not JSON */ }
    throw new Error(`${response.status}: ${message}`);
  }
  return response;
}

// List, then watch from the list's resourceVersion; relist when the watch ends or says 410.
async function listWatch(path, onList, onEvent, signal) {
  const sep = path.includes("?") ? "&" : "?";
  while (!signal.aborted) {
    const list = await (await api(path, { signal })).json();
    onList(list.items || []);
    const rv = list.metadata.resourceVersion;
    const watch = await api(`${path}${sep}watch=1&allowWatchBookmarks=true&resourceVersion=${rv}`,
      { signal });
    const reader = watch.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let gone = false;
    while (!gone) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, end).trim();
        buffer = buffer.slice(end + 1);
        if (!line) continue;
        const event = JSON.parse(line);
        if (event.type === "ERROR") { gone = true; break; }
        if (event.type !== "BOOKMARK") onEvent(event);
      }
    }
    reader.cancel().catch(() => {});
  }
}

function applyEvent(rows, event) {
  const next = new Map(rows);
  const key = event.object.metadata.uid;
  if (event.type === "DELETED") next.delete(key); else next.set(key, event.object);
  return next;
}

function byName(map) {
  return [...map.values()].sort((a, b) =>
    (a.metadata.namespace || "").localeCompare(b.metadata.namespace || "") ||
    a.metadata.name.localeCompare(b.metadata.name));
}

function age(timestamp) {
  if (!timestamp) return "";
  const s = Math.max(0, Math.floor((Date.now() - Date.parse(timestamp)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function ready(node) {
  const c = (node.status?.conditions || []).find((c) => c.type === "Ready");
  return c?.status === "True";
}

function restarts(pod) {
  return (pod.status?.containerStatuses || []).reduce((n, c) => n + (c.restartCount || 0), 0);
}

// A view that lists and watches one API path while it is shown.
class Watched extends Component {
  state = { rows: new Map(), error: "" };
  componentDidMount() { this.start(); }
  componentWillUnmount() { this.controller?.abort(); }
  componentDidUpdate(previous) { if (previous.path !== this.props.path) this.start(); }
  start() {
    this.controller?.abort();
    const controller = this.controller = new AbortController();
    this.setState({ rows: new Map(), error: "" });
    listWatch(this.props.path,
      (items) => this.setState({ rows: new Map(items.map((o) => [o.metadata.uid, o])) }),
      (event) => this.setState(({ rows }) => ({ rows: applyEvent(rows, event) })),
      controller.signal,
    ).catch((e) => {
      if (controller.signal.aborted) return;
      if (e instanceof Unauthorized) this.props.onUnauthorized();
      else this.setState({ error: String(e.message || e) });
    });
  }
}

class Nodes extends Watched {
  componentDidMount() { super.componentDidMount(); this.loadTunnels(); }
  loadTunnels() {
    api("/dashboard/api/tunnels").then((r) => r.json())
      .then((t) => this.setState({ tunnels: t.nodes, tunnelError: "" }))
      .catch((e) => this.setState({ tunnelError: String(e.message || e) }));
  }
  render(_, { rows, error, tunnels = {}, tunnelError }) {
    return html`
      <div class="toolbar"><button onClick=${() => this.loadTunnels()}>Refresh tunnels</button>
        ${tunnelError && html`<span class="error">${tunnelError}</span>`}</div>
      ${error && html`<p class="error">${error}</p>`}
      <div class="table"><table id="nodes">
        <thead><tr><th>Name</th><th>Ready</th><th>Tunnel</th><th>Age</th></tr></thead>
        <tbody>${byName(rows).map((n) => {
          const t = tunnels[n.metadata.name];
          return html`<tr key=${n.metadata.uid}>
            <td>${n.metadata.name}</td>
            <td class=${ready(n) ? "ok" : "bad"}>${ready(n) ? "Ready" : "NotReady"}</td>
            <td>${t?.connected
              ? html`<span class="ok">connected</span> <span class="muted">since
                  ${new Date(t.connectedSince * 1000).toLocaleString()}</span>`
              : html`<span class="muted">${t ? "offline" : "no tunnel"}</span>`}</td>
            <td>${age(n.metadata.creationTimestamp)}</td></tr>`;
        })}</tbody></table></div>`;
  }
}

class Pods extends Watched {
  render({ onLogs }, { rows, error }) {
    return html`
      ${error && html`<p class="error">${error}</p>`}
      <div class="table"><table id="pods">
        <thead><tr><th>Namespace</th><th>Name</th><th>Phase</th><th>Node</th><th>Restarts</th>
          <th>Age</th><th></th></tr></thead>
        <tbody>${byName(rows).map((p) => html`<tr key=${p.metadata.uid}>
          <td>${p.metadata.namespace}</td><td>${p.metadata.name}</td>
          <td>${p.status?.phase || ""}</td><td>${p.spec?.nodeName || ""}</td>
          <td>${restarts(p)}</td><td>${age(p.metadata.creationTimestamp)}</td>
          <td><button class="link" onClick=${() => onLogs(p)}>logs</button></td></tr>`)}
        </tbody></table></div>`;
  }
}

class PodsView extends Component {
  state = { namespaces: [], namespace: "" };
  componentDidMount() {
    api("/api/v1/namespaces").then((r) => r.json())
      .then((list) => this.setState({ namespaces: list.items.map((n) => n.metadata.name) }))
      .catch((e) => { if (e instanceof Unauthorized) this.props.onUnauthorized(); });
  }
  render({ onLogs, onUnauthorized }, { namespaces, namespace }) {
    const path = namespace ? `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods`
      : "/api/v1/pods";
    return html`
      <div class="toolbar"><label>Namespace <select value=${namespace}
        onChange=${(e) => this.setState({ namespace: e.target.value })}>
        <option value="">all</option>
        ${namespaces.map((n) => html`<option value=${n}>${n}</option>`)}</select></label></div>
      <${Pods} path=${path} onLogs=${onLogs} onUnauthorized=${onUnauthorized} />`;
  }
}

class Logs extends Component {
  state = { text: "", error: "", container: "" };
  componentDidMount() { this.load(this.props.pod.spec.containers[0].name); }
  load(container) {
    const { metadata } = this.props.pod;
    const path = `/api/v1/namespaces/${encodeURIComponent(metadata.namespace)}/pods/` +
      `${encodeURIComponent(metadata.name)}/log?tailLines=1000&container=` +
      encodeURIComponent(container);
    this.setState({ container, text: "", error: "" });
    api(path, { headers: { Accept: "text/plain" } }).then((r) => r.text())
      .then((text) => this.setState({ text }))
      .catch((e) => {
        if (e instanceof Unauthorized) this.props.onUnauthorized();
        else this.setState({ error: String(e.message || e) });
      });
  }
  render({ pod, onBack }, { text, error, container }) {
    return html`
      <div class="toolbar"><button onClick=${onBack}>Back to pods</button>
        <strong>${pod.metadata.namespace}/${pod.metadata.name}</strong>
        <select value=${container} onChange=${(e) => this.load(e.target.value)}>
          ${pod.spec.containers.map((c) => html`<option value=${c.name}>${c.name}</option>`)}
        </select>
        <button onClick=${() => this.load(container)}>Reload</button></div>
      ${error && html`<p class="error">${error}</p>`}
      <pre class="logs" id="logs">${text}</pre>`;
  }
}

class Login extends Component {
  state = { token: "", error: "" };
  submit(e) {
    e.preventDefault();
    api("/dashboard/login", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: this.state.token }),
    }).then((r) => r.json()).then((who) => this.props.onLogin(who.user))
      .catch((err) => this.setState({
        error: err instanceof Unauthorized ? "That token was not accepted." : String(err.message),
      }));
  }
  render(_, { token, error }) {
    return html`<form class="login" onSubmit=${(e) => this.submit(e)}>
      <h2>Log in to k3py</h2>
      <label for="token">Bearer token (a service account's, or the admin's)</label>
      <input id="token" type="password" autocomplete="off" value=${token}
        onInput=${(e) => this.setState({ token: e.target.value })} />
      <button type="submit">Log in</button>
      ${error && html`<p class="error" id="login-error">${error}</p>`}</form>`;
  }
}

class App extends Component {
  state = { authed: null, user: "", view: "nodes", pod: null };
  componentDidMount() {
    api("/api/v1/nodes?limit=1").then(() => this.setState({ authed: true }))
      .catch(() => this.setState({ authed: false }));
  }
  logout() {
    api("/dashboard/logout", { method: "POST" }).catch(() => {})
      .finally(() => this.setState({ authed: false, user: "" }));
  }
  render(_, { authed, user, view, pod }) {
    if (authed === null) return html`<p>Loading…</p>`;
    const unauthorized = () => this.setState({ authed: false });
    if (!authed) {
      return html`<${Login} onLogin=${(u) => this.setState({ authed: true, user: u })} />`;
    }
    const tab = (name, label) => html`<button aria-current=${view === name ? "page" : null}
      onClick=${() => this.setState({ view: name, pod: null })}>${label}</button>`;
    let body;
    if (pod) {
      body = html`<${Logs} pod=${pod} onBack=${() => this.setState({ pod: null })}
        onUnauthorized=${unauthorized} />`;
    } else if (view === "nodes") {
      body = html`<${Nodes} path="/api/v1/nodes" onUnauthorized=${unauthorized} />`;
    } else {
      body = html`<${PodsView} onLogs=${(p) => this.setState({ pod: p })}
        onUnauthorized=${unauthorized} />`;
    }
    return html`<header><h1>k3py</h1><nav>${tab("nodes", "Nodes")}${tab("pods", "Pods")}</nav>
      <span class="muted">${user}</span>
      <button id="logout" onClick=${() => this.logout()}>Log out</button></header>
      <main>${body}</main>`;
  }
}

render(html`<${App} />`, document.getElementById("app"));
