// Logs of one pod, or of a workload's pods in one stream coloured by pod: followed (a
// streamed GET .../log?follow=true read as it arrives), with timestamps (shown or not),
// the previous container's, and a search that keeps the matching lines. Loaded on first use.
import { Component } from "./vendor/preact.mjs";
import { api, html, message, Unauthorized } from "./common.js";

const TAIL = 500; // lines asked of each pod when a stream starts
const KEPT = 5000; // lines kept, the newest
// A browser opens at most 6 HTTP/1.1 connections to a server: the websocket, these streams
// and one for the page's other calls must fit.
export const MAX_STREAMS = 4;

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

// props: pods [{namespace, name, containers}], title, onBack, onUnauthorized.
export class LogView extends Component {
  state = { lines: [], errors: [], follow: true, timestamps: false, previous: false,
    search: "", container: "" };
  componentDidMount() { this.start({ container: this.props.pods[0]?.containers[0] || "" }); }
  componentWillUnmount() { this.controller?.abort(); }
  componentDidUpdate() {
    if (this.element && this.atBottom) this.element.scrollTop = this.element.scrollHeight;
  }

  start(change = {}) {
    this.controller?.abort();
    const controller = this.controller = new AbortController();
    this.lines = [];
    this.setState({ ...change, lines: [], errors: [] }, () => {
      this.props.pods.slice(0, MAX_STREAMS).forEach((pod, color) =>
        this.read(pod, color, controller.signal));
    });
  }

  async read(pod, color, signal) {
    const { follow, previous } = this.state;
    const single = this.props.pods.length === 1;
    const query = new URLSearchParams({ timestamps: "true", tailLines: String(TAIL),
      container: single ? this.state.container : pod.containers[0] });
    if (previous) query.set("previous", "true");
    else if (follow) query.set("follow", "true");
    const path = `/api/v1/namespaces/${encodeURIComponent(pod.namespace)}/pods/` +
      `${encodeURIComponent(pod.name)}/log?${query}`;
    try {
      const response = await api(path, { headers: { Accept: "text/plain" }, signal });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let rest = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const parts = (rest + value).split("\n");
        rest = parts.pop();
        this.add(parts.map((text) => split(pod.name, color, text)));
      }
      if (rest) this.add([split(pod.name, color, rest)]);
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof Unauthorized) this.props.onUnauthorized();
      else this.setState({ errors: [...this.state.errors, `${pod.name}: ${message(e)}`] });
    }
  }

  add(lines) {
    if (!lines.length) return;
    this.lines.push(...lines);
    if (this.props.pods.length > 1) this.lines.sort((a, b) => a.ts.localeCompare(b.ts));
    if (this.lines.length > KEPT) this.lines.splice(0, this.lines.length - KEPT);
    this.scheduled ||= requestAnimationFrame(() => {
      this.scheduled = 0;
      const el = this.element;
      this.atBottom = !el || el.scrollHeight - el.scrollTop - el.clientHeight < 40;
      this.setState({ lines: [...this.lines] });
    });
  }

  render({ pods, title, onBack }, { lines, errors, follow, timestamps, previous, search,
    container }) {
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
        <span class="muted">${wanted ? `${shown.length} of ${lines.length} lines`
          : `${lines.length} lines`}${pods.length > MAX_STREAMS
          ? `, the first ${MAX_STREAMS} of ${pods.length} pods` : ""}</span></div>
      ${errors.map((e) => html`<p class="error">${e}</p>`)}
      <pre class="logs" id="logs" ref=${(el) => { if (el) this.element = el; }}>${
        shown.map((l) => html`<div class="line" data-pod=${l.pod}>${timestamps &&
          html`<span class="muted">${l.ts} </span>`}${merged &&
          html`<span class=${`pod c${l.color}`}>${l.pod} </span>`}${
          marked(l.text, wanted)}</div>`)}</pre>`;
  }
}
