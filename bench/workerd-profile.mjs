// Where a worker's CPU goes under `wrangler dev --local`: a V8 CPU profile taken through the
// DevTools inspector wrangler exposes (`--inspector-port`), while something else (wrk) drives load.
//   node bench/workerd-profile.mjs INSPECTOR_PORT SECONDS [OUT.cpuprofile]
// Prints self time by function (JavaScript, and WebAssembly when the module keeps its `name`
// section: build a profiling variant for that, e.g. with `wasm-opt -g`), then by category. The
// profile file opens in Chrome DevTools' Performance panel. Benchmark tooling only.
import { writeFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const WebSocket = require("ws"); // a wrangler dependency, in the repository's node_modules
const [port, seconds = "10", out] = process.argv.slice(2);
if (!port) {
  console.error("usage: node bench/workerd-profile.mjs INSPECTOR_PORT SECONDS [OUT.cpuprofile]");
  process.exit(2);
}
const targets = await (await fetch(`http://127.0.0.1:${port}/json`)).json();
const ws = new WebSocket(targets[0].webSocketDebuggerUrl);
await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
let next = 0;
const waiting = new Map();
ws.on("message", (data) => {
  const msg = JSON.parse(data);
  if (msg.id !== undefined && waiting.has(msg.id)) {
    waiting.get(msg.id)(msg);
    waiting.delete(msg.id);
  }
});
const send = (method, params = {}) =>
  new Promise((resolve) => {
    const id = ++next;
    waiting.set(id, resolve);
    ws.send(JSON.stringify({ id, method, params }));
  });

await send("Profiler.enable");
await send("Profiler.setSamplingInterval", { interval: 100 }); // µs
await send("Profiler.start");
await new Promise((r) => setTimeout(r, Number(seconds) * 1000));
const { result, error } = await send("Profiler.stop");
ws.close();
if (error) throw new Error(JSON.stringify(error));
const profile = result.profile;
if (out) writeFileSync(out, JSON.stringify(profile));

// Self time per node: samples times the mean interval between samples.
const dt = (profile.endTime - profile.startTime) / Math.max(1, profile.samples.length);
const hits = new Map();
for (const id of profile.samples) hits.set(id, (hits.get(id) ?? 0) + 1);
const byName = new Map();
let total = 0;
for (const node of profile.nodes) {
  const n = hits.get(node.id) ?? 0;
  total += n;
  const f = node.callFrame;
  const name = `${f.functionName || "(anonymous)"} ${f.url ? f.url.split("/").pop() : ""}`.trim();
  byName.set(name, (byName.get(name) ?? 0) + n);
}
const pct = (n) => ((100 * n) / total).toFixed(1).padStart(5);
console.log(`${profile.samples.length} samples, ${(dt).toFixed(0)} µs apart`);
for (const [name, n] of [...byName].sort((a, b) => b[1] - a[1]).slice(0, 60)) {
  console.log(`${pct(n)}%  ${name.slice(0, 150)}`);
}
