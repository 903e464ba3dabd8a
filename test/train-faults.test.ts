/**
 * Training faults (issue 22): kills at chosen moments of a checkpoint write (src/faultPoints.ts) and at random
 * moments, torn metrics lines, resumes that change the config, leftovers of dead runs, two runs in one directory.
 * Every run is a 2-layer random-init BERT (hidden 16) on the cpu backend, where resume is bitwise exact, evaluated
 * every 2 steps on the first 64 pairs of STS-B dev.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { UserError } from '../src/errors.js';
import { FAULT_ENV, FAULT_POINTS, type FaultPoint } from '../src/faultPoints.js';
import { selectBackend } from '../src/model/backend.js';
import { checkpointPath } from '../src/train/checkpoint.js';
import { defaultConfig, loadConfig, mergeConfig, type TrainConfig } from '../src/train/config.js';
import { LOCK_FILE } from '../src/train/runFiles.js';
import { train } from '../src/train/trainer.js';
import { deadPid, ROOT, shared, SKIP_NO_SHARED } from './helpers.js';

const CLI = path.join(ROOT, 'bin', 'micse.js');
const DEV_PAIRS = 64;
const quiet = { quiet: true, log: () => undefined };

let dir = '';
let senteval = '';

function config(output: string, maxSteps: number, overrides: Record<string, Record<string, unknown>> = {}): TrainConfig {
  const base = mergeConfig(defaultConfig(), {
    model: {
      init: 'random', tokenizer: shared('bert-base-uncased'),
      config: { hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32, max_position_embeddings: 64 },
    },
    data: { train: shared('wiki1m-head.txt'), count: 48, maxSeqLen: 16, senteval },
    objective: { minLayer: 0, maxLayer: 2, lambda: 0.01 },
    optim: { learningRate: 3e-3 },
    train: { batchSize: 8, maxSteps, evalSteps: 2, evalBatchSize: 512, backend: 'cpu', output, finalEval: false, seed: 7 },
  }, 'test');
  return mergeConfig(base, overrides, 'test');
}

async function configFile(c: TrainConfig): Promise<string> {
  const f = path.join(dir, `config-${path.basename(c.train.output)}.json`);
  await fs.writeFile(f, JSON.stringify(c));
  return f;
}

interface Child {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/**
 * Runs `micse train ARGS` with MICSE_FAULT_AT=`fault`; `killWhen` (given stderr so far) decides when the test
 * SIGKILLs the child itself, after `delayMs`.
 */
function cli(args: string[], fault: string | null, killWhen?: { line: RegExp; delayMs: number }): Promise<Child> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    if (fault !== null) env[FAULT_ENV] = fault;
    else delete env[FAULT_ENV];
    const child = spawn(process.execPath, [CLI, 'train', ...args], { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    let armed = killWhen !== undefined;
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (armed && killWhen!.line.test(stderr)) {
        armed = false;
        setTimeout(() => child.kill('SIGKILL'), killWhen!.delayMs);
      }
    });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stderr }));
  });
}

const WEIGHT_FILES = ['config.json', 'model.safetensors', 'mlp_head.safetensors', 'optimizer.safetensors'];

/** Metrics lines without the throughput (wall-clock). */
async function metrics(runDir: string): Promise<string[]> {
  return (await fs.readFile(path.join(runDir, 'metrics.jsonl'), 'utf8')).split('\n').map((l) => l.replace(/"sentencesPerSecond":[^,}]*/, ''));
}

/** Asserts that `runDir` ended as the uninterrupted `refDir`: links, bytes, metrics, summary; no temporaries or lock. */
async function assertSameRun(runDir: string, refDir: string): Promise<void> {
  for (const link of ['best', 'last']) {
    assert.equal(await fs.readlink(path.join(runDir, link)), await fs.readlink(path.join(refDir, link)), `${link} points at the same step`);
    for (const f of WEIGHT_FILES) {
      const a = await fs.readFile(path.join(refDir, link, f));
      const b = await fs.readFile(path.join(runDir, link, f));
      assert.ok(a.equals(b), `${link}/${f} differs from the uninterrupted run's`);
    }
  }
  const summary = JSON.parse(await fs.readFile(path.join(runDir, 'summary.json'), 'utf8')) as { bestStep: number; steps: number };
  assert.equal(await fs.readlink(path.join(runDir, 'best')), checkpointPath(summary.bestStep), 'best is the step summary.json names');
  const lines = await metrics(runDir);
  assert.deepEqual(lines, await metrics(refDir), 'metrics.jsonl equals the uninterrupted run\'s');
  const steps = lines.filter((l) => l.includes('"loss"')).map((l) => (JSON.parse(l.replace(',}', '}')) as { step: number }).step);
  assert.deepEqual(steps, Array.from({ length: summary.steps }, (_, i) => i + 1), 'each step exactly once');
  const left: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await fs.readdir(d, { withFileTypes: true })) {
      if (/\.tmp-|\.old-/.test(e.name) || e.name === LOCK_FILE) left.push(path.join(d, e.name));
      if (e.isDirectory()) await walk(path.join(d, e.name));
    }
  };
  await walk(runDir);
  assert.deepEqual(left, [], 'no temporary or lock file left');
  const kept = (await fs.readdir(path.join(runDir, 'checkpoints'))).sort();
  const linked = [...new Set([await fs.readlink(path.join(runDir, 'best')), await fs.readlink(path.join(runDir, 'last'))])].map((p) => path.basename(p)).sort();
  assert.deepEqual(kept, linked, 'only the linked checkpoints are kept');
}

/** Steps whose evaluation was a new best, from metrics.jsonl. */
async function bestSteps(runDir: string): Promise<number[]> {
  return (await fs.readFile(path.join(runDir, 'metrics.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { step: number; best?: boolean })
    .filter((m) => m.best === true).map((m) => m.step);
}

describe('training faults', { skip: SKIP_NO_SHARED }, () => {
  before(async () => {
    await selectBackend('cpu');
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'micse-faults-'));
    senteval = path.join(dir, 'senteval');
    const stsb = path.join(senteval, 'STS', 'STSBenchmark');
    await fs.mkdir(stsb, { recursive: true });
    const dev = (await fs.readFile(shared('senteval', 'STS', 'STSBenchmark', 'sts-dev.csv'), 'utf8')).split('\n').slice(0, DEV_PAIRS);
    await fs.writeFile(path.join(stsb, 'sts-dev.csv'), dev.join('\n') + '\n');
  });

  after(async () => {
    if (dir !== '') await fs.rm(dir, { recursive: true, force: true });
  });

  it('a kill between the last and best link renames: resume points best at the step the state names, before pruning', async () => {
    const ref = path.join(dir, 'links-ref');
    const cfg = (output: string) => config(output, 16, { optim: { learningRate: 1e-2 } });
    await train(cfg(ref), quiet);
    const bests = await bestSteps(ref);
    // Killed while publishing the run's last new best, which later checkpoints do not beat: only a repair on resume
    // can point `best` at it.
    assert.ok(bests.length >= 2 && bests.at(-1)! < 16, `the run's last best comes before its end (bests ${bests.join(', ')})`);
    const run = path.join(dir, 'links');
    const killed = await cli(['--config', await configFile(cfg(run)), '--quiet'], `checkpoint:between-links:${bests.length}`);
    assert.equal(killed.signal, 'SIGKILL', killed.stderr);
    assert.equal(await fs.readlink(path.join(run, 'last')), checkpointPath(bests.at(-1)!), 'last moved to the new best');
    assert.equal(await fs.readlink(path.join(run, 'best')), checkpointPath(bests.at(-2)!), 'best not yet');
    const resumed = await cli(['--resume', run, '--quiet'], null);
    assert.equal(resumed.code, 0, resumed.stderr);
    await assertSameRun(run, ref);
  });

  it('a torn last metrics line and lines of steps a resume redoes: metrics.jsonl ends with each step once', async () => {
    const ref = path.join(dir, 'metrics-ref');
    await train(config(ref, 8), quiet);
    const run = path.join(dir, 'metrics');
    await train(config(run, 8), { ...quiet, stopAfter: 4 });
    // As a run killed at step 5 after its last checkpoint (step 4) would leave it: step 5's line, half of step 6's.
    const file = path.join(run, 'metrics.jsonl');
    await fs.appendFile(file, '{"step":5,"epoch":0,"loss":1}\n{"step":6,"epoch":0,"lo');
    await train(config(run, 8), { ...quiet, resume: true });
    assert.deepEqual(await metrics(run), await metrics(ref));
    // A complete line that is not JSON is bad input, named by file and line.
    await train(config(path.join(dir, 'metrics-bad'), 8), { ...quiet, stopAfter: 2 });
    await fs.appendFile(path.join(dir, 'metrics-bad', 'metrics.jsonl'), 'not json\n');
    await assert.rejects(train(config(path.join(dir, 'metrics-bad'), 8), { ...quiet, resume: true }),
      (e: unknown) => e instanceof UserError && /metrics\.jsonl:5: not a JSON line/.test(e.message));
  });

  it('--resume with another learning rate saves it in config.yaml and says so; shape, data and seed changes are refused', async () => {
    const run = path.join(dir, 'reconfig');
    await train(config(run, 4), { ...quiet, stopAfter: 2 });
    const saved = await fs.readFile(path.join(run, 'config.yaml'), 'utf8');
    for (const [key, value] of [['model.config', { hidden_size: 32 }], ['data.count', 40], ['train.seed', 8], ['train.batchSize', 4]] as const) {
      const [sec, k] = key.split('.') as [string, string];
      await assert.rejects(train(config(run, 4, { [sec]: { [k]: value } }), { ...quiet, resume: true }),
        (e: unknown) => e instanceof UserError && e.message.includes(`cannot change ${key} (`) && !e.message.includes('\n'), key);
    }
    assert.equal(await fs.readFile(path.join(run, 'config.yaml'), 'utf8'), saved, 'a refused resume leaves config.yaml as it was');
    const logged: string[] = [];
    await train(config(run, 4, { optim: { learningRate: 1e-3 } }), { quiet: true, resume: true, log: (l) => logged.push(l) });
    assert.ok(logged.some((l) => /^resume changes optim\.learningRate 0\.003 -> 0\.001 \(saved in .*config\.yaml\)$/.test(l)), logged.join('\n'));
    const { config: now } = await loadConfig(path.join(run, 'config.yaml'));
    assert.equal(now.optim.learningRate, 1e-3);
  });

  it('a fresh run where one died before its first checkpoint starts clean; a run with checkpoints is refused naming --resume', async () => {
    const ref = path.join(dir, 'fresh-ref');
    await train(config(ref, 4), quiet);
    const run = path.join(dir, 'fresh');
    await fs.mkdir(path.join(run, 'checkpoints', `step-000002.tmp-${await deadPid()}`), { recursive: true });
    // What a run writes when it starts, before any metrics or checkpoint.
    for (const f of ['config.yaml', 'subset-manifest.json']) await fs.copyFile(path.join(ref, f), path.join(run, f));
    await fs.writeFile(path.join(run, 'metrics.jsonl'), '{"step":1,"epoch":0,"loss":9}\n{"step":2,"epoch":0,"loss":9}\n');
    await fs.writeFile(path.join(run, `metrics.jsonl.tmp-${await deadPid()}-1`), 'x');
    await train(config(run, 4), quiet);
    assert.deepEqual(await metrics(run), await metrics(ref));
    assert.deepEqual((await fs.readdir(path.join(run, 'checkpoints'))).sort(), (await fs.readdir(path.join(ref, 'checkpoints'))).sort());
    assert.ok(!(await fs.readdir(run)).some((e) => e.includes('.tmp-')));
    await assert.rejects(train(config(run, 4), quiet), (e: unknown) => e instanceof UserError && new RegExp(`--resume ${run}`).test(e.message));
    // A directory with files of a run's names that is no run (other runs' checkpoints/ under '.', a user's
    // config.yaml) is refused and left as it was; other files do not matter.
    const other = path.join(dir, 'not-a-run');
    await fs.mkdir(path.join(other, 'checkpoints', 'someone-elses'), { recursive: true });
    await fs.writeFile(path.join(other, 'config.yaml'), 'mine\n');
    await assert.rejects(train(config(other, 4), quiet), (e: unknown) => e instanceof UserError &&
      e.message === `${other}: holds config.yaml, checkpoints but no run of micse train (no config.yaml with subset-manifest.json), ` +
        'which a run would replace; set train.output to a new or empty directory. Nothing was written');
    assert.deepEqual((await fs.readdir(other)).sort(), ['checkpoints', 'config.yaml']);
    assert.deepEqual(await fs.readdir(path.join(other, 'checkpoints')), ['someone-elses']);
    assert.equal(await fs.readFile(path.join(other, 'config.yaml'), 'utf8'), 'mine\n');
  });

  it('a second training in the same directory is refused naming it and the pid; a dead process\'s lock is taken over', async () => {
    const run = path.join(dir, 'locked');
    await fs.mkdir(run, { recursive: true });
    const lock = path.join(run, LOCK_FILE);
    // A running process (the test runner's parent) holds it.
    await fs.writeFile(lock, `${process.ppid}\n`);
    await assert.rejects(train(config(run, 2), quiet), (e: unknown) => e instanceof UserError &&
      e.message.startsWith(`${run}: in use by another training (pid ${process.ppid}`));
    await assert.rejects(train(config(run, 2), { ...quiet, resume: true }), /in use by another training/);
    assert.ok(!(await fs.readdir(run)).some((e) => e !== LOCK_FILE), 'nothing written');
    // Two trainings at once in this process: the second is refused while the first holds the lock.
    await fs.writeFile(lock, `${await deadPid()}\n`);
    const outcomes = (await Promise.all([train(config(run, 2), quiet), train(config(run, 2), quiet)]
      .map((p) => p.then(() => 'ran', (e: Error) => e.message)))).sort();
    assert.equal(outcomes[1], 'ran', 'one of them ran');
    assert.match(outcomes[0]!, new RegExp(`in use by another training \\(pid ${process.pid}|already holds a run`));
    assert.equal(await fs.access(lock).then(() => true, () => false), false, 'the lock is released at the end');
    // Through the CLI: exit 2, one line.
    await fs.writeFile(lock, `${process.ppid}\n`);
    const r = await cli(['--resume', run, '--quiet'], null);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`micse: ${run}: in use by another training \\(pid ${process.ppid}`));
    await fs.rm(lock);
  });

  it('20 kills (at every fault point of a checkpoint write and at random moments) and resumes end as the uninterrupted run', async (t) => {
    const STEPS = 48;
    const ref = path.join(dir, 'kills-ref');
    await train(config(ref, STEPS), quiet);
    const bests = await bestSteps(ref);
    assert.ok(bests.length >= 3, `the run has 3 bests or more (${bests.join(', ')})`);
    const run = path.join(dir, 'kills');
    const cfg = await configFile(config(run, STEPS));
    // A seeded schedule (MICSE_FAULT_SEED to replay another): a kill at step 1 (nothing published: the next run
    // starts fresh), kills between the link renames of the second and third bests, every other point once, at
    // random hits, and 8 kills at a random moment after the child starts training.
    let s = Number(process.env['MICSE_FAULT_SEED'] ?? 22) >>> 0;
    const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
    const trainPoints = FAULT_POINTS.filter((p) => !p.startsWith('export:') && !p.startsWith('index:') && !p.startsWith('lock:') && p !== 'checkpoint:between-links');
    const rest: ({ point: FaultPoint; hit: number } | { delayMs: number })[] = [
      ...trainPoints.map((point) => ({ point, hit: point === 'metrics:torn-line' ? 1 + Math.floor(rand() * 3) : 1 + Math.floor(rand() * 2) })),
      ...Array.from({ length: 8 }, () => ({ delayMs: Math.floor(rand() * 400) })),
    ];
    for (let i = rest.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [rest[i], rest[j]] = [rest[j]!, rest[i]!];
    }
    const schedule = [{ point: 'metrics:torn-line' as const, hit: 1 }, { point: 'checkpoint:between-links' as const, hit: 2 },
      { point: 'checkpoint:between-links' as const, hit: 1 }, ...rest];
    assert.equal(schedule.length, 20);
    const log: string[] = [];
    for (const k of schedule) {
      const args = (await fs.lstat(path.join(run, 'last')).then(() => true, () => false)) ? ['--resume', run] : ['--config', cfg];
      const r = 'point' in k
        ? await cli([...args, '--quiet'], `${k.point}:${k.hit}`)
        : await cli(args, null, { line: /training on/, delayMs: k.delayMs });
      const at = await fs.readlink(path.join(run, 'last')).catch(() => '-');
      log.push(`${'point' in k ? `${k.point}:${k.hit}` : `after ${k.delayMs} ms`} (${args[0]}): ${r.signal ?? r.code}, last ${at}`);
      assert.equal(r.signal, 'SIGKILL', `kill ${log.length} did not happen:\n${log.join('\n')}\n${r.stderr}`);
    }
    const done = await cli(['--resume', run, '--quiet'], null);
    assert.equal(done.code, 0, done.stderr);
    t.diagnostic(`kills (seed ${process.env['MICSE_FAULT_SEED'] ?? 22}): ${log.join('; ')}`);
    await assertSameRun(run, ref);
  });
});
