// Logs of one pod, or of a workload's pods in one stream coloured by pod: the "logs" feed of
// the tab's live websocket (live.js; the server reads each pod's log through its node's
// tunnel, so the pods shown are not bounded by the browser's 6 connections per server),
// followed or not, with timestamps (shown or not), the previous container's, and a search
// that keeps the matching lines. Loaded on first use.
import { Component } from "./vendor/preact.mjs";
import { html } from "./common.js";

const KEPT = 5000; // lines kept, the newest
const TAIL = 500; // lines asked of a pod when a stream starts (fewer each when many pods)
export const MAX_PODS = 50; // pods in one stream: the server's bound (logs.py)
const COLOURS = 8; // .pod.c0 to .c7 in style.css

function split(pod, color, text) {
  const space = text.indexOf(" ");
  return { pod, color, ts: text.slice(0, space), text: text.slice(space + 1) };
}

function marked(text, search) {
  if (!search) return text;
  const at = text.toLowerCase().indexOf(search);
  return [text.slice(0, at), html`<mark>${text.slice(at, at + search.length)}</mark>`,
    text.slice(at + search.length)];
}

// props: live (the tab's Live), pods [{namespace, name, containers}] (one namespace), title,
// onBack.
export class LogView extends Component {
  state = { lines: [], errors: [], dropped: 0, follow: true, timestamps: false,
    previous: false, search: "", container: "" };
  componentDidMount() { this.start({ container: this.props.pods[0]?.containers[0] || "" }); }
  componentWillUnmount() { this.unsubscribe?.(); }
  componentDidUpdate() {
    if (this.element && this.atBottom) this.element.scrollTop = this.element.scrollHeight;
  }

  start(change = {}) {
    this.unsubscribe?.();
    this.setState({ ...change, lines: [], errors: [], dropped: 0 }, () => {
      const { follow, previous, container } = this.state;
      const pods = this.props.pods.slice(0, MAX_PODS);
      this.clear();
      this.unsubscribe = this.props.live.subscribe({ op: "logs",
        namespace: pods[0].namespace, pods: pods.map((p) => p.name),
        container: pods.length === 1 ? container : undefined, follow: follow && !previous,
        previous, tailLines: Math.min(TAIL, Math.ceil(KEPT / pods.length)) },
      (batch) => this.receive(pods, batch), (error) => {
        this.errors.push(error); // kept by a redraw already scheduled
        this.setState({ errors: [...this.errors] });
      });
    });
  }

  clear() {
    this.lines = [];
    this.errors = [];
    this.dropped = 0;
  }

  // a batch of the feed: {reset} (the stream starts again), then {lines, dropped?, ended?}
  receive(pods, { reset, lines = [], dropped = 0, ended = [] }) {
    if (reset) this.clear();
    this.lines.push(...lines.map(([i, text]) => split(pods[i].name, i % COLOURS, text)));
    if (pods.length > 1) this.lines.sort((a, b) => a.ts.localeCompare(b.ts));
    if (this.lines.length > KEPT) this.lines.splice(0, this.lines.length - KEPT);
    this.dropped += dropped;
    for (const [i, error] of ended) if (error) this.errors.push(`${pods[i].name}: ${error}`);
    this.scheduled ||= requestAnimationFrame(() => {
      this.scheduled = 0;
      const el = this.element;
      this.atBottom = !el || el.scrollHeight - el.scrollTop - el.clientHeight < 40;
      this.setState({ lines: [...this.lines], errors: [...this.errors],
        dropped: this.dropped });
    });
  }

  render({ pods, title, onBack }, { lines, errors, dropped, follow, timestamps, previous,
    search, container }) {
    const wanted = search.toLowerCase();
    const shown = wanted ? lines.filter((l) => l.text.toLowerCase().includes(wanted)) : lines;
    const merged = pods.length > 1;
    const option = (name, label, value) => html`<label><input type="checkbox" id=${name}
      checked=${value} onChange=${(e) => this.start({ [name]: e.target.checked })} />
      ${label}</label>`;
    return html`
      <div class="toolbar"><button onClick=${onBack}>Back</button><strong>${title}</strong>
        ${!merged && html`<select value=${container}
          onChange=${(e) => this.start({ container: e.target.value })}>
          ${pods[0].containers.map((c) => html`<option value=${c}>${c}</option>`)}</select>`}
        ${option("follow", "follow", follow && !previous)}
        ${html`<label><input type="checkbox" id="timestamps" checked=${timestamps}
          onChange=${(e) => this.setState({ timestamps: e.target.checked })} />
          timestamps</label>`}
        ${option("previous", "previous container", previous)}
        <input type="search" id="log-search" placeholder="search" value=${search}
          onInput=${(e) => this.setState({ search: e.target.value })} />
        <span class="muted" id="log-count">${wanted ? `${shown.length} of ${lines.length} lines`
          : `${lines.length} lines`}${merged ? ` of ${Math.min(pods.length, MAX_PODS)} pods` : ""}${
          pods.length > MAX_PODS ? ` (the first ${MAX_PODS} of ${pods.length})` : ""}${
          dropped ? `, ${dropped} skipped (too fast to show)` : ""}</span></div>
      ${errors.map((e) => html`<p class="error">${e}</p>`)}
      <pre class="logs" id="logs" ref=${(el) => { if (el) this.element = el; }}>${
        shown.map((l) => html`<div class="line" data-pod=${l.pod}>${timestamps &&
          html`<span class="muted">${l.ts} </span>`}${merged &&
          html`<span class=${`pod c${l.color}`}>${l.pod} </span>`}${
          marked(l.text, wanted)}</div>`)}</pre>`;
  }
}
