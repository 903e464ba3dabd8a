/**
 * `train.selection`: the schedule of evaluations and best-checkpoint candidates (src/train/selection.ts), and a
 * short run with hf-save-steps (7 steps, evalSteps 2, saveSteps 4): STS-B dev is scored at 2, 4 and 6, only step 4
 * can be the best, and the last step writes `last` without evaluating. About 5 s on 2 cores.
 */
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { selectBackend } from '../src/model/backend.js';
import { actionsAt, scheduleOf } from '../src/train/selection.js';
import { train } from '../src/train/trainer.js';
import { microConfig, SKIP_NO_SHARED } from './helpers.js';

describe('selection schedule', () => {
  test('every-eval: every evalSteps and the last step, all candidates', () => {
    const k = { evalSteps: 250, selection: 'every-eval', saveSteps: 500 } as const;
    assert.deepEqual(scheduleOf(1100, k), { evaluations: [250, 500, 750, 1000, 1100], candidates: [250, 500, 750, 1000, 1100] });
    assert.deepEqual(actionsAt(1100, 1100, k), { evaluate: true, candidate: true, checkpoint: true });
  });

  test('hf-save-steps with eval_steps 250 and save_steps 500 (the 0.01% split): candidates at multiples of 500, never the last step', () => {
    const k = { evalSteps: 250, selection: 'hf-save-steps', saveSteps: 500 } as const;
    assert.deepEqual(scheduleOf(1100, k), { evaluations: [250, 500, 750, 1000], candidates: [500, 1000] });
    assert.deepEqual(actionsAt(750, 1100, k), { evaluate: true, candidate: false, checkpoint: true });
    assert.deepEqual(actionsAt(1100, 1100, k), { evaluate: false, candidate: false, checkpoint: true });
    assert.deepEqual(actionsAt(1099, 1100, k), { evaluate: false, candidate: false, checkpoint: false });
  });

  test('hf-save-steps: a save step without an evaluation is no candidate; a last step that is a save step is one', () => {
    assert.deepEqual(scheduleOf(1000, { evalSteps: 300, selection: 'hf-save-steps', saveSteps: 500 }),
      { evaluations: [300, 600, 900], candidates: [] });
    const paper = scheduleOf(8000, { evalSteps: 500, selection: 'hf-save-steps', saveSteps: 500 }); // 0.1%: 500 epochs x 16
    assert.equal(paper.candidates.length, 16);
    assert.equal(paper.candidates.at(-1), 8000);
    assert.ok(paper.candidates.every((s) => s % 500 === 0));
  });
});

describe('a short run with hf-save-steps', { skip: SKIP_NO_SHARED }, () => {
  let dir = '';
  before(async () => {
    await selectBackend('cpu');
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'micse-selection-'));
  });
  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('evaluations at 2, 4, 6; best only at 4; last at 7 without an evaluation', async () => {
    const output = path.join(dir, 'run');
    const config = microConfig(output, {
      data: { count: 56 },
      optim: { variant: 'hf' },
      train: { epochs: 1, maxSteps: null, evalSteps: 2, selection: 'hf-save-steps', saveSteps: 4 },
    });
    const result = await train(config, { quiet: true, log: () => {} });
    assert.equal(result.steps, 7);
    assert.equal(result.bestStep, 4);
    const evals = (await fs.readFile(path.join(output, 'metrics.jsonl'), 'utf8')).trim().split('\n')
      .map((l) => JSON.parse(l) as { step: number; stsbDev?: number; best?: boolean }).filter((m) => m.stsbDev !== undefined);
    // Step 0 is scored before any update and is never a candidate.
    assert.deepEqual(evals.map((m) => [m.step, m.best]), [[0, false], [2, false], [4, true], [6, false]]);
    assert.equal(result.bestScore, evals[2]!.stsbDev);
    assert.match(await fs.readlink(path.join(output, 'best')), /step-0*4$/);
    assert.match(await fs.readlink(path.join(output, 'last')), /step-0*7$/);
  });
});
