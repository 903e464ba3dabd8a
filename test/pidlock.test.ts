/**
 * PidLock (src/fsutil.ts): a stale lock found by several takers at once goes to one of them: deterministically, two
 * takers in this process, one paused where it found the lock stale and has not yet removed it; and 4 processes
 * (test/lock-racer.ts) racing for a lock left stale over and over. A taker killed at any step of a takeover
 * leaves nothing that blocks the next.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { UserError } from '../src/errors.js';
import { FAULT_ENV } from '../src/faultPoints.js';
import { PidLock, type PidLockStep } from '../src/fsutil.js';
import { deadPid, ROOT, testTempDir } from './helpers.js';

/** The child process that takes the lock (test/lock-racer.ts). */
const RACER = path.join(ROOT, 'test', 'lock-racer.ts');

/** Runs test/lock-racer.ts with `args` and `env` added to this process's. */
function racer(args: string[], env: Record<string, string>): Promise<{ signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', RACER, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (_code, signal) => resolve({ signal, stdout, stderr }));
  });
}

/** A promise and its resolve function. */
function gate(): { opened: Promise<void>; open: () => void } {
  let open = () => {};
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { opened, open };
}

/**
 * A PidLock whose `pause` reports each step it reaches (`reached` resolves with the first) and, at 'stale-checked',
 * waits until `go` is called.
 */
function pausedLock(file: string) {
  const steps: PidLockStep[] = [];
  const first = gate();
  const release = gate();
  let reached: PidLockStep | null = null;
  const lock = new PidLock(file, 'test', {
    pause: async (step) => {
      steps.push(step);
      if (reached === null) {
        reached = step;
        first.open();
      }
      if (step === 'stale-checked') await release.opened;
    },
  });
  return { lock, steps, reached: first.opened.then(() => reached!), go: release.open };
}

describe('PidLock', () => {
  const dir = testTempDir('pidlock');

  it('two takers of one stale lock, the first paused between finding it stale and removing it: one holds it, the other is refused', async () => {
    const file = path.join(dir, 'two.lock');
    await fs.writeFile(file, `${await deadPid()}\n`);
    const a = pausedLock(file);
    const b = pausedLock(file);
    const outcome = (p: Promise<void>) => p.then(() => 'held', (e: unknown) => (e instanceof UserError ? e.message : Promise.reject(e)));
    const takenA = outcome(a.lock.take());
    assert.equal(await a.reached, 'stale-checked');
    // B finds the same stale lock while A is paused there: it reaches the same point, or waits for A's takeover.
    const takenB = outcome(b.lock.take());
    const bAt = await b.reached;
    a.go();
    await takenA;
    b.go();
    const outcomes = [await takenA, await takenB];
    const refusal = `${dir}: in use by another test (pid ${process.pid}, lock ${file}); wait for it to finish or stop it`;
    assert.deepEqual([...outcomes].sort(), ['held', refusal].sort(), `B was paused at ${bAt} (steps: ${b.steps.join(', ')})`);
    assert.equal(await fs.readFile(file, 'utf8'), `${process.pid}\n`);
    await a.lock.release();
    await b.lock.release();
    assert.deepEqual(await fs.readdir(dir), [], 'nothing left');
  });

  it('a taker killed at each step of a takeover leaves nothing that blocks: the next take holds the lock, and leaves nothing once released', async () => {
    const dead = await deadPid();
    const points = ['lock:takeover-staged', 'lock:takeover-held', 'lock:stale-removed'] as const;
    await Promise.all(points.map(async (point) => {
      const sub = path.join(dir, point.replace(':', '-'));
      await fs.mkdir(sub);
      const file = path.join(sub, 'a.lock');
      await fs.writeFile(file, `${dead}\n`);
      const r = await racer([file, 'once'], { [FAULT_ENV]: point });
      assert.equal(r.signal, 'SIGKILL', `killed at ${point}: ${r.stderr}`);
      const left = (await fs.readdir(sub)).sort();
      assert.ok(left.some((name) => name.startsWith('a.lock.tmp-takeover')), `${point} left ${left.join(', ')}`);
      const lock = new PidLock(file, 'test');
      await lock.take();
      assert.equal(await fs.readFile(file, 'utf8'), `${process.pid}\n`, point);
      await lock.release();
      assert.deepEqual(await fs.readdir(sub), [], `${point}: nothing left of ${left.join(', ')}`);
    }));
  });

  it('4 processes taking one lock over and over, mostly left stale (as by a killed holder): never two hold it at once', async () => {
    const file = path.join(dir, 'race.lock');
    const marker = path.join(dir, 'race.inside');
    const dead = await deadPid();
    await fs.writeFile(file, `${dead}\n`);
    const children = Array.from({ length: 4 }, () => spawn(process.execPath, ['--import', 'tsx', RACER, file, 'race', marker, String(dead), '2000'],
      { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] }));
    const results = children.map((child) => {
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const ready = new Promise<void>((resolve) => child.stdout.on('data', () => stdout.includes('ready\n') && resolve()));
      const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
      return { ready, done };
    });
    await Promise.all(results.map((r) => r.ready));
    for (const child of children) child.stdin.end('go\n');
    const stats = (await Promise.all(results.map((r) => r.done))).map((r) => {
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { held: number; refused: number; overlaps: number };
    });
    const total = (k: 'held' | 'refused' | 'overlaps') => stats.reduce((n, s) => n + s[k], 0);
    assert.equal(total('overlaps'), 0, JSON.stringify(stats));
    assert.ok(total('held') >= 20 && total('refused') > 0, `the lock changed hands often enough to race: ${JSON.stringify(stats)}`);
    // Whatever they left (a stale lock at most) is taken over, and nothing stays once released.
    const lock = new PidLock(file, 'test');
    await lock.take();
    await lock.release();
    assert.deepEqual((await fs.readdir(dir)).filter((name) => name.startsWith('race.')), []);
  });
});
