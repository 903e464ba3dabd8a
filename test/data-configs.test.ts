import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { subsetSize } from '../src/data/subset.js';
import { stepsPerEpoch } from '../src/data/batchLimits.js';
import { loadConfig } from '../src/train/config.js';
import { runDirectory, trainingFile } from '../src/train/plan.js';
import { ROOT } from './helpers.js';

/**
 * Split file -> [the authors' file label, sentences of 1M, epochs, evalSteps, lambda] (published rows of METHOD.md
 * marked).
 */
const SPLITS: [string, string, number, number, number, number][] = [
  ['micse-0.0064pct.yaml', '000.0064', 64, 5000, 250, 1e-3],
  ['micse-0.01pct.yaml', '000.01', 100, 2500, 250, 1e-3], // published
  ['micse-0.05pct.yaml', '000.05', 500, 1000, 500, 1e-3],
  ['micse-0.1pct.yaml', '000.10', 1000, 500, 500, 1e-3], // published
  ['micse-0.5pct.yaml', '000.50', 5000, 100, 500, 3e-4],
  ['micse-1pct.yaml', '001.00', 10_000, 50, 500, 1e-4], // published
  ['micse-10pct.yaml', '010.00', 100_000, 10, 500, 5e-4], // published
  ['micse-100pct.yaml', '100.00', 1_000_000, 1, 500, 5e-4],
];

test('every few-shot config loads, trains on the authors\' file with their protocol, and its project draw sizes the split exactly', async () => {
  for (const [file, label, sentences, epochs, evalSteps, lambda] of SPLITS) {
    const { config: c } = await loadConfig(path.join(ROOT, 'configs', 'fewshot', file));
    const seeded = label === '100.00' ? '' : '_seed48';
    assert.equal(trainingFile(c), `data/fewshot/wiki_subset_1M_${label}percent${seeded}.txt`, file);
    assert.equal(c.data.fraction, null, file);
    assert.equal(c.data.blankLines, 'keep', file);
    assert.equal(c.optim.variant, 'hf', file);
    assert.equal(c.train.selection, 'hf-save-steps', file);
    assert.equal(c.train.saveSteps, 500, file);
    // The project's own draw named in the header gives the split's size.
    const draw = /--set data\.fraction=([0-9.e-]+)/.exec(readFileSync(path.join(ROOT, 'configs', 'fewshot', file), 'utf8'));
    assert.ok(draw !== null, `${file}: the header names the project draw`);
    assert.equal(subsetSize(1_000_000, { fraction: Number(draw[1]) }), sentences, file);
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

test('the subset seed picks the authors\' file and the run directory', async () => {
  const { config: c } = await loadConfig(path.join(ROOT, 'configs', 'fewshot', 'micse-0.1pct.yaml'), ['data.subsetSeed=52']);
  assert.equal(trainingFile(c), 'data/fewshot/wiki_subset_1M_000.10percent_seed52.txt');
  assert.equal(runDirectory(c), 'checkpoints/micse-0.1pct-seed52');
  const draw = await loadConfig(path.join(ROOT, 'configs', 'fewshot', 'micse-0.1pct.yaml'), [
    'data.train=data/wiki1m_for_simcse.txt',
    'data.fraction=0.001',
  ]);
  assert.equal(trainingFile(draw.config), 'data/wiki1m_for_simcse.txt');
});
