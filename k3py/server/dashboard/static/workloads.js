// Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs: live lists with each
// kind's columns, and a workload's details with its pods (a Job's by its selector) or, for a
// CronJob, its Jobs, and events (live; a pod's name opens its page, pod.js, in the Pods view; a
// Job's opens the Job), scale (Deployments, StatefulSets, ReplicaSets), restart (kubectl
// rollout restart's annotation; not for ReplicaSets, Jobs, CronJobs), suspend/resume (a
// CronJob), delete (with its dependents, as kubectl does), its YAML edited and checked by a
// server dry-run before it is saved (details.js), and its pods' logs in one stream. Loaded the
// first time the Workloads view opens.
import { Component } from "./vendor/preact.mjs";
import { age, api, byName, duration, html, message, Namespaced, resourcePath, Watched }
  from "./common.js";
import { DeleteButton, EventList, eventsOf, YamlEditor } from "./details.js";
import { LogView } from "./logs.js";

// A list column: its header, the cell's text and, where it has one, whether the value is good.
const col = (header, text, good) => ({ header, text, good });
const READY = col("Ready", (w) => `${w.ready}/${w.desired}`, (w) => w.ready === w.desired);
const IMAGES = col("Images", (w) => w.images.join(", "));
const REPLICATED = [READY, col("Up-to-date", (w) => w.upToDate), IMAGES];
const readySummary = (w) => [`${w.ready}/${w.desired} ready`, w.ready === w.desired];
const JOBS = { group: "batch", version: "v1", resource: "jobs", kind: "Job" };
const KINDS = {
  deployments: { group: "apps", version: "v1", resource: "deployments", kind: "Deployment",
    scalable: true, restartable: true, columns: REPLICATED, summary: readySummary },
  statefulsets: { group: "apps", version: "v1", resource: "statefulsets", kind: "StatefulSet",
    scalable: true, restartable: true, columns: REPLICATED, summary: readySummary },
  daemonsets: { group: "apps", version: "v1", resource: "daemonsets", kind: "DaemonSet",
    restartable: true, columns: REPLICATED, summary: readySummary },
  replicasets: { group: "apps", version: "v1", resource: "replicasets", kind: "ReplicaSet",
    scalable: true, summary: readySummary, columns: [col("Desired", (w) => w.desired),
      col("Current", (w) => w.current), READY, col("Deployment", (w) => w.owner), IMAGES] },
  jobs: { ...JOBS, summary: (w) => [`${w.status}, ${w.ready}/${w.desired} succeeded`,
    w.status !== "Failed"], columns: [
    col("Completions", (w) => `${w.ready}/${w.desired}`, (w) => w.ready >= w.desired),
    col("Active", (w) => w.active), col("Duration", (w) => w.start && duration(w.start, w.end)),
    col("Status", (w) => w.status, (w) => w.status !== "Failed")] },
  cronjobs: { group: "batch", version: "v1", resource: "cronjobs", kind: "CronJob",
    summary: (w) => [`${w.schedule}${w.suspend ? ", suspended" : ""}`, !w.suspend], columns: [
      col("Schedule", (w) => w.schedule), col("Suspend", (w) => (w.suspend ? "yes" : "no")),
      col("Active", (w) => w.active), col("Last schedule", (w) => age(w.lastSchedule))] },
};
const RESTARTED_AT = "kubectl.kubernetes.io/restartedAt";

function selectorString(labels) {
  return Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(",");
}

function rfc3339Now() { return new Date().toISOString().replace(/\.\d+Z$/, "Z"); }

function Cell({ column, row }) {
  const good = column.good?.(row);
  return html`<td class=${good === undefined ? "" : good ? "ok" : "bad"}>${column.text(row)}</td>`;
}

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
        <thead><tr><th>Namespace</th><th>Name</th>
          ${props.spec.columns.map((c) => html`<th>${c.header}</th>`)}<th>Age</th></tr></thead>
        <tbody>${byName(rows).map((w) => html`<tr key=${w.uid}>
          <td>${w.namespace}</td><td><button class="link" data-workload=${w.name}
            onClick=${() => this.setState({ selected: w.uid })}>${w.name}</button></td>
          ${props.spec.columns.map((c) => html`<${Cell} column=${c} row=${w} />`)}
          <td>${age(w.created)}</td></tr>`)}</tbody></table></div>`;
  }
}

// One workload: its counts (live, from the list's row), actions, pods (a CronJob: its Jobs)
// and events.
class Workload extends Component {
  state = { pods: new Map(), jobs: new Map(), events: new Map(), error: "", notice: "", mode: "",
    replicas: "" };
  componentDidMount() {
    const { live, row, spec } = this.props;
    const children = spec.resource === "cronjobs"
      ? live.subscribe({ ...JOBS, namespace: row.namespace }, (jobs) => this.setState({ jobs }),
        (error) => this.setState({ error }))
      : live.subscribe({ group: "", resource: "pods", namespace: row.namespace,
        labelSelector: selectorString(row.selector) }, (pods) => this.setState({ pods }),
      (error) => this.setState({ error }));
    this.stops = [children,
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
    this.act(api(`${this.path()}?propagationPolicy=Background`, { method: "DELETE" }), "deleted")
      .then(() => this.props.onBack());
  }
  render({ spec, row, permissions, onBack, onPod, onWorkload }, state) {
    const { pods, events, error, notice, mode, replicas } = state;
    const jobs = [...state.jobs.values()].filter((j) => j.owner === row.name)
      .sort((a, b) => b.created.localeCompare(a.created));
    const can = (verb, resource = spec.resource) =>
      permissions.can(verb, spec.group, resource, row.namespace);
    const title = `${spec.kind} ${row.namespace}/${row.name}`;
    const podList = byName(pods).map((p) => ({ namespace: p.namespace, name: p.name,
      containers: p.containers }));
    if (mode === "logs") {
      return html`<${LogView} pods=${podList} title=${title} live=${this.props.live}
        onBack=${() => this.setState({ mode: "" })} />`;
    }
    if (mode === "yaml") {
      return html`<${YamlEditor} path=${this.path()} title=${title}
        editable=${can("update")} onBack=${() => this.setState({ mode: "" })} />`;
    }
    const mine = eventsOf(events, [{ kind: spec.kind, name: row.name },
      ...jobs.map((j) => ({ kind: "Job", name: j.name }))], pods);
    const [summary, good] = spec.summary(row);
    return html`
      <div class="toolbar"><button onClick=${onBack}>Back</button>
        <strong id="workload-title">${title}</strong>
        <span class=${good ? "ok" : "bad"} id="workload-ready">${summary}</span></div>
      <div class="toolbar">
        ${spec.scalable && can("patch", `${spec.resource}/scale`) && html`<form class="inline"
          onSubmit=${(e) => this.scale(e)}><input id="replicas" type="number" min="0" size="4"
            value=${replicas === "" ? row.desired : replicas}
            onInput=${(e) => this.setState({ replicas: e.target.value })} />
          <button type="submit" id="scale">Scale</button></form>`}
        ${spec.restartable && can("patch") && html`<button id="restart"
          onClick=${() => this.restart()}>Restart</button>`}
        ${spec.resource === "cronjobs" && can("patch") && html`<button id="suspend"
          onClick=${() => this.patch({ spec: { suspend: !row.suspend } },
            row.suspend ? "resumed" : "suspended")}>${row.suspend ? "Resume" : "Suspend"}</button>`}
        <button id="yaml" onClick=${() => this.setState({ mode: "yaml" })}>YAML</button>
        ${spec.resource !== "cronjobs" && html`<button id="workload-logs"
          disabled=${!podList.length} onClick=${() => this.setState({ mode: "logs" })}>Logs</button>`}
        ${can("delete") && html`<${DeleteButton} name=${row.name}
          onDelete=${() => this.remove()} />`}
        ${notice && html`<span class="ok" id="notice">${notice}</span>`}</div>
      ${error && html`<p class="error" id="workload-error">${error}</p>`}
      <p class="muted">Images: ${row.images.join(", ")}${row.selector && html`; selector:
        ${selectorString(row.selector) || "none"}`}</p>
      ${spec.resource === "cronjobs" ? html`<h3>Jobs</h3>
      <div class="table"><table id="workload-jobs">
        <thead><tr><th>Name</th>${KINDS.jobs.columns.map((c) => html`<th>${c.header}</th>`)}
          <th>Age</th></tr></thead>
        <tbody>${jobs.map((j) => html`<tr key=${j.uid}><td><button class="link"
          data-job=${j.name} onClick=${() => onWorkload("jobs", j.uid)}>${j.name}</button></td>
          ${KINDS.jobs.columns.map((c) => html`<${Cell} column=${c} row=${j} />`)}
          <td>${age(j.created)}</td></tr>`)}</tbody></table></div>` : html`<h3>Pods</h3>
      <div class="table"><table id="workload-pods">
        <thead><tr><th>Name</th><th>Phase</th><th>Node</th><th>Restarts</th><th>Age</th></tr></thead>
        <tbody>${byName(pods).map((p) => html`<tr key=${p.uid}><td><button class="link"
          data-pod=${p.name} onClick=${() => onPod(p.uid, { kind: spec.resource, uid: row.uid,
            name: row.name })}>${p.name}</button></td>
          <td>${p.phase}</td><td>${p.node}</td><td>${p.restarts}</td><td>${age(p.created)}</td>
          </tr>`)}</tbody></table></div>`}
      <${EventList} id="workload-events" events=${mine} />`;
  }
}

