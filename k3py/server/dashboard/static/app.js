// k3py dashboard: nodes with their tunnel, pods, devices with their twins and a plot, a pod's
// logs and a shell in it (terminal.js). Lists are kept live over the tab's one websocket (live.js); other calls go to the
// server's own API with the login cookie and the X-K3py-Dashboard marker header, authorized
// as the logged-in user. Buttons the user may not use are hidden (SelfSubjectRulesReview).
import { Component, h, render } from "./vendor/preact.mjs";
import htm from "./vendor/htm.mjs";
import { Live } from "./live.js";
import { age, byName, message } from "./ui.js";

const html = htm.bind(h);
const MARKER = { "X-K3py-Dashboard": "1" };
const UPLOT = "./vendor/uplot.min.js";
const UPLOT_CSS = "./vendor/uplot.min.css";
const DEVICES = { group: "devices.kubeedge.io", version: "v1alpha2" };
const HISTORY = 600; // points kept per plotted twin

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

// What the user may do, from a SelfSubjectRulesReview per namespace ("" = cluster scope).
class Permissions {
  constructor(readOnly) { this.readOnly = readOnly; this.rules = new Map(); }
  async load(namespace) {
    if (this.rules.has(namespace)) return;
    const review = await (await api("/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ apiVersion: "authorization.k8s.io/v1",
        kind: "SelfSubjectRulesReview", spec: { namespace: namespace || "default" } }),
    })).json();
    this.rules.set(namespace, review.status?.resourceRules || []);
  }
  can(verb, group, resource, namespace) {
    if (this.readOnly) return false;
    const has = (list, value) => (list || []).includes("*") || (list || []).includes(value);
    return (this.rules.get(namespace) || []).some((r) => has(r.verbs, verb) &&
      has(r.apiGroups, group) && has(r.resources, resource));
  }
}

// A view showing one live subscription's rows while it is mounted.
class Watched extends Component {
  state = { rows: new Map(), error: "" };
  componentDidMount() { this.subscribe(); }
  componentWillUnmount() { this.unsubscribe?.(); }
  componentDidUpdate(previous) {
    if (previous.namespace !== this.props.namespace) this.subscribe();
  }
  subscribe() {
    this.unsubscribe?.();
    this.setState({ rows: new Map(), error: "" });
    this.unsubscribe = this.props.live.subscribe(
      { ...this.spec(), namespace: this.props.namespace || "" },
      (rows, changed) => { this.setState({ rows, error: "" }); this.changed?.(changed); },
      (error) => this.setState({ error }));
  }
}

// The tunnel column: pushed by the server on each change (link up or down, a round trip, a
// message queued while the node is offline).
function Tunnel({ t }) {
  if (!t) return html`<span class="muted">no tunnel</span>`;
  const when = (s) => (s ? new Date(s * 1000).toLocaleTimeString() : "");
  const figures = [t.rttMs != null && t.connected && `rtt ${t.rttMs} ms`,
    t.reconnects && `${t.reconnects} reconnects`, t.queued && `${t.queued} queued`]
    .filter(Boolean).join(", ");
  return t.connected
    ? html`<span class="ok">connected</span> <span class="muted">since ${when(t.connectedSince)}${
        figures && ` · ${figures}`}</span>`
    : html`<span class="bad">offline</span> <span class="muted">last seen ${when(t.lastSeen)}${
        figures && ` · ${figures}`}</span>`;
}

class Nodes extends Watched {
  spec() { return { group: "", resource: "nodes" }; }
  componentDidMount() {
    super.componentDidMount();
    this.unfollow = this.props.live.subscribe({ op: "tunnels" },
      (tunnels) => this.setState({ tunnels, tunnelError: "" }),
      (tunnelError) => this.setState({ tunnelError }));
  }
  componentWillUnmount() { super.componentWillUnmount(); this.unfollow?.(); }
  render(_, { rows, error, tunnels = {}, tunnelError }) {
    return html`
      ${tunnelError && html`<p class="error">${tunnelError}</p>`}
      ${error && html`<p class="error">${error}</p>`}
      <div class="table"><table id="nodes">
        <thead><tr><th>Name</th><th>Ready</th><th>Tunnel</th><th>Arch</th><th>Age</th></tr></thead>
        <tbody>${byName(rows).map((n) => html`<tr key=${n.uid}>
            <td>${n.name}</td>
            <td class=${n.ready ? "ok" : "bad"}>${n.ready ? "Ready" : "NotReady"}</td>
            <td class="tunnel" data-node=${n.name}><${Tunnel} t=${tunnels[n.name]} /></td>
            <td>${n.arch}</td><td>${age(n.created)}</td></tr>`)}</tbody></table></div>`;
  }
}

class Pods extends Watched {
  spec() { return { group: "", resource: "pods" }; }
  remove(p) {
    api(`/api/v1/namespaces/${encodeURIComponent(p.namespace)}/pods/` +
      encodeURIComponent(p.name), { method: "DELETE" })
      .catch((e) => this.setState({ error: message(e) }));
  }
  render({ onLogs, onShell, permissions }, { rows, error }) {
    return html`
      ${error && html`<p class="error">${error}</p>`}
      <div class="table"><table id="pods">
        <thead><tr><th>Namespace</th><th>Name</th><th>Phase</th><th>Node</th><th>Restarts</th>
          <th>Age</th><th></th></tr></thead>
        <tbody>${byName(rows).map((p) => html`<tr key=${p.uid}>
          <td>${p.namespace}</td><td>${p.name}</td><td>${p.phase}</td><td>${p.node}</td>
          <td>${p.restarts}</td><td>${age(p.created)}</td>
          <td><button class="link" onClick=${() => onLogs(p)}>logs</button>
            ${permissions.can("create", "", "pods/exec", p.namespace) && html`<button
              class="link" data-shell=${p.name} onClick=${() => onShell(p)}>shell</button>`}
            ${permissions.can("delete", "", "pods", p.namespace) && html`<button
              class="link danger" data-delete=${p.name}
              onClick=${() => this.remove(p)}>delete</button>`}</td></tr>`)}
        </tbody></table></div>`;
  }
}

// The namespace picker over a namespaced view; loads the user's rules for the namespace.
class Namespaced extends Component {
  state = { namespaces: [], namespace: "" };
  componentDidMount() {
    api("/api/v1/namespaces").then((r) => r.json())
      .then((list) => this.setState({ namespaces: list.items.map((n) => n.metadata.name) }))
      .catch((e) => { if (e instanceof Unauthorized) this.props.onUnauthorized(); })
      .finally(() => this.pick(""));
  }
  pick(namespace) {
    const { permissions } = this.props;
    const wanted = namespace ? [namespace] : ["", ...this.state.namespaces];
    Promise.all(wanted.map((n) => permissions.load(n))).catch(() => {})
      .finally(() => this.setState({ namespace, ready: true }));
  }
  render({ view: View, ...props }, { namespaces, namespace, ready }) {
    if (!ready) return html`<p>Loading…</p>`;
    return html`
      <div class="toolbar"><label>Namespace <select value=${namespace}
        onChange=${(e) => this.pick(e.target.value)}>
        <option value="">all</option>
        ${namespaces.map((n) => html`<option value=${n}>${n}</option>`)}</select></label></div>
      <${View} ...${props} namespace=${namespace} />`;
  }
}

// uPlot, loaded with a script element the first time a plot is shown (not on first load).
let uplotLoading;
function loadUplot() {
  uplotLoading ||= new Promise((resolve, reject) => {
    const css = document.createElement("link");
    css.rel = "stylesheet"; css.href = UPLOT_CSS;
    document.head.append(css);
    const script = document.createElement("script");
    script.src = UPLOT; script.onload = () => resolve(window.uPlot); script.onerror = reject;
    document.head.append(script);
  });
  return uplotLoading;
}

// A numeric twin's reported values over time, appended as the device's rows change.
class Plot extends Component {
  componentDidMount() {
    loadUplot().then((UPlot) => {
      if (!this.element) return;
      this.chart = new UPlot({
        width: Math.min(640, this.element.clientWidth || 640), height: 200,
        series: [{}, { label: this.props.label, stroke: "#3b82f6", width: 2 }],
      }, this.props.history, this.element);
      this.show(this.props.history);
    });
  }
  // uPlot owns the element's children: new data goes to it, not through a render
  shouldComponentUpdate(next) { this.show(next.history); return false; }
  show(history) {
    this.chart?.setData(history);
    if (this.element) this.element.dataset.points = String(history[0].length);
  }
  componentWillUnmount() { this.chart?.destroy(); this.element = null; }
  render() {
    return html`<div id="plot" class="plot" data-points="0"
      ref=${(element) => { if (element) this.element = element; }}></div>`;
  }
}

class Devices extends Watched {
  spec() { return { ...DEVICES, resource: "devices" }; }
  state = { rows: new Map(), error: "", plotted: null, history: [[], []], desired: {} };
  changed(changed) {
    const { plotted } = this.state;
    const row = plotted && changed.get(plotted.uid);
    const twin = row?.twins.find((t) => t.property === plotted.property);
    const value = Number(twin?.reported);
    if (twin?.reported == null || !Number.isFinite(value)) return;
    const [xs, ys] = this.state.history;
    const at = Date.now() / 1000;
    const history = [[...xs, at].slice(-HISTORY), [...ys, value].slice(-HISTORY)];
    this.setState({ history });
  }
  // Opens with the server's last 10 minutes of the twin (its ring buffer), then streams.
  plot(device, twin) {
    const plotted = { uid: device.uid, property: twin.property,
      label: `${device.name}.${twin.property}` };
    this.setState({ plotted, history: [[], []] });
    const query = new URLSearchParams({ namespace: device.namespace, name: device.name,
      property: twin.property });
    api(`/dashboard/api/twinhistory?${query}`).then((r) => r.json()).then(({ times, values }) => {
      if (this.state.plotted !== plotted) return;
      const [xs, ys] = this.state.history; // streamed meanwhile: after the history
      const last = times.length ? times[times.length - 1] : -Infinity;
      const keep = xs.map((x, i) => i).filter((i) => xs[i] > last);
      this.setState({ history: [[...times, ...keep.map((i) => xs[i])].slice(-HISTORY),
        [...values, ...keep.map((i) => ys[i])].slice(-HISTORY)] });
    }).catch((e) => this.setState({ error: message(e) }));
  }
  setDesired(device, index) {
    const key = `${device.uid}/${index}`;
    const value = this.state.desired[key] ?? "";
    const path = `/apis/${DEVICES.group}/${DEVICES.version}/namespaces/` +
      `${encodeURIComponent(device.namespace)}/devices/${encodeURIComponent(device.name)}`;
    api(path, { method: "PATCH", headers: { "Content-Type": "application/json-patch+json" },
      body: JSON.stringify([{ op: "replace", path: `/status/twins/${index}/desired/value`, value }]),
    }).catch((e) => this.setState({ error: message(e) }));
  }
  render({ permissions }, { rows, error, plotted, history, desired }) {
    return html`
      ${error && html`<p class="error">${error}</p>`}
      <div class="table"><table id="devices">
        <thead><tr><th>Namespace</th><th>Name</th><th>Model</th><th>Property</th>
          <th>Desired</th><th>Reported</th><th></th></tr></thead>
        <tbody>${byName(rows).map((d) => (d.twins.length ? d.twins : [null]).map((t, i) => {
          const key = `${d.uid}/${i}`;
          const writable = t && permissions.can("patch", DEVICES.group, "devices", d.namespace);
          return html`<tr key=${key}>
            <td>${i === 0 && d.namespace}</td><td>${i === 0 && d.name}</td>
            <td>${i === 0 && d.model}</td><td>${t?.property}</td>
            <td>${writable ? html`<form class="inline" onSubmit=${(e) => {
                e.preventDefault(); this.setDesired(d, i); }}>
                <input name="desired" size="6" data-device=${d.name}
                  value=${desired[key] ?? t.desired ?? ""}
                  onInput=${(e) => this.setState({ desired: { ...desired, [key]: e.target.value } })} />
                <button type="submit">Set</button></form>` : t?.desired}</td>
            <td class="reported" data-device=${d.name}>${t?.reported}</td>
            <td>${t && html`<button class="link" onClick=${() => this.plot(d, t)}>plot</button>`}
            </td></tr>`;
        }))}</tbody></table></div>
      ${plotted && html`<h3>${plotted.label}</h3>
        <${Plot} key=${plotted.label} label=${plotted.label} history=${history} />`}`;
  }
}

class DeviceModels extends Watched {
  spec() { return { ...DEVICES, resource: "devicemodels" }; }
  render(_, { rows, error }) {
    return html`
      ${error && html`<p class="error">${error}</p>`}
      <div class="table"><table id="devicemodels">
        <thead><tr><th>Namespace</th><th>Name</th><th>Properties</th></tr></thead>
        <tbody>${byName(rows).map((m) => html`<tr key=${m.uid}>
          <td>${m.namespace}</td><td>${m.name}</td>
          <td>${m.properties.map((p) => `${p.name} (${p.type}${p.accessMode
            ? ", " + p.accessMode : ""})`).join(", ")}</td></tr>`)}</tbody></table></div>`;
  }
}

// Back, the pod's name and its container picker, then the view's own buttons.
function PodToolbar({ pod, container, onBack, onPick, children }) {
  return html`<div class="toolbar"><button onClick=${onBack}>Back to pods</button>
    <strong>${pod.namespace}/${pod.name}</strong>
    <select value=${container} onChange=${(e) => onPick(e.target.value)}>
      ${pod.containers.map((c) => html`<option value=${c}>${c}</option>`)}
    </select>${children}</div>`;
}

class Logs extends Component {
  state = { text: "", error: "", container: "" };
  componentDidMount() { this.load(this.props.pod.containers[0]); }
  load(container) {
    const pod = this.props.pod;
    const path = `/api/v1/namespaces/${encodeURIComponent(pod.namespace)}/pods/` +
      `${encodeURIComponent(pod.name)}/log?tailLines=1000&container=` +
      encodeURIComponent(container);
    this.setState({ container, text: "", error: "" });
    api(path, { headers: { Accept: "text/plain" } }).then((r) => r.text())
      .then((text) => this.setState({ text }))
      .catch((e) => {
        if (e instanceof Unauthorized) this.props.onUnauthorized();
        else this.setState({ error: message(e) });
      });
  }
  render({ pod, onBack }, { text, error, container }) {
    return html`
      <${PodToolbar} pod=${pod} container=${container} onBack=${onBack}
        onPick=${(c) => this.load(c)}>
        <button onClick=${() => this.load(container)}>Reload</button></${PodToolbar}>
      ${error && html`<p class="error">${error}</p>`}
      <pre class="logs" id="logs">${text}</pre>`;
  }
}

// A shell in one of the pod's containers (terminal.js and xterm.js load on first use).
class Shell extends Component {
  state = { error: "", ended: false };
  componentDidMount() { this.open(this.props.pod.containers[0]); }
  componentWillUnmount() { this.close?.(); }
  open(container) {
    this.close?.();
    this.setState({ container, error: "", ended: false });
    import("./terminal.js").then(({ openTerminal }) => {
      if (!this.element) return;
      this.element.replaceChildren();
      this.close = openTerminal(this.element, this.props.pod, container,
        (error) => this.setState({ error, ended: true }));
    }).catch((e) => this.setState({ error: message(e) }));
  }
  render({ pod, onBack }, { container, error, ended }) {
    return html`
      <${PodToolbar} pod=${pod} container=${container} onBack=${onBack}
        onPick=${(c) => this.open(c)}>
        ${ended && html`<button onClick=${() => this.open(container)}>Reconnect</button>`}
        ${ended && html`<span class="muted">session ended</span>`}</${PodToolbar}>
      ${error && html`<p class="error">${error}</p>`}
      <div class="terminal" id="terminal"
        ref=${(element) => { if (element) this.element = element; }}></div>`;
  }
}

class Login extends Component {
  state = { token: "", error: "" };
  submit(e) {
    e.preventDefault();
    api("/dashboard/login", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: this.state.token }),
    }).then(() => this.props.onLogin())
      .catch((err) => this.setState({
        error: err instanceof Unauthorized ? "That token was not accepted." : message(err),
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

const VIEWS = [["nodes", "Nodes"], ["pods", "Pods"], ["devices", "Devices"],
  ["devicemodels", "Device models"]];

class App extends Component {
  state = { session: null, authed: null, view: "nodes", pod: null, shell: null };
  componentDidMount() { this.loadSession(); }
  loadSession() {
    api("/dashboard/api/session").then((r) => r.json()).then((session) => {
      this.live?.close();
      this.live = new Live(() => this.setState({ authed: false }));
      this.permissions = new Permissions(session.readOnly);
      this.setState({ session, authed: true });
    }).catch(() => this.setState({ authed: false }));
  }
  logout() {
    api("/dashboard/logout", { method: "POST" }).catch(() => {})
      .finally(() => { this.live?.close(); this.setState({ authed: false, session: null }); });
  }
  render(_, { authed, session, view, pod, shell }) {
    if (authed === null) return html`<p>Loading…</p>`;
    const unauthorized = () => { this.live?.close(); this.setState({ authed: false }); };
    if (!authed) return html`<${Login} onLogin=${() => this.loadSession()} />`;
    const tab = (name, label) => html`<button aria-current=${view === name ? "page" : null}
      onClick=${() => this.setState({ view: name, pod: null, shell: null })}>${label}</button>`;
    const common = { live: this.live, permissions: this.permissions,
      onUnauthorized: unauthorized };
    let body;
    if (shell) {
      body = html`<${Shell} pod=${shell} onBack=${() => this.setState({ shell: null })} />`;
    } else if (pod) {
      body = html`<${Logs} pod=${pod} onBack=${() => this.setState({ pod: null })}
        onUnauthorized=${unauthorized} />`;
    } else if (view === "nodes") {
      body = html`<${Nodes} ...${common} />`;
    } else {
      const views = { pods: Pods, devices: Devices, devicemodels: DeviceModels };
      body = html`<${Namespaced} key=${view} view=${views[view]} ...${common}
        onLogs=${(p) => this.setState({ pod: p })} onShell=${(p) => this.setState({ shell: p })} />`;
    }
    return html`<header><h1>k3py</h1><nav>${VIEWS.map(([n, l]) => tab(n, l))}</nav>
      <span class="muted" id="user">${session.user}${session.readOnly
        ? html` <span class="badge" id="read-only">read-only</span>` : ""}</span>
      <button id="logout" onClick=${() => this.logout()}>Log out</button></header>
      <main>${body}</main>`;
  }
}

render(html`<${App} />`, document.getElementById("app"));
