/**
 * Export publication faults (issue 22): `export --force` killed between moving the old output aside and renaming
 * the new one in, and killed before publishing (a staging folder left behind). The next export repairs both.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { exportCheckpoint, recoverExport } from '../src/export/index.js';
import { FAULT_ENV } from '../src/faultPoints.js';
import { selectBackend } from '../src/model/backend.js';
import { deadPid, ROOT, shared, SKIP_NO_SHARED } from './helpers.js';

const CLI = path.join(ROOT, 'bin', 'micse.js');
let dir = '';

function exportCli(args: string[], fault: string): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, 'export', ...args], { cwd: ROOT, env: { ...process.env, [FAULT_ENV]: fault }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stderr }));
  });
}

async function siblings(output: string): Promise<string[]> {
  return (await fs.readdir(path.dirname(output))).filter((e) => e.startsWith(`${path.basename(output)}.`)).sort();
}

describe('export publication faults', { skip: SKIP_NO_SHARED }, () => {
  const checkpoint = shared('hf-reference', 'tiny-h32-l4');

  before(async () => {
    await selectBackend('cpu');
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'micse-export-faults-'));
  });

  after(async () => {
    if (dir !== '') await fs.rm(dir, { recursive: true, force: true });
  });

  it('export --force killed between the renames: the output is gone, the next export moves the old one back first', async () => {
    const out = path.join(dir, 'swap');
    await exportCheckpoint({ checkpoint, output: out, formats: ['hf'] });
    await fs.writeFile(path.join(out, 'marker.txt'), 'the previous export');
    const r = await exportCli(['--checkpoint', checkpoint, '--output', out, '--format', 'hf', '--force', '--backend', 'cpu'], 'export:moved-aside');
    assert.equal(r.signal, 'SIGKILL', r.stderr);
    assert.equal(await fs.access(out).then(() => true, () => false), false, 'the kill left no output under its path');
    assert.deepEqual((await siblings(out)).map((s) => s.replace(/\d+$/, 'PID')), ['swap.old-export-PID', 'swap.tmp-export-PID']);
    // Without --force the restored previous output is not replaced: it is back, whole, and the leftovers are gone.
    await assert.rejects(exportCheckpoint({ checkpoint, output: out, formats: ['hf'] }), /not empty .*--force/);
    assert.equal(await fs.readFile(path.join(out, 'marker.txt'), 'utf8'), 'the previous export');
    assert.deepEqual(await siblings(out), []);
    await exportCheckpoint({ checkpoint, output: out, formats: ['hf'], force: true });
    assert.equal(await fs.access(path.join(out, 'marker.txt')).then(() => true, () => false), false, 'replaced');
    assert.deepEqual(await siblings(out), []);
  });

  it('leftovers of dead exports: a staging folder is removed; an old output beside a published one is removed', async () => {
    const out = path.join(dir, 'left');
    const r = await exportCli(['--checkpoint', checkpoint, '--output', out, '--format', 'hf', '--backend', 'cpu'], 'export:staged');
    assert.equal(r.signal, 'SIGKILL', r.stderr);
    assert.deepEqual((await siblings(out)).map((s) => s.replace(/\d+$/, 'PID')), ['left.tmp-export-PID'], 'the complete staging folder is left');
    const live = `${out}.tmp-export-${process.ppid}`; // a running export's staging folder is left alone
    await fs.mkdir(live);
    await exportCheckpoint({ checkpoint, output: out, formats: ['hf'] });
    assert.deepEqual(await siblings(out), [path.basename(live)]);
    await fs.rm(live, { recursive: true });
    // Killed after the new output was renamed in, before the old one was removed.
    const old = `${out}.old-export-${await deadPid()}`;
    await fs.mkdir(old);
    assert.deepEqual(await recoverExport(out), [old]);
    assert.deepEqual(await siblings(out), []);
    await fs.access(path.join(out, 'model.safetensors'));
  });
});
