/**
 * Sweep acceptance (issue 8): grid expansion; the tiny sweep end to end through the CLI, a rerun that does nothing
 * and a report equal to a recomputation from each run's eval.json; a failed point recorded while the sweep goes on;
 * two queue workers on a real redis-server sharing the tiny sweep with one SIGKILLed mid-point (every point done
 * exactly once); a Redis URL that does not answer (clear error in seconds, nothing written).
 */
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { trainingFile } from '../src/train/plan.js';
import { loadSweep } from '../src/sweep/grid.js';
import { ATTEMPTS_FILE, DONE_FILE, ERROR_FILE, readAttempts } from '../src/sweep/point.js';
import { meanStd } from '../src/sweep/report.js';
import { ROOT, shared, SKIP_NO_SHARED } from './helpers.js';

const run = promisify(execFile);
const CLI = path.join(ROOT, 'bin', 'micse.js');
const TINY = path.join(ROOT, 'configs', 'sweeps', 'tiny.yaml');
const TASKS = [['STS12', 'STS12'], ['STS13', 'STS13'], ['STS14', 'STS14'], ['STS15', 'STS15'], ['STS16', 'STS16'], ['STSBenchmark', 'STS-B'], ['SICKRelatedness', 'SICK-R']] as const;

async function tmp(prefix: string): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), `micse-sweep-${prefix}-`));
}

async function cli(args: string[], timeout = 300_000): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const t0 = Date.now();
  return run(process.execPath, [CLI, ...args], { cwd: ROOT, maxBuffer: 1 << 24, timeout }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr, ms: Date.now() - t0 }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr, ms: Date.now() - t0 }),
  );
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    }).on('error', reject);
  });
}

async function waitFor<T>(what: string, ms: number, probe: () => Promise<T | undefined>): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Parses the report CSV (no quoted cells in this sweep). */
function parseCsv(text: string): Record<string, string>[] {
  const [head, ...rows] = text.trim().split('\n');
  const cols = head!.split(',');
  return rows.map((r) => Object.fromEntries(r.split(',').map((v, i) => [cols[i]!, v])));
}

/** Checks every point of `out` is done exactly once: one done marker and one `done` attempt whose eval.json is the file on disk. */
async function assertDoneOnce(out: string, names: string[]): Promise<void> {
  for (const name of names) {
    const dir = path.join(out, name);
    assert.ok(existsSync(path.join(dir, DONE_FILE)), `${name}: done marker`);
    assert.ok(!existsSync(path.join(dir, ERROR_FILE)), `${name}: no error file`);
    const attempts = await readAttempts(dir);
    const done = attempts.filter((a) => a.event === 'done');
    assert.equal(done.length, 1, `${name}: exactly one completed attempt, got ${JSON.stringify(attempts)}`);
    const st = await fs.stat(path.join(dir, 'eval.json'));
    assert.equal(st.mtimeMs, done[0]!.evalMtimeMs, `${name}: eval.json is the one the completed attempt wrote`);
  }
}

describe('sweep grid', () => {
  it('expands the tiny and paper sweeps; names from grid values; bad grids name the key', async () => {
    const tiny = await loadSweep(TINY);
    assert.equal(tiny.points.length, 8);
    assert.deepEqual(tiny.points.map((p) => p.name).slice(0, 3),
      ['count=32__seed=48__style=micse', 'count=32__seed=48__style=simcse', 'count=32__seed=49__style=micse']);
    const p = tiny.points.find((x) => x.name === 'count=64__seed=49__style=simcse')!;
    assert.equal(p.config.data.count, 64);
    assert.equal(p.config.data.subsetSeed, 49);
    assert.equal(p.config.objective.style, 'simcse');
    assert.equal(p.config.model.config!['hidden_size'], 16);
    assert.equal(p.config.train.finalEval, true);

    const paper = await loadSweep(path.join(ROOT, 'configs', 'sweeps', 'paper-lowshot.yaml'));
    assert.equal(paper.points.length, 7 * 2 * 5);
    const q = paper.points.find((x) => x.name === 'split=micse-0.1pct__style=simcse__seed=50')!;
    assert.ok(q !== undefined, paper.points.map((x) => x.name).join(' '));
    assert.equal(trainingFile(q.config), 'data/fewshot/wiki_subset_1M_000.10percent_seed50.txt');
    assert.equal(q.config.train.epochs, 500);
    assert.equal(q.config.optim.learningRate, 1e-5);
    assert.equal(q.config.model.init, 'bert-base-uncased');

    const dir = await tmp('grid');
    const bad = async (text: string, re: RegExp) => {
      const f = path.join(dir, `s${Math.random().toString(36).slice(2)}.yaml`);
      await fs.writeFile(f, text);
      await assert.rejects(loadSweep(f), re);
    };
    await bad('base: {}\ngrid:\n  data.subsetSed: [1]\n', /grid key 'data\.subsetSed' is not a training config key/);
    await bad('grid:\n  objective.style: [micse, mice]\n', /grid\.objective\.style="mice".*did you mean 'micse'/);
    await bad('grid:\n  train.seed: []\n', /grid\.train\.seed must be a non-empty list/);
    await bad('base: nope.yaml\n', /cannot read .*nope\.yaml/);
    await bad('grid:\n  train.finalEval: [false]\n', /train\.finalEval is false/);
  });
});

describe('local sweep', { skip: SKIP_NO_SHARED }, () => {
  it('runs the tiny sweep end to end; a rerun does nothing; the report equals a recomputation from eval.json', async () => {
    const out = path.join(await tmp('local'), 'tiny');
    const first = await cli(['sweep', '--config', TINY, '--parallel', '2', '--out', out, '--quiet']);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /8 points in .*: 8 run now, 0 already done, 0 failed/);
    const names = (await loadSweep(TINY)).points.map((p) => p.name);
    await assertDoneOnce(out, names);

    const before = await Promise.all(names.map((n) => fs.readFile(path.join(out, n, ATTEMPTS_FILE), 'utf8')));
    const again = await cli(['sweep', '--config', TINY, '--parallel', '2', '--out', out]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /0 run now, 8 already done, 0 failed/);
    const afterRerun = await Promise.all(names.map((n) => fs.readFile(path.join(out, n, ATTEMPTS_FILE), 'utf8')));
    assert.deepEqual(afterRerun, before, 'a rerun starts no attempt');

    const rep = await cli(['sweep', 'report', out]);
    assert.equal(rep.code, 0, rep.stderr);
    assert.match(rep.stdout, /\| +sentences \| +split \| objective \|/);
    const svg = await fs.readFile(path.join(out, 'sts-avg.svg'), 'utf8');
    assert.match(svg, /^<svg/);
    assert.match(svg, /training sentences \(log scale\)/);
    const rows = parseCsv(await fs.readFile(path.join(out, 'report.csv'), 'utf8'));
    assert.equal(rows.length, 4, 'one row per (split, style)');
    for (const row of rows) {
      const group = names.filter((n) => n.startsWith(`count=${row['count']}__`) && n.endsWith(`__style=${row['style']}`));
      assert.equal(group.length, 2);
      assert.equal(Number(row['n']), 2);
      const evals = await Promise.all(group.map(async (n) => JSON.parse(await fs.readFile(path.join(out, n, 'eval.json'), 'utf8')) as {
        results: Record<string, { spearman: number }>; average: number;
      }));
      for (const [key, label] of TASKS) {
        const xs = evals.map((e) => e.results[key]!.spearman);
        const mean = (xs[0]! + xs[1]!) / 2;
        const std = Math.abs(xs[0]! - xs[1]!) / Math.SQRT2;
        assert.ok(Math.abs(Number(row[`${label}_mean`]) - mean) < 1e-9, `${label} mean`);
        assert.ok(Math.abs(Number(row[`${label}_std`]) - std) < 1e-9, `${label} std`);
      }
      const avgs = evals.map((e) => e.average);
      assert.ok(Math.abs(Number(row['avg_mean']) - (avgs[0]! + avgs[1]!) / 2) < 1e-9);
      assert.ok(Math.abs(Number(row['avg_std']) - meanStd(avgs).std!) < 1e-9);
      const sentences = JSON.parse(await fs.readFile(path.join(out, group[0]!, 'subset-manifest.json'), 'utf8')).selection.size as number;
      assert.equal(Number(row['sentences']), sentences);
    }
  });

  it('records a failed point and goes on with the others', async () => {
    const dir = await tmp('fail');
    const file = path.join(dir, 'sweep.yaml');
    await fs.writeFile(file, [
      'base:',
      `  extends: ${JSON.stringify(TINY.replace('sweeps/tiny.yaml', 'tiny.yaml'))}`,
      '  model: {config: {hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32, max_position_embeddings: 64}}',
      '  data: {count: 32}',
      '  objective: {minLayer: 0, maxLayer: 2}',
      '  train: {batchSize: 16, evalBatchSize: 512, backend: wasm}',
      'grid:',
      `  data.train: [${JSON.stringify(path.join(dir, 'missing.txt'))}, ${JSON.stringify(shared('wiki1m-head.txt'))}]`,
      '',
    ].join('\n'));
    const out = path.join(dir, 'out');
    const r = await cli(['sweep', '--config', file, '--out', out, '--quiet']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /1 point\(s\) failed/);
    assert.match(r.stdout, /2 points in .*: 1 run now, 0 already done, 1 failed/);
    const sweep = await loadSweep(file);
    const [bad, good] = sweep.points.map((p) => path.join(out, p.name));
    const err = JSON.parse(await fs.readFile(path.join(bad!, ERROR_FILE), 'utf8')) as { message: string };
    assert.match(err.message, /missing\.txt/);
    assert.ok(!existsSync(path.join(bad!, DONE_FILE)));
    assert.ok(existsSync(path.join(good!, DONE_FILE)));
    const st = await cli(['sweep', 'status', '--out', out]);
    assert.match(st.stdout, /1 done, 1 failed/);
  });
});

const REDIS_BIN = (() => {
  const r = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
})();
const IN_CI = process.env['CI'] === 'true';
const SKIP_NO_REDIS: string | false = REDIS_BIN !== null || IN_CI ? false
  : 'redis-server is not installed (apt-get install -y redis-server): the queue tests are skipped outside CI';

describe('distributed sweep (BullMQ on redis-server)', () => {
  const started: ChildProcess[] = [];
  after(() => {
    for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });

  it('a Redis URL that does not answer: a clear error within seconds, nothing written', async () => {
    const port = await freePort();
    const out = path.join(await tmp('noredis'), 'out');
    const r = await cli(['sweep', '--config', TINY, '--out', out, '--queue', `redis://127.0.0.1:${port}`]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`redis://127\\.0\\.0\\.1:${port}: Redis does not answer \\(ECONNREFUSED\\)`));
    assert.ok(r.ms < 10_000, `took ${r.ms} ms`);
    assert.ok(!existsSync(out), 'nothing written');
    const w = await cli(['worker', '--queue', `redis://127.0.0.1:${port}`]);
    assert.equal(w.code, 2, w.stderr);
    assert.match(w.stderr, /Redis does not answer/);
    const s = await cli(['sweep', 'status', '--queue', `redis://127.0.0.1:${port}`]);
    assert.equal(s.code, 2);
  });

  it('two workers share the tiny sweep; one is SIGKILLed mid-point; every point is done exactly once', { skip: SKIP_NO_REDIS || SKIP_NO_SHARED }, async () => {
    assert.ok(REDIS_BIN !== null, 'CI=true but redis-server is not installed (.ci/run installs it)');
    const port = await freePort();
    const redis = spawn(REDIS_BIN, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    started.push(redis);
    const url = `redis://127.0.0.1:${port}`;
    await waitFor('redis-server', 10_000, async () => (await cli(['sweep', 'status', '--queue', url])).code === 0 ? true : undefined);

    const out = path.join(await tmp('queue'), 'tiny');
    const enq = await cli(['sweep', '--config', TINY, '--out', out, '--queue', url]);
    assert.equal(enq.code, 0, enq.stderr);
    assert.match(enq.stdout, /8 enqueued/);
    const again = await cli(['sweep', '--config', TINY, '--out', out, '--queue', url]);
    assert.match(again.stdout, /0 enqueued, 0 failed ones retried, 8 already queued or running/);

    const worker = (name: string) => {
      const c = spawn(process.execPath, [CLI, 'worker', '--queue', url, '--name', name, '--exit-when-idle',
        '--lock-duration', '2000', '--stalled-interval', '1000'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
      let log = '';
      c.stdout!.on('data', (d: Buffer) => (log += d.toString()));
      c.stderr!.on('data', (d: Buffer) => (log += d.toString()));
      started.push(c);
      return { c, log: () => log, exited: new Promise<number | null>((r) => c.once('exit', (code) => r(code))) };
    };
    const a = worker('A');
    const b = worker('B');
    const names = (await loadSweep(TINY)).points.map((p) => p.name);
    // Kill A as soon as one of its points has started training (a point takes several seconds).
    const victim = await waitFor('worker A to start a point', 60_000, async () => {
      for (const n of names) {
        const at = (await readAttempts(path.join(out, n))).find((x) => x.worker === 'A' && x.event === 'start');
        if (at !== undefined && !existsSync(path.join(out, n, DONE_FILE))) return { name: n, childPid: at.pid };
      }
      return undefined;
    });
    a.c.kill('SIGKILL');
    await a.exited;
    // A's child dies with it (IPC disconnect), leaving no orphan training.
    await waitFor('the killed worker\'s child to exit', 15_000, async () => {
      try {
        process.kill(victim.childPid, 0);
        return undefined;
      } catch {
        return true;
      }
    });
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([b.exited, new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), 200_000)))]);
    clearTimeout(timer);
    assert.equal(code, 0, `worker B: ${b.log()}`);
    await assertDoneOnce(out, names);
    const victimAttempts = await readAttempts(path.join(out, victim.name));
    assert.ok(victimAttempts.filter((x) => x.event === 'start').length >= 2, JSON.stringify(victimAttempts));
    assert.equal(victimAttempts.find((x) => x.event === 'done')!.worker, 'B');
    const st = await cli(['sweep', 'status', '--queue', url, '--out', out]);
    assert.equal(st.code, 0, st.stderr);
    assert.match(st.stdout, /queue: 8 completed, 0 running, 0 failed, 0 queued/);
    assert.match(st.stdout, /8 done, 0 failed/);
    redis.kill('SIGTERM');
  });
});
