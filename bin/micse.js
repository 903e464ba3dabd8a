#!/usr/bin/env node
// Entry point of `micse`: the compiled CLI when `npm run build` has written dist/, else the TypeScript sources
// through tsx (a checkout needs no build step; after editing src/, rebuild or remove dist/).
import { existsSync } from 'node:fs';

const compiled = new URL('../dist/src/cli/main.js', import.meta.url);
let cli;
if (existsSync(compiled)) {
  cli = await import(compiled.href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  cli = await import('../src/cli/main.ts');
}
await cli.runCli();
