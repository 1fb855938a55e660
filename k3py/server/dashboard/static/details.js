// What an object's detail page shares (a workload's in workloads.js, a pod's in pod.js): its
// events, newest first; Delete, asked once more; and its YAML (js-yaml, loaded on first use),
// edited and checked by a server dry-run before it is saved. Loaded with the first detail page.
import { Component } from "./vendor/preact.mjs";
import { age, api, html, loadScript, message } from "./common.js";

const JSYAML = "./vendor/js-yaml.min.js";

// The events whose object is one of `objects` ({kind, name}) or has a uid `uids` has (a Set
// or a Map keyed by uid).
export function eventsOf(events, objects, uids = new Set()) {
  return [...events.values()].filter((e) => uids.has(e.object.uid) || objects.some((o) =>
    o.kind === e.object.kind && o.name === e.object.name))
    .sort((a, b) => (b.last || "").localeCompare(a.last || ""));
}

export function EventList({ id, events }) {
  return html`<h3>Events</h3>
    ${events.length ? html`<ul class="events" id=${id}>${events.map((e) => html`<li
      key=${e.uid}><span class=${e.type === "Warning" ? "bad" : "muted"}>${
      `${age(e.last)} ${e.reason}`}</span> ${e.object.kind}/${e.object.name}: ${e.message}
      </li>`)}</ul>`
      : html`<p class="muted">none</p>`}`;
}

// Delete, then "Delete NAME?" to confirm.
export class DeleteButton extends Component {
  render({ name, onDelete }, { confirming }) {
    return confirming
      ? html`<button class="danger" id="confirm-delete" onClick=${onDelete}>
          Delete ${name}?</button>`
      : html`<button class="danger" id="delete"
          onClick=${() => this.setState({ confirming: true })}>Delete</button>`;
  }
}

// An object's YAML; when editable, Check asks the server for a dry run (?dryRun=All) of the
// replacement and Save does the same, then the real write.
export class YamlEditor extends Component {
  state = { text: "", error: "", notice: "", loading: true };
  componentDidMount() { this.load(); }
  load(notice = "") {
    this.setState({ loading: true, error: "", notice });
    Promise.all([loadYaml(), api(this.props.path).then((r) => r.json())])
      .then(([yaml, obj]) => {
        delete obj.metadata?.managedFields;
        this.setState({ text: yaml.dump(obj, { noRefs: true }), loading: false });
      }).catch((e) => this.setState({ error: message(e), loading: false }));
  }
  put(dryRun) {
    return api(this.props.path + (dryRun ? "?dryRun=All" : ""), { method: "PUT",
      headers: { "Content-Type": "application/yaml" }, body: this.state.text });
  }
  check(save) {
    this.setState({ error: "", notice: "" });
    this.put(true).then(() => (save ? this.put(false).then(() => this.load("saved"))
      : this.setState({ notice: "the server accepts it (dry run)" })))
      .catch((e) => this.setState({ error: message(e) }));
  }
  render({ title, editable, onBack }, { text, error, notice, loading }) {
    return html`<div class="toolbar"><button onClick=${onBack}>Back</button>
        <strong>${title}</strong>
        ${editable && html`<button id="yaml-check" onClick=${() => this.check(false)}>
          Check (dry run)</button><button id="yaml-save" onClick=${() => this.check(true)}>
          Save</button>`}
        <button onClick=${() => this.load()}>Reload</button>
        ${notice && html`<span class="ok" id="yaml-notice">${notice}</span>`}</div>
      ${error && html`<p class="error" id="yaml-error">${error}</p>`}
      ${loading ? html`<p>Loading…</p>` : html`<textarea id="yaml-text" class="yaml"
        spellcheck="false" readonly=${!editable} value=${text}
        onInput=${(e) => this.setState({ text: e.target.value })} />`}`;
  }
}

const loadYaml = () => loadScript(JSYAML, null, "jsyaml");
