#!/usr/bin/env node
// Entry point of `micse`: the compiled CLI (dist/, `npm run build`) when it is as new as the sources, else the
// TypeScript sources through tsx, so a checkout needs no build step and an edit of src/ is never hidden by an older
// build. An installed package ships dist/ without src/ and always runs dist/.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const stamp = `${root}dist/BUILD_STAMP`;

/** The newest modification time of the .ts files under `dir` (0 when it does not exist). */
function newestSource(dir) {
  if (!existsSync(dir)) return 0;
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && entry.name.endsWith('.ts')) newest = Math.max(newest, statSync(`${entry.parentPath ?? entry.path}/${entry.name}`).mtimeMs);
  }
  return newest;
}

const built = existsSync(stamp) ? statSync(stamp).mtimeMs : -1;
let cli;
if (built >= Math.max(newestSource(`${root}src`), newestSource(`${root}eval`))) {
  cli = await import(new URL('../dist/src/cli/main.js', import.meta.url).href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  cli = await import('../src/cli/main.ts');
}
await cli.runCli();
