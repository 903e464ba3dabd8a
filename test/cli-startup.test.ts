/**
 * What `micse` loads: help and the refusal of a command line (an unknown command or flag, a flag out of range)
 * load the parser and the flags' defaults, none of the library's dependencies (TF.js, onnxruntime, usearch, BullMQ,
 * vega, ...), so that they answer at once; `sweep status`, `sweep report`, `train --dry-run` (of a config or of a
 * run to resume) and a resume's refusals load what reads configs and corpora, not TF.js nor the tokenizer; `index
 * build` refuses its corpus or --out, `similarity` its sentences or --pairs file and `search` its --queries file
 * having loaded the corpus readers alone. Spawns bin/micse.js (dist/ once built,
 * else the sources through tsx) under a resolve hook that lists the modules it loads.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { micseLoads, ROOT, SKIP_NO_SHARED, testTempDir } from './helpers.js';

const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
  dependencies: Record<string, string>;
  optionalDependencies?: Record<string, string>;
};
/** The packages `micse` loads before a command's handler runs: the parser, and tsx where bin/micse.js runs the sources. */
const PARSER = new Set(['yargs', 'tsx']);
/** Every other dependency: the library's. */
const LIBRARY = Object.keys({ ...pkg.dependencies, ...pkg.optionalDependencies }).filter((d) => !PARSER.has(d));
/** What reads a corpus. */
const CORPUS = ['csv-parse'];
/** What reads a training config (yaml): its schema names the limits of batches and corpora without their modules. */
const CONFIG = ['yaml'];
/**
 * What reads a training config and a corpus; batches are counted (data/batchLimits.ts) without the tokenizer's
 * module, so @huggingface/tokenizers is not among them.
 */
const CONFIG_AND_CORPUS = [...CONFIG, ...CORPUS];

/** The library's dependencies that `urls` (the modules a process loaded) come from. */
function libraryLoads(urls: readonly string[]): string[] {
  return LIBRARY.filter((d) => urls.some((u) => u.includes(`/node_modules/${d}/`)));
}

interface Case {
  argv: string[];
  code: number;
  /** The whole of stderr, where the case names it. */
  stderr?: string;
  /** The library's dependencies the command may load (default none). */
  loads?: readonly string[];
  skip?: string | false;
}

describe('micse start-up', () => {
  const tmp = testTempDir('cli-startup');
  const notSweep = path.join(tmp, 'not-a-sweep');
  mkdirSync(notSweep);
  // The smallest run directory a resume reads before it trains: a config.yaml (tiny.yaml's paths are relative to the
  // repository root, where the cases run); one whose config.yaml is not YAML; and a folder without one.
  const run = path.join(tmp, 'run');
  mkdirSync(run);
  writeFileSync(path.join(run, 'config.yaml'), readFileSync(path.join(ROOT, 'configs', 'tiny.yaml')));
  const damaged = path.join(tmp, 'damaged-run');
  mkdirSync(damaged);
  writeFileSync(path.join(damaged, 'config.yaml'), 'train:\n  seed: [1\n');
  const embed = ['embed', '--model', 'm', '--input', 'in.txt', '--output', 'o.jsonl'];
  // An index build's corpus that is not there, and an --out it refuses (a folder of something else than an index).
  const noCorpus = path.join(tmp, 'no-corpus.txt');
  const corpus = path.join(tmp, 'corpus.txt');
  writeFileSync(corpus, 'a sentence\n');
  const notIndex = path.join(tmp, 'not-an-index');
  mkdirSync(notIndex);
  writeFileSync(path.join(notIndex, 'notes.txt'), 'mine\n');
  const noPairs = path.join(tmp, 'no-pairs.tsv');
  const indexBuild = (corpusFile: string, out: string) => ['index', 'build', '--model', 'm', '--corpus', corpusFile, '--out', out];
  const cases: Case[] = [
    { argv: ['--help'], code: 0 },
    { argv: ['sweep', 'status', '--help'], code: 0 },
    { argv: ['bogus'], code: 2 },
    { argv: ['train', '--confg', 'x.yaml'], code: 2, stderr: 'micse: unknown option --confg (did you mean --config?)\n' },
    { argv: [...embed, '--batch-size', '0'], code: 2, stderr: 'micse: --batch-size must be an integer >= 1, got 0\n' },
    // Their handlers' modules are loaded whole before they find no sweep.json.
    { argv: ['sweep', 'status', '--out', notSweep], code: 2, loads: CONFIG_AND_CORPUS },
    { argv: ['sweep', 'report', notSweep], code: 2, loads: CONFIG_AND_CORPUS },
    // An index build checks --out and reads its corpus through before it loads TF.js, usearch and the model.
    { argv: indexBuild(noCorpus, path.join(tmp, 'index')), code: 2, loads: CORPUS, stderr: `micse: cannot read corpus ${noCorpus}: ENOENT\n` },
    { argv: indexBuild(corpus, notIndex), code: 2, loads: CORPUS,
      stderr: `micse: ${notIndex}: not empty (1 entry) and not an index (no meta.json or progress.json); pass --force to replace it, or choose another --out. Nothing was written\n` },
    // similarity reads its pairs, and search its queries and its index's meta.json, before it loads TF.js, the tokenizer,
    // usearch and the model.
    { argv: ['similarity', '--help'], code: 0 },
    { argv: ['search', '--help'], code: 0 },
    { argv: ['similarity', 'a', 'b', 'c', '--model', 'm'], code: 2, loads: CORPUS,
      stderr: 'micse: 3 sentences given: they are read two by two as pairs (A B, C D, ...), so pass an even number\n' },
    { argv: ['similarity', '--pairs', noPairs, 'a', '--model', 'm'], code: 2, loads: CORPUS, stderr: 'micse: give sentences or --pairs, not both\n' },
    { argv: ['similarity', '--pairs', noPairs, '--model', 'm'], code: 2, loads: CORPUS, stderr: `micse: cannot read pairs file ${noPairs}: ENOENT\n` },
    { argv: ['search', '--index', notIndex], code: 2, stderr: 'micse: give --query TEXT or --queries FILE\n' },
    { argv: ['search', '--index', notIndex, '--query', 'a', '--top-k', '0'], code: 2, stderr: 'micse: --top-k must be an integer >= 1, got 0\n' },
    { argv: ['search', '--index', notIndex, '--queries', noCorpus], code: 2, loads: CORPUS, stderr: `micse: cannot read queries file ${noCorpus}: ENOENT\n` },
    { argv: ['search', '--index', notIndex, '--query', 'a'], code: 2, loads: CORPUS,
      stderr: `micse: ${notIndex}: not a finished index (no meta.json)\n` },
    { argv: ['train', '--config', path.join(ROOT, 'configs', 'tiny.yaml'), '--dry-run'], code: 0, loads: CONFIG_AND_CORPUS, skip: SKIP_NO_SHARED },
    { argv: ['train', '--resume', run, '--dry-run'], code: 0, loads: CONFIG_AND_CORPUS, skip: SKIP_NO_SHARED },
    // A resume's refusals of its run directory and of --set come before anything but the config's reader is loaded.
    { argv: ['train', '--resume', notSweep, '--dry-run'], code: 2, loads: CONFIG,
      stderr: `micse: ${path.join(notSweep, 'config.yaml')}: missing; --resume needs a run directory written by micse train\n` },
    { argv: ['train', '--resume', damaged, '--dry-run'], code: 2, loads: CONFIG,
      stderr: `micse: ${path.join(damaged, 'config.yaml')}:3:1: not valid YAML (Flow sequence in block collection must be sufficiently indented and end with a ])\n` },
    { argv: ['train', '--resume', run, '--set', 'train.output=elsewhere'], code: 2, loads: CONFIG,
      stderr: `micse: --set train.output: a resumed run stays in its directory (${run}); copy the run elsewhere to continue it there\n` },
    // A key the checkpoint fixes: the dry run refuses it as the run does, with the same line.
    ...[[], ['--dry-run']].map((dry): Case => ({ argv: ['train', '--resume', run, '--set', 'train.seed=2', ...dry], code: 2, loads: CONFIG,
      stderr: `micse: ${run}: a resumed run cannot change train.seed (42 -> 2); start a new run in another train.output instead\n` })),
  ];
  for (const { argv, code, stderr, loads = [], skip = false } of cases) {
    const what = loads.length === 0 ? "none of the library's dependencies" : `no library dependency but ${loads.join(', ')}`;
    it(`micse ${argv.map((a) => (path.isAbsolute(a) ? path.basename(a) : a)).join(' ')} loads ${what}`, { skip }, async () => {
      // From the repository root: configs/tiny.yaml names the shared data relative to it.
      const r = await micseLoads(argv, ROOT);
      assert.equal(r.code, code, r.stderr);
      if (stderr !== undefined) assert.equal(r.stderr, stderr);
      assert.ok(r.urls.some((u) => /\/src\/cli\/main\.[jt]s$/.test(u)), 'the resolve hook saw no src/cli/main');
      assert.deepEqual(libraryLoads(r.urls).filter((d) => !loads.includes(d)), []);
    });
  }
});
