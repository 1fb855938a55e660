// Deployments, StatefulSets and DaemonSets: live lists, and a workload's details with its pods
// and events (live; a pod's name opens its page, pod.js, in the Pods view), scale, restart (kubectl rollout restart's annotation), delete, its YAML
// edited and checked by a server dry-run before it is saved (details.js), and its pods' logs
// in one stream. Loaded the first time the Workloads view opens.
import { Component } from "./vendor/preact.mjs";
import { age, api, byName, html, message, Namespaced, resourcePath, Watched } from "./common.js";
import { DeleteButton, EventList, eventsOf, YamlEditor } from "./details.js";
import { LogView } from "./logs.js";
const KINDS = {
  deployments: { group: "apps", version: "v1", resource: "deployments", kind: "Deployment",
    scalable: true },
  statefulsets: { group: "apps", version: "v1", resource: "statefulsets", kind: "StatefulSet",
    scalable: true },
  daemonsets: { group: "apps", version: "v1", resource: "daemonsets", kind: "DaemonSet" },
};
const RESTARTED_AT = "kubectl.kubernetes.io/restartedAt";

function selectorString(labels) {
  return Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(",");
}

function rfc3339Now() { return new Date().toISOString().replace(/\.\d+Z$/, "Z"); }

// workload: {kind, uid} of the workload whose page opens first (the one a pod's page was
// opened from), else the list.
export class Workloads extends Component {
  state = { kind: this.props.workload?.kind || "deployments" };
  render(props, { kind }) {
    return html`<div class="toolbar"><label>Kind <select id="workload-kind" value=${kind}
        onChange=${(e) => this.setState({ kind: e.target.value })}>
        ${Object.entries(KINDS).map(([k, spec]) => html`<option value=${k}>${spec.kind}s</option>`)}
      </select></label></div>
      <${Namespaced} key=${kind} view=${WorkloadList} spec=${KINDS[kind]} ...${props} />`;
  }
}

class WorkloadList extends Watched {
  state = { rows: new Map(), error: "", selected: this.props.workload?.uid };
  spec() { return this.props.spec; }
  render(props, { rows, error, selected }) {
    const chosen = selected && rows.get(selected);
    if (chosen) {
      return html`<${Workload} ...${props} row=${chosen}
        onBack=${() => this.setState({ selected: null })} />`;
    }
    return html`
      ${error && html`<p class="error">${error}</p>`}
      <div class="table"><table id="workloads">
        <thead><tr><th>Namespace</th><th>Name</th><th>Ready</th><th>Up-to-date</th>
          <th>Images</th><th>Age</th></tr></thead>
        <tbody>${byName(rows).map((w) => html`<tr key=${w.uid}>
          <td>${w.namespace}</td><td><button class="link" data-workload=${w.name}
            onClick=${() => this.setState({ selected: w.uid })}>${w.name}</button></td>
          <td class=${w.ready === w.desired ? "ok" : "bad"}>${w.ready}/${w.desired}</td>
          <td>${w.upToDate}</td><td>${w.images.join(", ")}</td><td>${age(w.created)}</td>
          </tr>`)}</tbody></table></div>`;
  }
}

// One workload: its counts (live, from the list's row), actions, pods and events.
class Workload extends Component {
  state = { pods: new Map(), events: new Map(), error: "", notice: "", mode: "", replicas: "" };
  componentDidMount() {
    const { live, row } = this.props;
    this.stops = [
      live.subscribe({ group: "", resource: "pods", namespace: row.namespace,
        labelSelector: selectorString(row.selector) }, (pods) => this.setState({ pods }),
      (error) => this.setState({ error })),
      live.subscribe({ group: "", resource: "events", namespace: row.namespace },
        (events) => this.setState({ events }), (error) => this.setState({ error })),
    ];
  }
  componentWillUnmount() { this.stops.forEach((stop) => stop()); }
  path() { return resourcePath(this.props.spec, this.props.row.namespace, this.props.row.name); }
  act(promise, notice) {
    this.setState({ error: "", notice: "" });
    return promise.then(() => this.setState({ notice }))
      .catch((e) => this.setState({ error: message(e) }));
  }
  patch(body, notice) {
    return this.act(api(this.path(), { method: "PATCH", body: JSON.stringify(body),
      headers: { "Content-Type": "application/merge-patch+json" } }), notice);
  }
  scale(e) {
    e.preventDefault();
    const replicas = Number(this.state.replicas);
    if (!Number.isInteger(replicas) || replicas < 0) {
      this.setState({ error: "replicas must be a whole number, 0 or more" });
      return;
    }
    this.act(api(`${this.path()}/scale`, { method: "PATCH",
      headers: { "Content-Type": "application/merge-patch+json" },
      body: JSON.stringify({ spec: { replicas } }) }), `scaled to ${replicas}`);
  }
  restart() {
    this.patch({ spec: { template: { metadata: { annotations: {
      [RESTARTED_AT]: rfc3339Now() } } } } }, "restarted");
  }
  remove() {
    this.act(api(this.path(), { method: "DELETE" }), "deleted")
      .then(() => this.props.onBack());
  }
  render({ spec, row, permissions, onBack, onPod, onUnauthorized }, state) {
    const { pods, events, error, notice, mode, replicas } = state;
    const can = (verb, resource = spec.resource) =>
      permissions.can(verb, spec.group, resource, row.namespace);
    const title = `${spec.kind} ${row.namespace}/${row.name}`;
    const podList = byName(pods).map((p) => ({ namespace: p.namespace, name: p.name,
      containers: p.containers }));
    if (mode === "logs") {
      return html`<${LogView} pods=${podList} title=${title} onUnauthorized=${onUnauthorized}
        onBack=${() => this.setState({ mode: "" })} />`;
    }
    if (mode === "yaml") {
      return html`<${YamlEditor} path=${this.path()} title=${title}
        editable=${can("update")} onBack=${() => this.setState({ mode: "" })} />`;
    }
    const mine = eventsOf(events, [{ kind: spec.kind, name: row.name }], pods);
    return html`
      <div class="toolbar"><button onClick=${onBack}>Back</button>
        <strong id="workload-title">${title}</strong>
        <span class=${row.ready === row.desired ? "ok" : "bad"} id="workload-ready">
          ${row.ready}/${row.desired} ready</span></div>
      <div class="toolbar">
        ${spec.scalable && can("patch", `${spec.resource}/scale`) && html`<form class="inline"
          onSubmit=${(e) => this.scale(e)}><input id="replicas" type="number" min="0" size="4"
            value=${replicas === "" ? row.desired : replicas}
            onInput=${(e) => this.setState({ replicas: e.target.value })} />
          <button type="submit" id="scale">Scale</button></form>`}
        ${can("patch") && html`<button id="restart" onClick=${() => this.restart()}>
          Restart</button>`}
        <button id="yaml" onClick=${() => this.setState({ mode: "yaml" })}>YAML</button>
        <button id="workload-logs" disabled=${!podList.length}
          onClick=${() => this.setState({ mode: "logs" })}>Logs</button>
        ${can("delete") && html`<${DeleteButton} name=${row.name}
          onDelete=${() => this.remove()} />`}
        ${notice && html`<span class="ok" id="notice">${notice}</span>`}</div>
      ${error && html`<p class="error" id="workload-error">${error}</p>`}
      <p class="muted">Images: ${row.images.join(", ")}; selector:
        ${selectorString(row.selector) || "none"}</p>
      <h3>Pods</h3>
      <div class="table"><table id="workload-pods">
        <thead><tr><th>Name</th><th>Phase</th><th>Node</th><th>Restarts</th><th>Age</th></tr></thead>
        <tbody>${byName(pods).map((p) => html`<tr key=${p.uid}><td><button class="link"
          data-pod=${p.name} onClick=${() => onPod(p.uid, { kind: spec.resource, uid: row.uid,
            name: row.name })}>${p.name}</button></td>
          <td>${p.phase}</td><td>${p.node}</td><td>${p.restarts}</td><td>${age(p.created)}</td>
          </tr>`)}</tbody></table></div>
      <${EventList} id="workload-events" events=${mine} />`;
  }
}

