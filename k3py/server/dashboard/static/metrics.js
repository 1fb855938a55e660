// Node and pod CPU and memory of the last 15 minutes, without Prometheus: the server keeps them
// in memory (metricshistory.py) and sends them on the tab's live websocket, the history first,
// then each new point as the nodes report it; nothing is polled. The Nodes view's CPU and
// memory cells with sparklines (followNodeUsage), and the Metrics view: every node or pod with
// its sparklines, and uPlot graphs of the one picked. Loaded when either view first opens.
import { Component } from "./vendor/preact.mjs";
import { api, html, loadScript } from "./common.js";

const WINDOW = 900; // seconds shown, as the server keeps
const POINTS = 900; // kept per series in the page (one a second over the window)
const UPLOT = "./vendor/uplot.min.js";
const UPLOT_CSS = "./vendor/uplot.min.css";
const SPARK = { width: 96, height: 20, seconds: 60 }; // a line spans a minute at least

const last = (values) => values[values.length - 1];
const digits = (n) => (n >= 10 ? Math.round(n) : Number(n.toPrecision(2)));
// As kubectl top prints them: cores (1.25) or millicores (250m), Gi, Mi or Ki.
export const cores = (n) => (n >= 1e9 ? (n / 1e9).toFixed(2) : `${digits(n / 1e6)}m`);
export const bytes = (n) => (n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)}Gi`
  : n >= 2 ** 20 ? `${digits(n / 2 ** 20)}Mi` : `${digits(n / 2 ** 10)}Ki`);

// New points after a series' own, the oldest dropped past the window or POINTS.
function appended(old, points) {
  const times = [...old.times, ...points.times];
  let start = Math.max(0, times.length - POINTS);
  while (start < times.length && times[start] < last(times) - WINDOW) start++;
  return { ...old, times: times.slice(start), cpu: [...old.cpu, ...points.cpu].slice(start),
    memory: [...old.memory, ...points.memory].slice(start) };
}

// A "metrics" subscription (spec {kind: "nodes"|"pods", namespace?, name?}): onSeries(Map of
// name (a pod's namespace/name) -> {name, namespace?, times, cpu, memory}), with the history,
// then after each batch of new points. Returns the unsubscribe.
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

// One series over time (uPlot), from 0 to at least `floor`; new data goes to the chart, which
// owns the element.
class Graph extends Component {
  componentDidMount() {
    const { title, color, format, floor } = this.props;
    loadUplot().then((UPlot) => {
      if (!this.element) return;
      this.chart = new UPlot({
        width: this.element.clientWidth || 320, height: 180,
        series: [{}, { label: title, stroke: color, width: 2, value: (_, v) => v == null ? ""
          : format(v) }],
        scales: { y: { range: (_, _min, max) => [0, Math.max(max, floor)] } },
        axes: [{}, { size: 64, values: (_, ticks) => ticks.map(format) }],
      }, [this.props.times, this.props.values], this.element);
      this.resize = new ResizeObserver(() => this.chart.setSize({
        width: this.element.clientWidth, height: 180 }));
      this.resize.observe(this.element);
    });
  }
  shouldComponentUpdate(next) {
    this.chart?.setData([next.times, next.values]);
    if (this.element) this.element.dataset.points = String(next.times.length);
    return false;
  }
  componentWillUnmount() {
    this.resize?.disconnect();
    this.chart?.destroy();
    this.element = null;
  }
  render({ id, times }) {
    return html`<div class="plot" id=${id} data-points=${times.length}
      ref=${(element) => { if (element) this.element = element; }}></div>`;
  }
}

// Every node, or the pods of a namespace, with CPU and memory sparklines; graphs of the one
// picked (the first by name until one is).
export class Metrics extends Component {
  state = { kind: "nodes", namespace: "", namespaces: [], series: new Map(), picked: "",
    error: "" };
  componentDidMount() {
    this.follow("nodes", "");
    api("/api/v1/namespaces").then((r) => r.json())
      .then((list) => this.setState({ namespaces: list.items.map((n) => n.metadata.name) }))
      .catch(() => {}); // a user who may not list them picks "all" only
  }
  componentWillUnmount() { this.stop?.(); }
  follow(kind, namespace) {
    this.stop?.();
    this.setState({ kind, namespace, series: new Map(), picked: "", error: "" });
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
      ${shown && html`<h2 id="metrics-name">${name}</h2><div class="graphs">
        <${Graph} key=${`cpu ${name}`} id="graph-cpu" title="CPU (cores)" color="#3b82f6"
          times=${shown.times} values=${shown.cpu} format=${cores} floor=${1e7} />
        <${Graph} key=${`memory ${name}`} id="graph-memory" title="Memory" color="#16a34a"
          times=${shown.times} values=${shown.memory} format=${bytes} floor=${2 ** 20} />
        </div>`}
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
