// k3py dashboard: the overview and events (views.js), nodes with their tunnel, pods,
// workloads (workloads.js), devices with their twins and a plot, a pod's logs (logs.js) and a
// shell in it (terminal.js); the login form, or a login link's one-time code. Lists are kept
// live over the tab's one websocket (live.js); other calls go to the server's own API
// (common.js), authorized as the logged-in user. Buttons the user may not use are hidden
// (SelfSubjectRulesReview).
import { Component, render } from "./vendor/preact.mjs";
import { age, api, byName, html, Lazy, loadScript, message, Namespaced, Permissions,
  Unauthorized, Watched } from "./common.js";
import { Live } from "./live.js";
import { Events, Overview } from "./views.js";

const UPLOT = "./vendor/uplot.min.js";
const UPLOT_CSS = "./vendor/uplot.min.css";
const DEVICES = { group: "devices.kubeedge.io", version: "v1alpha2" };
const HISTORY = 600; // points kept per plotted twin

// The tunnel column: pushed by the server on each change (link up or down, a round trip, a
// message queued while the node is offline), whichever server holds the tunnel (t.server).
function Tunnel({ t }) {
  if (!t) return html`<span class="muted">no tunnel</span>`;
  const when = (s) => (s ? new Date(s * 1000).toLocaleTimeString() : "");
  const figures = [t.server && `via ${t.server}`,
    t.rttMs != null && t.connected && `rtt ${t.rttMs} ms`,
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
    this.usage = import("./metrics.js").then((metrics) => metrics.followNodeUsage(this));
  }
  componentWillUnmount() {
    super.componentWillUnmount(); this.unfollow?.(); this.usage.then((stop) => stop());
  }
  render({ onMqtt, onMetrics }, { rows, error, tunnels = {}, tunnelError, usage = new Map(),
    UsageCells }) {
    return html`
      ${tunnelError && html`<p class="error">${tunnelError}</p>`}
      ${error && html`<p class="error">${error}</p>`}
      <div class="table"><table id="nodes">
        <thead><tr><th>Name</th><th>Ready</th><th>CPU</th><th>Memory</th><th>Tunnel</th>
          <th>Arch</th><th>Version</th><th>Age</th><th></th></tr></thead>
        <tbody>${byName(rows).map((n) => html`<tr key=${n.uid}>
            <td>${n.name}</td>
            <td class=${n.ready ? "ok" : "bad"}>${n.ready ? "Ready" : "NotReady"}</td>
            ${UsageCells ? html`<${UsageCells} series=${usage.get(n.name)} />` : html`<td /><td />`}
            <td class="tunnel" data-node=${n.name}><${Tunnel} t=${tunnels[n.name]} /></td>
            <td>${n.arch}</td><td class="version" data-node=${n.name}>${n.kubelet}</td>
            <td>${age(n.created)}</td><td><button class="link" data-metrics=${n.name}
              onClick=${() => onMetrics({ kind: "nodes", name: n.name })}>metrics</button>
              <button class="link" data-mqtt=${n.name}
                onClick=${() => onMqtt(n.name)}>MQTT</button></td></tr>`)}
        </tbody></table></div>`;
  }
}

// The pods, live; a pod's name opens its page (pod.js, loaded then), kept open (detail: its
// uid, the App's) while it is in the list; a workload's page opens its pods' pages here too.
class Pods extends Watched {
  spec() { return { group: "", resource: "pods" }; }
  remove(p) {
    api(`/api/v1/namespaces/${encodeURIComponent(p.namespace)}/pods/` +
      encodeURIComponent(p.name), { method: "DELETE" })
      .catch((e) => this.setState({ error: message(e) }));
  }
  render(props, { rows, error }) {
    const { onLogs, onShell, onMetrics, onDetail, detail, permissions } = props;
    const chosen = detail && rows.get(detail);
    if (chosen) {
      return html`<${Lazy} key=${`pod ${chosen.uid}`} load=${() => import("./pod.js")}
        name="PodDetail" ...${props} row=${chosen} onBack=${() => onDetail(null)} />`;
    }
    return html`
      ${error && html`<p class="error">${error}</p>`}
      <div class="table"><table id="pods">
        <thead><tr><th>Namespace</th><th>Name</th><th>Phase</th><th>Node</th><th>Restarts</th>
          <th>Age</th><th></th></tr></thead>
        <tbody>${byName(rows).map((p) => html`<tr key=${p.uid}>
          <td>${p.namespace}</td><td><button class="link" data-pod=${p.name}
            onClick=${() => onDetail(p.uid)}>${p.name}</button></td><td>${p.phase}</td>
          <td>${p.node}</td><td>${p.restarts}</td><td>${age(p.created)}</td>
          <td><button class="link" onClick=${() => onLogs(p)}>logs</button>
            <button class="link" data-metrics=${p.name} onClick=${() => onMetrics({ kind: "pods",
              namespace: p.namespace, name: `${p.namespace}/${p.name}` })}>metrics</button>
            ${permissions.can("create", "", "pods/exec", p.namespace) && html`<button
              class="link" data-shell=${p.name} onClick=${() => onShell(p)}>shell</button>`}
            ${permissions.can("delete", "", "pods", p.namespace) && html`<button
              class="link danger" data-delete=${p.name}
              onClick=${() => this.remove(p)}>delete</button>`}</td></tr>`)}
        </tbody></table></div>`;
  }
}

// uPlot, loaded with a script element the first time a plot is shown (not on first load).
const loadUplot = () => loadScript(UPLOT, UPLOT_CSS, "uPlot");

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

// A twin's delta, as KubeEdge's twin sends one to the mapper: the desired value while the
// reported one differs from it (not yet applied, or no mapper reporting); none once they agree.
function delta(twin) {
  if (twin.desired == null || twin.desired === twin.reported) {
    return html`<span class="muted">none</span>`;
  }
  return html`<span class="bad">${twin.desired}</span>`;
}

// Each device's state (status.state, "unknown" until its mapper reports one) and its twins:
// desired, reported and the delta between them, live; Set writes a desired value.
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
        <thead><tr><th>Namespace</th><th>Name</th><th>Model</th><th>State</th><th>Property</th>
          <th>Desired</th><th>Reported</th><th>Delta</th><th></th></tr></thead>
        <tbody>${byName(rows).map((d) => (d.twins.length ? d.twins : [null]).map((t, i) => {
          const key = `${d.uid}/${i}`;
          const writable = t && permissions.can("patch", DEVICES.group, "devices", d.namespace);
          return html`<tr key=${key}>
            <td>${i === 0 && d.namespace}</td><td>${i === 0 && d.name}</td>
            <td>${i === 0 && d.model}</td>
            <td class=${i === 0 ? `state ${d.state}` : ""} data-device=${d.name}>${
              i === 0 && d.state}</td>
            <td>${t?.property}</td>
            <td>${writable ? html`<form class="inline" onSubmit=${(e) => {
                e.preventDefault(); this.setDesired(d, i); }}>
                <input name="desired" size="6" data-device=${d.name}
                  value=${desired[key] ?? t.desired ?? ""}
                  onInput=${(e) => this.setState({ desired: { ...desired, [key]: e.target.value } })} />
                <button type="submit">Set</button></form>` : t?.desired}</td>
            <td class="reported" data-device=${d.name}>${t?.reported}</td>
            <td class="delta" data-device=${d.name}>${t && delta(t)}</td>
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
  render({ linkError }, { token, error }) {
    return html`<form class="login" onSubmit=${(e) => this.submit(e)}>
      <h2>Log in to k3py</h2>
      <label for="token">Bearer token (a service account's, or the admin's)</label>
      <input id="token" type="password" autocomplete="off" value=${token}
        onInput=${(e) => this.setState({ token: e.target.value })} />
      <button type="submit">Log in</button>
      <p class="muted">Or run <code>k3py dashboard-url</code> on the server for a one-time link.</p>
      ${(error || linkError) && html`<p class="error" id="login-error">${error || linkError}</p>`}
      </form>`;
  }
}

// A login link's one-time code (`k3py dashboard-url`), taken out of the address at once.
function takeLoginCode() {
  const match = /^#login=([\w-]+)$/.exec(location.hash);
  if (!match) return null;
  history.replaceState(null, "", location.pathname + location.search);
  return api("/dashboard/login", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code: match[1] }) });
}

const VIEWS = [["overview", "Overview"], ["nodes", "Nodes"], ["metrics", "Metrics"], ["pods", "Pods"],
  ["workloads", "Workloads"], ["events", "Events"], ["devices", "Devices"],
  ["devicemodels", "Device models"]];

class App extends Component {
  state = { session: null, authed: null, view: "overview", pod: null, shell: null, mqtt: null,
    pick: null, detail: null, workload: null, back: null };
  componentDidMount() {
    // a link opened in a tab already showing the page changes only the address's fragment
    addEventListener("hashchange", () => this.followLink());
    if (!this.followLink()) this.loadSession();
  }
  followLink() {
    const login = takeLoginCode();
    login?.then(() => this.loadSession()).catch(() => {
      this.live?.close();
      this.setState({ authed: false, linkError: "That login link was already used or has " +
        "expired: run k3py dashboard-url again." });
    });
    return login;
  }
  loadSession() {
    api("/dashboard/api/session").then((r) => r.json()).then((session) => {
      this.live?.close();
      this.live = new Live(() => this.setState({ authed: false }));
      this.permissions = new Permissions(session.readOnly);
      this.setState({ session, authed: true, linkError: "" });
    }).catch(() => this.setState({ authed: false }));
  }
  logout() {
    api("/dashboard/logout", { method: "POST" }).catch(() => {})
      .finally(() => { this.live?.close(); this.setState({ authed: false, session: null }); });
  }
  render(_, { authed, session, view, pod, shell, mqtt, pick, detail, workload, back,
    linkError }) {
    if (authed === null) return html`<p>Loading…</p>`;
    const unauthorized = () => { this.live?.close(); this.setState({ authed: false }); };
    if (!authed) {
      return html`<${Login} linkError=${linkError} onLogin=${() => this.loadSession()} />`;
    }
    const open = (name, picked = null) => this.setState({ view: name, pod: null, shell: null,
      mqtt: null, pick: picked, detail: null, workload: null, back: null });
    // a workload's page opens a pod's page in the Pods view; its Back goes to that workload
    // (back: {kind, uid, name}, the workload's page Workloads opens again)
    const onPod = (uid, from) => this.setState({ view: "pods", detail: uid, back: from });
    const onDetail = (uid) => this.setState(uid ? { detail: uid, back: null }
      : back ? { view: "workloads", detail: null, back: null, workload: back } : { detail: null });
    const onMetrics = (picked) => open("metrics", picked); // a node's or pod's graphs
    const tab = (name, label) => html`<button aria-current=${view === name ? "page" : null}
      onClick=${() => open(name)}>${label}</button>`;
    const common = { live: this.live, permissions: this.permissions,
      onUnauthorized: unauthorized };
    let body;
    if (shell) {
      body = html`<${Shell} pod=${shell} onBack=${() => this.setState({ shell: null })} />`;
    } else if (pod) {
      body = html`<${Lazy} key="logs" load=${() => import("./logs.js")} name="LogView"
        pods=${[pod]} title=${`${pod.namespace}/${pod.name}`} live=${this.live}
        onBack=${() => this.setState({ pod: null })} />`;
    } else if (view === "overview") {
      body = html`<${Overview} ...${common} onOpen=${open} />`;
    } else if (mqtt) {
      body = html`<${Lazy} key="mqtt" load=${() => import("./mqtt.js")} name="MqttNode"
        node=${mqtt} ...${common} onBack=${() => this.setState({ mqtt: null })} />`;
    } else if (view === "nodes") {
      body = html`<${Nodes} ...${common} onMqtt=${(node) => this.setState({ mqtt: node })}
        onMetrics=${onMetrics} />`;
    } else if (view === "metrics") {
      body = html`<${Lazy} key=${`metrics ${pick?.kind} ${pick?.name}`}
        load=${() => import("./metrics.js")} name="Metrics" pick=${pick} ...${common} />`;
    } else if (view === "workloads") {
      body = html`<${Lazy} key="workloads" load=${() => import("./workloads.js")}
        name="Workloads" ...${common} workload=${workload} onPod=${onPod} />`;
    } else {
      const views = { pods: Pods, events: Events, devices: Devices, devicemodels: DeviceModels };
      body = html`<${Namespaced} key=${view} view=${views[view]} ...${common}
        onLogs=${(p) => this.setState({ pod: p })} onShell=${(p) => this.setState({ shell: p })}
        onMetrics=${onMetrics} detail=${detail} onDetail=${onDetail}
        backLabel=${back ? `Back to ${back.name}` : "Back to pods"} />`;
    }
    return html`<header><h1>k3py</h1><nav>${VIEWS.map(([n, l]) => tab(n, l))}</nav>
      <span class="muted" id="user">${session.user}${session.readOnly
        ? html` <span class="badge" id="read-only">read-only</span>` : ""}</span>
      <button id="logout" onClick=${() => this.logout()}>Log out</button></header>
      <main>${body}</main>`;
  }
}

render(html`<${App} />`, document.getElementById("app"));
