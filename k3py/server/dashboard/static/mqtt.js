// MQTT on the nodes: the Overview's card (cluster messages per second, summed over the nodes)
// and a node's MQTT page (its broker's clients, messages per second by topic, a live tail with
// a topic filter). Both follow feeds of the tab's websocket (live.js): "mqtt", each node's
// summary as its agent reports it, and "mqtttail", which the server opens to the node only
// while this page shows it. A payload the user may not read comes without it (hidden).
import { Component } from "./vendor/preact.mjs";
import { html } from "./common.js";

const TAIL = 200; // messages kept, newest first
const FILTER = "$hw/events/device/#";

const perSecond = (r) => (r >= 10 ? r.toFixed(0) : r.toFixed(1));
const clock = (s) => (s ? new Date(s * 1000).toLocaleTimeString() : "");

// Follows the "mqtt" feed while mounted: state.nodes = {NAME: summary}.
class Summaries extends Component {
  componentDidMount() {
    this.unfollow = this.props.live.subscribe({ op: "mqtt" }, ({ nodes }) => {
      const before = this.state.nodes;
      this.setState({ nodes, error: "" });
      this.changed?.(before || {}, nodes);
    }, (error) => this.setState({ error }));
  }
  componentWillUnmount() { this.unfollow?.(); }
}

export class MqttCard extends Summaries {
  render({ onOpen }, { nodes, error }) {
    const all = Object.values(nodes || {});
    const total = all.reduce((sum, s) => sum + s.rate, 0);
    const errors = all.reduce((sum, s) => sum + s.errors, 0);
    return html`<section class="card" id="overview-mqtt">
      <h2><button class="link" onClick=${onOpen}>MQTT</button></h2>
      ${error ? html`<p class="muted">${error}</p>` : html`<dl>
        <div class="count"><dt>msg/s</dt><dd data-count="msg/s">${perSecond(total)}</dd></div>
        <div class="count"><dt>nodes</dt><dd data-count="nodes">${all.length}</dd></div>
        <div class=${`count ${errors ? "offline" : ""}`}><dt>error answers</dt>
          <dd data-count="errors">${errors}</dd></div></dl>`}</section>`;
  }
}

function Clients({ s }) {
  if (s.clients == null) {
    return html`<p class="muted">The node uses an external broker: its clients are not known.</p>`;
  }
  return html`<div class="table"><table id="mqtt-clients">
      <thead><tr><th>Client id</th><th>Address</th><th>Connected since</th></tr></thead>
      <tbody>${s.clients.map((c) => html`<tr key=${c.id}>
        <td>${c.id}</td><td>${c.address}</td><td>${clock(c.since)}</td></tr>`)}</tbody>
    </table></div>
    ${s.clientCount > s.clients.length &&
      html`<p class="muted">and ${s.clientCount - s.clients.length} more</p>`}`;
}

function Topics({ s }) {
  return html`<div class="table"><table id="mqtt-topics">
    <thead><tr><th>Topic</th><th>msg/s</th><th>Total</th></tr></thead>
    <tbody>${s.topics.map((t) => html`<tr key=${t.topic}><td>${t.topic}</td>
      <td class="rate" data-topic=${t.topic}>${perSecond(t.rate)}</td><td>${t.total}</td>
      </tr>`)}</tbody></table></div>`;
}

function Tail({ tail }) {
  return html`<div class="table"><table id="mqtt-tail">
    <thead><tr><th>Time</th><th></th><th>Topic</th><th>Size</th><th>Payload</th></tr></thead>
    <tbody>${tail.map((m) => html`<tr key=${m.key} data-topic=${m.topic}>
      <td>${clock(m.at)}</td><td class=${m.direction === "error" ? "bad" : ""}>${m.direction}</td>
      <td>${m.topic}</td><td>${m.size} B</td>
      <td class="payload">${m.hidden ? html`<span class="muted hidden">hidden (you may not
        read this device)</span>` : m.payload}</td></tr>`)}</tbody></table></div>`;
}

// props: node, live, onBack.
export class MqttNode extends Summaries {
  state = { nodes: null, error: "", filter: FILTER, draft: FILTER, tail: [], dropped: 0,
    tailError: "" };
  componentDidMount() { super.componentDidMount(); this.follow(FILTER); }
  componentWillUnmount() { super.componentWillUnmount(); this.unfollowTail?.(); }
  // the node's link came back: a tail that ended with it starts again
  changed(before, nodes) {
    const { node } = this.props;
    if (!before[node] && nodes[node] && this.state.tailError) this.follow(this.state.filter);
  }
  follow(filter) {
    this.unfollowTail?.();
    this.seq = 0;
    this.setState({ filter, tail: [], dropped: 0, tailError: "" });
    this.unfollowTail = this.props.live.subscribe(
      { op: "mqtttail", node: this.props.node, filter },
      ({ messages, dropped }) => this.setState(({ tail }) => ({ dropped, tailError: "",
        tail: [...messages.reverse().map((m) => ({ ...m, key: ++this.seq })), ...tail]
          .slice(0, TAIL) })),
      (tailError) => this.setState({ tailError }));
  }
  render({ node, onBack }, { nodes, error, draft, tail, dropped, tailError }) {
    const s = nodes?.[node];
    return html`
      <div class="toolbar"><button onClick=${onBack}>Back to nodes</button>
        <strong>MQTT on ${node}</strong>
        ${s && html`<span id="mqtt-rate">${perSecond(s.rate)} msg/s</span>
          <span class="muted">${`${s.received} received, ${s.published} published, ${
            s.errors} error answers`}${s.tails != null && html`, <span id="mqtt-tails">${
            s.tails} live ${s.tails === 1 ? "tail" : "tails"} open</span>`}</span>`}</div>
      ${error && html`<p class="error">${error}</p>`}
      ${nodes && !s && html`<p class="muted" id="mqtt-none">No MQTT figures from ${node}: its
        tunnel is not connected to this server.</p>`}
      ${s && html`<h2>Clients</h2><${Clients} s=${s} />
        <h2>Messages per second by topic <span class="muted">(last ${s.window} s)</span></h2>
        <${Topics} s=${s} />`}
      <h2>Live tail</h2>
      <form class="toolbar" onSubmit=${(e) => {
        e.preventDefault(); this.follow(draft.trim() || FILTER); }}>
        <label>Topic filter <input id="mqtt-filter" size="28" value=${draft}
          onInput=${(e) => this.setState({ draft: e.target.value })} /></label><button type="submit">Apply</button>
        <span class="muted" id="mqtt-dropped">newest ${TAIL}, at most 50 a second${
          dropped ? `; ${dropped} dropped` : ""}</span></form>
      ${tailError && html`<p class="error" id="mqtt-tail-error">${tailError}</p>`}
      <${Tail} tail=${tail} />`;
  }
}
