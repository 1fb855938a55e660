// The Overview (the landing view: nodes online or offline, i.e. their tunnel connected or not,
// pods by phase, devices by state, MQTT messages per second (mqtt.js), the newest warnings) and
// the Events view (live, filtered by type, namespace and object). Both are fed by the tab's live
// subscriptions (live.js, the tunnels feed too); nothing is polled.
import { Component } from "./vendor/preact.mjs";
import { age, html, Watched } from "./common.js";
import { MqttCard } from "./mqtt.js";

const WARNINGS = 8; // on the overview
const EVENT_ROWS = 500; // shown at most, newest first
const DEVICES = { group: "devices.kubeedge.io", version: "v1alpha2", resource: "devices" };

const newest = (a, b) => (b.last || "").localeCompare(a.last || "");
const objectName = (e) => `${e.object.kind}/${e.object.name}`;

function counts(rows, key) {
  const out = {};
  for (const row of rows.values()) out[key(row)] = (out[key(row)] || 0) + 1;
  return Object.entries(out).sort(([a], [b]) => a.localeCompare(b));
}

function Card({ title, id, error, entries, onOpen }) {
  return html`<section class="card" id=${id}>
    <h2><button class="link" onClick=${onOpen}>${title}</button></h2>
    ${error ? html`<p class="muted">${error}</p>` : entries.length === 0
      ? html`<p class="muted">none</p>`
      : html`<dl>${entries.map(([label, n]) => html`<div class=${`count ${label}`}>
          <dt>${label}</dt><dd data-count=${label}>${n}</dd></div>`)}</dl>`}</section>`;
}

function EventRows({ events }) {
  return html`<div class="table"><table id="events">
    <thead><tr><th>Last seen</th><th>Type</th><th>Namespace</th><th>Object</th><th>Reason</th>
      <th>Message</th><th>Count</th></tr></thead>
    <tbody>${events.map((e) => html`<tr key=${e.uid}>
      <td>${age(e.last)}</td><td class=${e.type === "Warning" ? "bad" : ""}>${e.type}</td>
      <td>${e.namespace}</td><td>${objectName(e)}</td><td>${e.reason}</td>
      <td class="message">${e.message}</td><td>${e.count}</td></tr>`)}</tbody></table></div>`;
}

export class Overview extends Component {
  state = { nodes: new Map(), tunnels: {}, pods: new Map(), devices: new Map(),
    events: new Map(), errors: {} };
  componentDidMount() {
    const kinds = { nodes: { group: "", resource: "nodes" }, tunnels: { op: "tunnels" },
      pods: { group: "", resource: "pods" }, events: { group: "", resource: "events" },
      devices: DEVICES };
    this.unsubscribe = Object.entries(kinds).map(([key, spec]) => this.props.live.subscribe(
      spec, (rows) => this.setState({ [key]: rows }),
      (error) => this.setState({ errors: { ...this.state.errors, [key]: error } })));
  }
  componentWillUnmount() { this.unsubscribe.forEach((stop) => stop()); }
  render({ onOpen }, { nodes, tunnels, pods, devices, events, errors }) {
    const warnings = [...events.values()].filter((e) => e.type === "Warning")
      .sort(newest).slice(0, WARNINGS);
    return html`<div class="cards">
        <${Card} title="Nodes" id="overview-nodes" error=${errors.nodes || errors.tunnels}
          entries=${counts(nodes, (n) => (tunnels[n.name]?.connected ? "online" : "offline"))}
          onOpen=${() => onOpen("nodes")} />
        <${Card} title="Pods" id="overview-pods" error=${errors.pods}
          entries=${counts(pods, (p) => p.phase || "Unknown")} onOpen=${() => onOpen("pods")} />
        <${Card} title="Devices" id="overview-devices" error=${errors.devices}
          entries=${counts(devices, (d) => d.state)} onOpen=${() => onOpen("devices")} />
        <${MqttCard} live=${this.props.live} onOpen=${() => onOpen("nodes")} />
      </div>
      <h2>Recent warnings</h2>
      ${errors.events ? html`<p class="error">${errors.events}</p>` : warnings.length === 0
        ? html`<p class="muted" id="no-warnings">No warnings.</p>`
        : html`<${EventRows} events=${warnings} />`}
      <p><button class="link" onClick=${() => onOpen("events")}>All events</button></p>`;
  }
}

export class Events extends Watched {
  spec() { return { group: "", resource: "events" }; }
  state = { rows: new Map(), error: "", type: "", object: "" };
  render(_, { rows, error, type, object }) {
    const wanted = object.toLowerCase();
    const shown = [...rows.values()].filter((e) => (!type || e.type === type) &&
      (!wanted || objectName(e).toLowerCase().includes(wanted))).sort(newest);
    return html`
      <div class="toolbar">
        <label>Type <select id="event-type" value=${type}
          onChange=${(e) => this.setState({ type: e.target.value })}>
          <option value="">all</option><option>Normal</option><option>Warning</option>
        </select></label>
        <label>Object <input id="event-object" placeholder="kind/name" value=${object}
          onInput=${(e) => this.setState({ object: e.target.value })} /></label>
        <span class="muted">${Math.min(shown.length, EVENT_ROWS)} of ${rows.size}</span></div>
      ${error && html`<p class="error">${error}</p>`}
      <${EventRows} events=${shown.slice(0, EVENT_ROWS)} />`;
  }
}
