import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { subsetSize } from '../src/data/subset.js';
import { stepsPerEpoch } from '../src/data/batches.js';
import { loadConfig } from '../src/train/config.js';
import { ROOT } from './helpers.js';

/** Split file -> [sentences of 1M, epochs, evalSteps, lambda] (published rows of METHOD.md marked). */
const SPLITS: [string, number, number, number, number][] = [
  ['micse-0.0064pct.yaml', 64, 5000, 250, 1e-3],
  ['micse-0.01pct.yaml', 100, 2500, 250, 1e-3], // published
  ['micse-0.05pct.yaml', 500, 1000, 500, 1e-3],
  ['micse-0.1pct.yaml', 1000, 500, 500, 1e-3], // published
  ['micse-0.5pct.yaml', 5000, 100, 500, 3e-4],
  ['micse-1pct.yaml', 10_000, 50, 500, 1e-4], // published
  ['micse-10pct.yaml', 100_000, 10, 500, 5e-4], // published
  ['micse-100pct.yaml', 1_000_000, 1, 500, 5e-4],
];

test('every few-shot config loads, inherits the reference settings and sizes its split exactly', async () => {
  for (const [file, sentences, epochs, evalSteps, lambda] of SPLITS) {
    const { config: c } = await loadConfig(path.join(ROOT, 'configs', 'fewshot', file));
    assert.equal(subsetSize(1_000_000, { fraction: c.data.fraction }), sentences, file);
    assert.equal(c.data.subsetSeed, 48, file);
    assert.equal(c.train.epochs, epochs, file);
    assert.equal(c.train.evalSteps, evalSteps, file);
    assert.equal(c.objective.lambda, lambda, file);
    assert.equal(c.train.batchSize, 64, file);
    assert.equal(c.data.maxSeqLen, 32, file);
    assert.equal(c.objective.temperature, 0.05, file);
    assert.equal(c.optim.learningRate, file === 'micse-100pct.yaml' ? 3e-5 : 1e-5, file);
    assert.ok(stepsPerEpoch(sentences, 64) * epochs >= 5000, `${file}: step budget`);
  }
});

test('the subset seed is a parameter', async () => {
  const { config: c } = await loadConfig(path.join(ROOT, 'configs', 'fewshot', 'micse-0.1pct.yaml'), ['data.subsetSeed=52']);
  assert.equal(c.data.subsetSeed, 52);
  const official = await loadConfig(path.join(ROOT, 'configs', 'fewshot', 'micse-0.1pct.yaml'), [
    'data.train=data/fewshot/wiki_subset_1M_000.10percent_seed48.txt',
    'data.fraction=null',
  ]);
  assert.equal(official.config.data.fraction, null);
});
