// What the dashboard's views share: calls to the server's own API with the login cookie and
// the X-K3py-Dashboard marker header (authorized as the logged-in user; html, Unauthorized and
// the bare request are ui.js's, shared with the node's edge view), the user's rules
// (SelfSubjectRulesReview), a view over one live subscription, the namespace picker, and
// modules or scripts loaded on first use.
import { Component } from "./vendor/preact.mjs";
import { html, message, request, Unauthorized } from "./ui.js";

export { age, byName, duration, html, message, Unauthorized } from "./ui.js";

const MARKER = { "X-K3py-Dashboard": "1" };

export function api(path, options = {}) {
  return request(path, {
    ...options, headers: { Accept: "application/json", ...MARKER, ...(options.headers || {}) },
  });
}

// The API path of a resource ({group, version, resource}), of one object when name is given.
export function resourcePath({ group, version, resource }, namespace, name) {
  let path = group ? `/apis/${group}/${version}` : `/api/${version || "v1"}`;
  if (namespace) path += `/namespaces/${encodeURIComponent(namespace)}`;
  path += `/${resource}`;
  return name ? `${path}/${encodeURIComponent(name)}` : path;
}

// What the user may do, from a SelfSubjectRulesReview per namespace ("" = cluster scope).
export class Permissions {
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
export class Watched extends Component {
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

// The namespace picker over a namespaced view; loads the user's rules for the namespace.
export class Namespaced extends Component {
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

// A classic script (and its stylesheet), added once, the first time it is needed; resolves
// to the global it defines.
const scripts = new Map();
export function loadScript(src, css, global) {
  if (!scripts.has(src)) {
    scripts.set(src, new Promise((resolve, reject) => {
      if (css) {
        const link = document.createElement("link");
        link.rel = "stylesheet"; link.href = css;
        document.head.append(link);
      }
      const script = document.createElement("script");
      script.src = src; script.onload = () => resolve(window[global]); script.onerror = reject;
      document.head.append(script);
    }));
  }
  return scripts.get(src);
}

// A component from a module imported on first use: <Lazy key="x" load=${() => import("./x.js")}
// name="X" ...props /> (the key: another Lazy in its place is a new one, not new props).
export class Lazy extends Component {
  componentDidMount() {
    this.props.load().then((module) => this.setState({ View: module[this.props.name] }))
      .catch((e) => this.setState({ error: message(e) }));
  }
  render({ load: _, name: __, ...props }, { View, error }) {
    if (error) return html`<p class="error">${error}</p>`;
    return View ? html`<${View} ...${props} />` : html`<p>Loading…</p>`;
  }
}
