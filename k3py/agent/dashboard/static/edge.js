// The node's own read-only dashboard (k3py agent --dashboard-port): its pods and their
// followed logs, its devices' twins and its MQTT traffic, from the agent's local state, so that
// it works while the server cannot be reached. Kept live over one websocket (live.js, whose every
// message here is a whole list of a view's rows); nothing polls and nothing writes.
import { Component, render } from "./vendor/preact.mjs";
import { Live } from "./live.js";
import { age, byName, html, message, request, Unauthorized } from "./ui.js";

// One view's rows while it is mounted.
class Followed extends Component {
  state = { rows: new Map(), error: "" };
  componentDidMount() {
    this.unsubscribe = this.props.live.subscribe({ resource: this.view },
      (rows) => this.setState({ rows, error: "" }), (error) => this.setState({ error }));
  }
  componentWillUnmount() { this.unsubscribe?.(); }
}

class NodeLine extends Followed {
  view = "node";
  render(_, { rows }) {
    const n = [...rows.values()][0];
    if (!n) return null;
    return html`<span id="node-line"><strong>${n.name}</strong> · server ${n.connected
      ? html`<span class="ok">connected</span>`
      : html`<span class="bad">unreachable</span>${n.queued
        ? html` <span class="muted">(${n.queued} queued)</span>` : ""}`}</span>`;
  }
}

class Pods extends Followed {
  view = "pods";
  render({ onLogs }, { rows, error }) {
    return html`${error && html`<p class="error">${error}</p>`}
      <div class="table"><table id="pods">
        <thead><tr><th>Namespace</th><th>Name</th><th>Phase</th><th>Restarts</th><th>Age</th>
          <th></th></tr></thead>
        <tbody>${byName(rows).map((p) => html`<tr key=${p.uid}>
          <td>${p.namespace}</td><td>${p.name}</td>
          <td class=${p.phase === "Running" ? "ok" : p.phase === "Failed" ? "bad" : ""}>
            ${p.phase || "Pending"}</td>
          <td>${p.restarts}</td><td>${age(p.created)}</td>
          <td><button class="link" data-logs=${p.name} onClick=${() => onLogs(p)}>logs</button>
          </td></tr>`)}</tbody></table></div>`;
  }
}

class Devices extends Followed {
  view = "devices";
  render(_, { rows, error }) {
    return html`${error && html`<p class="error">${error}</p>`}
      <div class="table"><table id="devices">
        <thead><tr><th>Namespace</th><th>Name</th><th>State</th><th>Property</th>
          <th>Desired</th><th>Reported</th></tr></thead>
        <tbody>${byName(rows).map((d) => (d.twins.length ? d.twins : [null]).map((t, i) =>
          html`<tr key=${`${d.uid}/${i}`}>
            <td>${i === 0 && d.namespace}</td><td>${i === 0 && d.name}</td>
            <td>${i === 0 && d.state}</td><td>${t?.property}</td><td>${t?.desired}</td>
            <td class="reported" data-device=${d.name}>${t?.reported}</td></tr>`))}
        </tbody></table></div>`;
  }
}

class Mqtt extends Followed {
  view = "mqtt";
  render(_, { rows, error }) {
    const newest = [...rows.values()].sort((a, b) => b.at - a.at);
    return html`${error && html`<p class="error">${error}</p>`}
      <p class="muted">The last ${newest.length} messages the node's event bus received (in)
        and published (out) on <code>$hw/events/#</code>.</p>
      <div class="table"><table id="mqtt">
        <thead><tr><th>Time</th><th></th><th>Topic</th><th>Payload</th></tr></thead>
        <tbody>${newest.map((m) => html`<tr key=${m.uid}>
          <td>${new Date(m.at * 1000).toLocaleTimeString()}</td><td>${m.direction}</td>
          <td>${m.topic}</td><td class="payload">${m.payload}</td></tr>`)}</tbody>
      </table></div>`;
  }
}

// A container's last lines and, with "follow" ticked, what it writes next (a streamed
// answer); the text kept is bounded (KEPT_CHARS) however long the page stays open.
const KEPT_CHARS = 1 << 20;

class Logs extends Component {
  state = { text: "", error: "", container: "", follow: true };
  componentDidMount() { this.load({ container: this.props.pod.containers[0] }); }
  componentWillUnmount() { this.controller?.abort(); }
  load(change = {}) {
    this.controller?.abort();
    const controller = this.controller = new AbortController();
    this.setState({ ...change, text: "", error: "" }, () => this.read(controller.signal));
  }
  async read(signal) {
    const { pod } = this.props;
    const { container, follow } = this.state;
    const query = new URLSearchParams({ namespace: pod.namespace, pod: pod.name, container,
      follow: String(follow) });
    try {
      const response = await request(`/dashboard/api/logs?${query}`, { signal });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        this.setState(({ text }) => ({ text: (text + value).slice(-KEPT_CHARS) }));
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof Unauthorized) this.props.onUnauthorized();
      else this.setState({ error: message(e) });
    }
  }
  render({ pod, onBack }, { text, error, container, follow }) {
    return html`<div class="toolbar"><button onClick=${onBack}>Back to pods</button>
        <strong>${pod.namespace}/${pod.name}</strong>
        <select value=${container} onChange=${(e) => this.load({ container: e.target.value })}>
          ${pod.containers.map((c) => html`<option value=${c}>${c}</option>`)}</select>
        <label><input type="checkbox" id="follow" checked=${follow}
          onChange=${(e) => this.load({ follow: e.target.checked })} /> follow</label>
        ${!follow && html`<button onClick=${() => this.load()}>Reload</button>`}</div>
      ${error && html`<p class="error">${error}</p>`}
      <pre class="logs" id="logs">${text}</pre>`;
  }
}

class Login extends Component {
  state = { token: "", error: "" };
  submit(e) {
    e.preventDefault();
    request("/dashboard/login", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: this.state.token }) })
      .then(() => this.props.onLogin())
      .catch((err) => this.setState({ error: err instanceof Unauthorized
        ? "That token was not accepted." : message(err) }));
  }
  render(_, { token, error }) {
    return html`<form class="login" onSubmit=${(e) => this.submit(e)}>
      <h2>This node's dashboard</h2>
      <label for="token">The token in <code>DATA-DIR/agent/dashboard-token</code> on this
        node</label>
      <input id="token" type="password" autocomplete="off" value=${token}
        onInput=${(e) => this.setState({ token: e.target.value })} />
      <button type="submit">Log in</button>
      ${error && html`<p class="error" id="login-error">${error}</p>`}</form>`;
  }
}

const VIEWS = [["pods", "Pods", Pods], ["devices", "Devices", Devices], ["mqtt", "MQTT", Mqtt]];

class App extends Component {
  state = { authed: true, view: "pods", pod: null };
  constructor() { super(); this.live = this.open(); }
  // the websocket is closed with 4401 without the login cookie: then the login form shows
  open() { return new Live(() => this.setState({ authed: false })); }
  connect() {
    this.live?.close();
    this.live = this.open();
    this.setState({ authed: true });
  }
  logout() {
    request("/dashboard/logout", { method: "POST" }).catch(() => {})
      .finally(() => { this.live?.close(); this.setState({ authed: false }); });
  }
  render(_, { authed, view, pod }) {
    if (!authed) return html`<${Login} onLogin=${() => this.connect()} />`;
    const unauthorized = () => { this.live?.close(); this.setState({ authed: false }); };
    const [, , View] = VIEWS.find(([name]) => name === view);
    const body = pod
      ? html`<${Logs} pod=${pod} onBack=${() => this.setState({ pod: null })}
          onUnauthorized=${unauthorized} />`
      : html`<${View} key=${view} live=${this.live} onLogs=${(p) => this.setState({ pod: p })} />`;
    return html`<header><h1>k3py node</h1>
      <nav>${VIEWS.map(([name, label]) => html`<button
        aria-current=${view === name && !pod ? "page" : null}
        onClick=${() => this.setState({ view: name, pod: null })}>${label}</button>`)}</nav>
      <${NodeLine} live=${this.live} />
      <span class="badge" id="read-only">read-only</span>
      <button id="logout" onClick=${() => this.logout()}>Log out</button></header>
      <main>${body}</main>`;
  }
}

render(html`<${App} />`, document.getElementById("app"));
