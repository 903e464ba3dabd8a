#!/usr/bin/env node
// `npm run build`: the library (dist/src, dist/eval: JavaScript + .d.ts, tsc, incremental), the browser bundle
// (dist/browser/micse.js, esbuild, with the wasm backend's binaries beside it) and the demo page as a static folder
// (dist/demo: index.html, demo.js, the bundle and its binaries, and the STS-B dev file when ../shared has it).
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { nodeOnlyStubs } from './nodeOnlyStubs.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(import.meta.url);

function run(cmd, args) {
  const r = spawnSync(process.execPath, [cmd, ...args], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

run(require.resolve('typescript/bin/tsc'), ['-p', 'tsconfig.build.json']);

/** The versions of the bundled TF.js packages, for src/kernels/platform/internals.ts's check in a page. */
const tfjsDir = path.join(root, 'node_modules', '@tensorflow');
const bundledVersions = Object.fromEntries(readdirSync(tfjsDir)
  .filter((name) => existsSync(path.join(tfjsDir, name, 'package.json')))
  .map((name) => [`@tensorflow/${name}`, require(`@tensorflow/${name}/package.json`).version]));

const browserDir = path.join(root, 'dist', 'browser');
mkdirSync(browserDir, { recursive: true });
await esbuild.build({
  entryPoints: [path.join(root, 'src', 'browser', 'index.ts')],
  outfile: path.join(browserDir, 'micse.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  sourcemap: true,
  logLevel: 'warning',
  define: { 'process.env': '{}', MICSE_BUNDLED_VERSIONS: JSON.stringify(bundledVersions) },
  // csv-parse's Node build reads Node's global Buffer; its browser build carries its own.
  alias: { 'csv-parse/sync': 'csv-parse/browser/esm/sync' },
  plugins: [nodeOnlyStubs()],
});
const wasmDir = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'));
for (const f of readdirSync(wasmDir).filter((n) => n.endsWith('.wasm'))) copyFileSync(path.join(wasmDir, f), path.join(browserDir, f));

// The demo page: its script imports the bundle beside it.
const demoDir = path.join(root, 'dist', 'demo');
rmSync(demoDir, { recursive: true, force: true });
mkdirSync(demoDir, { recursive: true });
await esbuild.build({
  entryPoints: [path.join(root, 'src', 'browser', 'demo', 'demo.ts')],
  outfile: path.join(demoDir, 'demo.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  logLevel: 'warning',
  plugins: [{
    name: 'bundle-beside',
    setup(build) {
      build.onResolve({ filter: /^\.\.\/index\.js$/ }, () => ({ path: './micse.js', external: true }));
    },
  }],
});
copyFileSync(path.join(root, 'src', 'browser', 'demo', 'index.html'), path.join(demoDir, 'index.html'));
for (const f of readdirSync(browserDir)) copyFileSync(path.join(browserDir, f), path.join(demoDir, f));
const stsDev = path.join(process.env.MICSE_SHARED_DIR || path.join(root, '..', 'shared'), 'data', 'senteval', 'STS', 'STSBenchmark', 'sts-dev.csv');
if (existsSync(stsDev)) copyFileSync(stsDev, path.join(demoDir, 'sts-dev.csv'));
else console.warn(`build: ${stsDev} is absent; the demo page is built without STS-B dev (its before/after scores)`);

// Written last: bin/micse.js runs dist/ only while no source file is newer than this.
writeFileSync(path.join(root, 'dist', 'BUILD_STAMP'), `${new Date().toISOString()}\n`);
