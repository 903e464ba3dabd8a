// node bench/device/cpuprof-summary.mjs FILE.cpuprofile [TOP]: where a Node process spent its main-thread time,
// from a V8 CPU profile (node --cpu-prof): self time by function (name, bundle line) and the share of idle,
// garbage collection and native time. Plain JS so the GPU machine runs it without bundling.
import { readFileSync } from 'node:fs';

const [file, topArg] = process.argv.slice(2);
if (file === undefined) {
  console.error('usage: node bench/device/cpuprof-summary.mjs FILE.cpuprofile [TOP]');
  process.exit(2);
}
const TOP = Number(topArg ?? 40);
const prof = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const self = new Map(); // node id -> microseconds
for (let i = 0; i < prof.samples.length; i++) {
  const id = prof.samples[i];
  self.set(id, (self.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0));
}
const total = [...self.values()].reduce((a, b) => a + b, 0);
const byName = new Map();
for (const [id, us] of self) {
  const f = byId.get(id).callFrame;
  const where = f.url === '' ? '' : `${f.url.split('/').pop()}:${f.lineNumber + 1}`;
  const key = `${f.functionName || '(anonymous)'} ${where}`.trim();
  byName.set(key, (byName.get(key) ?? 0) + us);
}
const pct = (us) => `${((100 * us) / total).toFixed(1).padStart(5)}%`;
console.log(`${file}: ${(total / 1e6).toFixed(2)} s sampled on the main thread`);
for (const [key, us] of [...byName].sort((a, b) => b[1] - a[1]).slice(0, TOP)) {
  console.log(`${pct(us)} ${(us / 1000).toFixed(1).padStart(9)} ms  ${key}`);
}
