/**
 * `micse train --dry-run [--json]` (src/train/plan.ts) and the training file's resolution: `{subsetSeed}`, the
 * download command of a known missing file (a one-line error, exit 2, for a real run), the plan of a present file
 * (sha256, sentences, steps, evaluation and selection steps). About 5 s (two CLI processes).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { downloadCommandFor } from '../src/data/download.js';
import { loadConfig } from '../src/train/config.js';
import { trainingPlan, type TrainingPlan } from '../src/train/plan.js';
import { ROOT, shared, SKIP_NO_SHARED } from './helpers.js';

const run = promisify(execFile);
const CLI = path.join(ROOT, 'bin', 'micse.js');
const dir = mkdtempSync(path.join(tmpdir(), 'micse-plan-'));
after(() => rmSync(dir, { recursive: true, force: true }));

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, [CLI, ...args], { cwd: ROOT, maxBuffer: 1 << 24 }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

describe('download commands of known files', () => {
  test('the authors\' subsets, wiki1m, other directories, unknown files', () => {
    assert.equal(downloadCommandFor('data/fewshot/wiki_subset_1M_000.10percent_seed48.txt'), 'npx micse data download fewshot-subsets');
    assert.equal(downloadCommandFor('/srv/corpora/fewshot/wiki_subset_1M_010.00percent_seed52.txt'), 'npx micse data download fewshot-subsets --dir /srv/corpora');
    assert.equal(downloadCommandFor('data/wiki1m_for_simcse.txt'), 'npx micse data download wiki1m');
    assert.match(downloadCommandFor('elsewhere/wiki_subset_1M_100.00percent.txt')!, /^npx micse data download fewshot-subsets \(it writes data\/fewshot\/wiki_subset_1M_100\.00percent\.txt; move it/);
    assert.equal(downloadCommandFor('my-corpus.txt'), null);
  });
});

describe('dry run', () => {
  test('--backend is train.backend, over the config and --set; the plan shows it; a name not in the list is refused', async () => {
    const plan = async (...extra: string[]): Promise<TrainingPlan> => {
      const r = await cli(['train', '--config', 'configs/tiny.yaml', '--dry-run', '--json', ...extra]);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout) as TrainingPlan;
    };
    assert.equal((await plan()).backend, 'auto');
    assert.equal((await plan('--backend', 'cpu')).backend, 'cpu');
    assert.equal((await plan('--set', 'train.backend=wasm', '--backend', 'cpu')).backend, 'cpu');
    const bad = await cli(['train', '--config', 'configs/tiny.yaml', '--dry-run', '--backend', 'gpu']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /backend.*"gpu"/);
  });

  test('the 0.1% config: the authors\' seed-48 file, selection at multiples of 500, AdamW hf', async () => {
    const r = await cli(['train', '--config', 'configs/fewshot/micse-0.1pct.yaml', '--dry-run', '--json']);
    assert.equal(r.code, 0, r.stderr);
    const plan = JSON.parse(r.stdout) as TrainingPlan;
    assert.equal(path.basename(plan.trainingFile.path), 'wiki_subset_1M_000.10percent_seed48.txt');
    assert.equal(plan.selection.rule, 'hf-save-steps');
    assert.equal(plan.selection.saveSteps, 500);
    assert.match(plan.selection.when, /multiples of train\.saveSteps 500/);
    assert.equal(plan.optimizer.variant, 'hf');
    assert.equal(plan.data.blankLines, 'keep');
    assert.deepEqual(plan.objective.layers, [7, 10]);
    if (plan.trainingFile.exists) {
      assert.ok(plan.selection.steps!.every((s) => s % 500 === 0));
    } else {
      assert.equal(plan.trainingFile.sha256, null);
      assert.equal(plan.data.sentences, null);
      assert.equal(plan.trainingFile.download, 'npx micse data download fewshot-subsets');
    }
  });

  test('a present file: sha256, sentences, steps, evaluations and the hf-save-steps candidates', { skip: SKIP_NO_SHARED }, async () => {
    const { config } = await loadConfig(path.join(ROOT, 'configs', 'tiny.yaml'), ['train.selection=hf-save-steps', 'train.saveSteps=32']);
    const plan = await trainingPlan(config);
    assert.equal(plan.trainingFile.sha256, createHash('sha256').update(readFileSync(shared('wiki1m-head.txt'))).digest('hex'));
    assert.equal(plan.data.subset, 'project-draw');
    assert.equal(plan.data.sentences, 1024);
    assert.deepEqual(plan.steps.perEpoch, 32);
    assert.equal(plan.steps.total, 64);
    assert.deepEqual(plan.evaluation.steps, [16, 32, 48, 64]);
    assert.deepEqual(plan.selection.steps, [32, 64]);
    assert.equal(existsSync(plan.output), existsSync(path.join(ROOT, 'checkpoints', 'tiny')), 'the dry run wrote nothing');
  });
});

describe('a real run with a missing authors\' file', { skip: SKIP_NO_SHARED }, () => {
  test('one line naming the file and the download command, exit 2, no run directory', async () => {
    const output = path.join(dir, 'run');
    const r = await cli(['train', '--config', 'configs/fewshot/micse-0.1pct.yaml', '--set', `data.train=${dir}/fewshot/wiki_subset_1M_000.10percent_seed{subsetSeed}.txt`,
      '--set', 'data.subsetSeed=49', '--set', `train.output=${output}`, '--set', `data.senteval=${shared('senteval')}`, '--quiet']);
    assert.equal(r.code, 2, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.equal(lines[0], `micse: ${dir}/fewshot/wiki_subset_1M_000.10percent_seed49.txt: training file not found; ` +
      `download it with: npx micse data download fewshot-subsets --dir ${dir}`);
    assert.ok(!existsSync(output));
  });
});
