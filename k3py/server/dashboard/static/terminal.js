// The exec terminal: xterm.js (imported with this module, only when a terminal opens) over the
// API's own exec websocket, channel protocol v4.channel.k8s.io: each binary frame starts with
// its channel (0 stdin, 1 stdout, 2 stderr, 3 the exit Status, 4 terminal size). The login
// cookie rides the websocket; the server takes it because the Origin is its own. The terminal
// fits its element (xterm's fit addon): when the element's size changes (the window resized),
// its columns and rows follow and the new size goes to the process on channel 4, as kubectl
// sends it on SIGWINCH.
import { FitAddon } from "./vendor/addon-fit.mjs";
import { Terminal } from "./vendor/xterm.mjs";

const CSS = "./vendor/xterm.css";
const PROTOCOL = "v4.channel.k8s.io";
const STDIN = 0, STDOUT = 1, STDERR = 2, ERROR = 3, RESIZE = 4;

// xterm's stylesheet, added once; `onLoad` runs when it applies (its layout changes the fit).
function addStylesheet(onLoad) {
  if (document.querySelector("link[data-xterm]")) return;
  const link = document.createElement("link");
  link.rel = "stylesheet"; link.href = CSS; link.dataset.xterm = "1";
  link.addEventListener("load", onLoad, { once: true });
  document.head.append(link);
}

function frame(channel, text) {
  const body = new TextEncoder().encode(text);
  const out = new Uint8Array(body.length + 1);
  out[0] = channel;
  out.set(body, 1);
  return out;
}

// xterm's DOM renderer writes its theme, font and cell sizes into <style> elements, which the
// page's Content-Security-Policy (no 'unsafe-inline') leaves unapplied: grey on black, a
// proportional font. Their rules go into a constructed stylesheet instead (CSSOM, which the
// policy allows), kept in step as xterm rewrites them; returns a function that drops it.
function adoptStyles(element) {
  const sheet = new CSSStyleSheet();
  document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
  const sync = () => sheet.replaceSync(
    [...element.querySelectorAll("style")].map((style) => style.textContent).join("\n"));
  const isStyle = (node) => node.nodeName === "STYLE";
  const observer = new MutationObserver((records) => {
    if (records.some((r) => isStyle(r.target) || [...r.addedNodes].some(isStyle))) sync();
  });
  observer.observe(element, { childList: true, subtree: true });
  return () => {
    observer.disconnect();
    document.adoptedStyleSheets = document.adoptedStyleSheets.filter((s) => s !== sheet);
  };
}

// The terminal inside `element`, sized to it now and whenever its size changes; its size is
// shown as the element's data-cols and data-rows. Returns a function that stops following.
function fitTo(element, term) {
  const fit = new FitAddon();
  term.loadAddon(fit);
  // a box of its own, without padding or border: the addon sizes the terminal to its parent
  const box = document.createElement("div");
  box.className = "terminal-fit";
  element.append(box);
  term.open(box);
  const refit = () => {
    fit.fit();
    element.dataset.cols = String(term.cols);
    element.dataset.rows = String(term.rows);
  };
  const observer = new ResizeObserver(refit); // called once at first, then on each change
  observer.observe(box);
  addStylesheet(refit);
  return () => observer.disconnect();
}

// Open a shell in `container` of `pod` inside `element`; returns a function that closes it.
export function openTerminal(element, pod, container, onExit) {
  const dropStyles = adoptStyles(element);
  const term = new Terminal({ cursorBlink: true, fontSize: 13, convertEol: false });
  const unfit = fitTo(element, term);
  const query = new URLSearchParams({ container, stdin: "true", stdout: "true",
    stderr: "true", tty: "true" });
  query.append("command", "sh");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/api/v1/namespaces/` +
    `${encodeURIComponent(pod.namespace)}/pods/${encodeURIComponent(pod.name)}/exec?${query}`,
  [PROTOCOL]);
  ws.binaryType = "arraybuffer";
  const decoder = new TextDecoder();
  const resize = () => {
    if (ws.readyState === WebSocket.OPEN) {
      ws.send(frame(RESIZE, JSON.stringify({ Width: term.cols, Height: term.rows })));
    }
  };
  ws.onopen = () => { resize(); term.focus(); };
  ws.onmessage = (event) => {
    const data = new Uint8Array(event.data);
    if (data[0] === STDOUT || data[0] === STDERR) {
      term.write(decoder.decode(data.subarray(1), { stream: true }));
    } else if (data[0] === ERROR && data.length > 1) {
      const status = JSON.parse(decoder.decode(data.subarray(1)));
      onExit(status.status === "Success" ? "" : status.message || status.reason);
    }
  };
  ws.onclose = (event) => onExit(event.code === 1000 ? "" : `closed (${event.code})`);
  const input = term.onData((text) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(frame(STDIN, text));
  });
  const sized = term.onResize(resize);
  return () => {
    unfit(); input.dispose(); sized.dispose(); ws.close(); term.dispose(); dropStyles();
  };
}
