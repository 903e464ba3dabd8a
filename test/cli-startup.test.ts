/**
 * What `micse` loads: help and the refusal of a command line (an unknown command or flag, a flag out of range)
 * load the parser and the flags' defaults, none of the library's dependencies (TF.js, onnxruntime, usearch, BullMQ,
 * vega, ...), so that they answer at once. Spawns bin/micse.js (dist/ once built, else the sources through tsx)
 * under a resolve hook that lists the modules it loads.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { micseLoads, ROOT, testTempDir } from './helpers.js';

const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
  dependencies: Record<string, string>;
  optionalDependencies?: Record<string, string>;
};
/** The packages `micse` loads before a command's handler runs: the parser, and tsx where bin/micse.js runs the sources. */
const PARSER = new Set(['yargs', 'tsx']);
/** Every other dependency: the library's. */
const LIBRARY = Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies }).filter((d) => !PARSER.has(d));

/** The library's dependencies that `urls` (the modules a process loaded) come from. */
function libraryLoads(urls: readonly string[]): string[] {
  return LIBRARY.filter((d) => urls.some((u) => u.includes(`/node_modules/${d}/`)));
}

describe('micse start-up', () => {
  const cwd = testTempDir('cli-startup');
  const embed = ['embed', '--model', 'm', '--input', 'in.txt', '--output', 'o.jsonl'];
  const cases: { argv: string[]; code: number; stderr?: string }[] = [
    { argv: ['--help'], code: 0 },
    { argv: ['sweep', 'status', '--help'], code: 0 },
    { argv: ['bogus'], code: 2 },
    { argv: ['train', '--confg', 'x.yaml'], code: 2, stderr: 'micse: unknown option --confg (did you mean --config?)\n' },
    { argv: [...embed, '--batch-size', '0'], code: 2, stderr: 'micse: --batch-size must be an integer >= 1, got 0\n' },
  ];
  for (const { argv, code, stderr } of cases) {
    it(`micse ${argv.join(' ')} loads none of the library's dependencies`, async () => {
      const r = await micseLoads(argv, cwd);
      assert.equal(r.code, code, r.stderr);
      if (stderr !== undefined) assert.equal(r.stderr, stderr);
      assert.ok(r.urls.some((u) => /\/src\/cli\/main\.[jt]s$/.test(u)), 'the resolve hook saw no src/cli/main');
      assert.deepEqual(libraryLoads(r.urls), []);
    });
  }
});
