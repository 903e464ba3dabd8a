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
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { STS_TASK_INFO, STS_TEST_TASKS } from '../eval/sts.js';
import { UserError } from '../src/errors.js';
import { trainingFile } from '../src/train/plan.js';
import { loadSweep } from '../src/sweep/grid.js';
import { checkSweepInputs } from '../src/sweep/inputs.js';
import { runSweep } from '../src/sweep/local.js';
import { enqueueSweep, queueStatus } from '../src/sweep/queue.js';
import { ATTEMPTS_FILE, checkOutDir, DONE_FILE, ERROR_FILE, LOG_FILE, pointDir, readAttempts, readPoint, spawnPoint, writeSweepFiles } from '../src/sweep/point.js';
import { checkRedis, DEFAULT_CONNECT_TIMEOUT_MS } from '../src/sweep/redis.js';
import { curvePoints, meanStd, REPORT_CSV, REPORT_MD, sweepCurveSpec, writeSweepReport } from '../src/sweep/report.js';
import { micseHere } from './cliHere.js';
import { HAS_SHARED, ROOT, shared, SKIP_NO_SHARED, testTempDir } from './helpers.js';

const run = promisify(execFile);
const CLI = path.join(ROOT, 'bin', 'micse.js');
const TINY = path.join(ROOT, 'configs', 'sweeps', 'tiny.yaml');
const TASKS = [['STS12', 'STS12'], ['STS13', 'STS13'], ['STS14', 'STS14'], ['STS15', 'STS15'], ['STS16', 'STS16'], ['STSBenchmark', 'STS-B'], ['SICKRelatedness', 'SICK-R']] as const;

const TMP = testTempDir('sweep');

async function tmp(prefix: string): Promise<string> {
  return fs.mkdtemp(path.join(TMP, `${prefix}-`));
}

async function cli(args: string[], timeout = 300_000, opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number; stdout: string; stderr: string; ms: number }> {
  const t0 = Date.now();
  return run(process.execPath, [CLI, ...args], { cwd: opts.cwd ?? ROOT, env: { ...process.env, ...opts.env }, maxBuffer: 1 << 24, timeout }).then(
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

/**
 * A sweep file in `dir` over the tiny sweep's micro model (configs/sweeps/tiny.yaml's base, 32 sentences) with the
 * grid lines `grid` (e.g. `data.subsetSeed: [48, 49]`): fewer points than the tiny sweep's 8, for the tests that
 * need a sweep but not its whole grid.
 */
async function smallSweep(dir: string, grid: string[]): Promise<string> {
  const file = path.join(dir, 'sweep.yaml');
  await fs.writeFile(file, [
    'base:',
    `  extends: ${JSON.stringify(TINY.replace('sweeps/tiny.yaml', 'tiny.yaml'))}`,
    '  model: {config: {hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 32, max_position_embeddings: 64}}',
    '  data: {count: 32}',
    '  objective: {minLayer: 0, maxLayer: 2}',
    '  train: {batchSize: 16, evalBatchSize: 512, backend: wasm}',
    'grid:',
    ...grid.map((line) => `  ${line}`),
    '',
  ].join('\n'));
  return file;
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
    await bad('grid:\n  train.output: [a, b]\n', /grid\.train\.output: each point trains into its own directory/);
    await bad('base: nope.yaml\n', /nope\.yaml: cannot read config \(ENOENT\), named by .*\.yaml:1: base$/);
    await bad('base: {extends: gone.yaml}\n', /gone\.yaml: cannot read config \(ENOENT\), named by .*\.yaml:1: extends$/);
    await bad('grid:\n  train.finalEval: [false]\n', /train\.finalEval is false/);
  });
});

describe('spawnPoint: one point in a child process whose entry is the library module pointProcess', () => {
  it('a done point is skipped; a point that cannot start exits 2 with its one line in train.log, recorded in error.json', async () => {
    const done = await tmp('spawn-done');
    await fs.writeFile(path.join(done, DONE_FILE), '{}\n');
    assert.equal(await spawnPoint(done).done, 'skipped', 'the outcome the child sends back');
    assert.deepEqual(await readAttempts(done), [], 'a skipped point starts no attempt');

    // No point.json: runPoint fails before the attempt starts, so the parent records the exit (2: bad input).
    const broken = await tmp('spawn-broken');
    await assert.rejects(spawnPoint(broken).done, (e: Error) => e.message === `${path.basename(broken)}: exit code 2`);
    assert.equal((JSON.parse(await fs.readFile(path.join(broken, ERROR_FILE), 'utf8')) as { message: string }).message,
      `the point's process ended (exit code 2); see ${path.join(broken, LOG_FILE)}`);
    assert.equal(await fs.readFile(path.join(broken, LOG_FILE), 'utf8'), `${path.join(broken, 'point.json')}: cannot read the point (ENOENT)\n`);
  });
});

describe('readPoint: a point.json read back is validated as a config file is', () => {
  it('a corrupted point.json: each error names the file and the line of the key, or the top-level key', async () => {
    const dir = await tmp('point-json');
    const sweep = await loadSweep(TINY);
    await writeSweepFiles(dir, sweep);
    const pdir = pointDir(dir, sweep.points[0]!);
    const file = path.join(pdir, 'point.json');
    const text = await fs.readFile(file, 'utf8');
    assert.equal((await readPoint(pdir)).name, sweep.points[0]!.name, 'the file as written reads back');
    /** The 1-based line of point.json that holds `needle`. */
    const line = (needle: string) => text.split('\n').findIndex((l) => l.includes(needle)) + 1;
    const cases: [string, string][] = [
      [text.replace('"batchSize": 16', '"batchSize": 1'), `${file}:${line('"batchSize"')}: train.batchSize must be >= 2, got 1`],
      [text.replace('"batchSize"', '"batchSze"'), `${file}:${line('"batchSize"')}: unknown key 'train.batchSze' (did you mean 'train.batchSize'?)`],
      [text.replace('"maxLayer": 2', '"maxLayer": 4'), `${file}:${line('"minLayer"')} (objective.minLayer: 0) and ${file}:${line('"maxLayer"')} ` +
        `(objective.maxLayer: 4) and ${file}:${line('"num_hidden_layers"')} (model.config.num_hidden_layers: 2): the AMI layer span`],
      [text.replace('"config": {', '"config": 3, "other": {'), `${file}:${line('"config": {')}: config must be a mapping of sections (the training config)`],
      [text.replace(/"name": "[^"]*"/, '"name": 7'), `${file}:${line('"name"')}: name must be the point's name`],
      ['[]', `${file}: not a sweep point (the top level must be a mapping of name, params and config)`],
      [text.slice(0, 20), `${file}: not valid JSON (`],
    ];
    for (const [corrupted, message] of cases) {
      await fs.writeFile(file, corrupted);
      await assert.rejects(readPoint(pdir), (e: unknown) => e instanceof UserError && e.message.startsWith(message) && !e.message.includes('\n'),
        message);
    }
    // The sweep's check of its output folder reads every point.json there: a damaged one stops it before anything
    // runs (its file and line named), a missing one is a point not yet set up.
    await fs.writeFile(file, cases[0]![0]);
    await assert.rejects(checkOutDir(dir, sweep), (e: unknown) => e instanceof UserError && e.message.startsWith(cases[0]![1]), 'checkOutDir');
    await fs.rm(file);
    await checkOutDir(dir, sweep);
  });
});

describe('sweep report', () => {
  it('SimCSE rows have no lambda in CSV and table alike; the plot tells the objectives apart by dash, marker and a dodge', async () => {
    // The tiny sweep's 8 points, marked done with made-up scores in which miCSE and SimCSE score the same, so their
    // curves coincide (the case where one hid the other).
    const dir = await tmp('report');
    try {
      const sweep = await loadSweep(TINY);
      await writeSweepFiles(dir, sweep);
      for (const p of sweep.points) {
        const pdir = pointDir(dir, p);
        const score = p.config.data.count! / 2 + p.config.data.subsetSeed;
        const results = Object.fromEntries(STS_TEST_TASKS.map((t) => [STS_TASK_INFO[t].senteval, { spearman: score }]));
        await fs.writeFile(path.join(pdir, 'eval.json'), JSON.stringify({ results, average: score }));
        await fs.writeFile(path.join(pdir, 'subset-manifest.json'), JSON.stringify({ selection: { size: p.config.data.count } }));
        await fs.writeFile(path.join(pdir, DONE_FILE), '{}');
      }
      const { report } = await writeSweepReport(dir);
      const csv = parseCsv(await fs.readFile(path.join(dir, REPORT_CSV), 'utf8'));
      assert.equal(csv.length, 4);
      for (const row of csv) assert.equal(row['lambda'], row['style'] === 'simcse' ? '' : '0.01', JSON.stringify(row));
      const md = (await fs.readFile(path.join(dir, REPORT_MD), 'utf8')).split('\n').filter((l) => /\| +(miCSE|SimCSE) \|/.test(l));
      assert.equal(md.length, 4);
      for (const l of md) assert.match(l, /SimCSE/.test(l) ? /\| +SimCSE \| +- \|/ : /\| +miCSE \| +0\.01 \|/);

      const pts = curvePoints(report.rows);
      assert.deepEqual(pts.map((p) => p.objective).sort(), ['SimCSE', 'SimCSE', 'miCSE', 'miCSE']);
      for (const n of [32, 64]) {
        const [a, b] = pts.filter((p) => p.sentences === n);
        assert.equal(a!.mean, b!.mean, 'the two objectives coincide in this data');
        assert.ok(a!.x !== b!.x && Math.abs(Math.log10(a!.x / b!.x)) < 0.05, `dodged a little apart: ${a!.x} vs ${b!.x}`);
      }
      const spec = JSON.stringify(sweepCurveSpec('t', pts));
      assert.match(spec, /"strokeDash":\{"field":"objective"/);
      assert.match(spec, /"shape":\{"field":"objective"/);
      const svg = await fs.readFile(path.join(dir, 'sts-avg.svg'), 'utf8');
      assert.match(svg, /stroke-dasharray/, 'one of the lines is dashed');
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});

describe('a damaged sweep output directory: exit 2 naming the file and what is wrong', () => {
  it('sweep report and sweep status on a cut or wrongly shaped sweep.json, and report on a done point with a bad eval.json', async () => {
    const dir = await tmp('damaged');
    const manifest = path.join(dir, 'sweep.json');
    for (const [text, why] of [['{"sweep":', /invalid JSON \(.*\)/], ['{"points": 5}', /not a sweep manifest \(sweep is not the path of a sweep file\)/],
      ['{"sweep": "s.yaml", "keys": [], "points": 5}', /not a sweep manifest \(points is not a list of \{name, params\}\)/]] as const) {
      await fs.writeFile(manifest, text);
      for (const args of [['sweep', 'report', dir], ['sweep', 'status', '--out', dir]]) {
        const r = await micseHere(args);
        assert.equal(r.exitCode, 2, `${args.join(' ')} on ${text}: ${r.message}`);
        assert.match(r.message, new RegExp(`^micse: ${manifest}: ${why.source}$`), `${args.join(' ')} on ${text}`);
      }
    }
    // One done point (done.json present) whose eval.json is cut short, then one that is JSON of another shape.
    const sweep = await loadSweep(TINY);
    await fs.rm(manifest);
    await writeSweepFiles(dir, sweep);
    const pdir = pointDir(dir, sweep.points[0]!);
    await fs.writeFile(path.join(pdir, 'subset-manifest.json'), JSON.stringify({ selection: { size: 32 } }));
    await fs.writeFile(path.join(pdir, DONE_FILE), '{}');
    for (const [text, why] of [['{"results": {', /cannot read \(.*JSON.*\)/], ['{"average": 1}', /not an STS evaluation \(results and average\)/]] as const) {
      await fs.writeFile(path.join(pdir, 'eval.json'), text);
      const r = await micseHere(['sweep', 'report', dir]);
      assert.equal(r.exitCode, 2, r.message);
      assert.match(r.message, new RegExp(`^micse: ${path.join(pdir, 'eval.json')}: ${why.source}; the point is marked done \\(done\\.json\\); delete that marker to run it again$`));
    }
  });
});

describe('an output directory holding another sweep', () => {
  it('is refused before anything is written; the same sweep is accepted again', async () => {
    const dir = await tmp('other-sweep');
    const tiny = await loadSweep(TINY);
    await writeSweepFiles(dir, tiny);
    const before = await fs.readFile(path.join(dir, 'sweep.json'), 'utf8');
    const other = path.join(dir, '..', `other-${path.basename(dir)}.yaml`);
    await fs.writeFile(other, `base: ${path.join(ROOT, 'configs', 'tiny.yaml')}\ngrid:\n  data.subsetSeed: [50]\n`);
    const again = await loadSweep(TINY);
    await checkOutDir(dir, again);
    await assert.rejects(checkOutDir(dir, await loadSweep(other)), (e: Error) => e instanceof UserError &&
      e.message === `${path.join(dir, 'sweep.json')}: ${dir} holds another sweep (${TINY}, 8 points), not ${other} (1 points); use another --out`);
    const r = await cli(['sweep', '--config', other, '--out', dir], 60_000);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^micse: .*sweep\.json: .* holds another sweep/m);
    assert.equal(await fs.readFile(path.join(dir, 'sweep.json'), 'utf8'), before, 'sweep.json left as it was');
  });
});

describe('sweep inputs, checked before anything starts', () => {
  it('paper-lowshot.yaml offline: every missing input in one report with its fetch command, locally and with --queue, nothing written', async () => {
    // Run where data/ holds nothing (training configs name data paths relative to the working directory), with an
    // empty Hugging Face cache and offline mode: before the check, each of the 70 points failed in turn.
    const dir = await tmp('offline');
    try {
      const env = { HF_HUB_CACHE: path.join(dir, 'hf'), HF_HUB_OFFLINE: '1' };
      const sweepFile = path.join(ROOT, 'configs', 'sweeps', 'paper-lowshot.yaml');
      const port = await freePort();
      const [local, queued] = await Promise.all([
        cli(['sweep', '--config', sweepFile, '--out', path.join(dir, 'local')], 60_000, { cwd: dir, env }),
        cli(['sweep', '--config', sweepFile, '--out', path.join(dir, 'queued'), '--queue', `redis://127.0.0.1:${port}`], 60_000, { cwd: dir, env }),
      ]);
      for (const r of [local, queued]) {
        assert.equal(r.code, 2, r.stderr);
        const lines = r.stderr.trimEnd().split('\n');
        assert.match(lines[0]!, /paper-lowshot\.yaml: 70 of 70 points to run lack inputs; nothing was started or enqueued:$/);
        assert.equal(lines.length, 4, r.stderr);
        // The authors' files: 7 splits x 5 seeds, one download fetches them all (shared by miCSE and SimCSE points).
        assert.match(r.stderr, /^ {2}training data data\/fewshot\/wiki_subset_1M_000\.0064percent_seed48\.txt, \S+ and 33 more \(70 points\): no such file; fetch with: npx micse data download fewshot-subsets$/m);
        assert.match(r.stderr, /^ {2}STS data data\/senteval \(70 points\): SentEval task file not found: .*; fetch with: npx micse data download senteval$/m);
        assert.match(r.stderr, /^ {2}model bert-base-uncased \(70 points\): not in the Hugging Face cache and offline mode is on; put config\.json/m);
      }
      assert.deepEqual((await fs.readdir(dir)).sort(), [], 'nothing written (no output directory, no cache folder)');
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('names each missing input once, groups files one download fetches, probes the Hub for an uncached model', async () => {
    const dir = await tmp('inputs');
    const saved = { cache: process.env['HF_HUB_CACHE'], endpoint: process.env['HF_ENDPOINT'], offline: process.env['HF_HUB_OFFLINE'] };
    try {
      const port = await freePort();
      process.env['HF_HUB_CACHE'] = path.join(dir, 'hf');
      process.env['HF_ENDPOINT'] = `http://127.0.0.1:${port}`;
      delete process.env['HF_HUB_OFFLINE'];
      const present = path.join(dir, 'present.txt');
      await fs.writeFile(present, 'a sentence\nanother one\n');
      const fewshot = (seed: number) => path.join(dir, 'data', 'fewshot', `wiki_subset_1M_000.10percent_seed${seed}.txt`);
      const file = path.join(dir, 'sweep.yaml');
      await fs.writeFile(file, [
        'base:',
        '  model: {init: acme/not-cached}',
        `  data: {senteval: ${JSON.stringify(path.join(dir, 'data', 'senteval'))}}`,
        'grid:',
        `  data.train: ${JSON.stringify([path.join(dir, 'missing.txt'), fewshot(48), fewshot(49), present])}`,
        '  train.seed: [1, 2]',
        '',
      ].join('\n'));
      const sweep = await loadSweep(file);
      const out = path.join(dir, 'out');
      const err = await checkSweepInputs(sweep, out).then(() => null, (e: Error) => e);
      assert.ok(err !== null, 'the check fails');
      assert.deepEqual(err.message.split('\n'), [
        `${file}: 8 of 8 points to run lack inputs; nothing was started or enqueued:`,
        `  training data ${path.join(dir, 'missing.txt')} (2 points): no such file`,
        `  STS data ${path.join(dir, 'data', 'senteval')} (8 points): SentEval task file not found: ` +
          `${path.join(dir, 'data', 'senteval', 'STS', 'STS12-en-test', 'STS.input.MSRpar.txt')}; fetch with: npx micse data download senteval --dir ${path.join(dir, 'data')}`,
        `  model acme/not-cached (8 points): not in the Hugging Face cache (${path.join(dir, 'hf', 'models--acme--not-cached')}) and ` +
          `http://127.0.0.1:${port}/acme/not-cached/resolve/main/config.json cannot be fetched (ECONNREFUSED); run where the Hub is reachable ` +
          'once (the model is cached on first use), or set model.init to a local checkpoint directory',
        `  training data ${fewshot(48)}, ${fewshot(49)} (4 points): no such file; fetch with: npx micse data download fewshot-subsets --dir ${path.join(dir, 'data')}`,
      ]);
      // The sweep runners check before they write or enqueue (the queue's Redis is never asked).
      await assert.rejects(runSweep(sweep, { out, quiet: true }), /8 of 8 points to run lack inputs/);
      await assert.rejects(enqueueSweep(sweep, { out, url: `redis://127.0.0.1:${port}` }), /8 of 8 points to run lack inputs/);
      assert.ok(!existsSync(out), 'nothing written');
    } finally {
      for (const [k, v] of [['HF_HUB_CACHE', saved.cache], ['HF_ENDPOINT', saved.endpoint], ['HF_HUB_OFFLINE', saved.offline]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
      await fs.rm(dir, { recursive: true, force: true });
    }
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
    // A corpus of blank lines passes the input check (the file is there) and fails in training.
    await fs.writeFile(path.join(dir, 'blank.txt'), '\n\n  \n');
    const file = await smallSweep(dir, [`data.train: [${JSON.stringify(path.join(dir, 'blank.txt'))}, ${JSON.stringify(shared('wiki1m-head.txt'))}]`]);
    const out = path.join(dir, 'out');
    const r = await cli(['sweep', '--config', file, '--out', out, '--quiet']);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /1 point\(s\) failed/);
    assert.match(r.stdout, /2 points in .*: 1 run now, 0 already done, 1 failed/);
    const sweep = await loadSweep(file);
    const [bad, good] = sweep.points.map((p) => path.join(out, p.name));
    const err = JSON.parse(await fs.readFile(path.join(bad!, ERROR_FILE), 'utf8')) as { message: string };
    assert.match(err.message, /no usable sentences/);
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

  // The sweep's own inputs (../shared) are checked before Redis: without them the enqueue stops there.
  it('a Redis URL that does not answer: a clear error within seconds, nothing written', { skip: SKIP_NO_SHARED }, async () => {
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

  it('a Redis that accepts the connection and never answers: sweep --queue, worker and status each end within seconds, nothing written', async () => {
    const sockets = new Set<net.Socket>();
    const stub = net.createServer((sock) => {
      sockets.add(sock); // reads whatever comes and never answers
      sock.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => stub.listen(0, '127.0.0.1', resolve));
    const port = (stub.address() as net.AddressInfo).port;
    const secret = `hush${process.pid}`;
    const url = `redis://:${secret}@127.0.0.1:${port}`;
    const dir = await tmp('hung');
    const out = path.join(dir, 'out');
    try {
      // The check itself gives up after the connect timeout (timed in this process: a CLI's own start-up takes
      // seconds on a loaded machine).
      const t0 = Date.now();
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('still waiting after 15 s')), 15_000)));
      await assert.rejects(Promise.race([checkRedis({ url }), deadline]), /no reply within 3 s/);
      clearTimeout(timer);
      const ms = Date.now() - t0;
      assert.ok(ms >= DEFAULT_CONNECT_TIMEOUT_MS - 50 && ms < DEFAULT_CONNECT_TIMEOUT_MS + 1000, `${ms} ms`);
      // Before the fix each command hung until killed (the timeout here; a killed command has no exit code 2).
      // Enqueuing the tiny sweep needs its inputs from ../shared (checked before Redis).
      const runs = await Promise.all([
        ...(HAS_SHARED ? [cli(['sweep', '--config', TINY, '--out', out, '--queue', url], 60_000)] : []),
        cli(['worker', '--queue', url], 60_000),
        cli(['sweep', 'status', '--queue', url], 60_000),
      ]);
      for (const r of runs) {
        assert.equal(r.code, 2, `${r.ms} ms: ${r.stderr}`);
        assert.equal(r.stderr, `micse: redis://:***@127.0.0.1:${port}: Redis does not answer (no reply within 3 s); is redis-server running and reachable?\n`);
        assert.ok(!(r.stdout + r.stderr).includes(secret));
      }
      assert.ok(sockets.size >= runs.length + 1, 'each command did connect');
      assert.ok(!existsSync(out), 'nothing written');
    } finally {
      for (const sock of sockets) sock.destroy();
      await new Promise((resolve) => stub.close(resolve));
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  describe('password-protected redis-server', { skip: SKIP_NO_REDIS || SKIP_NO_SHARED }, () => {
    const secret = `s3cr3t-${process.pid}`;
    let port = 0;
    let url = '';
    let dir = '';
    before(async () => {
      dir = await tmp('auth');
      assert.ok(REDIS_BIN !== null, 'CI=true but redis-server is not installed (.ci/run installs it)');
      port = await freePort();
      url = `redis://:${secret}@127.0.0.1:${port}`;
      started.push(spawn(REDIS_BIN, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--requirepass', secret], { stdio: 'ignore' }));
      await waitFor('redis-server', 10_000, () => checkRedis({ url }).then(() => true, () => undefined));
    });
    after(async () => dir !== '' && fs.rm(dir, { recursive: true, force: true }));

    it('the password appears in no output: enqueue hint, worker start line, status, a wrong password', async () => {
      const out = path.join(dir, 'secret');
      const enq = await cli(['sweep', '--config', TINY, '--out', out, '--queue', url, '--queue-name', 'auth']);
      assert.equal(enq.code, 0, enq.stderr);
      assert.match(enq.stdout, new RegExp(`start workers with: npx micse worker --queue redis://:\\*\\*\\*@127\\.0\\.0\\.1:${port} --queue-name auth`));
      const wrong = `wr0ng-${process.pid}`;
      const [worker, status, asUser, refused] = await Promise.all([
        cli(['worker', '--queue', url, '--queue-name', 'auth-empty', '--exit-when-idle'], 30_000),
        cli(['sweep', 'status', '--queue', url, '--queue-name', 'auth']),
        cli(['sweep', 'status', '--queue', `redis://default:${secret}@127.0.0.1:${port}`, '--queue-name', 'auth']),
        cli(['sweep', 'status', '--queue', `redis://:${wrong}@127.0.0.1:${port}`]),
      ]);
      assert.equal(worker.code, 0, worker.stderr);
      assert.match(worker.stderr, new RegExp(`waiting for points on redis://:\\*\\*\\*@127\\.0\\.0\\.1:${port} `));
      for (const st of [status, asUser]) {
        assert.equal(st.code, 0, st.stderr);
        assert.match(st.stdout, /queue: 0 completed, 0 running, 0 failed, 8 queued/);
      }
      assert.equal(refused.code, 2);
      assert.match(refused.stderr, new RegExp(`^micse: redis://:\\*\\*\\*@127\\.0\\.0\\.1:${port}: Redis refused the credentials \\(WRONGPASS`));
      for (const r of [enq, worker, status, asUser, refused]) {
        const all = r.stdout + r.stderr;
        assert.ok(!all.includes(secret) && !all.includes(wrong), all);
      }
    });

    it('the same sweep enqueued for two output directories is queued for both', async () => {
      const [a, b] = [path.join(dir, 'a'), path.join(dir, 'b')];
      const q = { url, queueName: 'two-outs' };
      const sweep = await loadSweep(TINY);
      assert.equal((await enqueueSweep(sweep, { ...q, out: a })).added.length, 8);
      const second = await enqueueSweep(sweep, { ...q, out: b });
      assert.deepEqual([second.added.length, second.queued.length], [8, 0], 'before the fix: 0 enqueued, 8 "already queued"');
      const again = await enqueueSweep(sweep, { ...q, out: a });
      assert.deepEqual([again.added.length, again.queued.length], [0, 8]);
      const st = await queueStatus(q);
      assert.equal(st.counts.waiting, 16);
      const name = sweep.points[0]!.name;
      for (const out of [a, b]) assert.ok(st.waiting.includes(path.join(out, name)), st.waiting.join(' '));
    });
  });

  it('two workers share a sweep of 4 points; one is SIGKILLed mid-point; every point is done exactly once', { skip: SKIP_NO_REDIS || SKIP_NO_SHARED }, async () => {
    assert.ok(REDIS_BIN !== null, 'CI=true but redis-server is not installed (.ci/run installs it)');
    const port = await freePort();
    const redis = spawn(REDIS_BIN, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    started.push(redis);
    const url = `redis://127.0.0.1:${port}`;
    await waitFor('redis-server', 10_000, async () => (await cli(['sweep', 'status', '--queue', url])).code === 0 ? true : undefined);

    // 4 points (2 subset seeds x 2 objectives): after A is killed, B runs the rest one after another.
    const dir = await tmp('queue');
    const sweepFile = await smallSweep(dir, ['data.subsetSeed: [48, 49]', 'objective.style: [micse, simcse]']);
    const out = path.join(dir, 'out');
    const enq = await cli(['sweep', '--config', sweepFile, '--out', out, '--queue', url]);
    assert.equal(enq.code, 0, enq.stderr);
    assert.match(enq.stdout, /4 enqueued/);
    const again = await cli(['sweep', '--config', sweepFile, '--out', out, '--queue', url]);
    assert.match(again.stdout, /0 enqueued, 0 failed ones retried, 4 already queued or running/);

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
    const names = (await loadSweep(sweepFile)).points.map((p) => p.name);
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
    assert.match(st.stdout, /queue: 4 completed, 0 running, 0 failed, 0 queued/);
    assert.match(st.stdout, /4 done, 0 failed/);
    redis.kill('SIGTERM');
  });
});
