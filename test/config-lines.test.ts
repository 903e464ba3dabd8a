/**
 * Config errors name the line: a value, key or syntax error of a YAML config or sweep file is a one-line UserError
 * starting `FILE:LINE:` (the line of the key; of the item, for a list value; `FILE:LINE:COL:` for the yaml package's
 * syntax errors), through `extends`, in cross-key checks and on the CLI (exit 2). A `--set` and a JSON file are
 * named as before.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { UserError } from '../src/errors.js';
import { amiLayerSpanProblem } from '../src/losses/micseOptions.js';
import { loadSweep } from '../src/sweep/grid.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { checkModelFits, loadConfig, placeOf, readYamlFile } from '../src/train/config.js';
import { trainingPlan } from '../src/train/plan.js';
import { ROOT, shared, SKIP_NO_SHARED } from './helpers.js';

const run = promisify(execFile);

let TMP = '';
before(async () => {
  TMP = await fs.mkdtemp(path.join(os.tmpdir(), 'micse-config-lines-'));
});
after(async () => {
  await fs.rm(TMP, { recursive: true, force: true });
});

/** Writes `text` to `name` in the test folder and returns its path. */
async function write(name: string, text: string): Promise<string> {
  const f = path.join(TMP, name);
  await fs.writeFile(f, text);
  return f;
}

/** Asserts that `p` rejects with a UserError whose message is exactly `message`. */
async function refuses(p: Promise<unknown>, message: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof UserError, String(e));
    assert.equal(e.message, message);
    return true;
  });
}

describe('a config error names FILE:LINE and the key', () => {
  it('a bad value: wrong type, out of range, not a choice; comments and blank lines count', async () => {
    const f = await write('values.yaml', '# a comment\n\ntrain:\n  seed: 1\n  batchSize: 1\n');
    await refuses(loadConfig(f), `${f}:5: train.batchSize must be >= 2, got 1`);
    const g = await write('type.yaml', 'optim:\n  warmupSteps: 0\n  learningRate: fast\n');
    await refuses(loadConfig(g), `${g}:3: optim.learningRate must be a number, got "fast"`);
    const h = await write('choice.yaml', 'objective: {style: mice}\n');
    await refuses(loadConfig(h), `${h}:1: objective.style must be one of micse, simcse, got 'mice' (did you mean 'micse'?)`);
  });

  it('an unknown key or section, with its did-you-mean', async () => {
    const f = await write('unknown.yaml', 'train:\n  seed: 1\n\n  batchSzie: 8\n');
    await refuses(loadConfig(f), `${f}:4: unknown key 'train.batchSzie' (did you mean 'train.batchSize'?)`);
    const g = await write('section.yaml', 'train:\n  seed: 1\ntrian:\n  seed: 2\n');
    await refuses(loadConfig(g), `${g}:3: unknown section 'trian' (did you mean 'train'?); sections: model, data, objective, optim, train`);
    const h = await write('notmap.yaml', 'train:\n  seed: 1\noptim: 3\n');
    await refuses(loadConfig(h), `${h}:3: section 'optim' must be a mapping`);
  });

  it('a top level or a section that is not a mapping: the line of its node; an empty file: line 1', async () => {
    const list = await write('top-list.yaml', '# a list\n\n- train\n- seed\n');
    await refuses(loadConfig(list), `${list}:3: the top level of a config file must be a mapping, got a list`);
    const scalar = await write('top-scalar.yaml', '\ntrain\n');
    await refuses(loadConfig(scalar), `${scalar}:2: the top level of a config file must be a mapping, got "train"`);
    const empty = await write('top-empty.yaml', '');
    await refuses(loadConfig(empty), `${empty}:1: the top level of a config file must be a mapping, got an empty document`);
    const comments = await write('top-comments.yaml', '# nothing yet\n# still nothing\n');
    await refuses(loadConfig(comments), `${comments}:1: the top level of a config file must be a mapping, got an empty document`);
    const tilde = await write('top-null.yaml', '# null\n~\n');
    await refuses(loadConfig(tilde), `${tilde}:2: the top level of a config file must be a mapping, got null`);
    // An extended file and a sweep file are held to the same rule, by their own lines.
    const child = await write('top-child.yaml', 'extends: top-list.yaml\n');
    await refuses(loadConfig(child), `${list}:3: the top level of a config file must be a mapping, got a list`);
    const sweep = await write('top-sweep.yaml', '- base\n');
    await refuses(loadSweep(sweep), `${sweep}:1: the top level of a sweep file must be a mapping, got a list`);
    // A section: a list, a scalar; a JSON file is named without a line.
    const seq = await write('section-list.yaml', 'data:\n  maxSeqLen: 16\ntrain:\n  - seed: 1\n');
    await refuses(loadConfig(seq), `${seq}:3: section 'train' must be a mapping`);
    const str = await write('section-scalar.yaml', 'train: fast\n');
    await refuses(loadConfig(str), `${str}:1: section 'train' must be a mapping`);
    const json = await write('top-list.json', '[1]\n');
    await refuses(loadConfig(json), `${json}: the top level of a config file must be a mapping, got a list`);
  });

  it('a nested key: model.config names the line of its own key', async () => {
    const f = await write('nested.yaml', 'model:\n  init: random\n  tokenizer: tok\n  config:\n    hidden_size: 64\n    hiden_size: 48\n');
    await assert.rejects(loadConfig(f), (e: unknown) => e instanceof UserError &&
      e.message.startsWith(`${f}:6: unknown key 'model.config.hiden_size' (did you mean 'model.config.hidden_size'?); model.config takes`));
    const g = await write('nested-value.yaml', 'model:\n  init: random\n  tokenizer: tok\n  config:\n    num_hidden_layers: 2\n    hidden_size: -3\n');
    await refuses(loadConfig(g), `${g}:6 (model.config.hidden_size: -3): model.config: hidden_size must be a positive integer, got -3`);
  });

  it('a key in an extended file is named by its line in that file; a bad extends by its own line', async () => {
    const parent = await write('parent.yaml', 'train:\n  seed: 1\noptim:\n  learningRate: -1\n');
    const child = await write('child.yaml', '# the child\nextends: parent.yaml\ntrain:\n  seed: 2\n');
    await refuses(loadConfig(child), `${parent}:4: optim.learningRate must be > 0, got -1`);
    const missing = await write('missing.yaml', 'train:\n  seed: 2\nextends: gone.yaml\n');
    await refuses(loadConfig(missing), `${path.join(TMP, 'gone.yaml')}: cannot read config (ENOENT), named by ${missing}:3: extends`);
    const notPath = await write('notpath.yaml', '\nextends: [a.yaml]\n');
    await refuses(loadConfig(notPath), `${notPath}:2: extends must be a path string`);
    const a = await write('cycle-a.yaml', 'extends: cycle-b.yaml\n');
    const b = await write('cycle-b.yaml', 'train:\n  seed: 1\nextends: cycle-a.yaml\n');
    await refuses(loadConfig(a), `${b}:3: 'extends' forms a cycle (${a} -> ${b} -> ${a})`);
  });

  it('a cross-key error names each value by its line, --set or default', async () => {
    const parent = await write('span-parent.yaml', 'objective:\n  minLayer: 2\n  maxLayer: 4\ndata:\n  count: 64\n');
    const child = await write('span-child.yaml', 'extends: span-parent.yaml\nobjective:\n  maxLayer: 5\n');
    const span = 'the AMI layer span [minLayer, maxLayer) = ';
    await assert.rejects(loadConfig(child), (e: unknown) => e instanceof UserError &&
      e.message.startsWith(`${parent}:2 (objective.minLayer: 2) and ${child}:3 (objective.maxLayer: 5): ${span}[2, 5)`));
    const same = await write('span-same.yaml', 'objective:\n  minLayer: 2\n\n  maxLayer: 5\n');
    await assert.rejects(loadConfig(same), (e: unknown) => e instanceof UserError &&
      e.message.startsWith(`${same}:2 (objective.minLayer: 2) and ${same}:4 (objective.maxLayer: 5): ${span}[2, 5)`));
    await assert.rejects(loadConfig(parent, ['data.fraction=0.5']), (e: unknown) => e instanceof UserError &&
      e.message === `--set data.fraction=0.5 and ${parent}:5 (data.count: 64): set data.fraction or data.count, not both`);
    const random = await write('random.yaml', 'model:\n  tokenizer: null\n  init: random\n');
    await refuses(loadConfig(random), `${random}:3 (model.init: "random") and ${random}:2 (model.tokenizer: null): ` +
      'model.init is "random", so model.tokenizer must name a tokenizer directory');
    const defaults = await write('defaults.yaml', 'model:\n  init: random\n');
    await refuses(loadConfig(defaults), `${defaults}:2 (model.init: "random") and defaults (model.tokenizer: null): ` +
      'model.init is "random", so model.tokenizer must name a tokenizer directory');
  });

  it('a syntax error, a duplicate key, an alias without its anchor, a list or mapping as a key: line and column, one line', async () => {
    const dup = await write('dup.yaml', 'train:\n  seed: 1\n  batchSize: 8\n  seed: 2\n');
    await refuses(loadConfig(dup), `${dup}:4:3: not valid YAML (Map keys must be unique)`);
    const tab = await write('tab.yaml', 'train:\n  seed: 1\n\tbatchSize: 8\n');
    const oneLine = (e: unknown, start: string) => e instanceof UserError && e.message.startsWith(start) && /^[^\n]+ \(.+\)$/.test(e.message);
    await assert.rejects(loadConfig(tab), (e: unknown) => oneLine(e, `${tab}:3:1: not valid YAML (`));
    const flow = await write('flow.yaml', 'optim:\n  learningRate: 1e-5\ntrain: {seed: 1, batchSize: [8}\n');
    await assert.rejects(loadConfig(flow), (e: unknown) => oneLine(e, `${flow}:3:`) && / not valid YAML \(/.test((e as Error).message));
    // What parses but a config cannot hold: an alias without its anchor, a mapping or list as a key.
    const alias = await write('alias.yaml', 'train:\n  seed: 1\n  batchSize: *nope\n');
    await refuses(loadConfig(alias), `${alias}:3:14: not valid YAML (alias *nope has no anchor &nope before it)`);
    const later = await write('alias-later.yaml', 'train:\n  seed: *s\ndata:\n  subsetSeed: &s 3\n');
    await refuses(loadConfig(later), `${later}:2:9: not valid YAML (alias *s has no anchor &s before it)`);
    const anchored = await write('alias-ok.yaml', 'train:\n  seed: &s 3\ndata:\n  subsetSeed: *s\n  maxSeqLen: 1\n');
    await refuses(loadConfig(anchored), `${anchored}:5: data.maxSeqLen must be >= 2, got 1`);
    const listKey = await write('list-key.yaml', 'train:\n  seed: 1\n  ? [a, b]\n  : 1\n');
    await refuses(loadConfig(listKey), `${listKey}:3:5: a key must be a scalar (a name), not a list`);
    const mapKey = await write('map-key.yaml', '# flow\noptim:\n  {a: 1}: 2\n  beta1: 0.9\n');
    await refuses(loadConfig(mapKey), `${mapKey}:3:3: a key must be a scalar (a name), not a mapping`);
    const sweepKey = await write('sweep-key.yaml', 'base: {}\ngrid:\n  [train.seed]: [1, 2]\n');
    await refuses(loadSweep(sweepKey), `${sweepKey}:3:3: a key must be a scalar (a name), not a list`);
    // An extended file's syntax error names that file.
    const child = await write('dup-child.yaml', 'extends: dup.yaml\n');
    await refuses(loadConfig(child), `${dup}:4:3: not valid YAML (Map keys must be unique)`);
  });

  it('a "billion laughs" document: the alias at which the yaml package stops counting, by line and column', async () => {
    // Each line's aliases repeat the line above nine times: the first *c, on line 7, is where the package's count
    // (an anchor's uses times the aliases nested in it, at most 100) passes its limit; the first alias is *a on line 5.
    const laughs = await write('laughs.yaml', [
      '# a billion laughs',
      'train:',
      '  seed: 1',
      'a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]',
      'b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]',
      'c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]',
      'd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]',
      'e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]',
      '',
    ].join('\n'));
    await refuses(loadConfig(laughs), `${laughs}:7:8: not valid YAML (Excessive alias count indicates a resource exhaustion attack, at alias *c)`);
    // Through an extends, the file that holds the aliases.
    const child = await write('laughs-child.yaml', 'extends: laughs.yaml\n');
    await refuses(loadConfig(child), `${laughs}:7:8: not valid YAML (Excessive alias count indicates a resource exhaustion attack, at alias *c)`);
  });

  it('a --set and a JSON file are named as before, without a line', async () => {
    const f = await write('ok.yaml', 'train:\n  seed: 1\n');
    await refuses(loadConfig(f, ['train.seed=-1']), '--set train.seed=-1: train.seed must be >= 0, got -1');
    const j = await write('bad.json', '{\n  "train": {\n    "batchSize": 1\n  }\n}\n');
    await refuses(loadConfig(j), `${j}: train.batchSize must be >= 2, got 1`);
  });

  it('placeOf: a key\'s line, an item\'s line, the file alone where no line is known', async () => {
    const f = await write('places.yaml', 'a:\n  b: 1\n  c:\n    - x\n    - y\nd: {e: 2}\n');
    const raw = await readYamlFile(f, 'config');
    assert.equal(placeOf(f, raw, ['a', 'b']), `${f}:2`);
    assert.equal(placeOf(f, raw, ['a', 'c']), `${f}:3`);
    assert.equal(placeOf(f, raw, ['a', 'c', 1]), `${f}:5`);
    assert.equal(placeOf(f, raw, ['d', 'e']), `${f}:6`);
    assert.equal(placeOf(f, raw, ['a', 'nope']), f);
    assert.equal(placeOf(f, raw, ['nope', 'b']), f);
    assert.equal(placeOf('--set a.b=1', { a: { b: 1 } }, ['a', 'b']), '--set a.b=1');
  });
});

describe('a config that does not fit its checkpoint names where each value was set and the checkpoint\'s config.json', () => {
  /** A checkpoint folder holding only config.json (all a plan reads) with these positions and layers. */
  async function checkpoint(name: string, positions: number, layers: number): Promise<string> {
    const dir = path.join(TMP, name);
    await fs.mkdir(dir);
    await fs.writeFile(path.join(dir, 'config.json'), JSON.stringify({
      model_type: 'bert', hidden_size: 32, num_hidden_layers: layers, num_attention_heads: 4, intermediate_size: 64, max_position_embeddings: positions,
    }));
    return dir;
  }

  it('data.maxSeqLen past max_position_embeddings: its line, its --set or the default', async () => {
    const ckpt = await checkpoint('ckpt-positions', 16, 12);
    const json = path.join(ckpt, 'config.json');
    const past = (n: number) => `data.maxSeqLen is ${n} but the model's max_position_embeddings is 16 (${json}): lower data.maxSeqLen to at most 16`;
    const f = await write('positions.yaml', `model:\n  init: ${ckpt}\ndata:\n  count: 64\n  maxSeqLen: 24\n`);
    await refuses(loadConfig(f).then((l) => trainingPlan(l.config)), `${f}:5 (data.maxSeqLen: 24): ${past(24)}`);
    await refuses(loadConfig(f, ['data.maxSeqLen=20']).then((l) => trainingPlan(l.config)), `--set data.maxSeqLen=20: ${past(20)}`);
    const g = await write('positions-default.yaml', `model:\n  init: ${ckpt}\n`);
    await refuses(loadConfig(g).then((l) => trainingPlan(l.config)), `defaults (data.maxSeqLen: 32): ${past(32)}`);
    // The trainer's check, as it loads the checkpoint: before the tokenizer and weights (this folder has neither).
    const { config } = await loadConfig(f);
    await refuses(loadPretrained(ckpt, { checkConfig: (model, file) => checkModelFits(config, model, file, 'config') }),
      `${f}:5 (data.maxSeqLen: 24): ${past(24)}`);
  });

  it('an AMI layer span past the checkpoint\'s layers: the lines of minLayer and maxLayer', async () => {
    const ckpt = await checkpoint('ckpt-layers', 512, 4);
    const f = await write('layers.yaml', `model:\n  init: ${ckpt}\nobjective:\n  minLayer: 2\n  maxLayer: 6\n`);
    await refuses(loadConfig(f).then((l) => trainingPlan(l.config)), `${f}:4 (objective.minLayer: 2) and ${f}:5 (objective.maxLayer: 6): ` +
      `the AMI layer span [minLayer, maxLayer) = [2, 6) must satisfy 0 <= minLayer < maxLayer <= 4 (the model has 4 layers, num_hidden_layers in ${path.join(ckpt, 'config.json')}, numbered 0..3; maxLayer is one past the last)`);
  });

  it('an AMI layer span past a random init\'s layers: loadConfig names the lines of minLayer, maxLayer and model.config.num_hidden_layers', async () => {
    const f = await write('layers-random.yaml', 'model:\n  init: random\n  tokenizer: tok\n  config:\n    num_hidden_layers: 2\nobjective:\n  minLayer: 0\n  maxLayer: 4\n');
    await refuses(loadConfig(f), `${f}:7 (objective.minLayer: 0) and ${f}:8 (objective.maxLayer: 4) and ${f}:5 (model.config.num_hidden_layers: 2): ` +
      'the AMI layer span [minLayer, maxLayer) = [0, 4) must satisfy 0 <= minLayer < maxLayer <= 2 (the model has 2 layers, num_hidden_layers in model.config, numbered 0..1; maxLayer is one past the last)');
    // bert-base's 12 layers where model.config does not set num_hidden_layers.
    const g = await write('layers-default.yaml', 'model:\n  init: random\n  tokenizer: tok\nobjective:\n  minLayer: 10\n  maxLayer: 14\n');
    await refuses(loadConfig(g), `${g}:5 (objective.minLayer: 10) and ${g}:6 (objective.maxLayer: 14) and defaults (model.config.num_hidden_layers): ` +
      "the AMI layer span [minLayer, maxLayer) = [10, 14) must satisfy 0 <= minLayer < maxLayer <= 12 (the model has 12 layers, num_hidden_layers in bert-base's default; model.config does not set it, numbered 0..11; maxLayer is one past the last)");
  });

  it('an odd AMI layer span past a random init\'s layers: the depth is said first; an odd span within them names no num_hidden_layers', async () => {
    const f = await write('layers-odd-past.yaml', 'model:\n  init: random\n  tokenizer: tok\nobjective:\n  minLayer: 7\n  maxLayer: 14\n');
    await refuses(loadConfig(f), `${f}:5 (objective.minLayer: 7) and ${f}:6 (objective.maxLayer: 14) and defaults (model.config.num_hidden_layers): ` +
      "the AMI layer span [minLayer, maxLayer) = [7, 14) must satisfy 0 <= minLayer < maxLayer <= 12 (the model has 12 layers, num_hidden_layers in bert-base's default; model.config does not set it, numbered 0..11; maxLayer is one past the last)");
    // Odd, ending at the last layer: the fix keeps within the 12 layers (one more below, not one more above).
    const g = await write('layers-odd-last.yaml', 'model:\n  init: random\n  tokenizer: tok\nobjective:\n  minLayer: 9\n  maxLayer: 12\n');
    await refuses(loadConfig(g), `${g}:5 (objective.minLayer: 9) and ${g}:6 (objective.maxLayer: 12): ` +
      'the AMI layer span [minLayer, maxLayer) = [9, 12) selects 3 layer(s), but the count must be even: the AMI pairs layers l and l+2 into one row per ' +
      'layer parity. Use e.g. minLayer 8 (the official runs use layers 7..10 of bert-base: minLayer 7, maxLayer 11)');
  });

  it('an odd AMI layer span\'s suggested fix keeps within the model\'s layers, known or not', () => {
    const fix = (min: number, max: number, depth?: number): string => {
      const m = amiLayerSpanProblem(min, max, depth) ?? 'no problem';
      return /count must be even: .*?\. (.*) \(the official runs/.exec(m)?.[1] ?? m;
    };
    assert.equal(fix(7, 10, 12), 'Use e.g. maxLayer 11');
    // The depth not known (a checkpoint's config.json not read yet): not past the maxLayer given.
    assert.equal(fix(7, 10), 'Use e.g. minLayer 6');
    assert.equal(fix(0, 3), 'Use e.g. maxLayer 2');
    assert.equal(fix(0, 3, 3), 'Use e.g. maxLayer 2');
    assert.equal(fix(0, 1), 'Use e.g. maxLayer 2');
    assert.equal(fix(0, 1, 2), 'Use e.g. maxLayer 2');
    assert.equal(fix(0, 1, 1), 'A model of 1 layer has no such span (objective.style simcse uses none)');
    // Past the depth and odd: the depth is said.
    assert.match(fix(9, 14, 12), /^the AMI layer span .* must satisfy 0 <= minLayer < maxLayer <= 12 /);
  });

  it('CLI: micse train on a checkpoint with fewer layers than the span exits 2 with the one line, before the run directory is made', { skip: SKIP_NO_SHARED }, async () => {
    const ckpt = shared('hf-reference', 'tiny-h32-l4');
    const out = path.join(TMP, 'run-layers');
    const f = await write('layers-cli.yaml', `model:\n  init: ${ckpt}\ndata:\n  train: ${shared('wiki1m-head.txt')}\n  count: 64\n` +
      `  senteval: ${shared('senteval')}\nobjective:\n  minLayer: 2\n  maxLayer: 6\ntrain:\n  output: ${out}\n  maxSteps: 1\n  finalEval: false\n  backend: cpu\n`);
    const r = await run(process.execPath, [path.join(ROOT, 'bin', 'micse.js'), 'train', '--config', f, '--quiet'], { cwd: ROOT }).then(
      () => assert.fail('expected exit 2'),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr, `micse: ${f}:8 (objective.minLayer: 2) and ${f}:9 (objective.maxLayer: 6): the AMI layer span [minLayer, maxLayer) = [2, 6) ` +
      `must satisfy 0 <= minLayer < maxLayer <= 4 (the model has 4 layers, num_hidden_layers in ${path.join(ckpt, 'config.json')}, numbered 0..3; ` +
      'maxLayer is one past the last)\n');
    assert.equal(existsSync(out), false, 'no run directory');
  });

  it('CLI: micse train --dry-run exits 2 with the one line', async () => {
    const ckpt = await checkpoint('ckpt-cli', 16, 12);
    const f = await write('positions-cli.yaml', `model:\n  init: ${ckpt}\ndata:\n  maxSeqLen: 24\n`);
    const r = await run(process.execPath, [path.join(ROOT, 'bin', 'micse.js'), 'train', '--config', f, '--dry-run'], { cwd: ROOT }).then(
      () => assert.fail('expected exit 2'),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr, `micse: ${f}:4 (data.maxSeqLen: 24): data.maxSeqLen is 24 but the model's max_position_embeddings is 16 ` +
      `(${path.join(ckpt, 'config.json')}): lower data.maxSeqLen to at most 16\n`);
  });
});

describe('a sweep file error names FILE:LINE', () => {
  it('grid keys and values, base files and inline bases, the finalEval rule', async () => {
    const base = await write('sweep-base.yaml', 'objective:\n  minLayer: 2\n  maxLayer: 4\ntrain:\n  finalEval: false\n');
    const cases: [string, string][] = [
      ['base: {}\ngrid:\n  optim.learningRate:\n    - 1e-5\n    - -1\n', 'FILE:5: grid.optim.learningRate=-1: optim.learningRate must be > 0, got -1'],
      ['base: {}\ngrid:\n  train.seed: [1]\n  data.subsetSed: [1]\n',
        "FILE:4: grid key 'data.subsetSed' is not a training config key (section.key, e.g. data.subsetSeed, objective.style, " +
        "optim.learningRate; model.config.NAME; or 'split')"],
      ['base: {}\ngrid:\n  train.seed: []\n', 'FILE:3: grid.train.seed must be a non-empty list'],
      ['base: {}\ngrid:\n  split: [sweep-base.yaml]\n  train.seed: [1, 2]\n',
        `${base}:5 (train.finalEval: false): train.finalEval is false, but every sweep point ends with the STS evaluation`],
      ['base:\n  objective:\n    maxLayer: 5\n', 'defaults (objective.minLayer: 7) and FILE:3 (objective.maxLayer: 5): the AMI layer span'],
      ['base:\n  train:\n    batchSize: 1\n', 'FILE:3: train.batchSize must be >= 2, got 1'],
      ['base: {}\ngrid:\n  train.finalEval: [true, false]\n',
        'FILE:3 (grid.train.finalEval: false): train.finalEval is false, but every sweep point ends with the STS evaluation'],
      ['base: {}\nbogus: 1\n', "FILE:2: unknown top-level key 'bogus' (a sweep has 'base' and 'grid')"],
      ['base: {}\ngrid:\n  train.seed: [1, 2]\n  data.train:\n    - a b.txt\n    - a-b.txt\n',
        'FILE:5 and FILE:6: points {"train.seed":1,"data.train":"a b.txt"} and {"train.seed":1,"data.train":"a-b.txt"} get the same name'],
      ['base: {}\ngrid:\n  train.seed:\n    - 1\n    - 1\n', 'FILE:4 and FILE:5: points {"train.seed":1} and {"train.seed":1} get the same name'],
      ['base: {}\ngrid:\n  split:\n    - sweep-base.yaml\n    - gone.yaml\n',
        `${path.join(TMP, 'gone.yaml')}: cannot read config (ENOENT), named by FILE:5: grid.split`],
    ];
    for (const [i, [text, message]] of cases.entries()) {
      const f = await write(`sweep${i}.yaml`, text);
      await assert.rejects(loadSweep(f), (e: unknown) => e instanceof UserError && e.message.startsWith(message.replaceAll('FILE', f)),
        `${text}: expected a message starting ${message}`);
    }
  });
});

describe('CLI', () => {
  it('micse train --config with a bad value or a syntax error: exit 2, one line naming FILE:LINE', async () => {
    const cases: [string, string, string][] = [
      ['cli-value.yaml', 'train:\n  seed: 1\n  batchSize: 1\n', 'FILE:3: train.batchSize must be >= 2, got 1'],
      ['cli-syntax.yaml', 'train:\n  seed: 1\n  seed: 2\n', 'FILE:3:3: not valid YAML (Map keys must be unique)'],
    ];
    for (const [name, text, message] of cases) {
      const f = await write(name, text);
      const r = await run(process.execPath, [path.join(ROOT, 'bin', 'micse.js'), 'train', '--config', f, '--dry-run'], { cwd: ROOT }).then(
        () => assert.fail('expected exit 2'),
        (e: { code: number; stderr: string }) => e,
      );
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stderr, `micse: ${message.replace('FILE', f)}\n`);
    }
  });
});
