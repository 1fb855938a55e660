// Node, pod and container CPU and memory of the last 15 minutes, without Prometheus: the server
// keeps them in memory (metricshistory.py) and sends them on the tab's live websocket, the
// history first, then each new point as the nodes report it; nothing is polled. The Nodes
// view's CPU and memory cells with sparklines (followNodeUsage), and the Metrics view: every
// node or pod with its sparklines, and uPlot graphs of the one picked (a pod's with a line per
// container), opened from the view or from a node's or pod's row. Loaded when either view
// first opens.
import { Component } from "./vendor/preact.mjs";
import { api, html, loadScript } from "./common.js";

const WINDOW = 900; // seconds shown, as the server keeps
const POINTS = 900; // kept per series in the page (one a second over the window)
const UPLOT = "./vendor/uplot.min.js";
const UPLOT_CSS = "./vendor/uplot.min.css";
const SPARK = { width: 96, height: 20, seconds: 60 }; // a line spans a minute at least
const COLORS = ["#3b82f6", "#16a34a", "#c026d3", "#ea580c", "#0891b2", "#ca8a04", "#dc2626",
  "#64748b", "#7c3aed"]; // a pod's containers' lines, in order

const last = (values) => values[values.length - 1];
const byName = (a, b) => a[0].localeCompare(b[0]); // entries [name, value]
const digits = (n) => (n >= 10 ? Math.round(n) : Number(n.toPrecision(2)));
// As kubectl top prints them: cores (1.25) or millicores (250m), Gi, Mi or Ki.
export const cores = (n) => (n >= 1e9 ? (n / 1e9).toFixed(2) : `${digits(n / 1e6)}m`);
export const bytes = (n) => (n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)}Gi`
  : n >= 2 ** 20 ? `${digits(n / 2 ** 20)}Mi` : `${digits(n / 2 ** 10)}Ki`);

// One pod's containers' columns ({NAME: {cpu, memory}}, null where one has no value) with new
// points after them, from index `start` on; a container left with no value is dropped.
function containersAppended(old, points, start) {
  const none = (series) => ({ cpu: series.times.map(() => null),
    memory: series.times.map(() => null) });
  const out = {};
  for (const name of new Set([...Object.keys(old.containers || {}),
    ...Object.keys(points.containers || {})])) {
    const a = old.containers?.[name] || none(old);
    const b = points.containers?.[name] || none(points);
    const cpu = [...a.cpu, ...b.cpu].slice(start);
    if (cpu.some((v) => v != null)) {
      out[name] = { cpu, memory: [...a.memory, ...b.memory].slice(start) };
    }
  }
  return out;
}

// New points after a series' own, the oldest dropped past the window or POINTS.
function appended(old, points) {
  const times = [...old.times, ...points.times];
  let start = Math.max(0, times.length - POINTS);
  while (start < times.length && times[start] < last(times) - WINDOW) start++;
  const out = { ...old, times: times.slice(start), cpu: [...old.cpu, ...points.cpu].slice(start),
    memory: [...old.memory, ...points.memory].slice(start) };
  if (old.containers || points.containers) out.containers = containersAppended(old, points, start);
  return out;
}

// A "metrics" subscription (spec {kind: "nodes"|"pods", namespace?, name?}): onSeries(Map of
// name (a pod's namespace/name) -> {name, namespace?, times, cpu, memory, containers?}), with
// the history, then after each batch of new points (one pod's: its containers' columns too,
// {NAME: {cpu, memory}}). Returns the unsubscribe.
export function followMetrics(live, spec, onSeries, onError) {
  let series = new Map();
  return live.subscribe({ op: "metrics", ...spec }, ({ reset, series: batch }) => {
    series = reset ? new Map() : new Map(series);
    for (const [name, points] of Object.entries(batch)) {
      const old = series.get(name);
      series.set(name, old ? appended(old, points) : points);
    }
    onSeries(series);
  }, onError);
}

// The series (up to 15 minutes) as a line, from 0 to its highest value; a dot at the newest.
export function Sparkline({ times, values, label }) {
  const { width, height } = SPARK;
  const end = last(times);
  const span = Math.max(end - times[0], SPARK.seconds);
  const max = Math.max(...values, 1);
  const xy = times.map((t, i) => [width - 2 - ((end - t) / span) * (width - 4),
    height - 2 - (values[i] / max) * (height - 4)]);
  const [x, y] = last(xy);
  return html`<svg class="spark" width=${width} height=${height} role="img" aria-label=${label}
    data-points=${times.length} viewBox=${`0 0 ${width} ${height}`} preserveAspectRatio="none">
    <polyline points=${xy.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(" ")}
      fill="none" stroke="currentColor" stroke-width="1.5" vector-effect="non-scaling-stroke" />
    <circle cx=${x} cy=${y} r="2" fill="currentColor" /></svg>`;
}

function Usage({ series, what, format }) {
  return html`<span class="usage">${format(last(series[what]))}</span>
    <${Sparkline} times=${series.times} values=${series[what]}
      label=${`${what} of the last 15 minutes`} />`;
}

// The Nodes view's CPU and memory cells of one node ("–" while it has no metrics).
function UsageCells({ series }) {
  if (!series?.times.length) return html`<td class="muted">–</td><td class="muted">–</td>`;
  return html`<td class="cpu" data-node=${series.name}><${Usage} series=${series} what="cpu"
      format=${cores} /></td>
    <td class="memory" data-node=${series.name}><${Usage} series=${series} what="memory"
      format=${bytes} /></td>`;
}

// For the Nodes view: every node's series into view.state.usage (a Map by name), the cells'
// component into view.state.UsageCells. Returns the unsubscribe.
export function followNodeUsage(view) {
  view.setState({ UsageCells });
  return followMetrics(view.props.live, { kind: "nodes" }, (usage) => view.setState({ usage }),
    (usageError) => view.setState({ usageError }));
}

// uPlot, loaded with a script element the first time a graph is shown.
const loadUplot = () => loadScript(UPLOT, UPLOT_CSS, "uPlot");

// Lines over time (uPlot; lines: [{label, color, values}]), from 0 to at least `floor`; new
// data goes to the chart, which owns the element. A new set of lines is a new Graph (its key).
class Graph extends Component {
  componentDidMount() {
    const { title, format, floor, lines } = this.props;
    loadUplot().then((UPlot) => {
      if (!this.element) return;
      this.chart = new UPlot({
        title, width: this.element.clientWidth || 320, height: 180,
        series: [{}, ...lines.map(({ label, color }) => ({ label, stroke: color, width: 2,
          value: (_, v) => v == null ? "" : format(v) }))],
        scales: { y: { range: (_, _min, max) => [0, Math.max(max, floor)] } },
        axes: [{}, { size: 64, values: (_, ticks) => ticks.map(format) }],
      }, this.data(this.props), this.element);
      this.resize = new ResizeObserver(() => this.chart.setSize({
        width: this.element.clientWidth, height: 180 }));
      this.resize.observe(this.element);
    });
  }
  data({ times, lines }) { return [times, ...lines.map(({ values }) => values)]; }
  shouldComponentUpdate(next) {
    this.chart?.setData(this.data(next));
    if (this.element) this.element.dataset.points = String(next.times.length);
    return false;
  }
  componentWillUnmount() {
    this.resize?.disconnect();
    this.chart?.destroy();
    this.element = null;
  }
  render({ id, times, lines }) {
    return html`<div class="plot" id=${id} data-points=${times.length} data-lines=${lines.length}
      ref=${(element) => { if (element) this.element = element; }}></div>`;
  }
}

// A series' CPU and memory graphs: one line each, or with `byContainer` one per container
// (a container in the same colour in both).
function Graphs({ name, series, byContainer }) {
  const columns = byContainer ? Object.entries(series.containers || {}).sort(byName) : [];
  const lines = (what, label, color) => (byContainer
    ? columns.map(([container, c], i) => ({ label: container, color: COLORS[i % COLORS.length],
      values: c[what] }))
    : [{ label, color, values: series[what] }]);
  const key = `${name} ${columns.map(([c]) => c).join(",")}`;
  return html`<div class="graphs">
    <${Graph} key=${`cpu ${key}`} id="graph-cpu" title=${byContainer ? "CPU (cores)" : undefined}
      times=${series.times} lines=${lines("cpu", "CPU (cores)", COLORS[0])} format=${cores}
      floor=${1e7} />
    <${Graph} key=${`memory ${key}`} id="graph-memory" title=${byContainer ? "Memory" : undefined}
      times=${series.times} lines=${lines("memory", "Memory", COLORS[1])} format=${bytes}
      floor=${2 ** 20} /></div>`;
}

// One pod's graphs, a line per container, and its containers' figures now: its own
// subscription (name given), which carries the containers' columns.
class PodGraphs extends Component {
  componentDidMount() {
    const [namespace, name] = this.props.name.split("/");
    this.stop = followMetrics(this.props.live, { kind: "pods", namespace, name },
      (series) => this.setState({ series: series.get(this.props.name), error: "" }),
      (error) => this.setState({ error }));
  }
  componentWillUnmount() { this.stop?.(); }
  render({ name }, { series, error }) {
    if (error) return html`<p class="error">${error}</p>`;
    if (!series?.times.length) return html`<p class="muted">Loading ${name}…</p>`;
    const containers = Object.entries(series.containers || {}).sort(byName)
      .filter(([, c]) => c.cpu.some((v) => v != null));
    return html`<${Graphs} name=${name} series=${series} byContainer=${true} />
      <div class="table"><table id="pod-containers">
        <thead><tr><th>Container</th><th>CPU</th><th>Memory</th></tr></thead>
        <tbody>${containers.map(([container, c]) => {
          const kept = series.times.map((_, i) => i).filter((i) => c.cpu[i] != null);
          const column = { times: kept.map((i) => series.times[i]),
            cpu: kept.map((i) => c.cpu[i]), memory: kept.map((i) => c.memory[i]) };
          return html`<tr key=${container} data-container=${container}><td>${container}</td>
            <td><${Usage} series=${column} what="cpu" format=${cores} /></td>
            <td><${Usage} series=${column} what="memory" format=${bytes} /></td></tr>`;
        })}</tbody></table></div>`;
  }
}

// Every node, or the pods of a namespace, with CPU and memory sparklines; graphs of the one
// picked (the first by name until one is; props.pick: {kind, namespace?, name}, from a node's
// or pod's row, a pod's name being namespace/name).
export class Metrics extends Component {
  state = { kind: "nodes", namespace: "", namespaces: [], series: new Map(), picked: "",
    error: "" };
  componentDidMount() {
    const { pick } = this.props;
    this.follow(pick?.kind || "nodes", pick?.namespace || "", pick?.name || "");
    api("/api/v1/namespaces").then((r) => r.json())
      .then((list) => this.setState({ namespaces: list.items.map((n) => n.metadata.name) }))
      .catch(() => {}); // a user who may not list them picks "all" only
  }
  componentWillUnmount() { this.stop?.(); }
  follow(kind, namespace, picked = "") {
    this.stop?.();
    this.setState({ kind, namespace, series: new Map(), picked, error: "" });
    this.stop = followMetrics(this.props.live, kind === "pods" ? { kind, namespace } : { kind },
      (series) => this.setState({ series, error: "" }), (error) => this.setState({ error }));
  }
  render(_, { kind, namespace, namespaces, series, picked, error }) {
    const names = [...series.keys()].sort();
    const name = series.has(picked) ? picked : names[0];
    const shown = series.get(name);
    return html`<div class="toolbar">
        <label>Show <select id="metrics-kind" value=${kind}
          onChange=${(e) => this.follow(e.target.value, "")}>
          <option value="nodes">Nodes</option><option value="pods">Pods</option></select></label>
        ${kind === "pods" && html`<label>Namespace <select value=${namespace}
          onChange=${(e) => this.follow("pods", e.target.value)}><option value="">all</option>
          ${namespaces.map((n) => html`<option value=${n}>${n}</option>`)}</select></label>`}
        <span class="muted">the last 15 minutes, as the nodes report them</span></div>
      ${error && html`<p class="error">${error}</p>`}
      ${shown && html`<h2 id="metrics-name">${name}</h2>${kind === "pods"
        ? html`<${PodGraphs} key=${name} name=${name} live=${this.props.live} />`
        : html`<${Graphs} name=${name} series=${shown} />`}`}
      ${!error && !names.length && html`<p class="muted" id="no-metrics">No metrics yet: each
        node reports every --metrics-resolution (15 s by default).</p>`}
      <div class="table"><table id="metrics">
        <thead><tr><th>Name</th><th>CPU</th><th>Memory</th></tr></thead>
        <tbody>${names.map((n) => html`<tr key=${n} class=${n === name ? "picked" : ""}>
          <td><button class="link" data-series=${n}
            onClick=${() => this.setState({ picked: n })}>${n}</button></td>
          <td><${Usage} series=${series.get(n)} what="cpu" format=${cores} /></td>
          <td><${Usage} series=${series.get(n)} what="memory" format=${bytes} /></td>
          </tr>`)}</tbody></table></div>`;
  }
}
