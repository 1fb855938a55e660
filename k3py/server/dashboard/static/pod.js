// A pod's detail page, opened from its row in the Pods view or a workload's page: phase, node, IPs, its containers
// (image, ready, restarts, state) and conditions, from the pod itself (read again each time
// its live row changes, so it follows the pod without polling), its events (live), its YAML
// (details.js: a pod's spec is mostly immutable, so the dry run says what may not change),
// delete, and its logs, metrics and shell. Loaded the first time a pod's page opens.
import { Component } from "./vendor/preact.mjs";
import { age, api, html, message, resourcePath } from "./common.js";
import { DeleteButton, EventList, eventsOf, YamlEditor } from "./details.js";

const PODS = { group: "", version: "v1", resource: "pods" };

// A container's state as kubectl describe words it: Running (for how long), Waiting (reason),
// Terminated (reason, exit code).
function containerState(state = {}) {
  if (state.running) return ["ok", `Running for ${age(state.running.startedAt)}`];
  if (state.waiting) return ["bad", `Waiting: ${state.waiting.reason || "unknown"}`];
  if (state.terminated) {
    const t = state.terminated;
    return [t.exitCode === 0 ? "muted" : "bad",
      `Terminated: ${t.reason || "unknown"} (exit code ${t.exitCode})`];
  }
  return ["muted", "not started"];
}

const summary = (row, status) => [`Node ${row.node || "none (not scheduled)"}`,
  `IP ${status.podIP || "none"}${status.hostIP ? ` on host ${status.hostIP}` : ""}`,
  status.qosClass && `QoS ${status.qosClass}`, `created ${age(row.created)} ago`]
  .filter(Boolean).join("; ");

function Containers({ pod }) {
  const statuses = new Map((pod.status?.containerStatuses || []).map((c) => [c.name, c]));
  return html`<h3>Containers</h3><div class="table"><table id="pod-containers">
    <thead><tr><th>Name</th><th>Image</th><th>Ready</th><th>Restarts</th><th>State</th></tr>
    </thead><tbody>${(pod.spec?.containers || []).map((c) => {
      const status = statuses.get(c.name) || {};
      const [mark, state] = containerState(status.state);
      return html`<tr key=${c.name}><td>${c.name}</td><td>${c.image}</td>
        <td class=${status.ready ? "ok" : "bad"}>${status.ready ? "yes" : "no"}</td>
        <td>${status.restartCount || 0}</td><td class=${mark}>${state}</td></tr>`;
    })}</tbody></table></div>`;
}

function Conditions({ pod }) {
  const conditions = pod.status?.conditions || [];
  return html`<h3>Conditions</h3>${conditions.length ? html`<div class="table">
    <table id="pod-conditions"><thead><tr><th>Type</th><th>Status</th><th>Reason</th>
      <th>Changed</th></tr></thead><tbody>${conditions.map((c) => html`<tr key=${c.type}>
      <td>${c.type}</td><td class=${c.status === "True" ? "ok" : "bad"}>${c.status}</td>
      <td>${c.reason || ""}</td><td>${age(c.lastTransitionTime)}</td></tr>`)}</tbody></table></div>`
    : html`<p class="muted">none</p>`}`;
}

// row: the pod's live row (the Pods view's subscription); a new row means the pod changed.
export class PodDetail extends Component {
  state = { pod: null, events: new Map(), error: "", mode: "" };
  componentDidMount() {
    const { live, row } = this.props;
    this.stop = live.subscribe({ group: "", resource: "events", namespace: row.namespace },
      (events) => this.setState({ events }), (error) => this.setState({ error }));
    this.load();
  }
  componentDidUpdate(previous) { if (previous.row !== this.props.row) this.load(); }
  componentWillUnmount() { this.stop(); }
  path() { return resourcePath(PODS, this.props.row.namespace, this.props.row.name); }
  load() {
    const wanted = this.props.row;
    api(this.path()).then((r) => r.json())
      .then((pod) => { if (this.props.row === wanted) this.setState({ pod }); })
      .catch((e) => this.setState({ error: message(e) }));
  }
  remove() {
    this.setState({ error: "" });
    api(this.path(), { method: "DELETE" }).then(() => this.props.onBack())
      .catch((e) => this.setState({ error: message(e) }));
  }
  render({ row, permissions, backLabel, onBack, onLogs, onShell, onMetrics },
    { pod, events, error, mode }) {
    const can = (verb, resource = "pods") => permissions.can(verb, "", resource, row.namespace);
    const title = `Pod ${row.namespace}/${row.name}`;
    if (mode === "yaml") {
      return html`<${YamlEditor} path=${this.path()} title=${title} editable=${can("update")}
        onBack=${() => this.setState({ mode: "" })} />`;
    }
    const status = pod?.status || {};
    return html`
      <div class="toolbar"><button onClick=${onBack}>${backLabel}</button>
        <strong id="pod-title">${title}</strong>
        <span class=${row.phase === "Running" ? "ok" : "bad"} id="pod-phase">${row.phase}</span>
      </div>
      <div class="toolbar">
        <button id="yaml" onClick=${() => this.setState({ mode: "yaml" })}>YAML</button>
        <button id="pod-logs" onClick=${() => onLogs(row)}>Logs</button>
        <button onClick=${() => onMetrics({ kind: "pods", namespace: row.namespace,
          name: `${row.namespace}/${row.name}` })}>Metrics</button>
        ${can("create", "pods/exec") && html`<button id="pod-shell"
          onClick=${() => onShell(row)}>Shell</button>`}
        ${can("delete") && html`<${DeleteButton} name=${row.name}
          onDelete=${() => this.remove()} />`}</div>
      ${error && html`<p class="error" id="pod-error">${error}</p>`}
      <p id="pod-summary">${summary(row, status)}${status.reason && html`;
        <span class="bad">${status.reason}: ${status.message}</span>`}</p>
      ${pod ? html`<${Containers} pod=${pod} /><${Conditions} pod=${pod} />`
        : !error && html`<p>Loading…</p>`}
      <${EventList} id="pod-events" events=${eventsOf(events, [{ kind: "Pod", name: row.name }],
        new Set([row.uid]))} />`;
  }
}
